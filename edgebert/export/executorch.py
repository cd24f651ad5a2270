"""ExecuTorch export: a `.pte` lowered to the XNNPACK delegate, batch 1 and a dynamic sequence axis; fp32 and int8.

Findings that shaped this module (executorch 1.5.1, torch 2.13, benchmarks/executorch_check.py):
- `torch.export` with a dynamic sequence axis, then `to_edge_transform_and_lower` with the XNNPACK
  partitioner; ExecuTorch plans memory for the upper bound of every dynamic axis, so the batch is fixed
  at 1 (a dynamic batch of 64 would plan BERT-base's attention scores for 64 x 512 x 512) and the
  sequence runs up to the model's positions;
- fp32 matches PyTorch to ~1e-6 (tiny BERT, all-MiniLM-L6-v2, the SST-2 DynaBERT, the BERT-base demo):
  XNNPACK's GELU, softmax over the -10000 mask, the dynamic bounds and LayerNorm (left to ExecuTorch's
  own kernel, eps 1e-12) each agree with PyTorch; the gate checks it on every export all the same;
- int8 is XNNPACK's own scheme: 8-bit weights per output channel, activations quantized per row at
  run time (torchao's PT2E flow with `XNNPACKQuantizer`), the embedding tables left in fp32;
- a `.pte` keeps no tensor names, so the signature goes in as a constant method
  (`edgebert.runtimes.ExecuTorch.SIGNATURE_METHOD`), which the runtime layer reads back.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgebert.errors import require
from edgebert.export.base import VERIFY_SEED, ExportSource, quiet_tools, sample_inputs
from edgebert.export.onnx import EXPORT_SHAPE, VERIFY_SHAPE
from edgebert.runtimes import ExecuTorch

SEQUENCE = "sequence"  # the dynamic axis' name in the signature, as ONNX's
# Rows checked one at a time (the artifact's batch is 1), each padded as a device pads, at ONNX's verify length.
VERIFY_SAMPLES = 8


class ExecutorchExporter:
    name, fixed_batch_size = "executorch", 1
    sentence_embedding = False  # the outputs ONNX has: clients pool last_hidden_state themselves
    segment_ids = False  # token_type_ids only where the model has token types, as ONNX
    required_modules = ("torch", "executorch")
    precisions = ("fp32", "int8")
    embeddings: dict[str, int] = {}

    def schemes(self, precision: str) -> list[str]:
        return {"fp32": ["fp32"], "int8": ["dynamic"]}[precision]

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
        """Export with a dynamic sequence axis, quantize (int8), lower to XNNPACK and write the program."""
        torch = require("torch", "ExecuTorch export")
        require("executorch", "ExecuTorch export")
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        from edgebert.model import ExportWrapper

        wrapper = ExportWrapper(_delegable(source.model), source.output_names)
        sample = sample_inputs(source, 1, min(EXPORT_SHAPE[1], source.max_seq_len))
        args = tuple(torch.from_numpy(sample[name]) for name in source.input_names)
        sequence = torch.export.Dim(SEQUENCE, min=1, max=source.max_seq_len)
        shapes = {name: {1: sequence} for name in source.input_names}
        with quiet_tools(), torch.no_grad():
            program = torch.export.export(wrapper, args, dynamic_shapes=shapes, strict=False)
            if precision == "int8":
                quantized = _quantized(program.module(), args)
                program = torch.export.export(quantized, args, dynamic_shapes=shapes, strict=False)
            signature = _signature(source, wrapper(*args))
            lowered = to_edge_transform_and_lower(
                program,
                partitioner=[XnnpackPartitioner()],
                constant_methods={ExecuTorch.SIGNATURE_METHOD: json.dumps(signature)},
            ).to_executorch()
        with path.open("wb") as file:
            lowered.write_to_file(file)
        return None

    def verify_batches(self, source: ExportSource, seq_len: int | None) -> list[dict[str, np.ndarray]]:
        """Single padded rows of ONNX's verify length (other than the conversion sample's), and of `seq_len`."""
        lengths = [min(VERIFY_SHAPE[1], source.max_seq_len)]
        if seq_len is not None and seq_len not in lengths:
            lengths.append(seq_len)
        batches = []
        for i, length in enumerate(lengths):
            rows = sample_inputs(source, VERIFY_SAMPLES, length, seed=VERIFY_SEED + 1 + i)
            batches += [{name: array[row : row + 1] for name, array in rows.items()} for row in range(VERIFY_SAMPLES)]
        return batches

    def fixed_seq_len(self, seq_len: int | None) -> int | None:
        return None  # dynamic sequence axis

    def runtime_options(self, precision: str, scheme: str) -> dict:
        return {}


def _delegable(model):
    """A copy of `model` (batch 1) in ops XNNPACK takes at a dynamic length, so the whole encoder is delegated.

    XNNPACK reshapes only with at most one inferred (-1) axis and no symbolic one, has no LayerNorm, and
    PyTorch's 4-D attention matmuls become expand copies it does not take: as written, each layer ran as 8
    delegate calls with views, copies and LayerNorms in ExecuTorch's own kernels between them (slow to
    lower and to run). Here the same maths: heads as (H, S, A) by `view(-1, H, A)`, 3-D `bmm`, and LayerNorm
    as means over the two innermost axes of a (1, S, 1, D) view (XNNPACK's only mean). The gate checks the
    result against the model itself.
    """
    import copy

    import torch

    from edgebert.model import EdgeBertSelfAttention

    class MeanLayerNorm(torch.nn.Module):
        def __init__(self, norm: torch.nn.LayerNorm):
            super().__init__()
            self.weight, self.bias, self.eps, self.width = norm.weight, norm.bias, norm.eps, norm.normalized_shape[0]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x4 = x.view(1, -1, 1, self.width)
            centred = x4 - x4.mean(dim=(2, 3), keepdim=True)
            variance = (centred * centred).mean(dim=(2, 3), keepdim=True)
            normed = (centred * torch.rsqrt(variance + self.eps)).view(1, -1, self.width)
            return normed * self.weight + self.bias

    class HeadsAttention(torch.nn.Module):
        def __init__(self, attention: EdgeBertSelfAttention):
            super().__init__()
            self.query, self.key, self.value = attention.query, attention.key, attention.value
            self.num_heads, self.head_size, self.scale = attention.num_heads, attention.head_size, attention.scale

        def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
            def heads(t: torch.Tensor) -> torch.Tensor:  # (1, S, H*A) -> (H, S, A)
                return t.view(-1, self.num_heads, self.head_size).transpose(0, 1)

            q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
            scores = torch.bmm(q, k.transpose(1, 2)) * self.scale + additive_mask.view(1, 1, -1)  # (H, S, S)
            context = torch.bmm(scores.softmax(dim=-1), v)  # (H, S, A)
            return context.transpose(0, 1).contiguous().view(1, -1, self.num_heads * self.head_size)

    model = copy.deepcopy(model)
    swaps = {torch.nn.LayerNorm: MeanLayerNorm, EdgeBertSelfAttention: HeadsAttention}
    for name, module in list(model.named_modules()):
        if type(module) in swaps:
            parent, _, attribute = name.rpartition(".")
            setattr(model.get_submodule(parent), attribute, swaps[type(module)](module))
    return model


def _quantized(module, args: tuple):
    """XNNPACK's int8: weights per output channel, activations per row at run time (PT2E, torchao)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)
    prepared = prepare_pt2e(module, XNNPACKQuantizer().set_global(config))
    prepared(*args)  # dynamic activations need no calibration; one pass inserts the observers' shapes
    return convert_pt2e(prepared)


def _signature(source: ExportSource, outputs: tuple) -> dict[str, list[dict]]:
    """Names, dtypes and shapes (the sequence axis by name) the runtime layer reports for the program."""

    def shape(tensor) -> list[int | str]:
        return [SEQUENCE if axis == 1 and tensor.dim() == 3 else size for axis, size in enumerate(tensor.shape)]

    inputs = [{"name": name, "dtype": "int64", "shape": [1, SEQUENCE]} for name in source.input_names]
    named = zip(source.output_names, outputs, strict=True)
    return {
        "inputs": inputs,
        "outputs": [{"name": name, "dtype": "float32", "shape": shape(tensor)} for name, tensor in named],
    }
