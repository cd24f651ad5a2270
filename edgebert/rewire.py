"""Rewiring: sort every layer's heads and FFN neurons by importance, so each DynaBERT sub-network is a prefix.

Importance is the official DynaBERT one (Hou et al., 2020, after Michel et al., 2019), measured
on a dev set in eval mode with the task loss, batch size 8, in file order:
- head: |d loss / d m| for a mask m of ones multiplying the attention probabilities;
- FFN neuron j: |sum_in(W1 * dW1)[j] + b1[j] * db1[j]| + |sum_out(W2 * dW2)[:, j]|; with GeGLU (ModernBERT) the
  first sum runs over both of the neuron's rows of the fused input-and-gate matrix (`edgebert.layout` says which).
The official code never zeroes gradients between batches, so each batch adds the absolute value
of the *running sum* of gradients ("official", the default: it reproduces the released order);
"per-batch" zeroes them, the textbook estimate. The permutation leaves the full model's outputs
unchanged, which `rewire_checkpoint` checks. On its own a rewired model is training-free
pruning: its sub-networks keep the most important heads and neurons.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from edgebert import __version__
from edgebert.atomic import owned_directory, refuse_existing, staged_outputs
from edgebert.checkpoint import Checkpoint, read_config
from edgebert.data import (
    GLUE_COLUMNS,
    Columns,
    Dataset,
    check_tokenizer_files,
    collate,
    encode,
    label_targets,
    load_tokenizer,
    read_any,
)
from edgebert.errors import EdgebertError
from edgebert.layout import Parameter, layer_layout, layer_name
from edgebert.manifests import REWIRE_MANIFEST, FileRef, RewireManifest
from edgebert.slicing import MODEL_DIR_FILES, open_checkpoint

# `--force` replaces only a directory `rewire` wrote: a stock checkpoint and its manifest.
REPLACEABLE_REWIRED = owned_directory(REWIRE_MANIFEST, MODEL_DIR_FILES, "rewired checkpoint")

if TYPE_CHECKING:
    import torch

    from edgebert.dynabert import DynaBert
    from edgebert.subnet import Architecture

IMPORTANCE_BATCH_SIZE = 8
PARITY_TOLERANCE = 1e-5  # max abs diff of the full model's logits before and after rewiring
FP64_CHECK_BATCHES = 8  # batches re-run in fp64 to tell a wrong permutation from fp32 rounding
Accumulation = Literal["official", "per-batch"]


def task_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for classes, MSE for a one-output regression head (as the official code)."""
    import torch.nn.functional as F

    if logits.shape[-1] == 1:
        return F.mse_loss(logits[:, 0], targets.float())
    return F.cross_entropy(logits, targets)


def importance(
    model: DynaBert, batches: list[tuple[dict, torch.Tensor]], accumulation: Accumulation = "official"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Head importance (L, H) and FFN-neuron importance (L, F) of the full model on `batches`."""
    import torch

    arch = model.arch
    model.eval()
    model.zero_grad(set_to_none=True)
    head_mask = torch.ones(arch.num_layers, arch.num_heads, requires_grad=True)
    heads = torch.zeros(arch.num_layers, arch.num_heads)
    neurons = torch.zeros(arch.num_layers, arch.intermediate_size)
    for inputs, targets in batches:
        if accumulation == "per-batch":
            model.zero_grad(set_to_none=True)
            head_mask.grad = None
        task_loss(model(**inputs, head_mask=head_mask).logits, targets).backward()
        with torch.no_grad():
            heads += head_mask.grad.abs()
            for index, layer in enumerate(model.encoder_layers):
                for score in neuron_scores(dict(layer.named_parameters()), layer_layout(arch, index)):
                    neurons[index] += score.abs()
    model.zero_grad(set_to_none=True)
    return heads, neurons


def neuron_scores(weights: dict[str, torch.Tensor], layout: tuple[Parameter, ...]) -> list[torch.Tensor]:
    """Per linear layer whose tensors width cuts per FFN neuron (BERT's W1 with b1, and W2), the (F,) sum of tensor x
    gradient over all but the neuron's axis, over every block of a fused tensor (GeGLU's input and gate rows)."""
    scores: dict[str, torch.Tensor] = {}
    for parameter in layout:
        if (cut := parameter.cut) is None or cut.unit != "neurons":
            continue
        tensor = weights[parameter.name]
        product = (tensor * tensor.grad).movedim(cut.axis, 0)  # (blocks * F, ...)
        score = product.sum(dim=1) if product.dim() > 1 else product
        score = score.unflatten(0, (parameter.blocks, -1)).sum(dim=0) if parameter.blocks > 1 else score
        linear = parameter.name.rpartition(".")[0]  # its weight and bias add up before the absolute value
        scores[linear] = scores[linear] + score if linear in scores else score
    return list(scores.values())


def descending_order(scores: torch.Tensor) -> torch.Tensor:
    """Indices by importance, most important first; ties keep their original order."""
    import torch

    return torch.sort(scores, dim=-1, descending=True, stable=True).indices


def permute_state(
    state: dict[str, torch.Tensor], arch: Architecture, head_order: torch.Tensor, neuron_order: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Reorder every tensor width cuts along its cut axis (`edgebert.layout`): `head_size` rows or columns per head,
    one per FFN neuron (Q/K/V rows and attention-output columns, FFN rows and columns), in each block of a fused
    tensor (ModernBERT's QKV, GeGLU's input and gate)."""
    import torch

    permuted = dict(state)
    size = arch.head_size
    for layer, (heads, neurons) in enumerate(zip(head_order, neuron_order, strict=True)):
        rows = torch.cat([torch.arange(h * size, (h + 1) * size) for h in heads.tolist()])
        order = {"heads": rows, "neurons": neurons}
        for parameter in layer_layout(arch, layer):
            if (cut := parameter.cut) is not None:
                key = layer_name(layer, parameter.name)
                permuted[key] = state[key].index_select(cut.axis, parameter.reordered(order[cut.unit]))
    return {name: tensor.contiguous() for name, tensor in permuted.items()}


def _max_logit_diff(a: DynaBert, b: DynaBert, batches: list[tuple[dict, torch.Tensor]]) -> float:
    import torch

    with torch.no_grad():
        return max(float((a(**x).logits - b(**x).logits).abs().max()) for x, _ in batches)


def importance_batches(
    model: DynaBert, checkpoint: Checkpoint, data: Dataset, batch_size: int
) -> tuple[list[tuple[dict, torch.Tensor]], str]:
    """Batches in file order with gold labels, or the model's own predictions for unlabelled text."""
    import torch

    check_tokenizer_files(checkpoint.path, {path.name for path in checkpoint.tokenizer_files})
    encoded = encode(data, load_tokenizer(checkpoint.path, checkpoint.model_type))
    indices = [list(range(start, min(start + batch_size, len(data)))) for start in range(0, len(data), batch_size)]
    inputs = [collate(encoded, batch) for batch in indices]
    if data.labels is not None:
        config = checkpoint.model_config
        targets = torch.as_tensor(
            label_targets(data, checkpoint.arch.num_labels, config.get("label2id"), checkpoint.path)
        )
        return [(x, targets[batch]) for x, batch in zip(inputs, indices, strict=True)], "gold"
    model.eval()
    with torch.no_grad():
        logits = [model(**x).logits for x in inputs]
    predicted = [out[:, 0] if out.shape[-1] == 1 else out.argmax(-1) for out in logits]
    return list(zip(inputs, predicted, strict=True)), "model predictions"


def rewire_checkpoint(
    checkpoint: Checkpoint,
    data: Dataset,
    batch_size: int = IMPORTANCE_BATCH_SIZE,
    accumulation: Accumulation = "official",
) -> tuple[DynaBert, RewireManifest]:
    """The rewired model in memory (eval mode) and its manifest; fails if the full model's outputs changed."""

    from edgebert.dynabert import Dropout, DynaBert

    if not checkpoint.arch.num_labels:
        raise EdgebertError(
            f"{checkpoint.path} has no classifier head (a bare encoder): importance needs a task loss; fine-tune it "
            "first (`edgebert train MODEL --phases finetune --widths 1 --depths 1 ...`)"
        )
    model = DynaBert.from_checkpoint(checkpoint, Dropout())
    batches, labels = importance_batches(model, checkpoint, data, batch_size)
    heads, neurons = importance(model, batches, accumulation)
    head_order, neuron_order = descending_order(heads), descending_order(neurons)
    rewired = DynaBert.from_checkpoint(checkpoint, Dropout())
    rewired.load_canonical_state(permute_state(checkpoint.state, checkpoint.arch, head_order, neuron_order))
    rewired.eval()
    diff = _max_logit_diff(model, rewired, batches)
    # fp32 sums in another order after the permutation; in fp64 only a wrong permutation shows.
    diff64 = _max_logit_diff(model.double(), rewired.double(), batches[:FP64_CHECK_BATCHES])
    model.float(), rewired.float()
    if not diff64 <= PARITY_TOLERANCE:
        raise EdgebertError(f"rewiring changed the full model's logits by {diff64:.3g} in fp64: a bug")
    manifest = RewireManifest(
        edgebert_version=__version__,
        source=FileRef(path=str(checkpoint.path.resolve()), sha256=checkpoint.weights_sha256),
        data=FileRef(path=str(data.path.resolve()), sha256=data.sha256, examples=len(data)),
        labels=labels,
        batch_size=batch_size,
        accumulation=accumulation,
        head_importance=heads.tolist(),
        neuron_importance=neurons.tolist(),
        head_order=head_order.tolist(),
        neuron_order=neuron_order.tolist(),
        max_abs_diff=diff,
        max_abs_diff_fp64=diff64,
    )
    return rewired, manifest


def rewire_model(
    model: str | Path,
    data_file: str | Path,
    out: str | Path | None = None,
    force: bool = False,
    batch_size: int = IMPORTANCE_BATCH_SIZE,
    accumulation: Accumulation = "official",
    progress: Callable[[str], None] = lambda message: None,
    columns: Columns = GLUE_COLUMNS,
) -> tuple[Path, RewireManifest]:
    """Write `model` rewired as a stock checkpoint with `edgebert-rewire.json`; return the directory and manifest.

    `columns` names a table's text (and target) columns; without them, a GLUE-style file or plain text.
    """
    if batch_size < 1:
        raise EdgebertError(f"--batch-size must be at least 1, got {batch_size}")
    read_config(Path(model))
    out_dir = Path(out) if out is not None else Path(f"{Path(model).resolve().name}-rewired")
    output = {"force": force, "replaceable": REPLACEABLE_REWIRED, "protect": [Path(model)]}
    refuse_existing(out_dir, **output)
    data = read_any(data_file, columns)
    progress("loading the model")
    checkpoint = open_checkpoint(model)  # checks the modules reading needs before importing torch (dynabert's)
    progress(f"importance over {len(data)} examples")
    rewired, manifest = rewire_checkpoint(checkpoint, data, batch_size, accumulation)
    from edgebert.dynabert import save_checkpoint

    with staged_outputs(out_dir, **output) as (staging,):
        save_checkpoint(rewired, checkpoint, staging, {REWIRE_MANIFEST: manifest.model_dump_json(indent=2) + "\n"})
    return out_dir, manifest


def summary(manifest: RewireManifest) -> dict:
    """What `rewire --json` prints: the manifest without the long score lists."""
    data = json.loads(manifest.model_dump_json())
    return {key: value for key, value in data.items() if not key.endswith("_importance")}
