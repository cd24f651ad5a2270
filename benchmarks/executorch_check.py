"""ExecuTorch (XNNPACK) against ONNX Runtime on the BERT-base-shaped demo model, batch 1, one thread.

    python benchmarks/executorch_check.py --export                 # export (cached), any core
    flock /work/bench.lock taskset -c 0 python benchmarks/executorch_check.py [--rounds 7]

Each (width, depth) point is exported with `edgebert export` to ONNX and ExecuTorch at fp32 and int8
(cached under benchmarks/work/executorch/; each sidecar keeps its export time, size and gate result),
then every artifact is opened as `bench` opens it (1 thread) and all are timed in interleaved rounds at
each length: 128 tokens and SST-2's mean sentence (13 tokens). Ratios are medians of per-round ratios.
Writes benchmarks/results/executorch.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import HERE, interleaved  # noqa: E402

POINTS = ((0.5, 0.75), (1.0, 1.0))
FORMATS = ("onnx", "executorch")
PRECISIONS = ("fp32", "int8")
LENGTHS = (128, 13)  # 13: SST-2's mean sentence in BERT tokens (README)
TARGET_RATIO = 1.3  # ExecuTorch / ORT latency (issue 23)
WORK = HERE / "work" / "executorch"
RESULTS = HERE / "results"


def artifact(fmt: str, precision: str, width: float, depth: float) -> Path:
    from edgebert.runtimes import artifact_name

    return WORK / artifact_name(f"demo-w{width:g}-d{depth:g}", precision, fmt)


def export_all() -> None:
    from edgebert.export import export_model

    WORK.mkdir(parents=True, exist_ok=True)
    for width, depth in POINTS:
        for fmt in FORMATS:
            for precision in PRECISIONS:
                path = artifact(fmt, precision, width, depth)
                if not path.is_file():
                    sidecar = export_model(None, fmt, precision, width=width, depth=depth, out=path)
                    print(path.name, sidecar["export_seconds"], "s", flush=True)


def measure(rounds: int) -> dict:
    from edgebert.bench import read_sidecar, session_options
    from edgebert.inputs import InputPlan, model_inputs
    from edgebert.profiles import load_profile
    from edgebert.runtimes import open_session

    profile = load_profile("local")
    configs, exports = {}, {}
    for width, depth in POINTS:
        for fmt in FORMATS:
            for precision in PRECISIONS:
                path = artifact(fmt, precision, width, depth)
                sidecar = read_sidecar(path)
                parity = sidecar.parity.model_dump()
                exports[f"{fmt} {precision} ({width:g}, {depth:g})"] = {
                    "size_mb": round(sidecar.size_bytes / 1e6, 1),
                    "export_seconds": sidecar.export_seconds,
                    "quantization": sidecar.quantization,
                    "max_abs_diff": parity["max_abs_diff"],
                    "cosine": parity["cosine"],
                    "gate_passed": parity["gate"]["passed"],
                }
                session = open_session(path, session_options(sidecar, 1, profile))
                for length in LENGTHS:
                    plan = InputPlan(1, length, profile.padding_share if length > 16 else 0.0)
                    feeds = model_inputs(session.inputs, sidecar, plan, source=path).batches[0].feeds
                    configs[(width, depth, precision, length, fmt)] = (None, session.bind(feeds))
    timed = interleaved(configs, rounds, min_runs=10, min_seconds=0.5, seed=23)
    rows = []
    for (width, depth, precision, length, fmt), result in timed.items():
        if fmt != "executorch":
            continue
        ort = timed[(width, depth, precision, length, "onnx")]["round_medians_ms"]
        et = result["round_medians_ms"]
        rows.append(
            {
                "width": width,
                "depth": depth,
                "precision": precision,
                "seq_len": length,
                "ort_ms": round(statistics.median(ort), 2),
                "executorch_ms": round(statistics.median(et), 2),
                "ratio": round(statistics.median(e / o for e, o in zip(et, ort, strict=True)), 3),
            }
        )
    return {"rounds": rounds, "threads": 1, "batch": 1, "exports": exports, "latency": rows}


def markdown(result: dict) -> str:
    lines = [
        "# ExecuTorch (XNNPACK) vs ONNX Runtime, BERT-base-shaped demo, batch 1, 1 thread",
        "",
        f"Interleaved rounds: {result['rounds']}; ratio = median of per-round ExecuTorch / ORT; target <= "
        f"{TARGET_RATIO}.",
        "",
        "| (width, depth) | precision | seq | ORT ms | ExecuTorch ms | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["latency"]:
        lines.append(
            f"| ({row['width']:g}, {row['depth']:g}) | {row['precision']} | {row['seq_len']} | {row['ort_ms']} | "
            f"{row['executorch_ms']} | {row['ratio']} |"
        )
    lines += [
        "",
        "| artifact | MB | export s | scheme | max abs diff | cosine | gate |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, e in result["exports"].items():
        lines.append(
            f"| {name} | {e['size_mb']} | {e['export_seconds']} | {e['quantization']} | {e['max_abs_diff']:.2g} | "
            f"{e['cosine']:.6f} | {'passed' if e['gate_passed'] else 'failed'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", action="store_true", help="export (cached) and stop")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    export_all()
    if args.export:
        return
    result = measure(args.rounds)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "executorch.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "executorch.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
