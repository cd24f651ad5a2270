"""The precisions edgebert exports, and what one weight costs in each: one home for both.

`export` writes, `pick` ranks and `info` estimates in these precisions; the sidecar schema
accepts exactly these. Pure Python, so the light install can read it.
"""

from __future__ import annotations

from typing import Literal

PRECISIONS = ("fp32", "fp16", "int8")
Precision = Literal[PRECISIONS]  # type: ignore[valid-type]
# An artifact's size before it is exported: bytes per weight (quantization scales and the graph ignored).
BYTES_PER_WEIGHT = {"fp32": 4, "fp16": 2, "int8": 1}


def estimated_size_bytes(parameters: int, precision: str) -> int:
    """An artifact's size before it is exported: parameters x bytes per weight."""
    return parameters * BYTES_PER_WEIGHT[precision]
