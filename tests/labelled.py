"""The tiny BERT classifier (tests.models) with a real WordPiece vocabulary and 128 positions, for eval and pick.

Unlike conftest's tiny models it can be tokenized by AutoTokenizer and run at the protocol's
128 tokens. Also the sentences the tests label.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.models import save_model, tiny_model

WORDS = [f"w{i}" for i in range(60)]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
MAX_POSITIONS = 128


def build_classifier(directory: Path, num_labels: int | None = 2, seed: int = 0, dropout: float = 0.1) -> Path:
    """Save a randomised BERT classifier (a bare encoder for num_labels None) with vocab.txt and
    tokenizer_config.json; 2 labels are named neg/pos and balanced on `BALANCE`."""
    import torch

    names = {0: "neg", 1: "pos"} if num_labels == 2 else None
    model = tiny_model(
        "bert",
        num_labels=num_labels,
        vocab_size=len(VOCAB),
        max_positions=MAX_POSITIONS,
        label_names=names,
        dropout=dropout,
        seed=seed,
    )
    if num_labels == 2:  # shift the bias so that half the sentences fall on each side of the boundary
        encoded = tokenizer_for(VOCAB)(
            [a for a, _ in BALANCE],
            [b for _, b in BALANCE],
            return_tensors="pt",
            padding="max_length",
            max_length=MAX_POSITIONS,
        )
        with torch.no_grad():
            logits = model(**encoded).logits
            model.classifier.bias[1] += (logits[:, 0] - logits[:, 1]).quantile(0.5)  # between two
    return save_model(model, directory, VOCAB, json.dumps({"do_lower_case": True}))


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
