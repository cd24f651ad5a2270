"""The export's sidecar `<artifact>.json`: one typed, versioned schema, written by `export`, read by `bench`.

The sidecar says what the artifact is (format, precision, signature, vocabulary, the longest
input it can take), how it was proven (the parity report, with what the gate actually ran)
and which file it describes: the artifact's size and sha256. Artifact and sidecar are renamed
into place one after the other, so a crash between the two renames can leave a new artifact
beside an old sidecar; the reader checks the digest and refuses such a pair instead of
reporting, say, an fp16 model as fp32.

Light on purpose (pydantic and the standard library): `bench` reads sidecars without torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgebert.errors import EdgebertError
from edgebert.manifests import SliceManifest, read_json, validation_line
from edgebert.precisions import EMBEDDINGS_PRECISION, Embeddings, Precision
from edgebert.reading import file_sha256
from edgebert.runtimes import FORMATS, RUNTIME_FOR_FORMAT, TensorSpec, ort_opt_level, runtime_for_format

SCHEMA_VERSION = 3  # 2: `embeddings` (export --embeddings); 3: `quantization_choice`; older sidecars are still read
# Which side of its bound each parity metric must lie on: the one statement of the gate's direction.
GATE_RELATIONS = {"max_abs_diff": "<=", "cosine": ">="}
Format = Literal[FORMATS]  # type: ignore[valid-type]  # the runtime registry's formats
RuntimeName = Literal[tuple(RUNTIME_FOR_FORMAT.values())]  # type: ignore[valid-type]
GateMetric = Literal[tuple(GATE_RELATIONS)]  # type: ignore[valid-type]
# The embedded slice manifest nests two levels; this bounds what later code may recurse into.
DEFAULT_SEQ_LEN = 128  # TFLite's fixed length unless `export --seq-len` says otherwise
MAX_SEQ_LEN = 8192  # the longest input `export` verifies
MAX_POSITIONS = 1 << 20  # bounds a model's recorded positions
MAX_VOCAB = (1 << 31) - 1  # token ids are int32 in TFLite artifacts


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class TensorRecord(_Record):
    name: str
    dtype: str
    shape: list[int | str | None]  # ONNX names its dynamic axes ("batch"); None: dynamic and unnamed


class RuntimeRecord(_Record):
    """The runtime the gate ran the artifact in, and the settings it should be loaded with."""

    name: RuntimeName
    version: str
    disabled_optimizers: list[str] = []  # ORT graph fusions measured to slow this artifact down
    graph_optimization_level: str | None = None  # an ORT level (runtimes.ORT_OPT_LEVELS)

    @field_validator("graph_optimization_level")
    @classmethod
    def _known_level(cls, level: str | None) -> str | None:
        if level is not None:
            ort_opt_level(level)  # raises ValueError naming the levels
        return level


class GateRecord(_Record):
    metric: GateMetric
    bound: float
    passed: bool


def gate_relation(metric: str) -> str:
    """'<=' or '>=': how a parity metric's value must compare with its bound."""
    return GATE_RELATIONS[metric]


def gate_holds(metric: str, value: float, bound: float) -> bool:
    """Whether `value` of `metric` is within `bound` (False for NaN, whichever the direction)."""
    return value <= bound if gate_relation(metric) == "<=" else value >= bound


class Top1Record(_Record):
    """Classifiers: every row whose reference top-1 margin exceeds `margin_rule` must keep its top-1."""

    rows: int = Field(ge=1)
    decided_rows: int = Field(ge=0)  # rows whose margin no error within the gate's tolerance could flip
    decided_flipped: int = Field(ge=0)
    margin_rule: str


class CheckedInputs(_Record):
    """What the gate actually ran: batches, their shapes, and how much of them was padding."""

    batches: int = Field(ge=1)
    shapes: list[list[int]]
    rows: int = Field(ge=1)
    padded_rows: int = Field(ge=0)
    padding_share: float = Field(ge=0, le=1)  # padding tokens / all tokens checked
    shortest_row: int = Field(ge=1)  # real tokens in the shortest row


class ParityRecord(_Record):
    max_abs_diff: float = Field(ge=0)
    cosine: float = Field(ge=-1.000001, le=1.000001)
    top1_agreement: float | None = Field(default=None, ge=0, le=1)
    top1: Top1Record | None = None
    non_finite: dict[Literal["reference", "artifact"], int]
    gate: GateRecord
    inputs: CheckedInputs


class SchemeTrial(_Record):
    """One scheme export tried: the gate's verdict (None: not verified) and, if it was raced, its median time."""

    scheme: str
    passed: bool | None
    failure: str | None = None  # the gate's summary, when it failed
    race_ms: float | None = Field(default=None, ge=0)  # batch 1, on the export machine


class SchemeChoiceRecord(_Record):
    """How export chose `quantization`: the exporter's order, what it tried, and why (export.choose_scheme)."""

    order: list[str] = Field(min_length=1)
    tried: list[SchemeTrial] = Field(min_length=1)
    reason: str


class EmbeddingsRecord(_Record):
    """`export --embeddings`: the word-embedding table's storage, smaller than the precision's own."""

    storage: Embeddings
    block_size: int = Field(ge=1)  # weights per scale (and zero point) along a table row
    bytes_saved: int  # against the same artifact with the precision's own table


class Sidecar(_Record):
    schema_version: Literal[1, 2, 3]
    edgebert_version: str
    format: Format
    precision: Precision
    quantization: str  # the scheme that passed the gate, e.g. "mixed" or "blockwise"
    artifact: str  # file name when written; the pair may be renamed together
    size_bytes: int = Field(ge=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    runtime: RuntimeRecord
    seq_len: int | None = Field(ge=1, le=MAX_SEQ_LEN)  # fixed length (TFLite); None: dynamic axes
    batch_size: int | None = Field(ge=1)  # fixed batch (TFLite); None: dynamic
    max_seq_len: int = Field(ge=1, le=MAX_POSITIONS)  # the model's positions: no input may be longer
    signature_key: str | None = None  # TFLite
    inputs: list[TensorRecord] = Field(min_length=1)
    outputs: list[TensorRecord] = Field(min_length=1)
    output_meaning: dict[str, Literal["logits", "sentence_embedding", "last_hidden_state", "pooler_output"]]
    vocab_size: int = Field(ge=2, le=MAX_VOCAB)
    pad_token_id: int = Field(ge=0)
    export_seconds: float = Field(ge=0)
    manifest: dict[str, Any]  # the slice manifest (edgebert.manifests)
    parity: ParityRecord | None  # None: exported with --no-verify
    embeddings: EmbeddingsRecord | None = None  # None: the precision's own table (version 2)
    quantization_choice: SchemeChoiceRecord | None = None  # version 3; None in older sidecars

    @field_validator("manifest")
    @classmethod
    def _slice_manifest(cls, manifest: dict[str, Any]) -> dict[str, Any]:
        """The embedded manifest obeys the slice manifest's own schema (`edgebert.json`)."""
        try:
            return SliceManifest.model_validate(manifest).as_dict()
        except ValidationError as exc:
            raise ValueError(validation_line(exc)) from None

    def input_specs(self) -> list[TensorSpec]:
        """The recorded inputs as the runtime layer's specs, for callers that build inputs without a session."""
        return [TensorSpec(spec.name, spec.dtype, list(spec.shape)) for spec in self.inputs]

    @model_validator(mode="after")
    def _consistent(self) -> Sidecar:
        if self.runtime.name != RUNTIME_FOR_FORMAT[self.format]:
            raise ValueError(f"runtime.name {self.runtime.name!r} does not run {self.format} artifacts")
        if self.pad_token_id >= self.vocab_size:
            raise ValueError(f"pad_token_id {self.pad_token_id} is outside the vocabulary of {self.vocab_size}")
        if self.seq_len is not None and self.seq_len > self.max_seq_len:
            raise ValueError(f"seq_len {self.seq_len} exceeds max_seq_len {self.max_seq_len}")
        if set(self.output_meaning) != {spec.name for spec in self.outputs}:
            raise ValueError("output_meaning must name every output")
        if self.embeddings is not None and (self.schema_version < 2 or self.precision != EMBEDDINGS_PRECISION):
            raise ValueError(f"embeddings needs schema_version 2 and precision {EMBEDDINGS_PRECISION}")
        choice = self.quantization_choice
        if choice is not None and self.schema_version < 3:
            raise ValueError("quantization_choice needs schema_version 3")
        passed = {t.scheme for t in choice.tried if t.passed is not False} if choice else set()
        if choice and self.quantization not in passed:
            raise ValueError(f"quantization {self.quantization!r} is not a scheme quantization_choice passed")
        return self


def sidecar_path(artifact: Path) -> Path:
    """Where an artifact's sidecar lives: beside it, named `<artifact>.json`."""
    return artifact.with_name(artifact.name + ".json")


def replaceable_export(path: Path) -> str | None:
    """What `export --force` may replace: an artifact beside the sidecar edgebert wrote for it, or that sidecar."""
    sidecar = path if path.suffix == ".json" else sidecar_path(path)
    try:
        raw = read_json(sidecar) if sidecar.is_file() and not sidecar.is_symlink() else None
    except EdgebertError:
        raw = None
    if not (isinstance(raw, dict) and "edgebert_version" in raw and "artifact" in raw):
        return f"has no edgebert sidecar ({sidecar.name}), so it is not an artifact edgebert wrote"
    if path is not sidecar and raw["artifact"] != path.name:
        return f"is not the artifact its sidecar {sidecar.name} describes"
    return None


def write_sidecar(path: Path, sidecar: Sidecar) -> None:
    path.write_text(sidecar.model_dump_json(indent=2) + "\n", encoding="utf-8")


def read_sidecar(artifact: Path) -> Sidecar | None:
    """The validated sidecar of `artifact`, None without one; refuses one that describes another file."""
    path = sidecar_path(artifact)
    if not path.exists():
        return None
    raw = read_json(path)
    if isinstance(raw, dict) and "schema_version" not in raw:
        raise EdgebertError(f"{path} has no schema_version: written by an older edgebert? Re-export the artifact")
    try:
        sidecar = Sidecar.model_validate(raw)
    except ValidationError as exc:
        raise EdgebertError(f"{path} is not a valid sidecar: {validation_line(exc)}") from exc
    check_describes(sidecar, artifact, path)
    return sidecar


def check_describes(sidecar: Sidecar, artifact: Path, path: Path) -> None:
    """Refuse a sidecar written for another file (e.g. an interrupted `--force` replaced only the artifact)."""
    if artifact.suffix != runtime_for_format(sidecar.format).suffix:
        raise EdgebertError(f"{path} describes a {sidecar.format} artifact, not {artifact.name}")
    size = artifact.stat().st_size
    if size != sidecar.size_bytes or file_sha256(artifact) != sidecar.sha256:
        found = f"{size} bytes" if size != sidecar.size_bytes else "another sha256"
        raise EdgebertError(
            f"{path} does not describe {artifact.name} (it records {sidecar.size_bytes} bytes, sha256 "
            f"{sidecar.sha256[:12]}...; the file has {found}): re-export the pair"
        )
