"""End to end: `edgebert slice` and `edgebert info` on tiny models, the demo model, the console script."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from itertools import cycle
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import save

import edgebert
from edgebert.checkpoint import load_checkpoint
from edgebert.model import EdgeBertForSequenceClassification, EdgeBertModel
from edgebert.modernbert import EdgeModernBertForSequenceClassification, EdgeModernBertModel
from edgebert.slicing import slice_checkpoint
from edgebert.subnet import TRAINED_GRID, Architecture, Subnetwork, parameter_count, subnetwork
from tests.models import EVERY_GRID_POINT, KIND_NAMES, padded_batch
from tests.reference import BERT_BASE, DYNABERT_SIZES

ROUND_TRIP_TOLERANCE = 1e-6
SLICE_FILES = ["config.json", "edgebert.json", "model.safetensors", "tokenizer_config.json", "vocab.txt"]
# edgebert's own classes of a narrower slice, (classifier, encoder), by family: ModernBERT's layers are its own
EDGE_CLASSES = {"modernbert": (EdgeModernBertForSequenceClassification, EdgeModernBertModel)}


def slice_cli(run_cli, model, width, depth, out, *options):
    result = run_cli("slice", model, "--width", str(width), "--depth", str(depth), "--out", out, *options)
    assert result.code == 0, result.stderr
    return result


def manifest_of(directory: Path) -> dict:
    return json.loads((directory / "edgebert.json").read_text())


# --- what a slice directory holds ---------------------------------------------------------------


def test_slice_writes_model_tokenizer_and_manifest(run_cli, tiny_models, tmp_path):
    source, out = tiny_models["bert-cls"], tmp_path / "sliced"
    result = slice_cli(run_cli, source, 0.5, 0.75, out)
    # on the grid: the one warning says this plain checkpoint has no edgebert training manifest
    assert result.stderr.count("\n") == 1 and "not trained as a DynaBERT" in result.stderr
    assert "Wrote" in result.stdout and "parameters" in result.stdout

    assert sorted(p.name for p in out.iterdir()) == SLICE_FILES
    assert (out / "vocab.txt").read_bytes() == (source / "vocab.txt").read_bytes()
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "edgebert"
    assert (config["num_hidden_layers"], config["num_attention_heads"], config["attention_head_size"]) == (9, 6, 4)
    assert (config["hidden_size"], config["intermediate_size"]) == (48, 48)

    manifest = manifest_of(out)
    assert manifest["source"]["path"] == str(source.resolve())
    assert manifest["source"]["sha256"] == hashlib.sha256((source / "model.safetensors").read_bytes()).hexdigest()
    assert (manifest["width"], manifest["depth"]) == (0.5, 0.75)
    assert manifest["layers_kept"] == [0, 1, 2, 4, 5, 6, 8, 9, 10]
    assert manifest["heads_kept"] == 6 and manifest["ffn_neurons_kept"] == 48
    assert manifest["size_bytes"] == (out / "model.safetensors").stat().st_size
    assert manifest["edgebert_version"] == edgebert.__version__
    assert "untrained" not in manifest

    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(out)
    assert manifest["parameters"] == sum(p.numel() for p in loaded.parameters())
    assert loaded.bert.encoder.layer[0].attention.self.query.weight.shape == (24, 48)  # 6 heads of 4: dense
    # 9 layers x 2 x seq128 x [Q,K,V,O projections 4 x 48 x 24 + FFN 2 x 48 x 48 + scores and context 2 x 128 x 24]
    assert manifest["encoder_flops_seq128"] == 9 * 2 * 128 * (4 * 48 * 24 + 2 * 48 * 48 + 2 * 128 * 24)


def test_json_output_is_the_manifest(run_cli, tiny_models, tmp_path):
    out = tmp_path / "sliced"
    result = slice_cli(run_cli, tiny_models["roberta-bare"], 0.25, 0.5, out, "--json")
    printed = json.loads(result.stdout)  # nothing but JSON on stdout
    assert printed == {"output": str(out), **manifest_of(out)}
    assert printed["task"] == "feature-extraction" and printed["source"]["model_type"] == "roberta"
    assert printed["layers_kept"] == [0, 2, 4, 6, 8, 10] and printed["heads_kept"] == 3


def test_pytorch_model_bin_source_is_hashed(run_cli, legacy_bert_dir, tmp_path):
    out = tmp_path / "sliced"
    slice_cli(run_cli, legacy_bert_dir, 0.75, 1.0, out)
    source = manifest_of(out)["source"]
    assert source["weights_file"] == "pytorch_model.bin"
    assert source["sha256"] == hashlib.sha256((legacy_bert_dir / "pytorch_model.bin").read_bytes()).hexdigest()
    assert not (out / "training_args.bin").exists()


# --- round trip: the written slice loads with transformers and computes what the in-memory slice does


@pytest.mark.parametrize(
    ("name", "width", "depth"),
    [(name, *point) for name, point in zip(KIND_NAMES, cycle([(0.25, 0.5), (0.75, 0.75), (0.5, 1.0), (0.25, 0.75)]))],
)
def test_round_trip_from_pretrained(run_cli, tiny_models, tmp_path, name, width, depth):
    kind, head = name.rsplit("-", 1)
    source, out = tiny_models[name], tmp_path / "sliced"
    slice_cli(run_cli, source, width, depth, out)

    auto = transformers.AutoModelForSequenceClassification if head == "cls" else transformers.AutoModel
    loaded, info = auto.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    classifier, encoder = EDGE_CLASSES.get(kind, (EdgeBertForSequenceClassification, EdgeBertModel))
    assert type(loaded) is (classifier if head == "cls" else encoder)
    loaded.eval()

    in_memory = slice_checkpoint(load_checkpoint(source), width, depth).model
    batch = padded_batch(kind)
    with torch.no_grad():
        ours, reference = loaded(**batch), in_memory(**batch)
    if head == "cls":
        diff = (ours.logits - reference.logits).abs().max().item()
    else:
        diff = (ours.last_hidden_state - reference.last_hidden_state).abs().max().item()
        if reference.pooler_output is not None:  # ELECTRA's encoder has no pooler
            diff = max(diff, (ours.pooler_output - reference.pooler_output).abs().max().item())
    assert diff <= ROUND_TRIP_TOLERANCE, f"max abs diff {diff:.2e}"
    assert (out / "model.safetensors").stat().st_size < (source / "model.safetensors").stat().st_size


# --- output name, off-grid values -----------------------------------------------------------------


def test_default_output_name(run_cli, tiny_models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli("slice", tiny_models["bert-cls"], "--width", "0.25", "--depth", "0.5")
    assert result.code == 0, result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["bert-cls-w0.25-d0.5"]
    assert sorted(p.name for p in (tmp_path / "bert-cls-w0.25-d0.5").iterdir()) == SLICE_FILES
    assert "bert-cls-w0.25-d0.5" in result.stdout


def test_off_grid_width_works_and_warns_once(run_cli, tiny_models, tmp_path):
    out = tmp_path / "sliced"
    result = slice_cli(run_cli, tiny_models["bert-cls"], 0.6, 1.0, out)
    lines = [line for line in result.stderr.splitlines() if "not trained as a DynaBERT" not in line]
    assert len(lines) == 1 and lines[0].startswith("warning: "), lines
    assert "off the trained DynaBERT grid" in lines[0] and "0.6" in lines[0]
    manifest = manifest_of(out)
    assert manifest["width"] == 0.6 and manifest["heads_kept"] == 7 and manifest["ffn_neurons_kept"] == 56


# --- info -----------------------------------------------------------------------------------------


def test_info_json_on_tiny_model(run_cli, tiny_models):
    result = run_cli("info", tiny_models["bert-cls"], "--json")
    assert result.code == 0, result.stderr
    info = json.loads(result.stdout)
    assert [(row["width"], row["depth"]) for row in info["grid"]] == list(TRAINED_GRID)
    assert info["architecture"]["layers"] == 12 and info["task"] == "sequence-classification"
    assert "untrained" not in info


@pytest.fixture(scope="module")
def tiny_info(tiny_models) -> dict:
    from edgebert.info import grid_info

    return {(row["width"], row["depth"]): row for row in grid_info(tiny_models["bert-cls"])["grid"]}


@EVERY_GRID_POINT
def test_info_row_is_what_the_slice_holds(tiny_models, tiny_info, width, depth):
    row = tiny_info[(width, depth)]
    sliced = slice_checkpoint(load_checkpoint(tiny_models["bert-cls"]), width, depth).model
    assert row["parameters"] == sum(p.numel() for p in sliced.parameters())
    serialized = save(sliced.state_dict())  # what model.safetensors of this slice holds
    header = int.from_bytes(serialized[:8], "little")
    assert row["size_fp32_bytes"] == len(serialized) - 8 - header  # its tensor bytes, header excluded


def test_info_table(run_cli, tiny_models):
    result = run_cli("info", tiny_models["roberta-cls"])
    assert result.code == 0, result.stderr
    assert "roberta" in result.stdout and "0-2,4-6,8-10" in result.stdout  # d=0.75 kept layers


@EVERY_GRID_POINT
def test_bert_base_parameter_counts_match_the_dynabert_table(width, depth):
    count = parameter_count(BERT_BASE, subnetwork(BERT_BASE, width, depth))
    assert abs(count / 1e6 - DYNABERT_SIZES[depth][width]) <= 0.05 + 1e-9, count


def test_bert_base_half_width_three_quarter_depth_by_hand():
    embeddings = (30522 + 512 + 2) * 768 + 2 * 768  # word, position, token type, LayerNorm
    assert embeddings == 23_837_184
    qkv = 6 * 64
    layer = 3 * (768 * qkv + qkv) + (qkv * 768 + 768) + (768 * 1536 + 1536) + (1536 * 768 + 768) + 4 * 768
    assert layer == 3_546_240
    assert 768 * 768 + 768 == 590_592 and 768 * 2 + 2 == 1_538
    assert 23_837_184 + 9 * 3_546_240 + 590_592 + 1_538 == 56_345_474
    assert parameter_count(BERT_BASE, subnetwork(BERT_BASE, 0.5, 0.75)) == 56_345_474
    # and piece by piece: embeddings alone, then one layer, pooler, classifier
    bare = Architecture(**{**BERT_BASE.__dict__, "has_pooler": False, "num_labels": None})
    assert parameter_count(bare, Subnetwork(0.5, 0.75, 6, 1536, ())) == 23_837_184
    assert parameter_count(bare, Subnetwork(0.5, 0.75, 6, 1536, (0,))) == 23_837_184 + 3_546_240


# --- the built-in demo model (BERT-base shaped: writes a 438 MB cache file once per session) -------


def test_demo_model_slice_and_info(run_cli, tmp_path):
    out = tmp_path / "demo-slice"
    result = run_cli("slice", "--width", "0.5", "--depth", "0.75", "--out", out)
    assert result.code == 0, result.stderr
    assert "56.3 M" in result.stdout
    assert "warning:" in result.stderr and "untrained" in result.stderr
    manifest = manifest_of(out)
    assert "untrained" in manifest and manifest["parameters"] == 56_345_474
    assert manifest["layers_kept"] == [0, 1, 2, 4, 5, 6, 8, 9, 10] and manifest["heads_kept"] == 6
    assert manifest["ffn_neurons_kept"] == 1536
    assert manifest["size_bytes"] == (out / "model.safetensors").stat().st_size > 4 * 56_345_474

    info = run_cli("info", "--json")
    assert info.code == 0, info.stderr
    info = json.loads(info.stdout)
    assert "untrained" in info
    counts = {(row["width"], row["depth"]): row["parameters"] for row in info["grid"]}
    assert counts[(0.5, 0.75)] == 56_345_474 and counts[(1.0, 1.0)] == 109_483_778


# --- the real console script, in a subprocess ------------------------------------------------------


def edgebert_command() -> list[str]:
    script = shutil.which("edgebert")
    return [script] if script else [sys.executable, "-m", "edgebert.cli"]


def test_console_script_slices(tiny_models, tmp_path):
    out = tmp_path / "sst2-w0.25-d0.5"
    args = ["slice", str(tiny_models["bert-cls"]), "--width", "0.25", "--depth", "0.5", "--out", str(out)]
    result = subprocess.run(edgebert_command() + args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # one line, and only the warning that this plain checkpoint was not trained as a DynaBERT
    assert result.stderr.startswith("warning: ") and result.stderr.count("\n") == 1
    assert "not trained as a DynaBERT" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == SLICE_FILES
    assert manifest_of(out)["layers_kept"] == [0, 2, 4, 6, 8, 10]


def test_python_dash_m_runs_the_cli(tmp_path):
    """A torch-free command's bad input: the entry point, its one line and its exit code, in a second."""
    missing = tmp_path / "missing.onnx"
    result = subprocess.run(
        [sys.executable, "-m", "edgebert.cli", "bench", str(missing)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr == f"error: {missing}: no such file\n"


def test_help_lists_the_commands_and_import_is_light():
    """What is imported is asserted, not how long it takes (timings are flaky on a shared machine)."""
    result = subprocess.run(edgebert_command() + ["--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "slice" in result.stdout and "info" in result.stdout

    code = (
        "import sys, edgebert, edgebert.subnet, edgebert.cli; "
        "print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "[]", f"importing edgebert pulled in {imported.stdout.strip()}"
