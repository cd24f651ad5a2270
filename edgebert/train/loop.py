"""The training loop: a run's phases in order; each step runs the phase's sub-networks on one batch (all, or the
sandwich rule's draw), then steps once."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebert.data import collate
from edgebert.errors import EdgebertError
from edgebert.evaluate import metrics, predict, primary_metric
from edgebert.manifests import (
    REWIRE_MANIFEST,
    TRAIN_MANIFEST,
    PhaseRecord,
    RewireManifest,
    TrainManifest,
    read_manifest,
)
from edgebert.reading import file_sha256
from edgebert.subnet import subnetwork
from edgebert.train.config import TrainConfig
from edgebert.train.distributed import Runtime, autocast, gather_rng, parallel
from edgebert.train.evaluation import check_teacher, evaluate_subnetworks, selection_score
from edgebert.train.inputs import Inputs, epoch_batches
from edgebert.train.losses import LossTerms, number, subnetwork_loss
from edgebert.train.metrics_log import append_metrics, truncate_metrics
from edgebert.train.models import load_best, load_model, rewire_teacher, save_best, save_phase_model, save_slice
from edgebert.train.optim import make_optimizer
from edgebert.train.phases import PhasePlan, plan_phases, shared_plans, steps_for
from edgebert.train.publish import final_metrics, publish_run, train_manifest, write_final
from edgebert.train.reporter import Reporter
from edgebert.train.run_files import RunFiles
from edgebert.train.state import PhaseProgress, RunHistory, restore_phase

if TYPE_CHECKING:
    from edgebert.dynabert import DynaBert


class Trainer:
    """One run: phases in order, each resumable from its last checkpoint."""

    def __init__(
        self,
        inputs: Inputs,
        config: TrainConfig,
        out: Path,
        runtime: Runtime,
        reporter: Reporter,
        replace: bool = False,
        allow_weak_teacher: bool = False,
    ):
        self.inputs, self.config, self.runtime, self.reporter = inputs, config, runtime, reporter
        self.files = RunFiles(out)
        self.replace = replace  # --force: the finished run may replace an earlier one at --out
        self.allow_weak_teacher = allow_weak_teacher  # distil a teacher no better than a constant guess anyway
        self.checkpoint = inputs.checkpoint
        self.plans = plan_phases(config, self.checkpoint)
        self.history = RunHistory(self.files.state, [plan.label for plan in self.plans])
        self.rewiring: RewireManifest | None = None
        import torch

        self.scaler = torch.amp.GradScaler(enabled=runtime.autocast_dtype is torch.float16)

    def run(self, resume_state: dict | None) -> TrainManifest | None:
        """All phases from the start, or from `resume_state` (mid-phase, or at a phase boundary)."""
        start, mid_phase = 0, None
        if resume_state is not None:
            self.history.resume(resume_state)
            start = resume_state["phase_index"]
            mid_phase = resume_state if "model" in resume_state else None
        if resume_state is None and self.plans[0].teacher_model is not None:
            check_teacher(self._load(None), self.inputs, self.runtime, self.reporter, self.allow_weak_teacher)
        if self.config.rewires and resume_state is None:
            self._rewire()
        elif self.config.rewires:
            self.rewiring = read_manifest(self.files.phase_dir("rewired") / REWIRE_MANIFEST, RewireManifest)
        for index in range(start, len(self.plans)):
            self._run_phase(index, mid_phase if index == start else None)
        return self._finish(resume_state.get("final_sha256") if resume_state is not None else None)

    def _run_phase(self, index: int, resume_state: dict | None) -> None:
        """Phase `index`, from its start or from a mid-phase `resume_state`; its best model ends in its directory."""
        import torch

        plan, config = self.plans[index], self.config
        torch.manual_seed(config.seed + index)
        student, teacher = self._load(self._start_dir(index)), self._teacher(index)
        examples = self.inputs.training_set(plan).encoded
        per_epoch, total = steps_for(config, len(examples))
        optimizer, scheduler = make_optimizer(student, config, total, self.checkpoint.model_type)
        progress = PhaseProgress()
        if resume_state is not None:
            progress = restore_phase(
                self.files.state, resume_state, student, optimizer, scheduler, self.scaler, self.runtime.rank
            )
            if self.runtime.is_main:  # only now that the state fits this run: a refused resume changes no file
                truncate_metrics(self.files.metrics, resume_state)
        wrapped = parallel(student, self.runtime)
        student.train()
        self.reporter.phase_started(plan.label, total, progress.step)
        batches = epoch_batches(examples.lengths, config, per_epoch, progress.step)
        terms = LossTerms()
        while progress.step < total:
            step_plan = plan.step_plan(config.seed, progress.step)
            loss = self.accumulate_gradients(step_plan, wrapped, student, teacher, next(batches), terms)
            self._optimizer_step(plan, progress.step, loss, student, optimizer, scheduler)
            progress.step += 1
            self.reporter.step(progress.step, loss)
            last = progress.step == total
            if progress.step % config.eval_every == 0 or last:
                self._evaluate(index, student, progress, scheduler.get_last_lr()[0], terms.mean(), per_epoch)
                terms = LossTerms()
            if progress.step % config.save_every == 0 or last:
                self._save_state(index, progress, student, optimizer, scheduler)
        self._end_phase(index, progress, total, per_epoch)

    # -- one step

    def accumulate_gradients(
        self, plan: PhasePlan, wrapped, student: DynaBert, teacher: DynaBert | None, batch: list[int], terms: LossTerms
    ) -> float:
        """Every sub-network of `plan` (a step's: `PhasePlan.step_plan`) on this process's share of `batch`, gradients
        summed by backward; returns the loss sum.

        `wrapped` is `student`, or its DistributedDataParallel wrapper (synchronised on the last sub-network only).
        """
        import torch

        runtime, examples = self.runtime, self.inputs.training_set(plan)
        train = examples.encoded
        local = batch[runtime.rank :: runtime.world]
        length = max(len(train.input_ids[i]) for i in batch)  # same padding on every process
        inputs = {k: v.to(runtime.device) for k, v in collate(train, local, length).items()}
        # Each process's loss is a mean over its share: scaled so DDP's average is the mean over the global batch.
        scale = len(local) * runtime.world / len(batch)
        targets = None if examples.targets is None else torch.as_tensor(examples.targets[local]).to(runtime.device)
        references = self._teacher_outputs(plan, teacher, inputs)
        total = 0.0
        for position, sub in enumerate(plan.subs):
            sync = position == len(plan.subs) - 1 or runtime.world == 1
            with wrapped.no_sync() if not sync else contextlib.nullcontext():
                with autocast(runtime):
                    out = wrapped(**inputs, sub=sub)
                    reference = references.get(sub.width if plan.same_width else 1.0)
                    loss, parts = subnetwork_loss(out, reference, sub, plan.lambdas, targets)
                self.scaler.scale(loss * scale).backward()
            terms.add(*parts)
            total += number(loss)
        terms.batches += 1
        return total

    def _teacher_outputs(self, plan: PhasePlan, teacher: DynaBert | None, inputs: dict) -> dict[float, Any]:
        """The frozen teacher's outputs on the batch, by width: at full width, or (same-width) at each student's."""
        import torch

        if teacher is None:
            return {}
        widths = [s.width for s in plan.subs] if plan.same_width else [1.0]
        with torch.no_grad(), autocast(self.runtime):
            return {
                width: teacher(**inputs, sub=subnetwork(teacher.arch, width, 1.0) if width != 1.0 else None)
                for width in dict.fromkeys(widths)
            }

    def _optimizer_step(self, plan: PhasePlan, step: int, loss: float, student: DynaBert, optimizer, scheduler) -> None:
        """Clip the summed gradients and step; a non-finite loss or gradient stops the run, naming what is saved."""
        import torch

        scaler = self.scaler
        if self.runtime.autocast_dtype is torch.float16:
            scaler.unscale_(optimizer)
        norm = float(torch.nn.utils.clip_grad_norm_(student.parameters(), self.config.max_grad_norm))
        # fp16's scaler skips steps with inf gradients by design; a non-finite loss is never one
        if not math.isfinite(loss) or not (math.isfinite(norm) or scaler.is_enabled()):
            raise EdgebertError(
                f"phase {plan.label} step {step + 1}: the loss is {loss:g} (gradient norm {norm:g}), so training "
                f"stopped; {self.files.state} keeps {self.history.saved} (lower --lr, check the data)"
            )
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

    # -- evaluation and checkpoints

    def _evaluate(self, index: int, student, progress: PhaseProgress, lr: float, loss: dict, per_epoch: int) -> None:
        """All sub-networks of the phase on the selection set (rank 0): the best sum is kept and the record logged."""
        if not self.runtime.is_main:
            return
        plan = self.plans[index]
        evalset = self.inputs.eval_set or self.inputs.dev_set
        results = evaluate_subnetworks(student, evalset, plan.subs, self.runtime.device)
        score = selection_score(results)
        improved = score > progress.best_score
        if improved:
            progress.best_score, progress.best_step = score, progress.step
            save_best(student, self.files.best(plan.directory))
        record = {
            "phase": plan.name,
            "phase_index": index,
            "step": progress.step,
            "epoch": round(progress.step / per_epoch, 4),
            "learning_rate": lr,
            "loss": loss,
            "selected_on": self.inputs.selected_on,
            "metrics": results,
            "score": score,
            "best": improved,
            "wall_time_s": round(self.history.elapsed(), 2),
        }
        append_metrics(self.files.metrics, record)
        self.reporter.evaluated(record)

    def _save_state(self, index: int, progress: PhaseProgress, student: DynaBert, optimizer, scheduler) -> None:
        """A mid-phase checkpoint for --resume (every process's RNG state, written by rank 0)."""
        rng = gather_rng(self.runtime)
        if self.runtime.is_main:
            self.history.save_mid_phase(index, progress, student, optimizer, scheduler, self.scaler, rng)
        self.runtime.barrier()

    def _end_phase(self, index: int, progress: PhaseProgress, total: int, per_epoch: int) -> None:
        """The phase's best model becomes its directory (where the next phase starts) and the phase is recorded."""
        plan, dev_metrics = self.plans[index], None
        if self.runtime.is_main:
            best = load_best(self.checkpoint, self.files.best(plan.directory), self.inputs.new_labels)
            if plan.apart:
                dev_metrics = self._write_apart(plan, best)
            else:
                save_phase_model(best, self.checkpoint, self.files.phase_dir(plan.directory), self.runtime.device)
        self.history.records.append(
            PhaseRecord(
                name=plan.name,
                teacher=plan.teacher,
                subnetworks=[(s.width, s.depth) for s in plan.subs],
                steps=total,
                epochs=round(total / per_epoch, 4),
                best_step=progress.best_step,
                best_score=progress.best_score,
                wall_time_s=round(progress.elapsed(), 2),
                dev_metrics=dev_metrics,
            )
        )
        if self.runtime.is_main:
            self.history.save_boundary(index + 1)
        self.runtime.barrier()

    def _write_apart(self, plan: PhasePlan, best: DynaBert) -> dict[str, float]:
        """A final plan's best model as a dense slice of its sub-network in its folder; returns the slice's metrics
        on --dev (the model written, measured as `edgebert eval` measures)."""
        folder = self.files.phase_dir(plan.directory)
        sliced = save_slice(best, self.checkpoint, plan.subs[0], self.files.full_size(plan.directory), folder)
        dev = self.inputs.dev_set
        values = metrics(predict(sliced.model.to(self.runtime.device), dev.encoded, self.runtime.device), dev.targets)
        name, value = primary_metric(values)
        self.reporter.message(f"{plan.label}: {name} {value:.4f} on {self.inputs.dev.path}, written to {folder}")
        return values

    # -- models: where each phase starts and who teaches it

    def _load(self, directory: Path | None) -> DynaBert:
        """A DynaBert from a phase directory, or from the teacher checkpoint when None."""
        return load_model(self.checkpoint, directory, self.inputs.new_labels, self.runtime.device)

    def _start_dir(self, index: int) -> Path | None:
        """Where phase `index`'s student starts: the best of the last phase before it that is not written apart, the
        rewired teacher, or the teacher."""
        before = shared_plans(self.plans[:index])
        if before:
            return self.files.phase_dir(before[-1].directory)
        return self.files.phase_dir("rewired") if self.config.rewires else None

    def _teacher(self, index: int) -> DynaBert | None:
        """Phase `index`'s frozen teacher: the model given to `train` or the one the phase starts from; or none."""
        source = self.plans[index].teacher_model
        if source is None:
            return None
        teacher = self._load(None if source == "given" else self._start_dir(index))
        teacher.eval().requires_grad_(False)
        return teacher

    def _rewire(self) -> None:
        """The students start from the teacher rewired (heads and neurons sorted by importance), saved as `rewired`."""
        rewired, self.rewiring = rewire_teacher(
            self.checkpoint, self.inputs.dev, self.config.importance_accumulation, self.reporter
        )
        if self.runtime.is_main:
            extra = {REWIRE_MANIFEST: self.rewiring.model_dump_json(indent=2)}
            save_phase_model(rewired, self.checkpoint, self.files.phase_dir("rewired"), self.runtime.device, extra)
        self.runtime.barrier()

    # -- the end

    def _finish(self, written: str | None) -> TrainManifest | None:
        """Write the final model and its manifest (unless a resumed run had: `written`), then publish the run onto
        --out by one rename and fill the eval cache; returns the manifest on rank 0."""
        manifest, work, shared = None, self.files.work, shared_plans(self.plans)
        if self.runtime.is_main and written is None:
            final_dir = self.files.phase_dir(shared[-1].directory)
            model, runtime, history = self._load(final_dir), self.runtime, self.history
            dev_metrics = final_metrics(model, shared, self.inputs, runtime.device, self.reporter, self.files.out)
            manifest = train_manifest(
                self.inputs, self.config, history.records, self.rewiring, runtime, dev_metrics, history.elapsed()
            )
            write_final(work, final_dir, manifest)
            history.save_boundary(len(self.plans), final_sha256=file_sha256(work / TRAIN_MANIFEST))
        elif self.runtime.is_main:
            manifest = read_manifest(work / TRAIN_MANIFEST, TrainManifest)
        if manifest is not None:
            publish_run(self.files, manifest, shared, self.inputs, self.replace)
        self.runtime.barrier()
        return manifest
