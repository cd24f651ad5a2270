"""A battery of hostile and faulty inputs, run through the real `edgebert` command, one process each.

Each case damages a copy of a tiny BERT classifier (or a slice, an artifact, a profile, a data
file, a results file) and runs one command. A case *holds* when the outcome is the promised one:
- "error": exit code != 0, exactly one line on stderr starting with `error:`, no traceback, and
  nothing written next to the inputs (the work folder's files and bytes are unchanged);
- "ok": exit code 0 (the input is odd but valid);
and, for both, the process finished within the time limit and its peak RSS stayed under the bound
(no hang, no unbounded memory).

    python benchmarks/hostile.py            # all cases, 2 at a time; results/hostile.{json,md}
    python benchmarks/hostile.py -k force   # the cases whose name contains "force"
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
TIME_LIMIT_S = 120.0
RSS_LIMIT_BYTES = 1_500_000_000  # tiny inputs: anything near this is an input-driven blow-up


@dataclass
class Case:
    name: str
    setup: Callable[[Path], list[str]]  # builds the inputs under `work`, returns the edgebert arguments
    expect: str = "error"  # "ok", or "ok or error" (either is honest, e.g. ignoring a bad cache entry)
    fragment: str = ""  # must appear in the error line
    env: dict[str, str] = field(default_factory=dict)


# ---- inputs ----------------------------------------------------------------------------------------------


def tiny_model(directory: Path) -> Path:
    import transformers

    config = transformers.BertConfig(
        vocab_size=1100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=2,
    )
    model = transformers.BertForSequenceClassification(config).eval()
    model.save_pretrained(directory)
    words = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += [f"w{i}" for i in range(1100 - len(words))]
    (directory / "vocab.txt").write_text("\n".join(words) + "\n")
    (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    return directory


def made(path: Path, text: str | None = None) -> Path:
    """`path` created as a file holding `text`, or as a directory holding one file when `text` is None."""
    if text is None:
        path.mkdir()
        (path / "x").write_text("x")
    else:
        path.write_text(text)
    return path


def edgebert(*args: str) -> list[str]:
    return [str(a) for a in args]


def model_copy(work: Path) -> Path:
    target = work / "model"
    shutil.copytree(BASE / "model", target)
    return target


def edit_config(model: Path, **changes) -> None:
    config = json.loads((model / "config.json").read_text())
    config.update(changes)
    (model / "config.json").write_text(json.dumps(config))


def raw_config(model: Path, text: str) -> None:
    (model / "config.json").write_text(text)


def slice_cmd(model: Path, work: Path) -> list[str]:
    return edgebert("slice", model, "--width", "0.5", "--depth", "0.5", "--out", work / "out")


def config_case(name: str, fragment: str = "", **changes) -> Case:
    def setup(work: Path) -> list[str]:
        model = model_copy(work)
        edit_config(model, **changes)
        return slice_cmd(model, work)

    return Case(f"config {name}", setup, fragment=fragment)


def raw_config_case(name: str, text: str, fragment: str = "") -> Case:
    def setup(work: Path) -> list[str]:
        model = model_copy(work)
        raw_config(model, text)
        return slice_cmd(model, work)

    return Case(f"config {name}", setup, fragment=fragment)


def _auto_map(work: Path) -> list[str]:
    model = model_copy(work)
    edit_config(model, auto_map={"AutoModel": "evil.Model"})
    (model / "evil.py").write_text("raise SystemExit('remote code ran')\n")
    return slice_cmd(model, work)


def deep(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


def zip_bomb(work: Path) -> list[str]:
    model = model_copy(work)
    (model / "model.safetensors").unlink()
    with zipfile.ZipFile(model / "pytorch_model.bin", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        with archive.open("archive/data/0", "w", force_zip64=True) as member:  # streamed: this process stays small
            for _ in range(1500):
                member.write(bytes(1_000_000))
    return slice_cmd(model, work)


def link_case(name: str, file: str) -> Case:
    def setup(work: Path) -> list[str]:
        model = model_copy(work)
        secret = work / "secret"
        secret.write_text("PRIVATE KEY\n")
        target = model / file
        target.unlink(missing_ok=True)
        target.symlink_to(secret)
        return slice_cmd(model, work)

    return Case(f"symlink {name}", setup, fragment="")


def slice_of(work: Path, width: str = "0.5") -> Path:
    out = work / "slice"
    shutil.copytree(BASE / f"slice-{width}", out)
    return out


def slice_damage_case(name: str, damage: Callable[[Path], None], fragment: str = "") -> Case:
    def setup(work: Path) -> list[str]:
        out = slice_of(work)
        damage(out)
        return edgebert("export", out, "--out", work / "x.onnx")

    return Case(f"slice {name}", setup, fragment=fragment)


def artifact_of(work: Path) -> Path:
    for name in ("a.onnx", "a.onnx.json"):
        shutil.copy2(BASE / name, work / name)
    return work / "a.onnx"


def sidecar_case(name: str, damage: Callable[[dict], object], fragment: str = "") -> Case:
    def setup(work: Path) -> list[str]:
        artifact = artifact_of(work)
        sidecar_path = work / "a.onnx.json"
        sidecar = json.loads(sidecar_path.read_text())
        changed = damage(sidecar)
        sidecar_path.write_text(changed if isinstance(changed, str) else json.dumps(sidecar))
        return edgebert("bench", artifact, "--runs", "3")

    return Case(f"sidecar {name}", setup, fragment=fragment)


def profile_case(name: str, text: str, fragment: str = "", expect: str = "error") -> Case:
    def setup(work: Path) -> list[str]:
        artifact = artifact_of(work)
        (work / "p.yaml").write_text(text)
        return edgebert("bench", artifact, "--profile", work / "p.yaml")

    return Case(f"profile {name}", setup, fragment=fragment, expect=expect)


PROFILE = (
    "name: hostile\ndescription: d\nruntime: onnxruntime\nthreads: 1\nruns: 3\nwarmup_runs: 1\n"
    "hardware:\n  cpu: any\n  architecture: x86_64\n  cores: 2\n"
)


def data_case(name: str, text: str, fragment: str = "", suffix: str = ".tsv") -> Case:
    def setup(work: Path) -> list[str]:
        (work / f"d{suffix}").write_text(text)
        return edgebert("eval", BASE / "model", "--data", work / f"d{suffix}", "--width", "1")

    return Case(f"eval data {name}", setup, fragment=fragment)


def force_case(name: str, out: Callable[[Path], Path], fragment: str) -> Case:
    def setup(work: Path) -> list[str]:
        project = work / "P"
        shutil.copytree(BASE / "model", project / "model")
        (project / "notes.txt").write_text("mine\n")
        return edgebert("slice", project / "model", "--width", ".5", "--depth", ".5", "--out", out(project), "--force")

    return Case(f"force {name}", setup, fragment=fragment)


def export_force_case(name: str, out: Callable[[Path], Path], fragment: str) -> Case:
    def setup(work: Path) -> list[str]:
        target = out(work)
        return edgebert("export", BASE / "model", "--width", ".5", "--depth", ".5", "--out", target, "--force")

    return Case(f"force export {name}", setup, fragment=fragment)


def results_case(name: str, text: str | None, fragment: str = "", directory: bool = False) -> Case:
    def setup(work: Path) -> list[str]:
        artifact = artifact_of(work)
        out = work / "r.json"
        if directory:
            out.mkdir()
        elif text is not None:
            out.write_text(text)
        return edgebert("bench", artifact, "--runs", "3", "--out", out)

    return Case(f"bench --out {name}", setup, fragment=fragment)


def sha_mismatch(work: Path) -> list[str]:
    artifact = artifact_of(work)
    shutil.copy2(BASE / "b.onnx", artifact)  # another model under the first one's sidecar
    return edgebert("bench", artifact, "--runs", "3")


def cache_case(name: str, content: str) -> Case:
    def setup(work: Path) -> list[str]:
        cache = work / "cache"
        shutil.copytree(BASE / "cache", cache)
        for entry in (cache / "eval").rglob("*.json"):
            entry.write_text(content)
        return edgebert("pick", BASE / "model", "--candidates", "1:1,0.5:0.5", "--data", BASE / "d.tsv")

    return Case(f"eval cache {name}", setup, expect="ok or error", env={"EDGEBERT_CACHE": "{work}/cache"})


CASES: list[Case] = [
    # config.json values
    config_case("layer_norm_eps NaN", layer_norm_eps=float("nan")),
    config_case("layer_norm_eps Infinity", layer_norm_eps=float("inf")),
    config_case("layer_norm_eps -5", layer_norm_eps=-5),
    config_case("layer_norm_eps 'abc'", layer_norm_eps="abc"),
    config_case("hidden_act list", hidden_act=["gelu"]),
    config_case("hidden_act unknown", hidden_act="swishy"),
    config_case("id2label non-integer keys", id2label={"a": "x", "b": "y"}),
    config_case("pad_token_id 'x'", pad_token_id="x"),
    config_case("pad_token_id -7", pad_token_id=-7),
    config_case("pad_token_id 10**6", pad_token_id=10**6),
    config_case("vocab_size 0", vocab_size=0),
    config_case("num_hidden_layers 10**9", num_hidden_layers=10**9),
    config_case("num_attention_heads 0", num_attention_heads=0),
    config_case("num_attention_heads 3 (not dividing)", num_attention_heads=3),
    config_case("hidden_size 10**9", hidden_size=10**9),
    config_case("intermediate_size -1", intermediate_size=-1),
    config_case("max_position_embeddings 10**12", max_position_embeddings=10**12),
    config_case("model_type gpt2", model_type="gpt2"),
    Case("config auto_map (remote code: ignored, not copied)", lambda w: _auto_map(w), expect="ok"),
    raw_config_case("deeply nested", '{"a": ' + deep() + "}"),
    raw_config_case("not JSON", "{nope"),
    raw_config_case("a list", "[1, 2]"),
    raw_config_case("empty", ""),
    raw_config_case("binary", "\x00\xff\xfe"),
    # weights
    Case("weights zip bomb .bin", zip_bomb),
    Case(
        "weights truncated",
        lambda w: (
            (m := model_copy(w)),
            (m / "model.safetensors").write_bytes((m / "model.safetensors").read_bytes()[:500]),
            slice_cmd(m, w),
        )[-1],
    ),
    Case(
        "weights missing",
        lambda w: ((m := model_copy(w)), (m / "model.safetensors").unlink(), slice_cmd(m, w))[-1],
    ),
    Case(
        "config.json missing",
        lambda w: ((m := model_copy(w)), (m / "config.json").unlink(), slice_cmd(m, w))[-1],
    ),
    # links out of the model directory
    link_case("vocab.txt -> outside", "vocab.txt"),
    link_case("config.json -> outside", "config.json"),
    link_case("tokenizer_config.json -> outside", "tokenizer_config.json"),
    link_case("model.safetensors -> outside", "model.safetensors"),
    # slice directories given to export
    slice_damage_case("edgebert.json {}", lambda s: (s / "edgebert.json").write_text("{}")),
    slice_damage_case("edgebert.json []", lambda s: (s / "edgebert.json").write_text("[]")),
    slice_damage_case("edgebert.json deep", lambda s: (s / "edgebert.json").write_text(deep())),
    slice_damage_case("config.json missing", lambda s: (s / "config.json").unlink(), "config.json"),
    slice_damage_case(
        "config claims 10**6 layers",
        lambda s: edit_config(s, num_hidden_layers=10**6),
    ),
    slice_damage_case("layer_norm_eps NaN", lambda s: edit_config(s, layer_norm_eps=float("nan"))),
    # sidecars
    sidecar_case("{}", lambda s: "{}", ""),
    sidecar_case("a list", lambda s: "[]"),
    sidecar_case("deeply nested", lambda s: deep()),
    sidecar_case("inputs a list of strings", lambda s: s.update(inputs=["input_ids"])),
    sidecar_case("vocab_size 0", lambda s: s.update(vocab_size=0)),
    sidecar_case("runtime a string", lambda s: s.update(runtime="onnxruntime")),
    sidecar_case("runtime unknown optimization level", lambda s: s["runtime"].update(graph_optimization_level="x")),
    Case("sidecar of another artifact (sha256)", sha_mismatch),
    # bench options and profiles
    Case("bench seq-len above the model's positions", lambda w: edgebert("bench", artifact_of(w), "--seq-len", "600")),
    Case("bench runs 10**12", lambda w: edgebert("bench", artifact_of(w), "--runs", str(10**12))),
    Case("bench threads 10**9", lambda w: edgebert("bench", artifact_of(w), "--threads", str(10**9))),
    Case("bench batch 10**11", lambda w: edgebert("bench", artifact_of(w), "--batch", str(10**11))),
    profile_case(
        "billion laughs",
        'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
        + "".join(
            f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        )
        + "name: x\nruntime: onnxruntime\ndescription: *i\n",
    ),
    profile_case("threads 1e23", PROFILE.replace("threads: 1", "threads: 1e23"), "threads"),
    profile_case("warmup_runs 1e12", PROFILE.replace("warmup_runs: 1", "warmup_runs: 1e12"), "warmup_runs"),
    profile_case("runs 1e12", PROFILE.replace("runs: 3", "runs: 1e12"), "runs"),
    profile_case("min_time_s .inf", PROFILE + "min_time_s: .inf\n", "min_time_s"),
    profile_case("batch_size 1e11", PROFILE + "batch_size: 1e11\n", "batch_size"),
    profile_case("valid (control: the cases above fail for their own reason)", PROFILE, expect="ok"),
    profile_case("not a mapping", "- a\n- b\n"),
    profile_case("python tag", "!!python/object/apply:os.system ['echo hacked']\n"),
    profile_case("huge file", PROFILE + "description: " + "x" * 5_000_000 + "\n"),
    Case("bench valid (control)", lambda w: edgebert("bench", artifact_of(w), "--runs", "3"), expect="ok"),
    # bench --out results files
    results_case("holds a dict", '{"a": 1}'),
    results_case("not JSON", "nope"),
    results_case("is a directory", None, directory=True),
    # eval data
    data_case("label --1", "sentence\tlabel\na\t0\nb\t--1\n"),
    data_case("label superscript two", "sentence\tlabel\na\t0\nb\t²\n"),
    data_case("field over the csv limit", 'sentence,label\n"' + "x" * 200_000 + '",1\n', suffix=".csv"),
    data_case("no header", "a\t0\nb\t1\n"),
    data_case("binary", "\x00\xff"),
    # --force and --out
    force_case("out contains the source", lambda p: p, "contains the source"),
    force_case("out is the source", lambda p: p / "model", "is the source"),
    force_case("out is the user's file", lambda p: p / "notes.txt", ""),
    force_case("out is a foreign directory", lambda p: made(p / "d"), ""),
    export_force_case("out is a directory", lambda w: made(w / "d"), ""),
    export_force_case("out is a slice directory", lambda w: slice_of(w), ""),
    export_force_case("out is a foreign file", lambda w: made(w / "f.onnx", "mine"), ""),
    # paths, environment
    Case("newline in the model path", lambda w: slice_cmd(w / "a\nerror: forged", w)),
    Case(
        "name too long",
        lambda w: edgebert("slice", BASE / "model", "--width", ".5", "--depth", ".5", "--out", w / ("n" * 300)),
    ),
    Case(
        "out under a file",
        lambda w: (
            (w / "f").write_text("")
            or edgebert("slice", BASE / "model", "--width", ".5", "--depth", ".5", "--out", w / "f" / "s")
        ),
    ),
    Case(
        "EDGEBERT_CACHE is a file",
        lambda w: (w / "c").write_text("") or edgebert("slice", "--width", ".5", "--depth", ".5", "--out", w / "s"),
        env={"EDGEBERT_CACHE": "{work}/c"},
    ),
    # valid but odd: must work
    Case(
        "unicode path",
        lambda w: edgebert(
            "slice",
            shutil.copytree(BASE / "model", w / "módel ü"),
            "--width",
            ".5",
            "--depth",
            ".5",
            "--out",
            w / "out ü",
        ),
        expect="ok",
    ),
    cache_case("entry []", "[]"),
    cache_case("entry {}", "{}"),
    cache_case("entry tampered", '{"schema_version": 1, "metrics": {"accuracy": 7}}'),
]


# ---- running -------------------------------------------------------------------------------------------------


def digest(root: Path) -> dict[str, str]:
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            files[str(path.relative_to(root))] = "-> " + os.readlink(path)
        elif path.is_file():
            files[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            files[str(path.relative_to(root)) + "/"] = ""
    return files


def run_case(case: Case, root: Path) -> dict:
    work = root / case.name.replace("/", "_").replace(" ", "_").replace("\n", "_")
    work.mkdir()
    try:
        argv = case.setup(work)
    except Exception as exc:  # the battery's own bug: report, do not count as held
        return {"name": case.name, "held": False, "why": f"setup failed: {exc!r}"}
    before = digest(work)
    env = {**os.environ, "EDGEBERT_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1"}
    env.update({k: v.format(work=work) for k, v in case.env.items()})
    env.pop("EDGEBERT_DEBUG", None)
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "edgebert", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=work
    )
    timed_out = False
    try:
        stdout, stderr = process.communicate(timeout=TIME_LIMIT_S)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        stdout, stderr = process.communicate()
        timed_out = True
    seconds = time.monotonic() - started
    rss = peak_rss_of(process.pid)
    err_lines = stderr.decode(errors="replace").splitlines()
    after = digest(work)
    problems = []
    if timed_out:
        problems.append(f"no answer within {TIME_LIMIT_S:.0f} s")
    if rss is not None and rss > RSS_LIMIT_BYTES:
        problems.append(f"peak RSS {rss / 1e9:.1f} GB")
    failing = case.expect == "error" or (case.expect == "ok or error" and process.returncode != 0)
    if failing:
        if process.returncode == 0:
            problems.append("exit 0")
        if any("Traceback" in line for line in err_lines):
            problems.append("traceback")
        errors = [line for line in err_lines if line.startswith("error:")]
        if len(errors) != 1 or len([line for line in err_lines if not line.startswith("warning:")]) != 1:
            problems.append(f"{len(err_lines)} stderr lines")
        if case.fragment and not any(case.fragment in line for line in errors):
            problems.append(f"no {case.fragment!r} in the error")
        if after != before:
            changed = sorted(set(after.items()) ^ set(before.items()))
            problems.append(f"files changed: {[name for name, _ in changed][:4]}")
    elif case.expect == "ok" and process.returncode != 0:
        problems.append(f"exit {process.returncode}: {err_lines[-1] if err_lines else ''}")
    return {
        "name": case.name,
        "expect": case.expect,
        "held": not problems,
        "why": "; ".join(problems),
        "exit": process.returncode,
        "stderr": [line[:300] for line in err_lines[-3:]],
        "stdout_bytes": len(stdout),
        "seconds": round(seconds, 1),
        "peak_rss_mb": None if rss is None else round(rss / 1e6),
    }


_RSS: dict[int, int] = {}


def _wait_recording_rss(self: subprocess.Popen, wait_flags: int) -> tuple[int, int]:
    """Popen's own wait, through wait4: each child's peak RSS, which a plain wait does not give."""
    pid, status, usage = os.wait4(self.pid, wait_flags)
    if pid == self.pid:
        _RSS[pid] = usage.ru_maxrss * 1024  # Linux reports KiB
    return pid, status


def peak_rss_of(pid: int) -> int | None:
    return _RSS.get(pid)


def prepare(base: Path) -> None:
    """The shared inputs: a tiny model, two slices, two ONNX artifacts, an eval cache.

    All built in child processes: this process stays small, since Linux hands a parent's peak RSS
    to its children (`ru_maxrss` survives fork and exec), and the RSS bound is about the children.
    """
    env = {**os.environ, "EDGEBERT_CACHE": str(base / "cache"), "OMP_NUM_THREADS": "1"}
    build = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import hostile; "
    subprocess.run(
        [sys.executable, "-c", build + f"hostile.tiny_model(hostile.Path({str(base / 'model')!r}))"], check=True
    )

    def run(*args: object) -> None:
        subprocess.run([sys.executable, "-m", "edgebert", *map(str, args)], check=True, env=env, capture_output=True)

    run("slice", base / "model", "--width", "0.5", "--depth", "0.5", "--out", base / "slice-0.5")
    run("export", base / "model", "--width", "0.5", "--depth", "0.5", "--out", base / "a.onnx")
    run("export", base / "model", "--width", "0.25", "--depth", "0.5", "--out", base / "b.onnx")
    (base / "d.tsv").write_text("sentence\tlabel\n" + "".join(f"w{i} w{i + 1}\t{i % 2}\n" for i in range(110, 150)))
    run("eval", base / "model", "--data", base / "d.tsv", "--grid")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-k", default="", help="run the cases whose name contains this")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    global BASE
    root = Path(tempfile.mkdtemp(prefix="edgebert-hostile-"))
    BASE = root / "base"
    BASE.mkdir()
    prepare(BASE)
    shutil.copytree(BASE / "cache", root / "cache")
    cases = [c for c in CASES if args.k in c.name]
    subprocess.Popen._try_wait = _wait_recording_rss  # CPython's POSIX hook for wait(); private but long stable
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda c: run_case(c, root), cases))
    held = sum(r["held"] for r in results)
    report = {"tried": len(results), "held": held, "cases": results}
    RESULTS.mkdir(exist_ok=True)
    if not args.k:
        (RESULTS / "hostile.json").write_text(json.dumps(report, indent=2) + "\n")
        lines = ["| case | expected | held | why |", "|---|---|---|---|"]
        lines += [
            f"| {r['name']} | {r.get('expect', '')} | {'yes' if r['held'] else 'NO'} | {r['why']} |" for r in results
        ]
        (RESULTS / "hostile.md").write_text(f"{held} of {len(results)} held\n\n" + "\n".join(lines) + "\n")
    for r in results:
        if not r["held"]:
            print(f"FAILED  {r['name']}: {r['why']}  {r.get('stderr', '')}")
    print(f"{held} of {len(results)} held")
    shutil.rmtree(root, ignore_errors=True)


BASE = Path()

if __name__ == "__main__":
    main()
