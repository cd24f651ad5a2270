"""Every (format, precision) exports, runs in its own runtime and passes its parity gate."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest
import torch

from edgebert.errors import EdgebertError
from edgebert.export import PARITY_GATES, export_model
from edgebert.export.base import ParityGateError, load_source, verify_artifact
from edgebert.export.onnx import OnnxExporter
from edgebert.export.tflite import TfliteExporter
from edgebert.slicing import slice_model
from tests.conftest import TINY

TFLITE_SEQ = 16


@pytest.fixture(scope="module")
def tiny_slices(tiny_models, tmp_path_factory):
    """Slices written by `slice`, as a user would export them: BERT classifier and RoBERTa encoder."""
    root = tmp_path_factory.mktemp("slices")
    return {
        name: slice_model(tiny_models[name], 0.5, 0.75, out=root / name)[0] for name in ("bert-cls", "roberta-bare")
    }


def assert_gate(sidecar: dict, precision: str) -> None:
    parity = sidecar["parity"]
    metric, bound = PARITY_GATES[precision]
    assert parity["gate"] == {"metric": metric, "bound": bound, "passed": True}
    if precision == "fp32":
        assert parity["max_abs_diff"] <= 1e-4
    else:
        assert parity["cosine"] >= bound


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("name", ["bert-cls", "roberta-bare"])
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_every_format_and_precision_passes_its_gate(tiny_slices, tmp_path, fmt, name, precision):
    artifact = tmp_path / f"model.{fmt}"
    seq_len = TFLITE_SEQ if fmt == "tflite" else None
    sidecar = export_model(tiny_slices[name], fmt, precision, seq_len=seq_len, out=artifact)
    assert_gate(sidecar, precision)
    assert artifact.is_file() and sidecar["size_bytes"] == artifact.stat().st_size
    assert sidecar["sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest() and sidecar["schema_version"] == 1
    assert sidecar["max_seq_len"] == TINY["max_position_embeddings"]  # RoBERTa's 2 offset positions excluded
    if name == "bert-cls":
        assert sidecar["parity"]["top1"]["decided_flipped"] == 0
    on_disk = json.loads((tmp_path / f"model.{fmt}.json").read_text())
    assert on_disk["parity"] == sidecar["parity"] and on_disk["manifest"]["width"] == 0.5
    input_names = {spec["name"] for spec in on_disk["inputs"]}
    expected = {"input_ids", "attention_mask"} | ({"token_type_ids"} if name.startswith("bert") else set())
    assert input_names == expected
    meanings = list(on_disk["output_meaning"].values())
    assert meanings == (["logits"] if name == "bert-cls" else ["last_hidden_state", "pooler_output"])
    if (fmt, precision) == ("onnx", "int8") and on_disk["quantization"] == "dynamic":
        assert on_disk["runtime"]["disabled_optimizers"] == ["SkipLayerNormFusion"]
    if fmt == "tflite":
        assert on_disk["seq_len"] == TFLITE_SEQ and on_disk["signature_key"] == "serving_default"
        assert all(spec["shape"] == [1, TFLITE_SEQ] and spec["dtype"] == "int32" for spec in on_disk["inputs"])
        checked = on_disk["parity"]["inputs"]
        assert checked["batches"] > 1 and all(shape == [1, TFLITE_SEQ] for shape in checked["shapes"])
        assert checked["padded_rows"] >= checked["batches"] // 2 and checked["shortest_row"] <= TFLITE_SEQ // 2
        if precision == "fp32":
            assert_padding_is_verified(TfliteExporter(), tiny_slices[name], artifact)
    else:
        assert on_disk["seq_len"] is None
        assert all(spec["shape"] == ["batch", "sequence"] and spec["dtype"] == "int64" for spec in on_disk["inputs"])


def assert_padding_is_verified(exporter, slice_dir, artifact) -> None:
    """The gate runs padded rows: the same artifact fed an all-ones mask (padding read as tokens) fails it."""
    real_run = exporter.run

    def ignore_mask(path, inputs):
        return real_run(path, {**inputs, "attention_mask": np.ones_like(inputs["attention_mask"])})

    exporter.run = ignore_mask
    with pytest.raises(ParityGateError, match="max_abs_diff"):
        verify_artifact(exporter, load_source(slice_dir, None, None), artifact, "fp32", TFLITE_SEQ)


def test_onnx_metadata_and_dynamic_shapes(tiny_slices, tiny_models, tmp_path):
    """The manifest is in the ONNX metadata, and the graph runs at any batch and sequence length."""
    import onnxruntime as ort

    from edgebert.export.base import load_source, sample_inputs, torch_outputs

    artifact = tmp_path / "m.onnx"
    export_model(tiny_slices["bert-cls"], "onnx", "fp32", out=artifact)
    metadata = {p.key: p.value for p in onnx.load(str(artifact)).metadata_props}
    manifest = json.loads(metadata["edgebert"])
    assert manifest["layers_kept"] == [0, 1, 2, 4, 5, 6, 8, 9, 10] and manifest["heads_kept"] == 6
    session = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
    source = load_source(tiny_slices["bert-cls"], None, None)
    for batch, seq in [(1, 1), (1, 40), (5, 9), (8, 24)]:
        inputs = sample_inputs(source, batch, seq, seed=batch * 100 + seq)
        (logits,) = session.run(None, inputs)
        np.testing.assert_allclose(logits, torch_outputs(source, inputs)[0], atol=1e-5)


def test_export_slices_a_checkpoint_in_memory(tiny_models, tmp_path):
    sidecar = export_model(tiny_models["bert-cls"], "onnx", "fp32", width=0.25, depth=0.5, out=tmp_path / "a.onnx")
    assert sidecar["manifest"]["heads_kept"] == 3 and sidecar["manifest"]["layers_kept"] == [0, 2, 4, 6, 8, 10]
    assert_gate(sidecar, "fp32")


def test_minilm_int8_onnx_keeps_real_embeddings(minilm_dir, tmp_path):
    """Real weights, real sentences: int8 embeddings point the same way as fp32 PyTorch; file <= 0.3 x fp32."""
    import onnxruntime as ort
    import transformers

    fp32 = export_model(minilm_dir, "onnx", "fp32", out=tmp_path / "fp32.onnx")
    # MiniLM's outlier features defeat per-tensor activation scales: the gate sends it to blockwise int8.
    with pytest.warns(UserWarning, match=r"parity gate failed for onnx int8: cosine .* retrying with blockwise"):
        int8 = export_model(minilm_dir, "onnx", "int8", out=tmp_path / "int8.onnx")
    assert int8["quantization"] == "blockwise" and int8["parity"]["gate"]["passed"]
    assert int8["size_bytes"] <= 0.3 * fp32["size_bytes"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    sentences = ["A Raspberry Pi runs this model.", "The weather is lovely today.", "Sliced BERT, exact logits."]
    batch = tokenizer(sentences, padding=True, return_tensors="np")
    session = ort.InferenceSession(str(tmp_path / "int8.onnx"), providers=["CPUExecutionProvider"])
    hidden, _ = session.run(None, {k: v.astype(np.int64) for k, v in batch.items()})
    reference = transformers.AutoModel.from_pretrained(minilm_dir).eval()
    with torch.no_grad():
        expected = reference(**{k: torch.from_numpy(v) for k, v in batch.items()}).last_hidden_state.numpy()
    mask = batch["attention_mask"][..., None]
    ours, theirs = (hidden * mask).sum(1) / mask.sum(1), (expected * mask).sum(1) / mask.sum(1)  # mean pooling
    cosine = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    assert cosine.min() >= 0.99, cosine


def test_broken_artifact_is_refused_and_nothing_is_left(tiny_slices, tmp_path, monkeypatch):
    """Corrupt a weight after conversion: the gate must catch it and leave no artifact behind."""
    real_convert = OnnxExporter.convert

    def convert_then_corrupt(self, source, path, precision, scheme, seq_len, work_dir):
        real_convert(self, source, path, precision, scheme, seq_len, work_dir)
        model = onnx.load(str(path))
        biggest = max(model.graph.initializer, key=lambda t: len(t.raw_data))
        values = onnx.numpy_helper.to_array(biggest).copy()
        values[: len(values) // 2] *= -3.0
        biggest.CopyFrom(onnx.numpy_helper.from_array(values, biggest.name))
        onnx.save(model, str(path))

    monkeypatch.setattr(OnnxExporter, "convert", convert_then_corrupt)
    artifact = tmp_path / "out" / "broken.onnx"
    with pytest.raises(EdgebertError, match=r"parity gate failed for onnx fp32: max_abs_diff .* nothing was written"):
        export_model(tiny_slices["bert-cls"], "onnx", "fp32", out=artifact)
    assert list((tmp_path / "out").iterdir()) == []


def test_export_cli(tiny_slices, tmp_path, run_cli):
    artifact = tmp_path / "cli.onnx"
    result = run_cli(
        "export", tiny_slices["bert-cls"], "--format", "onnx", "--precision", "int8", "--out", artifact, "--json"
    )
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["parity"]["gate"]["passed"] is True
    again = run_cli("export", tiny_slices["bert-cls"], "--format", "onnx", "--out", artifact)
    assert again.code == 1 and "already exists" in again.stderr and "--force" in again.stderr
    table = run_cli("export", tiny_slices["bert-cls"], "--format", "onnx", "--out", artifact, "--force")
    assert table.code == 0 and "passed" in table.stdout and "max abs diff" in table.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "coreml"], "unknown format 'coreml'"),
        (["--precision", "int4"], "unknown precision 'int4'"),
        (["--format", "tflite", "--seq-len", "0"], "--seq-len must be between 1 and 8192"),
        (["--format", "tflite"], "--seq-len 128 exceeds the model's 40 positions"),  # TFLite's default length
        (["--seq-len", "41"], "--seq-len 41 exceeds the model's 40 positions"),  # ONNX verifies it too
        (["--width", "0.5"], "already a slice"),
    ],
)
def test_export_cli_bad_options(tiny_slices, tmp_path, run_cli, args, message):
    result = run_cli("export", tiny_slices["bert-cls"], *args, "--out", tmp_path / "x.onnx")
    assert result.code == 1 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_damaged_slice_directory_is_one_clear_error(tiny_slices, tmp_path, run_cli):
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_slices["bert-cls"], damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    result = run_cli("export", damaged, "--format", "onnx", "--out", tmp_path / "x.onnx")
    assert result.code == 1 and "is not a readable edgebert slice" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.onnx").exists()
