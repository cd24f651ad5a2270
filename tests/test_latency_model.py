"""The latency model: fitted on a few configurations measured here, leave-one-out errors reported."""

from __future__ import annotations

import json
import math

import pytest

from edgebert.bench import append_result, bench_artifact
from edgebert.errors import EdgebertError
from edgebert.latency_model import (
    Shape,
    calibrate,
    leave_one_out,
    load_calibration,
    measurement_from_result,
    nnls,
)
from edgebert.pick import PRECISIONS
from edgebert.profiles import load_profile
from edgebert.subnet import Architecture, subnetwork
from tests.labelled import build_classifier

MEASURED = [(0.25, 0.5), (0.5, 0.75), (1.0, 1.0)]
ARCH = Architecture(12, 12, 48, 4, 96, 65, 128, 2, True, 2)  # tests.labelled's classifier


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> list[dict]:
    """Three fp32 ONNX slices of the tiny classifier, each benched briefly under the local profile."""
    from edgebert.export import export_model

    root = tmp_path_factory.mktemp("latency")
    model = build_classifier(root / "classifier")
    profile = load_profile("local")
    measured = []
    for width, depth in MEASURED:
        artifact = root / f"w{width}-d{depth}.onnx"
        export_model(model, "onnx", "fp32", width=width, depth=depth, out=artifact, verify=False)  # speed
        measured.append(bench_artifact(artifact, profile, runs=15, warmup=3, min_time_s=0))
    return measured


def test_leave_one_out_is_reported_and_the_rest_predicted(results):
    profile = load_profile("local")
    measurements = [measurement_from_result(result) for result in results]
    assert [(m.width, m.depth) for m in measurements] == MEASURED
    loo = leave_one_out(profile, measurements)
    assert loo["configurations"] == len(MEASURED) and loo["statistic"] == "p95"
    assert 0 <= loo["within_10_percent"] <= 1
    assert math.isfinite(loo["worst_relative_error"])
    for row in loo["rows"]:
        assert row["predicted_ms"] > 0 and math.isfinite(row["relative_error"])
        assert row["basis"] == "scaled"  # two points remain: the spec curve scaled to them

    model = calibrate(profile, measurements, PRECISIONS)
    assert model.curve("fp32").basis == "fit" and model.curve("fp32").label == "predicted"
    assert model.curve("int8").basis == "derived"  # unmeasured precision: the fp32 fit at the spec ratio
    assert model.curve("int8").label == "derived" and model.curve("int8").points == 0  # not shown as predicted
    unmeasured = Shape.of(ARCH, subnetwork(ARCH, 0.5, 1.0), profile.batch_size, profile.seq_len)
    assert 0 < model.predict(unmeasured, "fp32") < 10 * max(m.latency_ms for m in measurements)


def test_calibration_files_are_checked(results, tmp_path):
    path = tmp_path / "device.json"
    for result in results:
        append_result(path, result)
    assert len(load_calibration([path], load_profile("local"))) == len(MEASURED)
    with pytest.raises(EdgebertError, match="measured under profile 'local', not 'raspberry-pi-4'"):
        load_calibration([path], load_profile("raspberry-pi-4"))
    other = load_profile("local").model_copy(update={"threads": results[0]["settings"]["threads"] + 1})
    with pytest.raises(EdgebertError, match=r"measured with \d+ thread\(s\), profile local runs"):
        load_calibration([path], other)
    spinning = load_profile("local").model_copy(update={"spin_wait": not load_profile("local").spin_wait})
    with pytest.raises(EdgebertError, match="measured with spin_wait"):
        load_calibration([path], spinning)
    for field, value in [("latency_ms", {"p95": float("nan")}), ("settings", {"threads": 0})]:
        tampered = tmp_path / f"{field}.json"
        tampered.write_text(json.dumps([{**results[0], field: value}]))
        with pytest.raises(EdgebertError, match=r"bench result with invalid (latency_ms|threads)"):
            load_calibration([tampered], load_profile("local"))
    text_run = tmp_path / "text.json"
    text_run.write_text(json.dumps([{**results[0], "inputs": {**results[0]["inputs"], "batches": 3}}]))
    with pytest.raises(EdgebertError, match="measured on `--text` batches"):
        load_calibration([text_run], load_profile("local"))
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps([{"latency_ms": {"p95": 1.0}}]))
    with pytest.raises(EdgebertError, match=r"broken.json\[0\]: not a bench result of an edgebert export"):
        load_calibration([broken], load_profile("local"))


def test_memory_is_read_as_footprint_and_baseline(results):
    """Older results carry only RSS figures: footprint = peak since load - RSS before load."""
    result = results[0]
    measurement = measurement_from_result(result)
    memory = result["memory"]
    assert measurement.baseline_bytes == memory.get("baseline_bytes", memory["rss_before_load_bytes"])
    if memory["peak_counts_from_load"]:
        assert measurement.footprint_bytes == memory["peak_rss_bytes"] - memory["rss_before_load_bytes"]
    old = {
        **result,
        "memory": {k: v for k, v in memory.items() if k not in ("baseline_bytes", "model_footprint_bytes")},
    }
    assert measurement_from_result(old).footprint_bytes > 0


def test_nnls_recovers_non_negative_coefficients():
    truth = [2.0, 3.0, 0.0, 0.5]
    rows = [[1.0, g, a, layers] for g, a, layers in [(1, 0.1, 6), (2, 0.3, 9), (4, 0.2, 12), (3, 0.5, 6), (8, 1, 12)]]
    targets = [sum(c * x for c, x in zip(truth, row, strict=True)) for row in rows]
    assert nnls(rows, targets, 4) == pytest.approx(truth, abs=1e-9)


def test_spec_estimate_without_measurements():
    profile = load_profile("raspberry-pi-4")
    model = calibrate(profile, [], PRECISIONS)
    small = Shape.of(ARCH, subnetwork(ARCH, 0.25, 0.5), 1, 128)
    large = Shape.of(ARCH, subnetwork(ARCH, 1.0, 1.0), 1, 128)
    for precision in PRECISIONS:
        curve = model.curve(precision)
        assert curve.label == "estimate from specs" and "peak 96 GFLOP/s" in curve.note
        assert 0 < curve.predict(small) < curve.predict(large)
    assert model.predict(large, "int8") < model.predict(large, "fp32")
