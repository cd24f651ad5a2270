"""Weights read without running code (safetensors, weights-only torch.load, no zip bomb), refused when damaged."""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from edgebert.errors import EdgebertError, require

if TYPE_CHECKING:
    import torch

# torch.save stores a checkpoint's zip members uncompressed: contents declaring more bytes than the archive
# holds are a zip bomb (or at least nothing torch.save wrote), refused before torch.load expands them.
MAX_ZIP_EXPANSION = 1.0


def safetensors_shapes(weights_file: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from the safetensors header alone: nothing is loaded."""
    safetensors = require("safetensors", "reading model weights")
    try:
        with safetensors.safe_open(str(weights_file), framework="pt") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118 (no __iter__)
    except Exception as exc:  # safetensors raises its own untyped errors for corrupt headers
        raise EdgebertError(f"{weights_file} is corrupt or truncated: {str(exc).splitlines()[0]}") from exc


def _refuse_zip_bomb(weights_file: Path) -> None:
    """A zip-format pytorch_model.bin may not declare more contents than its own size (see MAX_ZIP_EXPANSION)."""
    try:
        with zipfile.ZipFile(weights_file) as archive:
            declared = sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a zip (the legacy format) or a damaged one: torch.load reports it
    size = weights_file.stat().st_size
    if declared > MAX_ZIP_EXPANSION * size:
        raise EdgebertError(
            f"refusing to load {weights_file}: its members expand to {declared} bytes from a {size}-byte file "
            "(torch.save stores tensors uncompressed)"
        )


def read_weights(weights_file: Path) -> dict[str, torch.Tensor]:
    torch = require("torch", "reading model weights")
    if weights_file.suffix == ".safetensors":
        safetensors_torch = require("safetensors.torch", "reading model weights")
        try:
            return safetensors_torch.load_file(str(weights_file))
        except Exception as exc:  # safetensors raises its own untyped errors for corrupt headers
            raise EdgebertError(f"{weights_file} is corrupt or truncated: {exc}") from exc
    _refuse_zip_bomb(weights_file)
    try:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        blocked = _BLOCKED_GLOBAL.search(str(exc))
        if blocked:
            raise EdgebertError(
                f"refusing to load {weights_file}: it holds more than plain tensors and could run code "
                f"(it would import {blocked.group(1)})"
            ) from exc
        raise EdgebertError(f"{weights_file} is corrupt or not a PyTorch state dict: {_torch_reason(exc)}") from exc
    except Exception as exc:  # the weights-only unpickler raises KeyError, EOFError, ... on damaged files
        raise EdgebertError(f"{weights_file} is corrupt or truncated: {_torch_reason(exc)}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EdgebertError(f"{weights_file} is not a state dict of tensors")
    return state


def refuse_non_finite(state: dict[str, torch.Tensor], weights_file: Path) -> None:
    """A NaN or inf in any weight is refused, by the tensor's name in the file: every sub-network, export
    and training step of it would compute NaN (one pass over the weights, as cheap as reading them)."""
    import torch

    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise EdgebertError(f"{weights_file}: weight {name} holds NaN or infinite values: refusing damaged weights")


# torch's weights-only unpickler names the global it refused: "GLOBAL posix.system" / "Unsupported global: GLOBAL x.y".
_BLOCKED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
# The generic advice torch wraps its reason in (including "re-run with weights_only=False", which must not be relayed).
_TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation", "WeightsUnpickler")


def _torch_reason(exc: BaseException) -> str:
    """The one informative line of a torch.load error, without torch's boilerplate."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(_TORCH_BOILERPLATE)] or lines
    reason = lines[0].split(". ")[0] if lines else ""  # first sentence: torch appends paragraphs of advice
    if isinstance(exc, RuntimeError | pickle.UnpicklingError) and reason:
        return reason
    return f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__  # e.g. a bare KeyError: 101


def give_normal_mode(path: Path) -> None:
    """0666 for a file, less the umask (0644 usually): writers such as safetensors (0600) and the TFLite
    quantizer pick their own modes, and a model handed to others or a service must be readable like any file."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def write_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    """model.safetensors as `save_pretrained` writes it, with a normal file mode.

    safetensors reports a failed write (a full disk) as its own SafetensorError, which names no
    file: it becomes the OSError it wraps, naming `path`, so the CLI says it as it says any other.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(state, str(path), metadata={"format": "pt"})
    except SafetensorError as exc:
        code = _OS_ERROR_CODE.search(str(exc))
        if code is None:
            raise EdgebertError(f"{path}: safetensors could not write it: {str(exc).splitlines()[0]}") from exc
        number = int(code.group(1) or code.group(2))
        raise OSError(number, os.strerror(number), str(path)) from exc
    give_normal_mode(path)


# How safetensors' Rust writer quotes the OS error: "I/O error: File too large (os error 27)", or "code: 28" (older).
_OS_ERROR_CODE = re.compile(r"\(os error (\d+)\)|\bcode: (\d+)")
