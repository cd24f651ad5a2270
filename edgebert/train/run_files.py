"""Where a run lives (`RunFiles`: a hidden home beside --out), who may use it (a lock), and what --force may replace."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgebert.atomic import STAGING_MARKER, STAGING_NAME, owned_directory
from edgebert.errors import EdgebertError
from edgebert.manifests import REWIRE_MANIFEST, SLICE_MANIFEST, TRAIN_MANIFEST, TrainManifest, read_manifest
from edgebert.slicing import MODEL_DIR_FILES
from edgebert.subnet import subnet_key
from edgebert.train.config import FINAL, PHASES

RUN_HOME_SUFFIX = ".train-run"  # a run in progress lives in `.<out name>.train-run` beside --out
RUN_MARKER = ".edgebert-train-run"  # in the run's home: "<host> <pid>" of the process training it
OUTPUT_DIR = "output"  # in the run's home: what is published onto --out when the run is done
MAX_HOME_NAME = 200  # characters of --out's name kept in the home's name
RUN_DIR = "checkpoints"  # in the run's home: the resume state
PHASES_DIR = "phases"  # each finished phase's best model (rewired/, width/, depth/, finetune/, final/<key>/)
METRICS_FILE = "metrics.jsonl"
STATE_FILE = "state.pt"
RUN_FILE = "run.json"
AUGMENTED_DIR = "augmented"  # in the run's home: the augmented data `--augment N` made, kept for --resume


@dataclass
class RunFiles:
    """Where a run lives: its home, a hidden directory beside --out, until it is published onto --out by one rename.

    The home's name follows from --out, so `--resume` finds it after a crash, and it is never the
    user's --out: an interrupted or failed run leaves --out as it was. It holds the resume state
    (`checkpoints/`), the output being built (`output/`: phases/, metrics.jsonl, then the final
    model and its manifest), the augmented data `--augment` made (`augmented/`) and a marker naming
    the process training it.
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
    def augmented_dir(self) -> Path:
        return self.home / AUGMENTED_DIR

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
        """The best weights so far of the phase whose folder under phases/ is `phase`."""
        return self.run_dir / f"best-{phase.replace('/', '-')}.safetensors"

    def full_size(self, phase: str) -> Path:
        """A final phase's specialised model at full size, which its slice in phases/ is cut from (not published)."""
        return self.run_dir / phase


def output_files(path: Path) -> list[str]:
    """What a finished `train` writes into --out besides its manifest (an EdgebertError when `path` is no finished
    run: a damaged manifest, or no model), defined once for `--force` and for publishing."""
    try:
        manifest = read_manifest(path / TRAIN_MANIFEST, TrainManifest)
    except EdgebertError as exc:
        raise EdgebertError(f"has an {TRAIN_MANIFEST} edgebert would not write ({exc})") from exc
    for name in ("config.json", "model.safetensors"):
        if not (path / name).is_file():
            raise EdgebertError(f"has no {name}, so it is not a finished training run")
    phases = [f"{PHASES_DIR}/{phase}/{name}" for phase in ("rewired", *PHASES) for name in MODEL_DIR_FILES]
    finals = [
        f"{PHASES_DIR}/{FINAL}/{subnet_key(*record.subnetworks[0])}/{name}"
        for record in manifest.phases
        if record.name == FINAL
        for name in (*MODEL_DIR_FILES, SLICE_MANIFEST)
    ]
    return [*MODEL_DIR_FILES, METRICS_FILE, *phases, *finals, f"{PHASES_DIR}/rewired/{REWIRE_MANIFEST}"]


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
    ours = {RUN_MARKER, RUN_DIR, OUTPUT_DIR, AUGMENTED_DIR, files.aside.name}
    foreign = sorted(entry.name for entry in home.iterdir() if entry.name not in ours)
    if foreign:
        raise EdgebertError(f"{home} holds files edgebert train does not write ({', '.join(foreign[:3])}): move them")
