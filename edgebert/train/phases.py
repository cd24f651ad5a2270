"""The phases a run can have and what each trains: its sub-networks, loss weights and teacher; and its length.

A phase is planned as one or more `PhasePlan`s the loop runs in order, each with its own student, optimizer,
checkpoints and record. A shared phase (width, depth, finetune) is one plan: it trains the DynaBERT's weights,
and the next phase starts from its best. The final phase is one plan per chosen sub-network (`TrainConfig.final`),
each `apart`: a copy of the DynaBERT trained at that sub-network alone and written as a dense slice, so
specialising it changes no other sub-network (the phases after it, and the published DynaBERT, never see it).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, get_args

from edgebert.checkpoint import Checkpoint
from edgebert.errors import EdgebertError
from edgebert.subnet import Architecture, Subnetwork, subnet_key, subnetwork
from edgebert.train.config import FINAL, PhaseName, TrainConfig

Grid = dict[tuple[float, float], Subnetwork]  # every (width, depth) of the run, largest first


@dataclass
class PhasePlan:
    name: PhaseName
    subs: list[Subnetwork]  # largest first
    lambdas: tuple[float, float]  # weights of the (logits, hidden states) distillation terms
    teacher: str  # who teaches, as the manifest records it
    # The teacher: the model given to `train`, the model this phase starts from, or none (gold labels).
    teacher_model: Literal["given", "start"] | None = None
    same_width: bool = False  # the teacher runs at each student's width (else at full width)
    random_subnets: int | None = None  # sandwich rule: the largest, the smallest and this many others per step
    apart: bool = False  # a final sub-network: trained on a copy, written apart, the next plan never starts from it

    @property
    def label(self) -> str:
        """The phase as progress, errors and metrics name it: a final plan with its sub-network (`final w0.25-d0.5`)."""
        return f"{self.name} {subnet_key(self.subs[0].width, self.subs[0].depth)}" if self.apart else self.name

    @property
    def directory(self) -> str:
        """Its model's folder under the output's phases/ (`depth`, `final/w0.25-d0.5`)."""
        return self.label.replace(" ", "/")

    def step_plan(self, seed: int, step: int) -> PhasePlan:
        """What optimizer step `step` trains: every sub-network (`random_subnets` None), or the sandwich rule of
        BigNAS and OFA: the largest, the smallest and `random_subnets` others drawn from the rest, largest first.

        The draw depends only on the seed, the phase and the step: every process of a DDP run draws the same (each
        runs all but the last under no_sync), and a resumed run draws what the uninterrupted one did. It has its
        own generator, so the torch RNG (dropout) and the data order are those of a run without sampling.

        The step's loss stays the sum over the sub-networks run, as the official code's, BigNAS's and OFA's, not
        rescaled by how many run: each sub-network's gradient keeps its weight, and AdamW's step does not depend on
        the scale of the summed gradient (it divides by its root mean square; only eps and the clip at
        `max_grad_norm`, which the smaller sum reaches less often, see it), so rescaling would not restore the
        learning rate of a full step. What sampling changes is which sub-networks move the shared weights.
        """
        others = self.subs[1:-1]
        if self.random_subnets is None or self.random_subnets >= len(others):
            return self
        import numpy as np

        rng = np.random.default_rng([seed, get_args(PhaseName).index(self.name), step])
        drawn = set(rng.choice(len(others), self.random_subnets, replace=False).tolist())
        chosen = [sub for i, sub in enumerate(others) if i in drawn]
        return replace(self, subs=[self.subs[0], *chosen, self.subs[-1]])


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


def _final_phase(
    config: TrainConfig, arch: Architecture, grid: Grid, widths: list[float], depth: float
) -> list[PhasePlan]:
    """Each chosen (width, depth) alone distils from the DynaBERT the phase starts from (the last phase's best) at
    full width and depth: its most accurate network, the teacher the released depth phase uses, and the model the
    student starts from. By default on the logits only (`final_lambdas`), as TinyBERT's prediction-layer distillation
    follows its intermediate-layer one (here the width and depth phases). Each trains as long as a phase
    (--epochs or --max-steps), at a fraction of a depth step's cost (one student, not twelve)."""
    teacher = "the DynaBERT at full width and depth"
    subs = [subnetwork(arch, width, depth) for width, depth in config.final]
    return [PhasePlan(FINAL, [sub], config.final_lambdas, teacher, "start", apart=True) for sub in subs]


# How a phase is planned (one plan, or one per student) from the run's settings, architecture, grid, widths and
# largest depth.
Planner = Callable[[TrainConfig, Architecture, Grid, list[float], float], list[PhasePlan]]


def _one(planner: Callable[[TrainConfig, Architecture, Grid, list[float], float], PhasePlan]) -> Planner:
    """A phase trained as one plan."""
    return lambda *args: [planner(*args)]


PLANNERS: dict[PhaseName, Planner] = {
    "width": _one(_width_phase),
    "depth": _one(_depth_phase),
    "finetune": _one(_finetune_phase),
    FINAL: _final_phase,
}


def plan_phases(config: TrainConfig, checkpoint: Checkpoint) -> list[PhasePlan]:
    """The run's plans in order: its phases, then one final plan per `config.final` sub-network. Each phase's
    sub-networks come largest first (depths descending, widths descending within)."""
    arch = checkpoint.arch
    widths, depths = sorted(set(config.widths), reverse=True), sorted(set(config.depths), reverse=True)
    if not widths or not depths:
        raise EdgebertError("--widths and --depths must each name at least one value")
    names = [*config.phases, *([FINAL] if config.final else [])]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        grid = {(w, d): subnetwork(arch, w, d) for d in depths for w in widths}
        plans = [plan for name in names for plan in PLANNERS[name](config, arch, grid, widths, depths[0])]
    for warning in {str(w.message) for w in caught}:
        warnings.warn(warning, stacklevel=3)
    return [replace(plan, random_subnets=config.random_subnets) for plan in plans]


def shared_plans(plans: list[PhasePlan]) -> list[PhasePlan]:
    """The plans that train the DynaBERT's own weights (all but the final sub-networks written apart)."""
    return [plan for plan in plans if not plan.apart]


def steps_for(config: TrainConfig, examples: int) -> tuple[int, int]:
    """(steps per epoch, total steps) of one phase."""
    per_epoch = math.ceil(examples / config.batch_size)
    total = config.max_steps if config.max_steps is not None else math.ceil(config.epochs * per_epoch)
    return per_epoch, max(1, total)
