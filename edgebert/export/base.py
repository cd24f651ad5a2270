"""What every export shares: source, I/O signature, sample inputs, the parity gate, the sidecar."""

from __future__ import annotations

import io
import json
import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgebert import __version__
from edgebert.atomic import refuse_existing, staged_outputs
from edgebert.errors import EdgebertError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("fp32", "fp16", "int8")
# (metric, bound): fp32 must match closely; reduced precisions must point the same way.
PARITY_GATES = {
    "fp32": ("max_abs_diff", 1e-4),
    "fp16": ("cosine", 0.999),
    "int8": ("cosine", 0.99),
}
DEFAULT_SEQ_LEN = 128
VERIFY_SEED = 1234


@dataclass
class TensorSpec:
    name: str
    dtype: str
    shape: list[int | str]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": self.shape}


@dataclass
class ExportSource:
    """The sliced model to export and what the artifact's signature will be."""

    model: torch.nn.Module
    manifest: dict[str, Any]
    name: str  # stem for default artifact names
    input_names: list[str]
    output_names: list[str]
    vocab_size: int
    pad_token_id: int
    first_token_id: int = field(default=0)  # lowest id used in sample inputs (skips special tokens)


class Exporter(Protocol):
    """One artifact format. `FORMATS` maps format names to instances."""

    name: str
    suffix: str
    runtime: str

    def schemes(self, precision: str) -> list[str]:
        """How to reach `precision`, preferred (fastest) first; the next is tried when the gate fails."""
        ...

    def convert(
        self, source: ExportSource, path: Path, precision: str, scheme: str, seq_len: int, work_dir: Path
    ) -> None: ...

    def signature(self, path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]: ...

    def run(self, path: Path, inputs: dict[str, np.ndarray]) -> list[np.ndarray]: ...

    def verify_batches(self, source: ExportSource, seq_len: int) -> list[dict[str, np.ndarray]]: ...

    def runtime_version(self) -> str: ...

    def fixed_seq_len(self, seq_len: int) -> int | None: ...


@contextmanager
def quiet_tools() -> Iterator[None]:
    """Silence converters and quantizers that print progress bars and advice to stdout, stderr and logging."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def sample_inputs(source: ExportSource, batch: int, seq_len: int, seed: int = VERIFY_SEED) -> dict[str, np.ndarray]:
    """Seeded token ids with right padding (the last row keeps ~1/3 of its tokens) and two segments."""
    rng = np.random.default_rng(seed)
    low = min(source.first_token_id, source.vocab_size - 1)
    input_ids = rng.integers(low, source.vocab_size, size=(batch, seq_len), dtype=np.int64)
    attention_mask = np.ones((batch, seq_len), dtype=np.int64)
    token_type_ids = np.zeros((batch, seq_len), dtype=np.int64)
    for row in range(batch):
        length = max(1, seq_len - (row * seq_len) // (batch + 1))
        attention_mask[row, length:] = 0
        input_ids[row, length:] = source.pad_token_id
        token_type_ids[row, length // 2 : length] = 1
    arrays = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
    return {name: arrays[name] for name in source.input_names}


def torch_outputs(source: ExportSource, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    import torch

    from edgebert.model import ExportWrapper

    wrapper = ExportWrapper(source.model, source.output_names)
    with torch.no_grad():
        outputs = wrapper(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in inputs.items()})
    return [o.numpy() for o in outputs]


def parity_report(reference: list[np.ndarray], actual: list[np.ndarray], precision: str, classifier: bool) -> dict:
    """max abs diff, cosine similarity (worst output) and top-1 agreement, and whether the gate passed."""
    max_abs, cosine = 0.0, 1.0
    for ref, act in zip(reference, actual, strict=True):
        ref64, act64 = ref.astype(np.float64).ravel(), act.astype(np.float64).ravel()
        max_abs = max(max_abs, float(np.max(np.abs(ref64 - act64))))
        norm = np.linalg.norm(ref64) * np.linalg.norm(act64)
        cosine = min(cosine, float(ref64 @ act64 / norm) if norm > 0 else float(np.array_equal(ref64, act64)))
    report: dict[str, Any] = {"max_abs_diff": max_abs, "cosine": cosine}
    if classifier:
        report["top1_agreement"] = float(np.mean(reference[0].argmax(-1) == actual[0].argmax(-1)))
    metric, bound = PARITY_GATES[precision]
    value = report[metric]
    report["gate"] = {
        "metric": metric,
        "bound": bound,
        "passed": value <= bound if metric == "max_abs_diff" else value >= bound,
    }
    return report


def load_source(model: str | Path | None, width: float | None, depth: float | None) -> ExportSource:
    """A slice directory as written by `edgebert slice`, or any checkpoint sliced in memory."""
    from edgebert.slicing import MANIFEST_FILE, build_model, open_checkpoint, slice_checkpoint

    path = Path(model) if model is not None else None
    if path is not None and (path / MANIFEST_FILE).is_file():
        if width is not None or depth is not None:
            raise EdgebertError(f"{path} is already a slice: --width/--depth apply to a full checkpoint")
        from safetensors.torch import load_file

        config = json.loads((path / "config.json").read_text())
        manifest = json.loads((path / MANIFEST_FILE).read_text())
        state = {k.removeprefix("bert."): v for k, v in load_file(str(path / "model.safetensors")).items()}
        fields = {k: config[k] for k in _EDGEBERT_FIELDS if k in config}
        if "id2label" in config:
            fields["id2label"] = {int(k): v for k, v in config["id2label"].items()}
        built = build_model(fields, state, classifier="classifier.weight" in state)
        name, sliced_model = path.resolve().name, built
    else:
        checkpoint = open_checkpoint(path)
        sliced = slice_checkpoint(checkpoint, 1.0 if width is None else width, 1.0 if depth is None else depth)
        manifest, sliced_model = sliced.manifest, sliced.model
        name = f"{checkpoint.path.resolve().name}-w{manifest['width']:g}-d{manifest['depth']:g}"
    config = sliced_model.config
    classifier = manifest["task"] == "sequence-classification"
    if classifier:
        outputs = ["logits"]
    else:
        outputs = ["last_hidden_state"] + (["pooler_output"] if config.add_pooling_layer else [])
    inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if config.type_vocab_size > 1 else [])
    # Sample ids above the special tokens: BERT vocabularies keep [PAD]..[MASK] below 1000.
    first_token_id = 1000 if config.vocab_size > 2000 else config.pad_token_id + 2
    return ExportSource(
        sliced_model, manifest, name, inputs, outputs, config.vocab_size, config.pad_token_id or 0, first_token_id
    )


_EDGEBERT_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "attention_head_size",
    "intermediate_size",
    "hidden_act",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "pad_token_id",
    "position_offset",
    "add_pooling_layer",
    "source_model_type",
)


def _formats() -> dict[str, Exporter]:
    from edgebert.export.onnx import OnnxExporter
    from edgebert.export.tflite import TfliteExporter

    return {"onnx": OnnxExporter(), "tflite": TfliteExporter()}


FORMATS = ("onnx", "tflite")


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
    exporter = _formats()[format]
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
            "runtime": {"name": exporter.runtime, "version": exporter.runtime_version()},
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


def verify_artifact(exporter: Exporter, source: ExportSource, path: Path, precision: str, seq_len: int) -> dict:
    """Run the artifact in its runtime and compare with PyTorch; raise if the gate fails."""
    references, actuals = [], []
    batches = exporter.verify_batches(source, seq_len)
    for batch in batches:
        references.append(torch_outputs(source, batch))
        actuals.append(exporter.run(path, batch))
    stacked_ref = [np.concatenate(parts) for parts in zip(*references, strict=True)]
    stacked_act = [np.concatenate(parts) for parts in zip(*actuals, strict=True)]
    report = parity_report(stacked_ref, stacked_act, precision, classifier=source.output_names == ["logits"])
    report["inputs"] = {"batches": len(batches), "shape": list(batches[0]["input_ids"].shape), "padded": True}
    gate = report["gate"]
    if not gate["passed"]:
        relation = "<=" if gate["metric"] == "max_abs_diff" else ">="
        raise ParityGateError(
            f"parity gate failed for {exporter.name} {precision}: {gate['metric']} {report[gate['metric']]:.3g} "
            f"(needs {relation} {gate['bound']})"
        )
    return report


class ParityGateError(EdgebertError):
    """The artifact's outputs are too far from PyTorch's; nothing is written."""

    def __init__(self, summary: str):
        super().__init__(f"{summary}; nothing was written")
        self.summary = summary
