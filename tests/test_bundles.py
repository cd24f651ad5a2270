"""The ONNX bundle (edgebert.bundle): the folder transformers.js and Optimum load, checked with the Python clients.

The references are independent of the bundle: token ids from transformers' pure-Python
BertTokenizer over the source's vocab.txt, logits from the PyTorch slice, labels from the
source checkpoint's config.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

from edgebert.atomic import STAGING_MARKER
from edgebert.bundle import BUNDLE_FILE, ONNX_FILES
from edgebert.errors import EdgebertError
from edgebert.export import export_model
from edgebert.sidecar import read_sidecar
from tests.labelled import VOCAB, tokenizer_for
from tests.models import KIND_NAMES, own_key

TEXTS = ["w1 w2 w3 w4 w5", "W7 w8", "w9 unknownword w10 w11", "w12"]  # mixed case and an out-of-vocabulary word


@pytest.fixture(scope="module")
def fp32_bundle(labelled_classifier, tmp_path_factory) -> Path:
    """The labelled classifier at width 0.5, depth 0.5, exported to a fresh fp32 bundle (never modified)."""
    bundle = tmp_path_factory.mktemp("bundles") / "classifier-onnx"
    export_model(labelled_classifier, "onnx", "fp32", width=0.5, depth=0.5, out=bundle)
    return bundle


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bundle_layout_and_client_config(fp32_bundle, labelled_classifier):
    from transformers import AutoConfig, AutoTokenizer

    names = {str(p.relative_to(fp32_bundle)) for p in fp32_bundle.rglob("*")}
    assert names == {
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        BUNDLE_FILE,
        "onnx",
        "onnx/model.onnx",
        "onnx/model.onnx.json",
    }
    source = json.loads((labelled_classifier / "config.json").read_text())
    config = AutoConfig.from_pretrained(fp32_bundle)
    assert config.model_type == "bert" and config.architectures == ["BertForSequenceClassification"]
    assert config.id2label == {int(k): v for k, v in source["id2label"].items()} == {0: "neg", 1: "pos"}
    assert json.loads((fp32_bundle / "tokenizer_config.json").read_text())["pad_token"] == "[PAD]"
    tokenizer = AutoTokenizer.from_pretrained(fp32_bundle)
    assert tokenizer(TEXTS[:2], padding=True)["input_ids"] == tokenizer_for(VOCAB)(TEXTS[:2], padding=True)["input_ids"]
    assert read_sidecar(fp32_bundle / "onnx" / "model.onnx").precision == "fp32"  # the sha256 check passes
    real = json.loads((fp32_bundle / BUNDLE_FILE).read_text())
    assert (real["manifest"]["width"], real["manifest"]["depth"]) == (0.5, 0.5)


def test_bundle_runs_in_onnxruntime_with_its_own_tokenizer(fp32_bundle, labelled_classifier, tmp_path):
    import onnxruntime as ort
    import torch
    from tokenizers import Tokenizer

    from edgebert.slicing import load_slice, slice_model

    tokenizer = Tokenizer.from_file(str(fp32_bundle / "tokenizer.json"))
    pad = json.loads((fp32_bundle / "tokenizer_config.json").read_text())["pad_token"]
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id(pad), pad_token=pad)
    encoded = tokenizer.encode_batch(TEXTS)
    ids = np.array([e.ids for e in encoded], dtype=np.int64)
    reference_ids = tokenizer_for(VOCAB)(TEXTS, padding=True)["input_ids"]
    assert ids.tolist() == reference_ids and (ids == VOCAB.index("[UNK]")).sum() == 1
    feeds = {
        "input_ids": ids,
        "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encoded], dtype=np.int64),
    }
    session = ort.InferenceSession(str(fp32_bundle / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    (logits,) = session.run(["logits"], {k: v for k, v in feeds.items() if k in wanted})

    sliced = load_slice(slice_model(labelled_classifier, 0.5, 0.5, out=tmp_path / "slice")[0]).model.eval()
    with torch.no_grad():
        expected = sliced(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4)
    assert logits.shape == (len(TEXTS), 2)


def test_int8_joins_an_fp32_bundle_and_force_rules(fp32_bundle, labelled_classifier, tmp_path, run_cli):
    bundle = tmp_path / "b"
    shutil.copytree(fp32_bundle, bundle)
    fp32 = digest(bundle / "onnx" / ONNX_FILES["fp32"])
    config = digest(bundle / "config.json")
    args = ["export", labelled_classifier, "--width", "0.5", "--depth", "0.5", "--out", bundle]
    busy = bundle / "onnx" / f".model_fp16.onnx.{os.getpid()}-concurrent.partial"  # a live export adding fp16
    busy.mkdir()
    (busy / STAGING_MARKER).write_text(f"{socket.gethostname()} {os.getpid()}\n")
    added = run_cli(*args, "--precision", "int8", "--json")
    assert added.code == 0, added.stderr
    assert busy.is_dir()  # neither in the way nor removed
    assert json.loads(added.stdout)["bundle"] == str(bundle)
    int8 = bundle / "onnx" / ONNX_FILES["int8"]
    assert read_sidecar(int8).precision == "int8" and read_sidecar(bundle / "onnx" / "model.onnx").precision == "fp32"
    assert digest(bundle / "onnx" / ONNX_FILES["fp32"]) == fp32 and digest(bundle / "config.json") == config

    again = run_cli(*args, "--precision", "int8")  # an existing precision: only with --force
    assert again.code != 0 and "already exists" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    replaced = run_cli(*args, "--precision", "int8", "--force", "--json")
    assert replaced.code == 0, replaced.stderr
    assert read_sidecar(int8).sha256 == json.loads(replaced.stdout)["sha256"]

    # bench takes the bundle folder: --precision picks the file; with two, leaving it out is one line naming them
    quick = ["--runs", "3", "--warmup", "1", "--min-time", "0", "--json"]
    benched = run_cli("bench", bundle, "--precision", "int8", *quick)
    assert benched.code == 0, benched.stderr
    assert json.loads(benched.stdout)["artifact"]["path"] == str(int8)
    unchosen = run_cli("bench", bundle, *quick)
    listed = f"error: {bundle} holds fp32, int8: choose one with --precision"
    assert unchosen.code != 0 and unchosen.stderr.strip() == listed
    alone = run_cli("bench", fp32_bundle, *quick)  # one precision: nothing to choose
    assert alone.code == 0 and json.loads(alone.stdout)["artifact"]["path"] == str(fp32_bundle / "onnx" / "model.onnx")

    whole = ["--width", "1", "--depth", "1", "--precision", "fp16"]
    other = run_cli("export", labelled_classifier, *whole, "--out", bundle)
    assert other.code != 0 and "another sub-network" in other.stderr  # never two models in one bundle
    (bundle / "onnx" / "notes.txt").write_text("mine")  # not edgebert's: never replaced, even with --force
    refused = run_cli(*args, "--precision", "fp16", "--force")
    assert refused.code != 0 and "does not write" in refused.stderr
    assert (bundle / "onnx" / "notes.txt").read_text() == "mine" and not (bundle / "onnx" / ONNX_FILES["fp16"]).exists()


def test_a_directory_edgebert_did_not_write_is_not_a_bundle(labelled_classifier, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "config.json").write_text("{}")
    with pytest.raises(EdgebertError, match="not a bundle edgebert wrote"):
        export_model(labelled_classifier, "onnx", "fp32", width=0.5, depth=0.5, out=foreign, force=True)
    assert [p.name for p in foreign.iterdir()] == ["config.json"]


# A family's tokenizer class and pad token as its released checkpoints' tokenizer_config.json names them, where
# transformers has no tokenizer class of its own for it (ModernBERT-base's: a byte-level BPE with BERT's [PAD])
STOCK_TOKENIZERS = {"modernbert": ("PreTrainedTokenizerFast", "[PAD]")}


def stock_tokenizer(config: dict) -> tuple[str, str]:
    """transformers' own tokenizer class of a model's architecture (<stem>Tokenizer) and its default pad token."""
    import transformers

    stem = config["architectures"][0].removesuffix("ForSequenceClassification").removesuffix("Model")
    return f"{stem}Tokenizer", getattr(transformers, f"{stem}Tokenizer")().pad_token


@pytest.mark.parametrize("name", [name for name in KIND_NAMES if not name.startswith("bert-")])
def test_bundle_config_keeps_the_source_model_type(tiny_models, tmp_path, name):
    """Clients (transformers.js, Optimum) build the source's own config class and tokenizer from the bundle."""
    import transformers

    bundle = tmp_path / "b"
    export_model(tiny_models[name], "onnx", "fp32", width=0.5, depth=0.5, out=bundle)
    source = json.loads((tiny_models[name] / "config.json").read_text())
    config = transformers.AutoConfig.from_pretrained(bundle)
    assert config.model_type == source["model_type"] and config.architectures == source["architectures"]
    kind = name.rsplit("-", 1)[0]
    assert config.hidden_size == source[own_key(kind, "hidden_size")]
    written = json.loads((bundle / "config.json").read_text())  # under the keys its own config class reads
    assert all(own_key(kind, key) in written for key in ("hidden_size", "num_hidden_layers", "intermediate_size"))
    assert written[own_key(kind, "num_hidden_layers")] == 6  # depth 0.5
    assert getattr(config, "embedding_size", None) == source.get("embedding_size")  # ELECTRA's projection's input
    if name.endswith("-cls"):
        assert config.id2label == {int(k): v for k, v in source["id2label"].items()} and len(config.id2label) == 3
    else:
        assert "id2label" not in json.loads((bundle / "config.json").read_text())
    settings = json.loads((bundle / "tokenizer_config.json").read_text())  # the source has none: the family's own
    expected = STOCK_TOKENIZERS[kind] if kind in STOCK_TOKENIZERS else stock_tokenizer(source)
    assert (settings["tokenizer_class"], settings["pad_token"]) == expected
    assert hasattr(transformers, settings["tokenizer_class"])


def test_default_labels_are_derived_not_required(stock_classifier, tmp_path):
    """transformers 5 writes no id2label for LABEL_0, LABEL_1: slice -> export still works, the labels derived."""
    from edgebert.slicing import slice_model

    assert "id2label" not in json.loads((stock_classifier / "config.json").read_text())  # the fact, not an assumption
    slice_dir, _ = slice_model(stock_classifier, 0.5, 0.5, out=tmp_path / "slice")
    export_model(slice_dir, "onnx", "fp32", out=tmp_path / "bundle")
    config = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert config["id2label"] == {"0": "LABEL_0", "1": "LABEL_1"}
    assert config["label2id"] == {"LABEL_0": 0, "LABEL_1": 1}


def test_default_labels_reach_eval_train_and_pick(stock_classifier, tmp_path):
    """The labels eval, train and pick map data through: LABEL_i as transformers names them, integer labels too."""
    from edgebert.checkpoint import load_checkpoint
    from edgebert.data import label_targets, read_dataset

    checkpoint = load_checkpoint(stock_classifier)
    assert checkpoint.model_config["label2id"] == {"LABEL_0": 0, "LABEL_1": 1}  # as transformers 4 wrote them
    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\ntok1\tLABEL_1\ntok2\t0\n")
    targets = label_targets(read_dataset(data), 2, checkpoint.model_config["label2id"], stock_classifier)
    assert targets.tolist() == [1, 0]


def test_num_labels_without_id2label(tiny_models, tmp_path):
    """A config counting 3 labels and naming none: the classifier's 3 rows get transformers' default names."""
    from edgebert.slicing import slice_model
    from tests.cli_checks import edit_config

    model = tmp_path / "model"
    shutil.copytree(tiny_models["bert-cls"], model)
    config = json.loads((model / "config.json").read_text())
    del config["id2label"], config["label2id"]
    (model / "config.json").write_text(json.dumps({**config, "num_labels": 3}))
    slice_dir, _ = slice_model(model, 0.5, 0.5, out=tmp_path / "slice")
    edit_config(slice_dir, id2label=None, label2id=None)  # a slice naming none either
    export_model(slice_dir, "onnx", "fp32", out=tmp_path / "bundle")
    written = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert written["id2label"] == {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}
    edit_config(model, num_labels=2)  # contradicts the classifier's 3 rows
    with pytest.raises(EdgebertError, match="num_labels is 2, but the classifier in model.safetensors has 3 outputs"):
        slice_model(model, 0.5, 0.5, out=tmp_path / "refused")


def test_the_demo_tokenizer_loads_and_tokenizes(tmp_path):
    """Item 4: the demo's generated WordPiece vocabulary as a tokenizer AutoTokenizer loads (without its weights)."""
    from transformers import AutoTokenizer

    from edgebert import demo

    vocab = demo.demo_vocab()
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    demo.write_tokenizer_files(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("Hi, ok")["input_ids"])
    assert tokens == ["[CLS]", "h", "##i", ",", "o", "##k", "[SEP]"]  # uncased, one character per piece
    assert tokenizer.pad_token == "[PAD]" and tokenizer.pad_token_id == 0
    assert "generated" in json.loads((tmp_path / "tokenizer_config.json").read_text())["edgebert_note"]


def test_bench_text_finds_the_bundles_tokenizer(fp32_bundle, labelled_classifier, tmp_path):
    from edgebert.bench import bench_artifact
    from edgebert.profiles import load_profile
    from tests.labelled import sentences

    text = tmp_path / "text.txt"
    text.write_text("".join(f"{first} {second}\n" for first, second in sentences(4)))
    result = bench_artifact(fp32_bundle / "onnx" / "model.onnx", load_profile("local"), runs=3, text_file=text)
    assert result["inputs"]["batches"] == 4 and result["inputs"]["padding_share"] == 0.0


def cased_source(directory: Path, tokenizer_config: dict) -> Path:
    """A tokenizer directory whose tokenizer.json keeps case, with the given tokenizer_config.json."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Hello", "hello", "World", "world"]
    tokenizer = Tokenizer(models.WordPiece({token: i for i, token in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    directory.mkdir()
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return directory


@pytest.mark.parametrize(
    ("given", "expected_class"),
    [
        ({}, "BertTokenizer"),
        ({"tokenizer_class": "TokenizersBackend"}, "PreTrainedTokenizerFast"),  # what transformers 5 saves
        ({"tokenizer_class": "BertTokenizer"}, "BertTokenizer"),
    ],
)
def test_a_cased_tokenizer_stays_cased_in_the_bundle(tmp_path, given, expected_class):
    """Clients lowercase on `do_lower_case` whatever tokenizer.json says: a cased source must not get true."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from edgebert.tokenizer import write_tokenizer

    source = cased_source(tmp_path / "source", given)
    (tmp_path / "bundle").mkdir()
    write_tokenizer(source, tmp_path / "bundle", "bert", 512)
    settings = json.loads((tmp_path / "bundle" / "tokenizer_config.json").read_text())
    assert settings["tokenizer_class"] == expected_class
    expected = Tokenizer.from_file(str(source / "tokenizer.json")).encode("Hello world").ids  # the source's own ids
    assert expected == [5, 8]
    assert AutoTokenizer.from_pretrained(tmp_path / "bundle")("Hello world", add_special_tokens=False)["input_ids"] == [
        5,
        8,
    ]


@pytest.mark.parametrize(("given", "kept"), [(100, 100), (512, 512), (10**30, 512), (0, 512), ("100", 512)])
def test_the_sources_shorter_max_length_is_kept(given, kept):
    """A tokenizer capped below the model's positions keeps its cap (else clients truncate later than the source)."""
    from edgebert.tokenizer import tokenizer_config

    assert tokenizer_config({"model_max_length": given}, "bert", 512)["model_max_length"] == kept
