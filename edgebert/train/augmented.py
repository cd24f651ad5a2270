"""The augmented data a run's distillation phases train on (issue 20): a file `edgebert augment` wrote, given as
--augmented and checked against the run's --train, text columns and teacher; or the one `--augment N` makes with the
same code in the run's home, where --resume finds it again.

Every phase with a teacher (width, depth, final) trains on all its rows, the examples of --train and their variants; the
losses are against the teacher, so its labels are never read. The finetune phase (gold labels) keeps --train.
With --train-examples, the run's seeded subset of --train's examples is kept with all their variants: a run with
augmentation distils on the same source sentences as one without, plus their variants, so at the same --max-steps
(the same time) the two differ only by the augmentation.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from edgebert.augment import AugmentManifest, AugmentOptions, augment_file, read_augmented
from edgebert.data import Columns, Dataset, Encoded, encode, load_tokenizer, read_any
from edgebert.errors import EdgebertError
from edgebert.train.inputs import Augmented, Inputs
from edgebert.train.reporter import Reporter

if TYPE_CHECKING:
    from edgebert.train.run_files import RunFiles

# --augment's file, in the run's home: comma-separated with quotes, which holds any text --train can
AUGMENTED_FILE = "augmented.csv"
# Rows tokenized at once: the tokenizer's working objects for all of SST-2's million rows at once take 3 GB more.
ENCODE_CHUNK = 8192


def given_augmented(path: Path, inputs: Inputs) -> Augmented:
    """--augmented FILE: refused (one line) without its manifest, or made from another file than --train."""
    return _read(path, read_augmented(path), inputs, made_in_run=False)


def augmented_path(files: RunFiles) -> Path:
    return files.augmented_dir / AUGMENTED_FILE


def own_augmented(
    files: RunFiles, inputs: Inputs, variants: int, dev_file: Path, columns: Columns, reporter: Reporter, reuse: bool
) -> Augmented:
    """--augment N: `edgebert augment`'s defaults with N variants of --train (those equal to a --dev text dropped),
    made in the run's home; with `reuse` (--resume) the file made before is read again (made again when it is gone:
    the same inputs write the same bytes, and --resume compares its sha256)."""
    path = augmented_path(files)
    if not (reuse and path.is_file()):
        reporter.message(f"augmenting {inputs.train.path}: {variants} variants per example, into {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        manifest = augment_file(
            inputs.checkpoint.path,
            inputs.train.path,
            path,
            AugmentOptions(variants=variants),
            dev_file=dev_file,
            drop_dev_matches=True,
            columns=columns,
            force=True,
        )
        counts = manifest.counts
        reporter.message(
            f"augmented: {counts.variants_written} variants of {counts.examples} examples "
            f"({counts.dev_matches_dropped} equal to a --dev text dropped) in {manifest.wall_time_s:.0f} s"
        )
    return read_own(files, inputs)


def read_own(files: RunFiles, inputs: Inputs) -> Augmented:
    """The file --augment made in the run's home (processes other than the first read what it made)."""
    path = augmented_path(files)
    return _read(path, read_augmented(path), inputs, made_in_run=True)


def _read(path: Path, manifest: AugmentManifest, inputs: Inputs, made_in_run: bool) -> Augmented:
    """The augmented file checked against the run (its source is --train, read through the same text columns; a
    file made with another teacher is warned about) and its rows the run trains on, tokenized."""
    train = inputs.train
    if manifest.data.sha256 != train.sha256:
        raise EdgebertError(
            f"{path} was augmented from {manifest.data.path}, not from {train.path} (another sha256): augment "
            f"{train.path} (`edgebert augment TEACHER --data {train.path} --out FILE`)"
        )
    text_columns = list(train.columns[:-1])  # a training file always has a target column, read last
    if manifest.settings.text_columns != text_columns:
        raise EdgebertError(
            f"{path} holds the text columns {', '.join(manifest.settings.text_columns)}, this run reads "
            f"{', '.join(text_columns)} of {train.path}: augment it with the same --text-column"
        )
    if manifest.teacher.sha256 != inputs.checkpoint.weights_sha256:
        warnings.warn(
            f"{path} was augmented with another teacher ({manifest.teacher.path}): its variants are distilled from "
            f"{inputs.checkpoint.path} all the same (the manifest records both)",
            stacklevel=3,
        )
    data = read_any(path, Columns(text=tuple(text_columns)))  # the texts only: labels are never needed
    rows = list(range(len(data)))
    if len(inputs.indices) < len(train):
        chosen = set(inputs.indices)
        rows = [row for row, source in enumerate(source_examples(data, train)) if source in chosen]
    return Augmented(path, manifest, made_in_run, rows, _encoded(data.subset(rows), inputs))


def source_examples(augmented: Dataset, train: Dataset) -> list[int]:
    """The example of `train` each row of `augmented` comes from. `augment` writes every example, then its variants,
    and never a variant equal to its own example: a row equal to the next example starts that example's rows. (A
    variant equal to the next example's text starts it a few rows early: rows of neighbouring examples.)"""
    sources, current = [], -1
    for row in range(len(augmented)):
        following = current + 1
        if following < len(train) and _texts(augmented, row) == _texts(train, following):
            current = following
        if current < 0:
            break
        sources.append(current)
    if current != len(train) - 1:
        raise EdgebertError(
            f"{augmented.path} does not hold the examples of {train.path} in order, each followed by its "
            "variants: not a file `edgebert augment` wrote from it"
        )
    return sources


def _encoded(data: Dataset, inputs: Inputs) -> Encoded:
    """`data` tokenized as --train is, `ENCODE_CHUNK` rows at a time."""
    tokenizer = load_tokenizer(inputs.checkpoint.path, inputs.checkpoint.model_type)
    chunks = [
        encode(data.subset(list(range(start, min(start + ENCODE_CHUNK, len(data))))), tokenizer, inputs.max_length)
        for start in range(0, len(data), ENCODE_CHUNK)
    ]
    return Encoded(
        [ids for chunk in chunks for ids in chunk.input_ids],
        [types for chunk in chunks for types in chunk.token_type_ids],
        chunks[0].pad_id,
    )


def _texts(data: Dataset, index: int) -> tuple[str, str | None]:
    return data.first[index], data.second[index] if data.second is not None else None
