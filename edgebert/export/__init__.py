"""`edgebert export`: a sliced model as a deployable ONNX or TFLite file, proven before it is handed over.

The flow follows optimum's exporters: pick the source (a slice directory, or a checkpoint
sliced in memory), convert with the format's exporter, run the artifact in its own runtime on
inputs of a shape not used at conversion, compare with PyTorch, and only then move the
artifact and its sidecar JSON into place. A failed gate leaves nothing behind. `EXPORTERS` has one
`Exporter` per format of the runtime registry (`runtimes.FORMATS`, what the CLI offers and the tests cover).
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from edgebert import __version__
from edgebert.atomic import refuse_existing, staged_outputs
from edgebert.bundle import (
    bundle_artifact,
    check_bundle_target,
    default_bundle_name,
    is_bundle_output,
    staged_bundle,
)
from edgebert.configs import READING_MODULES
from edgebert.errors import EdgebertError, require_all
from edgebert.export.base import (
    PARITY_GATES,
    Exporter,
    ParityGateError,
    load_source,
    source_name,
    tokenizer_source,
    verify_artifact,
)
from edgebert.export.onnx import OnnxExporter
from edgebert.export.tflite import TfliteExporter
from edgebert.precisions import PRECISIONS
from edgebert.process import usable_cores
from edgebert.reading import file_sha256
from edgebert.runtimes import (
    RuntimeLoadError,
    Session,
    SessionOptions,
    open_session,
    runtime_for_format,
)
from edgebert.sidecar import MAX_SEQ_LEN, SCHEMA_VERSION, Sidecar, replaceable_export, write_sidecar
from edgebert.sidecar import sidecar_path as sidecar_of

EXPORTERS: dict[str, type[Exporter]] = {exporter.name: exporter for exporter in (OnnxExporter, TfliteExporter)}
__all__ = ["EXPORTERS", "PARITY_GATES", "PRECISIONS", "export_model"]


def export_model(
    model: str | Path | None,
    format: str,
    precision: str = "fp32",
    width: float | None = None,
    depth: float | None = None,
    seq_len: int | None = None,
    out: str | Path | None = None,
    force: bool = False,
    verify: bool = True,
) -> dict[str, Any]:
    """Export, verify in the target runtime, then write `<artifact>` and `<artifact>.json`; return the sidecar.

    Both formats go into a bundle folder (`edgebert.bundle`: config, tokenizer, `onnx/<precision file>`
    or `<precision file>.tflite` with labels.txt and vocab.txt) unless `out` names a single `.onnx` or
    `.tflite` file; the bundle's default name is `<model>-w<W>-d<D>-<format>`.

    `seq_len` is TFLite's fixed length (default 128); ONNX's axes are dynamic, and a given
    `seq_len` is verified as well. Either way it may not exceed the model's positions.
    """
    if format not in EXPORTERS:
        raise EdgebertError(f"unknown format {format!r}: choose one of {', '.join(EXPORTERS)}")
    if precision not in PRECISIONS:
        raise EdgebertError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if seq_len is not None and not 1 <= seq_len <= MAX_SEQ_LEN:
        raise EdgebertError(f"--seq-len must be between 1 and {MAX_SEQ_LEN}, got {seq_len}")
    protect = [Path(model)] if model is not None else []
    output = {"force": force, "replaceable": replaceable_export, "protect": protect}
    bundle: Path | None = None
    if out is not None and not is_bundle_output(format, Path(out)):  # a single file
        artifact = Path(out)
        refuse_existing(artifact, sidecar_of(artifact), **output)
    else:  # default names known from the path: refused before the slow part
        bundle = Path(out) if out is not None else Path(default_bundle_name(source_name(model, width, depth), format))
        check_bundle_target(bundle, format, precision, force, protect)
    exporter = EXPORTERS[format]()
    # Every module the export needs (reading the model too), looked up before any is imported: one hint, at once.
    require_all((*READING_MODULES, *exporter.required_modules), f"{format} export")
    source = load_source(model, width, depth, exporter.sentence_embedding)
    seq_len = exporter.fixed_seq_len(seq_len) or seq_len  # TFLite's default filled in; ONNX keeps None
    if seq_len is not None and seq_len > source.max_seq_len:
        raise EdgebertError(f"--seq-len {seq_len} exceeds the model's {source.max_seq_len} positions")
    fixed = exporter.fixed_seq_len(seq_len)  # the artifact's fixed length (None: dynamic axes)
    if bundle is not None:
        artifact = bundle_artifact(bundle, precision, format)
        staging = staged_bundle(bundle, format, precision, source, tokenizer_source(model), fixed, force, protect)
    else:
        staging = staged_outputs(artifact, sidecar_of(artifact), **output)

    with staging as (staged_artifact, staged_sidecar):
        schemes = exporter.schemes(precision)
        for attempt, scheme in enumerate(schemes):
            started = time.perf_counter()
            with tempfile.TemporaryDirectory(dir=staged_artifact.parent) as work_dir:  # gone before the renames
                exporter.convert(source, staged_artifact, precision, scheme, seq_len, Path(work_dir))
            export_seconds = time.perf_counter() - started
            options = exporter.runtime_options(precision, scheme)
            session = open_exported(staged_artifact, format, options)
            try:
                parity = verify_artifact(exporter, source, session, precision, seq_len) if verify else None
                break
            except ParityGateError as failure:
                if attempt + 1 == len(schemes):
                    raise
                warnings.warn(f"{failure.summary}: retrying with {schemes[attempt + 1]}", stacklevel=2)
                del session  # the next scheme rewrites the file
        sidecar = Sidecar(
            schema_version=SCHEMA_VERSION,
            edgebert_version=__version__,
            format=format,
            precision=precision,
            quantization=scheme,
            artifact=artifact.name,
            size_bytes=staged_artifact.stat().st_size,
            sha256=file_sha256(staged_artifact),  # bench refuses a sidecar that does not describe its artifact
            runtime={
                "name": session.runtime.name,
                "version": session.version,
                **options,
            },
            seq_len=fixed,
            batch_size=exporter.fixed_batch_size,
            max_seq_len=source.max_seq_len,
            signature_key=session.details.get("signature_key"),
            inputs=[spec.to_json() for spec in session.inputs],
            outputs=[spec.to_json() for spec in session.outputs],
            output_meaning=dict(zip([o.name for o in session.outputs], source.output_names, strict=True)),
            vocab_size=source.vocab_size,
            pad_token_id=source.pad_token_id,
            export_seconds=round(export_seconds, 2),
            manifest=source.manifest,
            parity=parity,
        )
        write_sidecar(staged_sidecar, sidecar)
    written = {"path": str(artifact)} | ({"bundle": str(bundle)} if bundle is not None else {})
    return sidecar.model_dump(mode="json") | written


def open_exported(path: Path, format: str, runtime_options: dict[str, Any]) -> Session:
    """The just-written artifact in its runtime, with the settings its sidecar will record (as `bench` opens it)."""
    runtime = runtime_for_format(format)
    try:
        return open_session(path, SessionOptions.recorded(usable_cores(), runtime_options), runtime)
    except RuntimeLoadError as exc:
        raise EdgebertError(f"{runtime.name} cannot load the exported model: {exc.reason}") from exc
