"""The files `slice`, `rewire` and `train` write and edgebert reads again: one typed schema each, versioned, validated.

`edgebert.json` describes a slice: what it kept of which source, and what it costs.
`edgebert-rewire.json` records the importance scores and the permutation a rewiring applied;
`edgebert-train.json` records how a DynaBERT was trained (teacher, data, phases,
hyperparameters, per-sub-network dev metrics). Its presence is how `slice`, `export` and
`pick` know that a model's sub-networks were trained to work. A training run in progress keeps
`run.json`, `state.pt` (tensors and plain fields) and `metrics.jsonl`, read again by `--resume`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgebert.errors import EdgebertError
from edgebert.layout import FAMILIES
from edgebert.model_files import model_file
from edgebert.notes import Note, warning
from edgebert.reading import read_regular

# edgebert's own JSON files and a model's config.json are kilobytes (a training manifest of a large model a few
# megabytes): a bound keeps a hostile file from filling memory before any schema sees it.
MAX_JSON_BYTES = 64 << 20
MAX_JSON_DEPTH = 200  # edgebert's own files nest fewer than 10 levels
OPENING, CLOSING = (ord("["), ord("{")), (ord("]"), ord("}"))
QUOTE, BACKSLASH = ord('"'), ord("\\")
DEPTH_CHUNK = 1 << 18  # bytes json_depth scans at once: its memory is a few times this, whatever the file's size
SHOWN_INPUT_CHARS = 60  # how much of a rejected value an error line quotes
SLICE_MANIFEST = "edgebert.json"
REWIRE_MANIFEST = "edgebert-rewire.json"
TRAIN_MANIFEST = "edgebert-train.json"
NOT_DYNABERT_NOTE = (
    "{model} was not trained as a DynaBERT (no edgebert-train.json): sub-networks below full size are only "
    "accurate for a model trained so; run `edgebert train` to make one, and `edgebert eval` to measure"
)
FINE_TUNED_ONLY_NOTE = (
    "{model} was fine-tuned by `edgebert train` at full size only, not trained as a DynaBERT (its "
    "edgebert-train.json records no width or depth phase): sub-networks below full size are only accurate after "
    "those phases; run `edgebert train {model} --phases width,depth` to make one, and `edgebert eval` to measure"
)
WARNING_FIELDS = ("untrained", "not_dynabert")  # the SliceManifest fields that warn about the slice


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Count = Annotated[int, Field(strict=True, ge=1)]
Index = Annotated[int, Field(strict=True, ge=0)]
Fraction = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
ModelType = Literal[tuple(FAMILIES)]  # the model types edgebert reads, one of `edgebert.layout.FAMILIES` each


class SliceSource(_Record):
    path: str
    weights_file: str
    sha256: str
    model_type: ModelType


class OriginalShape(_Record):
    """The unsliced source's encoder: what the slice's kept counts are out of."""

    layers: Count
    heads: Count
    head_size: Count
    ffn_neurons: Count


class FileRef(_Record):
    path: str
    sha256: str
    examples: int | None = None


class VocabularyRecord(_Record):
    """What `slice --vocab-from` kept of the source's vocabulary: new id i is the i-th original id `kept_ids` marks.

    `kept_ids` is a bitmap over the original ids in base64, bit j of byte i marking original id 8 i + j:
    5 KB for BERT's 30,522 ids, where a list of numbers would put ~100 KB in every manifest, sidecar and bundle
    that carries this one.
    """

    sources: list[FileRef] = Field(min_length=1)  # each file's path, sha256 and texts read (`examples`)
    min_count: Count
    original_size: Count  # the source's vocab_size
    kept: Count  # the slice's vocab_size
    unknown_id: Index  # the new id every dropped token becomes
    kept_ids: str

    @model_validator(mode="after")
    def _kept_ids_hold_kept(self) -> VocabularyRecord:
        count = len(self.original_ids())
        if count != self.kept:
            raise ValueError(f"kept_ids marks {count} ids, but kept says {self.kept}")
        if self.unknown_id >= self.kept:
            raise ValueError(f"unknown_id {self.unknown_id} is not one of the {self.kept} kept ids")
        return self

    def original_ids(self) -> list[int]:
        """The original id of each new id, in order (ascending: pruning keeps the original order)."""
        try:
            bitmap = base64.b64decode(self.kept_ids, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"kept_ids is not base64 ({exc})") from exc
        if len(bitmap) != (self.original_size + 7) // 8:
            raise ValueError(
                f"kept_ids has {len(bitmap)} bytes, {self.original_size} ids need {(self.original_size + 7) // 8}"
            )
        ids = [8 * index + bit for index, byte in enumerate(bitmap) if byte for bit in range(8) if byte >> bit & 1]
        if ids and ids[-1] >= self.original_size:
            raise ValueError(f"kept_ids marks id {ids[-1]}, beyond original_size {self.original_size}")
        return ids


def kept_ids_bitmap(ids: Iterable[int], size: int) -> str:
    """`VocabularyRecord.kept_ids` for the original ids `ids` of a vocabulary of `size`."""
    bitmap = bytearray((size + 7) // 8)
    for token_id in ids:
        bitmap[token_id >> 3] |= 1 << (token_id & 7)
    return base64.b64encode(bytes(bitmap)).decode("ascii")


class SliceManifest(_Record):
    """`edgebert.json` of a slice directory (also the `manifest` of a slice held in memory)."""

    schema_version: Literal[1] = 1
    edgebert_version: str
    source: SliceSource
    task: Literal["sequence-classification", "feature-extraction"]
    original: OriginalShape
    width: Fraction
    depth: Fraction
    hidden_size: Count
    layers_kept: list[Index] = Field(min_length=1)
    heads_kept: Count
    ffn_neurons_kept: Count
    parameters: Count
    encoder_flops_seq128: Count
    trained_as_dynabert: bool
    untrained: str | None = None  # the demo model's note
    not_dynabert: str | None = None  # the note for sub-networks of a model not trained as a DynaBERT
    vocabulary: VocabularyRecord | None = None  # what `--vocab-from` kept (None: the whole vocabulary)
    size_bytes: Index | None = None  # model.safetensors, known once written

    def as_dict(self) -> dict[str, Any]:
        """The plain dict callers pass around and `edgebert.json` holds (absent notes are absent keys)."""
        return self.model_dump(exclude_none=True)


def manifest_warnings(manifest: dict[str, Any]) -> list[Note]:
    """The warnings a slice manifest (or a sidecar's embedded one) carries, for whoever shows the slice."""
    return [warning(manifest[field]) for field in WARNING_FIELDS if manifest.get(field)]


class RewireManifest(_Record):
    """Head and FFN-neuron importance per layer, and the order applied (new position i holds old index order[i])."""

    version: Literal[1] = 1
    edgebert_version: str
    source: FileRef
    data: FileRef
    labels: Literal["gold", "model predictions"]
    batch_size: int
    accumulation: Literal["official", "per-batch"]
    head_importance: list[list[float]]
    neuron_importance: list[list[float]]
    head_order: list[list[int]]
    neuron_order: list[list[int]]
    max_abs_diff: float  # full model's logits before vs after, fp32, on the importance data
    # the same in fp64 on its first batches: ~1e-15 unless the permutation is wrong (None: not measured)
    max_abs_diff_fp64: float | None = None


class PhaseRecord(_Record):
    """A finished phase; the final phase has one per sub-network it specialised (written to phases/final/<key>/)."""

    name: Literal["width", "depth", "finetune", "final"]
    teacher: str  # what the students distilled from
    subnetworks: list[tuple[float, float]]
    steps: int
    epochs: float
    best_step: int
    best_score: float  # sum of the task metric over the phase's sub-networks on the selection set
    wall_time_s: float
    dev_metrics: dict[str, float] | None = None  # a final sub-network's: its written slice's metrics on --dev


class AugmentedRecord(_Record):
    """The augmented data the distillation phases trained on (`train --augmented FILE` or `--augment N`)."""

    data: FileRef  # the augmented file; examples: its rows trained on (with --train-examples, the chosen examples')
    rows: Count  # all its rows: examples and variants
    made_in_run: bool  # --augment N: made in the run's home, removed with it (the same inputs write the same bytes)
    settings: dict[str, Any]  # `edgebert augment`'s, from the file's manifest
    teacher_sha256: str  # the weights augment's candidates came from (warned about when not the run's teacher)
    wall_time_s: float  # augment's


class TrainManifest(_Record):
    """`edgebert-train.json`. Version 2 added `augmented`; version 1 (without it) is read as before."""

    version: Literal[1, 2] = 2
    edgebert_version: str
    teacher: FileRef
    train_data: FileRef
    dev_data: FileRef
    eval_data: FileRef | None
    selected_on: Literal["dev", "eval"]
    metric: str
    phases: list[PhaseRecord]
    hyperparameters: dict[str, Any]
    rewiring: RewireManifest | None
    dev_metrics: dict[str, dict[str, float]]  # "w0.5-d0.75" -> metrics of the final model on --dev
    world_size: int
    device: str
    wall_time_s: float
    augmented: AugmentedRecord | None = None

    @property
    def trains_subnetworks(self) -> bool:
        """Whether any phase trained the model's sub-networks below full size (else it was ordinary fine-tuning;
        a final phase trains copies, written apart)."""
        shared = [phase for phase in self.phases if phase.name != "final"]
        return any((w, d) != (1.0, 1.0) for phase in shared for w, d in phase.subnetworks)


def not_dynabert_text(model: Path, manifest: TrainManifest | None) -> str:
    """What is true of a model whose sub-networks were not trained: no manifest, or one of plain fine-tuning."""
    return (NOT_DYNABERT_NOTE if manifest is None else FINE_TUNED_ONLY_NOTE).format(model=model)


# ---- a training run in progress: read again by `train --resume` --------------------------------------


class RunSpec(_Record):
    """`run.json` of a run in progress: what must match for `--resume` to continue it."""

    version: Literal[1] = 1
    teacher_sha256: str
    train_sha256: str
    dev_sha256: str
    eval_sha256: str | None
    hyperparameters: dict[str, Any]
    world_size: Count
    replace_out: bool = False  # started with --force: the finished run may replace an earlier one at --out
    text_column: list[str] | None = None  # --text-column and --label-column (None: GLUE's names): the data read
    label_column: str | None = None
    augment: int | None = None  # --augment N
    augmented_sha256: str | None = None  # the augmented data the distillation phases train on, and its settings
    augment_settings: dict[str, Any] | None = None


class TrainState(_Record):
    """The plain fields of `state.pt` (beside the tensors of a mid-phase checkpoint, `STATE_TENSORS`)."""

    version: Literal[1] = 1
    phase_index: Index  # the phase running (mid-phase), or the next one to run (at a phase boundary)
    step: Index = 0
    best_score: float | None = None  # mid-phase: the best selection score so far (-inf before the first)
    best_step: Index | None = None
    phase_elapsed: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    elapsed: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    records: list[PhaseRecord]
    done: bool = False  # at a phase boundary
    final_sha256: str | None = None  # the finished run's edgebert-train.json, written before it is published


STATE_TENSORS = ("model", "optimizer", "scheduler", "scaler", "rng")  # a mid-phase state.pt has all, a boundary none


class MetricsRecord(_Record):
    """One line of `metrics.jsonl`: an evaluation of every sub-network of a phase."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")  # an undefined Pearson: NaN

    version: Literal[1] = 1
    phase: Literal["width", "depth", "finetune", "final"]
    phase_index: Index
    step: Count
    epoch: float
    learning_rate: float
    loss: dict[str, float]
    selected_on: Literal["dev", "eval"]
    metrics: dict[str, dict[str, float]]
    score: float
    best: bool
    wall_time_s: float


def shown(value: Any) -> str:
    """A value quoted in an error line, cut short: hostile input is never echoed whole."""
    text = repr(value)
    return text if len(text) <= SHOWN_INPUT_CHARS else f"{text[: SHOWN_INPUT_CHARS - 3]}..."


def validation_line(exc: ValidationError) -> str:
    """The first problem pydantic found, as `key: reason, got value` (one line, the value cut short)."""
    error = exc.errors(include_url=False)[0]
    reason = error["msg"].removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    if not error["loc"]:  # a rule over several fields: its reason names them, the input is the whole file
        return f"{reason}{more}"
    where = ".".join(str(part) for part in error["loc"])
    problem = "missing" if error["type"] == "missing" else f"{reason}, got {shown(error['input'])}"
    return f"{where}: {problem}{more}"


def json_depth(data: bytes) -> int:
    """The deepest nesting of [ and { outside strings, in one linear pass of bounded memory.

    Checked before `json.loads`, because its C parser's guard is the recursion limit, which
    importing litert's converter raises to 100000: deep input then overflows the C stack and
    kills the process instead of raising RecursionError. The scan goes chunk by chunk, carrying
    the depth, whether it is inside a string, and the run of backslashes the chunk ended with
    (a quote after an odd run is escaped).
    """
    import numpy as np

    deepest = depth = inside = backslashes = 0
    view = memoryview(data)
    for start in range(0, len(data), DEPTH_CHUNK):
        codes = np.frombuffer(view[start : start + DEPTH_CHUNK], dtype=np.uint8)
        positions = np.arange(len(codes), dtype=np.int32)
        # The last position up to each one that is not a backslash (the carried run counts as before the chunk).
        last_other = np.maximum.accumulate(np.where(codes == BACKSLASH, np.int32(-1 - backslashes), positions))
        run_before = positions - 1 - np.concatenate(([np.int32(-1 - backslashes)], last_other[:-1]))
        quotes = (codes == QUOTE) & (run_before & 1 == 0)
        in_string = (np.cumsum(quotes, dtype=np.int32) + inside) & 1  # at a bracket (not a quote): inside a string
        opening = (codes == OPENING[0]) | (codes == OPENING[1])
        closing = (codes == CLOSING[0]) | (codes == CLOSING[1])
        levels = np.cumsum((opening.view(np.int8) - closing.view(np.int8)) * (1 - in_string), dtype=np.int32) + depth
        deepest = max(deepest, int(levels.max()))
        depth, inside = int(levels[-1]), (inside + int(quotes.sum())) % 2
        backslashes = len(codes) - 1 - int(last_other[-1])
    return deepest


def parse_json(data: bytes, path: Path) -> Any:
    """JSON read from `path`, bounded in nesting; every failure is one line naming `path`."""
    try:
        if json_depth(data) > MAX_JSON_DEPTH:
            raise RecursionError
        return json.loads(data.decode("utf-8"))
    except RecursionError as exc:
        raise EdgebertError(f"{path} is not valid JSON: nested too deeply") from exc
    except UnicodeDecodeError as exc:
        raise EdgebertError(f"{path} is not valid JSON: not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise EdgebertError(f"{path} is not valid JSON: {exc}") from exc


def json_bytes(path: Path) -> bytes:
    """The bytes of a JSON file edgebert reads: a regular file (see `edgebert.reading`), bounded in size."""
    data = read_regular(path, MAX_JSON_BYTES)
    if len(data) > MAX_JSON_BYTES:
        raise EdgebertError(f"{path} is over {MAX_JSON_BYTES} bytes: too large for a JSON file edgebert reads")
    return data


def read_json(path: Path) -> Any:
    """A JSON file edgebert reads, bounded in size and nesting; every failure is one line naming `path`."""
    return parse_json(json_bytes(path), path)


Schema = TypeVar("Schema", bound=BaseModel)


def read_manifest(path: Path, schema: type[Schema]) -> Schema:
    data = read_json(path)
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise EdgebertError(f"{path} is not a valid {schema.__name__}: {validation_line(exc)}") from exc


def training_manifest(model_dir: Path) -> TrainManifest | None:
    """The training manifest of a model directory, None when it has none."""
    path = model_file(model_dir, TRAIN_MANIFEST)
    return read_manifest(path, TrainManifest) if path is not None else None
