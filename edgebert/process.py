"""This process's memory and CPU placement, as a benchmark needs them: RSS, a resettable peak, pinning.

Read by hand from /proc (Linux) with a `resource` fallback, not through psutil: psutil has no
peak RSS on Linux and cannot reset it (clear_refs), which is what separates a model's footprint
from the process's past, so /proc would be read anyway; and psutil is a compiled extension
without wheels for some device platforms (Termux on Android needs a rebuilt copy), which the
torch-free device install should not carry for two numbers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from edgebert.errors import EdgebertError


@contextmanager
def pinned(cores: list[int] | None) -> Iterator[None]:
    """Pin the process to `cores` for the block, and restore the previous affinity after."""
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


def usable_cores() -> int:
    """Cores this process may run on (respects taskset/cgroup affinity), not every core of the box."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
