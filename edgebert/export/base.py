"""What every export shares: the source, its sample inputs, the exporter protocol and the parity gate."""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgebert.demo import demo_checkpoint_dir
from edgebert.errors import EdgebertError
from edgebert.inputs import random_tokens, role_arrays
from edgebert.layout import FAMILIES
from edgebert.runtimes import LITERT_NOISE, Session, native_stderr_without
from edgebert.sidecar import gate_holds, gate_relation
from edgebert.slicing import MANIFEST_FILE, default_output_dir, load_slice, open_checkpoint, slice_checkpoint

if TYPE_CHECKING:
    import torch

# (metric, bound): fp32 must match closely; reduced precisions must point the same way.
PARITY_GATES = {
    "fp32": ("max_abs_diff", 1e-4),
    "fp16": ("cosine", 0.999),
    "int8": ("cosine", 0.99),
}
# How far above the tolerated error a classifier's top-1 margin must be for a flip to fail the gate.
# Measured on 64 padded rows of tiny BERT and all-MiniLM-L6-v2 classifiers, 3 sizes each, fp16 and
# both int8 schemes: every flip in an export that passed its cosine bound had a margin <= 1.1 x the
# typical row's tolerated error (see flip_margin), most <= 0.8 x; flips above 2 x are not noise.
FLIP_HEADROOM = 2.0
VERIFY_SEED = 1234
# Share of the positions in the gate's (and the conversion samples') rows that are padding, so
# what is verified includes masked positions: rows run from the full length down to a fifth of it.
VERIFY_PADDING_SHARE = 0.4


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
    max_seq_len: int  # the model's positions: no input may be longer
    tokenizer_dir: Path | None = None  # where its tokenizer files are (TFLite embeds the vocabulary for MediaPipe)


class Exporter(Protocol):
    """One artifact format, registered in `edgebert.export.EXPORTERS` under its `name`.

    The name is a format of the runtime registry (`edgebert.runtimes`), which gives the suffix and
    opens the artifact for the gate and for `bench`; an exporter only converts.
    """

    name: str
    fixed_batch_size: int | None  # the batch every artifact of this format is fixed to; None: dynamic
    sentence_embedding: bool  # encoders get a mean-pooled `sentence_embedding` as their first output
    segment_ids: bool  # a WordPiece model without token types takes token_type_ids anyway, ignored (`load_source`)
    required_modules: tuple[str, ...]  # checked before any slow work, for the `pip install` hint
    precisions: tuple[str, ...]  # the precisions (`edgebert.precisions.PRECISIONS`) the format writes
    embeddings: dict[str, int]  # each `export --embeddings` storage the format writes, and its block size

    def schemes(self, precision: str) -> list[str]:
        """How to reach `precision`, preferred (fastest) first; the next is tried when the gate fails."""
        ...

    def convert(
        self,
        source: ExportSource,
        path: Path,
        precision: str,
        scheme: str,
        seq_len: int | None,
        work_dir: Path,
        embeddings: str | None,
    ) -> int | None:
        """Write the artifact; with `embeddings` (one of `embeddings`, int8 only), the word-embedding table in that
        storage, returning the bytes it saved against the same artifact without it (None without)."""
        ...

    def verify_batches(self, source: ExportSource, seq_len: int | None) -> list[dict[str, np.ndarray]]:
        """Padded batches the gate runs, of shapes not used at conversion (and at `seq_len` when one is given)."""
        ...

    def fixed_seq_len(self, seq_len: int | None) -> int | None:
        """The artifact's fixed sequence length for a requested one (None: the default), or None if dynamic."""
        ...

    def runtime_options(self, precision: str, scheme: str) -> dict:
        """Settings the runtime should load this artifact with (recorded in the sidecar's `runtime`)."""
        ...


@contextmanager
def quiet_tools() -> Iterator[None]:
    """Silence converters and quantizers that print progress bars and advice to stdout, stderr and logging.

    litert-torch runs its converted model once, so LiteRT's delegate line comes from below Python too.
    """
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with ExitStack() as stack:
            stack.enter_context(native_stderr_without(LITERT_NOISE))  # left last: other native lines reach stderr
            stack.enter_context(redirect_stdout(io.StringIO()))
            stack.enter_context(redirect_stderr(io.StringIO()))
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def sample_inputs(source: ExportSource, batch: int, seq_len: int, seed: int = VERIFY_SEED) -> dict[str, np.ndarray]:
    """`bench`'s seeded, right-padded token ids (`edgebert.inputs`), in two segments, as int64 by input name."""
    model_type = source.model.config.source_model_type
    ids, mask, _ = random_tokens(
        batch, seq_len, source.vocab_size, source.pad_token_id, model_type, VERIFY_PADDING_SHARE, seed
    )
    arrays = role_arrays(ids, mask, segments=True)
    return {name: arrays[name] for name in source.input_names}


def torch_outputs(source: ExportSource, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    import torch

    from edgebert.model import ExportWrapper

    wrapper = ExportWrapper(source.model, source.output_names)
    with torch.no_grad():
        outputs = wrapper(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in inputs.items()})
    return [o.numpy() for o in outputs]


def as_rows(parts: list[np.ndarray]) -> np.ndarray:
    """One output over every verified batch as float64 rows of its last axis (batches may differ in length)."""
    return np.concatenate([part.astype(np.float64).reshape(-1, part.shape[-1]) for part in parts])


def flip_margin(precision: str, logits: np.ndarray) -> tuple[float, str]:
    """The top-1 margin a row must clearly exceed for the gate to require that its argmax holds.

    Putting the runner-up j above the top-1 label i takes an error d with d_j - d_i >= margin,
    and |d_j - d_i| <= sqrt(2)|d|. fp32: max|d| <= t, so a margin above 2t cannot flip. A cosine
    bound c, read as relative error, tolerates |d| = sqrt(2(1-c)) |r|; on a classifier that is
    measured on centred logits (softmax ignores an offset shared by a row; raw cosine does not,
    which is how a flip under a shared offset passed) and on the typical row (root mean square
    over rows), so a near tie in a small row is not held to its own tiny scale. A margin above
    2 sqrt(1-c) |typical centred row| cannot flip within that tolerance; FLIP_HEADROOM asks for
    "clearly above" because quantization error is not spread evenly over rows.
    """
    metric, bound = PARITY_GATES[precision]
    if metric == "max_abs_diff":
        return 2 * bound, f"margin > 2 x {bound:g} (the max_abs_diff bound)"
    factor = FLIP_HEADROOM * 2 * np.sqrt(1 - bound)
    typical = float(np.sqrt(np.mean(np.sum((logits - logits.mean(-1, keepdims=True)) ** 2, axis=-1))))
    rule = f"margin > {factor:.3g} x |typical centred row| ({FLIP_HEADROOM:g} x 2 sqrt(1 - {bound:g}))"
    return factor * typical, rule


def top1_check(reference: np.ndarray, actual: np.ndarray, precision: str) -> tuple[float, dict[str, Any]]:
    """Top-1 agreement over all rows, and the rows the gate requires to agree: those with a clear margin."""
    ordered = np.sort(reference, axis=-1)
    margin = ordered[:, -1] - ordered[:, -2]
    threshold, rule = flip_margin(precision, reference)
    decided = margin > threshold
    agree = reference.argmax(-1) == actual.argmax(-1)
    record = {
        "rows": len(reference),
        "decided_rows": int(decided.sum()),
        "decided_flipped": int((decided & ~agree).sum()),
        "margin_rule": rule,
    }
    return float(agree.mean()), record


def parity_report(
    reference: list[np.ndarray], actual: list[np.ndarray], precision: str, classifier: bool
) -> tuple[dict[str, Any], list[str]]:
    """Compare outputs (each as rows, see `as_rows`): the report, and why the gate failed (empty: passed).

    The gate: no NaN or inf on either side; the precision's metric within its bound (max abs
    diff, or the worst output's cosine); for classifiers, top-1 kept on every row whose margin
    the tolerated error cannot flip (cosine alone passes a flip when labels share an offset).
    """
    metric, bound = PARITY_GATES[precision]
    non_finite = {
        side: sum(int(array.size - np.isfinite(array).sum()) for array in arrays)
        for side, arrays in (("reference", reference), ("artifact", actual))
    }
    cosines, diffs = [], []
    with np.errstate(all="ignore"):  # inf - inf: NaN, reported as a non-finite failure above the metrics
        for ref, act in zip(reference, actual, strict=True):
            diffs.append(np.max(np.abs(ref - act)))
            norm = np.linalg.norm(ref) * np.linalg.norm(act)
            cosines.append(float(np.sum(ref * act) / norm) if norm > 0 else float(np.array_equal(ref, act)))
    max_abs = float(np.max(diffs))  # np.max, not max(): NaN must propagate
    report: dict[str, Any] = {"max_abs_diff": max_abs, "cosine": float(np.min(cosines)), "non_finite": non_finite}
    failures = [
        f"{count} non-finite values (NaN or inf) in the {'PyTorch reference' if side == 'reference' else 'artifact'}"
        f"'s outputs"
        for side, count in non_finite.items()
        if count
    ]
    if not failures:
        value = report[metric]
        if not gate_holds(metric, value, bound):
            failures.append(f"{metric} {value:.3g} (needs {gate_relation(metric)} {bound})")
        if classifier and reference[0].shape[-1] >= 2:
            report["top1_agreement"], report["top1"] = top1_check(reference[0], actual[0], precision)
            flipped, decided = report["top1"]["decided_flipped"], report["top1"]["decided_rows"]
            if flipped:
                failures.append(
                    f"top-1 changed on {flipped} of {decided} rows whose margin {precision}'s tolerance cannot flip"
                )
    report["gate"] = {"metric": metric, "bound": bound, "passed": not failures}
    return report, failures


def checked_inputs(batches: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """What the gate ran, for the sidecar: shapes, rows, and how many rows and tokens were padding."""
    masks = [batch["attention_mask"] for batch in batches]
    real = np.concatenate([mask.sum(-1) for mask in masks])
    total = sum(mask.size for mask in masks)
    return {
        "batches": len(batches),
        "shapes": [list(mask.shape) for mask in masks],
        "rows": int(real.size),
        "padded_rows": int(sum((mask.sum(-1) < mask.shape[-1]).sum() for mask in masks)),
        "padding_share": round(1 - float(real.sum()) / total, 4),
        "shortest_row": int(real.min()),
    }


def source_name(model: str | Path | None, width: float | None, depth: float | None) -> str:
    """The stem of default output names, from the path alone: existing outputs are refused before the slow load."""
    path = Path(model) if model is not None else None
    if path is not None and (path / MANIFEST_FILE).is_file():
        return path.resolve().name
    return default_output_dir(model, 1.0 if width is None else width, 1.0 if depth is None else depth).name


def tokenizer_source(model: str | Path | None) -> Path:
    """Where the exported model's tokenizer files are: the slice or checkpoint directory, or the demo's."""
    return Path(model) if model is not None else demo_checkpoint_dir()


def load_source(
    model: str | Path | None,
    width: float | None,
    depth: float | None,
    sentence_embedding: bool = False,
    segment_ids: bool = False,
) -> ExportSource:
    """A slice directory as written by `edgebert slice`, or any checkpoint sliced in memory.

    `sentence_embedding`: an encoder's first output is its masked mean-pooled sentence embedding
    (what sentence-transformers' MiniLM computes), ahead of the hidden states. `segment_ids`: a WordPiece model
    without token types (DistilBERT) takes token_type_ids all the same and ignores them, as MediaPipe runs only
    BERT models of exactly three inputs.
    """
    path = Path(model) if model is not None else None
    if path is not None and (path / MANIFEST_FILE).is_file():
        if width is not None or depth is not None:
            raise EdgebertError(f"{path} is already a slice: --width/--depth apply to a full checkpoint")
        sliced = load_slice(path)
    else:
        checkpoint = open_checkpoint(path)
        sliced = slice_checkpoint(checkpoint, 1.0 if width is None else width, 1.0 if depth is None else depth)
    name = source_name(model, width, depth)
    sliced_model, manifest = sliced.model, sliced.manifest
    config = sliced_model.config
    classifier = manifest["task"] == "sequence-classification"
    if classifier:
        outputs = ["logits"]
    else:
        outputs = ["sentence_embedding"] if sentence_embedding else []
        outputs += ["last_hidden_state"] + (["pooler_output"] if config.add_pooling_layer else [])
    family = FAMILIES[config.source_model_type]
    ignored = segment_ids and family.wordpiece and not family.token_types
    inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if config.type_vocab_size > 1 or ignored else [])
    max_seq_len = config.max_seq_len
    return ExportSource(
        sliced_model,
        manifest,
        name,
        inputs,
        outputs,
        config.vocab_size,
        config.pad_token_id or 0,
        max_seq_len,
        tokenizer_source(model),
    )


def verify_artifact(
    exporter: Exporter, source: ExportSource, session: Session, precision: str, seq_len: int | None
) -> dict:
    """Run the artifact's session on the exporter's padded batches and compare with PyTorch; raise on failure."""
    batches = exporter.verify_batches(source, seq_len)
    references = [torch_outputs(source, batch) for batch in batches]
    actuals = [session.run(batch) for batch in batches]
    report, failures = parity_report(
        [as_rows(parts) for parts in zip(*references, strict=True)],
        [as_rows(parts) for parts in zip(*actuals, strict=True)],
        precision,
        classifier=source.output_names == ["logits"],
    )
    report["inputs"] = checked_inputs(batches)
    if failures:
        raise ParityGateError(f"parity gate failed for {exporter.name} {precision}: {'; '.join(failures)}")
    return report


class ParityGateError(EdgebertError):
    """The artifact's outputs are too far from PyTorch's; nothing is written."""

    def __init__(self, summary: str):
        super().__init__(f"{summary}; nothing was written")
        self.summary = summary
