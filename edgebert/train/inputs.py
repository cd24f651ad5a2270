"""What a run reads before any slow work (the teacher, the data, tokenized), and the training batches it walks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from edgebert.checkpoint import Checkpoint, read_config
from edgebert.data import (
    MAX_LENGTH,
    Columns,
    Dataset,
    Encoded,
    check_tokenizer_files,
    encode,
    grouped_batches,
    label_targets,
    labels_from_data,
    load_tokenizer,
    read_dataset,
)
from edgebert.errors import EdgebertError
from edgebert.manifests import AugmentedRecord, FileRef
from edgebert.slicing import open_checkpoint
from edgebert.train.config import TrainConfig

if TYPE_CHECKING:
    import numpy as np

    from edgebert.augment import AugmentManifest
    from edgebert.train.phases import PhasePlan


@dataclass
class EvalSet:
    """A dev or evaluation set, tokenized, with its gold targets."""

    data: Dataset
    encoded: Encoded
    targets: np.ndarray


@dataclass
class Augmented:
    """An augmented file read for a run (`edgebert.train.augmented`): its manifest, the rows trained on, tokenized."""

    path: Path
    manifest: AugmentManifest
    made_in_run: bool  # --augment N (in the run's home), else --augmented
    rows: list[int]  # all the file's rows, or with --train-examples those of the chosen examples
    encoded: Encoded

    def record(self) -> AugmentedRecord:
        manifest = self.manifest
        return AugmentedRecord(
            data=FileRef(path=str(self.path.resolve()), sha256=manifest.augmented.sha256, examples=len(self.rows)),
            rows=manifest.counts.rows,
            made_in_run=self.made_in_run,
            settings=manifest.settings.model_dump(),
            teacher_sha256=manifest.teacher.sha256,
            wall_time_s=manifest.wall_time_s,
        )


@dataclass
class TrainingSet:
    """The examples a phase trains on, tokenized, and their gold targets (None: augmented data, never labelled)."""

    encoded: Encoded
    targets: np.ndarray | None


@dataclass
class Inputs:
    """Everything read before training: the checkpoint, data, tokenized sets and label mapping."""

    checkpoint: Checkpoint
    train: Dataset
    dev: Dataset
    eval: Dataset | None
    encoded_train: Encoded
    train_targets: np.ndarray
    dev_set: EvalSet
    eval_set: EvalSet | None
    new_labels: dict[str, int] | None  # a fresh classifier for a bare encoder (finetune only)
    selected_on: Literal["dev", "eval"] = "dev"
    indices: list[int] = field(default_factory=list)  # the training examples used (subset)
    max_length: int = MAX_LENGTH  # tokens per example, as encoded (bounded by the model's positions)
    augmented: Augmented | None = None  # what the distillation phases train on (--augmented, --augment)

    @property
    def num_labels(self) -> int:
        """The classes of the task: the new head's for a bare encoder, else the teacher's (1: regression)."""
        return len(self.new_labels or {}) or self.checkpoint.arch.num_labels

    def training_set(self, plan: PhasePlan) -> TrainingSet:
        """A phase with a teacher trains on the augmented data when the run has some, any other on --train."""
        if self.augmented is not None and plan.teacher_model is not None:
            return TrainingSet(self.augmented.encoded, None)
        return TrainingSet(self.encoded_train, self.train_targets)


def _eval_set(data: Dataset, tokenizer, checkpoint: Checkpoint, label2id, num_labels, max_length) -> EvalSet:
    return EvalSet(
        data, encode(data, tokenizer, max_length), label_targets(data, num_labels, label2id, checkpoint.path)
    )


def read_inputs(
    model: str | Path,
    train_file: Path,
    dev_file: Path,
    eval_file: Path | None,
    config: TrainConfig,
    columns: Columns | None = None,
) -> Inputs:
    """Read and check everything up front: one clear error before any slow work."""
    import numpy as np

    read_config(Path(model))
    columns = columns or Columns()
    train, dev = read_dataset(train_file, columns), read_dataset(dev_file, columns)
    evaluation = read_dataset(eval_file, columns) if eval_file is not None else None
    checkpoint = open_checkpoint(model)
    check_tokenizer_files(checkpoint.path, {path.name for path in checkpoint.tokenizer_files})
    new_labels = None
    num_labels, label2id = checkpoint.arch.num_labels, checkpoint.model_config.get("label2id")
    if not num_labels:
        if set(config.phases) != {"finetune"}:
            raise EdgebertError(
                f"{checkpoint.path} has no classifier head (a bare encoder), so it cannot be a teacher: fine-tune it "
                "first (`edgebert train MODEL --phases finetune --widths 1 --depths 1 ...`)"
            )
        new_labels = labels_from_data(train) or {}
        num_labels, label2id = max(1, len(new_labels)), new_labels
    tokenizer = load_tokenizer(checkpoint.path, checkpoint.model_type)
    from edgebert.model import EdgeBertConfig

    max_length = min(config.max_length, EdgeBertConfig(**checkpoint.model_config).max_seq_len)
    train_targets = label_targets(train, num_labels, label2id, checkpoint.path)
    dev_set = _eval_set(dev, tokenizer, checkpoint, label2id, num_labels, max_length)
    eval_set = _eval_set(evaluation, tokenizer, checkpoint, label2id, num_labels, max_length) if evaluation else None
    indices = list(range(len(train)))
    if config.train_examples is not None and config.train_examples < len(train):
        indices = sorted(np.random.default_rng(config.seed).permutation(len(train))[: config.train_examples].tolist())
    return Inputs(
        checkpoint,
        train,
        dev,
        evaluation,
        encode(train.subset(indices), tokenizer, max_length),
        train_targets[indices],
        dev_set,
        eval_set,
        new_labels,
        "eval" if eval_set is not None else "dev",
        indices,
        max_length,
    )


def epoch_batches(lengths: list[int], config: TrainConfig, per_epoch: int, step: int) -> Iterator[list[int]]:
    """The training batches from optimizer step `step` on, epoch after epoch: each epoch's order (`grouped_batches`,
    seeded by seed and epoch) is made once, and a resumed run sees exactly the batches it would have."""
    epoch, position = divmod(step, per_epoch)
    while True:
        yield from grouped_batches(lengths, config.batch_size, config.seed, epoch)[position:]
        epoch, position = epoch + 1, 0
