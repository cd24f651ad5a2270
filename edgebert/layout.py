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
    head_activation: Literal["tanh", "gelu"]
    positions_after_padding: bool  # positions numbered from pad_token_id + 1 over the non-pad tokens (RoBERTa)
    wordpiece: bool  # its tokenizer is WordPiece (a vocab.txt, ids by line): what MediaPipe and pruning need
    default_pad_token_id: int


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
    )
}


class Cut(NamedTuple):
    axis: int  # 0: rows (a linear layer's outputs), 1: columns (its inputs)
    unit: Unit


@dataclass(frozen=True)
class Parameter:
    """One tensor: its canonical name (within its layer, for a layer's) and what each of its axes counts."""

    name: str
    axes: tuple[Dim, ...]

    @property
    def cut(self) -> Cut | None:
        """The axis width cuts and by which unit; None for a tensor every sub-network keeps whole."""
        return next((Cut(axis, dim) for axis, dim in enumerate(self.axes) if dim in UNITS), None)

    def shape(self, sizes: dict[Dim, int]) -> tuple[int, ...]:
        return tuple(sizes[dim] for dim in self.axes)


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
LAYER_PARAMETERS = {parameter.name: parameter for parameter in LAYER}


def embedding_layout(arch: Architecture) -> tuple[Parameter, ...]:
    """The tensors before the first layer: the embeddings, and their projection when they are narrower."""
    return EMBEDDINGS + (PROJECTION if arch.projects_embeddings else ())


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
    """What a sub-network of axis lengths `sizes` keeps of a full tensor: a prefix along its cut axis (a view)."""
    cut = parameter.cut
    return tensor if cut is None else tensor.narrow(cut.axis, 0, sizes[cut.unit])
