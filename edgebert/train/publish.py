"""The end of a run: the final model measured on its grid, written with its manifest, and published onto --out."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from edgebert import __version__
from edgebert.atomic import publish, remove_stale_staging
from edgebert.checkpoint import load_checkpoint
from edgebert.evaluate import model_key, primary_metric, record_result
from edgebert.manifests import TRAIN_MANIFEST, FileRef, PhaseRecord, RewireManifest, TrainManifest
from edgebert.subnet import TRAINED_GRID, Architecture, Subnetwork, costs, subnet_key, subnetwork
from edgebert.train.config import TrainConfig
from edgebert.train.distributed import Runtime
from edgebert.train.evaluation import evaluate_subnetworks, weak_result
from edgebert.train.inputs import Inputs
from edgebert.train.phases import PhasePlan
from edgebert.train.reporter import Reporter
from edgebert.train.run_files import PHASES_DIR, RunFiles, replaceable_run

if TYPE_CHECKING:
    from edgebert.dynabert import DynaBert


def final_grid(plans: list[PhasePlan], arch: Architecture) -> list[Subnetwork]:
    """The sub-networks the final model is evaluated at: every one trained, and the whole trained grid when a
    width or depth phase made a DynaBERT (plain fine-tuning trained only its own sub-networks)."""
    trained = {(s.width, s.depth) for plan in plans for s in plan.subs}
    if any(plan.name != "finetune" for plan in plans):
        trained |= set(TRAINED_GRID)
    grid = sorted(trained, key=lambda wd: (-wd[1], -wd[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # off-grid points were warned about when the run started
        return [subnetwork(arch, w, d) for w, d in grid]


def final_metrics(
    model: DynaBert, plans: list[PhasePlan], inputs: Inputs, device: str, reporter: Reporter, out: Path
) -> dict[str, dict]:
    """The final model (the last phase's best) on --dev at its grid; a fine-tune that learnt nothing is warned about."""
    subs = final_grid(plans, model.arch)
    many = f"{len(subs)} sub-networks" if len(subs) > 1 else "sub-network"
    reporter.message(f"evaluating the final model's {many} on {inputs.dev.path}")
    dev_metrics = evaluate_subnetworks(model, inputs.dev_set, subs, device)
    if plans[-1].name == "finetune":
        largest = plans[-1].subs[0]
        weak = weak_result(
            dev_metrics[subnet_key(largest.width, largest.depth)], inputs.dev_set.targets, inputs.num_labels
        )
        if weak is not None:
            warnings.warn(
                f"the fine-tuned model {out} scores {weak} on {inputs.dev.path}: it learnt "
                "nothing a teacher could pass on (check the labels, --lr, steps); width and depth phases refuse "
                "it without --allow-weak-teacher",
                stacklevel=2,
            )
    return dev_metrics


def train_manifest(
    inputs: Inputs,
    config: TrainConfig,
    records: list[PhaseRecord],
    rewiring: RewireManifest | None,
    runtime: Runtime,
    dev_metrics: dict[str, dict],
    wall_time: float,
) -> TrainManifest:
    """How the model was trained: teacher, data (augmented too), phases, hyperparameters, rewiring and its metrics
    on --dev."""
    return TrainManifest(
        edgebert_version=__version__,
        teacher=FileRef(path=str(inputs.checkpoint.path.resolve()), sha256=inputs.checkpoint.weights_sha256),
        train_data=FileRef(
            path=str(inputs.train.path.resolve()), sha256=inputs.train.sha256, examples=len(inputs.indices)
        ),
        dev_data=FileRef(path=str(inputs.dev.path.resolve()), sha256=inputs.dev.sha256, examples=len(inputs.dev)),
        eval_data=(
            FileRef(path=str(inputs.eval.path.resolve()), sha256=inputs.eval.sha256, examples=len(inputs.eval))
            if inputs.eval
            else None
        ),
        selected_on=inputs.selected_on,
        metric=primary_metric(next(iter(dev_metrics.values())))[0],
        phases=records,
        hyperparameters=config.hyperparameters(),
        rewiring=rewiring,
        dev_metrics=dev_metrics,
        world_size=runtime.world,
        device=runtime.device,
        wall_time_s=round(wall_time, 2),
        augmented=inputs.augmented.record() if inputs.augmented is not None else None,
    )


def write_final(work: Path, final_dir: Path, manifest: TrainManifest) -> None:
    """The final model (a copy of `final_dir`) and its manifest into the run's output."""
    for path in final_dir.iterdir():  # the run is private until published: no staging needed in it
        shutil.copyfile(path, work / path.name)
    (work / TRAIN_MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")


def publish_run(
    files: RunFiles, manifest: TrainManifest, plans: list[PhasePlan], inputs: Inputs, replace: bool
) -> None:
    """One rename puts the finished run onto --out (an earlier run, with --force `replace`, stays whole until then);
    its dev metrics fill the eval cache, so `pick` ranks by them."""
    for folder in (files.work, files.work / PHASES_DIR):  # staging left by a process killed while saving
        remove_stale_staging(folder)
    options = {"force": replace, "replaceable": replaceable_run, "protect": [inputs.checkpoint.path]}
    publish(files.work, files.out, files.home, **options)
    checkpoint = load_checkpoint(files.out)
    key = model_key(checkpoint)
    for sub in final_grid(plans, checkpoint.arch):
        metrics = manifest.dev_metrics[subnet_key(sub.width, sub.depth)]
        record_result(key, inputs.dev, inputs.max_length, costs(checkpoint.arch, sub), metrics)
    shutil.rmtree(files.home, ignore_errors=True)  # with the earlier run the rename swapped into it
