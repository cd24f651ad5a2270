"""What a run is given: the options (TinyBERT's defaults) and where its progress goes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edgebert.errors import OptionError

TINYBERT_VARIANTS = 20  # TinyBERT's N for SST-2 (QNLI 20, MNLI and QQP 10, the other tasks 30)
TINYBERT_PROBABILITY = 0.4  # its p
TINYBERT_TOP_K = 15  # its M
DEFAULT_SEED = 42
MLM_BATCH_SIZE = 32  # masked copies per forward pass


class Reporter(Protocol):
    """Progress of the long stages (edgebert.cli.progress.Progress is one)."""

    def stage(self, label: str, total: int | None = None, done: int = 0, unit: str = "step") -> None: ...
    def update(self, done: int | None = None, advance: int = 0, detail: str | None = None) -> None: ...


class Silent:
    """A reporter that shows nothing (library callers, tests)."""

    def stage(self, label: str, total: int | None = None, done: int = 0, unit: str = "step") -> None:
        pass

    def update(self, done: int | None = None, advance: int = 0, detail: str | None = None) -> None:
        pass


@dataclass(frozen=True)
class AugmentOptions:
    """How variants are made: TinyBERT's method and defaults. `batch_size` changes the speed, never the output."""

    variants: int = TINYBERT_VARIANTS
    probability: float = TINYBERT_PROBABILITY
    top_k: int = TINYBERT_TOP_K
    seed: int = DEFAULT_SEED
    mlm: Path | None = None  # a masked-LM directory: candidates of one-wordpiece words
    word_vectors: Path | None = None  # a GloVe-format text file: candidates of words of several wordpieces
    batch_size: int = MLM_BATCH_SIZE

    def __post_init__(self) -> None:
        """Bad values are usage errors (exit 2), refused before any slow work."""
        for option, value in (
            ("--variants", self.variants),
            ("--top-k", self.top_k),
            ("--batch-size", self.batch_size),
        ):
            if value < 1:
                raise OptionError(f"{option} must be at least 1, got {value}")
        if not 0 < self.probability <= 1:  # NaN fails too
            raise OptionError(f"--prob must be in (0, 1], got {self.probability}")
        if self.seed < 0:
            raise OptionError(f"--seed must be 0 or more, got {self.seed}")
