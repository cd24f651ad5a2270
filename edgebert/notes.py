"""Notes that qualify a result, each with its kind decided where it is made.

A printer shows a warning as a warning because the code that wrote the note said so, never
because of the words in it (a model path containing "unknown" is no warning). A `Note` is a
`str`, so reports stay plain JSON and f-strings keep working; only its kind rides along.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from pydantic import PlainValidator


class NoteKind(str, Enum):
    WARNING = "warning"  # the result misleads without it: an untrained model, sub-networks never trained
    INFO = "info"  # how the result was reached


class Note(str):
    """A message with its kind; `Note("...")` is informational, `warning("...")` a warning."""

    kind: NoteKind

    def __new__(cls, text: str, kind: NoteKind = NoteKind.INFO) -> Note:
        note = super().__new__(cls, text)
        note.kind = kind
        return note


def warning(text: str) -> Note:
    return Note(text, NoteKind.WARNING)


def is_warning(note: str) -> bool:
    """A plain string carries no kind: it is informational."""
    return isinstance(note, Note) and note.kind is NoteKind.WARNING


def _as_made(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("a note is text")
    return value


# A note in a pydantic result, kept as it was made: pydantic's own `str` would turn a `Note` into plain text, and
# a warning would print as information. Read back from JSON, a note is plain text (informational).
NoteText = Annotated[str, PlainValidator(_as_made, json_schema_input_type=str)]
