"""The tiny classifier (tests.models) with a real tokenizer and 128 positions, for eval, pick, rewire and train.

Unlike conftest's tiny models it can be tokenized by AutoTokenizer and run at the protocol's
128 tokens. Also the sentences the tests label.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.models import KINDS, save_model, tiny_model

WORDS = [f"w{i}" for i in range(60)]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
MAX_POSITIONS = 128


# How a kind's stock tokenizer splits these words: WordPiece over VOCAB (BERT, ELECTRA: vocab.txt), or, for kinds
# named here, SentencePiece's Unigram over the same words as pieces (XLM-R: tokenizer.json, padding id 1), or
# byte-level BPE over their characters (ModernBERT: tokenizer.json, [CLS] A [SEP] B [SEP], VOCAB's special ids).
UNIGRAM_KINDS = ("xlm-roberta",)
BPE_KINDS = ("modernbert",)
TOKENIZED_KINDS = [kind for kind in KINDS if kind != "roberta"]  # RoBERTa's byte-level BPE: no tiny one here
WORDPIECE_KINDS = [kind for kind in TOKENIZED_KINDS if kind not in (*UNIGRAM_KINDS, *BPE_KINDS)]
PIECES = ["<s>", "<pad>", "</s>", "<unk>", *(f"\u2581{word}" for word in WORDS), "<mask>"]


def build_classifier(
    directory: Path, num_labels: int | None = 2, seed: int = 0, dropout: float = 0.1, kind: str = "bert"
) -> Path:
    """Save a randomised classifier of `kind` (a bare encoder for num_labels None) with its tokenizer files; 2 labels
    are named neg/pos and balanced on `BALANCE`."""
    import torch

    names = {0: "neg", 1: "pos"} if num_labels == 2 else None
    model = tiny_model(
        kind,
        num_labels=num_labels,
        vocab_size=len(PIECES if kind in UNIGRAM_KINDS else VOCAB),
        max_positions=MAX_POSITIONS,
        label_names=names,
        dropout=dropout,
        seed=seed,
    )
    if kind in UNIGRAM_KINDS:
        model.save_pretrained(directory)
        write_unigram_tokenizer(directory)
    elif kind in BPE_KINDS:
        model.save_pretrained(directory)
        write_bpe_tokenizer(directory)
    else:
        save_model(model, directory, VOCAB, json.dumps({"do_lower_case": True}))
    if num_labels == 2:  # shift the bias so that half the sentences fall on each side of the boundary
        encoded = stock_tokenizer(directory)(
            [a for a, _ in BALANCE],
            [b for _, b in BALANCE],
            return_tensors="pt",
            padding="max_length",
            max_length=MAX_POSITIONS,
        )
        with torch.no_grad():
            logits = model(**encoded).logits
            classifier = getattr(model.classifier, "out_proj", model.classifier)  # RoBERTa's and ELECTRA's head
            classifier.bias[1] += (logits[:, 0] - logits[:, 1]).quantile(0.5)  # between two
        model.save_pretrained(directory)
    return directory


def write_unigram_tokenizer(directory: Path) -> None:
    """XLM-R's kind of tokenizer (SentencePiece Unigram, <s> A </s></s> B </s>) over `PIECES`, as tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tokenizer = Tokenizer(models.Unigram([(piece, 0.0) for piece in PIECES], unk_id=PIECES.index("<unk>")))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "XLMRobertaTokenizer"}))


def write_bpe_tokenizer(directory: Path) -> None:
    """ModernBERT's kind of tokenizer (byte-level BPE, [CLS] A [SEP] B [SEP]) over the characters of `WORDS`, ids
    after VOCAB's special tokens, as tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    specials = VOCAB[: VOCAB.index(WORDS[0])]
    characters = sorted({"\u0120", *"".join(WORDS)})  # byte-level's space (Ġ) and the words' characters
    vocab = {token: i for i, token in enumerate([*specials, *characters])}
    tokenizer = Tokenizer(models.BPE(vocab, [], unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer.add_special_tokens(specials)
    tokenizer.save(str(directory / "tokenizer.json"))
    names = dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_input_names": ["input_ids", "attention_mask"],
        **names,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config))


def stock_tokenizer(directory: Path):
    """The model directory's tokenizer, as transformers alone loads it."""
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(directory))


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
