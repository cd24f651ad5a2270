"""Reading a trained (Dyna)BERT / (Dyna)RoBERTa checkpoint directory, safely and strictly.

A checkpoint is a HuggingFace directory: `config.json` plus `model.safetensors` or
`pytorch_model.bin`. Weights are read with safetensors or `torch.load(weights_only=True)`;
nothing else in the directory (e.g. `training_args.bin`) is ever unpickled. Parameter names
are normalised to those of `edgebert.model` without the `bert.` prefix, so the slicer sees
one naming whatever the source: BERT or RoBERTa, with or without a classifier, old
`LayerNorm.gamma/beta` names or new ones.

Hostile directories are expected: config.json is validated against a schema, every size it
claims is checked against the weights before anything is allocated, and no file is read
through a link leading out of the directory. The same holds for slice directories (`read_slice`).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, field_validator, model_validator

from edgebert.demo import DEMO_MARKER
from edgebert.errors import EdgebertError, require, require_all
from edgebert.manifests import (
    SLICE_MANIFEST,
    Count,
    Index,
    SliceManifest,
    TrainManifest,
    read_json,
    read_manifest,
    shown,
    validation_line,
)
from edgebert.reading import open_regular
from edgebert.subnet import Architecture

if TYPE_CHECKING:
    import torch

SUPPORTED_MODEL_TYPES = ("bert", "roberta")
READING_MODULES = ("torch", "safetensors", "transformers")  # what reading any model needs (the `slice` extra)
CONFIG_FILE = "config.json"
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
LAYER_KEY = re.compile(r"^encoder\.layer\.(\d+)\.")  # canonical names of the encoder layers' weights
# torch.save stores a checkpoint's zip members uncompressed: contents declaring more bytes than the archive
# holds are a zip bomb (or at least nothing torch.save wrote), refused before torch.load expands them.
MAX_ZIP_EXPANSION = 1.0
READ_BLOCK = 1 << 20  # hashing and copying read files in blocks of this size

Value = TypeVar("Value")
Probability = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


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
    config: dict[str, Any] = field(default_factory=dict, repr=False)  # config.json as read (and validated)

    @cached_property
    def weights_sha256(self) -> str:
        return file_sha256(self.weights_file)

    @cached_property
    def training_manifest(self) -> TrainManifest | None:
        """The model's edgebert-train.json, None when `edgebert train` did not write it."""
        from edgebert.manifests import training_manifest  # its reader needs `model_file`, defined here

        return training_manifest(self.path)

    @property
    def trained_as_dynabert(self) -> bool:
        """Whether `edgebert train` trained this model's sub-networks (its edgebert-train.json says so)."""
        return self.training_manifest is not None and self.training_manifest.trains_subnetworks

    @property
    def tokenizer_files(self) -> list[Path]:
        return tokenizer_files(self.path)


def file_sha256(path: Path) -> str:
    """Identifies weights (in manifests) and data files (in the eval cache) by content, not by path."""
    digest = hashlib.sha256()
    with open_regular(path) as f:
        for block in iter(lambda: f.read(READ_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


# --- files of a model directory -----------------------------------------------------------------


def model_file(directory: Path, name: str) -> Path | None:
    """`directory/name` if it is a regular file, None if absent; a link out of `directory` or a special file is refused.

    A model directory is what users copy, share and publish, and what edgebert copies into its
    outputs: reading a link to `~/.ssh/id_rsa` would put the key there. Every file edgebert reads
    from a model or slice directory comes through here. Links inside the directory are fine, and so
    are the Hugging Face hub cache's links from `snapshots/REV/` into the same model's `blobs/`.
    A named pipe (or a directory, a device) under a file's name is refused, not taken as absent,
    which would silently leave the file out of an output.
    """
    path = step = Path(directory)
    for part in Path(name).parts:  # a module's file (`1_Pooling/config.json`): its folder may be the link
        path = step = step / part
        if step.is_symlink():
            target = step.resolve()
            if not _inside_model(Path(directory), target):
                raise EdgebertError(f"{step} is a link to {target}, outside the model directory: refusing to read it")
    if path.exists() and not path.is_file():
        raise EdgebertError(f"{path} is not a regular file: refusing to read it")
    return path if path.is_file() else None


def _inside_model(directory: Path, target: Path) -> bool:
    root = directory.resolve()
    if target.is_relative_to(root):
        return True
    snapshots = root.parent
    return (
        snapshots.name == "snapshots"
        and snapshots.parent.name.startswith("models--")
        and target.is_relative_to(snapshots.parent / "blobs")
    )


def tokenizer_files(directory: Path) -> list[Path]:
    """The tokenizer files present in a model directory (links out of it refused)."""
    return [path for name in TOKENIZER_FILES if (path := model_file(directory, name)) is not None]


def copy_tokenizer_files(checkpoint: Checkpoint, directory: Path) -> None:
    """Copy the tokenizer files into `directory` (`tokenizer_files` has refused links out of the model)."""
    copy_model_files(checkpoint.path, [path.name for path in checkpoint.tokenizer_files], directory)


def copy_model_files(source: Path, names: list[str], directory: Path) -> None:
    """Copy files of a model directory, by their paths relative to it, into `directory` (through `model_file`)."""
    for name in names:
        path = model_file(source, name)
        if path is None:
            raise EdgebertError(f"{source / name} disappeared while edgebert was reading the model")
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        with open_regular(path) as source_file, (directory / name).open("wb") as copy:
            shutil.copyfileobj(source_file, copy, READ_BLOCK)


# --- sentence-transformers models ------------------------------------------------------------------

ST_MODULES_FILE = "modules.json"
# The top of a sentence-transformers model besides the encoder: its module list, the Transformer
# module's settings (max_seq_length, do_lower_case) and the model's (versions, prompts, similarity).
ST_TOP_FILES = (ST_MODULES_FILE, "sentence_bert_config.json", "config_sentence_transformers.json")
# What the kept modules save in their folders (Normalize and Dropout: nothing, or a config).
ST_MODULE_FILES = ("config.json", "model.safetensors", "pytorch_model.bin")
# Modules after the encoder whose files hold no size but the hidden size, which slicing keeps: they
# stay valid as they are. Others (WeightedLayerPooling counts layers) would not, so they are refused.
ST_KEPT_MODULES = ("Pooling", "Dense", "Normalize", "LayerNorm", "Dropout")
MAX_ST_MODULES = 32
MAX_ST_MODULE_BYTES = 1 << 30  # a Dense layer of a large model is tens of MB


class SentenceTransformersModule(BaseModel):
    """One entry of modules.json: the module's class and the folder its files are in ("" for the top)."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    idx: Index
    name: str
    path: str
    type: str

    @field_validator("path")
    @classmethod
    def _folder_of_the_model(cls, value: str) -> str:
        """sentence-transformers writes one folder name: anything else may lead out of the model."""
        if value in (".", "..") or any(c in value for c in "/\\:\0"):
            raise ValueError(f"{shown(value)} is not a folder of the model directory")
        return value

    @property
    def kind(self) -> str:
        """The class name: versions 2-5 write `sentence_transformers.models.Pooling`, 6 the class's own module."""
        return self.type.rsplit(".", 1)[-1]


class SentenceTransformersModules(RootModel[list[SentenceTransformersModule]]):
    """modules.json of a model edgebert can slice: the encoder at the top, then modules slicing keeps valid."""

    root: Annotated[list[SentenceTransformersModule], Field(min_length=1, max_length=MAX_ST_MODULES)]

    @model_validator(mode="after")
    def _sliceable(self) -> SentenceTransformersModules:
        encoder, *after = self.root
        if encoder.kind != "Transformer" or encoder.path:
            raise ValueError(
                f"the first module is {shown(encoder.type)} at {shown(encoder.path)}, not the Transformer at the "
                'top of the directory (path ""), the model edgebert slices'
            )
        for module in after:
            if not module.type.startswith("sentence_transformers.") or module.kind not in ST_KEPT_MODULES:
                raise ValueError(
                    f"module {shown(module.type)} may not fit a slice (edgebert keeps {', '.join(ST_KEPT_MODULES)}); "
                    f"slice a copy without {ST_MODULES_FILE} to get the encoder alone"
                )
            if not module.path:
                raise ValueError(f"module {shown(module.type)} has no folder of its own")
        paths = [module.path for module in after]
        if len(set(paths)) != len(paths):
            raise ValueError("two modules share a folder")
        return self


def sentence_transformers_files(directory: Path) -> list[str]:
    """The files making `directory` a sentence-transformers model, relative to it; [] for a plain model.

    Read from the path before the slow load: modules.json validated, each module's files found
    through `model_file` (links out of the model refused), their total size bounded. A module
    without a folder (Normalize saves none) has nothing to copy.
    """
    modules_file = model_file(directory, ST_MODULES_FILE)
    if modules_file is None:
        return []
    try:
        modules = SentenceTransformersModules.model_validate(read_json(modules_file))
    except ValidationError as exc:
        raise EdgebertError(f"{modules_file}: {validation_line(exc)}") from exc
    for module in modules.root[1:]:
        if (directory / module.path).exists() and not (directory / module.path).is_dir():
            raise EdgebertError(f"{modules_file}: {shown(module.type)}'s path {shown(module.path)} is not a folder")
    names = [name for name in ST_TOP_FILES if model_file(directory, name) is not None]
    names += [
        f"{module.path}/{name}"
        for module in modules.root[1:]
        for name in ST_MODULE_FILES
        if model_file(directory, f"{module.path}/{name}") is not None
    ]
    size = sum((directory / name).stat().st_size for name in names)
    if size > MAX_ST_MODULE_BYTES:
        raise EdgebertError(f"{directory}: the sentence-transformers modules hold {size} bytes: too large to copy")
    return names


# --- config.json ----------------------------------------------------------------------------------


class EncoderConfig(BaseModel):
    """The fields of a BERT/RoBERTa config.json edgebert uses, typed and bounded; other keys pass through.

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
    type_vocab_size: Count = 2
    hidden_act: str = "gelu"
    layer_norm_eps: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 1e-12
    pad_token_id: Index | None = None
    id2label: dict[str, str] | None = None
    num_labels: Count | None = None  # written by hand or by old transformers; 5.x writes id2label or nothing

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


def _with_labels(raw_config: dict[str, Any], labels: dict[int, str]) -> dict[str, Any]:
    """A config dict naming `labels` in id2label and label2id, as transformers writes them (string ids)."""
    rest = {key: value for key, value in raw_config.items() if key != "num_labels"}  # implied by id2label
    return rest | {
        "id2label": {str(index): name for index, name in labels.items()},
        "label2id": {name: index for index, name in labels.items()},
    }


# transformers' own classes, by (model_type, whether there is a classifier)
STOCK_CLASSES = {
    ("bert", False): "BertModel",
    ("bert", True): "BertForSequenceClassification",
    ("roberta", False): "RobertaModel",
    ("roberta", True): "RobertaForSequenceClassification",
}


def stock_config(source: Checkpoint, labels: dict[int, str] | None, **changes: Any) -> dict[str, Any]:
    """config.json of a stock transformers model edgebert writes from `source` (a trained model, a full-width slice):
    the source's as read, with its model_type, transformers' class (the classifier's, naming `labels`, when given)
    and `changes`, so stock transformers and every tool built on it load it without edgebert."""
    config = dict(source.config) | {
        "model_type": source.model_type,
        "architectures": [STOCK_CLASSES[source.model_type, labels is not None]],
        "dtype": "float32",  # what edgebert writes: a float16 source's dtype would have transformers load it as float16
        **changes,
    }
    config.pop("torch_dtype", None)  # the old name of dtype
    return _with_labels(config, labels) if labels is not None else config


class CheckpointConfig(EncoderConfig):
    """config.json of a Hugging Face BERT/RoBERTa checkpoint (old DynaBERT ones carry no model_type)."""

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
        if model_type is not None and model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"unsupported architecture {shown(model_type)}: edgebert slices BERT and RoBERTa models")
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
    source_model_type: Literal["bert", "roberta"]

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
        )


Config = TypeVar("Config", bound=EncoderConfig)


def require_reading_modules() -> None:
    """What reading a model needs (checking hidden_act imports edgebert.model): a missing one is an install hint."""
    require_all(READING_MODULES, "reading a checkpoint")


def validate_config(config_file: Path, schema: type[Config]) -> tuple[Config, dict[str, Any]]:
    """config.json read and validated against `schema`: (the typed fields, the file's whole dict)."""
    raw = config_json(config_file)
    return validated_config(config_file, raw, schema), raw


def config_json(config_file: Path) -> dict[str, Any]:
    """config.json's object, before it is validated."""
    require_reading_modules()
    raw = read_json(config_file)
    if not isinstance(raw, dict):
        raise EdgebertError(f"{config_file} must hold a JSON object, not {type(raw).__name__}")
    return raw


def validated_config(config_file: Path, raw: dict[str, Any], schema: type[Config]) -> Config:
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        raise EdgebertError(f"{config_file}: {validation_line(exc)}") from exc


def checkpoint_config_file(path: Path) -> Path:
    """config.json of a checkpoint directory; one line saying what is missing otherwise."""
    if not path.exists():
        raise EdgebertError(f"model path {path} does not exist")
    if not path.is_dir():
        raise EdgebertError(f"model path {path} is not a directory (expected a HuggingFace model directory)")
    found = model_file(path, CONFIG_FILE)
    if found is None:
        raise EdgebertError(f"{path} has no {CONFIG_FILE}: not a HuggingFace model directory")
    if model_file(path, SLICE_MANIFEST) is not None:  # its sub-networks are not the original's: not exact
        raise EdgebertError(
            f"{path} is a slice edgebert wrote, not a full checkpoint: slice the original model instead "
            f"(its path is source.path in {path / SLICE_MANIFEST})"
        )
    return found


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


def give_normal_mode(path: Path) -> None:
    """0666 for a file, less the umask (0644 usually): writers such as safetensors (0600) and the TFLite
    quantizer pick their own modes, and a model handed to others or a service must be readable like any file."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def write_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    """model.safetensors as `save_pretrained` writes it, with a normal file mode.

    safetensors reports a failed write (a full disk) as its own SafetensorError, which names no
    file: it becomes the OSError it wraps, naming `path`, so the CLI says it as it says any other.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(state, str(path), metadata={"format": "pt"})
    except SafetensorError as exc:
        code = _OS_ERROR_CODE.search(str(exc))
        if code is None:
            raise EdgebertError(f"{path}: safetensors could not write it: {str(exc).splitlines()[0]}") from exc
        number = int(code.group(1) or code.group(2))
        raise OSError(number, os.strerror(number), str(path)) from exc
    give_normal_mode(path)


# How safetensors' Rust writer quotes the OS error: "I/O error: File too large (os error 27)", or "code: 28" (older).
_OS_ERROR_CODE = re.compile(r"\(os error (\d+)\)|\bcode: (\d+)")


# --- weights --------------------------------------------------------------------------------------


def _weights_file(path: Path) -> Path:
    for name in WEIGHTS_FILES:
        if (found := model_file(path, name)) is not None:
            return found
    raise EdgebertError(f"{path} has no weights: expected one of {', '.join(WEIGHTS_FILES)}")


def safetensors_shapes(weights_file: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from the safetensors header alone: nothing is loaded."""
    safetensors = require("safetensors", "reading model weights")
    try:
        with safetensors.safe_open(str(weights_file), framework="pt") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118 (no __iter__)
    except Exception as exc:  # safetensors raises its own untyped errors for corrupt headers
        raise EdgebertError(f"{weights_file} is corrupt or truncated: {str(exc).splitlines()[0]}") from exc


def _refuse_zip_bomb(weights_file: Path) -> None:
    """A zip-format pytorch_model.bin may not declare more contents than its own size (see MAX_ZIP_EXPANSION)."""
    try:
        with zipfile.ZipFile(weights_file) as archive:
            declared = sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a zip (the legacy format) or a damaged one: torch.load reports it
    size = weights_file.stat().st_size
    if declared > MAX_ZIP_EXPANSION * size:
        raise EdgebertError(
            f"refusing to load {weights_file}: its members expand to {declared} bytes from a {size}-byte file "
            "(torch.save stores tensors uncompressed)"
        )


def _read_weights(weights_file: Path) -> dict[str, torch.Tensor]:
    torch = require("torch", "reading model weights")
    if weights_file.suffix == ".safetensors":
        safetensors_torch = require("safetensors.torch", "reading model weights")
        try:
            return safetensors_torch.load_file(str(weights_file))
        except Exception as exc:  # safetensors raises its own untyped errors for corrupt headers
            raise EdgebertError(f"{weights_file} is corrupt or truncated: {exc}") from exc
    _refuse_zip_bomb(weights_file)
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


def refuse_non_finite(state: dict[str, torch.Tensor], weights_file: Path) -> None:
    """A NaN or inf in any weight is refused, by the tensor's name in the file: every sub-network, export
    and training step of it would compute NaN (one pass over the weights, as cheap as reading them)."""
    import torch

    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise EdgebertError(f"{weights_file}: weight {name} holds NaN or infinite values: refusing damaged weights")


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


def check_weights(shapes: dict[str, tuple[int, ...]], arch: Architecture, weights_file: Path) -> None:
    """Every size config.json claims, against the weights' shapes (canonical names), before anything is allocated.

    The layer count comes first: until it matches the layers the weights hold, not even the list
    of expected names is built (a config claiming 10^9 layers would fill memory with it).
    """
    layers = {match.group(1) for name in shapes if (match := LAYER_KEY.match(name))}
    if len(layers) != arch.num_layers:
        raise EdgebertError(
            f"{weights_file} holds {len(layers)} encoder layers, but config.json says num_hidden_layers "
            f"{arch.num_layers}"
        )
    expected = expected_shapes(arch)
    missing = [name for name in expected if name not in shapes]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise EdgebertError(f"{weights_file} lacks weights the config requires: {', '.join(missing[:3])}{more}")
    for name, shape in expected.items():
        if tuple(shapes[name]) != shape:
            raise EdgebertError(
                f"{weights_file}: {name} has shape {tuple(shapes[name])}, but config.json implies {shape}"
            )


def position_ids(model_type: str, pad_token_id: int | None, arch: Architecture) -> tuple[int, int]:
    """(pad_token_id, position_offset): RoBERTa numbers positions from pad_token_id + 1, BERT from 0."""
    pad = pad_token_id if pad_token_id is not None else (1 if model_type == "roberta" else 0)
    if pad >= arch.vocab_size:
        raise EdgebertError(f"pad_token_id {pad} is not below vocab_size {arch.vocab_size}")
    offset = pad + 1 if model_type == "roberta" else 0
    if offset >= arch.max_positions:
        raise EdgebertError(
            f"pad_token_id {pad} leaves no positions: RoBERTa positions start at pad_token_id + 1, "
            f"and max_position_embeddings is {arch.max_positions}"
        )
    return pad, offset


def _stock_layout(
    config_file: Path, config: CheckpointConfig, raw_shapes: dict[str, tuple[int, ...]], weights_file: Path
) -> tuple[str, Architecture, dict[str, Any]]:
    """(model_type, architecture, `EdgeBertConfig` arguments) of a stock BERT/RoBERTa config.json and its weights'
    shapes (a checkpoint, or a slice written as the stock class), every size checked against the weights."""
    model_type = _model_type(config, list(raw_shapes))
    shapes = canonical_state(raw_shapes, model_type)
    classifier = shapes.get("classifier.weight")
    arch = Architecture(
        num_layers=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        head_size=config.hidden_size // config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        vocab_size=config.vocab_size,
        max_positions=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size,
        has_pooler="pooler.dense.weight" in shapes,
        num_labels=classifier[0] if classifier is not None and len(classifier) == 2 else None,
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


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load and validate a BERT/RoBERTa directory; every problem becomes one `EdgebertError` line.

    Sizes are checked against the weights before any tensor is read: from the safetensors
    header, or (pytorch_model.bin) after a load its own file size bounds.
    """
    path = Path(path)
    config_file = checkpoint_config_file(path)
    config, raw_config = validate_config(config_file, CheckpointConfig)
    tokenizer_files(path)  # a link out of the directory fails now, not after the slow load
    weights_file = _weights_file(path)
    loaded = None if weights_file.suffix == ".safetensors" else _read_weights(weights_file)
    raw_shapes = safetensors_shapes(weights_file) if loaded is None else {k: tuple(v.shape) for k, v in loaded.items()}
    model_type, arch, model_config = _stock_layout(config_file, config, raw_shapes, weights_file)
    raw_state = _read_weights(weights_file) if loaded is None else loaded
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
    stock = raw_config.get("model_type") in SUPPORTED_MODEL_TYPES  # a slice keeping every head and neuron
    read = _stock_slice if stock else _edgebert_slice
    config, raw_config, manifest, arch = read(config_file, raw_config, manifest_file, weights_file)
    claims = {
        "hidden_size": (manifest.hidden_size, arch.hidden_size),
        "heads_kept": (manifest.heads_kept, arch.num_heads),
        "ffn_neurons_kept": (manifest.ffn_neurons_kept, arch.intermediate_size),
        "layers_kept": (len(manifest.layers_kept), arch.num_layers),
        "original.head_size": (manifest.original.head_size, arch.head_size),
    }
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
    """A slice written as transformers' BERT/RoBERTa class, read as a checkpoint is: its config in edgebert's form."""
    from edgebert.model import MODEL_TYPE

    stock = validated_config(config_file, raw_config, CheckpointConfig)
    manifest = read_manifest(manifest_file, SliceManifest)
    _, arch, model_config = _stock_layout(config_file, stock, safetensors_shapes(weights_file), weights_file)
    _task_fits(manifest, arch.num_labels is not None, weights_file)
    labels = model_config.pop("id2label", None)
    model_config.pop("label2id", None)
    edge_config = {**model_config, "model_type": MODEL_TYPE}
    edge_config = _with_labels(edge_config, labels) if labels is not None else edge_config
    return validated_config(config_file, edge_config, SliceConfig), edge_config, manifest, arch


def _edgebert_slice(
    config_file: Path, raw_config: dict[str, Any], manifest_file: Path, weights_file: Path
) -> tuple[SliceConfig, dict[str, Any], SliceManifest, Architecture]:
    """A narrower slice, an `EdgeBertConfig` whose heads keep their size: its own sizes checked against its weights."""
    config = validated_config(config_file, raw_config, SliceConfig)
    manifest = read_manifest(manifest_file, SliceManifest)
    shapes = {name.removeprefix("bert."): shape for name, shape in safetensors_shapes(weights_file).items()}
    classifier = "classifier.weight" in shapes
    _task_fits(manifest, classifier, weights_file)
    num_labels = _slice_labels(config, shapes["classifier.weight"], weights_file) if classifier else None
    arch = config.architecture(num_labels)
    check_weights(shapes, arch, weights_file)
    if classifier and not config.id2label:  # transformers 5 writes none for LABEL_0, LABEL_1: derived, as it does
        raw_config = _with_labels(raw_config, default_labels(num_labels))
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
