"""`edgebert train` loses nothing: --force replaces only a finished run it wrote, by one rename, never before
the new run is done; a run killed early blocks nothing; one run per --out; damaged run files, bad options and a
non-finite loss are one line."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from edgebert.errors import EdgebertError
from edgebert.manifests import TRAIN_MANIFEST, MetricsRecord, training_manifest
from edgebert.train import RunFiles, TrainConfig, train
from edgebert.train.config import check_config
from edgebert.train.loop import Trainer
from edgebert.train.state import load_state
from tests.test_train import small_task

ROOT = Path(__file__).resolve().parent.parent
# One phase, rewired (so phases/rewired/ exists), evaluated at the end only, checkpointed every 2 steps.
OPTIONS = {"phases": "width", "max-steps": "4", "batch-size": "8", "eval-every": "4", "save-every": "2"}
CONFIG = TrainConfig(phases=("width",), max_steps=4, batch_size=8, eval_every=4, save_every=2)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return small_task(tmp_path_factory.mktemp("train-outputs"))


def arguments(task, out: Path, *extra: str) -> list[str]:
    """`train TEACHER --train ... --out OUT --json` with OPTIONS (the same run as CONFIG) and `extra`."""
    options = [f"--{key}={value}" for key, value in OPTIONS.items()]
    return ["train", str(task["teacher"]), "--train", str(task["train"]), "--dev", str(task["dev"]), *options,
            "--out", str(out), "--json", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def finished_run(task) -> Path:
    """A finished run (one step, so its manifest differs from a CONFIG run's); copy it to change it."""
    out = task["root"] / "finished"
    train(task["teacher"], task["train"], task["dev"], out, TrainConfig(phases=("width",), max_steps=1, batch_size=8))
    return out


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` by relative path, with its bytes (directories as None)."""
    return {
        path.relative_to(directory).as_posix(): path.read_bytes() if path.is_file() else None
        for path in sorted(directory.rglob("*"))
    }


def leftovers(parent: Path, keep: set[str]) -> list[str]:
    """Entries of `parent` edgebert left behind: a run's home, staging directories."""
    return sorted(entry.name for entry in parent.iterdir() if entry.name not in keep)


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.code == 1 and len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


# ---- --force replaces only a finished run edgebert wrote, and only once the new one is done ---------------


def _notes_in_a_run(finished_run, directory):
    shutil.copytree(finished_run, directory)
    (directory / "notes.txt").write_text("my notes")


def _data_in_a_run(finished_run, directory):
    shutil.copytree(finished_run, directory)
    (directory / "mydata").mkdir()
    (directory / "mydata" / "train.tsv").write_text("sentence\tlabel\n")


def _stray_marker(finished_run, directory):
    directory.mkdir()
    (directory / TRAIN_MANIFEST).write_text("{}\n")
    (directory / "thesis.tex").write_text("\\documentclass{article}")


def _marker_alone(finished_run, directory):
    directory.mkdir()
    (directory / TRAIN_MANIFEST).write_text("{}\n")


FOREIGN = {
    "notes in a run": (_notes_in_a_run, "notes.txt"),
    "a folder in a run": (_data_in_a_run, "mydata"),
    "a stray marker": (_stray_marker, "not a valid TrainManifest"),
    "a marker alone": (_marker_alone, "not a valid TrainManifest"),
}


@pytest.mark.parametrize("case", list(FOREIGN))
def test_force_refuses_a_directory_train_did_not_write_and_leaves_it_as_it_was(
    task, finished_run, tmp_path, run_cli, case
):
    make, reason = FOREIGN[case]
    out = tmp_path / "proj"
    make(finished_run, out)
    before = snapshot(out)
    line = one_error_line(run_cli(*arguments(task, out, "--force")))
    assert reason in line and "refusing to replace it" in line
    assert snapshot(out) == before
    assert leftovers(tmp_path, {"proj"}) == []


def test_force_never_replaces_the_teacher_inside_out(task, finished_run, tmp_path, run_cli):
    """`train run/phases/width --out run --force`: refused before any work, the run whole."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = snapshot(run)
    common = arguments(task, run, "--force")
    common[1] = str(run / "phases" / "width")
    line = one_error_line(run_cli(*common))
    assert "contains the source model" in line
    assert snapshot(run) == before
    assert leftovers(tmp_path, {"run"}) == []


def test_a_full_disk_during_force_keeps_the_old_run(task, finished_run, tmp_path, run_cli, monkeypatch):
    """torch.save reports a failed write as a RuntimeError naming no file (as it does under RLIMIT_FSIZE)."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = snapshot(run)

    def full_disk(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", full_disk)
    line = one_error_line(run_cli(*arguments(task, run, "--force", "--save-every=1")))
    assert str(RunFiles(run).state) in line and "disk full" in line
    assert snapshot(run) == before
    assert leftovers(tmp_path, {"run"}) == []  # nothing to resume yet: the run's home is gone too


def cli(*args: str, script: str | None = None) -> subprocess.Popen:
    """`python -m edgebert ARGS` (or `python -c SCRIPT ARGS`) on one thread."""
    start = ["-c", script] if script else ["-m", "edgebert"]
    return subprocess.Popen(
        [sys.executable, *start, *args],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkill_during_force_keeps_the_old_run_and_a_second_train_is_refused_at_once(
    task, finished_run, tmp_path, run_cli
):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = snapshot(run)
    process = cli(*arguments(task, run, "--force"))
    state = RunFiles(run).state
    deadline = time.monotonic() + 300
    while not state.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert state.is_file(), process.communicate()[1][-2000:] if process.poll() is not None else "no state.pt"
        for second in (["--resume"], ["--force"]):  # while it trains: at once, one line, nothing touched
            line = one_error_line(run_cli(*arguments(task, run, *second)))
            assert f"is being trained by process {process.pid}" in line
        assert snapshot(run) == before
        while load_state(state)["step"] < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # a busy machine got here before the run's second step: the kill must come after it
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert snapshot(run) == before
    assert load_state(state)["step"] >= 2
    result = run_cli(*arguments(task, run, "--resume"))  # continues the --force run, then publishes it
    assert result.code == 0, result.stderr
    assert training_manifest(run).phases[0].steps == 4  # the new run (the old one took 1 step)
    assert leftovers(tmp_path, {"run"}) == []


# Kills the process the moment it would write run.json: the state a SIGKILL in a run's first moments leaves.
DIE_BEFORE_RUN_JSON = """
import os, signal, sys
import edgebert.train.run
write = edgebert.train.run.replace_file
def dying(path, *args):
    if path.name == "run.json":
        os.kill(os.getpid(), signal.SIGKILL)
    return write(path, *args)
edgebert.train.run.replace_file = dying
from edgebert.cli import main
main(sys.argv[1:])
"""


def test_a_run_killed_before_run_json_blocks_nothing(task, tmp_path, run_cli):
    out = tmp_path / "out"
    process = cli(*arguments(task, out), script=DIE_BEFORE_RUN_JSON)
    process.communicate(timeout=300)
    assert process.returncode == -signal.SIGKILL
    line = one_error_line(run_cli(*arguments(task, out, "--resume")))
    assert "no unfinished edgebert run to resume" in line
    result = run_cli(*arguments(task, out, "--max-steps=1"))
    assert result.code == 0, result.stderr
    assert training_manifest(out).phases[0].steps == 1
    assert leftovers(tmp_path, {"out"}) == []


@pytest.mark.parametrize("staged_spec", [False, True], ids=["empty checkpoints", "run.json staged"])
def test_force_replaces_what_an_older_edgebert_left_when_killed_before_run_json(task, tmp_path, run_cli, staged_spec):
    """edgebert up to 6b0c4f4 trained inside --out: killed before run.json it left `checkpoints/` and nothing else."""
    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)
    if staged_spec:  # a staging directory of a process that is gone, holding a half-written run.json
        dead = subprocess.Popen(["true"])
        dead.wait()
        staging = out / "checkpoints" / f".run.json.{dead.pid}-k1ll3d.partial"
        staging.mkdir()
        (staging / ".edgebert-staging").write_text(f"host {dead.pid}\n")
        (staging / "run.json").write_text('{"version": 1, "teacher_')
    result = run_cli(*arguments(task, out, "--max-steps=1", "--force"))
    assert result.code == 0, result.stderr
    assert training_manifest(out).phases[0].steps == 1
    assert leftovers(tmp_path, {"out"}) == []
    other = tmp_path / "other"  # a checkpoints/ holding a file of the user's is not such a leftover
    (other / "checkpoints").mkdir(parents=True)
    (other / "checkpoints" / "notes.txt").write_text("mine")
    line = one_error_line(run_cli(*arguments(task, other, "--max-steps=1", "--force")))
    assert "refusing to replace it" in line and (other / "checkpoints" / "notes.txt").read_text() == "mine"


# ---- a non-finite loss stops the run; the run's own files are checked on --resume --------------------------


@pytest.fixture(scope="module")
def stopped(task):
    """A CONFIG run whose loss turns NaN at step 3 (after the checkpoint at step 2): (its --out, the error line)."""
    out = task["root"] / "stopped"
    steps = []
    accumulate = Trainer.accumulate_gradients

    def poisoned(self, *args):
        loss = accumulate(self, *args)
        steps.append(loss)
        return float("nan") if len(steps) == 3 else loss

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "accumulate_gradients", poisoned)
        with pytest.raises(EdgebertError) as stopped:
            train(task["teacher"], task["train"], task["dev"], out, CONFIG)
    return out, str(stopped.value)


def test_a_nan_loss_stops_the_run_and_keeps_the_last_checkpoint(task, stopped, tmp_path):
    out, line = stopped
    assert "phase width step 3: the loss is nan" in line and "keeps phase width step 2" in line
    assert not out.exists()
    state = load_state(RunFiles(out).state)
    assert (state["phase_index"], state["step"]) == (0, 2)
    resumed = tmp_path / "stopped"  # the same run, resumed from its checkpoint in a copy
    shutil.copytree(RunFiles(out).home, RunFiles(resumed).home)
    manifest = train(task["teacher"], task["train"], task["dev"], resumed, CONFIG, resume=True)
    assert manifest.phases[0].steps == 4
    assert leftovers(tmp_path, {"stopped"}) == []


def test_a_nan_gradient_stops_the_run(task, tmp_path, monkeypatch):
    accumulate = Trainer.accumulate_gradients

    def poisoned(self, plan, wrapped, student, *args):
        loss = accumulate(self, plan, wrapped, student, *args)
        next(student.parameters()).grad.fill_(float("nan"))
        return loss

    monkeypatch.setattr(Trainer, "accumulate_gradients", poisoned)
    config = TrainConfig(phases=("width",), rewire=False, max_steps=2, batch_size=8)
    with pytest.raises(EdgebertError, match=r"phase width step 1: the loss is [\d.]+ \(gradient norm nan\)"):
        train(task["teacher"], task["train"], task["dev"], tmp_path / "out", config)
    assert leftovers(tmp_path, set()) == []  # nothing to resume: nothing kept


def _empty_state(files: RunFiles) -> None:
    files.state.write_bytes(b"")


def _other_models_state(files: RunFiles) -> None:
    """Another model's weights, in a run killed between a metrics line and its checkpoint (a record past it)."""
    state = torch.load(files.state, weights_only=True)
    name = next(iter(state["model"]))
    state["model"][name] = torch.zeros(3, 5)
    torch.save(state, files.state)
    past = MetricsRecord(
        phase="width", phase_index=0, step=3, epoch=0.75, learning_rate=1e-5, loss={"logits": 0.5},
        selected_on="dev", metrics={"w1-d1": {"accuracy": 0.5}}, score=0.5, best=False, wall_time_s=1.0,
    )  # fmt: skip
    with files.metrics.open("a") as f:
        f.write(past.model_dump_json() + "\n")


def _state_of_a_list(files: RunFiles) -> None:
    torch.save([1, 2], files.state)


def _state_without_fields(files: RunFiles) -> None:
    state = torch.load(files.state, weights_only=True)
    del state["records"]
    torch.save(state, files.state)


def _run_json_list(files: RunFiles) -> None:
    files.spec.write_text("[1, 2]\n")


def _bad_metrics_line(files: RunFiles) -> None:
    with files.metrics.open("a") as f:
        f.write('{"phase": "width", "step": "three"}\n')


DAMAGED = {
    "empty state.pt": (_empty_state, "state.pt is damaged: EOFError"),
    "another model's state.pt": (_other_models_state, "state.pt holds another model's weights"),
    "state.pt holding a list": (_state_of_a_list, "state.pt is damaged: it holds a list"),
    "state.pt without its records": (_state_without_fields, "state.pt is not a valid TrainState: records: missing"),
    "run.json holding a list": (_run_json_list, "run.json is not a valid RunSpec"),
    "a bad metrics.jsonl line": (_bad_metrics_line, "metrics.jsonl: line 1 is not a valid MetricsRecord"),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_run_files_are_one_line_on_resume(task, stopped, tmp_path, run_cli, case):
    damage, message = DAMAGED[case]
    out = tmp_path / "out"
    files = RunFiles(out)
    shutil.copytree(RunFiles(stopped[0]).home, files.home)
    damage(files)
    metrics = files.metrics.read_bytes() if files.metrics.exists() else None
    line = one_error_line(run_cli(*arguments(task, out, "--resume")))
    assert message in line
    assert files.home.is_dir() and not out.exists()  # the run is kept, to be repaired or started again
    assert (files.metrics.read_bytes() if files.metrics.exists() else None) == metrics  # a refused resume drops none


# ---- options: every number in range, refused by name before any work --------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "name"),
    [
        ("--weight-decay", "nan", "weight decay"),
        ("--weight-decay", "-1", "weight decay"),
        ("--warmup", "-1", "warmup"),
        ("--warmup", "5", "warmup"),
        ("--warmup", "nan", "warmup"),
        ("--lr", "inf", "learning rate"),
        ("--epochs", "nan", "epochs"),
        ("--seed", str(2**70), "seed"),
        ("--seed", "-1", "seed"),
    ],
)
def test_options_out_of_range_are_refused_by_name(task, tmp_path, run_cli, option, value, name):
    line = one_error_line(run_cli(*arguments(task, tmp_path / "out", f"{option}={value}")))
    assert line.startswith(f"error: {name} ") and value.lstrip("-") in line
    assert leftovers(tmp_path, set()) == []


@pytest.mark.parametrize(
    ("field", "value", "name"),
    [
        ("max_grad_norm", float("nan"), "max grad norm"),
        ("adam_epsilon", 0.0, "adam epsilon"),
        ("width_lambdas", (1.0, float("inf")), "width-phase loss weight 2"),
        ("depth_lambdas", (-1.0, 1.0), "depth-phase loss weight 1"),
    ],
)
def test_settings_only_the_library_takes_are_checked_too(field, value, name):
    with pytest.raises(EdgebertError, match=f"^{name} must be"):
        check_config(TrainConfig(**{field: value}))
