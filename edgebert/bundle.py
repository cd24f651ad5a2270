"""The ONNX bundle: a folder that transformers.js and Optimum load as it is, one file per precision.

The layout is the one both clients read (transformers.js picks `onnx/model_quantized.onnx` for
`dtype: 'q8'`, `onnx/model_fp16.onnx` for 'fp16', `onnx/model.onnx` for 'fp32'; Optimum's
`ORTModelFor*.from_pretrained(bundle, subfolder="onnx", file_name=...)`):

    config.json            model_type bert/roberta, architectures, id2label: where clients read the task and labels
    tokenizer.json         the fast tokenizer (built with `tokenizers` from vocab.txt when the source has none)
    tokenizer_config.json  tokenizer_class and the special tokens, pad_token included (batched calls pad)
    edgebert-bundle.json   what config.json cannot say: the slice's real config (head size) and its manifest
    onnx/<precision file>  each with edgebert's sidecar `<file>.json`

A bundle is written whole by one rename; a later precision is added into it by the rename of
its own artifact and sidecar, once the bundle is shown to hold the same sub-network.
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
from edgebert.errors import EdgebertError
from edgebert.manifests import json_bytes, parse_json, read_json, read_manifest
from edgebert.reading import read_vocab
from edgebert.sidecar import replaceable_export, sidecar_path

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from edgebert.export.base import ExportSource

BUNDLE_FILE = "edgebert-bundle.json"
ONNX_DIR = "onnx"
ONNX_FILES = {"fp32": "model.onnx", "int8": "model_quantized.onnx", "fp16": "model_fp16.onnx"}  # transformers.js names
TOP_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", BUNDLE_FILE)
SPECIAL_TOKENS = {  # tokenizer_config.json's defaults when the source's names none
    "bert": {
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    },
    "roberta": {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "sep_token": "</s>",
        "pad_token": "<pad>",
        "cls_token": "<s>",
        "mask_token": "<mask>",
    },
}
TOKENIZER_CLASS = {"bert": "BertTokenizer", "roberta": "RobertaTokenizer"}
# transformers 5 saves a generic fast tokenizer as "TokenizersBackend", a class transformers 4 (Optimum's) lacks;
# PreTrainedTokenizerFast is the same tokenizer.json in both (same ids, measured on 4.57 and 5.24).
PORTABLE_CLASS = {"TokenizersBackend": "PreTrainedTokenizerFast"}
CONFIG_KEYS = (  # the standard BERT/RoBERTa keys a bundle's config.json carries from the slice
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
)
IDENTITY = ("width", "depth")  # with the source's weights digest: which sub-network a bundle holds


class BundleManifest(BaseModel):
    """`edgebert-bundle.json`: the slice's own config (its real shape) and manifest, beside the clients' config.json."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    edgebert_version: str
    config: dict[str, Any]
    manifest: dict[str, Any]


def is_bundle_output(format: str, out: Path | None) -> bool:
    """ONNX goes into a bundle unless `--out` names a single `.onnx` file."""
    return format == "onnx" and (out is None or out.suffix != ".onnx")


def tokenizer_dir_of(artifact: Path) -> Path:
    """Where an artifact's tokenizer files are: its bundle's top folder for `onnx/*.onnx`, else beside it."""
    folder = artifact.parent
    if folder.name == ONNX_DIR and (folder.parent / BUNDLE_FILE).is_file():
        return folder.parent
    return folder


def default_bundle_name(stem: str) -> str:
    """`<model>-w0.5-d0.5-onnx`: never the slice directory's own name."""
    return f"{stem}-onnx"


def bundle_artifact(bundle: Path, precision: str) -> Path:
    return bundle / ONNX_DIR / ONNX_FILES[precision]


def replaceable_bundle(path: Path) -> str | None:
    """What `--force` may replace: a directory holding only what edgebert writes into a bundle.

    Staging directories in onnx/ are another export adding its precision (or a killed one's
    leftover, which the next writer there removes): not foreign.
    """
    if not path.is_dir() or not (path / BUNDLE_FILE).is_file():
        return f"has no edgebert sidecar ({BUNDLE_FILE}), so it is not a bundle edgebert wrote"
    artifacts = {name for file in ONNX_FILES.values() for name in (file, sidecar_path(Path(file)).name)}
    foreign = [p.name for p in path.iterdir() if not owned(p, TOP_FILES)]
    onnx = path / ONNX_DIR
    if ONNX_DIR in foreign and onnx.is_dir() and not onnx.is_symlink():
        foreign.remove(ONNX_DIR)
        foreign += [p.name for p in onnx.iterdir() if not (owned(p, artifacts) or STAGING_NAME.search(p.name))]
    if foreign:
        return f"holds {len(foreign)} file(s) edgebert does not write ({', '.join(sorted(foreign)[:3])})"
    return None


def owned(path: Path, names: Iterable[str]) -> bool:
    return path.name in names and path.is_file() and not path.is_symlink()


def check_bundle_target(bundle: Path, precision: str, force: bool, protect: Iterable[Path]) -> None:
    """Refuse early (before the slow work) what the final renames would refuse."""
    if not os.path.lexists(bundle):
        refuse_existing(bundle, protect=protect)  # a bundle may not land inside the source model
        return
    # Even to add a file: not the source model, not a link, nothing edgebert did not write (force=True: no
    # "already exists" for the bundle itself; its files are checked next).
    refuse_existing(bundle, force=True, replaceable=replaceable_bundle, protect=protect)
    artifact = bundle_artifact(bundle, precision)
    refuse_existing(artifact, sidecar_path(artifact), force=force, replaceable=replaceable_export, protect=protect)


def same_subnetwork(bundle: Path, source: ExportSource) -> bool:
    """Whether the bundle holds the sub-network being exported (so another precision of it may join)."""
    held = read_manifest(bundle / BUNDLE_FILE, BundleManifest).manifest
    mine = json.loads(json.dumps(source.manifest))
    return held.get("source", {}).get("sha256") == mine["source"]["sha256"] and all(
        held.get(key) == mine[key] for key in IDENTITY
    )


@contextmanager
def staged_bundle(
    bundle: Path, precision: str, source: ExportSource, tokenizer_dir: Path, force: bool, protect: list[Path]
) -> Iterator[tuple[Path, Path]]:
    """Yield (artifact, sidecar) scratch paths; on success they land in `bundle`, a new bundle whole.

    Into an existing bundle of the same sub-network only the artifact and its sidecar are renamed
    (`--force` needed to replace an existing precision). A bundle of another sub-network is
    replaced whole with `--force`, refused without.
    """
    check_bundle_target(bundle, precision, force, protect)
    if os.path.lexists(bundle) and same_subnetwork(bundle, source):
        artifact = bundle_artifact(bundle, precision)
        options = {"force": force, "replaceable": replaceable_export, "protect": protect}
        with staged_outputs(artifact, sidecar_path(artifact), **options) as (staged, staged_sidecar):
            yield staged, staged_sidecar
        return
    if os.path.lexists(bundle) and not force:
        raise EdgebertError(f"{bundle} holds another sub-network: pass --force to replace the bundle, or another --out")
    with staged_outputs(bundle, force=force, replaceable=replaceable_bundle, protect=protect) as (staging,):
        staging.mkdir()
        write_bundle_files(staging, source, tokenizer_dir)
        artifact = bundle_artifact(staging, precision)
        artifact.parent.mkdir()
        yield artifact, sidecar_path(artifact)


def write_bundle_files(directory: Path, source: ExportSource, tokenizer_dir: Path) -> None:
    """config.json, the tokenizer pair and edgebert-bundle.json of `source` into `directory`."""
    config = source.model.config
    model_type = config.source_model_type
    write_json(directory / "config.json", client_config(source))
    write_tokenizer(tokenizer_dir, directory, model_type, source.max_seq_len)
    record = BundleManifest(edgebert_version=__version__, config=config.to_dict(), manifest=source.manifest)
    (directory / BUNDLE_FILE).write_text(record.model_dump_json(indent=2) + "\n", encoding="utf-8")


def client_config(source: ExportSource) -> dict[str, Any]:
    """The config.json clients read: a stock model_type and architecture, the task's labels.

    Its shape keys are the slice's kept counts; clients of an ONNX graph read the task and labels
    from it, not the shape (the head size, which BERT derives as hidden / heads, is in BUNDLE_FILE).
    """
    config = source.model.config
    model_type = config.source_model_type
    classifier = source.manifest["task"] == "sequence-classification"
    head = "ForSequenceClassification" if classifier else "Model"
    out: dict[str, Any] = {
        "architectures": [f"{TOKENIZER_CLASS[model_type].removesuffix('Tokenizer')}{head}"],
        "model_type": model_type,
        **{key: getattr(config, key) for key in CONFIG_KEYS if getattr(config, key, None) is not None},
    }
    if classifier:
        labels = {int(index): str(label) for index, label in config.id2label.items()}
        out["id2label"] = {str(index): label for index, label in sorted(labels.items())}
        out["label2id"] = {label: index for index, label in sorted(labels.items())}
    return out


# ---- tokenizer -----------------------------------------------------------------------------------


def write_tokenizer(source_dir: Path, directory: Path, model_type: str, max_len: int) -> None:
    """tokenizer.json (the source's, else WordPiece from its vocab.txt) and a tokenizer_config.json naming pad_token."""
    from edgebert.checkpoint import tokenizer_files

    files = {path.name: path for path in tokenizer_files(source_dir)}  # links out of the model refused
    given = read_json(files["tokenizer_config.json"]) if "tokenizer_config.json" in files else {}
    fast, tokenizer = read_tokenizer_json(files["tokenizer.json"]) if "tokenizer.json" in files else (None, None)
    lowercase = lowercases(tokenizer) if fast is not None else True
    settings = tokenizer_config(given if isinstance(given, dict) else {}, model_type, max_len, lowercase)
    if fast is not None:
        (directory / "tokenizer.json").write_bytes(fast)  # the bytes checked, not the file read again
    elif "vocab.txt" in files:
        wordpiece_tokenizer(files["vocab.txt"], settings).save(str(directory / "tokenizer.json"))
    else:
        raise EdgebertError(f"{source_dir} has neither tokenizer.json nor vocab.txt: the bundle needs a tokenizer")
    write_json(directory / "tokenizer_config.json", settings)


def read_tokenizer_json(path: Path) -> tuple[bytes, dict[str, Any]]:
    """tokenizer.json (its bytes and their JSON), if it holds what every client loads: an object with a `model`."""
    data = json_bytes(path)
    tokenizer = parse_json(data, path)
    if not isinstance(tokenizer, dict) or not isinstance(tokenizer.get("model"), dict):
        raise EdgebertError(f'{path} is not a tokenizer: a tokenizer.json is a JSON object with a "model" object')
    return data, tokenizer


def tokenizer_config(given: dict[str, Any], model_type: str, max_len: int, lowercase: bool = True) -> dict[str, Any]:
    """The source's tokenizer settings, completed: class, special tokens (pad_token above all), length.

    `lowercase` is what the bundle's tokenizer.json does: clients apply `do_lower_case` on top of
    it, so a cased tokenizer.json must not be given a default of true. The source's own
    `model_max_length` is kept when it is shorter than the model's positions.
    """
    tokens = {key: token_text(given.get(key)) or default for key, default in SPECIAL_TOKENS[model_type].items()}
    settings = {key: value for key, value in given.items() if key in ("do_lower_case", "tokenizer_class")}
    if settings.get("tokenizer_class") in PORTABLE_CLASS:
        settings["tokenizer_class"] = PORTABLE_CLASS[settings["tokenizer_class"]]
    settings.setdefault("tokenizer_class", TOKENIZER_CLASS[model_type])
    if model_type == "bert":
        settings.setdefault("do_lower_case", lowercase)
    limit = given.get("model_max_length")
    length = limit if type(limit) is int and 0 < limit < max_len else max_len
    return settings | tokens | {"model_max_length": length}


def lowercases(tokenizer: Any) -> bool:
    """Whether a tokenizer.json's normalizer lowercases (BertNormalizer's flag, a Lowercase step, in a Sequence)."""
    normalizer = tokenizer.get("normalizer") if isinstance(tokenizer, dict) else None
    if not isinstance(normalizer, dict):
        return False
    kind = normalizer.get("type")
    if kind == "Sequence":
        return any(lowercases({"normalizer": step}) for step in normalizer.get("normalizers") or [])
    return kind == "Lowercase" or (kind == "BertNormalizer" and normalizer.get("lowercase") is True)


def token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json gives it: a string, or an AddedToken dict with `content`."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def wordpiece_tokenizer(vocab_file: Path, settings: dict[str, Any]) -> Tokenizer:
    """BERT's WordPiece tokenizer over `vocab_file`, as `tokenizers` builds it for BertTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = read_vocab(vocab_file)  # one id per token (duplicates refused), as transformers reads it
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token=settings["unk_token"]))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=bool(settings.get("do_lower_case", True)))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    cls, sep = settings["cls_token"], settings["sep_token"]
    if cls in vocab and sep in vocab:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0",
            pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
        )
    specials = {value for key, value in settings.items() if key.endswith("_token")}
    tokenizer.add_special_tokens(sorted(token for token in specials if token in vocab))
    return tokenizer


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
