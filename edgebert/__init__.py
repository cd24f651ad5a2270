"""edgebert: exact, physically smaller DynaBERT sub-networks for edge devices.

Importing edgebert is cheap (no torch): the library API below loads lazily, and the sliced
model classes are registered with transformers' Auto classes as soon as transformers is
imported, before or after edgebert, so `AutoModel.from_pretrained(slice_dir)` just works.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

_LAZY_API = {
    "slice_model": "edgebert.slicing",
    "slice_checkpoint": "edgebert.slicing",
    "load_checkpoint": "edgebert.checkpoint",
    "subnetwork": "edgebert.subnet",
    "grid_info": "edgebert.info",
    "EdgebertError": "edgebert.errors",
}
__all__ = [*_LAZY_API, "__version__"]


def __getattr__(name: str):
    if name in _LAZY_API:
        return getattr(importlib.import_module(_LAZY_API[name]), name)
    raise AttributeError(f"module 'edgebert' has no attribute {name!r}")


def _register_sliced_models() -> None:
    with contextlib.suppress(ImportError):  # transformers without torch: nothing to register
        importlib.import_module("edgebert.model")  # registers on import
        importlib.import_module("edgebert.modernbert")


class _RegisterWhenTransformersLoads(importlib.abc.MetaPathFinder):
    """Runs the registration right after `import transformers` finishes, without importing it ourselves."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "transformers":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def exec_then_register(module):
                exec_module(module)
                _register_sliced_models()

            spec.loader.exec_module = exec_then_register
        return spec


if "transformers" in sys.modules:
    _register_sliced_models()
elif importlib.util.find_spec("transformers") is not None:
    sys.meta_path.insert(0, _RegisterWhenTransformersLoads())
