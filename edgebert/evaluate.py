"""Accuracy of DynaBERT sub-networks on a labelled dev set, sliced in memory and cached for `pick`.

The protocol follows the official DynaBERT evaluation: the model's own tokenizer, sentence pairs
as two segments, truncation to 128 tokens, right padding (per batch of similar lengths: padding is
masked, so the logits equal those of padding to 128), argmax of the logits (or the raw score for a
one-output regression head). Results are cached under `<cache>/eval/`, keyed by everything that
decides them (`EvalKey`: weights, label map, tokenizer files, data file and the columns read, max
length, edgebert version) and the (width, depth), so a repeated call and `pick` reuse them instead of
running the model again; an entry that does not validate against `CachedResult` (corrupt, truncated,
foreign, renamed), is larger than an entry can be, or is not a regular file, is ignored and recomputed.

A slice directory (`edgebert slice`) holds one sub-network: it is evaluated as it is, through its own
tokenizer (a pruned vocabulary's remapped ids included), and cached under its own weights.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgebert import __version__
from edgebert.atomic import staged_outputs
from edgebert.checkpoint import Checkpoint, is_slice, read_config, read_slice
from edgebert.data import (
    GLUE_COLUMNS,
    MAX_LENGTH,
    Columns,
    Dataset,
    Encoded,
    check_tokenizer_files,
    collate,
    encode,
    label_targets,
    load_tokenizer,
    read_dataset,
    sequential_batches,
)
from edgebert.demo import UNTRAINED_NOTE, cache_dir
from edgebert.errors import EdgebertError
from edgebert.model_files import tokenizer_files
from edgebert.reading import file_sha256, read_regular
from edgebert.slicing import SlicedModel, load_slice, open_checkpoint, slice_checkpoint
from edgebert.subnet import TRAINED_GRID, check_fractions, subnet_name

if TYPE_CHECKING:
    import numpy as np

    from edgebert.vocab import KeptVocabulary

BATCH_SIZE = 32


@dataclass
class Evaluated:
    """What `evaluate` runs: a checkpoint, whose sub-networks are sliced in memory, or a slice directory, which is
    its one sub-network as it is."""

    path: Path
    model_type: str
    key: ModelKey
    num_labels: int | None
    label2id: dict[str, int] | None
    sub_network: Callable[[float, float], SlicedModel]
    untrained: str | None  # the demo model's note
    vocabulary: KeptVocabulary | None = None  # sub-networks keeping only its rows (`pick --vocab-from`), in memory

    def targets(self, data: Dataset) -> np.ndarray:
        """The dev set's labels as the model's class ids (or scores for a regression head)."""
        return label_targets(data, self.num_labels, self.label2id, self.path)

    def encode(self, data: Dataset, max_length: int = MAX_LENGTH) -> Encoded:
        """The ids the sub-networks read: the model's tokenizer's, remapped to a pruned vocabulary's if one."""
        encoded = tokenize(data, self, max_length)
        return encoded if self.vocabulary is None else self.vocabulary.encoded(encoded)


def tokenize(data: Dataset, model: Checkpoint | Evaluated, max_length: int = MAX_LENGTH) -> Encoded:
    """The model's own tokenizer, truncating to `max_length` (MAX_LENGTH, as the original evaluation)."""
    return encode(data, load_tokenizer(model.path, model.model_type), max_length)


def predict(model: Callable[..., Any], encoded: Encoded, device: str = "cpu") -> np.ndarray:
    """Logits of every example, in file order, without autograd; `model(**batch).logits` as edgebert's models.

    Batches hold examples of similar length, padded per batch: padding is masked, so the logits are
    those of padding every example to MAX_LENGTH (the original protocol) at a fraction of the cost.
    """
    import numpy as np
    import torch

    batches = sequential_batches(encoded.lengths, BATCH_SIZE)
    logits = np.empty((len(encoded), 0), dtype=np.float32)
    with torch.no_grad():
        for batch in batches:
            inputs = {name: tensor.to(device) for name, tensor in collate(encoded, batch).items()}
            out = model(**inputs).logits.float().cpu().numpy()
            if logits.shape[1] == 0:
                logits = np.empty((len(encoded), out.shape[1]), dtype=np.float32)
            logits[batch] = out
    return logits


def metrics(logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Accuracy for classes; Pearson and Spearman for a regression score (GLUE STS-B style)."""
    import numpy as np

    if logits.shape[-1] > 1:
        return {"accuracy": float(np.mean(logits.argmax(-1) == targets))}
    scores = logits[:, 0].astype(np.float64)
    return {"pearson": _pearson(scores, targets), "spearman": _pearson(_ranks(scores), _ranks(targets))}


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    import numpy as np

    if x.std() == 0 or y.std() == 0:
        return math.nan  # undefined for a constant series, as in scipy
    return float(np.corrcoef(x, y)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties given their average rank, as Spearman's coefficient needs."""
    import numpy as np

    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


# ---- cache --------------------------------------------------------------------------------------

CACHE_VERSION = 1
MAX_ENTRY_BYTES = 64 << 10  # an entry is about 1 KB (the data file's path is its only open-ended field)
SHA256 = r"^[0-9a-f]{64}$"


class ModelKey(BaseModel):
    """What makes a model's predictions what they are, apart from the data: its weights, label map and tokenizer.

    The edgebert version is part of it: a fix to slicing or tokenization must not be hidden by old results.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    weights_sha256: str = Field(pattern=SHA256)
    label2id: dict[str, int] | None  # the same file read through another map scores differently
    tokenizer_sha256: str = Field(pattern=SHA256)  # names and contents of the tokenizer files
    edgebert_version: str


class EvalKey(ModelKey):
    """A result's full identity: the model's, the data file's content and the length examples were cut to."""

    data_sha256: str = Field(pattern=SHA256)
    columns: tuple[str, ...] = ()  # the columns read (text, then target): the same file through others is other data
    max_length: int = Field(gt=0)

    def digest(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


Fraction = Annotated[float, Field(gt=0, le=1)]


class CachedResult(BaseModel):
    """One cache entry (`<cache>/eval/*.json`): validated on read, ignored when it does not hold."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")  # Pearson of a constant series is NaN

    version: Literal[1]
    key: EvalKey
    data: str
    examples: int = Field(gt=0)
    width: Fraction
    depth: Fraction
    parameters: int = Field(ge=0)
    encoder_flops_seq128: int = Field(ge=0)
    metrics: dict[str, float] = Field(min_length=1)

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, values: dict[str, float]) -> dict[str, float]:
        if not ({"accuracy"} <= set(values) or {"pearson", "spearman"} <= set(values)):
            raise ValueError("needs accuracy, or pearson and spearman")
        if "accuracy" in values and not 0 <= values["accuracy"] <= 1:
            raise ValueError("accuracy outside [0, 1]")
        return values


def model_key(checkpoint: Checkpoint, vocabulary: KeptVocabulary | None = None) -> ModelKey:
    """The key of `checkpoint`'s predictions (hashes its weights and tokenizer files); with `vocabulary`, of its
    sub-networks keeping only those rows, whose tokenizer is the source's remapped: the kept ids join its hash."""
    key = _model_key(checkpoint.weights_sha256, checkpoint.tokenizer_files, checkpoint.model_config.get("label2id"))
    if vocabulary is None:
        return key
    kept = f"{key.tokenizer_sha256}\0kept ids\0{vocabulary.record.kept_ids}"
    return key.model_copy(update={"tokenizer_sha256": hashlib.sha256(kept.encode()).hexdigest()})


def _model_key(weights_sha256: str, tokenizers: list[Path], label2id: dict[str, int] | None) -> ModelKey:
    digest = hashlib.sha256()
    for path in sorted(tokenizers):
        digest.update(f"{path.name}\0{file_sha256(path)}\0".encode())
    return ModelKey(
        weights_sha256=weights_sha256,
        label2id={str(k): int(v) for k, v in label2id.items()} if label2id else None,
        tokenizer_sha256=digest.hexdigest(),
        edgebert_version=__version__,
    )


def eval_cache_dir() -> Path:
    return cache_dir() / "eval"


def cache_path(key: EvalKey, width: float, depth: float) -> Path:
    """Named by the weights (so `cached_results` finds a model's entries) and the digest of the whole key."""
    return eval_cache_dir() / f"{subnet_name(f'{key.weights_sha256}-{key.digest()[:32]}', width, depth)}.json"


def read_cached(path: Path) -> CachedResult | None:
    """A valid entry stored under its own name, or None: damaged, foreign, renamed, oversized or special files
    (a named pipe would block the read, `/dev/zero` never end it) are never trusted."""
    try:
        data = read_regular(path, MAX_ENTRY_BYTES)
        if len(data) > MAX_ENTRY_BYTES:
            return None
        entry = CachedResult.model_validate_json(data)
    except (EdgebertError, ValueError):
        return None
    return entry if cache_path(entry.key, entry.width, entry.depth).name == path.name else None


def cached_results(model: ModelKey) -> list[CachedResult]:
    """Every valid cached result of this model (same weights, label map, tokenizer, version), any data file."""
    entries = (read_cached(path) for path in sorted(eval_cache_dir().glob(f"{model.weights_sha256}-*.json")))
    wanted = model.model_dump()
    return [e for e in entries if e is not None and e.key.model_dump(include=set(wanted)) == wanted]


def record_result(
    model: ModelKey, data: Dataset, max_length: int, costs: dict[str, Any], values: dict[str, float]
) -> CachedResult:
    """Cache one sub-network's metrics (`costs` as `subnet.costs` gives them); `train` fills the cache this way too."""
    result = CachedResult(
        version=CACHE_VERSION,
        key=EvalKey(**model.model_dump(), data_sha256=data.sha256, columns=data.columns, max_length=max_length),
        data=str(data.path.resolve()),
        examples=len(data),
        width=costs["width"],
        depth=costs["depth"],
        parameters=costs["parameters"],
        encoder_flops_seq128=costs["encoder_flops_seq128"],
        metrics=values,
    )
    with staged_outputs(cache_path(result.key, result.width, result.depth), force=True) as (staged,):
        staged.write_text(result.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return result


# ---- the command --------------------------------------------------------------------------------


def sub_networks(
    model: str | Path | None, configs: Iterable[tuple[float, float]] | None = None
) -> list[tuple[float, float]]:
    """What `evaluate(model, ..., configs)` evaluates: `configs` of a checkpoint (None: the trained grid), or a slice
    directory's own (width, depth), the one sub-network it holds (then `configs`, if given, must be just that)."""
    if model is not None and is_slice(Path(model)):
        manifest = read_slice(Path(model))[2]  # validated, nothing loaded
        own = (manifest.width, manifest.depth)
        if configs is not None and [tuple(config) for config in configs] != [own]:
            raise EdgebertError(
                f"{model} is a slice: it holds one sub-network (width {own[0]:g}, depth {own[1]:g}), evaluated as it "
                "is; --width, --depth and --grid choose among a full checkpoint's"
            )
        return [own]
    return [check_fractions(width, depth) for width, depth in (TRAINED_GRID if configs is None else configs)]


def open_evaluated(model: str | Path | None) -> Evaluated:
    """The checkpoint or slice directory at `model` (None: the demo), loaded."""
    if model is not None and is_slice(Path(model)):
        path = Path(model)
        weights_file = read_slice(path)[3]
        sliced = load_slice(path)
        config, manifest = sliced.model.config, sliced.manifest
        classifier = manifest["task"] == "sequence-classification"
        label2id = dict(config.label2id) if classifier else None
        key = _model_key(file_sha256(weights_file), tokenizer_files(path), label2id)
        num_labels = config.num_labels if classifier else None
        model_type, untrained = config.source_model_type, manifest.get("untrained")
        return Evaluated(path, model_type, key, num_labels, label2id, lambda *_: sliced, untrained)
    if model is not None:
        read_config(Path(model))  # a missing or bad directory fails before the slow weight load
    return checkpoint_evaluated(open_checkpoint(model))


def checkpoint_evaluated(checkpoint: Checkpoint, vocabulary: KeptVocabulary | None = None) -> Evaluated:
    """A loaded checkpoint, its sub-networks sliced in memory; with `vocabulary`, keeping only its rows."""
    return Evaluated(
        checkpoint.path,
        checkpoint.model_type,
        model_key(checkpoint, vocabulary),
        checkpoint.arch.num_labels,
        checkpoint.model_config.get("label2id"),
        partial(slice_checkpoint, checkpoint, vocabulary=vocabulary),
        UNTRAINED_NOTE if checkpoint.is_demo else None,
        vocabulary,
    )


def evaluate(
    model: str | Path | None,
    data_file: str | Path,
    configs: Iterable[tuple[float, float]] | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    columns: Columns = GLUE_COLUMNS,
) -> dict[str, Any]:
    """Evaluate each (width, depth) of `sub_networks(model, configs)`, reusing cached results; `on_result` sees each
    result as it is ready."""
    configs = sub_networks(model, configs)  # bad fractions, or another sub-network of a slice: before anything is read
    data = read_dataset(data_file, columns)
    evaluated = open_evaluated(model)
    results = evaluate_sub_networks(evaluated, data, configs, on_result, MAX_LENGTH)
    report: dict[str, Any] = {
        "model": str(evaluated.path),
        "model_sha256": evaluated.key.weights_sha256,
        "data": str(data.path),
        "data_sha256": data.sha256,
        "columns": list(data.columns),
        "max_length": MAX_LENGTH,
        "examples": len(data.labels),
        "task": "regression" if evaluated.num_labels == 1 else "classification",
        "results": results,
    }
    if evaluated.untrained:
        report["untrained"] = evaluated.untrained
    return report


def evaluate_sub_networks(
    evaluated: Evaluated,
    data: Dataset,
    configs: Iterable[tuple[float, float]],
    on_result: Callable[[dict[str, Any]], None] | None = None,
    max_length: int = MAX_LENGTH,
) -> list[dict[str, Any]]:
    """Each (width, depth)'s result (`CachedResult`'s fields and "cached"), from the cache or computed and cached;
    `on_result` sees each as it is ready."""
    targets = evaluated.targets(data)
    check_tokenizer_files(evaluated.path, {path.name for path in tokenizer_files(evaluated.path)})
    model_id = evaluated.key
    key = EvalKey(**model_id.model_dump(), data_sha256=data.sha256, columns=data.columns, max_length=max_length)
    encoded = None  # tokenized on the first cache miss only
    results = []
    for width, depth in configs:
        cached = read_cached(cache_path(key, width, depth))
        if cached is None:
            if encoded is None:
                encoded = evaluated.encode(data, max_length)
            sliced = evaluated.sub_network(width, depth)
            values = metrics(predict(sliced.model, encoded), targets)
            cached = record_result(model_id, data, max_length, sliced.manifest, values)
            result = {**cached.model_dump(), "cached": False}
        else:
            result = {**cached.model_dump(), "cached": True}
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def primary_metric(values: dict[str, float]) -> tuple[str, float]:
    """The number `pick` ranks by: accuracy, or Pearson for regression."""
    name = "accuracy" if "accuracy" in values else "pearson"
    return name, values[name]
