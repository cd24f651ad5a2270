"""Threads (issue 23): `bench` times the profile's thread count and one, each in a session of its own, and reports
the faster by one rule; its result's `threads` block is typed and versioned; `pick` runs each candidate at the
faster count it was measured at and says so. No timing is asserted: the choice is checked against the rule applied
to the numbers recorded, or fed known numbers."""

from __future__ import annotations

import json
import re
import weakref
from dataclasses import replace

import pytest
import yaml

from edgebert.bench import RESULT_VERSION, ThreadChoice, bench_artifact
from edgebert.errors import EdgebertError
from edgebert.latency_model import Shape, measurements_from_result
from edgebert.profiles import faster_threads, load_profile
from edgebert.runtimes import SPIN_CONFIG_KEY, open_session

BRIEF = dict(runs=5, warmup=1, min_time_s=0)
SLICE = (0.5, 0.75)  # the labelled classifier's slice benched here: hidden 48, 6 heads of 4, 48 FFN, 9 layers
FULL_SHAPE = Shape(48, 12, 48, 96, 12, 1, 128)  # its full model at batch 1 x 128


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, labelled_classifier):
    from edgebert.export import export_model

    path = tmp_path_factory.mktemp("threads") / "w0.5-d0.75.onnx"
    export_model(labelled_classifier, "onnx", "fp32", width=SLICE[0], depth=SLICE[1], out=path, verify=False)
    return path


@pytest.fixture(scope="module")
def two_threads():
    """This machine with two threads, whatever cores the test may use (the timings are not what is checked)."""
    return load_profile("local").at_threads(2)


@pytest.fixture
def opened(monkeypatch) -> list[tuple[int, dict[str, str]]]:
    """Every session bench opens: its threads and session config; an earlier session still alive fails the test."""
    seen: list[tuple[int, dict[str, str]]] = []
    alive: list[weakref.ref] = []

    def recording(path, options, runtime=None):
        assert all(ref() is None for ref in alive), "a session was still open when the next one opened"
        session = open_session(path, options, runtime)
        seen.append((options.threads, dict(options.session_config)))
        alive.extend([weakref.ref(session), weakref.ref(session.handle)])
        return session

    monkeypatch.setattr("edgebert.bench.open_session", recording)
    return seen


@pytest.fixture(scope="module")
def result(artifact, two_threads):
    return json.loads(json.dumps(bench_artifact(artifact, two_threads, **BRIEF)))


def test_faster_threads_takes_more_only_when_they_cut_the_latency_by_five_percent():
    assert faster_threads({1: 1.90, 2: 1.94}) == 1  # the int8 at batch 1: a second thread gives nothing
    assert faster_threads({2: 0.97, 1: 1.00}) == 1  # 3 % is not worth a core (and is noise)
    assert faster_threads({1: 1.00, 2: 0.95}) == 2
    assert faster_threads({1: 10.0, 2: 5.3, 4: 5.2}) == 2  # 4 threads buy 2 % over 2
    assert faster_threads({4: 3.0}) == 4


def test_bench_times_the_profiles_count_then_one_each_in_a_session_of_its_own(artifact, two_threads, opened):
    result = bench_artifact(artifact, two_threads, **BRIEF)
    assert [threads for threads, _ in opened] == [2, 1]
    assert all(config[SPIN_CONFIG_KEY] == "1" for _, config in opened)  # the profile's spin_wait, both times
    choice = result["threads"]
    assert [run["threads"] for run in choice["compared"]] == [2, 1] and not choice["forced"]
    p95 = {run["threads"]: run["latency_ms"]["p95"] for run in choice["compared"]}
    assert choice["chosen"] == faster_threads(p95) == result["settings"]["threads"] == result["environment"]["threads"]
    reported = next(run for run in choice["compared"] if run["threads"] == choice["chosen"])
    assert result["latency_ms"] == reported["latency_ms"] and result["throughput"] == reported["throughput"]
    assert result["settings"]["runs"] == reported["runs"] == BRIEF["runs"]
    assert choice["memory_from"] == 2 and choice["statistic"] == "p95"
    assert "2 single-thread sessions in parallel" in choice["not_measured"]
    assert result["result_version"] == RESULT_VERSION == 3


def test_threads_forces_one_count(artifact, two_threads, opened):
    result = bench_artifact(artifact, two_threads, threads=1, **BRIEF)
    assert [threads for threads, _ in opened] == [1]
    choice = result["threads"]
    assert choice["forced"] and choice["chosen"] == 1 and choice["not_measured"] is None
    assert [run["threads"] for run in choice["compared"]] == [1]


def test_the_threads_block_round_trips_and_every_count_is_read(result):
    assert ThreadChoice.model_validate(result["threads"]).model_dump() == result["threads"]
    measurements = measurements_from_result(result)
    assert {m.threads: m.latency_ms for m in measurements} == {
        run["threads"]: run["latency_ms"]["p95"] for run in result["threads"]["compared"]
    }
    memory = {m.threads: m.footprint_bytes for m in measurements}  # one session's memory: on its measurement alone
    assert memory[2] == result["memory"]["model_footprint_bytes"] and memory[1] is None


def test_older_results_are_read_and_unknown_versions_refused(result):
    chosen = result["settings"]["threads"]
    version_2 = {key: value for key, value in result.items() if key != "threads"} | {"result_version": 2}
    version_1 = {key: value for key, value in version_2.items() if key != "result_version"}
    for old in (version_2, version_1):
        (measurement,) = measurements_from_result(old)
        assert (measurement.threads, measurement.latency_ms) == (chosen, result["latency_ms"]["p95"])
        assert measurement.footprint_bytes == result["memory"]["model_footprint_bytes"]
    with pytest.raises(EdgebertError, match=r"result_version 99 is newer than this edgebert reads \(1 to 3\)"):
        measurements_from_result({**result, "result_version": 99})
    for bad in ("3", 0, True, None):
        with pytest.raises(EdgebertError, match="is not a version edgebert wrote"):
            measurements_from_result({**result, "result_version": bad})
    with pytest.raises(EdgebertError, match="missing 'threads'"):
        measurements_from_result(version_2 | {"result_version": 3})
    for broken in ({"chosen": 7}, {"compared": []}, {"memory_from": 1, "compared": result["threads"]["compared"][:1]}):
        with pytest.raises(EdgebertError, match="not a bench result of an edgebert export"):
            measurements_from_result({**result, "threads": {**result["threads"], **broken}})


def test_the_bench_table_shows_both_counts(artifact, two_threads, run_cli, tmp_path):
    profile = tmp_path / "two.yaml"
    profile.write_text(yaml.safe_dump(two_threads.model_dump()))
    table = run_cli("bench", artifact, "--profile", profile, "--runs", "3", "--warmup", "1", "--min-time", "0")
    text = " ".join(table.stdout.split())
    assert table.code == 0, table.stderr
    assert "threads compared, one session at a time" in text and "memory is of the 2-thread session" in text
    assert "not measured: 2 single-thread sessions in parallel" in text
    assert max(len(line) for line in table.stdout.splitlines()) <= 80


def test_pick_runs_each_candidate_at_the_faster_measured_count(
    labelled_classifier, result, two_threads, monkeypatch, run_cli, tmp_path
):
    """Fed known measurements: the slice is no faster on two threads (1 wins), the full model nearly twice (2 wins)."""
    from edgebert.pick import pick

    monkeypatch.setenv("EDGEBERT_CACHE", str(tmp_path / "cache"))  # no eval results: ranked by FLOPs
    base = next(m for m in measurements_from_result(result) if m.footprint_bytes is not None)
    known = {(*SLICE, "fp32"): {1: 1.00, 2: 0.98}, (1.0, 1.0, "fp32"): {1: 4.00, 2: 2.20}}
    fed = {
        (width, depth, precision): {
            threads: replace(
                base,
                width=width,
                depth=depth,
                threads=threads,
                latency_ms=ms,
                shape=base.shape if (width, depth) == SLICE else FULL_SHAPE,
            )
            for threads, ms in by_count.items()
        }
        for (width, depth, precision), by_count in known.items()
    }
    monkeypatch.setattr("edgebert.pick.measure_here", lambda *args: fed)
    report = pick(labelled_classifier, two_threads, measure=True, candidates=[SLICE, (1.0, 1.0)])
    rows = {(row.width, row.depth, row.precision): row for row in report.candidates}
    for config, by_count in known.items():
        row = rows[config]
        assert row.latency_source == "measured" and row.latency_by_threads == by_count
        assert (row.threads, row.latency_ms) == ((1, 1.00) if config[:2] == SLICE else (2, 2.20))
    assert report.thread_counts == [1, 2]
    dumped = json.loads(report.model_dump_json())
    full = next(c for c in dumped["candidates"] if (c["width"], c["depth"], c["precision"]) == (1.0, 1.0, "fp32"))
    assert full["threads"] == 2 and full["latency_by_threads"] == {"1": 4.0, "2": 2.2}
    assert {curve["threads"] for curve in dumped["latency_model"]["curves"].values()} == {1, 2}
    assert any("single-thread sessions in parallel were not measured" in note for note in dumped["notes"])

    profile = tmp_path / "two.yaml"
    profile.write_text(yaml.safe_dump(two_threads.model_dump()))
    table = run_cli("pick", labelled_classifier, "--profile", profile, "--measure", "--candidates", "0.5:0.75,1:1")
    assert table.code == 0, table.stderr
    text = " ".join(table.stdout.split())
    assert "t threads" in text and "t: the thread count the row runs at" in text
    assert re.search(r"at \d threads? \(\d threads?: [\d.]+ ms\)", text)  # the verdict: the count, the other's ms
