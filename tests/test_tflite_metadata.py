"""TFLite exports carry the metadata MediaPipe Tasks reads (issue 11, item 2), and plain LiteRT still runs them;
they land in a bundle folder (issue 18) that `bench` and `pick --export` take.

Without mediapipe, the metadata is read back with a reader written here from metadata_schema.fbs's
field order, against the names MediaPipe's BertPreprocessorCalculator looks up ("ids", "mask",
"segment_ids"); the associated files with `zipfile`. With mediapipe importable (it co-installs
with the test environment: see benchmarks/mediapipe_check.py), TextClassifier and TextEmbedder run
the files and must give LiteRT's outputs on the same text; the encoder's first output, the one
vector TextEmbedder users take, is transformers' hidden states mean-pooled over the real tokens.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
from flatbuffers.table import Table

from edgebert.export import export_model
from edgebert.export.base import load_source
from edgebert.export.tflite import TfliteExporter
from edgebert.export.tflite_metadata import NotForMediaPipe, text_metadata
from edgebert.runtimes import SessionOptions, open_session
from tests.labelled import VOCAB, build_classifier, tokenizer_for

FIXED = 16
TEXTS = ["w1 w2 w3", "W4 w5 w6 w7 w8 w9 w10", "w11 unknownword w12"]  # MediaPipe lowercases: W4 is w4


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    """tests.labelled's BERT with its real vocabulary, as a bare encoder checkpoint."""
    return build_classifier(tmp_path_factory.mktemp("encoder") / "encoder", num_labels=None)


@pytest.fixture(scope="module")
def distilbert_dir(tmp_path_factory):
    """tests.labelled's classifier as a DistilBERT (WordPiece, no token types), with the same vocabulary and labels."""
    return build_classifier(tmp_path_factory.mktemp("distilbert") / "distilbert", kind="distilbert")


@pytest.fixture(scope="module")
def exports(labelled_classifier, encoder_dir, distilbert_dir, tiny_models, tmp_path_factory) -> dict:
    """{kind: (tflite path, sidecar)}: the labelled classifier's every precision added into one bundle folder, a
    bare encoder's bundle (fp32 only), a DistilBERT classifier's (fp32), a RoBERTa encoder as one file
    (`--out x.tflite`). Never modified."""
    root, cache = tmp_path_factory.mktemp("mediapipe"), tmp_path_factory.mktemp("fp32-conversions")
    jobs = {
        "cls": (labelled_classifier, "fp32", "classifier-tflite"),
        "cls-fp16": (labelled_classifier, "fp16", "classifier-tflite"),
        "cls-int8": (labelled_classifier, "int8", "classifier-tflite"),
        "enc": (encoder_dir, "fp32", "encoder-tflite"),
        "distilbert": (distilbert_dir, "fp32", "distilbert-tflite"),
    }
    convert, converted = TfliteExporter.to_fp32, {}

    def once(source, length, path):  # fp16 and int8 quantize a copy of the very fp32 conversion (tens of seconds)
        key = (source.name, json.dumps(source.manifest, sort_keys=True), length)
        if key not in converted:
            converted[key] = cache / f"{len(converted)}.tflite"
            convert(source, length, converted[key])
        shutil.copyfile(converted[key], path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TfliteExporter, "to_fp32", staticmethod(once))
        out = {
            kind: export_model(model, "tflite", precision, seq_len=FIXED, out=root / folder)
            for kind, (model, precision, folder) in jobs.items()
        }
        with pytest.warns(UserWarning, match="no MediaPipe metadata: the tokenizer of roberta models is not WordPiece"):
            out["roberta"] = export_model(
                tiny_models["roberta-bare"], "tflite", "fp32", seq_len=FIXED, out=root / "roberta.tflite"
            )
    return {kind: (Path(sidecar["path"]), sidecar) for kind, sidecar in out.items()}


# --- a reader of metadata_schema.fbs's tables, by field slot ---------------------------------------------


def _offset(table: Table, slot: int) -> int:
    return table.Offset(4 + 2 * slot)


def _string(table: Table, slot: int) -> str | None:
    offset = _offset(table, slot)
    return table.String(offset + table.Pos).decode() if offset else None


def _byte(table: Table, slot: int) -> int:
    offset = _offset(table, slot)
    return table.Get(flatbuffers.number_types.Uint8Flags, offset + table.Pos) if offset else 0


def _child(table: Table, slot: int) -> Table:
    return Table(table.Bytes, table.Indirect(_offset(table, slot) + table.Pos))


def _children(table: Table, slot: int) -> list[Table]:
    offset = _offset(table, slot)
    if not offset:
        return []
    start = table.Vector(offset)
    return [Table(table.Bytes, table.Indirect(start + 4 * i)) for i in range(table.VectorLen(offset))]


def _file(table: Table) -> tuple[str, int]:  # AssociatedFile: name 0, type 2
    return _string(table, 0), _byte(table, 2)


def read_metadata(path) -> tuple[bytes, list[str], list[str], dict[int, str]]:
    """The metadata buffer, the subgraph's input and output signature names in tensor order, via LiteRT's schema."""
    from ai_edge_litert import schema_py_generated as schema

    data = path.read_bytes()
    model = schema.Model.GetRootAs(data, 0)
    entries = {model.Metadata(i).Name().decode(): model.Metadata(i).Buffer() for i in range(model.MetadataLength())}
    buffer = model.Buffers(entries["TFLITE_METADATA"]).DataAsNumpy().tobytes() if "TFLITE_METADATA" in entries else b""
    signature = model.SignatureDefs(0)
    names = {
        signature.Inputs(i).TensorIndex(): signature.Inputs(i).Name().decode() for i in range(signature.InputsLength())
    }
    names |= {
        signature.Outputs(i).TensorIndex(): signature.Outputs(i).Name().decode()
        for i in range(signature.OutputsLength())
    }
    subgraph = model.Subgraphs(0)
    inputs = [names[int(i)] for i in subgraph.InputsAsNumpy()] if buffer else []
    outputs = [names[int(i)] for i in subgraph.OutputsAsNumpy()]
    return buffer, inputs, outputs, entries


@pytest.mark.parametrize("kind", ["cls", "cls-fp16", "cls-int8", "enc", "distilbert"])
def test_metadata_names_the_inputs_tokenizer_and_labels_mediapipe_reads(exports, labelled_classifier, kind):
    path, sidecar = exports[kind]
    buffer, inputs, outputs, _ = read_metadata(path)
    assert buffer[4:8] == b"M001"  # the metadata schema's file identifier
    root = Table(buffer, flatbuffers.encode.Get(flatbuffers.packer.uoffset, buffer, 0))
    assert _string(root, 7) == "1.1.0"  # min_parser_version: BertTokenizerOptions and input_process_units are 1.1.0
    (subgraph,) = _children(root, 3)
    # BertPreprocessorCalculator finds its three tensors by these metadata names, in the subgraph's input order
    expected = {"input_ids": "ids", "attention_mask": "mask", "token_type_ids": "segment_ids"}
    assert [_string(t, 0) for t in _children(subgraph, 2)] == [expected[name] for name in inputs]
    (unit,) = _children(subgraph, 5)
    assert _byte(unit, 0) == 4  # ProcessUnitOptions.BertTokenizerOptions
    assert [_file(f) for f in _children(_child(unit, 1), 0)] == [("vocab.txt", 5)]  # VOCABULARY
    heads = _children(subgraph, 3)
    assert len(heads) == len(outputs) == len(sidecar["outputs"])
    meaning = [sidecar["output_meaning"][name] for name in outputs]
    assert [_string(t, 0) for t in heads] == meaning
    labelled = [[_file(f) for f in _children(t, 6)] for t in heads]
    classifier = kind != "enc"
    assert labelled == ([[("labels.txt", 2)]] if classifier else [[]] * len(heads))  # TENSOR_AXIS_LABELS

    with zipfile.ZipFile(path) as archive:  # associated files: stored (MediaPipe maps them in place)
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
        assert archive.read("vocab.txt") == (labelled_classifier / "vocab.txt").read_bytes()
        names = sorted(archive.namelist())
        if classifier:
            assert archive.read("labels.txt").decode().splitlines() == ["neg", "pos"]  # the config's id2label
    assert names == (["labels.txt", "vocab.txt"] if classifier else ["vocab.txt"])


@pytest.mark.parametrize("kind", ["cls", "cls-fp16", "cls-int8", "enc", "roberta", "distilbert"])
def test_litert_runs_the_file_as_its_sidecar_describes(exports, kind):
    path, sidecar = exports[kind]
    assert sidecar["parity"]["gate"]["passed"]  # the gate ran on the file with its metadata
    session = open_session(path, SessionOptions.recorded(1, sidecar["runtime"], sidecar["signature_key"]))
    assert [spec.to_json() for spec in session.inputs] == sidecar["inputs"]
    assert all(spec["dtype"] == "int32" and spec["shape"] == [1, FIXED] for spec in sidecar["inputs"])
    ids = np.full((1, FIXED), 3, np.int32)
    outputs = session.run({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": 0 * ids})
    assert all(np.isfinite(output).all() for output in outputs)


def mean_pooled(encoder_dir, text: str) -> np.ndarray:
    """sentence-transformers' mean pooling over transformers' own BertModel on the same padded ids."""
    import torch
    import transformers

    encoded = tokenizer_for(VOCAB)(text.lower(), padding="max_length", max_length=FIXED, return_tensors="pt")
    with torch.no_grad():
        hidden = transformers.BertModel.from_pretrained(encoder_dir).eval()(**encoded).last_hidden_state
    mask = encoded["attention_mask"][..., None].float()
    return ((hidden * mask).sum(1) / mask.sum(1)).numpy()


@pytest.mark.parametrize("kind", ["enc", "roberta"])
def test_tflite_encoders_lead_with_the_mean_pooled_sentence_embedding(exports, kind):
    path, sidecar = exports[kind]
    meanings = list(sidecar["output_meaning"].values())
    assert meanings == ["sentence_embedding", "last_hidden_state", "pooler_output"]
    shapes = {spec["name"]: spec["shape"] for spec in sidecar["outputs"]}
    assert shapes["output_0"] == [1, 48] and shapes["output_1"] == [1, FIXED, 48]


def test_the_sentence_embedding_is_transformers_mean_pooling(exports, encoder_dir):
    path, sidecar = exports["enc"]
    for sentence in TEXTS:
        embedding = litert_outputs(path, sidecar, sentence)[0]
        np.testing.assert_allclose(embedding, mean_pooled(encoder_dir, sentence), atol=1e-4)


def test_distilbert_takes_the_segment_ids_mediapipe_feeds_and_ignores_them(exports, distilbert_dir):
    """MediaPipe runs BERT models of exactly three inputs: DistilBERT's file takes segment ids too, and its logits
    are transformers' own DistilBertForSequenceClassification's on the ids alone."""
    import torch
    import transformers

    path, sidecar = exports["distilbert"]
    assert {spec["name"] for spec in sidecar["inputs"]} == {"input_ids", "attention_mask", "token_type_ids"}
    stock = transformers.DistilBertForSequenceClassification.from_pretrained(distilbert_dir).eval()
    for sentence in TEXTS:
        encoded = tokenizer_for(VOCAB)(sentence.lower(), padding="max_length", max_length=FIXED, return_tensors="pt")
        with torch.no_grad():
            expected = stock(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits
        (logits,) = litert_outputs(path, sidecar, sentence)
        np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4)
        encoded["token_type_ids"][:] = 1  # ignored
        session = open_session(path, SessionOptions.recorded(1, sidecar["runtime"], sidecar["signature_key"]))
        (ignored,) = session.run({name: encoded[name].numpy().astype(np.int32) for name in encoded})
        np.testing.assert_array_equal(ignored, logits)


def test_roberta_export_has_no_tokenizer_metadata(exports):
    buffer, _, _, entries = read_metadata(exports["roberta"][0])
    assert buffer == b"" and "TFLITE_METADATA" not in entries
    assert not zipfile.is_zipfile(exports["roberta"][0])


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"tokenizer_config.json": json.dumps({"do_lower_case": False})}, "cased"),
        ({"vocab.txt": "\n".join(v for v in VOCAB if v != "[SEP]") + "\n"}, r"lacks \[SEP\]"),
        ({"vocab.txt": "\n".join([*VOCAB, "extra"]) + "\n"}, f"has {len(VOCAB) + 1} lines for {len(VOCAB)} ids"),
    ],
)
def test_a_tokenizer_mediapipe_would_misread_is_refused(labelled_classifier, tmp_path, change, reason):
    """MediaPipe lowercases, adds [CLS]/[SEP] and looks tokens up by line: such a model gets no tokenizer metadata."""
    model = shutil.copytree(labelled_classifier, tmp_path / "model")
    for name, text in change.items():
        (model / name).write_text(text)
    with pytest.raises(NotForMediaPipe, match=reason):
        text_metadata(load_source(model, None, None))


def test_no_vocab_means_no_metadata(tiny_models, tmp_path):
    model = shutil.copytree(tiny_models["bert-cls"], tmp_path / "model")
    (model / "vocab.txt").unlink()
    with pytest.raises(NotForMediaPipe, match="no vocab.txt"):
        text_metadata(load_source(model, None, None))


def litert_outputs(path, sidecar, text: str) -> list[np.ndarray]:
    """LiteRT on BertTokenizer's ids of `text` (lowercased, [CLS] ... [SEP], padded with 0): MediaPipe's recipe."""
    encoded = tokenizer_for(VOCAB)(text.lower(), padding="max_length", max_length=FIXED, return_tensors="np")
    session = open_session(path, SessionOptions.recorded(1, sidecar["runtime"], sidecar["signature_key"]))
    return session.run({name: encoded[name].astype(np.int32) for name in encoded})


@pytest.mark.parametrize("kind", ["cls", "cls-fp16", "cls-int8", "distilbert"])
def test_mediapipe_text_classifier_runs_the_export(exports, kind):
    text = pytest.importorskip("mediapipe.tasks.python.text")
    from mediapipe.tasks.python.core.base_options import BaseOptions

    path, sidecar = exports[kind]
    options = text.TextClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)))
    with text.TextClassifier.create_from_options(options) as classifier:
        for sentence in TEXTS:
            (head,) = classifier.classify(sentence).classifications
            scores = {c.category_name: c.score for c in head.categories}
            (logits,) = litert_outputs(path, sidecar, sentence)
            assert head.head_name == "logits" and set(scores) == {"neg", "pos"}
            np.testing.assert_allclose([scores["neg"], scores["pos"]], logits[0], atol=1e-5)


def test_mediapipe_text_embedder_runs_the_export(exports, encoder_dir):
    text = pytest.importorskip("mediapipe.tasks.python.text")
    from mediapipe.tasks.python.core.base_options import BaseOptions

    path, sidecar = exports["enc"]
    options = text.TextEmbedderOptions(base_options=BaseOptions(model_asset_path=str(path)))
    with text.TextEmbedder.create_from_options(options) as embedder:
        for sentence in TEXTS:
            embeddings = embedder.embed(sentence).embeddings
            expected = litert_outputs(path, sidecar, sentence)
            assert len(embeddings) == len(expected)
            for embedding, output in zip(embeddings, expected, strict=True):
                np.testing.assert_allclose(embedding.embedding, output.reshape(-1), atol=1e-5)
            assert embeddings[0].head_name == "sentence_embedding"  # the one vector MediaPipe users take
            np.testing.assert_allclose(embeddings[0].embedding, mean_pooled(encoder_dir, sentence)[0], atol=1e-4)


# --- the TFLite bundle: the folder LiteRT and MediaPipe users take, and what bench and pick do with it -----------


def test_every_precision_joins_one_flat_bundle_with_labels_vocab_and_tokenizer(exports, labelled_classifier):
    """Hugging Face's LiteRT repositories and Model Maker keep model.tflite at the top beside tokenizer files,
    labels.txt and vocab.txt; edgebert adds its config, manifest and one sidecar per file."""
    from transformers import AutoConfig, AutoTokenizer

    bundle = exports["cls"][0].parent
    files = {"model.tflite", "model_quantized.tflite", "model_fp16.tflite"}
    top = {"config.json", "tokenizer.json", "tokenizer_config.json", "edgebert-bundle.json", "labels.txt", "vocab.txt"}
    assert {p.name for p in bundle.iterdir()} == top | files | {f"{name}.json" for name in files}
    assert {kind: exports[kind][0].name for kind in ("cls", "cls-fp16", "cls-int8")} == {
        "cls": "model.tflite",
        "cls-fp16": "model_fp16.tflite",
        "cls-int8": "model_quantized.tflite",
    }
    assert {exports[kind][1]["bundle"] for kind in ("cls", "cls-fp16", "cls-int8")} == {str(bundle)}
    # the fp32 file, written first, is the very file its sidecar of then describes: adding precisions left it alone
    assert hashlib.sha256((bundle / "model.tflite").read_bytes()).hexdigest() == exports["cls"][1]["sha256"]
    source = json.loads((labelled_classifier / "config.json").read_text())
    labels = [source["id2label"][str(i)] for i in range(len(source["id2label"]))]
    assert (bundle / "labels.txt").read_text().splitlines() == labels == ["neg", "pos"]
    assert (bundle / "vocab.txt").read_bytes() == (labelled_classifier / "vocab.txt").read_bytes()
    with zipfile.ZipFile(bundle / "model_quantized.tflite") as archive:  # the embedded copy MediaPipe reads
        assert archive.read("labels.txt") == (bundle / "labels.txt").read_bytes()
    assert AutoConfig.from_pretrained(bundle).id2label == {0: "neg", 1: "pos"}
    expected = tokenizer_for(VOCAB)(TEXTS, padding=True)["input_ids"]
    assert AutoTokenizer.from_pretrained(bundle)(TEXTS, padding=True)["input_ids"] == expected
    record = json.loads((bundle / "edgebert-bundle.json").read_text())
    assert (record["format"], record["seq_len"]) == ("tflite", FIXED)
    encoder = exports["enc"][0].parent
    assert exports["enc"][0].name == "model.tflite" and not (encoder / "labels.txt").exists()
    assert (encoder / "vocab.txt").is_file() and "bundle" not in exports["roberta"][1]  # `--out x.tflite`: one file


def bench_json(run_cli, *args) -> dict:
    result = run_cli("bench", *args, "--runs", "3", "--warmup", "1", "--min-time", "0", "--json")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def one_error(result, text: str) -> None:
    assert result.code != 0 and text in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_bench_takes_a_tflite_bundle_and_its_precision(exports, run_cli, tmp_path):
    classifier, encoder = exports["cls"][0].parent, exports["enc"][0].parent
    one_error(run_cli("bench", classifier), "holds fp32, fp16, int8: choose one with --precision")
    result = bench_json(run_cli, classifier, "--precision", "int8")
    assert result["artifact"]["path"] == str(classifier / "model_quantized.tflite")
    assert result["artifact"]["precision"] == "int8"
    text = tmp_path / "text.txt"
    text.write_text("\n".join(TEXTS) + "\n")
    with_text = bench_json(run_cli, encoder, "--text", text)  # one precision: none to choose; the bundle's tokenizer
    assert with_text["artifact"]["path"] == str(encoder / "model.tflite") and with_text["inputs"]["batches"] == 3
    missing = "has no int8 file (model_quantized.tflite); it holds fp32"
    one_error(run_cli("bench", encoder, "--precision", "int8"), missing)
    one_error(run_cli("bench", classifier / "model.tflite", "--precision", "int8"), "is fp32 by its sidecar, not int8")
    (tmp_path / "folder").mkdir()
    one_error(run_cli("bench", tmp_path / "folder"), "without edgebert-bundle.json, not a bundle")


def test_what_may_not_join_a_tflite_bundle_is_refused_early(
    exports, labelled_classifier, encoder_dir, tmp_path, run_cli
):
    """Another fixed length, another format, a taken precision, a file edgebert does not write: one line each,
    before the slow conversion, and the bundle as it was."""
    encoder = shutil.copytree(exports["enc"][0].parent, tmp_path / "encoder")
    longer = ["--format", "tflite", "--precision", "int8", "--seq-len", "32", "--out", encoder]
    one_error(
        run_cli("export", encoder_dir, *longer),
        f"holds files of sequence length {FIXED}, not 32: pass --force to replace the bundle",
    )
    bundle = shutil.copytree(exports["cls"][0].parent, tmp_path / "bundle")
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    export = ["export", labelled_classifier, "--out", bundle]
    one_error(run_cli(*export, "--format", "onnx"), "holds a tflite export: pass --force")
    one_error(run_cli(*export, "--format", "tflite", "--seq-len", str(FIXED), "--precision", "int8"), "already exists")
    one_error(
        run_cli("export", labelled_classifier, "--format", "tflite", "--out", tmp_path / "m.onnx"),
        "names no tflite file: give a .tflite file or a bundle folder",
    )
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before and not (tmp_path / "m.onnx").exists()
    (bundle / "notes.txt").write_text("mine")  # not edgebert's: the bundle is never replaced, even with --force
    one_error(run_cli(*export, "--format", "onnx", "--force"), "does not write (notes.txt)")
    assert (bundle / "notes.txt").read_text() == "mine" and not (bundle / "onnx").exists()


def test_pick_exports_a_tflite_bundle_that_bench_takes(labelled_classifier, tmp_path, run_cli, monkeypatch):
    """A LiteRT profile's choice lands in `<model>-w<W>-d<D>-tflite/`, and bench runs the folder as it is."""
    monkeypatch.setenv("EDGEBERT_CACHE", str(tmp_path / "cache"))
    args = ["pick", labelled_classifier, "--profile", "pixel-7", "--candidates", "0.5:0.5", "--latency-budget", "10s"]
    result = run_cli(*args, "--memory-budget", "1GB", "--export", tmp_path / "out", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    bundle = tmp_path / "out" / "classifier-w0.5-d0.5-tflite"
    precision = report["choice"]["precision"]
    name = {"fp32": "model.tflite", "int8": "model_quantized.tflite", "fp16": "model_fp16.tflite"}[precision]
    assert report["export"]["bundle"] == str(bundle) and report["export"]["path"] == str(bundle / name)
    benched = bench_json(run_cli, bundle)
    assert benched["artifact"]["path"] == str(bundle / name) and benched["artifact"]["precision"] == precision
    assert benched["inputs"]["seq_len"] == 128  # the profile's length, fixed in the file
