"""TFLite (LiteRT) export: litert-torch converts at a fixed shape, ai-edge-quantizer makes fp16/int8,
ai-edge-litert (with its default XNNPACK delegate) runs the gate.

Findings that shaped this module (litert-torch 0.10, ai-edge-litert 2.3, ai-edge-quantizer 0.10):
- the converter takes no dynamic sequence axis, so the artifact is fixed at batch 1 x `seq_len`;
- sample inputs passed as keyword arguments become the signature's input names; int32 samples
  give int32 inputs without the converter's int64 downcast warning; outputs are output_0, ...;
- litert-torch's own PT2E int8 route produced files the interpreter refused, while
  ai-edge-quantizer's dynamic-range recipe on the fp32 file works and also quantizes the
  embedding lookup (BERT-base 437 MB -> 111 MB); fp16 is weight-only float casting;
- MediaPipe Tasks (TextClassifier, TextEmbedder) runs the file only with tokenizer metadata
  (`edgebert.export.tflite_metadata`), written last, so every precision carries it and the gate and
  the sidecar's sha256 see the final file;
- TextEmbedder embeds each output as it is (a [1, seq_len, H] output is flattened), so an encoder's
  first output is its masked mean-pooled `sentence_embedding` [1, H], verified by the gate like the rest.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from edgebert.errors import EdgebertError, require
from edgebert.export.base import VERIFY_SEED, ExportSource, quiet_tools, sample_inputs
from edgebert.export.tflite_metadata import NotForMediaPipe, text_metadata, write_metadata
from edgebert.precisions import PRECISIONS
from edgebert.sidecar import DEFAULT_SEQ_LEN
from edgebert.weights import give_normal_mode

# `export --embeddings int4`: ai-edge-quantizer's blockwise 4-bit embedding lookup (its smallest block, 32), the rest
# int8 as without it; LiteRT's interpreter runs it. The gate's cosine on all-MiniLM-L6-v2 at (0.25, 0.5): int8 table
# 0.9996, blocks of 32 0.9924 (14.18 -> 8.69 MB), of 64 0.988, per channel 0.958 (both fail); at (1, 1) blocks of 32
# give 0.986 (fails: there is no other int8 scheme to fall back to); the demo at (0.25, 0.5) 0.9937. LiteRT ran the
# (0.25, 0.5) MiniLM file no slower (2.31 vs 2.47 ms at 128 tokens, one thread).
INT4_EMBEDDINGS_BLOCK = 32
# Rows checked one at a time (the artifact's batch is 1), padded up to the fixed length as a device
# pads: from the full length down to a fifth of it (see `sample_inputs`).
VERIFY_SAMPLES = 8
QUIET_ENV = {
    "LITERT_TORCH_SHOW_PROGRESS": "n",  # progress tree on every convert
    "LITERT_TORCH_SILENCE_TORCH_LOGS": "n",  # otherwise convert removes the torch logger's handler
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_ENABLE_ONEDNN_OPTS": "0",
}
# Set on import, before the TFLite export's modules load TensorFlow's C++ libraries (they read it once, then
# log absl/oneDNN/flatbuffer lines on every export); a value the user set is kept.
for _key, _value in QUIET_ENV.items():
    os.environ.setdefault(_key, _value)


class TfliteExporter:
    name, fixed_batch_size = "tflite", 1
    sentence_embedding = True  # MediaPipe's TextEmbedder embeds the first output as it is
    segment_ids = True  # MediaPipe's BERT models take ids, mask and segment ids
    required_modules = ("torch", "litert_torch", "ai_edge_quantizer", "ai_edge_litert")
    precisions = PRECISIONS
    embeddings = {"int4": INT4_EMBEDDINGS_BLOCK}

    def schemes(self, precision: str) -> list[str]:
        return {"fp32": ["fp32"], "fp16": ["fp16-weights"], "int8": ["dynamic-range"]}[precision]

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
        """Convert at batch 1 x the fixed length to fp32, then quantize to fp16 or int8 from that file.

        With `embeddings`, the int8 file without it is made too (the quantizer takes seconds, the conversion
        longer), to say what the 4-bit table saved."""
        width = source.model.get_input_embeddings().embedding_dim
        if embeddings is not None and width % INT4_EMBEDDINGS_BLOCK:
            raise EdgebertError(
                f"--embeddings {embeddings} for tflite needs an embedding width divisible by {INT4_EMBEDDINGS_BLOCK} "
                f"(ai-edge-quantizer's smallest block); this model's is {width}: use --format onnx"
            )
        fp32_path = path if precision == "fp32" else work_dir / "fp32.tflite"
        self.to_fp32(source, self.fixed_seq_len(seq_len), fp32_path)
        saved = None
        if embeddings is not None:
            self._quantize(fp32_path, work_dir / "int8.tflite", precision)
            self._quantize(fp32_path, path, precision, embeddings)
            saved = (work_dir / "int8.tflite").stat().st_size - path.stat().st_size
        elif precision != "fp32":
            self._quantize(fp32_path, path, precision)
        self.describe(source, path)
        give_normal_mode(path)  # the converter and the quantizer pick their own modes
        return saved

    @staticmethod
    def to_fp32(source: ExportSource, length: int, path: Path) -> None:
        """litert-torch's conversion: the slow step (seconds even for a tiny model), shared by every precision."""
        torch = require("torch", "TFLite export")
        litert_torch = require("litert_torch", "TFLite export")
        from edgebert.model import ExportWrapper

        sample = {k: torch.from_numpy(v.astype(np.int32)) for k, v in sample_inputs(source, 1, length).items()}
        with quiet_tools(), torch.no_grad():
            edge_model = litert_torch.convert(
                ExportWrapper(source.model, source.output_names), sample_kwargs=sample, lightweight_conversion=True
            )
        edge_model.export(str(path))

    @staticmethod
    def describe(source: ExportSource, path: Path) -> None:
        """Embed what MediaPipe Tasks needs to run the file, or say why it cannot (the file still runs in LiteRT)."""
        try:
            metadata = text_metadata(source)
        except NotForMediaPipe as reason:
            warnings.warn(f"no MediaPipe metadata: {reason}; the .tflite runs in LiteRT only", stacklevel=3)
            return
        write_metadata(path, metadata)

    @staticmethod
    def _quantize(fp32_path: Path, path: Path, precision: str, embeddings: str | None = None) -> None:
        quantizer = require("ai_edge_quantizer.quantizer", "TFLite quantization")
        qt = quantizer.Quantizer(str(fp32_path))
        if precision == "int8":  # dynamic range: int8 weights (embedding lookup included), fp32 activations
            from ai_edge_quantizer import qtyping, recipe

            blockwise_int4 = getattr(recipe, f"dynamic_wi4b{INT4_EMBEDDINGS_BLOCK}_afp32")
            int4_lookup = blockwise_int4(operation_name=qtyping.TFLOperationName.EMBEDDING_LOOKUP)
            qt.load_quantization_recipe(recipe.dynamic_wi8_afp32() + (int4_lookup if embeddings == "int4" else []))
        else:  # fp16 weights, dequantized at load: half the file, fp32 speed
            from ai_edge_quantizer import qtyping

            qt.add_weight_only_config(
                regex=".*",
                operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                num_bits=16,
                algorithm_key=quantizer.AlgorithmName.FLOAT_CASTING,
            )
        with quiet_tools():  # progress bars and a size summary on stdout
            qt.quantize().export_model(str(path), overwrite=True)

    def verify_batches(self, source: ExportSource, seq_len: int | None) -> list[dict[str, np.ndarray]]:
        # Fixed shape: rows of another seed than the conversion sample's, each padded to the full length.
        rows = sample_inputs(source, VERIFY_SAMPLES, self.fixed_seq_len(seq_len), seed=VERIFY_SEED + 1)
        return [{name: array[i : i + 1] for name, array in rows.items()} for i in range(VERIFY_SAMPLES)]

    def fixed_seq_len(self, seq_len: int | None) -> int | None:
        return DEFAULT_SEQ_LEN if seq_len is None else seq_len

    def runtime_options(self, precision: str, scheme: str) -> dict:
        return {}
