"""The 2-thread investigation: why a small slice scales worse than the full model, and what helps.

    python benchmarks/threads.py [--rounds 5] [--point 0.25,0.5]

Uses the fp32 ONNX artifacts that `benchmarks/run.py` cached under benchmarks/work/. Every ORT
session variant below is loaded for the full model and the small slice at 1 and 2 threads, and
all are timed in interleaved rounds (new shuffled order each round). Prints, per variant, the
latencies, the speedup over the full model and its quotient with the FLOPs ratio, and, with
--profile, ORT's per-operator time split at 1 vs 2 threads for the slice. Writes
benchmarks/results/threads.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import HERE, SEQ_LEN, artifact_path, interleaved  # noqa: E402

# name -> (session config entries, graph optimization level, extra SessionOptions attributes)
VARIANTS: dict[str, tuple[dict[str, str], str, dict]] = {
    "spin (ORT default)": ({"session.intra_op.allow_spinning": "1"}, "ORT_ENABLE_ALL", {}),
    "no spin": ({"session.intra_op.allow_spinning": "0"}, "ORT_ENABLE_ALL", {}),
    "spin, level extended": ({"session.intra_op.allow_spinning": "1"}, "ORT_ENABLE_EXTENDED", {}),
    "spin, level basic": ({"session.intra_op.allow_spinning": "1"}, "ORT_ENABLE_BASIC", {}),
    "spin, pinned (thread 2 on cpu 2)": (
        {"session.intra_op.allow_spinning": "1", "session.intra_op_thread_affinities": "2"},
        "ORT_ENABLE_ALL",
        {},
    ),
    "spin, dynamic_block_base 4": (
        {"session.intra_op.allow_spinning": "1", "session.dynamic_block_base": "4"},
        "ORT_ENABLE_ALL",
        {},
    ),
    "no spin, dynamic_block_base 4": (
        {"session.intra_op.allow_spinning": "0", "session.dynamic_block_base": "4"},
        "ORT_ENABLE_ALL",
        {},
    ),
}


def session(path: Path, threads: int, config: dict[str, str], level: str):
    """One variant, opened by edgebert's runtime layer (fp32 artifacts record no runtime settings of their own)."""
    from edgebert.runtimes import SessionOptions, open_session

    if threads == 1:
        config = {k: v for k, v in config.items() if k != "session.intra_op_thread_affinities"}
    return open_session(path, SessionOptions(threads, config, graph_optimization_level=level))


def feeds_for(path: Path):
    from edgebert.bench import read_sidecar
    from edgebert.inputs import InputPlan, model_inputs
    from edgebert.profiles import load_profile

    sidecar = read_sidecar(path)
    plan = InputPlan(1, SEQ_LEN, load_profile("local").padding_share)
    return model_inputs(sidecar.input_specs(), sidecar, plan, source=path).batches[0].feeds


def op_profile(path: Path, threads: int, feeds: dict, work: Path, runs: int = 30) -> dict[str, float]:
    """Mean microseconds per run by operator type, from ORT's own profiler (spinning default).

    A raw ORT session on purpose: profiling is an ORT option edgebert's runtime layer has no use for.
    """
    import onnxruntime as ort

    def profiled():
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.enable_profiling, options.profile_file_prefix = True, str(work / f"profile-{threads}t")
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    s = profiled()
    for _ in range(5):
        s.run(None, feeds)
    s.end_profiling()
    s = profiled()
    for _ in range(runs):
        s.run(None, feeds)
    events = json.loads(Path(s.end_profiling()).read_text())
    totals: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"].get("op_name", "?")
            totals[op] = totals.get(op, 0.0) + event["dur"] / runs
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--point", default="0.25,0.5")
    parser.add_argument("--variants", help="semicolon-separated subset of variant names")
    parser.add_argument("--profile", action="store_true", help="also print ORT's per-operator split")
    args = parser.parse_args()
    from edgebert.demo import DEMO_ARCH
    from edgebert.subnet import encoder_flops, full_network, subnetwork

    work = HERE / "work"
    width, depth = (float(x) for x in args.point.split(","))
    paths = {
        "full": artifact_path(work, "onnx", "fp32", 1.0, 1.0),
        "slice": artifact_path(work, "onnx", "fp32", width, depth),
    }
    ratio = encoder_flops(DEMO_ARCH, full_network(DEMO_ARCH)) / encoder_flops(
        DEMO_ARCH, subnetwork(DEMO_ARCH, width, depth)
    )
    feeds = feeds_for(paths["full"])
    variants = {k: v for k, v in VARIANTS.items() if not args.variants or k in args.variants.split(";")}
    configs, keep = {}, []
    for name, (config, level, _) in variants.items():
        for threads in (1, 2):
            for which, path in paths.items():
                s = session(path, threads, config, level)
                keep.append(s)
                configs[f"{name}|{threads}|{which}"] = (None, s.bind(feeds))
    load = os.getloadavg()
    timing = interleaved(configs, args.rounds, 5, 0.2, seed=7)
    result = {"point": [width, depth], "flops_ratio": ratio, "load_avg_before": load, "load_avg_after": os.getloadavg()}
    result["variants"] = {}
    print(
        f"(w {width:g}, d {depth:g}) fp32 ONNX, FLOPs ratio {ratio:.2f}; load {load[0]:.2f} -> {os.getloadavg()[0]:.2f}"
    )
    print(f"{'variant':36s} {'thr':>3s} {'full ms':>8s} {'slice ms':>8s} {'speedup':>7s} {'/ratio':>6s}")
    for name in variants:
        result["variants"][name] = {}
        for threads in (1, 2):
            full = timing[f"{name}|{threads}|full"]["round_medians_ms"]
            part = timing[f"{name}|{threads}|slice"]["round_medians_ms"]
            speedup = statistics.median(f / p for f, p in zip(full, part, strict=True))
            entry = {"full_ms": statistics.median(full), "slice_ms": statistics.median(part), "speedup": speedup}
            entry["speedup_over_flops_ratio"] = speedup / ratio
            result["variants"][name][str(threads)] = entry
            print(
                f"{name:36s} {threads:3d} {entry['full_ms']:8.1f} {entry['slice_ms']:8.2f} {speedup:7.2f} "
                f"{speedup / ratio:6.2f}"
            )
    if args.profile:
        result["op_profile_us"] = {}
        for threads in (1, 2):
            ops = op_profile(paths["slice"], threads, feeds, work)
            result["op_profile_us"][str(threads)] = ops
            print(f"slice, {threads} thread(s), us per run by op: " + ", ".join(f"{k} {v:.0f}" for k, v in ops.items()))
    out = HERE / "results" / "threads.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
