"""Rewiring: importance against an independent autograd reference, outputs unchanged, orders applied."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from edgebert.checkpoint import load_checkpoint
from edgebert.data import read_dataset
from edgebert.errors import EdgebertError
from edgebert.manifests import REWIRE_MANIFEST
from edgebert.rewire import rewire_checkpoint, rewire_model
from tests.labelled import TOKENIZED_KINDS, VOCAB, build_classifier, sentences, stock_tokenizer, tokenizer_for
from tests.reference import scaled_importance


@pytest.fixture(scope="module")
def dev_file(tmp_path_factory):
    """20 labelled pairs (labels by a fixed rule, so the loss is not trivial), GLUE-style with extra columns."""
    path = tmp_path_factory.mktemp("rewire-data") / "dev.tsv"
    rows = ["index\tsentence1\tsentence2\tlabel"]
    for i, (a, b) in enumerate(sentences(20, seed=5)):
        rows.append(f"{i}\t{a}\t{b}\t{'pos' if len(a) > len(b) else 'neg'}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def classifiers(labelled_classifier, tmp_path_factory):
    """A labelled classifier of each kind with a tiny tokenizer (tests.labelled), built once: BERT's is conftest's."""
    built = {"bert": labelled_classifier}

    def build(kind: str):
        if kind not in built:
            built[kind] = build_classifier(tmp_path_factory.mktemp(kind) / "classifier", kind=kind)
        return built[kind]

    return build


def reference_batches(data_file, model_dir, batch_size=8):
    """The dev file in file order, batches of 8, tokenized by transformers alone."""
    data = read_dataset(data_file)
    tokenizer = stock_tokenizer(model_dir)
    batches = []
    for start in range(0, len(data), batch_size):
        end = start + batch_size
        inputs = tokenizer(data.first[start:end], data.second[start:end], padding=True, return_tensors="pt")
        targets = torch.tensor([{"neg": 0, "pos": 1}[label] for label in data.labels[start:end]])
        batches.append((dict(inputs), targets))
    return batches


@pytest.mark.parametrize(
    ("kind", "accumulation"),
    [("bert", "official"), ("bert", "per-batch"), *((kind, "official") for kind in TOKENIZED_KINDS if kind != "bert")],
)
def test_importance_matches_autograd_on_scales(classifiers, dev_file, kind, accumulation):
    """Head importance = |d loss / d head scale|, neuron = |d/d alpha| + |d/d beta| (pre-activation and
    output scales), summed per batch; "official" sums the absolute running sum of the batch gradients."""
    classifier = classifiers(kind)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(classifier).eval()
    per_batch = scaled_importance(model, reference_batches(dev_file, classifier))
    heads = torch.zeros_like(per_batch[0][0])
    neurons = torch.zeros_like(per_batch[0][1])
    running = [torch.zeros_like(t) for t in per_batch[0]]
    for grads in per_batch:
        if accumulation == "official":  # gradients never zeroed between batches
            running = [r + g for r, g in zip(running, grads, strict=True)]
            g_m, g_alpha, g_beta = running
        else:
            g_m, g_alpha, g_beta = grads
        heads += g_m.abs()
        neurons += g_alpha.abs() + g_beta.abs()

    _, manifest = rewire_checkpoint(load_checkpoint(classifier), read_dataset(dev_file), accumulation=accumulation)
    got_heads = torch.tensor(manifest.head_importance)
    got_neurons = torch.tensor(manifest.neuron_importance)
    assert torch.allclose(got_heads, heads, rtol=1e-4, atol=1e-7)
    assert torch.allclose(got_neurons, neurons, rtol=1e-4, atol=1e-7)
    assert manifest.head_order == torch.sort(heads, descending=True, stable=True).indices.tolist()
    assert len(per_batch) == 3  # 20 examples in batches of 8: the accumulation choice matters


def test_rewired_model_keeps_outputs_and_applies_the_order(labelled_classifier, dev_file, tmp_path, run_cli):
    result = run_cli("rewire", labelled_classifier, "--data", dev_file, "--out", tmp_path / "rewired", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["max_abs_diff"] <= 1e-5
    manifest = json.loads((tmp_path / "rewired" / REWIRE_MANIFEST).read_text())

    # Stock transformers loads it, and the full model's logits are unchanged.
    before = transformers.AutoModelForSequenceClassification.from_pretrained(labelled_classifier).eval()
    after = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "rewired").eval()
    assert type(after).__name__ == "BertForSequenceClassification"
    inputs = tokenizer_for(VOCAB)([a for a, _ in sentences(6, 9)], [b for _, b in sentences(6, 9)], padding=True)
    inputs = {k: torch.tensor(v) for k, v in inputs.items()}
    with torch.no_grad():
        assert (before(**inputs).logits - after(**inputs).logits).abs().max() <= 1e-5

    # New head i of layer 3 is old head order[i]: its 4-row block of query weights moved with it.
    size = before.config.hidden_size // before.config.num_attention_heads
    order = manifest["head_order"][3]
    old_q = before.bert.encoder.layer[3].attention.self.query.weight
    new_q = after.bert.encoder.layer[3].attention.self.query.weight
    for new, old in enumerate(order):
        assert torch.equal(new_q[new * size : (new + 1) * size], old_q[old * size : (old + 1) * size])
    neurons = manifest["neuron_order"][3]
    old_out = before.bert.encoder.layer[3].output.dense.weight
    assert torch.equal(after.bert.encoder.layer[3].output.dense.weight, old_out[:, neurons])
    # Each layer's orders are permutations sorted by descending importance.
    for scores, order in zip(manifest["neuron_importance"], manifest["neuron_order"], strict=True):
        assert sorted(order) == list(range(len(scores)))
        ordered = [scores[i] for i in order]
        assert ordered == sorted(ordered, reverse=True)


def test_fused_tensors_move_in_every_block(classifiers, dev_file, tmp_path, run_cli):
    """ModernBERT's Wqkv (Q, K and V heads stacked) and GeGLU's Wi (inputs and gates stacked) move per head and per
    neuron in each block; stock transformers loads the result and its logits are unchanged."""
    source = classifiers("modernbert")
    result = run_cli("rewire", source, "--data", dev_file, "--out", tmp_path / "rewired", "--json")
    assert result.code == 0, result.stderr
    manifest = json.loads((tmp_path / "rewired" / REWIRE_MANIFEST).read_text())
    before = transformers.AutoModelForSequenceClassification.from_pretrained(source).eval()
    after = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "rewired").eval()
    assert type(after).__name__ == "ModernBertForSequenceClassification"
    data = read_dataset(dev_file)
    inputs = stock_tokenizer(source)(data.first, data.second, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert (before(**inputs).logits - after(**inputs).logits).abs().max() <= 1e-5

    config = before.config
    size, inner, ffn = config.hidden_size // config.num_attention_heads, config.hidden_size, config.intermediate_size
    for index in (0, 4):  # layer 0 has no attention norm
        old, new = before.model.layers[index], after.model.layers[index]
        heads, neurons = manifest["head_order"][index], manifest["neuron_order"][index]
        assert heads != sorted(heads) and neurons != sorted(neurons)
        for block in range(3):  # Q, K, V
            for position, head in enumerate(heads):
                start, was = block * inner + position * size, block * inner + head * size
                assert torch.equal(new.attn.Wqkv.weight[start : start + size], old.attn.Wqkv.weight[was : was + size])
        assert torch.equal(
            new.attn.Wo.weight, old.attn.Wo.weight[:, [h * size + i for h in heads for i in range(size)]]
        )
        for block in range(2):  # GeGLU's inputs, then its gates
            assert torch.equal(
                new.mlp.Wi.weight[block * ffn : (block + 1) * ffn],
                old.mlp.Wi.weight[block * ffn + torch.tensor(neurons)],
            )
        assert torch.equal(new.mlp.Wo.weight, old.mlp.Wo.weight[:, neurons])


def test_unlabelled_text_uses_the_models_predictions(labelled_classifier, tmp_path):
    text = tmp_path / "sentences.txt"
    text.write_text("\n".join(f"{a} {b}" for a, b in sentences(12, seed=3)) + "\n")
    out, manifest = rewire_model(labelled_classifier, text, tmp_path / "rewired")
    assert manifest.labels == "model predictions"
    assert manifest.data.examples == 12
    assert manifest.max_abs_diff <= 1e-5 and manifest.max_abs_diff_fp64 <= 1e-12
    assert (out / "tokenizer_config.json").is_file() and (out / "vocab.txt").is_file()


def test_rewiring_without_a_classifier_is_refused(tiny_models, dev_file, run_cli, tmp_path):
    result = run_cli("rewire", tiny_models["bert-bare"], "--data", dev_file, "--out", tmp_path / "x")
    assert result.code == 1
    assert result.stderr.startswith("error:") and "no classifier head" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_a_wrong_permutation_is_caught(labelled_classifier, dev_file, monkeypatch):
    """The check runs the full model before and after: permuting Q rows but not K rows changes the logits."""
    import edgebert.rewire as rewire

    real = rewire.permute_state

    def broken(state, arch, head_order, neuron_order):
        permuted = real(state, arch, head_order, neuron_order)
        key = "encoder.layer.0.attention.self.key.weight"
        permuted[key] = state[key]  # keys left in the old head order
        return permuted

    monkeypatch.setattr(rewire, "permute_state", broken)
    with pytest.raises(EdgebertError, match="in fp64: a bug"):
        rewire_checkpoint(load_checkpoint(labelled_classifier), read_dataset(dev_file))
