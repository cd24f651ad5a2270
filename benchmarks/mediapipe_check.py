"""MediaPipe Tasks runs edgebert's TFLite exports: TextClassifier and TextEmbedder against PyTorch on SST-2 dev.

mediapipe is not a dependency of the package, only of the test environment (`.[dev]`: mediapipe 1.2.3,
torch 2.13 CPU, transformers 5, ai-edge-litert 2.3, `pip check` clean):

    OMP_NUM_THREADS=1 python benchmarks/mediapipe_check.py [--sentences 50]

Exports with `export_model` (as `edgebert export --format tflite` does, seq_len 128): the demo
classifier (fp32), the trained SST-2 DynaBERT slice w0.5 d0.75 (fp32, int8; benchmarks/work/
train_sst2/dynabert), all-MiniLM-L6-v2 as an encoder (fp32, int8) and the other WordPiece families'
random classifiers of `clients.py` (DistilBERT, ELECTRA: all-MiniLM-L6-v2's tokenizer; its RANDOM_SLICE
w0.5 d0.75, fp32, int8). A case whose checkpoint is missing keeps its rows from the previous results file.
MediaPipe gets the raw sentence; the reference is edgebert's PyTorch model (`torch_outputs`, the gate's
reference) on the model's own Hugging Face tokenizer at 128 tokens, and LiteRT on those same ids separates the
artifact's error from tokenization differences. Classifiers: top-1 agreement and max abs diff
of the scores (the logits). Encoders: TextEmbedder's first embedding (the file's
sentence_embedding output, mean-pooled over the real tokens as sentence-transformers does) against
PyTorch's, by cosine. Writes benchmarks/results/mediapipe.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clients import RANDOM_PREFIX, RANDOM_SLICE, minilm_dir, random_model  # noqa: E402
from int8_onnx import SST2_DEV  # noqa: E402

HERE = Path(__file__).resolve().parent
SEQ_LEN = 128
RANDOM_WORDPIECE = ("distilbert", "electra")  # clients.py's random models MediaPipe can tokenize for


def cases() -> list[dict]:
    sst2 = HERE / "work" / "train_sst2" / "dynabert"
    minilm = minilm_dir()
    width, depth = RANDOM_SLICE
    random = [
        {"name": f"{RANDOM_PREFIX}{kind}-w{width:g}-d{depth:g}", "model": random_model(kind)}
        | {"width": width, "depth": depth}
        for kind in RANDOM_WORDPIECE
    ]
    return [
        {"name": "demo", "model": None, "width": None, "depth": None, "precision": "fp32"},
        {"name": "sst2-w0.5-d0.75", "model": sst2, "width": 0.5, "depth": 0.75, "precision": "fp32"},
        {"name": "sst2-w0.5-d0.75", "model": sst2, "width": 0.5, "depth": 0.75, "precision": "int8"},
        {"name": "all-MiniLM-L6-v2", "model": minilm, "width": None, "depth": None, "precision": "fp32"},
        {"name": "all-MiniLM-L6-v2", "model": minilm, "width": None, "depth": None, "precision": "int8"},
        *({**case, "precision": precision} for case in random for precision in ("fp32", "int8")),
    ]


def references(case: dict, sentences: list[str]) -> tuple[list[list[np.ndarray]], list[list[np.ndarray]]]:
    """PyTorch's and LiteRT's outputs per sentence on the model's own tokenizer."""
    import transformers

    from edgebert.export import EXPORTERS
    from edgebert.export.base import load_source, torch_outputs
    from edgebert.runtimes import SessionOptions, open_session
    from edgebert.sidecar import read_sidecar

    exporter = EXPORTERS["tflite"]  # its inputs: DistilBERT takes segment ids it ignores, as MediaPipe feeds them
    source = load_source(case["model"], case["width"], case["depth"], exporter.sentence_embedding, exporter.segment_ids)
    tokenizer = transformers.AutoTokenizer.from_pretrained(source.tokenizer_dir)
    sidecar = read_sidecar(case["path"])
    options = SessionOptions.recorded(1, sidecar.runtime.model_dump(), sidecar.signature_key)
    session = open_session(case["path"], options)
    torch_rows, litert_rows = [], []
    for sentence in sentences:
        encoded = tokenizer(sentence, padding="max_length", truncation=True, max_length=SEQ_LEN, return_tensors="np")
        feeds = {name: encoded.get(name, np.zeros_like(encoded["input_ids"])) for name in source.input_names}
        torch_rows.append(torch_outputs(source, feeds))
        litert_rows.append(session.run(feeds))
    return torch_rows, litert_rows


def classifier_figures(path: Path, sentences: list[str], torch_rows, litert_rows) -> dict:
    from mediapipe.tasks.python.core.base_options import BaseOptions
    from mediapipe.tasks.python.text import TextClassifier, TextClassifierOptions

    options = TextClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)))
    with TextClassifier.create_from_options(options) as classifier:
        heads = [classifier.classify(sentence).classifications[0] for sentence in sentences]
    scores = np.array([[c.score for c in sorted(h.categories, key=lambda c: c.index)] for h in heads])
    reference = np.concatenate([row[0] for row in torch_rows])
    litert = np.concatenate([row[0] for row in litert_rows])
    apart = np.abs(scores - litert).max(1) > 1e-4  # same file, other ids: MediaPipe's tokens differ
    return {
        "tokenized_differently": [s for s, differs in zip(sentences, apart, strict=True) if differs],
        "mediapipe_top1_agreement": float(np.mean(scores.argmax(1) == reference.argmax(1))),
        "mediapipe_max_abs_diff": float(np.abs(scores - reference).max()),
        "mediapipe_max_abs_diff_same_tokens": float(np.abs(scores - reference)[~apart].max()),
        "litert_top1_agreement": float(np.mean(litert.argmax(1) == reference.argmax(1))),
        "litert_max_abs_diff": float(np.abs(litert - reference).max()),
        "labels": sorted({c.category_name for h in heads for c in h.categories}),
    }


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def encoder_figures(path: Path, sentences: list[str], torch_rows, litert_rows) -> dict:
    from mediapipe.tasks.python.core.base_options import BaseOptions
    from mediapipe.tasks.python.text import TextEmbedder, TextEmbedderOptions

    options = TextEmbedderOptions(base_options=BaseOptions(model_asset_path=str(path)))
    with TextEmbedder.create_from_options(options) as embedder:
        mediapipe = np.stack([embedder.embed(sentence).embeddings[0].embedding for sentence in sentences])
    reference = np.concatenate([row[0] for row in torch_rows])  # sentence_embedding, [n, H]
    litert = np.concatenate([row[0] for row in litert_rows])
    apart = cosines(mediapipe, litert) < 0.9999  # same file, other ids: MediaPipe's tokens differ
    against = cosines(mediapipe, reference)
    return {
        "tokenized_differently": [s for s, differs in zip(sentences, apart, strict=True) if differs],
        "mediapipe_cosine_min": float(against.min()),
        "mediapipe_cosine_mean": float(against.mean()),
        "mediapipe_cosine_min_same_tokens": float(against[~apart].min()),
        "litert_cosine_min": float(cosines(litert, reference).min()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=50)
    args = parser.parse_args(argv)
    import mediapipe

    from edgebert.export import export_model

    sentences = [line.split("\t")[0] for line in SST2_DEV.read_text().splitlines()[1 : args.sentences + 1]]
    work = HERE / "work" / "mediapipe"
    work.mkdir(parents=True, exist_ok=True)
    out = HERE / "results"
    previous = previous_rows(out / "mediapipe.json")
    rows = []
    for case in cases():
        if case["model"] is not None and not case["model"].is_dir():
            kept = previous.get((case["name"], case["precision"]))
            print(
                f"{case['name']} {case['precision']}: no checkpoint {case['model']}; "
                + ("row kept" if kept else "skipped")
            )
            rows += [kept] if kept else []
            continue
        case["path"] = work / f"{case['name']}.{case['precision']}.tflite"
        sidecar = export_model(
            case["model"], "tflite", case["precision"], case["width"], case["depth"], out=case["path"], force=True
        )
        torch_rows, litert_rows = references(case, sentences)
        classifier = list(sidecar["output_meaning"].values()) == ["logits"]
        figures = (
            classifier_figures(case["path"], sentences, torch_rows, litert_rows)
            if classifier
            else encoder_figures(case["path"], sentences, torch_rows, litert_rows)
        )
        row = {"model": case["name"], "precision": case["precision"], "task": "classifier" if classifier else "encoder"}
        row |= {"size_mb": round(sidecar["size_bytes"] / 1e6, 1), "gate": sidecar["parity"]["gate"], **figures}
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"mediapipe": mediapipe.__version__, "sentences": len(sentences), "seq_len": SEQ_LEN, "rows": rows}
    (out / "mediapipe.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "mediapipe.md").write_text(markdown(result))


def previous_rows(path: Path) -> dict[tuple[str, str], dict]:
    """An earlier results file's rows by (model, precision), each saying which commit last wrote that file (its
    own note if it was itself kept): rows kept for a missing checkpoint."""
    if not path.is_file():
        return {}
    git = ["git", "log", "-1", "--format=%h %cs", "--", str(path)]
    commit = subprocess.run(git, cwd=HERE, capture_output=True, text=True).stdout.strip() or "uncommitted"
    rows = json.loads(path.read_text())["rows"]
    return {(row["model"], row["precision"]): {"kept_from": commit} | row for row in rows}


def markdown(result: dict) -> str:
    lines = [
        f"# MediaPipe Tasks on edgebert's TFLite exports (mediapipe {result['mediapipe']})",
        "",
        f"{result['sentences']} SST-2 dev sentences, seq_len {result['seq_len']}; reference: edgebert's PyTorch model",
        "on the model's own tokenizer. MediaPipe tokenizes the raw text itself (its BERT tokenizer, from the",
        "vocabulary in the file's metadata). Scores are logits. Written by benchmarks/mediapipe_check.py.",
        f"{RANDOM_PREFIX}*: benchmarks/clients.py's random stock classifiers (random weights, all-MiniLM-L6-v2's",
        "WordPiece tokenizer), so their top-1 agreement is about the artifact, not a task.",
        "",
        "| model | precision | task | MB | MediaPipe vs PyTorch | LiteRT (same ids) vs PyTorch | tokenized apart |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        if row["task"] == "classifier":
            mediapipe = (
                f"top-1 {row['mediapipe_top1_agreement']:.0%}, max abs {row['mediapipe_max_abs_diff']:.2g} "
                f"({row['mediapipe_max_abs_diff_same_tokens']:.2g} on the same tokens)"
            )
            litert = f"top-1 {row['litert_top1_agreement']:.0%}, max abs {row['litert_max_abs_diff']:.2g}"
        else:
            mediapipe = (
                f"sentence_embedding cosine min {row['mediapipe_cosine_min']:.4f}, mean "
                f"{row['mediapipe_cosine_mean']:.4f} "
                f"(min {row['mediapipe_cosine_min_same_tokens']:.4f} on the same tokens)"
            )
            litert = f"cosine min {row['litert_cosine_min']:.4f}"
        apart = len(row["tokenized_differently"])
        model = row["model"] + (f" (kept from {row['kept_from']})" if "kept_from" in row else "")
        cells = [model, row["precision"], row["task"], row["size_mb"], mediapipe, litert, apart]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    apart = sorted({sentence for row in result["rows"] for sentence in row["tokenized_differently"]})
    lines += ["", "Sentences MediaPipe tokenizes unlike the model's Hugging Face tokenizer (MediaPipe's output differs"]
    lines += ["from LiteRT's on the same file): " + ("; ".join(f"`{s.strip()}`" for s in apart) or "none") + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
