"""Measuring a run's models on --dev (or --eval): every sub-network's metrics, the selection score, a weak teacher."""

from __future__ import annotations

import math
import warnings
from functools import partial
from typing import TYPE_CHECKING

from edgebert.errors import EdgebertError
from edgebert.evaluate import metrics, predict, primary_metric
from edgebert.subnet import Subnetwork, subnet_key, subnetwork
from edgebert.train.distributed import Runtime
from edgebert.train.inputs import EvalSet, Inputs
from edgebert.train.reporter import Reporter

if TYPE_CHECKING:
    import numpy as np

    from edgebert.dynabert import DynaBert

# A model no better than a constant guess on --dev learnt nothing to pass on: accuracy at most the majority class's
# share of the dev labels (or chance, 1 / classes) plus this margin, or a Pearson correlation at most WEAK_CORRELATION.
WEAK_MARGIN = 0.02
WEAK_CORRELATION = 0.1


def evaluate_subnetworks(model: DynaBert, evalset: EvalSet, subs: list[Subnetwork], device: str) -> dict[str, dict]:
    """Task metrics of each sub-network in eval mode, as `edgebert eval` computes them: {"w0.5-d1": {...}}."""
    was_training = model.training
    model.eval()
    results = {
        subnet_key(sub.width, sub.depth): metrics(
            predict(partial(model, sub=sub), evalset.encoded, device), evalset.targets
        )
        for sub in subs
    }
    model.train(was_training)
    return results


def selection_score(results: dict[str, dict]) -> float:
    """Sum of the task metric over the sub-networks (official); an undefined correlation counts 0."""
    total = 0.0
    for values in results.values():
        value = primary_metric(values)[1]
        total += 0.0 if math.isnan(value) else value
    return total


def weak_result(values: dict[str, float], targets: np.ndarray, num_labels: int) -> str | None:
    """How a model scoring `values` on data with gold `targets` is no better than a constant guess; None if it is."""
    import numpy as np

    if "accuracy" in values:
        majority = float(np.bincount(targets.astype(np.int64)).max() / len(targets))
        floor = max(majority, 1 / num_labels)
        if values["accuracy"] <= floor + WEAK_MARGIN:
            return (
                f"accuracy {values['accuracy']:.4f}, no better than always answering the majority class "
                f"({majority:.4f} of the dev labels; chance {1 / num_labels:.4f}; margin {WEAK_MARGIN})"
            )
        return None
    pearson = values["pearson"]
    if math.isnan(pearson):
        return "an undefined Pearson correlation (constant predictions)"
    if pearson <= WEAK_CORRELATION:
        return f"Pearson {pearson:.4f}, no better than a constant guess (at most {WEAK_CORRELATION})"
    return None


def check_teacher(teacher: DynaBert, inputs: Inputs, runtime: Runtime, reporter: Reporter, allow_weak: bool) -> None:
    """One pass over --dev before distilling: a teacher no better than a constant guess (a fine-tune that ended at
    the majority class) would make hours of training copy nothing, so it is refused unless `allow_weak`."""
    full = subnetwork(teacher.arch, 1.0, 1.0)
    values = next(iter(evaluate_subnetworks(teacher, inputs.dev_set, [full], runtime.device).values()))
    weak = weak_result(values, inputs.dev_set.targets, inputs.num_labels)
    if weak is None:
        name, value = primary_metric(values)
        reporter.message(f"teacher: {name} {value:.4f} on {inputs.dev.path}")
        return
    line = f"the teacher {inputs.checkpoint.path} scores {weak} on {inputs.dev.path}"
    if not allow_weak:
        raise EdgebertError(
            f"{line}: distilling it teaches nothing; fine-tune it until it beats that (check the labels, --lr, "
            "steps), or pass --allow-weak-teacher"
        )
    if runtime.is_main:
        warnings.warn(f"{line}; distilling it anyway (--allow-weak-teacher)", stacklevel=2)
