"""Vocabulary pruning (`slice --vocab-from`): which word-embedding rows a slice keeps, its tokenizer remapped, the cut.

DynaBERT never shrinks the hidden size, so the word-embedding table is most of a small
sub-network, while a task uses a small part of a general vocabulary. The rule: the model's own
tokenizer reads every text of the given files whole (no truncation, no special tokens added); the
slice keeps the row of every token it produced (at least `min_count` times), and of every token
the tokenizer files or config.json name by id (special and added tokens, the unknown and padding
tokens), in their original order: new id i is the i-th kept original id.

WordPiece only. It splits a word into the longest pieces its vocabulary holds, and a word it
cannot split becomes one [UNK]; a vocabulary of the kept tokens alone would therefore split some
words into other pieces. So the slice's tokenizer.json keeps every original token, a dropped one
mapped to the unknown token's new id: it splits every text as the source's did, and the pruned
slice computes what the unpruned one computes on the original ids with each dropped token
replaced by [UNK]'s. A vocab.txt gives each id one token, so the slice's lists the kept tokens: a
client reading only it splits a text whose tokens were all kept as before, any other by WordPiece
over the kept tokens. The `tokenizers` library writes one token per id back, so a tokenizer
re-saved from a slice (`save_pretrained`) keeps only that much; copy tokenizer.json instead.

A BPE (RoBERTa's byte-level one) is refused: the tokenizers library keys each merge by the ids of
the two tokens it joins, so dropped tokens sharing the unknown id make different merges collide
(measured: with "ab" and "xy" on one id, "abc" became "xyc").
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebert.data import Dataset, Encoded, check_tokenizer_files, load_tokenizer, read_text_source
from edgebert.errors import EdgebertError
from edgebert.layout import EMBEDDINGS, FAMILIES
from edgebert.manifests import FileRef, VocabularyRecord, kept_ids_bitmap, read_json
from edgebert.model_files import copy_model_files, tokenizer_files
from edgebert.reading import read_vocab
from edgebert.subnet import Architecture
from edgebert.tokenizer import read_tokenizer_json, token_text

if TYPE_CHECKING:
    import torch

    from edgebert.checkpoint import Checkpoint

# config.json's fields that name a token by id: kept, and given their new ids.
TOKEN_ID_KEYS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id")
ENCODE_CHUNK = 10_000  # texts tokenized at once: bounds the encodings held in memory
NOT_WORDPIECE = (
    "vocabulary pruning remaps WordPiece (BERT, ELECTRA) tokenizers only: a BPE tokenizer (RoBERTa's and ModernBERT's "
    "byte-level ones) keys each merge by the ids of the two tokens it joins, so dropped tokens sharing the unknown "
    "token's id would "
    "make different merges collide and split text differently, and a SentencePiece one (XLM-R's) numbers its pieces "
    "by their place in its list"
)
COPIED_FILES = ("special_tokens_map.json",)  # tokenizer files naming tokens by text only: copied as they are
ID_TEXT = re.compile(r"[0-9]+")  # an id written as a JSON key (ASCII digits: "²".isdigit() too)
IdMap = Callable[[int], int]


@dataclass
class KeptVocabulary:
    """The rule's outcome for one model: the original ids kept (ascending) and the tokenizer files they remap."""

    kept: list[int]
    unknown: int  # the unknown token's original id
    pad: int  # config.json's padding id (the embedding's padding_idx)
    tokenizer: dict[str, Any]  # the source's tokenizer.json, or the one transformers builds from its vocab.txt
    settings: dict[str, Any] | None  # the source's tokenizer_config.json
    added: dict[str, Any] | None  # the source's added_tokens.json
    vocab_txt: bool  # whether the source has a vocab.txt
    record: VocabularyRecord
    new_ids: dict[int, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.new_ids = {old: new for new, old in enumerate(self.kept)}

    def new_id(self, old: int) -> int:
        """The slice's id of an original id: its rank among the kept ids; a dropped one becomes the unknown token."""
        return self.new_ids.get(old, self.new_ids[self.unknown])

    def architecture(self, arch: Architecture) -> Architecture:
        return replace(arch, vocab_size=len(self.kept))

    def encoded(self, encoded: Encoded) -> Encoded:
        """`encoded` (the source tokenizer's ids) in the slice's ids: what the slice's own tokenizer gives."""
        ids = [[self.new_id(token_id) for token_id in row] for row in encoded.input_ids]
        return Encoded(ids, encoded.token_type_ids, self.new_id(encoded.pad_id))

    def unknown_rate(self, data: Dataset, model: Path) -> float:
        """The share of the tokens of `data`'s texts (read as the sources are) that the slice drops: each becomes
        the unknown token, so a high share warns that texts like these lose much of their meaning."""
        counts = _token_counts(self.tokenizer, [data], model)
        total = sum(counts.values())
        return sum(n for token_id, n in counts.items() if token_id not in self.new_ids) / total if total else 0.0

    def config_changes(self, config: dict[str, Any]) -> dict[str, Any]:
        """The config.json fields pruning changes: vocab_size, and each token id it names that has a row (all kept;
        padding's always written)."""
        ids = {key: _token_id(config.get(key)) for key in TOKEN_ID_KEYS} | {"pad_token_id": self.pad}
        return {"vocab_size": len(self.kept)} | {key: self.new_ids[i] for key, i in ids.items() if i in self.new_ids}


def choose_vocabulary(checkpoint: Checkpoint, sources: list[Dataset], min_count: int = 1) -> KeptVocabulary:
    """Which rows of `checkpoint`'s word embeddings the texts of `sources` need (see the module's docstring)."""
    check_min_count(min_count)
    if not sources:
        raise EdgebertError("vocabulary pruning needs at least one file of texts")
    path, size = checkpoint.path, checkpoint.arch.vocab_size
    if not FAMILIES[checkpoint.model_type].wordpiece:
        raise EdgebertError(f"{path} is of model type {checkpoint.model_type}: {NOT_WORDPIECE}")
    files = {file.name: file for file in tokenizer_files(path)}
    tokenizer = _source_tokenizer(path, files, checkpoint.model_type)
    vocab, unknown = _wordpiece_vocab(tokenizer, path)
    if "vocab.txt" in files:
        _same_ids(read_vocab(files["vocab.txt"]), vocab, path)
    settings = _json_object(files.get("tokenizer_config.json"))
    added = _json_object(files.get("added_tokens.json"))
    if added is not None and not all(_token_id(token_id) is not None for token_id in added.values()):
        raise EdgebertError(f"{files['added_tokens.json']}: every value must be a token id")
    if settings is not None and not all(ID_TEXT.fullmatch(key) for key in _decoder(settings)):
        raise EdgebertError(f"{files['tokenizer_config.json']}: added_tokens_decoder's keys must be token ids")
    pad = checkpoint.model_config["pad_token_id"]
    try:
        specials = _special_ids(tokenizer, vocab, settings, added) | {unknown, pad}
    except EdgebertError as exc:
        raise EdgebertError(f"{path}: {exc}") from exc
    specials |= {i for key in TOKEN_ID_KEYS if (i := _token_id(checkpoint.config.get(key))) is not None and i < size}
    counts = _token_counts(tokenizer, sources, path)
    beyond = max([*specials, *counts])
    if beyond >= size:
        raise EdgebertError(
            f"{path}: its tokenizer gives id {beyond}, but the model has {size} embedding rows: its tokenizer files do "
            "not fit its weights, so they cannot be remapped"
        )
    seen = {token_id for token_id, count in counts.items() if count >= min_count}
    if not seen - specials:
        at_least = f" {min_count} times or more" if min_count > 1 else ""
        read = ", ".join(str(data.path) for data in sources)
        raise EdgebertError(
            f"{read}: the model's tokenizer produces no token{at_least} on these texts beyond the special ones: "
            "nothing to keep"
        )
    kept = sorted(seen | specials)
    names = _token_names(tokenizer)
    nameless = [token_id for token_id in kept if token_id not in names]
    if "vocab.txt" in files and nameless:
        raise EdgebertError(f"{path}: id {nameless[0]} is kept but no token has it, so vocab.txt cannot list it")
    record = VocabularyRecord(
        sources=[FileRef(path=str(data.path.resolve()), sha256=data.sha256, examples=len(data)) for data in sources],
        min_count=min_count,
        original_size=size,
        kept=len(kept),
        unknown_id=kept.index(unknown),
        kept_ids=kept_ids_bitmap(kept, size),
    )
    return KeptVocabulary(kept, unknown, pad, tokenizer, settings, added, "vocab.txt" in files, record)


def vocabulary_sources(paths: Sequence[str | Path], min_count: int) -> list[Dataset]:
    """The texts `--vocab-from` names, read before the model's slow load (an empty or unreadable file fails at
    once); a minimum count without them is refused."""
    check_min_count(min_count)
    if min_count != 1 and not paths:
        raise EdgebertError("--vocab-min-count applies to vocabulary pruning: give the texts with --vocab-from")
    return [read_text_source(path) for path in paths]


def check_min_count(min_count: int) -> None:
    if type(min_count) is not int or min_count < 1:
        raise EdgebertError(f"the minimum count of a kept token must be a whole number >= 1, got {min_count!r}")


def prune_state(state: dict[str, torch.Tensor], vocabulary: KeptVocabulary) -> dict[str, torch.Tensor]:
    """The kept rows of every tensor with a vocabulary axis (`edgebert.layout`: the word embeddings), in order."""
    import torch

    index = torch.tensor(vocabulary.kept, dtype=torch.long)
    pruned = dict(state)
    for parameter in EMBEDDINGS:
        if "vocab" in parameter.axes:
            pruned[parameter.name] = state[parameter.name].index_select(parameter.axes.index("vocab"), index)
    return pruned


def write_tokenizer_files(source: Path, directory: Path, vocabulary: KeptVocabulary) -> None:
    """The slice's tokenizer: tokenizer.json always (the one that splits as the source's did), and whichever of
    vocab.txt, tokenizer_config.json, added_tokens.json and special_tokens_map.json the source has, in new ids."""
    _write_json(directory / "tokenizer.json", remapped_tokenizer(vocabulary))
    if vocabulary.vocab_txt:
        names = _token_names(vocabulary.tokenizer)
        (directory / "vocab.txt").write_text("".join(f"{names[i]}\n" for i in vocabulary.kept), encoding="utf-8")
    if vocabulary.settings is not None:
        settings = dict(vocabulary.settings)
        if "added_tokens_decoder" in settings:
            decoder = _decoder(settings).items()
            settings["added_tokens_decoder"] = {str(vocabulary.new_id(int(key))): token for key, token in decoder}
        _write_json(directory / "tokenizer_config.json", settings)
    if vocabulary.added is not None:
        added = {token: vocabulary.new_id(token_id) for token, token_id in vocabulary.added.items()}
        _write_json(directory / "added_tokens.json", added)
    copy_model_files(source, [path.name for path in tokenizer_files(source) if path.name in COPIED_FILES], directory)


def remapped_tokenizer(vocabulary: KeptVocabulary) -> dict[str, Any]:
    """The source's tokenizer.json in new ids: every original token stays in the WordPiece vocabulary, so text is
    split as before; a dropped one gets the unknown token's id. The unknown token's own entry comes last, so a
    reader keeping the last token of an id (transformers.js) names that id after it."""
    tokenizer = _fixed_ids(vocabulary.tokenizer, vocabulary.new_id)
    model = tokenizer["model"]
    unknown = model["unk_token"]
    vocab = {token: vocabulary.new_id(old) for token, old in model["vocab"].items() if token != unknown}
    tokenizer["model"] = model | {"vocab": vocab | {unknown: vocabulary.new_id(vocabulary.unknown)}}
    return tokenizer


def _source_tokenizer(path: Path, files: dict[str, Path], model_type: str) -> dict[str, Any]:
    """The model's own tokenizer as a tokenizer.json holds it: the source's file, else the one transformers builds
    from its vocab.txt and tokenizer_config.json (what AutoTokenizer gives the unpruned slice)."""
    if "tokenizer.json" in files:
        return read_tokenizer_json(files["tokenizer.json"])[1]
    check_tokenizer_files(path, set(files))
    return json.loads(load_tokenizer(path, model_type).backend_tokenizer.to_str())


def _wordpiece_vocab(tokenizer: dict[str, Any], path: Path) -> tuple[dict[str, int], int]:
    """The WordPiece vocabulary (token -> id, one token per id) and the unknown token's id; else one error line."""
    model = tokenizer["model"]
    if model.get("type") != "WordPiece":
        raise EdgebertError(f"{path}: its tokenizer is a {model.get('type')!r} model: {NOT_WORDPIECE}")
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not all(_token_id(i) is not None for i in vocab.values()):
        raise EdgebertError(f"{path}: tokenizer.json's WordPiece vocab is not a map of tokens to ids")
    if len(set(vocab.values())) != len(vocab):
        raise EdgebertError(f"{path}: tokenizer.json gives one id to several tokens: which one a row means is unknown")
    unknown = model.get("unk_token")
    if unknown not in vocab:
        raise EdgebertError(
            f"{path}: its tokenizer has no unknown token in its vocabulary ({unknown!r}): a dropped token would have "
            "no id to become, so it cannot be remapped"
        )
    return vocab, vocab[unknown]


def _same_ids(listed: dict[str, int], vocab: dict[str, int], path: Path) -> None:
    """vocab.txt and tokenizer.json must agree: both are rewritten from the one vocabulary the rows follow."""
    if listed != vocab:
        token = next((t for t in [*listed, *vocab] if listed.get(t) != vocab.get(t)), None)
        raise EdgebertError(
            f"{path}: vocab.txt and tokenizer.json give token {token!r} different ids ({listed.get(token)} and "
            f"{vocab.get(token)}): which one the embedding rows follow is unknown, so they cannot be remapped"
        )


def _json_object(file: Path | None) -> dict[str, Any] | None:
    data = read_json(file) if file is not None else None
    if data is not None and not isinstance(data, dict):
        raise EdgebertError(f"{file} must hold a JSON object, not {type(data).__name__}")
    return data


def _token_id(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


def _checked_id(value: Any) -> int:
    if _token_id(value) is None:
        raise ValueError(f"{value!r} is not a token id")
    return value


def _special_ids(
    tokenizer: dict[str, Any], vocab: dict[str, int], settings: dict[str, Any] | None, added: dict[str, Any] | None
) -> set[int]:
    """Every id the tokenizer files name (added and special tokens, padding, the post-processor's tokens)."""
    ids: set[int] = set()
    _fixed_ids(tokenizer, lambda token_id: ids.add(token_id) or token_id)
    settings = settings or {}
    additional = settings.get("additional_special_tokens")
    named = [token_text(value) for key, value in settings.items() if key.endswith("_token")]
    named += [token_text(value) for value in additional] if isinstance(additional, list) else []
    ids |= {vocab[token] for token in named if token in vocab}
    ids |= {int(key) for key in _decoder(settings)}
    return ids | set((added or {}).values())


def _decoder(settings: dict[str, Any]) -> dict[str, Any]:
    """tokenizer_config.json's added_tokens_decoder (id -> token, ids written as strings), or nothing."""
    decoder = settings.get("added_tokens_decoder")
    return decoder if isinstance(decoder, dict) else {}


def _fixed_ids(tokenizer: dict[str, Any], new_id: IdMap) -> dict[str, Any]:
    """A copy of tokenizer.json with `new_id` applied to every id outside the model's vocabulary: added tokens,
    the post-processor's special tokens and padding (called with a recorder, it lists them)."""
    try:
        out = dict(tokenizer)
        out["added_tokens"] = [
            token | {"id": new_id(_checked_id(token["id"]))} for token in tokenizer.get("added_tokens") or []
        ]
        out["post_processor"] = _processor(tokenizer.get("post_processor"), new_id)
        if isinstance(tokenizer.get("padding"), dict):
            out["padding"] = tokenizer["padding"] | {"pad_id": new_id(_checked_id(tokenizer["padding"]["pad_id"]))}
        return out
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise EdgebertError(f"its tokenizer.json names a token id in a form edgebert cannot remap ({exc})") from exc


def _processor(processor: dict[str, Any] | None, new_id: IdMap) -> dict[str, Any] | None:
    """A post-processor with its special tokens' ids remapped (the types `tokenizers` writes with ids)."""
    kind = processor.get("type") if processor is not None else None
    if kind is None or kind == "ByteLevel":
        return processor
    if kind == "TemplateProcessing":
        tokens = {
            name: token | {"ids": [new_id(_checked_id(i)) for i in token["ids"]]}
            for name, token in processor["special_tokens"].items()
        }
        return processor | {"special_tokens": tokens}
    if kind in ("BertProcessing", "RobertaProcessing"):
        return processor | {key: [processor[key][0], new_id(_checked_id(processor[key][1]))] for key in ("sep", "cls")}
    if kind == "Sequence":
        return processor | {"processors": [_processor(step, new_id) for step in processor["processors"]]}
    raise ValueError(f"post-processor {kind!r}")


def _token_counts(tokenizer: dict[str, Any], sources: list[Dataset], path: Path) -> Counter[int]:
    """How often the tokenizer produces each id on the sources' texts, each read whole (no truncation)."""
    from tokenizers import Tokenizer

    try:
        backend = Tokenizer.from_str(json.dumps(tokenizer))
    except Exception as exc:  # tokenizers raises its own untyped errors for files it cannot build
        raise EdgebertError(f"{path}: cannot load its tokenizer ({str(exc).splitlines()[0]})") from exc
    backend.no_truncation()
    backend.no_padding()
    counts: Counter[int] = Counter()
    for data in sources:
        texts = data.first + (data.second or [])
        for start in range(0, len(texts), ENCODE_CHUNK):
            for encoding in backend.encode_batch(texts[start : start + ENCODE_CHUNK], add_special_tokens=False):
                counts.update(encoding.ids)
    return counts


def _token_names(tokenizer: dict[str, Any]) -> dict[int, str]:
    """Each id's token: the WordPiece vocabulary's, and the added tokens' (which it may lack)."""
    names = {token["id"]: token["content"] for token in tokenizer.get("added_tokens") or []}
    return names | {token_id: token for token, token_id in tokenizer["model"]["vocab"].items()}


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
