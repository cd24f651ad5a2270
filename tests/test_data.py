"""The one data reader: GLUE's native files as they are, unlabelled text, label mapping, length-grouped batches."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgebert.data import grouped_batches, is_labelled_file, label_targets, labels_from_data, read_any, read_dataset
from edgebert.errors import EdgebertError

GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
needs_glue = pytest.mark.skipif(not GLUE.is_dir(), reason="../shared/data/glue is not present")


@needs_glue
@pytest.mark.parametrize(
    ("task", "rows", "pairs", "labels"),
    [("SST-2", 872, False, {"0": 0, "1": 1}), ("RTE", 277, True, {"entailment": 0, "not_entailment": 1})],
)
def test_glue_classification_files_as_they_are(task, rows, pairs, labels):
    data = read_dataset(GLUE / task / "dev.tsv")
    assert len(data) == rows
    assert (data.second is not None) == pairs
    assert labels_from_data(data) == labels
    targets = label_targets(data, 2, labels, Path(task))
    assert set(targets.tolist()) == {0, 1}


@needs_glue
def test_stsb_native_file_with_scores():
    """STS-B: index, genre, ... sentence1, sentence2, score; floats make a regression task."""
    data = read_dataset(GLUE / "STS-B" / "dev.tsv")
    assert len(data) == 1500 and data.second is not None
    assert data.first[0] == "A man with a hard hat is dancing."
    assert data.second[0] == "A man wearing a hard hat is dancing."
    assert labels_from_data(data) is None
    scores = label_targets(data, 1, None, Path("stsb"))
    assert scores[0] == 5.0 and scores.min() >= 0.0 and scores.max() <= 5.0


def test_text_labels_map_through_the_models_label2id(tmp_path):
    path = tmp_path / "rte.tsv"
    path.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tnot_entailment\n1\tc\td\tentailment\n")
    data = read_dataset(path)
    assert label_targets(data, 2, {"entailment": 1, "not_entailment": 0}, Path("m")).tolist() == [0, 1]
    with pytest.raises(EdgebertError, match="unknown label 'not_entailment'"):
        label_targets(data, 2, {"LABEL_0": 0, "LABEL_1": 1}, Path("m"))


def test_unlabelled_text_is_one_sentence_per_line(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("a fine film\n\nsentence\tlabel are just words here\n")
    assert not is_labelled_file(path)
    data = read_any(path)
    assert data.labels is None and data.first == ["a fine film", "sentence\tlabel are just words here"]
    assert data.lines == [1, 3]


def test_grouped_batches_cover_every_example_once_and_are_deterministic():
    lengths = [(i * 37) % 61 + 3 for i in range(1000)]
    batches = grouped_batches(lengths, 32, seed=42, epoch=0)
    assert sorted(i for batch in batches for i in batch) == list(range(1000))
    assert batches == grouped_batches(lengths, 32, seed=42, epoch=0)
    assert batches != grouped_batches(lengths, 32, seed=42, epoch=1)
    padded = sum(32 * max(lengths[i] for i in batch) for batch in batches)
    random_padded = sum(32 * max(lengths[i] for i in range(s, min(s + 32, 1000))) for s in range(0, 1000, 32))
    assert padded < 0.6 * random_padded  # grouping by length saves most of the padding


@pytest.mark.parametrize("label", ["--1", "²", "١", "1.5e3x"])
def test_labels_that_only_look_like_integers_are_one_clear_error(tmp_path, label):
    path = tmp_path / "d.tsv"
    path.write_text(f"sentence\tlabel\na\t0\nb\t{label}\n")
    with pytest.raises(EdgebertError, match="unknown label"):
        label_targets(read_dataset(path), 2, None, Path("m"))


def test_a_huge_integer_label_does_not_build_a_huge_head(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("sentence\tlabel\na\t0\nb\t99999999999\n")
    with pytest.raises(EdgebertError, match="class labels must be 0 to"):
        labels_from_data(read_dataset(path))


def test_a_field_over_the_csv_limit_is_one_clear_error(tmp_path):
    import csv

    path = tmp_path / "d.csv"
    path.write_text('sentence,label\n"' + "x" * (csv.field_size_limit() + 10) + '",1\n')
    with pytest.raises(EdgebertError, match=r"d.csv:\d+: unreadable row"):
        read_dataset(path)
