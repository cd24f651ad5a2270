"""`edgebert profiles list|show|validate`: the device profiles bench runs under."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.table import Table

from edgebert.cli.options import Group, JsonOpt, ProfileArg
from edgebert.cli.output import console, print_error, show

if TYPE_CHECKING:
    from edgebert.profiles import Profile

profiles_app = typer.Typer(help="List, show and validate device profiles.", no_args_is_help=True, cls=Group)


@profiles_app.command("list")
def list_command(json: JsonOpt = False) -> None:
    """The shipped profiles, with their runtime and main hardware facts."""
    from edgebert.profiles import load_shipped

    show(load_shipped(), json, print_profiles)


def print_profiles(profiles: list[Profile]) -> None:
    """One row per profile: its runtime and main hardware facts."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for column in ("name", "runtime", "threads", "cores", "GHz", "GFLOP/s", "GB/s", "RAM GB"):
        table.add_column(column, justify="left" if column in ("name", "runtime") else "right", no_wrap=True)
    for p in profiles:
        hw = p.hardware
        table.add_row(
            p.name,
            p.runtime,
            str(p.threads),
            str(hw.cores),
            _num(hw.clock_ghz),
            _num(hw.peak_gflops_fp32),
            _num(hw.memory_bandwidth_gbs),
            _num(hw.ram_gb),
        )
    console.print(table)
    console.print("GFLOP/s: fp32 peak from public specs; ?: unknown. `edgebert profiles show NAME` for the rest.")


@profiles_app.command("show")
def show_command(name: ProfileArg, json: JsonOpt = False) -> None:
    """Every setting and hardware fact of one profile (`local`: detected on this machine)."""
    from edgebert.profiles import load_profile

    show(load_profile(name), json, print_profile)


def print_profile(profile: Profile) -> None:
    """Every field that is set, hardware facts prefixed `hardware.`."""
    data = profile.model_dump()
    hardware = data.pop("hardware")
    table = Table(title=f"profile {data['name']}", show_header=False, title_justify="left")
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")  # long URLs wrap rather than end in an ellipsis
    for key, value in [*data.items(), *((f"hardware.{k}", v) for k, v in hardware.items())]:
        if value not in (None, []):
            table.add_row(key, ", ".join(map(str, value)) if isinstance(value, list) else str(value))
    console.print(table)


@profiles_app.command("validate")
def validate_command(
    profiles: Annotated[list[str], typer.Argument(help="Profile YAML files or shipped profile names to check.")],
    json: JsonOpt = False,
) -> None:
    """Check profiles (files or names, as `show` takes them); each problem gets a line naming file and field."""
    from edgebert.profiles import check_profiles

    report = check_profiles(profiles)
    show(report, json, print_validation)
    if not all(entry["valid"] for entry in report.values()):
        raise typer.Exit(1)


def print_validation(report: dict[str, dict[str, Any]]) -> None:
    """`ok` for each valid profile; each problem of the others as an error line."""
    for path, entry in report.items():
        if entry["valid"]:
            console.print(f"[green]ok[/] {path} (profile {entry['name']})")
        for problem in entry["problems"]:
            print_error(problem)


def _num(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def register(app: typer.Typer) -> None:
    app.add_typer(profiles_app, name="profiles")
