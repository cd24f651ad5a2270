"""Shared terminal output: a result as JSON or for people, rich consoles, one-line errors and number formatting."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape

from edgebert.notes import is_warning

MAX_MESSAGE = 2000  # characters of one error or warning line: input is never echoed unbounded
console = Console()
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
R = TypeVar("R")


def show(result: R, as_json: bool, render: Callable[[R], object]) -> None:
    """A command's result: with --json, its JSON and nothing else on stdout; else `render` prints it for people
    (tables, lines, notes: whatever the command shows, all of it in `render`)."""
    if as_json:
        print(json.dumps(jsonable(result), indent=2))
    else:
        render(result)


def jsonable(result: Any) -> Any:
    """A typed result (a pydantic model, or a list of them) as JSON data: results are serialised here, at the edge."""
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    if isinstance(result, list):
        return [jsonable(item) for item in result]
    return result


def print_error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(one_line(message))}", emoji=False)


def print_warning(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(one_line(message))}", emoji=False)


def print_notes(*notes: str | None) -> None:
    """Each note as its kind says (decided where it was made): a warning on stderr, else a line of the result."""
    for note in notes:
        if note is None:
            continue
        if is_warning(note):
            print_warning(note)
        else:
            console.print(note, markup=False)


def one_line(message: str, limit: int = MAX_MESSAGE) -> str:
    """Control characters shown escaped (a path with a newline cannot forge a second line), length bounded."""
    text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in message)
    return text if len(text) <= limit else text[: limit - 15] + f"... ({len(text)} chars)"


def millions(count: int) -> str:
    return f"{count / 1e6:.1f} M"


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
