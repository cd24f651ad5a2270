"""What every export shares: source, I/O signature, sample inputs, the parity gate, the sidecar."""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

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
    """One artifact format, registered in `edgebert.export.EXPORTERS` under its `name`."""

    name: str
    suffix: str
    runtime: str

    required_modules: tuple[str, ...]  # checked before any slow work, for the `pip install` hint

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

    def runtime_options(self, precision: str, scheme: str) -> dict:
        """Settings the runtime should load this artifact with (recorded in the sidecar's `runtime`)."""
        ...


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
    from edgebert.slicing import MANIFEST_FILE, load_slice, open_checkpoint, slice_checkpoint

    path = Path(model) if model is not None else None
    if path is not None and (path / MANIFEST_FILE).is_file():
        if width is not None or depth is not None:
            raise EdgebertError(f"{path} is already a slice: --width/--depth apply to a full checkpoint")
        sliced, name = load_slice(path), path.resolve().name
    else:
        checkpoint = open_checkpoint(path)
        sliced = slice_checkpoint(checkpoint, 1.0 if width is None else width, 1.0 if depth is None else depth)
        name = f"{checkpoint.path.resolve().name}-w{sliced.manifest['width']:g}-d{sliced.manifest['depth']:g}"
    sliced_model, manifest = sliced.model, sliced.manifest
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
