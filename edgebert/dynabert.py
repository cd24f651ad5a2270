"""The trainable DynaBERT: full-size weights, and any (width, depth) sub-network run on views of them.

As the official `DynaLinear`, a sub-network multiplies by `weight[:out, :in]` views of the full
tensors, so a width-0.25 pass costs about a quarter of a full one and its gradients flow into
the full tensors. Which heads, neurons and layers a (width, depth) keeps comes from
`edgebert.subnet`; the weights are those of `edgebert.model` (same names), so the training
model, the slicer and the sliced model read one state dict. In eval mode a sub-network's
logits equal those of its dense slice. ModernBERT (`DynaModernBert`) runs its own layers' forward
(`edgebert.modernbert`) on the views.

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
from edgebert.layout import FAMILIES, Dim, Parameter, axis_sizes, kept, layer_layout
from edgebert.model import MASK_VALUE, EdgeBertConfig
from edgebert.model_files import copy_tokenizer_files
from edgebert.parameter_names import canonical_state, stock_state
from edgebert.slicing import edge_classes, edge_names
from edgebert.subnet import Architecture, Subnetwork, full_network
from edgebert.weights import write_safetensors

INITIALIZER_RANGE = 0.02  # BERT's std for new weights (a new classifier on a bare encoder)


@dataclass(frozen=True)
class Dropout:
    """Dropout rates of the source config (BERT's defaults when absent)."""

    hidden: float = 0.1
    attention: float = 0.1
    classifier: float = 0.1
    embedding: float | None = None  # ModernBERT's embedding_dropout; None: `hidden` (BERT's embeddings drop so)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Dropout:
        hidden = float(config.get("hidden_dropout_prob", 0.1))
        classifier = config.get("classifier_dropout")
        attention = float(config.get("attention_probs_dropout_prob", 0.1))
        embedding = config.get("embedding_dropout")
        return cls(
            hidden,
            attention,
            hidden if classifier is None else float(classifier),
            None if embedding is None else float(embedding),
        )


class DynaOutput(NamedTuple):  # a tuple, so DistributedDataParallel finds the tensors
    logits: torch.Tensor  # (B, labels)
    hidden_states: list[torch.Tensor]  # embedding output, then the output of every layer run: (B, S, D) each


class DynaBert(nn.Module):
    """A sequence classifier whose forward runs one sub-network of the full weights."""

    def __init__(self, config: EdgeBertConfig, arch: Architecture, dropout: Dropout):
        super().__init__()
        # parameter container: edgebert's own classifier class of the family (`edgebert.slicing.edge_classes`)
        self.net = edge_classes(config.source_model_type)[2](config)
        self.names = edge_names(config.source_model_type)  # whose parameter names it uses
        self.arch, self.dropout = arch, dropout
        family = FAMILIES[config.source_model_type]
        # A dense head (RoBERTa's, ELECTRA's) drops out token 0 before its dense, as BERT's pooler does not
        self.dense_head = family.head == "dense"
        self.attention_output_dropout = family.attention_output_dropout  # DistilBERT's has none

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, dropout: Dropout, new_labels: dict[str, int] | None = None):
        """The checkpoint's weights; `new_labels` adds a fresh, seeded classifier (and pooler) to a bare encoder."""
        model_config = dict(checkpoint.model_config)
        arch = checkpoint.arch
        state = stock_state(checkpoint.state, edge_names(checkpoint.model_type))
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
        config = edge_classes(checkpoint.model_type)[0](**model_config)
        model = DYNA_CLASSES[arch.layers](config, arch, dropout)
        fresh = {n: t for n, t in model.net.state_dict().items() if n not in state}
        if any(not n.startswith(("classifier.", "bert.pooler.", "head.")) for n in fresh):
            raise EdgebertError(f"{checkpoint.path}: weights missing for {sorted(fresh)[:3]}")
        generator = torch.Generator().manual_seed(0)
        for name, tensor in fresh.items():  # BERT's initialisation: N(0, 0.02) weights, zero biases, unit norm scales
            weight = torch.randn(tensor.shape, generator=generator) * INITIALIZER_RANGE
            vector = torch.ones if name.endswith("norm.weight") else torch.zeros  # ModernBERT's head has a norm
            state[name] = weight if tensor.dim() > 1 else vector(tensor.shape)
        model.net.load_state_dict(state, strict=True)
        return model

    @property
    def num_labels(self) -> int:
        return self.arch.num_labels or 1

    @property
    def encoder_layers(self) -> nn.ModuleList:
        """The full model's layers, each holding its tensors under their names in `edgebert.layout.layer_layout`."""
        return self.net.bert.encoder.layer

    def canonical_state(self) -> dict[str, torch.Tensor]:
        """Weights under canonical names (`edgebert.parameter_names`: no `bert.` prefix)."""
        return {name: t.detach() for name, t in canonical_state(self.net.state_dict(), self.names).items()}

    def load_canonical_state(self, state: dict[str, torch.Tensor]) -> None:
        """The inverse of `canonical_state`: load weights given under canonical names."""
        self.net.load_state_dict(stock_state(state, self.names), strict=True)

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
            x = self._layer(bert.encoder.layer[index], index, x, additive_mask, sub, layer_mask)
            hidden_states.append(x)
        first = x[:, 0]  # (B, D)
        if self.dense_head:
            first = F.dropout(first, self.dropout.classifier, self.training)
        pooled = bert.pooler.activation(bert.pooler.dense(first))
        logits = self.net.classifier(F.dropout(pooled, self.dropout.classifier, self.training))
        return DynaOutput(logits, hidden_states)

    def _layer(
        self, layer, index: int, x, additive_mask, sub: Subnetwork, head_mask: torch.Tensor | None
    ) -> torch.Tensor:
        batch, seq = x.shape[0], x.shape[1]
        heads, size = sub.heads, self.arch.head_size
        sizes = axis_sizes(self.arch, sub)
        inner, w = sizes["heads"], sub_weights(layer, layer_layout(self.arch, index), sizes)
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
        attended = F.dropout(attended, p, self.training) if self.attention_output_dropout else attended
        x = layer.attention.output.LayerNorm(attended + x)
        h = layer.intermediate.activation(
            F.linear(x, w["intermediate.dense.weight"], w["intermediate.dense.bias"])
        )  # (B, S, f)
        out = F.linear(h, w["output.dense.weight"], w["output.dense.bias"])
        return layer.output.LayerNorm(F.dropout(out, p, self.training) + x)


class DynaModernBert(DynaBert):
    """ModernBERT's sub-networks: its layers' own forward (`edgebert.modernbert`) on views of the full weights, each
    kept layer with its type's rotary positions and attention window; hidden states for the losses are the
    embedding output and each kept layer's output (before the final norm, as transformers' hidden_states); the
    head pools (token 0 or the mean), then final norm -> dense -> activation -> norm, dropout, the classifier.
    Dropout where transformers' ModernBERT has it: embeddings, attention probabilities and output, GeGLU's
    neurons, the pooled head output."""

    @property
    def encoder_layers(self) -> nn.ModuleList:
        return self.net.model.layers

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,  # none in ModernBERT: taken for the shared signature
        sub: Subnetwork | None = None,
        head_mask: torch.Tensor | None = None,
    ) -> DynaOutput:
        """Run sub-network `sub` (default: the full model); `head_mask` (L, H) scales attention probabilities."""
        from edgebert.modernbert import dropped, pooled

        sub = sub or full_network(self.arch)
        model, dropout = self.net.model, self.dropout

        def rate(value: float) -> float:
            return value if self.training else 0.0

        embedding = dropout.hidden if dropout.embedding is None else dropout.embedding
        x = dropped(model.embeddings(input_ids), rate(embedding))
        inputs, sizes = model.layer_inputs(attention_mask), axis_sizes(self.arch, sub)
        hidden_states = [x]
        for index in sub.layers:
            layer = model.layers[index]
            weights = sub_weights(layer, layer_layout(self.arch, index), sizes)
            layer_mask = None if head_mask is None else head_mask[index, : sub.heads]
            rates = (rate(dropout.attention), rate(dropout.hidden))
            x = layer(x, *inputs[layer.attention_type], weights, layer_mask, rates)
            hidden_states.append(x)
        head = self.net.head(pooled(model.final_norm(x), attention_mask, self.net.config.classifier_pooling))
        return DynaOutput(self.net.classifier(dropped(head, rate(dropout.classifier))), hidden_states)


DYNA_CLASSES: dict[str, type[DynaBert]] = {"bert": DynaBert, "modernbert": DynaModernBert}  # by `Family.layers`


def sub_weights(layer: nn.Module, layout: tuple[Parameter, ...], sizes: dict[Dim, int]) -> dict[str, torch.Tensor]:
    """One layer's tensors (`layout`: `edgebert.layout.layer_layout`) as a sub-network of axis lengths `sizes` uses
    them, by name within the layer: views of the full tensors, so the sub-network's gradients flow into them."""
    full = dict(layer.named_parameters())
    return {parameter.name: kept(full[parameter.name], parameter, sizes) for parameter in layout}


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
