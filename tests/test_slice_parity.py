"""The slice equals the official DynaBERT sub-network (fp32, CPU) to 1e-5 on the whole trained grid."""

from __future__ import annotations

import pytest
import torch
import transformers

from edgebert.checkpoint import load_checkpoint
from edgebert.slicing import slice_checkpoint
from edgebert.subnet import TRAINED_GRID, parameter_count, subnetwork
from tests.reference import masked_subnetwork, official_rule

TOLERANCE = 1e-5


def padded_batch(vocab_size: int, seq_len: int = 12, with_token_types: bool = True, first_id: int = 3):
    """Four rows padded to different lengths, the last on the left (RoBERTa's positions must skip its padding),
    with two segments where the model has token types."""
    generator = torch.Generator().manual_seed(7)
    input_ids = torch.randint(first_id, vocab_size, (4, seq_len), generator=generator)
    spans = [(0, seq_len), (0, seq_len - 4), (0, 5), (seq_len - 7, seq_len)]  # [start, end) of the real tokens
    attention_mask = torch.zeros(4, seq_len, dtype=torch.long)
    token_type_ids = torch.zeros(4, seq_len, dtype=torch.long)
    for row, (start, end) in enumerate(spans):
        attention_mask[row, start:end] = 1
        input_ids[row, :start] = input_ids[row, end:] = 0 if first_id == 3 else 1
        if with_token_types:
            token_type_ids[row, (start + end) // 2 : end] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


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
        if theirs.pooler_output is not None:
            diff = max(diff, (ours.pooler_output - theirs.pooler_output).abs().max().item())
    assert diff <= TOLERANCE, f"max abs diff {diff:.2e} > {TOLERANCE}"
    return diff


def check_grid(directory, classifier: bool, batch) -> None:
    checkpoint = load_checkpoint(directory)
    full = hf_model(directory, classifier)
    for width, depth in TRAINED_GRID:
        sliced = slice_checkpoint(checkpoint, width, depth)
        heads, neurons, layers = official_rule(
            checkpoint.arch.num_layers, checkpoint.arch.num_heads, checkpoint.arch.intermediate_size, width, depth
        )
        assert sliced.manifest["layers_kept"] == layers
        assert sliced.manifest["heads_kept"] == heads and sliced.manifest["ffn_neurons_kept"] == neurons
        # A dense slice: its tensors have the sliced shapes, and count what the cost model says.
        query = sliced.model.base_model.encoder.layer[0].attention.self.query.weight
        assert query.shape == (heads * checkpoint.arch.head_size, checkpoint.arch.hidden_size)
        assert len(sliced.model.base_model.encoder.layer) == len(layers)
        count = sum(p.numel() for p in sliced.model.parameters())
        assert count == parameter_count(checkpoint.arch, subnetwork(checkpoint.arch, width, depth))
        assert_outputs_match(sliced.model, masked_subnetwork(full, width, depth), batch)


@pytest.mark.parametrize("name", ["bert-cls", "bert-bare", "roberta-cls", "roberta-bare"])
def test_grid_parity_tiny(tiny_models, name):
    kind, head = name.split("-")
    batch = padded_batch(120, with_token_types=kind == "bert", first_id=3 if kind == "bert" else 4)
    check_grid(tiny_models[name], head == "cls", batch)


def test_grid_parity_legacy_checkpoint(legacy_bert_dir, tiny_models):
    """pytorch_model.bin with gamma/beta names and legacy config keys slices like the modern save."""
    legacy, modern = load_checkpoint(legacy_bert_dir), load_checkpoint(tiny_models["bert-cls"])
    assert legacy.model_type == "bert" and legacy.arch == modern.arch
    batch = padded_batch(120)
    for width, depth in TRAINED_GRID:
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


def test_grid_parity_real_minilm_encoder(minilm_dir, minilm_batch):
    check_grid(minilm_dir, classifier=False, batch=minilm_batch)


def test_grid_parity_real_minilm_with_classifier(minilm_cls_dir, minilm_batch):
    check_grid(minilm_cls_dir, classifier=True, batch=minilm_batch)


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_roberta_artifact_left_padding_matches_transformers(tiny_models, tmp_path, fmt):
    """The exported graph derives positions from the non-pad tokens too (cumsum survives both exporters)."""
    pytest.importorskip("onnxruntime" if fmt == "onnx" else "ai_edge_litert")
    from edgebert.export import EXPORTERS, export_model

    seq_len = 12
    artifact = tmp_path / f"roberta.{fmt}"
    export_model(tiny_models["roberta-cls"], fmt, "fp32", seq_len=seq_len, out=artifact)
    batch = padded_batch(120, seq_len, with_token_types=False, first_id=4)
    left = {name: batch[name][3:] for name in ("input_ids", "attention_mask")}  # the left-padded row
    assert left["attention_mask"][0, 0] == 0
    (logits,) = EXPORTERS[fmt]().run(artifact, {name: t.numpy() for name, t in left.items()})
    with torch.no_grad():
        expected = hf_model(tiny_models["roberta-cls"], classifier=True)(**left).logits
    assert (torch.from_numpy(logits) - expected).abs().max().item() <= 1e-4
