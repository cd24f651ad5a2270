"""Nearest words by cosine: the search, the teacher's embedding table and a GloVe word-vectors file."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgebert.errors import EdgebertError
from edgebert.manifests import FileRef
from edgebert.reading import open_regular

MAX_WORD_VECTORS = 100_000  # TinyBERT reads the first 100,000 words of the GloVe file (the most frequent)
MAX_VECTOR_LINE = 1 << 20  # bytes of one word-vectors line (a 300-d GloVe line is ~3 kB)
MAX_VECTOR_DIMENSION = 4096  # GloVe's are 50 to 300: bounds the table at 1.6 GB for the 100,000 words read
QUERY_BATCH = 256  # words per matrix product over a vocabulary (a 100,000-word table: 100 MB of scores)
SHORTLIST_MARGIN = 8  # float32 shortlist beyond k, ranked again in float64


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (a zero row stays zero), float32."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms > 0, norms, 1)).astype(np.float32)


def nearest_neighbours(table: np.ndarray, queries: np.ndarray, k: int, exclude: np.ndarray) -> np.ndarray:
    """For each query, the indices of the `k` rows of `table` of highest cosine, best first, ties by index.

    `table` and `queries` have unit rows; `exclude[i]` is query i's own row (-1: none), never returned. A
    float32 product over the whole table (batched, `QUERY_BATCH` queries at once) picks a shortlist that is
    ranked again in float64 row by row, so a query's answer does not depend on the others in its batch.
    """
    import torch

    k = min(k, len(table) - 1)
    size = min(len(table), k + SHORTLIST_MARGIN)
    vectors = torch.from_numpy(table)
    found = []
    for start in range(0, len(queries), QUERY_BATCH):
        batch, own = queries[start : start + QUERY_BATCH], exclude[start : start + QUERY_BATCH]
        scores = torch.from_numpy(batch) @ vectors.T
        rows = np.flatnonzero(own >= 0)
        scores[torch.from_numpy(rows), torch.from_numpy(own[rows])] = -math.inf
        shortlist = scores.topk(size, dim=1).indices.numpy()
        exact = (batch[:, None, :].astype(np.float64) * table[shortlist].astype(np.float64)).sum(axis=2)
        exact[shortlist == own[:, None]] = -math.inf
        order = np.lexsort((shortlist, -exact))
        found.append(np.take_along_axis(shortlist, order, axis=1)[:, :k])
    return np.concatenate(found) if found else np.zeros((0, k), dtype=np.int64)


@dataclass
class NeighbourTable:
    """Candidate words and their unit vectors, searched by cosine; answers are cached for the run."""

    words: list[str]
    vectors: np.ndarray
    cache: dict[Any, list[str]] = field(default_factory=dict)

    def search(self, keys: Sequence[Any], queries: np.ndarray, exclude: np.ndarray, k: int) -> None:
        """Cache the ranked neighbours of the keys not searched yet (query i is the unit vector of keys[i])."""
        new = [i for i, key in enumerate(keys) if key not in self.cache]
        if new:
            found = nearest_neighbours(self.vectors, queries[new], k, exclude[new])
            for i, row in zip(new, found, strict=True):
                self.cache[keys[i]] = [self.words[j] for j in row]


def teacher_table(embeddings: np.ndarray, whole_words: dict[int, str]) -> tuple[NeighbourTable, np.ndarray]:
    """The teacher's whole-word embeddings as a table, and each token id's row in it (-1: not a whole word)."""
    ids = np.array(sorted(whole_words), dtype=np.int64)
    rows = np.full(len(embeddings), -1, dtype=np.int64)
    rows[ids] = np.arange(len(ids))
    return NeighbourTable([whole_words[i] for i in ids.tolist()], unit_rows(embeddings[ids])), rows


@dataclass
class WordVectors:
    """The first words of a GloVe-format file (letters-only words), their unit vectors and how to find them."""

    table: NeighbourTable
    index: dict[str, int]
    reference: FileRef

    def row(self, word: str) -> int | None:
        return self.index.get(word, self.index.get(word.lower()))


def read_word_vectors(path: Path, limit: int = MAX_WORD_VECTORS) -> WordVectors:
    """A GloVe text file (`word v1 ... vD` per line; a fastText `count dim` first line is skipped): its first `limit`
    vectors, each line read with a bound, the words of letters kept; every problem is one line naming the line."""
    digest = hashlib.sha256()
    index: dict[str, int] = {}
    vectors = np.empty((0, 0), dtype=np.float32)  # allocated once the first line gives the dimension
    read = number = 0
    with open_regular(path) as file:
        while read < limit and (raw := file.readline(MAX_VECTOR_LINE + 1)):
            number += 1
            if len(raw) > MAX_VECTOR_LINE:
                raise EdgebertError(f"{path}:{number}: longer than {MAX_VECTOR_LINE} bytes: not a word-vectors line")
            digest.update(raw)
            fields = vector_fields(raw, path, number, vectors.shape[1])
            if number == 1 and len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
                continue  # fastText's header
            values = vector_values(fields, path, number)
            if not read and len(values) > MAX_VECTOR_DIMENSION:
                raise EdgebertError(
                    f"{path}:{number}: {len(values)} numbers, more than {MAX_VECTOR_DIMENSION} per word"
                )
            if not read:
                vectors = np.empty((limit, len(values)), dtype=np.float32)
            read += 1
            if fields[0].isalpha() and fields[0] not in index:
                vectors[len(index)] = values
                index[fields[0]] = len(index)
    if not index:
        raise EdgebertError(
            f"{path}: no vectors of words of letters (expected GloVe's text format: a word and its numbers per line)"
        )
    reference = FileRef(path=str(path), sha256=digest.hexdigest(), examples=len(index))
    return WordVectors(NeighbourTable(list(index), unit_rows(vectors[: len(index)])), index, reference)


def vector_fields(raw: bytes, path: Path, number: int, dimension: int) -> list[str]:
    """A line's word and numbers; once the dimension is known the word may hold spaces (GloVe 840B has some)."""
    try:
        line = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise EdgebertError(f"{path}:{number}: not UTF-8 text") from None
    fields = line.rstrip(" ").rsplit(" ", dimension) if dimension else line.split()
    if dimension and len(fields) != dimension + 1:
        raise EdgebertError(f"{path}:{number}: {len(fields) - 1} numbers, the first vector has {dimension}")
    return fields


def vector_values(fields: list[str], path: Path, number: int) -> np.ndarray:
    if len(fields) < 2:
        raise EdgebertError(f"{path}:{number}: expected a word and its numbers")
    try:
        values = np.array(fields[1:], dtype=np.float32)
    except ValueError:
        raise EdgebertError(f"{path}:{number}: not a list of numbers after the word") from None
    if not np.isfinite(values).all():
        raise EdgebertError(f"{path}:{number}: holds NaN or infinite values")
    return values
