"""`edgebert bench`: time an exported artifact under a device profile (torch-free)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from edgebert.cli.options import JsonOpt, ProfileOpt, choice_of, either
from edgebert.cli.output import console, megabytes, print_warning, show
from edgebert.precisions import PRECISIONS
from edgebert.profiles import MAX_BATCH_SIZE, MAX_MIN_TIME_S, MAX_RUNS, MAX_THREADS, MAX_WARMUP_RUNS
from edgebert.runtimes import SUFFIXES
from edgebert.sidecar import MAX_SEQ_LEN


def bench_command(
    artifact: Annotated[
        Path,
        typer.Argument(help=f"An exported {either(SUFFIXES)} file (its .json sidecar is read), or an export's bundle."),
    ],
    precision: Annotated[
        str | None,
        typer.Option(
            help=f"In a bundle holding several, the file of this precision: {either(PRECISIONS)}.",
            callback=choice_of(PRECISIONS),
        ),
    ] = None,
    profile: ProfileOpt = "local",
    runs: Annotated[
        int | None, typer.Option(min=1, max=MAX_RUNS, help="Measured runs (default: the profile's).")
    ] = None,
    warmup: Annotated[
        int | None, typer.Option(min=0, max=MAX_WARMUP_RUNS, help="Warm-up runs (default: the profile's).")
    ] = None,
    min_time: Annotated[
        float | None,
        typer.Option(
            min=0, max=MAX_MIN_TIME_S, help="Keep measuring for at least this many seconds (default: the profile's)."
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=MAX_THREADS,
            help="Time this thread count alone (default: the profile's and 1, reporting the faster).",
        ),
    ] = None,
    batch: Annotated[
        int | None, typer.Option(min=1, max=MAX_BATCH_SIZE, help="Batch size (default: the profile's).")
    ] = None,
    seq_len: Annotated[
        int | None, typer.Option(min=1, max=MAX_SEQ_LEN, help="Sequence length (default: the profile's).")
    ] = None,
    text: Annotated[
        Path | None,
        typer.Option(help="Real text instead of random ids: every line at its real length, cycled over the runs."),
    ] = None,
    tokenizer: Annotated[
        Path | None, typer.Option(help="Directory with tokenizer.json or vocab.txt (default: beside the artifact).")
    ] = None,
    json: JsonOpt = False,
    out: Annotated[Path | None, typer.Option(help="Append the result to this JSON list file.")] = None,
) -> None:
    """Measure load time, latency percentiles, throughput and memory of ARTIFACT in its own runtime.

    Counts out of their bounds are usage errors (exit 2), as the command line is read; a profile's are the file's.
    """
    from edgebert.bench import append_result, bench_artifact
    from edgebert.profiles import load_profile

    result = bench_artifact(
        artifact,
        load_profile(profile),
        runs=runs,
        warmup=warmup,
        threads=threads,
        batch_size=batch,
        seq_len=seq_len,
        min_time_s=min_time,
        text_file=text,
        tokenizer_dir=tokenizer,
        precision=precision,
    )
    if out is not None:
        append_result(out, result)
    show(result, json, lambda result: print_result(result, appended_to=out))


def print_result(result: dict[str, Any], appended_to: Path | None = None) -> None:
    """The summary and latency tables, the file the result was appended to, then the warnings."""
    env, inputs, lat, mem = result["environment"], result["inputs"], result["latency_ms"], result["memory"]
    runtime = f"{env['runtime']} {env['runtime_version']}, {env['threads']} thread(s)"
    if "xnnpack" in env:
        runtime += f", XNNPACK {'on' if env['xnnpack'] else 'OFF' if env['xnnpack'] is False else 'unknown'}"
    if "graph_optimization_level" in env:
        runtime += f", {env['graph_optimization_level']}"
    host, profile = result["host"], result["profile"]
    title = (
        f"{result['artifact']['path']} on {host['hostname'] or 'this host'}, settings from profile {profile['name']}"
    )
    summary = Table(title=title, show_header=False, title_justify="left")
    precision = result["artifact"]["precision"] or "precision unknown"
    if result["artifact"].get("embeddings"):  # results before the field have none
        precision += f" ({result['artifact']['embeddings']} word embeddings)"
    summary.add_row("artifact", f"{megabytes(result['artifact']['size_bytes'])}, {precision}")
    summary.add_row("runtime", runtime)
    summary.add_row(
        "measured on",
        f"{host['cpu']}, {host['architecture']} ({host['usable_cores']} of {host['cores']} cores usable)"
        + ("" if profile["device_is_this_host"] else f"; NOT the {profile['name']} device"),
    )
    shape = f"batch {inputs['batch_size']} x {inputs['seq_len']} tokens"
    if inputs["batches"] > 1:
        shape = f"{inputs['batches']} batches of {inputs['batch_size']}, up to {inputs['seq_len']} tokens"
    summary.add_row("inputs", f"{shape}, {inputs['padding_share']:.0%} padding; {inputs['source']}")
    summary.add_row("load", f"{result['load_ms']:.1f} ms")
    summary.add_row("first inference", f"{result['first_inference_ms']:.2f} ms")
    throughput = result["throughput"]
    summary.add_row(
        "throughput",
        f"{throughput['sequences_per_s']:.1f} seq/s, {throughput['real_tokens_per_s']:.0f} real tokens/s "
        f"({throughput['tokens_per_s']:.0f} with padding)",
    )
    summary.add_row(
        "model footprint",
        f"{megabytes(mem['model_footprint_bytes'])} ({mem['footprint_from']}, minus the baseline)",
    )
    summary.add_row(
        "runtime baseline",
        f"{megabytes(mem['baseline_bytes'])} ({mem['baseline_of']}, before the model loads)",
    )
    summary.add_row("process peak RSS", megabytes(mem["peak_rss_bytes"]))
    before, after = env["load_avg_before"][0], env["load_avg_after"][0]
    summary.add_row("load average", f"{before:.2f} before, {after:.2f} after")
    for label, verdict in budget_rows(result):
        summary.add_row(label, verdict)
    console.print(summary)
    latency = Table(title=f"latency over {result['settings']['runs']} runs (ms)", box=box.SIMPLE_HEAD)
    names = ("mean", "std", "min", "p50", "p90", "p95", "p99", "max")
    for name in names:
        latency.add_column(name, justify="right")
    latency.add_row(*(f"{lat[name]:.3f}" for name in names))
    console.print(latency)
    print_threads(result["threads"])
    if appended_to is not None:
        console.print(f"appended to {appended_to}")
    for warning in result["warnings"]:
        print_warning(warning)


def print_threads(choice: dict[str, Any]) -> None:
    """The thread counts timed (each in a session of its own), the one reported marked, the single-thread sessions
    run at once and the way that serves the most, or what was not timed."""
    if len(choice["compared"]) < 2:
        return
    statistic, parallel = choice["statistic"], choice["parallel"]
    title = "threads compared: one session, then several at once"
    if not parallel:
        title = "threads compared, one session at a time"
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for column in ("", "sessions x threads", "p50 ms", f"{statistic} ms", "seq/s"):
        table.add_column(column, justify="right")
    runs = [(1, run) for run in choice["compared"]] + ([(parallel["sessions"], parallel)] if parallel else [])
    for sessions, run in runs:
        threads = run.get("threads", 1)
        table.add_row(
            "[bold green]>[/]" if sessions == 1 and threads == choice["chosen"] else "",
            f"{sessions} x {threads}",
            f"{run['latency_ms']['p50']:.3f}",
            f"{run['latency_ms'][statistic]:.3f}",
            f"{run['throughput']['sequences_per_s']:.1f}",
        )
    console.print(table)
    console.print(
        f"> reported above: {choice['chosen']} thread(s), the fewest unless more cut {statistic} by at least "
        f"{choice['min_gain']:.0%}; memory is of the {choice['memory_from']}-thread session"
    )
    if parallel:
        most = parallel["sessions"]
        sessions = choice["for_throughput"] == "sessions"
        way = f"{most} single-thread sessions" if sessions else f"one {most}-thread session"
        console.print(
            f"{most} x 1: {most} single-thread sessions at once, {parallel['runs']} calls in "
            f"{parallel['wall_ms'] / 1e3:.1f} s ({parallel['throughput']['inferences_per_s']:.1f} calls/s), latency "
            f"per call under that load; all {most} together {megabytes(parallel['model_footprint_bytes'])} above "
            f"the baseline. For throughput run {way} (sessions only for {choice['min_gain']:.0%} less time per "
            "sequence)"
        )
    if choice["not_measured"]:
        console.print(f"not measured: {choice['not_measured']}")


def budget_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """One row per budget: the verdict, and the figure it was checked on against the limit."""
    budgets, rows = result["budgets"], []
    if "latency_budget_ms" in budgets:
        key = budgets["latency_checked"]
        figure = f"{key} {result['latency_ms'][key]:.2f} ms of {budgets['latency_budget_ms']:g} ms"
        rows.append(("within latency budget", _verdict(budgets["within_latency_budget"], figure)))
    if "memory_budget_mb" in budgets:
        key = budgets["memory_checked"]
        what = key.removesuffix("_bytes").replace("_", " ")
        figure = f"{what} {megabytes(result['memory'][key])} of {budgets['memory_budget_mb']:g} MB"
        rows.append(("within memory budget", _verdict(budgets["within_memory_budget"], figure)))
    return rows


def _verdict(within: bool, figure: str) -> str:
    return f"{'yes' if within else '[bold red]NO[/]'} ({figure})"


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_command)
