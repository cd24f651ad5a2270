"""Canonical parameter names (`edgebert.model`'s, no `bert.`): every source's spelling read in, each class's written."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import torch

# Keys a classification or pre-training checkpoint may carry that a slice never uses.
IGNORED_KEYS = re.compile(r"(position_ids|^cls\.|^lm_head\.|^qa_outputs\.)")

Value = TypeVar("Value")


def canonical_state(raw: dict[str, Value], model_type: str) -> dict[str, Value]:
    """Rename checkpoint keys (of tensors, or of their shapes) to edgebert's naming; drop keys a slice never uses."""
    # RoBERTa's head is dense -> tanh -> out_proj on token 0: BERT's pooler, then a classifier.
    # Its own (unused) pooler, if saved, gives way.
    roberta_head = model_type == "roberta" and "classifier.dense.weight" in raw
    state = {}
    for key, tensor in raw.items():
        if IGNORED_KEYS.search(key) or (roberta_head and key.startswith(("pooler.", "roberta.pooler."))):
            continue
        name = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        name = name.removeprefix("bert.").removeprefix("roberta.")
        if roberta_head:
            name = name.replace("classifier.dense.", "pooler.dense.").replace("classifier.out_proj.", "classifier.")
        state[name] = tensor
    return state


def stock_state(state: dict[str, torch.Tensor], model_type: str) -> dict[str, torch.Tensor]:
    """The inverse of `canonical_state`: the names stock Bert/RobertaForSequenceClassification load."""
    prefix = f"{model_type}."
    stock = {}
    for name, tensor in state.items():
        if model_type == "roberta" and name.startswith("pooler.dense."):
            stock[name.replace("pooler.dense.", "classifier.dense.")] = tensor
        elif model_type == "roberta" and name.startswith("classifier."):
            stock[name.replace("classifier.", "classifier.out_proj.")] = tensor
        elif name.startswith("classifier."):
            stock[name] = tensor
        else:
            stock[prefix + name] = tensor
    return stock


def model_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Canonical names -> `edgebert.model`'s classifier, whose names are BERT's (`bert.` prefix, `classifier.*`)."""
    return stock_state(state, "bert")
