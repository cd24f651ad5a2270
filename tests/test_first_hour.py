"""The first hour of a new user: help without an error, readable tables at 80 columns, early refusals, names and
units accepted where the user would write them, install hints that name one extra, normal file modes."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import edgebert
from edgebert.errors import EXTRA_INCLUDES, covering_extra
from edgebert.profiles import load_profile, parse_profile, shipped_names
from tests.cli_checks import assert_one_line_error

COLUMNS = 80
PROFILE = """name: custom
description: a device with budgets written as `pick` takes them
runtime: onnxruntime
threads: 1
memory_budget_mb: {memory}
latency_budget_ms: {latency}
hardware: {{cpu: test, cores: 1}}
"""


def pyproject_extras() -> dict[str, set[str]]:
    """pyproject.toml's extras and the other extras each pulls in (`edgebert[slice,ort]`): the independent fact."""
    import tomllib

    extras = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    includes = {}
    for name, requirements in extras["optional-dependencies"].items():
        inner = [re.match(r"edgebert\[(.*)\]", r) for r in requirements]
        includes[name] = {e for m in inner if m for e in m.group(1).split(",")}
    return includes


def readable_at_80(text: str) -> None:
    """No line wider than the terminal and no cell rich cut short with an ellipsis."""
    assert "…" not in text, text
    assert all(len(line) <= COLUMNS for line in text.splitlines()), text


# --- help, version -------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [(), ("profiles",)])
def test_no_arguments_prints_the_help_and_no_error(run_cli, command):
    result = run_cli(*command)
    assert result.code == 0
    assert "Usage: edgebert" in result.stdout and "Commands" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("command", [(), ("slice",), ("export",), ("profiles",), ("profiles", "validate")])
def test_dash_h_is_help_and_flags_show_no_bool_type(run_cli, command):
    short, long = run_cli(*command, "-h"), run_cli(*command, "--help")
    assert short.code == 0 and short.stdout == long.stdout
    assert "<bool>" not in short.stdout
    assert re.search(r"--help\s+-h", short.stdout)


def test_version_is_the_package_version(run_cli):
    result = run_cli("--version")
    assert result.code == 0
    assert result.stdout.strip() == f"edgebert {edgebert.__version__}"


# --- tables at 80 columns ------------------------------------------------------------------------


def test_pick_table_with_accuracy_reads_at_80_columns(labelled_classifier, tmp_path, run_cli, monkeypatch):
    """Real eval results on a tiny classifier: every column of the frontier shown."""
    monkeypatch.setenv("EDGEBERT_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"tok{i} tok{i + 1}\t{i % 2}\n" for i in range(8)))
    for width, depth in ((0.5, 0.5), (1, 1)):
        evaluated = run_cli("eval", labelled_classifier, "--data", data, "--width", width, "--depth", depth)
        assert evaluated.code == 0, evaluated.stderr
        readable_at_80(evaluated.stdout)
    args = ["pick", labelled_classifier, "--candidates", "0.5:0.5,1:1", "--memory-budget", "1KB"]
    result = run_cli(*args)  # 1 KB: nothing fits, so the widest verdict cell is shown
    assert result.code == 3, result.stderr
    assert re.search(r"\bacc\b", result.stdout) and re.search(r"\b0\.5\s+0\.5\b", result.stdout)
    readable_at_80(result.stdout)


def test_pick_table_of_bert_base_sizes_with_an_accuracy_column_reads_at_80_columns(run_cli, capsys):
    """The demo's BERT-base figures (three-digit MB, two-digit ms) are the widest cells; an accuracy column is
    added to its real report as an eval cache would (eval on BERT-base is too slow for a test)."""
    from edgebert.cli.pick import print_report
    from edgebert.pick import PickReport

    result = run_cli("pick", "--memory-budget", "1KB", "--latency-budget", "1ms", "--json")
    assert result.code == 3, result.stderr
    report = json.loads(result.stdout)
    report["accuracy"] = {"metric": "accuracy", "data": "dev.tsv", "data_sha256": "0" * 64, "columns": ["sentence"]}
    report["accuracy"] |= {"max_length": 128, "examples": 8, "chosen_by": "--data", "covered": 12, "candidates": 12}
    for row in report["candidates"]:
        row["accuracy"] = 0.8765  # four decimals, as the table prints every accuracy
    print_report(PickReport.model_validate(report))
    out = capsys.readouterr().out
    assert re.search(r"\b0\.25\s+0\.75\s+int8\b", out) and "0.8765" in out and "no: mem+lat" in out
    readable_at_80(out)


@pytest.mark.parametrize(
    "command",
    [("profiles", "list"), ("profiles", "show", "raspberry-pi-4"), ("info",)],
)
def test_tables_read_at_80_columns(run_cli, command, tiny_models):
    args = [*command, tiny_models["bert-cls"]] if command == ("info",) else command
    result = run_cli(*args)
    assert result.code == 0, result.stderr
    readable_at_80(result.stdout)


def test_slice_export_and_bench_tables_read_at_80_columns(run_cli, tiny_models, tmp_path):
    sliced = run_cli("slice", tiny_models["bert-cls"], "--width", "0.5", "--out", tmp_path / "s")
    assert sliced.code == 0, sliced.stderr
    exported = run_cli("export", tmp_path / "s", "--format", "ONNX", "--out", tmp_path / "m.onnx")
    assert exported.code == 0, exported.stderr
    bench = ["--seq-len", "16", "--runs", "3", "--warmup", "1", "--min-time", "0"]
    benched = run_cli("bench", tmp_path / "m.onnx", *bench)
    assert benched.code == 0, benched.stderr
    for result in (sliced, exported, benched):
        readable_at_80(result.stdout)


def test_console_is_80_columns_under_test():
    """The tests above rely on rich's width without a terminal: COLUMNS=80 set, or its 80 default."""
    from edgebert.cli.output import console

    assert console.width == COLUMNS


# --- early refusals ------------------------------------------------------------------------------


def test_default_output_of_slice_is_checked_before_loading(run_cli, tiny_models, tmp_path, monkeypatch):
    """The default name is known from the model path: refused before torch or the checkpoint loads."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bert-cls-w0.5-d1").mkdir()
    loaded = []
    import edgebert.slicing as slicing

    monkeypatch.setattr(slicing, "open_checkpoint", lambda model: loaded.append(model))
    result = run_cli("slice", tiny_models["bert-cls"], "--width", "0.5")
    assert_one_line_error(result, "bert-cls-w0.5-d1")
    assert loaded == []


@pytest.mark.parametrize(
    ("format", "existing"), [("onnx", "bert-cls-w0.5-d1-onnx"), ("tflite", "bert-cls-w0.5-d1-tflite")]
)
def test_default_output_of_export_is_checked_before_loading(
    run_cli, tiny_models, tmp_path, monkeypatch, format, existing
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / existing).mkdir()
    (tmp_path / existing / "mine.txt").write_text("mine")
    loaded = []
    import edgebert.export as export

    monkeypatch.setattr(export, "load_source", lambda *args: loaded.append(args))
    result = run_cli("export", tiny_models["bert-cls"], "--width", "0.5", "--format", format)
    assert_one_line_error(result, existing)
    assert loaded == [] and (tmp_path / existing / "mine.txt").read_text() == "mine"


def test_slicing_a_slice_is_refused_with_the_way_out(run_cli, tiny_models, tmp_path):
    assert run_cli("slice", tiny_models["bert-cls"], "--width", "0.5", "--out", tmp_path / "s").code == 0
    result = run_cli("slice", tmp_path / "s", "--width", "0.5", "--out", tmp_path / "again")
    assert_one_line_error(result, "slice the original model")
    assert not (tmp_path / "again").exists()


# --- what users write ----------------------------------------------------------------------------


@pytest.mark.parametrize("option", [("--format", "ONNX"), ("--precision", "FP32")])
def test_choices_are_case_insensitive(run_cli, tiny_models, tmp_path, option):
    out = tmp_path / "m.onnx"
    result = run_cli("export", tiny_models["bert-bare"], "--width", "0.5", *option, "--out", out, "--json")
    assert result.code == 0, result.stderr
    assert out.is_file()


@pytest.mark.parametrize("name", shipped_names())
def test_validate_takes_names_as_show_does(run_cli, name):
    result = run_cli("profiles", "validate", name)
    assert result.code == 0, result.stderr
    assert f"(profile {name})" in result.stdout


@pytest.mark.parametrize(
    ("memory", "latency", "mb", "ms"),
    [("512MB", "40ms", 512.0, 40.0), ("0.5GiB", "0.2s", 2**29 / 1e6, 200.0), ("300", "15", 300.0, 15.0)],
)
def test_yaml_budgets_take_the_units_the_cli_takes(memory, latency, mb, ms):
    profile = parse_profile(PROFILE.format(memory=memory, latency=latency), "custom.yaml")
    assert profile.memory_budget_mb == pytest.approx(mb)
    assert profile.latency_budget_ms == pytest.approx(ms)


def test_yaml_budget_with_a_bad_unit_names_file_and_field(tmp_path):
    path = tmp_path / "custom.yaml"
    path.write_text(PROFILE.format(memory="512XB", latency="40ms"))
    with pytest.raises(edgebert.EdgebertError, match=r"custom\.yaml: memory_budget_mb: .*512XB"):
        load_profile(path)


# --- install hints -------------------------------------------------------------------------------


def test_extra_includes_match_pyproject():
    declared = pyproject_extras()
    assert {name: set(inner) for name, inner in EXTRA_INCLUDES.items()} == {
        name: inner for name, inner in declared.items() if inner
    }


@pytest.mark.parametrize(
    ("modules", "extra"),
    [
        (("torch", "onnx", "onnxruntime"), "onnx"),  # `export --format onnx`: not `slice`, then `onnx`
        (("torch", "litert_torch", "ai_edge_quantizer", "ai_edge_litert"), "tflite"),
        (("torch", "transformers"), "slice"),
        (("onnxruntime",), "ort"),
    ],
)
def test_one_extra_covers_the_whole_command(modules, extra):
    assert covering_extra(modules) == extra


def test_missing_modules_are_named_together():
    from edgebert.errors import MissingDependencyError, require_all

    with pytest.raises(MissingDependencyError, match=r"needs no_such_mod_a, no_such_mod_b.*edgebert\[dev\]"):
        require_all(("no_such_mod_a", "os", "no_such_mod_b"), "a test")


# --- file modes ----------------------------------------------------------------------------------


def test_outputs_have_normal_modes_under_the_umask(run_cli, tiny_models, tmp_path):
    previous = os.umask(0o027)
    try:
        assert run_cli("slice", tiny_models["bert-cls"], "--width", "0.5", "--out", tmp_path / "s").code == 0
    finally:
        os.umask(previous)
    weights = tmp_path / "s" / "model.safetensors"
    assert stat.S_IMODE(weights.stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "s" / "config.json").stat().st_mode) == 0o640


def test_the_console_script_prints_help_without_error():
    """The installed entry point, not only main(): exit 0, nothing on stderr."""
    done = subprocess.run([sys.executable, "-m", "edgebert"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "Usage: edgebert" in done.stdout


def test_tflite_export_has_a_normal_mode_and_no_tensorflow_log_lines(tiny_models, tmp_path):
    """A fresh process, as a user runs it: TensorFlow's C++ logging is configured once, when it loads, and
    LiteRT's announces its XNNPACK delegate each time the gate opens the file."""
    out = tmp_path / "m.tflite"
    command = [sys.executable, "-m", "edgebert", "export", tiny_models["bert-bare"], "--width", "0.5"]
    command += ["--format", "tflite", "--precision", "int8", "--seq-len", "16", "--out", out]
    previous = os.umask(0o027)  # inherited; not preexec_fn, which forks a process where JAX (mediapipe) has threads
    try:
        done = subprocess.run(
            [str(part) for part in command],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    finally:
        os.umask(previous)
    assert done.returncode == 0, done.stderr
    tensorflow_lines = [
        line for line in done.stderr.splitlines() if re.match(r"(I|W)\d{4} |WARNING: All log|INFO: ", line)
    ]
    assert tensorflow_lines == []
    assert stat.S_IMODE(out.stat().st_mode) == 0o640


def test_native_stderr_filter_drops_only_the_noise(capfd):
    """What a C++ library writes to descriptor 2: the known line goes, anything else reaches the user."""
    from edgebert.runtimes import LITERT_NOISE, native_stderr_without

    with native_stderr_without(LITERT_NOISE):
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nERROR: op not found\n")
    assert capfd.readouterr().err == "ERROR: op not found\n"


def test_converters_native_delegate_line_is_dropped_and_their_errors_kept(capfd):
    """litert-torch runs its converted model once: its delegate line below Python goes, native errors stay."""
    from edgebert.export.base import quiet_tools

    with quiet_tools():
        print("progress bar", flush=True)
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nERROR: converter failed\n")
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == "ERROR: converter failed\n"
