"""Canonical parameter names (`edgebert.model`'s, no `bert.`): every source's spelling read in, each class's written."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, TypeVar

from edgebert.layout import FAMILIES

if TYPE_CHECKING:
    import torch

# Keys a classification or pre-training checkpoint may carry that a slice never uses.
IGNORED_KEYS = re.compile(r"(position_ids|^cls\.|^lm_head\.|^qa_outputs\.)")
# A "dense" head (`edgebert.layout.Family.head`) as its class names it -> canonical: BERT's pooler, then a classifier.
DENSE_HEAD = {"classifier.dense.": "pooler.dense.", "classifier.out_proj.": "classifier."}
STOCK_DENSE_HEAD = {new: old for old, new in DENSE_HEAD.items()}

Value = TypeVar("Value")


def canonical_state(raw: dict[str, Value], model_type: str) -> dict[str, Value]:
    """Rename checkpoint keys (of tensors, or of their shapes) to edgebert's naming; drop keys a slice never uses.

    Besides its family's prefix, `bert.` is removed: edgebert's own classes use it for every family."""
    family = FAMILIES[model_type]
    # A dense head on token 0 is read as the pooler; the family's own (unused) pooler, if saved, gives way.
    dense_head = family.head == "dense" and "classifier.dense.weight" in raw
    state = {}
    for key, tensor in raw.items():
        if IGNORED_KEYS.search(key) or (dense_head and key.startswith(("pooler.", f"{family.prefix}pooler."))):
            continue
        name = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        name = name.removeprefix("bert.").removeprefix(family.prefix)
        state[(_renamed(name, DENSE_HEAD) if dense_head else None) or name] = tensor
    return state


def stock_state(state: dict[str, torch.Tensor], model_type: str) -> dict[str, torch.Tensor]:
    """The inverse of `canonical_state`: the names the family's stock <Class>ForSequenceClassification loads."""
    family = FAMILIES[model_type]
    stock = {}
    for name, tensor in state.items():
        if family.head == "dense" and (head := _renamed(name, STOCK_DENSE_HEAD)) is not None:
            stock[head] = tensor
        elif name.startswith("classifier."):
            stock[name] = tensor
        else:
            stock[family.prefix + name] = tensor
    return stock


def _renamed(name: str, prefixes: dict[str, str]) -> str | None:
    """`name` with the first of `prefixes` it starts with replaced by its value; None when it starts with none."""
    return next((new + name[len(old) :] for old, new in prefixes.items() if name.startswith(old)), None)


def model_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Canonical names -> `edgebert.model`'s classifier, whose names are BERT's (`bert.` prefix, `classifier.*`)."""
    return stock_state(state, "bert")
