"""All-or-nothing outputs: stage beside the target, then put it in place with one rename.

The rules every command that writes follows:
- a failure (bad input, a failed parity gate, Ctrl-C, SIGKILL) leaves the target as it was,
  never half-written: the path always holds the old or the new output, whole;
- without `force` nothing that exists is replaced, checked again at the moment of the rename
  (not only when staging starts), so concurrent runs cannot both "succeed";
- with `force` only what the caller recognises as its own kind of output is replaced (a slice
  directory with its manifest, an artifact with its sidecar), never a source nor a directory
  holding one, never a symbolic link;
- writers in one directory are serialised by a lock on that directory (POSIX `flock`), so
  read-modify-write appends lose nothing;
- staging directories of processes that died (SIGKILL) are removed by the next writer there.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from edgebert.errors import EdgebertError
from edgebert.manifests import read_json

# Why `path` may not be replaced, or None when it may: each command knows its own kind of output.
ReplaceCheck = Callable[[Path], "str | None"]

STAGING_SUFFIX = ".partial"
STAGING_MARKER = ".edgebert-staging"  # inside every staging directory: "<host> <pid>"
STAGING_NAME = re.compile(r"\.(\d+)-[a-z0-9_]+\.partial$")  # the pid in `.<name>.<pid>-<random>.partial`
MAX_STAGED_NAME = 60  # characters of the target's name kept in the staging directory's name

_held: dict[str, int] = {}  # directories this process holds the lock of, with a re-entry count
_held_guard = threading.Lock()


def refuse_existing(
    *targets: Path,
    force: bool = False,
    replaceable: ReplaceCheck | None = None,
    protect: Iterable[Path] = (),
) -> None:
    """Fail unless every target may be written: callers check early, before slow work (and again at the rename)."""
    protected = [Path(p) for p in protect]
    for target in targets:
        _check_target(Path(target), force, replaceable, protected)


def owned_directory(manifest: str, files: Iterable[str] | Callable[[Path], Iterable[str]], kind: str) -> ReplaceCheck:
    """The check for a directory edgebert wrote: it has `manifest` and only regular files named in `files`.

    `files` are paths relative to the directory (`1_Pooling/config.json` allows that folder and
    that file in it, `phases/width/config.json` each folder on the way), or a function of the
    directory giving them, for outputs whose contents depend on what they hold (a
    sentence-transformers slice names its folders in its own modules.json); an EdgebertError it
    raises is the reason the directory is not replaceable.
    """

    def why_not(path: Path) -> str | None:
        if not path.is_dir():
            return "is not a directory"
        if not (path / manifest).is_file():
            return f"has no {manifest}, so it is not a {kind} edgebert wrote"
        try:
            allowed = {manifest, *(files(path) if callable(files) else files)}
        except EdgebertError as exc:
            return str(exc)
        folders = {name.rsplit("/", i)[0] for name in allowed for i in range(1, name.count("/") + 1)}

        def foreign_in(folder: Path) -> Iterator[str]:
            for entry in folder.iterdir():
                name = entry.relative_to(path).as_posix()
                if name in folders and _real_dir(entry):
                    yield from foreign_in(entry)
                elif name in folders or name not in allowed or not entry.is_file() or entry.is_symlink():
                    yield name

        foreign = sorted(foreign_in(path))
        if foreign:
            return f"holds {len(foreign)} file(s) edgebert does not write ({', '.join(foreign[:3])})"
        return None

    return why_not


def _real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _check_target(target: Path, force: bool, replaceable: ReplaceCheck | None, protected: list[Path]) -> None:
    resolved = target.resolve()
    for source in protected:
        source = source.resolve()
        if resolved == source or resolved in source.parents:
            what = "is" if resolved == source else "contains"
            raise EdgebertError(f"{target} {what} the source model {source}: choose another output")
    if not os.path.lexists(target):
        return
    if not force:
        raise EdgebertError(f"{target} already exists: pass --force to replace it")
    if target.is_symlink():
        raise EdgebertError(f"{target} is a symbolic link: refusing to replace it, even with --force")
    why_not = replaceable(target) if replaceable is not None else None
    if why_not:
        raise EdgebertError(f"{target} {why_not}: refusing to replace it, even with --force")


@contextmanager
def staged_outputs(
    *targets: Path,
    force: bool = False,
    replaceable: ReplaceCheck | None = None,
    protect: Iterable[Path] = (),
) -> Iterator[list[Path]]:
    """Yield scratch paths, one per target (file or directory); put them onto the targets on success.

    `replaceable` decides, with `force`, whether an existing target is edgebert's own output
    (None: any file or directory may be replaced, for callers that own the location, such as
    caches). The targets are renamed in order; a reader of a pair (artifact, sidecar) must check
    that they belong together, since two renames are not one.
    """
    targets = tuple(Path(t) for t in targets)
    protected = [Path(p) for p in protect]
    if len({t.name for t in targets}) != len(targets):
        raise ValueError(f"targets need distinct names: {targets}")
    refuse_existing(*targets, force=force, replaceable=replaceable, protect=protected)
    parent = targets[0].parent
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(parent)
    scratch = None
    try:
        scratch = _make_staging_dir(parent, targets[0].name)
        yield [scratch / target.name for target in targets]
        with directory_lock(parent):
            for target in targets:  # again, now: something may have appeared while we staged
                _check_target(target, force, replaceable, protected)
            for target in targets:
                _put_in_place(scratch / target.name, target, scratch)
    except OSError as exc:  # a full disk: the line names the user's path, not a scratch one about to vanish
        _name_target(exc, parent, targets)
        raise
    finally:
        if scratch is not None:
            _remove_staging(scratch)


def _make_staging_dir(parent: Path, name: str) -> Path:
    prefix = f".{name[:MAX_STAGED_NAME]}.{os.getpid()}-"
    scratch = Path(tempfile.mkdtemp(prefix=prefix, suffix=STAGING_SUFFIX, dir=parent))
    try:
        (scratch / STAGING_MARKER).write_text(f"{socket.gethostname()} {os.getpid()}\n", encoding="utf-8")
    except BaseException:  # a full disk fails the marker's write: no staging directory is left behind
        _remove_staging(scratch)
        raise
    return scratch


@contextmanager
def naming(path: Path) -> Iterator[None]:
    """Give `path` to an OSError raised without one: a failed write or close says only "No space left on device"."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise


def _name_target(exc: OSError, parent: Path, targets: tuple[Path, ...]) -> None:
    """Point an error's paths inside a staging directory in `parent` at the target they were staged for (the
    first target when the path is the staging directory, its marker, or none)."""

    def shown(name: object) -> object:
        path = Path(os.fsdecode(name)) if isinstance(name, str | bytes) else None
        if path is None or not path.is_relative_to(parent) or path == parent:
            return name
        scratch, *inside = path.relative_to(parent).parts
        if not STAGING_NAME.search(scratch):
            return name
        target = next((t for t in targets if inside and t.name == inside[0]), None)
        return str(target.joinpath(*inside[1:])) if target is not None else str(targets[0])

    if exc.filename is None:
        exc.filename = str(targets[0])
    exc.filename, exc.filename2 = shown(exc.filename), shown(exc.filename2)
    if exc.filename2 == exc.filename:
        exc.filename2 = None


def publish(
    staged: Path,
    target: Path,
    aside: Path,
    force: bool = False,
    replaceable: ReplaceCheck | None = None,
    protect: Iterable[Path] = (),
) -> None:
    """Put `staged`, built elsewhere in `target`'s directory, onto `target` by one rename, as `staged_outputs` does.

    For outputs that outlive a process before they are published (a training run, resumable after
    SIGKILL), so they cannot sit in a staging directory the next writer removes. The target is
    checked under the directory lock; the old output lands at `staged` (or in `aside`, a directory,
    where the system cannot swap), for the caller to remove.
    """
    with directory_lock(target.parent):
        _check_target(target, force, replaceable, [Path(p) for p in protect])
        _put_in_place(staged, target, aside)


def _put_in_place(staged: Path, target: Path, scratch: Path) -> None:
    """One rename: a new target appears whole; an old one is swapped out in the same step where the OS allows."""
    if not os.path.lexists(target):
        _rename_noreplace(staged, target)
    elif staged.is_dir() or target.is_dir():
        if staged.is_dir() != target.is_dir():
            raise EdgebertError(f"{target} is a {'directory' if target.is_dir() else 'file'}: refusing to replace it")
        if not _renameat2(staged, target, _RENAME_EXCHANGE):  # one swap; the old lands in scratch
            # No atomic swap on this system: the old output steps aside first, and back if the new cannot follow.
            aside = scratch / f"old-{target.name}"
            target.rename(aside)
            try:
                staged.rename(target)
            except BaseException:
                aside.rename(target)
                raise
    else:
        os.replace(staged, target)


# ---- Linux renameat2: create-only and swap in one system call ------------------------------------

_AT_FDCWD = -100
_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2


def _renameat2(source: Path, target: Path, flags: int) -> bool:
    """True when done; False when this system has no renameat2 or this filesystem no such flag."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    call = getattr(libc, "renameat2", None)
    if call is None:
        return False
    if call(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # not supported here
        return False
    raise OSError(code, os.strerror(code), str(target))


def _rename_noreplace(source: Path, target: Path) -> None:
    try:
        done = _renameat2(source, target, _RENAME_NOREPLACE)
    except FileExistsError as exc:
        raise EdgebertError(f"{target} appeared while edgebert was writing it: left as it is") from exc
    if not done:  # under the directory lock, and checked just before: only a non-edgebert writer can race
        if os.path.lexists(target):
            raise EdgebertError(f"{target} appeared while edgebert was writing it: left as it is")
        source.rename(target)


# ---- serialising writers -------------------------------------------------------------------------


@contextmanager
def directory_lock(directory: Path) -> Iterator[None]:
    """Exclusive lock on a directory shared by every edgebert process writing there (re-entrant within one)."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; single-writer use only
        yield
        return
    key = os.path.realpath(directory)
    with _held_guard:
        if key in _held:
            _held[key] += 1
            fd = None
        else:
            fd = os.open(key, os.O_RDONLY)
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with _held_guard:
                _held[key] = 1
        yield
    finally:
        with _held_guard:
            _held[key] -= 1
            if _held[key] == 0:
                del _held[key]
        if fd is not None:
            os.close(fd)  # closing releases the flock


def replace_file(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)`, fsync, then one rename onto `path` (edgebert's own files: checkpoints, run records)."""
    with staged_outputs(Path(path), force=True, replaceable=_regular_file) as (staged,), naming(staged):
        write(staged)
        _fsync(staged)


def append_json_list(path: Path, item: Any, what: str = "results") -> int:
    """Append `item` to the JSON list in `path` (created if absent), serialised and atomic; return the new length."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with directory_lock(path.parent):
        items = read_json_list(path, what)
        items.append(item)
        replace_file(path, lambda staged: staged.write_text(json.dumps(items, indent=2) + "\n", encoding="utf-8"))
    return len(items)


def read_json_list(path: Path, what: str) -> list:
    if not os.path.lexists(path):
        return []
    if path.is_symlink() or not path.is_file():
        raise EdgebertError(f"{path}: not a regular file; give a new file or a JSON list of {what}")
    if path.stat().st_size == 0:
        return []
    try:
        items = read_json(path)
    except EdgebertError as exc:
        raise EdgebertError(f"{exc}; give a new file or a JSON list of {what}") from exc
    if not isinstance(items, list):
        raise EdgebertError(f"{path}: holds a JSON {type(items).__name__}, expected a list of {what}")
    return items


def _regular_file(path: Path) -> str | None:
    return None if path.is_file() else "is not a regular file"


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


# ---- leftovers of killed processes ---------------------------------------------------------------


def remove_stale_staging(parent: Path) -> list[Path]:
    """Delete staging directories in `parent` whose writer (on this host) is no longer running.

    Ours by name (`.<name>.<pid>-<random>.partial`) and by marker ("<host> <pid>"); a directory
    killed before or while its marker was written (creating and filling a file are two steps) is
    recognised by its name and by holding nothing but an empty marker.
    """
    removed = []
    host = socket.gethostname()
    for entry in parent.glob(f".*{STAGING_SUFFIX}"):
        named = STAGING_NAME.search(entry.name)
        if named is None or entry.is_symlink() or not entry.is_dir():
            continue
        pid = int(named.group(1))
        try:
            marker = (entry / STAGING_MARKER).read_text(encoding="utf-8").split()
        except FileNotFoundError:
            marker = []
        except OSError:
            continue
        unfinished = not marker and all(p.name == STAGING_MARKER for p in entry.iterdir())
        ours = unfinished or marker == [host, str(pid)]
        if ours and not _alive(pid):
            _remove_staging(entry)
            removed.append(entry)
    return removed


def _remove_staging(scratch: Path) -> None:
    """Delete a staging directory, its marker last: killed midway, it is left marked or empty, so still ours to sweep.

    (A plain rmtree goes in directory order: killed after the marker went, it left files and no proof they are ours.)
    """
    with suppress(OSError):  # what cannot be removed stays, with the marker, for a later sweep
        for entry in list(scratch.iterdir()):
            if entry.name == STAGING_MARKER:
                continue
            if _real_dir(entry):
                shutil.rmtree(entry)
            else:
                entry.unlink()
        (scratch / STAGING_MARKER).unlink(missing_ok=True)
        scratch.rmdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True
