"""Every size a config.json claims, held to the weights' shapes before anything is allocated."""

from __future__ import annotations

from pathlib import Path

from edgebert.errors import EdgebertError
from edgebert.layout import LAYER_KEY, axis_sizes, embedding_layout, head_layout, layer_layout, layer_name
from edgebert.subnet import Architecture, full_network


def expected_shapes(arch: Architecture) -> dict[str, tuple[int, ...]]:
    """Every parameter a full (unsliced) model of `arch` has, with its shape (`edgebert.layout`'s tables, in order)."""
    sizes = axis_sizes(arch, full_network(arch))
    shapes = {parameter.name: parameter.shape(sizes) for parameter in embedding_layout(arch)}
    for index in range(arch.num_layers):
        shapes |= {layer_name(index, parameter.name): parameter.shape(sizes) for parameter in layer_layout(arch, index)}
    return shapes | {parameter.name: parameter.shape(sizes) for parameter in head_layout(arch)}


def check_weights(shapes: dict[str, tuple[int, ...]], arch: Architecture, weights_file: Path) -> None:
    """Every size config.json claims, against the weights' shapes (canonical names), before anything is allocated.

    The layer count comes first: until it matches the layers the weights hold, not even the list
    of expected names is built (a config claiming 10^9 layers would fill memory with it).
    """
    layers = {match.group(1) for name in shapes if (match := LAYER_KEY.match(name))}
    if len(layers) != arch.num_layers:
        raise EdgebertError(
            f"{weights_file} holds {len(layers)} encoder layers, but config.json says num_hidden_layers "
            f"{arch.num_layers}"
        )
    expected = expected_shapes(arch)
    missing = [name for name in expected if name not in shapes]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise EdgebertError(f"{weights_file} lacks weights the config requires: {', '.join(missing[:3])}{more}")
    for name, shape in expected.items():
        if tuple(shapes[name]) != shape:
            raise EdgebertError(
                f"{weights_file}: {name} has shape {tuple(shapes[name])}, but config.json implies {shape}"
            )
