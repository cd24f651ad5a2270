"""`pick`'s consistency: the frontier over what the user trades, the verdict about the artifact written,
the eval file it ranks by, and a warning when the latency model predicts its own measurements poorly."""

from __future__ import annotations

import json

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
        assert report["choice"]["size_bytes"] == artifact.stat().st_size
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
