"""`edgebert export`: a sliced model as a deployable ONNX or TFLite file, proven before it is handed over.

The flow follows optimum's exporters: pick the source (a slice directory, or a checkpoint
sliced in memory), convert with the format's exporter, run the artifact in its own runtime on
inputs of a shape not used at conversion, compare with PyTorch, and only then move the
artifact and its sidecar JSON into place. A failed gate leaves nothing behind. `EXPORTERS` has one
`Exporter` per format of the runtime registry (`runtimes.FORMATS`, what the CLI offers and the tests cover).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass
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
    ExportSource,
    ParityGateError,
    load_source,
    sample_inputs,
    source_name,
    tokenizer_source,
    verify_artifact,
)
from edgebert.export.executorch import ExecutorchExporter
from edgebert.export.onnx import OnnxExporter
from edgebert.export.tflite import TfliteExporter
from edgebert.precisions import EMBEDDINGS, EMBEDDINGS_PRECISION, PRECISIONS
from edgebert.process import usable_cores
from edgebert.reading import file_sha256
from edgebert.runtimes import (
    RuntimeLoadError,
    Session,
    SessionOptions,
    open_session,
    runtime_for_format,
)
from edgebert.sidecar import DEFAULT_SEQ_LEN, MAX_SEQ_LEN, SCHEMA_VERSION, Sidecar, replaceable_export, write_sidecar
from edgebert.sidecar import sidecar_path as sidecar_of

EXPORTERS: dict[str, type[Exporter]] = {
    exporter.name: exporter for exporter in (OnnxExporter, TfliteExporter, ExecutorchExporter)
}
__all__ = ["EXPORTERS", "PARITY_GATES", "PRECISIONS", "export_model"]
# The race between two schemes that both pass the gate: interleaved rounds of a few batch-1 calls each, on the
# export machine with the settings the sidecar records. A few seconds for BERT-base int8; schemes' speeds differ by
# 5-50 % (edgebert.export.onnx), far above the spread of medians over 5 x 3 calls.
RACE_ROUNDS, RACE_CALLS = 5, 3
# A later scheme replaces the earlier only when at least this much faster: within noise the earlier (the order's
# choice) ships, so exporting the same model twice gives the same file unless the schemes really differ.
SCHEME_MIN_GAIN = 0.05


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
    embeddings: str | None = None,
) -> dict[str, Any]:
    """Export, verify in the target runtime, then write `<artifact>` and `<artifact>.json`; return the sidecar.

    Both formats go into a bundle folder (`edgebert.bundle`: config, tokenizer, `onnx/<precision file>`
    or `<precision file>.tflite` with labels.txt and vocab.txt) unless `out` names a single `.onnx` or
    `.tflite` file; the bundle's default name is `<model>-w<W>-d<D>-<format>`.

    `seq_len` is TFLite's fixed length (default 128); ONNX's axes are dynamic, and a given
    `seq_len` is verified as well. Either way it may not exceed the model's positions.
    `embeddings` ("int4", int8 only): the word-embedding table in 4 bits, through the same gate; the sidecar's
    `embeddings` records it and the bytes it saved.
    """
    if format not in EXPORTERS:
        raise EdgebertError(f"unknown format {format!r}: choose one of {', '.join(EXPORTERS)}")
    if precision not in PRECISIONS:
        raise EdgebertError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision not in EXPORTERS[format].precisions:
        raise EdgebertError(f"{format} writes {' and '.join(EXPORTERS[format].precisions)}, not {precision}")
    if seq_len is not None and not 1 <= seq_len <= MAX_SEQ_LEN:
        raise EdgebertError(f"--seq-len must be between 1 and {MAX_SEQ_LEN}, got {seq_len}")
    if embeddings is not None:
        if embeddings not in EMBEDDINGS:
            raise EdgebertError(f"unknown --embeddings {embeddings!r}: choose one of {', '.join(EMBEDDINGS)}")
        if precision != EMBEDDINGS_PRECISION:
            raise EdgebertError(
                f"--embeddings {embeddings} applies to --precision {EMBEDDINGS_PRECISION} only (the {precision} gate "
                "is tighter than a 4-bit table's error)"
            )
        if embeddings not in EXPORTERS[format].embeddings:
            raise EdgebertError(f"--embeddings {embeddings} is not available for {format}")
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
    source = load_source(model, width, depth, exporter.sentence_embedding, exporter.segment_ids)
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
        chosen, choice = choose_scheme(exporter, source, precision, seq_len, embeddings, verify, staged_artifact)
        with chosen.folder:  # gone before the renames
            os.replace(chosen.path, staged_artifact)
        session = chosen.session
        sidecar = Sidecar(
            schema_version=SCHEMA_VERSION,
            edgebert_version=__version__,
            format=format,
            precision=precision,
            quantization=chosen.scheme,
            artifact=artifact.name,
            size_bytes=staged_artifact.stat().st_size,
            sha256=file_sha256(staged_artifact),  # bench refuses a sidecar that does not describe its artifact
            runtime={
                "name": session.runtime.name,
                "version": session.version,
                **chosen.options,
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
            export_seconds=round(chosen.seconds, 2),
            manifest=source.manifest,
            parity=chosen.parity,
            quantization_choice=choice,
            embeddings=None
            if embeddings is None
            else {"storage": embeddings, "block_size": exporter.embeddings[embeddings], "bytes_saved": chosen.saved},
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


@dataclass
class Candidate:
    """A converted scheme that passed the gate (or was not verified), in its own folder until it ships."""

    scheme: str
    folder: tempfile.TemporaryDirectory
    path: Path
    session: Session
    options: dict[str, Any]
    parity: dict | None
    saved: int | None
    seconds: float


def choose_scheme(
    exporter: Exporter,
    source: ExportSource,
    precision: str,
    seq_len: int | None,
    embeddings: str | None,
    verify: bool,
    staged_artifact: Path,
) -> tuple[Candidate, dict[str, Any]]:
    """Convert and gate the exporter's schemes in order (fastest first as measured somewhere, not necessarily here).

    The first that passes is shipped unless the next that passes runs at least SCHEME_MIN_GAIN faster here
    (`race`); then that one is the one to beat, and so on. So the shipped scheme is never slower than the next
    passing scheme after it (beyond the noise margin), and a
    gate failure costs at most one more conversion than before. Returns the winner and the sidecar's
    `quantization_choice`: every scheme tried, its verdict and race time, and the reason in words.
    """
    schemes = exporter.schemes(precision)
    best: Candidate | None = None
    trials: list[dict[str, Any]] = []
    try:
        for attempt, scheme in enumerate(schemes):
            folder = tempfile.TemporaryDirectory(prefix=f"{scheme}-", dir=staged_artifact.parent)
            path, work = Path(folder.name) / staged_artifact.name, Path(folder.name) / "work"
            work.mkdir()
            started = time.perf_counter()
            saved = exporter.convert(source, path, precision, scheme, seq_len, work, embeddings)
            seconds = time.perf_counter() - started
            options = exporter.runtime_options(precision, scheme)
            session = open_exported(path, exporter.name, options)
            try:
                parity = verify_artifact(exporter, source, session, precision, seq_len) if verify else None
            except ParityGateError as failure:
                folder.cleanup()
                trials.append({"scheme": scheme, "passed": False, "failure": failure.summary})
                if best is None and attempt + 1 == len(schemes):
                    raise
                if best is None:
                    warnings.warn(f"{failure.summary}: retrying with {schemes[attempt + 1]}", stacklevel=3)
                continue
            candidate = Candidate(scheme, folder, path, session, options, parity, saved, seconds)
            trials.append({"scheme": scheme, "passed": True if verify else None})
            if best is None:
                best = candidate
                if not verify:
                    break
                continue
            best_ms, candidate_ms = race([best.session, candidate.session], source, seq_len)
            trials[[t["scheme"] for t in trials].index(best.scheme)]["race_ms"] = round(best_ms, 3)
            trials[-1]["race_ms"] = round(candidate_ms, 3)
            faster = candidate_ms <= best_ms * (1 - SCHEME_MIN_GAIN)
            loser, best = (best, candidate) if faster else (candidate, best)
            loser.folder.cleanup()
            if best is not candidate:
                break
    except BaseException:
        if best is not None:
            best.folder.cleanup()
        raise
    assert best is not None  # the loop raised when the last scheme failed with nothing passed
    reason = choice_reason(best.scheme, trials, schemes, precision, verify)
    return best, {"order": schemes, "tried": trials, "reason": reason}


def choice_reason(chosen: str, trials: list[dict[str, Any]], order: list[str], precision: str, verify: bool) -> str:
    """Why `chosen` shipped, in words, from the record of the schemes tried (in `order`)."""
    if not verify:
        return f"{chosen}: the first scheme, not verified (--no-verify)"
    failed = [t["scheme"] for t in trials if not t["passed"]]
    said = [f"{', '.join(failed)} failed the {precision} gate"] if failed else []
    raced = [f"{t['scheme']} {t['race_ms']:.2f} ms" for t in trials if "race_ms" in t]
    if raced:
        margin = f"a later scheme must be {SCHEME_MIN_GAIN:.0%} faster to replace an earlier one"
        return "; ".join([*said, f"timed here at batch 1 ({', '.join(raced)}): {chosen} ships ({margin})"])
    if len(order) == 1:
        return f"{chosen}: the only scheme for {precision}, passed"
    rest = "the last scheme" if chosen == order[-1] else "no later scheme passed"
    return "; ".join([*said, f"{chosen} passed, {rest}"])


def race(sessions: list[Session], source: ExportSource, seq_len: int | None) -> list[float]:
    """Median milliseconds of each session on one batch-1 input (the artifact's length, else DEFAULT_SEQ_LEN),
    in RACE_ROUNDS interleaved rounds that alternate which goes first."""
    import numpy as np

    from edgebert.bench import time_runs
    from edgebert.inputs import role

    inputs = sample_inputs(source, 1, seq_len or min(DEFAULT_SEQ_LEN, source.max_seq_len))
    calls = [
        session.bind({spec.name: np.asarray(inputs[role(spec.name)]).astype(spec.dtype) for spec in session.inputs})
        for session in sessions
    ]
    for call in calls:
        call()  # warm-up: first-run allocations
    samples: list[list[float]] = [[] for _ in calls]
    for round_ in range(RACE_ROUNDS):
        for i in range(len(calls)) if round_ % 2 == 0 else reversed(range(len(calls))):
            samples[i] += [ns / 1e6 for ns in time_runs([calls[i]], RACE_CALLS)]
    return [statistics.median(times) for times in samples]
