"""The manifest `<out>.json` beside an augmented file: what `train` checks the file against."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgebert.atomic import ReplaceCheck
from edgebert.errors import EdgebertError
from edgebert.manifests import Count, FileRef, Fraction, Index, read_manifest
from edgebert.reading import file_sha256


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
