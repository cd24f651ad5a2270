"""A slice keeping every head and FFN neuron (width 1, any depth) is transformers' own class (BERT's, ELECTRA's...).

Stock transformers and sentence-transformers load it in a process that never imports edgebert, and
it computes the official DynaBERT sub-network (tests.reference: the full transformers model with
layers skipped). Everything in edgebert that reads a slice reads it too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import transformers

from edgebert.bundle import BUNDLE_FILE
from edgebert.slicing import load_slice, slice_model
from tests.cli_checks import assert_one_line_error
from tests.models import ENCODER, KIND_NAMES, own_key, padded_batch
from tests.reference import layer_list, masked_subnetwork, official_rule
from tests.test_slice_parity import assert_outputs_match, hf_model

KINDS = KIND_NAMES
DEPTHS = [1.0, 0.75, 0.5]  # at 0.75 ModernBERT's kept layers are no longer global every third one, as at 0.5
# transformers' attention for a family where its default one (sdpa) computes another function: ModernBERT's sdpa
# differs from its eager one (0.26 on a left-padded row, whose token 0, pooled, sees no key in a local layer), and
# eager is its official reference, which edgebert follows; every other family is loaded as users load it
STOCK_ATTENTION = {"modernbert": "eager"}
SENTENCES = ["DynaBERT's sub-networks all work well.", "A small CPU runs it.", "Which one fits a phone?"]

# Runs in a fresh interpreter: loads each slice with stock transformers (or sentence-transformers) only.
NO_EDGEBERT = """
import json, sys
import torch, transformers

jobs = json.loads(sys.argv[1])
for job in jobs:
    if job["kind"] == "sentence-transformers":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(job["slice"], device="cpu")
        outputs = {"embeddings": torch.from_numpy(model.encode(job["sentences"], convert_to_numpy=True))}
    else:
        auto = transformers.AutoModelForSequenceClassification if job["classifier"] else transformers.AutoModel
        model, info = auto.from_pretrained(job["slice"], output_loading_info=True, **job["attention"])
        assert not any(info.values()), info
        with torch.no_grad():
            result = model.eval()(**torch.load(job["batch"]))
        outputs = {name: value for name, value in result.items() if value is not None}
        outputs["class"] = type(model).__name__
    torch.save(outputs, job["out"])
loaded = sorted(name for name in sys.modules if name.split(".")[0] == "edgebert")
assert not loaded, loaded
"""


@pytest.fixture(scope="module")
def stock_slices(tiny_models, tmp_path_factory) -> dict[tuple[str, float], Path]:
    root = tmp_path_factory.mktemp("stock-slices")
    return {
        (name, depth): slice_model(tiny_models[name], 1.0, depth, out=root / f"{name}-d{depth:g}")[0]
        for name in KINDS
        for depth in DEPTHS
    }


@pytest.fixture(scope="module")
def reference(tiny_models):
    """The official (1, depth) sub-network of a tiny model (its full transformers model loaded once)."""
    full = {name: hf_model(tiny_models[name], name.endswith("cls")) for name in KINDS}
    return lambda name, depth: masked_subnetwork(full[name], 1.0, depth)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("name", KINDS)
def test_a_full_width_slice_is_the_stock_class(stock_slices, tiny_models, reference, name, depth):
    """config.json is the source's with fewer layers; transformers builds its own class, which computes the
    official sub-network; edgebert reads it back (export's path) to the same outputs."""
    out, kind = stock_slices[name, depth], name.rsplit("-", 1)[0]
    kept = official_rule(12, 12, ENCODER["intermediate_size"], 1.0, depth)[2]  # of the tiny models' 12 layers
    source = json.loads((tiny_models[name] / "config.json").read_text())
    changed = {own_key(kind, "num_hidden_layers"): len(kept)}
    if "layer_types" in source:  # ModernBERT's: each kept layer keeps its own attention (global or local)
        changed["layer_types"] = [source["layer_types"][index] for index in kept]
    assert json.loads((out / "config.json").read_text()) == source | changed
    classifier = name.endswith("cls")
    auto = transformers.AutoModelForSequenceClassification if classifier else transformers.AutoModel
    loaded, info = auto.from_pretrained(out, attn_implementation="eager", output_loading_info=True)
    assert not any(info.values()), info  # every weight where transformers' class expects it, nothing left over
    assert [type(loaded).__name__] == source["architectures"] and len(getattr(*layer_list(loaded))) == len(kept)
    assert_outputs_match(loaded.eval(), reference(name, depth), padded_batch(kind))
    assert_outputs_match(load_slice(out).model.eval(), reference(name, depth), padded_batch(kind))


@pytest.fixture(scope="module")
def without_edgebert(stock_slices, minilm_dir, tmp_path_factory) -> dict[str, dict]:
    """Outputs of the depth-0.5 slices (and a MiniLM w1 d0.5 slice) from one interpreter that never imports edgebert."""
    pytest.importorskip("sentence_transformers")
    root = tmp_path_factory.mktemp("no-edgebert")
    jobs = []
    for name in KINDS:
        batch, kind = root / f"{name}-batch.pt", name.rsplit("-", 1)[0]
        torch.save(padded_batch(kind), batch)
        slice_dir, classifier = str(stock_slices[name, 0.5]), name.endswith("cls")
        attention = {"attn_implementation": STOCK_ATTENTION[kind]} if kind in STOCK_ATTENTION else {}
        jobs.append(
            {"kind": name, "slice": slice_dir, "classifier": classifier, "batch": str(batch), "attention": attention}
        )
    minilm = slice_model(minilm_dir, 1.0, 0.5, out=root / "minilm-w1-d0.5")[0]
    jobs.append({"kind": "sentence-transformers", "slice": str(minilm), "sentences": SENTENCES})
    for job in jobs:
        job["out"] = str(root / f"{job['kind']}.pt")
    done = subprocess.run(
        [sys.executable, "-c", NO_EDGEBERT, json.dumps(jobs)], capture_output=True, text=True, cwd=root, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {job["kind"]: torch.load(job["out"]) for job in jobs}


@pytest.mark.parametrize("name", KINDS)
def test_stock_transformers_loads_it_without_edgebert(without_edgebert, reference, tiny_models, name):
    outputs = dict(without_edgebert[name])
    assert [outputs.pop("class")] == json.loads((tiny_models[name] / "config.json").read_text())["architectures"]

    def loaded(**batch):  # the fresh process's outputs, as assert_outputs_match calls a model
        return SimpleNamespace(**outputs)

    assert_outputs_match(loaded, reference(name, 0.5), padded_batch(name.rsplit("-", 1)[0]))


def test_sentence_transformers_loads_a_minilm_slice_without_edgebert(without_edgebert, minilm_dir):
    """Its embeddings are the official (1, 0.5) sub-network's, mean-pooled over the real tokens and normalised
    (all-MiniLM-L6-v2's modules)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    batch = dict(tokenizer(SENTENCES, padding=True, return_tensors="pt"))
    reference = masked_subnetwork(hf_model(minilm_dir, classifier=False), 1.0, 0.5)
    with torch.no_grad():
        hidden = reference(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    mean = (hidden * mask).sum(1) / mask.sum(1)
    expected = torch.nn.functional.normalize(mean, dim=1)
    assert (without_edgebert["sentence-transformers"]["embeddings"] - expected).abs().max().item() <= 1e-5


def test_a_stock_slice_is_still_a_slice(stock_slices, run_cli, tmp_path):
    """edgebert.json marks it: slicing it again is refused before anything loads; `info` shows the slice's one row."""
    out = stock_slices["bert-cls", 0.5]
    again = run_cli("slice", out, "--width", "0.5", "--out", tmp_path / "again")
    assert_one_line_error(again, "is a slice edgebert wrote")
    info = run_cli("info", out, "--json")
    assert info.code == 0, info.stderr
    (row,) = json.loads(info.stdout)["grid"]
    assert (row["width"], row["depth"], row["layers_kept"]) == (1.0, 0.5, [0, 2, 4, 6, 8, 10])


def test_a_stock_slice_exports_to_a_bundle_with_its_labels(stock_slices, tiny_models, tmp_path):
    from edgebert.export import export_model

    bundle = tmp_path / "bundle"
    export_model(stock_slices["bert-cls", 0.5], "onnx", "fp32", out=bundle)
    config = transformers.AutoConfig.from_pretrained(bundle)
    source = json.loads((tiny_models["bert-cls"] / "config.json").read_text())
    assert config.model_type == "bert" and config.architectures == ["BertForSequenceClassification"]
    assert config.id2label == {int(key): label for key, label in source["id2label"].items()}
    assert json.loads((bundle / BUNDLE_FILE).read_text())["manifest"]["depth"] == 0.5
