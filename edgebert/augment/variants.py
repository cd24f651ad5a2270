"""Variants of an example: each word's candidates from their sources, drawn per example from its own generator."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgebert.augment.masked_lm import load_masked_lm, masked_lm_candidates
from edgebert.augment.neighbours import read_word_vectors, teacher_table, unit_rows
from edgebert.augment.options import AugmentOptions, Reporter
from edgebert.augment.words import Word, select_candidates, split_words, whole_word_tokens
from edgebert.data import check_tokenizer_files, load_tokenizer
from edgebert.errors import EdgebertError
from edgebert.manifests import FileRef

EXAMPLE_CHUNK = 2048  # examples split, searched and written at once (a progress step)
MLM_EXAMPLE_CHUNK = 256  # the same with a masked LM: ~1,300 forward passes, a minute or so on a CPU
SPARE_CANDIDATES = 2  # ranked beyond K: the word itself, in any case, is skipped
Example = tuple[str, ...]  # the text, or the two texts of a pair


@dataclass(frozen=True)
class Slot:
    """A word of an example that has candidates: which text, where, and the replacements to draw from."""

    side: int
    start: int
    end: int
    candidates: tuple[str, ...]


class CandidateSources:
    """Where each word's candidates come from (see the module docstring), with the run's caches."""

    def __init__(self, teacher: Path, options: AugmentOptions, reporter: Reporter):
        from edgebert.slicing import open_checkpoint

        self.options = options
        self.word_vectors = None
        if options.word_vectors is not None:
            reporter.stage(f"reading word vectors from {options.word_vectors}")
            self.word_vectors = read_word_vectors(options.word_vectors)
        reporter.stage(f"loading the teacher {teacher}")
        checkpoint = open_checkpoint(teacher)
        check_tokenizer_files(checkpoint.path, {path.name for path in checkpoint.tokenizer_files})
        self.tokenizer = load_tokenizer(checkpoint.path, checkpoint.model_type)
        if not getattr(self.tokenizer, "is_fast", False):
            raise EdgebertError(f"{teacher}: its tokenizer gives no word offsets (it needs a tokenizers-backed one)")
        self.teacher = FileRef(path=str(teacher), sha256=checkpoint.weights_sha256)
        self.mlm = None
        if options.mlm is not None:
            reporter.stage(f"loading the masked LM {options.mlm}")
            self.mlm = load_masked_lm(options.mlm)
        else:
            self.embeddings = checkpoint.state["embeddings.word_embeddings.weight"].float().numpy()
            self.table, self.table_rows = teacher_table(self.embeddings, whole_word_tokens(self.tokenizer))
        self.selected: dict[tuple[str, int | None], tuple[str, ...]] = {}
        self.chunk = EXAMPLE_CHUNK if self.mlm is None else MLM_EXAMPLE_CHUNK

    def slots(self, examples: list[Example]) -> list[list[Slot]]:
        """Every replaceable word of each example that has candidates."""
        words = [
            split_words([example[side] for example in examples], self.tokenizer) for side in range(len(examples[0]))
        ]
        found = [(i, side, word) for i in range(len(examples)) for side in range(len(words)) for word in words[side][i]]
        k, ranked = self.options.top_k + SPARE_CANDIDATES, {}
        single = [(i, side, word) for i, side, word in found if word.token_id is not None]
        if self.mlm is not None:
            texts = [(examples[i][side], word.start, word.end) for i, side, word in single]
            lists = masked_lm_candidates(self.mlm, texts, k, self.options.batch_size)
            ranked = {(i, side, word.start): lists[n] for n, (i, side, word) in enumerate(single)}
        else:
            ids = sorted({word.token_id for _, _, word in single})
            self.table.search(ids, unit_rows(self.embeddings[ids]), self.table_rows[ids], k)
        if self.word_vectors is not None:
            self.search_word_vectors({examples[i][side][w.start : w.end] for i, side, w in found if w.token_id is None})
        result: list[list[Slot]] = [[] for _ in examples]
        for i, side, word in found:
            text = examples[i][side][word.start : word.end]
            candidates = self.candidates(text, word, ranked.get((i, side, word.start)))
            if candidates:
                result[i].append(Slot(side, word.start, word.end, candidates))
        return result

    def search_word_vectors(self, words: set[str]) -> None:
        """Cache the neighbours of those of `words` the word-vectors file has."""
        vectors = self.word_vectors
        rows = sorted({row for word in words if (row := vectors.row(word)) is not None})
        own = np.array(rows, dtype=np.int64)
        vectors.table.search(rows, vectors.table.vectors[own], own, self.options.top_k + SPARE_CANDIDATES)

    def candidates(self, text: str, word: Word, in_context: list[str] | None) -> tuple[str, ...]:
        """`word`'s candidates: its masked-LM ones (`in_context`), else those of the word's cached neighbours."""
        k = self.options.top_k
        if word.token_id is not None and self.mlm is not None:
            return select_candidates(text, in_context or [], k)
        key = (text, word.token_id)
        if key not in self.selected:
            if word.token_id is not None:
                neighbours = self.table.cache[word.token_id]
            else:
                row = self.word_vectors.row(text) if self.word_vectors is not None else None
                neighbours = self.word_vectors.table.cache[row] if row is not None else []
            self.selected[key] = select_candidates(text, neighbours, k)
        return self.selected[key]


def example_rng(seed: int, index: int) -> np.random.Generator:
    """Example `index`'s own generator: its variants do not depend on any other example."""
    return np.random.default_rng([seed, index])


def variants_of(
    example: Example, slots: list[Slot], count: int, probability: float, rng: np.random.Generator
) -> list[Example]:
    """`count` draws, each slot replaced with `probability` by a uniformly drawn candidate; repeats dropped."""
    if not slots:
        return []
    replace = rng.random((count, len(slots))) < probability
    picks = rng.integers(0, [len(slot.candidates) for slot in slots], size=(count, len(slots)))
    seen, variants = {example}, []
    for draw in range(count):
        chosen = [
            slot.candidates[pick] if hit else None
            for slot, pick, hit in zip(slots, picks[draw], replace[draw], strict=True)
        ]
        variant = rebuilt(example, slots, chosen)
        if variant not in seen:
            seen.add(variant)
            variants.append(variant)
    return variants


def rebuilt(example: Example, slots: list[Slot], chosen: list[str | None]) -> Example:
    """`example` with each slot's chosen word in place of the original (None: kept)."""
    texts = []
    for side, text in enumerate(example):
        parts, position = [], 0
        for slot, word in zip(slots, chosen, strict=True):
            if word is not None and slot.side == side:
                parts += [text[position : slot.start], word]
                position = slot.end
        parts.append(text[position:])
        texts.append("".join(parts))
    return tuple(texts)


def dev_key(example: Example) -> str:
    """What a variant is compared with dev texts by: spacing and case do not make another text."""
    return "\t".join(" ".join(text.split()).casefold() for text in example)
