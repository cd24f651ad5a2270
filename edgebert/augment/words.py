"""Words of a text as the teacher's tokenizer sees them: which are replaceable, and candidates in their case."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

WORD_START_MARKERS = ("Ġ", "▁")  # byte-level BPE (RoBERTa) and SentencePiece mark the first piece of a word
# NLTK's English stop words, as TinyBERT's script lists them: never replaced.
STOP_WORDS = frozenset(
    """i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves he him his
    himself she she's her hers herself it it's its itself they them their theirs themselves what which who whom this
    that that'll these those am is are was were be been being have has had having do does did doing a an the and but
    if or because as until while of at by for with about against between into through during before after above below
    to from up down in out on off over under again further then once here there when where why how all any both each
    few more most other some such no nor not only own same so than too very s t can will just don don't should
    should've now d ll m o re ve y ain aren aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn hasn't
    haven haven't isn isn't ma mightn mightn't mustn mustn't needn needn't shan shan't shouldn shouldn't wasn wasn't
    weren weren't won won't wouldn wouldn't 's 're""".split()  # noqa: SIM905 (a line per 20 words, not per word)
)


@dataclass(frozen=True)
class Word:
    """A replaceable word of one text: its span, and its one wordpiece by the teacher's tokenizer (None: several)."""

    start: int
    end: int
    token_id: int | None


def replaceable(word: str) -> bool:
    """TinyBERT's filter: letters only, not a stop word."""
    return word.isalpha() and word.casefold() not in STOP_WORDS


def split_words(texts: list[str], tokenizer: Any) -> list[list[Word]]:
    """Each text's replaceable words, from the teacher tokenizer's own pre-tokenization (the words WordPiece sees)."""
    encoded = tokenizer(
        texts,
        add_special_tokens=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    result = []
    for i, text in enumerate(texts):
        groups: list[list[Any]] = []  # [start, end, token ids, word index]
        for token_id, (start, end), word in zip(
            encoded["input_ids"][i], encoded["offset_mapping"][i], encoded.word_ids(i), strict=True
        ):
            if groups and groups[-1][3] == word:
                groups[-1][1] = end
                groups[-1][2].append(token_id)
            else:
                groups.append([start, end, [token_id], word])
        result.append(
            [
                Word(start, end, ids[0] if len(ids) == 1 else None)
                for start, end, ids, _ in groups
                if replaceable(text[start:end])
            ]
        )
    return result


def whole_word_tokens(tokenizer: Any) -> dict[int, str]:
    """Vocabulary entries that are whole words of letters, id -> word: no special token, no continuation piece
    (WordPiece's `##ing`), no placeholder (`[unused7]`); for byte-level BPE and SentencePiece, the entries that
    start a word (`Ġgood`, `▁good`), without their marker."""
    special = set(tokenizer.all_special_ids)
    continuation = getattr(tokenizer.backend_tokenizer.model, "continuing_subword_prefix", None)
    words = {}
    for token, token_id in tokenizer.get_vocab().items():
        if token_id in special:
            continue
        if continuation:  # WordPiece: every entry not continuing a word starts one
            word = None if token.startswith(continuation) else token
        else:
            word = tokenizer.convert_tokens_to_string([token]).strip() if token.startswith(WORD_START_MARKERS) else None
        if word and word.isalpha():
            words[token_id] = word
    return words


def matched_case(candidate: str, word: str) -> str:
    """`candidate` in `word`'s case: upper (NASA), capitalised (Paris) or as it is."""
    if word.isupper() and len(word) > 1:
        return candidate.upper()
    if word[:1].isupper():
        return candidate[:1].upper() + candidate[1:]
    return candidate


def select_candidates(word: str, ranked: Iterable[str], k: int) -> tuple[str, ...]:
    """The first `k` of `ranked` in `word`'s case, without `word` itself (in any case) or repeats."""
    chosen: list[str] = []
    for candidate in ranked:
        shaped = matched_case(candidate, word)
        if shaped.casefold() != word.casefold() and shaped not in chosen:
            chosen.append(shaped)
            if len(chosen) == k:
                break
    return tuple(chosen)
