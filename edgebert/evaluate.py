"""Accuracy of DynaBERT sub-networks on a labelled dev set, sliced in memory and cached for `pick`.

The protocol follows the official DynaBERT evaluation: the model's own tokenizer, sentence pairs
as two segments, truncation and right padding to 128 tokens, argmax of the logits (or the raw
score for a one-output regression head). Results are cached under `<cache>/eval/`, keyed by the
weights' and the data file's sha256 and the (width, depth), so a repeated call and `pick` reuse
them instead of running the model again.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebert.atomic import staged_outputs
from edgebert.checkpoint import Checkpoint, file_sha256, read_config
from edgebert.demo import cache_dir
from edgebert.errors import EdgebertError, require
from edgebert.slicing import UNTRAINED_NOTE, open_checkpoint, slice_checkpoint
from edgebert.subnet import check_fractions

if TYPE_CHECKING:
    import numpy as np

MAX_LENGTH = 128
BATCH_SIZE = 32
FIRST_COLUMNS = ("sentence", "sentence1")
SECOND_COLUMN = "sentence2"
LABEL_COLUMN = "label"
# What a directory must hold for AutoTokenizer to rebuild the training tokenizer (one of these sets).
TOKENIZER_SETS = (("tokenizer.json",), ("vocab.txt",), ("vocab.json", "merges.txt"))


@dataclass
class Dataset:
    """A GLUE-style dev set: one or two text columns and raw label strings, with their line numbers."""

    path: Path
    first: list[str]
    second: list[str] | None
    labels: list[str]
    lines: list[int]
    sha256: str


def read_dataset(path: str | Path) -> Dataset:
    """Read `sentence[,sentence2],label` rows (header required); .csv is comma-separated, anything else tabs.

    TSV is read without quote handling, as GLUE's files are: a sentence may contain a '"'.
    """
    path = Path(path)
    if not path.is_file():
        raise EdgebertError(f"{path}: no such data file")
    if path.suffix.lower() == ".csv":
        dialect: dict[str, Any] = {"delimiter": ","}
    else:
        dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise EdgebertError(f"{path}: not UTF-8 text ({exc})") from exc
    rows = csv.reader(text.splitlines(), **dialect)
    header = [name.strip().lower() for name in next(rows, [])]
    first = next((name for name in FIRST_COLUMNS if name in header), None)
    if first is None or LABEL_COLUMN not in header:
        raise EdgebertError(
            f"{path}:1: the header must name a sentence column ({' or '.join(FIRST_COLUMNS)}), optionally "
            f"{SECOND_COLUMN}, and {LABEL_COLUMN}; got {header or 'an empty file'}"
        )
    columns = [header.index(first), header.index(SECOND_COLUMN) if SECOND_COLUMN in header else None]
    label_index = header.index(LABEL_COLUMN)
    data = Dataset(path, [], [] if columns[1] is not None else None, [], [], file_sha256(path))
    for line, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise EdgebertError(f"{path}:{line}: {len(row)} fields, the header has {len(header)}")
        label = row[label_index].strip()
        if not label:
            raise EdgebertError(f"{path}:{line}: empty label")
        data.first.append(row[columns[0]])
        if data.second is not None:
            data.second.append(row[columns[1]])
        data.labels.append(label)
        data.lines.append(line)
    if not data.labels:
        raise EdgebertError(f"{path}: no examples after the header")
    return data


def label_targets(data: Dataset, checkpoint: Checkpoint) -> np.ndarray:
    """Class ids (via the config's label2id, else integer labels) or float scores for a regression head."""
    import numpy as np

    num_labels = checkpoint.arch.num_labels
    if not num_labels:
        raise EdgebertError(
            f"{checkpoint.path} has no classifier head (a bare encoder): eval needs a fine-tuned classification model"
        )
    if num_labels == 1:
        try:
            return np.array([float(label) for label in data.labels])
        except ValueError:
            bad = next(i for i, label in enumerate(data.labels) if not _is_float(label))
            raise EdgebertError(
                f"{data.path}:{data.lines[bad]}: label {data.labels[bad]!r} is not a number "
                "(the model has a one-output regression head)"
            ) from None
    label2id = {str(k): int(v) for k, v in (checkpoint.model_config.get("label2id") or {}).items()}
    targets = []
    for label, line in zip(data.labels, data.lines, strict=True):
        if label in label2id:
            targets.append(label2id[label])
        elif label.lstrip("-").isdigit() and 0 <= int(label) < num_labels:
            targets.append(int(label))
        else:
            known = list(label2id) or list(range(num_labels))
            raise EdgebertError(f"{data.path}:{line}: unknown label {label!r} (the model's labels: {known})")
    return np.array(targets)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_tokenizer_files(checkpoint: Checkpoint) -> None:
    """Fail up front, even when every result is cached: the same directory always gives the same answer."""
    present = {path.name for path in checkpoint.tokenizer_files}
    if not any(set(names) <= present for names in TOKENIZER_SETS):
        raise EdgebertError(
            f"{checkpoint.path} has no tokenizer files (needs tokenizer.json, vocab.txt, or vocab.json + merges.txt): "
            "copy them from the model the checkpoint was fine-tuned from"
        )


def tokenize(data: Dataset, checkpoint: Checkpoint) -> dict[str, Any]:
    """The model's own tokenizer from its directory (local files only), padded right to MAX_LENGTH."""
    transformers = require("transformers", "tokenizing the dev set")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(checkpoint.path), local_files_only=True, tokenizer_type=checkpoint.model_type
        )
    except (OSError, ValueError) as exc:
        raise EdgebertError(f"{checkpoint.path}: cannot load its tokenizer ({str(exc).splitlines()[0]})") from exc
    return tokenizer(
        data.first,
        data.second,
        max_length=MAX_LENGTH,
        padding="max_length",
        truncation=True,
        return_tensors="pt",
    )


def predict(model: Any, encoded: dict[str, Any]) -> np.ndarray:
    """Logits of the whole set, BATCH_SIZE rows at a time, without autograd."""
    import torch

    outputs = []
    total = encoded["input_ids"].shape[0]
    with torch.no_grad():
        for start in range(0, total, BATCH_SIZE):
            batch = {name: tensor[start : start + BATCH_SIZE] for name, tensor in encoded.items()}
            outputs.append(model(**batch).logits)
    return torch.cat(outputs).numpy()


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


def eval_cache_dir() -> Path:
    return cache_dir() / "eval"


def cache_path(model_sha256: str, data_sha256: str, width: float, depth: float) -> Path:
    return eval_cache_dir() / f"{model_sha256}-{data_sha256}-w{width:g}-d{depth:g}.json"


def cached_results(model_sha256: str) -> list[dict[str, Any]]:
    """Every cached result of the model with these weights, any data file (for `pick`)."""
    results = []
    for path in sorted(eval_cache_dir().glob(f"{model_sha256}-*.json")):
        try:
            results.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue  # a damaged cache entry is recomputed by the next eval, never trusted
    return results


def _write_cache(path: Path, result: dict[str, Any]) -> None:
    with staged_outputs(path, force=True) as (staged,):
        staged.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


# ---- the command --------------------------------------------------------------------------------


def evaluate(
    model: str | Path | None,
    data_file: str | Path,
    configs: Iterable[tuple[float, float]],
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Evaluate each (width, depth), reusing cached results; `on_result` sees each result as it is ready."""
    configs = [check_fractions(width, depth) for width, depth in configs]
    data = read_dataset(data_file)
    if model is not None:
        read_config(Path(model))  # a missing or bad directory fails before the slow weight load
    checkpoint = open_checkpoint(model)
    targets = label_targets(data, checkpoint)
    check_tokenizer_files(checkpoint)
    encoded = None  # tokenized on the first cache miss only
    results = []
    for width, depth in configs:
        path = cache_path(checkpoint.weights_sha256, data.sha256, width, depth)
        result = _read_cached(path)
        if result is None:
            if encoded is None:
                encoded = tokenize(data, checkpoint)
            sliced = slice_checkpoint(checkpoint, width, depth)
            result = {
                "model_sha256": checkpoint.weights_sha256,
                "data_sha256": data.sha256,
                "data": str(data.path.resolve()),
                "examples": len(data.labels),
                "width": width,
                "depth": depth,
                "parameters": sliced.manifest["parameters"],
                "encoder_flops_seq128": sliced.manifest["encoder_flops_seq128"],
                "max_length": MAX_LENGTH,
                "metrics": metrics(predict(sliced.model, encoded), targets),
            }
            _write_cache(path, result)
            result = {**result, "cached": False}
        else:
            result = {**result, "cached": True}
        results.append(result)
        if on_result is not None:
            on_result(result)
    report: dict[str, Any] = {
        "model": str(checkpoint.path),
        "model_sha256": checkpoint.weights_sha256,
        "data": str(data.path),
        "data_sha256": data.sha256,
        "examples": len(data.labels),
        "task": "regression" if checkpoint.arch.num_labels == 1 else "classification",
        "results": results,
    }
    if checkpoint.is_demo:
        report["untrained"] = UNTRAINED_NOTE
    return report


def _read_cached(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def primary_metric(values: dict[str, float]) -> tuple[str, float]:
    """The number `pick` ranks by: accuracy, or Pearson for regression."""
    name = "accuracy" if "accuracy" in values else "pearson"
    return name, values[name]
