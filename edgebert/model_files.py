"""The files of a model directory, found and copied only through `model_file`: no link out of it, no special file."""

from __future__ import annotations

import shutil
from pathlib import Path

from edgebert.errors import EdgebertError
from edgebert.reading import READ_BLOCK, open_regular

CONFIG_FILE = "config.json"
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = (
    "vocab.txt",
    "merges.txt",
    "vocab.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)


def model_file(directory: Path, name: str) -> Path | None:
    """`directory/name` if it is a regular file, None if absent; a link out of `directory` or a special file is refused.

    A model directory is what users copy, share and publish, and what edgebert copies into its
    outputs: reading a link to `~/.ssh/id_rsa` would put the key there. Every file edgebert reads
    from a model or slice directory comes through here. Links inside the directory are fine, and so
    are the Hugging Face hub cache's links from `snapshots/REV/` into the same model's `blobs/`.
    A named pipe (or a directory, a device) under a file's name is refused, not taken as absent,
    which would silently leave the file out of an output.
    """
    path = step = Path(directory)
    for part in Path(name).parts:  # a module's file (`1_Pooling/config.json`): its folder may be the link
        path = step = step / part
        if step.is_symlink():
            target = step.resolve()
            if not _inside_model(Path(directory), target):
                raise EdgebertError(f"{step} is a link to {target}, outside the model directory: refusing to read it")
    if path.exists() and not path.is_file():
        raise EdgebertError(f"{path} is not a regular file: refusing to read it")
    return path if path.is_file() else None


def _inside_model(directory: Path, target: Path) -> bool:
    root = directory.resolve()
    if target.is_relative_to(root):
        return True
    snapshots = root.parent
    return (
        snapshots.name == "snapshots"
        and snapshots.parent.name.startswith("models--")
        and target.is_relative_to(snapshots.parent / "blobs")
    )


def tokenizer_files(directory: Path) -> list[Path]:
    """The tokenizer files present in a model directory (links out of it refused)."""
    return [path for name in TOKENIZER_FILES if (path := model_file(directory, name)) is not None]


def copy_tokenizer_files(source: Path, directory: Path) -> None:
    """Copy the tokenizer files of the model directory `source` into `directory` (links out of the model refused)."""
    copy_model_files(source, [path.name for path in tokenizer_files(source)], directory)


def copy_model_files(source: Path, names: list[str], directory: Path) -> None:
    """Copy files of a model directory, by their paths relative to it, into `directory` (through `model_file`)."""
    for name in names:
        path = model_file(source, name)
        if path is None:
            raise EdgebertError(f"{source / name} disappeared while edgebert was reading the model")
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        with open_regular(path) as source_file, (directory / name).open("wb") as copy:
            shutil.copyfileobj(source_file, copy, READ_BLOCK)
