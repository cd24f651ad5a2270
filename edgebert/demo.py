"""The built-in demo model: BERT-base shaped, seeded random weights, cached on first use.

It lets a new user run every command without a download. Its size and latency are those of
a real BERT-base DynaBERT; its accuracy is meaningless, and every output says so (`UNTRAINED_NOTE`,
carried by slice manifests, sidecars, `info`, `eval`, `pick` and `bench`). Everything about the
demo lives here: the marker its config.json carries, its recipe, and its cache. The cached
directory is stamped with a digest of the recipe (seed, initialisation, config, vocabulary,
parameter names and shapes), so a changed recipe regenerates it instead of serving old weights.

Its tokenizer is a generated WordPiece vocabulary (BERT's special ids, single characters and
their `##` continuations, fillers), not BERT's: every word becomes characters. It is a real,
loadable tokenizer (tokenizer.json, tokenizer_config.json naming its special tokens), so
`AutoTokenizer`, `pipeline(...)` and every bundle work end to end on the demo.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from edgebert.atomic import staged_outputs
from edgebert.errors import EdgebertError
from edgebert.manifests import read_manifest
from edgebert.notes import warning
from edgebert.parameter_names import model_state
from edgebert.shapes import expected_shapes
from edgebert.subnet import Architecture
from edgebert.tokenizer import tokenizer_config, wordpiece_tokenizer
from edgebert.weights import write_safetensors

if TYPE_CHECKING:
    import torch

CACHE_ENV = "EDGEBERT_CACHE"
DEMO_MARKER = "edgebert_demo"  # config.json key that marks the built-in, untrained demo model
UNTRAINED_NOTE = warning(
    "untrained demo model (seeded random weights): its size and latency are real, its accuracy is not"
)
DEMO_NAME = "demo-bert-base"
DEMO_SEED = 20200404
INIT_STD = 0.02  # N(0, INIT_STD) for every weight and bias; LayerNorm scales 1, shifts 0
STAMP_FILE = "edgebert-demo.json"
TOKENIZER_CONFIG = {"do_lower_case": True}  # the demo's own choice; `demo_tokenizer_config` completes it
TOKENIZER_NOTE = "generated WordPiece vocabulary (single characters), not BERT's: the demo's tokens mean nothing"
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


def demo_tokenizer_config() -> dict:
    """BERT's uncased tokenizer settings over the generated vocabulary, saying that it is generated."""
    return tokenizer_config(TOKENIZER_CONFIG, "bert", DEMO_ARCH.max_positions) | {"edgebert_note": TOKENIZER_NOTE}


def demo_vocab() -> list[str]:
    """A BERT-uncased-like vocabulary: the usual special ids, single characters, then fillers."""
    characters = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    pieces = characters + [f"##{c}" for c in characters if c.isalnum()]
    vocab = [SPECIAL_TOKENS.get(i, f"[unused{i}]") for i in range(104)] + pieces
    return vocab + [f"[filler{i}]" for i in range(len(vocab), DEMO_ARCH.vocab_size)]


def demo_weights() -> dict[str, torch.Tensor]:
    """Seeded N(0, INIT_STD) weights (LayerNorm scales 1), independent of transformers' initialisers."""
    import torch

    generator = torch.Generator().manual_seed(DEMO_SEED)
    weights = {}
    for name, shape in expected_shapes(DEMO_ARCH).items():
        if "LayerNorm" in name:
            tensor = torch.ones(shape) if name.endswith("weight") else torch.zeros(shape)
        else:
            tensor = torch.empty(shape).normal_(0.0, INIT_STD, generator=generator)
        weights[name] = tensor
    return model_state(weights)


class DemoStamp(BaseModel):
    """`edgebert-demo.json` in the cached demo directory: the recipe its files were generated from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    recipe_sha256: str


def recipe_sha256() -> str:
    """A digest of everything that decides the demo's files; any change to the recipe changes it."""
    recipe = {
        "seed": DEMO_SEED,
        "init_std": INIT_STD,
        "config": demo_config(),
        "vocab": demo_vocab(),
        "tokenizer_config": demo_tokenizer_config(),
        "shapes": expected_shapes(DEMO_ARCH),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def _is_current(directory: Path, recipe: str) -> bool:
    """Whether `directory` holds the demo generated from `recipe` (a missing or damaged stamp: no)."""
    stamp = directory / STAMP_FILE
    if not (stamp.is_file() and (directory / "model.safetensors").is_file()):
        return False
    try:
        return read_manifest(stamp, DemoStamp).recipe_sha256 == recipe
    except EdgebertError:
        return False


def write_tokenizer_files(directory: Path) -> None:
    """tokenizer_config.json and tokenizer.json (built with `tokenizers`) over the vocab.txt in `directory`."""
    settings = demo_tokenizer_config()
    (directory / "tokenizer_config.json").write_text(json.dumps(settings, indent=2) + "\n")
    wordpiece_tokenizer(directory / "vocab.txt", settings).save(str(directory / "tokenizer.json"))


def demo_checkpoint_dir() -> Path:
    """The demo checkpoint directory, generated (atomically) on first use and whenever its recipe changed."""
    target = cache_dir() / DEMO_NAME
    recipe = recipe_sha256()
    if _is_current(target, recipe):
        return target
    with staged_outputs(target, force=True) as (staging,):
        staging.mkdir()
        (staging / "config.json").write_text(json.dumps(demo_config(), indent=2) + "\n")
        (staging / "vocab.txt").write_text("\n".join(demo_vocab()) + "\n")
        write_tokenizer_files(staging)
        write_safetensors(demo_weights(), staging / "model.safetensors")
        (staging / STAMP_FILE).write_text(DemoStamp(recipe_sha256=recipe).model_dump_json(indent=2) + "\n")
    return target
