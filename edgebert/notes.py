"""Notes that qualify a result, each with its kind decided where it is made.

A printer shows a warning as a warning because the code that wrote the note said so, never
because of the words in it (a model path containing "unknown" is no warning). A `Note` is a
`str`, so reports stay plain JSON and f-strings keep working; only its kind rides along.
"""

from __future__ import annotations

from enum import Enum


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
