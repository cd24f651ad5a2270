"""`edgebert pick`: budgets that select a known candidate, nothing fitting, units, accuracy, export and measure."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgebert.cli.pick import NOTHING_FITS, parse_candidates, parse_latency, parse_memory
from edgebert.demo import DEMO_ARCH
from edgebert.errors import EdgebertError
from edgebert.subnet import parameter_count, subnetwork

# The documented estimate's constants for onnxruntime (edgebert/memory_model.py)
SESSION, BASELINE, INT8_FACTOR, FP16_FACTOR = 25e6, 82e6, 1.9, 2.3


def _params(width: float, depth: float) -> int:
    return parameter_count(DEMO_ARCH, subnetwork(DEMO_ARCH, width, depth))


@pytest.mark.parametrize(
    "text, expected",
    [("60MB", 60_000_000), ("0.5GiB", 2**29), ("512KiB", 524_288), ("1.5 gb", 1_500_000_000), ("100mb", 10**8)],
)
def test_memory_units(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text, expected", [("40ms", 40.0), ("0.2s", 200.0), ("150us", 0.15), (" 7 ms ", 7.0)])
def test_latency_units(text, expected):
    assert parse_latency(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["60", "lots", "-5MB", "60 parsecs", "MB", "1e3MB", ""])
def test_nonsense_units_are_refused(text):
    with pytest.raises(EdgebertError, match="cannot read memory budget"):
        parse_memory(text)
    with pytest.raises(EdgebertError):
        parse_latency(text)


def test_zero_and_bad_candidates_are_refused(run_cli):
    with pytest.raises(EdgebertError, match="must be more than zero"):
        parse_memory("0MB")
    assert parse_candidates("0.5:0.75, 1:1") == [(0.5, 0.75), (1.0, 1.0)]
    with pytest.raises(EdgebertError, match="give WIDTH:DEPTH pairs"):
        parse_candidates("0.5-0.75")
    result = run_cli("pick", "--profile", "raspberry-pi-4", "--latency-budget", "soon")
    assert result.code == 1 and "cannot read latency budget 'soon'" in result.stderr
    result = run_cli("pick", "--profile", "raspberry-pi-4", "--measure")
    assert result.code == 1 and "use --profile local" in result.stderr


def test_budget_selects_the_known_candidate(run_cli):
    """150 MB of model footprint on onnxruntime: by hand, only int8 (0.25, 0.5) and (0.5, 0.5) fit; the larger wins."""
    fits = SESSION + INT8_FACTOR * _params(0.5, 0.5)
    assert fits < 150e6 - 10e6  # room for the activation arena (~5.5 MB at batch 1 x 128)
    assert SESSION + INT8_FACTOR * _params(1, 1) > 150e6
    assert SESSION + FP16_FACTOR * 2 * _params(0.25, 0.5) > 150e6
    args = ["pick", "--profile", "raspberry-pi-4", "--candidates", "0.25:0.5,0.5:0.5,1:1"]
    result = run_cli(*args, "--memory-budget", "150MB", "--latency-budget", "10s", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    choice = report["choice"]
    assert (choice["width"], choice["depth"], choice["precision"]) == (0.5, 0.5, "int8")
    assert fits <= choice["memory_bytes"] <= fits + 10e6 and choice["memory_source"] == "estimated"
    assert choice["memory_bytes"] == choice["footprint_bytes"]  # the budget is the model's, not the process's
    assert choice["baseline_bytes"] == BASELINE and choice["baseline_source"] == "estimated"
    assert choice["latency_source"] == "estimate from specs"
    assert report["budgets"] == {
        "memory_bytes": 150_000_000,
        "memory_from": "--memory-budget",
        "memory_scope": "model",
        "latency_ms": 10_000.0,
        "latency_from": "--latency-budget",
        "latency_statistic": "p95",
    }
    assert report["accuracy"] is None and any("accuracy unknown" in note for note in report["notes"])
    assert any("untrained" in note for note in report["notes"])
    table = run_cli(*args, "--memory-budget", "150MB")  # the profile's 500 ms latency budget applies
    assert table.code == 0 and "ship width 0.5 depth 0.5 int8" in table.stdout
    text = " ".join(table.stdout.split())  # rich wraps at the terminal's width
    assert "latency p95 <= 500 ms (profile)" in text and "82.0 MB (estimated), not in the budget" in text


def test_process_scope_adds_the_runtime_baseline(run_cli):
    """The same candidates budgeted as a whole process: the 82 MB baseline leaves room for int8 (0.25, 0.5) only."""
    small, medium = (SESSION + INT8_FACTOR * _params(w, d) + BASELINE for w, d in [(0.25, 0.5), (0.5, 0.5)])
    assert small + 10e6 < 190e6 < medium
    args = ["pick", "--profile", "raspberry-pi-4", "--candidates", "0.25:0.5,0.5:0.5,1:1", "--latency-budget", "10s"]
    result = run_cli(*args, "--memory-budget", "190MB", "--memory-scope", "process", "--json")
    assert result.code == 0, result.stderr
    choice = json.loads(result.stdout)["choice"]
    assert (choice["width"], choice["depth"], choice["precision"]) == (0.25, 0.5, "int8")
    assert choice["memory_bytes"] == choice["footprint_bytes"] + choice["baseline_bytes"]
    assert run_cli(*args, "--memory-budget", "190MB", "--memory-scope", "heap").code == 1


def test_nothing_fits_names_the_smallest(run_cli, tmp_path):
    plot = tmp_path / "pareto.png"
    args = ["pick", "--profile", "pixel-7", "--memory-budget", "1MB", "--json", "--plot", plot]
    result = run_cli(*args)
    assert result.code == NOTHING_FITS == 3, result.stderr  # scripts notice; the answer is still printed
    report = json.loads(result.stdout)
    assert report["choice"] is None and report["fits"] is False and report["format"] == "tflite"
    smallest = min(report["candidates"], key=lambda row: row["memory_bytes"])
    fastest = min(report["candidates"], key=lambda row: row["latency_ms"])
    assert report["verdict"].startswith(
        f"nothing fits: the smallest memory achievable is {smallest['memory_bytes'] / 1e6:.1f} MB"
    )
    assert f"the lowest latency {fastest['latency_ms']:.1f} ms" in report["verdict"]
    assert len(report["candidates"]) == 36 and any(row["pareto"] for row in report["candidates"])
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_accuracy_decides_and_the_export_fits(labelled_classifier, tmp_path, run_cli, monkeypatch):
    """Labels from the (0.5, 0.5) sub-network make it the most accurate; its artifact fits the budget when benched."""
    monkeypatch.setenv("EDGEBERT_CACHE", str(tmp_path / "cache"))  # test_eval caches results for the same weights
    from edgebert.evaluate import predict, read_dataset, tokenize
    from edgebert.slicing import open_checkpoint, slice_checkpoint
    from tests.labelled import sentences

    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"{a}\t0\n" for a, _ in sentences(16, seed=3)))
    checkpoint = open_checkpoint(labelled_classifier)
    logits = predict(slice_checkpoint(checkpoint, 0.5, 0.5).model, tokenize(read_dataset(data), checkpoint))
    data.write_text(
        "sentence\tlabel\n"
        + "".join(f"{a}\t{y}\n" for (a, _), y in zip(sentences(16, seed=3), logits.argmax(-1), strict=True))
    )
    assert run_cli("eval", labelled_classifier, "--data", data, "--width", "0.5", "--depth", "0.5").code == 0
    assert run_cli("eval", labelled_classifier, "--data", data, "--width", "1", "--depth", "1").code == 0

    out = tmp_path / "out"
    args = ["pick", labelled_classifier, "--profile", "local", "--candidates", "0.5:0.5,1:1", "--memory-budget", "60MB"]
    result = run_cli(*args, "--export", out, "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    choice = report["choice"]
    assert (choice["width"], choice["depth"], choice["accuracy"]) == (0.5, 0.5, 1.0)
    assert choice["precision"] == "fp32"  # equal accuracy at every precision: the closest to the evaluated model
    assert report["accuracy"]["metric"] == "accuracy"

    artifact = out / "classifier-w0.5-d0.5.fp32.onnx"
    assert report["export"]["path"] == str(artifact) and report["export"]["parity"]["gate"]["passed"]
    assert artifact.stat().st_size == choice["size_bytes"] and choice["size_source"] == "exported"
    bench = [sys.executable, "-m", "edgebert", "bench", artifact, "--runs", "5", "--warmup", "1", "--min-time", "0"]
    done = subprocess.run([str(a) for a in [*bench, "--json"]], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    memory = json.loads(done.stdout)["memory"]
    footprint = memory["peak_rss_bytes"] - memory["rss_before_load_bytes"]  # what the model added
    assert artifact.stat().st_size <= footprint <= 60e6
    assert footprint <= choice["memory_bytes"]  # the estimate is an upper bound of what bench measures


def test_measure_benches_locally(labelled_classifier, run_cli):
    args = ["pick", labelled_classifier, "--profile", "local", "--candidates", "0.5:0.5", "--measure", "--json"]
    result = run_cli(*args)
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert {row["precision"] for row in report["candidates"]} == {"fp32", "fp16", "int8"}
    for row in report["candidates"]:
        assert row["memory_source"] == row["latency_source"] == row["baseline_source"] == "measured"
        assert row["size_source"] == "exported" and row["latency_ms"] > 0 and row["memory_bytes"] > row["size_bytes"]
    assert report["latency_model"]["leave_one_out"]["configurations"] == 3
