"""The slice equals the official DynaBERT sub-network (fp32, CPU) to 1e-5 on the whole trained grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from edgebert.checkpoint import load_checkpoint
from edgebert.export import EXPORTERS
from edgebert.runtimes import runtime_for_format
from edgebert.slicing import slice_checkpoint
from edgebert.subnet import parameter_count, subnetwork
from tests.models import EVERY_GRID_POINT, KIND_NAMES, padded_batch
from tests.reference import masked_subnetwork, official_rule

TOLERANCE = 1e-5


def hf_model(directory, classifier: bool):
    cls = transformers.AutoModelForSequenceClassification if classifier else transformers.AutoModel
    return cls.from_pretrained(directory, attn_implementation="eager").eval()


def assert_outputs_match(sliced, reference, batch) -> float:
    """Compare logits, or hidden states on real (non-padding) tokens plus the pooled output."""
    with torch.no_grad():
        ours, theirs = sliced(**batch), reference(**batch)
    if hasattr(theirs, "logits"):
        diff = (ours.logits - theirs.logits).abs().max().item()
    else:
        real = batch["attention_mask"].bool()
        diff = (ours.last_hidden_state[real] - theirs.last_hidden_state[real]).abs().max().item()
        if getattr(theirs, "pooler_output", None) is not None:  # ELECTRA's encoder has no pooler
            diff = max(diff, (ours.pooler_output - theirs.pooler_output).abs().max().item())
    assert diff <= TOLERANCE, f"max abs diff {diff:.2e} > {TOLERANCE}"
    return diff


@pytest.fixture(scope="module")
def loaded():
    """(checkpoint, full transformers model) of a directory, loaded once per module."""
    cache: dict[tuple[str, bool], tuple] = {}

    def load(directory, classifier: bool):
        key = (str(directory), classifier)
        if key not in cache:
            cache[key] = load_checkpoint(directory), hf_model(directory, classifier)
        return cache[key]

    return load


def check_point(checkpoint, full, width: float, depth: float, batch) -> None:
    """The dense slice keeps what the official rule keeps, counts what the cost model says, and computes
    what the masked full model computes."""
    sliced = slice_checkpoint(checkpoint, width, depth)
    arch = checkpoint.arch
    heads, neurons, layers = official_rule(arch.num_layers, arch.num_heads, arch.intermediate_size, width, depth)
    assert sliced.manifest["layers_kept"] == layers
    assert sliced.manifest["heads_kept"] == heads and sliced.manifest["ffn_neurons_kept"] == neurons
    base = sliced.model.base_model
    if arch.layers == "modernbert":  # fused Q, K, V
        query = base.layers[0].attn.Wqkv.weight[: heads * arch.head_size]
        assert base.layers[0].attn.Wqkv.weight.shape[0] == 3 * heads * arch.head_size
    else:
        query = base.encoder.layer[0].attention.self.query.weight
    assert query.shape == (heads * arch.head_size, arch.hidden_size)
    assert len(base.layers if arch.layers == "modernbert" else base.encoder.layer) == len(layers)
    count = sum(p.numel() for p in sliced.model.parameters())
    assert count == parameter_count(arch, subnetwork(arch, width, depth))
    assert_outputs_match(sliced.model, masked_subnetwork(full, width, depth), batch)


@EVERY_GRID_POINT
@pytest.mark.parametrize("name", KIND_NAMES)
def test_grid_parity_tiny(tiny_models, loaded, name, width, depth):
    kind, head = name.rsplit("-", 1)
    check_point(*loaded(tiny_models[name], head == "cls"), width, depth, padded_batch(kind))


@EVERY_GRID_POINT
def test_grid_parity_legacy_checkpoint(legacy_bert_dir, tiny_models, width, depth):
    """pytorch_model.bin with gamma/beta names and legacy config keys slices like the modern save."""
    legacy, modern = load_checkpoint(legacy_bert_dir), load_checkpoint(tiny_models["bert-cls"])
    assert legacy.model_type == "bert" and legacy.arch == modern.arch
    batch = padded_batch("bert")
    with torch.no_grad():
        a = slice_checkpoint(legacy, width, depth).model(**batch).logits
        b = slice_checkpoint(modern, width, depth).model(**batch).logits
    assert torch.equal(a, b)


@pytest.fixture(scope="module")
def minilm_batch(minilm_dir):
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    sentences = [
        "DynaBERT trains one network whose sub-networks of smaller width and depth all work well.",
        "A small CPU runs it.",
        "Which pair of sentences is about edge devices?",
    ]
    batch = tokenizer(sentences, ["It is fast.", "Phones and boards.", "This one."], padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any() and (batch["token_type_ids"] == 1).any()
    return dict(batch)


@EVERY_GRID_POINT
def test_grid_parity_real_minilm_encoder(minilm_dir, minilm_batch, loaded, width, depth):
    check_point(*loaded(minilm_dir, False), width, depth, minilm_batch)


@EVERY_GRID_POINT
def test_grid_parity_real_minilm_with_classifier(minilm_cls_dir, minilm_batch, loaded, width, depth):
    check_point(*loaded(minilm_cls_dir, True), width, depth, minilm_batch)


def run_artifact(artifact: Path, feeds: dict) -> np.ndarray:
    """The artifact's first output, from its runtime called directly (not through edgebert's runtime layer)."""
    if artifact.suffix == ".onnx":
        onnxruntime = pytest.importorskip("onnxruntime")
        session = onnxruntime.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
        dtypes = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
        return session.run(None, {i.name: feeds[i.name].astype(dtypes[i.type]) for i in session.get_inputs()})[0]
    if artifact.suffix == ".tflite":
        interpreter = pytest.importorskip("ai_edge_litert.interpreter")
        runner = interpreter.Interpreter(model_path=str(artifact)).get_signature_runner()
        inputs = {name: feeds[name].astype(d["dtype"]) for name, d in runner.get_input_details().items()}
        return next(iter(runner(**inputs).values()))
    if artifact.suffix == ".pte":  # no tensor names in a .pte: the exporter's signature method lists the inputs
        runtime = pytest.importorskip("executorch.runtime")
        program = runtime.Runtime.get().load_program(artifact)
        specs = json.loads(program.load_method("edgebert_signature").execute([])[0])["inputs"]
        inputs = [torch.from_numpy(feeds[spec["name"]].astype(spec["dtype"])) for spec in specs]
        return program.load_method("forward").execute(inputs)[0].numpy()
    raise AssertionError(f"no runner for {artifact.suffix} artifacts here: add one for the new exporter")


@pytest.mark.parametrize("fmt", sorted(EXPORTERS))
def test_roberta_artifact_left_padding_matches_transformers(tiny_models, tmp_path, fmt):
    """The exported graph derives positions from the non-pad tokens too (cumsum survives every exporter)."""
    from edgebert.export import export_model

    seq_len, width, depth = 12, 0.25, 0.5  # the smallest slice: the conversion takes seconds per layer
    artifact = tmp_path / f"roberta{runtime_for_format(fmt).suffix}"
    export_model(tiny_models["roberta-cls"], fmt, "fp32", width=width, depth=depth, seq_len=seq_len, out=artifact)
    batch = padded_batch("roberta", seq_len)
    left = {name: batch[name][3:] for name in ("input_ids", "attention_mask")}  # the left-padded row
    assert left["attention_mask"][0, 0] == 0
    logits = run_artifact(artifact, {name: t.numpy() for name, t in left.items()})
    with torch.no_grad():
        full = hf_model(tiny_models["roberta-cls"], classifier=True)
        expected = masked_subnetwork(full, width, depth)(**left).logits
    assert (torch.from_numpy(logits) - expected).abs().max().item() <= 1e-4
