"""`pick`'s consistency: the frontier over what the user trades, the verdict about the artifact written,
the eval file it ranks by, a warning when the latency model predicts its own measurements poorly, and a
candidate exactly on a budget."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgebert.bundle import ONNX_FILES
from edgebert.cli.pick import NOTHING_FITS
from edgebert.latency_model import leave_one_out_warning
from tests.labelled import sentences


def test_frontier_without_measurements_is_int8_only(run_cli):
    """Same (w, d): same FLOPs, and int8 is estimated faster and smaller than fp16/fp32, so they are dominated."""
    result = run_cli("pick", "--profile", "raspberry-pi-4", "--memory-budget", "10GB", "--json")
    assert result.code == 0, result.stderr
    rows = json.loads(result.stdout)["candidates"]
    by_config = {}
    for row in rows:
        by_config.setdefault((row["width"], row["depth"]), {})[row["precision"]] = row
    for config in by_config.values():  # the independent fact the frontier rests on
        assert config["int8"]["latency_ms"] < config["fp32"]["latency_ms"]
        assert config["int8"]["memory_bytes"] < config["fp16"]["memory_bytes"] < config["fp32"]["memory_bytes"]
    frontier = [row for row in rows if row["pareto"]]
    assert 0 < len(frontier) < len(rows) == 36
    assert {row["precision"] for row in frontier} == {"int8"}
    assert not by_config[(1.0, 1.0)]["fp32"]["pareto"]


def local_pick(model, candidates: str, *options: str) -> list:
    """`edgebert pick MODEL` on the local profile for these candidates, as JSON; more options may follow."""
    return ["pick", model, "--profile", "local", "--candidates", candidates, *options, "--json"]


def test_export_is_rechecked_against_the_artifact_written(labelled_classifier, tmp_path, run_cli, monkeypatch):
    """A budget between the estimated and the real artifact's footprint: the verdict says the export does not fit."""
    monkeypatch.setenv("EDGEBERT_CACHE", str(tmp_path / "cache"))
    args = local_pick(labelled_classifier, "1:1", "--latency-budget", "10s")
    estimate = json.loads(run_cli(*args, "--memory-budget", "1GB").stdout)
    choice = estimate["choice"]
    assert choice["size_source"] == "estimated" and choice["pareto"]
    out = tmp_path / "out"
    exported = run_cli(*args, "--memory-budget", "1GB", "--export", out)
    assert exported.code == 0, exported.stderr
    written = json.loads(exported.stdout)["choice"]
    artifact = out / "classifier-w1-d1-onnx" / "onnx" / ONNX_FILES[choice["precision"]]
    assert written["size_bytes"] == artifact.stat().st_size != choice["size_bytes"]  # the graph is not just weights
    assert written["memory_bytes"] != choice["memory_bytes"]  # the footprint follows the real size
    low, high = sorted([choice["memory_bytes"], written["memory_bytes"]])
    budget = f"{(low + high) // 2}B"
    result = run_cli(*args, "--memory-budget", budget, "--export", tmp_path / "again")
    report = json.loads(result.stdout)
    if written["memory_bytes"] > choice["memory_bytes"]:  # fitted as estimated, not as written
        assert result.code == NOTHING_FITS and report["fits"] is False
        assert report["verdict"].startswith(
            f"the exported width 1 depth 1 {choice['precision']} does not fit after all"
        )
        again = tmp_path / "again" / "classifier-w1-d1-onnx" / "onnx" / ONNX_FILES[choice["precision"]]
        assert report["choice"]["size_bytes"] == again.stat().st_size
    else:  # the estimate was the larger: as estimated it did not fit, nothing was exported
        assert result.code == NOTHING_FITS and report["export"] is None


def _labelled(path, seed: int, labels: str) -> None:
    rows = zip(sentences(len(labels), seed=seed), labels, strict=True)
    path.write_text("sentence\tlabel\n" + "".join(f"{a}\t{y}\n" for (a, _), y in rows))


def test_data_chooses_the_eval_file_and_the_default_is_named(labelled_classifier, tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("EDGEBERT_CACHE", str(tmp_path / "cache"))
    small, large = tmp_path / "small.tsv", tmp_path / "large.tsv"
    _labelled(small, 1, "01010101")
    _labelled(large, 2, "00000000")
    assert run_cli("eval", labelled_classifier, "--data", small, "--width", "1", "--depth", "1").code == 0
    for config in ("0.5:0.5", "1:1"):
        width, depth = config.split(":")
        assert run_cli("eval", labelled_classifier, "--data", large, "--width", width, "--depth", depth).code == 0
    both = local_pick(labelled_classifier, "0.5:0.5,1:1", "--memory-budget", "1GB")
    default = json.loads(run_cli(*both).stdout)
    assert default["accuracy"]["data"] == str(large.resolve())  # it covers both candidates, small.tsv one
    assert default["accuracy"]["chosen_by"] == "most configurations covered"
    assert any(str(small.resolve()) in note and "--data" in note for note in default["notes"])
    args = local_pick(labelled_classifier, "1:1", "--memory-budget", "1GB")
    chosen = json.loads(run_cli(*args, "--data", small).stdout)
    assert chosen["accuracy"]["data"] == str(small.resolve()) and chosen["accuracy"]["chosen_by"] == "--data"
    missing = run_cli(*args, "--data", tmp_path / "nope.tsv")
    assert missing.code == 1 and "no such file" in missing.stderr
    other = tmp_path / "other.tsv"
    _labelled(other, 3, "11111111")
    none = json.loads(run_cli(*args, "--data", other).stdout)
    assert none["accuracy"] is None and any("no eval results for this model on" in n for n in none["notes"])


def test_poor_leave_one_out_warns_before_the_recommendation():
    poor = {"statistic": "p95", "configurations": 12, "within_10_percent": 0.17, "worst_relative_error": 0.51}
    assert "17% within +-10 %, worst error 51%" in leave_one_out_warning(poor)
    assert leave_one_out_warning({**poor, "within_10_percent": 1.0}) is None
    assert leave_one_out_warning(None) is None


# (option, the candidates' figure it limits, the row's flag for it, the figure written as the option reads it)
BUDGET_EDGES = {
    "memory": ("--memory-budget", "memory_bytes", "fits_memory", lambda bytes_: f"{bytes_}B"),
    "latency": ("--latency-budget", "latency_ms", "fits_latency", lambda ms: f"{np.format_float_positional(ms)}ms"),
}
LOOSE = {"memory": ["--memory-budget", "1GB"], "latency": ["--latency-budget", "10s"]}


def config(row: dict) -> tuple:
    return row["width"], row["depth"], row["precision"]


@pytest.mark.parametrize("budget", list(BUDGET_EDGES))
def test_a_candidate_exactly_on_the_budget_fits(tiny_models, run_cli, budget):
    """A budget is a limit (README: "model footprint <= 60 MB", "latency p95 <= 4 ms"): the candidate pick ranks
    first, budgeted at exactly its own figure, fits and ships; a budget one byte (one float step) below it does not."""
    option, figure, fits, written = BUDGET_EDGES[budget]
    args = ["pick", tiny_models["bert-cls"], "--profile", "raspberry-pi-4", "--candidates", "0.5:0.5,1:1", "--json"]
    first = json.loads(run_cli(*args, *LOOSE["memory"], *LOOSE["latency"]).stdout)["choice"]  # everything fits
    other = LOOSE["latency" if budget == "memory" else "memory"]

    def picked(limit: float) -> tuple[dict, dict]:
        """The report under `limit` (the other budget loose), and the first run's choice as a row of it."""
        result = run_cli(*args, *other, option, written(limit))
        assert result.code in (0, NOTHING_FITS), result.stderr
        report = json.loads(result.stdout)
        assert report["budgets"][figure] == limit  # the option reads back as exactly the figure written
        return report, next(row for row in report["candidates"] if config(row) == config(first))

    report, row = picked(first[figure])
    assert row[figure] == first[figure] and row[fits] and row["fits"]
    assert report["fits"] and config(report["choice"]) == config(first)
    below = first[figure] - 1 if budget == "memory" else float(np.nextafter(first[figure], 0))
    report, row = picked(below)
    assert not row[fits] and (report["choice"] is None or config(report["choice"]) != config(first))
