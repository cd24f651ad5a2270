"""Tiny exported artifacts for the bench tests, their sidecars built through the `Sidecar` schema, the gates
README documents, a way to break an artifact, and TFLite's slow conversion shared by every precision.

A BERT classifier (hidden 32, 2 layers of 2 heads, vocabulary 2048, 512 positions) as ONNX
(dynamic axes) and TFLite (fixed 1 x 16): big enough vocabulary and positions for the shipped
profiles' 128 tokens, small enough to build in seconds. Built once per session, for every test
module that asks (`tiny_artifacts`).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from edgebert import __version__
from edgebert.manifests import SliceManifest
from edgebert.reading import file_sha256
from edgebert.runtimes import SessionOptions, open_session, runtime_for_artifact
from edgebert.sidecar import SCHEMA_VERSION, Sidecar, sidecar_path, write_sidecar

VOCAB = 2048  # > 2 x 1000, so random ids avoid the special range as on a real vocabulary
MAX_POSITIONS = 512  # BertConfig's default max_position_embeddings
NAMES = ["input_ids", "attention_mask", "token_type_ids"]
TFLITE_SEQ = 16
# The slice manifest of the tiny model below, kept whole (width 1, depth 1).
MANIFEST = SliceManifest(
    edgebert_version=__version__,
    source={"path": "tiny", "weights_file": "model.safetensors", "sha256": "0" * 64, "model_type": "bert"},
    task="sequence-classification",
    original={"layers": 2, "heads": 2, "head_size": 16, "ffn_neurons": 64},
    width=1.0,
    depth=1.0,
    hidden_size=32,
    layers_kept=[0, 1],
    heads_kept=2,
    ffn_neurons_kept=64,
    parameters=100_258,  # counted on the transformers model below
    encoder_flops_seq128=8_388_608,
    trained_as_dynabert=False,
    untrained="tiny test model: random weights",
).as_dict()
QUICK = dict(runs=20, warmup=2, min_time_s=0)

_BUILT: dict[str, Path] = {}


def write_test_sidecar(artifact: Path, runtime: dict[str, Any] | None = None, **fields: Any) -> Sidecar:
    """A valid sidecar for `artifact`, as export writes it: the signature as its runtime reads it, `fields` on top.

    Goes through `Sidecar.model_validate`, so a test cannot write a sidecar the schema would refuse.
    """
    kind = runtime_for_artifact(artifact)
    session = open_session(artifact, SessionOptions(threads=1))
    batch, seq = session.inputs[0].dims[:2]
    values: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "edgebert_version": __version__,
        "format": kind.format,
        "precision": "fp32",
        "quantization": "none",
        "artifact": artifact.name,
        "size_bytes": artifact.stat().st_size,
        "sha256": file_sha256(artifact),
        "runtime": {"name": kind.name, "version": session.version} | (runtime or {}),
        "seq_len": seq,
        "batch_size": batch,
        "max_seq_len": MAX_POSITIONS,
        "signature_key": session.details.get("signature_key"),
        "inputs": [spec.to_json() for spec in session.inputs],
        "outputs": [spec.to_json() for spec in session.outputs],
        "output_meaning": {session.outputs[0].name: "logits"},
        "vocab_size": VOCAB,
        "pad_token_id": 0,
        "export_seconds": 0.0,
        "manifest": MANIFEST,
        "parity": None,
    }
    sidecar = Sidecar.model_validate(values | fields)
    write_sidecar(sidecar_path(artifact), sidecar)
    return sidecar


def tiny_artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"onnx": path, "tflite": path}, each with its sidecar; built on the first call of the session."""
    if _BUILT:
        return _BUILT
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    litert_torch = pytest.importorskip("litert_torch")

    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(0)

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = transformers.BertForSequenceClassification(config).eval()

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    model = Logits().eval()
    sample = {name: torch.ones(1, TFLITE_SEQ, dtype=torch.long) for name in NAMES}
    root = tmp_path_factory.mktemp("artifacts")
    onnx, tflite = root / "tiny.onnx", root / "tiny.tflite"
    axes = {name: {0: "batch", 1: "sequence"} for name in NAMES} | {"logits": {0: "batch"}}
    with warnings.catch_warnings():  # exporter deprecation and tracer chatter, not about bench
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (),
            str(onnx),
            kwargs=sample,
            input_names=NAMES,
            output_names=["logits"],
            dynamic_axes=axes,
            dynamo=False,
        )
        sample32 = {name: value.to(torch.int32) for name, value in sample.items()}  # LiteRT models take int32
        litert_torch.convert(model, sample_kwargs=sample32).export(str(tflite))
    for artifact in (onnx, tflite):
        write_test_sidecar(artifact)
    _BUILT.update(onnx=onnx, tflite=tflite)
    return _BUILT


# The parity gates as README documents them: pinned here as numbers, so loosening a bound in the package fails.
DOCUMENTED_GATES = {"fp32": ("max_abs_diff", 1e-4), "fp16": ("cosine", 0.999), "int8": ("cosine", 0.99)}


def nan_classifier_bias(path: Path) -> None:
    """A NaN in an ONNX artifact's classifier bias: its outputs are NaN, so it fails every gate."""
    import numpy as np
    import onnx

    model = onnx.load(str(path))
    bias = next(t for t in model.graph.initializer if t.name.endswith("classifier.bias"))
    values = onnx.numpy_helper.to_array(bias).copy()
    values[0] = np.nan
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
    onnx.save(model, str(path))


@contextmanager
def tflite_converted_once(cache: Path) -> Iterator[None]:
    """While active, litert-torch's conversion (seconds per call) runs once per slice and length: fp16 and int8
    quantize (and verify) a copy of the very fp32 file their own conversion would have written, kept in `cache`."""
    from edgebert.export.tflite import TfliteExporter

    convert, converted = TfliteExporter.to_fp32, {}

    def once(source, length: int, path: Path) -> None:
        key = (source.name, json.dumps(source.manifest, sort_keys=True), length)
        if key not in converted:
            converted[key] = cache / f"{len(converted)}.tflite"
            convert(source, length, converted[key])
        shutil.copyfile(converted[key], path)

    cache.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TfliteExporter, "to_fp32", staticmethod(once))
        yield
