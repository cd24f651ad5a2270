"""config.json schemas (a checkpoint's, a slice's), typed and bounded before any size is used; the stock one written."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgebert.demo import DEMO_MARKER
from edgebert.errors import EdgebertError, require_all
from edgebert.layout import FAMILIES
from edgebert.manifests import Count, Index, ModelType, read_json, shown, validation_line
from edgebert.subnet import Architecture

READING_MODULES = ("torch", "safetensors", "transformers")  # what reading any model needs (the `slice` extra)

Probability = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
# config.json keys a family names its own way -> BERT's, the names edgebert reads: read so, written back so that the
# family's own class reads them (DistilBERT's are its class's fields; transformers maps only three of them)
OWN_KEYS = {
    "distilbert": {
        "dim": "hidden_size",
        "n_layers": "num_hidden_layers",
        "n_heads": "num_attention_heads",
        "hidden_dim": "intermediate_size",
        "activation": "hidden_act",
        "dropout": "hidden_dropout_prob",
        "attention_dropout": "attention_probs_dropout_prob",
        "seq_classif_dropout": "classifier_dropout",
    },
    "modernbert": {
        "hidden_activation": "hidden_act",
        "norm_eps": "layer_norm_eps",
        "mlp_dropout": "hidden_dropout_prob",  # on the FFN's neurons (`edgebert.modernbert`)
        "attention_dropout": "attention_probs_dropout_prob",  # on the attention probabilities and output
    },
}


class EncoderConfig(BaseModel):
    """The fields of a config.json edgebert uses (any of `edgebert.layout.FAMILIES`), typed and bounded; other keys
    pass through.

    Strict: `"48"` is not 48 and `true` is not 1. Sizes are bounded here only by being positive;
    `check_weights` then bounds each by the weights file before anything is allocated.
    """

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    vocab_size: Count
    hidden_size: Count
    num_hidden_layers: Count
    num_attention_heads: Count
    intermediate_size: Count
    max_position_embeddings: Count = 512
    type_vocab_size: Index = 2  # 0: no token types (`edgebert.layout.Family.token_types`)
    hidden_act: str = "gelu"
    layer_norm_eps: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 1e-12
    pad_token_id: Index | None = None
    id2label: dict[str, str] | None = None
    num_labels: Count | None = None  # written by hand or by old transformers; 5.x writes id2label or nothing
    embedding_size: Count | None = None  # ELECTRA's: its embeddings' width, projected to hidden_size when it differs

    @field_validator("hidden_act")
    @classmethod
    def _known_activation(cls, value: str) -> str:
        from edgebert.model import ACTIVATIONS

        if value not in ACTIVATIONS:
            raise ValueError(f"unsupported activation (supported: {', '.join(ACTIVATIONS)})")
        return value

    @field_validator("id2label")
    @classmethod
    def _label_ids(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        """Keys are the ids 0, 1, ..., n-1 written as JSON strings (ASCII digits: `"²".isdigit()` too)."""
        if value is not None and sorted(value, key=lambda k: (len(k), k)) != [str(i) for i in range(len(value))]:
            raise ValueError(f"keys must be the label ids 0..{len(value) - 1}")
        return value

    def label_names(self, num_labels: int) -> dict[int, str]:
        """id2label with integer ids when it names exactly the classifier's `num_labels` outputs, else the
        names transformers derives (`default_labels`): transformers 5 writes no id2label for LABEL_0, LABEL_1."""
        if not self.id2label or len(self.id2label) != num_labels:
            return default_labels(num_labels)
        return {int(key): name for key, name in self.id2label.items()}


def default_labels(num_labels: int) -> dict[int, str]:
    """transformers' names for classes config.json does not name: LABEL_0, LABEL_1, ..."""
    return {index: f"LABEL_{index}" for index in range(num_labels)}


def with_labels(raw_config: dict[str, Any], labels: dict[int, str]) -> dict[str, Any]:
    """A config dict naming `labels` in id2label and label2id, as transformers writes them (string ids)."""
    rest = {key: value for key, value in raw_config.items() if key != "num_labels"}  # implied by id2label
    return rest | {
        "id2label": {str(index): name for index, name in labels.items()},
        "label2id": {name: index for index, name in labels.items()},
    }


def stock_class(model_type: str, classifier: bool) -> str:
    """transformers' own class of a model type, as config.json's `architectures` names it."""
    return FAMILIES[model_type].class_stem + ("ForSequenceClassification" if classifier else "Model")


def stock_config(
    source_config: dict[str, Any], model_type: str, labels: dict[int, str] | None, **changes: Any
) -> dict[str, Any]:
    """config.json of a stock transformers model edgebert writes from a source's (a trained model, a full-width slice):
    the source's config.json as read, with its model_type, transformers' class (the classifier's, naming `labels`,
    when given) and `changes`, so stock transformers and every tool built on it load it without edgebert."""
    config = dict(source_config) | {
        "model_type": model_type,
        "architectures": [stock_class(model_type, labels is not None)],
        "dtype": "float32",  # what edgebert writes: a float16 source's dtype would have transformers load it as float16
        **changes,
    }
    config.pop("torch_dtype", None)  # the old name of dtype
    config = own_keys(config, model_type)
    return with_labels(config, labels) if labels is not None else config


def bert_keys(raw: dict[str, Any]) -> dict[str, Any]:
    """A config.json under BERT's keys, as edgebert reads every family's (`OWN_KEYS`); type_vocab_size 0 in a
    family without token types."""
    model_type = raw.get("model_type")
    family = FAMILIES.get(model_type) if isinstance(model_type, str) else None
    if family is None:
        return raw
    own = OWN_KEYS.get(family.model_type, {})
    config = {own.get(key, key): value for key, value in raw.items()}
    return config if family.token_types else config | {"type_vocab_size": 0}


def own_keys(config: dict[str, Any], model_type: str) -> dict[str, Any]:
    """The inverse of `bert_keys`: a config under the keys the family's own classes read."""
    own = {bert: key for key, bert in OWN_KEYS.get(model_type, {}).items()}
    renamed = {own.get(key, key): value for key, value in config.items()}
    if not FAMILIES[model_type].token_types:
        renamed.pop("type_vocab_size", None)
    return renamed


class CheckpointConfig(EncoderConfig):
    """config.json of a Hugging Face checkpoint of one of `FAMILIES` (old DynaBERT ones carry no model_type)."""

    model_type: str | None = None
    architectures: list[str] | None = None
    hidden_dropout_prob: Probability = 0.1
    attention_probs_dropout_prob: Probability = 0.1
    classifier_dropout: Probability | None = None
    demo: bool = Field(False, alias=DEMO_MARKER)

    @model_validator(mode="before")
    @classmethod
    def _supported(cls, data: Any) -> Any:
        """A GPT-2 config lacks BERT's fields: say what it is rather than what it lacks."""
        model_type = data.get("model_type") if isinstance(data, dict) else None
        if model_type is not None and model_type not in FAMILIES:
            raise ValueError(
                f"unsupported architecture {shown(model_type)}: edgebert slices model types {', '.join(FAMILIES)}"
            )
        return data

    @model_validator(mode="after")
    def _whole_heads(self) -> CheckpointConfig:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}"
            )
        return self


class SliceConfig(EncoderConfig):
    """config.json of a narrower slice, as `slice` writes it (an `EdgeBertConfig`); a full-width one is read into it."""

    model_type: Literal["edgebert"]
    attention_head_size: Count
    position_offset: Index
    add_pooling_layer: bool
    source_model_type: ModelType

    def architecture(self, num_labels: int | None) -> Architecture:
        return Architecture(
            num_layers=self.num_hidden_layers,
            num_heads=self.num_attention_heads,
            hidden_size=self.hidden_size,
            head_size=self.attention_head_size,
            intermediate_size=self.intermediate_size,
            vocab_size=self.vocab_size,
            max_positions=self.max_position_embeddings,
            type_vocab_size=self.type_vocab_size,
            has_pooler=self.add_pooling_layer or num_labels is not None,  # the classifier always has one
            num_labels=num_labels,
            embedding_size=self.embedding_size,
        )


class ModernSliceConfig(SliceConfig):
    """config.json of a narrower ModernBERT slice (an `EdgeModernBertConfig`): per kept layer its type and origin."""

    model_type: Literal["edgebert-modernbert"]  # type: ignore[assignment]
    layer_types: list[Literal["full_attention", "sliding_attention"]]
    layer_sources: list[Index]
    rotary_bases: dict[Literal["full_attention", "sliding_attention"], Annotated[float, Field(gt=0)]]
    local_attention: Count
    attention_bias: bool
    mlp_bias: bool
    norm_bias: bool
    classifier_bias: bool
    classifier_pooling: Literal["cls", "mean"]
    classifier_activation: str

    @model_validator(mode="after")
    def _per_layer(self) -> ModernSliceConfig:
        layers = self.num_hidden_layers
        if len(self.layer_types) != layers or len(self.layer_sources) != layers:
            raise ValueError(f"layer_types and layer_sources must name each of the {layers} layers")
        if not set(self.layer_types) <= set(self.rotary_bases):
            raise ValueError("rotary_bases must give every layer type's base")
        return self

    def architecture(self, num_labels: int | None) -> Architecture:
        flags = {"attention": self.attention_bias, "ffn": self.mlp_bias, "norm": self.norm_bias}
        unbiased = {group for group, flag in (flags | {"head": self.classifier_bias}).items() if not flag}
        return replace(super().architecture(num_labels), layers="modernbert", unbiased=frozenset(unbiased))


# the model_type of edgebert's own class for narrower slices, by the family's layers (`edgebert.layout.Family`)
EDGE_MODEL_TYPES = {"bert": "edgebert", "modernbert": "edgebert-modernbert"}
# a narrower slice's config.json schema by its model_type (a full-width one is its family's: read as a checkpoint's)
SLICE_SCHEMAS: dict[str, type[SliceConfig]] = {"edgebert": SliceConfig, "edgebert-modernbert": ModernSliceConfig}
Config = TypeVar("Config", bound=EncoderConfig)


def require_reading_modules() -> None:
    """What reading a model needs (checking hidden_act imports edgebert.model): a missing one is an install hint."""
    require_all(READING_MODULES, "reading a checkpoint")


def validate_config(config_file: Path, schema: type[Config]) -> tuple[Config, dict[str, Any]]:
    """config.json read and validated against `schema`: (the typed fields, the file's whole dict)."""
    raw = config_json(config_file)
    return validated_config(config_file, raw, schema), raw


def config_json(config_file: Path) -> dict[str, Any]:
    """config.json's object, before it is validated, under BERT's keys (`bert_keys`)."""
    require_reading_modules()
    raw = read_json(config_file)
    if not isinstance(raw, dict):
        raise EdgebertError(f"{config_file} must hold a JSON object, not {type(raw).__name__}")
    return bert_keys(raw)


def validated_config(config_file: Path, raw: dict[str, Any], schema: type[Config]) -> Config:
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        line = validation_line(exc)
        model_type = raw.get("model_type")
        own = {bert: key for key, bert in OWN_KEYS.get(model_type if isinstance(model_type, str) else "", {}).items()}
        key = line.split(":", 1)[0]  # said as the file says it (DistilBERT's n_layers, not num_hidden_layers)
        raise EdgebertError(f"{config_file}: {own.get(key, key)}{line[len(key) :]}") from exc
