"""state.pt: what a run saves to continue after a crash (mid-phase or at a phase boundary), and reading it back."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from edgebert.atomic import replace_file
from edgebert.errors import EdgebertError
from edgebert.manifests import STATE_TENSORS, PhaseRecord, TrainState, validation_line

if TYPE_CHECKING:
    from edgebert.dynabert import DynaBert


@dataclass
class PhaseProgress:
    """Where a phase is: optimizer steps taken, the best selection score and its step, and the phase's wall time."""

    step: int = 0
    best_score: float = -math.inf
    best_step: int = 0
    elapsed_before: float = 0.0  # wall time of the phase in earlier sessions of a resumed run
    started: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started


@dataclass
class RunHistory:
    """What a run has done: its finished phases, its wall time over all sessions, and what state.pt holds (which the
    line that stops a run names); it writes state.pt."""

    path: Path  # state.pt
    phases: list[str]  # the run's phase names, in order
    records: list[PhaseRecord] = field(default_factory=list)
    elapsed_before: float = 0.0  # wall time of earlier sessions of a resumed run
    started: float = field(default_factory=time.monotonic)
    saved: str = "no checkpoint yet"

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    def resume(self, state: dict[str, Any]) -> None:
        """Continue from `state`; a state.pt that is not this run's (same spec, other phases) is one line, not an
        IndexError later."""
        self.records = [PhaseRecord.model_validate(r) for r in state["records"]]
        self.elapsed_before = state["elapsed"]
        start, mid_phase = state["phase_index"], "model" in state
        last = len(self.phases) - 1 if mid_phase else len(self.phases)
        if start > last or len(self.records) != start:
            raise EdgebertError(
                f"{self.path} does not fit this run: it is at phase {start + 1} with {len(self.records)} "
                f"finished, of {len(self.phases)} phases"
            )
        self.saved = self._saved_at(start, state["step"] if mid_phase else None)

    def save_mid_phase(
        self,
        index: int,
        progress: PhaseProgress,
        model: DynaBert,
        optimizer: Any,
        scheduler: Any,
        scaler: Any,
        rng: list,
    ) -> None:
        """Everything phase `index` needs to go on from `progress.step` exactly as it would have."""
        state = {
            "version": 1,
            "phase_index": index,
            "step": progress.step,
            "model": {n: t.detach().cpu() for n, t in model.net.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "best_score": progress.best_score,
            "best_step": progress.best_step,
            "rng": rng,
            "phase_elapsed": progress.elapsed(),
            "elapsed": self.elapsed(),
            "records": [r.model_dump() for r in self.records],
        }
        write_state(self.path, state)
        self.saved = self._saved_at(index, progress.step)

    def save_boundary(self, next_index: int, final_sha256: str | None = None) -> None:
        """The run between phases: phase `next_index` starts from the directory of the one before (after the last,
        `final_sha256` is the final manifest's, once written)."""
        state = {
            "version": 1,
            "phase_index": next_index,
            "step": 0,
            "records": [r.model_dump() for r in self.records],
            "elapsed": self.elapsed(),
            "done": True,
            "final_sha256": final_sha256,
        }
        write_state(self.path, state)
        self.saved = self._saved_at(next_index, None)

    def _saved_at(self, index: int, step: int | None) -> str:
        """What a checkpoint at phase `index` holds: a step of it, or (step None) the end of the phase before."""
        if step is not None:
            return f"phase {self.phases[index]} step {step}"
        return f"the end of phase {self.phases[index - 1]}" if index > 0 else "the run's start"


def write_state(path: Path, state: dict[str, Any]) -> None:
    """state.pt by one rename. torch.save reports a failed write (a full disk) as a RuntimeError about
    stream positions, naming no file: the line names state.pt."""
    import torch

    def save(tmp: Path) -> None:
        try:
            torch.save(state, tmp)
        except RuntimeError as exc:
            raise EdgebertError(f"cannot write {path}: is the disk full? ({first_line(exc)})") from exc

    replace_file(path, save)


def load_state(path: Path) -> dict[str, Any]:
    """state.pt, read without running code and checked: plain fields by `TrainState`, tensors all or none."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the weights-only unpickler raises EOFError, KeyError, UnpicklingError, ...
        raise EdgebertError(f"{path} is damaged: {first_line(exc)}") from exc
    if not isinstance(state, dict):
        raise EdgebertError(f"{path} is damaged: it holds a {type(state).__name__}, not a training state")
    tensors = [key for key in STATE_TENSORS if key in state]
    if tensors and len(tensors) != len(STATE_TENSORS):
        missing = ", ".join(key for key in STATE_TENSORS if key not in state)
        raise EdgebertError(f"{path} is damaged: it has {', '.join(tensors)} but not {missing}")
    try:
        fields = TrainState.model_validate({key: value for key, value in state.items() if key not in STATE_TENSORS})
    except ValidationError as exc:
        raise EdgebertError(f"{path} is not a valid TrainState: {validation_line(exc)}") from exc
    if tensors and None in (fields.best_score, fields.best_step, fields.phase_elapsed):
        raise EdgebertError(f"{path} is damaged: a mid-phase checkpoint without its best score, best step or time")
    return state


def restore_phase(
    path: Path, state: dict, student: DynaBert, optimizer: Any, scheduler: Any, scaler: Any, rank: int
) -> PhaseProgress:
    """Load a mid-phase checkpoint (read from `path`) into this process's objects; one that does not fit this run
    (another model's) is one line."""
    import torch

    expected, saved = student.net.state_dict(), state["model"]
    if not isinstance(saved, dict) or saved.keys() != expected.keys():
        raise EdgebertError(f"{path} holds another model's weights (other tensor names): not this run's checkpoint")
    for name, tensor in expected.items():
        got = saved[name].shape if isinstance(saved[name], torch.Tensor) else type(saved[name]).__name__
        if got != tensor.shape:
            raise EdgebertError(
                f"{path} holds another model's weights ({name}: {got} where this run has {tensor.shape}): "
                "not this run's checkpoint"
            )
    try:
        student.net.load_state_dict(saved)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"][rank])
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise EdgebertError(f"{path} does not fit this run: {first_line(exc)}") from exc
    for group in optimizer.param_groups:
        for param in group["params"]:
            moments = optimizer.state.get(param, {}).values()
            if any(isinstance(m, torch.Tensor) and m.dim() and m.shape != param.shape for m in moments):
                raise EdgebertError(f"{path} does not fit this run: its optimizer state has other shapes")
    return PhaseProgress(state["step"], state["best_score"], state["best_step"], state["phase_elapsed"])


def first_line(exc: BaseException) -> str:
    """An exception's first line, or its type when it says nothing (torch.load of an empty file: EOFError(''))."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
