"""The losses a sub-network trains on: distillation from a teacher's logits and hidden states, or gold labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgebert.rewire import task_loss
from edgebert.subnet import Subnetwork

if TYPE_CHECKING:
    import torch


def soft_cross_entropy(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Batch mean of -sum_c softmax(teacher) * log_softmax(student), temperature 1."""
    return -(teacher.softmax(dim=-1) * student.log_softmax(dim=-1)).sum(dim=-1).mean()


def logit_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """SCE for classes; MSE between predictions for a regression head (edgebert's choice, see `edgebert.train`)."""
    import torch.nn.functional as F

    if student.shape[-1] == 1:
        return F.mse_loss(student, teacher)
    return soft_cross_entropy(student, teacher)


def hidden_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], sub: Subnetwork) -> torch.Tensor:
    """Sum of MSEs: student state i (embeddings, then each kept layer) meets teacher state (kept + [L])[i]."""
    import torch.nn.functional as F

    matched = [*sub.layers, len(teacher) - 1]
    return sum(F.mse_loss(s, teacher[t]) for s, t in zip(student, matched, strict=True))


def subnetwork_loss(
    out: Any, reference: Any | None, sub: Subnetwork, lambdas: tuple[float, float], targets: torch.Tensor | None
) -> tuple[torch.Tensor, tuple[float, float, float]]:
    """One sub-network's loss and its (logits, hidden states, task) terms: distillation from the teacher's outputs
    `reference`, weighted by `lambdas`, or the task loss on gold `targets` when the phase has no teacher (a phase
    with one never reads them: augmented data has none)."""
    if reference is None:
        task = task_loss(out.logits.float(), targets)
        return task, (0.0, 0.0, number(task))
    logits = logit_loss(out.logits.float(), reference.logits.float())
    hidden = hidden_loss(out.hidden_states, reference.hidden_states, sub)
    return lambdas[0] * logits + lambdas[1] * hidden, (number(logits), number(hidden), 0.0)


@dataclass
class LossTerms:
    logits: float = 0.0
    hidden: float = 0.0
    task: float = 0.0
    batches: int = 0

    def add(self, logits: float, hidden: float, task: float) -> None:
        self.logits, self.hidden, self.task = self.logits + logits, self.hidden + hidden, self.task + task

    def mean(self) -> dict[str, float]:
        n = max(1, self.batches)
        return {"logits": self.logits / n, "hidden": self.hidden / n, "task": self.task / n}


def number(value: Any) -> float:
    """A loss (tensor or float) as a float."""
    return float(value.detach()) if hasattr(value, "detach") else float(value)
