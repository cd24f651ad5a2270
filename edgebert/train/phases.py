"""The phases a run can have and what each trains: its sub-networks, loss weights and teacher; and its length."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from edgebert.checkpoint import Checkpoint
from edgebert.errors import EdgebertError
from edgebert.subnet import Architecture, Subnetwork, subnetwork
from edgebert.train.config import Phase, TrainConfig

Grid = dict[tuple[float, float], Subnetwork]  # every (width, depth) of the run, largest first


@dataclass
class PhasePlan:
    name: Phase
    subs: list[Subnetwork]  # largest first
    lambdas: tuple[float, float]  # weights of the (logits, hidden states) distillation terms
    teacher: str  # who teaches, as the manifest records it
    # The teacher: the model given to `train`, the model this phase starts from, or none (gold labels).
    teacher_model: Literal["given", "start"] | None = None
    same_width: bool = False  # the teacher runs at each student's width (else at full width)


def _width_phase(config: TrainConfig, arch: Architecture, grid: Grid, widths: list[float], depth: float) -> PhasePlan:
    """DynaBERT_W: every width at full depth distils from the fine-tuned teacher."""
    subs = [grid[(w, depth)] if depth == 1.0 else subnetwork(arch, w, 1.0) for w in widths]
    return PhasePlan("width", subs, config.width_lambdas, "the fine-tuned teacher (full size)", "given")


def _depth_phase(config: TrainConfig, arch: Architecture, grid: Grid, widths: list[float], depth: float) -> PhasePlan:
    """DynaBERT: every (width, depth) distils from DynaBERT_W, the model the phase starts from."""
    same = config.depth_teacher == "same-width"
    teacher = f"DynaBERT_W at {'the same width' if same else 'full width'}"
    return PhasePlan("depth", list(grid.values()), config.depth_lambdas, teacher, "start", same)


def _finetune_phase(
    config: TrainConfig, arch: Architecture, grid: Grid, widths: list[float], depth: float
) -> PhasePlan:
    """Every (width, depth) on the task loss with gold labels, no teacher."""
    return PhasePlan("finetune", list(grid.values()), (0.0, 0.0), "none (gold labels)")


# How each phase is planned from the run's settings, its architecture, its grid, widths and largest depth.
PLANNERS: dict[Phase, Callable[[TrainConfig, Architecture, Grid, list[float], float], PhasePlan]] = {
    "width": _width_phase,
    "depth": _depth_phase,
    "finetune": _finetune_phase,
}


def plan_phases(config: TrainConfig, checkpoint: Checkpoint) -> list[PhasePlan]:
    """The sub-networks of each phase, largest first (depths descending, widths descending within)."""
    arch = checkpoint.arch
    widths, depths = sorted(set(config.widths), reverse=True), sorted(set(config.depths), reverse=True)
    if not widths or not depths:
        raise EdgebertError("--widths and --depths must each name at least one value")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        grid = {(w, d): subnetwork(arch, w, d) for d in depths for w in widths}
    for warning in {str(w.message) for w in caught}:
        warnings.warn(warning, stacklevel=3)
    return [PLANNERS[name](config, arch, grid, widths, depths[0]) for name in config.phases]


def steps_for(config: TrainConfig, examples: int) -> tuple[int, int]:
    """(steps per epoch, total steps) of one phase."""
    per_epoch = math.ceil(examples / config.batch_size)
    total = config.max_steps if config.max_steps is not None else math.ceil(config.epochs * per_epoch)
    return per_epoch, max(1, total)
