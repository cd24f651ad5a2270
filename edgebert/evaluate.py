"""Accuracy of DynaBERT sub-networks on a labelled dev set, sliced in memory and cached for `pick`.

The protocol follows the official DynaBERT evaluation: the model's own tokenizer, sentence pairs
as two segments, truncation to 128 tokens, right padding (per batch of similar lengths: padding is
masked, so the logits equal those of padding to 128), argmax of the logits (or the raw score for a
one-output regression head). Results are cached under `<cache>/eval/`, keyed by the
weights' and the data file's sha256 and the (width, depth), so a repeated call and `pick` reuse
them instead of running the model again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebert.atomic import staged_outputs
from edgebert.checkpoint import Checkpoint, read_config
from edgebert.data import (
    MAX_LENGTH,
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
from edgebert.demo import cache_dir
from edgebert.slicing import UNTRAINED_NOTE, open_checkpoint, slice_checkpoint
from edgebert.subnet import check_fractions

if TYPE_CHECKING:
    import numpy as np

BATCH_SIZE = 32


def targets_for(data: Dataset, checkpoint: Checkpoint) -> np.ndarray:
    """The dev set's labels as the model's class ids (or scores for a regression head)."""
    return label_targets(data, checkpoint.arch.num_labels, checkpoint.model_config.get("label2id"), checkpoint.path)


def tokenize(data: Dataset, checkpoint: Checkpoint) -> Encoded:
    """The model's own tokenizer, truncating to MAX_LENGTH as the original evaluation."""
    return encode(data, load_tokenizer(checkpoint.path, checkpoint.model_type), MAX_LENGTH)


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


def record_result(model_sha256: str, data: Dataset, costs: dict[str, Any], values: dict[str, float]) -> dict[str, Any]:
    """Cache one sub-network's metrics (`costs` as `subnet.costs` gives them); `train` fills the cache this way too."""
    result = {
        "model_sha256": model_sha256,
        "data_sha256": data.sha256,
        "data": str(data.path.resolve()),
        "examples": len(data),
        "width": costs["width"],
        "depth": costs["depth"],
        "parameters": costs["parameters"],
        "encoder_flops_seq128": costs["encoder_flops_seq128"],
        "max_length": MAX_LENGTH,
        "metrics": values,
    }
    path = cache_path(model_sha256, data.sha256, costs["width"], costs["depth"])
    with staged_outputs(path, force=True) as (staged,):
        staged.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


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
    targets = targets_for(data, checkpoint)
    check_tokenizer_files(checkpoint.path, {path.name for path in checkpoint.tokenizer_files})
    encoded = None  # tokenized on the first cache miss only
    results = []
    for width, depth in configs:
        path = cache_path(checkpoint.weights_sha256, data.sha256, width, depth)
        result = _read_cached(path)
        if result is None:
            if encoded is None:
                encoded = tokenize(data, checkpoint)
            sliced = slice_checkpoint(checkpoint, width, depth)
            result = record_result(
                checkpoint.weights_sha256,
                data,
                sliced.manifest,
                metrics(predict(sliced.model, encoded), targets),
            )
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
