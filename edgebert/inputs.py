"""The one input generator: token ids for export's parity gate, `bench` and the benchmark suite.

Seeded random ids (clear of a family's special tokens, never the pad id) in right-padded
rows whose lengths spread evenly around a padding share, or the lines of a text file at their
real lengths; shaped for a model's declared inputs (names, dtypes, fixed axes). Torch-free.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebert.errors import EdgebertError, require
from edgebert.layout import FAMILIES
from edgebert.manifests import json_bytes, read_json
from edgebert.reading import read_regular, read_vocab, text_lines
from edgebert.runtimes import TensorSpec, short_reason

if TYPE_CHECKING:
    import numpy as np

    from edgebert.sidecar import Sidecar

# Every family's real vocabulary keeps its leading special (and BERT's unused) tokens below 1000, its trailing ones
# (`Family.trailing_special_ids`) at its end; random ids start above the one and stay below the other. A small
# vocabulary (a test's) keeps its own few at the start (e.g. [PAD] [UNK] [CLS] [SEP] [MASK]) and <mask> last.
FIRST_REGULAR_ID = 1000
SMALL_VOCAB_SPECIALS = 5
UNKNOWN_VOCAB_IDS = (1000, 2000)  # without a sidecar: ids every real vocabulary of every family has
ROLES = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
# --text: how much of the file is read, and how many input positions (all batches) are built from it.
# 64 Ki positions of 3-4 int64 inputs are at most 2 MB, which counts toward the model's footprint.
MAX_TEXT_BYTES = 1 << 20
MAX_TEXT_TOKENS = 1 << 16


@dataclass(frozen=True)
class InputPlan:
    """What to feed: the batch shape asked for (a model's fixed axes win), the padding share and the seed."""

    batch_size: int
    seq_len: int
    padding_share: float = 0.25
    seed: int = 0


@dataclass
class Batch:
    """One input batch: the runtime's feeds and how many of its positions are real tokens."""

    feeds: dict[str, Any]
    rows: int
    real_tokens: int
    total_tokens: int


@dataclass
class Inputs:
    """The batches for a model, their description for results, and what the caller should warn about."""

    batches: list[Batch]
    info: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


@dataclass
class TextInput:
    """Lines of a text file and the tokenizer for them, loaded before the model (not the model's memory)."""

    path: Path
    lines: list[str]
    tokenizer: Any  # tokenizers.Tokenizer
    pad_id: int
    note: str  # what of the file was left out, or ""


def role(name: str) -> str | None:
    """Which of ROLES an input is, by name (also e.g. TFLite's serving_default_input_ids)."""
    return next((r for r in ROLES if name == r or name.endswith(r)), None)


def id_range(vocab_size: int | None, pad_id: int, model_type: str | None) -> tuple[int, int]:
    """[low, high) of random ids: clear of the special tokens of `model_type`'s vocabulary (see FIRST_REGULAR_ID), and
    of a pad id found among them anyway (the longer side of it); UNKNOWN_VOCAB_IDS for an unknown vocabulary."""
    if vocab_size is None or model_type is None:
        return UNKNOWN_VOCAB_IDS
    trailing = FAMILIES[model_type].trailing_special_ids
    if vocab_size - trailing > 2 * FIRST_REGULAR_ID:  # a real vocabulary
        low, high = FIRST_REGULAR_ID, vocab_size - trailing
    elif vocab_size > 4 * SMALL_VOCAB_SPECIALS:  # a small one
        low, high = SMALL_VOCAB_SPECIALS, vocab_size - 1
    else:  # too few ids to set any aside but the pad id
        low, high = 0, vocab_size
    if low <= pad_id < high:
        low, high = max((low, pad_id), (pad_id + 1, high), key=lambda ids: ids[1] - ids[0])
    return low, high


def row_lengths(batch: int, seq: int, padding_share: float, rng: Any) -> np.ndarray:
    """Real lengths spread evenly around the target so the batch's padding share is `padding_share`."""
    import numpy as np

    shortest = max(2, round(seq * (1 - 2 * padding_share)))
    lengths = np.linspace(shortest, seq, batch) if batch > 1 else np.array([seq * (1 - padding_share)])
    return rng.permutation(np.clip(np.rint(lengths), min(2, seq), seq).astype(np.int64))


def random_tokens(
    batch: int, seq: int, vocab_size: int | None, pad_id: int, model_type: str | None, padding_share: float, seed: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """Seeded ids (`id_range`) and mask, rows right-padded with `pad_id` (`row_lengths`), and how they were drawn."""
    import numpy as np

    rng = np.random.default_rng(seed)
    low, high = id_range(vocab_size, pad_id, model_type)
    lengths = row_lengths(batch, seq, padding_share, rng)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, rng.integers(low, high, size=(batch, seq)), pad_id).astype(np.int64)
    return ids, mask, f"random ids in [{low}, {high}), seed {seed}"


def role_arrays(ids: np.ndarray, mask: np.ndarray, segments: bool = False) -> dict[str, np.ndarray]:
    """Every input role for (ids, mask); with `segments`, each row's real tokens are two segments (types 0, 1)."""
    import numpy as np

    rows, seq = ids.shape
    token_types = np.zeros_like(ids)
    if segments:
        lengths = mask.sum(-1)
        token_types[(np.arange(seq)[None, :] >= lengths[:, None] // 2) & (mask == 1)] = 1
    positions = np.broadcast_to(np.arange(seq, dtype=np.int64), (rows, seq))
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": token_types, "position_ids": positions}


def shaped(inputs: Sequence[TensorSpec], ids: np.ndarray, mask: np.ndarray) -> Batch:
    """(ids, mask) as the model's feeds: one array per declared input, in its declared dtype."""
    import numpy as np

    values = role_arrays(ids, mask)
    feeds = {spec.name: np.ascontiguousarray(values[role(spec.name)], dtype=spec.dtype) for spec in inputs}
    rows, seq = ids.shape
    return Batch(feeds, rows, int(mask.sum()), rows * seq)


def model_inputs(
    inputs: Sequence[TensorSpec],
    sidecar: Sidecar | None,
    plan: InputPlan,
    text: TextInput | None = None,
    source: Path | str = "model",
) -> Inputs:
    """Seeded ids (one batch) or tokenized text (every line), shaped for the model; checked before anything runs.

    `inputs` is the model's signature (a session's, or its sidecar's); `source` names it in errors.
    """
    names = [spec.name for spec in inputs]
    declared = [spec.name for spec in sidecar.inputs] if sidecar is not None else []
    if declared and sorted(declared) != sorted(names):
        raise EdgebertError(f"{source}: the sidecar lists inputs {declared}, the model has {names}")
    unknown = [name for name in names if role(name) is None]
    if unknown:
        raise EdgebertError(f"{source}: cannot make inputs for {unknown}: expected {', '.join(ROLES[:3])}")
    warnings: list[str] = []
    batch, seq, seq_fixed = _shape(inputs, plan, warnings)
    if sidecar is not None and seq > sidecar.max_seq_len:
        raise EdgebertError(
            f"{source}: sequence length {seq} exceeds the model's {sidecar.max_seq_len} positions (its sidecar's "
            f"max_seq_len); use --seq-len {sidecar.max_seq_len} or less"
        )
    info: dict[str, Any] = {"names": names, "dtypes": {s.name: s.dtype for s in inputs}, "batch_size": batch}
    if text is None:
        if sidecar is None:
            vocab, pad_id, model_type = None, 0, None
            low, high = UNKNOWN_VOCAB_IDS
            warnings.append(f"vocabulary size unknown (no sidecar): token ids drawn from [{low}, {high})")
        else:
            vocab, pad_id = sidecar.vocab_size, sidecar.pad_token_id
            model_type = sidecar.manifest["source"]["model_type"]
        ids, mask, description = random_tokens(batch, seq, vocab, pad_id, model_type, plan.padding_share, plan.seed)
        groups = [(ids, mask)]
    else:
        groups, description = _text_rows(text, batch, seq, seq_fixed)
    batches = [shaped(inputs, ids, mask) for ids, mask in groups]
    real, total = sum(b.real_tokens for b in batches), sum(b.total_tokens for b in batches)
    info |= {
        "seq_len": max(b.total_tokens // b.rows for b in batches),
        "source": description,
        "batches": len(batches),
        "real_tokens": real,  # over one pass through the batches
        "total_tokens": total,
        "padding_share": 1 - real / total,
    }
    return Inputs(batches, info, warnings)


def _shape(inputs: Sequence[TensorSpec], plan: InputPlan, warnings: list[str]) -> tuple[int, int, bool]:
    """Batch size and length: the plan's, except where the model fixes them (TFLite); the model wins.

    The third value says whether the model fixes the length (then every row is padded to it).
    """
    wanted = (plan.batch_size, plan.seq_len)
    fixed: list[int | None] = [None, None]
    for spec in inputs:
        for axis, dim in enumerate(spec.dims[:2]):
            fixed[axis] = dim if dim is not None else fixed[axis]
    batch, seq = (f if f is not None else w for f, w in zip(fixed, wanted, strict=True))
    for what, got, want in zip(("batch size", "sequence length"), (batch, seq), wanted, strict=True):
        if got != want:
            warnings.append(f"the model has a fixed {what} of {got}; using it instead of {want}")
    return batch, seq, fixed[1] is not None


# ---- text --------------------------------------------------------------------------------------------


def _text_rows(text: TextInput, batch: int, seq: int, seq_fixed: bool) -> tuple[list[tuple[Any, Any]], str]:
    """Every line tokenized (cut at `seq`), `batch` consecutive lines per batch, each batch padded to its
    longest row (dynamic axes) or to the model's fixed length; at most MAX_TEXT_TOKENS positions in all."""
    import numpy as np

    text.tokenizer.no_padding()
    text.tokenizer.enable_truncation(max_length=seq)
    encodings = text.tokenizer.encode_batch(text.lines)
    groups, positions, used = [], 0, 0
    for first in range(0, len(encodings), batch):
        rows = [encodings[(first + j) % len(encodings)].ids for j in range(batch)]
        width = seq if seq_fixed else max(1, *map(len, rows))
        if groups and positions + batch * width > MAX_TEXT_TOKENS:
            break
        ids = np.full((batch, width), text.pad_id, dtype=np.int64)
        mask = np.zeros((batch, width), dtype=np.int64)
        for row, tokens in enumerate(rows):
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        groups.append((ids, mask))
        positions += batch * width
        used = min(len(encodings), first + batch)
    truncated = sum(bool(e.overflowing) for e in encodings[:used])
    lines = f"{used} lines" if used == len(text.lines) else f"first {used} of {len(text.lines)} lines"
    padding = f"each padded to the model's fixed {seq} tokens" if seq_fixed else "each batch padded to its longest"
    cut = f", {truncated} cut at {seq} tokens" if truncated else ""
    return groups, f"text: {text.path} ({lines} at their real lengths{cut}, {padding}; cycled over the runs{text.note})"


def read_text(text_file: Path, tokenizer_dir: Path, sidecar: Sidecar | None) -> TextInput:
    """The non-empty lines in the file's first MAX_TEXT_BYTES, and the model's tokenizer (checked against it)."""
    tokenizers = require("tokenizers", "--text")
    path = Path(text_file)
    if not path.exists():
        raise EdgebertError(f"{path}: no such text file")
    data = read_regular(path, MAX_TEXT_BYTES)
    note = ""
    if len(data) > MAX_TEXT_BYTES:  # whole lines only
        data = data[: data.rfind(b"\n", 0, MAX_TEXT_BYTES) + 1]
        note = f"; only the file's first {MAX_TEXT_BYTES >> 20} MiB read"
    try:
        lines = [line.strip() for line in text_lines(data.decode("utf-8")) if line.strip()]
    except UnicodeDecodeError as exc:
        raise EdgebertError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    if not lines:
        raise EdgebertError(f"{path}: no text in it{note}")
    tokenizer = _load_tokenizer(tokenizers, Path(tokenizer_dir))
    # Its largest id, not its token count: a pruned slice's tokenizer keeps every original token, the dropped ones
    # on [UNK]'s id (`edgebert.vocab`), so it has more tokens than the model has rows but no id beyond them.
    top = max(tokenizer.get_vocab().values(), default=0)
    if sidecar is not None and top >= sidecar.vocab_size:
        raise EdgebertError(
            f"{tokenizer_dir}: the tokenizer gives ids up to {top}, the model has only {sidecar.vocab_size} "
            "embedding rows"
        )
    if sidecar is not None:
        pad_id = sidecar.pad_token_id
    else:
        pad_id = next((i for t in ("[PAD]", "<pad>") if (i := tokenizer.token_to_id(t)) is not None), 0)
    return TextInput(path, lines, tokenizer, pad_id, note)


def _load_tokenizer(tokenizers: Any, directory: Path) -> Any:
    """tokenizer.json, or a BERT vocab.txt (with tokenizer_config.json's do_lower_case); a bad file is one line.

    Both are read through `edgebert.reading` (a named pipe would hang the tokenizers library's own read).
    """
    config_path = directory / "tokenizer_config.json"
    fast, vocab = directory / "tokenizer.json", directory / "vocab.txt"
    try:
        if os.path.lexists(fast):
            return tokenizers.Tokenizer.from_str(json_bytes(fast).decode("utf-8"))
        if os.path.lexists(vocab):
            config = read_json(config_path) if os.path.lexists(config_path) else {}
            lowercase = config.get("do_lower_case", True) if isinstance(config, dict) else True
            return tokenizers.BertWordPieceTokenizer(read_vocab(vocab), lowercase=bool(lowercase))
    except EdgebertError:
        raise
    except Exception as exc:  # the tokenizers library raises plain Exceptions for a malformed file
        raise EdgebertError(f"{directory}: cannot load its tokenizer files ({short_reason(exc)})") from exc
    raise EdgebertError(f"{directory}: no tokenizer.json or vocab.txt for --text; pass --tokenizer DIR")
