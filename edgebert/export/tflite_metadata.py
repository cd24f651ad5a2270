"""TFLite Model Metadata that MediaPipe Tasks reads: a BERT tokenizer, named inputs, labelled outputs.

MediaPipe's `TextClassifier` and `TextEmbedder` (mediapipe 0.10 - 1.2) take a model with three
int32 inputs of shape [1, seq_len] as a BERT model and need, in the model's metadata
(metadata_schema.fbs, file identifier "M001"):
- input tensor metadata named "ids", "mask" and "segment_ids", in the order of the subgraph's
  inputs (BertPreprocessorCalculator finds the tensors by these names);
- an input process unit with BertTokenizerOptions naming the vocabulary file;
- for a classifier, a labels file (TENSOR_AXIS_LABELS) on the output tensor's metadata.
The metadata flatbuffer sits in a model buffer named by the model's "TFLITE_METADATA" metadata
entry; associated files are an uncompressed zip appended to the model, as MediaPipe's own
MetadataPopulator writes them. Plain LiteRT ignores both. MediaPipe's writer is not used: its
wheel lacks a module it imports, and the package must export without mediapipe; this is the
same format from `flatbuffers` and LiteRT's own schema.

A classifier's output stays its logits, as in PyTorch and the ONNX export: the parity gate's
flip analysis is on logits, and MediaPipe's ranking and top-k are the same under softmax. MediaPipe
reports them as scores, so its score_threshold is in logits; the tensor's metadata says so.
MediaPipe's BertTokenizer keeps accents that Hugging Face's uncased one strips ("amélie" tokenizes
apart: benchmarks/results/mediapipe.md), the one difference seen on SST-2 sentences.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgebert.bundle import LABELS_FILE, VOCAB_FILE, class_labels, labels_text
from edgebert.errors import EdgebertError
from edgebert.layout import FAMILIES
from edgebert.manifests import read_json
from edgebert.model_files import model_file
from edgebert.reading import MAX_VOCAB_BYTES, parse_vocab, read_regular

if TYPE_CHECKING:
    from edgebert.export.base import ExportSource

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
MODEL_IDENTIFIER = b"TFL3"
# The newest schema feature written (input_process_units, BertTokenizerOptions): the parser MediaPipe checks against.
MIN_PARSER_VERSION = "1.1.0"
# Signature input name -> the metadata name BertPreprocessorCalculator looks the tensor up by.
BERT_INPUT_NAMES = {"input_ids": "ids", "attention_mask": "mask", "token_type_ids": "segment_ids"}
INPUT_DESCRIPTIONS = {
    "ids": "Token ids of [CLS] text [SEP], padded with 0.",
    "mask": "1 for real tokens, 0 for padding.",
    "segment_ids": "0 for the first sequence, 1 for the second.",
}


@dataclass(frozen=True)
class OutputDoc:
    """What one signature output is, for its tensor metadata; `labelled`: the labels file names its last axis."""

    name: str
    description: str
    labelled: bool = False


SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[UNK]")  # MediaPipe adds the first two and maps unknown words to the last
OUTPUT_DOCS = {
    "logits": OutputDoc(
        "logits", "Raw logits, not probabilities: the largest is the class; softmax gives probabilities.", True
    ),
    "sentence_embedding": OutputDoc(
        "sentence_embedding", "Mean of the real tokens' hidden states (sentence-transformers' mean pooling)."
    ),
    "last_hidden_state": OutputDoc("last_hidden_state", "Every token's hidden state; TextEmbedder flattens it."),
    "pooler_output": OutputDoc("pooler_output", "BERT's pooler: tanh(dense(hidden state of [CLS]))."),
}
# metadata_schema.fbs enum values
FEATURE_PROPERTIES = 1  # ContentProperties
BERT_TOKENIZER_OPTIONS = 4  # ProcessUnitOptions
TENSOR_AXIS_LABELS, VOCABULARY = 2, 5  # AssociatedFileType


@dataclass(frozen=True)
class TextModelMetadata:
    name: str
    description: str
    outputs: dict[str, OutputDoc]  # by signature output name (output_0, ...)
    vocab: bytes  # vocab.txt, one WordPiece token per line
    labels: list[str] | None = None  # a classifier's labels, by index


class NotForMediaPipe(Exception):
    """Why MediaPipe Tasks could not run this model: the file is written without tokenizer metadata."""


def text_metadata(source: ExportSource) -> TextModelMetadata:
    """What MediaPipe needs to run `source` (vocabulary, labels, output docs), or NotForMediaPipe saying why not.

    MediaPipe's BERT preprocessing lowercases the text, adds [CLS] and [SEP], looks WordPiece
    tokens up by their line in vocab.txt and pads with id 0; a model it would feed wrong ids is refused.
    """
    model_type = source.model.config.source_model_type
    if not FAMILIES[model_type].wordpiece:
        raise NotForMediaPipe(
            f"the tokenizer of {model_type} models is not WordPiece, the one MediaPipe's text tasks run"
        )
    if source.input_names != list(BERT_INPUT_NAMES):
        raise NotForMediaPipe(
            f"MediaPipe's BERT models take ids, mask and segment ids; this one takes {', '.join(source.input_names)}"
        )
    directory = source.tokenizer_dir
    vocab_path = model_file(directory, VOCAB_FILE) if directory is not None else None
    if vocab_path is None:
        raise NotForMediaPipe(f"no {VOCAB_FILE} beside the model for MediaPipe's BERT tokenizer")
    vocab = read_regular(vocab_path, MAX_VOCAB_BYTES)
    if len(vocab) > MAX_VOCAB_BYTES:
        raise NotForMediaPipe(f"{vocab_path} is larger than {MAX_VOCAB_BYTES >> 20} MB")
    tokens = parse_vocab(vocab, vocab_path)  # duplicates and invalid UTF-8 refused, as a bundle's vocab.txt
    missing = [token for token in SPECIAL_TOKENS if token not in tokens]
    if missing or len(tokens) > source.vocab_size:
        problem = f"lacks {', '.join(missing)}" if missing else f"has {len(tokens)} lines for {source.vocab_size} ids"
        raise NotForMediaPipe(f"{vocab_path} {problem}")
    config_path = model_file(directory, "tokenizer_config.json")
    settings = read_json(config_path) if config_path is not None else {}
    if isinstance(settings, dict) and settings.get("do_lower_case") is False:
        raise NotForMediaPipe("the tokenizer is cased (do_lower_case false) and MediaPipe lowercases all text")
    if source.pad_token_id != 0:
        raise NotForMediaPipe(f"MediaPipe pads with id 0 and this model's padding id is {source.pad_token_id}")
    labels = class_labels(source)
    return TextModelMetadata(
        name=source.name,
        description=f"Text {'encoder' if labels is None else 'classifier'} exported by edgebert",
        outputs={f"output_{i}": OUTPUT_DOCS[name] for i, name in enumerate(source.output_names)},
        vocab=vocab,
        labels=labels,
    )


def write_metadata(path: Path, metadata: TextModelMetadata) -> None:
    """Rewrite the .tflite at `path` with `metadata` in a model buffer and its files zipped onto the end."""
    from ai_edge_litert import schema_py_generated as schema

    data = path.read_bytes()
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    for buffer in model.buffers:  # the quantizer keeps weights after the flatbuffer, at offsets repacking moves
        if buffer.offset > 1:
            buffer.data = np.frombuffer(data, np.uint8, buffer.size, buffer.offset)
            buffer.offset = buffer.size = 0
    if len(model.subgraphs) != 1 or len(model.signatureDefs) != 1:
        raise EdgebertError(f"{path}: the converter wrote several subgraphs or signatures; MediaPipe takes one")
    signature = model.signatureDefs[0]
    input_names = {entry.tensorIndex: entry.name.decode() for entry in signature.inputs}
    output_names = {entry.tensorIndex: entry.name.decode() for entry in signature.outputs}
    subgraph = model.subgraphs[0]
    inputs = [BERT_INPUT_NAMES[input_names[int(index)]] for index in subgraph.inputs]
    outputs = [metadata.outputs[output_names[int(index)]] for index in subgraph.outputs]

    buffer = schema.BufferT()
    buffer.data = _metadata_flatbuffer(metadata, inputs, outputs)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]

    import flatbuffers

    builder = flatbuffers.Builder(path.stat().st_size + (1 << 20))
    builder.Finish(model.Pack(builder), MODEL_IDENTIFIER)
    path.write_bytes(builder.Output())
    files = {VOCAB_FILE: metadata.vocab}
    if metadata.labels is not None:
        files[LABELS_FILE] = labels_text(metadata.labels)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_STORED) as archive:  # MediaPipe maps them in place
        for name, data in files.items():
            archive.writestr(name, data)


def _metadata_flatbuffer(metadata: TextModelMetadata, inputs: list[str], outputs: list[OutputDoc]) -> bytes:
    """ModelMetadata with one SubGraphMetadata, built field by field in metadata_schema.fbs's slot order."""
    import flatbuffers

    b = flatbuffers.Builder(1024)

    def string(text: str) -> int:
        return b.CreateString(text)

    def vector(offsets: list[int]) -> int:
        b.StartVector(4, len(offsets), 4)
        for offset in reversed(offsets):
            b.PrependUOffsetTRelative(offset)
        return b.EndVector()

    def table(offsets: dict[int, int], bytes_: dict[int, int] | None = None) -> int:
        """A table from {slot: offset} and {slot: ubyte}; slots are the fields' order in the schema."""
        b.StartObject(max([*offsets, *(bytes_ or {}), -1]) + 1)
        for slot, offset in offsets.items():
            b.PrependUOffsetTRelativeSlot(slot, offset, 0)
        for slot, value in (bytes_ or {}).items():
            b.PrependUint8Slot(slot, value, 0)
        return b.EndObject()

    def associated_file(name: str, description: str, kind: int) -> int:  # AssociatedFile: name, description, type
        return table({0: string(name), 1: string(description)}, {2: kind})

    def tensor(name: str, description: str, files: list[int]) -> int:
        # TensorMetadata: name 0, description 1, content 3 (Content: content_properties_type 0, content_properties 1)
        content = table({1: table({})}, {0: FEATURE_PROPERTIES})
        fields = {0: string(name), 1: string(description), 3: content}
        return table(fields | ({6: vector(files)} if files else {}))

    input_tensors = [tensor(name, INPUT_DESCRIPTIONS[name], []) for name in inputs]
    output_tensors = []
    for doc in outputs:
        labelled = doc.labelled and metadata.labels is not None
        files = [associated_file(LABELS_FILE, "Labels of the last axis.", TENSOR_AXIS_LABELS)] if labelled else []
        output_tensors.append(tensor(doc.name, doc.description, files))
    vocab = associated_file(VOCAB_FILE, "WordPiece vocabulary, one token per line.", VOCABULARY)
    tokenizer = table({0: vector([vocab])})  # BertTokenizerOptions: vocab_file
    process_unit = table({1: tokenizer}, {0: BERT_TOKENIZER_OPTIONS})  # ProcessUnit: options_type 0, options 1
    # SubGraphMetadata: input_tensor_metadata 2, output_tensor_metadata 3, input_process_units 5
    subgraph = table({2: vector(input_tensors), 3: vector(output_tensors), 5: vector([process_unit])})
    # ModelMetadata: name 0, description 1, subgraph_metadata 3, min_parser_version 7
    fields = {0: string(metadata.name), 1: string(metadata.description), 3: vector([subgraph])}
    root = table(fields | {7: string(MIN_PARSER_VERSION)})
    b.Finish(root, METADATA_IDENTIFIER)
    return bytes(b.Output())
