"""`edgebert train`: turn a fine-tuned model of any family edgebert reads into a DynaBERT, as the official code does.

The method (Hou et al., NeurIPS 2020; the released code: huawei-noah/Pretrained-Language-Model, DynaBERT/):
1. rewire a copy of the teacher (`edgebert.rewire`): heads and FFN neurons sorted by their importance on the dev
   set (gold labels), so every sub-network keeps the most important; the full model's outputs are unchanged;
2. phase `width` (DynaBERT_W): widths 1, 0.75, 0.5, 0.25 at full depth distil from the teacher,
   loss = SCE(logits) + 0.1 x the sum of the hidden-state MSEs (embeddings and every layer: 13 for BERT-base);
3. phase `depth` (DynaBERT): every (width, depth), depths 1, 0.75, 0.5, distils from DynaBERT_W, loss = SCE +
   1.0 x the MSEs of the hidden states matched by the depth rule: the student's states (embeddings, then each
   kept layer's output) meet the teacher's at indices kept + [L] (12 layers at depth 0.5: 0, 2, 4, ..., 12), so
   the student's last state always meets the teacher's final output;
4. optional phase `finetune`: the task loss on gold labels, no teacher;
5. optional phase `final` (`TrainConfig.final`, not in the official code): each chosen (width, depth) alone distils
   from the DynaBERT at full width and depth (logits only by default, as TinyBERT's prediction-layer distillation),
   on a copy written apart as a dense slice in phases/final/<key>/, so the DynaBERT's other sub-networks keep their
   weights (`phases`).
SCE(student, teacher) = -sum softmax(teacher) x log_softmax(student) (temperature 1); an MSE is the mean over
batch x tokens x hidden. Before a width or depth phase the teacher is measured on --dev once: one no better than
a constant guess (`weak_result`) is refused unless allowed, and a fine-tune ending so is warned about.
Each batch runs every sub-network of the phase, largest first (depths descending, widths descending within),
on views of the full weights (`edgebert.dynabert`: a smaller sub-network costs less), the student with dropout
on and the teacher frozen in eval mode; their losses are summed through separate backward passes and one
optimizer step follows. With `random_subnets` K a step runs the largest, the smallest and K others drawn per step
(BigNAS's and OFA's sandwich rule; `PhasePlan.step_plan` says why the sum is not rescaled). `TrainConfig`'s
defaults are the official ones: AdamW, lr 2e-5, eps 1e-8, weight decay 0 (never on biases and LayerNorms), linear
decay to 0 with no warm-up (6 % for RoBERTa), clip 1.0, batch 32, 128 tokens, 3 epochs per phase, seed 42. Every
`eval_every` (50) steps all sub-networks are evaluated and the checkpoint with the best sum of the task metric
(accuracy; Pearson for regression) is kept (official rule; the official code selects on the dev set it reports,
edgebert on --eval when given and says which).

Choices where the code and the paper differ, or the code is silent:
- depth-phase teacher: `full-width` DynaBERT_W (the released code, confirmed by its author in the repository's
  issue #120; one teacher pass per batch) by default; `same-width` distils each width from DynaBERT_W at that
  width, as the paper describes (four teacher passes per batch);
- SCE is the batch mean of the per-example soft cross-entropy;
- regression: the released code drops the logit term; edgebert uses MSE between student and
  teacher predictions, so the head is trained too;
- hidden-state MSE includes padding, as the original, but batches are padded per batch;
- the paper's best numbers use TinyBERT-style data augmentation (about 20 x the training set); edgebert's
  phases with a teacher distil on such a file with --augmented FILE (`edgebert augment`) or --augment N
  (`augmented`), else on the data given, with somewhat lower accuracies than the paper's.

Several processes (torchrun / accelerate launch) split each global batch; DDP synchronises
gradients once per optimizer step (every sub-network but the last runs under `no_sync`), and
only rank 0 writes.

Modules: `config` the settings, `phases` what each phase trains, `inputs` the data read up front, `augmented` the
augmented data of the phases with a teacher, `losses`, `optim`, `distributed` processes and devices, `loop` the
training loop, `evaluation` metrics and model selection, `models` the run's models on disk, `run_files` the run's
home beside --out, `state` and `metrics_log` what it keeps for --resume, `resume` whether --resume may continue,
`publish` the end of a run, `run` the entry `train()`.
"""

from edgebert.train.config import PHASES, TrainConfig
from edgebert.train.reporter import Reporter, SilentReporter
from edgebert.train.run import train
from edgebert.train.run_files import RunFiles

__all__ = ["PHASES", "Reporter", "RunFiles", "SilentReporter", "TrainConfig", "train"]
