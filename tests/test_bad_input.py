"""Bad input: one `error:` line on stderr, a non-zero exit, no traceback, and nothing left behind.

Each broken checkpoint is a copy of the tiny BERT classifier (session fixture `tiny_models`),
damaged in one way. Every run writes to `<tmp>/work/slice`; afterwards `<tmp>/work` must be empty
(no output directory, no `.partial` staging directory).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgebert.errors import EdgebertError
from tests.cli_checks import assert_one_line_error, edit_config


def slice_and_check(run_cli, model, work: Path, fragment: str, *options: str) -> str:
    result = run_cli("slice", model, "--width", "0.5", "--depth", "0.5", "--out", work / "slice", *options)
    assert_one_line_error(result, fragment)
    assert list(work.iterdir()) == [], "a failed slice left something behind"
    return result.stderr


def save_torch(state, directory: Path) -> Path:
    import torch

    (directory / "model.safetensors").unlink()
    torch.save(state, directory / "pytorch_model.bin")
    return directory / "pytorch_model.bin"


def load_state(directory: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


def save_state(state: dict, directory: Path) -> None:
    from safetensors.torch import save_file

    save_file(state, str(directory / "model.safetensors"))


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# --- the model path and config.json -----------------------------------------------------------


def test_missing_path(run_cli, tmp_path, work):
    slice_and_check(run_cli, tmp_path / "no-such-model", work, "does not exist")


def test_file_instead_of_directory(run_cli, broken, work):
    slice_and_check(run_cli, broken / "vocab.txt", work, "is not a directory")


def test_directory_without_config(run_cli, broken, work):
    (broken / "config.json").unlink()
    slice_and_check(run_cli, broken, work, "has no config.json")


def test_invalid_json(run_cli, broken, work):
    (broken / "config.json").write_text('{"model_type": "bert", "hidden_size": ')
    slice_and_check(run_cli, broken, work, "config.json is not valid JSON")


@pytest.mark.parametrize("text", ["[1, 2, 3]", '"bert"', "null"])
def test_json_not_an_object(run_cli, broken, work, text):
    (broken / "config.json").write_text(text)
    slice_and_check(run_cli, broken, work, "must hold a JSON object")


def test_unsupported_architecture_gpt2(run_cli, broken, work):
    import torch

    config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 48, "n_head": 12, "n_layer": 2}
    (broken / "config.json").write_text(json.dumps(config))
    save_state(
        {"transformer.wte.weight": torch.zeros(120, 48), "transformer.h.0.attn.c_attn.weight": torch.zeros(48, 144)},
        broken,
    )
    slice_and_check(run_cli, broken, work, "unsupported architecture 'gpt2'")


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"hidden_size": "48"}, "hidden_size: Input should be a valid integer, got '48'"),
        ({"num_hidden_layers": 0}, "num_hidden_layers: Input should be greater than or equal to 1, got 0"),
        ({"num_attention_heads": 5}, "hidden_size 48 is not a multiple of num_attention_heads 5"),
        ({"hidden_act": "swish"}, "hidden_act: unsupported activation (supported: gelu, "),
    ],
)
def test_config_values_that_make_no_model(run_cli, broken, work, changes, fragment):
    edit_config(broken, **changes)
    slice_and_check(run_cli, broken, work, fragment)


# --- weights -----------------------------------------------------------------------------------


def test_no_weights_file(run_cli, broken, work):
    (broken / "model.safetensors").unlink()
    slice_and_check(run_cli, broken, work, "has no weights: expected one of model.safetensors, pytorch_model.bin")


def test_weights_missing_keys(run_cli, broken, work):
    state = load_state(broken)
    del state["bert.encoder.layer.3.attention.self.key.weight"]
    del state["bert.pooler.dense.bias"]
    save_state(state, broken)
    message = slice_and_check(run_cli, broken, work, "lacks weights the config requires")
    assert "encoder.layer.3.attention.self.key.weight" in message and "pooler.dense.bias" in message


def test_weight_shape_contradicts_config(run_cli, broken, work):
    import torch

    state = load_state(broken)
    state["bert.encoder.layer.3.intermediate.dense.weight"] = torch.zeros(50, 48)
    save_state(state, broken)
    slice_and_check(
        run_cli,
        broken,
        work,
        "encoder.layer.3.intermediate.dense.weight has shape (50, 48), but config.json implies (96, 48)",
    )


def test_config_contradicts_weights(run_cli, broken, work):
    edit_config(broken, num_hidden_layers=13)  # one layer more than the weights hold
    slice_and_check(run_cli, broken, work, "holds 12 encoder layers, but config.json says num_hidden_layers 13")


@pytest.mark.parametrize("keep", [0.5, 0.99, 0.0])
def test_truncated_safetensors(run_cli, broken, work, keep):
    truncate(broken / "model.safetensors", keep)
    slice_and_check(run_cli, broken, work, "model.safetensors is corrupt or truncated")


@pytest.mark.parametrize("keep", [0.5, 0.99, 0.0])
def test_truncated_pytorch_model_bin(run_cli, broken, work, keep):
    weights = save_torch(load_state(broken), broken)
    truncate(weights, keep)
    slice_and_check(run_cli, broken, work, "pytorch_model.bin is corrupt")


@pytest.mark.parametrize(
    "content",
    [b"not a checkpoint at all, just text", bytes(range(256)) * 20, b"\x80\x02}q\x00(X\x01"],
    ids=["text", "binary", "cut-pickle"],
)
def test_corrupt_pytorch_model_bin(run_cli, broken, work, content):
    save_torch({}, broken).write_bytes(content)
    message = slice_and_check(run_cli, broken, work, "pytorch_model.bin is corrupt")
    assert "could run code" not in message  # damage is not reported as an attack


def test_pickle_of_plain_values_is_not_a_state_dict(run_cli, broken, work):
    save_torch({"bert.embeddings.word_embeddings.weight": [1.0, 2.0]}, broken)
    slice_and_check(run_cli, broken, work, "is not a state dict of tensors")


class CreatesMarker:
    """Unpickling this creates a file: the shape of any pickle that runs code on load."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def malicious_pickle(path: Path, marker: Path) -> None:
    """A state dict with a code-running object inside; checked to really run code when fully unpickled."""
    import torch

    torch.save({"bert.embeddings.word_embeddings.weight": CreatesMarker(marker)}, path)
    torch.load(path, weights_only=False)  # proof that the payload is live
    assert marker.exists()
    marker.unlink()


def test_pickle_that_would_execute_code_is_refused(run_cli, broken, work, tmp_path):
    marker = tmp_path / "pwned"
    weights = save_torch({}, broken)
    malicious_pickle(weights, marker)
    message = slice_and_check(run_cli, broken, work, "refusing to load")
    assert "could run code" in message and "io.open" in message
    assert "weights_only=False" not in message  # never relay torch's advice to turn the safety off
    assert not marker.exists(), "the pickle's code ran"


def test_training_args_bin_is_never_unpickled(run_cli, broken, work, tmp_path):
    marker = tmp_path / "pwned"
    malicious_pickle(broken / "training_args.bin", marker)
    result = run_cli("slice", broken, "--width", "0.5", "--depth", "0.5", "--out", work / "slice")
    assert result.code == 0, result.stderr
    assert not marker.exists(), "training_args.bin was unpickled"
    assert not (work / "slice" / "training_args.bin").exists()


# --- width and depth ---------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["--width", "--depth"])
@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("0", "must be in (0, 1], got 0.0"),
        ("-1", "must be in (0, 1], got -1.0"),
        ("1.5", "must be in (0, 1], got 1.5"),
        ("nan", "must be a number in (0, 1], got nan"),
        ("inf", "must be a number in (0, 1], got inf"),
        ("abc", "Invalid value for '--{name}'"),
        ("", "Invalid value for '--{name}'"),
    ],
)
def test_width_and_depth_out_of_range_or_not_numbers(run_cli, tiny_models, work, option, value, fragment):
    name = option.removeprefix("--")
    fragment = fragment.format(name=name)
    if not fragment.startswith("Invalid"):
        fragment = f"{name} {fragment}"
    args = {"--width": "0.5", "--depth": "0.5", option: value}
    result = run_cli("slice", tiny_models["bert-cls"], *[x for kv in args.items() for x in kv], "--out", work / "slice")
    assert_one_line_error(result, fragment)
    assert list(work.iterdir()) == []


def test_width_without_a_whole_head(run_cli, tiny_models, work):
    result = run_cli("slice", tiny_models["bert-cls"], "--width", "0.01", "--depth", "1", "--out", work / "slice")
    assert_one_line_error(result, "width 0.01 keeps no whole attention head")
    assert list(work.iterdir()) == []


def test_depth_without_a_whole_layer(run_cli, tiny_models, work):
    result = run_cli("slice", tiny_models["bert-cls"], "--width", "1", "--depth", "0.04", "--out", work / "slice")
    assert_one_line_error(result, "depth 0.04 keeps no layer")
    assert list(work.iterdir()) == []


def test_unknown_option(run_cli, tiny_models, work):
    result = run_cli("slice", tiny_models["bert-cls"], "--widht", "0.5", "--out", work / "slice")
    assert_one_line_error(result, "--widht")
    assert result.code == 2
    assert list(work.iterdir()) == []


# --- the output directory ----------------------------------------------------------------------


@pytest.fixture
def existing_out(work) -> Path:
    out = work / "slice"
    out.mkdir()
    (out / "keep-me.txt").write_text("precious")
    return out


def test_existing_out_is_refused_without_force(run_cli, tiny_models, work, existing_out):
    result = run_cli("slice", tiny_models["bert-cls"], "--width", "0.5", "--depth", "0.5", "--out", existing_out)
    assert_one_line_error(result, "already exists: pass --force to replace it")
    assert [p.name for p in existing_out.iterdir()] == ["keep-me.txt"]
    assert (existing_out / "keep-me.txt").read_text() == "precious"
    assert [p.name for p in work.iterdir()] == ["slice"]  # no staging directory either


def test_force_does_not_replace_a_directory_edgebert_did_not_write(run_cli, tiny_models, work, existing_out):
    result = run_cli(
        "slice", tiny_models["bert-cls"], "--width", "0.5", "--depth", "0.5", "--out", existing_out, "--force"
    )
    assert_one_line_error(result, "not a slice edgebert wrote: refusing to replace it, even with --force")
    assert [p.name for p in existing_out.iterdir()] == ["keep-me.txt"]
    assert [p.name for p in work.iterdir()] == ["slice"]


def test_failure_with_force_keeps_the_previous_slice(run_cli, tiny_models, broken, work):
    """A bad input never destroys the previous output, even with --force."""
    out = work / "slice"
    assert run_cli("slice", tiny_models["bert-cls"], "--width", "0.5", "--depth", "0.5", "--out", out).code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (broken / "config.json").write_text("{")
    result = run_cli("slice", broken, "--width", "0.5", "--depth", "0.5", "--out", out, "--force")
    assert_one_line_error(result, "config.json")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in work.iterdir()] == ["slice"]


# --- info, and the debugging switch ------------------------------------------------------------


def test_info_on_missing_path(run_cli, tmp_path):
    assert_one_line_error(run_cli("info", tmp_path / "no-such-model"), "does not exist")


def test_info_on_directory_without_config(run_cli, tmp_path):
    assert_one_line_error(run_cli("info", tmp_path), "has no config.json")


def test_info_on_json_output_fails_the_same_way(run_cli, tmp_path):
    assert_one_line_error(run_cli("info", tmp_path / "no-such-model", "--json"), "does not exist")


def test_debug_variable_shows_the_traceback(monkeypatch, tmp_path):
    from edgebert.cli import main

    monkeypatch.setenv("EDGEBERT_DEBUG", "1")
    with pytest.raises(EdgebertError, match="does not exist"):
        main(["slice", str(tmp_path / "no-such-model"), "--out", str(tmp_path / "out")])


def test_out_may_not_be_the_source_model(run_cli, broken):
    before = sorted(p.name for p in broken.iterdir())
    result = run_cli("slice", broken, "--width", "0.5", "--out", broken, "--force")
    assert_one_line_error(result, "is the source model")
    assert sorted(p.name for p in broken.iterdir()) == before
