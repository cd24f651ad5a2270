"""Predicting a sub-network's latency on a device profile from a few measured configurations.

The model: latency = c0 + c_proj * projection GFLOPs + c_attn * attention GFLOPs + c_layer * layers,
one set of non-negative coefficients per (runtime, precision), with FLOPs counted at the batch size
and sequence length of each measurement (`subnet.layer_flops`: weight GEMMs grow with the
sequence, attention with its square). c0 is the fixed cost (embeddings, classifier, the runtime
call), c_proj and c_attn are inverse effective rates, c_layer is the per-layer cost of the small
kernels (LayerNorm, softmax, GELU, reshapes). Coefficients come from non-negative least squares on
relative error (the best non-negative subset of the four terms, which is exact NNLS for four
unknowns), fitted once a precision has FIT_MIN_POINTS measurements. With fewer, the curve of a
fitted precision of the same runtime (or the spec estimate) is scaled to match them; with none, a
fitted precision's curve is scaled by the spec ratio between precisions ("derived": no measurement
of its own behind it); with no measurement at all the profile's hardware facts give an "estimate
from specs": FLOPs / (peak GFLOP/s x SPEC_EFFICIENCY[precision] x threads/cores) plus fixed costs,
good to a factor of two, not to 10 %. `leave_one_out` refits without each measurement in turn and
reports how well it is predicted. The statistic modelled and validated is the one budgets are
checked against (`profiles.BUDGET_PERCENTILE`). Latency does not scale across thread counts
predictably (int8 at batch 1 is no faster on a second core, a batch of 32 nearly twice as fast), so
there is one model per thread count measured (`calibrate_threads`), each fitted to that count's
measurements alone; a measurement at a count the profile does not compare (`Profile.thread_counts`)
or with another spin-wait setting is refused.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgebert.bench import RESULT_VERSION, ParallelRun, ThreadChoice
from edgebert.errors import EdgebertError
from edgebert.layout import FAMILIES
from edgebert.manifests import SliceManifest, read_json
from edgebert.profiles import BUDGET_PERCENTILE, Profile
from edgebert.runtimes import RUNTIMES, SPIN_CONFIG_KEY
from edgebert.subnet import FFN_MATRICES, Architecture, Subnetwork, layer_flops

FIT_MIN_POINTS = 3
# Spec estimate: share of the fp32 peak a runtime reaches on BERT-sized GEMMs, by precision (int8 kernels
# do twice the work per instruction; fp16 on CPUs without fp16 arithmetic is converted, not faster).
SPEC_EFFICIENCY = {"fp32": 0.4, "fp16": 0.4, "int8": 0.8}
SPEC_ATTENTION_EFFICIENCY = 0.15  # small batched matmuls with softmax in between
SPEC_FIXED_MS = 0.5
SPEC_LAYER_MS = 0.1
# fp32 FLOP per cycle and core by the widest SIMD a detected CPU reports: two FMA pipes of its width.
SPEC_FLOP_PER_CYCLE = {"avx512f": 64, "avx2": 32, "avx": 16, "asimd": 16, "neon": 16}
SPEC_FLOP_PER_CYCLE_UNKNOWN = 8
SPEC_UNKNOWN_GFLOPS = 20.0  # per core when neither peak nor clock is known
WITHIN = 0.10  # the +-10 % bar (nn-Meter) leave-one-out reports against
# `pick` warns before recommending when fewer held-out measurements than this land within WITHIN: the worked
# example's 2-core VM gave 17 % (p95 is noisy on a shared machine), the benchmark suite's medians 100 %.
LOO_WARN_BELOW = 0.8


@dataclass(frozen=True)
class Shape:
    """What latency depends on: the kept encoder's dimensions and the input's batch and length."""

    hidden: int
    heads: int  # kept heads
    inner: int  # kept heads x head size
    ffn: int
    layers: int
    batch: int
    seq_len: int
    ffn_matrices: int = 2  # D x F matrices of each FFN (`subnet.FFN_MATRICES`: GeGLU's 3)

    @classmethod
    def of(cls, arch: Architecture, sub: Subnetwork, batch: int, seq_len: int) -> Shape:
        inner = sub.heads * arch.head_size
        layers = len(sub.layers)
        return cls(arch.hidden_size, sub.heads, inner, sub.ffn_neurons, layers, batch, seq_len, arch.ffn_matrices)

    def features(self) -> list[float]:
        """[1, projection GFLOPs, attention GFLOPs, layers]: the model's four terms."""
        projections, attention = layer_flops(self.hidden, self.inner, self.ffn, self.seq_len, self.ffn_matrices)
        scale = self.batch * self.layers / 1e9
        return [1.0, projections * scale, attention * scale, float(self.layers)]


@dataclass(frozen=True)
class Measurement:
    """One benchmarked configuration, as `edgebert bench` recorded it."""

    width: float
    depth: float
    precision: str
    runtime: str
    shape: Shape
    latency_ms: float
    size_bytes: int | None = None
    profile: str | None = None
    threads: int | None = None
    spin_wait: bool | None = None  # onnxruntime's intra-op spinning; None where it does not apply
    baseline_bytes: int | None = None  # process RSS with the runtime imported, before the model loads
    footprint_bytes: int | None = None  # what loading and running the model added to it
    sequences_per_s: float | None = None  # this one session's throughput
    parallel: ParallelRun | None = None  # its cores as that many single-thread sessions at once (bench's, version 4)


def memory_from_result(memory: dict[str, Any]) -> tuple[int, int]:
    """(baseline, model footprint) of a bench result; derived from the older keys when bench did not record them."""
    baseline = memory.get("baseline_bytes", memory["rss_before_load_bytes"])
    footprint = memory.get("model_footprint_bytes")
    if footprint is None:  # the peak is the model's only when it was reset at load; else the RSS it left
        top = memory["peak_rss_bytes"] if memory.get("peak_counts_from_load") else memory["rss_after_runs_bytes"]
        footprint = max(0, top - baseline)
    return int(baseline), int(footprint)


def spin_wait_of(result: dict[str, Any]) -> bool | None:
    """Whether ORT's workers spun in a bench result (its session config says); None for other runtimes."""
    config = result["environment"].get("session_config")
    if result["environment"]["runtime"] != "onnxruntime" or not isinstance(config, dict):
        return None
    return config.get(SPIN_CONFIG_KEY) != "0"


def result_version(result: Any, source: str) -> int:
    """A bench result's layout (`bench.RESULT_VERSION`; none recorded is version 1), refused if this edgebert
    cannot read it."""
    version = result.get("result_version", 1) if isinstance(result, dict) else 1
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= RESULT_VERSION:
        newer = isinstance(version, int) and not isinstance(version, bool) and version > RESULT_VERSION
        raise EdgebertError(
            f"{source}: bench result_version {repr(version)[:20]} "
            + (
                f"is newer than this edgebert reads (1 to {RESULT_VERSION}): upgrade edgebert"
                if newer
                else f"is not a version edgebert wrote (1 to {RESULT_VERSION}); re-run `edgebert bench`"
            )
        )
    return version


def measurements_from_result(result: dict[str, Any], source: str = "result") -> list[Measurement]:
    """Read a bench result dict, one measurement per thread count it timed (`bench.ThreadChoice`; results before
    version 3 timed one), the parallel sessions (version 4) on the profile's count's; it must come from an edgebert
    export (its manifest gives the shape)."""
    version = result_version(result, source)
    if isinstance(result, dict) and (result.get("inputs") or {}).get("batches", 1) != 1:
        raise EdgebertError(
            f"{source}: measured on `--text` batches of several lengths, which no one shape describes; "
            "calibrate with results of `edgebert bench` without --text"
        )
    try:
        baseline, footprint = memory_from_result(result["memory"])
        manifest = SliceManifest.model_validate(result["manifest"])  # the slice's own schema, as in its sidecar
        shape = Shape(
            manifest.hidden_size,
            manifest.heads_kept,
            manifest.heads_kept * manifest.original.head_size,
            manifest.ffn_neurons_kept,
            len(manifest.layers_kept),
            result["inputs"]["batch_size"],
            result["inputs"]["seq_len"],
            FFN_MATRICES[FAMILIES[manifest.source.model_type].layers],
        )
        parallel = None
        if version >= 3:
            block = result["threads"]
            if version == 3:  # before the parallel sessions
                block = {**block, "parallel": None, "for_throughput": None}
            choice = ThreadChoice.model_validate(block)
            runs = {run.threads: (run.latency_ms[BUDGET_PERCENTILE], run.throughput) for run in choice.compared}
            memory_from, parallel = choice.memory_from, choice.parallel
        else:
            memory_from = result["settings"]["threads"]
            runs = {memory_from: (result["latency_ms"][BUDGET_PERCENTILE], result["throughput"])}
        measurements = [
            Measurement(
                width=manifest.width,
                depth=manifest.depth,
                precision=result["artifact"]["precision"],
                runtime=result["environment"]["runtime"],
                shape=shape,
                latency_ms=latency,
                size_bytes=result["artifact"]["size_bytes"],
                profile=(result.get("profile") or {}).get("name"),
                threads=threads,
                spin_wait=spin_wait_of(result),
                # memory is of one session's (the others reused what it freed): on its measurement alone
                baseline_bytes=baseline if threads == memory_from else None,
                footprint_bytes=footprint if threads == memory_from else None,
                sequences_per_s=rates.get("sequences_per_s"),
                parallel=parallel if parallel is not None and threads == parallel.sessions else None,
            )
            for threads, (latency, rates) in runs.items()
        ]
    except (KeyError, TypeError, AttributeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        problem = f"missing {exc}" if isinstance(exc, KeyError) else "a field of the wrong type"
        raise EdgebertError(
            f"{source}: not a bench result of an edgebert export ({problem}); "
            "produce it with `edgebert bench ARTIFACT --out FILE` on an exported artifact"
        ) from exc
    for measurement in measurements:
        _check_values(measurement, source)
    return measurements


def _check_values(m: Measurement, source: str) -> None:
    """Numbers a fit would swallow silently (zero, negative, NaN, a string) are refused with one line."""

    def positive(value: Any, integral: bool) -> bool:
        kinds = (int,) if integral else (int, float)
        return isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value) and value > 0

    problems = [f"shape.{name}" for name, value in vars(m.shape).items() if not positive(value, True)]
    problems += [
        name for name in ("width", "depth") if not (positive(getattr(m, name), False) and getattr(m, name) <= 1)
    ]
    problems += ["latency_ms"] * (not positive(m.latency_ms, False))
    problems += ["sequences_per_s"] * (m.sequences_per_s is not None and not positive(m.sequences_per_s, False))
    problems += [name for name in ("size_bytes", "threads") if not positive(getattr(m, name), True)]
    problems += [
        name
        for name in ("baseline_bytes", "footprint_bytes")
        if getattr(m, name) is not None and not positive(getattr(m, name) + 1, True)
    ]
    problems += ["precision"] * (m.precision not in SPEC_EFFICIENCY)
    problems += ["runtime"] * (m.runtime not in RUNTIMES)
    if problems:
        raise EdgebertError(f"{source}: bench result with invalid {', '.join(problems)}; re-run `edgebert bench`")


def load_calibration(paths: list[Path], profile: Profile) -> list[Measurement]:
    """Bench results (`edgebert bench --out` files: a JSON list, or one result) measured under `profile`."""
    measurements = []
    for path in paths:
        data = read_json(Path(path))
        for index, result in enumerate(data if isinstance(data, list) else [data]):
            read = measurements_from_result(result, f"{path}[{index}]")
            if read[0].profile != profile.name:
                raise EdgebertError(
                    f"{path}[{index}] was measured under profile {read[0].profile!r}, not {profile.name!r}"
                )
            measurements += read
    for measurement in measurements:
        check_settings(measurement, profile)
    return measurements


def check_settings(measurement: Measurement, profile: Profile) -> None:
    """Refuse a measurement at a thread count `profile` does not compare, or with other spin-waiting: a curve
    fitted to it would lie."""
    name = f"width {measurement.width:g} depth {measurement.depth:g} {measurement.precision}"
    if measurement.threads is not None and measurement.threads not in profile.thread_counts:
        counts = " and ".join(map(str, profile.thread_counts))
        raise EdgebertError(
            f"the {name} result was measured with {measurement.threads} thread(s), profile {profile.name} compares "
            f"{counts}: bench with --profile {profile.name}, or use a profile with that thread count"
        )
    if (
        measurement.spin_wait is not None
        and measurement.runtime == "onnxruntime"
        and measurement.spin_wait != profile.spin_wait
    ):
        raise EdgebertError(
            f"the {name} result was measured with spin_wait {str(measurement.spin_wait).lower()}, profile "
            f"{profile.name} has spin_wait {str(profile.spin_wait).lower()}: bench under the same setting"
        )


# ---- fitting ------------------------------------------------------------------------------------


def nnls(rows: list[list[float]], targets: list[float], max_terms: int) -> list[float]:
    """Non-negative least squares on relative error, by trying every subset of at most `max_terms` terms."""
    import numpy as np

    a = np.asarray(rows) / np.asarray(targets)[:, None]  # row i / y_i: minimise sum((pred_i - y_i) / y_i)^2
    b = np.ones(len(targets))
    best, best_residual = np.zeros(a.shape[1]), math.inf
    for size in range(1, max_terms + 1):
        for subset in itertools.combinations(range(a.shape[1]), size):
            coef, *_ = np.linalg.lstsq(a[:, subset], b, rcond=None)
            if np.any(coef < 0):
                continue
            residual = float(np.sum((a[:, subset] @ coef - b) ** 2))
            if residual < best_residual - 1e-12:
                best, best_residual = np.zeros(a.shape[1]), residual
                best[list(subset)] = coef
    return best.tolist()


def spec_coefficients(profile: Profile, precision: str) -> tuple[list[float], str]:
    """Coefficients from the profile's hardware facts alone, and a note on where the peak came from."""
    hardware = profile.hardware
    share = min(profile.threads, hardware.cores) / hardware.cores
    if hardware.peak_gflops_fp32:
        peak, note = hardware.peak_gflops_fp32, f"peak {hardware.peak_gflops_fp32:g} GFLOP/s"
    elif hardware.clock_ghz:
        simd = next((flag for flag in SPEC_FLOP_PER_CYCLE if flag in (hardware.simd or [])), None)
        per_cycle = SPEC_FLOP_PER_CYCLE.get(simd, SPEC_FLOP_PER_CYCLE_UNKNOWN)
        peak = hardware.cores * hardware.clock_ghz * per_cycle
        note = (
            f"peak assumed {hardware.cores} cores x {hardware.clock_ghz:g} GHz x {per_cycle} FLOP/cycle "
            f"({simd or 'SIMD unknown'})"
        )
    else:
        peak = hardware.cores * SPEC_UNKNOWN_GFLOPS
        note = f"peak unknown, assumed {SPEC_UNKNOWN_GFLOPS:g} GFLOP/s per core"
    rate = peak * share  # GFLOP/s -> ms per GFLOP is 1000 / rate
    coefficients = [
        SPEC_FIXED_MS,
        1000 / (rate * SPEC_EFFICIENCY[precision]),
        1000 / (rate * SPEC_ATTENTION_EFFICIENCY),
        SPEC_LAYER_MS,
    ]
    return coefficients, note


@dataclass
class Curve:
    """The latency model of one (runtime, precision): coefficients and how they were obtained."""

    coefficients: list[float]
    basis: str  # "fit", "scaled", "derived" or "spec"
    points: int  # measurements of this (runtime, precision) behind the curve
    note: str

    def predict(self, shape: Shape) -> float:
        return sum(c * x for c, x in zip(self.coefficients, shape.features(), strict=True))

    @property
    def label(self) -> str:
        """How a prediction is labelled in `pick`'s output: by the points behind the curve."""
        return CURVE_LABELS[self.basis]


CURVE_LABELS = {
    "fit": "predicted",  # fitted to this precision's own measurements
    "scaled": "predicted",  # another curve scaled to this precision's own measurements
    "derived": "derived",  # another precision's fit at the spec ratio: no measurement of its own
    "spec": "estimate from specs",
}


@dataclass
class LatencyModel:
    """Per-(runtime, precision) curves for one profile; `predict` answers for any shape."""

    profile: Profile
    curves: dict[tuple[str, str], Curve]

    def curve(self, precision: str, runtime: str | None = None) -> Curve:
        return self.curves[(runtime or self.profile.runtime, precision)]

    def predict(self, shape: Shape, precision: str, runtime: str | None = None) -> float:
        return self.curve(precision, runtime).predict(shape)

    def describe(self) -> dict[str, dict[str, Any]]:
        """Each curve by `runtime/precision/threads=N` (one model per thread count: `calibrate_threads`)."""
        return {
            f"{runtime}/{precision}/threads={self.profile.threads}": {
                "threads": self.profile.threads,
                "basis": curve.basis,
                "points": curve.points,
                "note": curve.note,
                "coefficients": dict(
                    zip(
                        ("fixed_ms", "ms_per_proj_gflop", "ms_per_attn_gflop", "ms_per_layer"),
                        curve.coefficients,
                        strict=True,
                    )
                ),
            }
            for (runtime, precision), curve in sorted(self.curves.items())
        }


def calibrate(profile: Profile, measurements: list[Measurement], precisions: tuple[str, ...]) -> LatencyModel:
    """Fit a curve for every (runtime, precision) measured, and for each of `precisions` on the profile's runtime."""
    groups: dict[tuple[str, str], list[Measurement]] = {}
    for m in measurements:
        check_settings(m, profile)
        groups.setdefault((m.runtime, m.precision), []).append(m)
    keys = set(groups) | {(profile.runtime, precision) for precision in precisions}
    curves: dict[tuple[str, str], Curve] = {}
    for key in keys:  # first the precisions with enough points for their own fit
        points = groups.get(key, [])
        if len(points) >= FIT_MIN_POINTS:
            coefficients = nnls([m.shape.features() for m in points], [m.latency_ms for m in points], len(points) - 1)
            curves[key] = Curve(coefficients, "fit", len(points), f"NNLS on {len(points)} measurements")
    for key in keys - set(curves):
        runtime, precision = key
        points = groups.get(key, [])
        fitted = sorted(k for k in curves if k[0] == runtime and curves[k].basis == "fit")
        spec, spec_note = spec_coefficients(profile, precision)
        if fitted:  # borrow the shape of a fitted precision, at the spec ratio between precisions
            base_key = next((k for k in fitted if k[1] == "fp32"), fitted[0])
            ratio = SPEC_EFFICIENCY[base_key[1]] / SPEC_EFFICIENCY[precision]
            base = Curve(
                [c * ratio for c in curves[base_key].coefficients],
                "derived",
                0,
                f"{base_key[1]} fit x spec ratio {ratio:g}",
            )
        else:
            base = Curve(spec, "spec", 0, spec_note)
        if points:
            factor = sum(m.latency_ms / base.predict(m.shape) for m in points) / len(points)
            curves[key] = Curve(
                [c * factor for c in base.coefficients],
                "scaled",
                len(points),
                f"{base.note}, scaled x{factor:.3g} to {len(points)} measurement(s)",
            )
        else:
            curves[key] = base
    return LatencyModel(profile, curves)


def threads_of(measurement: Measurement, profile: Profile) -> int:
    """The thread count a measurement was taken at; one that does not say is taken at the profile's."""
    return measurement.threads or profile.threads


def calibrate_threads(
    profile: Profile, measurements: list[Measurement], precisions: tuple[str, ...]
) -> dict[int, LatencyModel]:
    """One latency model per thread count measured, each calibrated on that count's measurements alone; without
    measurements, the profile's count alone (from its specs)."""
    by_count: dict[int, list[Measurement]] = {}
    for m in measurements:
        by_count.setdefault(threads_of(m, profile), []).append(m)
    counts = sorted(by_count) or [profile.threads]
    return {count: calibrate(profile.at_threads(count), by_count.get(count, []), precisions) for count in counts}


def leave_one_out(profile: Profile, measurements: list[Measurement]) -> dict[str, Any]:
    """Predict each measurement from a model calibrated on all the others at its thread count; report the errors."""
    rows = []
    for index, held_out in enumerate(measurements):
        threads = threads_of(held_out, profile)
        others = [m for m in measurements[:index] + measurements[index + 1 :] if threads_of(m, profile) == threads]
        model = calibrate(profile.at_threads(threads), others, (held_out.precision,))
        curve = model.curve(held_out.precision, held_out.runtime)
        predicted = curve.predict(held_out.shape)
        rows.append(
            {
                "width": held_out.width,
                "depth": held_out.depth,
                "precision": held_out.precision,
                "runtime": held_out.runtime,
                "threads": threads,
                "measured_ms": held_out.latency_ms,
                "predicted_ms": predicted,
                "relative_error": predicted / held_out.latency_ms - 1,
                "basis": curve.basis,
            }
        )
    errors = [abs(row["relative_error"]) for row in rows]
    return {
        "statistic": BUDGET_PERCENTILE,
        "configurations": len(rows),
        "within_10_percent": sum(e <= WITHIN for e in errors) / len(errors) if errors else None,
        "worst_relative_error": max(errors) if errors else None,
        "rows": rows,
    }


def leave_one_out_warning(loo: dict[str, Any] | None) -> str | None:
    """A warning when held-out measurements are predicted poorly: the latency figures are then rough."""
    if not loo or loo["within_10_percent"] is None or loo["within_10_percent"] >= LOO_WARN_BELOW:
        return None
    return (
        f"the latency model predicts its own measurements poorly (leave-one-out, {loo['statistic']}: "
        f"{loo['within_10_percent']:.0%} within +-10 %, worst error {loo['worst_relative_error']:.0%}): "
        "treat predicted latencies as rough and bench the choice on the device before relying on the budget"
    )
