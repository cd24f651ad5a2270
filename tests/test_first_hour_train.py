"""The first hour with `train` (issue 18): progress in a log, a useless teacher said and refused, a fine-tune
evaluated at what it trained, --resume naming each changed setting, and data with other column names."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from edgebert.train import RunFiles, TrainConfig, train
from tests.labelled import build_classifier
from tests.test_train import small_task

QUICK = dict(batch_size=8, eval_every=4, save_every=2)
FINETUNE = TrainConfig(phases=("finetune",), widths=(1.0,), depths=(1.0,), max_steps=2, **QUICK)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return small_task(tmp_path_factory.mktemp("first-hour-train"))


def edgebert(*args, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The CLI in a subprocess: stdout and stderr are pipes, not a terminal (a log file, CI, nohup)."""
    return subprocess.run(
        [sys.executable, "-m", "edgebert", *map(str, args)],
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def data_options(task) -> list[str]:
    return ["--train", str(task["train"]), "--dev", str(task["dev"]), "--batch-size", "8"]


# ---- 1. progress off a terminal --------------------------------------------------------------------


def test_train_off_a_terminal_prints_plain_progress_lines(task, tmp_path):
    steps = 40
    result = edgebert(
        "train", task["teacher"], *data_options(task), "--phases", "finetune", "--widths", "1", "--depths", "1",
        "--max-steps", steps, "--eval-every", steps, "--save-every", steps, "--out", tmp_path / "out", "--json",
        env={"EDGEBERT_PROGRESS_INTERVAL": "0.05"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = re.findall(rf"^phase finetune: (\d+)/{steps}, loss [\d.]+, (.*), ETA (\w+)$", result.stderr, re.M)
    assert lines and all(0 < int(done) <= steps for done, _, _ in lines), result.stderr
    assert any(re.fullmatch(r"[\d.]+ steps/s|[\d.]+ s/step", rate) and eta[0].isdigit() for _, rate, eta in lines)
    assert "\x1b" not in result.stderr  # no terminal control codes in a log
    json.loads(result.stdout)  # stdout keeps the JSON alone


def test_eval_off_a_terminal_prints_plain_progress_lines(task, run_cli, monkeypatch):
    """In-process (stderr captured: not a terminal), through the same entry point."""
    monkeypatch.setenv("EDGEBERT_PROGRESS_INTERVAL", "0.01")
    result = run_cli("eval", task["teacher"], "--data", task["dev"])
    assert result.code == 0, result.stderr
    assert re.search(r"^evaluating: \d+/12, (w[\d.]+ d[\d.]+, )?.*ETA \w+$", result.stderr, re.M), result.stderr


def test_without_an_interval_override_a_short_command_prints_no_progress(task, run_cli):
    result = run_cli("eval", task["teacher"], "--data", task["dev"], "--width", "0.5")
    assert result.code == 0 and result.stderr == "", result.stderr


def test_an_early_train_error_is_exactly_one_line(task, tmp_path):
    """The progress display used to start before the checkpoint was read: a blank line came before the error."""
    result = edgebert("train", tmp_path / "missing", *data_options(task), "--out", tmp_path / "out")
    assert result.returncode == 1
    assert re.fullmatch(r"error: [^\n]*missing[^\n]*\n", result.stderr), repr(result.stderr)


def test_a_bad_progress_interval_is_one_line(task, run_cli, monkeypatch):
    monkeypatch.setenv("EDGEBERT_PROGRESS_INTERVAL", "soon")
    result = run_cli("eval", task["teacher"], "--data", task["dev"])
    assert result.code == 1
    assert re.fullmatch(r"error: EDGEBERT_PROGRESS_INTERVAL='soon'[^\n]*\n", result.stderr), repr(result.stderr)


# ---- 2. a teacher no better than the majority class ----------------------------------------------------


@pytest.fixture(scope="module")
def constant(task) -> Path:
    """A classifier that answers `neg` whatever the input: zero classifier weights, a bias favouring class 0."""
    directory = build_classifier(task["root"] / "constant", seed=0, dropout=0.0)
    weights = load_file(str(directory / "model.safetensors"))
    weights["classifier.weight"].zero_()
    weights["classifier.bias"][:] = weights["classifier.bias"].new_tensor([5.0, 0.0])
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


def dev_shares(task) -> tuple[float, float]:
    """(share of `neg`, majority share) of the dev labels, counted from the file."""
    labels = [line.split("\t")[-1] for line in task["dev"].read_text().splitlines()[1:]]
    neg = labels.count("neg") / len(labels)
    return neg, max(neg, 1 - neg)


def test_width_phase_refuses_a_constant_teacher_naming_its_accuracy(task, constant, tmp_path, run_cli):
    accuracy, majority = dev_shares(task)
    result = run_cli("train", constant, *data_options(task), "--phases", "width", "--max-steps", "1",
                     "--out", tmp_path / "out")  # fmt: skip
    assert result.code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert f"accuracy {accuracy:.4f}" in lines[0] and f"{majority:.4f} of the dev labels" in lines[0]
    assert "--allow-weak-teacher" in lines[0]
    assert not (tmp_path / "out").exists() and not RunFiles(tmp_path / "out").home.exists()
    result = run_cli("train", constant, *data_options(task), "--phases", "width", "--max-steps", "1",
                     "--out", tmp_path / "out", "--allow-weak-teacher", "--json")  # fmt: skip
    assert result.code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"accuracy {accuracy:.4f}" in warnings[0] and "distilling it anyway" in warnings[0]
    assert [phase["name"] for phase in json.loads(result.stdout)["phases"]] == ["width"]


def test_a_fine_tune_ending_at_the_majority_class_warns(task, constant, tmp_path):
    accuracy, majority = dev_shares(task)
    config = dataclasses.replace(FINETUNE, learning_rate=1e-9)
    with pytest.warns(UserWarning, match=rf"accuracy {accuracy:.4f}.*\({majority:.4f} of the dev labels"):
        train(constant, task["train"], task["dev"], tmp_path / "out", config)


def test_weak_means_no_better_than_the_majority_class_or_chance():
    import numpy as np

    from edgebert.train.evaluation import WEAK_CORRELATION, WEAK_MARGIN, weak_result

    targets = np.array([1] * 14 + [0] * 10)  # majority 14 / 24 = 0.583: the tests' teacher scores 15 / 24
    assert weak_result({"accuracy": 15 / 24}, targets, 2) is None
    assert "(0.5833 of the dev labels" in weak_result({"accuracy": 14 / 24 + WEAK_MARGIN}, targets, 2)
    balanced = np.array([0, 1, 2] * 8)  # three classes: chance 1/3 is the floor
    assert weak_result({"accuracy": 0.34}, balanced, 3) is not None
    assert weak_result({"accuracy": 0.40}, balanced, 3) is None
    scores = np.linspace(0, 5, 24)
    assert "undefined" in weak_result({"pearson": float("nan"), "spearman": float("nan")}, scores, 1)
    assert weak_result({"pearson": WEAK_CORRELATION, "spearman": 0.0}, scores, 1) is not None
    assert weak_result({"pearson": 0.5, "spearman": 0.5}, scores, 1) is None


# ---- 3. plain fine-tuning is evaluated at what it trained --------------------------------------------------


def test_a_finetune_only_run_evaluates_only_its_subnetwork(task, tmp_path):
    manifest = train(task["teacher"], task["train"], task["dev"], tmp_path / "out", FINETUNE)
    assert list(manifest.dev_metrics) == ["w1-d1"]
    written = json.loads((tmp_path / "out" / "edgebert-train.json").read_text())
    assert list(written["dev_metrics"]) == ["w1-d1"]


# ---- 4. resuming with other settings -----------------------------------------------------------------------


@pytest.fixture
def resume(task, run_cli):
    """`train --resume` of the fine-tune `start_and_stop` began, with `extra` options."""

    def run(out: Path, *extra: str):
        return run_cli("train", task["teacher"], *data_options(task), "--phases", "finetune", "--widths", "1",
                       "--depths", "1", "--eval-every", "4", "--out", out, "--resume", "--json", *extra)  # fmt: skip

    return run


def start_and_stop(task, out: Path, stop_after: int = 2) -> None:
    """Start a 4-step fine-tune saving every 2 steps, stopped (by a failing evaluation) after `stop_after`."""
    from unittest import mock

    import edgebert.train.loop as training

    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        raise KeyboardInterrupt

    config = TrainConfig(phases=("finetune",), widths=(1.0,), depths=(1.0,), max_steps=4, batch_size=8,
                         eval_every=stop_after + 1, save_every=stop_after)  # fmt: skip
    with mock.patch.object(training, "evaluate_subnetworks", failing), pytest.raises(KeyboardInterrupt):
        train(task["teacher"], task["train"], task["dev"], out, config)
    assert calls and RunFiles(out).state.is_file()


def test_resume_may_change_save_and_eval_intervals(task, tmp_path, resume):
    out = tmp_path / "out"
    start_and_stop(task, out)
    result = resume(out, "--max-steps", "4", "--save-every", "1", "--eval-every", "2")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["phases"][0]["steps"] == 4


def test_resume_refuses_other_settings_naming_each(task, tmp_path, resume):
    out = tmp_path / "out"
    start_and_stop(task, out)
    result = resume(out, "--max-steps", "4", "--save-every", "2", "--lr", "1e-4", "--seed", "7")
    assert result.code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "learning_rate (2e-05, now 0.0001)" in lines[0] and "seed (42, now 7)" in lines[0]
    assert "save_every" not in lines[0].split("; resume")[0]


def test_resume_refuses_another_length_for_the_phase_under_way_and_says_why(task, tmp_path, resume):
    out = tmp_path / "out"
    start_and_stop(task, out)
    result = resume(out, "--max-steps", "6", "--save-every", "2")
    assert result.code == 1
    assert "max_steps (4, now 6): phase 1 is under way and its learning-rate decay follows its steps" in result.stderr


def test_ctrl_c_in_train_says_resume_continues(task, tmp_path, run_cli):
    """KeyboardInterrupt inside a run (after its first checkpoint) reaches the CLI: exit 130, one line."""
    from unittest import mock

    import edgebert.train.loop as training

    with mock.patch.object(training, "evaluate_subnetworks", side_effect=KeyboardInterrupt):
        result = run_cli("train", task["teacher"], *data_options(task), "--phases", "finetune", "--widths", "1",
                         "--depths", "1", "--max-steps", "4", "--eval-every", "3", "--save-every", "2",
                         "--out", tmp_path / "out")  # fmt: skip
    assert result.code == 130
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted") and "--resume` continues" in lines[0]
    assert RunFiles(tmp_path / "out").state.is_file()


# ---- 6. data whose columns are not GLUE's -----------------------------------------------------------------


def test_train_reads_other_column_names(task, tmp_path, run_cli):
    def convert(source: Path, target: Path) -> Path:
        rows = [line.split("\t") for line in source.read_text().splitlines()[1:]]
        target.write_text("id,question,answer,y\n" + "".join(f"{i},{a},{b},{y}\n" for i, a, b, y in rows))
        return target

    train_file, dev_file = convert(task["train"], tmp_path / "t.csv"), convert(task["dev"], tmp_path / "d.csv")
    common = ["--train", train_file, "--dev", dev_file, "--phases", "finetune", "--widths", "1", "--depths", "1",
              "--max-steps", "1", "--batch-size", "8", "--json"]  # fmt: skip
    result = run_cli("train", task["teacher"], *common, "--out", tmp_path / "plain")
    assert result.code == 1 and "--text-column" in result.stderr
    result = run_cli("train", task["teacher"], *common, "--out", tmp_path / "out",
                     "--text-column", "question,answer", "--label-column", "y")  # fmt: skip
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["train_data"]["examples"] == 32
