"""`edgebert augment`: TinyBERT's data augmentation, the training data DynaBERT's distillation phases use.

Every example gets N variants (TinyBERT's `data_augmentation.py`: N = 20 for SST-2): each replaceable
word (letters only, not a stop word, as TinyBERT's filter) is replaced with probability p = 0.4 by one of
its top K = 15 candidates, drawn uniformly:
- a word the teacher's tokenizer keeps as ONE wordpiece: the K most likely whole words at its position by
  a masked LM when one is given (TinyBERT's way, with its input: the masked text paired with the original),
  else its K nearest whole words (cosine) in the teacher's own word-embedding table;
- a word of several wordpieces: its K nearest neighbours in a GloVe-format word-vectors file when one is
  given (its first 100,000 words, as TinyBERT reads), else it is kept.
Words are those the teacher tokenizer's pre-tokenization makes (what WordPiece sees), replaced in place in
the original text: case (matched to the word's), spacing and punctuation stay. A variant equal to the
original or to an earlier variant is dropped (TinyBERT draws N and drops repeats too), so an example may
have fewer than N. Sentence pairs: each variant replaces words on both sides. Labels are copied: the
distillation losses are against the teacher.

Deterministic for a seed: each example draws from its own generator, seeded by (seed, its index in the
file), and neighbours are ranked in float64 with ties broken by vocabulary order, so neither the chunking
nor the masked-LM batch size changes a byte. Examples go through in chunks: bounded memory, a progress line.

Differences from TinyBERT's script, on purpose: the candidate that is the word itself (the masked LM's
usual first choice, since the original text is in its input) is skipped, so K candidates are K other
words; candidates are whole words of letters only (no `##` pieces, punctuation or placeholders); the
output keeps the original text around replaced words instead of re-joining lower-cased tokens; a pair's
variants change both sides at once (N per example) instead of one side at a time.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgebert import __version__
from edgebert.atomic import ReplaceCheck, refuse_existing, staged_outputs
from edgebert.checkpoint import checkpoint_config_file
from edgebert.data import GLUE_COLUMNS, Columns, Dataset, check_tokenizer_files, load_tokenizer, read_any, read_dataset
from edgebert.errors import EdgebertError, OptionError, require
from edgebert.manifests import Count, FileRef, Fraction, Index, read_manifest
from edgebert.model_files import CONFIG_FILE, WEIGHTS_FILES, model_file, tokenizer_files
from edgebert.reading import file_sha256, open_regular

if TYPE_CHECKING:
    import torch

TINYBERT_VARIANTS = 20  # TinyBERT's N for SST-2 (QNLI 20, MNLI and QQP 10, the other tasks 30)
TINYBERT_PROBABILITY = 0.4  # its p
TINYBERT_TOP_K = 15  # its M
DEFAULT_SEED = 42
MLM_BATCH_SIZE = 32  # masked copies per forward pass
MAX_MLM_LENGTH = 512  # tokens of a masked-LM input (the masked text and the original), as TinyBERT cuts it
MAX_WORD_VECTORS = 100_000  # TinyBERT reads the first 100,000 words of the GloVe file (the most frequent)
MAX_VECTOR_LINE = 1 << 20  # bytes of one word-vectors line (a 300-d GloVe line is ~3 kB)
MAX_VECTOR_DIMENSION = 4096  # GloVe's are 50 to 300: bounds the table at 1.6 GB for the 100,000 words read
EXAMPLE_CHUNK = 2048  # examples split, searched and written at once (a progress step)
MLM_EXAMPLE_CHUNK = 256  # the same with a masked LM: ~1,300 forward passes, a minute or so on a CPU
QUERY_BATCH = 256  # words per matrix product over a vocabulary (a 100,000-word table: 100 MB of scores)
SHORTLIST_MARGIN = 8  # float32 shortlist beyond k, ranked again in float64
SPARE_CANDIDATES = 2  # ranked beyond K: the word itself, in any case, is skipped
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
Example = tuple[str, ...]  # the text, or the two texts of a pair


class Reporter(Protocol):
    """Progress of the long stages (edgebert.cli.progress.Progress is one)."""

    def stage(self, label: str, total: int | None = None, done: int = 0, unit: str = "step") -> None: ...
    def update(self, done: int | None = None, advance: int = 0, detail: str | None = None) -> None: ...


class Silent:
    """A reporter that shows nothing (library callers, tests)."""

    def stage(self, label: str, total: int | None = None, done: int = 0, unit: str = "step") -> None:
        pass

    def update(self, done: int | None = None, advance: int = 0, detail: str | None = None) -> None:
        pass


@dataclass(frozen=True)
class AugmentOptions:
    """How variants are made: TinyBERT's method and defaults. `batch_size` changes the speed, never the output."""

    variants: int = TINYBERT_VARIANTS
    probability: float = TINYBERT_PROBABILITY
    top_k: int = TINYBERT_TOP_K
    seed: int = DEFAULT_SEED
    mlm: Path | None = None  # a masked-LM directory: candidates of one-wordpiece words
    word_vectors: Path | None = None  # a GloVe-format text file: candidates of words of several wordpieces
    batch_size: int = MLM_BATCH_SIZE

    def __post_init__(self) -> None:
        """Bad values are usage errors (exit 2), refused before any slow work."""
        for option, value in (
            ("--variants", self.variants),
            ("--top-k", self.top_k),
            ("--batch-size", self.batch_size),
        ):
            if value < 1:
                raise OptionError(f"{option} must be at least 1, got {value}")
        if not 0 < self.probability <= 1:  # NaN fails too
            raise OptionError(f"--prob must be in (0, 1], got {self.probability}")
        if self.seed < 0:
            raise OptionError(f"--seed must be 0 or more, got {self.seed}")


# ---- the manifest: `<out>.json` beside the augmented file ---------------------------------------------------------


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AugmentSettings(_Record):
    variants: Count
    probability: Fraction
    top_k: Count
    seed: Index
    text_columns: list[str] = Field(min_length=1, max_length=2)
    label_column: str
    drop_dev_matches: bool


class AugmentCounts(_Record):
    examples: Count
    variants_written: Index
    duplicates_removed: Index  # draws equal to the original or to an earlier variant
    dev_matches_dropped: Index
    rows: Count  # examples + variants written (the header excluded)


class AugmentManifest(_Record):
    """What `edgebert augment` wrote, from what, and how: `train` records the file's sha256 and these settings."""

    version: Literal[1] = 1
    edgebert_version: str
    augmented: FileRef  # the augmented file: its name (beside this manifest), sha256 and rows
    data: FileRef
    dev_data: FileRef | None
    teacher: FileRef  # sha256 of its weights file
    mlm: FileRef | None  # sha256 of its weights file; None: teacher-embedding neighbours
    word_vectors: FileRef | None  # sha256 of the lines read, examples = words kept; None: such words kept
    settings: AugmentSettings
    counts: AugmentCounts
    wall_time_s: float = Field(ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _consistent(self) -> AugmentManifest:
        counts = self.counts
        if counts.rows != counts.examples + counts.variants_written or self.augmented.examples != counts.rows:
            raise ValueError("counts.rows must be counts.examples + counts.variants_written, and augmented.examples")
        drawn = counts.variants_written + counts.duplicates_removed + counts.dev_matches_dropped
        if drawn != counts.examples * self.settings.variants:
            raise ValueError("variants written, duplicates and dev matches must add up to examples x variants")
        if self.data.examples != counts.examples:
            raise ValueError("data.examples must equal counts.examples")
        return self


def manifest_path(out: Path) -> Path:
    """The manifest of an augmented file: beside it, named `<file>.json`."""
    return out.with_name(out.name + ".json")


def read_augmented(path: str | Path) -> AugmentManifest:
    """The validated manifest of an augmented file; refused when it is missing, invalid or describes other bytes."""
    path = Path(path)
    manifest_file = manifest_path(path)
    if not manifest_file.exists():
        raise EdgebertError(f"{path} has no {manifest_file.name}: not a file `edgebert augment` wrote")
    manifest = read_manifest(manifest_file, AugmentManifest)
    if manifest.augmented.path != path.name:
        raise EdgebertError(f"{manifest_file} describes {manifest.augmented.path}, not {path.name}")
    if file_sha256(path) != manifest.augmented.sha256:
        raise EdgebertError(f"{path} is not the file {manifest_file.name} describes (another sha256): augment it again")
    return manifest


def replaceable_augmented(out: Path) -> ReplaceCheck:
    """What `--force` may replace: `out` and its manifest, when that manifest is one `augment` wrote for `out`."""

    def why_not(path: Path) -> str | None:
        try:
            manifest = read_manifest(manifest_path(out), AugmentManifest)
        except EdgebertError:
            return f"has no valid {manifest_path(out).name} beside it, so it is not a file `edgebert augment` wrote"
        if manifest.augmented.path != out.name:
            return f"belongs to {manifest.augmented.path}, not {out.name}"
        return None

    return why_not


# ---- words and candidates ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Word:
    """A replaceable word of one text: its span, and its one wordpiece by the teacher's tokenizer (None: several)."""

    start: int
    end: int
    token_id: int | None


@dataclass(frozen=True)
class Slot:
    """A word of an example that has candidates: which text, where, and the replacements to draw from."""

    side: int
    start: int
    end: int
    candidates: tuple[str, ...]


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


@dataclass
class MaskedLM:
    """A local masked LM, its tokenizer, and the vocabulary columns that are whole words."""

    model: Any
    tokenizer: Any
    word_ids: torch.Tensor
    words: list[str]
    max_length: int
    reference: FileRef


def load_masked_lm(directory: Path) -> MaskedLM:
    """A Hugging Face masked-LM directory, from local files only: weights by safetensors or a weights-only
    torch.load, no remote code, no file linked from outside the directory."""
    transformers = require("transformers", "a masked language model (--mlm)")
    if not directory.is_dir():
        raise EdgebertError(f"{directory}: no such model directory (--mlm)")
    if model_file(directory, CONFIG_FILE) is None:
        raise EdgebertError(f"{directory} has no {CONFIG_FILE}: not a Hugging Face model directory (--mlm)")
    weights = next((path for name in WEIGHTS_FILES if (path := model_file(directory, name)) is not None), None)
    if weights is None:
        raise EdgebertError(f"{directory} has no weights: expected one of {', '.join(WEIGHTS_FILES)} (--mlm)")
    check_tokenizer_files(directory, {path.name for path in tokenizer_files(directory)})
    bar_shown = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # edgebert's own progress line is the one shown
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(directory), local_files_only=True, trust_remote_code=False
        )
        model = transformers.AutoModelForMaskedLM.from_pretrained(
            str(directory), local_files_only=True, trust_remote_code=False, weights_only=True
        ).eval()
    except Exception as exc:  # transformers raises many kinds (OSError, ValueError, KeyError...) on a bad directory
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EdgebertError(f"{directory}: cannot load it as a masked language model ({reason})") from exc
    finally:
        if bar_shown:
            transformers.utils.logging.enable_progress_bar()
    if tokenizer.mask_token_id is None or model.get_output_embeddings() is None:
        raise EdgebertError(f"{directory}: no mask token or no vocabulary projection: not a masked language model")
    import torch

    words = whole_word_tokens(tokenizer)
    ids = sorted(words)
    positions = getattr(model.config, "max_position_embeddings", MAX_MLM_LENGTH)
    return MaskedLM(
        model,
        tokenizer,
        torch.tensor(ids),
        [words[i] for i in ids],
        min(MAX_MLM_LENGTH, positions, tokenizer.model_max_length),
        FileRef(path=str(directory), sha256=file_sha256(weights)),
    )


def masked_lm_candidates(
    mlm: MaskedLM, occurrences: Sequence[tuple[str, int, int]], k: int, batch_size: int
) -> list[list[str]]:
    """The `k` most likely whole words at each occurrence (text, start, end) masked, best first.

    The input is TinyBERT's: the text with the word masked, paired with the original text. Inputs are grouped
    by length, never padded, so a row's logits do not depend on the others in its batch. An occurrence whose
    mask did not survive truncation (or whose text holds the mask token itself) gets none.
    """
    import torch

    mask = mlm.tokenizer.mask_token
    encoded = mlm.tokenizer(
        [text[:start] + mask + text[end:] for text, start, end in occurrences],
        [text for text, _, _ in occurrences],
        truncation=True,
        max_length=mlm.max_length,
    )
    ids, types = encoded["input_ids"], encoded.get("token_type_ids")
    by_length: dict[int, list[int]] = {}
    for i, row in enumerate(ids):
        if row.count(mlm.tokenizer.mask_token_id) == 1:
            by_length.setdefault(len(row), []).append(i)
    ranked: list[list[str]] = [[] for _ in occurrences]
    for members in by_length.values():
        for start in range(0, len(members), batch_size):
            batch = members[start : start + batch_size]
            inputs = {"input_ids": torch.tensor([ids[i] for i in batch])}
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
            if types is not None:
                inputs["token_type_ids"] = torch.tensor([types[i] for i in batch])
            rows = torch.arange(len(batch))
            positions = (inputs["input_ids"] == mlm.tokenizer.mask_token_id).int().argmax(dim=1)
            # The vocabulary projection at the masked positions only: at all of them it doubles a small LM's work.
            only_masked = mlm.model.get_output_embeddings().register_forward_pre_hook(
                lambda module, args: (args[0][rows, positions],)  # noqa: B023 (used before the loop moves on)
            )
            try:
                with torch.inference_mode():
                    logits = mlm.model(**inputs).logits
            finally:
                only_masked.remove()
            top = logits[:, mlm.word_ids].topk(min(k, len(mlm.words)), dim=1).indices
            for i, row in zip(batch, top.tolist(), strict=True):
                ranked[i] = [mlm.words[j] for j in row]
    return ranked


# ---- variants ---------------------------------------------------------------------------------------------------


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


# ---- the output file --------------------------------------------------------------------------------------------


class RowWriter:
    """Rows written in the data's format (.csv: comma-separated with quotes, else GLUE's TSV), hashed as written."""

    def __init__(self, file: BinaryIO, comma: bool):
        self.file = file
        self.dialect = (
            {"delimiter": ","} if comma else {"delimiter": "\t", "quoting": csv.QUOTE_NONE, "quotechar": None}
        )
        self.digest = hashlib.sha256()
        self.rows = 0

    def write(self, rows: list[list[str]]) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n", **self.dialect).writerows(rows)
        data = buffer.getvalue().encode("utf-8")
        self.file.write(data)
        self.digest.update(data)
        self.rows += len(rows)


def examples_of(data: Dataset) -> list[Example]:
    return list(zip(*(side for side in (data.first, data.second) if side is not None), strict=True))


def check_writable(data: Dataset, comma: bool) -> None:
    """A TSV cannot hold a tab in a text (GLUE's files have no quoting), and no output a line break."""
    forbidden = "\n\r" if comma else "\t\n\r"
    for line, example in zip(data.lines, examples_of(data), strict=True):
        if any(ch in text for text in example for ch in forbidden):
            hint = "" if comma else ": write a .csv file (--out NAME.csv)"
            raise EdgebertError(
                f"{data.path}:{line}: a text holds a tab or a line break, which the output cannot{hint}"
            )


def read_dev(dev_file: Path, columns: Columns, data: Dataset) -> tuple[Dataset, set[str]]:
    """The dev set and the keys (`dev_key`) of its examples; it must have as many texts per example as the data."""
    dev = read_any(dev_file, columns)
    if (dev.second is None) != (data.second is None):
        raise EdgebertError(
            f"{dev_file}: {1 if dev.second is None else 2} text column(s), {data.path} has "
            f"{1 if data.second is None else 2}: give the dev file of the same task"
        )
    return dev, {dev_key(example) for example in examples_of(dev)}


@dataclass
class Tally:
    variants_written: int = 0
    duplicates_removed: int = 0
    dev_matches: int = 0
    first_match: str = ""  # the first variant equal to a dev text, and where it came from


def write_augmented(
    writer: RowWriter,
    data: Dataset,
    sources: CandidateSources,
    dev_keys: set[str],
    drop_dev_matches: bool,
    reporter: Reporter,
) -> Tally:
    """Every example, then its variants (minus those equal to a dev text when dropping them), chunk by chunk."""
    options, tally = sources.options, Tally()
    examples = examples_of(data)
    writer.write([list(data.columns)])
    reporter.stage("augmenting", len(data), unit="example")
    for start in range(0, len(data), sources.chunk):
        chunk = examples[start : start + sources.chunk]
        rows = []
        for i, example, slots in zip(range(start, start + len(chunk)), chunk, sources.slots(chunk), strict=True):
            rng = example_rng(options.seed, i)
            variants = variants_of(example, slots, options.variants, options.probability, rng)
            tally.duplicates_removed += options.variants - len(variants)
            rows.append([*example, data.labels[i]])
            for variant in variants:
                if dev_key(variant) in dev_keys:
                    tally.dev_matches += 1
                    tally.first_match = (
                        tally.first_match or f"{' | '.join(variant)[:60]!r}, from {data.path}:{data.lines[i]}"
                    )
                    if drop_dev_matches:
                        continue
                rows.append([*variant, data.labels[i]])
                tally.variants_written += 1
        writer.write(rows)
        reporter.update(advance=len(chunk))
    return tally


def augment_file(
    teacher: str | Path,
    data_file: str | Path,
    out: str | Path,
    options: AugmentOptions | None = None,
    *,
    dev_file: str | Path | None = None,
    drop_dev_matches: bool = False,
    columns: Columns = GLUE_COLUMNS,
    force: bool = False,
    reporter: Reporter | None = None,
) -> AugmentManifest:
    """Write `out` (the examples of `data_file`, each followed by its variants) and its manifest `<out>.json`.

    Variants equal to a text of `dev_file` (up to spacing and case) are refused with one error line, or dropped
    and counted with `drop_dev_matches`. Nothing is written unless everything succeeds.
    """
    started = time.perf_counter()
    options = options or AugmentOptions()
    reporter = reporter or Silent()
    teacher, data_file, out = Path(teacher), Path(data_file), Path(out)
    output = {"force": force, "replaceable": replaceable_augmented(out)}
    refuse_existing(out, manifest_path(out), **output)
    data = read_dataset(data_file, columns)
    comma = out.suffix.lower() == ".csv"
    check_writable(data, comma)
    dev, dev_keys = read_dev(Path(dev_file), columns, data) if dev_file is not None else (None, set())
    checkpoint_config_file(teacher)  # a wrong path is refused before the slow loads
    if options.mlm is not None and model_file(options.mlm, CONFIG_FILE) is None:
        raise EdgebertError(f"{options.mlm} has no {CONFIG_FILE}: not a Hugging Face model directory (--mlm)")
    sources = CandidateSources(teacher, options, reporter)
    with staged_outputs(out, manifest_path(out), **output) as (staged, staged_manifest):
        with staged.open("wb") as file:
            writer = RowWriter(file, comma)
            tally = write_augmented(writer, data, sources, dev_keys, drop_dev_matches, reporter)
        if tally.dev_matches and not drop_dev_matches:
            raise EdgebertError(
                f"{tally.dev_matches} variant(s) equal a text of {dev_file} (the first: {tally.first_match}): "
                "pass --drop-dev-matches to drop them"
            )
        manifest = AugmentManifest(
            edgebert_version=__version__,
            augmented=FileRef(path=out.name, sha256=writer.digest.hexdigest(), examples=writer.rows - 1),
            data=FileRef(path=str(data.path), sha256=data.sha256, examples=len(data)),
            dev_data=None if dev is None else FileRef(path=str(dev.path), sha256=dev.sha256, examples=len(dev)),
            teacher=sources.teacher,
            mlm=None if sources.mlm is None else sources.mlm.reference,
            word_vectors=None if sources.word_vectors is None else sources.word_vectors.reference,
            settings=AugmentSettings(
                variants=options.variants,
                probability=options.probability,
                top_k=options.top_k,
                seed=options.seed,
                text_columns=list(data.columns[:-1]),
                label_column=data.columns[-1],
                drop_dev_matches=drop_dev_matches,
            ),
            counts=AugmentCounts(
                examples=len(data),
                variants_written=tally.variants_written,
                duplicates_removed=tally.duplicates_removed,
                dev_matches_dropped=tally.dev_matches if drop_dev_matches else 0,
                rows=writer.rows - 1,
            ),
            wall_time_s=time.perf_counter() - started,
        )
        staged_manifest.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return manifest
