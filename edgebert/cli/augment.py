"""`edgebert augment`: TinyBERT's data augmentation of a training file, for the distillation phases."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgebert.augment import AugmentManifest, AugmentOptions, augment_file, manifest_path
from edgebert.cli.options import JsonOpt, LabelColumnOpt, TextColumnOpt, data_columns
from edgebert.cli.output import console, show
from edgebert.cli.progress import Progress

DEFAULTS = AugmentOptions()  # every option's default is the library's


def augment_command(
    teacher: Annotated[
        Path,
        typer.Argument(help="The fine-tuned teacher: its tokenizer splits words, its word embeddings give neighbours."),
    ],
    data: Annotated[Path, typer.Option("--data", help="Training data: GLUE-style TSV/CSV with a header.")],
    out: Annotated[
        Path,
        typer.Option("--out", help="The augmented file (.csv: comma-separated, else TSV); its manifest is <out>.json."),
    ],
    dev: Annotated[
        Path | None,
        typer.Option("--dev", help="Refuse variants equal to a text of this file (see --drop-dev-matches)."),
    ] = None,
    variants: Annotated[
        int, typer.Option(help="Variants drawn per example (TinyBERT's N for SST-2); repeats are dropped.")
    ] = DEFAULTS.variants,
    prob: Annotated[float, typer.Option("--prob", help="Probability that a word is replaced.")] = DEFAULTS.probability,
    top_k: Annotated[int, typer.Option("--top-k", help="Candidates per word, drawn uniformly.")] = DEFAULTS.top_k,
    mlm: Annotated[
        Path | None,
        typer.Option(help="A masked-LM directory: candidates of one-wordpiece words (else the teacher's embeddings)."),
    ] = None,
    word_vectors: Annotated[
        Path | None,
        typer.Option(help="GloVe-format word vectors: candidates of words of several wordpieces (else kept)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the draws: the same seed writes the same bytes.")] = DEFAULTS.seed,
    batch_size: Annotated[
        int, typer.Option(help="Masked-LM inputs per forward pass (speed only, never the output).")
    ] = DEFAULTS.batch_size,
    drop_dev_matches: Annotated[
        bool, typer.Option("--drop-dev-matches", help="Drop variants equal to a --dev text, and count them.")
    ] = False,
    text_column: TextColumnOpt = None,
    label_column: LabelColumnOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a file `edgebert augment` wrote earlier.")] = False,
    json: JsonOpt = False,
) -> None:
    """Write a training file with N variants of every example (words replaced by similar ones), as TinyBERT."""
    options = AugmentOptions(
        variants=variants,
        probability=prob,
        top_k=top_k,
        seed=seed,
        mlm=mlm,
        word_vectors=word_vectors,
        batch_size=batch_size,
    )
    columns = data_columns(text_column, label_column)
    with Progress() as progress:
        manifest = augment_file(
            teacher,
            data,
            out,
            options,
            dev_file=dev,
            drop_dev_matches=drop_dev_matches,
            columns=columns,
            force=force,
            reporter=progress,
        )
    result = {"output": str(out), "manifest": str(manifest_path(out)), **manifest.model_dump(mode="json")}
    show(result, json, lambda _: print_augmented(out, manifest))


def print_augmented(out: Path, manifest: AugmentManifest) -> None:
    """Where the variants came from and how many there are."""
    counts, settings = manifest.counts, manifest.settings
    single = f"masked LM {manifest.mlm.path}" if manifest.mlm else "the teacher's word embeddings"
    several = f"word vectors {manifest.word_vectors.path}" if manifest.word_vectors else "kept"
    table = Table(title=f"Wrote {out} (and {manifest_path(out).name})", show_header=False, title_justify="left")
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")  # long paths wrap rather than end in an ellipsis
    table.add_row("source", f"{manifest.data.path} ({counts.examples} examples)")
    table.add_row("teacher", manifest.teacher.path)
    table.add_row("one-wordpiece words", single)
    table.add_row("longer words", several)
    table.add_row(
        "settings", f"{settings.variants} draws, p {settings.probability:g}, top {settings.top_k}, seed {settings.seed}"
    )
    table.add_row("variants written", str(counts.variants_written))
    table.add_row("repeats dropped", str(counts.duplicates_removed))
    if manifest.dev_data is not None:
        table.add_row("dev matches dropped", f"{counts.dev_matches_dropped} (checked against {manifest.dev_data.path})")
    table.add_row("rows", f"{counts.rows} in {manifest.wall_time_s:.1f} s")
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("augment")(augment_command)
