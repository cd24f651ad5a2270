"""`edgebert export`: a sliced model as a deployable ONNX or TFLite file, proven before it is handed over.

The flow follows optimum's exporters: pick the source (a slice directory, or a checkpoint
sliced in memory), convert with the format's exporter, run the artifact in its own runtime on
inputs of a shape not used at conversion, compare with PyTorch, and only then move the
artifact and its sidecar JSON into place. A failed gate leaves nothing behind.
"""

from __future__ import annotations

from edgebert.export.base import (
    FORMATS,
    PARITY_GATES,
    PRECISIONS,
    export_model,
)

__all__ = ["FORMATS", "PARITY_GATES", "PRECISIONS", "export_model"]
