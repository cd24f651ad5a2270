"""The benchmark suite's plumbing on a tiny model: structure and correctness only, never speed."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"edgebert_benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_suite_on_tiny_model(tiny_models, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("matplotlib")
    suite = _script("run")
    args = suite.build_parser().parse_args(
        ["--quick", "--grid", "0.25x0.5", "--formats", "onnx", "--precisions", "fp32", "--threads", "1"]
        + ["--rounds", "1", "--seq-len", "16", "--model", str(tiny_models["bert-cls"])]
    )
    settings = suite.settings_from(args)
    settings |= {"min_runs": 2, "min_seconds": 0.0, "harness_repeats": 1, "harness_runs": 3}
    report = suite.run(settings, tmp_path / "work", tmp_path / "results")

    assert settings["grid"] == [[1.0, 1.0], [0.25, 0.5]]  # the full model is always measured
    saved = json.loads((tmp_path / "results" / "latest.json").read_text())
    assert saved["analysis"]["summary"] == report["analysis"]["summary"]
    rows = {(r["format"], r["width"], r["depth"]): r for r in saved["analysis"]["rows"]}
    assert set(rows) == {(f, w, d) for f in ("onnx", "pytorch") for w, d in ((1.0, 1.0), (0.25, 0.5))}
    full, small = rows["onnx", 1.0, 1.0], rows["onnx", 0.25, 0.5]
    assert full["flops_ratio"] == 1.0 and small["flops_ratio"] > 1
    assert full["speedup"] == 1.0 and small["speedup"] > 0 and small["latency_ms"] > 0
    assert small["gemm_peak_share"] > 0 and small["quantization"] == "fp32"
    assert small["speedup_vs_pytorch"] > 0
    # The on-the-fly DynaBERT baseline computes the same sub-network as the sliced export.
    assert set(saved["analysis"]["baseline_vs_onnx_fp32_max_abs_diff"]) == {"1:1", "0.25:0.5"}
    assert max(saved["analysis"]["baseline_vs_onnx_fp32_max_abs_diff"].values()) < 1e-4
    (harness,) = saved["analysis"]["harness"]
    assert harness["bench_ms"] > 0 and harness["bare_ms"] > 0
    assert set(saved["analysis"]["gemm_peak_gflops"]) == {"onnx:1"}
    table = (tmp_path / "results" / "latest.md").read_text()
    assert "| width | depth | FLOPs ratio | ONNX fp32 1t | PyTorch DynaBERT 1t |" in table
    assert (tmp_path / "results" / "latest.png").stat().st_size > 0


def test_the_pytorch_baseline_keeps_what_dynabert_keeps_off_the_grid(tiny_models):
    """Width 0.6 of 12 heads of 4 (FFN 96): DynaBERT's round_to_nearest keeps round(7.2) = 7 whole heads,
    28 query rows and int(7/12 x 96) = 56 FFN neurons; round(out x 0.6) would keep 29 and 58, not whole heads."""
    pytest.importorskip("transformers")
    import numpy as np

    from edgebert.subnet import OffGridWarning

    baseline = _script("run").DynaBertBaseline(str(tiny_models["bert-cls"]))
    with pytest.warns(OffGridWarning):
        baseline.set_subnetwork(0.6, 0.5)
    layer = baseline.model.bert.encoder.layer[0]
    assert (layer.attention.self.query.kept, layer.attention.output.dense.kept) == (28, 28)
    assert (layer.intermediate.dense.kept, layer.output.dense.kept) == (56, 56)
    assert baseline.model.bert.encoder.kept_layers == (0, 2, 4, 6, 8, 10)
    ids = np.arange(1, 9, dtype=np.int64)[None, :]
    logits = baseline.call({"input_ids": ids, "attention_mask": np.ones_like(ids)})()
    assert tuple(logits.shape) == (1, 3)


def test_vocab_prune_on_tiny_model(labelled_classifier, tmp_path, monkeypatch):
    """Texts of the first 30 of the classifier's 60 words prune the other 30; dev texts use all 60, so the share of
    dev tokens dropped is that of words w30..w59 (one token each).

    Both slices are exported in the first int8 scheme: `export` races the schemes that pass on this machine, and on
    a busy one it shipped the slower "mixed" (19 kB bigger here) for one slice and not the other, so the files
    differed by more than the 30 rows pruning drops."""
    pytest.importorskip("onnxruntime")
    from edgebert.export.onnx import OnnxExporter
    from tests.labelled import VOCAB, WORDS, sentences

    scheme = OnnxExporter().schemes("int8")[0]
    monkeypatch.setattr(OnnxExporter, "schemes", lambda self, precision: [scheme])

    kept_words = set(WORDS[:30])
    rng = random.Random(1)
    train = [(" ".join(rng.choices(WORDS[:30], k=6)), " ".join(rng.choices(WORDS[:30], k=6))) for _ in range(20)]
    train.append((" ".join(WORDS[:15]), " ".join(WORDS[15:30])))  # every kept word at least once
    dev = sentences(24, seed=2)
    for name, rows in (("train", train), ("dev", dev)):
        lines = ["sentence1\tsentence2\tlabel", *(f"{a}\t{b}\t{i % 2}" for i, (a, b) in enumerate(rows))]
        (tmp_path / f"{name}.tsv").write_text("\n".join(lines) + "\n")
    script = _script("vocab_prune")
    args = script.build_parser().parse_args(
        ["--quick", "--no-demo", "--model", str(labelled_classifier), "--vocab-from", str(tmp_path / "train.tsv")]
        + ["--dev", str(tmp_path / "dev.tsv")]
    )
    settings = script.settings_from(args) | {"grid": [[0.25, 0.5]], "repeats": 2}
    report = script.run(settings, tmp_path / "work", tmp_path / "results")

    saved = json.loads((tmp_path / "results" / "vocab_prune.json").read_text())
    assert saved["model"] == report["model"] and saved["commit"]
    assert saved["model"]["kept_tokens"] == 5 + 30 and saved["model"]["original_tokens"] == len(VOCAB)
    dev_words = " ".join(f"{a} {b}" for a, b in dev).split()
    dropped = sum(word not in kept_words for word in dev_words) / len(dev_words)
    assert saved["model"]["dev_unknown_rate"] == pytest.approx(dropped)
    full, pruned = saved["model"]["rows"]
    assert (full["pruned"], pruned["pruned"]) == (False, True)
    hidden = json.loads((labelled_classifier / "config.json").read_text())["hidden_size"]
    assert full["parameters"] - pruned["parameters"] == 30 * hidden
    assert full["quantization"] == pruned["quantization"] == scheme
    assert pruned["size_bytes"] < full["size_bytes"]
    assert pruned["peak_rss_bytes"] == pytest.approx(sum(pruned["peak_rss_each_bytes"]) / 2)  # median of two
    assert pruned["peak_rss_bytes"] > 0 and 0 <= pruned["accuracy"] <= 100
    target = saved["targets"]["(0.25, 0.5) pruned accuracy >= unpruned - 0.3 points"]
    assert target["value"] == pytest.approx(pruned["accuracy"] - full["accuracy"])
    table = (tmp_path / "results" / "vocab_prune.md").read_text()
    assert "| 0.25 | 0.5 |" in table and "| (0.25, 0.5) int8 ONNX pruned <= 8 MB | " in table
