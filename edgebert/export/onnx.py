"""ONNX export: dynamic batch and sequence axes, run by ONNX Runtime; fp16 and int8 variants."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgebert.errors import require
from edgebert.export.base import VERIFY_SEED, ExportSource, quiet_tools, sample_inputs
from edgebert.precisions import PRECISIONS

if TYPE_CHECKING:
    import onnx

OPSET = 17
# Shapes that differ from the verification batch, so the gate proves the axes really are dynamic
# (both are cut to the model's positions). An explicit --seq-len is verified as well.
EXPORT_SHAPE = (2, 16)
VERIFY_SHAPE = (8, 37)
# int8 by ONNX Runtime, fastest first; the gate decides, so each model gets the fastest scheme that
# passes and a slower one only where nothing faster does. "dynamic": 8-bit weights per output channel,
# activations quantized per tensor at run time (demo 3.2x fp32; the trained SST-2 MiniLM passes).
# "mixed": the same except the FFN down-projections, which are blockwise. A per-tensor activation
# scale is crushed by outlier features, which real checkpoints have, most of all in the
# down-projection's input (the GELU output, 4x wider than the hidden size): on all-MiniLM-L6-v2,
# blockwise for those 6 of 36 MatMuls lifts the gate's cosine from 0.985 ("dynamic" fails) to 0.993
# at 2.2x fp32's speed, while blockwise for the 18 Q/K/V, 6 attention-output or 6 FFN-up MatMuls lifts
# it by < 0.004, and leaving any single MatMul in fp32 by < 0.005. "blockwise": MatMulNBits, 8-bit
# weights and activations quantized per block of 128 everywhere (cosine 0.997 on MiniLM), 1.5x fp32:
# the last resort. benchmarks/int8_onnx.py measures all three side by side.
# "dynamic7", tried first: "dynamic" with int8 weights cut to 7 bits (ORT's `reduce_range`, -64..64), which keeps
# every u8 x s8 pair sum below int16's limit (255 x 64 x 2 = 32640), so AVX2's vpmaddubsw cannot saturate and the
# gate's verdict holds on every CPU, as with uint8 weights; AVX-512 VNNI runs u8 x s8 natively. On an AMD EPYC with
# avx512_vnni, 1 thread, seq 128 (issue 23): demo BERT-base 90.8 ms against 184.0 ("dynamic"), 180.9 ("mixed") and
# 176.6 ("blockwise"); (0.25, 1) 26.1 against 49.6, 48.8 and 52.9; MiniLM 15.0 against 26.2, 26.2, 28.5. The bit it
# drops costs accuracy where outliers are (MiniLM's gate cosine 0.985 -> 0.930, the demo's stays 0.9997), so it is
# a scheme the gate decides per model, not a replacement for "dynamic".
# Measured speeds differ between CPUs (blockwise beat "dynamic" on the VNNI EPYC above), so the gate does not trust
# this order alone: `export_model` times the first scheme that passes against the next that passes (`choose_scheme`).
INT8_SCHEMES = ["dynamic7", "dynamic", "mixed", "blockwise"]
INT8_QUANTIZERS = ("mixed", "dynamic", "blockwise", "dynamic7")
# The dynamic MatMuls' weights are uint8 (per output channel, with zero points), not int8, so that every CPU
# computes the integers the graph means and the gate's verdict holds wherever the artifact runs. With int8
# weights, ORT's x86 kernel for CPUs without VNNI (AVX2; AVX-512 without VNNI) multiplies the u8 activations by
# s8 weights with vpmaddubsw, which saturates each adjacent pair of products at int16: on an AVX2-only AMD EPYC
# the tiny test BERT's "dynamic" cosine fell from 0.9997 (exact integers, as a VNNI CPU computes) to 0.983, and
# MiniLM's from 0.985 to 0.982. uint8 x uint8 is widened to 16 bits first: exact on every CPU (tiny BERT 0.9998,
# MiniLM 0.987), about 10 % slower than int8 weights on that AVX2 CPU; AVX-512 VNNI CPUs have no VNNI kernel for
# it in ORT 1.32, so the speed-ups above (int8 weights, VNNI CPU) are due for a re-run there. 7-bit int8 weights
# (ORT's `reduce_range`) cannot saturate either, but cost MiniLM's cosine 0.985 -> 0.930.
INT8_WEIGHTS = "QUInt8"  # an onnxruntime.quantization.QuantType
# ORT fuses Add + LayerNormalization into SkipLayerNormalization at session creation. After dynamic
# quantization that fused kernel is the slow part: it took 31 % of the (0.25, 0.5) slice's time, and
# leaving the fusion out made int8 slices 10-30 % faster at one thread (BERT-base 40.3 -> 36.3 ms,
# (0.25, 0.5) 7.4 -> 5.2 ms; "mixed" MiniLM 21.3 -> 14.1 ms); fp32 graphs did not change. The
# sidecar carries it for `bench` and users.
INT8_DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]
BLOCK_SIZE = 128
# `export --embeddings int4`: after the int8 MatMuls, the word-embedding lookup (the Gather of input_ids) reads a
# 4-bit table (`quantize_int4`, `int4_lookup`): asymmetric along each row in blocks of 64, as ORT's own quantizer
# (uint4, a zero point per block), each block's scale a byte indexing a book of 256 (fp16 scales were 2.5 % of the
# table). The gate's cosine on all-MiniLM-L6-v2 at (0.25, 0.5) "dynamic" / (1, 1) "mixed" (blocks of 32, 64, 128):
# int8 table 0.9980 / 0.9928; asymmetric 0.9958, 0.9947, 0.9916 / 0.9908, 0.9908, 0.9893 (fails: "blockwise"
# 0.9944); symmetric 0.9944, 0.9922, 0.9859 / 0.9901, 0.9894, 0.9848, and least-squares clipping did not help it.
# Positions and token types stay 8-bit (0.2 MB of MiniLM's tables). The lookup is standard ONNX ops, which every
# ONNX runtime runs: ORT 1.32's GatherBlockQuantized (com.microsoft) did it 4x slower, in fp16
# (benchmarks/int4_embeddings.py: (0.25, 0.5) file 58.8 % of the int8 one, lookup 162 vs 674 us at 128 tokens).
INT4_EMBEDDINGS_BLOCK = 64
INT4_SCALE_CODES = 256  # a block's scale: a byte, an index into the table's book of scales


class OnnxExporter:
    name, fixed_batch_size = "onnx", None
    sentence_embedding = False  # clients pool last_hidden_state themselves (transformers.js, Optimum)
    segment_ids = False  # an input only the model's token types use, as Optimum's and transformers.js' exports
    required_modules = ("torch", "onnx", "onnxruntime")
    precisions = PRECISIONS
    embeddings = {"int4": INT4_EMBEDDINGS_BLOCK}

    def schemes(self, precision: str) -> list[str]:
        return INT8_SCHEMES if precision == "int8" else [precision]

    def convert(
        self,
        source: ExportSource,
        path: Path,
        precision: str,
        scheme: str,
        seq_len: int | None,
        work_dir: Path,
        embeddings: str | None,
    ) -> int | None:
        """Trace to fp32 ONNX, then derive fp16 (weights and activations) or int8 (see INT8_SCHEMES).

        The TorchScript exporter (`dynamo=False`) is used on purpose: on torch 2.13 it exported
        BERT-base slices in 1-5 s against 5-9 s for the dynamo exporter, and ONNX Runtime ran its
        graphs as fast or faster (demo model, seq 128: 14.9 vs 20.2 ms at (0.25, 0.5) and 118 vs
        129 ms at (1, 1), one thread). No offline graph optimisation is baked in: ORT applies its
        own at session creation, and its BERT attention fusion did not speed these slices up.
        """
        torch = require("torch", "ONNX export")
        require("onnx", "ONNX export")
        from edgebert.model import ExportWrapper

        fp32_path = path if precision == "fp32" else work_dir / "fp32.onnx"
        wrapper = ExportWrapper(source.model, source.output_names)
        sample = sample_inputs(source, EXPORT_SHAPE[0], min(EXPORT_SHAPE[1], source.max_seq_len))
        dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in source.input_names}
        dynamic_axes["logits"] = dynamic_axes["pooler_output"] = {0: "batch"}
        dynamic_axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
        with quiet_tools(), torch.no_grad():  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                wrapper,
                tuple(torch.from_numpy(sample[name]) for name in source.input_names),
                str(fp32_path),
                input_names=source.input_names,
                output_names=source.output_names,
                dynamic_axes={k: v for k, v in dynamic_axes.items() if k in source.input_names + source.output_names},
                opset_version=OPSET,
                dynamo=False,
            )
        if precision == "fp16":
            self._to_fp16(fp32_path, path)
        elif precision == "int8":
            self._to_int8(fp32_path, path, work_dir, scheme)
        saved = None
        if embeddings is not None:  # the export refuses it for other precisions
            before = path.stat().st_size
            int4_word_embeddings(path, source.model.get_input_embeddings().weight.detach().numpy())
            saved = before - path.stat().st_size
        self._add_metadata(path, source.manifest)
        return saved

    @staticmethod
    def _to_fp16(fp32_path: Path, path: Path) -> None:
        """fp16 weights and compute; int64 inputs and fp32 outputs stay, so callers feed the same arrays."""
        onnx = require("onnx", "ONNX fp16 conversion")
        from onnxruntime.transformers.float16 import convert_float_to_float16

        with quiet_tools():
            model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
        onnx.save(model, str(path))

    @staticmethod
    def _to_int8(fp32_path: Path, path: Path, work_dir: Path, scheme: str) -> None:
        """8-bit weights for every MatMul and the embedding Gathers, by one of INT8_QUANTIZERS.

        Every scheme's embedding tables come from quantize_dynamic's Gather: ORT quantizes a Gather's data as
        an activation, uint8 with one scale per table. On all-MiniLM-L6-v2, quantizing its tables alone gives
        a cosine of 0.9989 against fp32; 4 bits (`quantize_int4`) eat most of the margin "mixed" (0.993)
        has over the int8 gate (0.99), so they are an option: `int4_word_embeddings`, after this.
        """
        quantization = require("onnxruntime.quantization", "ONNX int8 quantization")
        onnx = require("onnx", "ONNX int8 quantization")
        gathers_from = fp32_path
        with quiet_tools():  # ORT advises pre-processing; its shape inference gains nothing on these graphs
            if scheme in ("blockwise", "mixed"):
                from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

                model = onnx.load(str(fp32_path))
                blockwise = MatMulNBitsQuantizer(
                    model,
                    bits=8,
                    block_size=BLOCK_SIZE,
                    is_symmetric=True,
                    accuracy_level=4,  # int8 compute on blockwise-quantized activations
                    nodes_to_exclude=_not_ffn_down(model) if scheme == "mixed" else None,
                    op_types_to_quantize=("MatMul",),
                )
                blockwise.process()
                gathers_from = work_dir / "blockwise.onnx"
                blockwise.model.save_model_to_file(str(gathers_from), use_external_data_format=False)
            quantization.quantize_dynamic(  # MatMulNBits nodes are not MatMuls: only what is left is quantized
                str(gathers_from),
                str(path),
                weight_type=quantization.QuantType["QInt8" if scheme == "dynamic7" else INT8_WEIGHTS],
                per_channel=True,
                reduce_range=scheme == "dynamic7",
                op_types_to_quantize=["Gather"] if scheme == "blockwise" else ["MatMul", "Gather"],
                extra_options={"MatMulConstBOnly": True},
            )

    @staticmethod
    def _add_metadata(path: Path, manifest: dict) -> None:
        onnx = require("onnx", "ONNX export")
        model = onnx.load(str(path))
        entry = model.metadata_props.add()
        entry.key, entry.value = "edgebert", json.dumps(manifest)
        onnx.save(model, str(path))

    def verify_batches(self, source: ExportSource, seq_len: int | None) -> list[dict[str, np.ndarray]]:
        lengths = [min(VERIFY_SHAPE[1], source.max_seq_len)]
        if seq_len is not None and seq_len not in lengths:
            lengths.append(seq_len)
        batch = VERIFY_SHAPE[0]
        return [sample_inputs(source, batch, length, seed=VERIFY_SEED + 1 + i) for i, length in enumerate(lengths)]

    def fixed_seq_len(self, seq_len: int | None) -> int | None:
        return None  # dynamic axes

    def runtime_options(self, precision: str, scheme: str) -> dict:
        return {"disabled_optimizers": INT8_DISABLED_OPTIMIZERS} if scheme in ("dynamic7", "dynamic", "mixed") else {}


def int4_word_embeddings(path: Path, table: np.ndarray) -> None:
    """Store the word-embedding table of the ONNX file at `path` in 4 bits (`quantize_int4`): its lookup, the Gather of
    input_ids (and the DequantizeLinear that int8 puts after it), becomes `int4_lookup` of `table` (the fp32 weights,
    not the 8-bit ones: quantizing twice would add both errors)."""
    onnx = require("onnx", "ONNX embedding quantization")

    model = onnx.load(str(path))
    graph, nodes = model.graph, list(model.graph.node)
    lookup = next(node for node in nodes if node.op_type == "Gather" and node.input[1] == "input_ids")
    replaced = [lookup] + [
        node for node in nodes if node.op_type == "DequantizeLinear" and node.input[0] == lookup.output[0]
    ]
    new_nodes, tensors = int4_lookup(table, lookup.input[1], replaced[-1].output[0])
    at = nodes.index(lookup)  # the first replaced node: what precedes it is kept in order (topological)
    gone = {id(node) for node in replaced}
    graph.ClearField("node")
    graph.node.extend(nodes[:at] + new_nodes + [node for node in nodes[at:] if id(node) not in gone])
    used = {name for node in graph.node for name in node.input}
    inputs = {name for node in replaced for name in node.input}
    unused = [tensor for tensor in graph.initializer if tensor.name in inputs and tensor.name not in used]
    for tensor in unused:
        graph.initializer.remove(tensor)
    graph.initializer.extend(tensors)
    onnx.save(model, str(path))


def quantize_int4(table: np.ndarray) -> dict[str, np.ndarray]:
    """`table` [rows, width] in 4 bits along each row, in blocks of INT4_EMBEDDINGS_BLOCK (the width padded with zero
    columns to whole blocks): a weight is (q - zero_point) x book[code], per block a byte `code` and a 4-bit zero point.

    Asymmetric with 0 in every block's range, as ORT's quantizer; the scale it wants is rounded to the nearest (in log)
    of the book's INT4_SCALE_CODES entries, geometric between the table's smallest and largest, and q and the zero
    point are computed against that rounded scale, so the byte costs only its rounding. `packed` and `zero_points`:
    nibble pairs, byte j holding value j (low) and value j + half the row (high), which one Concat unpacks.
    """
    rows, width = table.shape
    blocks = -(-width // INT4_EMBEDDINGS_BLOCK)
    padded = np.zeros((rows, blocks * INT4_EMBEDDINGS_BLOCK))
    padded[:, :width] = table
    weights = padded.reshape(rows, blocks, INT4_EMBEDDINGS_BLOCK)
    low, high = np.minimum(weights.min(-1), 0), np.maximum(weights.max(-1), 0)
    wanted = (high - low) / 15
    used = wanted[wanted > 0]
    logs = np.linspace(*np.log([used.min(), used.max()] if used.size else [1.0, 1.0]), INT4_SCALE_CODES)
    book = np.exp(logs).astype(np.float32)
    codes = np.searchsorted((logs[1:] + logs[:-1]) / 2, np.log(np.maximum(wanted, book[0]))).astype(np.uint8)
    scales = book[codes].astype(np.float64)[..., None]
    zero_points = np.clip(np.rint(-low[..., None] / scales), 0, 15)
    quantized = np.clip(np.rint(weights / scales) + zero_points, 0, 15).astype(np.uint8)
    return {
        "packed": _pack_nibbles(quantized.reshape(rows, -1)),
        "codes": codes,
        "zero_points": _pack_nibbles(zero_points[..., 0].astype(np.uint8)),
        "book": book,
    }


def _pack_nibbles(values: np.ndarray) -> np.ndarray:
    """[rows, n] values below 16 as [rows, ceil(n / 2)] bytes: byte j is value j | value j + n / 2 << 4 (n made even
    with a zero)."""
    if values.shape[1] % 2:
        values = np.pad(values, ((0, 0), (0, 1)))
    half = values.shape[1] // 2
    return values[:, :half] | values[:, half:] << 4


def int4_lookup(table: np.ndarray, ids: str, output: str) -> tuple[list, list]:
    """The nodes and initializers that look `ids` up in `quantize_int4(table)` into `output` [*ids' shape, width],
    fp32, from standard ONNX ops (opset 13): Gather the packed rows, unpack the nibbles with Mod and BitShift, and one
    DequantizeLinear with a scale and zero point per block (per axis, the blocks as rows), those gathered as well.
    ORT 1.32's GatherBlockQuantized did the same lookup several times slower, in fp16 (benchmarks/int4_embeddings.py).
    """
    from onnx import TensorProto, helper, numpy_helper

    name = "word_embeddings_int4"
    quantized = quantize_int4(table)
    tensors = [numpy_helper.from_array(array, f"{name}_{key}") for key, array in quantized.items()]
    nodes = []

    def const(value: int | list[int], dtype: type = np.int64) -> str:
        tensors.append(numpy_helper.from_array(np.array(value, dtype), f"{name}/const_{len(tensors)}"))
        return tensors[-1].name

    def add(op: str, *inputs: str, out: str | None = None, **attributes) -> str:
        nodes.append(helper.make_node(op, list(inputs), [out or f"{name}/{op}_{len(nodes)}"], **attributes))
        return nodes[-1].output[0]

    def keep(values: str, count: int, stored: int, out: str | None = None) -> str:
        """The first `count` of the last axis' `stored` values (`_pack_nibbles` and `quantize_int4` pad)."""
        return values if count == stored else add("Slice", values, const([0]), const([count]), const([-1]), out=out)

    def unpacked(key: str) -> str:
        """`_pack_nibbles`' values of each id's row of `key`, as uint8 [*ids' shape, 2 x its bytes a row]."""
        rows = add("Gather", f"{name}_{key}", ids)
        low, high = add("Mod", rows, const(16, np.uint8)), add("BitShift", rows, const(4, np.uint8), direction="RIGHT")
        return add("Concat", low, high, axis=-1)

    width, blocks = table.shape[1], quantized["codes"].shape[1]
    values = unpacked("packed")  # the width padded to whole blocks: no slice
    zero_points = keep(unpacked("zero_points"), blocks, 2 * quantized["zero_points"].shape[1])
    scales = add("Gather", f"{name}_book", add("Cast", add("Gather", f"{name}_codes", ids), to=TensorProto.INT32))
    flat = const([-1])
    dequantized = add(
        "DequantizeLinear",
        add("Reshape", values, const([-1, INT4_EMBEDDINGS_BLOCK])),
        add("Reshape", scales, flat),
        add("Reshape", zero_points, flat),
        axis=0,
    )
    padded_width = blocks * INT4_EMBEDDINGS_BLOCK
    rows = add("Reshape", dequantized, add("Shape", values), out=output if padded_width == width else None)
    keep(rows, width, padded_width, out=output)
    return nodes, tensors


def _not_ffn_down(model: onnx.ModelProto) -> list[str]:
    """Every MatMul but the FFN down-projections, those fed by a node of a layer's `intermediate` module (the
    activation after the FFN's first MatMul; edgebert's model keeps transformers' module names). By role,
    not by shape: at width 0.25 the FFN is no wider than the hidden size."""
    producers = {output: node.name for node in model.graph.node for output in node.output}
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and "/intermediate/" not in producers.get(node.input[0], "")
    ]
