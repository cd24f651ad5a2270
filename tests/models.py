"""The one tiny-model builder of the tests (BERT-base's 12 layers and 12 heads, hidden size 48), the padded
batches they are fed, and the trained grid as test cases.

12 layers and 12 heads make every grid point keep the same heads and layers as on BERT-base; a
hidden size of 48 makes the whole grid run in seconds. Weights are random everywhere (biases and
LayerNorms too), so slicing mistakes show up.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgebert.layout import FAMILIES
from edgebert.subnet import TRAINED_GRID

# Every trained (width, depth) as its own test case, named like a slice (w0.5-d0.75), as timm parametrizes
EVERY_GRID_POINT = pytest.mark.parametrize(
    ("width", "depth"), [pytest.param(w, d, id=f"w{w:g}-d{d:g}") for w, d in TRAINED_GRID]
)
ENCODER = dict(hidden_size=48, num_hidden_layers=12, num_attention_heads=12, intermediate_size=96)
# conftest's `tiny_models`: 120 token ids (no real vocabulary), 40 positions
TINY = dict(vocab_size=120, **ENCODER, max_position_embeddings=40)
# Every architecture edgebert reads (its registry): each is tested on a tiny stock model of its own. How a family's
# tiny config differs from BERT's: RoBERTa's positions start after its padding id (2 more rows, 1 token type), and
# ELECTRA's embeddings are narrower than its hidden size, so its projection is in every test; DistilBERT has no token
# types and its own config keys (`OWN_KEYS`).
KINDS = tuple(FAMILIES)
ROBERTA_LIKE = dict(type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5, position_rows=2)
STOCK_CONFIG = {
    "roberta": ROBERTA_LIKE,
    "xlm-roberta": ROBERTA_LIKE,
    "electra": dict(embedding_size=32),
    "distilbert": dict(type_vocab_size=0),
    # ModernBERT: layers 0, 3, 6, 9 global, the others local with a window of +-2 tokens (shorter than the batches,
    # so the window matters); its special ids inside the tiny vocabulary
    "modernbert": dict(
        type_vocab_size=0,
        global_attn_every_n_layers=3,
        local_attention=4,
        bos_token_id=1,
        eos_token_id=2,
        cls_token_id=1,
        sep_token_id=2,
    ),
}
# DistilBertConfig's own names of BERT's config keys, as its config.json has them (transformers maps three itself)
OWN_KEYS = {
    "distilbert": dict(
        hidden_size="dim",
        num_hidden_layers="n_layers",
        num_attention_heads="n_heads",
        intermediate_size="hidden_dim",
        hidden_dropout_prob="dropout",
        attention_probs_dropout_prob="attention_dropout",
        classifier_dropout="seq_classif_dropout",
        type_vocab_size=None,  # none: it has no token types
    ),
    "modernbert": dict(
        hidden_dropout_prob="mlp_dropout", attention_probs_dropout_prob="attention_dropout", type_vocab_size=None
    ),
}
KIND_NAMES = [f"{kind}-{head}" for kind in KINDS for head in ("cls", "bare")]  # conftest's `tiny_models`' keys


def own_key(kind: str, key: str) -> str:
    """BERT's config.json key `key` as `kind`'s config.json names it."""
    return OWN_KEYS.get(kind, {}).get(key, key)


def stock_config(kind: str) -> dict:
    """How `kind`'s tiny model differs from BERT's (type_vocab_size, pad_token_id, extra position rows, ...)."""
    return {"type_vocab_size": 2, "pad_token_id": 0, "position_rows": 0} | STOCK_CONFIG.get(kind, {})


def tiny_model(
    kind: str = "bert",
    *,
    num_labels: int | None = 3,
    vocab_size: int = TINY["vocab_size"],
    max_positions: int = TINY["max_position_embeddings"],
    label_names: dict[int, str] | None = None,
    dropout: float = 0.1,
    seed: int = 0,
):
    """A randomised transformers model of `kind` (a model type): its stock classifier with `num_labels` outputs,
    or its stock bare encoder (None).

    RoBERTa gets 2 more position embeddings (its padding offset), so every kind takes `max_positions` tokens.
    """
    import transformers

    settings = stock_config(kind)
    position_rows = settings.pop("position_rows")
    common = dict(
        vocab_size=vocab_size,
        **ENCODER,
        num_labels=num_labels or 2,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        max_position_embeddings=max_positions + position_rows,
        **settings,
    )
    if kind in OWN_KEYS:
        common["classifier_dropout"] = dropout
        own = OWN_KEYS[kind]
        common = {own.get(key, key): value for key, value in common.items() if own.get(key, key) is not None}
    if label_names:
        common.update(id2label=label_names, label2id={name: i for i, name in label_names.items()})
    config = transformers.AutoConfig.for_model(kind, **common)
    auto = transformers.AutoModelForSequenceClassification if num_labels else transformers.AutoModel
    model = auto.from_config(config).eval()
    randomize(model, seed)
    return model


def randomize(model, seed: int) -> None:
    """Non-trivial weights everywhere: N(1, 0.1) for LayerNorm scales, N(0, 0.2) for everything else."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            layer_norm = "LayerNorm.weight" in name or "layer_norm.weight" in name  # DistilBERT's are sa_layer_norm...
            param.copy_(1 + 0.1 * noise if layer_norm else 0.2 * noise)


def save_model(model, directory: Path, vocab: list[str], tokenizer_config: str | None = None) -> Path:
    """`save_pretrained` plus a vocab.txt (and tokenizer_config.json when given): a checkpoint directory."""
    model.save_pretrained(directory)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    if tokenizer_config is not None:
        (directory / "tokenizer_config.json").write_text(tokenizer_config)
    return directory


def padded_batch(kind: str, seq_len: int = 12) -> dict:
    """Four rows of a tiny model's token ids padded to different lengths, the last on the left (RoBERTa's
    positions must skip its padding), with two segments where the model has token types (BERT)."""
    import torch

    settings = stock_config(kind)
    pad, segments = settings["pad_token_id"], settings["type_vocab_size"] > 1
    first_id = pad + 3  # ids below it are special tokens
    generator = torch.Generator().manual_seed(7)
    input_ids = torch.randint(first_id, TINY["vocab_size"], (4, seq_len), generator=generator)
    spans = [(0, seq_len), (0, seq_len - 4), (0, 5), (seq_len - 7, seq_len)]  # [start, end) of the real tokens
    attention_mask = torch.zeros(4, seq_len, dtype=torch.long)
    token_type_ids = torch.zeros(4, seq_len, dtype=torch.long)
    for row, (start, end) in enumerate(spans):
        attention_mask[row, start:end] = 1
        input_ids[row, :start] = input_ids[row, end:] = pad
        if segments:
            token_type_ids[row, (start + end) // 2 : end] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
