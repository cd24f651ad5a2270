"""The dev install never lets pip fetch a torch or transformers the pins exclude.

pip reads a third-party requirement (sentence-transformers' `torch>=2.2`) before the caps that
`edgebert[slice]` adds through a self-referencing extra, so it first fetched torch 2.14 with the
CUDA set (555 MB) and backtracked. Every extra that pulls such a package states the caps itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
CAPPED = ("torch", "transformers")
# Third-party packages in our extras that depend on torch or transformers themselves.
PULL_CAPPED = ("sentence-transformers", "litert-torch")


def requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


def test_extras_that_pull_torch_state_its_caps():
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    caps = {requirement_name(r): r for r in extras["slice"] if requirement_name(r) in CAPPED}
    assert set(caps) == set(CAPPED) and all("<" in cap for cap in caps.values())
    for extra, requirements in extras.items():
        names = {requirement_name(r) for r in requirements}
        if names & set(PULL_CAPPED):
            for cap in caps.values():
                assert cap in requirements, f"[{extra}] pulls {sorted(names & set(PULL_CAPPED))} but not {cap!r}"
