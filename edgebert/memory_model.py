"""The memory a sub-network needs on a device: the model's own footprint and the runtime's baseline, apart.

A budget is compared with the model's footprint by default: what loading and running the artifact
adds to a process that already has the runtime imported (bench's `model_footprint_bytes`, as
TFLite's benchmark_model reports init and overall footprint). The runtime baseline (Python,
numpy, edgebert, the runtime's import: bench's `baseline_bytes`) depends on the device's Python
install, not on the model; it is reported beside the footprint and counted only when the user
budgets the process total. Both come from `bench` results when there are any for the profile: the
baseline is their median, the footprint of a (runtime, precision) a non-negative fit of
fixed + per artifact byte + per activation byte (the latency model's NNLS) once FIT_MIN_POINTS are
measured, the estimate scaled to fewer, and the estimate below ("estimated") with none.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from edgebert.latency_model import FIT_MIN_POINTS, Measurement, Shape, nnls

# Process RSS with the runtime imported, before any model loads (bench's `rss_before_load_bytes`). Measured on
# x86-64 Linux, Python 3.11, onnxruntime 1.2x: 67 MB in the dev venv; a fresh CI venv's imports took 15 MB more
# (commit bff5974), so the estimate is 82 MB. LiteRT's import is unmeasured: assumed 10 MB less than ORT's.
RUNTIME_BASELINE_BYTES = {"onnxruntime": 82_000_000, "litert": 72_000_000}
# What a session costs before any weight: ORT's thread pools, allocator arenas and graph structures. Measured on
# x86-64 Linux, 2 threads: a 0.27 MB and a 1.15 MB artifact of a hidden-48 model added 21 and 25 MB of peak RSS.
SESSION_FIXED_BYTES = 25_000_000
# Peak RSS growth per artifact byte: ORT holds the graph's initializers and its own prepacked or converted copies
# of the weights. Measured on the demo model at (0.5, 0.5), x86-64: 1.46x at fp32, 2.0x at fp16, 1.67x at int8;
# set ~15 % above. LiteRT maps the file and XNNPACK packs the weights once: DEFAULT_LOAD_FACTOR, unmeasured.
LOAD_FACTOR = {("onnxruntime", "fp32"): 1.7, ("onnxruntime", "fp16"): 2.3, ("onnxruntime", "int8"): 1.9}
DEFAULT_LOAD_FACTOR = 2.0


def activation_bytes(shape: Shape) -> int:
    """fp32 bytes of every intermediate tensor of one encoder layer alive at once (an upper bound of the arena).

    Derived, not measured: per token 4 hidden-sized tensors (input, attention output, residual sum,
    LayerNorm output), 4 of the kept inner size (Q, K, V, context) and 2 FFN-sized (before and after
    GELU); per head, scores and probabilities (seq x seq each).
    """
    per_sequence = (
        shape.seq_len * (4 * shape.hidden + 4 * shape.inner + 2 * shape.ffn) + 2 * shape.heads * shape.seq_len**2
    )
    return 4 * shape.batch * per_sequence


def estimated_footprint(runtime: str, precision: str, shape: Shape, size_bytes: int) -> float:
    """The footprint from the constants above: session + artifact bytes as loaded + the activation arena."""
    factor = LOAD_FACTOR.get((runtime, precision), DEFAULT_LOAD_FACTOR)
    return SESSION_FIXED_BYTES + factor * size_bytes + activation_bytes(shape)


def _features(shape: Shape, size_bytes: int) -> list[float]:
    return [1.0, float(size_bytes), float(activation_bytes(shape))]


@dataclass(frozen=True)
class FootprintCurve:
    """How one (runtime, precision)'s footprint is obtained: fitted, scaled estimate, or estimate."""

    runtime: str
    precision: str
    coefficients: list[float] | None  # [fixed, per artifact byte, per activation byte] when fitted
    scale: float  # applied to the estimate when not fitted
    basis: str  # "fit", "scaled" or "estimate"
    points: int

    def predict(self, shape: Shape, size_bytes: int) -> float:
        if self.coefficients is not None:
            return sum(c * x for c, x in zip(self.coefficients, _features(shape, size_bytes), strict=True))
        return self.scale * estimated_footprint(self.runtime, self.precision, shape, size_bytes)

    @property
    def label(self) -> str:
        """'predicted' when bench results of this precision are behind it, else 'estimated'."""
        return "estimated" if self.basis == "estimate" else "predicted"


@dataclass(frozen=True)
class MemoryModel:
    """The runtime baseline and per-(runtime, precision) footprint curves of one profile."""

    baseline_bytes: int
    baseline_source: str  # "measured" (median of bench results) or "estimated"
    curves: dict[tuple[str, str], FootprintCurve]

    def footprint(self, runtime: str, precision: str, shape: Shape, size_bytes: int) -> tuple[int, str]:
        curve = self.curves.get((runtime, precision)) or FootprintCurve(runtime, precision, None, 1.0, "estimate", 0)
        return int(curve.predict(shape, size_bytes)), curve.label

    def describe(self) -> dict:
        return {
            "baseline_bytes": self.baseline_bytes,
            "baseline_source": self.baseline_source,
            "footprint": {
                f"{runtime}/{precision}": {"basis": curve.basis, "points": curve.points, "scale": curve.scale}
                | ({"coefficients": curve.coefficients} if curve.coefficients else {})
                for (runtime, precision), curve in sorted(self.curves.items())
            },
        }


def calibrate_memory(runtime: str, measurements: list[Measurement]) -> MemoryModel:
    """Baseline and footprint curves from bench results (those that recorded memory); estimates otherwise."""
    with_memory = [m for m in measurements if m.footprint_bytes is not None and m.size_bytes]
    baselines = [m.baseline_bytes for m in with_memory if m.runtime == runtime and m.baseline_bytes]
    if baselines:
        baseline, source = int(statistics.median(baselines)), "measured"
    else:
        baseline, source = RUNTIME_BASELINE_BYTES[runtime], "estimated"
    groups: dict[tuple[str, str], list[Measurement]] = {}
    for m in with_memory:
        groups.setdefault((m.runtime, m.precision), []).append(m)
    curves = {}
    for (rt, precision), points in groups.items():
        if len(points) >= FIT_MIN_POINTS:
            rows = [_features(m.shape, m.size_bytes) for m in points]
            coefficients = nnls(rows, [max(m.footprint_bytes, 1) for m in points], len(points) - 1)
            curves[(rt, precision)] = FootprintCurve(rt, precision, coefficients, 1.0, "fit", len(points))
        else:
            ratios = [m.footprint_bytes / estimated_footprint(rt, precision, m.shape, m.size_bytes) for m in points]
            curves[(rt, precision)] = FootprintCurve(
                rt, precision, None, statistics.mean(ratios), "scaled", len(points)
            )
    return MemoryModel(baseline, source, curves)
