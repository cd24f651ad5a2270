"""`edgebert train --augmented FILE` and `--augment N` (issue 20): the phases with a teacher train on the augmented
rows, the finetune phase on --train; the manifest records the file; a file that is not --train's is refused; the
file --augment makes lives in the run's home and --resume reuses it, and refuses another.

The teacher is a tiny regression BERT whose vocabulary holds real words (so `augment` finds neighbours), and every
training pair has its own score: `augment` copies the score to the variants, which tells independently which
example each augmented row comes from.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from edgebert.augment import AugmentOptions, augment_file, manifest_path
from edgebert.data import load_tokenizer
from edgebert.errors import EdgebertError
from edgebert.train import RunFiles, TrainConfig, train
from edgebert.train.augmented import given_augmented
from edgebert.train.inputs import read_inputs
from edgebert.train.loop import Trainer
from tests.models import save_model, tiny_model

# The random teacher learnt nothing: distilling it anyway is the point here, not the warning.
pytestmark = pytest.mark.filterwarnings("ignore:.*no better than a constant guess")

WORDS = """movie film story plot actor cast scene music song dance good great fine bad awful dull funny sad long short
boring lovely clever silly warm cold bright dark quick slow""".split()  # noqa: SIM905 (two lines, not one per word)
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "was", *WORDS]
TRAIN_PAIRS, BATCH = 12, 16
# A run that trains little: two widths at full depth, then two depths (4 sub-networks), no evaluation before the end.
SMALL = dict(widths=(1.0, 0.5), depths=(1.0, 0.5), batch_size=BATCH, eval_every=1000, save_every=1000)


def write_pairs(path: Path, count: int, seed: int) -> Path:
    """Sentence pairs of real words, each pair scored with its own number (0.0, 0.1, ...)."""
    rng = np.random.default_rng(seed)
    lines = ["sentence1\tsentence2\tscore"]
    for i in range(count):
        first, second = (" ".join(rng.choice(WORDS, size=rng.integers(3, 7))) for _ in range(2))
        lines.append(f"the {first}\ta {second}\t{i / 10:.1f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file, dialect="excel" if path.suffix == ".csv" else "excel-tab"))


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("augmented")
    case = json.dumps({"do_lower_case": True})
    teachers = {
        name: save_model(tiny_model("bert", num_labels=1, vocab_size=len(VOCAB), seed=seed), root / name, VOCAB, case)
        for name, seed in (("teacher", 0), ("other_teacher", 5))
    }
    files = {
        "train": write_pairs(root / "train.tsv", TRAIN_PAIRS, seed=1),
        "other_train": write_pairs(root / "other-train.tsv", TRAIN_PAIRS, seed=2),
        "dev": write_pairs(root / "dev.tsv", 8, seed=3),
    }
    made = {
        "augmented": (teachers["teacher"], files["train"], 3),
        "augmented_other_variants": (teachers["teacher"], files["train"], 2),
        "from_other_train": (teachers["teacher"], files["other_train"], 3),
        "other_teacher": (teachers["other_teacher"], files["train"], 3),
    }
    for name, (teacher, data, variants) in made.items():
        files[name] = root / f"{name}.tsv"
        augment_file(teacher, data, files[name], AugmentOptions(variants=variants))
    return {"root": root, **teachers, **files}


def run(task, out: Path, config: TrainConfig, **options):
    return train(task["teacher"], task["train"], task["dev"], out, config, allow_weak_teacher=True, **options)


def test_teacher_phases_train_on_the_augmented_rows_and_finetune_on_train(task, tmp_path):
    config = TrainConfig(phases=("width", "depth", "finetune"), epochs=1.0, **SMALL)
    manifest = run(task, tmp_path / "out", config, augmented=task["augmented"])
    augmented = rows(task["augmented"])
    assert len(augmented) > 2 * TRAIN_PAIRS  # variants were written
    steps = {phase.name: phase.steps for phase in manifest.phases}
    per_epoch = math.ceil(len(augmented) / BATCH)
    assert steps == {"width": per_epoch, "depth": per_epoch, "finetune": math.ceil(TRAIN_PAIRS / BATCH)}
    record, written = manifest.augmented, json.loads(manifest_path(task["augmented"]).read_text())
    assert record.data.sha256 == hashlib.sha256(task["augmented"].read_bytes()).hexdigest()
    assert record.data.path == str(task["augmented"].resolve()) and not record.made_in_run
    assert record.data.examples == record.rows == len(augmented)
    assert record.settings == written["settings"] and record.settings["variants"] == 3
    on_disk = json.loads((tmp_path / "out" / "edgebert-train.json").read_text())
    assert on_disk["version"] == 2 and on_disk["augmented"]["data"]["sha256"] == record.data.sha256


def test_train_examples_keeps_the_chosen_examples_with_all_their_variants(task, tmp_path, monkeypatch):
    config = TrainConfig(phases=("width",), epochs=1.0, train_examples=4, seed=3, **{**SMALL, "batch_size": 2})
    chosen = sorted(np.random.default_rng(3).permutation(TRAIN_PAIRS)[:4].tolist())  # TrainConfig's seeded subset
    scores = {row["score"] for i, row in enumerate(rows(task["train"])) if i in chosen}
    kept = [i for i, row in enumerate(rows(task["augmented"])) if row["score"] in scores]
    inputs = read_inputs(task["teacher"], task["train"], task["dev"], None, config)
    monkeypatch.setattr("edgebert.train.augmented.ENCODE_CHUNK", 5)  # tokenized in several chunks
    augmented = given_augmented(task["augmented"], inputs)
    assert inputs.indices == chosen and augmented.rows == kept
    texts = [(row["sentence1"], row["sentence2"]) for i, row in enumerate(rows(task["augmented"])) if i in kept]
    tokenizer = load_tokenizer(task["teacher"], "bert")
    assert augmented.encoded.input_ids == tokenizer([a for a, _ in texts], [b for _, b in texts])["input_ids"]
    manifest = run(task, tmp_path / "out", config, augmented=task["augmented"])
    assert len(kept) > 4 and manifest.augmented.data.examples == len(kept)
    assert manifest.train_data.examples == 4
    assert manifest.phases[0].steps == math.ceil(len(kept) / 2)


def test_labels_of_the_augmented_file_are_never_read(task, tmp_path):
    """A file whose labels mean nothing to the teacher (the score column says 'n/a') distils all the same."""
    unlabelled = tmp_path / "unlabelled.tsv"
    lines = task["augmented"].read_text().splitlines()
    unlabelled.write_text("\n".join([lines[0]] + [line.rsplit("\t", 1)[0] + "\tn/a" for line in lines[1:]]) + "\n")
    manifest = json.loads(manifest_path(task["augmented"]).read_text())
    sha256 = hashlib.sha256(unlabelled.read_bytes()).hexdigest()
    manifest["augmented"].update(path=unlabelled.name, sha256=sha256)
    manifest_path(unlabelled).write_text(json.dumps(manifest))
    result = run(task, tmp_path / "out", TrainConfig(phases=("width",), max_steps=1, **SMALL), augmented=unlabelled)
    assert result.augmented.data.sha256 == sha256


def only_manifest_missing(task, tmp_path) -> Path:
    copy = tmp_path / "copy.tsv"
    copy.write_bytes(task["augmented"].read_bytes())
    return copy


REFUSED = {
    "no manifest": (only_manifest_missing, [], "has no copy.tsv.json"),
    "made from another file": (lambda task, _: task["from_other_train"], [], "was augmented from"),
    "no phase with a teacher": (lambda task, _: task["augmented"], ["--phases", "finetune"], "this run has none"),
    "with --augment": (lambda task, _: task["augmented"], ["--augment", "2"], "not both"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_an_augmented_file_not_made_from_train_is_refused_in_one_line(task, tmp_path, run_cli, case):
    make, extra, message = REFUSED[case]
    out = tmp_path / "out"
    common = ["--train", task["train"], "--dev", task["dev"], "--out", out, "--max-steps", "1"]
    result = run_cli("train", task["teacher"], *common, "--augmented", make(task, tmp_path), *extra)
    lines = result.stderr.strip().splitlines()
    assert result.code in (1, 2) and len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert message in lines[0]
    assert not out.exists() and not RunFiles(out).home.exists()


def test_a_file_augmented_with_another_teacher_is_warned_about_and_recorded(task, tmp_path):
    config = TrainConfig(phases=("width",), max_steps=1, **SMALL)
    with pytest.warns(UserWarning, match="augmented with another teacher"):
        manifest = run(task, tmp_path / "out", config, augmented=task["other_teacher"])
    written = json.loads(manifest_path(task["other_teacher"]).read_text())
    assert manifest.augmented.teacher_sha256 == written["teacher"]["sha256"] != manifest.teacher.sha256


@pytest.fixture
def interrupt_once(monkeypatch):
    """Stop the first run that reaches its second phase (the first one finished and saved: --resume continues)."""
    run_phase, stopped = Trainer._run_phase, []

    def stopping(self, index, resume_state):
        if index == 1 and not stopped:
            stopped.append(index)
            raise KeyboardInterrupt
        return run_phase(self, index, resume_state)

    monkeypatch.setattr(Trainer, "_run_phase", stopping)


def test_augment_makes_the_file_in_the_run_home_and_resume_reuses_it(task, tmp_path, monkeypatch, interrupt_once):
    out, config = tmp_path / "out", TrainConfig(phases=("width", "depth"), max_steps=2, **SMALL)
    with pytest.raises(KeyboardInterrupt):
        run(task, out, config, augment=2)
    made = RunFiles(out).augmented_dir / "augmented.csv"
    sha256, made_rows = hashlib.sha256(made.read_bytes()).hexdigest(), rows(made)
    assert made_rows[0] == rows(task["train"])[0] and len(made_rows) > TRAIN_PAIRS  # --train's examples and variants
    with pytest.raises(EdgebertError, match=r"augment \(2, now 3\)"):
        run(task, out, config, augment=3, resume=True)

    def regenerate(*args, **kwargs):
        raise AssertionError("--resume made the augmented file again")

    monkeypatch.setattr("edgebert.train.augmented.augment_file", regenerate)
    manifest = run(task, out, config, augment=2, resume=True)
    record = manifest.augmented
    assert record.made_in_run and record.data.sha256 == sha256 and record.settings["variants"] == 2
    assert record.data.examples == record.rows == len(made_rows)
    assert not RunFiles(out).home.exists()  # published: the home and its augmented file are gone


def test_resume_with_another_augmented_file_is_refused_naming_it(task, tmp_path, interrupt_once):
    out, config = tmp_path / "out", TrainConfig(phases=("width", "depth"), max_steps=1, **SMALL)
    with pytest.raises(KeyboardInterrupt):
        run(task, out, config, augmented=task["augmented"])
    with pytest.raises(EdgebertError) as refused:
        run(task, out, config, augmented=task["augmented_other_variants"], resume=True)
    assert "augmented_sha256 (other content)" in str(refused.value) and "\n" not in str(refused.value)
    assert "augment_settings" in str(refused.value)
