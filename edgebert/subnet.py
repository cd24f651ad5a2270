"""The DynaBERT sub-network rule and what a sub-network costs. Pure Python: no torch.

This module is the single place that decides which heads, FFN neurons and layers a
(width, depth) keeps, following the official DynaBERT evaluation code (Hou et al., 2020).
A trained DynaBERT is "rewired" (heads and neurons sorted by importance), so every
sub-network keeps a *prefix* of the heads and neurons of each kept layer.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from typing import Literal

from edgebert.errors import EdgebertError

TRAINED_WIDTHS = (0.25, 0.5, 0.75, 1.0)
TRAINED_DEPTHS = (0.5, 0.75, 1.0)
TRAINED_GRID = tuple((w, d) for d in reversed(TRAINED_DEPTHS) for w in reversed(TRAINED_WIDTHS))
FLOPS_SEQ_LEN = 128
# D x F matrices of a layer's FFN, by `Architecture.layers`: input and output; GeGLU's input, gate and output
FFN_MATRICES = {"bert": 2, "modernbert": 3}


class OffGridWarning(UserWarning):
    """A (width, depth) DynaBERT was never trained at: computable, but of unknown accuracy."""


@dataclass(frozen=True)
class Architecture:
    """The shape of a BERT-like encoder, plus its optional heads."""

    num_layers: int
    num_heads: int
    hidden_size: int
    head_size: int
    intermediate_size: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    has_pooler: bool
    num_labels: int | None  # None: a bare encoder without a classifier
    embedding_size: int | None = None  # ELECTRA's may be narrower, projected to the hidden size; None: hidden
    # "bert": post-norm layers, learned positions; "modernbert": pre-norm layers (none before layer 0's attention,
    # one after the last layer and one in the head), rotary positions, fused QKV, GeGLU FFN (`edgebert.layout`)
    layers: Literal["bert", "modernbert"] = "bert"
    unbiased: frozenset[str] = frozenset()  # groups without biases ("attention", "ffn", "norm", "head"): ModernBERT's

    @property
    def embedding_width(self) -> int:
        return self.embedding_size or self.hidden_size

    @property
    def ffn_matrices(self) -> int:
        """D x F matrices per layer's FFN: input (and gate) and output."""
        return FFN_MATRICES[self.layers]

    def bias(self, group: str) -> int:
        """1 when the tensors of `group` have biases, else 0."""
        return int(group not in self.unbiased)

    @property
    def projects_embeddings(self) -> bool:
        return self.embedding_width != self.hidden_size


@dataclass(frozen=True)
class Subnetwork:
    """What one (width, depth) keeps of an `Architecture`."""

    width: float
    depth: float
    heads: int  # first `heads` heads of every kept layer
    ffn_neurons: int  # first `ffn_neurons` FFN neurons of every kept layer
    layers: tuple[int, ...]  # original indices of the kept layers, in order


def _check_fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise EdgebertError(f"{name} must be a number in (0, 1], got {value!r}")
    if not 0 < value <= 1:
        raise EdgebertError(f"{name} must be in (0, 1], got {value}")
    return float(value)


def check_fractions(width: float, depth: float) -> tuple[float, float]:
    return _check_fraction("width", width), _check_fraction("depth", depth)


def subnet_key(width: float, depth: float) -> str:
    """`w0.5-d0.75`: one sub-network, as a key (training metrics) and in names (`subnet_name`)."""
    return f"w{width:g}-d{depth:g}"


# What `subnet_key` writes for a width or depth in (0, 1]: `:g` gives 0.5, 1 or 1e-05.
_KEY = re.compile(r"w(\d+(?:\.\d+)?(?:e-\d+)?)-d(\d+(?:\.\d+)?(?:e-\d+)?)")


def parse_subnet_key(key: str) -> tuple[float, float]:
    """`w0.5-d0.75` -> (0.5, 0.75): the (width, depth) `subnet_key` wrote; any other string is an EdgebertError."""
    match = _KEY.fullmatch(key)
    if match is None or subnet_key(float(match[1]), float(match[2])) != key:
        raise EdgebertError(f"{key!r} is not a sub-network key such as {subnet_key(0.5, 0.75)!r}")
    return check_fractions(float(match[1]), float(match[2]))


def subnet_name(stem: str, width: float, depth: float) -> str:
    """`stem-w0.5-d0.75`: how slices, artifacts and cache entries of one sub-network are named."""
    return f"{stem}-{subnet_key(width, depth)}"


def subnetwork(arch: Architecture, width: float, depth: float) -> Subnetwork:
    """Apply the official rule: k = round(H*w) heads, f = int(k/H * F) neurons, n = round(L*d) layers."""
    width, depth = check_fractions(width, depth)
    heads = round(arch.num_heads * width)
    if heads < 1:
        raise EdgebertError(
            f"width {width} keeps no whole attention head (round({arch.num_heads} x {width}) = 0); "
            f"the smallest width for this model is {0.5 / arch.num_heads + 1e-9:.4g}"
        )
    snapped_width = heads / arch.num_heads
    ffn_neurons = max(1, int(snapped_width * arch.intermediate_size))
    num_kept = round(arch.num_layers * depth)
    if num_kept < 1:
        raise EdgebertError(f"depth {depth} keeps no layer (round({arch.num_layers} x {depth}) = 0)")
    layers = tuple(math.floor(i / depth) for i in range(num_kept))
    if width not in TRAINED_WIDTHS or depth not in TRAINED_DEPTHS:
        warnings.warn(
            f"(width {width}, depth {depth}) is off the trained DynaBERT grid "
            f"(widths {TRAINED_WIDTHS} x depths {TRAINED_DEPTHS}): it is computable, but its accuracy is untested",
            OffGridWarning,
            stacklevel=2,
        )
    return Subnetwork(width, depth, heads, ffn_neurons, layers)


def full_network(arch: Architecture) -> Subnetwork:
    return Subnetwork(1.0, 1.0, arch.num_heads, arch.intermediate_size, tuple(range(arch.num_layers)))


def embedding_parameters(arch: Architecture) -> int:
    """Word, position and token-type embeddings, their LayerNorm and projection (ELECTRA's, to a larger hidden
    size): what no width or depth cuts (a pruned vocabulary does). ModernBERT's positions are rotary: no table."""
    e = arch.embedding_width
    projection = e * arch.hidden_size + arch.hidden_size if arch.projects_embeddings else 0
    positions = 0 if arch.layers == "modernbert" else arch.max_positions
    return (arch.vocab_size + positions + arch.type_vocab_size) * e + (1 + arch.bias("norm")) * e + projection


def parameter_count(arch: Architecture, sub: Subnetwork) -> int:
    """Parameters of the dense sliced model: embeddings, kept layers, pooler (ModernBERT: final norm and head) and
    classifier."""
    d, qkv, f = arch.hidden_size, sub.heads * arch.head_size, sub.ffn_neurons
    attention, ffn, norm = arch.bias("attention"), arch.bias("ffn"), (1 + arch.bias("norm")) * d
    layer = (
        3 * (d * qkv + attention * qkv)  # query, key, value
        + qkv * d
        + attention * d  # attention output dense
        + (arch.ffn_matrices - 1) * (d * f + ffn * f)  # intermediate dense (GeGLU: and its gate)
        + f * d
        + ffn * d  # output dense
        + 2 * norm  # two LayerNorms
    )
    layers = len(sub.layers) * layer
    pooler = d * d + d if arch.has_pooler else 0
    if arch.layers == "modernbert":  # no norm before layer 0's attention; a final norm; the head's dense and norm
        layers += norm - norm * (0 in sub.layers)
        pooler = d * d + arch.bias("head") * d + norm if arch.has_pooler else 0
    classifier = d * arch.num_labels + arch.num_labels if arch.num_labels else 0
    return embedding_parameters(arch) + layers + pooler + classifier


def layer_flops(hidden: int, inner: int, ffn: int, seq_len: int, ffn_matrices: int = 2) -> tuple[int, int]:
    """Multiply-adds x 2 of one encoder layer for one sequence: (weight projections, attention).

    Split because they scale differently (linearly vs quadratically in seq_len) and run in
    different kernels (GEMMs with weights vs activation-activation matmuls); the latency model fits both.
    `ffn_matrices`: D x F matrices of the FFN (GeGLU's 3). A local-attention layer (ModernBERT's) counts as a global
    one: edgebert's models and exports compute every layer's scores in full and mask those outside the window.
    """
    d, s = hidden, seq_len
    projections = s * (3 * d * inner + inner * d + ffn_matrices * d * ffn)
    attention = 2 * s * s * inner  # scores (Q K^T) and context (P V)
    return 2 * projections, 2 * attention


def encoder_flops(arch: Architecture, sub: Subnetwork, seq_len: int = FLOPS_SEQ_LEN) -> int:
    """Multiply-adds x 2 of the encoder layers for one sequence (embeddings and heads excluded)."""
    per_layer = layer_flops(arch.hidden_size, sub.heads * arch.head_size, sub.ffn_neurons, seq_len, arch.ffn_matrices)
    return len(sub.layers) * sum(per_layer)


def costs(arch: Architecture, sub: Subnetwork) -> dict:
    """What one sub-network keeps and costs: the numbers manifests, `info` and `pick` share."""
    return {
        "width": sub.width,
        "depth": sub.depth,
        "layers_kept": list(sub.layers),
        "heads_kept": sub.heads,
        "ffn_neurons_kept": sub.ffn_neurons,
        "parameters": parameter_count(arch, sub),
        "encoder_flops_seq128": encoder_flops(arch, sub, FLOPS_SEQ_LEN),
    }
