"""Which levers help the small sub-networks: depth-phase arms from one DynaBERT_W, side by side in one run.

    python benchmarks/train_levers.py [--work benchmarks/work/train_sst2] [--start DIR] [--steps 150]

Every arm is `edgebert train START --phases depth` from the same DynaBERT_W (by default the width phase of
`train_glue.py --task sst2`'s run), on the same split, and differs from the sandwich arm in one lever only:

- the paper's rule (all 12 sub-networks every step) against the sandwich rule (`--random-subnets 2`: the largest,
  the smallest and two drawn per step), at about the same compute: the sandwich arms take 3x the steps, since a
  step trains 4 sub-networks instead of 12 (the wall time of each is measured and shown);
- augmented data (`--augmented`, made by the sst2 run's augment stage) against the training part alone;
- the learning rate (the benchmark's 5e-5 against the official 2e-5);
- the final phase: the sandwich arm goes on to specialise (0.25, 0.5) for as many steps (`--final w0.25-d0.5`).

Each arm is measured on the held-out part of the training set (what its run selected on, and what a choice between
levers may use) and on the GLUE dev set (reported, not chosen on). Results: results/train_levers.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from train_glue import DEPTHS, GLUE, HERE, RESULTS, WIDTHS, edgebert, evaluate, provenance

SMALLEST = (0.25, 0.5)
FINAL_KEY = "w0.25-d0.5"


@dataclass(frozen=True)
class Arm:
    """One depth-phase run: its steps as a multiple of `--steps`, whether it distils on the augmented file, and
    its other `edgebert train` options."""

    name: str
    step_factor: int
    augmented: bool = True
    options: list[str] = field(default_factory=list)


SANDWICH = ["--random-subnets", "2"]
ARMS = [
    Arm("paper: all 12 per step", 1),
    Arm("sandwich (largest, smallest + 2)", 3, options=[*SANDWICH, "--final", FINAL_KEY]),
    Arm("sandwich, no augmentation", 3, augmented=False, options=SANDWICH),
    Arm("sandwich, lr 2e-5", 3, options=[*SANDWICH, "--lr", "2e-5"]),
]


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.split(":")[0]).strip("-")


def run_arm(arm: Arm, args: argparse.Namespace, work: Path) -> Path:
    """Train the arm (skipped when its output exists) and return its output directory."""
    out = work / "levers" / slug(arm.name)
    if (out / "edgebert-train.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    split, steps = work / "split", str(args.steps * arm.step_factor)
    data = ["--augmented", work / "split" / f"augmented-{args.augment}.tsv"] if arm.augmented else []
    edgebert(
        "train", args.start or work / "dynabert" / "phases" / "width", "--train", split / "train.tsv",
        "--dev", split / "heldout.tsv", "--eval", split / "heldout.tsv", "--out", out, "--phases", "depth",
        "--train-examples", "100000", "--max-steps", steps, "--lr", "5e-5", "--warmup", "0.1",
        "--eval-every", steps, "--save-every", steps, *data, *arm.options, "--force",
        log=out.with_name(out.name + ".log"),
    )  # fmt: skip
    return out


def summary(table: dict[tuple[float, float], dict[str, float]]) -> dict[str, float]:
    """Accuracy (%) of the smallest sub-network and the mean of the 12."""
    cells = [table[(w, d)]["accuracy"] for w in WIDTHS for d in DEPTHS]
    return {"smallest": table[SMALLEST]["accuracy"], "mean_of_12": sum(cells) / len(cells)}


def measure(arm: Arm, out: Path, work: Path) -> dict:
    manifest = json.loads((out / "edgebert-train.json").read_text())
    sets = {"heldout": work / "split" / "heldout.tsv", "dev": GLUE / "SST-2" / "dev.tsv"}
    row = {
        "arm": arm.name,
        "options": arm.options + ([] if arm.augmented else ["(no --augmented)"]),
        "phases": [{k: p[k] for k in ("name", "steps", "best_step", "wall_time_s")} for p in manifest["phases"]],
    }
    for name, path in sets.items():
        row[name] = summary(evaluate(out, path))
        final = out / "phases" / "final" / FINAL_KEY
        if final.exists():
            row[name]["final_smallest"] = next(iter(evaluate(final, path).values()))["accuracy"]
    return row


def markdown(result: dict) -> str:
    lines = [
        f"# Levers for the small sub-networks: SST-2 depth phase from one DynaBERT_W ({result['date']}, "
        f"commit {result['commit']})",
        "",
        f"Each arm: `edgebert train DynaBERT_W --phases depth`, {result['steps']} steps x the factor shown, batch 32, "
        f"lr 5e-5 unless shown, warm-up 0.1, one thread. Accuracy (%) of (0.25, 0.5) and the mean of the 12 on the "
        f"held-out part of SST-2 train ({result['heldout_size']} examples, what runs select on) and on SST-2 dev.",
        "",
        "| arm | steps | depth phase (min) | held-out (0.25, 0.5) | held-out mean | dev (0.25, 0.5) | dev mean |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["arms"]:
        depth = next(p for p in row["phases"] if p["name"] == "depth")
        held, dev = row["heldout"], row["dev"]
        lines.append(
            f"| {row['arm']} | {depth['steps']} | {depth['wall_time_s'] / 60:.1f} | {held['smallest']:.1f} | "
            f"{held['mean_of_12']:.1f} | {dev['smallest']:.1f} | {dev['mean_of_12']:.1f} |"
        )
        if "final_smallest" in held:
            final = next(p for p in row["phases"] if p["name"] != "depth")
            lines.append(
                f"| ... then final phase, (0.25, 0.5) alone | {final['steps']} | {final['wall_time_s'] / 60:.1f} "
                f"(final) | {held['final_smallest']:.1f} | | {dev['final_smallest']:.1f} | |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(HERE / "work" / "train_sst2"), help="train_glue.py's sst2 work dir")
    parser.add_argument("--start", help="the DynaBERT_W every arm starts from [WORK/dynabert/phases/width]")
    parser.add_argument("--augment", default="20", help="which augmented file of WORK/split: augmented-N.tsv")
    parser.add_argument("--steps", type=int, default=150, help="steps of the all-12 arm; sandwich arms take 3x")
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args()
    work = Path(args.work)
    rows = [measure(arm, run_arm(arm, args, work), work) for arm in ARMS]
    heldout_lines = (work / "split" / "heldout.tsv").read_text().strip().splitlines()
    result = {
        **provenance(),
        "threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "start": str(args.start or work / "dynabert" / "phases" / "width"),
        "steps": args.steps,
        "heldout_size": len(heldout_lines) - 1,
        "arms": rows,
    }
    results = Path(args.results)
    (results / "train_levers.json").write_text(json.dumps(result, indent=2) + "\n")
    (results / "train_levers.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    sys.exit(main())
