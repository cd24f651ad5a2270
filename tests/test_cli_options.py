"""Shared CLI options: help texts name what the registries hold; notes print by the kind they were made with."""

from __future__ import annotations

import json
import re

import pytest

from edgebert.cli.output import console, print_notes, show
from edgebert.export import PRECISIONS
from edgebert.notes import Note, warning
from edgebert.profiles import shipped_dir
from edgebert.runtimes import FORMATS, SUFFIXES

TRAIN = ["train", ".", "--train", "t.tsv", "--dev", "d.tsv", "--out", "out"]
SHIPPED = sorted(path.stem for path in shipped_dir().glob("*.yaml"))


def help_text(run_cli, *command: str) -> str:
    """`--help` as one line of words: rich wraps and frames it."""
    result = run_cli(*command, "--help")
    assert result.code == 0, result.stderr
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.stdout).split())


@pytest.mark.parametrize("name", FORMATS)
def test_export_help_names_every_format(run_cli, name):
    assert re.search(rf"--format <str> [^-]*\b{name}\b", help_text(run_cli, "export"))


@pytest.mark.parametrize("name", PRECISIONS)
def test_export_help_names_every_precision(run_cli, name):
    assert re.search(rf"--precision <str> [^-]*\b{name}\b", help_text(run_cli, "export"))


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_bench_help_names_every_artifact_suffix(run_cli, suffix):
    described = re.search(r"An exported (.*?) file", help_text(run_cli, "bench")).group(1)
    assert suffix in described.replace(",", "").split()


@pytest.mark.parametrize("command", [("bench",), ("pick",), ("profiles", "show")])
@pytest.mark.parametrize("name", SHIPPED)
def test_profile_help_names_every_shipped_profile(run_cli, command, name):
    assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", help_text(run_cli, *command))


def test_notes_print_by_kind_not_by_their_words(capsys):
    print_notes(
        Note("accuracy unknown: ranked by FLOPs (model /data/untrained-runs/m)"),
        "a plain string is informational",
        None,
        warning("weights are random"),
    )
    out, err = capsys.readouterr()
    assert err == "warning: weights are random\n"
    assert out.splitlines() == [
        "accuracy unknown: ranked by FLOPs (model /data/untrained-runs/m)",
        "a plain string is informational",
    ]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["pick", "--memory-scope", "device"], "unknown --memory-scope 'device': choose model or process"),
        (["rewire", ".", "--data", "x.tsv", "--importance", "mean"], "choose official or per-batch"),
        ([*TRAIN, "--mixed-precision", "fp8"], "no, fp16 or bf16"),
        ([*TRAIN, "--depth-teacher", "x"], "full-width or same-width"),
    ],
)
def test_a_bad_choice_names_the_allowed_values(run_cli, command, expected):
    """Before anything is read: the allowed values come from the library's types, not a copy in the CLI."""
    result = run_cli(*command)
    assert result.code == 2 and result.stderr.startswith("error: unknown ") and expected in result.stderr  # usage
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("slice", "[default: <model>-w<W>-d<D>]"),
        ("export", "[default: 128]"),
        ("pick", "[default: the trained grid]"),
        ("train", "[default: 0 BERT, 0.06 RoBERTa]"),
        ("rewire", "[default: <model>-rewired]"),
    ],
)
def test_help_shows_documented_defaults(run_cli, command, shown):
    """Rich reads bare brackets as markup and drops them: `Output directory .` said nothing of the default."""
    assert shown in help_text(run_cli, command)


def test_every_format_the_cli_offers_has_an_exporter():
    """One list of formats (the runtime registry's): `export` has an exporter for each, and for nothing else."""
    from edgebert.export import EXPORTERS

    assert tuple(EXPORTERS) == FORMATS


def test_a_typed_result_keeps_the_kind_of_its_notes():
    """pydantic's `str` would make a warning plain text, and it would print as information."""
    from pydantic import BaseModel

    from edgebert.notes import NoteText, is_warning

    class Result(BaseModel):
        notes: list[NoteText]

    kept = Result(notes=[warning("weights are random"), Note("ranked by FLOPs")]).notes
    assert [is_warning(note) for note in kept] == [True, False]
    assert Result.model_validate_json('{"notes": ["read back"]}').notes == ["read back"]


def budgets_in_force():
    from edgebert.pick import ResolvedBudgets

    return ResolvedBudgets(
        memory_bytes=60_000_000, memory_from="profile", memory_scope="process", latency_ms=None, latency_from=None
    )


def test_show_with_json_prints_exactly_the_json_of_the_result(capsys):
    """A typed result is serialised at the edge: stdout holds its JSON and nothing else; nothing is rendered."""
    rendered = []
    show(budgets_in_force(), True, rendered.append)
    out, err = capsys.readouterr()
    assert out == json.dumps(budgets_in_force().model_dump(mode="json"), indent=2) + "\n"
    assert json.loads(out) == {
        "memory_bytes": 60_000_000,
        "memory_from": "profile",
        "memory_scope": "process",
        "latency_ms": None,
        "latency_from": None,
        "latency_statistic": "p95",
    }
    assert rendered == [] and err == ""


def test_show_without_json_prints_only_the_rendering(capsys):
    show(budgets_in_force(), False, lambda budgets: console.print(f"budgets: {'; '.join(budgets.limits())}"))
    out, err = capsys.readouterr()
    assert out == "budgets: process total <= 60 MB (profile)\n" and err == ""


def test_show_serialises_a_list_of_typed_results(run_cli):
    """`profiles list --json`: each profile as its JSON, in a list; without --json, a table and no JSON."""
    from edgebert.profiles import load_shipped

    listed = run_cli("profiles", "list", "--json")
    assert listed.code == 0 and json.loads(listed.stdout) == [p.model_dump(mode="json") for p in load_shipped()]
    table = run_cli("profiles", "list")
    assert table.code == 0 and "raspberry-pi-4" in table.stdout
    assert not table.stdout.lstrip().startswith(("[", "{")) and '"name"' not in table.stdout
