"""Loading a trained checkpoint directory (of any `edgebert.layout.FAMILIES`), or a slice, safely and strictly.

A checkpoint is a HuggingFace directory: `config.json` plus `model.safetensors` or
`pytorch_model.bin`. Hostile directories are expected: no file is read through a link leading
out of the directory (`edgebert.model_files`), config.json is validated against a schema
(`edgebert.configs`), every size it claims is checked against the weights before anything is
allocated (`edgebert.shapes`), weights are read without running code (`edgebert.weights`), and
parameter names become one canonical naming whatever the source (`edgebert.parameter_names`).
The same holds for slice directories (`read_slice`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebert.configs import (
    EDGE_MODEL_TYPES,
    SLICE_SCHEMAS,
    CheckpointConfig,
    ModernSliceConfig,
    SliceConfig,
    config_json,
    default_labels,
    validate_config,
    validated_config,
    with_labels,
)
from edgebert.errors import EdgebertError
from edgebert.layout import FAMILIES
from edgebert.manifests import SLICE_MANIFEST, SliceManifest, TrainManifest, read_manifest, training_manifest
from edgebert.model_files import CONFIG_FILE, WEIGHTS_FILES, model_file, tokenizer_files
from edgebert.parameter_names import canonical_state
from edgebert.reading import file_sha256
from edgebert.shapes import check_weights
from edgebert.subnet import Architecture
from edgebert.weights import read_weights, refuse_non_finite, safetensors_shapes

if TYPE_CHECKING:
    import torch


@dataclass
class Checkpoint:
    """A loaded source model: its architecture, the edgebert config of the full model, its weights."""

    path: Path
    model_type: str  # one of `edgebert.layout.FAMILIES`
    arch: Architecture
    model_config: dict[str, Any]  # EdgeBertConfig keyword arguments for the unsliced model
    weights_file: Path
    state: dict[str, torch.Tensor] = field(repr=False)  # canonical names (`edgebert.parameter_names`)
    is_demo: bool = False
    config: dict[str, Any] = field(default_factory=dict, repr=False)  # config.json as read (and validated)

    @cached_property
    def weights_sha256(self) -> str:
        return file_sha256(self.weights_file)

    @cached_property
    def training_manifest(self) -> TrainManifest | None:
        """The model's edgebert-train.json, None when `edgebert train` did not write it."""
        return training_manifest(self.path)

    @property
    def trained_as_dynabert(self) -> bool:
        """Whether `edgebert train` trained this model's sub-networks (its edgebert-train.json says so)."""
        return self.training_manifest is not None and self.training_manifest.trains_subnetworks

    @property
    def tokenizer_files(self) -> list[Path]:
        return tokenizer_files(self.path)


def checkpoint_config_file(path: Path) -> Path:
    """config.json of a checkpoint directory; one line saying what is missing otherwise."""
    if not path.exists():
        raise EdgebertError(f"model path {path} does not exist")
    if not path.is_dir():
        raise EdgebertError(f"model path {path} is not a directory (expected a HuggingFace model directory)")
    found = model_file(path, CONFIG_FILE)
    if found is None:
        raise EdgebertError(f"{path} has no {CONFIG_FILE}: not a HuggingFace model directory")
    if is_slice(path):  # its sub-networks are not the original's: not exact
        raise EdgebertError(
            f"{path} is a slice edgebert wrote, not a full checkpoint: slice the original model instead "
            f"(its path is source.path in {path / SLICE_MANIFEST})"
        )
    return found


def is_slice(path: Path) -> bool:
    """Whether the model directory `path` is a slice edgebert wrote (its manifest says so)."""
    return model_file(path, SLICE_MANIFEST) is not None


def read_config(path: Path) -> CheckpointConfig:
    """A checkpoint's config.json, validated: commands call it to fail fast, before the slow weight load."""
    config, _ = validate_config(checkpoint_config_file(Path(path)), CheckpointConfig)
    return config


def _model_type(config: CheckpointConfig, keys: list[str]) -> str:
    """Old DynaBERT configs (transformers 2.1) carry no model_type: fall back to names and prefixes."""
    if config.model_type is not None:
        return config.model_type
    names = " ".join(config.architectures or []).lower()
    prefixes = {key.split(".")[0] for key in keys}
    return "roberta" if "roberta" in names or "roberta" in prefixes else "bert"


def _weights_file(path: Path) -> Path:
    for name in WEIGHTS_FILES:
        if (found := model_file(path, name)) is not None:
            return found
    raise EdgebertError(f"{path} has no weights: expected one of {', '.join(WEIGHTS_FILES)}")


def position_ids(model_type: str, pad_token_id: int | None, arch: Architecture) -> tuple[int, int]:
    """(pad_token_id, position_offset): RoBERTa numbers positions from pad_token_id + 1, BERT from 0."""
    family = FAMILIES[model_type]
    pad = pad_token_id if pad_token_id is not None else family.default_pad_token_id
    if pad >= arch.vocab_size:
        raise EdgebertError(f"pad_token_id {pad} is not below vocab_size {arch.vocab_size}")
    offset = pad + 1 if family.positions_after_padding else 0
    if offset >= arch.max_positions:
        raise EdgebertError(
            f"pad_token_id {pad} leaves no positions: RoBERTa positions start at pad_token_id + 1, "
            f"and max_position_embeddings is {arch.max_positions}"
        )
    return pad, offset


def _stock_layout(
    config_file: Path, config: CheckpointConfig, raw_shapes: dict[str, tuple[int, ...]], weights_file: Path
) -> tuple[str, Architecture, dict[str, Any]]:
    """(model_type, architecture, `EdgeBertConfig` arguments) of a stock config.json and its weights'
    shapes (a checkpoint, or a slice written as the stock class), every size checked against the weights."""
    model_type = _model_type(config, list(raw_shapes))
    shapes = canonical_state(raw_shapes, model_type)
    classifier = shapes.get("classifier.weight")
    modern = _modernbert_settings(config_file, config) if FAMILIES[model_type].layers == "modernbert" else {}
    arch = Architecture(
        num_layers=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        head_size=config.hidden_size // config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        vocab_size=config.vocab_size,
        max_positions=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size,
        has_pooler="pooler.dense.weight" in shapes or "head.dense.weight" in shapes,
        num_labels=classifier[0] if classifier is not None and len(classifier) == 2 else None,
        embedding_size=config.embedding_size,
        layers=FAMILIES[model_type].layers,
        unbiased=frozenset(group for group, flag in MODERNBERT_BIASES.items() if modern and not modern[flag]),
    )
    check_weights(shapes, arch, weights_file)
    try:
        pad_token_id, position_offset = position_ids(model_type, config.pad_token_id, arch)
    except EdgebertError as exc:
        raise EdgebertError(f"{config_file}: {exc}") from exc
    model_config: dict[str, Any] = {
        "vocab_size": arch.vocab_size,
        "hidden_size": arch.hidden_size,
        "num_hidden_layers": arch.num_layers,
        "num_attention_heads": arch.num_heads,
        "attention_head_size": arch.head_size,
        "intermediate_size": arch.intermediate_size,
        "hidden_act": config.hidden_act,
        "max_position_embeddings": arch.max_positions,
        "type_vocab_size": arch.type_vocab_size,
        "layer_norm_eps": config.layer_norm_eps,
        "pad_token_id": pad_token_id,
        "position_offset": position_offset,
        "add_pooling_layer": arch.has_pooler,
        "source_model_type": model_type,
    }
    if arch.embedding_size is not None:
        model_config["embedding_size"] = arch.embedding_size
    model_config |= modern
    if arch.num_labels:
        if config.num_labels is not None and config.num_labels != arch.num_labels:
            raise EdgebertError(
                f"{config_file}: num_labels is {config.num_labels}, but the classifier in {weights_file.name} has "
                f"{arch.num_labels} outputs"
            )
        labels = config.label_names(arch.num_labels)
        model_config["id2label"] = labels
        model_config["label2id"] = {name: i for i, name in labels.items()}
    return model_type, arch, model_config


# ModernBERT's bias groups (`edgebert.layout.Parameter.group`) -> config.json's flag
MODERNBERT_BIASES = {"attention": "attention_bias", "ffn": "mlp_bias", "norm": "norm_bias", "head": "classifier_bias"}
# config.json keys transformers resolves into ModernBERT's per-layer types and rotary settings (older and newer forms)
MODERNBERT_KEYS = (
    "layer_types",
    "global_attn_every_n_layers",
    "rope_parameters",
    "rope_scaling",
    "global_rope_theta",
    "local_rope_theta",
    "local_attention",
    *MODERNBERT_BIASES.values(),
    "classifier_pooling",
    "classifier_activation",
)


def _modernbert_settings(config_file: Path, config: CheckpointConfig) -> dict[str, Any]:
    """`EdgeModernBertConfig` arguments of a ModernBERT config.json, as transformers' ModernBertConfig resolves
    it (layer types from `layer_types` or `global_attn_every_n_layers`, rotary bases from `rope_parameters` or the
    older `global_rope_theta`/`local_rope_theta`), checked for what edgebert's model computes."""
    from transformers import ModernBertConfig

    from edgebert.model import ACTIVATIONS

    extra = config.model_extra or {}
    try:
        resolved = ModernBertConfig(
            num_hidden_layers=config.num_hidden_layers, **{key: extra[key] for key in MODERNBERT_KEYS if key in extra}
        )
    except (TypeError, ValueError) as exc:
        raise EdgebertError(f"{config_file}: {str(exc).splitlines()[0]}") from exc
    types = list(resolved.layer_types)
    if len(types) != config.num_hidden_layers or not set(types) <= {"full_attention", "sliding_attention"}:
        raise EdgebertError(f"{config_file}: layer_types must name full_attention or sliding_attention per layer")
    rope = {kind: resolved.rope_parameters[kind] for kind in set(types)}
    if any(params.get("rope_type", "default") != "default" for params in rope.values()):
        raise EdgebertError(f"{config_file}: only the default rotary embedding is supported (rope_parameters)")
    if resolved.classifier_activation not in ACTIVATIONS or resolved.classifier_pooling not in ("cls", "mean"):
        raise EdgebertError(f"{config_file}: unsupported classifier_activation or classifier_pooling")
    return {
        "layer_types": types,
        "layer_sources": list(range(config.num_hidden_layers)),
        "rotary_bases": {kind: float(params["rope_theta"]) for kind, params in rope.items()},
        "local_attention": resolved.local_attention,
        **{flag: bool(getattr(resolved, flag)) for flag in MODERNBERT_BIASES.values()},
        "classifier_pooling": resolved.classifier_pooling,
        "classifier_activation": resolved.classifier_activation,
    }


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load and validate a checkpoint directory; every problem becomes one `EdgebertError` line.

    Sizes are checked against the weights before any tensor is read: from the safetensors
    header, or (pytorch_model.bin) after a load its own file size bounds.
    """
    path = Path(path)
    config_file = checkpoint_config_file(path)
    config, raw_config = validate_config(config_file, CheckpointConfig)
    tokenizer_files(path)  # a link out of the directory fails now, not after the slow load
    weights_file = _weights_file(path)
    loaded = None if weights_file.suffix == ".safetensors" else read_weights(weights_file)
    raw_shapes = safetensors_shapes(weights_file) if loaded is None else {k: tuple(v.shape) for k, v in loaded.items()}
    model_type, arch, model_config = _stock_layout(config_file, config, raw_shapes, weights_file)
    raw_state = read_weights(weights_file) if loaded is None else loaded
    refuse_non_finite(raw_state, weights_file)
    state = canonical_state(raw_state, model_type)
    return Checkpoint(path, model_type, arch, model_config, weights_file, state, is_demo=config.demo, config=raw_config)


def read_slice(path: Path) -> tuple[SliceConfig, dict[str, Any], SliceManifest, Path]:
    """A slice directory's config, manifest and weights file, each validated and checked against the others.

    Returns (config, config.json as read with a classifier's default labels filled in, manifest, weights
    file); nothing is built or loaded. A slice keeping every head and neuron is transformers' own class:
    its config comes back in edgebert's form, as a narrower slice's config.json says it.
    """
    path = Path(path)
    try:
        return _read_slice(path)
    except EdgebertError as exc:
        raise EdgebertError(f"{path} is not a readable edgebert slice: {exc}") from exc


def _slice_labels(config: SliceConfig, classifier: tuple[int, ...], weights_file: Path) -> int:
    """How many labels a slice's classifier has: as id2label or num_labels says (`check_weights` then holds the
    weights to it), else as many as the classifier has rows (a config naming none, as transformers 5 writes it)."""
    if config.id2label:
        return len(config.id2label)
    if config.num_labels is not None:
        return config.num_labels
    if len(classifier) != 2:
        raise EdgebertError(f"{weights_file.name}: classifier.weight has shape {classifier}, not (labels, hidden)")
    return classifier[0]


def _read_slice(path: Path) -> tuple[SliceConfig, dict[str, Any], SliceManifest, Path]:
    if not path.is_dir():
        raise EdgebertError("it is not a directory")
    files = {name: model_file(path, name) for name in (CONFIG_FILE, SLICE_MANIFEST, WEIGHTS_FILES[0])}
    missing = [name for name, found in files.items() if found is None]
    if missing:
        raise EdgebertError(f"it has no {' and no '.join(missing)}")
    config_file, manifest_file, weights_file = files.values()
    raw_config = config_json(config_file)
    stock = raw_config.get("model_type") in FAMILIES  # a slice keeping every head and neuron
    read = _stock_slice if stock else _edgebert_slice
    config, raw_config, manifest, arch = read(config_file, raw_config, manifest_file, weights_file)
    claims = {
        "hidden_size": (manifest.hidden_size, arch.hidden_size),
        "heads_kept": (manifest.heads_kept, arch.num_heads),
        "ffn_neurons_kept": (manifest.ffn_neurons_kept, arch.intermediate_size),
        "layers_kept": (len(manifest.layers_kept), arch.num_layers),
        "original.head_size": (manifest.original.head_size, arch.head_size),
    }
    if manifest.vocabulary is not None:
        claims["vocabulary.kept"] = (manifest.vocabulary.kept, arch.vocab_size)
    for key, (claimed, actual) in claims.items():
        if claimed != actual:
            raise EdgebertError(f"{manifest_file.name}: {key} says {claimed}, but {CONFIG_FILE} has {actual}")
    return config, raw_config, manifest, weights_file


def _task_fits(manifest: SliceManifest, classifier: bool, weights_file: Path) -> None:
    if classifier != (manifest.task == "sequence-classification"):
        raise EdgebertError(f"{weights_file.name} does not fit the manifest's task {manifest.task}")


def _stock_slice(
    config_file: Path, raw_config: dict[str, Any], manifest_file: Path, weights_file: Path
) -> tuple[SliceConfig, dict[str, Any], SliceManifest, Architecture]:
    """A slice written as transformers' own class, read as a checkpoint is: its config in edgebert's form."""
    stock = validated_config(config_file, raw_config, CheckpointConfig)
    manifest = read_manifest(manifest_file, SliceManifest)
    _, arch, model_config = _stock_layout(config_file, stock, safetensors_shapes(weights_file), weights_file)
    _task_fits(manifest, arch.num_labels is not None, weights_file)
    labels = model_config.pop("id2label", None)
    model_config.pop("label2id", None)
    model_type = EDGE_MODEL_TYPES[arch.layers]
    edge_config = {**model_config, "model_type": model_type}
    edge_config = with_labels(edge_config, labels) if labels is not None else edge_config
    return validated_config(config_file, edge_config, SLICE_SCHEMAS[model_type]), edge_config, manifest, arch


def _edgebert_slice(
    config_file: Path, raw_config: dict[str, Any], manifest_file: Path, weights_file: Path
) -> tuple[SliceConfig, dict[str, Any], SliceManifest, Architecture]:
    """A narrower slice, an `EdgeBertConfig` whose heads keep their size: its own sizes checked against its weights."""
    config = validated_config(config_file, raw_config, SLICE_SCHEMAS.get(raw_config.get("model_type"), SliceConfig))
    manifest = read_manifest(manifest_file, SliceManifest)
    shapes = safetensors_shapes(weights_file)
    if isinstance(config, ModernSliceConfig):  # under ModernBERT's own names
        shapes = canonical_state(shapes, config.source_model_type)
    else:
        shapes = {name.removeprefix("bert."): shape for name, shape in shapes.items()}
    classifier = "classifier.weight" in shapes
    _task_fits(manifest, classifier, weights_file)
    num_labels = _slice_labels(config, shapes["classifier.weight"], weights_file) if classifier else None
    arch = config.architecture(num_labels)
    check_weights(shapes, arch, weights_file)
    if classifier and not config.id2label:  # transformers 5 writes none for LABEL_0, LABEL_1: derived, as it does
        raw_config = with_labels(raw_config, default_labels(num_labels))
    try:
        pad_token_id, position_offset = position_ids(config.source_model_type, config.pad_token_id, arch)
    except EdgebertError as exc:
        raise EdgebertError(f"{config_file}: {exc}") from exc
    if (pad_token_id, position_offset) != (config.pad_token_id, config.position_offset):
        raise EdgebertError(
            f"{config_file}: position_offset {config.position_offset} does not follow from pad_token_id "
            f"{config.pad_token_id} for {config.source_model_type} (expected {position_offset})"
        )
    return config, raw_config, manifest, arch
