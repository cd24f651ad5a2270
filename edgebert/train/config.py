"""A run's settings: every hyperparameter with its official default (`TrainConfig`), and `check_config`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from edgebert.data import MAX_LENGTH
from edgebert.errors import EdgebertError
from edgebert.subnet import TRAINED_DEPTHS, TRAINED_WIDTHS, check_fractions

Phase = Literal["width", "depth", "finetune"]
PHASES: tuple[Phase, ...] = get_args(Phase)  # in the order they run
# The phase that specialises chosen sub-networks after the others (`TrainConfig.final`), each a student of its own.
FINAL = "final"
PhaseName = Literal[Phase, "final"]
DepthTeacher = Literal["full-width", "same-width"]
MAX_SEED = 2**32 - 1  # numpy's and most tools' seed range (torch.manual_seed takes 64 bits)


@dataclass(frozen=True)
class TrainConfig:
    """Every hyperparameter of a run; the defaults are the official ones."""

    phases: tuple[Phase, ...] = ("width", "depth")
    widths: tuple[float, ...] = tuple(reversed(TRAINED_WIDTHS))
    depths: tuple[float, ...] = tuple(reversed(TRAINED_DEPTHS))
    epochs: float = 3.0
    max_steps: int | None = None  # per phase; overrides epochs
    train_examples: int | None = None  # a seeded random subset of the training file
    batch_size: int = 32  # global, over all processes
    max_length: int = MAX_LENGTH
    learning_rate: float = 2e-5
    adam_epsilon: float = 1e-8
    weight_decay: float = 0.0
    warmup: float | None = None  # share of steps; None: 0 for BERT, 0.06 for RoBERTa (official)
    max_grad_norm: float = 1.0
    seed: int = 42
    depth_teacher: DepthTeacher = "full-width"
    width_lambdas: tuple[float, float] = (1.0, 0.1)  # (logits, hidden states)
    depth_lambdas: tuple[float, float] = (1.0, 1.0)
    eval_every: int = 50
    save_every: int = 50
    rewire: bool | None = None  # None: when the width phase runs
    importance_accumulation: Literal["official", "per-batch"] = "official"
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    # Levers for the small sub-networks (issue 20); the defaults leave a run as the official code trains it.
    random_subnets: int | None = None  # per step the largest, the smallest and this many others (None: all)
    final: tuple[tuple[float, float], ...] = ()  # (width, depth) specialised one by one after the last phase
    final_lambdas: tuple[float, float] = (1.0, 0.0)  # the final phase's: TinyBERT's prediction-layer distillation

    def hyperparameters(self) -> dict[str, Any]:
        """The settings as run.json reads them back (tuples, nested ones too, as lists), so the two compare equal."""
        return {key: _listed(value) for key, value in asdict(self).items()}

    @property
    def rewires(self) -> bool:
        return "width" in self.phases if self.rewire is None else self.rewire


def check_config(config: TrainConfig) -> None:
    unknown = [p for p in config.phases if p not in PHASES]
    if unknown or not config.phases:
        raise EdgebertError(f"unknown phase {unknown[0] if unknown else '(none)'}: choose from {', '.join(PHASES)}")
    if len(set(config.phases)) != len(config.phases):
        raise EdgebertError(f"a phase is named twice in {','.join(config.phases)}")
    order = [PHASES.index(p) for p in config.phases]
    if order != sorted(order):
        raise EdgebertError("phases run in the order width, depth, finetune")
    positive = {
        "epochs": config.epochs,
        "batch size": config.batch_size,
        "max length": config.max_length,
        "learning rate": config.learning_rate,
        "eval every": config.eval_every,
        "save every": config.save_every,
        "adam epsilon": config.adam_epsilon,
        "max grad norm": config.max_grad_norm,
    }
    for name, value in positive.items():
        if not value > 0 or not _finite(value):
            raise EdgebertError(f"{name} must be more than zero, got {value}")
    at_least_zero = {
        "weight decay": config.weight_decay,
        **{f"width-phase loss weight {i}": value for i, value in enumerate(config.width_lambdas, 1)},
        **{f"depth-phase loss weight {i}": value for i, value in enumerate(config.depth_lambdas, 1)},
        **{f"final-phase loss weight {i}": value for i, value in enumerate(config.final_lambdas, 1)},
    }
    for name, value in at_least_zero.items():
        if not value >= 0 or not _finite(value):
            raise EdgebertError(f"{name} must be zero or more, got {value}")
    if config.warmup is not None and not 0 <= config.warmup <= 1:  # NaN fails both comparisons
        raise EdgebertError(f"warmup is a share of the steps, from 0 to 1: got {config.warmup}")
    if not 0 <= config.seed <= MAX_SEED:
        raise EdgebertError(f"seed must be a whole number from 0 to {MAX_SEED}, got {config.seed}")
    if config.max_steps is not None and config.max_steps < 1:
        raise EdgebertError(f"max steps must be at least 1, got {config.max_steps}")
    if config.train_examples is not None and config.train_examples < 1:
        raise EdgebertError(f"train examples must be at least 1, got {config.train_examples}")
    if config.max_length < 8:
        raise EdgebertError(f"max length {config.max_length} is too short (at least 8 tokens)")
    if config.random_subnets is not None and config.random_subnets < 0:
        raise EdgebertError(f"random sub-networks per step must be 0 or more, got {config.random_subnets}")
    for width, depth in config.final:
        check_fractions(width, depth)
    if len(set(config.final)) != len(config.final):
        raise EdgebertError("a final sub-network is named twice")


def _listed(value: Any) -> Any:
    return [_listed(item) for item in value] if isinstance(value, tuple) else value


def _finite(value: float) -> bool:
    """Python ints are always finite (and math.isfinite overflows on one of 400 digits)."""
    return isinstance(value, int) or math.isfinite(value)
