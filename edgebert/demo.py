"""The built-in demo model: BERT-base shaped, seeded random weights, cached on first use.

It lets a new user run every command without a download. Its size and latency are those of
a real BERT-base DynaBERT; its accuracy is meaningless, and every output says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgebert.atomic import staged_outputs
from edgebert.checkpoint import DEMO_MARKER, expected_shapes, model_state
from edgebert.errors import EdgebertError
from edgebert.subnet import Architecture

CACHE_ENV = "EDGEBERT_CACHE"
DEMO_NAME = "demo-bert-base"
DEMO_SEED = 20200404
DEMO_ARCH = Architecture(
    num_layers=12,
    num_heads=12,
    hidden_size=768,
    head_size=64,
    intermediate_size=3072,
    vocab_size=30522,
    max_positions=512,
    type_vocab_size=2,
    has_pooler=True,
    num_labels=2,
)
SPECIAL_TOKENS = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}


def cache_dir() -> Path:
    """$EDGEBERT_CACHE, else $XDG_CACHE_HOME/edgebert, else ~/.cache/edgebert; refused if it is not a directory."""
    if os.environ.get(CACHE_ENV):
        path, source = Path(os.environ[CACHE_ENV]), f"${CACHE_ENV}"
    else:
        path, source = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgebert", "the cache"
    if path.exists() and not path.is_dir():
        raise EdgebertError(f"{source} {path} is not a directory: point {CACHE_ENV} at a directory edgebert may write")
    return path


def demo_config() -> dict:
    arch = DEMO_ARCH
    return {
        "architectures": ["BertForSequenceClassification"],
        "model_type": "bert",
        DEMO_MARKER: True,
        "vocab_size": arch.vocab_size,
        "hidden_size": arch.hidden_size,
        "num_hidden_layers": arch.num_layers,
        "num_attention_heads": arch.num_heads,
        "intermediate_size": arch.intermediate_size,
        "hidden_act": "gelu",
        "max_position_embeddings": arch.max_positions,
        "type_vocab_size": arch.type_vocab_size,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "id2label": {"0": "negative", "1": "positive"},
        "label2id": {"negative": 0, "positive": 1},
    }


def demo_vocab() -> list[str]:
    """A BERT-uncased-like vocabulary: the usual special ids, single characters, then fillers."""
    characters = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    pieces = characters + [f"##{c}" for c in characters if c.isalnum()]
    vocab = [SPECIAL_TOKENS.get(i, f"[unused{i}]") for i in range(104)] + pieces
    return vocab + [f"[filler{i}]" for i in range(len(vocab), DEMO_ARCH.vocab_size)]


def demo_weights() -> dict:
    """Seeded N(0, 0.02) weights (LayerNorm scales 1), independent of transformers' initialisers."""
    import torch

    generator = torch.Generator().manual_seed(DEMO_SEED)
    weights = {}
    for name, shape in expected_shapes(DEMO_ARCH).items():
        if "LayerNorm" in name:
            tensor = torch.ones(shape) if name.endswith("weight") else torch.zeros(shape)
        else:
            tensor = torch.empty(shape).normal_(0.0, 0.02, generator=generator)
        weights[name] = tensor
    return model_state(weights)


def demo_checkpoint_dir() -> Path:
    """The demo checkpoint directory, created (atomically) on first use."""
    target = cache_dir() / DEMO_NAME
    if (target / "model.safetensors").is_file():
        return target
    from safetensors.torch import save_file

    with staged_outputs(target, force=True) as (staging,):
        staging.mkdir()
        (staging / "config.json").write_text(json.dumps(demo_config(), indent=2) + "\n")
        (staging / "vocab.txt").write_text("\n".join(demo_vocab()) + "\n")
        (staging / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}) + "\n")
        save_file(demo_weights(), str(staging / "model.safetensors"), metadata={"format": "pt"})
    return target
