"""All-or-nothing outputs: write into a temporary directory beside the target, rename at the end.

A failure (a bad input, a failed parity gate, Ctrl-C) leaves the target as it was, and never a
half-written model next to it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgebert.errors import EdgebertError


def refuse_existing(*targets: Path, force: bool = False) -> None:
    """Fail unless every target is free (or `force`): callers check early, before slow work."""
    for target in targets:
        if Path(target).exists() and not force:
            raise EdgebertError(f"{target} already exists: pass --force to replace it")


@contextmanager
def staged_outputs(*targets: Path, force: bool = False) -> Iterator[list[Path]]:
    """Yield scratch paths, one per target (file or directory); move them onto the targets on success."""
    targets = tuple(Path(t) for t in targets)
    refuse_existing(*targets, force=force)
    parent = targets[0].parent
    parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{targets[0].name}.", suffix=".partial", dir=parent))
    try:
        staged = [scratch / f"{i}-{target.name}" for i, target in enumerate(targets)]
        yield staged
        for i, (stage, target) in enumerate(zip(staged, targets, strict=True)):
            if target.exists():  # --force: keep the old output until the new one is in place
                target.rename(scratch / f"old-{i}")
            stage.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
