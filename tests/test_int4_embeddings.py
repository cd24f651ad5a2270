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
# (the others are 48 wide, refused below; ONNX pads them to a block of 64).
CASES = {"onnx": ["bert-cls", "roberta-bare"], "tflite": ["electra-cls"]}
# What the int8 table costs beside a byte a weight: ONNX one scale for the table, TFLite a row's fp32 scale and
# int64 zero point (its flatbuffer's per-channel quantization).
INT8_ROW_SCALE_BYTES = {"onnx": 0, "tflite": 4 + 8}
ONNX_TABLE = "word_embeddings_int4"  # edgebert.export.onnx.int4_lookup's initializers: <name>_packed, _codes, ...
# ONNX's block scales: a byte each, indexing a book of 256 fp32 scales stored once per file
ONNX_BOOK_BYTES = 256 * 4
# Bytes a file gains or loses beside the table's own (node, tensor and constant names, flatbuffer alignment; ONNX's
# 4-bit lookup is some 20 nodes and 10 constants, about 2 KB): under the tens of kilobytes a table's 4 bits save.
FILE_OVERHEAD = 2500


def table_shape(model: Path) -> tuple[int, int]:
    """(vocabulary, embedding width) from the checkpoint's own config: slicing keeps both."""
    config = json.loads((model / "config.json").read_text())
    return config["vocab_size"], config.get("embedding_size") or config["hidden_size"]


def int4_table_bytes(fmt: str, shape: tuple[int, int]) -> int:
    """What the 4-bit table costs, counted from its layout: 4 bits a weight and per block of a row, ONNX a byte scale
    code and a 4-bit zero point (a row's zero points packed to whole bytes; the row padded to whole blocks) and the
    book of scales, TFLite an fp16 scale."""
    rows, width = shape
    block = EXPORTERS[fmt].embeddings["int4"]
    blocks = math.ceil(width / block)
    if fmt == "onnx":
        return rows * (blocks * block // 2 + blocks + math.ceil(blocks / 2)) + ONNX_BOOK_BYTES
    return rows * (width // 2 + blocks * 2)


def onnx_tensors(path: Path) -> dict[str, np.ndarray]:
    """The 4-bit table's initializers (packed, codes, zero_points, book) as arrays."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    return {
        t.name[len(ONNX_TABLE) + 1 :]: numpy_helper.to_array(t)
        for t in graph.initializer
        if t.name.startswith(ONNX_TABLE + "_")
    }


def onnx_table(path: Path, shape: tuple[int, int]) -> dict:
    """The 4-bit table as the ONNX file stores it: two weights a byte, a byte scale code a block."""
    tensors = onnx_tensors(path)
    packed, codes = tensors["packed"], tensors["codes"]
    return {
        "bits": 4 if packed.dtype == np.uint8 else None,
        "rows": packed.shape[0],
        "block": 2 * packed.shape[1] // codes.shape[1],
        "bytes": sum(array.nbytes for array in tensors.values()),
    }


def tflite_table(path: Path, shape: tuple[int, int]) -> dict:
    """The [vocab, hidden] constant as LiteRT reads it: a blockwise one lists its block and its fp16 scales tensor."""
    from ai_edge_litert.interpreter import Interpreter

    tensors = Interpreter(str(path)).get_tensor_details()
    (table,) = [t for t in tensors if tuple(t["shape"]) == shape]
    block = int(table["quantization_parameters"]["block_size"])
    (scales,) = [t for t in tensors if t["name"] == f"{table['name']}_scales"]
    return {"bits": 4 if block and np.dtype(scales["dtype"]) == np.float16 else None, "rows": shape[0], "block": block}


TABLES = {"onnx": onnx_table, "tflite": tflite_table}


def export(model: Path, fmt: str, out: Path, **options) -> dict:
    seq_len = FIXED_SEQ if EXPORTERS[fmt]().fixed_seq_len(None) is not None else None
    artifact = out / artifact_name("model", "int8", fmt)
    return export_model(model, fmt, "int8", width=0.25, depth=0.5, seq_len=seq_len, out=artifact, **options)


def both_files(model: Path, fmt: str, out: Path, monkeypatch) -> tuple[dict, dict]:
    """The int8 export without and with the 4-bit table, both in the format's first scheme (the gate's race may pick
    another for one of them)."""
    first = EXPORTERS[fmt]().schemes("int8")[0]
    monkeypatch.setattr(EXPORTERS[fmt], "schemes", lambda self, precision: [first])
    return export(model, fmt, out / "int8"), export(model, fmt, out / "int4", embeddings="int4")


@pytest.mark.parametrize(("fmt", "name"), [(fmt, name) for fmt in INT4_FORMATS for name in CASES.get(fmt, [None])])
def test_int4_embeddings_pass_the_gate_and_save_what_4_bits_save(tiny_models, tmp_path, monkeypatch, fmt, name):
    assert fmt in TABLES and fmt in CASES, f"say how a {fmt} file's embedding table is read, and on which models"
    shape = table_shape(tiny_models[name])
    plain, int4 = both_files(tiny_models[name], fmt, tmp_path, monkeypatch)
    assert int4["parity"]["gate"]["passed"] and int4["schema_version"] >= 2
    block = EXPORTERS[fmt].embeddings["int4"]
    assert (int4["embeddings"]["storage"], int4["embeddings"]["block_size"]) == ("int4", block)
    assert plain["embeddings"] is None
    table = TABLES[fmt](Path(int4["path"]), shape)
    assert (table["bits"], table["rows"], table["block"]) == (4, shape[0], block)
    if "bytes" in table:
        assert table["bytes"] == int4_table_bytes(fmt, shape)
    # The independent count: a byte a weight, against the 4-bit layout's
    expected = shape[0] * shape[1] + INT8_ROW_SCALE_BYTES[fmt] * shape[0] - int4_table_bytes(fmt, shape)
    saved = int4["embeddings"]["bytes_saved"]
    assert abs(saved - expected) <= FILE_OVERHEAD, (saved, expected)
    assert plain["size_bytes"] - int4["size_bytes"] == saved  # what the sidecar says is what the two files show


def dequantized(tensors: dict[str, np.ndarray], width: int) -> np.ndarray:
    """The ONNX table from its stored bytes alone: byte j of a row holds weight j (low nibble) and weight j + half the
    padded row (high), the zero points likewise per block; a weight is (q - zero point) x book[code], in fp32."""
    packed, codes, zero_points, book = (tensors[key] for key in ("packed", "codes", "zero_points", "book"))
    rows, blocks = codes.shape
    q = np.concatenate([packed & 15, packed >> 4], axis=1).astype(np.int32).reshape(rows, blocks, -1)
    z = np.concatenate([zero_points & 15, zero_points >> 4], axis=1)[:, :blocks].astype(np.int32)
    weights = (q - z[..., None]).astype(np.float32) * book[codes][..., None]
    return weights.reshape(rows, -1)[:, :width]


def onnx_lookup(path: Path, ids: np.ndarray) -> np.ndarray:
    """What ONNX Runtime's word lookup of the exported file returns for `ids` (the lookup's output made a graph
    output: the tensor its nodes write that is not one of their own)."""
    import onnx
    import onnxruntime

    model = onnx.load(str(path))
    (output,) = {
        name
        for node in model.graph.node
        if any(i.startswith(ONNX_TABLE) for i in node.input)
        for name in node.output
        if not name.startswith(ONNX_TABLE)
    }
    model.graph.output.append(onnx.helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {
        i.name: np.zeros_like(ids) if i.name == "token_type_ids" else np.ones_like(ids) for i in session.get_inputs()
    }
    return session.run([output], feeds | {"input_ids": ids})[0]


def wide_bert(directory: Path) -> Path:
    """A tiny BERT whose table is 2 blocks of 64 wide and long enough (4,000 rows) for its per-block bytes to show."""
    import transformers

    from tests.models import randomize, save_model

    config = transformers.BertConfig(
        vocab_size=4000,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=40,
    )
    model = transformers.BertModel(config).eval()
    randomize(model, seed=0)
    return save_model(model, directory, [f"tok{i}" for i in range(config.vocab_size)])


@pytest.mark.parametrize("name", ["bert-cls", "wide"])  # 48 wide (padded to a block, one zero point a row), 128
def test_onnx_int4_table_is_standard_ops_bits_per_weight_and_exact(tiny_models, tmp_path, monkeypatch, name):
    """The ONNX lookup is standard ONNX (no contrib op; the plain int8 file's opsets and IR version), the file is as
    small as 4 bits a weight plus 12 bits a block and the book say, and ONNX Runtime's rows for every id are exactly
    an independent dequantization of the stored bytes, each weight within about half its block's step of fp32."""
    import onnx

    model = wide_bert(tmp_path / "wide") if name == "wide" else tiny_models[name]
    rows, width = table_shape(model)
    plain, int4 = both_files(model, "onnx", tmp_path, monkeypatch)
    graphs = [onnx.load(sidecar["path"]) for sidecar in (plain, int4)]
    lookup = [node for node in graphs[1].graph.node if any(n.startswith(ONNX_TABLE) for n in node.input)]
    assert lookup and {node.domain for node in lookup} == {""}
    assert [(graph.ir_version, list(graph.opset_import)) for graph in graphs[1:]] == [
        (graphs[0].ir_version, list(graphs[0].opset_import))
    ]
    blocks = math.ceil(width / 64)
    bits = rows * (blocks * 64 * 4 + blocks * (8 + 4))  # (the zero points' padding byte is within the overhead)
    assert int4["size_bytes"] <= plain["size_bytes"] - rows * width + bits / 8 + ONNX_BOOK_BYTES + FILE_OVERHEAD

    from edgebert.export.base import load_source

    fp32 = load_source(model, 0.25, 0.5).model.get_input_embeddings().weight.detach().numpy()
    table = dequantized(onnx_tensors(Path(int4["path"])), width)
    ids = np.resize(np.arange(rows), (math.ceil(rows / FIXED_SEQ), FIXED_SEQ))  # every id, in rows the model takes
    np.testing.assert_array_equal(onnx_lookup(Path(int4["path"]), ids), table[ids])
    padded = np.pad(fp32, ((0, 0), (0, blocks * 64 - width))).reshape(rows, blocks, 64)
    step = (np.maximum(padded.max(-1), 0) - np.minimum(padded.min(-1), 0)) / 15
    error = np.pad(table - fp32, ((0, 0), (0, blocks * 64 - width))).reshape(rows, blocks, 64)
    assert np.all(np.abs(error).max(-1) <= 0.55 * step)


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
    # 4 bits a weight, and a byte scale code and a 4-bit zero point per block of 64 (the estimate is ONNX's layout)
    estimate = weights / 2 + weights * 1.5 / 64
    assert rows[("int8", "int4")].size_bytes == rows[("int8", None)].size_bytes - weights + round(estimate)
    assert rows[("int8", "int4")].memory_bytes < rows[("int8", None)].memory_bytes
    assert rows[("fp32", None)].size_bytes == rows[("fp32", None)].parameters * 4  # other precisions unchanged
    assert ("fp32", "int4") not in rows
