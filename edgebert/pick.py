"""`pick`: which (width, depth, precision) to ship to a device, under its memory and latency budgets.

Every candidate (the trained grid, or the user's list, x the precisions the profile's runtime
runs) gets a memory figure, a latency figure and, when `edgebert eval` has cached results for
these weights, an accuracy. Each figure says where it comes from: memory is "measured" (peak RSS
of a torch-free bench process) or "estimated" (RUNTIME_BASELINE_BYTES + LOAD_FACTOR x artifact
bytes + activation arena at the profile's batch and length); latency is "measured", "predicted"
(the calibrated `latency_model`) or an "estimate from specs". The choice is the most accurate
candidate within every budget (without accuracy: the most FLOPs), then the most faithful
precision, then the fastest. When nothing fits, `choice` is None and the verdict names the
smallest memory and lowest latency any candidate reaches; that is an answer, not an error.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgebert.bench import BUDGET_PERCENTILE
from edgebert.errors import EdgebertError, require
from edgebert.export.base import PRECISIONS
from edgebert.latency_model import (
    FORMAT_FOR_RUNTIME,
    LatencyModel,
    Measurement,
    Shape,
    calibrate,
    leave_one_out,
    load_calibration,
    measurement_from_result,
)
from edgebert.profiles import Profile
from edgebert.subnet import TRAINED_GRID, Architecture, check_fractions, costs, subnetwork

RUNTIME_PRECISIONS = {"onnxruntime": PRECISIONS, "litert": PRECISIONS}  # both runtimes run all `export` writes
FIDELITY = {"fp32": 2, "fp16": 1, "int8": 0}  # tie-breaker: the closer to the evaluated fp32 model, the better
BYTES_PER_WEIGHT = {"fp32": 4, "fp16": 2, "int8": 1}
# Peak RSS of a bench process around a negligible model: Python, numpy, edgebert's CLI and the runtime plus the
# runtime's session, arena and thread pools. Measured on x86-64 Linux with onnxruntime: 88 MB in one venv, 102 MB in
# a fresh CI venv with the same packages (its imports alone take 15 MB more); set above both, since budgets are
# checked against it. LiteRT's session is unmeasured: assumed 10 MB less, as its import is.
RUNTIME_BASELINE_BYTES = {"onnxruntime": 110_000_000, "litert": 100_000_000}
# Peak RSS growth per artifact byte above that baseline while loading and running: ORT holds the graph's
# initializers and its own prepacked or converted copies of the weights. Measured on the demo model at
# (0.5, 0.5), x86-64: 1.46x at fp32, 2.0x at fp16, 1.67x at int8; set ~15 % above. LiteRT maps the file and
# XNNPACK packs the weights once: DEFAULT_LOAD_FACTOR, unmeasured.
LOAD_FACTOR = {("onnxruntime", "fp32"): 1.7, ("onnxruntime", "fp16"): 2.3, ("onnxruntime", "int8"): 1.9}
DEFAULT_LOAD_FACTOR = 2.0
ACTIVATION_COPIES = 8  # fp32 (batch, seq, hidden)-sized buffers an arena keeps alive across a layer
MEASURE_PER_PRECISION = 4  # `--measure`: configurations exported and benched per precision
MEASURE_RUNS, MEASURE_WARMUP = 20, 3

MEMORY_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
TIME_UNITS = {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0}
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zµ]+)\s*$", re.IGNORECASE)


def _quantity(text: str, units: dict[str, float], what: str, example: str) -> float:
    match = _QUANTITY.match(str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in units:
        raise EdgebertError(
            f"cannot read {what} {text!r}: give a number and a unit ({', '.join(units)}), e.g. {example}"
        )
    value = float(match.group(1)) * units[unit]
    if value <= 0:
        raise EdgebertError(f"{what} {text!r} must be more than zero")
    return value


def parse_memory(text: str) -> int:
    """'60MB' -> 60_000_000 bytes; KB/MB/GB are powers of ten, KiB/MiB/GiB powers of two."""
    return int(_quantity(text, MEMORY_UNITS, "memory budget", "60MB or 0.5GiB"))


def parse_latency(text: str) -> float:
    """'40ms' -> 40.0 ms; also s and us."""
    return _quantity(text, TIME_UNITS, "latency budget", "40ms or 0.2s")


def parse_candidates(text: str) -> list[tuple[float, float]]:
    """'0.5:0.75,1:1' -> [(0.5, 0.75), (1.0, 1.0)]."""
    pairs = []
    for item in text.split(","):
        try:
            width, depth = (float(part) for part in item.split(":"))
        except ValueError:
            raise EdgebertError(f"bad candidate {item.strip()!r}: give WIDTH:DEPTH pairs, e.g. 0.5:0.75,1:1") from None
        pairs.append(check_fractions(width, depth))
    return pairs


@dataclass
class Candidate:
    """One (width, depth, precision) with its costs, each labelled with where it comes from."""

    width: float
    depth: float
    precision: str
    format: str
    parameters: int
    encoder_flops_seq128: int
    size_bytes: int
    size_source: str  # "estimated" or "exported"
    memory_bytes: int
    memory_source: str  # "estimated" or "measured"
    latency_ms: float
    latency_source: str  # "measured", "predicted" or "estimate from specs"
    accuracy: float | None = None
    fits_memory: bool = True
    fits_latency: bool = True
    pareto: bool = False

    @property
    def fits(self) -> bool:
        return self.fits_memory and self.fits_latency

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "fits": self.fits}


def memory_estimate(profile: Profile, shape: Shape, precision: str, size_bytes: int) -> int:
    """Runtime baseline + artifact bytes as loaded + the activation arena at the profile's batch and length."""
    runtime = profile.runtime
    factor = LOAD_FACTOR.get((runtime, precision), DEFAULT_LOAD_FACTOR)
    per_sequence = (
        shape.seq_len * (ACTIVATION_COPIES * shape.hidden + 2 * shape.ffn) + 2 * shape.seq_len**2 * shape.heads
    )
    arena = 4 * shape.batch * per_sequence  # fp32 activations, including scores and probabilities
    return int(RUNTIME_BASELINE_BYTES[runtime] + factor * size_bytes + arena)


def accuracy_lookup(model_sha256: str, configs: list[tuple[float, float]]) -> tuple[dict, dict | None]:
    """Cached eval results of these weights: {(w, d): metric} from the data file covering most configs."""
    from edgebert.evaluate import cached_results, primary_metric

    by_data: dict[str, list[dict]] = {}
    for result in cached_results(model_sha256):
        by_data.setdefault(result["data_sha256"], []).append(result)
    wanted = set(configs)
    best = max(
        by_data.values(),
        key=lambda rs: (len(wanted & {(r["width"], r["depth"]) for r in rs}), rs[0]["examples"]),
        default=None,
    )
    if not best:
        return {}, None
    scores = {(r["width"], r["depth"]): primary_metric(r["metrics"])[1] for r in best}
    metric = primary_metric(best[0]["metrics"])[0]
    source = {"metric": metric, "data": best[0]["data"], "examples": best[0]["examples"]}
    return scores, source | {"covered": len(wanted & set(scores)), "candidates": len(wanted)}


def measure_locally(
    model: str | Path | None,
    profile: Profile,
    configs: list[tuple[float, float, str]],
    work_dir: Path,
    progress: Callable[[str], None],
) -> list[Measurement]:
    """Export each config (with its parity gate) and bench it in a fresh, torch-free process."""
    import yaml

    from edgebert.export import export_model

    profile_file = work_dir / "profile.yaml"
    profile_file.write_text(yaml.safe_dump(profile.model_dump()))
    fmt = FORMAT_FOR_RUNTIME[profile.runtime]
    measurements = []
    for index, (width, depth, precision) in enumerate(configs, start=1):
        progress(f"measuring {index}/{len(configs)}: width {width:g} depth {depth:g} {precision}")
        artifact = work_dir / f"w{width:g}-d{depth:g}.{precision}.{fmt}"
        export_model(model, fmt, precision, width=width, depth=depth, seq_len=profile.seq_len, out=artifact)
        command = [sys.executable, "-m", "edgebert", "bench", str(artifact), "--profile", str(profile_file)]
        command += ["--runs", str(MEASURE_RUNS), "--warmup", str(MEASURE_WARMUP), "--min-time", "0", "--json"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise EdgebertError(f"benchmarking {artifact.name} failed: {done.stderr.strip().splitlines()[-1:]}")
        measurements.append(measurement_from_result(json.loads(done.stdout), artifact.name))
        artifact.unlink()
    return measurements


def spread(configs: list[tuple[float, float]], arch: Architecture, count: int) -> list[tuple[float, float]]:
    """Up to `count` configs evenly spread over the FLOPs range (smallest and largest always included)."""
    ordered = sorted(configs, key=lambda c: costs(arch, subnetwork(arch, *c))["encoder_flops_seq128"])
    if len(ordered) <= count:
        return ordered
    return [ordered[round(i * (len(ordered) - 1) / (count - 1))] for i in range(count)]


def pick(
    model: str | Path | None,
    profile: Profile,
    memory_budget: str | None = None,
    latency_budget: str | None = None,
    measure: bool = False,
    calibration: list[Path] | None = None,
    candidates: str | None = None,
    export_dir: Path | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Rank every candidate on `profile` and choose one; see the module docstring for the rules."""
    from edgebert.slicing import UNTRAINED_NOTE, not_dynabert_note, open_checkpoint

    memory_limit = parse_memory(memory_budget) if memory_budget else None
    latency_limit = parse_latency(latency_budget) if latency_budget else None
    configs = parse_candidates(candidates) if candidates else list(TRAINED_GRID)
    if measure and not profile.hardware.detected:
        raise EdgebertError(
            f"--measure benchmarks on this machine, which is not {profile.name}: use --profile local, or pass "
            f"--calibration files from `edgebert bench --profile {profile.name} --out FILE` run on the device"
        )
    budgets = {
        "memory_bytes": memory_limit or (int(profile.memory_budget_mb * 1e6) if profile.memory_budget_mb else None),
        "memory_from": "--memory-budget" if memory_limit else "profile" if profile.memory_budget_mb else None,
        "latency_ms": latency_limit or profile.latency_budget_ms,
        "latency_from": "--latency-budget" if latency_limit else "profile" if profile.latency_budget_ms else None,
        "latency_statistic": BUDGET_PERCENTILE,
    }
    measurements = load_calibration(list(calibration or []), profile)
    progress("loading the model")
    checkpoint = open_checkpoint(model)
    arch = checkpoint.arch
    precisions = RUNTIME_PRECISIONS[profile.runtime]
    fmt = FORMAT_FOR_RUNTIME[profile.runtime]
    measured: dict[tuple[float, float, str], Measurement] = {}
    if measure:
        chosen = [(w, d, p) for p in precisions for w, d in spread(configs, arch, MEASURE_PER_PRECISION)]
        with tempfile.TemporaryDirectory(prefix="edgebert-pick-") as work_dir:
            local = measure_locally(checkpoint.path, profile, chosen, Path(work_dir), progress)
        measured = {(m.width, m.depth, m.precision): m for m in local}
        measurements += local
    latency_model = calibrate(profile, measurements, precisions)
    scores, accuracy_source = accuracy_lookup(checkpoint.weights_sha256, configs)
    notes = []
    if accuracy_source and accuracy_source["covered"] < accuracy_source["candidates"]:
        notes.append(  # ranking evaluated against unevaluated sub-networks would favour whatever was evaluated
            f"eval results cover only {accuracy_source['covered']} of {accuracy_source['candidates']} configurations "
            f"(run `edgebert eval MODEL --data {accuracy_source['data']} --grid`): accuracy not used"
        )
        scores, accuracy_source = {}, None

    rows = []
    for width, depth in configs:
        sub = subnetwork(arch, width, depth)
        cost = costs(arch, sub)
        shape = Shape.of(arch, sub, profile.batch_size, profile.seq_len)
        for precision in precisions:
            measurement = measured.get((width, depth, precision))
            row = _candidate(profile, latency_model, shape, cost, precision, fmt, measurement)
            row.accuracy = scores.get((width, depth))
            rows.append(row)
    for row in rows:
        row.fits_memory = budgets["memory_bytes"] is None or row.memory_bytes <= budgets["memory_bytes"]
        row.fits_latency = budgets["latency_ms"] is None or row.latency_ms <= budgets["latency_ms"]
    _mark_pareto(rows, by_accuracy=accuracy_source is not None)

    feasible = [row for row in rows if row.fits]
    choice = max(feasible, key=_preference, default=None)  # accuracy first when known, then FLOPs
    if accuracy_source is None:
        notes.append(
            "accuracy unknown (no complete `edgebert eval` results for these weights): ranked by encoder FLOPs, "
            "the largest that fits"
        )
    else:
        notes.append(
            f"{accuracy_source['metric']} from the eval cache ({accuracy_source['data']}, "
            f"{accuracy_source['examples']} examples), measured in fp32; fp16/int8 artifacts pass a parity gate"
        )
    warnings = []
    if checkpoint.is_demo:
        notes.append(UNTRAINED_NOTE)
    elif not checkpoint.trained_as_dynabert:
        warnings.append(not_dynabert_note(checkpoint))
    if choice is None:
        smallest = min(rows, key=lambda r: r.memory_bytes)
        fastest = min(rows, key=lambda r: r.latency_ms)
        verdict = (
            f"nothing fits: the smallest memory achievable is {smallest.memory_bytes / 1e6:.1f} MB "
            f"({_name(smallest)}, {smallest.memory_source}) and the lowest latency {fastest.latency_ms:.1f} ms "
            f"({_name(fastest)}, {fastest.latency_source})"
        )
    else:
        verdict = (
            f"ship {_name(choice)}: {choice.memory_bytes / 1e6:.1f} MB ({choice.memory_source}), "
            f"{choice.latency_ms:.1f} ms {BUDGET_PERCENTILE} ({choice.latency_source})"
        )
    report: dict[str, Any] = {
        "model": str(checkpoint.path),
        "model_sha256": checkpoint.weights_sha256,
        "profile": profile.name,
        "runtime": profile.runtime,
        "format": fmt,
        "batch_size": profile.batch_size,
        "seq_len": profile.seq_len,
        "budgets": budgets,
        "accuracy": accuracy_source,
        "latency_model": {
            "curves": latency_model.describe(),
            "leave_one_out": leave_one_out(profile, measurements) if len(measurements) > 1 else None,
        },
        "candidates": [row.to_json() for row in rows],
        "choice": choice.to_json() if choice else None,
        "verdict": verdict,
        "notes": notes,
        "warnings": warnings,
        "export": None,
    }
    if choice is not None and export_dir is not None:
        progress(f"exporting {_name(choice)}")
        report["export"] = export_choice(checkpoint.path, checkpoint.path.resolve().name, choice, profile, export_dir)
        report["choice"] = choice.to_json()
    return report


def _candidate(
    profile: Profile,
    latency_model: LatencyModel,
    shape: Shape,
    cost: dict[str, Any],
    precision: str,
    fmt: str,
    measurement: Measurement | None,
) -> Candidate:
    size = measurement.size_bytes if measurement else cost["parameters"] * BYTES_PER_WEIGHT[precision]
    if measurement is not None:
        memory, memory_source = measurement.peak_rss_bytes, "measured"
        latency, latency_source = measurement.latency_ms, "measured"
    else:
        memory, memory_source = memory_estimate(profile, shape, precision, size), "estimated"
        latency, latency_source = latency_model.predict(shape, precision), latency_model.curve(precision).label
    return Candidate(
        width=cost["width"],
        depth=cost["depth"],
        precision=precision,
        format=fmt,
        parameters=cost["parameters"],
        encoder_flops_seq128=cost["encoder_flops_seq128"],
        size_bytes=size,
        size_source="exported" if measurement else "estimated",
        memory_bytes=memory,
        memory_source=memory_source,
        latency_ms=latency,
        latency_source=latency_source,
    )


def _preference(row: Candidate) -> tuple:
    """Feasible candidates ranked: accuracy (unevaluated last), FLOPs, closeness to fp32, then speed and size."""
    accuracy = row.accuracy if row.accuracy is not None else -1.0
    return (accuracy, row.encoder_flops_seq128, FIDELITY[row.precision], -row.latency_ms, -row.memory_bytes)


def _mark_pareto(rows: list[Candidate], by_accuracy: bool) -> None:
    """On the frontier: no other candidate is as fast, as small and as good in every term `_preference` ranks by."""

    def vector(row: Candidate) -> tuple[float, ...]:
        accuracy = (row.accuracy if row.accuracy is not None else -1.0) if by_accuracy else 0.0
        return (-row.latency_ms, -row.memory_bytes, accuracy, row.encoder_flops_seq128, FIDELITY[row.precision])

    vectors = [vector(row) for row in rows]
    for row, mine in zip(rows, vectors, strict=True):
        row.pareto = not any(
            theirs != mine and all(a >= b for a, b in zip(theirs, mine, strict=True)) for theirs in vectors
        )


def _name(row: Candidate) -> str:
    return f"width {row.width:g} depth {row.depth:g} {row.precision}"


def export_choice(model: Path, stem: str, choice: Candidate, profile: Profile, export_dir: Path) -> dict[str, Any]:
    """Write the chosen artifact (with its parity gate) and update the choice with its real size."""
    from edgebert.export import export_model

    export_dir.mkdir(parents=True, exist_ok=True)
    out = export_dir / f"{stem}-w{choice.width:g}-d{choice.depth:g}.{choice.precision}.{choice.format}"
    sidecar = export_model(
        model, choice.format, choice.precision, width=choice.width, depth=choice.depth, seq_len=profile.seq_len, out=out
    )
    if choice.memory_source == "estimated":
        choice.memory_bytes += int(
            LOAD_FACTOR.get((profile.runtime, choice.precision), DEFAULT_LOAD_FACTOR)
            * (sidecar["size_bytes"] - choice.size_bytes)
        )
    choice.size_bytes, choice.size_source = sidecar["size_bytes"], "exported"
    return {"path": sidecar["path"], "size_bytes": sidecar["size_bytes"], "parity": sidecar["parity"]}


def plot_pareto(report: dict[str, Any], path: Path) -> None:
    """Latency vs memory of every candidate, frontier highlighted, budgets as lines, the choice starred."""
    require("matplotlib", "--plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["candidates"]
    accuracy = report["accuracy"]
    quality = [r["accuracy"] if accuracy else r["encoder_flops_seq128"] / 1e9 for r in rows]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    markers = {"fp32": "o", "fp16": "s", "int8": "^"}
    for precision, marker in markers.items():
        index = [i for i, r in enumerate(rows) if r["precision"] == precision]
        points = axes.scatter(
            [rows[i]["latency_ms"] for i in index],
            [rows[i]["memory_bytes"] / 1e6 for i in index],
            c=[quality[i] for i in index],
            vmin=min(quality),
            vmax=max(quality),
            marker=marker,
            edgecolors=["black" if rows[i]["pareto"] else "none" for i in index],
            label=precision,
        )
    figure.colorbar(points, label=accuracy["metric"] if accuracy else "encoder GFLOPs (seq 128)")
    frontier = sorted((r for r in rows if r["pareto"]), key=lambda r: r["latency_ms"])
    axes.step([r["latency_ms"] for r in frontier], [r["memory_bytes"] / 1e6 for r in frontier], "k:", where="post")
    budgets = report["budgets"]
    if budgets["latency_ms"]:
        axes.axvline(budgets["latency_ms"], color="red", linestyle="--", linewidth=1)
    if budgets["memory_bytes"]:
        axes.axhline(budgets["memory_bytes"] / 1e6, color="red", linestyle="--", linewidth=1)
    if report["choice"]:
        choice = report["choice"]
        axes.scatter(
            [choice["latency_ms"]],
            [choice["memory_bytes"] / 1e6],
            marker="*",
            s=300,
            c="gold",
            edgecolors="black",
            label="choice",
            zorder=3,
        )
    axes.set_xlabel(f"latency {BUDGET_PERCENTILE} (ms)")
    axes.set_ylabel("memory (MB)")
    axes.set_title(f"{Path(report['model']).name} on {report['profile']}")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
