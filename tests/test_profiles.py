"""Device profiles: every shipped one validates, and each kind of broken file gets its own clear error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from edgebert.errors import EdgebertError
from edgebert.profiles import ProfileError, load_profile, load_shipped, shipped_dir

BROKEN = Path(__file__).parent / "data" / "profiles"
REQUIRED_DEVICES = {"raspberry-pi-4", "raspberry-pi-5", "pixel-7", "jetson-orin-nano", "x86-laptop", "local"}


def test_shipped_profiles_validate_and_carry_their_facts():
    profiles = load_shipped()
    assert {p.name for p in profiles} >= REQUIRED_DEVICES
    for profile in profiles:
        assert (shipped_dir() / f"{profile.name}.yaml").is_file()  # the name is the file's stem
        hw = profile.hardware
        if profile.name == "local":
            assert hw.detected and hw.cores >= 1 and hw.cpu
            continue
        assert not hw.detected
        assert hw.clock_ghz and hw.peak_gflops_fp32 and hw.memory_bandwidth_gbs and hw.ram_gb
        assert hw.notes and "peak" in hw.notes and hw.sources  # how the numbers were derived, and from where
        assert profile.threads <= hw.cores


def test_the_wheel_ships_every_profile_in_the_repo_and_the_cli_lists_them(run_cli, tmp_path):
    """A wheel built from pyproject.toml holds each YAML of the repo's `profiles/`: what a device install gets."""
    repo = Path(__file__).parents[1]
    source = tmp_path / "source"  # a copy: building writes egg-info into its source tree
    shutil.copytree(repo / "edgebert", source / "edgebert", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(repo / name, source / name)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir", "-q"]
    built = subprocess.run([*build, "-w", tmp_path / "wheel", source], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "wheel").glob("edgebert-*.whl")
    shipped = sorted(PurePosixPath(name) for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".yaml"))
    assert {path.parent for path in shipped} == {PurePosixPath("edgebert/device_profiles")}

    in_repo = sorted(path.stem for path in (repo / "profiles").iterdir() if path.suffix == ".yaml")
    assert [path.stem for path in shipped] == in_repo
    listed = json.loads(run_cli("profiles", "list", "--json").stdout)
    assert sorted(profile["name"] for profile in listed) == in_repo
    assert os.readlink(repo / "profiles") == "edgebert/device_profiles"  # relative: it survives a clone


def test_local_threads_auto_means_usable_cores():
    from edgebert.process import usable_cores

    assert load_profile("local").threads == usable_cores()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("bad-types.yaml", ["threads: expected a whole number", "runs: input should be a valid integer", "clock_ghz"]),
        ("unknown-keys.yaml", ["warmup: unknown key (did you mean warmup_runs?", "hardware.ram: unknown key"]),
        ("negative-threads.yaml", ["threads: expected a whole number of threads from 1 to 256, or 'auto' (got -2)"]),
        ("unknown-runtime.yaml", ["runtime: input should be 'onnxruntime', 'litert' or 'executorch' (got 'tensorrt')"]),
        ("not-yaml.yaml", ["not valid YAML at line 3"]),
        ("empty.yaml", ["empty file, expected a mapping"]),
    ],
)
def test_broken_profiles_name_file_field_and_expectation(name, expected):
    with pytest.raises(ProfileError) as info:
        load_profile(BROKEN / name)
    problems = info.value.problems
    assert len(problems) == len(expected)
    for problem, text in zip(sorted(problems), sorted(expected), strict=True):
        assert problem.startswith(str(BROKEN / name) + ": ") and "\n" not in problem
        assert text in problem


def test_missing_required_fields_and_non_mapping(tmp_path):
    path = tmp_path / "short.yaml"
    path.write_text("name: short\n")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert {p.split(": ")[1] for p in info.value.problems} == {"description", "runtime", "threads", "hardware"}
    path.write_text("- a\n- list\n")
    with pytest.raises(ProfileError, match="expected a mapping of profile fields, got a list"):
        load_profile(path)


def test_unknown_name_and_missing_file():
    with pytest.raises(EdgebertError, match="unknown profile 'raspberry-pi-9': choose one of .*raspberry-pi-4"):
        load_profile("raspberry-pi-9")
    with pytest.raises(EdgebertError, match="no-such.yaml: no such profile file"):
        load_profile("no-such.yaml")


def test_cli_list_show_validate(run_cli):
    listed = run_cli("profiles", "list", "--json")
    assert listed.code == 0 and {p["name"] for p in json.loads(listed.stdout)} >= REQUIRED_DEVICES
    shown = run_cli("profiles", "show", "raspberry-pi-4", "--json")
    assert json.loads(shown.stdout)["hardware"]["cores"] == 4
    assert "BCM2711" in run_cli("profiles", "show", "raspberry-pi-4").stdout

    good = shipped_dir() / "pixel-7.yaml"
    ok = run_cli("profiles", "validate", good)
    assert ok.code == 0 and "ok" in ok.stdout
    bad = run_cli("profiles", "validate", good, BROKEN / "unknown-keys.yaml", BROKEN / "empty.yaml")
    assert bad.code == 1
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3  # one line per problem
    report = json.loads(run_cli("profiles", "validate", BROKEN / "negative-threads.yaml", "--json").stdout)
    assert report[str(BROKEN / "negative-threads.yaml")]["valid"] is False


BASE = "name: x\ndescription: d\nruntime: onnxruntime\nthreads: 2\nhardware: {cpu: c, cores: 2}\n"


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("min_time_s: .inf", "min_time_s: input should be a finite number (got inf)"),
        ("min_time_s: .nan", "min_time_s: input should be a finite number (got nan)"),
        ("runs: 1.0e+12", "runs: input should be less than or equal to 100000"),
        ("warmup_runs: 1.0e+12", "warmup_runs: input should be less than or equal to 10000"),
        ("batch_size: 1.0e+11", "batch_size: input should be less than or equal to 256"),
        ("seq_len: 100000", "seq_len: input should be less than or equal to 8192"),
        ("memory_budget_mb: .inf", "memory_budget_mb: input should be a finite number"),
    ],
)
def test_counts_out_of_range_name_file_and_field(tmp_path, line, field):
    """Every count a benchmark runs with is bounded: a `warmup_runs: 1e12` would never finish."""
    path = tmp_path / "huge.yaml"
    path.write_text(BASE + line + "\n")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}: {field}")


def test_threads_above_the_bound(tmp_path):
    path = tmp_path / "threads.yaml"
    path.write_text(BASE.replace("threads: 2", "threads: 1.0e+23"))
    with pytest.raises(ProfileError, match=r"threads.yaml: threads: expected a whole number of threads from 1 to 256"):
        load_profile(path)


def test_billion_laughs_is_refused_at_once(tmp_path):
    """Nested aliases expand exponentially; a profile has no use for them, so any alias is refused."""
    laughs = ["name: x", "runtime: onnxruntime", "threads: 2", "hardware: {cpu: c, cores: 2}", 'a0: &a0 ["lol"]']
    laughs += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    laughs.append("description: *a9")  # 9**9 = 387 million strings once expanded
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(laughs) + "\n")
    assert path.stat().st_size < 1024
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    (problem,) = info.value.problems
    assert problem == f"{path}: not valid YAML at line 6, column 10: YAML aliases (*name) are not allowed in a profile"


def test_large_nested_and_echoed_input_stays_bounded(tmp_path):
    path = tmp_path / "large.yaml"
    path.write_text(BASE + "notes: " + "x" * 20_000 + "\n")
    with pytest.raises(ProfileError, match="larger than 16 KB, too large for a profile"):
        load_profile(path)
    path.write_text(BASE + "seq_len: " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(ProfileError, match="nested too deeply to be a profile"):
        load_profile(path)
    # a wrong value is quoted cut short, and a hostile key is quoted rather than printed raw
    path.write_text(BASE.replace("description: d", "description: [" + ", ".join(["long words"] * 500) + "]"))
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}: description: input should be a valid string (got ['long words'")
    assert len(problem) < len(str(path)) + 120
    path.write_text(BASE + '"bad\\nkey": 1\n')
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    (problem,) = info.value.problems
    assert "\n" not in problem and problem.startswith(f"{path}: 'bad\\nkey': unknown key")


def test_run_settings_apply_overrides_within_the_same_bounds():
    local = load_profile("local")
    settings = local.run_settings(runs=7, threads=None, seq_len=64)
    assert (settings.runs, settings.seq_len, settings.threads) == (7, 64, local.threads)
    with pytest.raises(ProfileError) as info:
        local.run_settings(runs=10**12, warmup_runs=-1, min_time_s=float("inf"), threads=10**23)
    assert sorted(p.split(": ")[1] for p in info.value.problems) == ["min_time_s", "runs", "threads", "warmup_runs"]
    assert all(p.startswith("bench settings: ") for p in info.value.problems)


def test_is_local_and_memory_budget_scope():
    assert load_profile("local").is_local and not load_profile("pixel-7").is_local
    assert {p.memory_budget_scope for p in load_shipped()} == {"model"}  # the model's own memory by default
