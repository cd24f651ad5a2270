"""Hostile `pick`: the plot follows the output rule, budgets are positive and finite, thousands of candidates."""

from __future__ import annotations

import json
import random
import signal
import time
from types import SimpleNamespace

import pytest

from edgebert.errors import EdgebertError
from edgebert.pick import Budgets, PickReport, mark_pareto

PICK = ["pick", "--profile", "raspberry-pi-4", "--candidates", "0.25:0.5"]


def one_error(result, code: int = 1) -> str:
    """The single `error:` line of a refused command (and no traceback); 2 when an option's value was refused."""
    assert result.code == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_plot_replaces_only_its_own_png_and_refuses_before_the_slow_work(run_cli, tmp_path, monkeypatch):
    from PIL import Image

    mine, data = tmp_path / "mine.png", tmp_path / "data.csv"
    mine.write_bytes(b"\x89PNG\r\n\x1a\n the user's picture")
    data.write_text("a,b\n1,2\n")
    (tmp_path / "link.png").symlink_to(data)

    def slow_work(*args, **kwargs):
        raise AssertionError("pick ran before the plot was refused")

    with monkeypatch.context() as patched:
        patched.setattr("edgebert.pick.pick", slow_work)
        assert "already exists: pass --force" in one_error(run_cli(*PICK, "--plot", mine))
        assert "not a plot edgebert wrote" in one_error(run_cli(*PICK, "--plot", mine, "--force"))
        assert "not a plot edgebert wrote" in one_error(run_cli(*PICK, "--plot", data, "--force"))
        assert "symbolic link" in one_error(run_cli(*PICK, "--plot", tmp_path / "link.png", "--force"))
    assert mine.read_bytes() == b"\x89PNG\r\n\x1a\n the user's picture"
    assert data.read_text() == "a,b\n1,2\n"

    plot = tmp_path / "pareto.png"
    result = run_cli(*PICK, "--plot", plot, "--json")
    assert result.code == 0, result.stderr
    assert Image.open(plot).text["Software"].startswith("edgebert ")  # how --force recognises it, read by PIL
    first = plot.stat().st_ino
    same_again = PickReport.model_validate_json(result.stdout)
    monkeypatch.setattr("edgebert.pick.pick", lambda *args, **kwargs: same_again)
    assert "already exists" in one_error(run_cli(*PICK, "--plot", plot))
    assert run_cli(*PICK, "--plot", plot, "--force").code == 0
    assert plot.stat().st_ino != first  # a new file put in place by a rename, not the old one rewritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv", "link.png", "mine.png", "pareto.png"]


@pytest.mark.parametrize(
    ("option", "value", "problem"),
    [
        ("--memory-budget", "0.0000000001B", "is less than one byte"),  # rounded to 0, it meant "no budget"
        ("--memory-budget", "0MB", "must be more than zero"),
        ("--memory-budget", "9" * 400 + "MB", "is not a finite number"),
        ("--latency-budget", "9" * 400 + "ms", "is not a finite number"),
        ("--latency-budget", "0." + "0" * 400 + "1ms", "must be more than zero"),
    ],
)
def test_budgets_that_disable_or_overflow_are_refused(run_cli, option, value, problem):
    assert problem in one_error(run_cli(*PICK, option, value), code=2)


def test_library_budgets_are_positive_and_finite():
    for budgets in ({"memory_bytes": 0}, {"latency_ms": 0.0}, {"latency_ms": float("nan")}, {"memory_bytes": 10**400}):
        with pytest.raises(EdgebertError):
            Budgets(**budgets)


@pytest.mark.parametrize(
    ("fact", "problem"),
    [
        ("memory_budget_mb: 1.0e+308", "memory_budget_mb: value error, memory budget 1e+308 MB is not a finite"),
        ("memory_budget_mb: 1.0e-12", "memory_budget_mb: value error, memory budget 1e-12 MB is less than one byte"),
        ("latency_budget_ms: " + "1" * 400 + "s", "latency_budget_ms: value error, latency budget '111"),
        ("padding_share: .nan", "padding_share: input should be a finite number"),
    ],
)
def test_profile_numbers_that_overflow_are_refused_by_name(run_cli, tmp_path, fact, problem):
    profile = tmp_path / "huge.yaml"
    profile.write_text(f"name: huge\ndescription: d\nruntime: onnxruntime\nthreads: 1\nhardware: detect\n{fact}\n")
    assert problem in one_error(run_cli("profiles", "validate", profile))
    assert problem in one_error(run_cli("pick", "--profile", profile, "--candidates", "0.25:0.5"))


def test_hardware_rates_the_estimate_divides_by_are_bounded(run_cli, tmp_path):
    profile = tmp_path / "slow.yaml"
    profile.write_text("name: s\ndescription: d\nruntime: onnxruntime\nthreads: 1\n")
    with profile.open("a") as file:
        file.write("hardware: {cpu: c, cores: 1, peak_gflops_fp32: 5.0e-324}\n")  # 1000 / peak: division by zero
    error = one_error(run_cli("pick", "--profile", profile, "--candidates", "0.25:0.5"))
    assert "hardware.peak_gflops_fp32: input should be greater than or equal to 0.001" in error


def dominated(rows: list, row) -> bool:
    """The definition: another row at least as good in quality, latency and memory, and better in one."""
    mine = (row.encoder_flops_seq128, -row.latency_ms, -row.memory_bytes)
    for other in rows:
        theirs = (other.encoder_flops_seq128, -other.latency_ms, -other.memory_bytes)
        if theirs != mine and all(a >= b for a, b in zip(theirs, mine, strict=True)):
            return True
    return False


def rows_of(count: int, spread: int, seed: int) -> list:
    rng = random.Random(seed)
    return [
        SimpleNamespace(
            accuracy=None,
            encoder_flops_seq128=rng.randint(0, spread),
            latency_ms=float(rng.randint(0, spread)),
            memory_bytes=rng.randint(0, spread),
            pareto=None,
        )
        for _ in range(count)
    ]


def test_frontier_is_the_definition_with_ties():
    for seed in range(300):
        rows = rows_of(random.Random(seed).randint(0, 25), spread=seed % 4 + 1, seed=seed)  # small spreads: ties
        mark_pareto(rows, by_accuracy=False)
        assert [row.pareto for row in rows] == [not dominated(rows, row) for row in rows], seed


def test_frontier_of_many_candidates_is_not_quadratic():
    """30,000 rows (10,000 pairs x 3 precisions): seconds at most; comparing every pair took minutes."""
    rows = rows_of(30_000, spread=10**9, seed=1)

    def too_slow(*_):
        raise TimeoutError("mark_pareto took over 20 s")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(20)
    try:
        started = time.perf_counter()
        mark_pareto(rows, by_accuracy=False)
        elapsed = time.perf_counter() - started
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert elapsed < 20 and any(row.pareto for row in rows)


def test_duplicate_candidates_are_one_and_off_grid_is_one_line(run_cli):
    candidates = "0.3:0.5,0.30:0.5,0.4:0.5,0.3:0.5"
    result = run_cli("pick", "--profile", "raspberry-pi-4", "--candidates", candidates, "--json")
    assert result.code in (0, 3), result.stderr
    report = json.loads(result.stdout)
    assert sorted({(row["width"], row["depth"]) for row in report["candidates"]}) == [(0.3, 0.5), (0.4, 0.5)]
    assert len(report["candidates"]) == 2 * 3  # one row per pair and precision
    assert [w for w in report["warnings"] if "off the trained" in w] == [
        "2 of 2 candidates are off the trained DynaBERT grid (e.g. width 0.3 depth 0.5): computable, but their "
        "accuracy is untested"
    ]
    assert "off the trained" not in result.stderr
