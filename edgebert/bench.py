"""Benchmark an exported artifact the way it will run on a device: its own runtime, the profile's threads.

Torch-free on purpose: a device has numpy and one runtime (onnxruntime or ai-edge-litert), both
imported lazily so a missing one gives the `pip install` line. The timed loop does nothing but
read the clock around the runtime call, so its numbers match a bare loop (`bare_loop`, which the
benchmark suite runs next to `bench_artifact` to prove it). Everything that can make numbers
lie (a busy machine, a wide spread, a missing XNNPACK delegate, an untrained model) becomes a
warning in the result instead of being left out.
"""

from __future__ import annotations

import functools
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgebert import __version__
from edgebert.atomic import append_json_list
from edgebert.errors import EdgebertError, require
from edgebert.manifests import read_json
from edgebert.profiles import MAX_RUNS, Profile, RunSettings, detect_hardware, usable_cores

RUNTIME_FOR_SUFFIX = {".onnx": "onnxruntime", ".tflite": "litert"}
# Busy-machine warnings: 1-minute load average per usable core before the run, p99/p50, and std/mean.
BUSY_LOAD_PER_CORE = 0.5
BUSY_TAIL_RATIO = 1.5
BUSY_CV = 0.10
# Which latency the profile's latency budget is checked against.
BUDGET_PERCENTILE = "p95"
# Which memory figure a profile's memory budget limits (Profile.memory_budget_scope).
MEMORY_CHECKED = {"model": "model_footprint_bytes", "process": "peak_rss_bytes"}
# BERT/RoBERTa vocabularies keep special and rare tokens below ~1000; random ids start above them.
FIRST_REGULAR_ID = 1000
UNKNOWN_VOCAB_IDS = (1000, 2000)  # without a sidecar: ids every real BERT-like vocabulary has
# A sidecar's `runtime.graph_optimization_level` (short name or enum name); without one: ORT_ENABLE_ALL.
ORT_OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
# numpy's names for ORT tensor types where they differ ('tensor(float)' is float32).
ORT_DTYPES = {"float": "float32", "double": "float64"}
# --text: how much of the file is read, and how many input positions (all batches) are built from it.
# 64 Ki positions of 3-4 int64 inputs are at most 2 MB, which counts toward the model's footprint.
MAX_TEXT_BYTES = 1 << 20
MAX_TEXT_TOKENS = 1 << 16
PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99}
# ORT's intra-op workers spin-wait between parallel sections unless told not to (the profile's
# `spin_wait`). Measured here, 2 threads, (0.25, 0.5) fp32 slice vs the full model
# (benchmarks/README.md): on an idle machine spinning is faster (8.0 vs 9.2 ms; 0.94 vs 0.84 of the
# FLOPs ratio); with other load on the cores the spinning worker is preempted and every parallel
# section stalls (30 vs 15.6 ms, full model 205 vs 134 ms). Devices run one app: spin by default.
SPIN_CONFIG_KEY = "session.intra_op.allow_spinning"


@dataclass
class InputSpec:
    """One model input as the runtime declares it; None in `shape` marks a dynamic axis."""

    name: str
    dtype: str
    shape: list[int | None]


@dataclass
class Session:
    """A loaded model: the runtime object, its inputs, and how to bind inputs into a zero-argument call."""

    runtime: str
    version: str
    handle: Any  # onnxruntime.InferenceSession or a LiteRT SignatureRunner
    inputs: list[InputSpec]
    details: dict[str, Any] = field(default_factory=dict)

    def bind(self, feeds: dict) -> Callable[[], Any]:
        """The exact call the timed loop makes: a C-level partial, no Python frame of ours in between."""
        if self.runtime == "onnxruntime":
            return functools.partial(self.handle.run, None, feeds)
        return functools.partial(self.handle, **feeds)


def bench_artifact(
    artifact: Path,
    profile: Profile,
    runs: int | None = None,
    warmup: int | None = None,
    threads: int | None = None,
    batch_size: int | None = None,
    seq_len: int | None = None,
    min_time_s: float | None = None,
    text_file: Path | None = None,
    tokenizer_dir: Path | None = None,
    session_config: dict[str, str] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Load, warm up and time one artifact under a profile; arguments left None come from the profile.

    Returns a JSON-ready dict: latencies in ms, throughput, memory in bytes, environment and warnings.
    `session_config` adds onnxruntime session config entries (the profile's `spin_wait` sets spinning).
    With `text_file`, every line runs at its real length (padded to the batch's longest row, or to
    the model's fixed length), the batches cycling over the runs.
    """
    artifact = Path(artifact)
    sidecar = read_sidecar(artifact)
    runtime = RUNTIME_FOR_SUFFIX[artifact.suffix]
    settings = profile.run_settings(
        threads=threads, runs=runs, warmup_runs=warmup, batch_size=batch_size, seq_len=seq_len, min_time_s=min_time_s
    )
    warnings: list[str] = []
    if runtime != profile.runtime and not profile.is_local:  # `local` has no runtime of its own
        warnings.append(f"profile {profile.name} runs {profile.runtime}, but {artifact.name} needs {runtime}")
    if settings.threads > usable_cores():
        warnings.append(
            f"{settings.threads} threads on {usable_cores()} usable cores: threads compete, latency is inflated"
        )
    if (sidecar.get("manifest") or {}).get("untrained"):
        warnings.append(sidecar["manifest"]["untrained"])
    # Read before the baseline, so the tokenizer's library and vocabulary do not count as the model's memory.
    text = read_text(text_file, tokenizer_dir or artifact.parent, sidecar) if text_file is not None else None

    with pinned(profile.cpu_affinity):
        load_before = os.getloadavg()
        import_runtime(runtime)  # the runtime's own import is part of the baseline, not of the model
        peak_since_load = reset_peak_rss()
        baseline = rss_bytes()
        start = time.perf_counter_ns()
        session = open_session(artifact, sidecar, settings.threads, ort_config(profile, session_config))
        load_ns = time.perf_counter_ns() - start
        rss_loaded = rss_bytes()
        batches, input_info = input_batches(session, sidecar, profile, settings, text, seed, warnings, artifact)
        calls = [session.bind(batch.feeds) for batch in batches]
        with inference_failures(artifact, guessed=not sidecar):
            start = time.perf_counter_ns()
            calls[0]()
            first_ns = time.perf_counter_ns() - start
            for i in range(settings.warmup_runs):
                calls[i % len(calls)]()
            samples = time_runs(calls, settings.runs, settings.min_time_s)
        rss_after = rss_bytes()
        peak = peak_rss_bytes()
        load_after = os.getloadavg()

    latency = latency_stats(samples)
    if session.details.get("xnnpack") is False:
        warnings.append("the XNNPACK delegate is not active: LiteRT on CPU is ~9x slower without it")
    warnings += busy_warnings(load_before[0], latency)
    baseline_of = f"the process with {runtime} imported" + (" and the tokenizer loaded" if text else "")
    memory = memory_block(baseline, rss_loaded, rss_after, peak, peak_since_load, baseline_of)
    hardware = detect_hardware()
    result = {
        "edgebert_version": __version__,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "artifact": {
            "path": str(artifact),
            "format": artifact.suffix[1:],
            "precision": sidecar.get("precision"),
            "size_bytes": artifact.stat().st_size,
            "sidecar": bool(sidecar),
        },
        "profile": profile.model_dump(),  # results stay self-contained, even for a user's profile file
        "settings": {
            "threads": settings.threads,
            "warmup_runs": settings.warmup_runs,
            "runs": len(samples),
            "min_time_s": settings.min_time_s,
            "cpu_affinity": profile.cpu_affinity,
            "seed": seed,
        },
        "inputs": input_info,
        "load_ms": load_ns / 1e6,
        "first_inference_ms": first_ns / 1e6,
        "latency_ms": latency,
        "throughput": throughput(batches, samples),
        "memory": memory,
        "budgets": budgets(profile, latency, memory),
        "environment": {
            "runtime": session.runtime,
            "runtime_version": session.version,
            **session.details,
            "threads": settings.threads,
            "cpu": hardware.cpu,
            "cores": hardware.cores,
            "usable_cores": usable_cores(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_avg_before": [round(x, 2) for x in load_before],
            "load_avg_after": [round(x, 2) for x in load_after],
        },
        "manifest": sidecar.get("manifest"),
        "warnings": warnings,
    }
    return result


def append_result(path: Path, result: dict[str, Any]) -> None:
    """Append to a JSON list file: serialised with other writers, one atomic replace, nothing lost."""
    append_json_list(Path(path), result)


def bare_loop(
    artifact: Path,
    profile: Profile,
    runs: int,
    warmup: int = 10,
    threads: int | None = None,
    batch_size: int | None = None,
    seq_len: int | None = None,
) -> list[float]:
    """Latencies (ms) of the plainest possible loop: same session options and inputs as `bench_artifact`.

    The benchmark suite compares its median with bench's p50 to show the harness adds nothing.
    """
    artifact = Path(artifact)
    sidecar = read_sidecar(artifact)
    settings = profile.run_settings(threads=threads, runs=runs, warmup_runs=warmup)
    runs, warmup = settings.runs, settings.warmup_runs
    session = open_session(artifact, sidecar, settings.threads, ort_config(profile))
    feeds, _ = make_feeds(session, sidecar, profile, batch_size, seq_len, None, None, 0, [], artifact)
    latencies = []
    if session.runtime == "onnxruntime":
        run = session.handle.run
        for i in range(warmup + runs):
            start = time.perf_counter()
            run(None, feeds)
            if i >= warmup:
                latencies.append((time.perf_counter() - start) * 1e3)
    else:
        runner = session.handle
        for i in range(warmup + runs):
            start = time.perf_counter()
            runner(**feeds)
            if i >= warmup:
                latencies.append((time.perf_counter() - start) * 1e3)
    return latencies


def time_runs(calls: Sequence[Callable[[], Any]], runs: int, min_time_s: float = 0.0) -> list[int]:
    """Nanoseconds per call, cycling through `calls`: `runs` calls, then more until `min_time_s` has passed.

    At most MAX_RUNS samples. The sample list is allocated up front and the next call is picked
    before the clock starts, so only the clock reads surround the runtime call.
    """
    clock = time.perf_counter_ns
    count = len(calls)
    samples = [0] * runs
    deadline = clock() + int(min_time_s * 1e9)
    for i in range(runs):
        call = calls[i % count]
        start = clock()
        call()
        samples[i] = clock() - start
    while clock() < deadline and len(samples) < MAX_RUNS:
        call = calls[len(samples) % count]
        start = clock()
        call()
        samples.append(clock() - start)
    return samples


def throughput(batches: list[Batch], samples_ns: list[int]) -> dict[str, float]:
    """Sequences and tokens per second over the timed runs; run i used batch i mod len(batches), as `time_runs`."""
    seconds = sum(samples_ns) / 1e9
    used = [batches[i % len(batches)] for i in range(len(samples_ns))]
    return {
        "sequences_per_s": sum(batch.rows for batch in used) / seconds,
        "tokens_per_s": sum(batch.total_tokens for batch in used) / seconds,
        "real_tokens_per_s": sum(batch.real_tokens for batch in used) / seconds,
    }


def latency_stats(samples_ns: list[int]) -> dict[str, float]:
    import numpy as np

    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    stats = {"mean": ms.mean(), "std": ms.std(), "min": ms.min()}
    stats |= {name: np.percentile(ms, q) for name, q in PERCENTILES.items()}
    stats |= {"max": ms.max(), "cv": ms.std() / ms.mean()}
    return {name: float(value) for name, value in stats.items()}


def busy_warnings(load_before: float, latency: dict[str, float]) -> list[str]:
    """Say when numbers are noisy rather than report them as if they were clean."""
    warnings = []
    cores = usable_cores()
    if load_before > BUSY_LOAD_PER_CORE * cores:
        warnings.append(
            f"busy machine: load average {load_before:.2f} on {cores} cores before the run "
            f"(> {BUSY_LOAD_PER_CORE} per core); latencies are likely inflated"
        )
    tail = latency["p99"] / latency["p50"]
    if tail > BUSY_TAIL_RATIO:
        warnings.append(f"wide tail: p99 is {tail:.2f}x p50 (> {BUSY_TAIL_RATIO}); something else may have run")
    if latency["cv"] > BUSY_CV:
        warnings.append(f"noisy runs: std is {latency['cv']:.0%} of the mean (> {BUSY_CV:.0%}); compare p50, not mean")
    return warnings


def memory_block(
    baseline: int, loaded: int, after_runs: int, peak: int, peak_counts_from_load: bool, baseline_of: str
) -> dict[str, Any]:
    """RSS figures, and the two a budget can be about: the runtime's baseline and the model's own footprint.

    `baseline_bytes` is the process with the runtime imported, before the model loads (`baseline_of`
    says what else it holds, e.g. --text's tokenizer); the model's
    footprint is what loading and running it adds on top (TFLite's benchmark_model reports init and
    overall footprint the same way). It comes from the peak since load where the OS can reset the
    peak (Linux); elsewhere from the largest RSS sampled after load and after the runs, a lower bound.
    """
    top = peak if peak_counts_from_load else max(loaded, after_runs)
    return {
        "baseline_bytes": baseline,
        "baseline_of": baseline_of,
        "model_footprint_bytes": max(0, top - baseline),
        "footprint_from": "peak RSS since load" if peak_counts_from_load else "RSS sampled after load and runs",
        "rss_before_load_bytes": baseline,
        "rss_after_load_bytes": loaded,
        "rss_after_runs_bytes": after_runs,
        "load_growth_bytes": loaded - baseline,
        "run_growth_bytes": after_runs - loaded,
        "peak_rss_bytes": peak,
        "peak_counts_from_load": peak_counts_from_load,
    }


def budgets(profile: Profile, latency: dict[str, float], memory: dict[str, Any]) -> dict[str, Any]:
    """The profile's budgets against the measured latency percentile and the memory its scope names."""
    result: dict[str, Any] = {}
    if profile.latency_budget_ms is not None:
        result["latency_budget_ms"] = profile.latency_budget_ms
        result["latency_checked"] = BUDGET_PERCENTILE
        result["within_latency_budget"] = latency[BUDGET_PERCENTILE] <= profile.latency_budget_ms
    if profile.memory_budget_mb is not None:
        checked = MEMORY_CHECKED[profile.memory_budget_scope]
        result["memory_budget_mb"] = profile.memory_budget_mb
        result["memory_checked"] = checked
        result["within_memory_budget"] = memory[checked] <= profile.memory_budget_mb * 1e6
    return result


# ---- artifacts and runtimes ------------------------------------------------------------------------


def read_sidecar(artifact: Path) -> dict[str, Any]:
    """The export's `<artifact>.json` as a dict (schema: `edgebert.sidecar.Sidecar`), or {} without one.

    Also checks the artifact itself is usable.
    """
    if not artifact.exists():
        raise EdgebertError(f"{artifact}: no such file")
    if not artifact.is_file():
        raise EdgebertError(f"{artifact}: not a file; give an .onnx or .tflite artifact")
    if artifact.suffix not in RUNTIME_FOR_SUFFIX:
        raise EdgebertError(f"{artifact}: unknown artifact type {artifact.suffix!r}: expected .onnx or .tflite")
    from edgebert import sidecar as sidecars

    sidecar = sidecars.read_sidecar(artifact)  # validated, and checked to describe this very file
    return {} if sidecar is None else sidecar.model_dump(mode="json")


def import_runtime(runtime: str) -> Any:
    if runtime == "onnxruntime":
        return require("onnxruntime", "benchmarking an .onnx artifact")
    try:
        return require("ai_edge_litert.interpreter", "benchmarking a .tflite artifact")
    except EdgebertError as exc:
        import importlib.util

        if importlib.util.find_spec("tflite_runtime") is not None:
            raise EdgebertError(
                "only tflite-runtime is installed: it cannot run models from the current converter "
                "(unknown op versions); run `pip install 'edgebert[litert]'`"
            ) from exc
        raise


def ort_config(profile: Profile, extra: dict[str, str] | None = None) -> dict[str, str]:
    """ORT session config entries for a profile: its spin-waiting choice, then any explicit extras."""
    return {SPIN_CONFIG_KEY: "1" if profile.spin_wait else "0"} | (extra or {})


def open_session(
    artifact: Path, sidecar: dict[str, Any], threads: int, session_config: dict[str, str] | None = None
) -> Session:
    """Load the artifact in its runtime with explicit threading; a file the runtime rejects is a user error.

    Settings are checked before the runtime sees the file, so "cannot load it" only ever means the
    runtime's own refusal.
    """
    module = import_runtime(RUNTIME_FOR_SUFFIX[artifact.suffix])
    if artifact.suffix == ".onnx":
        return _open_onnx(module, artifact, sidecar, threads, session_config or {})
    return _open_tflite(module, artifact, sidecar, threads)


@contextmanager
def runtime_rejects(artifact: Path) -> Iterator[None]:
    """Wraps only the runtime's own load: its exception becomes 'cannot load it', in its words."""
    try:
        yield
    except Exception as exc:  # runtimes raise their own exception types for a bad file
        runtime = RUNTIME_FOR_SUFFIX[artifact.suffix]
        raise EdgebertError(f"{artifact}: {runtime} cannot load it, is it a valid model? ({_short(exc)})") from exc


@contextmanager
def inference_failures(artifact: Path, guessed: bool) -> Iterator[None]:
    """Wrong inputs for this model surface while running, in the runtime's words: one line, not a traceback."""
    try:
        yield
    except Exception as exc:
        hint = f"; without {artifact.name}.json the token ids were guessed from {UNKNOWN_VOCAB_IDS}" if guessed else ""
        raise EdgebertError(f"{artifact}: inference failed ({_short(exc)}){hint}") from exc


def _open_onnx(ort: Any, artifact: Path, sidecar: dict, threads: int, session_config: dict[str, str]) -> Session:
    runtime = sidecar.get("runtime") or {}
    requested = runtime.get("graph_optimization_level") or "all"
    level = ORT_OPT_LEVELS.get(requested, requested)
    if level not in ORT_OPT_LEVELS.values():
        raise EdgebertError(
            f"{artifact}.json: graph_optimization_level {requested!r} is none of {', '.join(ORT_OPT_LEVELS)}"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.log_severity_level = 4  # fatal only: failures come back as exceptions, which we report in one line
    for key, value in session_config.items():
        options.add_session_config_entry(key, value)
    # Graph fusions the exporter measured to slow this artifact down (see edgebert.export.onnx).
    disabled = list(runtime.get("disabled_optimizers") or [])
    with runtime_rejects(artifact):
        session = ort.InferenceSession(
            str(artifact), sess_options=options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled
        )
    inputs = [InputSpec(i.name, _ort_dtype(i.type), _dims(i.shape)) for i in session.get_inputs()]
    details = {
        "graph_optimization_level": level,
        "disabled_optimizers": disabled,
        "execution_mode": "sequential",
        "session_config": session_config,
    }
    return Session("onnxruntime", ort.__version__, session, inputs, details)


def _ort_dtype(declared: str) -> str:
    """numpy's name for an ORT tensor type: 'tensor(float)' -> 'float32', 'tensor(float16)' -> 'float16'."""
    name = declared.removeprefix("tensor(").removesuffix(")")
    return ORT_DTYPES.get(name, name)


def _open_tflite(litert: Any, artifact: Path, sidecar: dict, threads: int) -> Session:
    with runtime_rejects(artifact):
        interpreter = litert.Interpreter(model_path=str(artifact), num_threads=threads)
        interpreter.allocate_tensors()  # applies the default XNNPACK delegate
        signatures = interpreter.get_signature_list()
    key = sidecar.get("signature_key") or (next(iter(signatures)) if len(signatures) == 1 else None)
    if key not in signatures:
        raise EdgebertError(
            f"{artifact}: signature {key!r} not in the model (has {sorted(signatures) or 'none'}); "
            "the sidecar's signature_key must name one"
        )
    runner = interpreter.get_signature_runner(key)
    inputs = [
        InputSpec(name, detail["dtype"].__name__, _dims(detail["shape_signature"].tolist()))
        for name, detail in runner.get_input_details().items()
    ]
    try:  # after allocate_tensors a delegated graph has an extra DELEGATE node; private, but stable for years
        xnnpack = any(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())
    except AttributeError:
        xnnpack = None
    import ai_edge_litert

    version = getattr(ai_edge_litert, "__version__", None) or _dist_version("ai-edge-litert")
    details = {"signature_key": key, "xnnpack": xnnpack}
    return Session("litert", version, runner, inputs, details)


# ---- inputs ---------------------------------------------------------------------------------------


@dataclass
class Batch:
    """One input batch: the runtime's feeds and how many of its positions are real tokens."""

    feeds: dict[str, Any]
    rows: int
    real_tokens: int
    total_tokens: int


@dataclass
class TextInput:
    """Lines of a text file and the tokenizer for them, loaded before the model (not the model's memory)."""

    path: Path
    lines: list[str]
    tokenizer: Any  # tokenizers.Tokenizer
    pad_id: int
    note: str  # what of the file was left out, or ""


def make_feeds(
    session: Session,
    sidecar: dict[str, Any],
    profile: Profile,
    batch_size: int | None,
    seq_len: int | None,
    text_file: Path | None,
    tokenizer_dir: Path | None,
    seed: int,
    warnings: list[str],
    artifact: Path,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The first batch of `input_batches` and the inputs' description, for loops that time one batch."""
    settings = profile.run_settings(batch_size=batch_size, seq_len=seq_len)
    text = read_text(text_file, tokenizer_dir or artifact.parent, sidecar) if text_file is not None else None
    batches, info = input_batches(session, sidecar, profile, settings, text, seed, warnings, artifact)
    return batches[0].feeds, info


def input_batches(
    session: Session,
    sidecar: dict[str, Any],
    profile: Profile,
    settings: RunSettings,
    text: TextInput | None,
    seed: int,
    warnings: list[str],
    artifact: Path,
) -> tuple[list[Batch], dict[str, Any]]:
    """Seeded token ids (one batch) or tokenized text (every line), shaped for the model; and their description."""
    names = [spec.name for spec in session.inputs]
    declared = [entry.get("name") for entry in sidecar.get("inputs") or []]
    if declared and sorted(declared) != sorted(names):
        raise EdgebertError(f"{artifact}: the sidecar lists inputs {declared}, the model has {names}")
    unknown = [name for name in names if _role(name) is None]
    if unknown:
        raise EdgebertError(
            f"{artifact}: cannot make inputs for {unknown}: expected input_ids, attention_mask, token_type_ids"
        )
    batch, seq, seq_fixed = _shape(session.inputs, settings, warnings)
    positions = sidecar.get("max_seq_len")
    if positions is not None and seq > positions:
        raise EdgebertError(
            f"{artifact}: sequence length {seq} exceeds the model's {positions} positions (its sidecar's max_seq_len); "
            f"use --seq-len {positions} or less"
        )
    info: dict[str, Any] = {"names": names, "dtypes": {s.name: s.dtype for s in session.inputs}, "batch_size": batch}
    if text is None:
        rows, description = _random_rows(sidecar, batch, seq, profile.padding_share, seed, warnings)
        groups = [rows]
    else:
        groups, description = _text_rows(text, batch, seq, seq_fixed)
    batches = [_batch(session.inputs, ids, mask) for ids, mask in groups]
    real, total = sum(b.real_tokens for b in batches), sum(b.total_tokens for b in batches)
    info |= {
        "seq_len": max(b.total_tokens // b.rows for b in batches),
        "source": description,
        "batches": len(batches),
        "real_tokens": real,  # over one pass through the batches
        "total_tokens": total,
        "padding_share": 1 - real / total,
    }
    return batches, info


def _batch(inputs: list[InputSpec], ids: Any, mask: Any) -> Batch:
    import numpy as np

    rows, seq = ids.shape
    values = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    values["position_ids"] = np.broadcast_to(np.arange(seq), (rows, seq))
    feeds = {spec.name: np.ascontiguousarray(values[_role(spec.name)], dtype=spec.dtype) for spec in inputs}
    return Batch(feeds, rows, int(mask.sum()), rows * seq)


def _random_rows(
    sidecar: dict[str, Any], batch: int, seq: int, padding_share: float, seed: int, warnings: list[str]
) -> tuple[tuple[Any, Any], str]:
    """Seeded ids above the special tokens, rows of lengths spread so the padding share is the profile's."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vocab = sidecar.get("vocab_size")
    pad_id = sidecar.get("pad_token_id")
    pad_id = 0 if pad_id is None else pad_id
    if vocab is None:
        low, high = UNKNOWN_VOCAB_IDS
        warnings.append(f"vocabulary size unknown (no sidecar): token ids drawn from [{low}, {high})")
    else:
        low, high = (FIRST_REGULAR_ID if vocab > 2 * FIRST_REGULAR_ID else pad_id + 1), vocab
    lengths = _row_lengths(batch, seq, padding_share, rng)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, rng.integers(low, high, size=(batch, seq)), pad_id)
    return (ids, mask), f"random ids in [{low}, {high}), seed {seed}"


def _text_rows(text: TextInput, batch: int, seq: int, seq_fixed: bool) -> tuple[list[tuple[Any, Any]], str]:
    """Every line tokenized (cut at `seq`), `batch` consecutive lines per batch, each batch padded to its
    longest row (dynamic axes) or to the model's fixed length; at most MAX_TEXT_TOKENS positions in all."""
    import numpy as np

    text.tokenizer.no_padding()
    text.tokenizer.enable_truncation(max_length=seq)
    encodings = text.tokenizer.encode_batch(text.lines)
    groups, positions, used = [], 0, 0
    for first in range(0, len(encodings), batch):
        rows = [encodings[(first + j) % len(encodings)].ids for j in range(batch)]
        width = seq if seq_fixed else max(1, *map(len, rows))
        if groups and positions + batch * width > MAX_TEXT_TOKENS:
            break
        ids = np.full((batch, width), text.pad_id, dtype=np.int64)
        mask = np.zeros((batch, width), dtype=np.int64)
        for row, tokens in enumerate(rows):
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        groups.append((ids, mask))
        positions += batch * width
        used = min(len(encodings), first + batch)
    truncated = sum(bool(e.overflowing) for e in encodings[:used])
    lines = f"{used} lines" if used == len(text.lines) else f"first {used} of {len(text.lines)} lines"
    padding = f"each padded to the model's fixed {seq} tokens" if seq_fixed else "each batch padded to its longest"
    cut = f", {truncated} cut at {seq} tokens" if truncated else ""
    return groups, f"text: {text.path} ({lines} at their real lengths{cut}, {padding}; cycled over the runs{text.note})"


def _role(name: str) -> str | None:
    for role in ("input_ids", "attention_mask", "token_type_ids", "position_ids"):
        if name == role or name.endswith(role):  # e.g. serving_default_input_ids
            return role
    return None


def _shape(inputs: list[InputSpec], settings: RunSettings, warnings: list[str]) -> tuple[int, int, bool]:
    """Batch size and length: the settings', except where the model fixes them (TFLite); the model wins.

    The third value says whether the model fixes the length (then every row is padded to it).
    """
    wanted = (settings.batch_size, settings.seq_len)
    fixed: list[int | None] = [None, None]
    for spec in inputs:
        for axis, dim in enumerate(spec.shape[:2]):
            fixed[axis] = dim if dim is not None else fixed[axis]
    batch, seq = (f if f is not None else w for f, w in zip(fixed, wanted, strict=True))
    for what, got, want in zip(("batch size", "sequence length"), (batch, seq), wanted, strict=True):
        if got != want:
            warnings.append(f"the model has a fixed {what} of {got}; using it instead of {want}")
    return batch, seq, fixed[1] is not None


def _row_lengths(batch: int, seq: int, padding_share: float, rng: Any) -> Any:
    """Real lengths spread evenly around the target so the batch's padding share is `padding_share`."""
    import numpy as np

    shortest = max(2, round(seq * (1 - 2 * padding_share)))
    lengths = np.linspace(shortest, seq, batch) if batch > 1 else np.array([seq * (1 - padding_share)])
    return rng.permutation(np.clip(np.rint(lengths), 2, seq).astype(np.int64))


def read_text(text_file: Path, tokenizer_dir: Path, sidecar: dict[str, Any]) -> TextInput:
    """The non-empty lines in the file's first MAX_TEXT_BYTES, and the model's tokenizer (checked against it)."""
    tokenizers = require("tokenizers", "--text")
    path = Path(text_file)
    if not path.is_file():
        raise EdgebertError(f"{path}: no such text file")
    try:
        with path.open("rb") as file:
            data = file.read(MAX_TEXT_BYTES + 1)
    except OSError as exc:
        raise EdgebertError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    note = ""
    if len(data) > MAX_TEXT_BYTES:  # whole lines only
        data = data[: data.rfind(b"\n", 0, MAX_TEXT_BYTES) + 1]
        note = f"; only the file's first {MAX_TEXT_BYTES >> 20} MiB read"
    try:
        lines = [line.strip() for line in data.decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise EdgebertError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    if not lines:
        raise EdgebertError(f"{path}: no text in it{note}")
    tokenizer = _load_tokenizer(tokenizers, Path(tokenizer_dir))
    vocab = sidecar.get("vocab_size")
    if vocab is not None and tokenizer.get_vocab_size() > vocab:
        raise EdgebertError(
            f"{tokenizer_dir}: the tokenizer has {tokenizer.get_vocab_size()} tokens, the model only {vocab}"
        )
    pad_id = sidecar.get("pad_token_id")
    if pad_id is None:
        pad_id = next((i for t in ("[PAD]", "<pad>") if (i := tokenizer.token_to_id(t)) is not None), 0)
    return TextInput(path, lines, tokenizer, pad_id, note)


def _load_tokenizer(tokenizers: Any, directory: Path) -> Any:
    """tokenizer.json, or a BERT vocab.txt (with tokenizer_config.json's do_lower_case); a bad file is one line."""
    config_path = directory / "tokenizer_config.json"
    try:
        if (directory / "tokenizer.json").is_file():
            return tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
        if (directory / "vocab.txt").is_file():
            config = read_json(config_path) if config_path.is_file() else {}
            lowercase = config.get("do_lower_case", True) if isinstance(config, dict) else True
            return tokenizers.BertWordPieceTokenizer(str(directory / "vocab.txt"), lowercase=bool(lowercase))
    except Exception as exc:  # the tokenizers library raises plain Exceptions for a malformed file
        raise EdgebertError(f"{directory}: cannot load its tokenizer files ({_short(exc)})") from exc
    raise EdgebertError(f"{directory}: no tokenizer.json or vocab.txt for --text; pass --tokenizer DIR")


# ---- process state ------------------------------------------------------------------------------


@contextmanager
def pinned(cores: list[int] | None) -> Iterator[None]:
    """Pin the process to the profile's cores for the run, and restore the previous affinity after."""
    if not cores:
        yield
        return
    if not hasattr(os, "sched_setaffinity"):
        raise EdgebertError("cpu_affinity is set, but this OS cannot pin a process to cores")
    previous = os.sched_getaffinity(0)
    missing = sorted(set(cores) - previous)
    if missing:
        raise EdgebertError(f"cpu_affinity names cores {missing} this process cannot use (has {sorted(previous)})")
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_bytes() -> int:
    """Current resident set size; where /proc is missing, the peak is the best we have."""
    kb = _status_kb("VmRSS")
    return kb * 1024 if kb is not None else peak_rss_bytes()


def peak_rss_bytes() -> int:
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb * 1024
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def reset_peak_rss() -> bool:
    """Make the peak RSS count from now (Linux: clear_refs 5), so it is the model's, not the process's past."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
    except OSError:
        return False
    return True


def _dims(shape: Any) -> list[int | None]:
    return [dim if isinstance(dim, int) and dim > 0 else None for dim in (shape or [])]


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
