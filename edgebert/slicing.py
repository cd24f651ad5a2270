"""Cutting a DynaBERT sub-network out of a checkpoint into a dense, smaller model."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebert import __version__
from edgebert.atomic import naming, owned_directory, refuse_existing, staged_outputs
from edgebert.checkpoint import Checkpoint, checkpoint_config_file, load_checkpoint, read_slice
from edgebert.configs import require_reading_modules, stock_config
from edgebert.demo import DEMO_NAME, UNTRAINED_NOTE, demo_checkpoint_dir
from edgebert.errors import EdgebertError
from edgebert.layout import ENCODER_PREFIX, FAMILIES, axis_sizes, kept, layer_layout, layer_name
from edgebert.manifests import SLICE_MANIFEST as MANIFEST_FILE
from edgebert.manifests import SliceManifest, not_dynabert_text, read_json
from edgebert.model_files import TOKENIZER_FILES, copy_model_files, copy_tokenizer_files
from edgebert.notes import Note, warning
from edgebert.parameter_names import canonical_state, stock_state
from edgebert.st_modules import ST_MODULES_FILE, sentence_transformers_files
from edgebert.subnet import Architecture, Subnetwork, check_fractions, costs, subnet_name, subnetwork
from edgebert.tokenizer import tokenizer_class
from edgebert.vocab import (
    KeptVocabulary,
    choose_vocabulary,
    prune_state,
    vocabulary_sources,
    write_tokenizer_files,
)
from edgebert.weights import refuse_non_finite, write_safetensors

if TYPE_CHECKING:
    import torch

    from edgebert.model import EdgeBertConfig

# The files of a model directory edgebert writes (a slice, a rewired checkpoint), besides its manifest.
MODEL_DIR_FILES = ("config.json", "model.safetensors", *TOKENIZER_FILES)
# Folder names that say nothing about the model: a default output is named after a folder above.
GENERIC_FOLDER = re.compile(
    r"models?|checkpoints?|weights|snapshots?|final|best|latest|outputs?|(?=.*\d)[0-9a-f]{7,64}",  # a commit hash
    re.IGNORECASE,
)


def slice_files(path: Path) -> list[str]:
    """What `slice_model` writes into `path` besides its manifest: the model files, and for a
    sentence-transformers slice the files and module folders its modules.json names (read as a
    source is, links refused)."""
    try:
        return [*MODEL_DIR_FILES, *sentence_transformers_files(path)]
    except EdgebertError as exc:
        raise EdgebertError(f"has a {ST_MODULES_FILE} edgebert would not write ({exc})") from exc


# `--force` replaces a directory holding only what `slice_model` writes.
replaceable_slice = owned_directory(MANIFEST_FILE, slice_files, "slice")


def slice_state(state: dict[str, torch.Tensor], arch: Architecture, sub: Subnetwork) -> dict[str, torch.Tensor]:
    """The DynaBERT rule on weights: keep the first heads and FFN neurons of the kept layers.

    Each tensor `edgebert.layout` marks as cut keeps a prefix along its cut axis (Q, K and V rows and
    the attention output's columns per head, the FFN's rows and columns per neuron); output biases,
    LayerNorms, embeddings, pooler and classifier keep the full hidden size.
    """
    sizes = axis_sizes(arch, sub)
    sliced = {name: t for name, t in state.items() if not name.startswith(ENCODER_PREFIX)}
    for new_index, old_index in enumerate(sub.layers):
        prefix = layer_name(old_index, "")
        layout = {parameter.name: parameter for parameter in layer_layout(arch, old_index)}
        for name, tensor in state.items():
            if not name.startswith(prefix):
                continue
            local = name[len(prefix) :]
            parameter = layout.get(local)
            sliced[layer_name(new_index, local)] = tensor if parameter is None else kept(tensor, parameter, sizes)
    return {name: t.contiguous().clone() for name, t in sliced.items()}


def sliced_config(checkpoint: Checkpoint, sub: Subnetwork) -> dict[str, Any]:
    config = {
        **checkpoint.model_config,
        "num_hidden_layers": len(sub.layers),
        "num_attention_heads": sub.heads,
        "intermediate_size": sub.ffn_neurons,
    }
    for key in ("layer_types", "layer_sources"):  # ModernBERT's: a kept layer keeps its attention and its origin
        if key in config:
            config[key] = [config[key][index] for index in sub.layers]
    return config


def edge_names(model_type: str) -> str:
    """Whose parameter names edgebert's own class for `model_type` uses (`edgebert.parameter_names`)."""
    return model_type if FAMILIES[model_type].layers == "modernbert" else "bert"


def edge_classes(model_type: str) -> tuple[type, type, type]:
    """edgebert's own (config, encoder, classifier) classes for slices of `model_type`."""
    if FAMILIES[model_type].layers == "modernbert":
        from edgebert.modernbert import (
            EdgeModernBertConfig,
            EdgeModernBertForSequenceClassification,
            EdgeModernBertModel,
        )

        return EdgeModernBertConfig, EdgeModernBertModel, EdgeModernBertForSequenceClassification
    from edgebert.model import EdgeBertConfig, EdgeBertForSequenceClassification, EdgeBertModel

    return EdgeBertConfig, EdgeBertModel, EdgeBertForSequenceClassification


def build_model(edge_config: EdgeBertConfig, state: dict[str, torch.Tensor], classifier: bool) -> torch.nn.Module:
    """An eval-mode edgebert model holding exactly `state` (canonical names)."""
    _, encoder, classifier_class = edge_classes(edge_config.source_model_type)
    model = classifier_class(edge_config) if classifier else encoder(edge_config)
    model.load_state_dict(stock_state(state, edge_names(edge_config.source_model_type), classifier), strict=True)
    return model.eval()


@dataclass
class SlicedModel:
    """A sub-network held in memory: the model and the manifest that describes it."""

    model: torch.nn.Module
    manifest: dict[str, Any]


def make_manifest(
    checkpoint: Checkpoint, sub: Subnetwork, trained: bool | None = None, vocabulary: KeptVocabulary | None = None
) -> dict[str, Any]:
    """The slice's `SliceManifest`, as the plain dict callers pass around (`size_bytes` is added once written);
    `trained`: whether the sub-network was trained (None: as the checkpoint's edgebert-train.json says);
    `vocabulary`: the rows kept of its word embeddings (None: all)."""
    trained = checkpoint.trained_as_dynabert if trained is None else trained
    arch = checkpoint.arch if vocabulary is None else vocabulary.architecture(checkpoint.arch)
    manifest = SliceManifest(
        edgebert_version=__version__,
        source={
            "path": str(checkpoint.path.resolve()),
            "weights_file": checkpoint.weights_file.name,
            "sha256": checkpoint.weights_sha256,
            "model_type": checkpoint.model_type,
        },
        task="sequence-classification" if checkpoint.arch.num_labels else "feature-extraction",
        original={
            "layers": checkpoint.arch.num_layers,
            "heads": checkpoint.arch.num_heads,
            "head_size": checkpoint.arch.head_size,
            "ffn_neurons": checkpoint.arch.intermediate_size,
        },
        hidden_size=checkpoint.arch.hidden_size,
        **costs(arch, sub),
        trained_as_dynabert=trained,
        untrained=UNTRAINED_NOTE if checkpoint.is_demo else None,
        not_dynabert=(
            not_dynabert_note(checkpoint)
            if not checkpoint.is_demo and (sub.width, sub.depth) != (1.0, 1.0) and not trained
            else None
        ),
        vocabulary=vocabulary.record if vocabulary is not None else None,
    )
    return manifest.as_dict()


def not_dynabert_note(checkpoint: Checkpoint) -> Note:
    """The warning for sub-networks of a model `edgebert train` did not train (slice, export, pick)."""
    return warning(not_dynabert_text(checkpoint.path, checkpoint.training_manifest))


def slice_checkpoint(
    checkpoint: Checkpoint,
    width: float,
    depth: float,
    trained: bool | None = None,
    vocabulary: KeptVocabulary | None = None,
) -> SlicedModel:
    """Slice in memory, e.g. for export without writing a directory first (`trained`, `vocabulary`: as
    `make_manifest`)."""
    sub = subnetwork(checkpoint.arch, width, depth)
    state = slice_state(checkpoint.state, checkpoint.arch, sub)
    settings = sliced_config(checkpoint, sub)
    if vocabulary is not None:
        state = prune_state(state, vocabulary)
        settings |= vocabulary.config_changes(settings)
    config_class = edge_classes(checkpoint.model_type)[0]
    model = build_model(config_class(**settings), state, classifier=bool(checkpoint.arch.num_labels))
    return SlicedModel(model, make_manifest(checkpoint, sub, trained, vocabulary))


def load_slice(path: Path) -> SlicedModel:
    """A directory written by `slice_model`, back in memory with its manifest (validated before anything is built)."""
    from safetensors.torch import load_file

    config, raw_config, manifest, weights_file = read_slice(path)
    try:
        state = load_file(str(weights_file))
    except Exception as exc:  # safetensors raises its own untyped errors for damaged data
        raise EdgebertError(f"{weights_file} is corrupt or truncated: {str(exc).splitlines()[0]}") from exc
    refuse_non_finite(state, weights_file)
    config = edge_classes(config.source_model_type)[0].from_dict(raw_config)
    state = canonical_state(state, config.source_model_type)
    try:
        model = build_model(config, state, classifier=manifest.task == "sequence-classification")
    except RuntimeError as exc:  # load_state_dict: tensors the config has no place for
        raise EdgebertError(f"{path}: weights do not match config.json: {str(exc).splitlines()[0]}") from exc
    return SlicedModel(model, manifest.as_dict())


def default_output_dir(model: str | Path | None, width: float, depth: float) -> Path:
    """`<model>-w<W>-d<D>` in the current directory: known from the path alone, so checked before the slow load."""
    return Path(subnet_name(model_name(Path(model)) if model is not None else DEMO_NAME, width, depth))


def model_name(path: Path) -> str:
    """The name a user knows the model at `path` by, from the path alone (it runs before the slow load).

    A Hugging Face cache snapshot (`models--ORG--NAME/snapshots/REV`) is NAME; a folder whose
    name says nothing (`model`, `checkpoint`, a commit hash, see GENERIC_FOLDER) takes the name of
    the first folder above it that does; any other folder is its own name.
    """
    path = Path(os.path.abspath(path))  # `.` and `..` resolved, links not: a link's own name is the user's choice
    for folder in (path, *path.parents):
        if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
            return folder.parent.parent.name.split("--")[-1]
        if folder.name and not GENERIC_FOLDER.fullmatch(folder.name):
            return folder.name
    return path.name or "model"


def open_checkpoint(model: str | Path | None) -> Checkpoint:
    """The checkpoint at `model`, or the built-in demo model when `model` is None."""
    if model is not None:
        checkpoint_config_file(Path(model))  # a wrong path is refused before torch and transformers load (seconds)
    require_reading_modules()
    if model is None:
        model = demo_checkpoint_dir()
    return load_checkpoint(model)


def slice_model(
    model: str | Path | None,
    width: float,
    depth: float,
    out: str | Path | None = None,
    force: bool = False,
    vocab_from: Sequence[str | Path] = (),
    vocab_min_count: int = 1,
) -> tuple[Path, dict[str, Any]]:
    """Write the (width, depth) sub-network of `model` as a dense model directory; return it and its manifest.

    `vocab_from`: files of texts; the slice then keeps only the word embeddings their tokens need (those seen at
    least `vocab_min_count` times, and the special ones), its tokenizer remapped (`edgebert.vocab`)."""
    check_fractions(width, depth)  # fail before the slow load
    texts = vocabulary_sources(vocab_from, vocab_min_count)  # an empty or unreadable file fails before the load
    sources = [Path(model)] if model is not None else []
    out_dir = Path(out) if out is not None else default_output_dir(model, width, depth)
    refuse_existing(out_dir, force=force, replaceable=replaceable_slice, protect=sources)
    kept_files = sentence_transformers_files(Path(model)) if model is not None else []
    checkpoint = open_checkpoint(model)
    vocabulary = choose_vocabulary(checkpoint, texts, vocab_min_count) if texts else None
    sliced = slice_checkpoint(checkpoint, width, depth, vocabulary=vocabulary)
    with staged_outputs(out_dir, force=force, replaceable=replaceable_slice, protect=[checkpoint.path]) as (staging,):
        manifest = write_slice(checkpoint, sliced, staging, kept_files, vocabulary)
    return out_dir, manifest


def write_slice(
    checkpoint: Checkpoint,
    sliced: SlicedModel,
    directory: Path,
    kept_files: list[str],
    vocabulary: KeptVocabulary | None = None,
) -> dict[str, Any]:
    """`sliced` (cut from `checkpoint`, keeping `vocabulary` if given) as a new slice directory: the model, the
    source's tokenizer (remapped to the kept vocabulary) and `kept_files` (sentence-transformers' modules: still
    valid), and the manifest, which is returned."""
    stock = stock_class_config(checkpoint, sliced.model, vocabulary)
    save_model(sliced.model, directory, stock)
    if vocabulary is None:
        copy_tokenizer_files(checkpoint.path, directory)
    else:
        write_tokenizer_files(checkpoint.path, directory, vocabulary)
    if stock is None:
        name_tokenizer_class(directory, checkpoint.model_type)
    copy_model_files(checkpoint.path, kept_files, directory)
    sliced.manifest["size_bytes"] = (directory / "model.safetensors").stat().st_size
    manifest = SliceManifest.model_validate(sliced.manifest).as_dict()  # what `read_slice` will accept
    with naming(directory / MANIFEST_FILE):
        (directory / MANIFEST_FILE).write_text(_json(manifest))
    return manifest


def name_tokenizer_class(directory: Path, model_type: str) -> None:
    """Write the tokenizer's class into a slice's tokenizer_config.json when the source left it to its model_type.

    A narrower slice's config.json says model_type "edgebert", which AutoTokenizer (and sentence-transformers
    through it) cannot map to a tokenizer, while the source's ("bert", "electra", ...) could.
    """
    if not any((directory / name).is_file() for name in ("vocab.txt", "vocab.json", "tokenizer.json")):
        return
    config_file = directory / "tokenizer_config.json"
    settings = read_json(config_file) if config_file.is_file() else {}
    if isinstance(settings, dict) and not settings.get("tokenizer_class"):
        with naming(config_file):
            config_file.write_text(_json(settings | {"tokenizer_class": tokenizer_class(model_type)}))


def stock_class_config(
    checkpoint: Checkpoint, model: torch.nn.Module, vocabulary: KeptVocabulary | None = None
) -> dict[str, Any] | None:
    """config.json of a slice as transformers' own class (its family's) when it keeps every head and FFN neuron
    (width 1, any depth), so stock transformers and the tools built on it (Optimum, sentence-transformers, TEI)
    load it without edgebert; None for a narrower slice, whose heads keep a size transformers cannot express."""
    config, arch = model.config, checkpoint.arch
    if (config.num_attention_heads, config.intermediate_size) != (arch.num_heads, arch.intermediate_size):
        return None
    labels = dict(config.id2label) if arch.num_labels else None
    changes = {"num_hidden_layers": config.num_hidden_layers}
    if arch.layers == "modernbert":  # the kept layers' types; the stock class has no norm before layer 0's attention
        assert config.layer_sources[0] == 0, "the depth rule keeps layer 0 first"
        changes["layer_types"] = list(config.layer_types)
    changes |= vocabulary.config_changes(checkpoint.config) if vocabulary is not None else {}
    return stock_config(checkpoint.config, checkpoint.model_type, labels, **changes)


def save_model(model: torch.nn.Module, directory: Path, stock: dict[str, Any] | None = None) -> None:
    """config.json + model.safetensors, as `save_pretrained` writes them, without its progress bars: edgebert's
    class, or with `stock` (`stock_class_config`) transformers' own, under its parameter names."""
    directory.mkdir()
    state = model.state_dict()
    with naming(directory / "config.json"):
        if stock is None:
            model.config.architectures = [type(model).__name__]
            model.config.save_pretrained(directory)
        else:
            (directory / "config.json").write_text(_json(stock))
    if stock is not None:  # a base model's names are unprefixed, a classifier's under its family's prefix
        state = canonical_state(state, edge_names(stock["model_type"]))
        state = stock_state(state, stock["model_type"], classifier="classifier.weight" in state)
    write_safetensors(state, directory / "model.safetensors")


def _json(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"
