"""Shared CLI options: help texts name what the registries hold; notes print by the kind they were made with."""

from __future__ import annotations

import re

import pytest

from edgebert.cli.output import print_notes
from edgebert.export import FORMATS, PRECISIONS
from edgebert.notes import Note, warning
from edgebert.profiles import shipped_dir
from edgebert.runtimes import SUFFIXES

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
