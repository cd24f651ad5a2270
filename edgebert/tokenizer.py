"""The tokenizer files edgebert writes (bundles, the demo): tokenizer.json, and a tokenizer_config.json to match."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebert.errors import EdgebertError
from edgebert.layout import FAMILIES
from edgebert.manifests import json_bytes, parse_json, read_json
from edgebert.model_files import tokenizer_files
from edgebert.reading import read_vocab

if TYPE_CHECKING:
    from tokenizers import Tokenizer

# tokenizer_config.json's defaults where the source's names none: BERT's (`Family.bert_tokens`) or RoBERTa's
SPECIAL_TOKENS = {
    True: {
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    },
    False: {  # RoBERTa's byte-level BPE and XLM-R's SentencePiece name the same ones
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "sep_token": "</s>",
        "pad_token": "<pad>",
        "cls_token": "<s>",
        "mask_token": "<mask>",
    },
}
# transformers 5 saves a generic fast tokenizer as "TokenizersBackend", a class transformers 4 (Optimum's) lacks;
# PreTrainedTokenizerFast is the same tokenizer.json in both (same ids, measured on 4.57 and 5.24).
PORTABLE_CLASS = {"TokenizersBackend": "PreTrainedTokenizerFast"}


def write_tokenizer(source_dir: Path, directory: Path, model_type: str, max_len: int) -> None:
    """tokenizer.json (the source's, else WordPiece from its vocab.txt) and a tokenizer_config.json naming pad_token."""
    files = {path.name: path for path in tokenizer_files(source_dir)}  # links out of the model refused
    given = read_json(files["tokenizer_config.json"]) if "tokenizer_config.json" in files else {}
    fast, tokenizer = read_tokenizer_json(files["tokenizer.json"]) if "tokenizer.json" in files else (None, None)
    lowercase = lowercases(tokenizer) if fast is not None else True
    settings = tokenizer_config(given if isinstance(given, dict) else {}, model_type, max_len, lowercase)
    if fast is not None:
        (directory / "tokenizer.json").write_bytes(fast)  # the bytes checked, not the file read again
    elif "vocab.txt" in files:
        wordpiece_tokenizer(files["vocab.txt"], settings).save(str(directory / "tokenizer.json"))
    else:
        raise EdgebertError(f"{source_dir} has neither tokenizer.json nor vocab.txt: the bundle needs a tokenizer")
    (directory / "tokenizer_config.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


def read_tokenizer_json(path: Path) -> tuple[bytes, dict[str, Any]]:
    """tokenizer.json (its bytes and their JSON), if it holds what every client loads: an object with a `model`."""
    data = json_bytes(path)
    tokenizer = parse_json(data, path)
    if not isinstance(tokenizer, dict) or not isinstance(tokenizer.get("model"), dict):
        raise EdgebertError(f'{path} is not a tokenizer: a tokenizer.json is a JSON object with a "model" object')
    return data, tokenizer


def tokenizer_config(given: dict[str, Any], model_type: str, max_len: int, lowercase: bool = True) -> dict[str, Any]:
    """The source's tokenizer settings, completed: class, special tokens (pad_token above all), length.

    `lowercase` is what the bundle's tokenizer.json does: clients apply `do_lower_case` on top of
    it, so a cased tokenizer.json must not be given a default of true. The source's own
    `model_max_length` is kept when it is shorter than the model's positions.
    """
    family = FAMILIES[model_type]
    tokens = {key: token_text(given.get(key)) or default for key, default in SPECIAL_TOKENS[family.bert_tokens].items()}
    settings = {key: value for key, value in given.items() if key in ("do_lower_case", "tokenizer_class")}
    if settings.get("tokenizer_class") in PORTABLE_CLASS:
        settings["tokenizer_class"] = PORTABLE_CLASS[settings["tokenizer_class"]]
    settings.setdefault("tokenizer_class", tokenizer_class(model_type))
    if family.wordpiece:
        settings.setdefault("do_lower_case", lowercase)
    limit = given.get("model_max_length")
    length = limit if type(limit) is int and 0 < limit < max_len else max_len
    return settings | tokens | {"model_max_length": length}


def tokenizer_class(model_type: str) -> str:
    """transformers' tokenizer class of a model type, as tokenizer_config.json names it."""
    family = FAMILIES[model_type]
    return family.tokenizer or f"{family.class_stem}Tokenizer"


def lowercases(tokenizer: Any) -> bool:
    """Whether a tokenizer.json's normalizer lowercases (BertNormalizer's flag, a Lowercase step, in a Sequence)."""
    normalizer = tokenizer.get("normalizer") if isinstance(tokenizer, dict) else None
    if not isinstance(normalizer, dict):
        return False
    kind = normalizer.get("type")
    if kind == "Sequence":
        return any(lowercases({"normalizer": step}) for step in normalizer.get("normalizers") or [])
    return kind == "Lowercase" or (kind == "BertNormalizer" and normalizer.get("lowercase") is True)


def token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json gives it: a string, or an AddedToken dict with `content`."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def wordpiece_tokenizer(vocab_file: Path, settings: dict[str, Any]) -> Tokenizer:
    """BERT's WordPiece tokenizer over `vocab_file`, as `tokenizers` builds it for BertTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = read_vocab(vocab_file)  # one id per token (duplicates refused), as transformers reads it
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token=settings["unk_token"]))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=bool(settings.get("do_lower_case", True)))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    cls, sep = settings["cls_token"], settings["sep_token"]
    if cls in vocab and sep in vocab:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0",
            pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
        )
    specials = {value for key, value in settings.items() if key.endswith("_token")}
    tokenizer.add_special_tokens(sorted(token for token in specials if token in vocab))
    return tokenizer
