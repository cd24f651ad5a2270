"""Whether --resume may continue the run kept beside --out (same teacher, data, settings), or a fresh run clears it."""

from __future__ import annotations

import shutil

from edgebert.data import Columns
from edgebert.errors import EdgebertError
from edgebert.manifests import TRAIN_MANIFEST, RunSpec, read_manifest
from edgebert.reading import file_sha256
from edgebert.train.config import TrainConfig
from edgebert.train.inputs import Inputs
from edgebert.train.phases import steps_for
from edgebert.train.run_files import RunFiles
from edgebert.train.state import load_state

# Settings --resume may change: when a run evaluates and checkpoints (not what it trains), and how long each phase
# trains, which sets the phase's learning-rate decay: it may change where it changes no step already taken.
RESUME_MAY_CHANGE = ("eval_every", "save_every")
PHASE_LENGTH = ("max_steps", "epochs")


def run_spec(inputs: Inputs, config: TrainConfig, world: int, columns: Columns, augment: int | None) -> RunSpec:
    """What must match for --resume to continue a run: same teacher, data (and its columns, and the augmented data
    with its settings), hyperparameters and processes."""
    augmented = inputs.augmented
    return RunSpec(
        text_column=list(columns.text) if columns.text is not None else None,
        label_column=columns.label,
        teacher_sha256=inputs.checkpoint.weights_sha256,
        train_sha256=inputs.train.sha256,
        dev_sha256=inputs.dev.sha256,
        eval_sha256=inputs.eval.sha256 if inputs.eval else None,
        hyperparameters=config.hyperparameters(),
        world_size=world,
        augment=augment,
        augmented_sha256=augmented.manifest.augmented.sha256 if augmented else None,
        augment_settings=augmented.manifest.settings.model_dump() if augmented else None,
    )


def resume_conflicts(previous: RunSpec, spec: RunSpec, state: dict | None, examples: list[int]) -> list[str]:
    """Each setting of a resumed run (`spec`) that differs from the run it continues and would change what that run
    already trained, named with both values. Phase lengths may change except for the phase under way, whose
    learning-rate decay (and warm-up) follows its number of steps; `examples`: each phase's training examples per
    epoch."""
    kept = ("version", "replace_out", "hyperparameters")  # not settings, or compared one by one below
    old, new = ({**{k: v for k, v in x if k not in kept}, **x.hyperparameters} for x in (previous, spec))
    mid_phase = state is not None and "model" in state
    conflicts = []
    for name in dict.fromkeys([*new, *old]):
        if old.get(name) == new.get(name) or name in RESUME_MAY_CHANGE:
            continue
        why = ""
        if name in PHASE_LENGTH:
            if not mid_phase or state["phase_index"] >= len(examples):  # a state.pt of other phases: refused later
                continue
            per_epoch = examples[state["phase_index"]]
            lengths = [steps_for(_length_settings(values), per_epoch)[1] for values in (previous, spec)]
            if lengths[0] == lengths[1]:
                continue
            why = f": phase {state['phase_index'] + 1} is under way and its learning-rate decay follows its steps"
        values = "other content" if name.endswith("sha256") else f"{old.get(name)!r}, now {new.get(name)!r}"
        conflicts.append(f"{name} ({values}){why}")
    return conflicts


def _length_settings(spec: RunSpec) -> TrainConfig:
    """The settings `steps_for` reads, from a run spec's hyperparameters."""
    return TrainConfig(**{key: spec.hyperparameters[key] for key in (*PHASE_LENGTH, "batch_size")})


def prepare_run(
    files: RunFiles, spec: RunSpec, force: bool, resume: bool, examples: list[int]
) -> tuple[dict | None, bool]:
    """With the run's home locked: check what --resume continues, or clear what a fresh run starts over.

    Returns the resume state (None: from the start) and whether the finished run may replace --out.
    """
    out = files.out
    if not resume:
        if files.state.is_file() and not force:
            raise EdgebertError(
                f"{out} has an unfinished run (in {files.home}): --resume continues it, --force starts again"
            )
        for leftover in (files.run_dir, files.work, files.aside, files.augmented_dir):
            if leftover.is_dir():
                shutil.rmtree(leftover)
        return None, force
    if not files.spec.is_file():
        raise nothing_to_resume(files)
    previous = read_manifest(files.spec, RunSpec)
    state = load_state(files.state) if files.state.is_file() else None
    conflicts = resume_conflicts(previous, spec, state, examples)
    if conflicts:
        raise EdgebertError(
            f"--resume: {out} was started with other settings: {'; '.join(conflicts)}; resume with the values it was "
            f"started with (only {', '.join(RESUME_MAY_CHANGE)} may change, and {', '.join(PHASE_LENGTH)} at a phase "
            "boundary)"
        )
    if state is not None and state.get("final_sha256") and not _unpublished(files, state["final_sha256"]):
        shutil.rmtree(files.home)  # killed after publishing, before this cleanup
        raise EdgebertError(f"{out} has no unfinished edgebert run to resume: {out} holds the finished run")
    return state, force or previous.replace_out


def nothing_to_resume(files: RunFiles) -> EdgebertError:
    finished = f": {files.out} holds a finished run" if (files.out / TRAIN_MANIFEST).is_file() else ""
    return EdgebertError(f"{files.out} has no unfinished edgebert run to resume{finished}")


def _unpublished(files: RunFiles, manifest_sha256: str) -> bool:
    """Whether the run's output still holds the finished run (after publishing it holds the run it replaced)."""
    manifest = files.work / TRAIN_MANIFEST
    return manifest.is_file() and file_sha256(manifest) == manifest_sha256
