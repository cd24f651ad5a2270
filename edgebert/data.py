"""Task data for `eval`, `rewire`, `train` and `slice --vocab-from`: GLUE-style files, labels, tokens, batches.

One reader for every command. It takes GLUE's files as they are: a header naming the text
column (`sentence` or `sentence1`, or `text` as most other datasets), optionally `sentence2`,
and the target (`label`, or `score` as in STS-B); other columns (`index`, `genre`, ...) are
ignored. Other names are given as `Columns` (`--text-column a` or `--text-column a,b` for
sentence pairs, `--label-column y`), matched case-insensitively. A `.csv` file is
comma-separated (quotes allowed), a `.tsv` file tab-separated as GLUE's (no quoting); any other
name is tab-separated when its header line has a tab, else comma-separated when it has a comma.
Labels may be class ids or names (`entailment`), mapped through the model's `label2id`.
`rewire` and `slice --vocab-from` also accept unlabelled text, one sentence per line. Training
batches are padded per batch and grouped by length: SST-2 sentences average 13 tokens, so
padding everything to 128 would waste 90 % of the work.
"""

from __future__ import annotations

import csv
import hashlib
import math
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebert.errors import EdgebertError, require
from edgebert.reading import read_regular, text_lines

if TYPE_CHECKING:
    import numpy as np
    import torch

MAX_LENGTH = 128
MAX_DATA_BYTES = 4 << 30  # GLUE's largest training file (MNLI) is 0.3 GB; the bound only stops a runaway read
INTEGER_LABEL = re.compile(r"-?[0-9]+")
MAX_CLASSES = 10_000  # a new classifier head from integer labels: bounds its size, not a real limit of tasks
FIRST_COLUMNS = ("sentence", "sentence1", "text")
SECOND_COLUMN = "sentence2"
LABEL_COLUMNS = ("label", "score")
# Examples per chunk sorted by length before cutting batches: batches of similar lengths, order still random.
GROUPING_CHUNK_BATCHES = 50


@dataclass(frozen=True)
class Columns:
    """The columns to read: the text (one name, or two for sentence pairs) and the target; None: GLUE's names."""

    text: tuple[str, ...] | None = None
    label: str | None = None

    @property
    def given(self) -> bool:
        return self.text is not None or self.label is not None


GLUE_COLUMNS = Columns()  # GLUE's names: sentence or sentence1 (+ sentence2) or text, label or score


def parse_text_columns(text: str) -> tuple[str, ...]:
    """'question,answer' -> ('question', 'answer'): one text column, or two for sentence pairs."""
    names = tuple(name.strip().lower() for name in text.split(","))
    if not 1 <= len(names) <= 2 or not all(names) or len(set(names)) != len(names):
        raise EdgebertError(f"give one column name, or two different ones for sentence pairs (a,b), got {text!r}")
    return names


def parse_label_column(text: str) -> str:
    name = text.strip().lower()
    if not name or "," in name:
        raise EdgebertError(f"give one column name, got {text!r}")
    return name


@dataclass
class Dataset:
    """One or two text columns and raw label strings (None for unlabelled text), with their line numbers.

    `columns` names the columns read (text, then the target if any; empty for plain text): the same
    file read through other columns is other data, so it is part of the eval cache's key.
    """

    path: Path
    first: list[str]
    second: list[str] | None
    labels: list[str] | None
    lines: list[int]
    sha256: str
    columns: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.first)

    def subset(self, indices: list[int]) -> Dataset:
        """The examples at `indices` (same file and sha256: it identifies the source, not the subset)."""

        def pick(values: list[str] | None) -> list[str] | None:
            return None if values is None else [values[i] for i in indices]

        first, second, labels, lines = (pick(values) for values in (self.first, self.second, self.labels, self.lines))
        return Dataset(self.path, first, second, labels, lines, self.sha256, self.columns)


def _read_text(path: Path) -> tuple[str, str]:
    """The file's text and the sha256 of those very bytes (one read: the digest describes what was parsed)."""
    if not path.exists():
        raise EdgebertError(f"{path}: no such data file")
    data = read_regular(path, MAX_DATA_BYTES)
    if len(data) > MAX_DATA_BYTES:
        raise EdgebertError(f"{path}: larger than {MAX_DATA_BYTES >> 30} GB, too large for a data file")
    try:
        return data.decode("utf-8"), hashlib.sha256(data).hexdigest()
    except UnicodeDecodeError as exc:
        raise EdgebertError(f"{path}: not UTF-8 text ({exc})") from exc


def _header(text: str, delimiter: str) -> list[str]:
    first_line = text.split("\n", 1)[0]
    return [name.strip().lower() for name in first_line.split(delimiter)]


def _dialect(path: Path, text: str) -> dict[str, Any]:
    """.csv is comma-separated with quotes, .tsv GLUE's tabs without quote handling; else the header decides."""
    comma, tab = {"delimiter": ","}, {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return comma if suffix == ".csv" else tab
    first_line = text.split("\n", 1)[0]
    return comma if "\t" not in first_line and "," in first_line else tab


def is_labelled_file(path: str | Path) -> bool:
    """Whether `path` has a GLUE-style header naming a text and a label column (else: one sentence per line)."""
    path = Path(path)
    return _labelled(path, _read_text(path)[0])


def _labelled(path: Path, text: str) -> bool:
    header = _header(text, _dialect(path, text)["delimiter"])
    return _names_text(header) and any(name in header for name in LABEL_COLUMNS)


def _names_text(header: list[str]) -> bool:
    return any(name in header for name in FIRST_COLUMNS)


def read_dataset(path: str | Path, columns: Columns = GLUE_COLUMNS) -> Dataset:
    """Read a labelled file with a header: GLUE's column names, or those `columns` gives (extra columns ignored)."""
    path = Path(path)
    return _dataset(path, *_read_text(path), columns)


def _column(path: Path, header: list[str], name: str, option: str) -> int:
    if name not in header:
        shown = f"the file's columns: {', '.join(header)}" if any(header) else "the file is empty"
        raise EdgebertError(f"{path}:1: no column {name!r} ({option}); {shown}")
    return header.index(name)


def _dataset(path: Path, text: str, sha256: str, columns: Columns = GLUE_COLUMNS, need_label: bool = True) -> Dataset:
    """The rows of a file with a header; without `need_label` (rewire) a missing target leaves it unlabelled."""
    rows = csv.reader(text_lines(text), **_dialect(path, text))
    header = [name.strip().lower() for name in next(rows, [])]
    if columns.text is not None:
        texts = [_column(path, header, name, "--text-column") for name in columns.text]
    else:
        first = next((name for name in FIRST_COLUMNS if name in header), None)
        texts = [header.index(name) for name in (first, SECOND_COLUMN) if name in header]
    if columns.label is not None:
        label_index: int | None = _column(path, header, columns.label, "--label-column")
    else:
        label_index = next((header.index(name) for name in LABEL_COLUMNS if name in header), None)
    columns_line = f"the file's columns: {', '.join(header)}" if any(header) else "the file is empty"
    if not texts:
        raise EdgebertError(
            f"{path}:1: the header must name a text column ({' or '.join(FIRST_COLUMNS)}, optionally with "
            f"{SECOND_COLUMN}), or give it with --text-column; {columns_line}"
        )
    if label_index is None and need_label:
        raise EdgebertError(
            f"{path}:1: the header must name a target column ({' or '.join(LABEL_COLUMNS)}), or give it with "
            f"--label-column; {columns_line}"
        )
    if label_index in texts:
        raise EdgebertError(f"{path}: column {header[label_index]!r} is given as both a text and the target")
    read = tuple(header[i] for i in [*texts, *([] if label_index is None else [label_index])])
    second = [] if len(texts) == 2 else None
    data = Dataset(path, [], second, [] if label_index is not None else None, [], sha256, read)
    try:
        _read_rows(data, rows, header, texts[0], texts[1] if len(texts) == 2 else None, label_index)
    except csv.Error as exc:  # e.g. a field over the csv module's size limit
        raise EdgebertError(f"{path}:{rows.line_num}: unreadable row ({exc})") from exc
    if not data.first:
        raise EdgebertError(f"{path}: no examples after the header")
    return data


def _read_rows(
    data: Dataset, rows: Iterable[list[str]], header: list[str], first: int, second: int | None, label_index: int | None
) -> None:
    for line, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise EdgebertError(f"{data.path}:{line}: {len(row)} fields, the header has {len(header)}")
        if data.labels is not None and label_index is not None:
            data.labels.append(_target(data.path, line, header[label_index], row[label_index]))
        data.first.append(row[first])
        if data.second is not None and second is not None:
            data.second.append(row[second])
        data.lines.append(line)


def _target(path: Path, line: int, label: str, cell: str) -> str:
    target = cell.strip()
    if not target:
        raise EdgebertError(f"{path}:{line}: empty {label}")
    if _is_float(target) and not math.isfinite(float(target)):  # a NaN score would poison every loss and metric
        raise EdgebertError(f"{path}:{line}: {label} {target!r} is not a finite number")
    return target


def read_texts(path: str | Path) -> Dataset:
    """Unlabelled text, one sentence per line (blank lines skipped)."""
    path = Path(path)
    return _texts(path, *_read_text(path))


def _texts(path: Path, text: str, sha256: str) -> Dataset:
    data = Dataset(path, [], None, None, [], sha256)
    for line, sentence in enumerate(text_lines(text), start=1):
        if sentence.strip():
            data.first.append(sentence)
            data.lines.append(line)
    if not data.first:
        raise EdgebertError(f"{path}: no sentences (expected one sentence per line, or a GLUE-style file)")
    return data


def read_text_source(path: str | Path) -> Dataset:
    """Texts whose labels do not matter (vocabulary pruning's sources): a file whose header names a text column
    (GLUE's names) is read as `eval` reads it, its target optional; any other file is plain text, one text per line."""
    path = Path(path)
    text, sha256 = _read_text(path)
    if _names_text(_header(text, _dialect(path, text)["delimiter"])):
        return _dataset(path, text, sha256, need_label=False)
    return _texts(path, text, sha256)


def read_any(path: str | Path, columns: Columns = GLUE_COLUMNS) -> Dataset:
    """A labelled GLUE-style file when its header says so, else unlabelled text; with `columns`, a file with a
    header whose target is optional (rewire's importance then uses the model's predictions)."""
    path = Path(path)
    text, sha256 = _read_text(path)
    if columns.given:
        return _dataset(path, text, sha256, columns, need_label=columns.label is not None)
    return _dataset(path, text, sha256) if _labelled(path, text) else _texts(path, text, sha256)


def label_targets(data: Dataset, num_labels: int | None, label2id: dict[str, int] | None, model: Path) -> np.ndarray:
    """Class ids (via label2id, else integer labels) or float scores for a one-output regression head."""
    import numpy as np

    if not num_labels:
        raise EdgebertError(
            f"{model} has no classifier head (a bare encoder): fine-tune it on the task first "
            "(`edgebert train MODEL --phases finetune --widths 1 --depths 1 ...`)"
        )
    if data.labels is None:
        raise EdgebertError(f"{data.path}: has no labels (needs a header with a label or score column)")
    if num_labels == 1:
        scores = []
        for label, line in zip(data.labels, data.lines, strict=True):
            try:
                scores.append(float(label))
            except ValueError:
                raise EdgebertError(
                    f"{data.path}:{line}: label {label!r} is not a number (the model has a one-output regression head)"
                ) from None
        return np.array(scores)
    label2id = {str(k): int(v) for k, v in (label2id or {}).items()}
    targets = []
    for label, line in zip(data.labels, data.lines, strict=True):
        if label in label2id:
            targets.append(label2id[label])
        elif (class_id := _class_id(label)) is not None and 0 <= class_id < num_labels:
            targets.append(class_id)
        else:
            known = list(label2id) or list(range(num_labels))
            raise EdgebertError(f"{data.path}:{line}: unknown label {label!r} (the model's labels: {known})")
    return np.array(targets)


def labels_from_data(data: Dataset) -> dict[str, int] | None:
    """A new classifier's label2id, from the labels seen: integers keep their value, names are sorted.

    None means a regression task (every label a non-integer number, e.g. STS-B scores).
    """
    if data.labels is None:
        raise EdgebertError(f"{data.path}: has no labels")
    names = sorted(set(data.labels))
    if all(_class_id(name) is not None for name in names):
        ids = sorted(_class_id(name) for name in names)
        if ids[0] < 0 or ids[-1] >= MAX_CLASSES:
            raise EdgebertError(f"{data.path}: class labels must be 0 to {MAX_CLASSES - 1}, got {ids[0]}..{ids[-1]}")
        return {str(i): i for i in range(ids[-1] + 1)}
    if all(_is_float(name) for name in names):
        return None
    return {name: i for i, name in enumerate(names)}


def _class_id(text: str) -> int | None:
    """An integer class label ("0", "-1"), ASCII digits only: "²" and "--1" pass `str.isdigit`."""
    return int(text) if INTEGER_LABEL.fullmatch(text) else None


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ---- tokenization and batches ---------------------------------------------------------------------

# What a directory must hold for AutoTokenizer to rebuild the training tokenizer (one of these sets).
TOKENIZER_SETS = (("tokenizer.json",), ("vocab.txt",), ("vocab.json", "merges.txt"))


def check_tokenizer_files(model_dir: Path, present: set[str]) -> None:
    """Fail up front, before slow work: the same directory always gives the same answer."""
    if not any(set(names) <= present for names in TOKENIZER_SETS):
        raise EdgebertError(
            f"{model_dir} has no tokenizer files (needs tokenizer.json, vocab.txt, or vocab.json + merges.txt): "
            "copy them from the model the checkpoint was fine-tuned from"
        )


def load_tokenizer(model_dir: Path, model_type: str) -> Any:
    """The model's own tokenizer, from local files only."""
    transformers = require("transformers", "tokenizing text")
    try:
        return transformers.AutoTokenizer.from_pretrained(
            str(model_dir), local_files_only=True, tokenizer_type=model_type
        )
    except (OSError, ValueError) as exc:
        raise EdgebertError(f"{model_dir}: cannot load its tokenizer ({str(exc).splitlines()[0]})") from exc


@dataclass
class Encoded:
    """Token ids per example, unpadded; `token_type_ids` is all zeros for RoBERTa."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


def encode(data: Dataset, tokenizer: Any, max_length: int = MAX_LENGTH) -> Encoded:
    """Sentence pairs as two segments, truncated to `max_length`, as the original GLUE scripts."""
    encoded = tokenizer(data.first, data.second, max_length=max_length, truncation=True, padding=False)
    input_ids = encoded["input_ids"]
    types = encoded.get("token_type_ids") or [[0] * len(ids) for ids in input_ids]
    return Encoded(input_ids, types, tokenizer.pad_token_id or 0)


def collate(encoded: Encoded, indices: list[int], length: int | None = None) -> dict[str, torch.Tensor]:
    """Right-padded tensors of the examples at `indices`, to `length` (default: the longest of them)."""
    import torch

    length = length or max(len(encoded.input_ids[i]) for i in indices)
    ids = torch.full((len(indices), length), encoded.pad_id, dtype=torch.long)
    types = torch.zeros((len(indices), length), dtype=torch.long)
    mask = torch.zeros((len(indices), length), dtype=torch.long)
    for row, index in enumerate(indices):
        n = len(encoded.input_ids[index])
        ids[row, :n] = torch.tensor(encoded.input_ids[index])
        types[row, :n] = torch.tensor(encoded.token_type_ids[index])
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def grouped_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch's batches: a seeded shuffle, chunks sorted by length, then the batch order shuffled.

    Deterministic in (seed, epoch), so a resumed run sees exactly the batches it would have.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * GROUPING_CHUNK_BATCHES
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: -lengths[i])
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def sequential_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Evaluation batches sorted by length (results do not depend on the order; padding does cost)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
