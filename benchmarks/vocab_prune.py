"""Vocabulary pruning (issue 21): what `slice --vocab-from` saves and costs, every sub-network pruned and not.

    python benchmarks/vocab_prune.py [--model DIR] [--vocab-from FILE] [--dev FILE] [--quick] [--no-demo]

For MODEL (default: work/train_sst2/dynabert, the all-MiniLM-L6-v2 DynaBERT that `train_glue.py --task sst2`
trains) and each sub-network of the trained grid (`--quick`: (1, 1) and (0.25, 0.5)), a slice as it is and one
pruned to the vocabulary of `--vocab-from` (default: SST-2 train from ../shared/data/glue), each exported to int8
ONNX with `export_model` (its parity gate included), then measured side by side:
- the int8 ONNX file's size;
- peak RSS in `edgebert bench --json` (a process of its own, so torch and this script weigh nothing): the process
  peak and the model's footprint, bench's two memory figures (batch 1 x 128 random ids, `--threads`, `--runs`;
  medians of `--repeats` processes, as one process's peak varies by several MB);
- accuracy on the dev set (`--dev`, default SST-2 dev) by `edgebert.evaluate.evaluate` on the slice directory, as
  `edgebert eval SLICE` measures it (the fp32 PyTorch slice through its own, remapped, tokenizer; results are cached
  in edgebert's eval cache), and pruned - unpruned in points;
- the kept vocabulary and the share of the dev set's tokens pruning drops (each read as [UNK]).
The issue's targets: the (0.25, 0.5) int8 ONNX file <= 8 MB pruned, with dev accuracy within 0.3 points of the
unpruned slice. Then the built-in demo (BERT-base shape, untrained: no accuracy) at (0.25, 0.5), pruned to the
same vocabulary and not (`--no-demo` skips it). Wall and CPU time of every stage are recorded (CPU time tells the
cost on a machine other jobs share). Slices and bundles go to work/vocab_prune/ (replaced on each run); results
to results/vocab_prune.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_glue import GLUE, HERE, RESULTS, provenance  # noqa: E402

QUICK_GRID = ((1.0, 1.0), (0.25, 0.5))
TARGET_POINT = (0.25, 0.5)
TARGET_MB = 8.0
TARGET_POINTS = 0.3  # the pruned slice's accuracy may be at most this much below the unpruned one's
VARIANTS = ("full", "pruned")


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    from edgebert.subnet import TRAINED_GRID

    return {
        "model": str(args.model),
        "vocab_from": str(args.vocab_from),
        "dev": str(args.dev),
        "grid": [list(point) for point in (QUICK_GRID if args.quick else TRAINED_GRID)],
        "quick": args.quick,
        "runs": args.runs or (3 if args.quick else 20),
        "repeats": args.repeats or (1 if args.quick else 3),
        "threads": args.threads,
        "demo": not args.no_demo,
    }


class Clock:
    """Wall and CPU seconds per stage, summed over its calls; CPU counts this process's threads and its children.
    Each call also yields its own seconds, filled in when it ends."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, float]] = {}

    @contextmanager
    def __call__(self, stage: str):
        spent: dict[str, float] = {}
        wall, cpu = time.perf_counter(), cpu_seconds()
        yield spent
        spent.update(wall_s=time.perf_counter() - wall, cpu_s=cpu_seconds() - cpu)
        total = self.stages.setdefault(stage, {"wall_s": 0.0, "cpu_s": 0.0})
        for key, seconds in spent.items():
            total[key] += seconds


def cpu_seconds() -> float:
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


def bench(artifact: Path, settings: dict) -> dict[str, Any]:
    """`edgebert bench ARTIFACT --json`, each time in a process of its own (the memory it reports is the runtime's
    and the model's), `repeats` times: the same file's peak RSS varies by several MB between processes (MiniLM at
    (1, 1): 135 and 141 MB), as much as pruning saves at width 1, so the figures are medians."""
    command = [sys.executable, "-m", "edgebert", "bench", str(artifact), "--json", "--runs", str(settings["runs"])]
    command += ["--min-time", "0", "--threads", str(settings["threads"])]
    results = []
    for _ in range(settings["repeats"]):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"edgebert bench {artifact} failed (exit {done.returncode}):\n{done.stderr}")
        results.append(json.loads(done.stdout))
    memory = [result["memory"] for result in results]
    figures = ("peak_rss_bytes", "model_footprint_bytes", "baseline_bytes")
    return {key: statistics.median(m[key] for m in memory) for key in figures} | {
        "peak_rss_each_bytes": [m["peak_rss_bytes"] for m in memory],
        "runs": results[0]["settings"]["runs"],
        "warnings": sorted({warning for result in results for warning in result["warnings"]}),
    }


def measure(checkpoint, vocabulary, point: tuple[float, float], work: Path, settings: dict, clock: Clock, dev) -> dict:
    """One sub-network, with `vocabulary` (pruned) or without: slice, int8 ONNX bundle, bench, and eval unless
    `dev` is None."""
    from edgebert.evaluate import evaluate
    from edgebert.export import export_model
    from edgebert.slicing import slice_checkpoint, write_slice
    from edgebert.st_modules import sentence_transformers_files
    from edgebert.subnet import subnet_name

    width, depth = point
    name = subnet_name("pruned" if vocabulary is not None else "full", width, depth)
    directory, bundle = work / name, work / f"{name}-onnx"
    spent = {}
    with clock("slice") as spent["slice"]:
        shutil.rmtree(directory, ignore_errors=True)
        work.mkdir(parents=True, exist_ok=True)
        sliced = slice_checkpoint(checkpoint, width, depth, vocabulary=vocabulary)
        kept_files = sentence_transformers_files(checkpoint.path)
        manifest = write_slice(checkpoint, sliced, directory, kept_files, vocabulary)
    with clock("export") as spent["export"]:
        sidecar = export_model(directory, "onnx", "int8", out=bundle, force=True)
    with clock("bench") as spent["bench"]:
        measured = bench(Path(sidecar["path"]), settings)
    row = {
        "width": width,
        "depth": depth,
        "pruned": vocabulary is not None,
        "parameters": manifest["parameters"],
        "size_bytes": sidecar["size_bytes"],
        "quantization": sidecar["quantization"],
        "parity_cosine": sidecar["parity"]["cosine"],
        **measured,
    }
    if dev is not None:
        with clock("eval") as spent["eval"]:
            (result,) = evaluate(directory, dev)["results"]
        row["accuracy"] = 100 * result["metrics"]["accuracy"]
        row["eval_cached"] = result["cached"]
    row["seconds"] = spent
    print(f"  {name}: {row['size_bytes'] / 1e6:.1f} MB, peak RSS {row['peak_rss_bytes'] / 1e6:.0f} MB", flush=True)
    return row


def section(model: str | None, grid: list, dev: str | None, settings: dict, work: Path, clock: Clock) -> dict:
    """Every point of `grid`, unpruned and pruned to `--vocab-from`; the kept vocabulary, and the share of the dev
    set's tokens it drops (no dev set: no accuracy)."""
    from edgebert.data import read_dataset
    from edgebert.slicing import open_checkpoint
    from edgebert.vocab import choose_vocabulary, vocabulary_sources

    with clock("load"):
        checkpoint = open_checkpoint(model)
    with clock("vocabulary"):
        vocabulary = choose_vocabulary(checkpoint, vocabulary_sources([settings["vocab_from"]], 1))
    rows = [
        measure(checkpoint, keeps, tuple(point), work, settings, clock, dev)
        for point in grid
        for keeps in (None, vocabulary)
    ]
    record = vocabulary.record
    found = {
        "model": str(checkpoint.path),
        "kept_tokens": record.kept,
        "original_tokens": record.original_size,
        "rows": rows,
    }
    if dev is not None:
        found["dev_unknown_rate"] = vocabulary.unknown_rate(read_dataset(dev), checkpoint.path)
    return found


def pairs(rows: list[dict]) -> dict[tuple[float, float], dict[str, dict]]:
    """Rows by (width, depth), then "full" and "pruned"."""
    paired: dict[tuple[float, float], dict[str, dict]] = {}
    for row in rows:
        paired.setdefault((row["width"], row["depth"]), {})[VARIANTS[row["pruned"]]] = row
    return paired


def targets(trained: dict) -> dict[str, dict]:
    """Issue 21's targets on the (0.25, 0.5) sub-network."""
    point = pairs(trained["rows"]).get(TARGET_POINT)
    if point is None:
        return {}
    size = point["pruned"]["size_bytes"] / 1e6
    drop = point["pruned"]["accuracy"] - point["full"]["accuracy"]
    return {
        f"(0.25, 0.5) int8 ONNX pruned <= {TARGET_MB:g} MB": {"value": size, "met": size <= TARGET_MB},
        f"(0.25, 0.5) pruned accuracy >= unpruned - {TARGET_POINTS:g} points": {
            "value": drop,
            "met": drop >= -TARGET_POINTS,
        },
    }


def run(settings: dict, work: Path, results: Path) -> dict[str, Any]:
    clock = Clock()
    started = time.perf_counter()
    print(f"{settings['model']}: {len(settings['grid'])} sub-networks, unpruned and pruned", flush=True)
    trained = section(settings["model"], settings["grid"], settings["dev"], settings, work / "model", clock)
    report = {**provenance(), "settings": settings, "model": trained, "targets": targets(trained)}
    if settings["demo"]:
        print("the demo model at (0.25, 0.5)", flush=True)
        report["demo"] = section(None, [TARGET_POINT], None, settings, work / "demo", clock)
    report["timings"] = clock.stages | {"total_wall_s": time.perf_counter() - started}
    results.mkdir(parents=True, exist_ok=True)
    (results / "vocab_prune.json").write_text(json.dumps(report, indent=2) + "\n")
    (results / "vocab_prune.md").write_text(markdown(report))
    print((results / "vocab_prune.md").read_text())
    return report


def size_cells(width: float, depth: float, full: dict, pruned: dict) -> str:
    """A table row's first six cells, unpruned → pruned: the sub-network, parameters, file, peak RSS, footprint."""
    return (
        f"| {width:g} | {depth:g} | {full['parameters'] / 1e6:.1f} → {pruned['parameters'] / 1e6:.1f} "
        f"| {megabytes(full, pruned, 'size_bytes')} | {megabytes(full, pruned, 'peak_rss_bytes')} "
        f"| {megabytes(full, pruned, 'model_footprint_bytes')} |"
    )


def megabytes(full: dict, pruned: dict, key: str) -> str:
    return f"{full[key] / 1e6:.1f} → {pruned[key] / 1e6:.1f}"


def markdown(report: dict) -> str:
    trained, settings = report["model"], report["settings"]
    lines = [
        f"# Vocabulary pruning ({report['date']}, commit {report['commit']}, {report['machine']})",
        "",
        f"{trained['model']}, pruned to the vocabulary of {settings['vocab_from']}: {trained['kept_tokens']:,} of "
        f"{trained['original_tokens']:,} tokens kept; {trained['dev_unknown_rate']:.1%} of the tokens of "
        f"{settings['dev']} are dropped ([UNK]). Cells: unpruned → pruned. int8 ONNX (`export_model`, gate passed); "
        f"peak RSS and model footprint from `edgebert bench --json` (batch 1 x 128, {settings['threads']} thread(s), "
        f"{settings['runs']} runs, median of {settings['repeats']} processes); dev accuracy of the slice "
        "(`edgebert eval`, fp32 PyTorch).",
        "",
        "| width | depth | params (M) | int8 ONNX (MB) | peak RSS (MB) | model footprint (MB) | dev accuracy (%) "
        "| pruned - unpruned (points) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (width, depth), pair in pairs(trained["rows"]).items():
        full, pruned = pair["full"], pair["pruned"]
        lines.append(
            f"{size_cells(width, depth, full, pruned)} {full['accuracy']:.2f} → {pruned['accuracy']:.2f} "
            f"| {pruned['accuracy'] - full['accuracy']:+.2f} |"
        )
    if report["targets"]:
        lines += ["", "| target | value | met |", "|---|---|---|"]
        for name, target in report["targets"].items():
            lines.append(f"| {name} | {target['value']:.2f} | {'yes' if target['met'] else 'no'} |")
    if "demo" in report:
        demo = report["demo"]
        lines += [
            "",
            f"## The built-in demo (BERT-base shape, untrained: no accuracy), {demo['kept_tokens']:,} of "
            f"{demo['original_tokens']:,} tokens kept",
            "",
            "Its tokenizer is a generated WordPiece vocabulary whose tokens mean nothing, so real text keeps few of "
            "them: the pruned size is what that tokenizer gives, not what BERT's vocabulary would (the model above "
            f"keeps {trained['kept_tokens']:,} of its {trained['original_tokens']:,}).",
            "",
            "| width | depth | params (M) | int8 ONNX (MB) | peak RSS (MB) | model footprint (MB) |",
            "|---|---|---|---|---|---|",
        ]
        for (width, depth), pair in pairs(demo["rows"]).items():
            full, pruned = pair["full"], pair["pruned"]
            lines.append(size_cells(width, depth, full, pruned))
    lines += ["", "| stage | wall (min) | CPU (min) |", "|---|---|---|"]
    for stage, spent in report["timings"].items():
        if stage != "total_wall_s":
            lines.append(f"| {stage} | {spent['wall_s'] / 60:.1f} | {spent['cpu_s'] / 60:.1f} |")
    lines.append(f"| total | {report['timings']['total_wall_s'] / 60:.1f} | |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=HERE / "work" / "train_sst2" / "dynabert")
    parser.add_argument("--vocab-from", type=Path, default=GLUE / "SST-2" / "train.tsv")
    parser.add_argument("--dev", type=Path, default=GLUE / "SST-2" / "dev.tsv")
    parser.add_argument("--quick", action="store_true", help=f"only {QUICK_GRID}, 3 bench runs: a smoke run")
    parser.add_argument("--runs", type=int, help="bench runs per artifact [20; --quick 3]")
    parser.add_argument("--repeats", type=int, help="bench processes per artifact, medians reported [3; --quick 1]")
    parser.add_argument("--threads", type=int, default=1, help="bench's runtime threads")
    parser.add_argument("--no-demo", action="store_true", help="skip the demo model's section")
    parser.add_argument("--work", type=Path, default=HERE / "work" / "vocab_prune")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where vocab_prune.{json,md} go")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if not (args.model / "config.json").is_file():
        sys.exit(f"{args.model}: no model there; train_glue.py --task sst2 makes the default one, or pass --model")
    run(settings_from(args), args.work, args.results)


if __name__ == "__main__":
    main()
