"""What every (width, depth) of the trained grid would keep and cost, without slicing; or what one slice holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgebert.checkpoint import is_slice, read_slice
from edgebert.demo import UNTRAINED_NOTE
from edgebert.manifests import WARNING_FIELDS
from edgebert.notes import warning
from edgebert.precisions import estimated_size_bytes
from edgebert.slicing import open_checkpoint
from edgebert.subnet import TRAINED_GRID, Architecture, Subnetwork, costs, embedding_parameters, subnetwork


def grid_info(model: str | Path | None = None) -> dict[str, Any]:
    """Costs of the 12 trained sub-networks of `model` (the demo model when None); for a slice, `slice_info`."""
    if model is not None and Path(model).is_dir() and is_slice(Path(model)):
        return slice_info(Path(model))
    checkpoint = open_checkpoint(model)
    arch = checkpoint.arch
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
        "grid": [cost_row(arch, subnetwork(arch, width, depth)) for width, depth in TRAINED_GRID],
    }
    if checkpoint.is_demo:
        info["untrained"] = UNTRAINED_NOTE
    return info


def slice_info(path: Path) -> dict[str, Any]:
    """What a slice directory keeps of its source and costs (one row, computed from its own config.json), and
    the vocabulary it kept when `--vocab-from` pruned it."""
    config, raw_config, manifest, _ = read_slice(path)
    classifier = manifest.task == "sequence-classification"
    arch = config.architecture(len(raw_config["id2label"]) if classifier else None)
    sub = Subnetwork(
        manifest.width, manifest.depth, arch.num_heads, arch.intermediate_size, tuple(manifest.layers_kept)
    )
    original, vocabulary = manifest.original, manifest.vocabulary
    info: dict[str, Any] = {
        "model": str(path),
        "model_type": manifest.source.model_type,
        "task": manifest.task,
        "slice_of": manifest.source.path,
        "architecture": {  # the source's, as for a checkpoint: the row says what the slice kept of it
            "layers": original.layers,
            "heads": original.heads,
            "head_size": original.head_size,
            "hidden_size": arch.hidden_size,
            "ffn_neurons": original.ffn_neurons,
            "vocab_size": vocabulary.original_size if vocabulary is not None else arch.vocab_size,
            "num_labels": arch.num_labels,
        },
        "grid": [cost_row(arch, sub)],
    }
    if vocabulary is not None:
        info["vocabulary"] = vocabulary.model_dump(exclude={"kept_ids"})
    return info | {field: warning(getattr(manifest, field)) for field in WARNING_FIELDS if getattr(manifest, field)}


def cost_row(arch: Architecture, sub: Subnetwork) -> dict[str, Any]:
    """One sub-network's costs (`costs`), its sizes, and its embeddings: what no width or depth cuts."""
    row = costs(arch, sub)
    row["size_fp32_bytes"] = estimated_size_bytes(row["parameters"], "fp32")
    row["size_int8_estimate_bytes"] = estimated_size_bytes(row["parameters"], "int8")  # pick's estimate too
    row["embedding_parameters"] = embedding_parameters(arch)
    return row
