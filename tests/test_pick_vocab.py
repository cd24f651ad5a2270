"""`pick --vocab-from`: pruned variants of every candidate, under the embedding floor no width or depth gets below.

Every fact is computed apart from pick: the kept tokens with transformers' AutoTokenizer on the source
(its ids on the vocabulary texts, and its special ids), the embedding floor and a pruned size from
config.json, the unknown-token rate by counting the dev texts' tokens, and a pruned candidate's accuracy by
running the slice `edgebert slice --vocab-from` writes, through its own tokenizer, with transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

import edgebert  # noqa: F401 (registers the narrower slices' class with transformers' Auto classes)
from edgebert.demo import demo_checkpoint_dir
from tests.cli_checks import assert_one_line_error
from tests.labelled import WORDS, sentences

BYTES_PER_WEIGHT = {"fp32": 4, "fp16": 2, "int8": 1}
HALF = WORDS[: len(WORDS) // 2]  # the vocabulary texts use half the labelled classifier's words
VOCAB_TEXTS = [" ".join(HALF[i : i + 5]) for i in range(0, len(HALF), 5)]
DEMO_TEXTS = ["a short film about a long day", "the plot was fun"]  # the demo splits words into characters


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def tokenizer_of(directory: Path):
    return transformers.AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


def kept_ids(source: Path, texts: list[str]) -> set[int]:
    """The source tokenizer's ids on `texts`, and its special ids: what a pruned variant keeps."""
    tokenizer = tokenizer_of(source)
    seen = {i for text in texts for i in tokenizer(text, add_special_tokens=False)["input_ids"]}
    return seen | set(tokenizer.all_special_ids)


def picked(run_cli, *args) -> dict:
    result = run_cli(*args, "--json")
    assert result.code in (0, 3), result.stderr
    return json.loads(result.stdout)


def split(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(unpruned, pruned) candidates."""
    return [r for r in rows if r["vocabulary"] is None], [r for r in rows if r["vocabulary"] is not None]


def twin(rows: list[dict], row: dict) -> dict:
    """The unpruned candidate of the same width, depth and precision."""
    return next(
        r
        for r in rows
        if r["vocabulary"] is None
        and [r[k] for k in ("width", "depth", "precision")] == [row[k] for k in ("width", "depth", "precision")]
    )


def test_a_budget_under_the_embedding_floor_picks_a_pruned_candidate(run_cli, tmp_path):
    """BERT-base (the demo): no width or depth gets under its 30,522 x 768 word embeddings; a pruned one does."""
    texts = write_lines(tmp_path / "texts.txt", DEMO_TEXTS)
    args = ["pick", "--profile", "raspberry-pi-4", "--candidates", "0.25:0.5,1:1", "--latency-budget", "1000s"]
    rows = picked(run_cli, *args, "--memory-budget", "1000GB", "--vocab-from", texts)["candidates"]
    plain, pruned = split(rows)
    assert len(plain) == len(pruned) == 6
    config = json.loads((demo_checkpoint_dir() / "config.json").read_text())
    hidden = config["hidden_size"]
    floor = (config["vocab_size"] + config["max_position_embeddings"] + config["type_vocab_size"] + 2) * hidden
    smallest = min(plain, key=lambda row: row["memory_bytes"])
    assert smallest["size_bytes"] > floor * BYTES_PER_WEIGHT[smallest["precision"]]  # the floor, before pruning
    below = [row for row in pruned if row["memory_bytes"] < smallest["memory_bytes"]]
    assert below, "a pruned candidate must go under the smallest unpruned one"
    target = min(below, key=lambda row: row["memory_bytes"])
    assert target["size_bytes"] < floor * BYTES_PER_WEIGHT[target["precision"]]  # under the old embedding floor

    budget = (target["memory_bytes"] + smallest["memory_bytes"]) // 2
    report = picked(run_cli, *args, "--memory-budget", f"{budget}B", "--vocab-from", texts)
    choice = report["choice"]
    assert report["fits"] and choice["vocabulary"] == len(kept_ids(demo_checkpoint_dir(), DEMO_TEXTS))
    assert choice["memory_bytes"] <= budget < smallest["memory_bytes"]
    assert not any(row["fits"] for row in report["candidates"] if row["vocabulary"] is None)
    assert report["vocabulary"]["kept"] == choice["vocabulary"] and report["vocabulary"]["original_size"] == 30522
    assert any("accuracy is not measured" in note for note in report["notes"])  # ranked by FLOPs: said so

    shown = run_cli(*args, "--memory-budget", f"{budget}B", "--vocab-from", texts)
    assert shown.code == 0, shown.stderr
    assert f"vocabulary {choice['vocabulary']:,}" in " ".join(shown.stdout.split())


def test_a_pruned_size_is_the_kept_rows_plus_the_rest(labelled_classifier, tmp_path, run_cli):
    """Kept tokens x hidden x bytes per weight, plus everything else the unpruned estimate counts."""
    texts = write_lines(tmp_path / "texts.txt", VOCAB_TEXTS)
    args = ["pick", labelled_classifier, "--profile", "local", "--candidates", "0.25:0.5,0.5:0.75,1:1"]
    report = picked(run_cli, *args, "--memory-budget", "1000GB", "--vocab-from", texts)
    config = json.loads((labelled_classifier / "config.json").read_text())
    kept = len(kept_ids(labelled_classifier, VOCAB_TEXTS))
    assert kept < config["vocab_size"]
    plain, pruned = split(report["candidates"])
    assert len(pruned) == len(plain) == 9
    for row in pruned:
        bytes_per_weight = BYTES_PER_WEIGHT[row["precision"]]
        unpruned = twin(report["candidates"], row)
        rest = unpruned["size_bytes"] - config["vocab_size"] * config["hidden_size"] * bytes_per_weight
        assert row["vocabulary"] == kept
        assert row["size_bytes"] == kept * config["hidden_size"] * bytes_per_weight + rest
        assert row["memory_bytes"] < unpruned["memory_bytes"]
        assert row["latency_ms"] == unpruned["latency_ms"]  # the same layers
        assert row["encoder_flops_seq128"] == unpruned["encoder_flops_seq128"]


def _dev_set(path: Path, source: Path) -> list[str]:
    """16 sentences over all the words, labelled by the unpruned full network (so it scores 1.0)."""
    texts = [a for a, _ in sentences(16, seed=5)]
    tokenizer = tokenizer_of(source)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(source)).eval()
    with torch.no_grad():
        labels = [model(**tokenizer(text, return_tensors="pt")).logits.argmax(-1).item() for text in texts]
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels, strict=True)))
    return texts


def _slice_accuracy(directory: Path, texts: list[str], labels: list[int]) -> float:
    """A written slice's accuracy, through its own tokenizer and transformers, one text at a time."""
    tokenizer = tokenizer_of(directory)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(directory)).eval()
    with torch.no_grad():
        right = [
            model(**tokenizer(text, return_tensors="pt", truncation=True, max_length=128)).logits.argmax(-1).item()
            == label
            for text, label in zip(texts, labels, strict=True)
        ]
    return sum(right) / len(right)


def test_pruned_accuracy_is_measured_and_the_unknown_rate_shown(labelled_classifier, tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("EDGEBERT_CACHE", str(tmp_path / "cache"))  # other tests cache results for the same weights
    texts = write_lines(tmp_path / "texts.txt", VOCAB_TEXTS)
    dev = tmp_path / "dev.tsv"
    dev_texts = _dev_set(dev, labelled_classifier)
    labels = [int(line.split("\t")[1]) for line in dev.read_text().splitlines()[1:]]
    configs = [(0.5, 0.5), (1.0, 1.0)]
    for width, depth in configs:
        done = run_cli("eval", labelled_classifier, "--data", dev, "--width", width, "--depth", depth)
        assert done.code == 0, done.stderr
    args = ["pick", labelled_classifier, "--profile", "local", "--candidates", "0.5:0.5,1:1", "--data", dev]
    report = picked(run_cli, *args, "--memory-budget", "1000GB", "--vocab-from", texts)
    assert report["accuracy"]["metric"] == "accuracy"

    tokenizer = tokenizer_of(labelled_classifier)
    kept = kept_ids(labelled_classifier, VOCAB_TEXTS)
    tokens = [i for text in dev_texts for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
    rate = sum(i not in kept for i in tokens) / len(tokens)
    assert 0.2 < rate < 0.8  # half the words are dropped

    plain, pruned = split(report["candidates"])
    assert {row["unknown_rate"] for row in plain} == {None}
    assert [row["unknown_rate"] for row in pruned] == [pytest.approx(rate, rel=1e-12)] * len(pruned)
    for width, depth in configs:
        directory = tmp_path / f"slice-{width}-{depth}"
        made = run_cli(
            "slice", labelled_classifier, "--width", width, "--depth", depth, "--vocab-from", texts, "--out", directory
        )
        assert made.code == 0, made.stderr
        expected = _slice_accuracy(directory, dev_texts, labels)
        for row in pruned:
            if (row["width"], row["depth"]) == (width, depth):
                assert row["accuracy"] == pytest.approx(expected)
    assert any(row["accuracy"] < 1.0 for row in pruned)  # the [UNK]s cost something: not the unpruned score copied
    assert {row["accuracy"] for row in plain if (row["width"], row["depth"]) == (1.0, 1.0)} == {1.0}

    shown = run_cli(*args, "--memory-budget", "1000GB", "--vocab-from", texts)
    assert shown.code == 0, shown.stderr
    assert f"{rate:.1%}" in shown.stdout and "[UNK]" in shown.stdout


def test_a_pruned_choice_is_exported_from_a_pruned_slice(labelled_classifier, tmp_path, run_cli):
    """Without accuracy a pruned variant ranks with its twin (same FLOPs) and wins on memory: it is the one written."""
    texts = write_lines(tmp_path / "texts.txt", VOCAB_TEXTS)
    out = tmp_path / "out"
    args = ["pick", labelled_classifier, "--profile", "local", "--candidates", "0.5:0.5", "--memory-budget", "1GB"]
    report = picked(run_cli, *args, "--vocab-from", texts, "--export", out)
    choice = report["choice"]
    kept = kept_ids(labelled_classifier, VOCAB_TEXTS)
    assert choice["vocabulary"] == len(kept)
    bundle = out / f"classifier-w0.5-d0.5-vocab{len(kept)}-onnx"
    assert report["export"]["bundle"] == str(bundle)
    assert json.loads((bundle / "config.json").read_text())["vocab_size"] == len(kept)
    tokenizer = tokenizer_of(bundle)
    dropped = next(word for word in WORDS if word not in HALF)
    assert tokenizer(dropped, add_special_tokens=False)["input_ids"] == [tokenizer.unk_token_id]
    assert tokenizer.convert_ids_to_tokens(tokenizer(HALF[3], add_special_tokens=False)["input_ids"]) == [HALF[3]]


def test_a_source_that_keeps_no_token_is_one_error_line(labelled_classifier, tmp_path, run_cli):
    unknown = write_lines(tmp_path / "unknown.txt", ["zzz qqq", "[UNK] [SEP]"])  # [UNK]s and specials only
    args = ["pick", labelled_classifier, "--profile", "local", "--candidates", "0.5:0.5"]
    assert_one_line_error(run_cli(*args, "--vocab-from", unknown), "beyond the special ones")
    assert_one_line_error(run_cli(*args, "--vocab-min-count", "2"), "--vocab-from")
