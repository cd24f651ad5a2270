"""Reading what users hand edgebert: regular files only (a named pipe never hangs a read), bounded, linear memory,
lines split on newlines only, non-finite numbers and ambiguous vocabularies refused with one line."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

try:
    import resource
except ImportError:  # Windows
    resource = None

from edgebert import manifests
from edgebert.data import read_any, read_dataset, read_texts
from edgebert.errors import EdgebertError
from edgebert.evaluate import MAX_ENTRY_BYTES, CachedResult, EvalKey, cache_path, read_cached
from edgebert.inputs import read_text
from edgebert.manifests import json_depth, read_json
from edgebert.model_files import tokenizer_files
from edgebert.reading import read_regular
from edgebert.st_modules import sentence_transformers_files
from edgebert.tokenizer import write_tokenizer

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
BOUNDED_PROCESS_BYTES = 2 << 30  # address space of a process reading an endless device (imports take ~0.5 GB)
PROMPTLY = 10.0  # seconds: a read that blocks on a named pipe never returns by itself
MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def returns_promptly(call: Callable[[], Any], pipe: Path) -> Any:
    """`call()`'s result or the exception it raised, failing the test if it blocks (e.g. opening `pipe`)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 (handed to the test)
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(PROMPTLY)
    blocked = thread.is_alive()
    if blocked:  # release the reader: a writer that opens and closes the pipe gives it end-of-file
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(PROMPTLY)
    assert not blocked, f"reading {pipe} blocked"
    return outcome.get("error", outcome.get("value"))


# ---- special files --------------------------------------------------------------------------------


@needs_fifo
@pytest.mark.parametrize(
    "reader",
    [read_json, lambda path: read_dataset(path), lambda path: read_any(path), lambda path: read_regular(path, 10)],
    ids=["json (--calibration, config.json, modules.json, results)", "data", "data or text", "any read"],
)
def test_a_named_pipe_is_refused_at_once(tmp_path, reader) -> None:
    pipe = fifo(tmp_path / "file.json")
    error = returns_promptly(lambda: reader(pipe), pipe)
    assert isinstance(error, EdgebertError) and "not a regular file (a named pipe)" in str(error)
    assert str(pipe) in str(error)


@needs_fifo
def test_text_from_a_named_pipe_is_refused_at_once(tmp_path) -> None:
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    pipe = fifo(tmp_path / "lines.txt")
    error = returns_promptly(lambda: read_text(pipe, tmp_path, None), pipe)
    assert isinstance(error, EdgebertError) and "not a regular file" in str(error)


@pytest.mark.parametrize("special", ["directory", "/dev/null"])
def test_directories_and_devices_are_refused(tmp_path, special) -> None:
    path = tmp_path / "config.json"
    if special == "directory":
        path.mkdir()
    else:
        path.symlink_to(special)
    with pytest.raises(EdgebertError, match="is not a regular file"):
        read_json(path)


@needs_fifo
@pytest.mark.parametrize("name", ["vocab.txt", "modules.json"])
def test_a_named_pipe_in_a_model_is_refused_not_taken_as_absent(tmp_path, name) -> None:
    """Taken as absent, a pipe named vocab.txt left MediaPipe's vocabulary out, one named modules.json the modules."""
    (tmp_path / "config.json").write_text("{}")
    fifo(tmp_path / name)
    reader = tokenizer_files if name == "vocab.txt" else sentence_transformers_files
    with pytest.raises(EdgebertError, match=f"{name} is not a regular file"):
        reader(tmp_path)


# ---- the eval cache -------------------------------------------------------------------------------


@pytest.fixture
def entry(tmp_path, monkeypatch) -> tuple[Path, bytes]:
    """A valid cache entry stored under its own name (and its bytes)."""
    monkeypatch.setenv("EDGEBERT_CACHE", str(tmp_path / "cache"))
    key = EvalKey(
        weights_sha256="a" * 64,
        label2id=None,
        tokenizer_sha256="b" * 64,
        edgebert_version="0",
        data_sha256="c" * 64,
        max_length=128,
    )
    result = CachedResult(
        version=1,
        key=key,
        data="/data/dev.tsv",
        examples=8,
        width=0.5,
        depth=0.5,
        parameters=10,
        encoder_flops_seq128=20,
        metrics={"accuracy": 0.75},
    )
    path = cache_path(key, 0.5, 0.5)
    path.parent.mkdir(parents=True)
    data = result.model_dump_json().encode()
    path.write_bytes(data)
    assert read_cached(path) == result  # the entry is valid: what follows changes only its size or kind
    return path, data


def test_an_oversized_cache_entry_is_ignored(entry) -> None:
    path, data = entry
    path.write_bytes(data + b" " * MAX_ENTRY_BYTES)  # still valid JSON of a valid entry, but no entry is so large
    assert read_cached(path) is None


@needs_fifo
def test_a_named_pipe_in_the_cache_is_ignored_at_once(entry) -> None:
    path, _ = entry
    path.unlink()
    fifo(path)
    assert returns_promptly(lambda: read_cached(path), path) is None


@pytest.mark.skipif(not Path("/dev/zero").exists() or resource is None, reason="needs /dev/zero and rlimits")
def test_a_cache_entry_linked_to_an_endless_device_is_ignored(entry) -> None:
    """In a process of its own with 2 GB of address space: reading /dev/zero whole would exhaust any machine."""
    path, _ = entry
    path.unlink()
    path.symlink_to("/dev/zero")
    script = (
        "import resource, sys; from pathlib import Path; from edgebert.evaluate import read_cached; "
        f"resource.setrlimit(resource.RLIMIT_AS, ({BOUNDED_PROCESS_BYTES}, {BOUNDED_PROCESS_BYTES})); "
        "print(read_cached(Path(sys.argv[1])))"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "None\n"), done.stderr[-300:]


# ---- bounded, linear JSON reading -----------------------------------------------------------------


def nesting(value: Any) -> int:
    """The depth of a parsed JSON value: the fact `json_depth` must find from the text."""
    if isinstance(value, list):
        return 1 + max(map(nesting, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(nesting, value.values()), default=0)
    return 0


def random_json(rng: random.Random, level: int = 0) -> Any:
    """Nested lists and objects whose strings hold brackets, quotes and runs of backslashes."""
    choice = rng.random()
    if level > 6 or choice < 0.3:
        return rng.choice(["[", "]}", '"{', "\\", "\\\\", '\\"[', "a\\\\\\", "", 1, None])
    if choice < 0.65:
        return [random_json(rng, level + 1) for _ in range(rng.randint(0, 3))]
    return {f'k{i}["\\': random_json(rng, level + 1) for i in range(rng.randint(0, 3))}


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, manifests.DEPTH_CHUNK])
def test_json_depth_is_the_nesting_whatever_the_chunk_boundaries(monkeypatch, chunk) -> None:
    monkeypatch.setattr(manifests, "DEPTH_CHUNK", chunk)
    rng = random.Random(chunk)
    for _ in range(200):
        value = random_json(rng)
        assert json_depth(json.dumps(value).encode()) == nesting(value)


def test_json_depth_memory_does_not_grow_with_the_input() -> None:
    """The old backtracking regex took ~140 bytes per character of a long string (580 MB for this 4 MB)."""
    data = json.dumps({"notes": "x" * (4 << 20), "nested": [[[{"a": "]"}]]]}).encode()
    tracemalloc.start()
    try:
        depth = json_depth(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert depth == 5  # the object, three lists, the inner object
    assert peak < 16 << 20


# ---- text: lines, non-finite numbers ----------------------------------------------------------------


def test_a_sentence_is_not_cut_at_unicode_line_separators(tmp_path) -> None:
    """U+2028, U+0085 and form feed are characters of a sentence; only \\n and \\r\\n end a line."""
    sentence = "one\u2028sentence\x85with\x0cseparators"
    texts = tmp_path / "texts.txt"
    texts.write_bytes(f"{sentence}\r\nsecond\n".encode())
    assert read_texts(texts).first == [sentence, "second"]
    labelled = tmp_path / "dev.tsv"
    labelled.write_bytes(f"sentence\tlabel\r\n{sentence}\t1\nsecond\t0\n".encode())
    data = read_dataset(labelled)
    assert (data.first, data.labels) == ([sentence, "second"], ["1", "0"])


def test_text_input_lines_are_not_cut_at_unicode_line_separators(tmp_path) -> None:
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    lines = tmp_path / "lines.txt"
    lines.write_bytes("hello\u2028world\r\nworld\n".encode())
    assert read_text(lines, tmp_path, None).lines == ["hello\u2028world", "world"]


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-Infinity", "1e999"])
@pytest.mark.parametrize("column", ["score", "label"])
def test_a_non_finite_number_in_data_is_refused_by_file_line_and_column(tmp_path, value, column) -> None:
    path = tmp_path / "dev.tsv"
    path.write_text(f"sentence\t{column}\nfirst\t1.5\nsecond\t{value}\n")
    with pytest.raises(EdgebertError) as raised:
        read_dataset(path)
    assert str(raised.value) == f"{path}:3: {column} {value!r} is not a finite number"


# ---- vocab.txt, tokenizer.json, modules.json ------------------------------------------------------


def tokenizer_source(tmp_path: Path, vocab: bytes) -> Path:
    source = tmp_path / "model"
    source.mkdir()
    (source / "vocab.txt").write_bytes(vocab)
    return source


def test_a_vocabulary_listing_a_token_twice_is_refused_with_both_lines(tmp_path) -> None:
    """transformers gives a repeated token its last line's id, a first-wins reader its first: no one id exists."""
    source = tokenizer_source(tmp_path, ("\n".join([*VOCAB, "hello"]) + "\n").encode())
    (tmp_path / "out").mkdir()
    with pytest.raises(EdgebertError, match=r"token 'hello' is on lines 6 and 8"):
        write_tokenizer(source, tmp_path / "out", "bert", 128)
    assert list((tmp_path / "out").iterdir()) == []


def test_a_vocabulary_that_is_not_utf8_is_one_line(tmp_path) -> None:
    source = tokenizer_source(tmp_path, b"[PAD]\n[UNK]\n\xff\xfe\n")
    (tmp_path / "out").mkdir()
    with pytest.raises(EdgebertError, match="vocab.txt: not UTF-8 text"):
        write_tokenizer(source, tmp_path / "out", "bert", 128)


@pytest.mark.parametrize("content", [[1, 2], {"version": "1.0"}, {"model": "WordPiece"}])
def test_a_tokenizer_json_no_client_can_load_is_not_copied(tmp_path, content) -> None:
    source = tokenizer_source(tmp_path, ("\n".join(VOCAB) + "\n").encode())
    (source / "tokenizer.json").write_text(json.dumps(content))
    (tmp_path / "out").mkdir()
    with pytest.raises(EdgebertError, match='is not a tokenizer: a tokenizer.json is a JSON object with a "model"'):
        write_tokenizer(source, tmp_path / "out", "bert", 128)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(
    ("path", "fragment"),
    [("1_Pool\x00ing", "is not a folder of the model directory"), ("config.json", "is not a folder")],
)
def test_a_module_path_that_is_not_a_folder_is_refused(tmp_path, path, fragment) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "modules.json").write_text(json.dumps([MODULES[0], {**MODULES[1], "path": path}]))
    with pytest.raises(EdgebertError, match=fragment):
        sentence_transformers_files(tmp_path)
