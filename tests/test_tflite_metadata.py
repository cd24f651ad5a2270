"""TFLite exports carry the metadata MediaPipe Tasks reads (issue 11, item 2), and plain LiteRT still runs them.

Without mediapipe, the metadata is read back with a reader written here from metadata_schema.fbs's
field order, against the names MediaPipe's BertPreprocessorCalculator looks up ("ids", "mask",
"segment_ids"); the associated files with `zipfile`. With mediapipe importable (it co-installs
with the test environment: see benchmarks/mediapipe_check.py), TextClassifier and TextEmbedder run
the files and must give LiteRT's outputs on the same text; the encoder's first output, the one
vector TextEmbedder users take, is transformers' hidden states mean-pooled over the real tokens.
"""

from __future__ import annotations

import json
import shutil
import zipfile

import flatbuffers
import numpy as np
import pytest
from flatbuffers.table import Table

from edgebert.export import export_model
from edgebert.export.base import load_source
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
def exports(labelled_classifier, encoder_dir, tiny_models, tmp_path_factory) -> dict:
    """{kind: (tflite path, sidecar)}: the labelled classifier (every precision), a bare encoder, a RoBERTa encoder."""
    root = tmp_path_factory.mktemp("mediapipe")
    encoder = encoder_dir
    jobs = {
        "cls": (labelled_classifier, "fp32"),
        "cls-fp16": (labelled_classifier, "fp16"),
        "cls-int8": (labelled_classifier, "int8"),
        "enc": (encoder, "fp32"),
    }
    out = {
        kind: export_model(model, "tflite", precision, seq_len=FIXED, out=root / f"{kind}.tflite")
        for kind, (model, precision) in jobs.items()
    }
    with pytest.warns(UserWarning, match="no MediaPipe metadata: RoBERTa's byte-level BPE"):
        out["roberta"] = export_model(
            tiny_models["roberta-bare"], "tflite", "fp32", seq_len=FIXED, out=root / "roberta.tflite"
        )
    return {kind: (root / f"{kind}.tflite", sidecar) for kind, sidecar in out.items()}


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


@pytest.mark.parametrize("kind", ["cls", "cls-fp16", "cls-int8", "enc"])
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
    assert labelled == ([[("labels.txt", 2)]] if kind.startswith("cls") else [[]] * len(heads))  # TENSOR_AXIS_LABELS

    with zipfile.ZipFile(path) as archive:  # associated files: stored (MediaPipe maps them in place)
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
        assert archive.read("vocab.txt") == (labelled_classifier / "vocab.txt").read_bytes()
        names = sorted(archive.namelist())
        if kind.startswith("cls"):
            assert archive.read("labels.txt").decode().splitlines() == ["neg", "pos"]  # the config's id2label
    assert names == (["labels.txt", "vocab.txt"] if kind.startswith("cls") else ["vocab.txt"])


@pytest.mark.parametrize("kind", ["cls", "cls-fp16", "cls-int8", "enc", "roberta"])
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


@pytest.mark.parametrize("kind", ["cls", "cls-fp16", "cls-int8"])
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
