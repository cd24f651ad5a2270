"""The built-in demo model: its weights are pinned, and its cache follows the recipe that generates it."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from edgebert import demo

# sha256 of the demo's model.safetensors (seed 20200404, N(0, 0.02)), recorded when the cache key was introduced.
# It changes only if the recipe or torch's generator does; then the cache key must change too.
DEMO_WEIGHTS_SHA256 = "66016d5644a7c131b7fdabbe9fb32c3244dee5f4bede840725b6e37ef2736c68"


def test_demo_weights_are_the_pinned_ones():
    weights = demo.demo_checkpoint_dir() / "model.safetensors"
    digest = hashlib.sha256()
    with weights.open("rb") as file:
        for block in iter(lambda: file.read(1 << 24), b""):
            digest.update(block)
    assert digest.hexdigest() == DEMO_WEIGHTS_SHA256
    with safe_open(str(weights), framework="pt") as stored:  # seeded N(0, 0.02), LayerNorm scales 1
        embeddings = stored.get_tensor("bert.embeddings.word_embeddings.weight")
        assert abs(embeddings.std().item() - 0.02) < 1e-3 and abs(embeddings.mean().item()) < 1e-4
        assert torch.equal(stored.get_tensor("bert.embeddings.LayerNorm.weight"), torch.ones(768))


def test_demo_info_warns_once_that_it_is_untrained(run_cli):
    result = run_cli("info")
    assert result.code == 0, result.stderr
    assert result.stderr.splitlines() == [f"warning: {demo.UNTRAINED_NOTE}"]


@pytest.fixture
def cheap_demo(monkeypatch, tmp_path):
    """The demo's cache logic with a one-number generator: the nth generation writes n."""
    monkeypatch.setenv("EDGEBERT_CACHE", str(tmp_path))
    generated: list[int] = []

    def weights() -> dict[str, torch.Tensor]:
        generated.append(demo.DEMO_SEED)
        return {"generation": torch.tensor([float(len(generated))])}

    monkeypatch.setattr(demo, "demo_weights", weights)
    return generated


def generation_in_cache() -> int:
    return int(load_file(str(demo.demo_checkpoint_dir() / "model.safetensors"))["generation"].item())


def test_a_current_cache_is_reused(cheap_demo):
    first = demo.demo_checkpoint_dir()
    inode = (first / "model.safetensors").stat().st_ino
    assert demo.demo_checkpoint_dir() == first and (first / "model.safetensors").stat().st_ino == inode
    assert generation_in_cache() == 1 and cheap_demo == [demo.DEMO_SEED]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEMO_SEED", 1),
        ("INIT_STD", 0.03),
        ("TOKENIZER_CONFIG", {"do_lower_case": False}),
        ("SPECIAL_TOKENS", {0: "[PAD]"}),  # the vocabulary
        ("DEMO_ARCH", demo.Architecture(**{**demo.DEMO_ARCH.__dict__, "intermediate_size": 1024})),
    ],
)
def test_a_changed_recipe_regenerates_the_cache(cheap_demo, monkeypatch, name, value):
    assert generation_in_cache() == 1
    monkeypatch.setattr(demo, name, value)
    assert generation_in_cache() == 2 and generation_in_cache() == 2  # regenerated once, then reused


@pytest.mark.parametrize("stamp", [None, "{", json.dumps({"schema_version": 1, "recipe_sha256": "0" * 64})])
def test_a_cache_without_a_valid_matching_stamp_is_regenerated(cheap_demo, stamp):
    """A cache from before stamps existed, a damaged stamp, a stamp of another recipe."""
    directory = demo.demo_checkpoint_dir()
    if stamp is None:
        (directory / demo.STAMP_FILE).unlink()
    else:
        (directory / demo.STAMP_FILE).write_text(stamp)
    assert generation_in_cache() == 2
    assert demo.DemoStamp.model_validate_json((directory / demo.STAMP_FILE).read_text()).recipe_sha256 != "0" * 64
