"""Threads (issue 23): `bench` times the profile's thread count and one, each in a session of its own, and reports
the faster by one rule, then that many single-thread sessions at once; its result's `threads` block is typed and
versioned; `pick` runs each candidate at the faster count it was measured at, recommends a way to serve for
throughput, and says so. No timing is asserted: the choices are checked against the rule applied to the numbers
recorded, or fed known numbers; the parallel sessions' counts against the calls the runtime received."""

from __future__ import annotations

import json
import re
import threading
import time
import weakref
from dataclasses import replace
from types import SimpleNamespace

import pytest
import yaml
from pydantic import ValidationError

from edgebert.bench import RESULT_VERSION, ParallelRun, ThreadChoice, bench_artifact, parallel_not_measured
from edgebert.errors import EdgebertError
from edgebert.latency_model import Measurement, Shape, measurements_from_result
from edgebert.pick import threads_note, throughput_advice
from edgebert.profiles import faster_threads, load_profile
from edgebert.runtimes import RUNTIMES, SPIN_CONFIG_KEY, open_session

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
def opened(monkeypatch) -> list[tuple[int, dict[str, str], int]]:
    """Every session bench opens: its threads, session config, and how many sessions were still open when it opened."""
    seen: list[tuple[int, dict[str, str], int]] = []
    alive: list[weakref.ref] = []

    def recording(path, options, runtime=None):
        still_open = sum(ref() is not None for ref in alive)
        session = open_session(path, options, runtime)
        seen.append((options.threads, dict(options.session_config), still_open))
        alive.append(weakref.ref(session.handle))
        return session

    monkeypatch.setattr("edgebert.bench.open_session", recording)
    return seen


@pytest.fixture
def calls(monkeypatch) -> list[tuple[int, list[tuple[int, float, float]]]]:
    """Every session bench opens, with every call the runtime received through it: (thread id, start, end)."""
    seen: list[tuple[int, list[tuple[int, float, float]]]] = []

    def recording(path, options, runtime=None):
        session = open_session(path, options, runtime)
        received: list[tuple[int, float, float]] = []
        seen.append((options.threads, received))
        bind = session.bind

        def recorded_bind(feeds):
            call = bind(feeds)

            def recorded():
                start = time.perf_counter()
                outputs = call()
                received.append((threading.get_ident(), start, time.perf_counter()))
                return outputs

            return recorded

        session.bind = recorded_bind
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
    # 2 threads, then 1, each alone; then two single-thread sessions side by side
    assert [(threads, still_open) for threads, _, still_open in opened] == [(2, 0), (1, 0), (1, 0), (1, 1)]
    assert all(config[SPIN_CONFIG_KEY] == "1" for _, config, _ in opened)  # the profile's spin_wait, every time
    choice = result["threads"]
    assert [run["threads"] for run in choice["compared"]] == [2, 1] and not choice["forced"]
    p95 = {run["threads"]: run["latency_ms"]["p95"] for run in choice["compared"]}
    assert choice["chosen"] == faster_threads(p95) == result["settings"]["threads"] == result["environment"]["threads"]
    reported = next(run for run in choice["compared"] if run["threads"] == choice["chosen"])
    assert result["latency_ms"] == reported["latency_ms"] and result["throughput"] == reported["throughput"]
    assert result["settings"]["runs"] == reported["runs"] == BRIEF["runs"]
    assert choice["memory_from"] == 2 and choice["statistic"] == "p95"
    assert choice["parallel"]["sessions"] == 2 and choice["not_measured"] is None
    rates = {run["threads"]: run["throughput"]["sequences_per_s"] for run in choice["compared"]}
    sessions = choice["parallel"]["throughput"]["sequences_per_s"]
    expected = "sessions" if 1 / sessions <= (1 - choice["min_gain"]) / rates[2] else "threads"
    assert choice["for_throughput"] == expected  # the rule, applied to the numbers recorded
    assert result["result_version"] == RESULT_VERSION == 4


def test_the_profiles_count_of_single_thread_sessions_runs_at_once_and_its_calls_add_up(artifact, two_threads, calls):
    """Checked against the calls the runtime received: two sessions of one thread, each called from a thread of its
    own at the same time; the runs recorded are the calls each received after its first and warm-up ones."""
    result = bench_artifact(artifact, two_threads, **BRIEF)
    parallel = result["threads"]["parallel"]
    assert [threads for threads, _ in calls] == [2, 1, 1, 1]
    sessions = [received for _, received in calls[2:]]
    assert parallel["sessions"] == len(sessions) == 2
    timed = [received[1 + BRIEF["warmup"] :] for received in sessions]
    assert parallel["runs_per_session"] == [len(mine) for mine in timed]
    assert parallel["runs"] == sum(map(len, timed)) and max(map(len, timed)) == BRIEF["runs"]
    callers = [{ident for ident, _, _ in mine} for mine in timed]
    assert all(len(ids) == 1 for ids in callers) and callers[0] != callers[1]
    assert threading.get_ident() not in callers[0] | callers[1]  # not the caller's thread, unlike the warm-up
    first, second = timed
    assert first[0][1] < second[-1][2] and second[0][1] < first[-1][2]  # the two sessions' windows overlap
    span = max(end for mine in timed for _, _, end in mine) - min(start for mine in timed for _, start, _ in mine)
    assert parallel["wall_ms"] / 1e3 >= span  # the window holds every timed call
    rate = parallel["throughput"]["inferences_per_s"]
    assert rate == pytest.approx(parallel["runs"] / (parallel["wall_ms"] / 1e3))
    assert parallel["throughput"]["sequences_per_s"] == pytest.approx(rate)  # batch 1: a call is one sequence
    assert parallel["latency_ms"]["max"] * len(timed[0]) < 2 * parallel["wall_ms"]  # per call, not per window
    assert parallel["model_footprint_bytes"] > 0 and parallel["peak_rss_bytes"] > parallel["model_footprint_bytes"]


def test_threads_forces_one_count(artifact, two_threads, opened):
    result = bench_artifact(artifact, two_threads, threads=1, **BRIEF)
    assert [threads for threads, _, _ in opened] == [1]
    choice = result["threads"]
    assert choice["forced"] and choice["chosen"] == 1 and choice["not_measured"] is None
    assert [run["threads"] for run in choice["compared"]] == [1] and choice["parallel"] is None


def test_a_runtime_holding_the_gil_is_not_timed_in_parallel_and_says_why():
    assert "executorch's Python call holds the GIL" in parallel_not_measured(RUNTIMES["executorch"], (4, 1))
    assert parallel_not_measured(RUNTIMES["onnxruntime"], (4, 1)) is None
    assert "--threads times one count alone" in parallel_not_measured(RUNTIMES["onnxruntime"], (4,))
    assert parallel_not_measured(RUNTIMES["executorch"], (1,)) is None


def test_the_threads_block_round_trips_and_every_count_is_read(result):
    assert ThreadChoice.model_validate(result["threads"]).model_dump() == result["threads"]
    measurements = measurements_from_result(result)
    assert {m.threads: m.latency_ms for m in measurements} == {
        run["threads"]: run["latency_ms"]["p95"] for run in result["threads"]["compared"]
    }
    memory = {m.threads: m.footprint_bytes for m in measurements}  # one session's memory: on its measurement alone
    assert memory[2] == result["memory"]["model_footprint_bytes"] and memory[1] is None
    rates = {m.threads: m.sequences_per_s for m in measurements}
    assert rates == {run["threads"]: run["throughput"]["sequences_per_s"] for run in result["threads"]["compared"]}
    parallel = {m.threads: m.parallel for m in measurements}  # the parallel sessions: on the profile's count's cores
    assert parallel[1] is None and parallel[2].model_dump() == result["threads"]["parallel"]


def test_an_inconsistent_parallel_record_is_refused(result):
    parallel = result["threads"]["parallel"]
    rate = parallel["throughput"]["inferences_per_s"]
    for broken in (
        {"runs": parallel["runs"] + 1},  # not the sum over the sessions
        {"runs_per_session": parallel["runs_per_session"][:1]},  # one session's runs for two sessions
        {"throughput": {**parallel["throughput"], "inferences_per_s": 2 * rate}},  # not runs over the wall time
        {"sessions": 1},
    ):
        with pytest.raises(ValidationError):
            ParallelRun.model_validate({**parallel, **broken})
        with pytest.raises(EdgebertError, match="not a bench result of an edgebert export"):
            measurements_from_result({**result, "threads": {**result["threads"], "parallel": {**parallel, **broken}}})
    other_way = {"sessions": "threads", "threads": "sessions"}[result["threads"]["for_throughput"]]
    for broken in ({"for_throughput": other_way}, {"forced": True}, {"parallel": None}):  # the last: nothing to choose
        with pytest.raises(EdgebertError, match="not a bench result of an edgebert export"):
            measurements_from_result({**result, "threads": {**result["threads"], **broken}})


def test_older_results_are_read_and_unknown_versions_refused(result):
    chosen = result["settings"]["threads"]
    unparallel = {key: value for key, value in result["threads"].items() if key not in ("parallel", "for_throughput")}
    version_3 = result | {"result_version": 3, "threads": unparallel}
    assert [(m.threads, m.latency_ms, m.parallel) for m in measurements_from_result(version_3)] == [
        (run["threads"], run["latency_ms"]["p95"], None) for run in result["threads"]["compared"]
    ]
    with pytest.raises(EdgebertError, match="not a bench result of an edgebert export"):  # 4 has the fields
        measurements_from_result(version_3 | {"result_version": 4})
    version_2 = {key: value for key, value in result.items() if key != "threads"} | {"result_version": 2}
    version_1 = {key: value for key, value in version_2.items() if key != "result_version"}
    for old in (version_2, version_1):
        (measurement,) = measurements_from_result(old)
        assert (measurement.threads, measurement.latency_ms) == (chosen, result["latency_ms"]["p95"])
        assert measurement.footprint_bytes == result["memory"]["model_footprint_bytes"]
        assert measurement.sequences_per_s == result["throughput"]["sequences_per_s"] and measurement.parallel is None
    with pytest.raises(EdgebertError, match=r"result_version 99 is newer than this edgebert reads \(1 to 4\)"):
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
    assert "threads compared: one session, then several at once" in text and "memory is of the 2-thread session" in text
    rows = re.findall(r"(\d) x (\d)\s+[\d.]+\s+[\d.]+\s+[\d.]+", table.stdout)
    assert rows == [("1", "2"), ("1", "1"), ("2", "1")]  # sessions x threads: each count alone, then 2 x 1 at once
    assert "2 single-thread sessions at once" in text and "For throughput run " in text
    assert "not measured" not in text
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
    advice = dumped["throughput"]  # the fed measurements keep the real result's parallel sessions and rates
    assert [(way["sessions"], way["threads"]) for way in advice["ways"]] == [(1, 2), (2, 1)]
    assert advice["ways"][1]["sequences_per_s"] == result["threads"]["parallel"]["throughput"]["sequences_per_s"]
    assert any(
        f"Run {'2 single-thread sessions' if advice['best']['sessions'] == 2 else 'one 2-thread'}" in note
        for note in dumped["notes"]
    )

    profile = tmp_path / "two.yaml"
    profile.write_text(yaml.safe_dump(two_threads.model_dump()))
    table = run_cli("pick", labelled_classifier, "--profile", profile, "--measure", "--candidates", "0.5:0.75,1:1")
    assert table.code == 0, table.stderr
    text = " ".join(table.stdout.split())
    assert "t threads" in text and "t: the thread count the row runs at" in text
    assert re.search(r"at \d threads? \(\d threads?: [\d.]+ ms\)", text)  # the verdict: the count, the other's ms


def known(width: float, batch: int, ms: float, per_s: float, sessions_per_s: float | None = None) -> Measurement:
    """A measurement at 2 threads with known numbers; with `sessions_per_s`, two single-thread sessions at once too."""
    parallel = None
    if sessions_per_s is not None:  # 2 x 50 calls of batch `batch` in 100 / sessions_per_s seconds
        wall_ms = 100 * batch / sessions_per_s * 1e3
        parallel = ParallelRun(
            sessions=2,
            runs_per_session=[50, 50],
            runs=100,
            wall_ms=wall_ms,
            load_ms=1.0,
            latency_ms={"p50": 2.0, "p95": 2.5},
            throughput={"inferences_per_s": 100 / (wall_ms / 1e3), "sequences_per_s": sessions_per_s},
            model_footprint_bytes=1,
            footprint_from="peak RSS since load",
            peak_rss_bytes=2,
        )
    shape = replace(FULL_SHAPE, batch=batch)
    return Measurement(
        width, 1.0, "int8", "onnxruntime", shape, ms, threads=2, sequences_per_s=per_s, parallel=parallel
    )


def test_pick_recommends_the_way_that_serves_the_most_on_the_profiles_cores(two_threads):
    """The issue's int8 at batch 1 (1.94 ms on 2 threads: 515 seq/s): fed a batch of 2 and two sessions at once."""
    profile = two_threads.model_copy(update={"seq_len": FULL_SHAPE.seq_len, "batch_size": 1})
    one = known(1.0, 1, 1.94, 515.0, sessions_per_s=1000.0)
    batch = known(1.0, 2, 2.2, 909.0)
    advice = throughput_advice(profile, [one, batch], None)
    assert [(w.sessions, w.threads, w.batch) for w in advice.ways] == [(1, 2, 1), (1, 2, 2), (2, 1, 1)]
    assert [w.sequences_per_s for w in advice.ways] == [515.0, 909.0, 1000.0]
    assert (advice.best.sessions, advice.best.batch) == (2, 1)  # 1000 seq/s: 9 % less time per sequence than 909
    note = threads_note(profile, [1, 2], advice)
    assert "one 2-thread session 515.0 seq/s" in note and "2 single-thread sessions 1000.0 seq/s" in note
    assert "one 2-thread session, batch 2 909.0 seq/s" in note and "Run 2 single-thread sessions" in note
    assert "--batch 2" not in note  # a batch was measured

    close = known(1.0, 1, 1.94, 515.0, sessions_per_s=940.0)  # 3 % over the batch: not worth a second copy
    assert throughput_advice(profile, [close, batch], None).best.batch == 2
    alone = throughput_advice(profile, [close], None)
    assert alone.best.sessions == 2 and "--batch 2" in threads_note(profile, [1, 2], alone)
    assert throughput_advice(profile, [batch], None) is None  # one way measured: nothing to compare
    assert throughput_advice(profile.at_threads(1), [one, batch], None) is None

    slice_ = known(0.5, 1, 0.70, 1400.0, sessions_per_s=1500.0)
    choice = SimpleNamespace(width=0.5, depth=1.0, precision="int8", latency_ms=1.9)
    assert throughput_advice(profile, [one, slice_], choice).of_choice  # the choice's own, though farther
    other = SimpleNamespace(width=0.75, depth=1.0, precision="int8", latency_ms=1.8)
    nearest = throughput_advice(profile, [one, slice_], other)
    assert not nearest.of_choice and nearest.width == 1.0  # 1.94 ms is nearer 1.8 than 0.70 is
    assert "the measured configuration nearest the choice" in threads_note(profile, [1, 2], nearest)


def test_pick_says_why_parallel_sessions_were_not_measured(two_threads):
    note = threads_note(two_threads, [1, 2], None)
    assert "2 single-thread sessions at once were not measured" in note and "--batch 2" in note
    executorch = threads_note(two_threads.model_copy(update={"runtime": "executorch"}), [1, 2], None)
    assert "executorch's Python call holds the GIL" in executorch
