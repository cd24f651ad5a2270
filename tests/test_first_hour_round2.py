"""Issue 18's first-hour frictions: data columns, missing extras reported at once, quiet stderr, the truthful
not-a-DynaBERT note, and what Ctrl-C leaves."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgebert.data import Columns, read_dataset
from edgebert.errors import EdgebertError
from edgebert.manifests import TRAIN_MANIFEST, FileRef, PhaseRecord, TrainManifest
from tests.labelled import sentences

ROOT = Path(__file__).resolve().parent.parent


def cli_subprocess(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgebert", *map(str, args)], capture_output=True, text=True, timeout=300, **kwargs
    )


# ---- --text-column / --label-column ----------------------------------------------------------------


def test_a_text_label_file_reads_as_it_is_whatever_its_name(tmp_path):
    path = tmp_path / "reviews.txt"  # neither .csv nor .tsv: the header line says comma-separated
    path.write_text('text,label\n"a fine, warm film",1\ndull,0\n')
    data = read_dataset(path)
    assert data.first == ["a fine, warm film", "dull"] and data.labels == ["1", "0"] and data.second is None


def test_named_columns_single_and_pairs(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text("id,Question,Answer,Verdict\n1,who,him,yes\n2,what,that,no\n")
    pairs = read_dataset(path, Columns(("question", "answer"), "verdict"))
    assert (pairs.first, pairs.second, pairs.labels) == (["who", "what"], ["him", "that"], ["yes", "no"])
    single = read_dataset(path, Columns(("answer",), "verdict"))
    assert single.first == ["him", "that"] and single.second is None
    with pytest.raises(
        EdgebertError,
        match=r"qa.csv:1: no column 'answr' \(--text-column\); the file's columns: "
        r"id, question, answer, verdict",
    ):
        read_dataset(path, Columns(("answr",), "verdict"))
    with pytest.raises(EdgebertError, match="the header must name a target column"):
        read_dataset(path, Columns(("answer",)))


def test_eval_takes_columns_and_caches_each_choice_apart(labelled_classifier, tmp_path, run_cli):
    path = tmp_path / "pairs.csv"
    rows = [f"{a},{b},{'pos' if len(a) > len(b) else 'neg'}" for a, b in sentences(12, seed=3)]
    path.write_text("left,right,gold\n" + "\n".join(rows) + "\n")
    common = ["eval", labelled_classifier, "--data", path, "--width", "1", "--depth", "1", "--json"]
    first = run_cli(*common, "--text-column", "left", "--label-column", "gold")
    assert first.code == 0, first.stderr
    assert json.loads(first.stdout)["columns"] == ["left", "gold"]
    other = run_cli(*common, "--text-column", "Left,Right", "--label-column", "gold")
    assert other.code == 0, other.stderr
    report = json.loads(other.stdout)
    assert report["columns"] == ["left", "right", "gold"] and not report["results"][0]["cached"]
    again = json.loads(run_cli(*common, "--text-column", "left", "--label-column", "gold").stdout)
    assert (
        again["results"][0]["cached"]
        and again["results"][0]["metrics"] == json.loads(first.stdout)["results"][0]["metrics"]
    )
    bad = run_cli(*common, "--text-column", "a,b,c")
    assert bad.code == 2 and bad.stderr.startswith("error: --text-column: give one column name")
    missing = run_cli(*common, "--label-column", "stars")
    assert missing.code == 1 and "no column 'stars' (--label-column); the file's columns: left, right, gold" in (
        missing.stderr
    )


# ---- a missing extra: reported before torch is imported -----------------------------------------------

HIDING_RUNNER = """
import contextlib, io, json, sys
from edgebert.cli import main

for hidden, args in json.loads(sys.argv[1]):
    sys.modules[hidden] = None  # `import hidden` now raises ImportError, as when it is not installed
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code
    del sys.modules[hidden]
    print(json.dumps({"code": code, "stderr": err.getvalue(), "torch": "torch" in sys.modules}))
"""


def test_a_missing_extra_is_reported_before_importing_torch(tmp_path):
    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\nw1\t0\n")
    cases = [
        ("litert_torch", ["export", "--format", "tflite", "--out", str(tmp_path / "m.tflite")], "tflite"),
        ("transformers", ["export", "--format", "onnx", "--out", str(tmp_path / "m.onnx")], "onnx"),
        ("transformers", ["slice", "--width", "0.5", "--out", str(tmp_path / "s")], "slice"),
        ("safetensors", ["eval", "--data", str(data), "--width", "1"], "slice"),
        ("onnxruntime", ["pick", "--measure"], "onnx"),
    ]
    done = subprocess.run(
        [sys.executable, "-c", HIDING_RUNNER, json.dumps([[hidden, args] for hidden, args, _ in cases])],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    for (hidden, args, extra), line in zip(cases, done.stdout.splitlines(), strict=True):
        result = json.loads(line)
        assert result["code"] == 1, (args, result)
        assert result["stderr"].count("\n") == 1 and f"pip install 'edgebert[{extra}]'" in result["stderr"], args
        assert hidden in result["stderr"], args
        assert not result["torch"], f"{args}: torch was imported before the missing {hidden} was reported"
    assert list(tmp_path.iterdir()) == [data]


# ---- stderr carries edgebert's own lines only -----------------------------------------------------------


def test_a_clean_command_prints_only_edgeberts_own_lines(tiny_models, tmp_path):
    """transformers imports torchao where installed, whose import logs (failed CUDA kernels, torch _pytree's
    Enum deprecation) say nothing about the user's model: stderr holds only edgebert's `warning:` lines."""
    done = cli_subprocess("slice", tiny_models["bert-cls"], "--width", "0.5", "--out", tmp_path / "s", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines and all(line.startswith("warning: ") for line in lines), lines


# ---- the note on sub-networks that were not trained ------------------------------------------------------


def train_manifest(phases: list[tuple[str, list[tuple[float, float]]]]) -> str:
    ref = FileRef(path="x", sha256="0" * 64)
    records = [
        PhaseRecord(
            name=name, teacher="t", subnetworks=subs, steps=1, epochs=1.0, best_step=1, best_score=0.5, wall_time_s=1
        )
        for name, subs in phases
    ]
    manifest = TrainManifest(
        edgebert_version="0",
        teacher=ref,
        train_data=ref,
        dev_data=ref,
        eval_data=None,
        selected_on="dev",
        metric="accuracy",
        phases=records,
        hyperparameters={},
        rewiring=None,
        dev_metrics={},
        world_size=1,
        device="cpu",
        wall_time_s=1.0,
    )
    return manifest.model_dump_json()


@pytest.mark.parametrize(
    ("phases", "says"),
    [
        (None, "was not trained as a DynaBERT (no edgebert-train.json)"),
        ([("finetune", [(1.0, 1.0)])], "was fine-tuned by `edgebert train` at full size only"),
        ([("width", [(1.0, 1.0), (0.5, 1.0)]), ("depth", [(0.5, 0.5)])], None),
    ],
    ids=["no-manifest", "fine-tuned-only", "dynabert"],
)
def test_the_note_says_how_the_model_was_trained(tiny_models, tmp_path, run_cli, phases, says):
    model = Path(shutil.copytree(tiny_models["bert-cls"], tmp_path / "model"))
    if phases is not None:
        (model / TRAIN_MANIFEST).write_text(train_manifest(phases))
    result = run_cli("slice", model, "--width", "0.5", "--depth", "0.5", "--out", tmp_path / "s")
    assert result.code == 0, result.stderr
    if says is None:
        assert result.stderr == ""
    else:
        assert result.stderr.count("\n") == 1 and says in result.stderr
        assert ("no edgebert-train.json" in result.stderr) == (phases is None)  # never denies a file that is there


# ---- Ctrl-C ---------------------------------------------------------------------------------------------


def test_ctrl_c_in_a_command_that_keeps_nothing_says_so(tiny_models, tmp_path, run_cli, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("edgebert.slicing.slice_model", interrupted)
    result = run_cli("slice", tiny_models["bert-cls"], "--width", "0.5", "--out", tmp_path / "s")
    assert result.code == 130 and result.stderr == "error: interrupted: nothing was written\n"


def test_ctrl_c_in_train_keeps_the_run_and_says_resume_continues(labelled_classifier, tmp_path):
    from edgebert.train import RunFiles

    data = tmp_path / "train.tsv"
    data.write_text(
        "sentence\tlabel\n"
        + "".join(f"{a}\t{'pos' if i % 2 else 'neg'}\n" for i, (a, _) in enumerate(sentences(32, seed=5)))
    )
    out = tmp_path / "run"
    command = ["train", labelled_classifier, "--train", data, "--dev", data, "--phases", "width", "--max-steps", "500"]
    command += ["--batch-size", "8", "--eval-every", "500", "--save-every", "2", "--out", out]
    process = subprocess.Popen(
        [sys.executable, "-m", "edgebert", *map(str, command)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        # A job started in the background by a non-interactive shell (nohup, `cmd &` in a script, some CI runners)
        # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler: the run would rightly go
        # on. The user pressing Ctrl-C has it at its default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    files, deadline = RunFiles(out), time.monotonic() + 300
    while not files.state.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # training has started once a checkpoint is saved
    assert process.poll() is None, process.communicate()[1]
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: interrupted: the run is kept") and "--resume` continues it" in last, last
    assert files.state.is_file() and not out.exists()
