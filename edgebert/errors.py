"""The exceptions a user may see, and the one-line hint for a missing optional dependency.

Every error meant for a user derives from `EdgebertError`; the CLI prints its message as one
line and exits non-zero. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
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
    "matplotlib": "plot",
}


class EdgebertError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class MissingDependencyError(EdgebertError):
    """An optional dependency is not installed."""


def require(module: str, purpose: str) -> ModuleType:
    """Import an optional heavy module, or fail with the `pip install` line that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = EXTRA_FOR_MODULE.get(module.split(".")[0], "dev")
        raise MissingDependencyError(
            f"{purpose} needs {module.split('.')[0]}, which is not installed: "
            f"run `pip install 'edgebert[{extra}]'` ({exc})"
        ) from exc
