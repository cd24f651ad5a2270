"""The augmented file: reading the data, writing each example and its variants, then the manifest."""

from __future__ import annotations

import csv
import hashlib
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from edgebert import __version__
from edgebert.atomic import refuse_existing, staged_outputs
from edgebert.augment.manifest import (
    AugmentCounts,
    AugmentManifest,
    AugmentSettings,
    manifest_path,
    replaceable_augmented,
)
from edgebert.augment.options import AugmentOptions, Reporter, Silent
from edgebert.augment.variants import CandidateSources, Example, dev_key, example_rng, variants_of
from edgebert.checkpoint import checkpoint_config_file
from edgebert.data import GLUE_COLUMNS, Columns, Dataset, read_any, read_dataset
from edgebert.errors import EdgebertError
from edgebert.manifests import FileRef
from edgebert.model_files import CONFIG_FILE, model_file


class RowWriter:
    """Rows written in the data's format (.csv: comma-separated with quotes, else GLUE's TSV), hashed as written."""

    def __init__(self, file: BinaryIO, comma: bool):
        self.file = file
        self.dialect = (
            {"delimiter": ","} if comma else {"delimiter": "\t", "quoting": csv.QUOTE_NONE, "quotechar": None}
        )
        self.digest = hashlib.sha256()
        self.rows = 0

    def write(self, rows: list[list[str]]) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n", **self.dialect).writerows(rows)
        data = buffer.getvalue().encode("utf-8")
        self.file.write(data)
        self.digest.update(data)
        self.rows += len(rows)


def examples_of(data: Dataset) -> list[Example]:
    return list(zip(*(side for side in (data.first, data.second) if side is not None), strict=True))


def check_writable(data: Dataset, comma: bool) -> None:
    """A TSV cannot hold a tab in a text (GLUE's files have no quoting), and no output a line break."""
    forbidden = "\n\r" if comma else "\t\n\r"
    for line, example in zip(data.lines, examples_of(data), strict=True):
        if any(ch in text for text in example for ch in forbidden):
            hint = "" if comma else ": write a .csv file (--out NAME.csv)"
            raise EdgebertError(
                f"{data.path}:{line}: a text holds a tab or a line break, which the output cannot{hint}"
            )


def read_dev(dev_file: Path, columns: Columns, data: Dataset) -> tuple[Dataset, set[str]]:
    """The dev set and the keys (`dev_key`) of its examples; it must have as many texts per example as the data."""
    dev = read_any(dev_file, columns)
    if (dev.second is None) != (data.second is None):
        raise EdgebertError(
            f"{dev_file}: {1 if dev.second is None else 2} text column(s), {data.path} has "
            f"{1 if data.second is None else 2}: give the dev file of the same task"
        )
    return dev, {dev_key(example) for example in examples_of(dev)}


@dataclass
class Tally:
    variants_written: int = 0
    duplicates_removed: int = 0
    dev_matches: int = 0
    first_match: str = ""  # the first variant equal to a dev text, and where it came from


def write_augmented(
    writer: RowWriter,
    data: Dataset,
    sources: CandidateSources,
    dev_keys: set[str],
    drop_dev_matches: bool,
    reporter: Reporter,
) -> Tally:
    """Every example, then its variants (minus those equal to a dev text when dropping them), chunk by chunk."""
    options, tally = sources.options, Tally()
    examples = examples_of(data)
    writer.write([list(data.columns)])
    reporter.stage("augmenting", len(data), unit="example")
    for start in range(0, len(data), sources.chunk):
        chunk = examples[start : start + sources.chunk]
        rows = []
        for i, example, slots in zip(range(start, start + len(chunk)), chunk, sources.slots(chunk), strict=True):
            rng = example_rng(options.seed, i)
            variants = variants_of(example, slots, options.variants, options.probability, rng)
            tally.duplicates_removed += options.variants - len(variants)
            rows.append([*example, data.labels[i]])
            for variant in variants:
                if dev_key(variant) in dev_keys:
                    tally.dev_matches += 1
                    tally.first_match = (
                        tally.first_match or f"{' | '.join(variant)[:60]!r}, from {data.path}:{data.lines[i]}"
                    )
                    if drop_dev_matches:
                        continue
                rows.append([*variant, data.labels[i]])
                tally.variants_written += 1
        writer.write(rows)
        reporter.update(advance=len(chunk))
    return tally


def augment_file(
    teacher: str | Path,
    data_file: str | Path,
    out: str | Path,
    options: AugmentOptions | None = None,
    *,
    dev_file: str | Path | None = None,
    drop_dev_matches: bool = False,
    columns: Columns = GLUE_COLUMNS,
    force: bool = False,
    reporter: Reporter | None = None,
) -> AugmentManifest:
    """Write `out` (the examples of `data_file`, each followed by its variants) and its manifest `<out>.json`.

    Variants equal to a text of `dev_file` (up to spacing and case) are refused with one error line, or dropped
    and counted with `drop_dev_matches`. Nothing is written unless everything succeeds.
    """
    started = time.perf_counter()
    options = options or AugmentOptions()
    reporter = reporter or Silent()
    teacher, data_file, out = Path(teacher), Path(data_file), Path(out)
    output = {"force": force, "replaceable": replaceable_augmented(out)}
    refuse_existing(out, manifest_path(out), **output)
    data = read_dataset(data_file, columns)
    comma = out.suffix.lower() == ".csv"
    check_writable(data, comma)
    dev, dev_keys = read_dev(Path(dev_file), columns, data) if dev_file is not None else (None, set())
    checkpoint_config_file(teacher)  # a wrong path is refused before the slow loads
    if options.mlm is not None and model_file(options.mlm, CONFIG_FILE) is None:
        raise EdgebertError(f"{options.mlm} has no {CONFIG_FILE}: not a Hugging Face model directory (--mlm)")
    sources = CandidateSources(teacher, options, reporter)
    with staged_outputs(out, manifest_path(out), **output) as (staged, staged_manifest):
        with staged.open("wb") as file:
            writer = RowWriter(file, comma)
            tally = write_augmented(writer, data, sources, dev_keys, drop_dev_matches, reporter)
        if tally.dev_matches and not drop_dev_matches:
            raise EdgebertError(
                f"{tally.dev_matches} variant(s) equal a text of {dev_file} (the first: {tally.first_match}): "
                "pass --drop-dev-matches to drop them"
            )
        manifest = AugmentManifest(
            edgebert_version=__version__,
            augmented=FileRef(path=out.name, sha256=writer.digest.hexdigest(), examples=writer.rows - 1),
            data=FileRef(path=str(data.path), sha256=data.sha256, examples=len(data)),
            dev_data=None if dev is None else FileRef(path=str(dev.path), sha256=dev.sha256, examples=len(dev)),
            teacher=sources.teacher,
            mlm=None if sources.mlm is None else sources.mlm.reference,
            word_vectors=None if sources.word_vectors is None else sources.word_vectors.reference,
            settings=AugmentSettings(
                variants=options.variants,
                probability=options.probability,
                top_k=options.top_k,
                seed=options.seed,
                text_columns=list(data.columns[:-1]),
                label_column=data.columns[-1],
                drop_dev_matches=drop_dev_matches,
            ),
            counts=AugmentCounts(
                examples=len(data),
                variants_written=tally.variants_written,
                duplicates_removed=tally.duplicates_removed,
                dev_matches_dropped=tally.dev_matches if drop_dev_matches else 0,
                rows=writer.rows - 1,
            ),
            wall_time_s=time.perf_counter() - started,
        )
        staged_manifest.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return manifest
