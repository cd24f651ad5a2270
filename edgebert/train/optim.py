"""The optimizer and learning-rate schedule of a phase, as the official code sets them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgebert.train.config import TrainConfig

if TYPE_CHECKING:
    import torch

ROBERTA_WARMUP = 0.06  # the official warm-up share of the steps for RoBERTa (none for BERT)


def make_optimizer(model: torch.nn.Module, config: TrainConfig, total_steps: int, model_type: str):
    """AdamW with no decay on biases and LayerNorms, linear decay to 0 after an optional warm-up."""
    import torch

    no_decay = ("bias", "LayerNorm.weight")
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if not n.endswith(no_decay)], "weight_decay": config.weight_decay},
        {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, eps=config.adam_epsilon)
    warmup_share = config.warmup if config.warmup is not None else (ROBERTA_WARMUP if model_type == "roberta" else 0.0)
    warmup = int(warmup_share * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
