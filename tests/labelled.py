"""A tiny BERT classifier with a real WordPiece vocabulary and 128 positions, for eval and pick tests.

Unlike conftest's tiny models it can be tokenized by AutoTokenizer and run at the protocol's
128 tokens; 12 layers and 12 heads keep the grid's slicing the same as on BERT-base.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = [f"w{i}" for i in range(60)]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]


def build_classifier(directory: Path, num_labels: int = 2, seed: int = 0, dropout: float = 0.1) -> Path:
    """Save a randomised BertForSequenceClassification with vocab.txt; labels are named neg/pos for 2 classes."""
    import torch
    import transformers

    from tests.conftest import _randomize

    label_names = {0: "neg", 1: "pos"} if num_labels == 2 else {i: f"LABEL_{i}" for i in range(num_labels)}
    config = transformers.BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=48,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=96,
        max_position_embeddings=128,
        num_labels=num_labels,
        id2label=label_names,
        label2id={v: k for k, v in label_names.items()},
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    model = transformers.BertForSequenceClassification(config).eval()
    _randomize(model, seed)
    if num_labels == 2:  # shift the bias so that half the sentences fall on each side of the boundary
        encoded = tokenizer_for(VOCAB)(
            [a for a, _ in BALANCE], [b for _, b in BALANCE], return_tensors="pt", padding="max_length", max_length=128
        )
        with torch.no_grad():
            logits = model(**encoded).logits
            model.classifier.bias[1] += (logits[:, 0] - logits[:, 1]).quantile(0.5)  # between two
    model.save_pretrained(directory)
    (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    return directory


def tokenizer_for(vocab: list[str]):
    import tempfile

    import transformers

    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "vocab.txt").write_text("\n".join(vocab) + "\n")
        return transformers.BertTokenizer(str(Path(directory) / "vocab.txt"))


def sentences(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """Random sentence pairs of 3-12 words."""
    rng = random.Random(seed)
    return [
        (" ".join(rng.choices(WORDS, k=rng.randint(3, 12))), " ".join(rng.choices(WORDS, k=rng.randint(3, 12))))
        for _ in range(count)
    ]


BALANCE = sentences(16, seed=0)  # the eval test's sentences: none sits on the boundary
