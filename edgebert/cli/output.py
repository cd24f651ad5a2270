"""Shared terminal output: rich consoles, JSON, one-line errors and number formatting."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.markup import escape

console = Console()
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    """Machine-readable output on stdout, nothing else on that stream."""
    print(json.dumps(data, indent=2))


def print_error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", emoji=False)


def print_warning(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(message)}", emoji=False)


def millions(count: int) -> str:
    return f"{count / 1e6:.1f} M"


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
