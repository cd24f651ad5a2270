"""`export --embeddings int4` (issue 23): the word-embedding table in 4 bits, through the int8 gate, in each format
that offers it; the table read back from the written file and the bytes saved checked against an independent count
(weights x 4 bits plus one scale per block); the sidecar's record (schema 2, version 1 still read); `pick` sizing
its int8 candidates with the 4-bit table.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from edgebert.errors import EdgebertError
from edgebert.export import EXPORTERS, export_model
from edgebert.runtimes import artifact_name
from edgebert.sidecar import read_sidecar, sidecar_path
from tests.models import TINY

FIXED_SEQ = 16  # the length fixed-shape formats are exported at (the tiny models have 40 positions)
INT4_FORMATS = [fmt for fmt, exporter in EXPORTERS.items() if "int4" in exporter.embeddings]
# Each format on tiny models whose table it can block: TFLite's blocks of 32 need ELECTRA's 32-wide embeddings
# (the others are 48 wide, refused below).
CASES = {"onnx": ["bert-cls", "roberta-bare"], "tflite": ["electra-cls"]}
# What the int8 table costs beside a byte a weight: ONNX one scale for the table, TFLite a row's fp32 scale and
# int64 zero point (its flatbuffer's per-channel quantization).
INT8_ROW_SCALE_BYTES = {"onnx": 0, "tflite": 4 + 8}
SCALE_BYTES = 2  # fp16 scales in both formats
# Bytes a file gains or loses beside the table's own (node and tensor names, flatbuffer alignment): well under the
# 2,880 bytes the tiny table's 4 bits save.
FILE_OVERHEAD = 400


def table_shape(model: Path) -> tuple[int, int]:
    """(vocabulary, embedding width) from the checkpoint's own config: slicing keeps both."""
    config = json.loads((model / "config.json").read_text())
    return config["vocab_size"], config.get("embedding_size") or config["hidden_size"]


def onnx_table(path: Path, shape: tuple[int, int]) -> dict:
    """The 4-bit table as the ONNX file stores it: its type, shape, bytes and the block its lookup reads it in."""
    import onnx

    graph = onnx.load(str(path)).graph
    (lookup,) = [node for node in graph.node if "input_ids" in node.input and node.op_type.startswith("Gather")]
    tensors = {tensor.name: tensor for tensor in graph.initializer}
    data, scales = tensors[lookup.input[0]], tensors[lookup.input[2]]
    return {
        "op": lookup.op_type,
        "bits": {onnx.TensorProto.UINT4: 4, onnx.TensorProto.INT4: 4}.get(data.data_type, 8),
        "shape": tuple(data.dims),
        "bytes": len(data.raw_data),
        "block": next(a.i for a in lookup.attribute if a.name == "block_size"),
        "scale_dtype": onnx.helper.tensor_dtype_to_np_dtype(scales.data_type),
    }


def tflite_table(path: Path, shape: tuple[int, int]) -> dict:
    """The [vocab, hidden] constant as LiteRT reads it: a blockwise one lists its block and its fp16 scales tensor."""
    from ai_edge_litert.interpreter import Interpreter

    tensors = Interpreter(str(path)).get_tensor_details()
    (table,) = [t for t in tensors if tuple(t["shape"]) == shape]
    block = int(table["quantization_parameters"]["block_size"])
    scales = [t for t in tensors if t["name"] == f"{table['name']}_scales"]
    return {
        "op": "EMBEDDING_LOOKUP",
        "bits": 4 if block else 8,
        "shape": shape,
        "block": block,
        "scale_dtype": np.dtype(scales[0]["dtype"]) if scales else None,
    }


TABLES = {"onnx": onnx_table, "tflite": tflite_table}


def export(model: Path, fmt: str, out: Path, **options) -> dict:
    seq_len = FIXED_SEQ if EXPORTERS[fmt]().fixed_seq_len(None) is not None else None
    artifact = out / artifact_name("model", "int8", fmt)
    return export_model(model, fmt, "int8", width=0.25, depth=0.5, seq_len=seq_len, out=artifact, **options)


@pytest.mark.parametrize(("fmt", "name"), [(fmt, name) for fmt in INT4_FORMATS for name in CASES.get(fmt, [None])])
def test_int4_embeddings_pass_the_gate_and_save_what_4_bits_save(tiny_models, tmp_path, monkeypatch, fmt, name):
    assert fmt in TABLES and fmt in CASES, f"say how a {fmt} file's embedding table is read, and on which models"
    shape = table_shape(tiny_models[name])
    first = EXPORTERS[fmt]().schemes("int8")[0]  # both files in one scheme: the gate's race may pick another
    monkeypatch.setattr(EXPORTERS[fmt], "schemes", lambda self, precision: [first])
    plain = export(tiny_models[name], fmt, tmp_path / "int8")
    int4 = export(tiny_models[name], fmt, tmp_path / "int4", embeddings="int4")
    assert int4["parity"]["gate"]["passed"] and int4["schema_version"] >= 2
    block = EXPORTERS[fmt].embeddings["int4"]
    assert (int4["embeddings"]["storage"], int4["embeddings"]["block_size"]) == ("int4", block)
    assert plain["embeddings"] is None
    table = TABLES[fmt](Path(int4["path"]), shape)
    assert (table["bits"], table["shape"], table["block"], table["scale_dtype"]) == (4, shape, block, np.float16)
    if "bytes" in table:
        assert table["bytes"] == math.ceil(shape[0] * shape[1] / 2)
    # The independent count: a byte a weight, against 4 bits a weight and an fp16 scale (ONNX: and a 4-bit zero
    # point) per block of each row.
    weights, blocks = shape[0] * shape[1], shape[0] * math.ceil(shape[1] / block)
    zero_points = math.ceil(blocks / 2) if fmt == "onnx" else 0
    int8 = weights + INT8_ROW_SCALE_BYTES[fmt] * shape[0]
    expected = int8 - (weights // 2 + blocks * SCALE_BYTES + zero_points)
    saved = int4["embeddings"]["bytes_saved"]
    assert abs(saved - expected) <= FILE_OVERHEAD, (saved, expected)
    assert plain["size_bytes"] - int4["size_bytes"] == saved  # what the sidecar says is what the two files show


def test_embeddings_are_refused_where_they_do_not_apply(tiny_models, tmp_path):
    with pytest.raises(EdgebertError, match="--precision int8 only"):
        export_model(tiny_models["bert-cls"], "onnx", "fp16", out=tmp_path / "m.onnx", embeddings="int4")
    with pytest.raises(EdgebertError, match="unknown --embeddings 'int2'"):
        export_model(tiny_models["bert-cls"], "onnx", "int8", out=tmp_path / "m.onnx", embeddings="int2")
    with pytest.raises(EdgebertError, match="divisible by 32 .* this model's is 48: use --format onnx"):
        export(tiny_models["bert-cls"], "tflite", tmp_path, embeddings="int4")
    assert not list(tmp_path.iterdir())


def test_sidecar_records_the_embeddings_and_version_1_still_reads(tiny_models, tmp_path):
    sidecar = export(tiny_models["bert-cls"], "onnx", tmp_path, embeddings="int4")
    artifact = Path(sidecar["path"])
    assert read_sidecar(artifact).embeddings.storage == "int4"
    raw = json.loads(sidecar_path(artifact).read_text())

    def reads(**changes) -> None:
        sidecar_path(artifact).write_text(json.dumps({k: v for k, v in (raw | changes).items() if v is not ...}))
        read_sidecar(artifact)

    reads(schema_version=1, embeddings=..., quantization_choice=...)  # version 1 had neither field
    with pytest.raises(EdgebertError, match="embeddings needs schema_version 2"):
        reads(schema_version=1)
    with pytest.raises(EdgebertError, match="embeddings needs schema_version 2 and precision int8"):
        reads(precision="fp32")
    with pytest.raises(EdgebertError, match="storage"):
        reads(embeddings=raw["embeddings"] | {"storage": "int2"})


def test_pick_counts_the_4_bit_table(tiny_models):
    from edgebert.pick import pick
    from edgebert.profiles import load_profile

    profile = load_profile("raspberry-pi-4")
    plain, int4 = (
        pick(tiny_models["bert-cls"], profile, candidates=[(0.25, 0.5)], embeddings=embeddings)
        for embeddings in (None, "int4")
    )
    rows = {(row.precision, row.embeddings): row for row in plain.candidates + int4.candidates}
    weights = TINY["vocab_size"] * TINY["hidden_size"]
    # 4 bits a weight, and an fp16 scale and a 4-bit zero point per block of 64 (the estimate is ONNX's layout)
    estimate = weights / 2 + weights * 2.5 / 64
    assert rows[("int8", "int4")].size_bytes == rows[("int8", None)].size_bytes - weights + round(estimate)
    assert rows[("int8", "int4")].memory_bytes < rows[("int8", None)].memory_bytes
    assert rows[("fp32", None)].size_bytes == rows[("fp32", None)].parameters * 4  # other precisions unchanged
    assert ("fp32", "int4") not in rows
