"""Progress of the long commands (train, rewire, eval, export, pick --measure) on stderr, decided in one place.

On a terminal: a live bar. Elsewhere (`2> log`, nohup, CI) a bar draws nothing, so a plain line is
printed every `PROGRESS_INTERVAL` seconds instead: what is being done, i / n, rate and ETA (or the
time spent, for work without a count). Nothing is printed before the first interval has passed,
so a command that fails early says one `error:` line and nothing else.
"""

from __future__ import annotations

import math
import os
import threading
import time
from typing import Any

from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bar

from edgebert.cli.output import err_console
from edgebert.errors import EdgebertError

PROGRESS_INTERVAL = 30.0  # seconds between plain progress lines off a terminal
INTERVAL_ENV = "EDGEBERT_PROGRESS_INTERVAL"  # overrides it (seconds; tests use a fraction of one)


def progress_interval() -> float:
    text = os.environ.get(INTERVAL_ENV)
    if text is None:
        return PROGRESS_INTERVAL
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise EdgebertError(f"{INTERVAL_ENV}={text!r}: give the seconds between progress lines, e.g. 30")
    return value


def duration(seconds: float) -> str:
    """1h02m, 9m24s, 12s."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """A long command's progress: stages of counted work (`stage(label, total)`, `update`) or of uncounted work
    (`stage(label)`), shown as a bar on a terminal or as a plain line every `interval` seconds elsewhere."""

    def __init__(
        self,
        transient: bool = True,
        quiet: bool = False,
        interval: float | None = None,
        terminal: bool | None = None,
    ):
        self.quiet = quiet
        self.terminal = err_console.is_terminal if terminal is None else terminal
        self.interval = progress_interval() if interval is None else interval
        self._bar = Bar(
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=err_console,
            transient=transient,
        )
        self._task: Any = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._label, self._unit, self._detail = "", "step", ""
        self._total: int | None = None
        self._done = self._first = 0
        self._started = time.monotonic()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
        if self._task is not None:
            self._bar.stop()

    def stage(self, label: str, total: int | None = None, done: int = 0, unit: str = "step") -> None:
        """Start a stage: `total` units of work of which `done` are done (None: uncounted); the rate counts from now."""
        with self._lock:
            self._label, self._total, self._unit, self._detail = label, total, unit, ""
            self._done = self._first = done
            self._started = time.monotonic()
        if self.quiet:
            return
        if not self.terminal:
            if self._thread is None:
                self._thread = threading.Thread(target=self._heartbeat, name="edgebert-progress", daemon=True)
                self._thread.start()
            return
        if self._task is None:
            self._bar.start()
        else:
            self._bar.update(self._task, visible=False)
        self._task = self._bar.add_task(label, total=total, completed=done, status="")

    def update(self, done: int | None = None, advance: int = 0, detail: str | None = None) -> None:
        """`done` units of the stage's total are done (or `advance` more); `detail`: what the last one said."""
        with self._lock:
            self._done = (self._done if done is None else done) + advance
            self._detail = self._detail if detail is None else detail
        if self._task is not None:
            status = self.status() if self._total is not None else self._detail  # the bar shows the time itself
            self._bar.update(self._task, completed=self._done, status=status)

    def print(self, renderable: Any) -> None:
        """Print above the bar (or as is, off a terminal)."""
        if not self.quiet:
            err_console.print(renderable)

    def status(self) -> str:
        """i / n, the last unit's detail, rate and ETA of the stage (or its time so far, uncounted)."""
        with self._lock:
            elapsed = time.monotonic() - self._started
            if self._total is None:
                return ", ".join(filter(None, [self._detail, f"{duration(elapsed)} so far"]))
            parts = [f"{self._done}/{self._total}", self._detail]
            rate = (self._done - self._first) / elapsed if elapsed > 0 else 0.0
            if rate > 0:
                speed = f"{rate:.2f} {self._unit}s/s" if rate >= 1 else f"{1 / rate:.1f} s/{self._unit}"
                parts += [speed, f"ETA {duration(max(0, self._total - self._done) / rate)}"]
            else:
                parts.append("ETA unknown")
            return ", ".join(filter(None, parts))

    def line(self) -> str:
        return f"{self._label}: {self.status()}"

    def _heartbeat(self) -> None:
        while not self._stopped.wait(self.interval):
            err_console.print(self.line(), markup=False, highlight=False, emoji=False)
