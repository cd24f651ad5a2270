"""The exceptions a user may see, and the one-line hint for a missing optional dependency.

Every error meant for a user derives from `EdgebertError`; the CLI prints its message as one
line and exits non-zero. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

# Which extra provides which importable module; used to build the install hint.
EXTRA_FOR_MODULE = {
    "torch": "slice",
    "transformers": "slice",
    "safetensors": "slice",
    "onnx": "onnx",
    "onnxscript": "onnx",
    "onnxruntime": "ort",
    "tokenizers": "ort",
    "litert_torch": "tflite",
    "ai_edge_quantizer": "tflite",
    "ai_edge_litert": "litert",
    "executorch": "executorch",
    "matplotlib": "plot",
}
# Extras that install others (pyproject.toml's `edgebert[slice,ort]` lines), so one hint can cover a whole command.
EXTRA_INCLUDES = {
    "onnx": ("slice", "ort"),
    "tflite": ("slice", "litert"),
    "executorch": ("slice",),
    "dev": ("slice", "onnx", "tflite", "executorch", "plot"),
}


class EdgebertError(Exception):
    """A problem with the user's input or environment, explained in one line; the CLI exits with `exit_code`."""

    exit_code = 1


class OptionError(EdgebertError):
    """A value given to an option that fails its validation (a unit, a list, a range, a choice): a usage error.

    Exit code 2, as for a malformed command line; a bad file's content (a profile, a dataset) stays an
    EdgebertError (1) even when an option named the file. `edgebert.cli.options.option_value` raises it.
    """

    exit_code = 2


class MissingDependencyError(EdgebertError):
    """An optional dependency is not installed."""


def require(module: str, purpose: str) -> ModuleType:
    """Import an optional heavy module, or fail with the `pip install` line that provides it."""
    return require_all([module], purpose)[0]


def require_all(modules: list[str] | tuple[str, ...], purpose: str) -> list[ModuleType]:
    """Import every module a command needs; if any is missing, name the one extra that installs them all.

    Checking one module at a time would hint `[slice]` for torch, and only on the next run `[onnx]`.
    Every module is looked up (`require_installed`) before any is imported: torch takes seconds to
    import, and a missing litert found after it is half a minute lost.
    """
    require_installed(modules, purpose)
    imported, missing = [], []
    for module in modules:
        try:
            imported.append(importlib.import_module(module))
        except ImportError as exc:  # installed but broken (a missing shared library, a partial install)
            missing.append((module.split(".")[0], exc))
    if missing:
        raise _missing_error(modules, [name for name, _ in missing], purpose, missing[0][1]) from missing[0][1]
    return imported


def require_installed(modules: list[str] | tuple[str, ...], purpose: str) -> None:
    """Fail with the one install hint unless every module's package is installed, without importing any.

    Commands call it first, so a missing extra is reported in well under a second instead of after
    importing torch; `find_spec` of a top-level name reads the import path only.
    """
    missing = [name for name in dict.fromkeys(module.split(".")[0] for module in modules) if not _installed(name)]
    if missing:
        raise _missing_error(modules, missing, purpose)


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules, or without a __spec__
        return False


def _missing_error(
    modules: list[str] | tuple[str, ...], names: list[str], purpose: str, cause: ImportError | None = None
) -> MissingDependencyError:
    reason = f" ({cause})" if cause is not None else ""
    return MissingDependencyError(
        f"{purpose} needs {', '.join(names)}, not installed: run `pip install 'edgebert[{covering_extra(modules)}]'`"
        + reason
    )


def covering_extra(modules: list[str] | tuple[str, ...]) -> str:
    """The smallest extra that installs every one of `modules` (an extra covers itself and what it includes)."""
    wanted = {EXTRA_FOR_MODULE.get(module.split(".")[0], "dev") for module in modules}

    def covers(extra: str) -> set[str]:
        return {extra}.union(*(covers(inner) for inner in EXTRA_INCLUDES.get(extra, ())))

    candidates = sorted({*EXTRA_FOR_MODULE.values(), *EXTRA_INCLUDES}, key=lambda extra: len(covers(extra)))
    return next(extra for extra in candidates if wanted <= covers(extra))
