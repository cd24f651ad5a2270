"""`pick`: which (width, depth, precision) to ship to a device, under its memory and latency budgets.

Every candidate (the trained grid, or the user's list, x the precisions the profile's runtime
runs) gets a memory figure, a latency figure and, when `edgebert eval` has cached results for
this model, an accuracy. Each figure says what is behind it: "measured" (a bench result of that
very artifact), "predicted" (a curve fitted to bench results of its own precision), "derived"
(another precision's latency fit at the spec ratio: no measurement of its own), "estimated" or
"estimate from specs" (documented constants and the profile's hardware facts). Memory is the
model's own footprint (`memory_model`); the runtime baseline is reported beside it and counted
only when the budget is for the whole process (`memory_scope="process"`).

The frontier is over what the user trades: quality (accuracy, or FLOPs when it is unknown),
latency and memory. One order ranks the candidates (`rank`): the best quality first, ties to the
cheaper (less memory, then less latency, then fewer FLOPs); the choice is the first candidate in
that order that fits every budget and is on the frontier, so it is always a row the frontier shows
(accuracy is measured in fp32: at equal accuracy the smaller precision is the cheaper, and ships
after its parity gate). When nothing fits,
`choice` is None and the verdict names the smallest memory and lowest latency any candidate
reaches. With an export, the choice is re-checked against the artifact written, and the verdict
is about that artifact. Everything is decided here and returned as a `PickReport`; the command
line only shows it (a table, or the report's JSON).

Every size counts the embeddings, and the word-embedding table (vocabulary x hidden) is most of a
small sub-network: no width or depth gets under it. With `vocab_from` (`--vocab-from`), each
candidate also comes pruned to the vocabulary those texts need (`edgebert.vocab`, chosen once): its
size and memory follow the kept rows, its latency is its unpruned twin's (the same layers), and its
accuracy is measured on the file the others' comes from, with the share of that file's tokens the
pruning turns into [UNK] beside it; exported, it is cut from a pruned slice.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, computed_field

from edgebert.data import GLUE_COLUMNS, Columns
from edgebert.errors import EdgebertError, require_installed
from edgebert.latency_model import (
    LatencyModel,
    Measurement,
    Shape,
    calibrate_threads,
    leave_one_out,
    leave_one_out_warning,
    load_calibration,
    measurements_from_result,
    threads_of,
)
from edgebert.manifests import VocabularyRecord
from edgebert.memory_model import MemoryModel, calibrate_memory
from edgebert.notes import Note, NoteText, warning
from edgebert.precisions import EMBEDDINGS, EMBEDDINGS_PRECISION, PRECISIONS, estimated_size_bytes
from edgebert.profiles import (
    BUDGET_PERCENTILE,
    MEMORY_SCOPE_LABELS,
    THREADS_MIN_GAIN,
    MemoryScope,
    Profile,
    budget_bytes,
    cheapest_unless_beaten,
    checked_budget,
    faster_threads,
)
from edgebert.runtimes import FORMAT_FOR_RUNTIME, RUNTIMES, artifact_name
from edgebert.subnet import TRAINED_GRID, Architecture, OffGridWarning, costs, subnet_name, subnetwork

if TYPE_CHECKING:
    from edgebert.checkpoint import Checkpoint
    from edgebert.evaluate import ModelKey
    from edgebert.vocab import KeptVocabulary

RUNTIME_PRECISIONS = dict.fromkeys(RUNTIMES, PRECISIONS)  # every runtime runs all `export` writes
MEASURE_PER_PRECISION = 4  # `--measure`: configurations exported and benched per precision
MEASURE_RUNS, MEASURE_WARMUP = 20, 3
SOURCE_RANK = {"measured": 3, "predicted": 2, "derived": 1, "estimated": 0, "estimate from specs": 0}


@dataclass(frozen=True)
class Budgets:
    """The user's budgets; None takes the profile's. Memory applies to the model's footprint unless `process`."""

    memory_bytes: int | None = None
    latency_ms: float | None = None
    memory_scope: MemoryScope | None = None

    def __post_init__(self) -> None:  # 0 or NaN would read as "no budget" and let anything through
        if self.memory_bytes is not None:
            budget_bytes(self.memory_bytes, f"{self.memory_bytes}B")
        if self.latency_ms is not None:
            checked_budget(self.latency_ms, "latency budget", f"{self.latency_ms} ms")


class ResolvedBudgets(BaseModel):
    """The budgets in force (the user's, else the profile's), each with where it comes from; None is no budget."""

    model_config = ConfigDict(frozen=True)

    memory_bytes: int | None
    memory_from: str | None  # "--memory-budget" or "profile"
    memory_scope: MemoryScope
    latency_ms: float | None
    latency_from: str | None  # "--latency-budget" or "profile"
    latency_statistic: str = BUDGET_PERCENTILE

    @property
    def counts_baseline(self) -> bool:
        """The runtime's baseline is part of the memory budgeted (the budget is the whole process's)."""
        return self.memory_scope == "process"

    @property
    def memory_label(self) -> str:
        """What the memory figure is called: "model footprint", or "process total"."""
        return MEMORY_SCOPE_LABELS[self.memory_scope]

    def limits(self) -> list[str]:
        """Each budget as the limit it sets, with where it comes from; ["no budgets"] without any."""
        limits = []
        if self.memory_bytes is not None:
            limits.append(f"{self.memory_label} <= {self.memory_bytes / 1e6:g} MB ({self.memory_from})")
        if self.latency_ms is not None:
            limits.append(f"latency {self.latency_statistic} <= {self.latency_ms:g} ms ({self.latency_from})")
        return limits or ["no budgets"]


class Candidate(BaseModel):
    """One (width, depth, precision) with its costs, each labelled with what is behind it."""

    width: float
    depth: float
    precision: str
    format: str
    parameters: int
    encoder_flops_seq128: int
    size_bytes: int
    size_source: str  # "estimated" or "exported"
    footprint_bytes: int  # what loading and running the model adds to the runtime's process
    footprint_source: str  # "measured", "predicted" or "estimated"
    baseline_bytes: int  # the runtime's process before the model loads
    baseline_source: str  # "measured" or "estimated"
    memory_bytes: int  # the figure the memory budget applies to: the footprint, or footprint + baseline
    memory_source: str
    latency_ms: float
    latency_source: str  # "measured", "predicted", "derived" or "estimate from specs"
    threads: int  # the thread count `latency_ms` is for: `profiles.faster_threads` of `latency_by_threads`
    latency_by_threads: dict[int, float]  # each count's latency (measured, else its own count's model)
    accuracy: float | None = None
    vocabulary: int | None = None  # a pruned variant's kept tokens (`--vocab-from`); None: the model's vocabulary
    embeddings: str | None = None  # the word-embedding storage (`--embeddings`, int8 rows); None: the precision's
    unknown_rate: float | None = None  # a pruned variant's: the share of the accuracy file's tokens it makes [UNK]
    fits_memory: bool = True
    fits_latency: bool = True
    pareto: bool = False

    @computed_field  # type: ignore[prop-decorator]
    @property
    def fits(self) -> bool:
        return self.fits_memory and self.fits_latency

    @property
    def precision_label(self) -> str:
        """'int8', or 'int8/int4-emb' with `--embeddings int4`."""
        return self.precision + (f"/{self.embeddings}-emb" if self.embeddings else "")

    @property
    def name(self) -> str:
        pruned = f" vocabulary {self.vocabulary:,}" if self.vocabulary is not None else ""
        return f"width {self.width:g} depth {self.depth:g} {self.precision_label}{pruned}"

    @property
    def config(self) -> tuple[float, float, str, int | None]:
        """What tells candidates apart: (width, depth, precision, kept vocabulary)."""
        return self.width, self.depth, self.precision, self.vocabulary

    def set_footprint(self, footprint: int, source: str, budgets: ResolvedBudgets) -> None:
        """The memory the budget sees follows the footprint, with the baseline when the budget is the process's."""
        self.footprint_bytes, self.footprint_source = footprint, source
        if budgets.counts_baseline:
            self.memory_bytes = footprint + self.baseline_bytes
            self.memory_source = min(source, self.baseline_source, key=SOURCE_RANK.__getitem__)
        else:
            self.memory_bytes, self.memory_source = footprint, source


class AccuracySource(BaseModel):
    """Where the accuracies come from: the cached eval results on one data file, and why that file."""

    metric: str
    data: str
    data_sha256: str
    columns: list[str]
    max_length: int
    examples: int
    chosen_by: str  # "--data" or "most configurations covered"
    covered: int  # candidates with a result in it
    candidates: int


class LatencyFit(BaseModel):
    """The latency model behind the predictions: a curve per (runtime, precision), and how well it held out."""

    curves: dict[str, dict[str, Any]]
    leave_one_out: dict[str, Any] | None  # `latency_model.leave_one_out`, with two measurements or more


class ExportedChoice(BaseModel):
    """The artifact `pick --export` wrote for the choice, as its sidecar records it."""

    path: str
    bundle: str
    size_bytes: int
    parity: dict[str, Any] | None


class ServingWay(BaseModel):
    """One measured way to serve independent requests on the profile's cores: `sessions` sessions at once, each of
    `threads` threads, running batches of `batch`; what it gave."""

    sessions: int
    threads: int
    batch: int
    sequences_per_s: float
    latency_ms: float  # BUDGET_PERCENTILE per call: of a whole batch; of each session's under the others' load

    @property
    def label(self) -> str:
        """'2 single-thread sessions', 'one 2-thread session, batch 8'."""
        way = f"{self.sessions} single-thread sessions" if self.sessions > 1 else f"one {self.threads}-thread session"
        return way + (f", batch {self.batch}" if self.batch > 1 else "")


class ThroughputAdvice(BaseModel):
    """For throughput of independent requests on the profile's cores: one configuration's measured ways, cheapest
    first (one session, larger batches, more sessions), and the one to run (`throughput_advice`)."""

    width: float
    depth: float
    precision: str
    of_choice: bool  # the choice's configuration; else the measured one nearest the choice's latency
    ways: list[ServingWay]
    best: ServingWay


class PickReport(BaseModel):
    """What `pick` decided, under which settings and budgets, from which candidates, and in one sentence why."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    model: str
    model_sha256: str
    profile: str
    runtime: str
    format: str
    batch_size: int
    seq_len: int
    thread_counts: list[int]  # the counts each candidate's latency is known at (measured, or the profile's alone)
    budgets: ResolvedBudgets
    accuracy: AccuracySource | None  # None: ranked by encoder FLOPs
    vocabulary: VocabularyRecord | None  # what `--vocab-from` keeps (its candidates' `vocabulary`); None: not given
    latency_model: LatencyFit
    memory_model: dict[str, Any]
    throughput: ThroughputAdvice | None  # None: no configuration measured two ways on the profile's cores
    candidates: list[Candidate]
    choice: Candidate | None  # one of `candidates`
    fits: bool  # a choice, and it fits (with an export: the artifact written)
    verdict: str
    notes: list[NoteText]
    warnings: list[str]
    export: ExportedChoice | None

    def frontier(self) -> list[Candidate]:
        """The candidates on the Pareto frontier, fastest first: what a table or a plot shows."""
        return sorted((row for row in self.candidates if row.pareto), key=lambda row: row.latency_ms)

    def is_choice(self, row: Candidate) -> bool:
        return self.choice is not None and row.config == self.choice.config


def accuracy_lookup(
    model_key: ModelKey, configs: list[tuple[float, float]], data: Path | None, columns: Columns = GLUE_COLUMNS
) -> tuple[dict[tuple[float, float], float], AccuracySource | None, list[str]]:
    """Cached eval results of this model: {(w, d): metric}, where they come from, and notes on the choice of file.

    With `data`, only that file's results (and with `columns`, only those read through them); without,
    the data file (columns, max length) covering most configurations, named in the notes next to the
    others the cache holds.
    """
    from edgebert.evaluate import cached_results, primary_metric
    from edgebert.reading import file_sha256

    groups: dict[tuple[str, tuple[str, ...], int], list] = {}
    for result in cached_results(model_key):
        key = result.key
        if (columns.text is None or key.columns[:-1] == columns.text) and (
            columns.label is None or key.columns[-1:] == (columns.label,)
        ):
            groups.setdefault((key.data_sha256, key.columns, key.max_length), []).append(result)
    if data is not None:
        if not Path(data).is_file():
            raise EdgebertError(f"--data {data}: no such file")
        wanted_sha = file_sha256(Path(data))
        groups = {key: results for key, results in groups.items() if key[0] == wanted_sha}
        if not groups:
            return (
                {},
                None,
                [f"no eval results for this model on {data}: run `edgebert eval MODEL --data {data} --grid`"],
            )
    if not groups:
        return {}, None, []
    wanted = set(configs)
    key, best = max(
        groups.items(), key=lambda item: (len(wanted & {(r.width, r.depth) for r in item[1]}), item[1][0].examples)
    )
    first = best[0]
    scores = {(r.width, r.depth): primary_metric(r.metrics)[1] for r in best}
    source = AccuracySource(
        metric=primary_metric(first.metrics)[0],
        data=first.data,
        data_sha256=first.key.data_sha256,
        columns=list(first.key.columns),
        max_length=first.key.max_length,
        examples=first.examples,
        chosen_by="--data" if data is not None else "most configurations covered",
        covered=len(wanted & set(scores)),
        candidates=len(wanted),
    )
    paths = [results[0].data for results in groups.values()]

    def named(result: Any) -> str:  # one file read through other columns is named with them
        columns = ",".join(result.key.columns)
        return result.data if paths.count(result.data) == 1 else f"{result.data} (columns {columns})"

    others = sorted({named(results[0]) for k, results in groups.items() if k != key})
    notes = []
    if data is None and others:
        notes.append(
            Note(
                f"accuracy from {named(first)}; the cache also holds results on {', '.join(others)}: choose with "
                "--data (and --text-column, --label-column)"
            )
        )
    return scores, source, notes


def measure_locally(
    model: Path,
    profile: Profile,
    configs: list[tuple[float, float, str]],
    work_dir: Path,
    progress: Callable[[str], None],
    embeddings: str | None = None,
) -> list[Measurement]:
    """Export each config (with its parity gate; int8 with `embeddings`) and bench it in a fresh, torch-free
    process."""
    import yaml

    from edgebert.export import export_model

    profile_file = work_dir / "profile.yaml"
    profile_file.write_text(yaml.safe_dump(profile.model_dump()))
    fmt = FORMAT_FOR_RUNTIME[profile.runtime]
    measurements = []
    for index, (width, depth, precision) in enumerate(configs, start=1):
        progress(f"measuring {index}/{len(configs)}: width {width:g} depth {depth:g} {precision}")
        artifact = work_dir / artifact_name(subnet_name(Path(model).name, width, depth), precision, fmt)
        stored = embeddings if precision == EMBEDDINGS_PRECISION else None
        export_model(
            model, fmt, precision, width=width, depth=depth, seq_len=profile.seq_len, out=artifact, embeddings=stored
        )
        command = [sys.executable, "-m", "edgebert", "bench", str(artifact), "--profile", str(profile_file)]
        command += ["--runs", str(MEASURE_RUNS), "--warmup", str(MEASURE_WARMUP), "--min-time", "0", "--json"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise EdgebertError(f"benchmarking {artifact.name} failed: {done.stderr.strip().splitlines()[-1:]}")
        measurements += measurements_from_result(json.loads(done.stdout), artifact.name)
        artifact.unlink()
    return measurements


def spread(configs: list[tuple[float, float]], arch: Architecture, count: int) -> list[tuple[float, float]]:
    """Up to `count` configs evenly spread over the FLOPs range (smallest and largest always included)."""
    ordered = sorted(configs, key=lambda c: costs(arch, subnetwork(arch, *c))["encoder_flops_seq128"])
    if len(ordered) <= count:
        return ordered
    return [ordered[round(i * (len(ordered) - 1) / (count - 1))] for i in range(count)]


def resolve_budgets(budgets: Budgets, profile: Profile) -> ResolvedBudgets:
    """The budgets in force (the user's, else the profile's), with where each comes from."""
    memory, memory_from = _budget(budgets.memory_bytes, "--memory-budget", profile.memory_budget_bytes)
    latency, latency_from = _budget(budgets.latency_ms, "--latency-budget", profile.latency_budget_ms)
    return ResolvedBudgets(
        memory_bytes=memory,
        memory_from=memory_from,
        memory_scope=budgets.memory_scope or profile.memory_budget_scope,
        latency_ms=latency,
        latency_from=latency_from,
    )


def _budget(given: float | None, option: str, profile_value: float | None) -> tuple[Any, str | None]:
    """The user's budget, else the profile's, with where it comes from; None is no budget (0 is never one)."""
    if given is not None:
        return given, option
    return (profile_value, "profile") if profile_value is not None else (None, None)


def pick(
    model: str | Path | None,
    profile: Profile,
    budgets: Budgets = Budgets(),
    measure: bool = False,
    calibration: Sequence[Path] = (),
    candidates: list[tuple[float, float]] | None = None,
    data: Path | None = None,
    export_dir: Path | None = None,
    force: bool = False,
    progress: Callable[[str], None] = lambda message: None,
    columns: Columns = GLUE_COLUMNS,
    vocab_from: Sequence[Path] = (),
    vocab_min_count: int = 1,
    embeddings: str | None = None,
) -> PickReport:
    """Rank every candidate on `profile` and choose one; see the module docstring for the rules.

    The stages: measurements (calibration files, `--measure`), the models fitted to them, accuracy
    from the eval cache (measured for pruned variants), candidates with their costs, budgets and
    frontier, the choice, and the export, after which the written artifact is checked against the
    budgets again. `vocab_from`, `vocab_min_count`: pruned variants, as `slice_model` takes them. `embeddings`:
    the int8 candidates store their word embeddings so (`export --embeddings`): sized, measured and exported so.
    """
    from edgebert.demo import UNTRAINED_NOTE
    from edgebert.slicing import not_dynabert_note, open_checkpoint
    from edgebert.vocab import choose_vocabulary, vocabulary_sources

    configs = list(dict.fromkeys(candidates or TRAINED_GRID))  # a pair given twice is one candidate
    if embeddings is not None and embeddings not in EMBEDDINGS:
        raise EdgebertError(f"unknown --embeddings {embeddings!r}: choose one of {', '.join(EMBEDDINGS)}")
    texts = vocabulary_sources(vocab_from, vocab_min_count)  # an empty or unreadable file fails before the load
    if measure and not profile.is_local:
        raise EdgebertError(
            f"--measure benchmarks on this machine, which is not {profile.name}: use --profile local, or pass "
            f"--calibration files from `edgebert bench --profile {profile.name} --out FILE` run on the device"
        )
    if measure or export_dir is not None:  # what exporting needs, looked up before the model loads (torch: seconds)
        from edgebert.configs import READING_MODULES
        from edgebert.export import EXPORTERS

        modules = (*READING_MODULES, *EXPORTERS[FORMAT_FOR_RUNTIME[profile.runtime]].required_modules)
        require_installed(modules, "pick --measure" if measure else "pick --export")
    limits = resolve_budgets(budgets, profile)
    measurements = load_calibration(list(calibration), profile)
    progress("loading the model")
    checkpoint = open_checkpoint(model)
    vocabulary = choose_vocabulary(checkpoint, texts, vocab_min_count) if texts else None  # once, for every candidate
    archs: dict[int | None, Architecture] = {None: checkpoint.arch}  # by kept vocabulary (None: the model's)
    if vocabulary is not None:
        archs[vocabulary.record.kept] = vocabulary.architecture(checkpoint.arch)
    precisions = RUNTIME_PRECISIONS[profile.runtime]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OffGridWarning)  # one line for them all (below), not one per candidate
        measured = measure_here(checkpoint, profile, configs, precisions, progress, embeddings) if measure else {}
        measurements += [m for by_count in measured.values() for m in by_count.values()]
        latency_models = calibrate_threads(profile, measurements, precisions)
        memory_model = calibrate_memory(profile.runtime, measurements)
        scores, accuracy, notes = accuracy_for(checkpoint, configs, data, columns)
        pruned: dict[tuple[float, float], float] = {}
        unknown_rate = None
        if vocabulary is not None:
            pruned, unknown_rate, note = pruned_accuracy(checkpoint, vocabulary, configs, data, accuracy, progress)
            notes.append(note)

        rows = []
        for (width, depth), (kept, arch) in itertools.product(configs, archs.items()):
            shape, cost = _shape_and_cost(arch, profile, width, depth)
            for precision in precisions:  # a bench result is of the unpruned artifact: the pruned one's is not known
                by_count = measured.get((width, depth, precision), {}) if kept is None else {}
                stored = embeddings if precision == EMBEDDINGS_PRECISION else None
                words = arch.vocab_size * arch.embedding_width
                row = _candidate(
                    profile, latency_models, memory_model, shape, cost, precision, by_count, limits, (words, stored)
                )
                row.accuracy = (scores if kept is None else pruned).get((width, depth))
                row.vocabulary, row.unknown_rate = kept, None if kept is None else unknown_rate
                rows.append(row)
    apply_budgets(rows, limits)
    choice = choose(rows, by_accuracy=accuracy is not None)
    tied = {row.accuracy for row in rows}
    if accuracy is not None and len(tied) == 1:
        notes.append(tied_note(accuracy.metric, tied.pop()))
    loo = leave_one_out(profile, measurements) if len(measurements) > 1 else None
    cautions = [caution for caution in [leave_one_out_warning(loo), off_grid_warning(configs)] if caution]
    advice = throughput_advice(profile, measurements, choice)
    notes += [note for note in [threads_note(profile, list(latency_models), advice)] if note]
    if checkpoint.is_demo:
        notes.append(UNTRAINED_NOTE)
    elif not checkpoint.trained_as_dynabert:
        cautions.append(not_dynabert_note(checkpoint))
    exported = None
    if choice is not None and export_dir is not None:
        progress(f"exporting {choice.name}")
        keeps = vocabulary if choice.vocabulary is not None else None
        exported = export_choice(checkpoint, choice, profile, export_dir, force, keeps)
        recheck_exported(choice, checkpoint.arch, profile, memory_model, limits)
    return PickReport(
        model=str(checkpoint.path),
        model_sha256=checkpoint.weights_sha256,
        profile=profile.name,
        runtime=profile.runtime,
        format=FORMAT_FOR_RUNTIME[profile.runtime],
        batch_size=profile.batch_size,
        seq_len=profile.seq_len,
        thread_counts=list(latency_models),
        budgets=limits,
        accuracy=accuracy,
        vocabulary=vocabulary.record if vocabulary is not None else None,
        latency_model=LatencyFit(
            curves={key: curve for model in latency_models.values() for key, curve in model.describe().items()},
            leave_one_out=loo,
        ),
        memory_model=memory_model.describe(),
        throughput=advice,
        candidates=rows,
        choice=choice,
        fits=choice is not None and choice.fits,
        verdict=verdict(rows, choice, limits, exported is not None),
        notes=notes,
        warnings=cautions,
        export=exported,
    )


def threads_note(profile: Profile, counts: list[int], advice: ThroughputAdvice | None = None) -> Note | None:
    """Which thread counts the latencies compare, the rule between them, and for throughput what was measured and
    which way serves the most (`advice`), or what was not measured; None when the profile runs one thread."""
    if profile.threads == 1:
        return None
    if len(counts) == 1:
        missing = " or ".join(str(count) for count in profile.thread_counts if count not in counts)
        return Note(
            f"latencies at {threads_label(counts[0])} only: nothing measured at {missing} to compare it with "
            "(`edgebert bench` times both; give its results with --calibration, or use --measure)"
        )
    most = max(counts)
    latency = (
        f"t: each row runs at the faster of {' and '.join(map(str, counts))} threads by its {BUDGET_PERCENTILE}, more "
        f"threads only when they cut it by at least {THREADS_MIN_GAIN:.0%}; for throughput of independent requests on "
        f"{most} cores, "
    )
    batch = f"a batch of {most} is timed by `edgebert bench --batch {most}` (give its result with --calibration)"
    if advice is None:
        runtime = RUNTIMES[profile.runtime]
        why = (
            f"{runtime.name}'s Python call holds the GIL"
            if runtime.holds_gil
            else "no bench result times them: they are from before result_version 4, or from --threads"
        )
        return Note(f"{latency}{most} single-thread sessions at once were not measured ({why}); {batch}")
    config = f"width {advice.width:g} depth {advice.depth:g} {advice.precision}"
    if not advice.of_choice:
        config += ", the measured configuration nearest the choice"
    ways = "; ".join(
        f"{way.label} {way.sequences_per_s:.1f} seq/s ({BUDGET_PERCENTILE} {way.latency_ms:.1f} ms a call)"
        for way in advice.ways
    )
    unbatched = all(way.batch == advice.ways[0].batch for way in advice.ways)
    return Note(
        f"{latency}measured ({config}): {ways}. Run {advice.best.label} (more sessions or a larger batch only for "
        f"{THREADS_MIN_GAIN:.0%} less time per sequence)" + (f"; {batch}" if unbatched else "")
    )


def throughput_advice(
    profile: Profile, measurements: list[Measurement], choice: Candidate | None
) -> ThroughputAdvice | None:
    """The ways each configuration was measured to serve independent requests on the profile's cores, at its length:
    one session with them all (at each batch measured) and as many single-thread sessions at once (bench's parallel
    sessions); for the choice's configuration, else the measured one nearest the choice's latency (without a choice,
    the first). The way to run is the cheapest unless a costlier one cuts the time per sequence by THREADS_MIN_GAIN
    (`profiles.cheapest_unless_beaten`). None when no configuration was measured two ways."""
    if profile.threads == 1:
        return None
    found: dict[tuple[float, float, str], dict[tuple[int, int], ServingWay]] = {}
    for m in measurements:
        if (
            m.runtime != profile.runtime
            or threads_of(m, profile) != profile.threads
            or m.shape.seq_len != profile.seq_len
            or m.sequences_per_s is None
        ):
            continue
        ways = found.setdefault((m.width, m.depth, m.precision), {})  # a later result of the same way replaces it
        ways[(1, m.shape.batch)] = ServingWay(
            sessions=1,
            threads=profile.threads,
            batch=m.shape.batch,
            sequences_per_s=m.sequences_per_s,
            latency_ms=m.latency_ms,
        )
        if m.parallel is not None:
            ways[(m.parallel.sessions, m.shape.batch)] = ServingWay(
                sessions=m.parallel.sessions,
                threads=1,
                batch=m.shape.batch,
                sequences_per_s=m.parallel.throughput["sequences_per_s"],
                latency_ms=m.parallel.latency_ms[BUDGET_PERCENTILE],
            )
    compared = {config: [ways[key] for key in sorted(ways)] for config, ways in found.items() if len(ways) > 1}
    if not compared:
        return None
    configs = list(compared)
    if choice is not None:  # its own, else the nearest in latency (one session, the smallest batch measured)
        own = (choice.width, choice.depth, choice.precision)
        configs.sort(key=lambda c: -1.0 if c == own else abs(math.log(compared[c][0].latency_ms / choice.latency_ms)))
    chosen = configs[0]
    ways = compared[chosen]
    return ThroughputAdvice(
        width=chosen[0],
        depth=chosen[1],
        precision=chosen[2],
        of_choice=choice is not None and chosen == (choice.width, choice.depth, choice.precision),
        ways=ways,
        best=cheapest_unless_beaten([(way, 1 / way.sequences_per_s) for way in ways]),
    )


def off_grid_warning(configs: list[tuple[float, float]]) -> str | None:
    """One line for the candidates DynaBERT was never trained at (computable, accuracy untested)."""
    off_grid = [config for config in configs if config not in TRAINED_GRID]
    if not off_grid:
        return None
    width, depth = off_grid[0]
    return (
        f"{len(off_grid)} of {len(configs)} candidates are off the trained DynaBERT grid (e.g. width {width:g} "
        f"depth {depth:g}): computable, but their accuracy is untested"
    )


def measure_here(
    checkpoint: Checkpoint,
    profile: Profile,
    configs: list[tuple[float, float]],
    precisions: Sequence[str],
    progress: Callable[[str], None],
    embeddings: str | None = None,
) -> dict[tuple[float, float, str], dict[int, Measurement]]:
    """`--measure`: export and bench a spread of the candidates on this machine, by (width, depth, precision),
    then by thread count."""
    chosen = [(w, d, p) for p in precisions for w, d in spread(configs, checkpoint.arch, MEASURE_PER_PRECISION)]
    with tempfile.TemporaryDirectory(prefix="edgebert-pick-") as work_dir:
        local = measure_locally(checkpoint.path, profile, chosen, Path(work_dir), progress, embeddings)
    measured: dict[tuple[float, float, str], dict[int, Measurement]] = {}
    for m in local:
        measured.setdefault((m.width, m.depth, m.precision), {})[threads_of(m, profile)] = m
    return measured


def accuracy_for(
    checkpoint: Checkpoint, configs: list[tuple[float, float]], data: Path | None, columns: Columns = GLUE_COLUMNS
) -> tuple[dict[tuple[float, float], float], AccuracySource | None, list[str]]:
    """Scores from the eval cache when they cover every candidate (else none: ranking by FLOPs), and the notes."""
    from edgebert.evaluate import model_key

    scores, accuracy, notes = accuracy_lookup(model_key(checkpoint), configs, data, columns)
    if accuracy is not None and accuracy.covered < accuracy.candidates:
        notes.append(  # ranking evaluated against unevaluated sub-networks would favour whatever was evaluated
            Note(
                f"eval results cover only {accuracy.covered} of {accuracy.candidates} configurations "
                f"(run `edgebert eval MODEL --data {accuracy.data} --grid`): accuracy not used"
            )
        )
        scores, accuracy = {}, None
    if accuracy is None:
        notes.append(
            warning(
                "accuracy unknown (no complete `edgebert eval` results for this model): ranked by encoder FLOPs, "
                "the largest that fits"
            )
        )
    else:
        notes.append(
            Note(
                f"{accuracy.metric} from the eval cache ({accuracy.data}, {accuracy.examples} examples, "
                f"max length {accuracy.max_length}; file chosen by {accuracy.chosen_by}), measured in fp32; "
                "fp16/int8 artifacts pass a parity gate"
            )
        )
    return scores, accuracy, notes


def pruned_accuracy(
    checkpoint: Checkpoint,
    vocabulary: KeptVocabulary,
    configs: list[tuple[float, float]],
    data: Path | None,
    accuracy: AccuracySource | None,
    progress: Callable[[str], None],
) -> tuple[dict[tuple[float, float], float], float | None, Note]:
    """The pruned variants' scores, measured (and cached) as `eval` measures the others: on the file their
    accuracy comes from, read through the same columns and cut to the same length; the share of that file's tokens
    the pruning drops ([UNK] in their place); and a note saying so. Without an accuracy to rank by there is no
    such file, and the note warns that each pruned variant then wins over its twin on memory alone."""
    from edgebert.data import read_dataset
    from edgebert.evaluate import checkpoint_evaluated, evaluate_sub_networks, primary_metric

    kept = f"--vocab-from keeps {vocabulary.record.kept:,} of {vocabulary.record.original_size:,} tokens"
    if accuracy is None:
        return (
            {},
            None,
            warning(
                f"{kept}, but the pruned candidates' accuracy is not measured (no complete eval results to measure "
                "it beside): at the FLOPs of their unpruned twins, they win on memory alone"
            ),
        )
    dev = read_dataset(data or accuracy.data, Columns(tuple(accuracy.columns[:-1]), accuracy.columns[-1]))
    if dev.sha256 != accuracy.data_sha256:
        raise EdgebertError(
            f"{dev.path} changed since its eval results were cached, so the pruned candidates cannot be measured on "
            f"the same data: run `edgebert eval MODEL --data {dev.path} --grid` again"
        )
    progress("measuring the pruned candidates' accuracy")
    evaluated = checkpoint_evaluated(checkpoint, vocabulary)
    results = evaluate_sub_networks(evaluated, dev, configs, max_length=accuracy.max_length)
    rate = vocabulary.unknown_rate(dev, checkpoint.path)
    note = Note(
        f"{kept}; the pruned candidates' {accuracy.metric} is measured on {dev.path} like the others': {rate:.1%} "
        "of its tokens are dropped and read as [UNK]"
    )
    return {(r["width"], r["depth"]): primary_metric(r["metrics"])[1] for r in results}, rate, note


def recheck_exported(
    choice: Candidate, arch: Architecture, profile: Profile, memory_model: MemoryModel, limits: ResolvedBudgets
) -> None:
    """The written artifact's real size replaces the estimate; the budgets are checked again on it."""
    if choice.size_source == "exported" and choice.footprint_source != "measured":
        shape, _ = _shape_and_cost(arch, profile, choice.width, choice.depth)
        footprint, source = memory_model.footprint(profile.runtime, choice.precision, shape, choice.size_bytes)
        choice.set_footprint(footprint, source, limits)
    apply_budgets([choice], limits)


def _shape_and_cost(arch: Architecture, profile: Profile, width: float, depth: float) -> tuple[Shape, dict[str, Any]]:
    sub = subnetwork(arch, width, depth)
    return Shape.of(arch, sub, profile.batch_size, profile.seq_len), costs(arch, sub)


def _candidate(
    profile: Profile,
    latency_models: dict[int, LatencyModel],
    memory_model: MemoryModel,
    shape: Shape,
    cost: dict[str, Any],
    precision: str,
    measured: dict[int, Measurement],
    limits: ResolvedBudgets,
    embeddings: tuple[int, str | None] = (0, None),
) -> Candidate:
    """One candidate's costs: its own measurements (`measured`, by thread count) where it has them, else the models';
    its latency at the faster thread count. `embeddings`: the word-embedding table's weights and their storage (None:
    the precision's); the latency model is the precision's."""
    measurement = next(iter(measured.values()), None)
    words, stored = embeddings
    size = measurement.size_bytes if measurement else estimated_size_bytes(cost["parameters"], precision, words, stored)
    with_memory = next((m for m in measured.values() if m.footprint_bytes is not None), None)
    if with_memory is not None:
        footprint, footprint_source = with_memory.footprint_bytes, "measured"
    else:
        footprint, footprint_source = memory_model.footprint(profile.runtime, precision, shape, size)
    latencies: dict[int, tuple[float, str]] = {}
    for count, model in latency_models.items():
        at = measured.get(count)
        latencies[count] = (
            (at.latency_ms, "measured") if at else (model.predict(shape, precision), model.curve(precision).label)
        )
    threads = faster_threads({count: latency for count, (latency, _) in latencies.items()})
    latency, latency_source = latencies[threads]
    row = Candidate(
        width=cost["width"],
        depth=cost["depth"],
        precision=precision,
        format=FORMAT_FOR_RUNTIME[profile.runtime],
        parameters=cost["parameters"],
        encoder_flops_seq128=cost["encoder_flops_seq128"],
        size_bytes=size,
        size_source="exported" if measurement else "estimated",
        footprint_bytes=0,
        footprint_source="estimated",
        baseline_bytes=memory_model.baseline_bytes,
        baseline_source=memory_model.baseline_source,
        memory_bytes=0,
        memory_source="estimated",
        latency_ms=latency,
        latency_source=latency_source,
        threads=threads,
        latency_by_threads={count: latency for count, (latency, _) in latencies.items()},
        embeddings=stored,
    )
    row.set_footprint(footprint, footprint_source, limits)
    return row


def apply_budgets(rows: list[Candidate], limits: ResolvedBudgets) -> None:
    for row in rows:
        row.fits_memory = limits.memory_bytes is None or row.memory_bytes <= limits.memory_bytes
        row.fits_latency = limits.latency_ms is None or row.latency_ms <= limits.latency_ms


def _quality(row: Candidate, by_accuracy: bool) -> float:
    """What the user trades for speed and memory: accuracy when known (unevaluated last), else encoder FLOPs."""
    if by_accuracy:
        return row.accuracy if row.accuracy is not None else -1.0
    return float(row.encoder_flops_seq128)


def rank(row: Candidate, by_accuracy: bool) -> tuple:
    """THE order of candidates, best first: quality, then the cheaper (less memory, then less latency, then fewer
    FLOPs). A candidate that dominates another comes before it, so the frontier and the choice share it."""
    return (-_quality(row, by_accuracy), row.memory_bytes, row.latency_ms, row.encoder_flops_seq128)


def choose(rows: list[Candidate], by_accuracy: bool) -> Candidate | None:
    """Mark the frontier; the choice is the first candidate in `rank` order that fits and is on it, or None.

    The first that fits is always on the frontier (what dominates it is no larger and no slower, so fits too):
    asking for both makes a choice the printed frontier does not show impossible, not just unlikely.
    """
    ranked = mark_pareto(rows, by_accuracy)
    return next((row for row in ranked if row.fits and row.pareto), None)


def tied_note(metric: str, value: float) -> Note:
    """Identical accuracies rank nothing: the choice falls to cost, and the user should know why."""
    return Note(f"all candidates have the same {metric} ({value:.4f}): choosing the cheapest that fits")


def mark_pareto(rows: list[Candidate], by_accuracy: bool) -> list[Candidate]:
    """On the frontier: no other candidate is at least as good in quality, latency and memory, and better in one.

    Returns the rows in `rank` order. n log n, not n x n (a user's --candidates may be thousands): in that order
    (best quality first, then least memory, then least latency), whatever dominates a row comes before it; one
    sweep keeps the least latency seen at each memory or below (a Fenwick tree of prefix minima). Equal rows do
    not dominate each other.
    """
    ranked = sorted(rows, key=lambda row: rank(row, by_accuracy))
    memory_rank = {memory: index for index, memory in enumerate(sorted({row.memory_bytes for row in rows}), start=1)}
    least = [math.inf] * (len(memory_rank) + 1)  # least[i]: least latency over a range of memory ranks ending at i
    for _, group in itertools.groupby(ranked, key=lambda row: rank(row, by_accuracy)[:3]):
        group = list(group)
        memory, latency = group[0].memory_bytes, group[0].latency_ms
        index, seen = memory_rank[memory], math.inf
        while index:
            seen, index = min(seen, least[index]), index & (index - 1)
        for row in group:
            row.pareto = seen > latency
        index = memory_rank[memory]
        while index < len(least):
            least[index], index = min(least[index], latency), index + (index & -index)
    return ranked


def verdict(rows: list[Candidate], choice: Candidate | None, limits: ResolvedBudgets, exported: bool) -> str:
    """One sentence about the decision; with an export, about the artifact written."""
    if choice is None:
        smallest = min(rows, key=lambda r: r.memory_bytes)
        fastest = min(rows, key=lambda r: r.latency_ms)
        return (
            f"nothing fits: the smallest memory achievable is {smallest.memory_bytes / 1e6:.1f} MB "
            f"({smallest.name}, {smallest.memory_source}) and the lowest latency {fastest.latency_ms:.1f} ms "
            f"({fastest.name}, {fastest.latency_source})"
        )
    memory = f"{choice.memory_bytes / 1e6:.1f} MB {limits.memory_label} ({choice.memory_source})"
    latency = (
        f"{choice.latency_ms:.1f} ms {limits.latency_statistic} ({choice.latency_source}) at {threads_text(choice)}"
    )
    if not choice.fits:
        over = [
            f"memory {memory} > {limits.memory_bytes / 1e6:g} MB" if not choice.fits_memory else "",
            f"latency {latency} > {limits.latency_ms:g} ms" if not choice.fits_latency else "",
        ]
        return f"the exported {choice.name} does not fit after all: {'; '.join(o for o in over if o)}"
    return f"{'exported' if exported else 'ship'} {choice.name}: {memory}, {latency}"


def threads_text(row: Candidate) -> str:
    """'1 thread (2 threads: 1.9 ms)': the count a row runs at, and its latency at the counts it was compared with."""
    others = [
        f"{threads_label(count)}: {ms:.1f} ms" for count, ms in row.latency_by_threads.items() if count != row.threads
    ]
    return threads_label(row.threads) + (f" ({'; '.join(others)})" if others else "")


def threads_label(count: int) -> str:
    return f"{count} thread{'s' * (count > 1)}"


def export_choice(
    checkpoint: Checkpoint,
    choice: Candidate,
    profile: Profile,
    export_dir: Path,
    force: bool = False,
    vocabulary: KeptVocabulary | None = None,
) -> ExportedChoice:
    """Write the chosen artifact (with its parity gate) into a bundle, as `export` does; it sizes the choice.

    A pruned choice (`vocabulary`: what it keeps) is exported from a slice keeping it, its tokenizer remapped,
    written to a scratch folder first, into a bundle of its own name (`<model>-w<W>-d<D>-vocab<N>`). With `force`,
    a bundle's precision edgebert wrote there earlier is replaced, as `export --force`.
    """
    from edgebert.bundle import default_bundle_name
    from edgebert.export import export_model
    from edgebert.slicing import slice_checkpoint, write_slice
    from edgebert.st_modules import sentence_transformers_files

    export_dir.mkdir(parents=True, exist_ok=True)
    name = subnet_name(checkpoint.path.resolve().name, choice.width, choice.depth)
    if vocabulary is not None:
        name += f"-vocab{vocabulary.record.kept}"
    out = export_dir / default_bundle_name(name, choice.format)
    with tempfile.TemporaryDirectory(prefix="edgebert-pick-") as work_dir:
        source: Path = checkpoint.path
        cut: dict[str, float] = {"width": choice.width, "depth": choice.depth}
        if vocabulary is not None:
            source, cut = Path(work_dir) / name, {}
            sliced = slice_checkpoint(checkpoint, choice.width, choice.depth, vocabulary=vocabulary)
            write_slice(checkpoint, sliced, source, sentence_transformers_files(checkpoint.path), vocabulary)
        sidecar = export_model(
            source,
            choice.format,
            choice.precision,
            seq_len=profile.seq_len,
            out=out,
            force=force,
            embeddings=choice.embeddings,
            **cut,
        )
    choice.size_bytes, choice.size_source = sidecar["size_bytes"], "exported"
    return ExportedChoice.model_validate(sidecar)  # the fields it records, of all the sidecar holds
