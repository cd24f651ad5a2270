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


# `export --embeddings`: the word-embedding table stored smaller than the precision's own weights, int8 only (each
# exporter's `embeddings` says which it writes and in which blocks; measured in `edgebert/export/onnx.py`).
EMBEDDINGS = ("int4",)
Embeddings = Literal[EMBEDDINGS]  # type: ignore[valid-type]
EMBEDDINGS_PRECISION = "int8"  # the one precision `--embeddings` applies to
# Bytes per word-embedding weight, before it is exported: 4 bits, plus per block of 64 a byte scale code and a 4-bit
# zero point (ONNX's layout; TFLite's fp16 scale per block of 32 costs a little more).
BYTES_PER_EMBEDDING_WEIGHT = {"int4": 0.5 + 1.5 / 64}


def estimated_size_bytes(
    parameters: int, precision: str, word_embeddings: int = 0, embeddings: str | None = None
) -> int:
    """An artifact's size before it is exported: parameters x bytes per weight, the `word_embeddings` table's
    weights at their `--embeddings` storage when one is given."""
    if embeddings is None:
        return parameters * BYTES_PER_WEIGHT[precision]
    others = (parameters - word_embeddings) * BYTES_PER_WEIGHT[precision]
    return others + round(word_embeddings * BYTES_PER_EMBEDDING_WEIGHT[embeddings])
