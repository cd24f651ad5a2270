"""`edgebert train`: turn a fine-tuned BERT/RoBERTa into a DynaBERT, as the paper's official code does.

Steps (Hou et al., 2020; ../shared/dynabert-training.md restates the released code):
1. rewire a copy of the teacher (heads and FFN neurons sorted by importance, `edgebert.rewire`);
2. phase `width` (DynaBERT_W): widths 1, 0.75, 0.5, 0.25 at full depth distil from the teacher,
   loss = SCE(logits) + 0.1 x sum of 13 hidden-state MSEs;
3. phase `depth` (DynaBERT): every (width, depth) distils from DynaBERT_W, loss = SCE + 1.0 x
   the MSEs of the hidden states matched by the depth rule;
4. optional phase `finetune`: the task loss on gold labels, no teacher.
Before a width or depth phase the teacher is measured on --dev once: one no better than a constant
guess (`weak_result`) is refused unless allowed, and a fine-tune ending so is warned about.
Each batch runs every sub-network of the phase, largest first, on views of the full weights
(`edgebert.dynabert`); their losses are summed through separate backward passes and one
optimizer step follows (AdamW, linear decay, clip 1.0). Every `eval_every` steps all
sub-networks are evaluated and the best sum of the task metric is kept (official rule).

Choices where the code and the paper differ, or the code is silent:
- depth-phase teacher: `full-width` DynaBERT_W (the released code, confirmed by its author; one
  teacher pass per batch) by default; `same-width` distils each width from DynaBERT_W at that
  width, as the paper describes (four teacher passes per batch);
- SCE is the batch mean of the per-example soft cross-entropy (as the shared note states);
- regression: the released code drops the logit term; edgebert uses MSE between student and
  teacher predictions, so the head is trained too;
- hidden-state MSE includes padding, as the original, but batches are padded per batch.

Several processes (torchrun / accelerate launch) split each global batch; DDP synchronises
gradients once per optimizer step (every sub-network but the last runs under `no_sync`), and
only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
import socket
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import ValidationError

from edgebert import __version__
from edgebert.atomic import (
    STAGING_MARKER,
    STAGING_NAME,
    owned_directory,
    publish,
    refuse_existing,
    remove_stale_staging,
    replace_file,
    staged_outputs,
)
from edgebert.checkpoint import Checkpoint, load_checkpoint, read_config, write_safetensors
from edgebert.data import (
    MAX_LENGTH,
    Columns,
    Dataset,
    Encoded,
    check_tokenizer_files,
    collate,
    encode,
    grouped_batches,
    label_targets,
    labels_from_data,
    load_tokenizer,
    read_dataset,
)
from edgebert.errors import EdgebertError
from edgebert.manifests import (
    MAX_JSON_BYTES,
    REWIRE_MANIFEST,
    STATE_TENSORS,
    TRAIN_MANIFEST,
    FileRef,
    MetricsRecord,
    PhaseRecord,
    RewireManifest,
    RunSpec,
    TrainManifest,
    TrainState,
    read_manifest,
    validation_line,
)
from edgebert.reading import read_regular, text_lines
from edgebert.subnet import TRAINED_DEPTHS, TRAINED_GRID, TRAINED_WIDTHS, Subnetwork, costs, subnet_key, subnetwork

if TYPE_CHECKING:
    import numpy as np
    import torch

    from edgebert.dynabert import DynaBert

PHASES = ("width", "depth", "finetune")
Phase = Literal["width", "depth", "finetune"]
DepthTeacher = Literal["full-width", "same-width"]
RUN_HOME_SUFFIX = ".train-run"  # a run in progress lives in `.<out name>.train-run` beside --out
RUN_MARKER = ".edgebert-train-run"  # in the run's home: "<host> <pid>" of the process training it
OUTPUT_DIR = "output"  # in the run's home: what is published onto --out when the run is done
MAX_SEED = 2**32 - 1  # numpy's and most tools' seed range (torch.manual_seed takes 64 bits)
MAX_HOME_NAME = 200  # characters of --out's name kept in the home's name
RUN_DIR = "checkpoints"  # in the run's home: the resume state
PHASES_DIR = "phases"  # each finished phase's best model (rewired/, width/, depth/, finetune/)
METRICS_FILE = "metrics.jsonl"
STATE_FILE = "state.pt"
RUN_FILE = "run.json"
# A model no better than a constant guess on --dev learnt nothing to pass on: accuracy at most the majority class's
# share of the dev labels (or chance, 1 / classes) plus this margin, or a Pearson correlation at most WEAK_CORRELATION.
WEAK_MARGIN = 0.02
WEAK_CORRELATION = 0.1
# Settings --resume may change: when a run evaluates and checkpoints (not what it trains), and how long each phase
# trains, which sets the phase's learning-rate decay: it may change where it changes no step already taken.
RESUME_MAY_CHANGE = ("eval_every", "save_every")
PHASE_LENGTH = ("max_steps", "epochs")


@dataclass(frozen=True)
class TrainConfig:
    """Every hyperparameter of a run; the defaults are the official ones."""

    phases: tuple[Phase, ...] = ("width", "depth")
    widths: tuple[float, ...] = tuple(reversed(TRAINED_WIDTHS))
    depths: tuple[float, ...] = tuple(reversed(TRAINED_DEPTHS))
    epochs: float = 3.0
    max_steps: int | None = None  # per phase; overrides epochs
    train_examples: int | None = None  # a seeded random subset of the training file
    batch_size: int = 32  # global, over all processes
    max_length: int = MAX_LENGTH
    learning_rate: float = 2e-5
    adam_epsilon: float = 1e-8
    weight_decay: float = 0.0
    warmup: float | None = None  # share of steps; None: 0 for BERT, 0.06 for RoBERTa (official)
    max_grad_norm: float = 1.0
    seed: int = 42
    depth_teacher: DepthTeacher = "full-width"
    width_lambdas: tuple[float, float] = (1.0, 0.1)  # (logits, hidden states)
    depth_lambdas: tuple[float, float] = (1.0, 1.0)
    eval_every: int = 50
    save_every: int = 50
    rewire: bool | None = None  # None: when the width phase runs
    importance_accumulation: Literal["official", "per-batch"] = "official"
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"

    def hyperparameters(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @property
    def rewires(self) -> bool:
        return "width" in self.phases if self.rewire is None else self.rewire


class Reporter(Protocol):
    """What the CLI shows: a progress bar per phase and a table per evaluation (rank 0 only)."""

    def phase_started(self, phase: str, total_steps: int, done_steps: int) -> None: ...
    def step(self, step: int, loss: float) -> None: ...
    def evaluated(self, record: dict[str, Any]) -> None: ...
    def message(self, text: str) -> None: ...


class SilentReporter:
    def phase_started(self, phase: str, total_steps: int, done_steps: int) -> None: ...
    def step(self, step: int, loss: float) -> None: ...
    def evaluated(self, record: dict[str, Any]) -> None: ...
    def message(self, text: str) -> None: ...


# ---- processes and devices -------------------------------------------------------------------------


@dataclass
class Runtime:
    """This process's place in the run: rank, world size, device, mixed precision."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"
    autocast_dtype: Any = None  # torch dtype under autocast, None for fp32

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def start_runtime(mixed_precision: str) -> Runtime:
    """CPU or one GPU automatically; torchrun's (or accelerate's) environment makes a process group."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = f"cuda:{local_rank}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(device)
    rank = 0
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo")
        rank = dist.get_rank()
    dtype = None
    if mixed_precision != "no":
        if not cuda:
            raise EdgebertError(f"--mixed-precision {mixed_precision} needs a GPU; on CPU train in fp32 (no)")
        dtype = torch.float16 if mixed_precision == "fp16" else torch.bfloat16
    return Runtime(rank, world, device, dtype)


# ---- losses ---------------------------------------------------------------------------------------


def soft_cross_entropy(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Batch mean of -sum_c softmax(teacher) * log_softmax(student), temperature 1."""
    return -(teacher.softmax(dim=-1) * student.log_softmax(dim=-1)).sum(dim=-1).mean()


def logit_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """SCE for classes; MSE between predictions for a regression head (edgebert's choice, see module doc)."""
    import torch.nn.functional as F

    if student.shape[-1] == 1:
        return F.mse_loss(student, teacher)
    return soft_cross_entropy(student, teacher)


def hidden_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], sub: Subnetwork) -> torch.Tensor:
    """Sum of MSEs: student state i (embeddings, then each kept layer) meets teacher state (kept + [L])[i]."""
    import torch.nn.functional as F

    matched = [*sub.layers, len(teacher) - 1]
    return sum(F.mse_loss(s, teacher[t]) for s, t in zip(student, matched, strict=True))


@dataclass
class LossTerms:
    logits: float = 0.0
    hidden: float = 0.0
    task: float = 0.0
    batches: int = 0

    def add(self, logits: float, hidden: float, task: float) -> None:
        self.logits, self.hidden, self.task = self.logits + logits, self.hidden + hidden, self.task + task

    def mean(self) -> dict[str, float]:
        n = max(1, self.batches)
        return {"logits": self.logits / n, "hidden": self.hidden / n, "task": self.task / n}


# ---- evaluation ----------------------------------------------------------------------------------


@dataclass
class EvalSet:
    data: Dataset
    encoded: Encoded
    targets: np.ndarray


def evaluate_subnetworks(model: DynaBert, evalset: EvalSet, subs: list[Subnetwork], device: str) -> dict[str, dict]:
    """Task metrics of each sub-network in eval mode, as `edgebert eval` computes them: {"w0.5-d1": {...}}."""
    from functools import partial

    from edgebert.evaluate import metrics, predict

    was_training = model.training
    model.eval()
    results = {
        subnet_key(sub.width, sub.depth): metrics(
            predict(partial(model, sub=sub), evalset.encoded, device), evalset.targets
        )
        for sub in subs
    }
    model.train(was_training)
    return results


def selection_score(results: dict[str, dict]) -> float:
    """Sum of the task metric over the sub-networks (official); an undefined correlation counts 0."""
    from edgebert.evaluate import primary_metric

    total = 0.0
    for values in results.values():
        value = primary_metric(values)[1]
        total += 0.0 if math.isnan(value) else value
    return total


def weak_result(values: dict[str, float], targets: np.ndarray, num_labels: int) -> str | None:
    """How a model scoring `values` on data with gold `targets` is no better than a constant guess; None if it is."""
    import numpy as np

    if "accuracy" in values:
        majority = float(np.bincount(targets.astype(np.int64)).max() / len(targets))
        floor = max(majority, 1 / num_labels)
        if values["accuracy"] <= floor + WEAK_MARGIN:
            return (
                f"accuracy {values['accuracy']:.4f}, no better than always answering the majority class "
                f"({majority:.4f} of the dev labels; chance {1 / num_labels:.4f}; margin {WEAK_MARGIN})"
            )
        return None
    pearson = values["pearson"]
    if math.isnan(pearson):
        return "an undefined Pearson correlation (constant predictions)"
    if pearson <= WEAK_CORRELATION:
        return f"Pearson {pearson:.4f}, no better than a constant guess (at most {WEAK_CORRELATION})"
    return None


# ---- the run directory ----------------------------------------------------------------------------


@dataclass
class RunFiles:
    """Where a run lives: its home, a hidden directory beside --out, until it is published onto --out by one rename.

    The home's name follows from --out, so `--resume` finds it after a crash, and it is never the
    user's --out: an interrupted or failed run leaves --out as it was. It holds the resume state
    (`checkpoints/`), the output being built (`output/`: phases/, metrics.jsonl, then the final
    model and its manifest) and a marker naming the process training it.
    """

    out: Path

    @property
    def home(self) -> Path:
        out = Path(os.path.abspath(self.out))
        name = out.name
        if len(name) > MAX_HOME_NAME:  # a file name is at most 255 bytes: keep a prefix and tell long names apart
            name = f"{name[: MAX_HOME_NAME - 17]}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"
        return out.parent / f".{name}{RUN_HOME_SUFFIX}"

    @property
    def work(self) -> Path:
        return self.home / OUTPUT_DIR

    @property
    def run_dir(self) -> Path:
        return self.home / RUN_DIR

    @property
    def aside(self) -> Path:
        """Where publishing puts the run it replaces, on a system that cannot swap two directories in one rename."""
        return self.home / f"old-{Path(os.path.abspath(self.out)).name}"

    @property
    def marker(self) -> Path:
        return self.home / RUN_MARKER

    @property
    def state(self) -> Path:
        return self.run_dir / STATE_FILE

    @property
    def spec(self) -> Path:
        return self.run_dir / RUN_FILE

    @property
    def metrics(self) -> Path:
        return self.work / METRICS_FILE

    def phase_dir(self, name: str) -> Path:
        return self.work / PHASES_DIR / name

    def best(self, phase: str) -> Path:
        return self.run_dir / f"best-{phase}.safetensors"


def output_files(path: Path) -> list[str]:
    """What a finished `train` writes into --out besides its manifest (an EdgebertError when `path` is no finished
    run: a damaged manifest, or no model), defined once for `--force` and for publishing."""
    from edgebert.slicing import MODEL_DIR_FILES

    try:
        read_manifest(path / TRAIN_MANIFEST, TrainManifest)
    except EdgebertError as exc:
        raise EdgebertError(f"has an {TRAIN_MANIFEST} edgebert would not write ({exc})") from exc
    for name in ("config.json", "model.safetensors"):
        if not (path / name).is_file():
            raise EdgebertError(f"has no {name}, so it is not a finished training run")
    phases = [f"{PHASES_DIR}/{phase}/{name}" for phase in ("rewired", *PHASES) for name in MODEL_DIR_FILES]
    return [*MODEL_DIR_FILES, METRICS_FILE, *phases, f"{PHASES_DIR}/rewired/{REWIRE_MANIFEST}"]


_FINISHED_RUN = owned_directory(TRAIN_MANIFEST, output_files, "training run")


def killed_before_spec(path: Path) -> bool:
    """Whether `path` is what edgebert 0.1 (up to 6b0c4f4), which trained inside --out, left when killed before its
    run.json landed: a `checkpoints/` holding nothing, or only its own staging of run.json."""
    run_dir = path / RUN_DIR
    if [entry.name for entry in path.iterdir()] != [RUN_DIR] or run_dir.is_symlink() or not run_dir.is_dir():
        return False
    for entry in run_dir.iterdir():
        if entry.is_symlink() or not entry.is_dir() or not STAGING_NAME.search(entry.name):
            return False
        if any(p.name not in (STAGING_MARKER, RUN_FILE) or not p.is_file() or p.is_symlink() for p in entry.iterdir()):
            return False
    return True


def replaceable_run(path: Path) -> str | None:
    """`--force` replaces a finished run holding nothing but what `train` writes, or an old version's run killed
    before it recorded anything."""
    if path.is_dir() and not path.is_symlink() and killed_before_spec(path):
        return None
    return _FINISHED_RUN(path)


@contextlib.contextmanager
def hold_run(files: RunFiles) -> Iterator[None]:
    """Create and lock the run's home for this process's whole run: a second `train` on the same --out fails at once.

    The lock is a flock on the home, released by the OS however the process ends. On a failure
    that leaves nothing to resume (no state.pt yet) the home is removed; otherwise it stays for
    `--resume`.
    """
    home, fd = files.home, None
    for _ in range(3):  # a run finishing removes its home: one opened just before is not the home any more
        with contextlib.suppress(FileExistsError):
            home.mkdir(parents=True)
        _check_home(files)
        fd = os.open(home, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0))
        try:
            _lock(fd, files)
            if _still_at(fd, home):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        fd = None
    if fd is None:
        raise EdgebertError(f"{home} keeps being removed while edgebert opens it: is another process using it?")
    try:
        files.marker.write_text(f"{socket.gethostname()} {os.getpid()}\n", encoding="utf-8")
        yield
    except BaseException:
        if not files.state.is_file():
            shutil.rmtree(home, ignore_errors=True)
        raise
    finally:
        os.close(fd)


def _still_at(fd: int, path: Path) -> bool:
    """Whether the directory open as `fd` is still the one at `path`."""
    try:
        return os.path.samestat(os.fstat(fd), os.lstat(path))
    except FileNotFoundError:
        return False


def _lock(fd: int, files: RunFiles) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: no flock; one run per --out is the user's care
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            host, pid = files.marker.read_text(encoding="utf-8").split()
            who = f"process {pid}" + ("" if host == socket.gethostname() else f" on {host}")
        except (OSError, ValueError):
            who = "another process"
        raise EdgebertError(f"{files.out} is being trained by {who} (in {files.home}): wait or stop it") from None


def _check_home(files: RunFiles) -> None:
    """The home is edgebert's by its name; refuse to use it if it holds anything `train` does not put there."""
    home = files.home
    if home.is_symlink() or not home.is_dir():
        raise EdgebertError(f"{home} is not a directory edgebert train made: move it away")
    ours = {RUN_MARKER, RUN_DIR, OUTPUT_DIR, files.aside.name}
    foreign = sorted(entry.name for entry in home.iterdir() if entry.name not in ours)
    if foreign:
        raise EdgebertError(f"{home} holds files edgebert train does not write ({', '.join(foreign[:3])}): move them")


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


def first_line(exc: BaseException) -> str:
    """An exception's first line, or its type when it says nothing (torch.load of an empty file: EOFError(''))."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def append_metrics(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(MetricsRecord.model_validate(record).model_dump_json() + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(path: Path) -> list[MetricsRecord]:
    data = read_regular(path, MAX_JSON_BYTES)
    if len(data) > MAX_JSON_BYTES:
        raise EdgebertError(f"{path} is larger than {MAX_JSON_BYTES} bytes: not the metrics edgebert train writes")
    records = []
    for number, line in enumerate(text_lines(data.decode("utf-8", errors="replace")), 1):
        try:
            records.append(MetricsRecord.model_validate_json(line))
        except ValidationError as exc:
            raise EdgebertError(f"{path}: line {number} is not a valid MetricsRecord: {validation_line(exc)}") from exc
    return records


def truncate_metrics(path: Path, resume_state: dict | None) -> None:
    """Drop records written after the checkpoint being resumed (all of them on a fresh start)."""
    if not path.is_file():
        return
    if resume_state is None:
        path.unlink()
        return
    last = (resume_state["phase_index"], resume_state.get("step", 0) if "model" in resume_state else -1)
    kept = [record for record in read_metrics(path) if (record.phase_index, record.step) <= last]
    lines = "".join(f"{record.model_dump_json()}\n" for record in kept)
    replace_file(path, lambda tmp: tmp.write_text(lines, encoding="utf-8"))


# ---- the trainer ------------------------------------------------------------------------------------


@dataclass
class PhasePlan:
    name: Phase
    subs: list[Subnetwork]
    lambdas: tuple[float, float]
    teacher: str


@dataclass
class Inputs:
    """Everything read before training: the checkpoint, data, tokenized sets and label mapping."""

    checkpoint: Checkpoint
    train: Dataset
    dev: Dataset
    eval: Dataset | None
    encoded_train: Encoded
    train_targets: np.ndarray
    dev_set: EvalSet
    eval_set: EvalSet | None
    new_labels: dict[str, int] | None  # a fresh classifier for a bare encoder (finetune only)
    selected_on: Literal["dev", "eval"] = "dev"
    indices: list[int] = field(default_factory=list)  # the training examples used (subset)
    max_length: int = MAX_LENGTH  # tokens per example, as encoded (bounded by the model's positions)


def plan_phases(config: TrainConfig, checkpoint: Checkpoint) -> list[PhasePlan]:
    """The sub-networks of each phase, largest first (depths descending, widths descending within)."""
    arch = checkpoint.arch
    widths, depths = sorted(set(config.widths), reverse=True), sorted(set(config.depths), reverse=True)
    if not widths or not depths:
        raise EdgebertError("--widths and --depths must each name at least one value")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        grid = {(w, d): subnetwork(arch, w, d) for d in depths for w in widths}
    for warning in {str(w.message) for w in caught}:
        warnings.warn(warning, stacklevel=3)
    plans = []
    for name in config.phases:
        if name == "width":
            subs = [grid[(w, depths[0])] if depths[0] == 1.0 else subnetwork(arch, w, 1.0) for w in widths]
            plans.append(PhasePlan(name, subs, config.width_lambdas, "the fine-tuned teacher (full size)"))
        elif name == "depth":
            subs = [grid[(w, d)] for d in depths for w in widths]
            teacher = f"DynaBERT_W at {'full width' if config.depth_teacher == 'full-width' else 'the same width'}"
            plans.append(PhasePlan(name, subs, config.depth_lambdas, teacher))
        else:
            plans.append(
                PhasePlan(name, [grid[(w, d)] for d in depths for w in widths], (0.0, 0.0), "none (gold labels)")
            )
    return plans


def check_config(config: TrainConfig) -> None:
    unknown = [p for p in config.phases if p not in PHASES]
    if unknown or not config.phases:
        raise EdgebertError(f"unknown phase {unknown[0] if unknown else '(none)'}: choose from {', '.join(PHASES)}")
    if len(set(config.phases)) != len(config.phases):
        raise EdgebertError(f"a phase is named twice in {','.join(config.phases)}")
    order = [PHASES.index(p) for p in config.phases]
    if order != sorted(order):
        raise EdgebertError("phases run in the order width, depth, finetune")
    positive = {
        "epochs": config.epochs,
        "batch size": config.batch_size,
        "max length": config.max_length,
        "learning rate": config.learning_rate,
        "eval every": config.eval_every,
        "save every": config.save_every,
        "adam epsilon": config.adam_epsilon,
        "max grad norm": config.max_grad_norm,
    }
    for name, value in positive.items():
        if not value > 0 or not _finite(value):
            raise EdgebertError(f"{name} must be more than zero, got {value}")
    at_least_zero = {
        "weight decay": config.weight_decay,
        **{f"width-phase loss weight {i}": value for i, value in enumerate(config.width_lambdas, 1)},
        **{f"depth-phase loss weight {i}": value for i, value in enumerate(config.depth_lambdas, 1)},
    }
    for name, value in at_least_zero.items():
        if not value >= 0 or not _finite(value):
            raise EdgebertError(f"{name} must be zero or more, got {value}")
    if config.warmup is not None and not 0 <= config.warmup <= 1:  # NaN fails both comparisons
        raise EdgebertError(f"warmup is a share of the steps, from 0 to 1: got {config.warmup}")
    if not 0 <= config.seed <= MAX_SEED:
        raise EdgebertError(f"seed must be a whole number from 0 to {MAX_SEED}, got {config.seed}")
    if config.max_steps is not None and config.max_steps < 1:
        raise EdgebertError(f"max steps must be at least 1, got {config.max_steps}")
    if config.train_examples is not None and config.train_examples < 1:
        raise EdgebertError(f"train examples must be at least 1, got {config.train_examples}")
    if config.max_length < 8:
        raise EdgebertError(f"max length {config.max_length} is too short (at least 8 tokens)")


def _finite(value: float) -> bool:
    """Python ints are always finite (and math.isfinite overflows on one of 400 digits)."""
    return isinstance(value, int) or math.isfinite(value)


def _eval_set(data: Dataset, tokenizer, checkpoint: Checkpoint, label2id, num_labels, max_length) -> EvalSet:
    return EvalSet(
        data, encode(data, tokenizer, max_length), label_targets(data, num_labels, label2id, checkpoint.path)
    )


def read_inputs(
    model: str | Path,
    train_file: Path,
    dev_file: Path,
    eval_file: Path | None,
    config: TrainConfig,
    columns: Columns | None = None,
) -> Inputs:
    """Read and check everything up front: one clear error before any slow work."""
    import numpy as np

    from edgebert.slicing import open_checkpoint

    read_config(Path(model))
    columns = columns or Columns()
    train, dev = read_dataset(train_file, columns), read_dataset(dev_file, columns)
    evaluation = read_dataset(eval_file, columns) if eval_file is not None else None
    checkpoint = open_checkpoint(model)
    check_tokenizer_files(checkpoint.path, {path.name for path in checkpoint.tokenizer_files})
    new_labels = None
    num_labels, label2id = checkpoint.arch.num_labels, checkpoint.model_config.get("label2id")
    if not num_labels:
        if set(config.phases) != {"finetune"}:
            raise EdgebertError(
                f"{checkpoint.path} has no classifier head (a bare encoder), so it cannot be a teacher: fine-tune it "
                "first (`edgebert train MODEL --phases finetune --widths 1 --depths 1 ...`)"
            )
        new_labels = labels_from_data(train) or {}
        num_labels, label2id = max(1, len(new_labels)), new_labels
    tokenizer = load_tokenizer(checkpoint.path, checkpoint.model_type)
    from edgebert.model import EdgeBertConfig

    max_length = min(config.max_length, EdgeBertConfig(**checkpoint.model_config).max_seq_len)
    train_targets = label_targets(train, num_labels, label2id, checkpoint.path)
    dev_set = _eval_set(dev, tokenizer, checkpoint, label2id, num_labels, max_length)
    eval_set = _eval_set(evaluation, tokenizer, checkpoint, label2id, num_labels, max_length) if evaluation else None
    indices = list(range(len(train)))
    if config.train_examples is not None and config.train_examples < len(train):
        indices = sorted(np.random.default_rng(config.seed).permutation(len(train))[: config.train_examples].tolist())
    return Inputs(
        checkpoint,
        train,
        dev,
        evaluation,
        encode(train.subset(indices), tokenizer, max_length),
        train_targets[indices],
        dev_set,
        eval_set,
        new_labels,
        "eval" if eval_set is not None else "dev",
        indices,
        max_length,
    )


def steps_for(config: TrainConfig, examples: int) -> tuple[int, int]:
    """(steps per epoch, total steps) of one phase."""
    per_epoch = math.ceil(examples / config.batch_size)
    total = config.max_steps if config.max_steps is not None else math.ceil(config.epochs * per_epoch)
    return per_epoch, max(1, total)


def make_optimizer(model: torch.nn.Module, config: TrainConfig, total_steps: int, model_type: str):
    """AdamW with no decay on biases and LayerNorms, linear decay to 0 after an optional warm-up."""
    import torch

    no_decay = ("bias", "LayerNorm.weight")
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if not n.endswith(no_decay)], "weight_decay": config.weight_decay},
        {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, eps=config.adam_epsilon)
    warmup_share = config.warmup if config.warmup is not None else (0.06 if model_type == "roberta" else 0.0)
    warmup = int(warmup_share * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class Trainer:
    """One run: phases in order, each resumable from its last checkpoint."""

    def __init__(
        self,
        inputs: Inputs,
        config: TrainConfig,
        out: Path,
        runtime: Runtime,
        reporter: Reporter,
        replace: bool = False,
        allow_weak_teacher: bool = False,
    ):
        self.inputs, self.config, self.runtime, self.reporter = inputs, config, runtime, reporter
        self.files = RunFiles(out)
        self.replace = replace  # --force: the finished run may replace an earlier one at --out
        self.allow_weak_teacher = allow_weak_teacher  # distil a teacher no better than a constant guess anyway
        self.saved = "no checkpoint yet"  # what state.pt holds, for the line that stops a run
        self.checkpoint = inputs.checkpoint
        self.plans = plan_phases(config, self.checkpoint)
        self.records: list[PhaseRecord] = []
        self.rewiring: RewireManifest | None = None
        self.started = time.monotonic()
        self.elapsed_before = 0.0  # wall time of earlier sessions of a resumed run
        import torch

        self.scaler = torch.amp.GradScaler(enabled=runtime.autocast_dtype is torch.float16)

    # -- models

    def _dropout(self):
        from edgebert.dynabert import Dropout

        config = self.checkpoint.config
        return Dropout.from_config(config)

    def _load(self, directory: Path | None) -> DynaBert:
        """A DynaBert from a phase directory, or from the teacher checkpoint when None."""
        from edgebert.dynabert import DynaBert

        if directory is None:
            model = DynaBert.from_checkpoint(self.checkpoint, self._dropout(), self.inputs.new_labels)
        else:
            model = DynaBert.from_checkpoint(load_checkpoint(directory), self._dropout())
        return model.to(self.runtime.device)

    def _save_phase_model(self, model: DynaBert, name: str, extra: dict[str, str] | None = None) -> None:
        from edgebert.dynabert import save_checkpoint

        target = self.files.phase_dir(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        with staged_outputs(target, force=True) as (staging,):
            save_checkpoint(model.cpu(), self.checkpoint, staging, extra)
        model.to(self.runtime.device)

    # -- the run

    def run(self, resume_state: dict | None) -> TrainManifest | None:
        """All phases from the start, or from `resume_state` (mid-phase, or at a phase boundary)."""
        start, mid_phase = 0, None
        if resume_state is not None:
            self.records = [PhaseRecord.model_validate(r) for r in resume_state["records"]]
            self.elapsed_before = resume_state["elapsed"]
            start = resume_state["phase_index"]
            mid_phase = resume_state if "model" in resume_state else None
            self._check_resumed(resume_state)
        if resume_state is None and self.plans[0].name != "finetune":
            self._check_teacher()
        if self.config.rewires and resume_state is None:
            self._rewire()
        elif self.config.rewires:
            self.rewiring = read_manifest(self.files.phase_dir("rewired") / REWIRE_MANIFEST, RewireManifest)
        for index in range(start, len(self.plans)):
            self._run_phase(index, mid_phase if index == start else None)
        return self._finish(resume_state.get("final_sha256") if resume_state is not None else None)

    def _check_resumed(self, state: dict) -> None:
        """A state.pt that is not this run's (same spec, other phases) is one line, not an IndexError later."""
        start, mid_phase = state["phase_index"], "model" in state
        last = len(self.plans) - 1 if mid_phase else len(self.plans)
        if start > last or len(self.records) != start:
            raise EdgebertError(
                f"{self.files.state} does not fit this run: it is at phase {start + 1} with {len(self.records)} "
                f"finished, of {len(self.plans)} phases"
            )
        self.saved = self._saved_at(start, state["step"] if mid_phase else None)

    def _check_teacher(self) -> None:
        """One pass over --dev before distilling: a teacher no better than a constant guess (a fine-tune that ended at
        the majority class) would make hours of training copy nothing, so it is refused unless allowed."""
        teacher = self._load(None)
        full = subnetwork(teacher.arch, 1.0, 1.0)
        values = evaluate_subnetworks(teacher, self.inputs.dev_set, [full], self.runtime.device)
        del teacher
        weak = self._weak(next(iter(values.values())))
        if weak is None:
            from edgebert.evaluate import primary_metric

            name, value = primary_metric(next(iter(values.values())))
            self.reporter.message(f"teacher: {name} {value:.4f} on {self.inputs.dev.path}")
            return
        line = f"the teacher {self.checkpoint.path} scores {weak} on {self.inputs.dev.path}"
        if not self.allow_weak_teacher:
            raise EdgebertError(
                f"{line}: distilling it teaches nothing; fine-tune it until it beats that (check the labels, --lr, "
                "steps), or pass --allow-weak-teacher"
            )
        if self.runtime.is_main:
            warnings.warn(f"{line}; distilling it anyway (--allow-weak-teacher)", stacklevel=2)

    def _weak(self, values: dict[str, float]) -> str | None:
        dev = self.inputs.dev_set
        return weak_result(values, dev.targets, len(self.inputs.new_labels or {}) or self.checkpoint.arch.num_labels)

    def _saved_at(self, index: int, step: int | None) -> str:
        """What a checkpoint at phase `index` holds: a step of it, or (step None) the end of the phase before."""
        if step is not None:
            return f"phase {self.plans[index].name} step {step}"
        return f"the end of phase {self.plans[index - 1].name}" if index > 0 else "the run's start"

    def _rewire(self) -> None:
        from edgebert.rewire import rewire_checkpoint

        self.reporter.message(f"rewiring: head and neuron importance on {self.inputs.dev.path} (gold labels)")
        rewired, self.rewiring = rewire_checkpoint(
            self.checkpoint, self.inputs.dev, accumulation=self.config.importance_accumulation
        )
        self.reporter.message(
            f"rewired: full model's logits changed by at most {self.rewiring.max_abs_diff:.2g} "
            f"({self.rewiring.max_abs_diff_fp64:.1g} in fp64)"
        )
        if self.runtime.is_main:
            self._save_phase_model(rewired, "rewired", {REWIRE_MANIFEST: self.rewiring.model_dump_json(indent=2)})
        self.runtime.barrier()

    def _start_dir(self, index: int) -> Path | None:
        """Where phase `index`'s student starts: the previous phase's best, the rewired teacher, or the teacher."""
        if index > 0:
            return self.files.phase_dir(self.plans[index - 1].name)
        return self.files.phase_dir("rewired") if self.config.rewires else None

    def _teacher(self, index: int) -> DynaBert | None:
        plan = self.plans[index]
        if plan.name == "finetune":
            return None
        if plan.name == "depth" and index > 0:
            teacher = self._load(self.files.phase_dir(self.plans[index - 1].name))
        elif plan.name == "depth":
            teacher = self._load(self._start_dir(index))  # the input model is DynaBERT_W
        else:
            teacher = self._load(None)  # width phase: the fine-tuned model itself
        teacher.eval().requires_grad_(False)
        return teacher

    def _run_phase(self, index: int, resume_state: dict | None) -> None:
        import torch

        plan, config, runtime = self.plans[index], self.config, self.runtime
        torch.manual_seed(config.seed + index)
        student = self._load(self._start_dir(index))
        teacher = self._teacher(index)
        per_epoch, total = steps_for(config, len(self.inputs.encoded_train))
        optimizer, scheduler = make_optimizer(student, config, total, self.checkpoint.model_type)
        scaler = self.scaler
        step, best_score, best_step = 0, -math.inf, 0
        phase_started, elapsed_before = time.monotonic(), 0.0
        if resume_state is not None:
            self._restore(resume_state, student, optimizer, scheduler, scaler)
            step, best_score, best_step = resume_state["step"], resume_state["best_score"], resume_state["best_step"]
            elapsed_before = resume_state["phase_elapsed"]
        wrapped = student
        if runtime.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            wrapped = DistributedDataParallel(student, find_unused_parameters=True)
        student.train()
        self.reporter.phase_started(plan.name, total, step)
        terms = LossTerms()
        evalset = self.inputs.eval_set or self.inputs.dev_set
        epoch_batches: tuple[int, list[list[int]]] = (-1, [])
        while step < total:
            epoch, position = divmod(step, per_epoch)
            if epoch_batches[0] != epoch:
                lengths = self.inputs.encoded_train.lengths
                epoch_batches = (epoch, grouped_batches(lengths, config.batch_size, config.seed, epoch))
            batch = epoch_batches[1][position]
            loss = self.accumulate_gradients(plan, wrapped, student, teacher, batch, terms)
            if runtime.autocast_dtype is torch.float16:
                scaler.unscale_(optimizer)
            norm = float(torch.nn.utils.clip_grad_norm_(student.parameters(), config.max_grad_norm))
            # fp16's scaler skips steps with inf gradients by design; a non-finite loss is never one
            if not math.isfinite(loss) or not (math.isfinite(norm) or scaler.is_enabled()):
                raise EdgebertError(
                    f"phase {plan.name} step {step + 1}: the loss is {loss:g} (gradient norm {norm:g}), so training "
                    f"stopped; {self.files.state} keeps {self.saved} (lower --lr, check the data)"
                )
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            self.reporter.step(step, loss)
            last = step == total
            if step % config.eval_every == 0 or last:
                if runtime.is_main:
                    results = evaluate_subnetworks(student, evalset, plan.subs, runtime.device)
                    score = selection_score(results)
                    improved = score > best_score
                    if improved:
                        best_score, best_step = score, step
                        self._save_best(student, plan.name)
                    record = {
                        "phase": plan.name,
                        "phase_index": index,
                        "step": step,
                        "epoch": round(step / per_epoch, 4),
                        "learning_rate": scheduler.get_last_lr()[0],
                        "loss": terms.mean(),
                        "selected_on": self.inputs.selected_on,
                        "metrics": results,
                        "score": score,
                        "best": improved,
                        "wall_time_s": round(self._elapsed(), 2),
                    }
                    append_metrics(self.files.metrics, record)
                    self.reporter.evaluated(record)
                terms = LossTerms()
            if step % config.save_every == 0 or last:
                elapsed = elapsed_before + time.monotonic() - phase_started
                self._save_state(index, step, student, optimizer, scheduler, scaler, best_score, best_step, elapsed)
        if runtime.is_main:
            from edgebert.dynabert import DynaBert

            best = DynaBert.from_checkpoint(self.checkpoint, self._dropout(), self.inputs.new_labels)
            best.net.load_state_dict(_load_weights(self.files.best(plan.name)))
            self._save_phase_model(best, plan.name)
        self.records.append(
            PhaseRecord(
                name=plan.name,
                teacher=plan.teacher,
                subnetworks=[(s.width, s.depth) for s in plan.subs],
                steps=total,
                epochs=round(total / per_epoch, 4),
                best_step=best_step,
                best_score=best_score,
                wall_time_s=round(elapsed_before + time.monotonic() - phase_started, 2),
            )
        )
        self._save_phase_done(index + 1)
        self.runtime.barrier()

    def accumulate_gradients(
        self, plan: PhasePlan, wrapped, student: DynaBert, teacher: DynaBert | None, batch: list[int], terms: LossTerms
    ) -> float:
        """Every sub-network on this process's share of `batch`, gradients summed by backward; returns the loss sum.

        `wrapped` is `student`, or its DistributedDataParallel wrapper (synchronised on the last sub-network only).
        """
        import torch

        runtime = self.runtime
        local = batch[runtime.rank :: runtime.world]
        length = max(self.inputs.encoded_train.lengths[i] for i in batch)  # same padding on every process
        inputs = {k: v.to(runtime.device) for k, v in collate(self.inputs.encoded_train, local, length).items()}
        # Each process's loss is a mean over its share: scaled so DDP's average is the mean over the global batch.
        scale = len(local) * runtime.world / len(batch)
        autocast = (
            torch.autocast(runtime.device.split(":")[0], dtype=runtime.autocast_dtype)
            if runtime.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        targets = torch.as_tensor(self.inputs.train_targets[local]).to(runtime.device)
        teacher_out: dict[float, Any] = {}
        if teacher is not None:
            with torch.no_grad(), autocast:
                widths = [s.width for s in plan.subs] if self._same_width(plan) else [1.0]
                for width in dict.fromkeys(widths):
                    sub = subnetwork(teacher.arch, width, 1.0) if width != 1.0 else None
                    teacher_out[width] = teacher(**inputs, sub=sub)
        total = 0.0
        for position, sub in enumerate(plan.subs):
            sync = position == len(plan.subs) - 1 or runtime.world == 1
            context = wrapped.no_sync() if not sync else contextlib.nullcontext()
            with context:
                with autocast:
                    out = wrapped(**inputs, sub=sub)
                    if teacher is None:
                        from edgebert.rewire import task_loss

                        task = task_loss(out.logits.float(), targets)
                        loss, logit_term, hidden_term = task, 0.0, 0.0
                    else:
                        reference = teacher_out[sub.width if self._same_width(plan) else 1.0]
                        logit_term = logit_loss(out.logits.float(), reference.logits.float())
                        hidden_term = hidden_loss(out.hidden_states, reference.hidden_states, sub)
                        loss = plan.lambdas[0] * logit_term + plan.lambdas[1] * hidden_term
                        task = torch.zeros(())
                self.scaler.scale(loss * scale).backward()
            terms.add(_number(logit_term), _number(hidden_term), _number(task))
            total += _number(loss)
        terms.batches += 1
        return total

    def _restore(self, state: dict, student: DynaBert, optimizer, scheduler, scaler) -> None:
        """Load a mid-phase checkpoint; one that does not fit this run (another model's) is one line."""
        import torch

        path, expected, saved = self.files.state, student.net.state_dict(), state["model"]
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
            torch.set_rng_state(state["rng"][self.runtime.rank])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise EdgebertError(f"{path} does not fit this run: {first_line(exc)}") from exc
        for group in optimizer.param_groups:
            for param in group["params"]:
                moments = optimizer.state.get(param, {}).values()
                if any(isinstance(m, torch.Tensor) and m.dim() and m.shape != param.shape for m in moments):
                    raise EdgebertError(f"{path} does not fit this run: its optimizer state has other shapes")

    def _same_width(self, plan: PhasePlan) -> bool:
        return plan.name == "depth" and self.config.depth_teacher == "same-width"

    def _elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    # -- state on disk

    def _save_best(self, model: DynaBert, phase: str) -> None:
        state = {n: t.detach().cpu().contiguous() for n, t in model.net.state_dict().items()}
        replace_file(self.files.best(phase), lambda tmp: write_safetensors(state, tmp))

    def _gather_rng(self) -> list:
        import torch

        state = torch.get_rng_state()
        if self.runtime.world == 1:
            return [state]
        import torch.distributed as dist

        states: list = [None] * self.runtime.world
        dist.all_gather_object(states, state)
        return states

    def _save_state(self, index, step, model, optimizer, scheduler, scaler, best_score, best_step, elapsed) -> None:
        rng = self._gather_rng()
        if self.runtime.is_main:
            state = {
                "version": 1,
                "phase_index": index,
                "step": step,
                "model": {n: t.detach().cpu() for n, t in model.net.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "best_score": best_score,
                "best_step": best_step,
                "rng": rng,
                "phase_elapsed": elapsed,
                "elapsed": self._elapsed(),
                "records": [r.model_dump() for r in self.records],
            }
            self._write_state(state)
            self.saved = self._saved_at(index, step)
        self.runtime.barrier()

    def _save_phase_done(self, next_index: int, final_sha256: str | None = None) -> None:
        if self.runtime.is_main:
            state = {
                "version": 1,
                "phase_index": next_index,
                "step": 0,
                "records": [r.model_dump() for r in self.records],
                "elapsed": self._elapsed(),
                "done": True,
                "final_sha256": final_sha256,
            }
            self._write_state(state)
            self.saved = self._saved_at(next_index, None)

    def _write_state(self, state: dict[str, Any]) -> None:
        """state.pt by one rename. torch.save reports a failed write (a full disk) as a RuntimeError about
        stream positions, naming no file: the line names state.pt."""
        import torch

        def save(tmp: Path) -> None:
            try:
                torch.save(state, tmp)
            except RuntimeError as exc:
                raise EdgebertError(f"cannot write {self.files.state}: is the disk full? ({first_line(exc)})") from exc

        replace_file(self.files.state, save)

    # -- the end

    def _finish(self, written: str | None) -> TrainManifest | None:
        """Write the final model and its manifest (unless a resumed run had: `written`), then publish the run onto
        --out by one rename and fill the eval cache; returns the manifest on rank 0."""
        manifest = None
        if self.runtime.is_main:
            if written is None:
                manifest = self._write_final()
            else:
                manifest = read_manifest(self.files.work / TRAIN_MANIFEST, TrainManifest)
            self._publish(manifest)
        self.runtime.barrier()
        return manifest

    def _final_grid(self, arch) -> list[Subnetwork]:
        """The sub-networks the final model is evaluated at: every one trained, and the whole trained grid when a
        width or depth phase made a DynaBERT (plain fine-tuning trained only its own sub-networks)."""
        trained = {(s.width, s.depth) for plan in self.plans for s in plan.subs}
        if any(plan.name != "finetune" for plan in self.plans):
            trained |= set(TRAINED_GRID)
        grid = sorted(trained, key=lambda wd: (-wd[1], -wd[0]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # off-grid points were warned about when the run started
            return [subnetwork(arch, w, d) for w, d in grid]

    def _write_final(self) -> TrainManifest:
        """Final model = the last phase's best, its grid evaluated on --dev, written with the manifest into the run."""
        from edgebert.checkpoint import file_sha256
        from edgebert.evaluate import primary_metric

        final_dir = self.files.phase_dir(self.plans[-1].name)
        model = self._load(final_dir)
        subs = self._final_grid(model.arch)
        many = f"{len(subs)} sub-networks" if len(subs) > 1 else "sub-network"
        self.reporter.message(f"evaluating the final model's {many} on {self.inputs.dev.path}")
        dev_metrics = evaluate_subnetworks(model, self.inputs.dev_set, subs, self.runtime.device)
        if self.plans[-1].name == "finetune":
            largest = self.plans[-1].subs[0]
            weak = self._weak(dev_metrics[subnet_key(largest.width, largest.depth)])
            if weak is not None:
                warnings.warn(
                    f"the fine-tuned model {self.files.out} scores {weak} on {self.inputs.dev.path}: it learnt "
                    "nothing a teacher could pass on (check the labels, --lr, steps); width and depth phases refuse "
                    "it without --allow-weak-teacher",
                    stacklevel=2,
                )
        inputs = self.inputs
        manifest = TrainManifest(
            edgebert_version=__version__,
            teacher=FileRef(path=str(self.checkpoint.path.resolve()), sha256=self.checkpoint.weights_sha256),
            train_data=FileRef(
                path=str(inputs.train.path.resolve()), sha256=inputs.train.sha256, examples=len(inputs.indices)
            ),
            dev_data=FileRef(path=str(inputs.dev.path.resolve()), sha256=inputs.dev.sha256, examples=len(inputs.dev)),
            eval_data=(
                FileRef(path=str(inputs.eval.path.resolve()), sha256=inputs.eval.sha256, examples=len(inputs.eval))
                if inputs.eval
                else None
            ),
            selected_on=inputs.selected_on,
            metric=primary_metric(next(iter(dev_metrics.values())))[0],
            phases=self.records,
            hyperparameters=self.config.hyperparameters(),
            rewiring=self.rewiring,
            dev_metrics=dev_metrics,
            world_size=self.runtime.world,
            device=self.runtime.device,
            wall_time_s=round(self._elapsed(), 2),
        )
        work = self.files.work
        for path in final_dir.iterdir():  # the run is private until published: no staging needed in it
            shutil.copyfile(path, work / path.name)
        (work / TRAIN_MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
        self._save_phase_done(len(self.plans), final_sha256=file_sha256(work / TRAIN_MANIFEST))
        return manifest

    def _publish(self, manifest: TrainManifest) -> None:
        """One rename puts the finished run onto --out (an earlier run, with --force, stays whole until then)."""
        from edgebert.evaluate import model_key, record_result

        files = self.files
        for folder in (files.work, files.work / PHASES_DIR):  # staging left by a process killed while saving
            remove_stale_staging(folder)
        options = {"force": self.replace, "replaceable": replaceable_run, "protect": [self.checkpoint.path]}
        publish(files.work, files.out, files.home, **options)
        checkpoint = load_checkpoint(files.out)
        key = model_key(checkpoint)
        for sub in self._final_grid(checkpoint.arch):
            metrics = manifest.dev_metrics[subnet_key(sub.width, sub.depth)]
            record_result(key, self.inputs.dev, self.inputs.max_length, costs(checkpoint.arch, sub), metrics)
        shutil.rmtree(files.home, ignore_errors=True)  # with the earlier run the rename swapped into it


def _number(value) -> float:
    return float(value.detach()) if hasattr(value, "detach") else float(value)


def _load_weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


# ---- entry point ----------------------------------------------------------------------------------


def _run_spec(inputs: Inputs, config: TrainConfig, world: int, columns: Columns) -> RunSpec:
    """What must match for --resume to continue a run: same teacher, data (and its columns), hyperparameters and
    processes."""
    return RunSpec(
        text_column=list(columns.text) if columns.text is not None else None,
        label_column=columns.label,
        teacher_sha256=inputs.checkpoint.weights_sha256,
        train_sha256=inputs.train.sha256,
        dev_sha256=inputs.dev.sha256,
        eval_sha256=inputs.eval.sha256 if inputs.eval else None,
        hyperparameters=config.hyperparameters(),
        world_size=world,
    )


def resume_conflicts(previous: RunSpec, spec: RunSpec, state: dict | None, examples: int) -> list[str]:
    """Each setting of a resumed run (`spec`) that differs from the run it continues and would change what that run
    already trained, named with both values. Phase lengths may change except for the phase under way, whose
    learning-rate decay (and warm-up) follows its number of steps; `examples`: the training examples per epoch."""
    kept = ("version", "replace_out", "hyperparameters")  # not settings, or compared one by one below
    old, new = ({**{k: v for k, v in x if k not in kept}, **x.hyperparameters} for x in (previous, spec))
    mid_phase = state is not None and "model" in state
    conflicts = []
    for name in dict.fromkeys([*new, *old]):
        if old.get(name) == new.get(name) or name in RESUME_MAY_CHANGE:
            continue
        why = ""
        if name in PHASE_LENGTH:
            lengths = [steps_for(_length_settings(values), examples)[1] for values in (previous, spec)]
            if not mid_phase or lengths[0] == lengths[1]:
                continue
            why = f": phase {state['phase_index'] + 1} is under way and its learning-rate decay follows its steps"
        values = "other content" if name.endswith("sha256") else f"{old.get(name)!r}, now {new.get(name)!r}"
        conflicts.append(f"{name} ({values}){why}")
    return conflicts


def _length_settings(spec: RunSpec) -> TrainConfig:
    """The settings `steps_for` reads, from a run spec's hyperparameters."""
    return TrainConfig(**{key: spec.hyperparameters[key] for key in (*PHASE_LENGTH, "batch_size")})


def _prepare_run(files: RunFiles, spec: RunSpec, force: bool, resume: bool, examples: int) -> tuple[dict | None, bool]:
    """With the run's home locked: check what --resume continues, or clear what a fresh run starts over.

    Returns the resume state (None: from the start) and whether the finished run may replace --out.
    """
    out = files.out
    if not resume:
        if files.state.is_file() and not force:
            raise EdgebertError(
                f"{out} has an unfinished run (in {files.home}): --resume continues it, --force starts again"
            )
        for leftover in (files.run_dir, files.work, files.aside):
            if leftover.is_dir():
                shutil.rmtree(leftover)
        return None, force
    if not files.spec.is_file():
        raise _nothing_to_resume(files)
    previous = read_manifest(files.spec, RunSpec)
    state = load_state(files.state) if files.state.is_file() else None
    conflicts = resume_conflicts(previous, spec, state, examples)
    if conflicts:
        raise EdgebertError(
            f"--resume: {out} was started with other settings: {'; '.join(conflicts)}; resume with the values it was "
            f"started with (only {', '.join(RESUME_MAY_CHANGE)} may change, and {', '.join(PHASE_LENGTH)} at a phase "
            "boundary)"
        )
    if state is not None and state.get("final_sha256") and not _unpublished(files, state["final_sha256"]):
        shutil.rmtree(files.home)  # killed after publishing, before this cleanup
        raise EdgebertError(f"{out} has no unfinished edgebert run to resume: {out} holds the finished run")
    return state, force or previous.replace_out


def _nothing_to_resume(files: RunFiles) -> EdgebertError:
    finished = f": {files.out} holds a finished run" if (files.out / TRAIN_MANIFEST).is_file() else ""
    return EdgebertError(f"{files.out} has no unfinished edgebert run to resume{finished}")


def _unpublished(files: RunFiles, manifest_sha256: str) -> bool:
    """Whether the run's output still holds the finished run (after publishing it holds the run it replaced)."""
    from edgebert.checkpoint import file_sha256

    manifest = files.work / TRAIN_MANIFEST
    return manifest.is_file() and file_sha256(manifest) == manifest_sha256


def train(
    model: str | Path,
    train_file: str | Path,
    dev_file: str | Path,
    out: str | Path,
    config: TrainConfig = TrainConfig(),
    eval_file: str | Path | None = None,
    force: bool = False,
    resume: bool = False,
    reporter: Reporter | None = None,
    allow_weak_teacher: bool = False,
    columns: Columns | None = None,
) -> TrainManifest | None:
    """Train a DynaBERT from `model`; returns the manifest (on rank 0; None on other ranks).

    The run lives beside --out (`RunFiles`) and is published onto it by one rename when done; with
    `force` it may replace an earlier run `train` wrote there (`replaceable_run`), never the teacher.
    Width and depth phases refuse a teacher no better than a constant guess on the dev set unless
    `allow_weak_teacher`. `columns` names the data files' text and target columns (None: GLUE's names).
    """
    check_config(config)
    reporter = reporter or SilentReporter()
    columns = columns or Columns()
    out = Path(out)
    output = {"replaceable": replaceable_run, "protect": [Path(model)]}
    files = RunFiles(out)
    if resume and not files.spec.is_file():  # before any work (and again under the run's lock)
        raise _nothing_to_resume(files)
    refuse_existing(out, force=force or resume, **output)  # before any work; a resumed run's own --force below
    refuse_existing(files.home, force=True, protect=[Path(model)])  # nor is it in the run's own directory
    runtime = start_runtime(config.mixed_precision)
    if not runtime.is_main:  # one process shows progress: a log gets each line once
        reporter = SilentReporter()
    if config.batch_size < runtime.world:
        raise EdgebertError(f"batch size {config.batch_size} is smaller than the {runtime.world} processes")
    evaluation = Path(eval_file) if eval_file else None
    inputs = read_inputs(model, Path(train_file), Path(dev_file), evaluation, config, columns)
    spec = _run_spec(inputs, config, runtime.world, columns)
    with hold_run(files) if runtime.is_main else contextlib.nullcontext():
        resume_state, replace = None, force
        if runtime.is_main:
            resume_state, replace = _prepare_run(files, spec, force, resume, len(inputs.encoded_train))
            refuse_existing(out, force=replace, **output)
            files.run_dir.mkdir(exist_ok=True)
            files.work.mkdir(exist_ok=True)
            text = spec.model_copy(update={"replace_out": replace}).model_dump_json(indent=2)
            replace_file(files.spec, lambda tmp: tmp.write_text(text, encoding="utf-8"))
            truncate_metrics(files.metrics, resume_state)
        runtime.barrier()
        if not runtime.is_main and resume and files.state.is_file():
            resume_state = load_state(files.state)
        return Trainer(inputs, config, out, runtime, reporter, replace, allow_weak_teacher).run(resume_state)
