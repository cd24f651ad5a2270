"""`edgebert train`'s levers for the small sub-networks (issue 20): the sandwich rule (`--random-subnets`) runs the
largest, the smallest and K drawn others per step, drawn by seed, phase and step alone (the same after --resume),
and leaves a run without it as it was; the `final` phase (`--final`) writes each specialised sub-network apart as a
dense slice, leaves the DynaBERT as the depth phase made it, records each, and resumes mid-way."""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from edgebert.checkpoint import load_checkpoint
from edgebert.dynabert import DynaBert
from edgebert.errors import EdgebertError
from edgebert.evaluate import metrics, predict
from edgebert.manifests import SLICE_MANIFEST, training_manifest
from edgebert.slicing import load_slice, slice_checkpoint
from edgebert.subnet import TRAINED_GRID, subnet_key, subnetwork
from edgebert.train import RunFiles, TrainConfig, train
from edgebert.train.inputs import read_inputs
from edgebert.train.loop import Trainer
from edgebert.train.phases import plan_phases
from edgebert.train.run_files import replaceable_run
from tests.test_train import small_task

# The depth phase alone (no rewiring: the given teacher teaches), 4 steps of 8, evaluated and saved every 2.
BASE = dict(phases=("depth",), max_steps=4, batch_size=8, eval_every=2, save_every=2)
FINAL = ((0.25, 0.5), (0.5, 0.75))
SMALLEST, LARGEST = (0.25, 0.5), (1.0, 1.0)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return small_task(tmp_path_factory.mktemp("train-levers"))


def run(task, out: Path, config: TrainConfig, resume: bool = False):
    return train(task["teacher"], task["train"], task["dev"], out, config, resume=resume)


@contextlib.contextmanager
def recorded_steps(crash_at: int | None = None) -> Iterator[list[list[tuple[float, float]]]]:
    """Per optimizer step, the (width, depth) of every student forward it ran (the teacher and evaluations run in
    eval mode and are not counted); with `crash_at`, step number `crash_at` (from 1) raises instead of running."""
    steps: list[list[tuple[float, float]]] = []
    accumulate, forward = Trainer.accumulate_gradients, DynaBert.forward

    def record_step(self, *args):
        if len(steps) + 1 == crash_at:
            raise RuntimeError("crash")
        steps.append([])
        return accumulate(self, *args)

    def record_forward(self, *args, sub=None, **kwargs):
        if self.training:
            steps[-1].append((sub.width, sub.depth))
        return forward(self, *args, sub=sub, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "accumulate_gradients", record_step)
        patch.setattr(DynaBert, "forward", record_forward)
        yield steps


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def metrics_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# ---- the sandwich rule ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_run(task) -> tuple[Path, list]:
    """A run without the levers: (its --out, the sub-networks each step ran)."""
    out = task["root"] / "plain"
    with recorded_steps() as steps:
        run(task, out, TrainConfig(**BASE))
    return out, steps


# The sampled run: 6 steps, evaluated every 3, saved every 2.
SAMPLED = TrainConfig(random_subnets=2, **{**BASE, "max_steps": 6, "eval_every": 3})


@pytest.fixture(scope="module")
def sampled_run(task) -> tuple[Path, list]:
    out = task["root"] / "sampled"
    with recorded_steps() as steps:
        run(task, out, SAMPLED)
    return out, steps


def test_without_sampling_every_step_runs_the_whole_phase_in_the_official_order(plain_run):
    assert plain_run[1] == [list(TRAINED_GRID)] * 4


def test_sampling_runs_the_largest_the_smallest_and_k_others_each_step(sampled_run):
    out, steps = sampled_run
    assert len(steps) == 6
    for ran in steps:
        assert len(ran) == 4 and ran[0] == LARGEST and ran[-1] == SMALLEST, ran
        assert len(set(ran)) == 4 and ran == sorted(ran, key=list(TRAINED_GRID).index)  # others, largest first
    assert len({tuple(ran) for ran in steps}) > 1  # drawn anew each step
    manifest = training_manifest(out)
    assert len(manifest.dev_metrics) == 12  # every sub-network is still evaluated
    assert manifest.hyperparameters["random_subnets"] == 2


def test_the_draw_depends_only_on_the_seed_the_phase_and_the_step(task):
    """What makes every DDP process draw the same: no process state (torch, numpy or random RNG) enters it."""
    teacher = load_checkpoint(task["teacher"])
    width, depth = plan_phases(TrainConfig(phases=("width", "depth"), random_subnets=3), teacher)

    def draws(plan, seed: int) -> list[list[tuple[float, float]]]:
        return [[(s.width, s.depth) for s in plan.step_plan(seed, step).subs] for step in range(30)]

    first = draws(depth, 42)
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    assert draws(depth, 42) == first
    assert draws(depth, 43) != first
    assert all(len(ran) == 5 and ran[0] == LARGEST and ran[-1] == SMALLEST for ran in first)
    assert {sub for ran in first for sub in ran[1:-1]} == set(TRAINED_GRID[1:-1])  # every other one gets drawn
    assert draws(width, 42) == [[(w, 1.0) for w in (1.0, 0.75, 0.5, 0.25)]] * 30  # K >= the others: all run
    (none,) = plan_phases(TrainConfig(phases=("width",), random_subnets=0), teacher)
    assert draws(none, 42) == [[(1.0, 1.0), (0.25, 1.0)]] * 30


def test_a_resumed_run_draws_what_the_uninterrupted_one_did(task, sampled_run, tmp_path):
    plain, steps = sampled_run
    out = tmp_path / "resumed"
    with recorded_steps(crash_at=4) as before, pytest.raises(RuntimeError, match="crash"):
        run(task, out, SAMPLED)  # crashes at step 4, after the checkpoint at step 2
    assert torch.load(RunFiles(out).state, weights_only=True)["step"] == 2
    with recorded_steps() as after:
        run(task, out, SAMPLED, resume=True)
    assert before == steps[:3] and after == steps[2:]
    assert max_diff(weights(plain), weights(out)) <= 1e-6


# ---- the final phase -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def final_run(task) -> Path:
    out = task["root"] / "final"
    run(task, out, TrainConfig(final=FINAL, **BASE))
    return out


def test_the_final_phase_leaves_the_dynabert_as_the_depth_phase_made_it(final_run, plain_run):
    published = weights(final_run)
    assert max_diff(published, weights(plain_run[0])) == 0
    assert max_diff(published, weights(final_run / "phases" / "depth")) == 0


@pytest.mark.parametrize(("width", "depth"), FINAL)
def test_each_final_subnetwork_is_a_dense_trained_slice_apart(task, final_run, width, depth):
    folder = final_run / "phases" / "final" / subnet_key(width, depth)
    sliced = load_slice(folder)
    sub = subnetwork(load_checkpoint(final_run).arch, width, depth)
    config = sliced.model.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (
        len(sub.layers),
        sub.heads,
        sub.ffn_neurons,
    )
    manifest = json.loads((folder / SLICE_MANIFEST).read_text())
    assert (manifest["width"], manifest["depth"], manifest["trained_as_dynabert"]) == (width, depth, True)
    assert "not_dynabert" not in manifest
    # specialised: not the DynaBERT's own slice at that sub-network
    shared = slice_checkpoint(load_checkpoint(final_run), width, depth).model.state_dict()
    assert max_diff(sliced.model.state_dict(), shared) > 0
    # the record's dev metrics are those of the slice written, measured on --dev
    records = training_manifest(final_run).phases
    (record,) = [r for r in records if r.name == "final" and r.subnetworks == [(width, depth)]]
    dev = read_inputs(final_run, task["train"], task["dev"], None, TrainConfig()).dev_set
    assert record.dev_metrics == metrics(predict(sliced.model, dev.encoded), dev.targets)


def test_the_manifest_and_metrics_record_each_final_subnetwork(final_run):
    manifest = training_manifest(final_run)
    assert [p.name for p in manifest.phases] == ["depth", "final", "final"]
    lines = metrics_lines(final_run)
    for index, ((width, depth), record) in enumerate(zip(FINAL, manifest.phases[1:], strict=True), 1):
        assert record.teacher == "the DynaBERT at full width and depth"
        assert record.subnetworks == [(width, depth)] and record.steps == 4 and set(record.dev_metrics) == {"accuracy"}
        evaluations = [line for line in lines if line["phase_index"] == index]
        assert [(e["phase"], e["step"], list(e["metrics"])) for e in evaluations] == [
            ("final", step, [subnet_key(width, depth)]) for step in (2, 4)
        ]
        best = max(evaluations, key=lambda e: e["score"])  # the first of equal scores, as selection keeps it
        assert (record.best_step, record.best_score) == (best["step"], best["score"])
    assert manifest.hyperparameters["final"] == [list(key) for key in FINAL]
    assert len(manifest.dev_metrics) == 12  # the DynaBERT's grid, as without a final phase


def test_a_run_with_final_subnetworks_is_one_force_may_replace(final_run):
    assert replaceable_run(final_run) is None


def test_a_final_subnetwork_exports_without_a_warning(final_run, tmp_path, run_cli):
    folder = final_run / "phases" / "final" / subnet_key(*SMALLEST)
    result = run_cli("export", folder, "--format", "onnx", "--out", tmp_path / "small.onnx")
    assert result.code == 0, result.stderr
    assert "not trained" not in result.stderr


def test_the_final_phase_resumes_mid_subnetwork(task, final_run, tmp_path):
    out, config = tmp_path / "resumed", TrainConfig(final=FINAL, **BASE)
    with recorded_steps(crash_at=4 + 4 + 3), pytest.raises(RuntimeError, match="crash"):
        run(task, out, config)  # in the second final sub-network, after its checkpoint at step 2
    state = torch.load(RunFiles(out).state, weights_only=True)
    assert (state["phase_index"], state["step"]) == (2, 2)
    with pytest.raises(EdgebertError, match="final"):  # another final phase would not be this run's
        run(task, out, TrainConfig(final=FINAL[:1], **BASE), resume=True)
    run(task, out, config, resume=True)
    for width, depth in FINAL:
        folder = Path("phases") / "final" / subnet_key(width, depth)
        assert max_diff(weights(final_run / folder), weights(out / folder)) <= 1e-6
    assert [(e["phase_index"], e["step"]) for e in metrics_lines(out)] == [
        (e["phase_index"], e["step"]) for e in metrics_lines(final_run)
    ]
    assert [r.model_dump(exclude={"wall_time_s"}) for r in training_manifest(out).phases] == [
        r.model_dump(exclude={"wall_time_s"}) for r in training_manifest(final_run).phases
    ]


# ---- the command line ----------------------------------------------------------------------------


def test_the_options_reach_the_config(run_cli, monkeypatch):
    configs = []
    monkeypatch.setattr("edgebert.cli.train.run_training", lambda *args, **kwargs: configs.append(args[4]))
    common = ["train", ".", "--train", "t.tsv", "--dev", "d.tsv", "--out", "out"]
    result = run_cli(*common, "--random-subnets", "3", "--final", "w0.25-d0.5, w0.5-d0.75")
    assert result.code == 0, result.stderr
    assert (configs[0].random_subnets, configs[0].final) == (3, FINAL)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--final", "w0.25"], "is not a sub-network key"),
        (["--final", "w2-d0.5"], "width must be in (0, 1]"),
        (["--final", "w0.25-d0.5,w0.25-d0.5"], "a final sub-network is named twice"),
        (["--final", "w0.01-d0.5"], "keeps no whole attention head"),
        (["--random-subnets", "-1"], "random sub-networks per step must be 0 or more"),
    ],
)
def test_bad_lever_options_are_one_line(task, tmp_path, run_cli, option, message):
    data = ["--train", task["train"], "--dev", task["dev"], "--out", tmp_path / "out", "--max-steps", "1"]
    result = run_cli("train", task["teacher"], *data, *option)
    assert result.code == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert not (tmp_path / "out").exists()
