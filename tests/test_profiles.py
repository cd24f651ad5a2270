"""Device profiles: every shipped one validates, and each kind of broken file gets its own clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgebert.errors import EdgebertError
from edgebert.profiles import ProfileError, load_profile, load_shipped, shipped_dir, shipped_names

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


def test_top_level_profiles_folder_is_the_shipped_one():
    top = Path(__file__).parents[1] / "profiles"
    assert sorted(p.stem for p in top.glob("*.yaml")) == shipped_names()


def test_local_threads_auto_means_usable_cores():
    from edgebert.profiles import usable_cores

    assert load_profile("local").threads == usable_cores()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("bad-types.yaml", ["threads: expected a whole number", "runs: input should be a valid integer", "clock_ghz"]),
        ("unknown-keys.yaml", ["warmup: unknown key (did you mean warmup_runs?", "hardware.ram: unknown key"]),
        ("negative-threads.yaml", ["threads: expected a whole number of threads >= 1, or 'auto' (got -2)"]),
        ("unknown-runtime.yaml", ["runtime: input should be 'onnxruntime' or 'litert' (got 'tensorrt')"]),
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
