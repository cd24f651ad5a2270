"""Device profiles: how to benchmark on a device, and the hardware facts a latency model needs.

Shipped profiles are package data, `edgebert/device_profiles/<name>.yaml` (the repo's top-level
`profiles/` links there); a user file is loaded by path. Every problem in a file is reported at
once, one per line-like item ("file: field: expected ..."), so a user fixes a profile in one go.
`hardware: detect` (the `local` profile) reads this machine's facts at load time, and
`threads: auto` means every core this process may use.

A profile is untrusted input: the file is read up to a few KB, YAML aliases are refused (a
billion-laughs file expands without bound), every count has an upper bound (a `warmup_runs: 1e12`
would never finish), and values echoed in messages are shortened.
"""

from __future__ import annotations

import difflib
import math
import os
import platform
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgebert.errors import EdgebertError
from edgebert.manifests import SHOWN_INPUT_CHARS, shown
from edgebert.process import usable_cores
from edgebert.reading import read_regular
from edgebert.runtimes import RUNTIMES
from edgebert.sidecar import MAX_SEQ_LEN  # the longest input `export` verifies, so the longest bench runs

RuntimeName = Literal[tuple(RUNTIMES)]  # type: ignore[valid-type]  # a profile names a registered runtime
# SIMD extensions worth knowing for transformer kernels, as /proc/cpuinfo spells them.
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile")
ARM_SIMD_FLAGS = ("asimd", "asimddp", "asimdhp", "i8mm", "bf16", "sve", "sve2")

# What a memory budget limits: the model's own footprint, or the whole process (pick's --memory-scope).
MemoryScope = Literal["model", "process"]
MEMORY_SCOPES: tuple[MemoryScope, ...] = get_args(MemoryScope)
DEFAULT_MEMORY_SCOPE: MemoryScope = "model"
# The name of the figure each scope limits (in verdicts, tables and plots), and what that figure holds.
MEMORY_SCOPE_LABELS: dict[MemoryScope, str] = {"model": "model footprint", "process": "process total"}
MEMORY_SCOPE_HOLDS: dict[MemoryScope, str] = {
    "model": "what loading and running the model adds",
    "process": "model + the runtime's baseline: Python, numpy, the runtime",
}
# The latency a latency budget limits: bench checks this percentile, pick predicts it.
BUDGET_PERCENTILE = "p95"
# More threads are chosen over fewer only when they cut BUDGET_PERCENTILE by at least this share: a core that buys
# less is better left to the rest of the device (int8 at batch 1 measured 1.90 ms at 1 thread, 1.94 ms at 2), and
# differences that small are within a run's noise. Throughput's ways (sessions, a batch) are chosen by the same share.
THREADS_MIN_GAIN = 0.05
T = TypeVar("T")

# Upper bounds of every count a benchmark runs with, from a profile or from bench's own arguments.
MAX_THREADS = 256
MAX_BATCH_SIZE = 256
MAX_WARMUP_RUNS = 10_000
MAX_RUNS = 100_000  # also caps the runs `min_time_s` adds on a very fast model
MAX_MIN_TIME_S = 3600.0
# Shipped profiles are about 1 KB; a file much larger than that is not a profile.
MAX_PROFILE_BYTES = 16 * 1024
MAX_PROFILE_DEPTH = 20  # a profile nests 3 levels (hardware.flags)

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
# Clock, FLOP/s and bandwidth facts: the latency estimate divides by them, and below a thousandth of a GHz,
# GFLOP/s or GB/s (a 1 MHz core) no device runs a transformer.
Rate = Annotated[float, Field(ge=1e-3, allow_inf_nan=False)]
Threads = Annotated[int, Field(gt=0, le=MAX_THREADS, description="runtime threads, or 'auto' for every usable core")]
BatchSize = Annotated[int, Field(gt=0, le=MAX_BATCH_SIZE)]
SeqLen = Annotated[int, Field(gt=0, le=MAX_SEQ_LEN)]
WarmupRuns = Annotated[int, Field(ge=0, le=MAX_WARMUP_RUNS)]
Runs = Annotated[int, Field(gt=0, le=MAX_RUNS)]
MinTime = Annotated[
    float,
    Field(ge=0, le=MAX_MIN_TIME_S, allow_inf_nan=False, description="keep measuring until this much time has passed"),
]


# Units of the budgets: one grammar, one parser, for `pick`'s options and a profile's fields alike. A bare number
# is in the unit of the profile's field (memory_budget_mb, latency_budget_ms): MB or ms.
MEMORY_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
TIME_UNITS = {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0}
BARE_MEMORY_UNIT, BARE_TIME_UNIT = "MB", "ms"
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zµ]*)\s*$", re.IGNORECASE)


def parse_quantity(text: str, units: dict[str, float], bare: str, what: str, example: str) -> float:
    """'60MB' with MEMORY_UNITS -> 60e6, a bare '60' in the `bare` unit; an unknown unit, a sign, an exponent,
    zero or overflow is refused with one line."""
    match = _QUANTITY.match(str(text))
    unit = (match.group(2) or bare).lower() if match else None
    if match is None or unit not in units:
        raise EdgebertError(
            f"cannot read {what} {shown(text)}: give a number and a unit ({', '.join(units)}; a bare number is "
            f"{bare}), e.g. {example}"
        )
    return checked_budget(float(match.group(1)) * units[unit], what, shown(text))


def checked_budget(value: float, what: str, written: str) -> float:
    """A budget is a positive finite quantity: infinity (a 400-digit number overflows to it), NaN or 0 is refused."""
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int beyond any float
        finite = False
    if not finite:
        raise EdgebertError(f"{what} {written} is not a finite number (too large, inf or nan)")
    if value <= 0:
        raise EdgebertError(f"{what} {written} must be more than zero")
    return value


def budget_bytes(value: float, written: str) -> int:
    """A memory budget in whole bytes; below one byte is refused (rounded to 0 it would read as "no budget")."""
    checked_budget(value, "memory budget", written)
    if value < 1:
        raise EdgebertError(f"memory budget {written} is less than one byte: give at least 1B")
    return round(value)


def parse_memory(text: str) -> int:
    """'60MB' (or '60') -> 60_000_000 bytes; KB/MB/GB are powers of ten, KiB/MiB/GiB powers of two."""
    return budget_bytes(
        parse_quantity(text, MEMORY_UNITS, BARE_MEMORY_UNIT, "memory budget", "60MB or 0.5GiB"), shown(text)
    )


def parse_latency(text: str) -> float:
    """'40ms' (or '40') -> 40.0 ms; also s and us."""
    return parse_quantity(text, TIME_UNITS, BARE_TIME_UNIT, "latency budget", "40ms or 0.2s")


def _with_unit(value: Any, parse: Any, scale: float) -> Any:
    """A profile budget written as text ('512MB', '40ms', '60'), by `pick`'s parser, in the field's own unit; a YAML
    number is left as is (it is in that unit, as a bare number on the command line)."""
    if not isinstance(value, str):
        return value
    try:
        return parse(value) / scale
    except EdgebertError as exc:  # pydantic reports ValueErrors with the file and field
        raise ValueError(str(exc)) from exc


class ProfileError(EdgebertError):
    """An invalid profile file; `problems` holds one line per problem, the message joins them with '; '."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class Hardware(BaseModel):
    """Facts from public specs (or detected); unknown values are null, never guessed."""

    model_config = ConfigDict(extra="forbid")

    cpu: str = Field(description="CPU model, e.g. 'Broadcom BCM2711, 4x Cortex-A72'")
    architecture: str | None = Field(None, description="ISA, e.g. aarch64 or x86_64")
    cores: int = Field(gt=0, le=1 << 16, description="CPU cores the OS sees")
    clock_ghz: Rate | None = Field(None, description="sustained or max clock of the cores benchmarked")
    simd: list[str] = Field(default_factory=list, description="vector extensions, e.g. neon, avx2, avx512f")
    peak_gflops_fp32: Rate | None = Field(None, description="theoretical fp32 peak, all cores")
    gemm_gflops_measured: Rate | None = Field(None, description="measured large-GEMM rate, if known")
    memory_bandwidth_gbs: Rate | None = Field(None, description="theoretical DRAM bandwidth")
    ram_gb: PositiveFloat | None = None
    detected: bool = Field(False, description="true when read from this machine at run time")
    notes: str | None = Field(None, description="how peak and bandwidth were derived")
    sources: list[str] = Field(default_factory=list, description="where the facts come from")


class RunSettings(BaseModel):
    """The counts one benchmark runs with: a profile's, with the caller's overrides, each within its bound."""

    threads: Threads
    batch_size: BatchSize
    seq_len: SeqLen
    warmup_runs: WarmupRuns
    runs: Runs
    min_time_s: MinTime


class Profile(BaseModel):
    """One way to run a benchmark on one device."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=100)
    description: str
    runtime: RuntimeName = Field(description="the runtime this device uses")
    threads: Threads
    batch_size: BatchSize = 1
    seq_len: SeqLen = 128
    padding_share: float = Field(
        0.25, ge=0, le=0.5, allow_inf_nan=False, description="share of input positions that are padding"
    )
    warmup_runs: WarmupRuns = 10
    runs: Runs = 100
    min_time_s: MinTime = 0.0
    cpu_affinity: list[Annotated[int, Field(ge=0)]] | None = Field(None, min_length=1, description="core ids to pin")
    spin_wait: bool = Field(
        True,
        description="ORT workers spin between parallel sections: fastest on a dedicated device, "
        "slow when other processes share the cores (set false on a shared machine)",
    )
    memory_budget_mb: PositiveFloat | None = None
    memory_budget_scope: MemoryScope = Field(
        DEFAULT_MEMORY_SCOPE,
        description="what memory_budget_mb limits: the model's own footprint (what loading and running it adds "
        "to the process), or the whole process (the runtime's baseline included); as `pick --memory-scope`",
    )
    latency_budget_ms: PositiveFloat | None = None
    hardware: Hardware

    @field_validator("memory_budget_mb", mode="before")
    @classmethod
    def _memory_unit(cls, value: Any) -> Any:
        return _with_unit(value, parse_memory, 1e6)

    @field_validator("memory_budget_mb")
    @classmethod
    def _memory_bytes(cls, value: float | None) -> float | None:
        if value is not None:
            try:
                budget_bytes(value * 1e6, f"{value:g} MB")
            except EdgebertError as exc:
                raise ValueError(str(exc)) from exc
        return value

    @field_validator("latency_budget_ms", mode="before")
    @classmethod
    def _latency_unit(cls, value: Any) -> Any:
        return _with_unit(value, parse_latency, 1.0)

    @field_validator("threads", mode="before")
    @classmethod
    def _auto_threads(cls, value: Any) -> Any:
        return min(usable_cores(), MAX_THREADS) if value == "auto" else value

    @field_validator("hardware", mode="before")
    @classmethod
    def _detect_hardware(cls, value: Any) -> Any:
        return detect_hardware() if value == "detect" else value

    @property
    def memory_budget_bytes(self) -> int | None:
        """The memory budget in whole bytes (validated: at least one), or None without one."""
        return None if self.memory_budget_mb is None else round(self.memory_budget_mb * 1e6)

    @property
    def thread_counts(self) -> tuple[int, ...]:
        """The thread counts `bench` compares and `pick` chooses between: the profile's, and one."""
        return (self.threads, 1) if self.threads > 1 else (1,)

    def at_threads(self, threads: int) -> Profile:
        """This profile running `threads` threads: what a measurement at that count was taken under."""
        return self.model_copy(update={"threads": threads})

    @property
    def is_local(self) -> bool:
        """This machine (hardware read at run time), not a description of some other device."""
        return self.hardware.detected

    def run_settings(self, **overrides: Any) -> RunSettings:
        """The profile's counts, with each override that is not None in its place, validated against the bounds."""
        values = {name: getattr(self, name) for name in RunSettings.model_fields}
        values |= {name: value for name, value in overrides.items() if value is not None}
        try:
            return RunSettings.model_validate(values)
        except ValidationError as exc:
            raise ProfileError([_describe(error, "bench settings") for error in exc.errors()]) from exc


def faster_threads(latency_ms: dict[int, float]) -> int:
    """THE choice of a thread count from its latencies (BUDGET_PERCENTILE, measured or predicted): the fewest
    threads, unless more cut the latency by THREADS_MIN_GAIN. `bench` records it, `pick` ranks and ships it."""
    return cheapest_unless_beaten(sorted(latency_ms.items()))


def cheapest_unless_beaten(costs: Sequence[tuple[T, float]]) -> T:
    """The first option of `costs` (cheapest first), unless a later one cuts its cost (time: ms, or s per sequence)
    by at least THREADS_MIN_GAIN, then that one, and so on: what more cores or more memory must buy to be chosen."""
    chosen, least = costs[0]
    for option, cost in costs[1:]:
        if cost <= least * (1 - THREADS_MIN_GAIN):
            chosen, least = option, cost
    return chosen


SHIPPED_DIR = "device_profiles"  # package data beside this module; a module and a folder may not share a name


def shipped_dir() -> Path:
    return Path(str(resources.files("edgebert") / SHIPPED_DIR))


def shipped_names() -> list[str]:
    return sorted(path.stem for path in shipped_dir().glob("*.yaml"))


def load_profile(name_or_path: str | Path) -> Profile:
    """A shipped profile by name, or a YAML file by path (anything with a '/' or a .yaml/.yml suffix)."""
    text = check_profile_name(name_or_path)
    if _looks_like_path(name_or_path):
        path = Path(name_or_path)
        if not path.exists():
            raise EdgebertError(f"{path}: no such profile file")
        return parse_profile(_read_bounded(path), source=str(path))
    return parse_profile((shipped_dir() / f"{text}.yaml").read_text(encoding="utf-8"), source=f"{text}.yaml")


def check_profiles(names_or_paths: list[str]) -> dict[str, dict[str, Any]]:
    """Each profile (as `load_profile` takes it): valid with its name, or not with every problem, one line each."""
    report: dict[str, dict[str, Any]] = {}
    for profile in names_or_paths:
        try:
            report[profile] = {"valid": True, "name": load_profile(profile).name, "problems": []}
        except ProfileError as exc:
            report[profile] = {"valid": False, "problems": exc.problems}
        except EdgebertError as exc:  # a missing file, an unknown name: one problem
            report[profile] = {"valid": False, "problems": [str(exc)]}
    return report


def check_profile_name(name_or_path: str | Path) -> str:
    """A path (read later), or the name of a shipped profile: an unknown name is refused before anything loads."""
    text = str(name_or_path)
    if not _looks_like_path(name_or_path) and text not in shipped_names():
        raise EdgebertError(
            f"unknown profile {shown(text)}: choose one of {', '.join(shipped_names())} or give a YAML path"
        )
    return text


def _looks_like_path(name_or_path: str | Path) -> bool:
    text = str(name_or_path)
    return isinstance(name_or_path, Path) or "/" in text or text.endswith((".yaml", ".yml"))


def load_shipped() -> list[Profile]:
    return [load_profile(name) for name in shipped_names()]


def _read_bounded(path: Path) -> str:
    """The file's text (a regular file, see `edgebert.reading`), refused above MAX_PROFILE_BYTES unread."""
    data = read_regular(path, MAX_PROFILE_BYTES)
    if len(data) > MAX_PROFILE_BYTES:
        raise ProfileError([f"{path}: larger than {MAX_PROFILE_BYTES // 1024} KB, too large for a profile"])
    return data.decode("utf-8", errors="replace")


def _safe_loader() -> type:
    """yaml.SafeLoader without aliases: a profile needs none, and nested aliases expand exponentially."""
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not allowed in a profile", mark)
            # Bounded here, not by the recursion limit, which other imports (litert's converter) raise.
            if self.depth >= MAX_PROFILE_DEPTH:
                raise RecursionError
            self.depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    return NoAliasLoader


def parse_profile(text: str, source: str) -> Profile:
    """Validate YAML text; every problem goes into one EdgebertError, '; '-separated, each naming file and field."""
    import yaml

    try:
        data = yaml.load(text, Loader=_safe_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ProfileError([f"{source}: not valid YAML{where}: {problem}"]) from exc
    except RecursionError as exc:
        raise ProfileError([f"{source}: nested too deeply to be a profile"]) from exc
    if data is None:
        raise ProfileError([f"{source}: empty file, expected a mapping of profile fields (name, runtime, ...)"])
    if not isinstance(data, dict):
        raise ProfileError([f"{source}: expected a mapping of profile fields, got a {type(data).__name__}"])
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError([_describe(error, source) for error in exc.errors()]) from exc


def _describe(error: dict, source: str) -> str:
    """One pydantic error as 'file: field: what was expected (got X)', X cut short."""
    field = _field(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        model = Hardware if error["loc"][0] == "hardware" and len(error["loc"]) > 1 else Profile
        close = difflib.get_close_matches(str(error["loc"][-1])[:SHOWN_INPUT_CHARS], model.model_fields, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        return f"{source}: {field}: unknown key ({hint}allowed: {', '.join(model.model_fields)})"
    if kind == "missing":
        return f"{source}: {field}: required field is missing"
    message = error["msg"]
    if error["loc"] == ("threads",):
        message = f"expected a whole number of threads from 1 to {MAX_THREADS}, or 'auto'"
    if error["loc"] == ("hardware",) and kind == "model_type":
        message = "expected a mapping of hardware facts or 'detect'"
    return f"{source}: {field}: {message[0].lower()}{message[1:]} (got {shown(error['input'])})"


def _field(loc: tuple) -> str:
    """A field path as written, or quoted and cut short when the key itself is hostile (long, control chars)."""
    field = ".".join(str(part) for part in loc) or "(top level)"
    return field if len(field) <= SHOWN_INPUT_CHARS and field.isprintable() else shown(field)


def detect_hardware() -> Hardware:
    """This machine's facts from /proc and /sys (Linux); peak GFLOP/s stays unknown rather than guessed."""
    cpuinfo = _read("/proc/cpuinfo")
    meminfo = _read("/proc/meminfo")
    cpu = _first(cpuinfo, r"^model name\s*:\s*(.+)$") or _first(cpuinfo, r"^Model\s*:\s*(.+)$")
    cpu = cpu or _first(cpuinfo, r"^Hardware\s*:\s*(.+)$") or platform.processor() or platform.machine() or "unknown"
    flags = set((_first(cpuinfo, r"^(?:flags|Features)\s*:\s*(.+)$") or "").split())
    simd = [flag for flag in (*SIMD_FLAGS, *ARM_SIMD_FLAGS) if flag in flags]
    max_khz = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").strip()
    mhz = _first(cpuinfo, r"^cpu MHz\s*:\s*([\d.]+)$")
    clock = int(max_khz) / 1e6 if max_khz.isdigit() else (float(mhz) / 1e3 if mhz else None)
    mem_kb = _first(meminfo, r"^MemTotal:\s*(\d+) kB$")
    return Hardware(
        cpu=cpu.strip(),
        architecture=platform.machine() or None,
        cores=os.cpu_count() or 1,
        clock_ghz=round(clock, 3) if clock else None,
        simd=simd,
        ram_gb=round(int(mem_kb) / 1024**2, 1) if mem_kb else None,
        detected=True,
        notes="detected at run time from /proc/cpuinfo, /proc/meminfo and cpufreq; peak and bandwidth unknown",
    )


# The same ISA under the names different systems give it (platform.machine() on macOS and Windows).
ISA_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "x64": "x86_64"}


def other_device(profile: Profile, host: Hardware) -> str | None:
    """Why `profile` describes another device than `host`, in one line, or None when it may be this one.

    `local` is this host by definition; a shipped or user profile is compared on the facts that tell devices
    apart without guessing: its architecture (when it names one) and its core count.
    """
    if profile.is_local:
        return None
    described = profile.hardware
    isa = ISA_ALIASES.get((described.architecture or "").lower(), (described.architecture or "").lower())
    here = ISA_ALIASES.get((host.architecture or "").lower(), (host.architecture or "").lower())
    if (not isa or isa == here) and described.cores == host.cores:
        return None
    return (
        f"settings from profile {profile.name}, measured on this host ({_device(host)}), not on the device it "
        f"describes ({_device(described)}): latency and memory are this host's"
    )


def _device(hardware: Hardware) -> str:
    return f"{hardware.cpu}, {hardware.architecture or 'architecture unknown'}, {hardware.cores} cores"


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _first(text: str, pattern: str) -> str | None:
    match = re.search(pattern, text, re.MULTILINE)
    return match.group(1).strip() if match else None
