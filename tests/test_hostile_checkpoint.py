"""Hostile checkpoints and slice directories: one `error:` line, before anything big is allocated or copied.

Each case damages a copy of a tiny model (session fixture `tiny_models`) or of a slice written
from it. Causes, one test each: config.json values of the wrong type or out of range; JSON nested
too deeply; sizes the weights contradict (a billion layers); a zip bomb posing as
pytorch_model.bin; slice manifests and configs of the wrong shape; links leading out of the
model directory.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from edgebert.checkpoint import load_checkpoint
from edgebert.slicing import load_slice, slice_model
from tests.cli_checks import assert_one_line_error, edit_config

MAX_LINE = 400  # an error line quotes at most a short piece of hostile input


@pytest.fixture
def bert(broken) -> Path:
    """The tiny BERT classifier to damage (conftest's `broken`)."""
    return broken


@pytest.fixture(scope="module")
def clean_slice(tiny_models, tmp_path_factory) -> Path:
    return slice_model(tiny_models["roberta-cls"], 0.5, 0.75, out=tmp_path_factory.mktemp("slice") / "s")[0]


@pytest.fixture
def hostile_slice(tmp_path, clean_slice) -> Path:
    target = tmp_path / "src" / "slice"
    shutil.copytree(clean_slice, target)
    return target


def refused_slice(run_cli, model: Path, work: Path, fragment: str) -> str:
    result = run_cli("slice", model, "--width", "0.5", "--depth", "0.5", "--out", work / "out")
    assert_one_line_error(result, fragment)
    assert len(result.stderr) < MAX_LINE, result.stderr
    assert list(work.iterdir()) == [], "a refused slice left something behind"
    return result.stderr


def refused_export(run_cli, model: Path, work: Path, fragment: str) -> str:
    result = run_cli("export", model, "--format", "onnx", "--out", work / "m.onnx")
    assert_one_line_error(result, fragment)
    assert len(result.stderr) < MAX_LINE, result.stderr
    assert list(work.iterdir()) == [], "a refused export left something behind"
    return result.stderr


# --- config.json: every field edgebert uses is typed and bounded ----------------------------------


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"layer_norm_eps": float("nan")}, "layer_norm_eps: Input should be a finite number, got nan"),
        ({"layer_norm_eps": float("inf")}, "layer_norm_eps: Input should be a finite number, got inf"),
        ({"layer_norm_eps": -5}, "layer_norm_eps: Input should be greater than 0, got -5"),
        ({"layer_norm_eps": "abc"}, "layer_norm_eps: Input should be a valid number, got 'abc'"),
        ({"hidden_act": ["gelu"]}, "hidden_act: Input should be a valid string, got ['gelu']"),
        ({"id2label": {"a": "x", "b": "y", "c": "z"}}, "id2label: keys must be the label ids 0..2"),
        ({"id2label": {"0": "x", "²": "y", "2": "z"}}, "id2label: keys must be the label ids 0..2"),
        ({"id2label": {"0": "x", "-1": "y", "2": "z"}}, "id2label: keys must be the label ids 0..2"),
        ({"id2label": {"0": "x", "1": ["y"]}}, "id2label.1: Input should be a valid string"),
        ({"pad_token_id": "x"}, "pad_token_id: Input should be a valid integer, got 'x'"),
        ({"pad_token_id": -7}, "pad_token_id: Input should be greater than or equal to 0, got -7"),
        ({"pad_token_id": 10**6}, "pad_token_id 1000000 is not below vocab_size 120"),
        ({"vocab_size": 0}, "vocab_size: Input should be greater than or equal to 1, got 0"),
        ({"num_hidden_layers": True}, "num_hidden_layers: Input should be a valid integer, got True"),
        ({"hidden_dropout_prob": 7}, "hidden_dropout_prob: Input should be less than or equal to 1, got 7"),
        ({"edgebert_demo": "yes"}, "edgebert_demo: Input should be a valid boolean, got 'yes'"),
        ({"model_type": "x" * 10**6}, "unsupported architecture 'xxxx"),
        ({"layer_norm_eps": "9" * 10**6}, "layer_norm_eps: Input should be a valid number, got '9999"),
    ],
    ids=lambda value: str(value)[:40],
)
def test_config_values_are_typed_and_bounded(run_cli, bert, work, changes, fragment):
    edit_config(bert, **changes)
    message = refused_slice(run_cli, bert, work, fragment)
    assert "config.json" in message  # names the file; the key is in the fragment


@pytest.mark.parametrize("name", ["config.json", "edgebert.json"])
def test_json_nested_too_deeply(run_cli, hostile_slice, work, name):
    (hostile_slice / name).write_text("[" * 100_000 + "]" * 100_000)
    refused_export(run_cli, hostile_slice, work, f"{name} is not valid JSON: nested too deeply")


def test_oversized_json_is_not_read(run_cli, bert, work):
    with (bert / "config.json").open("r+b") as f:
        f.truncate(65 << 20)  # sparse: 65 MB of NULs on disk costs nothing
    refused_slice(run_cli, bert, work, "too large for a JSON file edgebert reads")


# --- sizes: checked against the weights before anything is allocated ------------------------------


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"num_hidden_layers": 10**9}, "holds 12 encoder layers, but config.json says num_hidden_layers 1000000000"),
        ({"num_hidden_layers": 6}, "holds 12 encoder layers, but config.json says num_hidden_layers 6"),
        (
            {"vocab_size": 10**12},
            "word_embeddings.weight has shape (120, 48), but config.json implies (1000000000000, 48)",
        ),
        (
            {"intermediate_size": 10**9},
            "intermediate.dense.weight has shape (96, 48), but config.json implies (1000000000",
        ),
        ({"max_position_embeddings": 10**9}, "position_embeddings.weight has shape (40, 48), but config.json implies"),
        (
            {"hidden_size": 48 * 10**7, "num_attention_heads": 12},
            "has shape (120, 48), but config.json implies (120, 48",
        ),
    ],
    ids=["layers", "fewer-layers", "vocab", "ffn", "positions", "hidden"],
)
def test_sizes_are_checked_against_the_weights_first(run_cli, bert, work, changes, fragment):
    """Before the fix, 10^9 layers grew the process to 7 GB listing names; now the header answers first."""
    edit_config(bert, **changes)
    refused_slice(run_cli, bert, work, fragment)


def test_roberta_pad_token_beyond_positions(run_cli, tmp_path, tiny_models, work):
    model = tmp_path / "roberta"
    shutil.copytree(tiny_models["roberta-cls"], model)
    edit_config(model, pad_token_id=41)  # positions start at 42; the table has 42 rows
    refused_slice(run_cli, model, work, "pad_token_id 41 leaves no positions")


def zip_bomb(weights: Path) -> int:
    """Re-pack a real torch.save zip with deflate: torch.load still reads it, expanding each member in memory."""
    import torch

    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(8 << 20)}, weights)  # 32 MB of zeros
    packed = weights.with_suffix(".deflated")
    with zipfile.ZipFile(weights) as source, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as target:
        for member in source.infolist():
            target.writestr(member.filename, source.read(member))
    packed.replace(weights)
    assert torch.load(weights, weights_only=True)["bert.embeddings.word_embeddings.weight"].numel() == 8 << 20  # live
    return weights.stat().st_size


def test_zip_bomb_pytorch_model_bin_is_refused_before_loading(run_cli, bert, work):
    (bert / "model.safetensors").unlink()
    size = zip_bomb(bert / "pytorch_model.bin")
    assert size < 200_000
    refused_slice(run_cli, bert, work, "expand to 33554")


# --- non-finite weights: refused by the tensor's name wherever weights are loaded ------------------------

POISONED = "bert.encoder.layer.3.attention.self.key.weight"


def poison(weights: Path, name: str, value: float) -> None:
    """One value of tensor `name` set to `value`, the file rewritten in its own format."""
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(weights)) if weights.suffix == ".safetensors" else torch.load(weights, weights_only=True)
    state[name].view(-1)[-1] = value
    if weights.suffix == ".safetensors":
        save_file(state, str(weights), metadata={"format": "pt"})
    else:
        torch.save(state, weights)


@pytest.mark.parametrize("command", ["slice", "export", "rewire", "train"])
def test_nan_in_a_weight_is_refused_by_name(run_cli, bert, work, tmp_path, command):
    poison(bert / "model.safetensors", POISONED, float("nan"))
    data = tmp_path / "data.tsv"
    data.write_text("sentence\tlabel\ntok1 tok2\t0\ntok3\t1\ntok4 tok5\t2\n")
    args = {
        "slice": ("--width", ".5", "--depth", ".5", "--out", work / "out"),
        "export": ("--format", "onnx", "--out", work / "m.onnx"),
        "rewire": ("--data", data, "--out", work / "rewired"),
        "train": ("--train", data, "--dev", data, "--out", work / "run", "--max-steps", "1", "--json"),
    }[command]
    result = run_cli(command, bert, *args)
    assert_one_line_error(result, f"{bert / 'model.safetensors'}: weight {POISONED} holds NaN or infinite values")
    assert list(work.iterdir()) == []


def test_inf_in_pytorch_model_bin_is_refused_by_name(run_cli, bert, work):
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(str(bert / "model.safetensors")), bert / "pytorch_model.bin")
    (bert / "model.safetensors").unlink()
    poison(bert / "pytorch_model.bin", "classifier.bias", float("-inf"))
    refused_slice(run_cli, bert, work, "weight classifier.bias holds NaN or infinite values")


def test_nan_in_a_slice_is_refused_by_name(run_cli, hostile_slice, work):
    name = "bert.encoder.layer.0.output.dense.weight"
    poison(hostile_slice / "model.safetensors", name, float("nan"))
    refused_export(run_cli, hostile_slice, work, f"weight {name} holds NaN or infinite values")


# --- slice directories: config, manifest and weights validated against each other ------------------


def test_clean_slice_reads_back_with_its_manifest(clean_slice):
    sliced = load_slice(clean_slice)
    manifest = json.loads((clean_slice / "edgebert.json").read_text())
    assert sliced.manifest == manifest and manifest["schema_version"] == 1
    assert manifest["hidden_size"] == 48 == sliced.model.config.hidden_size  # the config's, independently
    assert len(sliced.model.base_model.encoder.layer) == len(manifest["layers_kept"]) == 9


def test_slice_claiming_a_million_layers(run_cli, hostile_slice, work):
    edit_config(hostile_slice, num_hidden_layers=10**6)
    refused_export(
        run_cli, hostile_slice, work, "holds 9 encoder layers, but config.json says num_hidden_layers 1000000"
    )


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda d: (d / "config.json").unlink(), "is not a readable edgebert slice: it has no config.json"),
        (lambda d: (d / "model.safetensors").unlink(), "is not a readable edgebert slice: it has no model.safetensors"),
        (lambda d: (d / "edgebert.json").write_text("{}"), "not a valid SliceManifest: edgebert_version: missing"),
        (lambda d: (d / "edgebert.json").write_text("[1]"), "not a valid SliceManifest"),
        (lambda d: edit_manifest(d, heads_kept=5), "heads_kept says 5, but config.json has 6"),
        (lambda d: edit_manifest(d, width=float("nan")), "width: Input should be a finite number, got nan"),
        (lambda d: edit_manifest(d, schema_version=2), "schema_version: Input should be 1, got 2"),
        (lambda d: edit_manifest(d, task="feature-extraction"), "does not fit the manifest's task feature-extraction"),
        (lambda d: edit_config(d, layer_norm_eps=float("nan")), "layer_norm_eps: Input should be a finite number"),
        (lambda d: edit_config(d, attention_head_size="4"), "attention_head_size: Input should be a valid integer"),
        (lambda d: edit_config(d, position_offset=0), "position_offset 0 does not follow from pad_token_id 1"),
        (lambda d: edit_config(d, num_attention_heads=3), "attention.self.query.weight has shape (24, 48)"),
        (lambda d: edit_config(d, id2label={"0": "a", "1": "b"}), "classifier.weight has shape (3, 48), but config"),
        (lambda d: edit_config(d, id2label=None, num_labels=4), "implies (4, 48)"),
    ],
    ids=[
        "no-config",
        "no-weights",
        "empty-manifest",
        "list-manifest",
        "heads",
        "nan-width",
        "version",
        "task",
        "nan-eps",
        "head-size-str",
        "offset",
        "heads-in-config",
        "labels-vs-classifier",
        "num-labels-vs-classifier",
    ],
)
def test_damaged_slice_is_one_line(run_cli, hostile_slice, work, damage, fragment):
    damage(hostile_slice)
    refused_export(run_cli, hostile_slice, work, fragment)


def edit_manifest(directory: Path, **changes) -> None:
    manifest = json.loads((directory / "edgebert.json").read_text())
    manifest.update(changes)
    (directory / "edgebert.json").write_text(json.dumps(manifest))


# --- links: nothing is read through a link leading out of the model directory ----------------------


@pytest.fixture
def secret(tmp_path) -> Path:
    """A file outside every model directory, standing in for ~/.ssh/id_rsa."""
    path = tmp_path / "outside" / "id_rsa"
    path.parent.mkdir()
    path.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    return path


@pytest.mark.parametrize(
    "name", ["vocab.txt", "tokenizer.json", "config.json", "model.safetensors", "edgebert-train.json"]
)
def test_link_out_of_the_model_directory_is_refused(run_cli, bert, work, secret, name):
    if (bert / name).exists():
        shutil.copyfile(bert / name, secret)  # a well-formed file: only the link's direction is wrong
        (bert / name).unlink()
    os.symlink(secret, bert / name)
    refused_slice(run_cli, bert, work, f"{bert / name} is a link to {secret}, outside the model directory")


def test_link_to_etc_passwd_as_vocab(run_cli, bert, work):
    (bert / "vocab.txt").unlink()
    os.symlink("/etc/passwd", bert / "vocab.txt")
    refused_slice(run_cli, bert, work, "vocab.txt is a link to /etc/passwd, outside the model directory")


@pytest.mark.parametrize("name", ["edgebert.json", "config.json", "model.safetensors"])
def test_link_out_of_a_slice_is_refused(run_cli, hostile_slice, work, secret, name):
    shutil.copyfile(hostile_slice / name, secret)
    (hostile_slice / name).unlink()
    os.symlink(secret, hostile_slice / name)
    refused_export(run_cli, hostile_slice, work, "outside the model directory")


def test_links_inside_the_directory_are_followed(bert, work):
    """Links are not refused as such: one within the directory, and the hub cache's snapshot -> blobs links."""
    (bert / "sub").mkdir()
    (bert / "vocab.txt").rename(bert / "sub" / "vocab.txt")
    os.symlink(Path("sub") / "vocab.txt", bert / "vocab.txt")
    assert [p.name for p in load_checkpoint(bert).tokenizer_files] == ["vocab.txt"]

    repo = work / "models--org--tiny"  # ~/.cache/huggingface/hub layout
    snapshot = repo / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for path in bert.iterdir():
        if path.is_file() and not path.is_symlink():
            blob = repo / "blobs" / path.name
            shutil.copyfile(path, blob)
            os.symlink(Path("..") / ".." / "blobs" / path.name, snapshot / path.name)
    checkpoint = load_checkpoint(snapshot)
    assert checkpoint.arch == load_checkpoint(bert).arch and checkpoint.weights_file.is_symlink()


def test_cache_that_is_a_file(run_cli, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.write_text("not a directory")
    monkeypatch.setenv("EDGEBERT_CACHE", str(cache))
    assert_one_line_error(run_cli("info"), f"$EDGEBERT_CACHE {cache} is not a directory")
    assert cache.read_text() == "not a directory"
