"""`edgebert eval`: known per-sub-network accuracy, the cache, regression metrics, and one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgebert.errors import EdgebertError
from edgebert.evaluate import cached_results, evaluate, model_key
from edgebert.slicing import open_checkpoint
from edgebert.subnet import TRAINED_GRID
from tests.labelled import build_classifier, sentences

EXAMPLES = 16


def _hf_scores(model_dir: Path, pairs: list[tuple[str, str]]):
    """The full model's logits from transformers itself, at the protocol's 128 tokens with right padding."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    encoded = tokenizer(
        [a for a, _ in pairs], [b for _, b in pairs], max_length=128, padding="max_length", return_tensors="pt"
    )
    with torch.no_grad():
        return model(**encoded).logits.numpy()


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, labelled_classifier) -> tuple[Path, Path]:
    """A tiny classifier and a TSV whose labels are its own full-model predictions (as names and as ids)."""
    root = tmp_path_factory.mktemp("labelled")
    model_dir = labelled_classifier
    pairs = sentences(EXAMPLES)
    predictions = _hf_scores(model_dir, pairs).argmax(-1)
    assert 0 < predictions.sum() < EXAMPLES, "the fixture needs both classes"
    rows = ["sentence1\tsentence2\tlabel"]
    for i, ((a, b), label) in enumerate(zip(pairs, predictions, strict=True)):
        rows.append(f"{a}\t{b}\t{['neg', 'pos'][label] if i % 2 else label}")
    data = root / "dev.tsv"
    data.write_text("\n".join(rows) + "\n")
    return model_dir, data


def test_full_network_is_exact_and_smaller_ones_are_not(labelled, monkeypatch):
    model_dir, data = labelled
    report = evaluate(model_dir, data, TRAINED_GRID)
    accuracy = {(r["width"], r["depth"]): r["metrics"]["accuracy"] for r in report["results"]}
    assert accuracy[(1.0, 1.0)] == 1.0
    assert min(accuracy.values()) < 1.0
    assert not any(r["cached"] for r in report["results"])
    assert report["examples"] == EXAMPLES and report["task"] == "classification"
    assert len(cached_results(model_key(open_checkpoint(model_dir)))) == len(TRAINED_GRID)

    def fail(*args, **kwargs):
        raise AssertionError("a cached result was recomputed")

    monkeypatch.setattr("edgebert.evaluate.predict", fail)
    again = evaluate(model_dir, data, TRAINED_GRID)
    assert all(r["cached"] for r in again["results"])
    assert {(r["width"], r["depth"]): r["metrics"]["accuracy"] for r in again["results"]} == accuracy


def test_cli_reports_cache_hits(labelled, run_cli):
    model_dir, data = labelled
    first = run_cli("eval", model_dir, "--data", data, "--width", "1", "--depth", "1", "--json")
    assert first.code == 0, first.stderr
    assert json.loads(first.stdout)["results"][0]["metrics"] == {"accuracy": 1.0}
    second = run_cli("eval", model_dir, "--data", data, "--width", "1", "--depth", "1")
    assert second.code == 0, second.stderr
    assert "cache hit" in second.stdout and "nothing recomputed" in second.stdout
    both = run_cli("eval", model_dir, "--data", data, "--width", "1", "--grid")
    assert both.code == 2 and "not both" in both.stderr  # options that exclude each other: a usage error


def test_regression_head_gives_pearson_and_spearman(tmp_path):
    model_dir = build_classifier(tmp_path / "regressor", num_labels=1)
    pairs = sentences(12, seed=1)
    scores = _hf_scores(model_dir, pairs)[:, 0]
    data = tmp_path / "sts.csv"
    rows = [f"{a},{b},{score:.6f}" for (a, b), score in zip(pairs, scores, strict=True)]
    data.write_text("sentence1,sentence2,label\n" + "\n".join(rows) + "\n")
    result = evaluate(model_dir, data, [(1.0, 1.0)])["results"][0]
    assert result["metrics"]["pearson"] == pytest.approx(1.0, abs=1e-5)
    assert result["metrics"]["spearman"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "content, message",
    [
        ("sentence\tlabel\na b\tneg\nw1\tpos\textra\n", "dev.tsv:3: 3 fields, the header has 2"),
        ("sentence\tlabel\nw1\tneutral\n", "dev.tsv:2: unknown label 'neutral'"),
        ("sentence\tlabel\nw1\t7\n", "dev.tsv:2: unknown label '7'"),
        ("text\tgold\nw1\t0\n", "dev.tsv:1: the header must name a target column (label or score)"),
        ("review\tlabel\nw1\t0\n", "dev.tsv:1: the header must name a text column"),
        ("sentence\tlabel\nw1\t\n", "dev.tsv:2: empty label"),
        ("sentence\tlabel\n", "no examples after the header"),
    ],
)
def test_bad_data_is_one_line(labelled, tmp_path, run_cli, content, message):
    data = tmp_path / "dev.tsv"
    data.write_text(content)
    result = run_cli("eval", labelled[0], "--data", data, "--width", "1", "--depth", "1")
    assert result.code == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_model_without_head_or_tokenizer(labelled, tiny_models, tmp_path):
    model_dir, data = labelled
    with pytest.raises(EdgebertError, match="no classifier head"):
        evaluate(tiny_models["bert-bare"], data, [(1.0, 1.0)])
    bare = tmp_path / "no-tokenizer"
    shutil.copytree(model_dir, bare, ignore=shutil.ignore_patterns("vocab.txt", "tokenizer_config.json"))
    with pytest.raises(EdgebertError, match="no tokenizer files"):
        evaluate(bare, data, [(0.5, 0.5)])
