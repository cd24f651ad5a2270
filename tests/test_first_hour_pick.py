"""Issue 18's pick, budget, bench and exit-code frictions: the shipped choice is a frontier row (ties go to the
cheaper), one budget grammar for options and profiles, bench says which host it measured, bad option values exit 2.
"""

from __future__ import annotations

import json
import os
import platform

import pytest

from edgebert.errors import EdgebertError
from edgebert.pick import Candidate, choose
from edgebert.profiles import Hardware, load_profile, other_device, parse_profile
from tests.artifacts import tiny_artifacts
from tests.cli_checks import assert_one_line_error

CANDIDATES = "0.25:0.5,0.5:0.5,0.75:0.5,1:1"
TIED = 0.495  # a teacher stuck at the majority class scores the same at every width and depth


def cheapest(rows: list[dict]) -> tuple:
    """By hand: of the rows within every budget, the least memory, then the least latency, then the fewest FLOPs."""
    fitting = [row for row in rows if row["fits"]]
    best = min(fitting, key=lambda r: (r["memory_bytes"], r["latency_ms"], r["encoder_flops_seq128"]))
    return best["width"], best["depth"], best["precision"]


@pytest.fixture
def tied_model(tiny_models, tmp_path, monkeypatch):
    """A model (12 layers, 12 heads) whose eval cache holds every candidate at the same accuracy, as `edgebert eval`
    records it."""
    from edgebert.data import Dataset
    from edgebert.evaluate import model_key, record_result
    from edgebert.slicing import open_checkpoint
    from edgebert.subnet import costs, subnetwork

    monkeypatch.setattr("edgebert.evaluate.eval_cache_dir", lambda: tmp_path / "eval")  # not the session's cache
    checkpoint = open_checkpoint(tiny_models["bert-cls"])
    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\nfine\t0\n")
    dataset = Dataset(data, ["fine"], None, ["0"], [2], "0" * 64)
    for pair in CANDIDATES.split(","):
        width, depth = (float(x) for x in pair.split(":"))
        cost = costs(checkpoint.arch, subnetwork(checkpoint.arch, width, depth))
        record_result(model_key(checkpoint), dataset, 128, cost, {"accuracy": TIED})
    return tiny_models["bert-cls"]


@pytest.mark.parametrize("budget", [None, "latency", "memory"])
def test_tied_accuracies_ship_the_cheapest_frontier_row(tied_model, run_cli, budget):
    """The issue's case: all accuracies tied, the frontier showed w0.25 d0.5 and pick shipped a larger one."""
    args = ["pick", tied_model, "--profile", "raspberry-pi-4", "--candidates", CANDIDATES]
    if budget is not None:  # one between the candidates' figures: it decides something
        rows = json.loads(run_cli(*args, "--json").stdout)["candidates"]
        figures = sorted(row["latency_ms" if budget == "latency" else "memory_bytes"] for row in rows)
        middle = (figures[len(figures) // 2 - 1] + figures[len(figures) // 2]) / 2
        args += ["--latency-budget", f"{middle}ms"] if budget == "latency" else ["--memory-budget", f"{middle:.0f}B"]
    report = json.loads(run_cli(*args, "--json").stdout)
    assert report["accuracy"] is not None and {row["accuracy"] for row in report["candidates"]} == {TIED}
    rows, choice = report["candidates"], report["choice"]
    assert budget is None or 0 < sum(row["fits"] for row in rows) < len(rows)
    assert choice["pareto"] is True
    assert (choice["width"], choice["depth"], choice["precision"]) == cheapest(rows)
    note = f"all candidates have the same accuracy ({TIED:.4f}): choosing the cheapest that fits"
    assert note in report["notes"]

    shown = run_cli(*args)
    assert shown.code == 0, shown.stderr
    chosen = [line for line in shown.stdout.splitlines() if line.lstrip().startswith(">")]
    width, depth, precision = cheapest(rows)
    assert len(chosen) == 1 and chosen[0].split()[1:4] == [f"{width:g}", f"{depth:g}", precision]  # a printed row
    assert "all candidates have the same accuracy" in " ".join(shown.stdout.split())


def _row(width: float, memory: int, latency: float, flops: int, accuracy: float | None = TIED) -> Candidate:
    return Candidate(
        width=width,
        depth=1.0,
        precision="int8",
        format="onnx",
        parameters=0,
        encoder_flops_seq128=flops,
        size_bytes=memory,
        size_source="estimated",
        footprint_bytes=memory,
        footprint_source="estimated",
        baseline_bytes=0,
        baseline_source="estimated",
        memory_bytes=memory,
        memory_source="estimated",
        latency_ms=latency,
        latency_source="estimated",
        threads=1,
        latency_by_threads={1: latency},
        accuracy=accuracy,
    )


def test_ties_break_by_memory_then_latency_then_flops():
    """Equal quality: the least memory wins; at equal memory the lower latency; at both equal the fewer FLOPs."""
    rows = [_row(1.0, 300, 10.0, 90), _row(0.75, 200, 20.0, 60), _row(0.5, 200, 15.0, 40), _row(0.25, 200, 15.0, 30)]
    choice = choose(rows, by_accuracy=True)
    assert choice is rows[3] and choice.pareto  # 200 MB, 15 ms, the fewest FLOPs
    assert rows[0].pareto and not rows[1].pareto  # 300 MB is faster: on the frontier; (200, 20 ms) is dominated
    rows[3].fits_latency = rows[2].fits_latency = False  # a latency budget of, say, 12 ms
    assert choose(rows, by_accuracy=True) is rows[0]  # the only one within it: on the frontier, chosen
    better = _row(0.8, 400, 30.0, 70, accuracy=0.9)
    assert choose([*rows, better], by_accuracy=True) is better  # quality first, whatever it costs
    unknown = [_row(1.0, 300, 10.0, 90, None), _row(0.5, 200, 15.0, 40, None)]
    assert choose(unknown, by_accuracy=False) is unknown[0]  # without accuracy the quality is FLOPs


# ---- one budget grammar ------------------------------------------------------------------------------------------

# (memory text, bytes or None when refused), (latency text, ms or None when refused): both paths read each alike.
MEMORY = [("60", 60_000_000), ("60MB", 60_000_000), ("0.5GiB", 2**29), ("512 KiB", 524_288), ("1.5", 1_500_000)]
MEMORY += [("60 parsecs", None), ("-5", None), ("0", None), ("1e3", None), ("MB", None), ("0.0000001", None)]
LATENCY = [("40", 40.0), ("40ms", 40.0), ("0.2s", 200.0), ("150us", 0.15), ("soon", None), ("0", None), ("-1", None)]


def _profile_with(tmp_path, field: str, text: str):
    yaml_text = load_profile("raspberry-pi-4").model_dump_json()  # JSON is YAML
    data = json.loads(yaml_text) | {field: text}
    return parse_profile(json.dumps(data), source="budget.yaml")


# (option, profile field, the report's key, the profile's value in the report's unit)
BUDGETS = {
    "memory": ("--memory-budget", "memory_budget_mb", "memory_bytes", lambda p: p.memory_budget_bytes),
    "latency": ("--latency-budget", "latency_budget_ms", "latency_ms", lambda p: p.latency_budget_ms),
}
BUDGET_CASES = [("memory", *case) for case in MEMORY] + [("latency", *case) for case in LATENCY]


@pytest.mark.parametrize("budget, text, expected", BUDGET_CASES)
def test_budgets_read_alike_in_options_and_profiles(tiny_models, tmp_path, run_cli, budget, text, expected):
    option_name, field, key, profile_value = BUDGETS[budget]
    args = ["pick", tiny_models["bert-cls"], "--profile", "pixel-7", "--candidates", "0.25:0.5", "--json"]
    option = run_cli(*args, option_name, text)
    if expected is None:
        assert_one_line_error(option, option_name)
        assert option.code == 2
        with pytest.raises(EdgebertError, match=field):
            _profile_with(tmp_path, field, text)
        return
    assert json.loads(option.stdout)["budgets"][key] == pytest.approx(expected), option.stderr
    assert profile_value(_profile_with(tmp_path, field, text)) == pytest.approx(expected)


# ---- bench says where it ran --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory):
    return tiny_artifacts(tmp_path_factory)["onnx"]


def test_bench_under_another_devices_profile_records_this_host(onnx_artifact, tmp_path, run_cli):
    """raspberry-pi-4 here: its threads and counts, this host's facts, one warning, nothing claiming Pi hardware."""
    out = tmp_path / "pi.json"
    args = ["bench", onnx_artifact, "--profile", "raspberry-pi-4", "--runs", "5", "--warmup", "1", "--min-time", "0"]
    result = run_cli(*args, "--json", "--out", out)
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    host = report["host"]
    assert host["architecture"] == platform.machine() and host["cores"] == os.cpu_count()
    assert host["hostname"] == platform.node()
    profile = report["profile"]
    compared = [run["threads"] for run in report["threads"]["compared"]]
    assert profile["name"] == "raspberry-pi-4" and compared == [4, 1]  # the Pi's threads, then one
    assert "hardware" not in profile and profile["device_hardware"]["cpu"].startswith("Broadcom BCM2711")
    assert profile["device_is_this_host"] is (platform.machine() == "aarch64" and os.cpu_count() == 4)
    elsewhere = [w for w in report["warnings"] if "not on the device it describes" in w]
    assert len(elsewhere) == (0 if profile["device_is_this_host"] else 1)
    assert report["result_version"] == 4

    from edgebert.latency_model import load_calibration

    measurements = load_calibration([out], load_profile("raspberry-pi-4"))  # pick still reads it, every count
    assert {m.profile for m in measurements} == {"raspberry-pi-4"} and [m.threads for m in measurements] == [4, 1]
    reported = next(m for m in measurements if m.threads == report["settings"]["threads"])
    old = json.loads(out.read_text())[0]  # a version 1 result: the profile's hardware inline, the CPU in environment
    old.pop("result_version")
    old.pop("threads")
    old["profile"]["hardware"] = old["profile"].pop("device_hardware")
    old["environment"]["cpu"] = old.pop("host")["cpu"]
    out.write_text(json.dumps([old]))
    assert load_calibration([out], load_profile("raspberry-pi-4"))[0].latency_ms == reported.latency_ms

    table = run_cli(*args)
    text = " ".join(table.stdout.split())
    assert table.code == 0 and "settings from profile raspberry-pi-4" in text
    assert f"{host['cpu']}, {host['architecture']}" in text


def test_other_device_compares_architecture_and_cores():
    pi = load_profile("raspberry-pi-4")
    here = Hardware(cpu="Cortex-A72", architecture="arm64", cores=4)
    assert other_device(pi, here) is None  # on a Pi (macOS-style ISA name included), no warning
    laptop = Hardware(cpu="Intel Core i7", architecture="x86_64", cores=8)
    line = other_device(pi, laptop)
    assert line and "measured on this host (Intel Core i7, x86_64, 8 cores)" in line and "\n" not in line
    assert other_device(pi, Hardware(cpu="Cortex-A76", architecture="aarch64", cores=8))  # a Pi 5 is not a Pi 4
    assert other_device(load_profile("local"), laptop) is None  # local is this host by definition


# ---- bad option values are usage errors (2), bad files are errors (1) ----------------------------------------------

BAD_OPTIONS = [
    (["pick", "--memory-budget", "lots"], "--memory-budget"),
    (["pick", "--latency-budget", "0ms"], "--latency-budget"),
    (["pick", "--candidates", "0.5-0.75"], "--candidates"),
    (["pick", "--candidates", "1.5:1"], "--candidates"),
    (["pick", "--memory-scope", "heap"], "--memory-scope"),
    (["pick", "--profile", "raspberry-pi-9"], "--profile"),
    (["slice", "--width", "0"], "--width"),
    (["slice", "--depth", "2"], "--depth"),
    (["export", "--format", "pdf"], "--format"),
    (["export", "--precision", "int4"], "--precision"),
    (["export", "--width", "nan"], "--width"),
    (["eval", "--data", "dev.tsv", "--width", "1.5"], "--width"),
    (["eval", "--data", "dev.tsv", "--width", "0.5", "--grid"], "--grid"),
    (["bench", "model.onnx", "--runs", "1000000"], "--runs"),
    (["bench", "model.onnx", "--threads", "100000"], "--threads"),
    (["bench", "model.onnx", "--profile", "nope"], "--profile"),
]


@pytest.mark.parametrize("args, option", BAD_OPTIONS, ids=[" ".join(a[:3]) for a, _ in BAD_OPTIONS])
def test_bad_option_values_exit_2_with_one_line(run_cli, args, option):
    result = run_cli(*args)
    assert_one_line_error(result, option)
    assert result.code == 2


def test_a_bad_file_named_by_an_option_is_still_an_error_not_a_usage_error(tmp_path, run_cli):
    profile = tmp_path / "bad.yaml"
    profile.write_text("name: bad\nthreads: many\n")
    result = run_cli("pick", "--profile", profile)
    assert_one_line_error(result, "bad.yaml")
    assert result.code == 1
    calibration = tmp_path / "results.json"
    calibration.write_text("[{}]")
    result = run_cli("pick", "--profile", "raspberry-pi-4", "--calibration", calibration)
    assert_one_line_error(result, "results.json")
    assert result.code == 1
