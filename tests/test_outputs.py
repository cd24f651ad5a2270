"""Nothing lost: what `--force` may replace, concurrent writers, SIGKILL at any moment, leftovers.

The facts checked are the file system's: which files exist afterwards with which bytes, not what
edgebert reports about them.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from edgebert.atomic import STAGING_MARKER, append_json_list, remove_stale_staging, staged_outputs
from edgebert.errors import EdgebertError
from tests.cli_checks import assert_one_line_error


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under `root` with its sha256: the independent record of what was there."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def project(tmp_path, tiny_models) -> Path:
    """P/model (a copy of the tiny BERT classifier) and P/notes.txt: a user's folder."""
    root = tmp_path / "P"
    shutil.copytree(tiny_models["bert-cls"], root / "model")
    (root / "notes.txt").write_text("mine\n")
    return root


@pytest.fixture(scope="module")
def warm():
    """A multiprocessing context whose children fork from one server that imported torch and transformers
    (and started no thread): each child slices within milliseconds instead of importing for seconds."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["edgebert.slicing", "edgebert.model"])
    return context


# ---- --force ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("out", "fragment"),
    [(".", "contains the source model"), ("model", "is the source model"), ("notes.txt", "not a directory")],
)
def test_force_never_touches_the_source_or_what_edgebert_did_not_write(run_cli, project, out, fragment):
    before = tree_digest(project)
    result = run_cli("slice", project / "model", "--width", ".5", "--depth", ".5", "--out", project / out, "--force")
    assert_one_line_error(result, fragment)
    assert tree_digest(project) == before


def test_force_refuses_a_foreign_directory_and_a_slice_with_foreign_files(run_cli, project, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("1,2\n")
    args = ("slice", project / "model", "--width", ".5", "--depth", ".5", "--force", "--out")
    assert_one_line_error(run_cli(*args, foreign), "not a slice edgebert wrote")
    assert tree_digest(foreign) == {"data.csv": hashlib.sha256(b"1,2\n").hexdigest()}

    own = tmp_path / "own"
    assert run_cli(*args, own).code == 0
    (own / "README.md").write_text("my notes\n")
    assert_one_line_error(run_cli(*args, own), "edgebert does not write (README.md)")
    assert (own / "README.md").read_text() == "my notes\n"


def test_force_replaces_its_own_slice(run_cli, project, tmp_path):
    out = tmp_path / "s"
    assert run_cli("slice", project / "model", "--width", ".5", "--depth", ".5", "--out", out).code == 0
    assert run_cli("slice", project / "model", "--width", ".25", "--depth", "1", "--out", out, "--force").code == 0
    manifest = json.loads((out / "edgebert.json").read_text())
    assert (manifest["width"], manifest["depth"]) == (0.25, 1.0)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


# ---- the check at the moment of the rename ------------------------------------------------------------


def test_a_target_that_appears_while_staging_is_left_alone(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(EdgebertError, match="already exists|appeared while"), staged_outputs(target) as (staged,):
        staged.mkdir()
        (staged / "new.txt").write_text("new")
        target.mkdir()  # someone else, meanwhile
        (target / "theirs.txt").write_text("theirs")
    assert tree_digest(target) == {"theirs.txt": hashlib.sha256(b"theirs").hexdigest()}
    assert list(tmp_path.iterdir()) == [target]


def test_force_checks_the_kind_again_at_the_rename(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("edgebert's")

    def only_edgebert_text(path: Path) -> str | None:
        return None if path.read_text() == "edgebert's" else "is not edgebert's"

    staging = staged_outputs(target, force=True, replaceable=only_edgebert_text)
    with pytest.raises(EdgebertError, match="is not edgebert's"), staging as (staged,):
        staged.write_text("new")
        target.write_text("the user's")
    assert target.read_text() == "the user's"


def _slice_once(model: str, out: str, queue) -> None:
    from edgebert.slicing import slice_model

    try:
        slice_model(model, 0.5, 0.5, out=out)
        queue.put("ok")
    except EdgebertError as exc:
        queue.put(f"error: {exc}")


def test_concurrent_slices_to_one_out_exactly_one_wins(project, tmp_path, warm):
    queue = warm.Queue()
    out = tmp_path / "same"
    workers = [warm.Process(target=_slice_once, args=(str(project / "model"), str(out), queue)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    outcomes = sorted(queue.get(timeout=5) for _ in workers)
    assert outcomes.count("ok") == 1, outcomes
    assert all("exists" in o or "appeared while" in o for o in outcomes if o != "ok"), outcomes
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.json", "model.safetensors", "edgebert.json", "vocab.txt", "tokenizer_config.json"]
    )


# ---- appends from many processes -------------------------------------------------------------------------


def _append_many(path: str, worker: int, count: int) -> None:
    for index in range(count):
        append_json_list(Path(path), {"worker": worker, "index": index})


def test_concurrent_appends_lose_nothing(tmp_path, warm):
    path = tmp_path / "results.json"
    original = [{"original": i} for i in range(100)]
    path.write_text(json.dumps(original))
    workers = [warm.Process(target=_append_many, args=(str(path), w, 40)) for w in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    entries = json.loads(path.read_text())
    assert entries[:100] == original
    appended = {(e["worker"], e["index"]) for e in entries[100:]}
    assert len(entries) == 100 + 6 * 40 and appended == {(w, i) for w in range(6) for i in range(40)}
    assert [p for p in tmp_path.iterdir() if p != path] == []


# ---- SIGKILL at any moment ---------------------------------------------------------------------------------


def _append_forever(path: str) -> None:
    index = 0
    while True:
        append_json_list(Path(path), {"index": index, "padding": "x" * 20000})
        index += 1


def test_sigkill_during_appends_leaves_a_whole_file_and_the_next_run_cleans_up(tmp_path, warm):
    path = tmp_path / "results.json"
    path.write_text(json.dumps([{"original": True}]))
    rng = random.Random(0)
    previous: list = []
    for _ in range(8):
        child = warm.Process(target=_append_forever, args=(str(path),))
        child.start()
        time.sleep(rng.uniform(0.05, 0.5))
        child.kill()  # SIGKILL
        child.join()
        entries = json.loads(path.read_text())  # whole: it parses, and nothing before was lost
        assert entries[0] == {"original": True} and entries[: len(previous)] == previous
        previous = entries
    assert len(previous) > 1, "no append finished before a kill: the kills proved nothing"
    append_json_list(path, {"last": True})
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # dead writers' staging removed


def _slice_forever(model: str, out: str, replaced) -> None:
    from edgebert.slicing import slice_model

    while True:
        for width in (0.25, 0.5):
            slice_model(model, width, 1.0, out=out, force=True)
            replaced.set()


def test_sigkill_during_slice_leaves_the_old_or_the_new_slice_whole(project, tmp_path, warm):
    from edgebert.slicing import load_slice, slice_model

    out = tmp_path / "slice"
    slice_model(project / "model", 1.0, 1.0, out=out)
    rng = random.Random(1)
    for _ in range(3):
        replaced = warm.Event()
        child = warm.Process(target=_slice_forever, args=(str(project / "model"), str(out), replaced))
        child.start()
        # After the child's first slice (on a busy machine its start outlasted a fixed 0.2-1 s sleep, so nothing was
        # replaced to kill), a slice takes tens of milliseconds: the kill lands at a random moment of one
        assert replaced.wait(timeout=300), "the child never finished a slice"
        time.sleep(rng.uniform(0.0, 0.3))
        child.kill()  # SIGKILL
        child.join()
        manifest = load_slice(out).manifest
        assert manifest["width"] in (0.25, 0.5)
        assert manifest["size_bytes"] == (out / "model.safetensors").stat().st_size
    slice_model(project / "model", 0.5, 0.5, out=tmp_path / "other")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["P", "other", "slice"]


def _replace_killed_at(target: str, step: int) -> None:
    """Replace the directory `target` with new files; SIGKILL this process at the `step`-th file or folder removed
    once the new one is in place: the cleanup of the staging directory (holding the old target, swapped out)."""
    import signal

    removed = 0

    def or_killed(call):
        def removal(*args, **kwargs):
            nonlocal removed
            removed += 1
            if removed == step:
                os.kill(os.getpid(), signal.SIGKILL)
            return call(*args, **kwargs)

        return removal

    with staged_outputs(Path(target), force=True) as (staged,):
        staged.mkdir()
        for name in ("a", "b", "c"):
            (staged / name).write_text("new")
        os.unlink, os.rmdir = or_killed(os.unlink), or_killed(os.rmdir)


def test_sigkill_at_any_step_of_the_cleanup_leaves_staging_the_next_writer_removes(tmp_path, warm):
    target = tmp_path / "slice"  # ext4 lists it after the marker (hashed order): plain rmtree removed the marker first
    target.mkdir()
    for name in ("a", "b", "c"):
        (target / name).write_text("old")
    new = {name: hashlib.sha256(b"new").hexdigest() for name in ("a", "b", "c")}
    for step in range(1, 20):
        child = warm.Process(target=_replace_killed_at, args=(str(target), step))
        child.start()
        child.join()
        assert child.exitcode in (0, -9)  # finished, or SIGKILLed
        assert tree_digest(target) == new
        remove_stale_staging(tmp_path)  # what the next writer here does first
        assert [p.name for p in tmp_path.iterdir()] == ["slice"], f"killed at removal {step}"
        if child.exitcode == 0:  # the cleanup has fewer steps: each was a kill point
            break
    else:
        raise AssertionError("the cleanup never finished: the kills did not cover it")


# ---- leftovers -------------------------------------------------------------------------------------------------


def test_only_dead_writers_staging_is_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    hostname = __import__("socket").gethostname()
    staged = {}
    for name, marker in [
        ("dead", f"{hostname} {dead.pid}"),
        ("alive", f"{hostname} {os.getpid()}"),
        ("other-host", f"elsewhere {dead.pid}"),
    ]:
        staged[name] = tmp_path / f".x-{name}.{dead.pid if name != 'alive' else os.getpid()}-abc.partial"
        staged[name].mkdir()
        (staged[name] / STAGING_MARKER).write_text(marker)
    early, marking = f".killed-early.{dead.pid}-abc.partial", f".killed-marking.{dead.pid}-abc.partial"
    (tmp_path / early).mkdir()  # killed before its marker: empty
    (tmp_path / marking).mkdir()  # killed between creating its marker and writing it (seen in a SIGKILL run)
    (tmp_path / marking / STAGING_MARKER).write_text("")
    for name in ("not-ours", "not-ours-empty-marker"):  # no host and pid, not empty: not ours to judge
        (tmp_path / f".{name}.{dead.pid}-abc.partial").mkdir()
        (tmp_path / f".{name}.{dead.pid}-abc.partial" / "data").write_text("x")
    (tmp_path / f".not-ours-empty-marker.{dead.pid}-abc.partial" / STAGING_MARKER).write_text("")
    (tmp_path / ".no-pid.partial").mkdir()
    removed = remove_stale_staging(tmp_path)
    assert sorted(p.name for p in removed) == sorted([staged["dead"].name, early, marking])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [
            staged["alive"].name,
            staged["other-host"].name,
            f".not-ours.{dead.pid}-abc.partial",
            f".not-ours-empty-marker.{dead.pid}-abc.partial",
            ".no-pid.partial",
        ]
    )


# ---- a full disk ---------------------------------------------------------------------------------------------------


def _on_a_full_disk(limit: int, connection, call: str, *args) -> None:
    """Run `call` (`cli` for `edgebert ARGS`, `append` for `append_json_list`) where no file may grow past
    `limit` bytes: with RLIMIT_FSIZE a write past it fails (EFBIG) as on a full disk (ENOSPC), no root needed."""
    import io
    import resource
    import signal

    from edgebert.cli import main, os_error_line

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the first write past the limit kills the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    sys.stdout, sys.stderr = io.StringIO(), io.StringIO()  # the pipe carries them back: no file grows here
    code = 0
    try:
        if call == "cli":
            main(list(args))
        else:
            append_json_list(Path(args[0]), {"new": True})
    except SystemExit as exc:
        code = exc.code
    except OSError as exc:
        code, sys.stderr = 1, io.StringIO(f"error: {os_error_line(exc)}\n")  # what `main` prints for it
    connection.send((code, sys.stdout.getvalue(), sys.stderr.getvalue()))


def _full_disk_run(warm, limit: int, call: str, *args) -> SimpleNamespace:
    receiver, sender = warm.Pipe(duplex=False)
    child = warm.Process(target=_on_a_full_disk, args=(limit, sender, call, *map(str, args)))
    child.start()
    child.join(120)
    assert child.exitcode == 0 and receiver.poll(), "the child died instead of reporting"
    code, stdout, stderr = receiver.recv()
    return SimpleNamespace(code=code, stdout=stdout, stderr=stderr)


@pytest.mark.parametrize(
    ("limit", "named"),
    [(0, "s"), (4096, "s/model.safetensors")],  # the staging directory's marker fails; the weights fail
    ids=["marker", "weights"],
)
def test_slice_force_on_a_full_disk_keeps_the_old_slice_and_leaves_nothing(project, tmp_path, warm, limit, named):
    from edgebert.slicing import slice_model

    out = tmp_path / "s"
    slice_model(project / "model", 0.5, 0.5, out=out)
    before = tree_digest(out)
    args = ("slice", project / "model", "--width", ".25", "--depth", "1", "--out", out, "--force")
    result = _full_disk_run(warm, limit, "cli", *args)
    assert_one_line_error(result, f"{tmp_path / named}: File too large")
    assert tree_digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["P", "s"]  # no .partial staging directory


def test_append_on_a_full_disk_keeps_the_old_list_and_leaves_nothing(tmp_path, warm):
    path = tmp_path / "results.json"
    path.write_text(json.dumps([{"original": i} for i in range(100)]))
    before = path.read_bytes()
    result = _full_disk_run(warm, len(before), "append", path)  # the marker fits, the longer list does not
    assert_one_line_error(result, f"{path}: File too large")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_a_failed_write_names_its_file_and_staging_is_removed(tmp_path, monkeypatch):
    """ENOSPC, in-process: a close that fails names the file, mapped from the scratch path to the target."""
    import errno

    from edgebert.atomic import replace_file

    def full(staged: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what a failed write() or close() raises

    target = tmp_path / "run.json"
    target.write_text("old")
    with pytest.raises(OSError) as caught:
        replace_file(target, full)
    assert (caught.value.errno, caught.value.filename, caught.value.filename2) == (errno.ENOSPC, str(target), None)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_long_names_still_stage(tmp_path):
    target = tmp_path / ("n" * 250)
    with staged_outputs(target) as (staged,):
        staged.write_text("ok")
    assert target.read_text() == "ok"


# ---- one line for OS errors, control characters and Ctrl-C ------------------------------------------------------


def test_a_newline_in_a_path_cannot_forge_a_second_error_line(run_cli, tmp_path):
    result = run_cli("slice", tmp_path / "no\nerror: forged", "--width", ".5", "--depth", ".5")
    assert_one_line_error(result, "no\\nerror: forged")


def test_os_errors_are_one_line_naming_the_path(run_cli, project, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_cli("slice", project / "model", "--width", ".5", "--depth", ".5", "--out", blocker / "sub" / "s")
    assert_one_line_error(result, str(blocker))


def test_ctrl_c_is_one_line_and_exit_130(run_cli, monkeypatch):
    import edgebert.cli

    def interrupted(**_):
        raise KeyboardInterrupt

    monkeypatch.setattr(edgebert.cli, "app", interrupted)
    result = run_cli("slice")
    assert result.code == 130
    assert_one_line_error(result, "interrupted")


# ---- export: what --force may replace ----------------------------------------------------------------------------


def test_export_force_replaces_only_its_own_artifact(run_cli, project, tmp_path):
    from edgebert.export import export_model

    source = project / "model"
    slice_dir = tmp_path / "slice"
    assert run_cli("slice", source, "--width", ".5", "--depth", ".5", "--out", slice_dir).code == 0
    before = tree_digest(slice_dir)
    assert_one_line_error(run_cli("export", slice_dir, "--out", slice_dir, "--force"), "is the source model")
    assert tree_digest(slice_dir) == before
    foreign = tmp_path / "mine.onnx"
    foreign.write_text("not edgebert's")
    assert_one_line_error(run_cli("export", slice_dir, "--out", foreign, "--force"), "has no edgebert sidecar")
    assert foreign.read_text() == "not edgebert's"
    folder = tmp_path / "folder"
    folder.mkdir()
    assert_one_line_error(run_cli("export", slice_dir, "--out", folder, "--force"), "has no edgebert sidecar")

    artifact = tmp_path / "fp32.onnx"  # the name the int8 conversion uses for its own fp32 step
    export_model(slice_dir, "onnx", "int8", out=artifact)
    first = hashlib.sha256(artifact.read_bytes()).hexdigest()
    sidecar = export_model(slice_dir, "onnx", "fp32", out=artifact, force=True)
    assert sidecar["sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest() != first
    assert json.loads((tmp_path / "fp32.onnx.json").read_text())["precision"] == "fp32"


DEEP_JSON = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from edgebert.errors import EdgebertError
    from edgebert.manifests import read_json
    sys.setrecursionlimit(100000)  # what importing litert's converter does
    try:
        read_json(Path(sys.argv[1]))
    except EdgebertError as exc:
        print(exc)
    """
)


def test_deep_json_is_one_line_even_after_the_recursion_limit_was_raised(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    done = subprocess.run([sys.executable, "-c", DEEP_JSON, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-500:]  # not killed by a C stack overflow
    assert "nested too deeply" in done.stdout
