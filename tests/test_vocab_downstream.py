"""Everything downstream of `slice --vocab-from` works on a pruned slice (issue 21): every export format and
precision passes its gate, the ONNX bundle's tokenizer.json and MediaPipe's vocab.txt give the slice's ids, a
bundle never mixes a pruned and an unpruned slice, `bench --text` runs the bundle, `eval` scores the slice.

The references are computed apart from that code: the kept ids and the ids each text should get from the
source's own tokenizer (transformers' AutoTokenizer on the source directory, tests.test_vocab_prune), the
expected outputs from the unpruned slice (transformers' Auto classes) fed the source tokenizer's ids.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from edgebert.evaluate import evaluate
from edgebert.export import EXPORTERS, export_model
from edgebert.precisions import PRECISIONS
from edgebert.slicing import slice_model
from tests.artifacts import tflite_converted_once
from tests.cli_checks import assert_one_line_error
from tests.labelled import tokenizer_for
from tests.test_export import assert_gate
from tests.test_vocab_prune import (
    DROPPED_TEXTS,
    KEPT_TEXTS,
    SOURCE_TEXTS,
    UNK,
    VOCAB,
    build_wordpiece_bert,
    expected_kept,
    model_of,
    outputs,
    tokenizer_of,
    write_lines,
)

WIDTH, DEPTH = 0.5, 0.75  # a narrower slice: edgebert's own class, the one every exporter converts
FIXED = 16  # TFLite's fixed length (the model has 64 positions)
TEXTS = [*SOURCE_TEXTS, *KEPT_TEXTS]  # every token kept
QUICK = ["--runs", "3", "--warmup", "1", "--min-time", "0", "--json"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """The tiny WordPiece BERT classifier, its (0.5, 0.75) slice unpruned and pruned to SOURCE_TEXTS, the kept ids."""
    root = tmp_path_factory.mktemp("vocab-downstream")
    source = build_wordpiece_bert(root / "wp-bert")
    texts = write_lines(root / "texts.txt", SOURCE_TEXTS)
    return {
        "source": source,
        "plain": slice_model(source, WIDTH, DEPTH, out=root / "plain")[0],
        "pruned": slice_model(source, WIDTH, DEPTH, out=root / "pruned", vocab_from=[texts])[0],
        "kept": expected_kept(source, SOURCE_TEXTS),
        "root": root,
    }


@pytest.fixture(scope="module")
def bundles(models) -> dict:
    """The pruned slice's every precision added into one bundle per format: {(format, precision): sidecar}."""
    root = models["root"]
    with tflite_converted_once(root / "fp32-conversions"):
        return {
            (fmt, precision): export_model(models["pruned"], fmt, precision, seq_len=FIXED, out=root / f"pruned-{fmt}")
            for fmt, exporter in EXPORTERS.items()
            for precision in exporter.precisions
        }


def slice_ids(models: dict, texts: list[str]) -> list[list[int]]:
    """The ids the pruned slice's rows need: the source tokenizer's, each kept id's rank, a dropped one [UNK]'s."""
    kept = models["kept"]
    rows = tokenizer_of(models["source"])(texts)["input_ids"]
    return [[kept.index(i) if i in kept else kept.index(UNK) for i in row] for row in rows]


def plain_logits(models: dict, texts: list[str], **padding) -> np.ndarray:
    """The unpruned slice's logits on the source tokenizer's ids."""
    batch = tokenizer_of(models["source"])(texts, padding=True, return_tensors="pt", **padding)
    return outputs(model_of(models["plain"], classifier=True), dict(batch), classifier=True).numpy()


# --- export -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "precision"), [(fmt, precision) for fmt, exporter in EXPORTERS.items() for precision in exporter.precisions]
)
def test_every_format_and_precision_of_a_pruned_slice_passes_its_gate(models, bundles, fmt, precision):
    sidecar = bundles[fmt, precision]
    assert_gate(sidecar, precision)
    assert sidecar["vocab_size"] == len(models["kept"]) < len(VOCAB)
    bundle = Path(sidecar["bundle"])
    assert json.loads((bundle / "config.json").read_text())["vocab_size"] == len(models["kept"])
    assert json.loads((bundle / "edgebert-bundle.json").read_text())["manifest"]["vocabulary"]["kept"] == len(
        models["kept"]
    )


@pytest.mark.parametrize("fmt", list(EXPORTERS))
def test_the_bundle_tokenizer_gives_the_pruned_ids(models, bundles, fmt):
    """tokenizer.json as transformers (Optimum) and the tokenizers library (transformers.js reads the same file)
    load it: kept tokens get their rank among the kept ids, dropped ones [UNK]'s."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    bundle = Path(bundles[fmt, "fp32"]["bundle"])
    expected = slice_ids(models, [*TEXTS, *DROPPED_TEXTS])
    assert max(map(max, expected[: len(TEXTS)])) < len(models["kept"])
    assert AutoTokenizer.from_pretrained(bundle)([*TEXTS, *DROPPED_TEXTS])["input_ids"] == expected
    backend = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    assert [encoding.ids for encoding in backend.encode_batch([*TEXTS, *DROPPED_TEXTS])] == expected


def test_the_onnx_bundle_gives_the_unpruned_slice_logits_on_kept_texts(models, bundles):
    import onnxruntime as ort
    from transformers import AutoTokenizer

    bundle = Path(bundles["onnx", "fp32"]["bundle"])
    feeds = dict(AutoTokenizer.from_pretrained(bundle)(TEXTS, padding=True, return_tensors="np"))
    session = ort.InferenceSession(str(bundle / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], feeds)
    np.testing.assert_allclose(logits, plain_logits(models, TEXTS), atol=1e-4)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_the_tflite_vocab_and_mediapipe_metadata_list_the_kept_tokens(models, bundles, precision):
    """MediaPipe's BertTokenizer looks tokens up by their line in the embedded vocab.txt: line i must be the
    token of row i, so a text of kept tokens gets the ids the pruned slice's rows need."""
    sidecar = bundles["tflite", precision]
    kept_tokens = [VOCAB[i] for i in models["kept"]]
    embedded = zipfile.ZipFile(sidecar["path"]).read("vocab.txt").decode().splitlines()
    assert embedded == kept_tokens == (Path(sidecar["bundle"]) / "vocab.txt").read_text().splitlines()
    assert tokenizer_for(embedded)(TEXTS)["input_ids"] == slice_ids(models, TEXTS)


def test_mediapipe_classifies_kept_texts_as_the_unpruned_slice(models, bundles):
    text = pytest.importorskip("mediapipe.tasks.python.text")
    from mediapipe.tasks.python.core.base_options import BaseOptions

    path = bundles["tflite", "fp32"]["path"]
    expected = plain_logits(models, TEXTS, max_length=FIXED, truncation=True)
    options = text.TextClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)))
    with text.TextClassifier.create_from_options(options) as classifier:
        for sentence, logits in zip(TEXTS, expected, strict=True):
            (head,) = classifier.classify(sentence).classifications
            scores = {category.index: category.score for category in head.categories}
            np.testing.assert_allclose([scores[0], scores[1]], logits, atol=1e-4)


def test_a_bundle_of_the_unpruned_slice_refuses_the_pruned_one(models, tmp_path, run_cli):
    """Same source, width and depth, other embedding rows and ids: another sub-network."""
    bundle = tmp_path / "bundle"
    export_model(models["plain"], "onnx", "fp32", out=bundle)
    before = {path: path.read_bytes() for path in bundle.rglob("*") if path.is_file()}
    joined = run_cli("export", models["pruned"], "--precision", "fp16", "--out", bundle)
    assert_one_line_error(joined, "holds another sub-network")
    assert {path: path.read_bytes() for path in bundle.rglob("*") if path.is_file()} == before


# --- bench --text -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(EXPORTERS))
def test_bench_text_runs_a_pruned_bundle_with_its_own_tokenizer(models, bundles, fmt, tmp_path, run_cli):
    text = write_lines(tmp_path / "texts.txt", TEXTS)
    bundle = bundles[fmt, "fp32"]["bundle"]
    result = run_cli("bench", bundle, "--precision", "fp32", "--text", text, "--seq-len", FIXED, *QUICK)
    assert result.code == 0, result.stderr
    inputs = json.loads(result.stdout)["inputs"]
    assert inputs["real_tokens"] == sum(map(len, slice_ids(models, TEXTS)))


def test_bench_text_refuses_a_tokenizer_with_ids_beyond_the_rows(models, bundles, tmp_path, run_cli):
    """The source's tokenizer gives ids up to len(VOCAB) - 1: beyond the pruned model's rows."""
    text = write_lines(tmp_path / "texts.txt", TEXTS)
    bundle = bundles["onnx", "fp32"]["bundle"]
    args = ["bench", bundle, "--precision", "fp32", "--text", text, "--tokenizer", models["source"], *QUICK]
    fragment = f"gives ids up to {len(VOCAB) - 1}, the model has only {len(models['kept'])} embedding rows"
    assert_one_line_error(run_cli(*args), fragment)


# --- eval ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def regressor(tmp_path_factory) -> dict:
    """A one-output regressor built as `models`' classifier, sliced and pruned alike; dev sets scored with the
    unpruned slice's own outputs on the ids the pruned slice sees: kept texts as they are, texts with dropped
    tokens with each dropped id made [UNK]'s (the pruned slice's promise). A score, unlike a class, tells models
    apart on a dozen examples."""
    root = tmp_path_factory.mktemp("vocab-eval")
    source = build_wordpiece_bert(root / "wp-regressor", num_labels=1)
    sources = write_lines(root / "texts.txt", SOURCE_TEXTS)
    plain = slice_model(source, WIDTH, DEPTH, out=root / "plain")[0]
    pruned = slice_model(source, WIDTH, DEPTH, out=root / "pruned", vocab_from=[sources])[0]
    tokenizer, kept = tokenizer_of(source), torch.tensor(expected_kept(source, SOURCE_TEXTS))
    model = model_of(plain, classifier=True)
    data = {}
    for name, texts in (("kept", TEXTS), ("dropped", [*DROPPED_TEXTS, *TEXTS[:4]])):
        pairs = list(zip(texts, reversed(texts), strict=True))
        batch = dict(tokenizer([a for a, _ in pairs], [b for _, b in pairs], padding=True, return_tensors="pt"))
        batch["input_ids"] = batch["input_ids"].masked_fill(~torch.isin(batch["input_ids"], kept), UNK)
        scores = outputs(model, batch, classifier=True)[:, 0].tolist()
        rows = [f"{a}\t{b}\t{score!r}" for (a, b), score in zip(pairs, scores, strict=True)]
        data[name] = write_lines(root / f"{name}.tsv", ["sentence1\tsentence2\tlabel", *rows])
    return {"plain": plain, "pruned": pruned, "kept": len(kept), "data": data}


def test_eval_scores_the_pruned_slice_as_the_unpruned_one(regressor, run_cli):
    plain = evaluate(regressor["plain"], regressor["data"]["kept"])["results"][0]
    assert plain["metrics"] == pytest.approx({"pearson": 1.0, "spearman": 1.0}, abs=1e-6)  # its very scores
    for name, data in regressor["data"].items():
        (result,) = evaluate(regressor["pruned"], data)["results"]
        assert (result["width"], result["depth"]) == (WIDTH, DEPTH)
        assert result["metrics"] == pytest.approx({"pearson": 1.0, "spearman": 1.0}, abs=1e-6), name
        assert result["parameters"] == plain["parameters"] - (len(VOCAB) - regressor["kept"]) * 48
    unknown = evaluate(regressor["plain"], regressor["data"]["dropped"])["results"][0]["metrics"]
    assert unknown["pearson"] < 0.99  # fed the dropped tokens' own ids, not [UNK]'s: these scores tell ids apart
    again = run_cli("eval", regressor["pruned"], "--data", regressor["data"]["kept"], "--json")
    assert again.code == 0, again.stderr
    assert [result["cached"] for result in json.loads(again.stdout)["results"]] == [True]


def test_eval_of_a_slice_refuses_another_sub_network(regressor, run_cli):
    for options in (["--width", "0.25"], ["--grid"]):
        result = run_cli("eval", regressor["pruned"], "--data", regressor["data"]["kept"], *options)
        assert_one_line_error(result, "is a slice: it holds one sub-network (width 0.5, depth 0.75)")
