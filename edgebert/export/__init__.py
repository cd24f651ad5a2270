"""`edgebert export`: a sliced model as a deployable ONNX or TFLite file, proven before it is handed over.

The flow follows optimum's exporters: pick the source (a slice directory, or a checkpoint
sliced in memory), convert with the format's exporter, run the artifact in its own runtime on
inputs of a shape not used at conversion, compare with PyTorch, and only then move the
artifact and its sidecar JSON into place. A failed gate leaves nothing behind. Formats live in
`EXPORTERS`; a new one implements `Exporter` and is picked up by the CLI and the tests.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

from edgebert import __version__
from edgebert.atomic import refuse_existing, staged_outputs
from edgebert.errors import EdgebertError, require
from edgebert.export.base import (
    DEFAULT_SEQ_LEN,
    PARITY_GATES,
    PRECISIONS,
    Exporter,
    ParityGateError,
    load_source,
    verify_artifact,
)
from edgebert.export.onnx import OnnxExporter
from edgebert.export.tflite import TfliteExporter

EXPORTERS: dict[str, type[Exporter]] = {exporter.name: exporter for exporter in (OnnxExporter, TfliteExporter)}
FORMATS = tuple(EXPORTERS)
__all__ = ["EXPORTERS", "FORMATS", "PARITY_GATES", "PRECISIONS", "export_model"]


def export_model(
    model: str | Path | None,
    format: str,
    precision: str = "fp32",
    width: float | None = None,
    depth: float | None = None,
    seq_len: int = DEFAULT_SEQ_LEN,
    out: str | Path | None = None,
    force: bool = False,
    verify: bool = True,
) -> dict[str, Any]:
    """Export, verify in the target runtime, then write `<artifact>` and `<artifact>.json`; return the sidecar."""
    if format not in FORMATS:
        raise EdgebertError(f"unknown format {format!r}: choose one of {', '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise EdgebertError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if not 1 <= seq_len <= 8192:
        raise EdgebertError(f"--seq-len must be between 1 and 8192, got {seq_len}")
    if out is not None:
        refuse_existing(Path(out), Path(f"{out}.json"), force=force)  # before the slow part
    exporter = EXPORTERS[format]()
    for module in exporter.required_modules:
        require(module, f"{format} export")
    source = load_source(model, width, depth)
    max_positions = source.model.config.max_position_embeddings - source.model.config.position_offset
    if exporter.fixed_seq_len(seq_len) and seq_len > max_positions:
        raise EdgebertError(f"--seq-len {seq_len} exceeds the model's {max_positions} positions")
    artifact = Path(out) if out is not None else Path(f"{source.name}.{precision}{exporter.suffix}")
    sidecar_path = artifact.with_name(artifact.name + ".json")

    with staged_outputs(artifact, sidecar_path, force=force) as (staged_artifact, staged_sidecar):
        schemes = exporter.schemes(precision)
        for attempt, scheme in enumerate(schemes):
            started = time.perf_counter()
            exporter.convert(source, staged_artifact, precision, scheme, seq_len, staged_artifact.parent)
            export_seconds = time.perf_counter() - started
            try:
                parity = verify_artifact(exporter, source, staged_artifact, precision, seq_len) if verify else None
                break
            except ParityGateError as failure:
                if attempt + 1 == len(schemes):
                    raise
                warnings.warn(f"{failure.summary}: retrying with {schemes[attempt + 1]}", stacklevel=2)
        inputs, outputs = exporter.signature(staged_artifact)
        sidecar: dict[str, Any] = {
            "edgebert_version": __version__,
            "format": format,
            "precision": precision,
            "quantization": scheme,
            "artifact": artifact.name,
            "size_bytes": staged_artifact.stat().st_size,
            "runtime": {
                "name": exporter.runtime,
                "version": exporter.runtime_version(),
                **exporter.runtime_options(precision, scheme),
            },
            "seq_len": exporter.fixed_seq_len(seq_len),
            "batch_size": 1 if exporter.fixed_seq_len(seq_len) else None,
            "inputs": [spec.to_json() for spec in inputs],
            "outputs": [spec.to_json() for spec in outputs],
            "output_meaning": dict(zip([o.name for o in outputs], source.output_names, strict=True)),
            "vocab_size": source.vocab_size,
            "pad_token_id": source.pad_token_id,
            "export_seconds": round(export_seconds, 2),
            "manifest": source.manifest,
            "parity": parity,
        }
        if format == "tflite":
            sidecar["signature_key"] = "serving_default"
        staged_sidecar.write_text(json.dumps(sidecar, indent=2) + "\n")
    sidecar["path"] = str(artifact)
    return sidecar
