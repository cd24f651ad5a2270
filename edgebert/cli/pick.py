"""`edgebert pick`: the sub-network and precision to ship to a device, under its memory and latency budgets.

Exit code 0 whenever the question was answered, including "nothing fits" (then `choice` is null
in --json and the verdict names the smallest memory and latency achievable); 1 only for errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from edgebert.cli.output import console, err_console, print_json, print_warning
from edgebert.cli.slice import JsonOpt, ModelArg

SOURCE_MARKS = {"measured": "m", "estimated": "e", "predicted": "p", "estimate from specs": "s"}


def pick_command(
    model: ModelArg = None,
    profile: Annotated[str, typer.Option(help="A shipped profile name or a YAML file.")] = "local",
    memory_budget: Annotated[
        str | None, typer.Option(help="e.g. 60MB, 0.5GiB, 512KiB [default: the profile's memory_budget_mb].")
    ] = None,
    latency_budget: Annotated[
        str | None, typer.Option(help="p95 latency, e.g. 40ms, 0.2s, 150us [default: the profile's].")
    ] = None,
    measure: Annotated[
        bool, typer.Option("--measure", help="Export and bench a few candidates here (profile local only).")
    ] = False,
    calibration: Annotated[
        list[Path] | None, typer.Option(help="`edgebert bench --out` result files from the device (repeatable).")
    ] = None,
    candidates: Annotated[
        str | None, typer.Option(help="WIDTH:DEPTH pairs, e.g. 0.5:0.75,1:1 [default: the trained grid].")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a latency-memory Pareto plot (PNG).")] = None,
    export: Annotated[Path | None, typer.Option(help="Export the chosen artifact into this directory.")] = None,
    json: JsonOpt = False,
) -> None:
    """Choose the best (width, depth, precision) that fits the budgets; show the Pareto frontier."""
    from edgebert.pick import pick, plot_pareto
    from edgebert.profiles import load_profile

    with err_console.status("picking...") as status:
        report = pick(
            model,
            load_profile(profile),
            memory_budget=memory_budget,
            latency_budget=latency_budget,
            measure=measure,
            calibration=calibration,
            candidates=candidates,
            export_dir=export,
            progress=lambda message: status.update(message),
        )
        if plot is not None:
            plot_pareto(report, plot)
    if json:
        print_json(report)
        return
    print_report(report)
    if plot is not None:
        console.print(f"plot: {plot}")


def print_report(report: dict[str, Any]) -> None:
    budgets = report["budgets"]
    limits = [
        f"memory <= {budgets['memory_bytes'] / 1e6:g} MB ({budgets['memory_from']})" if budgets["memory_bytes"] else "",
        f"latency {budgets['latency_statistic']} <= {budgets['latency_ms']:g} ms ({budgets['latency_from']})"
        if budgets["latency_ms"]
        else "",
    ]
    limits = [limit for limit in limits if limit] or ["no budgets"]
    accuracy = report["accuracy"]
    table = Table(
        title=f"Pareto frontier: {report['profile']}, {report['format']}, batch {report['batch_size']} x "
        f"{report['seq_len']} tokens",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    columns = ["", "w", "d", "prec", "GFLOP", "file MB", "mem MB", "ms"] + (["acc"] if accuracy else [])
    for column in [*columns, "fits"]:
        table.add_column(column, justify="left" if column in ("", "prec", "fits") else "right", no_wrap=True)
    choice = report["choice"]
    for row in sorted((r for r in report["candidates"] if r["pareto"]), key=lambda r: r["latency_ms"]):
        chosen = choice is not None and all(row[k] == choice[k] for k in ("width", "depth", "precision"))
        cells = [
            "[bold green]>[/]" if chosen else "",
            f"{row['width']:g}",
            f"{row['depth']:g}",
            row["precision"],
            f"{row['encoder_flops_seq128'] / 1e9:.1f}",
            f"{row['size_bytes'] / 1e6:.1f}{'' if row['size_source'] == 'exported' else '*'}",
            f"{row['memory_bytes'] / 1e6:.1f} {SOURCE_MARKS[row['memory_source']]}",
            f"{row['latency_ms']:.1f} {SOURCE_MARKS[row['latency_source']]}",
        ]
        if accuracy:
            cells.append("?" if row["accuracy"] is None else f"{row['accuracy']:.4f}")
        over = [kind[:3] for kind in ("memory", "latency") if not row[f"fits_{kind}"]]
        cells.append("yes" if row["fits"] else f"[red]no: {'+'.join(over)}[/]")
        table.add_row(*cells)
    console.print(table)
    console.print(f"budgets: {'; '.join(limits)}")
    console.print(
        f"w, d: width, depth; file: * parameters x bytes per weight; ms: latency {budgets['latency_statistic']}; "
        f"m measured, e estimated, p predicted (latency model), s estimate from specs"
        + (f"; acc: {accuracy['metric']}" if accuracy else "")
    )
    loo = report["latency_model"]["leave_one_out"]
    if loo and loo["within_10_percent"] is not None:
        console.print(
            f"latency model, leave-one-out over {loo['configurations']} measurements: "
            f"{loo['within_10_percent']:.0%} within +-10 %, worst error {loo['worst_relative_error']:.0%}"
        )
    style = "bold green" if choice else "bold red"
    console.print(f"[{style}]{report['verdict']}[/]")
    if report["export"]:
        console.print(f"exported {report['export']['path']} ({report['export']['size_bytes'] / 1e6:.1f} MB)")
    for warning in report["warnings"]:
        print_warning(warning)
    for note in report["notes"]:
        if "untrained" in note or "unknown" in note:
            print_warning(note)
        else:
            console.print(note)


def register(app: typer.Typer) -> None:
    app.command("pick")(pick_command)
