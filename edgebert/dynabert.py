"""The trainable DynaBERT: full-size weights, and any (width, depth) sub-network run on views of them.

As the official `DynaLinear`, a sub-network multiplies by `weight[:out, :in]` views of the full
tensors, so a width-0.25 pass costs about a quarter of a full one and its gradients flow into
the full tensors. Which heads, neurons and layers a (width, depth) keeps comes from
`edgebert.subnet`; the weights are those of `edgebert.model` (same names), so the training
model, the slicer and the sliced model read one state dict. In eval mode a sub-network's
logits equal those of its dense slice.

Shapes: B batch, S sequence, D hidden, h kept heads, A head size, f kept FFN neurons.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from edgebert.checkpoint import Checkpoint
from edgebert.configs import stock_config
from edgebert.errors import EdgebertError
from edgebert.layout import FAMILIES, LAYER, Dim, axis_sizes, kept
from edgebert.model import MASK_VALUE, EdgeBertConfig, EdgeBertForSequenceClassification
from edgebert.model_files import copy_tokenizer_files
from edgebert.parameter_names import model_state, stock_state
from edgebert.subnet import Architecture, Subnetwork, full_network
from edgebert.weights import write_safetensors

INITIALIZER_RANGE = 0.02  # BERT's std for new weights (a new classifier on a bare encoder)


@dataclass(frozen=True)
class Dropout:
    """Dropout rates of the source config (BERT's defaults when absent)."""

    hidden: float = 0.1
    attention: float = 0.1
    classifier: float = 0.1

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Dropout:
        hidden = float(config.get("hidden_dropout_prob", 0.1))
        classifier = config.get("classifier_dropout")
        attention = float(config.get("attention_probs_dropout_prob", 0.1))
        return cls(hidden, attention, hidden if classifier is None else float(classifier))


class DynaOutput(NamedTuple):  # a tuple, so DistributedDataParallel finds the tensors
    logits: torch.Tensor  # (B, labels)
    hidden_states: list[torch.Tensor]  # embedding output, then the output of every layer run: (B, S, D) each


class DynaBert(nn.Module):
    """A sequence classifier whose forward runs one sub-network of the full weights."""

    def __init__(self, config: EdgeBertConfig, arch: Architecture, dropout: Dropout):
        super().__init__()
        self.net = EdgeBertForSequenceClassification(config)  # parameter container with edgebert.model's names
        self.arch, self.dropout = arch, dropout
        # A dense head (RoBERTa's, ELECTRA's) drops out token 0 before its dense, as BERT's pooler does not
        self.dense_head = FAMILIES[config.source_model_type].head == "dense"

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, dropout: Dropout, new_labels: dict[str, int] | None = None):
        """The checkpoint's weights; `new_labels` adds a fresh, seeded classifier (and pooler) to a bare encoder."""
        model_config = dict(checkpoint.model_config)
        state = model_state(checkpoint.state)
        arch = checkpoint.arch
        if new_labels is not None or not arch.num_labels:
            labels = new_labels or {}
            model_config.pop("num_labels", None)
            if labels:
                model_config["label2id"] = labels
                model_config["id2label"] = {i: name for name, i in labels.items()}
            else:
                model_config["num_labels"] = 1  # regression
            num_labels = max(1, len(labels))
            arch = Architecture(**{**arch.__dict__, "has_pooler": True, "num_labels": num_labels})
        model = cls(EdgeBertConfig(**model_config), arch, dropout)
        fresh = {n: t for n, t in model.net.state_dict().items() if n not in state}
        if any(not n.startswith(("classifier.", "bert.pooler.")) for n in fresh):
            raise EdgebertError(f"{checkpoint.path}: weights missing for {sorted(fresh)[:3]}")
        generator = torch.Generator().manual_seed(0)
        for name, tensor in fresh.items():  # BERT's initialisation: N(0, 0.02) weights, zero biases
            weight = torch.randn(tensor.shape, generator=generator) * INITIALIZER_RANGE
            state[name] = weight if tensor.dim() > 1 else torch.zeros(tensor.shape)
        model.net.load_state_dict(state, strict=True)
        return model

    @property
    def num_labels(self) -> int:
        return self.arch.num_labels or 1

    def canonical_state(self) -> dict[str, torch.Tensor]:
        """Weights under canonical names (`edgebert.parameter_names`: no `bert.` prefix)."""
        return {name.removeprefix("bert."): t.detach() for name, t in self.net.state_dict().items()}

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
        sub: Subnetwork | None = None,
        head_mask: torch.Tensor | None = None,
    ) -> DynaOutput:
        """Run sub-network `sub` (default: the full model); `head_mask` (L, H) scales attention probabilities."""
        sub = sub or full_network(self.arch)
        bert = self.net.bert
        hidden_p = self.dropout.hidden if self.training else 0.0
        additive_mask = (
            1.0 - attention_mask[:, None, None, :].to(bert.embeddings.word_embeddings.weight.dtype)
        ) * MASK_VALUE
        # ELECTRA projects the dropped-out embeddings (B, S, E) to (B, S, D)
        x = bert.project(F.dropout(bert.embeddings(input_ids, token_type_ids), hidden_p, self.training))
        hidden_states = [x]
        for index in sub.layers:
            layer_mask = None if head_mask is None else head_mask[index, : sub.heads]
            x = self._layer(bert.encoder.layer[index], x, additive_mask, sub, layer_mask)
            hidden_states.append(x)
        first = x[:, 0]  # (B, D)
        if self.dense_head:
            first = F.dropout(first, self.dropout.classifier, self.training)
        pooled = bert.pooler.activation(bert.pooler.dense(first))
        logits = self.net.classifier(F.dropout(pooled, self.dropout.classifier, self.training))
        return DynaOutput(logits, hidden_states)

    def _layer(self, layer, x, additive_mask, sub: Subnetwork, head_mask: torch.Tensor | None) -> torch.Tensor:
        batch, seq = x.shape[0], x.shape[1]
        heads, size = sub.heads, self.arch.head_size
        sizes = axis_sizes(self.arch, sub)
        inner, w = sizes["heads"], sub_weights(layer, sizes)
        p = self.dropout.hidden if self.training else 0.0

        def split(name: str) -> torch.Tensor:  # (B, S, D) -> (B, h, S, A), first h heads only
            linear = F.linear(x, w[f"attention.self.{name}.weight"], w[f"attention.self.{name}.bias"])
            return linear.view(batch, seq, heads, size).transpose(1, 2)

        q, k, v = split("query"), split("key"), split("value")
        scores = torch.matmul(q, k.transpose(-1, -2)) * layer.attention.self.scale + additive_mask  # (B, h, S, S)
        probs = F.dropout(scores.softmax(dim=-1), self.dropout.attention if self.training else 0.0, self.training)
        if head_mask is not None:
            probs = probs * head_mask[None, :, None, None]
        context = torch.matmul(probs, v).transpose(1, 2).reshape(batch, seq, inner)  # (B, S, h*A)
        attended = F.linear(context, w["attention.output.dense.weight"], w["attention.output.dense.bias"])
        x = layer.attention.output.LayerNorm(F.dropout(attended, p, self.training) + x)
        h = layer.intermediate.activation(
            F.linear(x, w["intermediate.dense.weight"], w["intermediate.dense.bias"])
        )  # (B, S, f)
        out = F.linear(h, w["output.dense.weight"], w["output.dense.bias"])
        return layer.output.LayerNorm(F.dropout(out, p, self.training) + x)


def sub_weights(layer: nn.Module, sizes: dict[Dim, int]) -> dict[str, torch.Tensor]:
    """One layer's tensors as a sub-network of axis lengths `sizes` uses them (`edgebert.layout`), by name
    within the layer: views of the full tensors, so the sub-network's gradients flow into them."""
    full = dict(layer.named_parameters())
    return {parameter.name: kept(full[parameter.name], parameter, sizes) for parameter in LAYER}


def save_checkpoint(
    model: DynaBert, source: Checkpoint, directory: Path, extra_files: dict[str, str] | None = None
) -> None:
    """Write `model` as a stock transformers checkpoint (the source's <Class>ForSequenceClassification) into a new
    directory.

    config.json is the source's, with the stock class, model_type and the model's labels, so
    stock transformers, `slice`, `eval`, `export` and `pick` all load it.
    """
    directory.mkdir()
    labels = dict(model.net.config.id2label)
    config = stock_config(source.config, source.model_type, labels)  # the source's as read (never through a link)
    if model.num_labels == 1:
        config["problem_type"] = "regression"
    state = {name: t.contiguous() for name, t in stock_state(model.canonical_state(), source.model_type).items()}
    write_safetensors(state, directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    copy_tokenizer_files(source.path, directory)
    for name, text in (extra_files or {}).items():
        (directory / name).write_text(text, encoding="utf-8")


def copy_model_dir(source: Path, directory: Path) -> None:
    """A finished model directory copied file by file (phase outputs into the final one)."""
    directory.mkdir()
    for path in source.iterdir():
        if path.is_file() and not path.is_symlink():
            shutil.copy2(path, directory / path.name)
