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
import json
import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgebert import __version__
from edgebert.atomic import staged_outputs
from edgebert.errors import EdgebertError, require
from edgebert.profiles import Profile, detect_hardware, usable_cores

RUNTIME_FOR_SUFFIX = {".onnx": "onnxruntime", ".tflite": "litert"}
# Busy-machine warnings: 1-minute load average per usable core before the run, p99/p50, and std/mean.
BUSY_LOAD_PER_CORE = 0.5
BUSY_TAIL_RATIO = 1.5
BUSY_CV = 0.10
# Which latency the profile's latency budget is checked against.
BUDGET_PERCENTILE = "p95"
MAX_RUNS = 100_000  # a cap for --min-time on a very fast model
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
    """
    artifact = Path(artifact)
    sidecar = read_sidecar(artifact)
    runtime = RUNTIME_FOR_SUFFIX[artifact.suffix]
    threads = threads or profile.threads
    runs = runs or profile.runs
    warmup = profile.warmup_runs if warmup is None else warmup
    min_time_s = profile.min_time_s if min_time_s is None else min_time_s
    warnings: list[str] = []
    if runtime != profile.runtime and not profile.hardware.detected:  # `local` has no runtime of its own
        warnings.append(f"profile {profile.name} runs {profile.runtime}, but {artifact.name} needs {runtime}")
    if threads > usable_cores():
        warnings.append(f"{threads} threads on {usable_cores()} usable cores: threads compete, latency is inflated")
    if (sidecar.get("manifest") or {}).get("untrained"):
        warnings.append(sidecar["manifest"]["untrained"])

    with pinned(profile.cpu_affinity):
        load_before = os.getloadavg()
        import_runtime(runtime)  # the runtime's own import is not the model's memory
        peak_since_load = reset_peak_rss()
        rss_before = rss_bytes()
        start = time.perf_counter_ns()
        session = open_session(artifact, sidecar, threads, ort_config(profile, session_config))
        load_ns = time.perf_counter_ns() - start
        rss_loaded = rss_bytes()
        feeds, input_info = make_feeds(
            session, sidecar, profile, batch_size, seq_len, text_file, tokenizer_dir, seed, warnings, artifact
        )
        call = session.bind(feeds)
        start = time.perf_counter_ns()
        first_inference(call, artifact, guessed=not sidecar)
        first_ns = time.perf_counter_ns() - start
        for _ in range(warmup):
            call()
        samples = time_runs(call, runs, min_time_s)
        rss_after = rss_bytes()
        peak = peak_rss_bytes()
        load_after = os.getloadavg()

    latency = latency_stats(samples)
    if session.details.get("xnnpack") is False:
        warnings.append("the XNNPACK delegate is not active: LiteRT on CPU is ~9x slower without it")
    warnings += busy_warnings(load_before[0], latency)
    mean_s = latency["mean"] / 1e3
    batch, real_tokens, total_tokens = input_info["batch_size"], input_info["real_tokens"], input_info["total_tokens"]
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
            "threads": threads,
            "warmup_runs": warmup,
            "runs": len(samples),
            "min_time_s": min_time_s,
            "cpu_affinity": profile.cpu_affinity,
            "seed": seed,
        },
        "inputs": input_info,
        "load_ms": load_ns / 1e6,
        "first_inference_ms": first_ns / 1e6,
        "latency_ms": latency,
        "throughput": {
            "sequences_per_s": batch / mean_s,
            "tokens_per_s": total_tokens / mean_s,
            "real_tokens_per_s": real_tokens / mean_s,
        },
        "memory": {
            "rss_before_load_bytes": rss_before,
            "rss_after_load_bytes": rss_loaded,
            "rss_after_runs_bytes": rss_after,
            "load_growth_bytes": rss_loaded - rss_before,
            "run_growth_bytes": rss_after - rss_loaded,
            "peak_rss_bytes": peak,
            "peak_counts_from_load": peak_since_load,
        },
        "budgets": budgets(profile, latency, peak),
        "environment": {
            "runtime": session.runtime,
            "runtime_version": session.version,
            **session.details,
            "threads": threads,
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
    """Append to a JSON list file, atomically: a crash or Ctrl-C never leaves a half-written file."""
    path = Path(path)
    results = []
    if path.exists():
        try:
            results = json.loads(path.read_text(encoding="utf-8") or "[]")
        except (ValueError, UnicodeDecodeError) as exc:
            raise EdgebertError(f"{path}: not a JSON file ({exc}); give a new file or a JSON list of results") from exc
        if not isinstance(results, list):
            raise EdgebertError(f"{path}: holds a JSON {type(results).__name__}, expected a list of results")
    results.append(result)
    with staged_outputs(path, force=True) as (staged,):
        staged.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


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
    session = open_session(artifact, sidecar, threads or profile.threads, ort_config(profile))
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


def time_runs(call: Callable[[], Any], runs: int, min_time_s: float = 0.0) -> list[int]:
    """Nanoseconds per call: `runs` calls, then more until `min_time_s` has passed (capped at MAX_RUNS).

    The sample list is allocated up front, so only the clock reads surround the runtime call.
    """
    clock = time.perf_counter_ns
    samples = [0] * runs
    deadline = clock() + int(min_time_s * 1e9)
    for i in range(runs):
        start = clock()
        call()
        samples[i] = clock() - start
    while clock() < deadline and len(samples) < MAX_RUNS:
        start = clock()
        call()
        samples.append(clock() - start)
    return samples


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


def budgets(profile: Profile, latency: dict[str, float], peak_rss: int) -> dict[str, Any]:
    """The profile's budgets against the measured latency percentile and the process's peak RSS."""
    result: dict[str, Any] = {}
    if profile.latency_budget_ms is not None:
        result["latency_budget_ms"] = profile.latency_budget_ms
        result["latency_checked"] = BUDGET_PERCENTILE
        result["within_latency_budget"] = latency[BUDGET_PERCENTILE] <= profile.latency_budget_ms
    if profile.memory_budget_mb is not None:
        result["memory_budget_mb"] = profile.memory_budget_mb
        result["within_memory_budget"] = peak_rss <= profile.memory_budget_mb * 1e6
    return result


# ---- artifacts and runtimes ------------------------------------------------------------------------


def read_sidecar(artifact: Path) -> dict[str, Any]:
    """The export's `<artifact>.json`, or {} without one; also checks the artifact itself is usable."""
    if not artifact.exists():
        raise EdgebertError(f"{artifact}: no such file")
    if not artifact.is_file():
        raise EdgebertError(f"{artifact}: not a file; give an .onnx or .tflite artifact")
    if artifact.suffix not in RUNTIME_FOR_SUFFIX:
        raise EdgebertError(f"{artifact}: unknown artifact type {artifact.suffix!r}: expected .onnx or .tflite")
    path = artifact.with_name(artifact.name + ".json")
    if not path.is_file():
        return {}
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise EdgebertError(f"{path}: sidecar is not valid JSON ({exc}); fix or delete it") from exc
    if not isinstance(sidecar, dict):
        raise EdgebertError(f"{path}: sidecar should be a JSON object, got {type(sidecar).__name__}")
    return sidecar


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
    """Load the artifact in its runtime with explicit threading; a file the runtime rejects is a user error."""
    module = import_runtime(RUNTIME_FOR_SUFFIX[artifact.suffix])
    try:
        if artifact.suffix == ".onnx":
            return _open_onnx(module, artifact, sidecar, threads, session_config or {})
        return _open_tflite(module, artifact, sidecar, threads)
    except EdgebertError:
        raise
    except Exception as exc:  # runtimes raise their own exception types for a bad file
        runtime = RUNTIME_FOR_SUFFIX[artifact.suffix]
        raise EdgebertError(f"{artifact}: {runtime} cannot load it, is it a valid model? ({_short(exc)})") from exc


def _open_onnx(ort: Any, artifact: Path, sidecar: dict, threads: int, session_config: dict[str, str]) -> Session:
    requested = (sidecar.get("runtime") or {}).get("graph_optimization_level") or "all"
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
    disabled = list((sidecar.get("runtime") or {}).get("disabled_optimizers") or [])
    session = ort.InferenceSession(
        str(artifact), sess_options=options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled
    )
    inputs = [
        InputSpec(i.name, i.type.removeprefix("tensor(").removesuffix(")").replace("float", "float32"), _dims(i.shape))
        for i in session.get_inputs()
    ]
    details = {
        "graph_optimization_level": level,
        "disabled_optimizers": disabled,
        "execution_mode": "sequential",
        "session_config": session_config,
    }
    return Session("onnxruntime", ort.__version__, session, inputs, details)


def _open_tflite(litert: Any, artifact: Path, sidecar: dict, threads: int) -> Session:
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


def first_inference(call: Callable[[], Any], artifact: Path, guessed: bool) -> None:
    try:
        call()
    except Exception as exc:  # wrong inputs for this model surface here, in the runtime's words
        hint = f"; without {artifact.name}.json the token ids were guessed from {UNKNOWN_VOCAB_IDS}" if guessed else ""
        raise EdgebertError(f"{artifact}: the first inference failed ({_short(exc)}){hint}") from exc


# ---- inputs ---------------------------------------------------------------------------------------


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
    """Seeded token ids (or tokenized text) shaped for the model, with padding; returns feeds and their description."""
    import numpy as np

    names = [spec.name for spec in session.inputs]
    declared = [entry.get("name") for entry in sidecar.get("inputs") or []]
    if declared and sorted(declared) != sorted(names):
        raise EdgebertError(f"{artifact}: the sidecar lists inputs {declared}, the model has {names}")
    unknown = [name for name in names if _role(name) is None]
    if unknown:
        raise EdgebertError(
            f"{artifact}: cannot make inputs for {unknown}: expected input_ids, attention_mask, token_type_ids"
        )
    batch, seq = _shape(session.inputs, profile, batch_size, seq_len, warnings)
    vocab = sidecar.get("vocab_size")
    pad_id = sidecar.get("pad_token_id")
    info: dict[str, Any] = {"names": names, "batch_size": batch, "seq_len": seq}
    if text_file is not None:
        ids, mask, info["source"] = text_rows(text_file, tokenizer_dir or artifact.parent, batch, seq, pad_id, vocab)
    else:
        rng = np.random.default_rng(seed)
        pad_id = 0 if pad_id is None else pad_id
        if vocab is None:
            low, high = UNKNOWN_VOCAB_IDS
            warnings.append(f"vocabulary size unknown (no sidecar): token ids drawn from [{low}, {high})")
        else:
            low, high = (FIRST_REGULAR_ID if vocab > 2 * FIRST_REGULAR_ID else pad_id + 1), vocab
        lengths = _row_lengths(batch, seq, profile.padding_share, rng)
        mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
        ids = np.where(mask == 1, rng.integers(low, high, size=(batch, seq)), pad_id)
        info["source"] = f"random ids in [{low}, {high}), seed {seed}"
    values = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    values["position_ids"] = np.broadcast_to(np.arange(seq), (batch, seq))
    feeds = {spec.name: np.ascontiguousarray(values[_role(spec.name)], dtype=spec.dtype) for spec in session.inputs}
    real = int(mask.sum())
    info |= {"dtypes": {s.name: s.dtype for s in session.inputs}, "real_tokens": real, "total_tokens": batch * seq}
    info["padding_share"] = 1 - real / (batch * seq)
    return feeds, info


def _role(name: str) -> str | None:
    for role in ("input_ids", "attention_mask", "token_type_ids", "position_ids"):
        if name == role or name.endswith(role):  # e.g. serving_default_input_ids
            return role
    return None


def _shape(
    inputs: list[InputSpec], profile: Profile, batch: int | None, seq: int | None, warnings: list[str]
) -> tuple[int, int]:
    """The profile's (or caller's) batch and length, except where the model fixes them (TFLite): then the model wins."""
    wanted = (batch or profile.batch_size, seq or profile.seq_len)
    fixed = [None, None]
    for spec in inputs:
        for axis, dim in enumerate(spec.shape[:2]):
            fixed[axis] = dim if dim is not None else fixed[axis]
    shape = tuple(f if f is not None else w for f, w in zip(fixed, wanted, strict=True))
    for what, got, want in zip(("batch size", "sequence length"), shape, wanted, strict=True):
        if got != want:
            warnings.append(f"the model has a fixed {what} of {got}; using it instead of {want}")
    return shape


def _row_lengths(batch: int, seq: int, padding_share: float, rng: Any) -> Any:
    """Real lengths spread evenly around the target so the batch's padding share is `padding_share`."""
    import numpy as np

    shortest = max(2, round(seq * (1 - 2 * padding_share)))
    lengths = np.linspace(shortest, seq, batch) if batch > 1 else np.array([seq * (1 - padding_share)])
    return rng.permutation(np.clip(np.rint(lengths), 2, seq).astype(np.int64))


def text_rows(
    text_file: Path, tokenizer_dir: Path, batch: int, seq: int, pad_id: int | None, vocab: int | None
) -> tuple[Any, Any, str]:
    """The first `batch` non-empty lines (repeated if fewer), tokenized by the model's tokenizer files."""
    import numpy as np

    try:
        import tokenizers
    except ImportError as exc:
        raise EdgebertError("--text needs the tokenizers package: run `pip install tokenizers`") from exc
    if not Path(text_file).is_file():
        raise EdgebertError(f"{text_file}: no such text file")
    lines = [line.strip() for line in Path(text_file).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise EdgebertError(f"{text_file}: no text in it")
    tokenizer = _load_tokenizer(tokenizers, Path(tokenizer_dir))
    if vocab is not None and tokenizer.get_vocab_size() > vocab:
        raise EdgebertError(
            f"{tokenizer_dir}: the tokenizer has {tokenizer.get_vocab_size()} tokens, the model only {vocab}"
        )
    if pad_id is None:
        pad_id = next((i for t in ("[PAD]", "<pad>") if (i := tokenizer.token_to_id(t)) is not None), 0)
    tokenizer.enable_truncation(max_length=seq)
    tokenizer.enable_padding(length=seq, pad_id=pad_id)
    rows = (lines * (batch // len(lines) + 1))[:batch]
    encodings = tokenizer.encode_batch(rows)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    return ids, mask, f"text: {text_file} ({len(lines)} lines, first {min(batch, len(lines))} used)"


def _load_tokenizer(tokenizers: Any, directory: Path) -> Any:
    if (directory / "tokenizer.json").is_file():
        return tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
    if (directory / "vocab.txt").is_file():
        config_path = directory / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        return tokenizers.BertWordPieceTokenizer(
            str(directory / "vocab.txt"), lowercase=config.get("do_lower_case", True)
        )
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
