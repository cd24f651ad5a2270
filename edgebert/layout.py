"""The weight layout, written once: which axis of which tensor width cuts, per head or per FFN neuron."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Literal, NamedTuple

from edgebert.subnet import Architecture, Subnetwork

# `edgebert.subnet` says how many heads and FFN neurons a (width, depth) keeps; these tables say what that
# means for each tensor, in canonical names (`edgebert.parameter_names`: one naming for every family). Each
# axis counts something (`Dim`); the axis counting heads or neurons is the one width cuts, keeping a prefix.
# Read by the slicer (`slice_state`), rewiring's permutation (`permute_state`), the training model's views
# (`DynaBert`) and the shape check of every checkpoint and slice (`expected_shapes`). `FAMILIES` says, by
# model type, how each architecture's checkpoints spell and arrange these tensors; a family whose layers are
# not BERT's (ModernBERT's fused QKV) adds its own tables here, chosen by model type.
Unit = Literal["heads", "neurons"]  # what width cuts: attention heads (head_size rows or columns each), FFN neurons
Dim = Literal[Unit, "hidden", "embedding", "vocab", "positions", "token_types", "labels"]
UNITS: tuple[Unit, ...] = ("heads", "neurons")
ENCODER_PREFIX = "encoder."  # every encoder tensor's canonical name starts so,
LAYER_PREFIX = f"{ENCODER_PREFIX}layer."  # and a layer's with its index after this
LAYER_KEY = re.compile(rf"^{re.escape(LAYER_PREFIX)}(\d+)\.")


@dataclass(frozen=True)
class Family:
    """One architecture edgebert reads: how its checkpoints name the canonical tensors, and what differs in its
    forward pass. Its encoder layers are `LAYER`; its embeddings `EMBEDDINGS`, projected to the hidden size by
    `PROJECTION` when config.json's embedding_size differs from it (ELECTRA)."""

    model_type: str  # config.json's model_type
    class_stem: str  # transformers' classes: <stem>Model, <stem>ForSequenceClassification, <stem>Tokenizer
    prefix: str  # the encoder's names in a classifier checkpoint start so (XLM-R's are RoBERTa's)
    # "pooler": BERT's pooler (dense -> tanh on token 0) then `classifier`; "dense": the classifier is
    # `classifier.dense` -> activation -> `classifier.out_proj` on token 0, dropout before each, read as
    # the pooler then the classifier (its own unused pooler, if saved, gives way)
    head: Literal["pooler", "dense"]
    head_activation: Literal["tanh", "gelu", "relu"]
    positions_after_padding: bool  # positions numbered from pad_token_id + 1 over the non-pad tokens (RoBERTa)
    wordpiece: bool  # its tokenizer is WordPiece (a vocab.txt, ids by line): what MediaPipe and pruning need
    default_pad_token_id: int
    # its stock tokenizer's special tokens are BERT's [CLS] [SEP] [PAD] [UNK] [MASK], else RoBERTa's <s> </s> <pad> ...
    bert_tokens: bool = True
    tokenizer: str | None = None  # transformers' tokenizer class, when it is not <stem>Tokenizer
    # ids at the end of its stock vocabulary that are no regular token (RoBERTa's and XLM-R's <mask>), which random
    # inputs skip (`edgebert.inputs.id_range`)
    trailing_special_ids: int = 0
    # False: no token-type embedding and no token_type_ids input (DistilBERT); its type_vocab_size is 0
    token_types: bool = True
    attention_output_dropout: bool = True  # dropout on the attention's output dense (DistilBERT has none)
    layers: Literal["bert", "modernbert"] = "bert"  # its tensor tables (`Architecture.layers`)


_BERT = Family(
    model_type="bert",
    class_stem="Bert",
    prefix="bert.",
    head="pooler",
    head_activation="tanh",
    positions_after_padding=False,
    wordpiece=True,
    default_pad_token_id=0,
)
_ROBERTA = replace(
    _BERT,
    model_type="roberta",
    class_stem="Roberta",
    prefix="roberta.",
    head="dense",
    positions_after_padding=True,
    wordpiece=False,  # byte-level BPE
    default_pad_token_id=1,
    bert_tokens=False,
    trailing_special_ids=1,
)
FAMILIES = {
    family.model_type: family
    for family in (
        _BERT,
        _ROBERTA,
        replace(_ROBERTA, model_type="xlm-roberta", class_stem="XLMRoberta"),  # SentencePiece, RoBERTa's names
        replace(
            _BERT, model_type="electra", class_stem="Electra", prefix="electra.", head="dense", head_activation="gelu"
        ),
        replace(  # its own names (`edgebert.parameter_names`) and config keys (`edgebert.configs`); head on token 0:
            _BERT,  # pre_classifier -> ReLU -> dropout -> classifier, read as the pooler then the classifier
            model_type="distilbert",
            class_stem="DistilBert",
            prefix="distilbert.",
            head_activation="relu",
            token_types=False,
            attention_output_dropout=False,
        ),
        replace(  # its own tables (MODERNBERT_*), names (`edgebert.parameter_names`) and model (`edgebert.modernbert`);
            _BERT,  # its head: pooling (token 0 or mean), dense -> GELU -> norm, then the classifier
            model_type="modernbert",
            class_stem="ModernBert",
            prefix="model.",
            head_activation="gelu",
            wordpiece=False,  # byte-level BPE (OLMo's), with BERT's special tokens
            tokenizer="PreTrainedTokenizerFast",  # what its checkpoints name: transformers has no class of its own
            # ModernBERT-base's and -large's 50368 ids end in |||EMAIL_ADDRESS|||, |||PHONE_NUMBER|||, <|endoftext|>,
            # [UNK], [CLS], [SEP], [PAD], [MASK] (50277-50284) and 83 [unused] tokens
            trailing_special_ids=91,
            token_types=False,
            layers="modernbert",
        ),
    )
}


class Cut(NamedTuple):
    axis: int  # 0: rows (a linear layer's outputs), 1: columns (its inputs)
    unit: Unit


@dataclass(frozen=True)
class Parameter:
    """One tensor: its canonical name (within its layer, for a layer's) and what each of its axes counts.

    A fused tensor (ModernBERT's QKV, GeGLU's input and gate) stacks `blocks` such tensors along its cut axis:
    width keeps the same prefix of each. `group`: the config flag group a bias belongs to (`Architecture.unbiased`).
    """

    name: str
    axes: tuple[Dim, ...]
    blocks: int = 1
    group: str | None = None

    @property
    def cut(self) -> Cut | None:
        """The axis width cuts and by which unit; None for a tensor every sub-network keeps whole."""
        return next((Cut(axis, dim) for axis, dim in enumerate(self.axes) if dim in UNITS), None)

    def shape(self, sizes: dict[Dim, int]) -> tuple[int, ...]:
        return tuple(sizes[dim] * (self.blocks if dim in UNITS else 1) for dim in self.axes)

    def reordered(self, order: Any) -> Any:
        """The indices along the cut axis that put the units in `order` (a tensor of indices along one block):
        the same order in each block of a fused tensor."""
        if self.blocks == 1:
            return order
        import torch

        return torch.cat([order + block * len(order) for block in range(self.blocks)])


def _linear(name: str, out: Dim, into: Dim) -> tuple[Parameter, Parameter]:
    """A linear layer's weight (out, in) and bias (out): the bias is cut exactly when the weight's rows are."""
    return Parameter(f"{name}.weight", (out, into)), Parameter(f"{name}.bias", (out,))


def _layer_norm(name: str, size: Dim = "hidden") -> tuple[Parameter, Parameter]:
    return Parameter(f"{name}.weight", (size,)), Parameter(f"{name}.bias", (size,))


EMBEDDINGS = (  # at the embedding size: the hidden size, except in ELECTRA's smaller models
    Parameter("embeddings.word_embeddings.weight", ("vocab", "embedding")),
    Parameter("embeddings.position_embeddings.weight", ("positions", "embedding")),
    Parameter("embeddings.token_type_embeddings.weight", ("token_types", "embedding")),
    *_layer_norm("embeddings.LayerNorm", "embedding"),
)
PROJECTION = _linear("embeddings_project", "hidden", "embedding")  # ELECTRA's, from the embedding to the hidden size
# One encoder layer: Q, K and V keep rows per head and the attention output columns per head; the FFN's
# first dense keeps rows per neuron and its output dense columns per neuron. Output biases and LayerNorms
# keep the hidden size.
LAYER = (
    *_linear("attention.self.query", "heads", "hidden"),
    *_linear("attention.self.key", "heads", "hidden"),
    *_linear("attention.self.value", "heads", "hidden"),
    *_linear("attention.output.dense", "hidden", "heads"),
    *_layer_norm("attention.output.LayerNorm"),
    *_linear("intermediate.dense", "neurons", "hidden"),
    *_linear("output.dense", "hidden", "neurons"),
    *_layer_norm("output.LayerNorm"),
)
POOLER = _linear("pooler.dense", "hidden", "hidden")
CLASSIFIER = _linear("classifier", "labels", "hidden")


def _modern_linear(name: str, out: Dim, into: Dim, group: str, blocks: int = 1) -> tuple[Parameter, Parameter]:
    return Parameter(f"{name}.weight", (out, into), blocks), Parameter(f"{name}.bias", (out,), blocks, group)


def _modern_norm(name: str) -> tuple[Parameter, Parameter]:
    return Parameter(f"{name}.weight", ("hidden",)), Parameter(f"{name}.bias", ("hidden",), group="norm")


# ModernBERT, in its own names (encoder.layer.N. for its layers.N.): no positions table (rotary), a norm before
# attention (none in layer 0) and before the FFN; Wqkv stacks Q, K and V (each cut per head), GeGLU's Wi stacks the
# input and gate halves (each cut per neuron). Biases exist as config.json's flags say (none by default).
MODERNBERT_EMBEDDINGS = (
    Parameter("embeddings.tok_embeddings.weight", ("vocab", "hidden")),
    *_modern_norm("embeddings.norm"),
)
MODERNBERT_ATTENTION_NORM = _modern_norm("attn_norm")
MODERNBERT_LAYER = (
    *MODERNBERT_ATTENTION_NORM,
    *_modern_linear("attn.Wqkv", "heads", "hidden", "attention", blocks=3),
    *_modern_linear("attn.Wo", "hidden", "heads", "attention"),
    *_modern_norm("mlp_norm"),
    *_modern_linear("mlp.Wi", "neurons", "hidden", "ffn", blocks=2),
    *_modern_linear("mlp.Wo", "hidden", "neurons", "ffn"),
)
MODERNBERT_FINAL_NORM = _modern_norm("final_norm")
MODERNBERT_HEAD = (*_modern_linear("head.dense", "hidden", "hidden", "head"), *_modern_norm("head.norm"))


def _present(arch: Architecture, parameters: tuple[Parameter, ...]) -> tuple[Parameter, ...]:
    """The tensors `arch` has: a bias only where its group has biases."""
    return tuple(p for p in parameters if p.group is None or arch.bias(p.group))


def embedding_layout(arch: Architecture) -> tuple[Parameter, ...]:
    """The tensors before the first layer: the embeddings (token types' only where there are some), and their
    projection when they are narrower."""
    if arch.layers == "modernbert":
        return _present(arch, MODERNBERT_EMBEDDINGS)
    embeddings = tuple(p for p in EMBEDDINGS if arch.type_vocab_size or "token_types" not in p.axes)
    return embeddings + (PROJECTION if arch.projects_embeddings else ())


def layer_layout(arch: Architecture, index: int) -> tuple[Parameter, ...]:
    """The tensors of layer `index` (its index in the full model: ModernBERT's layer 0 has no attention norm)."""
    if arch.layers == "bert":
        return LAYER
    return _present(arch, MODERNBERT_LAYER[len(MODERNBERT_ATTENTION_NORM) :] if index == 0 else MODERNBERT_LAYER)


def head_layout(arch: Architecture) -> tuple[Parameter, ...]:
    """The tensors after the last layer: the pooler (ModernBERT: its final norm, then its head) and classifier."""
    classifier = CLASSIFIER if arch.num_labels else ()
    if arch.layers == "modernbert":
        return _present(arch, (*MODERNBERT_FINAL_NORM, *(MODERNBERT_HEAD if arch.has_pooler else ()))) + classifier
    return (*(POOLER if arch.has_pooler else ()), *classifier)


def layer_name(index: int, name: str) -> str:
    """The canonical name of a layer's tensor: `encoder.layer.3.` + its name within the layer."""
    return f"{LAYER_PREFIX}{index}.{name}"


def axis_sizes(arch: Architecture, sub: Subnetwork) -> dict[Dim, int]:
    """How long each kind of axis is in sub-network `sub` of `arch`: a cut unit its kept rows or columns."""
    return {
        "heads": sub.heads * arch.head_size,
        "neurons": sub.ffn_neurons,
        "hidden": arch.hidden_size,
        "embedding": arch.embedding_width,
        "vocab": arch.vocab_size,
        "positions": arch.max_positions,
        "token_types": arch.type_vocab_size,
        "labels": arch.num_labels or 0,
    }


def kept(tensor: Any, parameter: Parameter, sizes: dict[Dim, int]) -> Any:
    """What a sub-network of axis lengths `sizes` keeps of a full tensor: a prefix along its cut axis (a view), of
    each block of a fused tensor (then a new tensor, through which gradients still flow)."""
    cut = parameter.cut
    if cut is None:
        return tensor
    if parameter.blocks == 1:
        return tensor.narrow(cut.axis, 0, sizes[cut.unit])
    blocked = tensor.unflatten(cut.axis, (parameter.blocks, -1))  # (..., blocks, full, ...)
    return blocked.narrow(cut.axis + 1, 0, sizes[cut.unit]).flatten(cut.axis, cut.axis + 1)
