"""`edgebert pick`: the sub-network and precision to ship to a device, under its memory and latency budgets.

Units are read here (one small parser) and the library gets bytes and milliseconds. Exit codes:
0 a choice fits (and, with --export, the artifact written fits), NOTHING_FITS when nothing does
(the verdict names the smallest memory and latency reachable), 2 for an option's bad value (a budget,
a candidate list, a scope), 1 for other errors.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.table import Table

from edgebert import __version__
from edgebert.atomic import refuse_existing, staged_outputs
from edgebert.cli.options import (
    EmbeddingsOpt,
    JsonOpt,
    ModelArg,
    ProfileOpt,
    VocabFromOpt,
    VocabMinCountOpt,
    choice_of,
    data_columns,
    default_is,
    either,
    option_value,
)
from edgebert.cli.output import console, print_notes, print_warning, show
from edgebert.cli.progress import Progress
from edgebert.errors import EdgebertError, require
from edgebert.precisions import PRECISIONS
from edgebert.profiles import (
    BARE_MEMORY_UNIT,
    BARE_TIME_UNIT,
    BUDGET_PERCENTILE,
    DEFAULT_MEMORY_SCOPE,
    MEMORY_SCOPE_HOLDS,
    MEMORY_SCOPES,
    parse_latency,
    parse_memory,
)
from edgebert.subnet import check_fractions

if TYPE_CHECKING:
    from edgebert.pick import PickReport

NOTHING_FITS = 3  # exit code: nothing fits the budgets (1 is an error, 2 a usage error)
PLOT_SOFTWARE = "edgebert"  # a plot's PNG Software text starts with it: what `--force` may replace
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_HEAD_BYTES = 64 * 1024  # where a plot's text chunks are (before the image data): read no further
SCOPES_HELD = either(f"{scope!r} ({MEMORY_SCOPE_HOLDS[scope]})" for scope in MEMORY_SCOPES)
SOURCE_MARKS = {"measured": "m", "predicted": "p", "derived": "d", "estimated": "e", "estimate from specs": "s"}


def parse_candidates(text: str) -> list[tuple[float, float]]:
    """'0.5:0.75,1:1' -> [(0.5, 0.75), (1.0, 1.0)]."""
    pairs = []
    for item in text.split(","):
        try:
            width, depth = (float(part) for part in item.split(":"))
        except ValueError:
            raise EdgebertError(f"bad candidate {item.strip()!r}: give WIDTH:DEPTH pairs, e.g. 0.5:0.75,1:1") from None
        pairs.append(check_fractions(width, depth))
    return pairs


def pick_command(
    model: ModelArg = None,
    profile: ProfileOpt = "local",
    memory_budget: Annotated[
        str | None,
        typer.Option(
            help=f"The model's footprint, e.g. 60MB, 0.5GiB, 512KiB; a bare number is {BARE_MEMORY_UNIT}, as in a "
            "profile " + default_is("the profile's memory_budget_mb")
        ),
    ] = None,
    memory_scope: Annotated[
        str | None,
        typer.Option(
            help=f"What the memory budget covers: {SCOPES_HELD} "
            + default_is(f"the profile's memory_budget_scope, {DEFAULT_MEMORY_SCOPE} unless set"),
            callback=choice_of(MEMORY_SCOPES),
        ),
    ] = None,
    latency_budget: Annotated[
        str | None,
        typer.Option(
            help=f"{BUDGET_PERCENTILE} latency, e.g. 40ms, 0.2s, 150us; a bare number is {BARE_TIME_UNIT} "
            + default_is("the profile's")
        ),
    ] = None,
    measure: Annotated[
        bool, typer.Option("--measure", help="Export and bench a few candidates here (profile local only).")
    ] = False,
    calibration: Annotated[
        list[Path] | None, typer.Option(help="`edgebert bench --out` result files from the device (repeatable).")
    ] = None,
    candidates: Annotated[
        str | None, typer.Option(help=f"WIDTH:DEPTH pairs, e.g. 0.5:0.75,1:1 {default_is('the trained grid')}.")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help=f"Rank by `edgebert eval` results on this file {default_is('the cached file covering most')}."
        ),
    ] = None,
    text_column: Annotated[
        str | None, typer.Option(help="Only eval results read through this text column (a,b for pairs).")
    ] = None,
    label_column: Annotated[str | None, typer.Option(help="Only eval results read through this target column.")] = None,
    vocab_from: VocabFromOpt = None,
    vocab_min_count: VocabMinCountOpt = 1,
    embeddings: EmbeddingsOpt = None,
    plot: Annotated[Path | None, typer.Option(help="Write a latency-memory Pareto plot (PNG).")] = None,
    export: Annotated[Path | None, typer.Option(help="Export the chosen artifact into this directory.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a plot or an exported artifact edgebert wrote earlier.")
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Choose the best (width, depth, precision) that fits the budgets; show the Pareto frontier.

    With --vocab-from, each candidate also comes with its vocabulary pruned to those texts' tokens: smaller, its
    accuracy measured beside the others', with the share of the data's tokens that become [UNK].

    Exits 0 when the choice fits, 3 when nothing fits (or the exported artifact turns out not to), 2 on a bad option
    value, 1 on other errors.
    """
    from edgebert.pick import Budgets, pick
    from edgebert.profiles import load_profile

    budgets = Budgets(
        memory_bytes=option_value("--memory-budget", parse_memory, memory_budget) if memory_budget else None,
        latency_ms=option_value("--latency-budget", parse_latency, latency_budget) if latency_budget else None,
        memory_scope=memory_scope,  # type: ignore[arg-type]
    )
    configs = option_value("--candidates", parse_candidates, candidates) if candidates else None
    columns = data_columns(text_column, label_column)
    plot_output: dict[str, Any] = {"force": force, "replaceable": replaceable_plot, "protect": [model] if model else []}
    if plot is not None:
        require("matplotlib", "--plot")  # before the slow work
        refuse_existing(plot, **plot_output)
    with Progress() as progress:
        progress.stage("picking")
        report = pick(
            model,
            load_profile(profile),
            budgets,
            measure=measure,
            calibration=calibration or (),
            candidates=configs,
            data=data,
            export_dir=export,
            force=force,
            progress=lambda message: progress.stage(f"picking: {message}"),
            columns=columns,
            vocab_from=vocab_from or (),
            vocab_min_count=vocab_min_count,
            embeddings=embeddings,
        )
        if plot is not None:
            with staged_outputs(plot, **plot_output) as (staged,):
                plot_pareto(report, staged)
    show(report, json, lambda report: print_report(report, plot))
    if not report.fits:
        raise typer.Exit(NOTHING_FITS)


def print_report(report: PickReport, plot: Path | None = None) -> None:
    """Warnings first (they qualify the recommendation), then the frontier, the legend and the verdict."""
    for warning in report.warnings:
        print_warning(warning)
    budgets, accuracy, vocabulary = report.budgets, report.accuracy, report.vocabulary
    compared = len(report.thread_counts) > 1
    threads = "t threads" if compared else f"{report.thread_counts[0]} thread(s)"
    console.print(  # not the table's title, which would wrap at the table's width
        f"Pareto frontier: {report.profile}, {report.format}, {threads}, "
        f"batch {report.batch_size} x {report.seq_len} tokens"
    )
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=0,  # the box's own one-space column separator only: twelve columns fit 80 with --vocab-from
    )
    memory_column = "proc MB" if budgets.counts_baseline else "model MB"
    columns = ["", "w", "d", "prec", "GFLOP", "file MB", memory_column, "ms"] + (["t"] if compared else [])
    columns += ["acc"] if accuracy else []
    columns += ["vocab", "unk"] if vocabulary else []
    for column in [*columns, "fits"]:
        table.add_column(column, justify="left" if column in ("", "prec", "fits") else "right", no_wrap=True)
    for row in report.frontier():
        cells = [
            "[bold green]>[/]" if report.is_choice(row) else "",
            f"{row.width:g}",
            f"{row.depth:g}",
            row.precision_label,
            f"{row.encoder_flops_seq128 / 1e9:.1f}",
            f"{row.size_bytes / 1e6:.1f}{'' if row.size_source == 'exported' else '*'}",
            f"{row.memory_bytes / 1e6:.1f} {SOURCE_MARKS[row.memory_source]}",
            f"{row.latency_ms:.1f} {SOURCE_MARKS[row.latency_source]}",
        ]
        if compared:
            cells.append(str(row.threads))
        if accuracy:
            cells.append("?" if row.accuracy is None else f"{row.accuracy:.4f}")
        if vocabulary:
            cells.append("all" if row.vocabulary is None else f"{row.vocabulary / 1000:.1f}k")
            cells.append("" if row.unknown_rate is None else f"{row.unknown_rate:.1%}")
        over = [kind for kind, fits in (("mem", row.fits_memory), ("lat", row.fits_latency)) if not fits]
        cells.append("yes" if row.fits else f"[red]no: {'+'.join(over)}[/]")
        table.add_row(*cells)
    console.print(table)
    console.print(f"budgets: {'; '.join(budgets.limits())}")
    memory = report.memory_model
    console.print(
        f"runtime baseline (Python + runtime before the model loads): {memory['baseline_bytes'] / 1e6:.1f} MB "
        f"({memory['baseline_source']}), "
        + ("included above" if budgets.counts_baseline else "not in the budget (--memory-scope process)")
    )
    console.print(
        f"w, d: width, depth; file: * parameters x bytes per weight; ms: latency {budgets.latency_statistic}; "
        "m measured, p predicted from this precision's own bench results, d derived from another precision's fit, "
        "e estimated from constants, s estimate from the profile's specs"
        + ("; t: the thread count the row runs at" if compared else "")
        + (f"; acc: {accuracy.metric}" if accuracy else "")
        + ("; vocab: thousands of tokens kept (--vocab-from); unk: the data's tokens dropped" if vocabulary else "")
    )
    loo = report.latency_model.leave_one_out
    if loo and loo["within_10_percent"] is not None:
        console.print(
            f"latency model, leave-one-out ({loo['statistic']}) over {loo['configurations']} measurements: "
            f"{loo['within_10_percent']:.0%} within +-10 %, worst error {loo['worst_relative_error']:.0%}"
        )
    print_notes(*report.notes)
    if report.export:
        console.print(f"wrote {report.export.path} ({report.export.size_bytes / 1e6:.1f} MB)")
    style = "bold green" if report.fits else "bold red"
    console.print(f"[{style}]{report.verdict}[/]")
    if plot is not None:
        console.print(f"plot: {plot}")


def plot_pareto(report: PickReport, path: Path) -> None:
    """Latency vs budgeted memory of every candidate, frontier highlighted, budgets as lines, the choice starred."""
    require("matplotlib", "--plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, accuracy, budgets = report.candidates, report.accuracy, report.budgets
    quality = [row.accuracy if accuracy else row.encoder_flops_seq128 / 1e9 for row in rows]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    markers = dict(zip(PRECISIONS, "os^Dv<>", strict=False))  # one per precision, most faithful first
    for precision, marker in markers.items():
        index = [i for i, row in enumerate(rows) if row.precision == precision]
        points = axes.scatter(
            [rows[i].latency_ms for i in index],
            [rows[i].memory_bytes / 1e6 for i in index],
            c=[quality[i] for i in index],
            vmin=min(quality),
            vmax=max(quality),
            marker=marker,
            edgecolors=["black" if rows[i].pareto else "none" for i in index],
            label=precision,
        )
    figure.colorbar(points, label=accuracy.metric if accuracy else "encoder GFLOPs (seq 128)")
    frontier = report.frontier()
    axes.step([row.latency_ms for row in frontier], [row.memory_bytes / 1e6 for row in frontier], "k:", where="post")
    if budgets.latency_ms is not None:
        axes.axvline(budgets.latency_ms, color="red", linestyle="--", linewidth=1)
    if budgets.memory_bytes is not None:
        axes.axhline(budgets.memory_bytes / 1e6, color="red", linestyle="--", linewidth=1)
    if report.choice:
        axes.scatter(
            [report.choice.latency_ms],
            [report.choice.memory_bytes / 1e6],
            marker="*",
            s=300,
            c="gold",
            edgecolors="black",
            label="choice",
            zorder=3,
        )
    axes.set_xlabel(f"latency {budgets.latency_statistic} (ms)")
    axes.set_ylabel(f"memory, {budgets.memory_label} (MB)")
    axes.set_title(f"{Path(report.model).name} on {report.profile}")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120, format="png", metadata={"Software": f"{PLOT_SOFTWARE} {__version__}"})
    plt.close(figure)


def replaceable_plot(path: Path) -> str | None:
    """What `pick --force` may replace: a PNG whose Software text names edgebert; any other file is the user's."""
    if not path.is_file():
        return "is not a regular file"
    if not png_text(path).get("Software", "").startswith(f"{PLOT_SOFTWARE} "):
        return "is not a plot edgebert wrote (a PNG with Software 'edgebert' in its text)"
    return None


def png_text(path: Path) -> dict[str, str]:
    """A PNG's tEXt entries before its image data (where matplotlib writes them), from its first PNG_HEAD_BYTES."""
    from edgebert.reading import read_regular

    head = read_regular(path, PNG_HEAD_BYTES)
    if not head.startswith(PNG_SIGNATURE):
        return {}
    texts, at = {}, len(PNG_SIGNATURE)
    while at + 8 <= len(head):
        length, kind = struct.unpack(">I4s", head[at : at + 8])
        if kind in (b"IDAT", b"IEND"):
            break
        key, zero, value = head[at + 8 : at + 8 + length].partition(b"\0")
        if kind == b"tEXt" and zero:
            texts[key.decode("latin-1")] = value.decode("latin-1")
        at += 12 + length  # length, type, data, CRC
    return texts


def register(app: typer.Typer) -> None:
    app.command("pick")(pick_command)
