"""A battery of hostile and faulty inputs, run through the real `edgebert` command, one process each.

Each case damages a copy of a tiny BERT classifier (or a slice, an artifact, a profile, a data
file, a results file) and runs one command. A case *holds* when the outcome is the promised one:
- "error": exit code != 0, exactly one line on stderr starting with `error:`, no traceback, and
  nothing written next to the inputs (the work folder's files and bytes are unchanged);
- "ok": exit code 0 (the input is odd but valid);
and, for both, the process finished within the time limit and its peak RSS stayed under the bound
(no hang, no unbounded memory).

    python benchmarks/hostile.py            # all cases, 2 at a time; results/hostile.{json,md}
    python benchmarks/hostile.py -k force   # the cases whose name contains "force" (-k again: or another)
    python benchmarks/hostile.py --base /tmp/hb   # build the shared inputs there once, reuse them next time
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
TIME_LIMIT_S = 120.0
RSS_LIMIT_BYTES = 1_500_000_000  # tiny inputs: anything near this is an input-driven blow-up


@dataclass
class Case:
    name: str
    setup: Callable[[Path], list[str]]  # builds the inputs under `work`, returns the edgebert arguments
    expect: str = "error"  # "ok", or "ok or error" (either is honest, e.g. ignoring a bad cache entry)
    fragment: str = ""  # must appear in the error line ("{work}" stands for the case's folder)
    env: dict[str, str] = field(default_factory=dict)
    check: Callable[[Path, str], str | None] | None = None  # (work, stdout) -> a problem, or None when all is well
    preexec: Callable[[], None] | None = None  # run in the child before exec (limits: a full disk)
    time_limit: float = TIME_LIMIT_S
    may_write: str = ""  # an error case may change this folder of `work` and train's hidden one beside it (.NAME*)


# ---- inputs ----------------------------------------------------------------------------------------------


def tiny_model(directory: Path, num_labels: int = 2) -> Path:
    """A stock classifier (regression with one label) saved by the installed transformers: no id2label on 5.x."""
    import transformers

    config = transformers.BertConfig(
        vocab_size=1100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=num_labels,
    )
    model = transformers.BertForSequenceClassification(config).eval()
    model.save_pretrained(directory)
    words = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += [f"w{i}" for i in range(1100 - len(words))]
    (directory / "vocab.txt").write_text("\n".join(words) + "\n")
    (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    return directory


def made(path: Path, text: str | None = None) -> Path:
    """`path` created as a file holding `text`, or as a directory holding one file when `text` is None."""
    if text is None:
        path.mkdir()
        (path / "x").write_text("x")
    else:
        path.write_text(text)
    return path


def edgebert(*args: str) -> list[str]:
    return [str(a) for a in args]


def model_copy(work: Path) -> Path:
    target = work / "model"
    shutil.copytree(BASE / "model", target)
    return target


def edit_config(model: Path, **changes) -> None:
    config = json.loads((model / "config.json").read_text())
    config.update(changes)
    (model / "config.json").write_text(json.dumps(config))


def raw_config(model: Path, text: str) -> None:
    (model / "config.json").write_text(text)


def slice_cmd(model: Path, work: Path) -> list[str]:
    return edgebert("slice", model, "--width", "0.5", "--depth", "0.5", "--out", work / "out")


def config_case(name: str, fragment: str = "", **changes) -> Case:
    def setup(work: Path) -> list[str]:
        model = model_copy(work)
        edit_config(model, **changes)
        return slice_cmd(model, work)

    return Case(f"config {name}", setup, fragment=fragment)


def raw_config_case(name: str, text: str, fragment: str = "") -> Case:
    def setup(work: Path) -> list[str]:
        model = model_copy(work)
        raw_config(model, text)
        return slice_cmd(model, work)

    return Case(f"config {name}", setup, fragment=fragment)


def _auto_map(work: Path) -> list[str]:
    model = model_copy(work)
    edit_config(model, auto_map={"AutoModel": "evil.Model"})
    (model / "evil.py").write_text("raise SystemExit('remote code ran')\n")
    return slice_cmd(model, work)


def deep(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


def zip_bomb(work: Path) -> list[str]:
    model = model_copy(work)
    (model / "model.safetensors").unlink()
    with zipfile.ZipFile(model / "pytorch_model.bin", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        with archive.open("archive/data/0", "w", force_zip64=True) as member:  # streamed: this process stays small
            for _ in range(1500):
                member.write(bytes(1_000_000))
    return slice_cmd(model, work)


def link_case(name: str, file: str) -> Case:
    def setup(work: Path) -> list[str]:
        model = model_copy(work)
        secret = work / "secret"
        secret.write_text("PRIVATE KEY\n")
        target = model / file
        target.unlink(missing_ok=True)
        target.symlink_to(secret)
        return slice_cmd(model, work)

    return Case(f"symlink {name}", setup, fragment="")


def slice_of(work: Path, width: str = "0.5") -> Path:
    out = work / "slice"
    shutil.copytree(BASE / f"slice-{width}", out)
    return out


def slice_damage_case(name: str, damage: Callable[[Path], None], fragment: str = "") -> Case:
    def setup(work: Path) -> list[str]:
        out = slice_of(work)
        damage(out)
        return edgebert("export", out, "--out", work / "x.onnx")

    return Case(f"slice {name}", setup, fragment=fragment)


def artifact_of(work: Path) -> Path:
    for name in ("a.onnx", "a.onnx.json"):
        shutil.copy2(BASE / name, work / name)
    return work / "a.onnx"


def sidecar_case(name: str, damage: Callable[[dict], object], fragment: str = "") -> Case:
    def setup(work: Path) -> list[str]:
        artifact = artifact_of(work)
        sidecar_path = work / "a.onnx.json"
        sidecar = json.loads(sidecar_path.read_text())
        changed = damage(sidecar)
        sidecar_path.write_text(changed if isinstance(changed, str) else json.dumps(sidecar))
        return edgebert("bench", artifact, "--runs", "3")

    return Case(f"sidecar {name}", setup, fragment=fragment)


def profile_case(name: str, text: str, fragment: str = "", expect: str = "error") -> Case:
    def setup(work: Path) -> list[str]:
        artifact = artifact_of(work)
        (work / "p.yaml").write_text(text)
        return edgebert("bench", artifact, "--profile", work / "p.yaml")

    return Case(f"profile {name}", setup, fragment=fragment, expect=expect)


PROFILE = (
    "name: hostile\ndescription: d\nruntime: onnxruntime\nthreads: 1\nruns: 3\nwarmup_runs: 1\n"
    "hardware:\n  cpu: any\n  architecture: x86_64\n  cores: 2\n"
)


def data_case(name: str, text: str, fragment: str = "", suffix: str = ".tsv") -> Case:
    def setup(work: Path) -> list[str]:
        (work / f"d{suffix}").write_text(text)
        return edgebert("eval", BASE / "model", "--data", work / f"d{suffix}", "--width", "1")

    return Case(f"eval data {name}", setup, fragment=fragment)


def force_case(name: str, out: Callable[[Path], Path], fragment: str) -> Case:
    def setup(work: Path) -> list[str]:
        project = work / "P"
        shutil.copytree(BASE / "model", project / "model")
        (project / "notes.txt").write_text("mine\n")
        return edgebert("slice", project / "model", "--width", ".5", "--depth", ".5", "--out", out(project), "--force")

    return Case(f"force {name}", setup, fragment=fragment)


def export_force_case(name: str, out: Callable[[Path], Path], fragment: str) -> Case:
    def setup(work: Path) -> list[str]:
        target = out(work)
        return edgebert("export", BASE / "model", "--width", ".5", "--depth", ".5", "--out", target, "--force")

    return Case(f"force export {name}", setup, fragment=fragment)


def results_case(name: str, text: str | None, fragment: str = "", directory: bool = False) -> Case:
    def setup(work: Path) -> list[str]:
        artifact = artifact_of(work)
        out = work / "r.json"
        if directory:
            out.mkdir()
        elif text is not None:
            out.write_text(text)
        return edgebert("bench", artifact, "--runs", "3", "--out", out)

    return Case(f"bench --out {name}", setup, fragment=fragment)


def sha_mismatch(work: Path) -> list[str]:
    artifact = artifact_of(work)
    shutil.copy2(BASE / "b.onnx", artifact)  # another model under the first one's sidecar
    return edgebert("bench", artifact, "--runs", "3")


def cache_case(name: str, content: str) -> Case:
    def setup(work: Path) -> list[str]:
        cache = work / "cache"
        shutil.copytree(BASE / "cache", cache)
        for entry in (cache / "eval").rglob("*.json"):
            entry.write_text(content)
        return edgebert("pick", BASE / "model", "--candidates", "1:1,0.5:0.5", "--data", BASE / "d.tsv")

    return Case(f"eval cache {name}", setup, expect="ok or error", env={"EDGEBERT_CACHE": "{work}/cache"})


CASES: list[Case] = [
    # config.json values
    config_case("layer_norm_eps NaN", layer_norm_eps=float("nan")),
    config_case("layer_norm_eps Infinity", layer_norm_eps=float("inf")),
    config_case("layer_norm_eps -5", layer_norm_eps=-5),
    config_case("layer_norm_eps 'abc'", layer_norm_eps="abc"),
    config_case("hidden_act list", hidden_act=["gelu"]),
    config_case("hidden_act unknown", hidden_act="swishy"),
    config_case("id2label non-integer keys", id2label={"a": "x", "b": "y"}),
    config_case("pad_token_id 'x'", pad_token_id="x"),
    config_case("pad_token_id -7", pad_token_id=-7),
    config_case("pad_token_id 10**6", pad_token_id=10**6),
    config_case("vocab_size 0", vocab_size=0),
    config_case("num_hidden_layers 10**9", num_hidden_layers=10**9),
    config_case("num_attention_heads 0", num_attention_heads=0),
    config_case("num_attention_heads 3 (not dividing)", num_attention_heads=3),
    config_case("hidden_size 10**9", hidden_size=10**9),
    config_case("intermediate_size -1", intermediate_size=-1),
    config_case("max_position_embeddings 10**12", max_position_embeddings=10**12),
    config_case("model_type gpt2", model_type="gpt2"),
    Case("config auto_map (remote code: ignored, not copied)", lambda w: _auto_map(w), expect="ok"),
    raw_config_case("deeply nested", '{"a": ' + deep() + "}"),
    raw_config_case("not JSON", "{nope"),
    raw_config_case("a list", "[1, 2]"),
    raw_config_case("empty", ""),
    raw_config_case("binary", "\x00\xff\xfe"),
    # weights
    Case("weights zip bomb .bin", zip_bomb),
    Case(
        "weights truncated",
        lambda w: (
            (m := model_copy(w)),
            (m / "model.safetensors").write_bytes((m / "model.safetensors").read_bytes()[:500]),
            slice_cmd(m, w),
        )[-1],
    ),
    Case(
        "weights missing",
        lambda w: ((m := model_copy(w)), (m / "model.safetensors").unlink(), slice_cmd(m, w))[-1],
    ),
    Case(
        "config.json missing",
        lambda w: ((m := model_copy(w)), (m / "config.json").unlink(), slice_cmd(m, w))[-1],
    ),
    # links out of the model directory
    link_case("vocab.txt -> outside", "vocab.txt"),
    link_case("config.json -> outside", "config.json"),
    link_case("tokenizer_config.json -> outside", "tokenizer_config.json"),
    link_case("model.safetensors -> outside", "model.safetensors"),
    # slice directories given to export
    slice_damage_case("edgebert.json {}", lambda s: (s / "edgebert.json").write_text("{}")),
    slice_damage_case("edgebert.json []", lambda s: (s / "edgebert.json").write_text("[]")),
    slice_damage_case("edgebert.json deep", lambda s: (s / "edgebert.json").write_text(deep())),
    slice_damage_case("config.json missing", lambda s: (s / "config.json").unlink(), "config.json"),
    slice_damage_case(
        "config claims 10**6 layers",
        lambda s: edit_config(s, num_hidden_layers=10**6),
    ),
    slice_damage_case("layer_norm_eps NaN", lambda s: edit_config(s, layer_norm_eps=float("nan"))),
    # sidecars
    sidecar_case("{}", lambda s: "{}", ""),
    sidecar_case("a list", lambda s: "[]"),
    sidecar_case("deeply nested", lambda s: deep()),
    sidecar_case("inputs a list of strings", lambda s: s.update(inputs=["input_ids"])),
    sidecar_case("vocab_size 0", lambda s: s.update(vocab_size=0)),
    sidecar_case("runtime a string", lambda s: s.update(runtime="onnxruntime")),
    sidecar_case("runtime unknown optimization level", lambda s: s["runtime"].update(graph_optimization_level="x")),
    Case("sidecar of another artifact (sha256)", sha_mismatch),
    # bench options and profiles
    Case("bench seq-len above the model's positions", lambda w: edgebert("bench", artifact_of(w), "--seq-len", "600")),
    Case("bench runs 10**12", lambda w: edgebert("bench", artifact_of(w), "--runs", str(10**12))),
    Case("bench threads 10**9", lambda w: edgebert("bench", artifact_of(w), "--threads", str(10**9))),
    Case("bench batch 10**11", lambda w: edgebert("bench", artifact_of(w), "--batch", str(10**11))),
    profile_case(
        "billion laughs",
        'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
        + "".join(
            f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        )
        + "name: x\nruntime: onnxruntime\ndescription: *i\n",
    ),
    profile_case("threads 1e23", PROFILE.replace("threads: 1", "threads: 1e23"), "threads"),
    profile_case("warmup_runs 1e12", PROFILE.replace("warmup_runs: 1", "warmup_runs: 1e12"), "warmup_runs"),
    profile_case("runs 1e12", PROFILE.replace("runs: 3", "runs: 1e12"), "runs"),
    profile_case("min_time_s .inf", PROFILE + "min_time_s: .inf\n", "min_time_s"),
    profile_case("batch_size 1e11", PROFILE + "batch_size: 1e11\n", "batch_size"),
    profile_case("valid (control: the cases above fail for their own reason)", PROFILE, expect="ok"),
    profile_case("not a mapping", "- a\n- b\n"),
    profile_case("python tag", "!!python/object/apply:os.system ['echo hacked']\n"),
    profile_case("huge file", PROFILE + "description: " + "x" * 5_000_000 + "\n"),
    Case("bench valid (control)", lambda w: edgebert("bench", artifact_of(w), "--runs", "3"), expect="ok"),
    # bench --out results files
    results_case("holds a dict", '{"a": 1}'),
    results_case("not JSON", "nope"),
    results_case("is a directory", None, directory=True),
    # eval data
    data_case("label --1", "sentence\tlabel\na\t0\nb\t--1\n"),
    data_case("label superscript two", "sentence\tlabel\na\t0\nb\t²\n"),
    data_case("field over the csv limit", 'sentence,label\n"' + "x" * 200_000 + '",1\n', suffix=".csv"),
    data_case("no header", "a\t0\nb\t1\n"),
    data_case("binary", "\x00\xff"),
    # --force and --out
    force_case("out contains the source", lambda p: p, "contains the source"),
    force_case("out is the source", lambda p: p / "model", "is the source"),
    force_case("out is the user's file", lambda p: p / "notes.txt", ""),
    force_case("out is a foreign directory", lambda p: made(p / "d"), ""),
    export_force_case("out is a directory", lambda w: made(w / "d"), ""),
    export_force_case("out is a slice directory", lambda w: slice_of(w), ""),
    export_force_case("out is a foreign file", lambda w: made(w / "f.onnx", "mine"), ""),
    # paths, environment
    Case("newline in the model path", lambda w: slice_cmd(w / "a\nerror: forged", w)),
    Case(
        "name too long",
        lambda w: edgebert("slice", BASE / "model", "--width", ".5", "--depth", ".5", "--out", w / ("n" * 300)),
    ),
    Case(
        "out under a file",
        lambda w: (
            (w / "f").write_text("")
            or edgebert("slice", BASE / "model", "--width", ".5", "--depth", ".5", "--out", w / "f" / "s")
        ),
    ),
    Case(
        "EDGEBERT_CACHE is a file",
        lambda w: (w / "c").write_text("") or edgebert("slice", "--width", ".5", "--depth", ".5", "--out", w / "s"),
        env={"EDGEBERT_CACHE": "{work}/c"},
    ),
    # valid but odd: must work
    Case(
        "unicode path",
        lambda w: edgebert(
            "slice",
            shutil.copytree(BASE / "model", w / "módel ü"),
            "--width",
            ".5",
            "--depth",
            ".5",
            "--out",
            w / "out ü",
        ),
        expect="ok",
    ),
    cache_case("entry []", "[]"),
    cache_case("entry {}", "{}"),
    cache_case("entry tampered", '{"schema_version": 1, "metrics": {"accuracy": 7}}'),
]


# ---- issue 17: training runs, special files, memory, non-finite numbers, full disks, transformers 5 -----

TRAIN = ("--phases", "width", "--widths", "1,0.5", "--depths", "1", "--batch-size", "8", "--max-length", "16")
QUICK = (*TRAIN, "--max-steps", "2")  # a whole run in seconds: `prepare` builds BASE/run with these
# BASE/killed: a run with these, SIGKILLed by `prepare` after its first checkpoint (--resume needs the same options)
KILLED = (*TRAIN, "--max-steps", "40", "--save-every", "2", "--eval-every", "2")
FINETUNE = ("--phases", "finetune", "--widths", "1", "--depths", "1", "--batch-size", "8", "--max-length", "16")
FIFO_TIME_LIMIT_S = 60.0  # a reader blocked on a FIFO never returns: no need to wait the full limit
BACKGROUND: dict[Path, subprocess.Popen] = {}  # a case's first process, started by its setup, ended by its check


def train_cmd(teacher: Path, out: Path, *options: object, train: Path | None = None, dev: Path | None = None):
    """`edgebert train` on the tiny data; --json: no progress on stderr, where a case looks for one error line."""
    train = train or BASE / "t.tsv"
    # The tiny random teacher is at chance: --allow-weak-teacher lets the cases reach what they test (one warning line).
    data = ("--train", train, "--dev", dev or train)
    return edgebert("train", teacher, *data, "--out", out, "--json", "--allow-weak-teacher", *options)


def run_copy(work: Path, source: str = "trained") -> Path:
    """A copy of a run `prepare` made (--out `source/run`, with whatever else train keeps beside it); its --out."""
    shutil.copytree(BASE / source, work, symlinks=True, dirs_exist_ok=True)
    return work / "run"


def found(root: Path, name: str) -> Path:
    """The one file called `name` under `root`: the battery does not hard-code where a run keeps its state."""
    paths = [path for path in sorted(root.rglob(name)) if not any(p.endswith(".partial") for p in path.parts)]
    if len(paths) != 1:
        raise FileNotFoundError(f"{len(paths)} files named {name} under {root}")
    return paths[0]


def finished_run(run: str = "run", seed: int | None = None) -> Callable[[Path, str], str | None]:
    """Check: `work/run` holds a finished run (its manifest), trained with `seed` when given."""

    def check(work: Path, stdout: str) -> str | None:
        manifest = work / run / "edgebert-train.json"
        if not manifest.is_file():
            return f"no finished run in {run}/ (no edgebert-train.json)"
        if seed is not None and json.loads(manifest.read_text())["hyperparameters"]["seed"] != seed:
            return f"{run}/ is not the new run (seed {seed}): the old run was not replaced"
        return None

    return check


def train_force_case(name: str, out: Callable[[Path], Path], fragment: str = "") -> Case:
    return Case(
        f"train --force {name}", lambda w: train_cmd(BASE / "model", out(w), *QUICK, "--force"), fragment=fragment
    )


def with_user_file(work: Path) -> Path:
    run = run_copy(work)
    (run / "notes.txt").write_text("mine\n")
    return run


def with_user_folder(work: Path) -> Path:
    run = run_copy(work)
    made(run / "mydata")
    return run


def stray_marker(marker: str) -> Callable[[Path], Path]:
    def project(work: Path) -> Path:
        folder = work / "proj"
        (folder / marker).parent.mkdir(parents=True)
        (folder / marker).write_text("{}")
        (folder / "thesis.tex").write_text("\\documentclass{article}\n")
        return folder

    return project


def teacher_inside_out(work: Path) -> list[str]:
    run = run_copy(work)
    return train_cmd(run / "phases" / "width", run, *QUICK, "--force")


def resume_case(name: str, damage: Callable[[Path], object], fragment: str = "", expect: str = "error") -> Case:
    def setup(work: Path) -> list[str]:
        run = run_copy(work, "killed")
        damage(work)
        return train_cmd(BASE / "model", run, *KILLED, "--resume")

    return Case(f"train --resume {name}", setup, fragment=fragment, expect=expect)


def left_by_6b0c4f4(staged_spec: bool) -> Callable[[Path], Path]:
    """--out as 6b0c4f4's train left it, SIGKILLed before run.json landed: an empty checkpoints/ (or its staging)."""

    def out(work: Path) -> Path:
        run_dir = work / "run" / "checkpoints"
        run_dir.mkdir(parents=True)
        if staged_spec:
            dead = subprocess.Popen(["true"])
            dead.wait()
            staging = run_dir / f".run.json.{dead.pid}-k1ll3d.partial"
            staging.mkdir()
            (staging / ".edgebert-staging").write_text(f"{socket.gethostname()} {dead.pid}\n")
            (staging / "run.json").write_text('{"version": 1, "teacher_')
        return work / "run"

    return out


def killed_early_case(name: str, out: Callable[[Path], Path], options: tuple[str, ...], expect: str) -> Case:
    return Case(
        f"train killed {name}",
        lambda w: train_cmd(BASE / "model", out(w), *QUICK, *options),
        expect=expect,
        check=finished_run() if expect == "ok" else None,
        may_write="run",  # the dead run's leftovers are edgebert's own: removing them is fair
    )


def spawn(work: Path, argv: list[str]) -> subprocess.Popen:
    """Start `edgebert argv` in the background, as the case's own process would be (logs beside `work`)."""
    log = work.parent / f"{work.name}.first.log"
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "edgebert", *argv],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_env(work, {}),
            cwd=work,
            start_new_session=True,
        )


def two_resumes(work: Path) -> list[str]:
    run = run_copy(work, "killed")
    argv = train_cmd(BASE / "model", run, *KILLED, "--resume")
    BACKGROUND[work] = spawn(work, argv)
    time.sleep(4)  # the second starts while the first is training (about 20 s of steps left)
    return argv


def first_resume_finished(work: Path, stdout: str) -> str | None:
    first = BACKGROUND.pop(work)
    try:
        code = first.wait(timeout=TIME_LIMIT_S)
    except subprocess.TimeoutExpired:
        kill_group(first)
        return "the first --resume did not finish"
    if code != 0:
        lines = (work.parent / f"{work.name}.first.log").read_text(errors="replace").splitlines()
        return f"the first --resume failed (exit {code}): {lines[-1][:200] if lines else ''}"
    return finished_run()(work, stdout)


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def fifo(path: Path) -> Path:
    """A named pipe with no writer where a file is expected: opening it to read blocks forever."""
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


def fifo_case(name: str, setup: Callable[[Path], list[str]], **options) -> Case:
    return Case(f"fifo {name}", setup, time_limit=FIFO_TIME_LIMIT_S, **options)


def sentence_transformers_files(model: Path, entries: list[dict] | None = None) -> Path:
    """modules.json (the encoder at the top, then Pooling in 1_Pooling/) and the Pooling module's config."""
    (model / "1_Pooling").mkdir()
    (model / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32}))
    encoder = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
    pooling = {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
    (model / "modules.json").write_text(json.dumps(entries or [encoder, pooling]))
    return model / "modules.json"


def modules_case(name: str, path: str, expect: str = "error") -> Case:
    def setup(work: Path) -> list[str]:
        model = model_copy(work)
        modules = sentence_transformers_files(model)
        entries = json.loads(modules.read_text())
        entries[1]["path"] = path
        modules.write_text(json.dumps(entries))
        return slice_cmd(model, work)

    return Case(f"modules.json {name}", setup, expect=expect)


def write_big(path: Path, head: str, size: int, tail: str, item: str = "") -> Path:
    """Append `head`, about `size` bytes of `item,item,...` (without an item: of one string's x's), then `tail`.

    Streamed, so the battery's own process stays small. One long string is what a backtracking
    string regex pays for per character; many items are what a parser pays for per value.
    """
    with path.open("a") as f:
        f.write(head)
        if not item:
            for _ in range(size // 1_000_000):
                f.write("x" * 1_000_000)
        count = size // (len(item) + 1) + 1 if item else 0
        chunk = ",".join([item] * 10_000)
        for start in range(0, count, 10_000):
            f.write(("," if start else "") + (chunk if count - start >= 10_000 else ",".join([item] * (count - start))))
        f.write(tail)
    return path


def big_results(work: Path) -> list[str]:
    """A JSON list of 50 MB: one result with a 25 MB note, then 25 MB of real results."""
    artifact = artifact_of(work)
    result = json.dumps(json.loads((BASE / "r.json").read_text())[0])
    out = write_big(work / "r.json", "[" + result[:-1] + ', "notes": "', 25_000_000, '"},')
    write_big(out, "", 25_000_000, "]\n", item=result)
    return edgebert("bench", artifact, "--runs", "3", "--out", out)


def big_config(work: Path) -> list[str]:
    model = model_copy(work)
    config = json.dumps(json.loads((model / "config.json").read_text()))
    (model / "config.json").unlink()
    write_big(model / "config.json", config[:-1] + ', "notes": "', 30_000_000, '"}')
    return slice_cmd(model, work)


def big_modules(work: Path) -> list[str]:
    model = model_copy(work)
    modules = sentence_transformers_files(model)
    text = modules.read_text()
    modules.unlink()
    write_big(modules, text[: text.index("}")] + ', "notes": "', 60_000_000, '"' + text[text.index("}") :])
    return slice_cmd(model, work)


def cache_entries_case(name: str, damage: Callable[[Path], object], **options) -> Case:
    def setup(work: Path) -> list[str]:
        cache = work / "cache"
        shutil.copytree(BASE / "cache", cache)
        for entry in (cache / "eval").rglob("*.json"):
            damage(entry)
        return edgebert("pick", BASE / "model", "--candidates", "1:1,0.5:0.5", "--data", BASE / "d.tsv")

    return Case(name, setup, expect="ok or error", env={"EDGEBERT_CACHE": "{work}/cache"}, **options)


def linked_to(target: str) -> Callable[[Path], None]:
    def link(entry: Path) -> None:
        entry.unlink()
        entry.symlink_to(target)

    return link


def many_candidates(work: Path) -> list[str]:
    """10,000 distinct valid WIDTH:DEPTH pairs (one argument under the kernel's 128 KiB limit)."""
    widths = [f"{w / 100:g}" for w in range(30, 100)]
    depths = [f"{0.5 + k * 0.0035:.4g}" for k in range(143)]
    pairs = [f"{w}:{d}" for w in widths for d in depths][:10_000]
    return edgebert("pick", BASE / "model", "--candidates", ",".join(pairs), "--data", BASE / "d.tsv")


def scores(*values: object) -> str:
    """A regression data file: one score per row (16 rows unless given)."""
    values = values or tuple(f"{(i % 5) / 4:g}" for i in range(16))
    return "sentence\tlabel\n" + "".join(f"w{110 + i} w{111 + i}\t{v}\n" for i, v in enumerate(values))


def with_score(value: str) -> str:
    return scores(*(value if i == 5 else f"{(i % 5) / 4:g}" for i in range(16)))


def option_case(name: str, options: tuple[str, ...], fragment: str) -> Case:
    return Case(f"train {name}", lambda w: train_cmd(BASE / "model", w / "run", *QUICK, *options), fragment=fragment)


def score_case(name: str, build: Callable[[Path], list[str]], fragment: str = "", **options) -> Case:
    return Case(f"non-finite score: {name}", build, fragment=fragment, **options)


def regression_train(work: Path, bad: str, where: str, phases: tuple[str, ...]) -> list[str]:
    data = work / f"{where}.tsv"
    data.write_text(with_score(bad))
    files = {"train": data, "dev": BASE / "treg.tsv"} if where == "train" else {"train": BASE / "treg.tsv", "dev": data}
    return train_cmd(BASE / "model-reg", work / "run", *phases, "--max-steps", "2", **files)


def regression_eval(work: Path, bad: str) -> list[str]:
    (work / "d.tsv").write_text(with_score(bad))
    return edgebert("eval", BASE / "model-reg", "--data", work / "d.tsv", "--width", "1")


def rewire_nan(work: Path) -> list[str]:
    (work / "d.tsv").write_text(with_score("nan"))
    return edgebert("rewire", BASE / "model-reg", "--data", work / "d.tsv", "--out", work / "rewired")


def nan_weight(model: Path) -> None:
    """One NaN in a query weight, written into the safetensors bytes (no torch in the battery's process)."""
    path = model / "model.safetensors"
    with path.open("r+b") as f:
        header_size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_size))
        name = next(n for n in header if n.endswith("layer.0.attention.self.query.weight"))
        assert header[name]["dtype"] == "F32"
        f.seek(8 + header_size + header[name]["data_offsets"][0] + 4 * 7)
        f.write(b"\x00\x00\xc0\x7f")  # float32 NaN, little-endian


def damaged_model_case(name: str, damage: Callable[[Path], object], command: str, fragment: str = "", **options):
    """Damage a copy of the model, then slice it, or export it (sliced in memory) into a bundle folder."""

    def setup(work: Path) -> list[str]:
        model = model_copy(work)
        damage(model)
        if command == "slice":
            return slice_cmd(model, work)
        return edgebert("export", model, "--width", ".5", "--depth", ".5", "--out", work / "bundle")

    return Case(f"{command}: {name}", setup, fragment=fragment, **options)


def duplicate_token(model: Path) -> None:
    words = (model / "vocab.txt").read_text().splitlines()
    words[-1] = "w200"  # also at index 304: the first and the last index differ
    (model / "vocab.txt").write_text("\n".join(words) + "\n")


SAME_IDS = """
import sys, tokenizers, transformers
bundle, model = sys.argv[1:]
text = "w200 w201 w300 w200"
ours = tokenizers.Tokenizer.from_file(bundle + "/tokenizer.json").encode(text).ids
theirs = transformers.AutoTokenizer.from_pretrained(model)(text)["input_ids"]
print("same" if ours == theirs else f"bundle {ours} vs transformers {theirs}")
"""


def same_token_ids(work: Path, stdout: str) -> str | None:
    """Check, in a child process (no transformers in this one): the bundle's ids are those transformers gives."""
    if not (work / "bundle" / "tokenizer.json").is_file():
        return "no bundle/tokenizer.json"
    answer = subprocess.run(
        [sys.executable, "-c", SAME_IDS, str(work / "bundle"), str(work / "model")], capture_output=True, text=True
    )
    lines = answer.stdout.strip().splitlines()
    return None if lines[-1:] == ["same"] else f"token ids differ: {(lines or answer.stderr.splitlines() or [''])[-1]}"


def line_separator(work: Path) -> list[str]:
    rows = [f"w{i} w{i + 1}\t{i % 2}" for i in range(110, 150)]
    rows[3] = "w113\u2028w114\t1"  # one sentence: only \n and \r\n end a row
    (work / "d.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return edgebert("eval", BASE / "model", "--data", work / "d.tsv", "--width", "1", "--json")


def forty_rows(work: Path, stdout: str) -> str | None:
    try:
        examples = json.loads(stdout)["examples"]
    except (ValueError, KeyError, TypeError):
        return "no JSON with an examples count on stdout"
    return None if examples == 40 else f"{examples} examples read from 40 rows"


def profile_from(**fields: str) -> str:
    """The shipped pixel-7 profile with `fields` replaced (a profile pick can estimate from)."""
    lines = (Path(__file__).parents[1] / "edgebert" / "device_profiles" / "pixel-7.yaml").read_text().splitlines()
    lines = [
        f"{line.split(':')[0]}: {fields[line.split(':')[0]]}" if line.split(":")[0] in fields else line
        for line in lines
    ]
    return "\n".join(lines) + "\n"


def pick_cmd(*options: object) -> list[str]:
    return edgebert("pick", BASE / "model", "--candidates", "1:1,0.5:0.5", "--data", BASE / "d.tsv", *options)


def pick_with_profile(work: Path, **fields: str) -> list[str]:
    (work / "p.yaml").write_text(profile_from(**fields))
    return pick_cmd("--profile", work / "p.yaml")


def validate_profile(work: Path, **fields: str) -> list[str]:
    (work / "p.yaml").write_text(profile_from(**fields))
    return edgebert("profiles", "validate", work / "p.yaml")


def is_png(name: str) -> Callable[[Path, str], str | None]:
    def check(work: Path, stdout: str) -> str | None:
        path = work / name
        return None if path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" else f"{name} is not a PNG"

    return check


def plot_over_link(work: Path) -> list[str]:
    (work / "data.csv").write_text("a,b\n1,2\n")
    (work / "mine.png").symlink_to("data.csv")
    return pick_cmd("--plot", work / "mine.png")


def disk_full(limit: int | Callable[[], int]) -> Callable[[], None]:
    """preexec: files can grow to `limit` bytes; a write past it fails with EFBIG (SIGXFSZ ignored), as a full disk."""

    def limit_files() -> None:
        size = limit() if callable(limit) else limit
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit_files


DISK = 64_000  # bytes: every tiny config, vocab and record fits; no weights file does


def disk_full_case(
    name: str, setup: Callable[[Path], list[str]], limit: int | Callable[[], int] = DISK, **options
) -> Case:
    return Case(f"disk full: {name}", setup, fragment="{work}/", preexec=disk_full(limit), **options)


def results_full(work: Path) -> list[str]:
    artifact = artifact_of(work)
    shutil.copy2(BASE / "r.json", work / "r.json")
    return edgebert("bench", artifact, "--runs", "3", "--out", work / "r.json")


def slice_over_old(work: Path) -> list[str]:
    shutil.copytree(BASE / "slice-0.5", work / "out")
    return [*slice_cmd(BASE / "model", work), "--force"]


def export_slice(source: str) -> Callable[[Path], list[str]]:
    def setup(work: Path) -> list[str]:
        return edgebert("export", shutil.copytree(BASE / source, work / "slice"), "--out", work / "bundle")

    return setup


def no_id2label(work: Path, stdout: str) -> str | None:
    """The point of the transformers 5 cases: the saved config has no id2label (else they test nothing new)."""
    config = json.loads((BASE / "model" / "config.json").read_text())
    return "the installed transformers wrote id2label: this case tests nothing new" if "id2label" in config else None


ISSUE_17: list[Case] = [
    # 1. train --force replaces only a run edgebert wrote, and the old run stays whole until the new one is done
    train_force_case("over a run holding the user's notes.txt", with_user_file),
    train_force_case("over a run holding the user's mydata/", with_user_folder),
    train_force_case(
        "over a folder with a stray edgebert-train.json and thesis.tex", stray_marker("edgebert-train.json")
    ),
    train_force_case(
        "over a folder with a stray checkpoints/run.json and thesis.tex", stray_marker("checkpoints/run.json")
    ),
    Case("train --force with the teacher inside --out", teacher_inside_out),
    Case(
        "train --force over a finished run (control: replaced)",
        lambda w: train_cmd(BASE / "model", run_copy(w), *QUICK, "--seed", "7", "--force"),
        expect="ok",
        check=finished_run(seed=7),
    ),
    # 2. pick --plot writes through the output rule
    Case(
        "pick --plot a new file (control)",
        lambda w: pick_cmd("--plot", w / "mine.png"),
        expect="ok",
        check=is_png("mine.png"),
    ),
    Case(
        "pick --plot over an existing PNG without --force",
        lambda w: pick_cmd("--plot", made(w / "mine.png", "my picture")),
    ),
    Case("pick --plot through a symlink to the user's data.csv", plot_over_link),
    # 3. special files where a file is expected: refused, never a hang
    cache_entries_case("fifo eval-cache entries", fifo, time_limit=FIFO_TIME_LIMIT_S),
    fifo_case("--calibration", lambda w: pick_cmd("--calibration", fifo(w / "r.json"))),
    fifo_case("vocab.txt", lambda w: slice_cmd((m := model_copy(w), fifo(m / "vocab.txt"))[0], w)),
    fifo_case("config.json", lambda w: slice_cmd((m := model_copy(w), fifo(m / "config.json"))[0], w)),
    fifo_case("modules.json", lambda w: slice_cmd((m := model_copy(w), fifo(sentence_transformers_files(m)))[0], w)),
    fifo_case("eval --data", lambda w: edgebert("eval", BASE / "model", "--data", fifo(w / "d.tsv"), "--width", "1")),
    fifo_case(
        "train --train",
        lambda w: train_cmd(BASE / "model", w / "run", *QUICK, train=fifo(w / "t.tsv"), dev=BASE / "t.tsv"),
    ),
    fifo_case("bench --text", lambda w: edgebert("bench", artifact_of(w), "--runs", "3", "--text", fifo(w / "t.txt"))),
    # 4. memory: every read bounded and linear
    Case("memory: bench --out into a 50 MB results file", big_results, expect="ok"),
    Case("memory: a 30 MB config.json", big_config, expect="ok or error"),
    Case("memory: a 60 MB modules.json", big_modules, expect="ok or error"),
    cache_entries_case("memory: a 1 GB eval-cache entry (sparse)", lambda e: os.truncate(e, 1 << 30)),
    cache_entries_case("memory: an eval-cache entry linked to /dev/zero", linked_to("/dev/zero")),
    Case("memory: pick --candidates with 10,000 pairs", many_candidates, expect="ok or error"),
    # 5. non-finite or out-of-range numbers: refused by name, never written into weights or results
    option_case("--weight-decay nan", ("--weight-decay", "nan"), "weight decay"),
    option_case("--weight-decay -1", ("--weight-decay", "-1"), "weight decay"),
    option_case("--warmup -1", ("--warmup", "-1"), "warm"),
    option_case("--warmup 5 (over 1)", ("--warmup", "5"), "warm"),
    option_case("--warmup nan", ("--warmup", "nan"), "warm"),
    option_case("--lr inf", ("--lr", "inf"), "learning rate"),
    option_case("--seed 2**70", ("--seed", str(2**70)), "seed"),
    Case(
        "train: a loss that turns non-finite (--lr 1e30) stops the run",
        lambda w: train_cmd(BASE / "model", w / "run", *TRAIN, "--max-steps", "6", "--lr", "1e30"),
        may_write="run",
    ),
    score_case("nan in finetune --train", lambda w: regression_train(w, "nan", "train", FINETUNE), "train.tsv"),
    score_case("inf in width-phase --train", lambda w: regression_train(w, "inf", "train", TRAIN), "train.tsv"),
    score_case("nan in --dev", lambda w: regression_train(w, "nan", "dev", TRAIN), "dev.tsv"),
    score_case("nan in eval --data", lambda w: regression_eval(w, "nan"), "d.tsv"),
    score_case("inf in eval --data", lambda w: regression_eval(w, "inf"), "d.tsv"),
    score_case("-inf in eval --data", lambda w: regression_eval(w, "-inf"), "d.tsv"),
    score_case("nan in rewire --data", rewire_nan, "d.tsv"),
    damaged_model_case("a NaN in a weight tensor", nan_weight, "slice"),
    damaged_model_case("a NaN in a weight tensor", nan_weight, "export"),
    damaged_model_case(
        "duplicate tokens in vocab.txt (refused, or the bundle's ids are transformers')",
        duplicate_token,
        "export",
        expect="ok or error",
        check=lambda w, out: same_token_ids(w, out) if (w / "bundle").exists() else None,
    ),
    damaged_model_case(
        "tokenizer.json holding [1,2]",
        lambda m: (m / "tokenizer.json").write_text("[1, 2]"),
        "export",
        "tokenizer.json",
    ),
    damaged_model_case(
        "invalid UTF-8 in vocab.txt",
        lambda m: (m / "vocab.txt").write_bytes((m / "vocab.txt").read_bytes().replace(b"w17\n", b"w\xff\xfe7\n")),
        "export",
        "vocab.txt",
    ),
    Case("eval data: U+2028 inside a sentence is one row", line_separator, expect="ok", check=forty_rows),
    modules_case("valid (control)", "1_Pooling", expect="ok"),
    modules_case("path with a NUL", "1_Pool\x00ing"),
    modules_case("path naming a file (vocab.txt)", "vocab.txt"),
    Case(
        "pick --memory-budget 0.0000000001B", lambda w: pick_cmd("--memory-budget", "0.0000000001B"), fragment="memory"
    ),
    # 6. numbers too large for a float, damaged run files: one line, not a traceback
    Case(
        "pick --memory-budget with 400 digits",
        lambda w: pick_cmd("--memory-budget", "1" * 400 + "MB"),
        fragment="memory",
    ),
    Case(
        "pick --latency-budget with 400 digits",
        lambda w: pick_cmd("--latency-budget", "1" * 400 + "ms"),
        fragment="latency",
    ),
    Case(  # YAML 1.1 reads 1e308 as a string: 1.0e+308 is the float
        "pick a profile with memory_budget_mb 1.0e+308",
        lambda w: pick_with_profile(w, memory_budget_mb="1.0e+308"),
        fragment="memory",
    ),
    Case(
        "profiles validate memory_budget_mb 1.0e+308",
        lambda w: validate_profile(w, memory_budget_mb="1.0e+308"),
        fragment="memory",
    ),
    Case(
        "profiles validate memory_budget_mb 10**308 GB",
        lambda w: validate_profile(w, memory_budget_mb="1" + "0" * 308 + " GB"),
        fragment="memory",
    ),
    Case(
        "pick a profile with latency_budget_ms 1.0e+308",
        lambda w: pick_with_profile(w, latency_budget_ms="1.0e+308"),
        expect="ok or error",
    ),
    resume_case("an empty state.pt", lambda r: found(r, "state.pt").write_bytes(b""), "state.pt"),
    resume_case(
        "another model's state.pt",
        lambda r: shutil.copy(found(BASE / "killed-reg", "state.pt"), found(r, "state.pt")),
        "state.pt",
    ),
    resume_case("run.json holding a list", lambda r: found(r, "run.json").write_text("[1, 2]"), "run.json"),
    resume_case(
        "a bad metrics.jsonl line",
        lambda r: append(found(r, "metrics.jsonl"), '{"phase_index": "x", \n'),
        expect="ok or error",
    ),
    resume_case("(control: continues the killed run)", lambda r: None, expect="ok"),
    # 7. a full disk: the old output whole, no staging left, the line names the path
    disk_full_case("train", lambda w: train_cmd(BASE / "model", w / "run", *QUICK), may_write="run"),
    disk_full_case(
        "train --force over a finished run", lambda w: train_cmd(BASE / "model", run_copy(w), *QUICK, "--force")
    ),
    disk_full_case("slice", lambda w: slice_cmd(BASE / "model", w)),
    disk_full_case("slice --force over an old slice", slice_over_old),
    disk_full_case(
        "export", lambda w: edgebert("export", BASE / "model", "--width", ".5", "--depth", ".5", "--out", w / "bundle")
    ),
    disk_full_case("bench --out", results_full, limit=lambda: (BASE / "r.json").stat().st_size + 16),
    # 8. a run killed before its first record, and two --resume at once
    killed_early_case("at its first file, then --resume", lambda w: run_copy(w, "early"), ("--resume",), "ok or error"),
    killed_early_case("at its first file, then --force", lambda w: run_copy(w, "early"), ("--force",), "ok"),
    killed_early_case("at its first file, then a plain rerun", lambda w: run_copy(w, "early"), (), "ok or error"),
    killed_early_case("before run.json (6b0c4f4), then --resume", left_by_6b0c4f4(False), ("--resume",), "ok or error"),
    killed_early_case("before run.json (6b0c4f4), then --force", left_by_6b0c4f4(False), ("--force",), "ok"),
    killed_early_case("with run.json staged (6b0c4f4), then --force", left_by_6b0c4f4(True), ("--force",), "ok"),
    Case(
        "train --resume twice at once (the second waits or fails, the first finishes)",
        two_resumes,
        expect="ok or error",
        check=first_resume_finished,
        may_write="run",
    ),
    # 9. transformers 5 writes no id2label for default labels: derived, not required
    Case(
        "transformers 5: a stock classifier sliced, then exported",
        export_slice("slice-0.5"),
        expect="ok",
        check=no_id2label,
    ),
    Case("transformers 5: a trained run sliced, then exported", export_slice("run-slice"), expect="ok"),
]

CASES += ISSUE_17


# ---- running -------------------------------------------------------------------------------------------------


def digest(root: Path) -> dict[str, str]:
    """Every entry under `root` and what it holds; never opens a special file, nor reads a big one whole."""
    files = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        try:
            if path.is_symlink():
                files[name] = "-> " + os.readlink(path)
            elif path.is_fifo():
                files[name] = "fifo"
            elif path.is_file():
                stat = path.stat()
                if stat.st_size > 64 << 20:  # a sparse gigabyte: its size, inode and time tell a change
                    files[name] = f"{stat.st_size} {stat.st_ino} {stat.st_mtime_ns}"
                else:
                    with path.open("rb") as f:
                        files[name] = hashlib.file_digest(f, "sha256").hexdigest()
            elif path.is_dir():
                files[name + "/"] = ""
        except OSError:  # replaced while we looked (a background process's run)
            files[name] = "changing"
    return files


def child_env(work: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, "EDGEBERT_CACHE": str(work.parent / "cache"), "OMP_NUM_THREADS": "1"}
    env.update({k: v.format(work=work) for k, v in extra.items()})
    env.pop("EDGEBERT_DEBUG", None)
    return env


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process and whatever it started (its own session, made at launch)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def rss_now(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def run_case(case: Case, root: Path) -> dict:
    work = root / case.name.replace("/", "_").replace(" ", "_").replace("\n", "_")
    work.mkdir()
    try:
        argv = case.setup(work)
    except Exception as exc:  # the battery's own bug: report, do not count as held
        if work in BACKGROUND:
            kill_group(BACKGROUND.pop(work))
        return {"name": case.name, "held": False, "why": f"setup failed: {exc!r}"}
    before = digest(work)
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "edgebert", *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(work, case.env),
        cwd=work,
        start_new_session=True,  # a hung child and all it started are killed together
        preexec_fn=case.preexec,
    )
    killed = ""
    while True:
        try:
            stdout, stderr = process.communicate(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() - started > case.time_limit:
                killed = f"no answer within {case.time_limit:.0f} s"
            elif rss_now(process.pid) > RSS_LIMIT_BYTES:  # stopped before it takes the shared machine down
                killed = f"RSS over {RSS_LIMIT_BYTES / 1e9:.1f} GB: killed"
            if killed:
                kill_group(process)
                stdout, stderr = process.communicate()
                break
    seconds = time.monotonic() - started
    rss = peak_rss_of(process.pid)
    out_text = stdout.decode(errors="replace")
    err_lines = stderr.decode(errors="replace").splitlines()
    after = digest(work)
    problems = [killed] if killed else []
    if rss is not None and rss > RSS_LIMIT_BYTES:
        problems.append(f"peak RSS {rss / 1e9:.1f} GB")
    failing = case.expect == "error" or (case.expect == "ok or error" and process.returncode != 0)
    if failing:
        if process.returncode == 0:
            problems.append("exit 0")
        if any("Traceback" in line for line in err_lines):
            problems.append("traceback")
        errors = [line for line in err_lines if line.startswith("error:")]
        if len(errors) != 1 or len([line for line in err_lines if not line.startswith("warning:")]) != 1:
            problems.append(f"{len(err_lines)} stderr lines")
        fragment = case.fragment.replace("{work}", str(work))
        if fragment and not any(fragment in line for line in errors):
            problems.append(f"no {case.fragment!r} in the error")
        changed = sorted({name for name, _ in set(after.items()) ^ set(before.items())})
        if case.may_write:
            changed = [name for name in changed if not name.startswith((case.may_write, f".{case.may_write}"))]
        marker = hashlib.sha256(f"{socket.gethostname()} {process.pid}\n".encode()).hexdigest()
        changed = [name for name in changed if not (name in before and after.get(name) == marker)]  # its lock's owner
        # A dead writer's staging (`.<name>.<pid>-<random>.partial/`, e.g. of the run `prepare` SIGKILLed mid-write) is
        # edgebert's own scratch: removing it is the documented stale-staging rule, not a change to the user's files.
        changed = [name for name in changed if not (name not in after and ".partial" in name)]
        if changed:
            problems.append(f"files changed: {changed[:4]}")
    elif case.expect == "ok" and process.returncode != 0:
        problems.append(f"exit {process.returncode}: {err_lines[-1] if err_lines else ''}")
    left = [name for name in after if ".partial" in name and name not in before]
    if left:
        problems.append(f"staging left: {left[:2]}")
    if case.check is not None:
        try:
            problem = case.check(work, out_text)
        except Exception as exc:  # the check's own failure is the answer: what it looked for is not there
            problem = f"check failed: {exc!r}"
        if problem:
            problems.append(problem)
    return {
        "name": case.name,
        "expect": case.expect,
        "held": not problems,
        "why": "; ".join(problems),
        "exit": process.returncode,
        "stderr": [line[:300] for line in err_lines[-3:]],
        "stdout_bytes": len(stdout),
        "seconds": round(seconds, 1),
        "peak_rss_mb": None if rss is None else round(rss / 1e6),
    }


_RSS: dict[int, int] = {}


def _wait_recording_rss(self: subprocess.Popen, wait_flags: int) -> tuple[int, int]:
    """Popen's own wait, through wait4: each child's peak RSS, which a plain wait does not give."""
    pid, status, usage = os.wait4(self.pid, wait_flags)
    if pid == self.pid:
        _RSS[pid] = usage.ru_maxrss * 1024  # Linux reports KiB
    return pid, status


def peak_rss_of(pid: int) -> int | None:
    return _RSS.get(pid)


def has(root: Path, name: str) -> bool:
    try:
        found(root, name)
    except FileNotFoundError:
        return False
    return True


def stop_when(process: subprocess.Popen, condition: Callable[[], bool]) -> None:
    """SIGKILL `process` (and its group) as soon as `condition` holds, or when it ends or times out."""
    deadline = time.monotonic() + TIME_LIMIT_S
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if condition():
                break
        except OSError:  # a folder renamed while we looked
            pass
        time.sleep(0.05)
    kill_group(process)
    process.wait()


def prepare(base: Path) -> None:
    """The shared inputs: tiny models, slices, ONNX artifacts, an eval cache, training runs (finished and killed).

    All built in child processes: this process stays small, since Linux hands a parent's peak RSS
    to its children (`ru_maxrss` survives fork and exec), and the RSS bound is about the children.
    """
    if (base / "ready").is_file():
        return
    env = {**os.environ, "EDGEBERT_CACHE": str(base / "cache"), "OMP_NUM_THREADS": "1"}
    build = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import hostile; "
    for name, labels in (("model", 2), ("model-reg", 1)):
        code = build + f"hostile.tiny_model(hostile.Path({str(base / name)!r}), {labels})"
        subprocess.run([sys.executable, "-c", code], check=True)
    (base / "t.tsv").write_text("sentence\tlabel\n" + "".join(f"w{i} w{i + 1}\t{i % 2}\n" for i in range(110, 126)))
    (base / "treg.tsv").write_text(scores())
    command = [sys.executable, "-m", "edgebert"]
    killed = [
        subprocess.Popen(
            [*command, *train_cmd(base / teacher, base / out, *KILLED, train=base / data)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for teacher, out, data in (("model", "killed/run", "t.tsv"), ("model-reg", "killed-reg/run", "treg.tsv"))
    ]
    for process, out in zip(killed, ("killed", "killed-reg"), strict=True):  # SIGKILL after the first checkpoint
        stop_when(process, lambda d=base / out: all(has(d, name) for name in ("state.pt", "metrics.jsonl")))
        found(base / out, "state.pt")
    (base / "early").mkdir()
    early = subprocess.Popen(  # SIGKILL at its first file
        [*command, *train_cmd(base / "model", base / "early" / "run", *QUICK)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    stop_when(early, lambda: any((base / "early").iterdir()))
    if not any((base / "early").iterdir()):
        raise RuntimeError("the run to kill early ended before it wrote anything")

    def run(*args: object) -> None:
        subprocess.run([*command, *map(str, args)], check=True, env=env, capture_output=True)

    run("slice", base / "model", "--width", "0.5", "--depth", "0.5", "--out", base / "slice-0.5")
    run("export", base / "model", "--width", "0.5", "--depth", "0.5", "--out", base / "a.onnx")
    run("export", base / "model", "--width", "0.25", "--depth", "0.5", "--out", base / "b.onnx")
    (base / "d.tsv").write_text("sentence\tlabel\n" + "".join(f"w{i} w{i + 1}\t{i % 2}\n" for i in range(110, 150)))
    run("eval", base / "model", "--data", base / "d.tsv", "--grid")
    run("bench", base / "a.onnx", "--runs", "3", "--out", base / "r.json")
    run(*train_cmd(base / "model", base / "trained" / "run", *QUICK))
    run("slice", base / "trained" / "run", "--width", "0.5", "--depth", "0.5", "--out", base / "run-slice")
    (base / "ready").write_text("")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-k", action="append", default=[], help="run the cases whose name contains this (repeatable)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("-v", "--verbose", action="store_true", help="print the cases that held too")
    parser.add_argument("--base", type=Path, help="build the shared inputs once into this folder and reuse them")
    args = parser.parse_args()
    global BASE
    root = Path(tempfile.mkdtemp(prefix="edgebert-hostile-"))
    try:
        BASE = args.base.resolve() if args.base else root / "base"
        BASE.mkdir(exist_ok=True)
        prepare(BASE)
        shutil.copytree(BASE / "cache", root / "cache")
        cases = [c for c in CASES if not args.k or any(k in c.name for k in args.k)]
        if not cases:
            raise SystemExit(f"no case name contains any of {args.k}")
        subprocess.Popen._try_wait = _wait_recording_rss  # CPython's POSIX hook for wait(); private but long stable
        with ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(lambda c: run_case(c, root), cases))
        held = sum(r["held"] for r in results)
        slowest = max(results, key=lambda r: r.get("seconds", 0))
        largest = max(results, key=lambda r: r.get("peak_rss_mb") or 0)
        worst = (
            f"slowest {slowest.get('seconds')} s ({slowest['name']}), "
            f"largest {largest.get('peak_rss_mb')} MB peak RSS ({largest['name']})"
        )
        report = {"tried": len(results), "held": held, "worst": worst, "cases": results}
        RESULTS.mkdir(exist_ok=True)
        if not args.k:
            (RESULTS / "hostile.json").write_text(json.dumps(report, indent=2) + "\n")
            lines = ["| case | expected | held | why |", "|---|---|---|---|"]
            lines += [
                f"| {r['name']} | {r.get('expect', '')} | {'yes' if r['held'] else 'NO'} | {r['why']} |"
                for r in results
            ]
            (RESULTS / "hostile.md").write_text(f"{held} of {len(results)} held; {worst}\n\n" + "\n".join(lines) + "\n")
        for r in results:
            if not r["held"]:
                print(f"FAILED  {r['name']}: {r['why']}  {r.get('stderr', '')}")
            elif args.verbose:
                figures = f"exit {r['exit']}, {r['seconds']} s, {r['peak_rss_mb']} MB"
                print(f"held    {r['name']}: {figures}  {r['stderr'][-1:]}")
        print(f"{held} of {len(results)} held; {worst}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


BASE = Path()

if __name__ == "__main__":
    main()
