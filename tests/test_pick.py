"""`edgebert pick`: budgets that select a known candidate, nothing fitting, units, accuracy, export and measure."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgebert.bundle import ONNX_FILES
from edgebert.cli.pick import NOTHING_FITS, parse_candidates, parse_latency, parse_memory
from edgebert.errors import EdgebertError
from tests.reference import DYNABERT_SIZES

CANDIDATES = "0.25:0.5,0.5:0.5,1:1"
# The documented preference among candidates that fit (no accuracy known): more encoder FLOPs, that is more
# width and depth, then the cheaper: less memory, then less latency.
CONFIG_RANK = {(0.25, 0.5): 0, (0.5, 0.5): 1, (1.0, 1.0): 2}
BYTES_PER_WEIGHT = {"fp32": 4, "fp16": 2, "int8": 1}


def table(run_cli, *options: str) -> list[dict]:
    """Every candidate of the demo model (BERT-base) on raspberry-pi-4, with budgets nothing exceeds."""
    args = ["pick", "--profile", "raspberry-pi-4", "--candidates", CANDIDATES, "--latency-budget", "1000s"]
    result = run_cli(*args, "--memory-budget", "1000GB", *options, "--json")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)["candidates"]


def expected_choice(rows: list[dict], memory_bytes: float, memory: str = "memory_bytes") -> tuple:
    """The verdict by hand: of the rows within the budget, the one the documented preference ranks first."""
    fitting = [row for row in rows if row[memory] <= memory_bytes]
    assert 0 < len(fitting) < len(rows), "the budget must decide something"
    best = max(fitting, key=lambda row: (CONFIG_RANK[(row["width"], row["depth"])], -row[memory], -row["latency_ms"]))
    return best["width"], best["depth"], best["precision"]


def test_estimated_sizes_are_the_dynabert_parameter_counts(run_cli):
    """Before export, a size is the parameters (the DynaBERT paper's table) times the bytes of one weight."""
    rows = table(run_cli)
    assert len(rows) == 9
    for row in rows:
        millions = DYNABERT_SIZES[row["depth"]][row["width"]]
        assert abs(row["size_bytes"] / BYTES_PER_WEIGHT[row["precision"]] / 1e6 - millions) <= 0.05 + 1e-9, row
        assert row["size_source"] == "estimated"
        assert row["memory_bytes"] == row["footprint_bytes"] > row["size_bytes"]  # a model holds its weights, at least


@pytest.mark.parametrize(
    "text, expected",
    [("60MB", 60_000_000), ("0.5GiB", 2**29), ("512KiB", 524_288), ("1.5 gb", 1_500_000_000), ("100mb", 10**8)],
)
def test_memory_units(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text, expected", [("40ms", 40.0), ("0.2s", 200.0), ("150us", 0.15), (" 7 ms ", 7.0)])
def test_latency_units(text, expected):
    assert parse_latency(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["lots", "-5MB", "60 parsecs", "MB", "1e3MB", ""])  # a bare 60 is 60 MB
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
    assert result.code == 2 and "cannot read latency budget 'soon'" in result.stderr  # a bad option: usage error
    result = run_cli("pick", "--profile", "raspberry-pi-4", "--measure")
    assert result.code == 1 and "use --profile local" in result.stderr


def test_budget_selects_the_known_candidate(run_cli):
    """150 MB of model footprint: the candidate the preference ranks first among those within it wins."""
    rows = table(run_cli)
    expected = expected_choice(rows, 150e6)
    args = ["pick", "--profile", "raspberry-pi-4", "--candidates", CANDIDATES]
    result = run_cli(*args, "--memory-budget", "150MB", "--latency-budget", "10s", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    choice = report["choice"]
    assert (choice["width"], choice["depth"], choice["precision"]) == expected
    assert choice["memory_bytes"] == choice["footprint_bytes"] <= 150e6  # the budget is the model's, not the process's
    assert choice["memory_source"] == choice["baseline_source"] == "estimated"
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
    shown = run_cli(*args, "--memory-budget", "150MB")  # the profile's 500 ms latency budget applies
    width, depth, precision = expected
    assert shown.code == 0 and f"ship width {width:g} depth {depth:g} {precision}" in shown.stdout
    text = " ".join(shown.stdout.split())  # rich wraps at the terminal's width
    baseline = f"{choice['baseline_bytes'] / 1e6:.1f} MB (estimated), not in the budget"
    assert "latency p95 <= 500 ms (profile)" in text and baseline in text


def test_process_scope_adds_the_runtime_baseline(run_cli):
    """The same candidates budgeted as a whole process: the baseline counts, so a smaller candidate wins."""
    rows = table(run_cli, "--memory-scope", "process")
    for row in rows:
        assert row["memory_bytes"] == row["footprint_bytes"] + row["baseline_bytes"]
    expected = expected_choice(rows, 190e6)
    assert expected != expected_choice(rows, 190e6, "footprint_bytes")  # the baseline changes the verdict
    args = ["pick", "--profile", "raspberry-pi-4", "--candidates", CANDIDATES, "--latency-budget", "10s"]
    result = run_cli(*args, "--memory-budget", "190MB", "--memory-scope", "process", "--json")
    assert result.code == 0, result.stderr
    choice = json.loads(result.stdout)["choice"]
    assert (choice["width"], choice["depth"], choice["precision"]) == expected
    assert run_cli(*args, "--memory-budget", "190MB", "--memory-scope", "heap").code == 2


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
    estimated = json.loads(run_cli(*args, "--json").stdout)["candidates"]  # as ranked: before the export sized one
    same = [row for row in estimated if (row["width"], row["depth"]) == (0.5, 0.5) and row["fits"]]
    cheapest = min(same, key=lambda row: (row["memory_bytes"], row["latency_ms"]))
    assert choice["precision"] == cheapest["precision"]  # equal accuracy at every precision: the cheapest ships
    assert choice["pareto"] and report["accuracy"]["metric"] == "accuracy"

    artifact = out / "classifier-w0.5-d0.5-onnx" / "onnx" / ONNX_FILES[choice["precision"]]
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
    # the three precisions at every thread count bench compared (1, and the profile's when it has more cores)
    assert report["latency_model"]["leave_one_out"]["configurations"] == 3 * len(report["thread_counts"])
