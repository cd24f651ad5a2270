"""Optimum (optimum-onnx) on an edgebert ONNX bundle, unchanged: `ORTModelFor*` + a transformers pipeline.

Runs in its own environment, not edgebert's: optimum-onnx 0.1.0 needs transformers < 4.58, and
nothing of edgebert is imported here. Setup (CPU torch; on a machine without a local CPU wheel add
`--index-url https://download.pytorch.org/whl/cpu` or pip pulls the multi-GB GPU build):

    python3 -m venv /work/venv-optimum
    /work/venv-optimum/bin/pip install torch==2.13.0
    /work/venv-optimum/bin/pip install "optimum-onnx[onnxruntime]==0.1.0" "transformers<4.58" onnxruntime==1.32.0
    /work/venv-optimum/bin/python optimum_check.py BUNDLE SENTENCES.txt [--task text-classification] \
        [--files model.onnx,model_quantized.onnx,model_fp16.onnx]

For each file in BUNDLE/onnx/ it prints one JSON line: the token ids of `AutoTokenizer.from_pretrained
(BUNDLE)` per sentence, and
  text-classification: `pipeline("text-classification", model=ORTModelForSequenceClassification
                       .from_pretrained(BUNDLE, subfolder="onnx", file_name=FILE), tokenizer=...)` with
                       `top_k=None, function_to_apply="none"`: every label's raw logit, per sentence;
  feature-extraction:  `pipeline("feature-extraction", model=ORTModelForFeatureExtraction...)`'s token
                       vectors, mean-pooled over the sentence's tokens and L2-normalised (what
                       sentence-transformers does for all-MiniLM-L6-v2).
The pipeline runs one sentence at a time (no padding). benchmarks/clients.py compares the output with
PyTorch; nothing here judges the numbers.
"""

from __future__ import annotations

import argparse
import json
from importlib.metadata import version
from pathlib import Path

import numpy as np
from optimum.onnxruntime import ORTModelForFeatureExtraction, ORTModelForSequenceClassification
from transformers import AutoTokenizer, pipeline

MODEL_CLASSES = {
    "text-classification": ORTModelForSequenceClassification,
    "feature-extraction": ORTModelForFeatureExtraction,
}


def run_file(bundle: Path, file_name: str, task: str, texts: list[str]) -> dict:
    """One precision file through Optimum's model class and a transformers pipeline."""
    tokenizer = AutoTokenizer.from_pretrained(bundle)
    model = MODEL_CLASSES[task].from_pretrained(bundle, subfolder="onnx", file_name=file_name)
    pipe = pipeline(task, model=model, tokenizer=tokenizer)
    record = {
        "client": "optimum",
        "version": {name: version(name) for name in ("optimum-onnx", "transformers", "onnxruntime")},
        "file": file_name,
        "task": task,
        "ids": [tokenizer(text)["input_ids"] for text in texts],
    }
    if task == "text-classification":
        labels = [model.config.id2label[index] for index in sorted(model.config.id2label)]
        rows = pipe(texts, top_k=None, function_to_apply="none")
        record["labels"] = labels
        scores = [{row["label"]: row["score"] for row in sentence} for sentence in rows]  # ordered by score
        record["logits"] = [[sentence[label] for label in labels] for sentence in scores]
    else:
        pooled = np.stack([np.asarray(tokens[0]).mean(0) for tokens in pipe(texts)])
        record["embeddings"] = (pooled / np.linalg.norm(pooled, axis=1, keepdims=True)).tolist()
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("sentences", type=Path, help="one sentence a line")
    parser.add_argument("--task", choices=sorted(MODEL_CLASSES), default="text-classification")
    parser.add_argument("--files", default="model.onnx,model_quantized.onnx,model_fp16.onnx")
    args = parser.parse_args()
    texts = [line for line in args.sentences.read_text(encoding="utf-8").splitlines() if line]
    for file_name in args.files.split(","):
        print(json.dumps(run_file(args.bundle, file_name, args.task, texts)), flush=True)


if __name__ == "__main__":
    main()
