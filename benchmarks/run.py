"""edgebert's performance suite: the demo model (BERT-base shape) at every trained grid point.

    python benchmarks/run.py [--quick] [--threads 1,2] [--formats onnx,tflite] [--precisions fp32,int8]

Writes benchmarks/results/latest.{json,md,png}; see benchmarks/README.md for what is measured
and how to read it. Artifacts are exported once and cached under benchmarks/work/.

Three processes, so nothing one measures disturbs another:
- this one exports (torch) and builds the GEMM-peak models, then collects and reports;
- a torch-free child measures ONNX Runtime and LiteRT: every artifact of one (format, threads)
  unit is loaded at once, and each round visits all of them (and the GEMM-peak model) in a new
  shuffled order, so machine noise hits all configurations equally; the reported latency is the
  median of the round medians, speedups are medians of per-round ratios;
- a torch child runs the baseline: the full PyTorch model sliced on the fly each forward, as the
  official DynaBERT code does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SEQ_LEN = 128
QUICK_GRID = ((1.0, 1.0), (0.5, 0.75), (0.25, 0.5))
MEASURE_POINTS_TEXT = "the configurations `pick --measure` measures (4, spread over the FLOPs range)"
TARGETS = {"flops_ratio": 0.9, "gemm_peak_share": 0.85, "int8_speedup": 2.5, "harness_overhead": 0.03}
# GEMM-peak shapes (M x K) @ (K x N): BERT-base's FFN GEMM at seq 128, and a bigger one.
GEMM_SHAPES = ((128, 768, 3072), (512, 1024, 4096))
HARNESS_POINT = (0.25, 0.5)  # the fastest slice: where a harness's per-call cost would show most
FULL = (1.0, 1.0)
ARTIFACT_STEM = "model"


# ---- settings ----------------------------------------------------------------------------------------


def parse_grid(points: str | None, quick: bool) -> list[list[float]]:
    """`--grid` (WIDTHxDEPTH, comma-separated), else the quick or the trained grid; always with the full model."""
    from edgebert.subnet import TRAINED_GRID

    grid = QUICK_GRID if quick else TRAINED_GRID
    if points:
        grid = [tuple(float(x) for x in point.split("x")) for point in points.split(",")]
        grid = [FULL] * (FULL not in grid) + grid  # speedups are against the full model
    return [list(p) for p in grid]


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    return {
        "quick": quick,
        "grid": parse_grid(args.grid, quick),
        "threads": [int(t) for t in args.threads.split(",")],
        "formats": args.formats.split(","),
        "precisions": args.precisions.split(","),
        "seq_len": args.seq_len,
        "batch_size": 1,
        "rounds": args.rounds or (3 if quick else 5),
        "min_runs": 3 if quick else 5,
        "min_seconds": 0.1 if quick else 0.3,  # per configuration per round
        "harness_repeats": 2 if quick else 3,
        "harness_runs": 20 if quick else 60,
        "baseline": not args.no_baseline,
        "model": args.model,
    }


def artifact_path(work: Path, fmt: str, precision: str, width: float, depth: float) -> Path:
    """Where a grid point's artifact is cached: export's own name for it (the work folder is the model's)."""
    from edgebert.runtimes import artifact_name
    from edgebert.subnet import subnet_name

    return work / "artifacts" / artifact_name(subnet_name(ARTIFACT_STEM, width, depth), precision, fmt)


# ---- preparation (this process: may import torch) -----------------------------------------------------


def ensure_artifacts(settings: dict, work: Path, force: bool = False, log=print) -> dict[str, Any]:
    """Export every (format, precision, point) not cached yet; return their validated sidecars by artifact path."""
    from edgebert.export import export_model
    from edgebert.sidecar import read_sidecar
    from edgebert.sidecar import sidecar_path as sidecar_of

    sidecars = {}
    for width, depth in settings["grid"]:
        for fmt in settings["formats"]:
            for precision in settings["precisions"]:
                path = artifact_path(work, fmt, precision, width, depth)
                if force or not (path.is_file() and sidecar_of(path).is_file()):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    started = time.perf_counter()
                    export_model(
                        settings["model"], fmt, precision, width, depth, settings["seq_len"], out=path, force=True
                    )
                    log(f"exported {path.name} in {time.perf_counter() - started:.0f} s")
                sidecars[str(path)] = read_sidecar(path)
    return sidecars


def ensure_gemm_models(settings: dict, work: Path) -> dict[str, str]:
    """One big fp32 MatMul per runtime: an onnx.helper graph for ORT, a torch Linear via litert_torch for LiteRT."""
    import numpy as np

    paths = {}
    rng = np.random.default_rng(0)
    for m, k, n in GEMM_SHAPES:
        name = f"{m}x{k}x{n}"
        if "onnx" in settings["formats"]:
            path = work / "gemm" / f"matmul-{name}.onnx"
            if not path.is_file():
                import onnx
                from onnx import TensorProto, helper, numpy_helper

                weight = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32) * 0.02, "w")
                graph = helper.make_graph(
                    [helper.make_node("MatMul", ["x", "w"], ["y"])],
                    "gemm",
                    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
                    [weight],
                )
                model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
                path.parent.mkdir(parents=True, exist_ok=True)
                onnx.save(model, str(path))
            paths[f"onnx:{name}"] = str(path)
        if "tflite" in settings["formats"]:
            path = work / "gemm" / f"linear-{name}.tflite"
            if not path.is_file():
                os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
                import litert_torch
                import torch

                from edgebert.export.base import quiet_tools

                linear = torch.nn.Linear(k, n, bias=False).eval()
                path.parent.mkdir(parents=True, exist_ok=True)
                with quiet_tools(), torch.no_grad():
                    litert_torch.convert(linear, (torch.randn(m, k),)).export(str(path))
            paths[f"tflite:{name}"] = str(path)
    return paths


# ---- timing (child processes) -------------------------------------------------------------------------


def time_call(call, min_runs: int, min_seconds: float, warmup: bool = True) -> list[float]:
    """One warm-up call (unless the caller's `prepare` warmed up), then bench's timing loop: at least `min_runs`
    calls and `min_seconds`; latencies in ms."""
    from edgebert.bench import time_runs

    if warmup:
        call()
    return [ns / 1e6 for ns in time_runs([call], min_runs, min_seconds)]


def interleaved(
    configs: dict[str, Any], rounds: int, min_runs: int, min_seconds: float, seed: int, warmup: bool = True
) -> dict:
    """Each round visits every configuration once, in a new shuffled order; returns per-round medians (ms)."""
    order = list(configs)
    rng = random.Random(seed)
    medians: dict[str, list[float]] = {key: [] for key in order}
    counts = dict.fromkeys(order, 0)
    for _ in range(rounds):
        rng.shuffle(order)
        for key in order:
            prepare, call = configs[key]
            if prepare is not None:
                prepare()
            samples = time_call(call, min_runs, min_seconds, warmup)
            medians[key].append(statistics.median(samples))
            counts[key] += len(samples)
    return {key: {"round_medians_ms": medians[key], "runs": counts[key]} for key in medians}


def measure_runtimes(spec: dict) -> dict:
    """Torch-free child: ORT and LiteRT units, GEMM peaks, harness overhead; sessions opened as `bench` opens them."""
    import gc

    import numpy as np

    from edgebert.bench import bare_loop, bench_artifact, read_sidecar, session_options
    from edgebert.inputs import InputPlan, model_inputs
    from edgebert.profiles import load_profile
    from edgebert.runtimes import open_session

    settings = spec["settings"]
    profile = load_profile("local")
    results: dict[str, Any] = {"units": [], "harness": [], "sessions": {}, "outputs": {}}
    seed = 0
    for fmt in settings["formats"]:
        for threads in settings["threads"]:
            configs, keep = {}, []
            for precision in settings["precisions"]:
                for width, depth in settings["grid"]:
                    path = Path(spec["artifacts"][f"{fmt}:{precision}:{width:g}:{depth:g}"])
                    sidecar = read_sidecar(path)
                    session = open_session(path, session_options(sidecar, threads, profile))
                    plan = InputPlan(1, settings["seq_len"], profile.padding_share)
                    feeds = model_inputs(session.inputs, sidecar, plan, source=path).batches[0].feeds
                    call = session.bind(feeds)
                    key = f"{fmt}:{precision}:{threads}:{width:g}:{depth:g}"
                    configs[key] = (None, call)
                    keep.append(session)
                    results["sessions"].setdefault(f"{fmt}:{threads}", session.details)
                    if precision == "fp32" and fmt == "onnx" and threads == settings["threads"][0]:
                        results["outputs"][f"{width:g}:{depth:g}"] = session.run(feeds)[0].tolist()
            for name, gemm_path in spec["gemm"].items():
                if name.startswith(fmt + ":"):
                    session = open_session(Path(gemm_path), session_options(None, threads, profile))
                    rng = np.random.default_rng(0)
                    feeds = {
                        i.name: rng.standard_normal([d or 1 for d in i.dims]).astype(np.float32) for i in session.inputs
                    }
                    configs[f"gemm:{name}:{threads}"] = (None, session.bind(feeds))
                    keep.append(session)
            load = os.getloadavg()
            started = time.perf_counter()
            timing = interleaved(configs, settings["rounds"], settings["min_runs"], settings["min_seconds"], seed=seed)
            seed += 1
            results["units"].append(
                {
                    "format": fmt,
                    "threads": threads,
                    "seconds": round(time.perf_counter() - started, 1),
                    "load_avg_before": [round(x, 2) for x in load],
                    "load_avg_after": [round(x, 2) for x in os.getloadavg()],
                    "timing": timing,
                }
            )
            print(f"  measured {fmt} at {threads} thread(s) in {time.perf_counter() - started:.0f} s", flush=True)
            del configs, keep
            gc.collect()
            results["harness"].append(harness_overhead(spec, fmt, threads, profile, bench_artifact, bare_loop))
    return results


def harness_overhead(spec: dict, fmt: str, threads: int, profile, bench_artifact, bare_loop) -> dict:
    """`bench_artifact`'s p50 and a bare loop's median, alternated on the same artifact, threads and inputs."""
    settings = spec["settings"]
    precision = "int8" if "int8" in settings["precisions"] else settings["precisions"][0]
    width, depth = HARNESS_POINT if list(HARNESS_POINT) in settings["grid"] else settings["grid"][-1]
    path = Path(spec["artifacts"][f"{fmt}:{precision}:{width:g}:{depth:g}"])
    runs, seq = settings["harness_runs"], settings["seq_len"]
    bench_p50, bare_p50 = [], []
    for _ in range(settings["harness_repeats"]):
        result = bench_artifact(path, profile, runs=runs, warmup=5, threads=threads, seq_len=seq, min_time_s=0)
        bench_p50.append(result["latency_ms"]["p50"])
        bare_p50.append(statistics.median(bare_loop(path, profile, runs=runs, warmup=5, threads=threads, seq_len=seq)))
    bench, bare = statistics.median(bench_p50), statistics.median(bare_p50)
    return {
        "format": fmt,
        "threads": threads,
        "artifact": path.name,
        "bench_p50_ms": bench_p50,
        "bare_median_ms": bare_p50,
        "bench_ms": bench,
        "bare_ms": bare,
        "overhead": bench / bare - 1,
        "session": result["environment"].get("session_config"),
    }


class DynaBertBaseline:
    """The full PyTorch BERT run the way the official DynaBERT code runs a sub-network.

    Like DynaBERT's `DynaLinear`, every attention/FFN Linear slices `weight[:out, :in]` (and the bias)
    from the full matrices in each forward; like its `BertEncoder`, the encoder picks its layers in
    each forward. How much each keeps is `edgebert.subnet`'s rule (whole heads, `round_to_nearest`
    in DynaBERT's code), set per module by `set_subnetwork`. Heads follow from the sliced
    projections (transformers infers the head count from the output width).
    """

    def __init__(self, model_dir: str | None, attn_implementation: str = "eager") -> None:
        import torch
        from transformers import BertForSequenceClassification

        from edgebert.slicing import open_checkpoint

        checkpoint = open_checkpoint(model_dir)
        self.arch = checkpoint.arch
        self.torch = torch
        self.model = BertForSequenceClassification.from_pretrained(
            checkpoint.path, attn_implementation=attn_implementation
        )
        self.model.eval()
        self.attention, self.ffn = [], []  # (linear, slices its outputs) per kept-size group
        for layer in self.model.bert.encoder.layer:
            attention = layer.attention
            self.attention += [(linear, True) for linear in (attention.self.query, attention.self.key)]
            self.attention += [(attention.self.value, True), (attention.output.dense, False)]
            self.ffn += [(layer.intermediate.dense, True), (layer.output.dense, False)]
        for linear, out_dim in self.attention + self.ffn:
            self._make_dyna(linear, out_dim)
        self._make_dyna_encoder(self.model.bert.encoder)
        self.set_subnetwork(1.0, 1.0)

    @staticmethod
    def _make_dyna(linear, out_dim: bool) -> None:
        import torch.nn.functional as F

        def forward(x):  # DynaLinear.forward: slice the full matrices to the kept size
            if out_dim:
                weight, bias = linear.weight[: linear.kept], linear.bias[: linear.kept]
            else:
                weight, bias = linear.weight[:, : linear.kept], linear.bias
            return F.linear(x, weight, bias)

        linear.forward = forward

    @staticmethod
    def _make_dyna_encoder(encoder) -> None:
        from torch import nn

        full_forward, layers = encoder.forward, encoder.layer

        def forward(*args, **kwargs):  # BertEncoder.forward with DynaBERT's layer selection
            encoder.layer = nn.ModuleList(layers[i] for i in encoder.kept_layers)
            try:
                return full_forward(*args, **kwargs)
            finally:
                encoder.layer = layers

        encoder.forward = forward

    def set_subnetwork(self, width: float, depth: float) -> None:
        """What `model.apply(lambda m: setattr(m, 'width_mult', w))` sets in the official code, as kept sizes."""
        from edgebert.subnet import subnetwork

        sub = subnetwork(self.arch, width, depth)
        for linear, _ in self.attention:
            linear.kept = sub.heads * self.arch.head_size
        for linear, _ in self.ffn:
            linear.kept = sub.ffn_neurons
        self.model.bert.encoder.kept_layers = sub.layers

    def call(self, feeds: dict):
        torch = self.torch
        inputs = {name: torch.from_numpy(array.astype("int64")) for name, array in feeds.items()}

        def run():
            with torch.inference_mode():
                return self.model(**inputs).logits

        return run


def measure_baseline(spec: dict) -> dict:
    """Torch child: the DynaBERT-style baseline at every grid point, interleaved like the runtime units."""
    import torch

    from edgebert.bench import read_sidecar
    from edgebert.inputs import InputPlan, model_inputs
    from edgebert.profiles import load_profile

    settings = spec["settings"]
    profile = load_profile("local")
    full_key = "onnx:fp32:1:1" if "onnx:fp32:1:1" in spec["artifacts"] else next(iter(spec["artifacts"]))
    path = Path(spec["artifacts"][full_key])
    sidecar = read_sidecar(path)
    plan = InputPlan(1, settings["seq_len"], profile.padding_share)
    feeds = model_inputs(sidecar.input_specs(), sidecar, plan, source=path).batches[0].feeds  # the runtimes' inputs
    baseline = DynaBertBaseline(settings["model"])
    run = baseline.call(feeds)
    results: dict[str, Any] = {"units": [], "outputs": {}, "torch_version": torch.__version__}
    for width, depth in settings["grid"]:
        baseline.set_subnetwork(width, depth)
        results["outputs"][f"{width:g}:{depth:g}"] = run().numpy().tolist()
    for seed, threads in enumerate(settings["threads"]):
        torch.set_num_threads(threads)
        configs = {
            f"pytorch:fp32:{threads}:{w:g}:{d:g}": (lambda w=w, d=d: baseline.set_subnetwork(w, d), run)
            for w, d in settings["grid"]
        }
        load = os.getloadavg()
        started = time.perf_counter()
        timing = interleaved(configs, settings["rounds"], settings["min_runs"], settings["min_seconds"], 100 + seed)
        results["units"].append(
            {
                "format": "pytorch",
                "threads": threads,
                "seconds": round(time.perf_counter() - started, 1),
                "load_avg_before": [round(x, 2) for x in load],
                "load_avg_after": [round(x, 2) for x in os.getloadavg()],
                "timing": timing,
            }
        )
        print(f"  measured the PyTorch baseline at {threads} thread(s) in {time.perf_counter() - started:.0f} s")
    return results


def run_child(mode: str, spec: dict, work: Path, script: str = __file__, python: str = sys.executable) -> dict:
    """Run `script --_<mode> SPEC OUT` (here `measure_runtimes` or `measure_baseline`) in a fresh interpreter
    (`python`: another environment's, e.g. Optimum's); exchange JSON through files."""
    spec_path, out_path = work / f"{mode}-spec.json", work / f"{mode}-result.json"
    spec_path.write_text(json.dumps(spec))
    out_path.unlink(missing_ok=True)
    subprocess.run([python, script, f"--_{mode}", str(spec_path), str(out_path)], check=True)
    return json.loads(out_path.read_text())


# ---- analysis and reports -----------------------------------------------------------------------------


def analyse(settings: dict, sidecars: dict, spec: dict, runtimes: dict, baseline: dict | None) -> dict:
    """Latencies, speedups vs the full model, FLOPs ratios, GEMM-peak shares, int8 gains, baseline, overhead."""
    import numpy as np

    from edgebert.demo import DEMO_ARCH
    from edgebert.slicing import open_checkpoint
    from edgebert.subnet import encoder_flops, full_network, subnetwork

    arch = DEMO_ARCH if settings["model"] is None else open_checkpoint(settings["model"]).arch
    full_flops = encoder_flops(arch, full_network(arch), settings["seq_len"])
    flops = {(w, d): encoder_flops(arch, subnetwork(arch, w, d), settings["seq_len"]) for w, d in settings["grid"]}
    timing = {}
    for unit in runtimes["units"] + (baseline["units"] if baseline else []):
        timing |= unit["timing"]
    peaks = {}
    for key, value in timing.items():
        if key.startswith("gemm:"):
            _, fmt, shape, threads = key.split(":")
            m, k, n = (int(x) for x in shape.split("x"))
            gflops = [2 * m * k * n / (ms * 1e6) for ms in value["round_medians_ms"]]
            peaks.setdefault(f"{fmt}:{threads}", {})[shape] = statistics.median(gflops)
    rows = []
    for key, value in timing.items():
        if key.startswith("gemm:"):
            continue
        fmt, precision, threads, w, d = key.split(":")
        point = (float(w), float(d))
        medians = value["round_medians_ms"]
        row = {
            "format": fmt,
            "precision": precision,
            "threads": int(threads),
            "width": point[0],
            "depth": point[1],
            "latency_ms": statistics.median(medians),
            "round_medians_ms": medians,
            "runs": value["runs"],
            "encoder_gflop": flops[point] / 1e9,
            "flops_ratio": full_flops / flops[point],
        }
        full = timing.get(f"{fmt}:{precision}:{threads}:1:1")
        if full:  # per-round ratios: each pairs two measurements taken close together
            row["speedup"] = statistics.median(np.divide(full["round_medians_ms"], medians).tolist())
            row["speedup_over_flops_ratio"] = row["speedup"] / row["flops_ratio"]
        row["gflops"] = flops[point] / (row["latency_ms"] * 1e6)
        peak = peaks.get(f"{fmt}:{threads}")
        if peak and precision == "fp32":
            row["gemm_peak_share"] = row["gflops"] / max(peak.values())
        if fmt != "pytorch":
            path = str(artifact_path(Path(spec["work"]), fmt, precision, *point))
            row["quantization"] = sidecars[path].quantization
        fp32 = timing.get(f"{fmt}:fp32:{threads}:{w}:{d}")
        if precision == "int8" and fp32:
            row["int8_speedup"] = statistics.median(np.divide(fp32["round_medians_ms"], medians).tolist())
        torch_row = timing.get(f"pytorch:fp32:{threads}:{w}:{d}")
        if fmt != "pytorch" and torch_row:
            row["speedup_vs_pytorch"] = statistics.median(torch_row["round_medians_ms"]) / row["latency_ms"]
        rows.append(row)
    parity = {}
    if baseline:
        for point, logits in baseline["outputs"].items():
            if point in runtimes["outputs"]:
                parity[point] = float(np.max(np.abs(np.subtract(logits, runtimes["outputs"][point]))))
    return {
        "rows": rows,
        "gemm_peak_gflops": peaks,
        "harness": runtimes["harness"],
        "baseline_vs_onnx_fp32_max_abs_diff": parity,
        "summary": summarize(rows, runtimes["harness"], settings),
        "latency_model": latency_model_check(rows, arch, settings),
    }


def latency_model_check(rows: list[dict], arch, settings: dict) -> dict:
    """`pick`'s latency model against this run: calibrated on the configurations `pick --measure` would
    measure (spread over the FLOPs range), it predicts the rest of the grid;
    the share within +-10 % of the measured median is issue 6's bar (nn-Meter's). Leave-one-out too."""
    from edgebert.latency_model import WITHIN, Measurement, Shape, calibrate, leave_one_out
    from edgebert.pick import MEASURE_PER_PRECISION, spread
    from edgebert.profiles import load_profile
    from edgebert.runtimes import RUNTIME_FOR_FORMAT
    from edgebert.subnet import subnetwork

    profile = load_profile("local")
    series, errors = [], []
    for fmt, precision, threads in sorted({(r["format"], r["precision"], r["threads"]) for r in rows}):
        if fmt not in RUNTIME_FOR_FORMAT:
            continue  # the PyTorch baseline is not something pick predicts
        runtime = RUNTIME_FOR_FORMAT[fmt]
        measurements = [
            Measurement(
                r["width"],
                r["depth"],
                precision,
                runtime,
                Shape.of(arch, subnetwork(arch, r["width"], r["depth"]), 1, settings["seq_len"]),
                r["latency_ms"],
            )
            for r in rows
            if (r["format"], r["precision"], r["threads"]) == (fmt, precision, threads)
        ]
        chosen = set(spread([(m.width, m.depth) for m in measurements], arch, MEASURE_PER_PRECISION))
        model = calibrate(profile, [m for m in measurements if (m.width, m.depth) in chosen], (precision,))
        held_out = [
            model.predict(m.shape, precision, runtime) / m.latency_ms - 1
            for m in measurements
            if (m.width, m.depth) not in chosen
        ]
        errors += held_out
        loo = leave_one_out(profile, measurements)
        series.append(
            {
                "format": fmt,
                "precision": precision,
                "threads": threads,
                "calibrated_on": sorted(chosen),
                "predicted": len(held_out),
                "within_10_percent": sum(abs(e) <= WITHIN for e in held_out) / len(held_out) if held_out else None,
                "worst_relative_error": max(map(abs, held_out)) if held_out else None,
                "leave_one_out_within_10_percent": loo["within_10_percent"],
            }
        )
    within = sum(abs(e) <= WITHIN for e in errors) / len(errors) if errors else None
    return {"statistic": "median", "within_10_percent": within, "predictions": len(errors), "series": series}


def summarize(rows: list[dict], harness: list[dict], settings: dict) -> list[dict]:
    """One line per target and (format, precision, threads): worst and median over the non-full grid points."""
    lines = []

    def add(target: str, group: str, values: list[float], bound: float, higher_is_better: bool = True) -> None:
        if not values:
            return
        worst = min(values) if higher_is_better else max(values)
        passed = worst >= bound if higher_is_better else worst <= bound
        line = {"target": target, "group": group, "worst": worst, "median": statistics.median(values)}
        lines.append(line | {"bound": bound, "passed": passed})

    groups = sorted({(r["format"], r["precision"], r["threads"]) for r in rows})
    for fmt, precision, threads in groups:
        if fmt == "pytorch":
            continue
        group = [r for r in rows if (r["format"], r["precision"], r["threads"]) == (fmt, precision, threads)]
        name = f"{fmt} {precision} {threads}t"
        sliced = [r for r in group if (r["width"], r["depth"]) != FULL and "speedup_over_flops_ratio" in r]
        add("speedup / FLOPs ratio", name, [r["speedup_over_flops_ratio"] for r in sliced], TARGETS["flops_ratio"])
        if precision == "fp32":
            add("share of GEMM peak", name, [r["gemm_peak_share"] for r in group if "gemm_peak_share" in r], 0.85)
        if precision == "int8":
            add("int8 / fp32 speedup", name, [r["int8_speedup"] for r in group if "int8_speedup" in r], 2.5)
    for entry in harness:
        add(
            "harness overhead",
            f"{entry['format']} {entry['artifact']} {entry['threads']}t",
            [entry["overhead"]],
            TARGETS["harness_overhead"],
            higher_is_better=False,
        )
    return lines


def environment(load_before: tuple, runtimes: dict, baseline: dict | None) -> dict:
    from edgebert.process import usable_cores
    from edgebert.profiles import detect_hardware

    def version(name: str) -> str | None:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as v

        try:
            return v(name)
        except PackageNotFoundError:
            return None

    hardware = detect_hardware()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True)
    units = runtimes["units"] + (baseline["units"] if baseline else [])
    return {
        "cpu": hardware.cpu,
        "cores": hardware.cores,
        "usable_cores": usable_cores(),
        "simd": hardware.simd,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "onnxruntime": version("onnxruntime"),
        "ai_edge_litert": version("ai-edge-litert"),
        "torch": version("torch"),
        "transformers": version("transformers"),
        "git_commit": commit.stdout.strip() or None,
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "load_avg_per_unit": {f"{u['format']} {u['threads']}t": u["load_avg_before"][0] for u in units},
        "sessions": runtimes["sessions"],
    }


def _fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{suffix}"


def markdown(report: dict) -> str:
    settings, env, rows = report["settings"], report["environment"], report["analysis"]["rows"]
    by_key = {(r["format"], r["precision"], r["threads"], r["width"], r["depth"]): r for r in rows}
    threads = settings["threads"]
    columns = [(f, p) for f in settings["formats"] for p in settings["precisions"]]
    if settings["baseline"]:
        columns.append(("pytorch", "fp32"))
    label = {"onnx": "ONNX", "tflite": "TFLite", "pytorch": "PyTorch DynaBERT"}
    heads = [f"{label[f]} {p} {t}t" if f != "pytorch" else f"{label[f]} {t}t" for f, p in columns for t in threads]
    lines = [
        f"Demo model (BERT-base shape), seq {settings['seq_len']}, batch 1, {env['cpu']} "
        f"({env['usable_cores']} usable cores), load average {env['load_avg_before'][0]:.2f} before / "
        f"{env['load_avg_after'][0]:.2f} after; {report['timestamp']}, commit {env['git_commit']}. "
        f"Medians of {settings['rounds']} interleaved rounds.",
        "",
        "**Targets** (worst grid point; median in brackets)",
        "",
        "| target | configuration | worst (median) | bound | met |",
        "|---|---|---|---|---|",
    ]
    for line in report["analysis"]["summary"]:
        pct = line["target"] in ("share of GEMM peak", "harness overhead")
        value = (
            f"{line['worst']:+.1%} ({line['median']:+.1%})"
            if line["target"] == "harness overhead"
            else f"{line['worst']:.0%} ({line['median']:.0%})"
            if pct
            else f"{line['worst']:.2f} ({line['median']:.2f})"
        )
        bound = f"{'<=' if line['target'] == 'harness overhead' else '>='} {line['bound']:{'.0%' if pct else 'g'}}"
        met = "yes" if line["passed"] else "**no**"
        lines.append(f"| {line['target']} | {line['group']} | {value} | {bound} | {met} |")

    def table(title: str, cell) -> None:
        lines.extend(["", f"**{title}**", "", "| width | depth | FLOPs ratio | " + " | ".join(heads) + " |"])
        lines.append("|---|---|---|" + "---|" * len(heads))
        for w, d in (tuple(p) for p in settings["grid"]):
            ratio = next(r["flops_ratio"] for r in rows if (r["width"], r["depth"]) == (w, d))
            cells = [cell(by_key.get((f, p, t, w, d))) for f, p in columns for t in threads]
            lines.append(f"| {w:g} | {d:g} | {ratio:.2f} | " + " | ".join(cells) + " |")

    table("Latency, ms (median)", lambda r: _fmt(r and r["latency_ms"], ".1f"))
    table(
        "Speedup vs the full model / FLOPs ratio (target >= 0.9)",
        lambda r: _fmt(r and r.get("speedup_over_flops_ratio")),
    )
    table("Achieved encoder GFLOP/s (fp32: share of the same-runtime GEMM peak)", _gflops_cell)
    table("int8 speedup over fp32 at the same slice (target >= 2.5)", lambda r: _fmt(r and r.get("int8_speedup")))
    if settings["baseline"]:
        table(
            "Speedup over the PyTorch DynaBERT baseline (same threads)",
            lambda r: _fmt(r and r.get("speedup_vs_pytorch"), ".1f", "x"),
        )
    peaks = report["analysis"]["gemm_peak_gflops"]
    lines += [
        "",
        "**GEMM peak** (single fp32 MatMul, GFLOP/s): "
        + "; ".join(
            f"{key.replace(':', ' ')}t: " + ", ".join(f"{shape} {value:.0f}" for shape, value in shapes.items())
            for key, shapes in sorted(peaks.items())
        ),
    ]
    schemes = sorted({f"{r['format']} {r['quantization']}" for r in rows if r["precision"] == "int8"})
    lines += [f"**int8 schemes** (sidecar `quantization`): {', '.join(schemes) or '–'}"]
    check = report["analysis"].get("latency_model")
    if check and check["predictions"]:
        lines += [
            "",
            f"**Latency model** (`pick`): calibrated on {MEASURE_POINTS_TEXT} per series, it predicted the other "
            f"{check['predictions']} measurements; **{check['within_10_percent']:.0%} within +-10 %** (goal 95 %).",
            "",
            "| series | calibrated on (w, d) | within +-10 % | worst error | leave-one-out within +-10 % |",
            "|---|---|---|---|---|",
        ]
        for entry in check["series"]:
            points = ", ".join(f"{w:g}/{d:g}" for w, d in entry["calibrated_on"])
            lines.append(
                f"| {entry['format']} {entry['precision']} {entry['threads']}t | {points} | "
                f"{_fmt(entry['within_10_percent'], '.0%')} | {_fmt(entry['worst_relative_error'], '.1%')} | "
                f"{_fmt(entry['leave_one_out_within_10_percent'], '.0%')} |"
            )
    lines += ["", "**Harness overhead** (`bench_artifact` p50 vs a bare loop, same artifact, threads and inputs):", ""]
    lines += ["| artifact | format | threads | bench p50 ms | bare median ms | overhead |", "|---|---|---|---|---|---|"]
    for entry in report["analysis"]["harness"]:
        lines.append(
            f"| {entry['artifact']} | {entry['format']} | {entry['threads']} | {entry['bench_ms']:.2f} | "
            f"{entry['bare_ms']:.2f} | {entry['overhead']:+.1%} |"
        )
    return "\n".join(lines) + "\n"


def _gflops_cell(row: dict | None) -> str:
    if row is None:
        return "–"
    share = row.get("gemm_peak_share")
    return f"{row['gflops']:.0f}" + (f" ({share:.0%})" if share is not None else "")


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["analysis"]["rows"] if "speedup" in r]
    threads = report["settings"]["threads"]
    fig, axes = plt.subplots(1, len(threads), figsize=(6 * len(threads), 5), squeeze=False, sharey=True)
    styles = {"onnx": "o", "tflite": "s", "pytorch": "^"}
    colors = {"fp32": "tab:blue", "int8": "tab:orange"}
    for ax, t in zip(axes[0], threads, strict=True):
        top = max([r["flops_ratio"] for r in rows] + [1.0]) * 1.2
        ax.plot([1, top], [1, top], "k-", lw=0.8, label="speedup = FLOPs ratio")
        ax.plot([1, top], [0.9, 0.9 * top], "k--", lw=0.8, label="0.9 x FLOPs ratio (target)")
        for fmt in ("onnx", "tflite", "pytorch"):
            for precision in ("fp32", "int8"):
                group = [r for r in rows if (r["format"], r["precision"], r["threads"]) == (fmt, precision, t)]
                if group:
                    ax.scatter(
                        [r["flops_ratio"] for r in group],
                        [r["speedup"] for r in group],
                        marker=styles[fmt],
                        color="tab:gray" if fmt == "pytorch" else colors[precision],
                        label=f"{fmt} {precision}",
                        alpha=0.8,
                    )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("encoder FLOPs ratio (full / slice)")
        ax.set_title(f"{t} thread{'s' if t > 1 else ''}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("speedup vs the full model (same format, precision, threads)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("edgebert: slice speedup vs FLOPs ratio (demo BERT-base, seq 128, batch 1)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- main ---------------------------------------------------------------------------------------------


def run(settings: dict, work: Path, out_dir: Path, force_export: bool = False, make_plot: bool = True) -> dict:
    load_before = os.getloadavg()
    started = time.perf_counter()
    print(f"exporting / reusing artifacts under {work} ...", flush=True)
    sidecars = ensure_artifacts(settings, work, force=force_export)
    gemm = ensure_gemm_models(settings, work)
    artifacts = {
        f"{fmt}:{p}:{w:g}:{d:g}": str(artifact_path(work, fmt, p, w, d))
        for w, d in settings["grid"]
        for fmt in settings["formats"]
        for p in settings["precisions"]
    }
    spec = {"settings": settings, "artifacts": artifacts, "gemm": gemm, "work": str(work)}
    print("measuring ONNX Runtime / LiteRT (torch-free child) ...", flush=True)
    runtimes = run_child("runtimes", spec, work)
    baseline = None
    if settings["baseline"]:
        print("measuring the PyTorch DynaBERT baseline (torch child) ...", flush=True)
        baseline = run_child("baseline", spec, work)
    report = {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "targets": TARGETS,
        "environment": environment(load_before, runtimes, baseline),
        "analysis": analyse(settings, sidecars, spec, runtimes, baseline),
        "seconds": round(time.perf_counter() - started, 1),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "latest.md").write_text(markdown(report))
    if make_plot:
        plot(report, out_dir / "latest.png")
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="edgebert's benchmark suite (see benchmarks/README.md)")
    parser.add_argument("--quick", action="store_true", help="3 grid points, 3 short rounds: a smoke run")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--formats", default="onnx,tflite")
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--grid", help="points as WIDTHxDEPTH, comma-separated (default: the trained grid)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 3)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the PyTorch DynaBERT baseline")
    parser.add_argument("--seq-len", type=int, default=SEQ_LEN)
    parser.add_argument("--model", help="a DynaBERT checkpoint instead of the demo model")
    parser.add_argument("--work", type=Path, default=HERE / "work", help="artifact cache")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where latest.{json,md,png} go")
    parser.add_argument("--reexport", action="store_true", help="export again even if cached")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("--_runtimes", "--_baseline"):  # child processes
        spec = json.loads(Path(argv[1]).read_text())
        measure = measure_runtimes if argv[0] == "--_runtimes" else measure_baseline
        result = measure(spec)
        if argv[0] == "--_runtimes":
            result["torch_imported"] = "torch" in sys.modules
        Path(argv[2]).write_text(json.dumps(result))
        return 0
    args = build_parser().parse_args(argv)
    settings = settings_from(args)
    work = args.work / Path(args.model).resolve().name if args.model else args.work  # the demo's cache stays apart
    report = run(settings, work, args.out, force_export=args.reexport)
    print((args.out / "latest.md").read_text())
    print(f"done in {report['seconds']:.0f} s: {args.out}/latest.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
