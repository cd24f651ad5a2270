"""`edgebert eval`: accuracy of sub-networks on a labelled dev set (cached for `pick`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from edgebert.cli.options import (
    JsonOpt,
    LabelColumnOpt,
    ModelArg,
    TextColumnOpt,
    check_depth,
    check_width,
    data_columns,
)
from edgebert.cli.output import console, print_notes, show
from edgebert.cli.progress import Progress
from edgebert.errors import OptionError
from edgebert.subnet import TRAINED_GRID


def eval_command(
    data: Annotated[
        Path,
        typer.Option(help="Labelled dev set with a header: GLUE's TSV, or CSV (other column names: --text-column)."),
    ],
    model: ModelArg = None,
    width: Annotated[
        float | None, typer.Option(help="Evaluate this one width (depth defaults to 1).", callback=check_width)
    ] = None,
    depth: Annotated[
        float | None, typer.Option(help="Evaluate this one depth (width defaults to 1).", callback=check_depth)
    ] = None,
    grid: Annotated[
        bool, typer.Option("--grid", help=f"Evaluate the {len(TRAINED_GRID)} trained (width, depth), the default.")
    ] = False,
    text_column: TextColumnOpt = None,
    label_column: LabelColumnOpt = None,
    json: JsonOpt = False,
) -> None:
    """Accuracy (or Pearson/Spearman for regression) of sub-networks, sliced in memory, or of a slice as it is;
    results are cached."""
    from edgebert.evaluate import evaluate, sub_networks

    columns = data_columns(text_column, label_column)
    single = width is not None or depth is not None
    if grid and single:
        raise OptionError("give --width/--depth for one sub-network or --grid for all, not both")
    chosen = [(1.0 if width is None else width, 1.0 if depth is None else depth)] if single else None
    configs = sub_networks(model, list(TRAINED_GRID) if grid else chosen)
    with Progress() as progress:
        progress.stage("evaluating", len(configs), unit="sub-network")

        def advance(result: dict) -> None:
            progress.update(advance=1, detail=f"w{result['width']:g} d{result['depth']:g}")

        report = evaluate(model, data, configs, on_result=advance, columns=columns)
    show(report, json, print_report)


def print_report(report: dict) -> None:
    results = report["results"]
    names = list(results[0]["metrics"])
    table = Table(
        title=f"{report['model']} on {report['data']} ({report['examples']} examples, {report['task']})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for column in ("width", "depth", "params", *names, "source"):
        table.add_column(column, justify="left" if column == "source" else "right", no_wrap=True)
    for result in results:
        table.add_row(
            f"{result['width']:g}",
            f"{result['depth']:g}",
            f"{result['parameters'] / 1e6:.1f} M",
            *(f"{result['metrics'][name]:.4f}" for name in names),
            "cache hit" if result["cached"] else "computed",
        )
    console.print(table)
    hits = sum(result["cached"] for result in results)
    if hits:
        console.print(
            f"{hits} of {len(results)} from the cache (same weights, label map, tokenizer, data file, max length "
            "and edgebert version): nothing recomputed"
        )
    print_notes(report.get("untrained"))


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
