"""`edgebert bench` on tiny ONNX and TFLite artifacts: all fields, sane relations, torch-free, clear errors."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from edgebert.bench import bare_loop, bench_artifact, busy_warnings, time_runs
from edgebert.errors import EdgebertError, MissingDependencyError
from edgebert.profiles import load_profile

VOCAB = 2048  # > 2 x 1000, so random ids avoid the special range as on a real vocabulary
MAX_POSITIONS = 512  # BertConfig's default max_position_embeddings
NAMES = ["input_ids", "attention_mask", "token_type_ids"]
# The slice manifest of the tiny model below (hidden 32, 2 layers of 2 heads, FFN 64), kept whole.
MANIFEST = {
    "edgebert_version": "0.1.0",
    "source": {"path": "tiny", "weights_file": "model.safetensors", "sha256": "0" * 64, "model_type": "bert"},
    "task": "sequence-classification",
    "original": {"layers": 2, "heads": 2, "head_size": 16, "ffn_neurons": 64},
    "width": 1.0,
    "depth": 1.0,
    "hidden_size": 32,
    "layers_kept": [0, 1],
    "heads_kept": 2,
    "ffn_neurons_kept": 64,
    "parameters": 100_258,  # counted on the transformers model below
    "encoder_flops_seq128": 8_388_608,
    "trained_as_dynabert": False,
    "untrained": "tiny test model: random weights",
}
QUICK = dict(runs=20, warmup=2, min_time_s=0)


def _sidecar(path: Path, fmt: str, dtype: str, shape: list, runtime: dict | None = None, **extra) -> None:
    """A schema-1 sidecar (edgebert.sidecar.Sidecar) for `path`, as export writes it; `extra` overrides keys."""
    fixed = [dim if isinstance(dim, int) else None for dim in shape]
    sidecar = {
        "schema_version": 1,
        "edgebert_version": "0.1.0",
        "format": fmt,
        "precision": "fp32",
        "quantization": "none",
        "artifact": path.name,
        "size_bytes": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "runtime": {"name": {"onnx": "onnxruntime", "tflite": "litert"}[fmt], "version": "test"} | (runtime or {}),
        "seq_len": fixed[1],
        "batch_size": fixed[0],
        "max_seq_len": MAX_POSITIONS,
        "signature_key": "serving_default" if fmt == "tflite" else None,
        "inputs": [{"name": name, "dtype": dtype, "shape": shape} for name in NAMES],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": [shape[0], 2]}],
        "output_meaning": {"logits": "logits"},
        "vocab_size": VOCAB,
        "pad_token_id": 0,
        "export_seconds": 0.0,
        "manifest": MANIFEST,
        "parity": None,
        **extra,
    }
    path.with_name(path.name + ".json").write_text(json.dumps(sidecar))


_ARTIFACTS: dict[str, Path] = {}


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    return tiny_artifacts(tmp_path_factory)


def tiny_artifacts(tmp_path_factory) -> dict[str, Path]:
    """A tiny BERT classifier (hidden 32, 2 layers) as ONNX (dynamic axes) and TFLite (fixed 1x16), with sidecars.

    Built once per session, for this module's fixture and for other modules' (test_bench_inputs).
    """
    if _ARTIFACTS:
        return _ARTIFACTS
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    litert_torch = pytest.importorskip("litert_torch")

    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(0)

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = transformers.BertForSequenceClassification(config).eval()

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    model = Logits().eval()
    sample = {name: torch.ones(1, 16, dtype=torch.long) for name in NAMES}
    root = tmp_path_factory.mktemp("artifacts")
    onnx = root / "tiny.onnx"
    axes = {name: {0: "batch", 1: "sequence"} for name in NAMES} | {"logits": {0: "batch"}}
    tflite = root / "tiny.tflite"
    with warnings.catch_warnings():  # exporter deprecation and tracer chatter, not about bench
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (),
            str(onnx),
            kwargs=sample,
            input_names=NAMES,
            output_names=["logits"],
            dynamic_axes=axes,
            dynamo=False,
        )
        sample32 = {name: value.to(torch.int32) for name, value in sample.items()}  # LiteRT models take int32
        litert_torch.convert(model, sample_kwargs=sample32).export(str(tflite))
    _sidecar(onnx, "onnx", "int64", ["batch", "sequence"])
    _sidecar(tflite, "tflite", "int32", [1, 16])
    _ARTIFACTS.update(onnx=onnx, tflite=tflite)
    return _ARTIFACTS


TORCH_FREE = """
import json, sys
from pathlib import Path
from edgebert.bench import bench_artifact
from edgebert.cli import main
from edgebert.profiles import load_profile
results = [bench_artifact(Path(a), load_profile('local'), runs=20, warmup=2, min_time_s=0) for a in sys.argv[2:]]
try:
    main(['bench', sys.argv[2], '--runs', '5', '--warmup', '1', '--min-time', '0', '--out', sys.argv[1]])
except SystemExit as exc:
    assert exc.code == 0, exc.code
heavy = [name for name in ('torch', 'transformers', 'litert_torch', 'tensorflow') if name in sys.modules]
assert not heavy, heavy
json.dump(results, open(sys.argv[1] + '.lib', 'w'))
"""


@pytest.fixture(scope="session")
def torch_free_results(artifacts, tmp_path_factory) -> list[dict]:
    """Both artifacts benched in a fresh interpreter that must never import torch or transformers."""
    out = tmp_path_factory.mktemp("results") / "results.json"
    args = [sys.executable, "-c", TORCH_FREE, str(out), str(artifacts["onnx"]), str(artifacts["tflite"])]
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
        assert env["runtime_version"] and env["cpu"] and len(env["load_avg_before"]) == 3
        assert "tiny test model: random weights" in result["warnings"]
    assert onnx["profile"]["name"] == "local" and onnx["profile"]["hardware"]["detected"]
    assert onnx["environment"]["runtime"] == "onnxruntime" and onnx["inputs"]["seq_len"] == 128
    assert onnx["environment"]["graph_optimization_level"] == "ORT_ENABLE_ALL"
    assert tflite["environment"]["runtime"] == "litert" and tflite["environment"]["xnnpack"] is True
    assert tflite["inputs"]["seq_len"] == 16  # the artifact's fixed shape wins over the profile's 128 ...
    assert any("fixed sequence length of 16" in w for w in tflite["warnings"])  # ... and says so


def test_profile_batch_padding_and_seeded_inputs(artifacts):
    profile = load_profile("local").model_copy(update={"batch_size": 4, "seq_len": 32, "padding_share": 0.25})
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
    _sidecar(artifact, "onnx", "int64", ["batch", "sequence"], runtime={"disabled_optimizers": ["SkipLayerNormFusion"]})
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
    with pytest.raises(EdgebertError, match="unknown artifact type '.bin': expected .onnx or .tflite"):
        bench_artifact(tmp_path / "weights.bin", profile)
    missing = run_cli("bench", tmp_path / "missing.onnx")
    assert missing.code == 1 and missing.stderr.strip() == f"error: {tmp_path / 'missing.onnx'}: no such file"

    lying = tmp_path / "lying.onnx"
    shutil.copy(artifacts["onnx"], lying)
    _sidecar(lying, "onnx", "int64", ["batch", "sequence"], vocab_size=50_000)
    with pytest.raises(EdgebertError, match="inference failed"):
        bench_artifact(lying, profile, **QUICK)
    _sidecar(lying, "onnx", "int64", ["batch", "sequence"])
    sidecar = json.loads(lying.with_name("lying.onnx.json").read_text())
    sidecar["inputs"] = sidecar["inputs"][:2]
    lying.with_name("lying.onnx.json").write_text(json.dumps(sidecar))
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


def test_help_is_fast():
    code = "import time; t = time.perf_counter(); import edgebert.cli; print(time.perf_counter() - t)"
    seconds = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)
    assert seconds < 0.5
    done = subprocess.run([sys.executable, "-m", "edgebert.cli", "bench", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--profile" in done.stdout
