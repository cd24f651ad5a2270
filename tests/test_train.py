"""`edgebert train`: sub-networks on views equal their slices, one step equals a hand-written reference,
training works on a small task, resume after SIGKILL and 2-process DDP reproduce a plain run, the
output is a stock checkpoint, and bad input gets one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

from edgebert.checkpoint import load_checkpoint
from edgebert.data import collate
from edgebert.dynabert import Dropout, DynaBert
from edgebert.manifests import TRAIN_MANIFEST, training_manifest
from edgebert.parameter_names import canonical_state, stock_state
from edgebert.slicing import slice_checkpoint
from edgebert.subnet import TRAINED_GRID, subnetwork
from edgebert.train import RunFiles, SilentReporter, TrainConfig, train
from edgebert.train.distributed import Runtime
from edgebert.train.inputs import read_inputs
from edgebert.train.loop import Trainer
from edgebert.train.losses import LossTerms
from tests.labelled import TOKENIZED_KINDS, build_classifier, sentences
from tests.models import EVERY_GRID_POINT, KINDS
from tests.reference import SharedSubnetworks

ROOT = Path(__file__).resolve().parent.parent
QUICK = dict(batch_size=8, eval_every=4, save_every=2)


def write_task(path: Path, count: int, seed: int, regression: bool = False) -> Path:
    """A learnable pair task: label pos when the first sentence is longer (or the length difference as a score)."""
    rows = ["index\tsentence1\tsentence2\t" + ("score" if regression else "label")]
    for i, (a, b) in enumerate(sentences(count, seed)):
        diff = len(a.split()) - len(b.split())
        target = f"{max(0.0, min(5.0, 2.5 + diff / 4)):.2f}" if regression else ("pos" if diff > 0 else "neg")
        rows.append(f"{i}\t{a}\t{b}\t{target}")
    path.write_text("\n".join(rows) + "\n")
    return path


def small_task(root: Path) -> dict[str, Path]:
    """A seeded tiny teacher (it beats the majority class on its dev set) with 32 training and 24 dev pairs."""
    return {
        "root": root,
        "teacher": build_classifier(root / "teacher", seed=0, dropout=0.0),
        "train": write_task(root / "train.tsv", 32, seed=11),
        "dev": write_task(root / "dev.tsv", 24, seed=12),
    }


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("task")
    return {
        "teacher": build_classifier(root / "teacher", seed=0, dropout=0.0),
        "other": build_classifier(root / "other", seed=7, dropout=0.0),
        "train": write_task(root / "train.tsv", 48, seed=11),
        "dev": write_task(root / "dev.tsv", 24, seed=12),
        "root": root,
    }


# ---- the model -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dynabert(tiny_models):
    """(checkpoint, DynaBert on it) of a tiny classifier, built once per module."""
    cache = {}

    def build(kind: str):
        if kind not in cache:
            checkpoint = load_checkpoint(tiny_models[kind])
            cache[kind] = checkpoint, DynaBert.from_checkpoint(checkpoint, Dropout()).eval()
        return cache[kind]

    return build


@EVERY_GRID_POINT
@pytest.mark.parametrize("kind", [f"{kind}-cls" for kind in KINDS])
def test_subnetworks_on_views_equal_their_dense_slices(dynabert, kind, width, depth):
    checkpoint, model = dynabert(kind)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (3, 11), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # right padding
    types = torch.zeros_like(ids)
    dense = slice_checkpoint(checkpoint, width, depth).model
    with torch.no_grad():
        expected = dense(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        got = model(ids, mask, types, sub=subnetwork(checkpoint.arch, width, depth)).logits
    assert (got - expected).abs().max() <= 1e-5


# ---- one optimizer step against a hand-written reference -----------------------------------------


def sce(student, teacher):
    return -(torch.softmax(teacher, -1) * torch.log_softmax(student, -1)).sum(-1).mean()


@pytest.fixture(scope="module")
def teachers(task, tmp_path_factory):
    """(teacher, other) classifiers of a kind, built once: `task`'s for BERT."""
    built = {"bert": (task["teacher"], task["other"])}

    def build(kind: str) -> tuple[Path, Path]:
        if kind not in built:
            root = tmp_path_factory.mktemp(kind)
            built[kind] = tuple(
                build_classifier(root / name, seed=seed, dropout=0.0, kind=kind)
                for name, seed in (("teacher", 0), ("other", 7))
            )
        return built[kind]

    return build


@pytest.mark.parametrize(
    ("kind", "phase", "depth_teacher"),
    [
        ("bert", "width", "full-width"),
        ("bert", "depth", "full-width"),
        ("bert", "depth", "same-width"),
        *((kind, "width", "full-width") for kind in TOKENIZED_KINDS if kind != "bert"),
    ],
)
def test_one_step_gradients_equal_the_hand_written_summed_losses(task, teachers, tmp_path, kind, phase, depth_teacher):
    """The teacher is `other` (width phase: the fine-tuned model; depth phase: DynaBERT_W, at full width as the
    released code or at each student's width as the paper)."""
    teacher_dir, other_dir = teachers(kind)
    config = TrainConfig(phases=(phase,), rewire=False, depth_teacher=depth_teacher, **QUICK)
    inputs = read_inputs(other_dir, task["train"], task["dev"], None, config)
    trainer = Trainer(inputs, config, tmp_path / "run", Runtime(), SilentReporter())
    plan = trainer.plans[0]
    student = DynaBert.from_checkpoint(load_checkpoint(teacher_dir), Dropout(0.0, 0.0, 0.0)).train()
    teacher = trainer._load(None).eval().requires_grad_(False)
    batch = list(range(8))
    trainer.accumulate_gradients(plan, student, student, teacher, batch, LossTerms())

    # ModernBERT's eager attention with masked scores replaced (tests.reference.masked_eager_attention): its default
    # sdpa differs on padding that sees no key, which the hidden-state losses include, and eager passes gradients
    # through the scores its mask absorbs
    load = dict(attn_implementation="masked_eager") if kind == "modernbert" else {}
    reference = transformers.AutoModelForSequenceClassification.from_pretrained(teacher_dir, **load).train()
    teacher_ref = SharedSubnetworks(transformers.AutoModelForSequenceClassification.from_pretrained(other_dir, **load))
    batch_inputs = collate(inputs.encoded_train, batch)
    run = SharedSubnetworks(reference)
    lambdas = (1.0, 0.1) if phase == "width" else (1.0, 1.0)
    subnets = [(w, 1.0) for w in (1.0, 0.75, 0.5, 0.25)] if phase == "width" else list(TRAINED_GRID)
    assert [(s.width, s.depth) for s in plan.subs] == subnets  # largest first
    arch = load_checkpoint(teacher_dir).arch
    for width, depth in subnets:
        with torch.no_grad():
            teacher_ref.model.eval()
            teacher_logits, teacher_states = teacher_ref(
                batch_inputs, width if depth_teacher == "same-width" else 1.0, 1.0
            )
        logits, states = run(batch_inputs, width, depth)
        matched = [*subnetwork(arch, width, depth).layers, 12]  # teacher state i: output of layer i - 1
        hidden = sum(torch.nn.functional.mse_loss(s, teacher_states[t]) for s, t in zip(states, matched, strict=True))
        (lambdas[0] * sce(logits, teacher_logits) + lambdas[1] * hidden).backward()

    # the student's parameters under the stock class's names (`bert.`, or `electra.` and classifier.dense/out_proj)
    ours = stock_state(canonical_state(dict(student.net.named_parameters()), student.names), kind)
    compared = 0
    for name, param in reference.named_parameters():
        if param.grad is None:
            continue
        got = ours[name].grad
        # relative to the tensor's largest gradient; key biases get ~1e-8 of rounding noise where theory says 0
        assert (got - param.grad).abs().max() <= 1e-6 + 1e-4 * param.grad.abs().max(), name
        compared += 1
    assert compared == len(list(reference.parameters()))


def test_a_separate_eval_file_selects_and_says_so(task, tmp_path):
    config = TrainConfig(phases=("width",), max_steps=2, **QUICK)
    manifest = train(task["teacher"], task["train"], task["dev"], tmp_path / "out", config, eval_file=task["train"])
    assert manifest.selected_on == "eval" and manifest.eval_data.examples == 48
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert {r["selected_on"] for r in records} == {"eval"}


# ---- training end to end -------------------------------------------------------------------------


def distance_to_teacher(model_dir: Path, teacher_dir: Path, data) -> float:
    """Mean squared distance between each grid sub-network's logits and the teacher's, over the dev set.

    (Top-1 agreement would be noise here: the tiny teacher's logits sit near its decision boundary.)
    """
    from edgebert.evaluate import predict, tokenize

    checkpoint, teacher = load_checkpoint(model_dir), load_checkpoint(teacher_dir)
    encoded = tokenize(data, checkpoint)
    reference = predict(slice_checkpoint(teacher, 1.0, 1.0).model, encoded)
    distances = [
        ((predict(slice_checkpoint(checkpoint, w, d).model, encoded) - reference) ** 2).mean() for w, d in TRAINED_GRID
    ]
    return float(sum(distances) / len(distances))


def test_training_lowers_the_loss_and_subnetworks_approach_the_teacher(task, tmp_path):
    from edgebert.data import read_dataset

    out = tmp_path / "dynabert"
    config = TrainConfig(max_steps=24, learning_rate=3e-4, **{**QUICK, "eval_every": 6, "save_every": 100})
    manifest = train(task["teacher"], task["train"], task["dev"], out, config)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for phase in ("width", "depth"):
        losses = [r["loss"]["logits"] + r["loss"]["hidden"] for r in records if r["phase"] == phase]
        assert losses[-1] < 0.85 * losses[0], (phase, losses)
    dev = read_dataset(task["dev"])
    before = distance_to_teacher(out / "phases" / "rewired", task["teacher"], dev)  # training-free pruning
    after = distance_to_teacher(out, task["teacher"], dev)
    assert after < 0.5 * before, (before, after)
    # The manifest records what the run did; the eval cache holds the final model's grid.
    assert [p.name for p in manifest.phases] == ["width", "depth"]
    assert manifest.rewiring is not None and manifest.selected_on == "dev"
    assert len(manifest.dev_metrics) == 12
    assert training_manifest(out).trains_subnetworks
    from edgebert.checkpoint import load_checkpoint
    from edgebert.evaluate import cached_results, model_key

    cached = cached_results(model_key(load_checkpoint(out)))
    assert {(r.width, r.depth) for r in cached} == set(TRAINED_GRID)


def assert_slices_are_the_stock_subnetworks(out, stock, dev) -> None:
    """Slices of the trained checkpoint `out` equal the stock model's own sub-networks (heads and neurons masked)."""
    checkpoint = load_checkpoint(out)
    data = collate(read_inputs(out, dev, dev, None, TrainConfig()).encoded_train, list(range(6)))
    for width, depth in ((1.0, 1.0), (0.5, 0.75), (0.25, 0.5)):
        with torch.no_grad():
            expected, _ = SharedSubnetworks(stock)(data, width, depth)
            got = slice_checkpoint(checkpoint, width, depth).model(**data).logits
        assert (got - expected).abs().max() <= 1e-5


def test_output_is_a_stock_checkpoint_that_slices_exactly(task, tmp_path):
    out = tmp_path / "dynabert"
    train(task["teacher"], task["train"], task["dev"], out, TrainConfig(max_steps=2, **QUICK))
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForSequenceClassification"]
    stock = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert type(stock) is transformers.BertForSequenceClassification
    assert_slices_are_the_stock_subnetworks(out, stock, task["dev"])
    for name in ("vocab.txt", "tokenizer_config.json", TRAIN_MANIFEST, "metrics.jsonl"):
        assert (out / name).is_file()
    assert not (out / "checkpoints").exists() and not RunFiles(out).home.exists()  # resume state: gone once done


def test_modernbert_trains_from_the_command_line(teachers, task, tmp_path, run_cli):
    """`edgebert train` on a tiny ModernBERT (rewire, width, depth): a stock ModernBertForSequenceClassification whose
    slices equal the stock model's own sub-networks (its eager attention, heads and neurons masked)."""
    teacher, _ = teachers("modernbert")
    out = tmp_path / "dynabert"
    flags = ("--max-steps", "2", "--batch-size", "8", "--eval-every", "2", "--allow-weak-teacher")  # random weights
    result = run_cli("train", teacher, "--train", task["train"], "--dev", task["dev"], "--out", out, *flags)
    assert result.code == 0, result.stderr
    stock = transformers.AutoModelForSequenceClassification.from_pretrained(out, attn_implementation="eager").eval()
    assert type(stock) is transformers.ModernBertForSequenceClassification
    assert training_manifest(out).rewiring is not None
    assert_slices_are_the_stock_subnetworks(out, stock, task["dev"])


def test_bare_encoder_fine_tunes_as_regression_then_distils(tmp_path):
    """STS-B style: float scores give a one-output head (finetune phase), which then trains as a teacher."""
    bare = build_classifier(tmp_path / "bare", num_labels=None)  # a bare encoder with a real tokenizer
    train_file, dev_file = write_task(tmp_path / "t.tsv", 32, 1, True), write_task(tmp_path / "d.tsv", 16, 2, True)
    teacher = tmp_path / "teacher"
    config = TrainConfig(phases=("finetune",), widths=(1.0,), depths=(1.0,), max_steps=4, **QUICK)
    manifest = train(bare, train_file, dev_file, teacher, config)
    assert manifest.metric == "pearson"
    assert load_checkpoint(teacher).arch.num_labels == 1
    assert not training_manifest(teacher).trains_subnetworks  # ordinary fine-tuning
    config = TrainConfig(phases=("width",), max_steps=2, **QUICK)  # 4 steps taught it nothing: distil it anyway
    manifest = train(teacher, train_file, dev_file, tmp_path / "dyna", config, allow_weak_teacher=True)
    assert set(manifest.dev_metrics["w0.25-d1"]) == {"pearson", "spearman"}


# ---- resume and several processes ----------------------------------------------------------------


def cli(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "edgebert", "train", *map(str, args)],
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> None:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


# The run both tests reproduce: 6 steps per phase, evaluated every 3, resumable every 2.
RUN = dict(max_steps=6, batch_size=8, eval_every=3, save_every=2)


def run_options(task) -> list[str]:
    """RUN as the CLI spells it, on the task's teacher and data."""
    options = [task["teacher"], "--train", task["train"], "--dev", task["dev"]]
    return [str(o) for o in options] + [f"--{key.replace('_', '-')}={value}" for key, value in RUN.items()]


@pytest.fixture(scope="module")
def plain_run(task) -> Path:
    """The run trained in this process, uninterrupted, on one thread as the CLI runs below
    (OMP_NUM_THREADS=1): `train` is what the CLI calls, and the same thread count gives the same sums."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(task["teacher"], task["train"], task["dev"], task["root"] / "plain", TrainConfig(**RUN))
    finally:
        torch.set_num_threads(threads)
    return task["root"] / "plain"


def test_resume_after_sigkill_ends_with_the_same_weights(task, plain_run, tmp_path):
    interrupted = tmp_path / "interrupted"
    process = cli(*run_options(task), "--json", "--out", interrupted)
    state = RunFiles(interrupted).state
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # kill in the depth phase, mid-way
        if state.is_file():
            saved = torch.load(state, weights_only=True)
            if saved["phase_index"] == 1 and saved.get("step", 0) >= 2:
                break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (interrupted / TRAIN_MANIFEST).exists()
    finish(cli(*run_options(task), "--json", "--out", interrupted, "--resume"))
    assert max_diff(weights(plain_run), weights(interrupted)) <= 1e-6
    steps = [(r["phase"], r["step"]) for r in map(json.loads, (interrupted / "metrics.jsonl").read_text().splitlines())]
    assert steps == [("width", 3), ("width", 6), ("depth", 3), ("depth", 6)]  # none lost, none twice


def adamw_reach(config: TrainConfig) -> float:
    """The furthest AdamW (torch's betas 0.9, 0.999; no weight decay) can move one weight in a run of `config`,
    whatever its gradients: lr_t x max |m_hat / sqrt(v_hat)| summed over every step, the bound by Cauchy-Schwarz
    over the t gradients so far (1 at t = 1, 1.016 at t = 6); the optimizer restarts each phase, lr decays to 0."""
    assert config.weight_decay == 0 and config.warmup in (None, 0)
    beta1, beta2, steps = 0.9, 0.999, config.max_steps
    reach = 0.0
    for t in range(1, steps + 1):
        bound = (1 - beta1) / (1 - beta1**t) * ((1 - (beta1**2 / beta2) ** t) / (1 - beta1**2 / beta2)) ** 0.5
        reach += config.learning_rate * (steps - t + 1) / steps * bound * ((1 - beta2**t) / (1 - beta2)) ** 0.5
    return reach * len(config.phases)


# Two runs "agree" on a weight when its steps agree to 5 % of one step at the default lr (2e-5)
AGREE = 1e-6


def test_two_processes_equal_one(task, plain_run, tmp_path):
    """torchrun with 2 CPU processes (gloo), each taking half of every batch: the same weights as 1 process, up to
    float32 rounding, which AdamW amplifies where a gradient is near zero. Each process sums half the batch and the
    halves are all-reduced, so a gradient's last bits differ from one process's; AdamW divides by sqrt(v), so a
    weight whose gradient is within that rounding of zero can step differently by up to 2 lr (sign flipped):
    3.9e-5 was seen on one machine, 1.8e-6 on another. So: every weight within twice AdamW's reach (no two runs
    from the same start can differ more), and all but a few within AGREE. Measured (239,426 weights): 6 beyond
    AGREE; a one-process run with seed 43, or batch 4 instead of 8, has 70-75 % beyond it, up to 2e-4."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517"]
    done = subprocess.run(
        [*torchrun, "-m", "edgebert", "train", *run_options(task), "--out", str(tmp_path / "two")],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = weights(plain_run), weights(tmp_path / "two")
    assert max_diff(one, two) <= 2 * adamw_reach(TrainConfig(**RUN))
    differ = sum(int(((one[k] - two[k]).abs() > AGREE).sum()) for k in one)
    assert differ <= 0.01 * sum(t.numel() for t in one.values()), f"{differ} weights differ by more than {AGREE}"
    assert training_manifest(tmp_path / "two").world_size == 2
    assert training_manifest(plain_run).world_size == 1


# ---- bad input -----------------------------------------------------------------------------------


BAD_CASES = {
    "bare teacher": ("bare", [], "no classifier head"),
    "unknown label": ("teacher", ["--train", "BADLABEL"], "unknown label 'maybe'"),
    "empty data": ("teacher", ["--train", "EMPTY"], "no examples"),
    "no header": ("teacher", ["--dev", "NOHEADER"], "the header must name"),
    "no tokenizer": ("notokenizer", [], "no tokenizer files"),
    "width without a head": ("teacher", ["--widths", "1,0.01"], "keeps no whole attention head"),
    "depth without a layer": ("teacher", ["--depths", "0.01"], "keeps no layer"),
    "bad phase": ("teacher", ["--phases", "width,pretrain"], "unknown phase"),
    "phases out of order": ("teacher", ["--phases", "depth,width"], "order"),
    "bad number list": ("teacher", ["--widths", "half"], "comma-separated numbers"),
    "resume nothing": ("teacher", ["--resume"], "no unfinished edgebert run to resume"),
    "mixed precision on CPU": ("teacher", ["--mixed-precision", "fp16"], "needs a GPU"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_is_one_line(task, tiny_models, tmp_path, run_cli, case):
    model_kind, extra, message = BAD_CASES[case]
    files = {
        "BADLABEL": tmp_path / "bad.tsv",
        "EMPTY": tmp_path / "empty.tsv",
        "NOHEADER": tmp_path / "noheader.tsv",
    }
    files["BADLABEL"].write_text("sentence\tlabel\nw1 w2\tpos\nw3 w4\tmaybe\n")
    files["EMPTY"].write_text("sentence\tlabel\n")
    files["NOHEADER"].write_text("w1 w2\t1\n")
    notokenizer = tmp_path / "notok"
    notokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        (notokenizer / name).write_bytes((task["teacher"] / name).read_bytes())
    models = {"bare": tiny_models["bert-bare"], "teacher": task["teacher"], "notokenizer": notokenizer}
    args = {"--train": task["train"], "--dev": task["dev"], "--out": tmp_path / "out"}
    extra = [str(files.get(x, x)) for x in extra]
    for flag in ("--train", "--dev"):
        if flag in extra:
            args.pop(flag)
    if "--resume" in extra:
        (tmp_path / "out").mkdir()
    flat = [str(x) for pair in args.items() for x in pair]
    result = run_cli("train", models[model_kind], *flat, *extra, "--max-steps", "1")
    assert result.code == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert message in lines[0]


def test_existing_out_is_refused_and_force_replaces_only_edgebert_runs(task, tmp_path, run_cli):
    user_dir = tmp_path / "mine"
    user_dir.mkdir()
    (user_dir / "notes.txt").write_text("keep me")
    common = ["--train", task["train"], "--dev", task["dev"], "--max-steps", "1", "--batch-size", "8"]
    result = run_cli("train", task["teacher"], *common, "--out", user_dir)
    assert result.code == 1 and "already exists" in result.stderr
    result = run_cli("train", task["teacher"], *common, "--out", user_dir, "--force")
    assert result.code == 1 and "has no edgebert-train.json" in result.stderr
    assert (user_dir / "notes.txt").read_text() == "keep me"
    run = tmp_path / "run"
    assert run_cli("train", task["teacher"], *common, "--out", run, "--phases", "width").code == 0
    assert run_cli("train", task["teacher"], *common, "--out", run, "--phases", "width", "--force").code == 0


def test_subnetworks_of_a_model_not_trained_as_dynabert_warn_once(task, tmp_path, run_cli):
    trained = tmp_path / "dynabert"
    train(task["teacher"], task["train"], task["dev"], trained, TrainConfig(max_steps=1, **QUICK))
    warning = "not trained as a DynaBERT"

    plain = run_cli("slice", task["teacher"], "--width", "0.5", "--depth", "0.5", "--out", tmp_path / "plain")
    assert plain.code == 0 and plain.stderr.count(warning) == 1
    full = run_cli("slice", task["teacher"], "--width", "1", "--depth", "1", "--out", tmp_path / "full")
    assert full.code == 0 and warning not in full.stderr
    ok = run_cli("slice", trained, "--width", "0.5", "--depth", "0.5", "--out", tmp_path / "ok", "--json")
    assert ok.code == 0 and warning not in ok.stderr
    assert json.loads(ok.stdout)["trained_as_dynabert"] is True

    exported = run_cli("export", tmp_path / "plain", "--format", "onnx", "--out", tmp_path / "plain.onnx")
    assert exported.code == 0, exported.stderr
    assert exported.stderr.count(warning) == 1
    picked = run_cli("pick", task["teacher"], "--json")
    assert picked.code == 0 and any(warning in w for w in json.loads(picked.stdout)["warnings"])
    picked = run_cli("pick", trained, "--json")
    assert picked.code == 0 and json.loads(picked.stdout)["warnings"] == []


@pytest.mark.parametrize("kind", [f"{kind}-cls" for kind in KINDS])
def test_saved_checkpoint_loads_in_its_stock_class(tiny_models, tmp_path, kind):
    """Canonical names go back to the source class's (BERT's pooler, the others' classifier.dense / out_proj) and
    the logits stay."""
    from edgebert.dynabert import save_checkpoint

    checkpoint = load_checkpoint(tiny_models[kind])
    model = DynaBert.from_checkpoint(checkpoint, Dropout()).eval()
    save_checkpoint(model, checkpoint, tmp_path / "saved")
    stock = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved").eval()
    assert [type(stock).__name__] == json.loads((tiny_models[kind] / "config.json").read_text())["architectures"]
    ids = torch.randint(5, 100, (2, 9), generator=torch.Generator().manual_seed(3))
    mask, types = torch.ones_like(ids), torch.zeros_like(ids)
    with torch.no_grad():
        expected = stock(input_ids=ids, attention_mask=mask).logits
        got = model(ids, mask, types).logits
    assert (got - expected).abs().max() <= 1e-5


# ---- the command line reads the library's defaults ---------------------------------------------------------


def test_options_left_out_give_the_library_defaults(run_cli, monkeypatch):
    """`edgebert train` with no option builds `TrainConfig()`: a default written again in the CLI would drift."""
    configs = []
    monkeypatch.setattr("edgebert.cli.train.run_training", lambda *args, **kwargs: configs.append(args[4]))
    result = run_cli("train", ".", "--train", "t.tsv", "--dev", "d.tsv", "--out", "out")
    assert result.code == 0, result.stderr
    assert configs == [TrainConfig()]
    shown = " ".join(run_cli("train", "--help").stdout.replace("│", " ").split())
    for default in ("[default: 1,0.75,0.5,0.25]", "[default: 1,0.75,0.5]", "[default: 2e-05]", "[default: 32]"):
        assert default in shown
