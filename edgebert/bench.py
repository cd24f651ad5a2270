"""Benchmark an exported artifact the way it will run on a device: its own runtime, the profile's threads.

Torch-free on purpose: a device has numpy and one runtime (`edgebert.runtimes`), imported lazily
so a missing one gives the `pip install` line. Inputs come from `edgebert.inputs`, memory and
pinning from `edgebert.process`. The timed loop does nothing but read the clock around the
runtime call, so its numbers match a bare loop (`bare_loop`, which the benchmark suite runs next
to `bench_artifact` to prove it). Everything that can make numbers lie (a busy machine, a wide
spread, a missing XNNPACK delegate, an untrained model) becomes a warning in the result instead
of being left out.

A result says where it ran: `host` is the machine measured (hostname, CPU, architecture, cores);
`profile` is where the settings came from, its hardware under `device_hardware` with
`device_is_this_host` (false, and a warning, when the profile describes another device:
`profiles.other_device`). Unless `threads` forces one count, the artifact is timed at the
profile's thread count and at one (`Profile.thread_counts`), one session alive at a time, and the
result reports the faster by `profiles.faster_threads`; then as many single-thread sessions as the
profile's count, all at once (`ParallelRun`: the other way to serve independent requests on those
cores), unless the runtime holds the GIL. `threads` (`ThreadChoice`) holds every count's numbers, the
parallel sessions' and which way serves more sequences per second. `result_version` 4 is that
layout; version 3 (no parallel sessions), version 2 (no `threads` block: one count,
`settings.threads`) and version 1 (no `result_version`: the profile's block held `hardware`,
`environment` the CPU) are still read by `pick --calibration`, which uses only the fields they share
(`latency_model.measurements_from_result`).
"""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgebert import __version__
from edgebert import sidecar as sidecars
from edgebert.atomic import append_json_list
from edgebert.bundle import artifact_in, tokenizer_dir_of
from edgebert.errors import EdgebertError
from edgebert.inputs import UNKNOWN_VOCAB_IDS, Batch, InputPlan, Inputs, TextInput, model_inputs, read_text
from edgebert.manifests import manifest_warnings
from edgebert.process import peak_rss_bytes, pinned, reset_peak_rss, rss_bytes, usable_cores
from edgebert.profiles import (
    BUDGET_PERCENTILE,
    MAX_RUNS,
    MAX_THREADS,
    THREADS_MIN_GAIN,
    Hardware,
    Profile,
    Runs,
    RunSettings,
    Threads,
    cheapest_unless_beaten,
    detect_hardware,
    faster_threads,
    other_device,
)
from edgebert.runtimes import (
    SPIN_CONFIG_KEY,
    SUFFIXES,
    Runtime,
    SessionOptions,
    open_session,
    runtime_for_artifact,
    short_reason,
)

if TYPE_CHECKING:
    from edgebert.sidecar import Sidecar

# Busy-machine warnings: 1-minute load average per usable core before the run, p99/p50, and std/mean.
BUSY_LOAD_PER_CORE = 0.5
BUSY_TAIL_RATIO = 1.5
BUSY_CV = 0.10
# Which memory figure a profile's memory budget limits (Profile.memory_budget_scope).
MEMORY_CHECKED = {"model": "model_footprint_bytes", "process": "peak_rss_bytes"}
PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99}
RESULT_VERSION = 4  # the layout of a result (see the module docstring); results without the field are version 1


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
    precision: str | None = None,
) -> dict[str, Any]:
    """Load, warm up and time one artifact under a profile; arguments left None come from the profile.

    `artifact` is a file, or a bundle folder: its file of `precision` (needed when it holds several).

    `threads` times that count alone; by default the profile's and one are timed and the faster is reported, then
    that many single-thread sessions at once (the module docstring). Returns a JSON-ready dict: latencies in ms,
    throughput, memory in bytes, the thread counts compared, environment and warnings.
    `session_config` adds onnxruntime session config entries (the profile's `spin_wait` sets spinning).
    With `text_file`, every line runs at its real length (padded to the batch's longest row, or to
    the model's fixed length), the batches cycling over the runs.
    """
    artifact = artifact_in(Path(artifact), precision)
    sidecar = read_sidecar(artifact)
    if precision is not None and (sidecar is None or sidecar.precision != precision):
        held = f"{sidecar.precision} by its sidecar" if sidecar is not None else "of unknown precision (no sidecar)"
        raise EdgebertError(f"{artifact} is {held}, not {precision}")
    runtime = runtime_for_artifact(artifact)
    settings = profile.run_settings(
        threads=threads, runs=runs, warmup_runs=warmup, batch_size=batch_size, seq_len=seq_len, min_time_s=min_time_s
    )
    host = detect_hardware()
    elsewhere = other_device(profile, host)
    warnings: list[str] = [elsewhere] if elsewhere else []
    if runtime.name != profile.runtime and not profile.is_local:  # `local` has no runtime of its own
        warnings.append(f"profile {profile.name} runs {profile.runtime}, but {artifact.name} needs {runtime.name}")
    if settings.threads > usable_cores():
        warnings.append(
            f"{settings.threads} threads on {usable_cores()} usable cores: threads compete, latency is inflated"
        )
    if sidecar is not None:
        warnings += manifest_warnings(sidecar.manifest)
    # Read before the baseline, so the tokenizer's library and vocabulary do not count as the model's memory.
    text = read_text(text_file, tokenizer_dir or tokenizer_dir_of(artifact), sidecar) if text_file is not None else None
    plan = InputPlan(settings.batch_size, settings.seq_len, profile.padding_share, seed)

    counts = (settings.threads,) if threads is not None else profile.thread_counts
    options = [session_options(sidecar, count, profile, session_config) for count in counts]
    untimed = parallel_not_measured(runtime, counts)
    with pinned(profile.cpu_affinity):
        load_before = os.getloadavg()
        runtime.load()  # the runtime's own import is part of the baseline, not of the model
        peak_since_load = reset_peak_rss()
        baseline = rss_bytes()
        runs = [time_session(artifact, sidecar, option, plan, text, settings) for option in options]
        parallel = None
        if len(counts) > 1 and untimed is None:
            single = session_options(sidecar, 1, profile, session_config)
            parallel = time_parallel(artifact, sidecar, single, plan, text, settings, counts[0], baseline)
        load_after = os.getloadavg()

    first = runs[0]
    records = [run.record() for run in runs]
    choice = ThreadChoice.of(records, threads is not None, first.threads, parallel, untimed)
    chosen = next(run for run in runs if run.threads == choice.chosen)
    record = choice.run(choice.chosen)
    latency = record.latency_ms
    warnings += first.inputs.warnings
    if chosen.details.get("xnnpack") is False:
        warnings.append("the XNNPACK delegate is not active: LiteRT on CPU is ~9x slower without it")
    warnings += busy_warnings(load_before[0], latency)
    baseline_of = f"the process with {runtime.name} imported" + (" and the tokenizer loaded" if text else "")
    memory = memory_block(baseline, first.rss_loaded, first.rss_after, first.peak, peak_since_load, baseline_of)
    return {
        "result_version": RESULT_VERSION,
        "edgebert_version": __version__,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "artifact": {
            "path": str(artifact),
            "format": runtime.format,
            "precision": sidecar.precision if sidecar is not None else None,
            "embeddings": sidecar.embeddings.storage if sidecar is not None and sidecar.embeddings else None,
            "size_bytes": artifact.stat().st_size,
            "sidecar": sidecar is not None,
        },
        "host": host_block(host),
        "profile": profile_block(profile, this_host=elsewhere is None),
        "settings": {
            "threads": chosen.threads,
            "warmup_runs": settings.warmup_runs,
            "runs": record.runs,
            "min_time_s": settings.min_time_s,
            "cpu_affinity": profile.cpu_affinity,
            "seed": seed,
        },
        "inputs": first.inputs.info,
        "threads": choice.model_dump(),
        "load_ms": record.load_ms,
        "first_inference_ms": record.first_inference_ms,
        "latency_ms": latency,
        "throughput": record.throughput,
        "memory": memory,
        "budgets": budgets(profile, latency, memory),
        "environment": {
            "runtime": runtime.name,
            "runtime_version": chosen.version,
            **chosen.details,
            "threads": chosen.threads,
            "load_avg_before": [round(x, 2) for x in load_before],
            "load_avg_after": [round(x, 2) for x in load_after],
        },
        "manifest": sidecar.manifest if sidecar is not None else None,
        "warnings": warnings,
    }


class ThreadRun(BaseModel):
    """One thread count's numbers in a result's `threads.compared`."""

    model_config = ConfigDict(extra="forbid")

    threads: Threads
    runs: Runs
    load_ms: float = Field(ge=0, allow_inf_nan=False)
    first_inference_ms: float = Field(ge=0, allow_inf_nan=False)
    latency_ms: dict[str, Annotated[float, Field(gt=0, allow_inf_nan=False)]]
    throughput: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]]


class ParallelRun(BaseModel):
    """A result's `threads.parallel`: `sessions` single-thread sessions of the artifact, each its own, run at once (a
    Python thread each: the runtime's call releases the GIL), as a server of independent requests would run them.

    The window opens when all start together and closes when the first has made the runs asked for (and `min_time_s`
    has passed); the others finish the call they are in, so each runs under the others' load throughout. Latencies
    are per request under that load, pooled over the sessions; `throughput` is every call in the window over its wall
    time; memory is of all the sessions together, above the runtime's baseline.
    """

    model_config = ConfigDict(extra="forbid")

    sessions: int = Field(ge=2, le=MAX_THREADS)
    runs_per_session: list[Runs]
    runs: int = Field(gt=0)  # every session's, summed
    wall_ms: float = Field(gt=0, allow_inf_nan=False)
    load_ms: float = Field(ge=0, allow_inf_nan=False)  # opening them all, one after another
    latency_ms: dict[str, Annotated[float, Field(gt=0, allow_inf_nan=False)]]
    throughput: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]]
    model_footprint_bytes: int = Field(ge=0)
    footprint_from: str
    peak_rss_bytes: int = Field(ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> ParallelRun:
        rate = self.throughput.get("inferences_per_s", -1.0)
        if (
            len(self.runs_per_session) != self.sessions
            or sum(self.runs_per_session) != self.runs
            or abs(rate * self.wall_ms / 1e3 - self.runs) > 1e-6 * self.runs
        ):
            raise ValueError(
                f"threads.parallel: {self.sessions} sessions must each have runs, summing to runs ({self.runs}), and "
                f"inferences_per_s must be runs over wall_ms ({self.runs_per_session}, {rate} /s, {self.wall_ms} ms)"
            )
        return self


class ThreadChoice(BaseModel):
    """A result's `threads` (version 4): each count timed in a session of its own, the one the result reports, and
    the profile's count of single-thread sessions at once.

    `chosen` is `profiles.faster_threads` of the compared counts' `statistic`; with `forced` (`--threads`) one
    count was timed and nothing compared. `memory_from`: the count whose session the memory figures are of.
    `for_throughput`: on the profile's cores, "threads" (one session with them all) or "sessions" (as many
    single-thread sessions), by `serving_choice`; None without `parallel`, and then `not_measured` says why.
    """

    model_config = ConfigDict(extra="forbid")

    compared: list[ThreadRun] = Field(min_length=1)
    chosen: Threads
    statistic: str = BUDGET_PERCENTILE
    min_gain: float = THREADS_MIN_GAIN
    forced: bool
    memory_from: Threads
    parallel: ParallelRun | None
    for_throughput: Literal["threads", "sessions"] | None
    not_measured: str | None  # what a throughput question needs that was not timed, and why

    @classmethod
    def of(
        cls,
        compared: list[ThreadRun],
        forced: bool,
        memory_from: int,
        parallel: ParallelRun | None = None,
        not_measured: str | None = None,
    ) -> ThreadChoice:
        """The choice among `compared` by `profiles.faster_threads`, and for throughput by `serving_choice`."""
        most = max(compared, key=lambda run: run.threads)
        return cls(
            compared=compared,
            chosen=faster_threads({run.threads: run.latency_ms[BUDGET_PERCENTILE] for run in compared}),
            forced=forced,
            memory_from=memory_from,
            parallel=parallel,
            for_throughput=serving_choice(most, parallel) if parallel is not None else None,
            not_measured=not_measured,
        )

    @model_validator(mode="after")
    def _consistent(self) -> ThreadChoice:
        counts = [run.threads for run in self.compared]
        if len(set(counts)) != len(counts) or not {self.chosen, self.memory_from} <= set(counts):
            raise ValueError(
                f"threads: chosen {self.chosen} and memory_from {self.memory_from} must be among the "
                f"compared counts {counts}, each once"
            )
        if self.parallel is None:
            if self.for_throughput is not None:
                raise ValueError("threads: for_throughput without parallel sessions to compare")
            return self
        most = max(counts)
        if self.forced or len(counts) < 2 or self.parallel.sessions != most:
            raise ValueError(
                f"threads: {self.parallel.sessions} parallel sessions need the profile's count ({most}) compared "
                "with one, not forced"
            )
        if self.for_throughput != serving_choice(self.run(most), self.parallel):
            raise ValueError(f"threads: for_throughput {self.for_throughput!r} is not what the numbers give")
        return self

    def run(self, threads: int) -> ThreadRun:
        return next(run for run in self.compared if run.threads == threads)


def serving_choice(one_session: ThreadRun, parallel: ParallelRun) -> Literal["threads", "sessions"]:
    """On the same cores, one session with them all unless as many single-thread sessions cut the time per sequence
    by THREADS_MIN_GAIN (`profiles.cheapest_unless_beaten`): each session holds its own copy of the model."""
    ways: list[tuple[Literal["threads", "sessions"], float]] = [
        ("threads", 1 / one_session.throughput["sequences_per_s"]),
        ("sessions", 1 / parallel.throughput["sequences_per_s"]),
    ]
    return cheapest_unless_beaten(ways)


def parallel_not_measured(runtime: Runtime, counts: Sequence[int]) -> str | None:
    """Why the profile's count of single-thread sessions at once is not timed; None when it is (or one count is)."""
    if max(counts) == 1:
        return None
    if len(counts) == 1:
        return f"{counts[0]} single-thread sessions at once (--threads times one count alone)"
    if runtime.holds_gil:
        return (
            f"{max(counts)} single-thread sessions at once: {runtime.name}'s Python call holds the GIL, so they "
            "would run one at a time"
        )
    return None


@dataclass
class SessionRun:
    """One session's timings and memory readings, kept after the session itself is gone."""

    threads: int
    version: str
    details: dict[str, Any]
    inputs: Inputs
    load_ns: int
    first_ns: int
    samples: list[int]
    rss_loaded: int
    rss_after: int
    peak: int

    def record(self) -> ThreadRun:
        return ThreadRun(
            threads=self.threads,
            runs=len(self.samples),
            load_ms=self.load_ns / 1e6,
            first_inference_ms=self.first_ns / 1e6,
            latency_ms=latency_stats(self.samples),
            throughput=throughput(self.inputs.batches, [len(self.samples)], sum(self.samples) / 1e9),
        )


def time_session(
    artifact: Path,
    sidecar: Sidecar | None,
    options: SessionOptions,
    plan: InputPlan,
    text: TextInput | None,
    settings: RunSettings,
) -> SessionRun:
    """Load, warm up and time one session. It is closed on return, before the next count's opens: an idle ORT
    session's workers spin and would take the cores from the one being timed."""
    start = time.perf_counter_ns()
    session = open_session(artifact, options)
    load_ns = time.perf_counter_ns() - start
    rss_loaded = rss_bytes()
    inputs = model_inputs(session.inputs, sidecar, plan, text, artifact)
    calls = [session.bind(batch.feeds) for batch in inputs.batches]
    with inference_failures(artifact, guessed=sidecar is None):
        start = time.perf_counter_ns()
        calls[0]()
        first_ns = time.perf_counter_ns() - start
        for i in range(settings.warmup_runs):
            calls[i % len(calls)]()
        samples = time_runs(calls, settings.runs, settings.min_time_s)
    return SessionRun(
        options.threads,
        session.version,
        session.details,
        inputs,
        load_ns,
        first_ns,
        samples,
        rss_loaded,
        rss_bytes(),
        peak_rss_bytes(),
    )


def time_parallel(
    artifact: Path,
    sidecar: Sidecar | None,
    options: SessionOptions,
    plan: InputPlan,
    text: TextInput | None,
    settings: RunSettings,
    sessions: int,
    baseline: int,
) -> ParallelRun:
    """Open `sessions` sessions of `options` (one thread each) side by side, warm each up, then time them all at once
    (`time_concurrently`); they share one set of input batches. `baseline`: the process's RSS before any model."""
    peak_since_load = reset_peak_rss()
    start = time.perf_counter_ns()
    opened = [open_session(artifact, options) for _ in range(sessions)]
    load_ns = time.perf_counter_ns() - start
    rss_loaded = rss_bytes()
    inputs = model_inputs(opened[0].inputs, sidecar, plan, text, artifact)
    calls = [[session.bind(batch.feeds) for batch in inputs.batches] for session in opened]
    with inference_failures(artifact, guessed=sidecar is None):
        for bound in calls:
            for i in range(1 + settings.warmup_runs):  # the first inference, then the warm-up
                bound[i % len(bound)]()
        samples, wall_ns = time_concurrently(calls, settings.runs, settings.min_time_s)
    footprint, footprint_from = model_footprint(baseline, rss_loaded, rss_bytes(), peak_rss_bytes(), peak_since_load)
    counts = [len(mine) for mine in samples]
    return ParallelRun(
        sessions=sessions,
        runs_per_session=counts,
        runs=sum(counts),
        wall_ms=wall_ns / 1e6,
        load_ms=load_ns / 1e6,
        latency_ms=latency_stats([sample for mine in samples for sample in mine]),
        throughput=throughput(inputs.batches, counts, wall_ns / 1e9),
        model_footprint_bytes=footprint,
        footprint_from=footprint_from,
        peak_rss_bytes=peak_rss_bytes(),
    )


def time_concurrently(
    sessions: Sequence[Sequence[Callable[[], Any]]], runs: int, min_time_s: float = 0.0
) -> tuple[list[list[int]], int]:
    """Nanoseconds per call of each session's `calls` (cycled as `time_runs` does), all sessions at once, a thread
    each; and the window's wall time, from the first start to the last call's end.

    The window closes when one session has made `runs` calls and `min_time_s` has passed (or MAX_RUNS calls); every
    session makes at least one. A failing call stops them all and is raised here.
    """
    clock = time.perf_counter_ns
    stop = threading.Event()
    ready = threading.Barrier(len(sessions))
    samples: list[list[int]] = [[] for _ in sessions]
    starts, ends = [0] * len(sessions), [0] * len(sessions)
    failures: list[BaseException] = []

    def loop(index: int) -> None:
        calls, mine = sessions[index], samples[index]
        count = len(calls)
        try:
            ready.wait()
            starts[index] = clock()
            deadline = starts[index] + int(min_time_s * 1e9)
            while not mine or not stop.is_set():
                call = calls[len(mine) % count]
                start = clock()
                call()
                end = clock()
                mine.append(end - start)
                if len(mine) >= MAX_RUNS or (len(mine) >= runs and end >= deadline):
                    stop.set()
            ends[index] = clock()
        except BaseException as exc:  # re-raised in the caller's thread, where inference_failures reports it
            failures.append(exc)
            stop.set()

    workers = [threading.Thread(target=loop, args=(index,), daemon=True) for index in range(len(sessions))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if failures:
        raise failures[0]
    return samples, max(ends) - min(starts)


def host_block(host: Hardware) -> dict[str, Any]:
    """The machine the numbers were measured on, as read at run time."""
    return {
        "hostname": platform.node() or None,
        "cpu": host.cpu,
        "architecture": host.architecture,
        "cores": host.cores,
        "usable_cores": usable_cores(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def profile_block(profile: Profile, this_host: bool) -> dict[str, Any]:
    """The profile the settings came from, whole (a user's profile file stays on record), its hardware named as
    the device it describes, which is not where the run was measured unless `device_is_this_host`."""
    block = profile.model_dump(exclude={"hardware"})
    return block | {"device_hardware": profile.hardware.model_dump(), "device_is_this_host": this_host}


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

    The benchmark suite compares its median with bench's p50 to show the harness adds nothing, so
    this loop is deliberately not `time_runs`: it calls the runtime's own method, no partial.
    """
    artifact = Path(artifact)
    sidecar = read_sidecar(artifact)
    settings = profile.run_settings(
        threads=threads, runs=runs, warmup_runs=warmup, batch_size=batch_size, seq_len=seq_len
    )
    session = open_session(artifact, session_options(sidecar, settings.threads, profile))
    plan = InputPlan(settings.batch_size, settings.seq_len, profile.padding_share)
    feeds = model_inputs(session.inputs, sidecar, plan, source=artifact).batches[0].feeds
    if session.runtime.name == "onnxruntime":
        run, args, kwargs = session.handle.run, (None, feeds), {}
    elif session.runtime.name == "executorch":  # its method takes a list of torch tensors, converted once by bind
        run, args, kwargs = session.bind(feeds), (), {}
    else:
        run, args, kwargs = session.handle, (), feeds
    latencies = []
    for i in range(settings.warmup_runs + settings.runs):
        start = time.perf_counter()
        run(*args, **kwargs)
        if i >= settings.warmup_runs:
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


def throughput(batches: list[Batch], runs: Sequence[int], seconds: float) -> dict[str, float]:
    """Inferences, sequences and tokens per second: `runs[k]` calls by session k in `seconds`, each session's call i
    on batch i mod len(batches), as `time_runs`."""
    used = [batches[i % len(batches)] for count in runs for i in range(count)]
    return {
        "inferences_per_s": len(used) / seconds,
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
    footprint, footprint_from = model_footprint(baseline, loaded, after_runs, peak, peak_counts_from_load)
    return {
        "baseline_bytes": baseline,
        "baseline_of": baseline_of,
        "model_footprint_bytes": footprint,
        "footprint_from": footprint_from,
        "rss_before_load_bytes": baseline,
        "rss_after_load_bytes": loaded,
        "rss_after_runs_bytes": after_runs,
        "load_growth_bytes": loaded - baseline,
        "run_growth_bytes": after_runs - loaded,
        "peak_rss_bytes": peak,
        "peak_counts_from_load": peak_counts_from_load,
    }


def model_footprint(
    baseline: int, loaded: int, after_runs: int, peak: int, peak_counts_from_load: bool
) -> tuple[int, str]:
    """What loading and running adds above `baseline`, and what it is read from (`memory_block`)."""
    if peak_counts_from_load:
        return max(0, peak - baseline), "peak RSS since load"
    return max(0, max(loaded, after_runs) - baseline), "RSS sampled after load and runs"


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


# ---- artifacts and sessions ----------------------------------------------------------------------------


def read_sidecar(artifact: Path) -> Sidecar | None:
    """The export's validated `<artifact>.json` (`edgebert.sidecar.Sidecar`), None without one.

    Also checks the artifact itself is usable.
    """
    if not artifact.exists():
        raise EdgebertError(f"{artifact}: no such file")
    if not artifact.is_file():
        raise EdgebertError(f"{artifact}: not a file; give an {' or '.join(SUFFIXES)} artifact or a bundle folder")
    runtime_for_artifact(artifact)  # an unknown suffix is one line
    return sidecars.read_sidecar(artifact)  # validated, and checked to describe this very file


def session_options(
    sidecar: Sidecar | None, threads: int, profile: Profile, session_config: dict[str, str] | None = None
) -> SessionOptions:
    """The settings an artifact is timed with: its sidecar's, the profile's spin-waiting, then explicit extras."""
    # ORT's intra-op workers spin-wait between parallel sections unless told not to (the profile's
    # `spin_wait`). Measured here, 2 threads, (0.25, 0.5) fp32 slice vs the full model
    # (benchmarks/README.md): on an idle machine spinning is faster (8.0 vs 9.2 ms; 0.94 vs 0.84 of the
    # FLOPs ratio); with other load on the cores the spinning worker is preempted and every parallel
    # section stalls (30 vs 15.6 ms, full model 205 vs 134 ms). Devices run one app: spin by default.
    config = {SPIN_CONFIG_KEY: "1" if profile.spin_wait else "0"} | (session_config or {})
    if sidecar is None:
        return SessionOptions.recorded(threads, session_config=config)
    runtime = sidecar.runtime.model_dump()
    return SessionOptions.recorded(threads, runtime, sidecar.signature_key, config)


@contextmanager
def inference_failures(artifact: Path, guessed: bool) -> Iterator[None]:
    """Wrong inputs for this model surface while running, in the runtime's words: one line, not a traceback."""
    try:
        yield
    except Exception as exc:
        hint = f"; without {artifact.name}.json the token ids were guessed from {UNKNOWN_VOCAB_IDS}" if guessed else ""
        raise EdgebertError(f"{artifact}: inference failed ({short_reason(exc)}){hint}") from exc
