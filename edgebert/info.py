"""What every (width, depth) of the trained grid would keep and cost, without slicing anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgebert.demo import UNTRAINED_NOTE
from edgebert.precisions import estimated_size_bytes
from edgebert.slicing import open_checkpoint
from edgebert.subnet import TRAINED_GRID, costs, subnetwork


def grid_info(model: str | Path | None = None) -> dict[str, Any]:
    """Costs of the 12 trained sub-networks of `model` (the demo model when None)."""
    checkpoint = open_checkpoint(model)
    arch = checkpoint.arch
    rows = []
    for width, depth in TRAINED_GRID:
        row = costs(arch, subnetwork(arch, width, depth))
        row["size_fp32_bytes"] = estimated_size_bytes(row["parameters"], "fp32")
        row["size_int8_estimate_bytes"] = estimated_size_bytes(row["parameters"], "int8")  # pick's estimate too
        rows.append(row)
    info: dict[str, Any] = {
        "model": str(checkpoint.path),
        "model_type": checkpoint.model_type,
        "task": "sequence-classification" if arch.num_labels else "feature-extraction",
        "architecture": {
            "layers": arch.num_layers,
            "heads": arch.num_heads,
            "head_size": arch.head_size,
            "hidden_size": arch.hidden_size,
            "ffn_neurons": arch.intermediate_size,
            "vocab_size": arch.vocab_size,
            "num_labels": arch.num_labels,
        },
        "grid": rows,
    }
    if checkpoint.is_demo:
        info["untrained"] = UNTRAINED_NOTE
    return info
