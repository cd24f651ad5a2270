"""The files `rewire` and `train` write and edgebert reads again: one typed schema each, versioned, validated.

`edgebert-rewire.json` records the importance scores and the permutation a rewiring applied;
`edgebert-train.json` records how a DynaBERT was trained (teacher, data, phases,
hyperparameters, per-sub-network dev metrics). Its presence is how `slice`, `export` and
`pick` know that a model's sub-networks were trained to work.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from edgebert.errors import EdgebertError

REWIRE_MANIFEST = "edgebert-rewire.json"
TRAIN_MANIFEST = "edgebert-train.json"
NOT_DYNABERT_NOTE = (
    "{model} was not trained as a DynaBERT (no edgebert-train.json): sub-networks below full size are only "
    "accurate for a model trained so; run `edgebert train` to make one, and `edgebert eval` to measure"
)


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileRef(_Record):
    path: str
    sha256: str
    examples: int | None = None


class RewireManifest(_Record):
    """Head and FFN-neuron importance per layer, and the order applied (new position i holds old index order[i])."""

    version: Literal[1] = 1
    edgebert_version: str
    source: FileRef
    data: FileRef
    labels: Literal["gold", "model predictions"]
    batch_size: int
    accumulation: Literal["official", "per-batch"]
    head_importance: list[list[float]]
    neuron_importance: list[list[float]]
    head_order: list[list[int]]
    neuron_order: list[list[int]]
    max_abs_diff: float  # full model's logits before vs after, fp32, on the importance data
    # the same in fp64 on its first batches: ~1e-15 unless the permutation is wrong (None: not measured)
    max_abs_diff_fp64: float | None = None


class PhaseRecord(_Record):
    name: Literal["width", "depth", "finetune"]
    teacher: str  # what the students distilled from
    subnetworks: list[tuple[float, float]]
    steps: int
    epochs: float
    best_step: int
    best_score: float  # sum of the task metric over the phase's sub-networks on the selection set
    wall_time_s: float


class TrainManifest(_Record):
    version: Literal[1] = 1
    edgebert_version: str
    teacher: FileRef
    train_data: FileRef
    dev_data: FileRef
    eval_data: FileRef | None
    selected_on: Literal["dev", "eval"]
    metric: str
    phases: list[PhaseRecord]
    hyperparameters: dict[str, Any]
    rewiring: RewireManifest | None
    dev_metrics: dict[str, dict[str, float]]  # "w0.5-d0.75" -> metrics of the final model on --dev
    world_size: int
    device: str
    wall_time_s: float

    @property
    def trains_subnetworks(self) -> bool:
        """Whether any phase trained a sub-network below full size (else it was ordinary fine-tuning)."""
        return any((w, d) != (1.0, 1.0) for phase in self.phases for w, d in phase.subnetworks)


def read_manifest(path: Path, schema: type[BaseModel]) -> BaseModel:
    try:
        return schema.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EdgebertError(f"{path} is not a valid {schema.__name__}: {first}") from exc


def training_manifest(model_dir: Path) -> TrainManifest | None:
    """The training manifest of a model directory, None when it has none."""
    path = model_dir / TRAIN_MANIFEST
    return read_manifest(path, TrainManifest) if path.is_file() else None


def subnet_key(width: float, depth: float) -> str:
    return f"w{width:g}-d{depth:g}"
