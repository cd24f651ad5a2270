"""`train()`, the public entry: check everything, lock the run's home, start or resume the run, hand it to the loop."""

from __future__ import annotations

import contextlib
from pathlib import Path

from edgebert.atomic import refuse_existing, replace_file
from edgebert.data import Columns
from edgebert.errors import EdgebertError, OptionError
from edgebert.manifests import TrainManifest
from edgebert.train.augmented import given_augmented, own_augmented, read_own
from edgebert.train.config import TrainConfig, check_config
from edgebert.train.distributed import start_runtime
from edgebert.train.inputs import read_inputs
from edgebert.train.loop import Trainer
from edgebert.train.metrics_log import truncate_metrics
from edgebert.train.reporter import Reporter, SilentReporter
from edgebert.train.resume import nothing_to_resume, prepare_run, run_spec
from edgebert.train.run_files import RunFiles, hold_run, replaceable_run
from edgebert.train.state import load_state


def train(
    model: str | Path,
    train_file: str | Path,
    dev_file: str | Path,
    out: str | Path,
    config: TrainConfig = TrainConfig(),  # noqa: B008 (frozen: one shared default is safe)
    eval_file: str | Path | None = None,
    force: bool = False,
    resume: bool = False,
    reporter: Reporter | None = None,
    allow_weak_teacher: bool = False,
    columns: Columns | None = None,
    augmented: str | Path | None = None,
    augment: int | None = None,
) -> TrainManifest | None:
    """Train a DynaBERT from `model`; returns the manifest (on rank 0; None on other ranks).

    The run lives beside --out (`RunFiles`) and is published onto it by one rename when done; with
    `force` it may replace an earlier run `train` wrote there (`replaceable_run`), never the teacher.
    Width and depth phases refuse a teacher no better than a constant guess on the dev set unless
    `allow_weak_teacher`. `columns` names the data files' text and target columns (None: GLUE's names).
    The phases with a teacher train on `augmented`, a file `edgebert augment` made from `train_file`, or on
    `augment` variants per example made in the run's home (`edgebert.train.augmented`).
    """
    check_config(config)
    if augmented is not None and augment is not None:
        raise OptionError("give --augmented FILE or --augment N, not both")
    if augment is not None and augment < 1:
        raise OptionError(f"--augment must be at least 1, got {augment}")
    reporter = reporter or SilentReporter()
    columns = columns or Columns()
    out = Path(out)
    output = {"replaceable": replaceable_run, "protect": [Path(model)]}
    files = RunFiles(out)
    if resume and not files.spec.is_file():  # before any work (and again under the run's lock)
        raise nothing_to_resume(files)
    refuse_existing(out, force=force or resume, **output)  # before any work; a resumed run's own --force below
    refuse_existing(files.home, force=True, protect=[Path(model)])  # nor is it in the run's own directory
    runtime = start_runtime(config.mixed_precision)
    if not runtime.is_main:  # one process shows progress: a log gets each line once
        reporter = SilentReporter()
    if config.batch_size < runtime.world:
        raise EdgebertError(f"batch size {config.batch_size} is smaller than the {runtime.world} processes")
    evaluation = Path(eval_file) if eval_file else None
    inputs = read_inputs(model, Path(train_file), Path(dev_file), evaluation, config, columns)
    trainer = Trainer(inputs, config, out, runtime, reporter, force, allow_weak_teacher)
    if (augmented is not None or augment is not None) and not any(plan.teacher_model for plan in trainer.plans):
        raise EdgebertError(
            "--augmented and --augment are the data of the phases with a teacher (width, depth): this run has none"
        )
    if augmented is not None:
        inputs.augmented = given_augmented(Path(augmented), inputs)
    with hold_run(files) if runtime.is_main else contextlib.nullcontext():
        resume_state, replace = None, force
        if runtime.is_main:
            if augment is not None and resume:  # the file the run made, for prepare_run to compare
                inputs.augmented = own_augmented(files, inputs, augment, Path(dev_file), columns, reporter, True)
            examples = [len(inputs.training_set(plan).encoded) for plan in trainer.plans]
            spec = run_spec(inputs, config, runtime.world, columns, augment)
            resume_state, replace = prepare_run(files, spec, force, resume, examples)
            if augment is not None and not resume:  # once prepare_run has cleared what an earlier run left
                inputs.augmented = own_augmented(files, inputs, augment, Path(dev_file), columns, reporter, False)
                spec = run_spec(inputs, config, runtime.world, columns, augment)
            refuse_existing(out, force=replace, **output)
            files.run_dir.mkdir(exist_ok=True)
            files.work.mkdir(exist_ok=True)
            text = spec.model_copy(update={"replace_out": replace}).model_dump_json(indent=2)
            replace_file(files.spec, lambda tmp: tmp.write_text(text, encoding="utf-8"))
            if resume_state is None or "model" not in resume_state:  # a mid-phase state: once it fits (Trainer)
                truncate_metrics(files.metrics, resume_state)
        runtime.barrier()
        if not runtime.is_main and augment is not None:
            inputs.augmented = read_own(files, inputs)
        if not runtime.is_main and resume and files.state.is_file():
            resume_state = load_state(files.state)
        trainer.replace = replace
        return trainer.run(resume_state)
