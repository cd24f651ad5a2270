"""The latency model: on synthetic measurements generated from known coefficients it recovers them and
predicts shapes it never saw; leave-one-out finds a planted outlier; one real bench result is read.

FLOPs are counted here from the matrices of one encoder layer, not with edgebert's `layer_flops`, so
a wrong FLOP count in the model would fail the recovery.
"""

from __future__ import annotations

import json

import pytest

from edgebert.errors import EdgebertError
from edgebert.latency_model import (
    FIT_MIN_POINTS,
    Measurement,
    Shape,
    calibrate,
    leave_one_out,
    load_calibration,
    measurements_from_result,
    nnls,
)
from edgebert.profiles import load_profile, shipped_names

PRECISIONS = ("fp32", "fp16", "int8")
# The truth behind the synthetic measurements: fixed ms, ms per projection GFLOP, ms per attention GFLOP,
# ms per layer (the model's four terms, in its order).
TRUTH = [1.5, 40.0, 120.0, 0.3]
HIDDEN, HEAD_SIZE, HEADS, FFN, LAYERS = 768, 64, 12, 3072, 12  # BERT-base
# (width, depth, batch, seq_len): several lengths, since at one length the projection and attention
# FLOPs of the grid are proportional to each other and cannot be told apart.
MEASURED = [
    (1.0, 1.0, 1, 128),
    (0.5, 1.0, 1, 64),
    (0.25, 0.5, 1, 256),
    (0.75, 0.75, 1, 32),
    (1.0, 0.5, 2, 128),
    (0.5, 0.5, 1, 512),
    (0.25, 1.0, 4, 16),
]
UNSEEN = [(0.75, 1.0, 1, 128), (0.5, 0.75, 8, 64), (1.0, 0.75, 1, 384)]


def shape(width: float, depth: float, batch: int, seq_len: int) -> Shape:
    """On the grid: heads, FFN neurons and layers scale with width and depth exactly."""
    heads = round(HEADS * width)
    return Shape(HIDDEN, heads, heads * HEAD_SIZE, FFN * heads // HEADS, round(LAYERS * depth), batch, seq_len)


def true_latency_ms(s: Shape, truth: list[float] = TRUTH) -> float:
    """Multiply-adds x 2 of each kept layer's matrices, per sequence, then the known coefficients."""
    q_k_v_o = 4 * 2 * s.seq_len * s.hidden * s.inner  # (s x d) @ (d x inner) four times
    ffn = 2 * 2 * s.seq_len * s.hidden * s.ffn  # (s x d) @ (d x f) and (s x f) @ (f x d)
    scores_and_context = 2 * 2 * s.seq_len * s.seq_len * s.inner  # Q K^T and P V over the kept heads
    projection_gflops = s.batch * s.layers * (q_k_v_o + ffn) / 1e9
    attention_gflops = s.batch * s.layers * scores_and_context / 1e9
    fixed, per_projection, per_attention, per_layer = truth
    return fixed + per_projection * projection_gflops + per_attention * attention_gflops + per_layer * s.layers


def synthetic(points, precision: str = "fp32", factor: float = 1.0) -> list[Measurement]:
    runtime = load_profile("local").runtime
    return [
        Measurement(w, d, precision, runtime, shape(w, d, b, s), factor * true_latency_ms(shape(w, d, b, s)))
        for w, d, b, s in points
    ]


def test_the_fit_recovers_the_coefficients_and_predicts_unseen_shapes():
    model = calibrate(load_profile("local"), synthetic(MEASURED), PRECISIONS)
    curve = model.curve("fp32")
    assert (curve.basis, curve.points, curve.label) == ("fit", len(MEASURED), "predicted")
    assert curve.coefficients == pytest.approx(TRUTH, rel=1e-6)
    for point in UNSEEN:
        assert model.predict(shape(*point), "fp32") == pytest.approx(true_latency_ms(shape(*point)), rel=1e-6)


def test_a_precision_with_few_measurements_is_the_fit_scaled_to_them():
    """Two int8 points at 0.6x the fp32 truth: the fp32 curve's shape, scaled to them, predicts 0.6x anywhere."""
    few = synthetic(MEASURED[:2], "int8", factor=0.6)
    assert len(few) < FIT_MIN_POINTS
    model = calibrate(load_profile("local"), synthetic(MEASURED) + few, PRECISIONS)
    curve = model.curve("int8")
    assert (curve.basis, curve.points, curve.label) == ("scaled", 2, "predicted")
    for point in UNSEEN:
        assert curve.predict(shape(*point)) == pytest.approx(0.6 * true_latency_ms(shape(*point)), rel=1e-6)
    unmeasured = model.curve("fp16")  # no point of its own: derived, and not labelled as predicted
    assert (unmeasured.basis, unmeasured.points, unmeasured.label) == ("derived", 0, "derived")


def test_leave_one_out_is_exact_on_exact_data_and_finds_a_planted_outlier():
    profile = load_profile("local")
    exact = leave_one_out(profile, synthetic(MEASURED))
    assert exact["configurations"] == len(MEASURED) and exact["statistic"] == "p95"
    assert exact["within_10_percent"] == 1.0 and exact["worst_relative_error"] < 1e-6
    assert {row["basis"] for row in exact["rows"]} == {"fit"}

    measurements = synthetic(MEASURED)
    outlier = measurements[3]
    measurements[3] = Measurement(**{**vars(outlier), "latency_ms": 1.5 * outlier.latency_ms})
    loo = leave_one_out(profile, measurements)
    # held out, the outlier is predicted from six exact points: the truth, which is 1/1.5 of what was measured
    assert loo["rows"][3]["relative_error"] == pytest.approx(1 / 1.5 - 1, rel=1e-6)
    assert loo["worst_relative_error"] == pytest.approx(1 - 1 / 1.5, rel=1e-6)
    assert loo["within_10_percent"] < 1.0


def test_nnls_recovers_non_negative_coefficients():
    truth = [2.0, 3.0, 0.0, 0.5]
    rows = [[1.0, g, a, layers] for g, a, layers in [(1, 0.1, 6), (2, 0.3, 9), (4, 0.2, 12), (3, 0.5, 6), (8, 1, 12)]]
    targets = [sum(c * x for c, x in zip(truth, row, strict=True)) for row in rows]
    assert nnls(rows, targets, 4) == pytest.approx(truth, abs=1e-9)


@pytest.mark.parametrize("name", shipped_names())
def test_spec_estimate_without_measurements(name):
    """Every shipped profile gives an estimate that grows with the sub-network and is faster at int8."""
    profile = load_profile(name)
    model = calibrate(profile, [], PRECISIONS)
    small, large = shape(0.25, 0.5, 1, 128), shape(1.0, 1.0, 1, 128)
    for precision in PRECISIONS:
        curve = model.curve(precision)
        assert curve.label == "estimate from specs" and curve.points == 0
        assert 0 < curve.predict(small) < curve.predict(large)
    assert model.predict(large, "int8") < model.predict(large, "fp32")


def test_the_spec_estimate_names_the_profiles_peak():
    """raspberry-pi-4.yaml states a peak of 96 GFLOP/s: the estimate says it used it."""
    assert "peak 96 GFLOP/s" in calibrate(load_profile("raspberry-pi-4"), [], PRECISIONS).curve("fp32").note


# ---- one real bench result: what `bench` writes is what the model reads ----------------------------------


@pytest.fixture(scope="module")
def result(tmp_path_factory, labelled_classifier) -> dict:
    """The (0.5, 0.75) fp32 ONNX slice of the labelled classifier, benched briefly under the local profile."""
    from edgebert.bench import bench_artifact
    from edgebert.export import export_model

    artifact = tmp_path_factory.mktemp("latency") / "w0.5-d0.75.onnx"
    export_model(labelled_classifier, "onnx", "fp32", width=0.5, depth=0.75, out=artifact, verify=False)
    return bench_artifact(artifact, load_profile("local"), runs=5, warmup=1, min_time_s=0, threads=1)


def test_a_real_bench_result_gives_the_slices_shape(result):
    """Hidden 48 with 12 heads of 4: width 0.5 keeps 6 heads (24 wide) and 48 FFN neurons, depth 0.75 9 layers."""
    profile = load_profile("local")
    reported = {m.threads: m for m in measurements_from_result(result)}[result["settings"]["threads"]]
    measurement = measurements_from_result(result)[0]  # the first session's: the one memory was measured in
    assert measurement.shape == Shape(48, 6, 24, 48, 9, profile.batch_size, profile.seq_len)
    assert (measurement.width, measurement.depth, measurement.precision) == (0.5, 0.75, "fp32")
    assert measurement.runtime == profile.runtime and reported.latency_ms == result["latency_ms"]["p95"]
    memory = result["memory"]
    assert measurement.baseline_bytes == memory.get("baseline_bytes", memory["rss_before_load_bytes"])
    old = {  # older results carry only RSS figures: the footprint is what the model added to the RSS
        **result,
        "memory": {k: v for k, v in memory.items() if k not in ("baseline_bytes", "model_footprint_bytes")},
    }
    top = memory["peak_rss_bytes"] if memory["peak_counts_from_load"] else memory["rss_after_runs_bytes"]
    assert measurements_from_result(old)[0].footprint_bytes == max(0, top - memory["rss_before_load_bytes"])


def test_a_gated_ffn_counts_its_three_matrices():
    """ModernBERT's GeGLU FFN multiplies by input, gate and output matrices: the projection term counts three D x F
    products."""
    from edgebert.subnet import Architecture, subnetwork

    arch = Architecture(12, 12, 48, 4, 96, 120, 40, 0, True, 3, layers="modernbert")
    s = Shape.of(arch, subnetwork(arch, 0.5, 0.75), 2, 64)
    assert (s.inner, s.ffn, s.layers, s.ffn_matrices) == (24, 48, 9, 3)
    projections = 2 * s.seq_len * (4 * s.hidden * s.inner + 3 * s.hidden * s.ffn) * s.batch * s.layers / 1e9
    assert s.features()[1] == pytest.approx(projections, rel=1e-12)


def test_a_modernbert_bench_result_counts_three_ffn_matrices(result):
    """A bench result's shape takes the FFN's matrices from its source's model type."""
    from dataclasses import replace

    manifest = {**result["manifest"], "source": {**result["manifest"]["source"], "model_type": "modernbert"}}
    read = measurements_from_result({**result, "manifest": manifest})[0].shape
    assert read == replace(measurements_from_result(result)[0].shape, ffn_matrices=3)


def test_calibration_files_are_checked(result, tmp_path):
    from edgebert.bench import append_result

    path = tmp_path / "device.json"
    append_result(path, result)
    assert len(load_calibration([path], load_profile("local"))) == 1
    with pytest.raises(EdgebertError, match="measured under profile 'local', not 'raspberry-pi-4'"):
        load_calibration([path], load_profile("raspberry-pi-4"))
    at_three = tmp_path / "three.json"  # a count the local profile compares neither as its own nor as one
    at_three.write_text(json.dumps([timed_alone_at(result, 3)]))
    other = load_profile("local").at_threads(2)
    with pytest.raises(EdgebertError, match=r"measured with 3 thread\(s\), profile local compares 2 and 1"):
        load_calibration([at_three], other)
    spinning = load_profile("local").model_copy(update={"spin_wait": not load_profile("local").spin_wait})
    with pytest.raises(EdgebertError, match="measured with spin_wait"):
        load_calibration([path], spinning)
    version_2 = {key: value for key, value in result.items() if key != "threads"} | {"result_version": 2}
    for field, value in [("latency_ms", {"p95": float("nan")}), ("settings", {"threads": 0})]:
        tampered = tmp_path / f"{field}.json"
        tampered.write_text(json.dumps([{**version_2, field: value}]))
        with pytest.raises(EdgebertError, match=r"bench result with invalid (latency_ms|threads)"):
            load_calibration([tampered], load_profile("local"))
    text_run = tmp_path / "text.json"
    text_run.write_text(json.dumps([{**result, "inputs": {**result["inputs"], "batches": 3}}]))
    with pytest.raises(EdgebertError, match="measured on `--text` batches"):
        load_calibration([text_run], load_profile("local"))
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps([{"latency_ms": {"p95": 1.0}}]))
    with pytest.raises(EdgebertError, match=r"broken.json\[0\]: not a bench result of an edgebert export"):
        load_calibration([broken], load_profile("local"))


def timed_alone_at(result: dict, threads: int) -> dict:
    """`result` as if `bench --threads THREADS` had written it: that count alone, with the reported numbers."""
    run = next(run for run in result["threads"]["compared"] if run["threads"] == result["settings"]["threads"])
    choice = {"compared": [{**run, "threads": threads}], "chosen": threads, "memory_from": threads, "forced": True}
    return {
        **result,
        "threads": {**result["threads"], **choice},
        "settings": {**result["settings"], "threads": threads},
    }
