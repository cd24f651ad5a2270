"""Canonical parameter names (`edgebert.model`'s, no `bert.`): every source's spelling read in, each class's written."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from edgebert.layout import FAMILIES, LAYER_KEY

if TYPE_CHECKING:
    import torch

# Keys a classification or pre-training checkpoint may carry that a slice never uses.
IGNORED_KEYS = re.compile(
    r"(position_ids|^cls\.|^lm_head\.|^qa_outputs\.|^vocab_(transform|layer_norm|projector)\.|^decoder\.)"
)
# A "dense" head (`edgebert.layout.Family.head`) as its class names it -> canonical: BERT's pooler, then a classifier.
DENSE_HEAD = {"classifier.dense.": "pooler.dense.", "classifier.out_proj.": "classifier."}
STOCK_DENSE_HEAD = {new: old for old, new in DENSE_HEAD.items()}

Value = TypeVar("Value")


@dataclass(frozen=True)
class OwnNames:
    """How a family's checkpoints name canonical tensors where BERT's names do not fit, by how the name starts ->
    canonical: `head` outside the family's prefix, `encoder` within it, `layer` within a layer (`encoder.layer.N.`)."""

    head: dict[str, str]
    encoder: dict[str, str]
    layer: dict[str, str]

    def canonical(self, name: str) -> str:
        """A checkpoint's name (its family's prefix removed) -> canonical."""
        name = _renamed(name, self.head) or _renamed(name, self.encoder) or name
        return _in_layer(name, self.layer)

    def stock(self, name: str, prefix: str) -> str:
        """A canonical name -> the family's, under `prefix` unless it is the head's."""
        if (head := _renamed(name, _inverse(self.head))) is not None:
            return head
        name = _in_layer(name, _inverse(self.layer))
        return prefix + (_renamed(name, _inverse(self.encoder)) or name)


OWN_NAMES = {
    "distilbert": OwnNames(
        head={"pre_classifier.": "pooler.dense."},
        encoder={"transformer.layer.": "encoder.layer."},
        layer={
            "attention.q_lin.": "attention.self.query.",
            "attention.k_lin.": "attention.self.key.",
            "attention.v_lin.": "attention.self.value.",
            "attention.out_lin.": "attention.output.dense.",
            "sa_layer_norm.": "attention.output.LayerNorm.",
            "ffn.lin1.": "intermediate.dense.",
            "ffn.lin2.": "output.dense.",
            "output_layer_norm.": "output.LayerNorm.",
        },
    ),
    # its own canonical names (`edgebert.layout.MODERNBERT_*`) but for its layers; the head outside its prefix
    "modernbert": OwnNames(head={"head.": "head."}, encoder={"layers.": "encoder.layer."}, layer={}),
}


def canonical_state(raw: dict[str, Value], model_type: str) -> dict[str, Value]:
    """Rename checkpoint keys (of tensors, or of their shapes) to edgebert's naming; drop keys a slice never uses.

    Besides its family's prefix, `bert.` is removed: edgebert's own classes use it for every family."""
    family, own = FAMILIES[model_type], OWN_NAMES.get(model_type)
    # A dense head on token 0 is read as the pooler; the family's own (unused) pooler, if saved, gives way.
    dense_head = family.head == "dense" and "classifier.dense.weight" in raw
    # without a classifier, a head outside the prefix is a masked-LM checkpoint's prediction head (ModernBERT's)
    lm_head = own is not None and "classifier.weight" not in raw
    state = {}
    for key, tensor in raw.items():
        if IGNORED_KEYS.search(key) or (dense_head and key.startswith(("pooler.", f"{family.prefix}pooler."))):
            continue
        name = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        name = name.removeprefix("bert.").removeprefix(family.prefix)
        if lm_head and _renamed(name, own.head) is not None:
            continue
        name = own.canonical(name) if own is not None else name
        state[(_renamed(name, DENSE_HEAD) if dense_head else None) or name] = tensor
    return state


def stock_state(state: dict[str, torch.Tensor], model_type: str, classifier: bool = True) -> dict[str, torch.Tensor]:
    """The inverse of `canonical_state`: the names the family's stock <Class>ForSequenceClassification loads, or
    with `classifier` false its <Class>Model (no prefix)."""
    family, own = FAMILIES[model_type], OWN_NAMES.get(model_type)
    prefix = family.prefix if classifier else ""
    stock = {}
    for name, tensor in state.items():
        if classifier and family.head == "dense" and (head := _renamed(name, STOCK_DENSE_HEAD)) is not None:
            stock[head] = tensor
        elif name.startswith("classifier."):
            stock[name] = tensor
        else:
            stock[own.stock(name, prefix) if own is not None else prefix + name] = tensor
    return stock


def _renamed(name: str, prefixes: dict[str, str]) -> str | None:
    """`name` with the first of `prefixes` it starts with replaced by its value; None when it starts with none."""
    return next((new + name[len(old) :] for old, new in prefixes.items() if name.startswith(old)), None)


def _inverse(renames: dict[str, str]) -> dict[str, str]:
    return {new: old for old, new in renames.items()}


def _in_layer(name: str, renames: dict[str, str]) -> str:
    """`name` with the start of its name within its layer renamed (`_renamed`), when it is a layer's tensor."""
    match = LAYER_KEY.match(name)
    return (
        name if match is None else name[: match.end()] + (_renamed(name[match.end() :], renames) or name[match.end() :])
    )


def model_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Canonical names -> `edgebert.model`'s classifier, whose names are BERT's (`bert.` prefix, `classifier.*`)."""
    return stock_state(state, "bert")
