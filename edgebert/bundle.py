"""Export bundles: a folder per sub-network and format, one file per precision, in the layout its clients load.

The ONNX layout is the one transformers.js and Optimum read (transformers.js picks
`onnx/model_quantized.onnx` for `dtype: 'q8'`, `onnx/model_fp16.onnx` for 'fp16', `onnx/model.onnx`
for 'fp32'; Optimum's `ORTModelFor*.from_pretrained(bundle, subfolder="onnx", file_name=...)`):

    config.json            the source's model_type, architectures, id2label: where clients read the task and labels
    tokenizer.json         the fast tokenizer (built with `tokenizers` from vocab.txt when the source has none)
    tokenizer_config.json  tokenizer_class and the special tokens, pad_token included (batched calls pad)
    edgebert-bundle.json   what config.json cannot say: format, the slice's real config (head size), its manifest
    onnx/<precision file>  each with edgebert's sidecar `<file>.json`

A TFLite bundle has the same top files and keeps its `.tflite` files at the top, beside
`labels.txt` (a classifier's labels, one a line, by index) and the source's `vocab.txt`: the flat
folder of Hugging Face's LiteRT repositories (the .tflite files beside tokenizer.json) and of
Model Maker's export (model.tflite, labels.txt, vocab.txt). Its files share the ONNX names with
`.tflite` (`model.tflite`, `model_quantized.tflite`, `model_fp16.tflite`), so one precision has one
name in both bundles; each also carries MediaPipe's metadata (`edgebert.export.tflite_metadata`).
An ExecuTorch bundle is laid out as a TFLite one: `model.pte` and `model_quantized.pte` at the top,
beside labels.txt and vocab.txt (the flat folder optimum-executorch writes its `model.pte` into).

A bundle is written whole by one rename; a later precision is added into it by the rename of
its own artifact and sidecar, once the bundle is shown to hold the same sub-network (in TFLite,
at the same fixed sequence length).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from edgebert import __version__
from edgebert.atomic import STAGING_NAME, refuse_existing, staged_outputs
from edgebert.configs import own_keys, stock_class
from edgebert.errors import EdgebertError
from edgebert.manifests import read_manifest
from edgebert.model_files import model_file
from edgebert.precisions import PRECISIONS
from edgebert.reading import read_vocab
from edgebert.runtimes import FORMATS, RUNTIME_FOR_FORMAT, SUFFIXES, runtime_for_format
from edgebert.sidecar import replaceable_export, sidecar_path
from edgebert.tokenizer import write_tokenizer

if TYPE_CHECKING:
    from edgebert.export.base import ExportSource

BUNDLE_FILE = "edgebert-bundle.json"
ONNX_DIR = "onnx"
MODEL_STEMS = {"fp32": "model", "int8": "model_quantized", "fp16": "model_fp16"}  # transformers.js names
ARTIFACT_DIRS = {"onnx": ONNX_DIR, "tflite": "", "executorch": ""}  # where a format's files sit ("": at the top)
BUNDLE_FILES = {
    fmt: {precision: f"{stem}{runtime_for_format(fmt).suffix}" for precision, stem in MODEL_STEMS.items()}
    for fmt in RUNTIME_FOR_FORMAT
}
ONNX_FILES = BUNDLE_FILES["onnx"]
VOCAB_FILE, LABELS_FILE = "vocab.txt", "labels.txt"  # Model Maker's names, also those of MediaPipe's embedded files
TOP_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", BUNDLE_FILE)
FORMAT_FILES = {"onnx": (), "tflite": (LABELS_FILE, VOCAB_FILE), "executorch": (LABELS_FILE, VOCAB_FILE)}
CONFIG_KEYS = (  # the standard keys a bundle's config.json carries from the slice (embedding_size: ELECTRA's)
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "embedding_size",
    "layer_types",  # ModernBERT's: each kept layer's attention (global or local),
    "local_attention",  # the local window,
    "classifier_pooling",  # and the head's pooling
)
IDENTITY = ("width", "depth")  # with the source's weights digest and the rows kept (`sub_network`)


class BundleManifest(BaseModel):
    """`edgebert-bundle.json`: the slice's own config (its real shape) and manifest, beside the clients' config.json.

    Version 2 adds the bundle's format and fixed sequence length (TFLite; None: dynamic axes), which
    decide what may join it; version 1 bundles are ONNX.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1, 2] = 2
    edgebert_version: str
    format: Literal[FORMATS] = "onnx"  # type: ignore[valid-type]  # the runtime registry's formats
    seq_len: int | None = None
    config: dict[str, Any]
    manifest: dict[str, Any]


def is_bundle_output(format: str, out: Path | None) -> bool:
    """An export goes into a bundle unless `--out` names a single file (`x.onnx`, `x.tflite`)."""
    suffix = runtime_for_format(format).suffix
    if out is not None and out.suffix in SUFFIXES and out.suffix != suffix:  # not a folder named `x.onnx`
        raise EdgebertError(f"--out {out} names no {format} file: give a {suffix} file or a bundle folder")
    return out is None or out.suffix != suffix


def tokenizer_dir_of(artifact: Path) -> Path:
    """Where an artifact's tokenizer files are: its bundle's top folder for `onnx/*.onnx`, else beside it."""
    folder = artifact.parent
    if folder.name == ONNX_DIR and (folder.parent / BUNDLE_FILE).is_file():
        return folder.parent
    return folder


def default_bundle_name(stem: str, format: str) -> str:
    """`<model>-w0.5-d0.5-onnx`, `...-tflite`: never the slice directory's own name."""
    return f"{stem}-{format}"


def bundle_artifact(bundle: Path, precision: str, format: str) -> Path:
    return bundle / ARTIFACT_DIRS[format] / BUNDLE_FILES[format][precision]


def read_bundle(bundle: Path) -> BundleManifest:
    return read_manifest(bundle / BUNDLE_FILE, BundleManifest)


def bundle_precisions(bundle: Path) -> dict[str, Path]:
    """The artifacts a bundle holds, by precision."""
    format = read_bundle(bundle).format
    return {p: path for p in PRECISIONS if (path := bundle_artifact(bundle, p, format)).is_file()}


def artifact_in(path: Path, precision: str | None) -> Path:
    """What `bench PATH [--precision P]` runs: the file, or the bundle folder's file of that precision.

    A bundle holding one precision needs no `precision`; with several, the one line lists them.
    """
    if not path.is_dir():
        return path
    if not (path / BUNDLE_FILE).is_file():
        kinds = " or ".join(SUFFIXES)
        raise EdgebertError(f"{path}: a folder without {BUNDLE_FILE}, not a bundle; give an {kinds} file or a bundle")
    held = bundle_precisions(path)
    if precision is None:
        if len(held) == 1:
            return next(iter(held.values()))
        choose = f"holds {', '.join(held)}: choose one with --precision" if held else "holds no model file"
        raise EdgebertError(f"{path} {choose}")
    if precision not in PRECISIONS:
        raise EdgebertError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision not in held:
        name = bundle_artifact(path, precision, read_bundle(path).format).relative_to(path)
        raise EdgebertError(f"{path} has no {precision} file ({name}); it holds {', '.join(held) or 'none'}")
    return held[precision]


def replaceable_bundle(path: Path) -> str | None:
    """What `--force` may replace: a directory holding only what edgebert writes into a bundle of its format.

    Staging directories beside the artifacts are another export adding its precision (or a killed
    one's leftover, which the next writer there removes): not foreign.
    """
    if not path.is_dir() or not (path / BUNDLE_FILE).is_file():
        return f"has no edgebert sidecar ({BUNDLE_FILE}), so it is not a bundle edgebert wrote"
    try:
        format = read_bundle(path).format
    except EdgebertError as exc:
        return f"has an unreadable {BUNDLE_FILE} ({exc})"
    artifacts = {name for file in BUNDLE_FILES[format].values() for name in (file, sidecar_path(Path(file)).name)}
    folder = ARTIFACT_DIRS[format]
    top = (*TOP_FILES, *FORMAT_FILES[format], *([] if folder else artifacts))
    foreign = [p.name for p in path.iterdir() if not (owned(p, top) or (not folder and staging(p)))]
    if folder in foreign and (path / folder).is_dir() and not (path / folder).is_symlink():
        foreign.remove(folder)
        foreign += [p.name for p in (path / folder).iterdir() if not (owned(p, artifacts) or staging(p))]
    if foreign:
        return f"holds {len(foreign)} file(s) edgebert does not write ({', '.join(sorted(foreign)[:3])})"
    return None


def owned(path: Path, names: Iterable[str]) -> bool:
    return path.name in names and path.is_file() and not path.is_symlink()


def staging(path: Path) -> bool:
    return STAGING_NAME.search(path.name) is not None


def check_bundle_target(bundle: Path, format: str, precision: str, force: bool, protect: Iterable[Path]) -> None:
    """Refuse early (before the slow work) what the final renames would refuse."""
    if not os.path.lexists(bundle):
        refuse_existing(bundle, protect=protect)  # a bundle may not land inside the source model
        return
    # Even to add a file: not the source model, not a link, nothing edgebert did not write (force=True: no
    # "already exists" for the bundle itself; its files are checked next).
    refuse_existing(bundle, force=True, replaceable=replaceable_bundle, protect=protect)
    if read_bundle(bundle).format == format:
        artifact = bundle_artifact(bundle, precision, format)
        refuse_existing(artifact, sidecar_path(artifact), force=force, replaceable=replaceable_export, protect=protect)


def held_instead(bundle: Path, source: ExportSource, format: str, seq_len: int | None) -> str | None:
    """What the bundle holds instead of this export's kind (None: another precision of it may join)."""
    held = read_bundle(bundle)
    if held.format != format:
        return f"a {held.format} export"
    if sub_network(held.manifest) != sub_network(json.loads(json.dumps(source.manifest))):
        return "another sub-network"
    if held.seq_len != seq_len:
        return f"files of sequence length {held.seq_len}, not {seq_len}"
    return None


def sub_network(manifest: dict[str, Any]) -> tuple[Any, ...]:
    """Which sub-network a slice's manifest describes: the source's weights, its (width, depth) and the word-embedding
    rows kept (`slice --vocab-from`: a pruned slice's ids are not the unpruned one's; None when all are kept)."""
    vocabulary = manifest.get("vocabulary") or {}
    source = manifest.get("source") or {}
    return (source.get("sha256"), *(manifest.get(key) for key in IDENTITY), vocabulary.get("kept_ids"))


@contextmanager
def staged_bundle(
    bundle: Path,
    format: str,
    precision: str,
    source: ExportSource,
    tokenizer_dir: Path,
    seq_len: int | None,
    force: bool,
    protect: list[Path],
) -> Iterator[tuple[Path, Path]]:
    """Yield (artifact, sidecar) scratch paths; on success they land in `bundle`, a new bundle whole.

    Into an existing bundle of the same format, sub-network and fixed length only the artifact and
    its sidecar are renamed (`--force` needed to replace an existing precision). Any other bundle
    is replaced whole with `--force`, refused without.
    """
    check_bundle_target(bundle, format, precision, force, protect)
    other = held_instead(bundle, source, format, seq_len) if os.path.lexists(bundle) else None
    if os.path.lexists(bundle) and other is None:
        artifact = bundle_artifact(bundle, precision, format)
        options = {"force": force, "replaceable": replaceable_export, "protect": protect}
        with staged_outputs(artifact, sidecar_path(artifact), **options) as (staged, staged_sidecar):
            yield staged, staged_sidecar
        return
    if other is not None and not force:
        raise EdgebertError(f"{bundle} holds {other}: pass --force to replace the bundle, or another --out")
    with staged_outputs(bundle, force=force, replaceable=replaceable_bundle, protect=protect) as (staging_dir,):
        staging_dir.mkdir()
        write_bundle_files(staging_dir, source, tokenizer_dir, format, seq_len)
        artifact = bundle_artifact(staging_dir, precision, format)
        artifact.parent.mkdir(exist_ok=True)
        yield artifact, sidecar_path(artifact)


def write_bundle_files(
    directory: Path, source: ExportSource, tokenizer_dir: Path, format: str, seq_len: int | None
) -> None:
    """config.json, the tokenizer pair, edgebert-bundle.json and the format's own top files of `source`."""
    config = source.model.config
    model_type = config.source_model_type
    write_json(directory / "config.json", client_config(source))
    write_tokenizer(tokenizer_dir, directory, model_type, source.max_seq_len)
    if FORMAT_FILES[format]:  # the mobile formats: apps load labels and vocabulary beside the model
        write_labels_and_vocab(directory, source, tokenizer_dir)
    record = BundleManifest(
        edgebert_version=__version__, format=format, seq_len=seq_len, config=config.to_dict(), manifest=source.manifest
    )
    (directory / BUNDLE_FILE).write_text(record.model_dump_json(indent=2) + "\n", encoding="utf-8")


def class_labels(source: ExportSource) -> list[str] | None:
    """A classifier's labels by index (None for an encoder): labels.txt, and MediaPipe's embedded copy."""
    if source.manifest["task"] != "sequence-classification":
        return None
    config = source.model.config
    return [str(config.id2label[index]) for index in range(config.num_labels)]


def labels_text(labels: list[str]) -> bytes:
    """One label a line, by index: what Model Maker's labels.txt and MediaPipe's TENSOR_AXIS_LABELS file hold."""
    return "".join(f"{label}\n" for label in labels).encode()


def write_labels_and_vocab(directory: Path, source: ExportSource, tokenizer_dir: Path) -> None:
    """labels.txt for a classifier, vocab.txt when the source has one: what LiteRT apps load beside model.tflite."""
    labels = class_labels(source)
    if labels is not None:
        (directory / LABELS_FILE).write_bytes(labels_text(labels))
    vocab = model_file(tokenizer_dir, VOCAB_FILE)
    if vocab is not None:  # read by the one rule (bounded, duplicates refused), one token a line by id
        (directory / VOCAB_FILE).write_text("".join(f"{token}\n" for token in read_vocab(vocab)), encoding="utf-8")


def client_config(source: ExportSource) -> dict[str, Any]:
    """The config.json clients read: a stock model_type and architecture, the task's labels.

    Its shape keys are the slice's kept counts; clients of an ONNX graph read the task and labels
    from it, not the shape (the head size, which BERT derives as hidden / heads, is in BUNDLE_FILE).
    """
    config = source.model.config
    model_type = config.source_model_type
    classifier = source.manifest["task"] == "sequence-classification"
    shape = {key: getattr(config, key) for key in CONFIG_KEYS if getattr(config, key, None) is not None}
    out: dict[str, Any] = {
        "architectures": [stock_class(model_type, classifier)],
        "model_type": model_type,
        **own_keys(shape, model_type),  # as the family's own config.json names them (DistilBERT's dim, n_layers, ...)
    }
    if classifier:
        labels = {int(index): str(label) for index, label in config.id2label.items()}
        out["id2label"] = {str(index): label for index, label in sorted(labels.items())}
        out["label2id"] = {label: index for index, label in sorted(labels.items())}
    return out


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
