"""The one rule for reading a file: a regular file only, read with a bound, its lines split on newlines only.

A named pipe, a device or a directory where edgebert expects a file would hang the read (a FIFO
with no writer blocks `open`), never end it (`/dev/zero`), or yield whatever a writer feeds it:
each is refused with one line naming the path. The file is opened without blocking and checked
on the opened descriptor, so nothing can be swapped in between the check and the read.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from edgebert.errors import EdgebertError

# What a path holds instead of a regular file, for the error line.
SPECIAL_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a named pipe",
    stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device",
    stat.S_IFSOCK: "a socket",
}
MAX_VOCAB_BYTES = 64 << 20  # BERT's vocab.txt is 0.2 MB
READ_BLOCK = 1 << 20  # hashing and copying read files in blocks of this size


@contextmanager
def open_regular(path: Path) -> Iterator[BinaryIO]:
    """`path` opened for binary reading if it is a regular file; anything else is one EdgebertError line.

    O_NONBLOCK makes opening a FIFO return at once (it changes nothing for a regular file's reads).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise EdgebertError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = SPECIAL_KINDS.get(stat.S_IFMT(mode), "a special file")
            raise EdgebertError(f"{path} is not a regular file ({kind}): refusing to read it")
        file = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with file:
        yield file


def read_regular(path: Path, limit: int) -> bytes:
    """At most `limit` + 1 bytes of the regular file `path`: a longer result tells the caller the file is larger.

    Each caller decides what too large means (an error, an ignored cache entry, the first part of a text).
    """
    with open_regular(path) as file:
        try:
            return file.read(limit + 1)
        except OSError as exc:
            raise EdgebertError(f"cannot read {path}: {exc.strerror or exc}") from exc


def file_sha256(path: Path) -> str:
    """Identifies weights (in manifests) and data files (in the eval cache) by content, not by path."""
    digest = hashlib.sha256()
    with open_regular(path) as f:
        for block in iter(lambda: f.read(READ_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def text_lines(text: str) -> list[str]:
    """Lines split on "\\n" or "\\r\\n" only: `str.splitlines` would also cut a sentence at U+2028, U+0085, \\f..."""
    lines = text.split("\n")
    if lines and not lines[-1]:
        lines.pop()  # the final newline ends the last line, it does not start another
    return [line.removesuffix("\r") for line in lines]


def parse_vocab(data: bytes, path: Path) -> dict[str, int]:
    """A WordPiece vocab.txt: one token per line, its id the line's index (0-based).

    A token listed twice has no one id: transformers keeps its last line, a first-wins reader the
    first, so two clients of one model would disagree; it is refused, naming both lines.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EdgebertError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    vocab: dict[str, int] = {}
    for index, token in enumerate(text_lines(text)):
        if token in vocab:
            raise EdgebertError(
                f"{path}: token {token!r} is on lines {vocab[token] + 1} and {index + 1}: a vocabulary lists each "
                "token once"
            )
        vocab[token] = index
    return vocab


def read_vocab(path: Path) -> dict[str, int]:
    """vocab.txt read by the one rule (regular file, bounded) and parsed by `parse_vocab`."""
    data = read_regular(path, MAX_VOCAB_BYTES)
    if len(data) > MAX_VOCAB_BYTES:
        raise EdgebertError(f"{path}: larger than {MAX_VOCAB_BYTES >> 20} MB, too large for a vocabulary")
    return parse_vocab(data, path)
