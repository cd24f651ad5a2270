"""Checks shared by the bad-input tests: one `error:` line, and damaging a checkpoint's config."""

from __future__ import annotations

import json
from pathlib import Path


def assert_one_line_error(result, fragment: str) -> None:
    assert result.code != 0, f"expected a failure, got exit 0; stdout: {result.stdout!r}"
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert lines[0].startswith("error: "), lines[0]
    assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert result.stdout == ""


def edit_config(directory: Path, **changes) -> None:
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    (directory / "config.json").write_text(json.dumps(config))
