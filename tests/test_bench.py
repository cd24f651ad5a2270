"""`edgebert bench` on tiny ONNX and TFLite artifacts: all fields, sane relations, torch-free, clear errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgebert.bench import bare_loop, bench_artifact, busy_warnings, time_runs
from edgebert.errors import EdgebertError, MissingDependencyError
from edgebert.profiles import load_profile
from edgebert.sidecar import sidecar_path
from tests.artifacts import NAMES, QUICK, TFLITE_SEQ, tiny_artifacts, write_test_sidecar

# Never imported by the CLI or by a bench of an artifact (the light install has none of them).
HEAVY = ("torch", "transformers", "onnx", "litert_torch", "tensorflow")


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    return tiny_artifacts(tmp_path_factory)


TORCH_FREE = """
import json, sys
from pathlib import Path
from edgebert.bench import bench_artifact
from edgebert.cli import main
from edgebert.profiles import load_profile
results = [bench_artifact(Path(a), load_profile('local'), runs=20, warmup=2, min_time_s=0) for a in sys.argv[3:]]
try:
    main(['bench', sys.argv[3], '--runs', '5', '--warmup', '1', '--min-time', '0', '--out', sys.argv[1]])
except SystemExit as exc:
    assert exc.code == 0, exc.code
heavy = [name for name in sys.argv[2].split(',') if name in sys.modules]
assert not heavy, heavy
json.dump(results, open(sys.argv[1] + '.lib', 'w'))
"""


@pytest.fixture(scope="session")
def torch_free_results(artifacts, tmp_path_factory) -> list[dict]:
    """Both artifacts benched in a fresh interpreter that must never import torch or transformers."""
    out = tmp_path_factory.mktemp("results") / "results.json"
    args = [
        sys.executable,
        "-c",
        TORCH_FREE,
        str(out),
        ",".join(HEAVY),
        str(artifacts["onnx"]),
        str(artifacts["tflite"]),
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(out.read_text())) == 1  # --out appended the CLI's result
    return json.loads(Path(str(out) + ".lib").read_text())


def test_bench_is_torch_free_and_reports_everything(torch_free_results):
    onnx, tflite = torch_free_results
    for result in (onnx, tflite):
        lat = result["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert lat["min"] <= lat["mean"] <= lat["max"] and lat["std"] >= 0
        assert result["settings"]["runs"] == 20 and result["load_ms"] > 0 and result["first_inference_ms"] > 0
        mem = result["memory"]
        assert mem["peak_rss_bytes"] >= mem["rss_after_runs_bytes"] > 0 and mem["rss_before_load_bytes"] > 0
        assert mem["baseline_bytes"] == mem["rss_before_load_bytes"] and mem["model_footprint_bytes"] >= 0
        assert result["artifact"]["size_bytes"] > 0 and result["artifact"]["sidecar"]
        inputs = result["inputs"]
        assert inputs["real_tokens"] < inputs["total_tokens"] == inputs["batch_size"] * inputs["seq_len"]
        throughput = result["throughput"]
        assert throughput["tokens_per_s"] > throughput["real_tokens_per_s"] > throughput["sequences_per_s"] > 0
        env = result["environment"]
        assert env["runtime_version"] and result["host"]["cpu"] and len(env["load_avg_before"]) == 3
        assert "tiny test model: random weights" in result["warnings"]
    assert onnx["profile"]["name"] == "local" and onnx["profile"]["device_hardware"]["detected"]
    assert onnx["profile"]["device_is_this_host"] and onnx["result_version"] == 4
    assert onnx["environment"]["runtime"] == "onnxruntime" and onnx["inputs"]["seq_len"] == 128
    assert onnx["environment"]["graph_optimization_level"] == "ORT_ENABLE_ALL"
    assert tflite["environment"]["runtime"] == "litert" and tflite["environment"]["xnnpack"] is True
    assert tflite["inputs"]["seq_len"] == TFLITE_SEQ  # the artifact's fixed shape wins over the profile's 128 ...
    assert any(f"fixed sequence length of {TFLITE_SEQ}" in w for w in tflite["warnings"])  # ... and says so


def test_the_latency_model_reads_the_hidden_size_from_the_manifest(torch_free_results):
    """A model whose heads x head size is not its hidden size (hidden 32, 2 heads of 8): the shape is the manifest's."""
    from edgebert.latency_model import measurements_from_result

    result = json.loads(json.dumps(torch_free_results[0]))
    result["manifest"]["original"]["head_size"] = 8
    shape = measurements_from_result(result)[0].shape
    assert (shape.hidden, shape.heads, shape.inner, shape.ffn, shape.layers) == (32, 2, 16, 64, 2)


def test_profile_batch_padding_and_seeded_inputs(artifacts):
    update = {"batch_size": 4, "seq_len": 32, "padding_share": 0.25, "threads": 1}  # one thread count: one run
    profile = load_profile("local").model_copy(update=update)
    result = bench_artifact(artifacts["onnx"], profile, **QUICK)
    assert (result["inputs"]["batch_size"], result["inputs"]["seq_len"]) == (4, 32)
    assert result["inputs"]["padding_share"] == pytest.approx(0.25, abs=0.03)
    assert result["inputs"]["source"] == "random ids in [1000, 2048), seed 0"
    assert result["settings"]["threads"] == profile.threads


def test_cpu_affinity_is_applied_and_restored(artifacts):
    before = os.sched_getaffinity(0)
    pinned = load_profile("local").model_copy(update={"cpu_affinity": [min(before)]})
    result = bench_artifact(artifacts["onnx"], pinned, threads=1, **QUICK)
    assert result["settings"]["cpu_affinity"] == [min(before)] and os.sched_getaffinity(0) == before
    impossible = pinned.model_copy(update={"cpu_affinity": [4096]})
    with pytest.raises(EdgebertError, match=r"cpu_affinity names cores \[4096\]"):
        bench_artifact(artifacts["onnx"], impossible, **QUICK)


def test_min_time_and_bare_loop(artifacts):
    calls = []
    samples = time_runs([lambda: calls.append("a"), lambda: calls.append("b")], runs=3, min_time_s=0.02)
    assert len(samples) == len(calls) > 3 and all(s >= 0 for s in samples)
    assert calls[:4] == ["a", "b", "a", "b"]  # the calls cycle, one per run
    latencies = bare_loop(artifacts["tflite"], load_profile("local"), runs=5, warmup=1, threads=1)
    assert len(latencies) == 5 and min(latencies) > 0


def test_without_sidecar_reads_the_model_signature(artifacts, tmp_path):
    bare = tmp_path / "bare.onnx"
    shutil.copy(artifacts["onnx"], bare)
    result = bench_artifact(bare, load_profile("local"), **QUICK)
    assert not result["artifact"]["sidecar"] and result["inputs"]["names"] == NAMES
    assert any("vocabulary size unknown" in w for w in result["warnings"])


def test_sidecar_runtime_options_are_applied(artifacts, tmp_path):
    """An exporter's measured session settings (e.g. a fusion left out) reach the session bench opens."""
    artifact = tmp_path / "tuned.onnx"
    shutil.copy(artifacts["onnx"], artifact)
    write_test_sidecar(artifact, runtime={"disabled_optimizers": ["SkipLayerNormFusion"]})
    result = bench_artifact(artifact, load_profile("local"), **QUICK)
    assert result["environment"]["disabled_optimizers"] == ["SkipLayerNormFusion"]
    plain = bench_artifact(artifacts["onnx"], load_profile("local"), **QUICK)
    assert plain["environment"]["disabled_optimizers"] == []


def test_profile_spin_wait_reaches_the_ort_session(artifacts):
    """Spinning is ORT's default (best on a dedicated device); a shared machine's profile turns it off."""
    local = load_profile("local")
    spinning = bench_artifact(artifacts["onnx"], local, **QUICK)
    assert spinning["environment"]["session_config"]["session.intra_op.allow_spinning"] == "1"
    quiet = bench_artifact(artifacts["onnx"], local.model_copy(update={"spin_wait": False}), **QUICK)
    assert quiet["environment"]["session_config"]["session.intra_op.allow_spinning"] == "0"


def test_bad_artifacts_give_one_line_errors(artifacts, tmp_path, run_cli):
    profile = load_profile("local")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(EdgebertError, match="onnxruntime cannot load it, is it a valid model"):
        bench_artifact(garbage, profile, **QUICK)
    garbage_tflite = tmp_path / "garbage.tflite"
    garbage_tflite.write_bytes(b"\0" * 64)
    with pytest.raises(EdgebertError, match="litert cannot load it"):
        bench_artifact(garbage_tflite, profile, **QUICK)
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(EdgebertError, match="unknown artifact type '.bin': expected .onnx or .tflite or .pte"):
        bench_artifact(tmp_path / "weights.bin", profile)
    missing = run_cli("bench", tmp_path / "missing.onnx")
    assert missing.code == 1 and missing.stderr.strip() == f"error: {tmp_path / 'missing.onnx'}: no such file"

    lying = tmp_path / "lying.onnx"
    shutil.copy(artifacts["onnx"], lying)
    write_test_sidecar(lying, vocab_size=50_000)
    with pytest.raises(EdgebertError, match="inference failed"):
        bench_artifact(lying, profile, **QUICK)
    write_test_sidecar(lying, inputs=json.loads(sidecar_path(lying).read_text())["inputs"][:2])
    with pytest.raises(EdgebertError, match="the sidecar lists inputs"):
        bench_artifact(lying, profile, **QUICK)


def test_runtime_not_installed(artifacts, monkeypatch, run_cli):
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgebert\[litert\]'"):
        bench_artifact(artifacts["tflite"], load_profile("pixel-7"), **QUICK)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    result = run_cli("bench", artifacts["onnx"], "--profile", "raspberry-pi-4", "--runs", "2")
    assert result.code == 1 and "pip install 'edgebert[ort]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_out_file_appends_and_refuses_non_lists(artifacts, tmp_path, run_cli):
    out = tmp_path / "results.json"
    args = ("bench", artifacts["onnx"], "--runs", "3", "--warmup", "0", "--min-time", "0", "--json", "--out", out)
    first = run_cli(*args)
    assert first.code == 0 and json.loads(first.stdout)["settings"]["runs"] == 3  # --json: only JSON on stdout
    assert run_cli(*args).code == 0 and len(json.loads(out.read_text())) == 2
    out.write_text('{"not": "a list"}')
    refused = run_cli(*args)
    assert refused.code == 1 and "expected a list of results" in refused.stderr
    table = run_cli("bench", artifacts["onnx"], "--runs", "3", "--min-time", "0", "--threads", "1")
    assert table.code == 0 and "p99" in table.stdout and "tiny test model" in table.stderr


def test_busy_machine_warnings():
    calm = {"p50": 10.0, "p99": 11.0, "cv": 0.02}
    assert busy_warnings(0.0, calm) == []
    noisy = busy_warnings(1e6, {"p50": 10.0, "p99": 30.0, "cv": 0.5})
    assert [w.split(":")[0] for w in noisy] == ["busy machine", "wide tail", "noisy runs"]


def test_the_cli_imports_no_heavy_library():
    """What makes `edgebert --help` slow (and the light install impossible) is importing torch and friends."""
    code = f"import sys, edgebert.cli; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "", done.stdout + done.stderr
    done = subprocess.run([sys.executable, "-m", "edgebert.cli", "bench", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--profile" in done.stdout
