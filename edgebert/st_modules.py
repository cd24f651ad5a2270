"""modules.json of a sentence-transformers model: validated, so a slice copies only modules that stay valid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, field_validator, model_validator

from edgebert.errors import EdgebertError
from edgebert.manifests import Index, read_json, shown, validation_line
from edgebert.model_files import model_file

ST_MODULES_FILE = "modules.json"
# The top of a sentence-transformers model besides the encoder: its module list, the Transformer
# module's settings (max_seq_length, do_lower_case) and the model's (versions, prompts, similarity).
ST_TOP_FILES = (ST_MODULES_FILE, "sentence_bert_config.json", "config_sentence_transformers.json")
# What the kept modules save in their folders (Normalize and Dropout: nothing, or a config).
ST_MODULE_FILES = ("config.json", "model.safetensors", "pytorch_model.bin")
# Modules after the encoder whose files hold no size but the hidden size, which slicing keeps: they
# stay valid as they are. Others (WeightedLayerPooling counts layers) would not, so they are refused.
ST_KEPT_MODULES = ("Pooling", "Dense", "Normalize", "LayerNorm", "Dropout")
MAX_ST_MODULES = 32
MAX_ST_MODULE_BYTES = 1 << 30  # a Dense layer of a large model is tens of MB


class SentenceTransformersModule(BaseModel):
    """One entry of modules.json: the module's class and the folder its files are in ("" for the top)."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    idx: Index
    name: str
    path: str
    type: str

    @field_validator("path")
    @classmethod
    def _folder_of_the_model(cls, value: str) -> str:
        """sentence-transformers writes one folder name: anything else may lead out of the model."""
        if value in (".", "..") or any(c in value for c in "/\\:\0"):
            raise ValueError(f"{shown(value)} is not a folder of the model directory")
        return value

    @property
    def kind(self) -> str:
        """The class name: versions 2-5 write `sentence_transformers.models.Pooling`, 6 the class's own module."""
        return self.type.rsplit(".", 1)[-1]


class SentenceTransformersModules(RootModel[list[SentenceTransformersModule]]):
    """modules.json of a model edgebert can slice: the encoder at the top, then modules slicing keeps valid."""

    root: Annotated[list[SentenceTransformersModule], Field(min_length=1, max_length=MAX_ST_MODULES)]

    @model_validator(mode="after")
    def _sliceable(self) -> SentenceTransformersModules:
        encoder, *after = self.root
        if encoder.kind != "Transformer" or encoder.path:
            raise ValueError(
                f"the first module is {shown(encoder.type)} at {shown(encoder.path)}, not the Transformer at the "
                'top of the directory (path ""), the model edgebert slices'
            )
        for module in after:
            if not module.type.startswith("sentence_transformers.") or module.kind not in ST_KEPT_MODULES:
                raise ValueError(
                    f"module {shown(module.type)} may not fit a slice (edgebert keeps {', '.join(ST_KEPT_MODULES)}); "
                    f"slice a copy without {ST_MODULES_FILE} to get the encoder alone"
                )
            if not module.path:
                raise ValueError(f"module {shown(module.type)} has no folder of its own")
        paths = [module.path for module in after]
        if len(set(paths)) != len(paths):
            raise ValueError("two modules share a folder")
        return self


def sentence_transformers_files(directory: Path) -> list[str]:
    """The files making `directory` a sentence-transformers model, relative to it; [] for a plain model.

    Read from the path before the slow load: modules.json validated, each module's files found
    through `model_file` (links out of the model refused), their total size bounded. A module
    without a folder (Normalize saves none) has nothing to copy.
    """
    modules_file = model_file(directory, ST_MODULES_FILE)
    if modules_file is None:
        return []
    try:
        modules = SentenceTransformersModules.model_validate(read_json(modules_file))
    except ValidationError as exc:
        raise EdgebertError(f"{modules_file}: {validation_line(exc)}") from exc
    for module in modules.root[1:]:
        if (directory / module.path).exists() and not (directory / module.path).is_dir():
            raise EdgebertError(f"{modules_file}: {shown(module.type)}'s path {shown(module.path)} is not a folder")
    names = [name for name in ST_TOP_FILES if model_file(directory, name) is not None]
    names += [
        f"{module.path}/{name}"
        for module in modules.root[1:]
        for name in ST_MODULE_FILES
        if model_file(directory, f"{module.path}/{name}") is not None
    ]
    size = sum((directory / name).stat().st_size for name in names)
    if size > MAX_ST_MODULE_BYTES:
        raise EdgebertError(f"{directory}: the sentence-transformers modules hold {size} bytes: too large to copy")
    return names
