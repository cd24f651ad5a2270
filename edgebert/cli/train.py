"""`edgebert train` and `edgebert rewire`: make a DynaBERT from a fine-tuned model of any family edgebert reads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, get_args, get_type_hints

import typer
from rich import box
from rich.table import Table

from edgebert.cli.options import JsonOpt, LabelColumnOpt, TextColumnOpt, check_choice, data_columns, default_is
from edgebert.cli.output import console, show
from edgebert.cli.progress import Progress
from edgebert.errors import EdgebertError
from edgebert.evaluate import primary_metric
from edgebert.manifests import RewireManifest
from edgebert.subnet import parse_subnet_key, subnet_key
from edgebert.train import TrainConfig
from edgebert.train import train as run_training
from edgebert.train.optim import ROBERTA_WARMUP

TEACHER_HELP = "A fine-tuned BERT, RoBERTa, XLM-R, ELECTRA, DistilBERT or ModernBERT directory (teacher)."
ModelPath = Annotated[Path, typer.Argument(help=TEACHER_HELP)]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an output edgebert wrote earlier.")]
DEFAULTS = TrainConfig()  # every option's default is the library's


def listed(values: tuple[float, ...]) -> str:
    """(1.0, 0.75, 0.5) -> '1,0.75,0.5', as --widths and --depths take them."""
    return ",".join(f"{value:g}" for value in values)


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    """'1,0.75,0.5' -> (1.0, 0.75, 0.5)."""
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise EdgebertError(f"bad {what} {text!r}: give comma-separated numbers, e.g. 1,0.75,0.5") from None
    if not values:
        raise EdgebertError(f"{what} is empty")
    return values


class CliReporter:
    """A progress bar per phase (step, loss, steps/s, ETA; plain lines off a terminal) and a table of dev metrics per
    evaluation."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.progress = Progress(transient=False)

    def __enter__(self) -> CliReporter:
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def phase_started(self, phase: str, total_steps: int, done_steps: int) -> None:
        self.progress.stage(f"phase {phase}", total_steps, done_steps)

    def step(self, step: int, loss: float) -> None:
        self.progress.update(step, detail=f"loss {loss:.4f}")

    def evaluated(self, record: dict[str, Any]) -> None:
        if self.quiet:
            return
        table = metrics_table(
            record["metrics"],
            title=f"phase {record['phase']} step {record['step']}: {record['selected_on']} metrics, "
            f"sum {record['score']:.4f}{' (best so far)' if record['best'] else ''}",
        )
        self.progress.print(table)

    def message(self, text: str) -> None:
        if not self.quiet:
            self.progress.print(text)


def metrics_table(metrics: dict[str, dict[str, float]], title: str) -> Table:
    """Rows are depths, columns widths: the layout of the paper's tables."""
    cells: dict[tuple[float, float], str] = {}
    for key, values in metrics.items():
        cells[parse_subnet_key(key)] = f"{100 * primary_metric(values)[1]:.1f}"
    widths = sorted({w for w, _ in cells}, reverse=True)
    depths = sorted({d for _, d in cells}, reverse=True)
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("depth \\ width", justify="right")
    for width in widths:
        table.add_column(f"{width:g}", justify="right")
    for depth in depths:
        table.add_row(f"{depth:g}", *(cells.get((w, depth), "") for w in widths))
    return table


def train_command(
    model: ModelPath,
    train: Annotated[Path, typer.Option("--train", help="Training data: GLUE-style TSV/CSV with a header.")],
    dev: Annotated[Path, typer.Option("--dev", help="Dev data: evaluated every --eval-every steps and at the end.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory (the DynaBERT, metrics.jsonl, phases/).")],
    eval_file: Annotated[
        Path | None, typer.Option("--eval", help="Select checkpoints on this file instead of --dev.")
    ] = None,
    augmented: Annotated[
        Path | None,
        typer.Option(
            "--augmented",
            help="The phases with a teacher (width, depth, final) train on this file, which `edgebert augment` "
            "made from --train (finetune keeps --train).",
        ),
    ] = None,
    augment: Annotated[
        int | None,
        typer.Option(
            "--augment",
            help="Make that file first: N variants per example, `edgebert augment`'s other defaults, those equal to "
            "a --dev text dropped (kept beside --out for --resume).",
        ),
    ] = None,
    phases: Annotated[str, typer.Option(help="Comma-separated: width, depth, finetune.")] = ",".join(DEFAULTS.phases),
    widths: Annotated[str, typer.Option(help="Widths trained.")] = listed(DEFAULTS.widths),
    depths: Annotated[str, typer.Option(help="Depths trained (depth and finetune phases).")] = listed(DEFAULTS.depths),
    epochs: Annotated[float, typer.Option(help="Epochs per phase (fractions allowed).")] = DEFAULTS.epochs,
    max_steps: Annotated[
        int | None, typer.Option(help="Optimizer steps per phase; overrides --epochs.")
    ] = DEFAULTS.max_steps,
    train_examples: Annotated[
        int | None, typer.Option(help="Train on a seeded random subset of this size.")
    ] = DEFAULTS.train_examples,
    batch_size: Annotated[int, typer.Option(help="Global batch size (over all processes).")] = DEFAULTS.batch_size,
    max_length: Annotated[int, typer.Option(help="Tokens per example (truncation).")] = DEFAULTS.max_length,
    learning_rate: Annotated[float, typer.Option("--lr", help="AdamW learning rate.")] = DEFAULTS.learning_rate,
    weight_decay: Annotated[
        float, typer.Option(help="AdamW weight decay (not on biases, LayerNorms).")
    ] = DEFAULTS.weight_decay,
    warmup: Annotated[
        float | None,
        typer.Option(help=f"Warm-up share of steps {default_is(f'0 BERT, {ROBERTA_WARMUP:g} RoBERTa')}."),
    ] = DEFAULTS.warmup,
    seed: Annotated[int, typer.Option(help="Seed of data order, dropout and new weights.")] = DEFAULTS.seed,
    depth_teacher: Annotated[
        str, typer.Option(help="full-width (the released code) or same-width (the paper).")
    ] = DEFAULTS.depth_teacher,
    eval_every: Annotated[int, typer.Option(help="Evaluate all sub-networks every N steps.")] = DEFAULTS.eval_every,
    save_every: Annotated[int, typer.Option(help="Checkpoint for --resume every N steps.")] = DEFAULTS.save_every,
    importance: Annotated[
        str, typer.Option(help="Rewiring's gradient accumulation: official or per-batch.")
    ] = DEFAULTS.importance_accumulation,
    mixed_precision: Annotated[str, typer.Option(help="no, fp16 or bf16 (GPU only).")] = DEFAULTS.mixed_precision,
    random_subnets: Annotated[
        int | None,
        typer.Option(
            help="Each step trains the largest, the smallest and this many other sub-networks of the phase, drawn "
            f"per step (the sandwich rule) {default_is('all')}."
        ),
    ] = DEFAULTS.random_subnets,
    final: Annotated[
        str | None,
        typer.Option(
            help="Then specialise these sub-networks, e.g. w0.25-d0.5,w0.5-d0.5: each alone distils from the "
            "DynaBERT at full size for as long as a phase, written as a slice to <out>/phases/final/<key>/."
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the unfinished run of --out (kept beside it until done); --eval-every, --save-every and, at "
            "a phase boundary, --max-steps/--epochs may differ.",
        ),
    ] = False,
    allow_weak_teacher: Annotated[
        bool,
        typer.Option(
            "--allow-weak-teacher", help="Distil a teacher no better than the majority class on --dev anyway."
        ),
    ] = False,
    text_column: TextColumnOpt = None,
    label_column: LabelColumnOpt = None,
    force: ForceOpt = False,
    json: JsonOpt = False,
) -> None:
    """Rewire a fine-tuned BERT, RoBERTa, XLM-R, ELECTRA, DistilBERT or ModernBERT and train it into a DynaBERT
    (width, then depth phase)."""
    allowed = get_type_hints(TrainConfig)
    check_choice("depth teacher", depth_teacher, get_args(allowed["depth_teacher"]))
    check_choice("importance", importance, get_args(allowed["importance_accumulation"]))
    check_choice("mixed precision", mixed_precision, get_args(allowed["mixed_precision"]))
    columns = data_columns(text_column, label_column)
    config = TrainConfig(
        phases=tuple(part.strip() for part in phases.split(",") if part.strip()),
        widths=parse_floats(widths, "--widths"),
        depths=parse_floats(depths, "--depths"),
        epochs=epochs,
        max_steps=max_steps,
        train_examples=train_examples,
        batch_size=batch_size,
        max_length=max_length,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        warmup=warmup,
        seed=seed,
        depth_teacher=depth_teacher,
        eval_every=eval_every,
        save_every=save_every,
        importance_accumulation=importance,
        mixed_precision=mixed_precision,
        random_subnets=random_subnets,
        final=tuple(parse_subnet_key(key.strip()) for key in (final or "").split(",") if key.strip()) or DEFAULTS.final,
    )
    with CliReporter(quiet=json) as reporter:
        manifest = run_training(
            model,
            train,
            dev,
            out,
            config,
            eval_file,
            force=force,
            resume=resume,
            reporter=reporter,
            allow_weak_teacher=allow_weak_teacher,
            columns=columns,
            augmented=augmented,
            augment=augment,
        )
    if manifest is None:  # not rank 0
        return

    def render(_: dict) -> None:
        console.print(metrics_table(manifest.dev_metrics, f"Wrote {out}: final model on {manifest.dev_data.path}"))
        for phase in manifest.phases:
            name = phase.name if phase.dev_metrics is None else f"{phase.name} {subnet_key(*phase.subnetworks[0])}"
            on_dev = "" if phase.dev_metrics is None else f", {primary_metric(phase.dev_metrics)[1]:.4f} on dev"
            console.print(
                f"phase {name}: {phase.steps} steps ({phase.epochs:g} epochs), best at step {phase.best_step} "
                f"(sum {phase.best_score:.4f} on {manifest.selected_on}{on_dev}), {phase.wall_time_s / 60:.1f} min"
            )

    show({"output": str(out), **manifest.model_dump(mode="json")}, json, render)


def rewire_command(
    model: ModelPath,
    data: Annotated[
        Path,
        typer.Option(help="Labelled dev file (GLUE-style), or unlabelled text, one sentence per line."),
    ],
    out: Annotated[Path | None, typer.Option(help=f"Output directory {default_is('<model>-rewired')}.")] = None,
    batch_size: Annotated[int, typer.Option(help="Importance batch size (official: 8).")] = 8,
    importance: Annotated[str, typer.Option(help="Gradient accumulation: official or per-batch.")] = "official",
    force: ForceOpt = False,
    json: JsonOpt = False,
) -> None:
    """Sort heads and FFN neurons by importance: every sub-network keeps the most important ones."""
    from edgebert.rewire import Accumulation, rewire_model, summary

    check_choice("importance", importance, get_args(Accumulation))
    with Progress() as progress:
        out_dir, manifest = rewire_model(
            model, data, out, force, batch_size, importance, progress=lambda m: progress.stage(f"rewiring: {m}")
        )
    show({"output": str(out_dir), **summary(manifest)}, json, lambda _: console.print(rewire_table(out_dir, manifest)))


def rewire_table(out_dir: Path, manifest: RewireManifest) -> Table:
    """What rewiring wrote and how the rewired model's logits compare with the source's."""
    table = Table(title=f"Wrote {out_dir}", show_header=False, title_justify="left")
    table.add_row("source", manifest.source.path)
    table.add_row("importance data", f"{manifest.data.path} ({manifest.data.examples} examples, {manifest.labels})")
    table.add_row("accumulation", manifest.accumulation)
    for layer, order in enumerate(manifest.head_order):
        table.add_row(f"layer {layer} heads", " ".join(map(str, order)))
    table.add_row(
        "full model logits",
        f"max abs diff {manifest.max_abs_diff:.2e} in fp32, {manifest.max_abs_diff_fp64:.1e} in fp64 (<= 1e-5)",
    )
    return table


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("rewire")(rewire_command)
