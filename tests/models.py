"""The one tiny-model builder of the tests (BERT-base's 12 layers and 12 heads, hidden size 48), the padded
batches they are fed, and the trained grid as test cases.

12 layers and 12 heads make every grid point keep the same heads and layers as on BERT-base; a
hidden size of 48 makes the whole grid run in seconds. Weights are random everywhere (biases and
LayerNorms too), so slicing mistakes show up.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgebert.subnet import TRAINED_GRID

# Every trained (width, depth) as its own test case, named like a slice (w0.5-d0.75), as timm parametrizes
EVERY_GRID_POINT = pytest.mark.parametrize(
    ("width", "depth"), [pytest.param(w, d, id=f"w{w:g}-d{d:g}") for w, d in TRAINED_GRID]
)
ENCODER = dict(hidden_size=48, num_hidden_layers=12, num_attention_heads=12, intermediate_size=96)
# conftest's `tiny_models`: 120 token ids (no real vocabulary), 40 positions
TINY = dict(vocab_size=120, **ENCODER, max_position_embeddings=40)


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
    """A randomised transformers BERT or RoBERTa: a classifier with `num_labels` outputs, or a bare encoder (None).

    RoBERTa gets 2 more position embeddings (its padding offset), so both take `max_positions` tokens.
    """
    import transformers

    common = dict(
        vocab_size=vocab_size,
        **ENCODER,
        num_labels=num_labels or 2,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    if label_names:
        common.update(id2label=label_names, label2id={name: i for i, name in label_names.items()})
    if kind == "bert":
        config = transformers.BertConfig(**common, max_position_embeddings=max_positions, type_vocab_size=2)
        classes = transformers.BertForSequenceClassification, transformers.BertModel
    elif kind == "roberta":
        config = transformers.RobertaConfig(
            **common, max_position_embeddings=max_positions + 2, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5
        )
        classes = transformers.RobertaForSequenceClassification, transformers.RobertaModel
    else:
        raise ValueError(f"unknown kind {kind!r}")
    model = classes[0 if num_labels else 1](config).eval()
    randomize(model, seed)
    return model


def randomize(model, seed: int) -> None:
    """Non-trivial weights everywhere: N(1, 0.1) for LayerNorm scales, N(0, 0.2) for everything else."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            param.copy_(1 + 0.1 * noise if "LayerNorm.weight" in name else 0.2 * noise)


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

    pad, first_id = (0, 3) if kind == "bert" else (1, 4)  # ids below first_id are special tokens
    generator = torch.Generator().manual_seed(7)
    input_ids = torch.randint(first_id, TINY["vocab_size"], (4, seq_len), generator=generator)
    spans = [(0, seq_len), (0, seq_len - 4), (0, 5), (seq_len - 7, seq_len)]  # [start, end) of the real tokens
    attention_mask = torch.zeros(4, seq_len, dtype=torch.long)
    token_type_ids = torch.zeros(4, seq_len, dtype=torch.long)
    for row, (start, end) in enumerate(spans):
        attention_mask[row, start:end] = 1
        input_ids[row, :start] = input_ids[row, end:] = pad
        if kind == "bert":
            token_type_ids[row, (start + end) // 2 : end] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
