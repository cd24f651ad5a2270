"""The parity gate's rules (its documented bounds, non-finite outputs, classifiers' top-1, padded rows) and the typed
sidecar's reader."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgebert.errors import EdgebertError
from edgebert.export import PARITY_GATES, export_model
from edgebert.export.base import (
    FLIP_HEADROOM,
    ParityGateError,
    flip_margin,
    load_source,
    parity_report,
    verify_artifact,
)
from edgebert.export.onnx import OnnxExporter
from edgebert.runtimes import SessionOptions, open_session
from edgebert.sidecar import SCHEMA_VERSION, gate_holds, gate_relation, read_sidecar, sidecar_path
from edgebert.slicing import slice_model
from tests.artifacts import DOCUMENTED_GATES, nan_classifier_bias
from tests.models import TINY

POSITIONS = TINY["max_position_embeddings"]  # the tiny BERT's positions, set by the fixture, not by edgebert


@pytest.fixture(scope="module")
def bert_slice(tiny_models, tmp_path_factory) -> Path:
    return slice_model(tiny_models["bert-cls"], 0.5, 0.5, out=tmp_path_factory.mktemp("gates") / "slice")[0]


@pytest.fixture(scope="module")
def exported(bert_slice, tmp_path_factory) -> dict[str, Path]:
    """One fp32 and one int8 ONNX export of the same slice, as a user would have them side by side."""
    root = tmp_path_factory.mktemp("exported")
    return {p: Path(export_model(bert_slice, "onnx", p, out=root / f"m.{p}.onnx")["path"]) for p in ("fp32", "int8")}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --- the bounds ------------------------------------------------------------------------------------

EXACT = {"max_abs_diff": 0.0, "cosine": 1.0}  # each metric's value for identical outputs


def moved_to(reference: np.ndarray, metric: str, value: float) -> np.ndarray:
    """Outputs whose `metric` against `reference` is `value`: one entry shifted, or the whole rotated by
    arccos(value) towards an orthogonal direction of the same norm."""
    if metric == "max_abs_diff":
        moved = reference.copy()
        moved.flat[0] += value
        return moved
    flat = reference.ravel()
    other = np.random.default_rng(1).normal(size=flat.shape)
    other -= (other @ flat) / (flat @ flat) * flat
    other *= np.linalg.norm(flat) / np.linalg.norm(other)
    angle = np.arccos(value)
    return (np.cos(angle) * flat + np.sin(angle) * other).reshape(reference.shape)


@pytest.mark.parametrize(("precision", "metric", "bound"), [(p, *gate) for p, gate in DOCUMENTED_GATES.items()])
def test_each_precision_is_held_to_its_documented_bound(precision, metric, bound):
    """The package's gate is the documented one, and the gate applies it: outputs a tenth of the tolerance inside
    the bound pass, a tenth outside fail."""
    assert PARITY_GATES.keys() == DOCUMENTED_GATES.keys() and PARITY_GATES[precision] == (metric, bound)
    reference = np.random.default_rng(0).normal(size=(6, 4))
    for share, passes in [(0.9, True), (1.1, False)]:
        value = EXACT[metric] + share * (bound - EXACT[metric])
        report, failures = parity_report([reference], [moved_to(reference, metric, value)], precision, classifier=False)
        assert report[metric] == pytest.approx(value, rel=1e-9)
        assert report["gate"] == {"metric": metric, "bound": bound, "passed": passes} and (not failures) is passes


# --- non-finite outputs --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_non_finite_artifact_outputs_fail_every_gate(bad, precision):
    reference = np.random.default_rng(0).normal(size=(6, 4))
    actual = reference.copy()
    actual[2, 1] = bad
    report, failures = parity_report([reference], [actual], precision, classifier=True)
    assert not report["gate"]["passed"] and report["non_finite"] == {"reference": 0, "artifact": 1}
    assert failures == ["1 non-finite values (NaN or inf) in the artifact's outputs"]
    assert not np.isfinite(report["max_abs_diff"])  # never the 0.0 that max(0.0, nan) gave


def test_non_finite_reference_fails_too():
    reference = np.ones((2, 3))
    reference[0, 0] = np.nan
    report, failures = parity_report([reference], [np.ones((2, 3))], "fp32", classifier=False)
    assert not report["gate"]["passed"] and failures == [
        "1 non-finite values (NaN or inf) in the PyTorch reference's outputs"
    ]


def test_an_artifact_that_outputs_nan_is_refused_and_nothing_written(bert_slice, tmp_path, monkeypatch):
    """A NaN bias in the exported graph: ORT really outputs NaN, and the gate says so instead of passing."""
    import onnxruntime as ort

    real_convert = OnnxExporter.convert

    def convert_then_poison(self, source, path, precision, scheme, seq_len, work_dir, embeddings):
        real_convert(self, source, path, precision, scheme, seq_len, work_dir, embeddings)
        nan_classifier_bias(path)
        kept = tmp_path / "poisoned.onnx"
        shutil.copy(path, kept)

    monkeypatch.setattr(OnnxExporter, "convert", convert_then_poison)
    out = tmp_path / "out"
    with pytest.raises(ParityGateError, match=r"fp32: \d+ non-finite values \(NaN or inf\) in the artifact's outputs"):
        export_model(bert_slice, "onnx", "fp32", out=out / "m.onnx")
    assert not out.exists() or list(out.iterdir()) == []
    session = ort.InferenceSession(str(tmp_path / "poisoned.onnx"), providers=["CPUExecutionProvider"])
    ids = np.full((1, 8), 1000 % TINY["vocab_size"], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    assert np.isnan(session.run(None, feeds)[0]).any()  # the artifact really does output NaN


# --- classifiers: top-1 ----------------------------------------------------------------------------


def test_a_top1_flip_under_a_shared_offset_fails_although_cosine_passes():
    """Two labels sharing a large offset: swapping one row's logits keeps raw cosine above every bound."""
    rng = np.random.default_rng(3)
    reference = 20 + rng.normal(scale=0.5, size=(8, 2))
    reference[0] = [20.0, 21.0]
    actual = reference.copy()
    actual[0] = actual[0, ::-1]  # the top-1 flips on row 0
    assert reference[0].argmax() != actual[0].argmax()
    for precision, (metric, bound) in PARITY_GATES.items():
        if metric == "cosine":
            assert cosine(reference, actual) >= bound  # the old gate passed this
        report, failures = parity_report([reference], [actual], precision, classifier=True)
        assert not report["gate"]["passed"] and report["top1"]["decided_flipped"] == 1
        assert any(f.startswith("top-1 changed on 1 of") for f in failures)
        assert report["top1_agreement"] == pytest.approx(7 / 8)


def test_near_ties_may_flip_within_the_tolerance():
    """A row whose margin is far below the tolerated error may flip; the gate does not demand the impossible."""
    reference = np.array([[2.0, -1.0, 0.0], [0.5, 0.5001, -3.0], [-1.0, 3.0, 0.0], [1.0, 0.0, 2.5]])
    actual = reference + np.array([[0.01, 0.0, 0.0], [0.0002, 0.0, 0.0], [0.0, -0.01, 0.0], [0.0, 0.0, 0.01]])
    assert reference[1].argmax() != actual[1].argmax() and cosine(reference, actual) > 0.9999
    report, failures = parity_report([reference], [actual], "int8", classifier=True)
    assert failures == [] and report["top1"]["decided_rows"] == 3 and report["top1_agreement"] == 0.75


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_no_error_within_the_tolerance_can_flip_a_decided_row(precision):
    """Errors aimed at top-1 (down) and runner-up (up), as large as the rule allows, never flip a decided row."""
    rng = np.random.default_rng(7)
    metric, bound = PARITY_GATES[precision]
    for _ in range(200):
        reference = rng.normal(scale=rng.uniform(0.1, 10), size=(6, int(rng.integers(2, 5)))) + rng.normal(scale=5)
        threshold, _ = flip_margin(precision, reference)
        ordered = np.sort(reference, axis=-1)
        decided = ordered[:, -1] - ordered[:, -2] > threshold
        rows = np.arange(len(reference))
        error = np.zeros_like(reference)
        error[rows, reference.argmax(-1)], error[rows, np.argsort(reference, axis=-1)[:, -2]] = -1.0, 1.0
        if metric == "max_abs_diff":
            error *= bound  # max |d| at the bound
        else:  # |d| = FLIP_HEADROOM x the relative error the cosine bound allows, of the typical centred row
            typical = np.sqrt(np.mean(np.sum((reference - reference.mean(-1, keepdims=True)) ** 2, axis=-1)))
            error *= FLIP_HEADROOM * np.sqrt(2 * (1 - bound)) * typical / np.sqrt(2)
        actual = reference + 0.999 * error
        assert (actual.argmax(-1) == reference.argmax(-1))[decided].all()


# --- padded rows ------------------------------------------------------------------------------------


def test_the_gate_runs_padded_rows_and_records_them(bert_slice, exported):
    """A runtime that ignored the attention mask would fail: padding is part of what is verified."""
    sidecar = read_sidecar(exported["fp32"])
    checked = sidecar.parity.inputs
    assert checked.padded_rows >= checked.rows // 2 and checked.shortest_row < checked.shapes[0][1]
    assert 0.2 < checked.padding_share < 0.8

    session = open_session(exported["fp32"], SessionOptions(threads=1))
    real_run = session.run

    def ignore_mask(feeds):
        return real_run({**feeds, "attention_mask": np.ones_like(feeds["attention_mask"])})

    source = load_source(bert_slice, None, None)
    verify_artifact(OnnxExporter(), source, session, "fp32", None)  # passes as exported ...
    session.run = ignore_mask
    with pytest.raises(ParityGateError, match="max_abs_diff"):  # ... and fails when the mask is ignored
        verify_artifact(OnnxExporter(), source, session, "fp32", None)


def test_onnx_seq_len_is_verified_and_bounded_by_positions(bert_slice, tmp_path, run_cli):
    sidecar = export_model(bert_slice, "onnx", "fp32", seq_len=POSITIONS, out=tmp_path / "long.onnx")
    assert [8, POSITIONS] in sidecar["parity"]["inputs"]["shapes"] and sidecar["max_seq_len"] == POSITIONS
    assert sidecar["seq_len"] is None  # the axes stay dynamic
    too_long = run_cli("export", bert_slice, "--seq-len", POSITIONS + 1, "--out", tmp_path / "x.onnx")
    assert too_long.code == 1
    assert too_long.stderr.strip() == f"error: --seq-len {POSITIONS + 1} exceeds the model's {POSITIONS} positions"
    assert not (tmp_path / "x.onnx").exists()


# --- the sidecar ------------------------------------------------------------------------------------


def test_sidecar_describes_its_artifact(exported):
    artifact = exported["int8"]
    on_disk = json.loads(sidecar_path(artifact).read_text())
    assert on_disk["schema_version"] == SCHEMA_VERSION and on_disk["precision"] == "int8"
    assert on_disk["embeddings"] is None  # int8's own table unless --embeddings asks
    assert on_disk["sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert on_disk["size_bytes"] == artifact.stat().st_size and on_disk["max_seq_len"] == POSITIONS
    sidecar = read_sidecar(artifact)
    assert sidecar.precision == "int8" and sidecar.max_seq_len == POSITIONS


def test_a_new_artifact_beside_an_old_sidecar_is_refused(exported, tmp_path, run_cli):
    """What SIGKILL between the two renames of `export --force` leaves: an int8 model with the fp32 sidecar."""
    artifact = tmp_path / "m.onnx"
    shutil.copy(exported["int8"], artifact)
    shutil.copy(sidecar_path(exported["fp32"]), sidecar_path(artifact))
    result = run_cli("bench", artifact, "--runs", "1")
    assert result.code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert f"{artifact}.json does not describe m.onnx" in result.stderr and "re-export" in result.stderr

    shutil.copy(exported["fp32"], artifact)  # same size, one byte different
    data = bytearray(artifact.read_bytes())
    data[-1] ^= 1
    artifact.write_bytes(bytes(data))
    with pytest.raises(EdgebertError, match="another sha256"):
        read_sidecar(artifact)


def _edited(sidecar: dict, path: str, value) -> dict:
    """A deep copy of `sidecar` with the dotted `path` set to `value`."""
    edited = json.loads(json.dumps(sidecar))
    *parents, last = path.split(".")
    target = edited
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    target[last] = value
    return edited


def _nested(depth: int):
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("inputs", ["input_ids", "attention_mask"], "inputs.0"),
        ("vocab_size", 0, "vocab_size"),
        ("vocab_size", "50000", "vocab_size"),
        ("runtime", "onnxruntime", "runtime"),
        ("runtime.name", "tensorflow", "runtime.name"),
        ("runtime.disabled_optimizers", "SkipLayerNormFusion", "runtime.disabled_optimizers"),
        ("format", "tflite", "runtime.name 'onnxruntime' does not run tflite artifacts"),
        ("pad_token_id", -7, "pad_token_id"),
        ("max_seq_len", 0, "max_seq_len"),
        ("parity.cosine", float("nan"), "parity.cosine"),
        ("manifest", _nested(100), "manifest: edgebert_version: missing"),
        ("manifest.width", 1.5, "manifest: width"),
        ("schema_version", SCHEMA_VERSION + 1, "schema_version"),
    ],
)
def test_wrong_shaped_sidecars_are_one_line_naming_file_and_field(exported, tmp_path, run_cli, field, value, expected):
    artifact = tmp_path / "m.onnx"
    shutil.copy(exported["fp32"], artifact)
    good = json.loads(sidecar_path(exported["fp32"]).read_text())
    sidecar_path(artifact).write_text(json.dumps(_edited(good, field, value)))
    result = run_cli("bench", artifact, "--runs", "1")
    assert result.code == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {artifact}.json is not a valid sidecar")
    assert expected in lines[0]


@pytest.mark.parametrize(("pad_token_id", "accepted"), [(TINY["vocab_size"] - 1, True), (TINY["vocab_size"], False)])
def test_pad_token_id_is_one_of_the_vocabularys_ids(exported, tmp_path, pad_token_id, accepted):
    """Token ids run 0 .. vocab_size - 1: the last id may be the padding, vocab_size itself is outside."""
    artifact = tmp_path / "m.onnx"
    shutil.copy(exported["fp32"], artifact)
    good = json.loads(sidecar_path(exported["fp32"]).read_text())
    assert good["vocab_size"] == TINY["vocab_size"]
    sidecar_path(artifact).write_text(json.dumps(good | {"pad_token_id": pad_token_id}))
    if accepted:
        assert read_sidecar(artifact).pad_token_id == pad_token_id
    else:
        with pytest.raises(EdgebertError, match=f"pad_token_id {pad_token_id} is outside the vocabulary of"):
            read_sidecar(artifact)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{}", "has no schema_version"),
        ("[]", "is not a valid sidecar: Input should be a valid dictionary"),
        ('{"schema_version": 1', "is not valid JSON"),
    ],
)
def test_broken_sidecar_files_are_one_line(exported, tmp_path, run_cli, text, expected):
    artifact = tmp_path / "m.onnx"
    shutil.copy(exported["fp32"], artifact)
    sidecar_path(artifact).write_text(text)
    result = run_cli("bench", artifact, "--runs", "1")
    assert result.code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert str(artifact) in result.stderr and expected in result.stderr


def test_a_deeply_nested_sidecar_is_one_line(exported, tmp_path):
    """In a fresh process, as a user runs bench: the TFLite converter raises the interpreter's recursion
    limit to 100000 when imported, after which this input overflows the C stack in-process (see report)."""
    artifact = tmp_path / "m.onnx"
    shutil.copy(exported["fp32"], artifact)
    sidecar_path(artifact).write_text("[" * 100_000 + "]" * 100_000)
    done = subprocess.run(
        [sys.executable, "-m", "edgebert", "bench", str(artifact), "--runs", "1"], capture_output=True, text=True
    )
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
    assert str(artifact) in done.stderr and "nested too deeply" in done.stderr


def test_bench_reads_the_validated_sidecar(exported):
    from edgebert.bench import read_sidecar as bench_read_sidecar

    sidecar = bench_read_sidecar(exported["int8"])
    assert sidecar.precision == "int8" and sidecar.max_seq_len == POSITIONS
    assert sidecar.manifest["width"] == 0.5
    bare = exported["int8"].with_name("bare.onnx")
    shutil.copy(exported["int8"], bare)
    assert bench_read_sidecar(bare) is None


@pytest.mark.parametrize(
    ("metric", "value", "bound", "holds"),
    [
        ("max_abs_diff", 5e-5, 1e-4, True),
        ("max_abs_diff", 2e-4, 1e-4, False),
        ("cosine", 0.9995, 0.999, True),
        ("cosine", 0.99, 0.999, False),
        ("max_abs_diff", float("nan"), 1e-4, False),
        ("cosine", float("nan"), 0.999, False),
    ],
)
def test_the_gates_direction_is_one_rule(metric, value, bound, holds):
    """An error must stay below its bound, a similarity above it; NaN is within no bound (used by the gate
    and by `export`'s table, which prints the relation)."""
    assert gate_holds(metric, value, bound) is holds
    assert gate_relation(metric) == {"max_abs_diff": "<=", "cosine": ">="}[metric]
