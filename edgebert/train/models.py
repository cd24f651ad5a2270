"""A run's models on disk: DynaBerts loaded from the teacher or a phase's directory, and saved back into the run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgebert.atomic import replace_file, staged_outputs
from edgebert.checkpoint import Checkpoint, load_checkpoint
from edgebert.data import Dataset
from edgebert.manifests import RewireManifest
from edgebert.rewire import rewire_checkpoint
from edgebert.slicing import SlicedModel, slice_checkpoint, write_slice
from edgebert.subnet import Subnetwork
from edgebert.train.reporter import Reporter
from edgebert.weights import write_safetensors

if TYPE_CHECKING:
    from edgebert.dynabert import DynaBert


def load_model(teacher: Checkpoint, directory: Path | None, new_labels: dict[str, int] | None, device: str) -> DynaBert:
    """A DynaBert from a phase directory, or from the teacher checkpoint when None (with a fresh classifier of
    `new_labels` for a bare encoder); dropout is the teacher's."""
    from edgebert.dynabert import Dropout, DynaBert

    dropout = Dropout.from_config(teacher.config)
    if directory is None:
        model = DynaBert.from_checkpoint(teacher, dropout, new_labels)
    else:
        model = DynaBert.from_checkpoint(load_checkpoint(directory), dropout)
    return model.to(device)


def rewire_teacher(
    teacher: Checkpoint, dev: Dataset, accumulation: str, reporter: Reporter
) -> tuple[DynaBert, RewireManifest]:
    """A copy of the teacher with heads and FFN neurons sorted by importance on `dev` (gold labels), so that every
    sub-network keeps the most important; the full model's outputs are unchanged (checked)."""
    reporter.message(f"rewiring: head and neuron importance on {dev.path} (gold labels)")
    rewired, rewiring = rewire_checkpoint(teacher, dev, accumulation=accumulation)
    reporter.message(
        f"rewired: full model's logits changed by at most {rewiring.max_abs_diff:.2g} "
        f"({rewiring.max_abs_diff_fp64:.1g} in fp64)"
    )
    return rewired, rewiring


def save_phase_model(
    model: DynaBert, teacher: Checkpoint, target: Path, device: str, extra: dict[str, str] | None = None
) -> None:
    """`model` as a checkpoint directory at `target` (a phase's result), with `extra` files; it stays on `device`."""
    from edgebert.dynabert import save_checkpoint

    target.parent.mkdir(parents=True, exist_ok=True)
    with staged_outputs(target, force=True) as (staging,):
        save_checkpoint(model.cpu(), teacher, staging, extra)
    model.to(device)


def save_slice(model: DynaBert, teacher: Checkpoint, sub: Subnetwork, full_size: Path, target: Path) -> SlicedModel:
    """A final phase's model, specialised at `sub`: saved at full size to `full_size` (the run's own) and `sub` cut
    from it into `target` as a dense slice, as `edgebert slice` writes one (`export` and `bench` take it), marked
    trained; returns the slice."""
    save_phase_model(model, teacher, full_size, "cpu")
    checkpoint = load_checkpoint(full_size)
    sliced = slice_checkpoint(checkpoint, sub.width, sub.depth, trained=True)
    with staged_outputs(target, force=True) as (staging,):
        write_slice(checkpoint, sliced, staging, [])
    return sliced


def save_best(model: DynaBert, path: Path) -> None:
    """The weights of the phase's best model so far."""
    state = {n: t.detach().cpu().contiguous() for n, t in model.net.state_dict().items()}
    replace_file(path, lambda tmp: write_safetensors(state, tmp))


def load_best(teacher: Checkpoint, path: Path, new_labels: dict[str, int] | None) -> DynaBert:
    """The phase's best model (on the CPU), from the weights `save_best` wrote."""
    from safetensors.torch import load_file

    from edgebert.dynabert import Dropout, DynaBert

    best = DynaBert.from_checkpoint(teacher, Dropout.from_config(teacher.config), new_labels)
    best.net.load_state_dict(load_file(str(path)))
    return best
