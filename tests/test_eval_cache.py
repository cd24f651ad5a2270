"""The eval cache: keyed by everything that decides a result, and never trusting an entry that does not hold."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgebert.evaluate import cached_results, eval_cache_dir, evaluate, model_key
from edgebert.slicing import open_checkpoint
from tests.labelled import sentences

CONFIG = [(1.0, 1.0)]


@pytest.fixture
def setup(tmp_path, monkeypatch, labelled_classifier) -> tuple[Path, Path]:
    """A copy of the labelled classifier (the tests change its files) and an empty cache of its own."""
    monkeypatch.setenv("EDGEBERT_CACHE", str(tmp_path / "cache"))
    model_dir = Path(shutil.copytree(labelled_classifier, tmp_path / "classifier"))
    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"{a}\t{i % 2}\n" for i, (a, _) in enumerate(sentences(8))))
    return model_dir, data


def _cached(model_dir: Path, data: Path) -> bool:
    return evaluate(model_dir, data, CONFIG)["results"][0]["cached"]


def _entries() -> list[Path]:
    return sorted(eval_cache_dir().glob("*.json"))


def test_a_change_to_what_decides_the_result_misses_the_cache(setup, monkeypatch):
    model_dir, data = setup
    assert not _cached(model_dir, data) and _cached(model_dir, data)
    # The label map: the same file read through swapped labels scores the complement.
    config = json.loads((model_dir / "config.json").read_text())
    swapped = {**config, "id2label": {"0": "pos", "1": "neg"}, "label2id": {"pos": 0, "neg": 1}}
    (model_dir / "config.json").write_text(json.dumps(swapped))
    assert not _cached(model_dir, data)
    (model_dir / "config.json").write_text(json.dumps(config))
    assert _cached(model_dir, data)
    # A tokenizer file: another vocabulary maps the same words to other ids.
    vocab = (model_dir / "vocab.txt").read_text()
    (model_dir / "vocab.txt").write_text(vocab.replace("w1\n", "w1x\n", 1))
    assert not _cached(model_dir, data)
    (model_dir / "vocab.txt").write_text(vocab)
    assert _cached(model_dir, data)
    # The edgebert version: a fix to slicing or tokenization must not hide behind old results.
    monkeypatch.setattr("edgebert.evaluate.__version__", "999.0")
    assert not _cached(model_dir, data)
    assert len(_entries()) == 4  # original, swapped labels, other vocabulary, other version


def test_max_length_is_part_of_the_key(setup, monkeypatch):
    model_dir, data = setup
    assert not _cached(model_dir, data)
    monkeypatch.setattr("edgebert.evaluate.MAX_LENGTH", 16)
    report = evaluate(model_dir, data, CONFIG)
    assert not report["results"][0]["cached"] and report["results"][0]["key"]["max_length"] == 16


@pytest.mark.parametrize(
    "damage",
    [
        lambda entry: [],
        lambda entry: {},
        lambda entry: {**entry, "metrics": {}},
        lambda entry: {**entry, "metrics": {"accuracy": 7.0}},
        lambda entry: {**entry, "metrics": {"accuracy": "high"}},
        lambda entry: {**entry, "version": 99},
        lambda entry: {**entry, "width": 0.5},  # no longer the entry its name says
        lambda entry: {**entry, "key": {**entry["key"], "data_sha256": "0" * 64}},
        lambda entry: {**entry, "extra": 1},
        lambda entry: "not json at all",
    ],
)
def test_damaged_or_tampered_entries_are_recomputed(setup, damage):
    model_dir, data = setup
    first = evaluate(model_dir, data, CONFIG)["results"][0]
    (entry_file,) = _entries()
    entry = json.loads(entry_file.read_text())
    damaged = damage(entry)
    entry_file.write_text(damaged if isinstance(damaged, str) else json.dumps(damaged))
    assert cached_results(model_key(open_checkpoint(model_dir))) == []  # pick does not trust it either
    again = evaluate(model_dir, data, CONFIG)["results"][0]
    assert not again["cached"] and again["metrics"] == first["metrics"]
    assert json.loads(entry_file.read_text()) == entry  # rewritten whole


def test_an_entry_copied_to_another_model_is_not_trusted(setup, tmp_path):
    model_dir, data = setup
    evaluate(model_dir, data, CONFIG)
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "id2label": {"0": "a", "1": "b"}}))
    assert cached_results(model_key(open_checkpoint(other))) == []
    assert len(cached_results(model_key(open_checkpoint(model_dir)))) == 1
