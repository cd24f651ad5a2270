"""Reading a trained (Dyna)BERT / (Dyna)RoBERTa checkpoint directory, safely and strictly.

A checkpoint is a HuggingFace directory: `config.json` plus `model.safetensors` or
`pytorch_model.bin`. Weights are read with safetensors or `torch.load(weights_only=True)`;
nothing else in the directory (e.g. `training_args.bin`) is ever unpickled. Parameter names
are normalised to those of `edgebert.model` without the `bert.` prefix, so the slicer sees
one naming whatever the source: BERT or RoBERTa, with or without a classifier, old
`LayerNorm.gamma/beta` names or new ones.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebert.errors import EdgebertError, require
from edgebert.subnet import Architecture

if TYPE_CHECKING:
    import torch

SUPPORTED_MODEL_TYPES = ("bert", "roberta")
DEMO_MARKER = "edgebert_demo"  # config.json key that marks the built-in, untrained demo model
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = (
    "vocab.txt",
    "merges.txt",
    "vocab.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)
# Keys a classification or pre-training checkpoint may carry that a slice never uses.
IGNORED_KEYS = re.compile(r"(position_ids|^cls\.|^lm_head\.|^qa_outputs\.)")


@dataclass
class Checkpoint:
    """A loaded source model: its architecture, the edgebert config of the full model, its weights."""

    path: Path
    model_type: str  # "bert" or "roberta"
    arch: Architecture
    model_config: dict[str, Any]  # EdgeBertConfig keyword arguments for the unsliced model
    weights_file: Path
    state: dict[str, torch.Tensor] = field(repr=False)  # canonical names, see module docstring
    is_demo: bool = False

    @cached_property
    def weights_sha256(self) -> str:
        return file_sha256(self.weights_file)

    @cached_property
    def trained_as_dynabert(self) -> bool:
        """Whether `edgebert train` trained this model's sub-networks (its edgebert-train.json says so)."""
        from edgebert.manifests import training_manifest

        manifest = training_manifest(self.path)
        return manifest is not None and manifest.trains_subnetworks

    @property
    def tokenizer_files(self) -> list[Path]:
        return [self.path / name for name in TOKENIZER_FILES if (self.path / name).is_file()]


def file_sha256(path: Path) -> str:
    """Identifies weights (in manifests) and data files (in the eval cache) by content, not by path."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise EdgebertError(f"model path {path} does not exist")
    if not path.is_dir():
        raise EdgebertError(f"model path {path} is not a directory (expected a HuggingFace model directory)")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise EdgebertError(f"{path} has no config.json: not a HuggingFace model directory")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EdgebertError(f"{config_file} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise EdgebertError(f"{config_file} must hold a JSON object, not {type(config).__name__}")
    return config


def _model_type(config: dict[str, Any], keys: list[str], config_file: Path) -> str:
    """Old DynaBERT configs (transformers 2.1) carry no model_type: fall back to names and prefixes."""
    model_type = config.get("model_type")
    if model_type is None:
        names = " ".join(config.get("architectures") or []).lower()
        prefixes = {key.split(".")[0] for key in keys}
        model_type = "roberta" if "roberta" in names or "roberta" in prefixes else "bert"
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise EdgebertError(
            f"unsupported architecture {model_type!r} in {config_file}: edgebert slices BERT and RoBERTa models"
        )
    return model_type


def _config_int(config: dict[str, Any], name: str, config_file: Path, default: int | None = None) -> int:
    value = config.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise EdgebertError(f"{config_file}: {name} must be a positive integer, got {value!r}")
    return value


def _weights_file(path: Path) -> Path:
    for name in WEIGHTS_FILES:
        if (path / name).is_file():
            return path / name
    raise EdgebertError(f"{path} has no weights: expected one of {', '.join(WEIGHTS_FILES)}")


def _read_weights(weights_file: Path) -> dict[str, torch.Tensor]:
    torch = require("torch", "reading model weights")
    if weights_file.suffix == ".safetensors":
        safetensors_torch = require("safetensors.torch", "reading model weights")
        try:
            return safetensors_torch.load_file(str(weights_file))
        except Exception as exc:  # safetensors raises its own untyped errors for corrupt headers
            raise EdgebertError(f"{weights_file} is corrupt or truncated: {exc}") from exc
    try:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        blocked = _BLOCKED_GLOBAL.search(str(exc))
        if blocked:
            raise EdgebertError(
                f"refusing to load {weights_file}: it holds more than plain tensors and could run code "
                f"(it would import {blocked.group(1)})"
            ) from exc
        raise EdgebertError(f"{weights_file} is corrupt or not a PyTorch state dict: {_torch_reason(exc)}") from exc
    except Exception as exc:  # the weights-only unpickler raises KeyError, EOFError, ... on damaged files
        raise EdgebertError(f"{weights_file} is corrupt or truncated: {_torch_reason(exc)}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EdgebertError(f"{weights_file} is not a state dict of tensors")
    return state


# torch's weights-only unpickler names the global it refused: "GLOBAL posix.system" / "Unsupported global: GLOBAL x.y".
_BLOCKED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
# The generic advice torch wraps its reason in (including "re-run with weights_only=False", which must not be relayed).
_TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation", "WeightsUnpickler")


def _torch_reason(exc: BaseException) -> str:
    """The one informative line of a torch.load error, without torch's boilerplate."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(_TORCH_BOILERPLATE)] or lines
    reason = lines[0].split(". ")[0] if lines else ""  # first sentence: torch appends paragraphs of advice
    if isinstance(exc, RuntimeError | pickle.UnpicklingError) and reason:
        return reason
    return f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__  # e.g. a bare KeyError: 101


def _canonical_state(raw: dict[str, torch.Tensor], model_type: str) -> dict[str, torch.Tensor]:
    """Rename checkpoint keys to edgebert's naming and drop keys a slice never uses."""
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
    """The inverse of `_canonical_state`: the names stock Bert/RobertaForSequenceClassification load."""
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


def copy_tokenizer_files(checkpoint: Checkpoint, directory: Path) -> None:
    """Copy the tokenizer files into `directory`, refusing links that lead out of the model directory."""
    root = checkpoint.path.resolve()
    for path in checkpoint.tokenizer_files:
        if not path.resolve().is_relative_to(root):
            raise EdgebertError(
                f"{path} is a link to {path.resolve()}, outside the model directory: refusing to copy it"
            )
        shutil.copyfile(path, directory / path.name)


def expected_shapes(arch: Architecture) -> dict[str, tuple[int, ...]]:
    """Every parameter a full (unsliced) model of `arch` has, with its shape."""
    d, inner, f = arch.hidden_size, arch.num_heads * arch.head_size, arch.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (arch.vocab_size, d),
        "embeddings.position_embeddings.weight": (arch.max_positions, d),
        "embeddings.token_type_embeddings.weight": (arch.type_vocab_size, d),
        "embeddings.LayerNorm.weight": (d,),
        "embeddings.LayerNorm.bias": (d,),
    }
    layer_shapes = {
        "attention.self.query": ((inner, d), (inner,)),
        "attention.self.key": ((inner, d), (inner,)),
        "attention.self.value": ((inner, d), (inner,)),
        "attention.output.dense": ((d, inner), (d,)),
        "attention.output.LayerNorm": ((d,), (d,)),
        "intermediate.dense": ((f, d), (f,)),
        "output.dense": ((d, f), (d,)),
        "output.LayerNorm": ((d,), (d,)),
    }
    for i in range(arch.num_layers):
        for name, (weight, bias) in layer_shapes.items():
            shapes[f"encoder.layer.{i}.{name}.weight"] = weight
            shapes[f"encoder.layer.{i}.{name}.bias"] = bias
    if arch.has_pooler:
        shapes["pooler.dense.weight"], shapes["pooler.dense.bias"] = (d, d), (d,)
    if arch.num_labels:
        shapes["classifier.weight"], shapes["classifier.bias"] = (arch.num_labels, d), (arch.num_labels,)
    return shapes


def _check_state(state: dict[str, torch.Tensor], arch: Architecture, weights_file: Path) -> None:
    shapes = expected_shapes(arch)
    missing = [name for name in shapes if name not in state]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise EdgebertError(f"{weights_file} lacks weights the config requires: {', '.join(missing[:3])}{more}")
    for name, shape in shapes.items():
        if tuple(state[name].shape) != shape:
            raise EdgebertError(
                f"{weights_file}: {name} has shape {tuple(state[name].shape)}, but config.json implies {shape}"
            )


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load and validate a BERT/RoBERTa directory; every problem becomes one `EdgebertError` line."""
    path = Path(path)
    config = read_config(path)
    config_file = path / "config.json"
    weights_file = _weights_file(path)
    raw = _read_weights(weights_file)
    model_type = _model_type(config, list(raw), config_file)
    state = _canonical_state(raw, model_type)

    hidden = _config_int(config, "hidden_size", config_file)
    heads = _config_int(config, "num_attention_heads", config_file)
    if hidden % heads:
        raise EdgebertError(f"{config_file}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    hidden_act = config.get("hidden_act", "gelu")
    from edgebert.model import ACTIVATIONS

    if hidden_act not in ACTIVATIONS:
        raise EdgebertError(
            f"{config_file}: unsupported hidden_act {hidden_act!r} (supported: {', '.join(ACTIVATIONS)})"
        )
    classifier = state.get("classifier.weight")
    arch = Architecture(
        num_layers=_config_int(config, "num_hidden_layers", config_file),
        num_heads=heads,
        hidden_size=hidden,
        head_size=hidden // heads,
        intermediate_size=_config_int(config, "intermediate_size", config_file),
        vocab_size=_config_int(config, "vocab_size", config_file),
        max_positions=_config_int(config, "max_position_embeddings", config_file, 512),
        type_vocab_size=_config_int(config, "type_vocab_size", config_file, 2),
        has_pooler="pooler.dense.weight" in state,
        num_labels=int(classifier.shape[0]) if classifier is not None and classifier.dim() == 2 else None,
    )
    _check_state(state, arch, weights_file)

    pad_token_id = config.get("pad_token_id", 1 if model_type == "roberta" else 0)
    model_config: dict[str, Any] = {
        "vocab_size": arch.vocab_size,
        "hidden_size": arch.hidden_size,
        "num_hidden_layers": arch.num_layers,
        "num_attention_heads": arch.num_heads,
        "attention_head_size": arch.head_size,
        "intermediate_size": arch.intermediate_size,
        "hidden_act": hidden_act,
        "max_position_embeddings": arch.max_positions,
        "type_vocab_size": arch.type_vocab_size,
        "layer_norm_eps": float(config.get("layer_norm_eps", 1e-12)),
        "pad_token_id": pad_token_id,
        "position_offset": pad_token_id + 1 if model_type == "roberta" else 0,
        "add_pooling_layer": arch.has_pooler,
        "source_model_type": model_type,
    }
    if arch.num_labels:
        labels = config.get("id2label") or {}
        if len(labels) == arch.num_labels:
            model_config["id2label"] = {int(k): v for k, v in labels.items()}
            model_config["label2id"] = {v: int(k) for k, v in labels.items()}
        else:
            model_config["num_labels"] = arch.num_labels
    return Checkpoint(
        path, model_type, arch, model_config, weights_file, state, is_demo=config.get(DEMO_MARKER) is True
    )
