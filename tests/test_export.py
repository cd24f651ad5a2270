"""Every (format, precision) exports, runs in its own runtime and passes its parity gate."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings

import numpy as np
import onnx
import pytest
import torch

import edgebert.export as export_module
from edgebert.errors import EdgebertError
from edgebert.export import EXPORTERS, export_model
from edgebert.export.base import ParityGateError, load_source, verify_artifact
from edgebert.export.onnx import OnnxExporter
from edgebert.export.tflite import TfliteExporter
from edgebert.runtimes import SessionOptions, artifact_name, open_session
from edgebert.sidecar import SCHEMA_VERSION, Sidecar, gate_holds, sidecar_path
from edgebert.slicing import slice_model
from tests.artifacts import DOCUMENTED_GATES, nan_classifier_bias
from tests.models import KINDS, TINY, padded_batch, stock_config

FIXED_SEQ = 16  # the length fixed-shape formats are exported at (the tiny models have 40 positions)
EXPORTED = ["roberta-bare", *(f"{kind}-cls" for kind in KINDS)]
# ExecuTorch's lowering takes about a minute even for a tiny model: one slice per precision (encoder, classifier).
ONE_SLICE = {"executorch": {"fp32": "roberta-bare", "int8": "bert-cls"}}
EXPORT_CASES = [
    pytest.param(fmt, name, precision, id=f"{fmt}-{name}-{precision}")
    for fmt, exporter in EXPORTERS.items()
    for name in EXPORTED
    for precision in exporter.precisions
    if ONE_SLICE.get(fmt, {}).get(precision, name) == name
]


@pytest.fixture(scope="module")
def tiny_slices(tiny_models, tmp_path_factory):
    """Slices written by `slice`, as a user would export them: a RoBERTa encoder and every kind's classifier."""
    root = tmp_path_factory.mktemp("slices")
    return {name: slice_model(tiny_models[name], 0.5, 0.75, out=root / name)[0] for name in EXPORTED}


def assert_gate(sidecar: dict, precision: str) -> None:
    """Passed, and within the documented bound (not only the package's, which a change could loosen)."""
    parity = sidecar["parity"]
    metric, bound = DOCUMENTED_GATES[precision]
    assert parity["gate"] == {"metric": metric, "bound": bound, "passed": True}
    assert gate_holds(metric, parity[metric], bound)


@pytest.fixture(scope="session")
def fp32_tflite_cache(tmp_path_factory) -> dict:
    return {"root": tmp_path_factory.mktemp("fp32-tflite")}


@pytest.fixture
def tflite_converted_once(monkeypatch, fp32_tflite_cache):
    """litert-torch's conversion (seconds per call) runs once per slice and length in the session: fp16 and
    int8 quantize (and verify) a copy of the very fp32 file their own conversion would have written."""
    convert = TfliteExporter.to_fp32

    def once(source, length, path):
        key = (source.name, json.dumps(source.manifest, sort_keys=True), length)
        if key not in fp32_tflite_cache:
            fp32_tflite_cache[key] = fp32_tflite_cache["root"] / f"{len(fp32_tflite_cache)}.tflite"
            convert(source, length, fp32_tflite_cache[key])
        shutil.copyfile(fp32_tflite_cache[key], path)

    monkeypatch.setattr(TfliteExporter, "to_fp32", staticmethod(once))


@pytest.mark.parametrize(("fmt", "name", "precision"), EXPORT_CASES)
def test_every_format_and_precision_passes_its_gate(tiny_slices, tmp_path, tflite_converted_once, fmt, name, precision):
    """Every registered exporter x precision: gate passed, and a sidecar that describes the artifact as its runtime
    reads it (opened with the sidecar's own settings, as `bench` opens it)."""
    exporter = EXPORTERS[fmt]()
    fixed = exporter.fixed_seq_len(FIXED_SEQ) if exporter.fixed_seq_len(None) is not None else None
    artifact = tmp_path / artifact_name("model", precision, fmt)
    sidecar = export_model(tiny_slices[name], fmt, precision, seq_len=fixed, out=artifact)
    assert_gate(sidecar, precision)
    assert artifact.is_file() and sidecar["size_bytes"] == artifact.stat().st_size
    assert sidecar["sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert sidecar["schema_version"] == SCHEMA_VERSION
    assert sidecar["max_seq_len"] == TINY["max_position_embeddings"]  # RoBERTa's 2 offset positions excluded
    classifier = name.endswith("-cls")
    if classifier:
        assert sidecar["parity"]["top1"]["decided_flipped"] == 0
    on_disk = json.loads(sidecar_path(artifact).read_text())
    assert on_disk["parity"] == sidecar["parity"] and on_disk["manifest"]["width"] == 0.5
    input_names = {spec["name"] for spec in on_disk["inputs"]}
    kind = name.rsplit("-", 1)[0]
    # MediaPipe runs BERT models of three inputs: DistilBERT's TFLite takes segment ids it ignores
    segments = stock_config(kind)["type_vocab_size"] > 1 or (fmt == "tflite" and kind == "distilbert")
    expected = {"input_ids", "attention_mask"} | ({"token_type_ids"} if segments else set())
    assert input_names == expected
    meanings = list(on_disk["output_meaning"].values())
    pooled = ["sentence_embedding"] if exporter.sentence_embedding else []
    assert meanings == (["logits"] if classifier else [*pooled, "last_hidden_state", "pooler_output"])
    assert on_disk["runtime"].items() >= exporter.runtime_options(precision, on_disk["quantization"]).items()

    options = SessionOptions.recorded(1, on_disk["runtime"], on_disk["signature_key"])
    session = open_session(artifact, options)
    assert [spec.to_json() for spec in session.inputs] == on_disk["inputs"]
    assert [spec.to_json() for spec in session.outputs] == on_disk["outputs"]
    assert (on_disk["seq_len"], on_disk["batch_size"]) == (fixed, exporter.fixed_batch_size)
    dims = [dim if isinstance(dim, int) else None for spec in on_disk["inputs"] for dim in spec["shape"]]
    assert dims == [exporter.fixed_batch_size, fixed] * len(on_disk["inputs"])
    checked = on_disk["parity"]["inputs"]
    assert checked["padded_rows"] >= checked["rows"] // 2
    assert checked["shortest_row"] <= min(shape[1] for shape in checked["shapes"]) // 2
    if fixed is not None:
        assert all(shape == [exporter.fixed_batch_size, fixed] for shape in checked["shapes"])
    if precision == "fp32":
        assert_padding_is_verified(exporter, tiny_slices[name], session, fixed)


def ignoring_the_mask(session):
    """The same session, fed an all-ones mask: padding read as tokens, as a runtime that dropped the mask would."""
    real_run = session.run

    def run(feeds):
        return real_run({**feeds, "attention_mask": np.ones_like(feeds["attention_mask"])})

    session.run = run
    return session


def assert_padding_is_verified(exporter, slice_dir, session, seq_len) -> None:
    """The gate runs padded rows: the same artifact fed an all-ones mask (padding read as tokens) fails it."""
    with pytest.raises(ParityGateError, match="max_abs_diff"):
        source = load_source(slice_dir, None, None, exporter.sentence_embedding, exporter.segment_ids)
        verify_artifact(exporter, source, ignoring_the_mask(session), "fp32", seq_len)


def test_onnx_metadata_and_dynamic_shapes(tiny_slices, tiny_models, tmp_path):
    """The manifest is in the ONNX metadata, and the graph runs at any batch and sequence length."""
    import onnxruntime as ort

    from edgebert.export.base import load_source, sample_inputs, torch_outputs

    artifact = tmp_path / "m.onnx"
    export_model(tiny_slices["bert-cls"], "onnx", "fp32", out=artifact)
    metadata = {p.key: p.value for p in onnx.load(str(artifact)).metadata_props}
    manifest = json.loads(metadata["edgebert"])
    assert manifest["layers_kept"] == [0, 1, 2, 4, 5, 6, 8, 9, 10] and manifest["heads_kept"] == 6
    session = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
    source = load_source(tiny_slices["bert-cls"], None, None)
    for batch, seq in [(1, 1), (1, 40), (5, 9), (8, 24)]:
        inputs = sample_inputs(source, batch, seq, seed=batch * 100 + seq)
        (logits,) = session.run(None, inputs)
        np.testing.assert_allclose(logits, torch_outputs(source, inputs)[0], atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_computes_batch_and_length_once_not_per_layer(tiny_models, tmp_path, kind):
    """Each layer's head reshapes take their sizes from what every layer shares (the mask), so the graph's Shape
    nodes do not grow with depth: per-layer shape arithmetic cost narrow int8 slices ~5 % of their time."""
    shapes = []
    for depth in (1.0, 0.5):  # 12 and 6 layers
        artifact = tmp_path / f"{depth}.onnx"
        export_model(tiny_models[f"{kind}-cls"], "onnx", "fp32", width=0.5, depth=depth, out=artifact)
        shapes.append(sum(node.op_type == "Shape" for node in onnx.load(str(artifact)).graph.node))
    assert shapes[0] == shapes[1], shapes


def test_export_slices_a_checkpoint_in_memory(tiny_models, tmp_path):
    sidecar = export_model(tiny_models["bert-cls"], "onnx", "fp32", width=0.25, depth=0.5, out=tmp_path / "a.onnx")
    assert sidecar["manifest"]["heads_kept"] == 3 and sidecar["manifest"]["layers_kept"] == [0, 2, 4, 6, 8, 10]
    assert_gate(sidecar, "fp32")


def test_minilm_int8_onnx_keeps_real_embeddings(minilm_dir, tmp_path):
    """Real weights, real sentences: int8 embeddings point the same way as fp32 PyTorch; file <= 0.3 x fp32."""
    import onnxruntime as ort
    import transformers

    fp32 = export_model(minilm_dir, "onnx", "fp32", out=tmp_path / "fp32.onnx")
    # MiniLM's outlier features defeat per-tensor activation scales in the FFN down-projections: the
    # fastest schemes ("dynamic7", "dynamic") fail the gate, and "mixed", blockwise in those, passes.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        int8 = export_model(minilm_dir, "onnx", "int8", out=tmp_path / "int8.onnx")
    retries = [str(w.message) for w in caught if "parity gate failed" in str(w.message)]
    assert [retry.rsplit(": ", 1)[-1] for retry in retries] == ["retrying with dynamic", "retrying with mixed"]
    choice = int8["quantization_choice"]  # "mixed" passes, so does "blockwise": the faster of the two here ships
    assert [t["passed"] for t in choice["tried"]] == [False, False, True, True] and choice["tried"][2]["race_ms"]
    assert int8["quantization"] in ("mixed", "blockwise") and int8["parity"]["gate"]["passed"]
    assert int8["size_bytes"] <= 0.3 * fp32["size_bytes"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    sentences = ["A Raspberry Pi runs this model.", "The weather is lovely today.", "Sliced BERT, exact logits."]
    batch = tokenizer(sentences, padding=True, return_tensors="np")
    session = ort.InferenceSession(str(tmp_path / "int8.onnx"), providers=["CPUExecutionProvider"])
    hidden, _ = session.run(None, {k: v.astype(np.int64) for k, v in batch.items()})
    reference = transformers.AutoModel.from_pretrained(minilm_dir).eval()
    with torch.no_grad():
        expected = reference(**{k: torch.from_numpy(v) for k, v in batch.items()}).last_hidden_state.numpy()
    mask = batch["attention_mask"][..., None]
    ours, theirs = (hidden * mask).sum(1) / mask.sum(1), (expected * mask).sum(1) / mask.sum(1)  # mean pooling
    cosine = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    assert cosine.min() >= 0.99, cosine


def test_mixed_int8_is_blockwise_exactly_in_the_ffn_down_projections(tiny_models, tmp_path, monkeypatch):
    """ "mixed" int8: one blockwise MatMul per kept layer, shaped [intermediate, hidden] of the slice (the FFN's
    down-projection); every other weight MatMul dynamic int8. Width 0.25 keeps the FFN as wide as the hidden
    size here, so a rule by shape could not tell the down-projection from the up-projection."""
    width, depth = 0.25, 0.5
    monkeypatch.setattr("edgebert.export.onnx.INT8_SCHEMES", ["mixed"])  # the tiny model passes "dynamic" first
    sidecar = export_model(tiny_models["bert-cls"], "onnx", "int8", width=width, depth=depth, out=tmp_path / "m.onnx")
    assert sidecar["quantization"] == "mixed" and sidecar["parity"]["gate"]["passed"]
    layers = int(TINY["num_hidden_layers"] * depth)
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    blockwise = [node for node in graph.node if node.op_type == "MatMulNBits"]
    shapes = [{a.name: a.i for a in node.attribute if a.name in ("K", "N")} for node in blockwise]
    assert shapes == [{"K": int(TINY["intermediate_size"] * width), "N": TINY["hidden_size"]}] * layers
    dynamic = [node for node in graph.node if node.op_type in ("DynamicQuantizeMatMul", "MatMulInteger")]
    assert len(dynamic) == 5 * layers + 2  # Q, K, V, attention output, FFN up; the pooler and the classifier
    weights = {tensor.name for tensor in graph.initializer}
    assert not [node for node in graph.node if node.op_type == "MatMul" and node.input[1] in weights]


INT8_ORDER = ["dynamic7", "dynamic", "mixed", "blockwise"]  # ONNX int8 schemes, fastest first (edgebert.export.onnx)


def fixed_race(monkeypatch, times: dict[str, float]) -> list[list[str]]:
    """`export`'s race with made-up times per scheme (known by its folder), recording who raced whom."""
    races = []

    def race(sessions, source, seq_len):
        names = [session.details["scheme"] for session in sessions]
        races.append(names)
        return [times[name] for name in names]

    real_open = export_module.open_exported

    def open_exported(path, format, options):
        session = real_open(path, format, options)
        session.details["scheme"] = path.parent.name.rsplit("-", 1)[0]  # choose_scheme's folder: <scheme>-XXXX
        return session

    monkeypatch.setattr(export_module, "race", race)
    monkeypatch.setattr(export_module, "open_exported", open_exported)
    return races


@pytest.mark.parametrize("failing", range(len(INT8_ORDER) + 1))
def test_int8_ships_the_fastest_scheme_that_passes_its_gate(tiny_models, tmp_path, monkeypatch, failing):
    """The scheme order without the real MiniLM (whose outliers fail "dynamic"): the `failing` fastest schemes are
    made to fail the gate; the export tries them fastest first, warns at each retry and ships the first that
    passes (here faster than the next, which is tried and raced), or nothing when none does."""
    tried = []
    real_convert = OnnxExporter.convert

    def convert(self, source, path, precision, scheme, seq_len, work_dir, embeddings):
        real_convert(self, source, path, precision, scheme, seq_len, work_dir, embeddings)
        tried.append(scheme)
        if scheme in INT8_ORDER[:failing]:
            nan_classifier_bias(path)

    monkeypatch.setattr(OnnxExporter, "convert", convert)
    fixed_race(monkeypatch, {scheme: rank for rank, scheme in enumerate(INT8_ORDER)})  # the order is right here
    out = tmp_path / "out" / "m.onnx"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            sidecar = export_model(tiny_models["bert-cls"], "onnx", "int8", width=0.25, depth=0.5, out=out)
        except ParityGateError as failure:
            assert failing == len(INT8_ORDER) and "non-finite" in str(failure)
            assert list((tmp_path / "out").iterdir()) == []
        else:
            assert sidecar["quantization"] == INT8_ORDER[failing] and sidecar["parity"]["gate"]["passed"]
    assert tried == INT8_ORDER[: failing + 2]
    retries = [str(w.message) for w in caught if "parity gate failed" in str(w.message)]
    assert [retry.rsplit(": ", 1)[-1] for retry in retries] == [f"retrying with {s}" for s in tried[1 : failing + 1]]


def shipped_scheme(path) -> str:
    """Which ONNX int8 scheme a file was made by, read from its graph (edgebert.export.onnx's INT8_SCHEMES)."""
    graph = onnx.load(str(path)).graph
    weights = {tensor.name: tensor for tensor in graph.initializer}
    integer = [node for node in graph.node if node.op_type == "MatMulInteger"]
    if not integer:
        return "blockwise"
    if any(node.op_type == "MatMulNBits" for node in graph.node):
        return "mixed"
    return "dynamic7" if weights[integer[0].input[1]].data_type == onnx.TensorProto.INT8 else "dynamic"


D7, DYN, MIX, BLOCK = INT8_ORDER


@pytest.mark.parametrize(
    ("times", "shipped", "races"),
    [
        ({D7: 1.0, DYN: 2.0}, D7, [[D7, DYN]]),  # the first to pass is faster than the next: the race stops
        ({D7: 3.0, DYN: 2.0, MIX: 1.0, BLOCK: 5.0}, MIX, [[D7, DYN], [DYN, MIX], [MIX, BLOCK]]),
        ({D7: 3.0, DYN: 2.0, MIX: 4.0}, DYN, [[D7, DYN], [DYN, MIX]]),
        ({D7: 4.0, DYN: 3.0, MIX: 2.0, BLOCK: 1.0}, BLOCK, [[D7, DYN], [DYN, MIX], [MIX, BLOCK]]),
        ({D7: 2.0, DYN: 1.95}, D7, [[D7, DYN]]),  # 2.5 % faster is within the noise margin: the earlier ships
    ],
)
def test_int8_never_ships_a_scheme_slower_than_the_next_that_passes(
    tiny_models, tmp_path, monkeypatch, times, shipped, races
):
    """Every scheme passes on the tiny model; the race times are made up. The shipped scheme is the winner of each
    race against the next passing scheme, its file is that scheme's, and the sidecar says what was tried and why."""
    raced = fixed_race(monkeypatch, times)
    out = tmp_path / "m.onnx"
    sidecar = export_model(tiny_models["bert-cls"], "onnx", "int8", width=0.25, depth=0.5, out=out)
    assert raced == races and sidecar["quantization"] == shipped == shipped_scheme(out)
    choice = sidecar["quantization_choice"]
    assert choice["order"] == INT8_ORDER and all(trial["passed"] for trial in choice["tried"])
    assert {t["scheme"]: t["race_ms"] for t in choice["tried"]} == {s: times[s] for s in sum(races, [])}
    assert f"{shipped} ships (a later scheme must be 5% faster" in choice["reason"]
    on_disk = json.loads(sidecar_path(out).read_text())
    assert on_disk["schema_version"] == 3 and on_disk["quantization_choice"] == choice
    for edit, error in [({"schema_version": 2}, "needs schema_version 3"), ({"quantization": "x"}, "not a scheme")]:
        with pytest.raises(ValueError, match=error):
            Sidecar.model_validate(on_disk | edit)


def exact_integer_matmuls(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with every MatMulInteger computed in float32 from its integers (zero points subtracted): exact, as
    |sum| <= K x 255 x 255 stays far below 2^24 at these sizes, so it is what the graph means on any CPU."""
    from onnx import TensorProto, helper

    nodes = []
    for node in model.graph.node:
        if node.op_type != "MatMulInteger":
            nodes.append(node)
            continue
        name, centred = node.name, []
        for operand, zero_point in zip(node.input[:2], [*node.input[2:4], "", ""][:2], strict=True):
            nodes.append(helper.make_node("Cast", [operand], [f"{name}/{operand}/f"], to=TensorProto.FLOAT))
            centred.append(f"{name}/{operand}/f")
            if zero_point:
                nodes.append(helper.make_node("Cast", [zero_point], [f"{name}/{zero_point}/f"], to=TensorProto.FLOAT))
                nodes.append(helper.make_node("Sub", [centred[-1], f"{name}/{zero_point}/f"], [f"{name}/{operand}/c"]))
                centred[-1] = f"{name}/{operand}/c"
        nodes.append(helper.make_node("MatMul", centred, [f"{name}/y"]))
        nodes.append(helper.make_node("Cast", [f"{name}/y"], list(node.output), to=TensorProto.INT32))
    exact = onnx.ModelProto()
    exact.CopyFrom(model)
    del exact.graph.node[:]
    exact.graph.node.extend(nodes)
    return exact


@pytest.mark.parametrize("scheme", ["dynamic7", "dynamic"])  # the schemes with MatMulInteger
def test_int8_matmuls_compute_the_same_integers_on_every_cpu(tiny_models, tmp_path, monkeypatch, scheme):
    """An int8 artifact's integer MatMuls give exact sums, so the gate's verdict holds on any CPU. Old code: int8
    weights, which ORT's x86 kernel without VNNI (AVX2) multiplies by u8 activations in int16 pairs that saturate
    once two adjacent |weights| sum to more than 32767 / 255 (~128): the tiny BERT's gate cosine fell from 0.9997
    to 0.983 on an AVX2-only CPU. The weight check fails on the old code on every CPU; the sums, where it ran."""
    monkeypatch.setattr("edgebert.export.onnx.INT8_SCHEMES", [scheme])
    export_model(tiny_models["bert-cls"], "onnx", "int8", width=0.25, depth=0.5, out=tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    weights = {tensor.name: onnx.numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    for node in (node for node in model.graph.node if node.op_type == "MatMulInteger"):
        weight = weights[node.input[1]].astype(np.int64)
        if weights[node.input[1]].dtype == np.int8:  # the kernel's pair of products must fit in int16
            assert 255 * int(np.max(np.abs(weight[0::2][: len(weight) // 2]) + np.abs(weight[1::2]))) <= 32767
    exact = tmp_path / "exact.onnx"
    onnx.save(exact_integer_matmuls(model), str(exact))
    batch = {name: tensor.numpy() for name, tensor in padded_batch("bert").items()}
    artifact, reference = (
        open_session(path, SessionOptions(threads=1, disabled_optimizers=("SkipLayerNormFusion",))).run(batch)[0]
        for path in (tmp_path / "m.onnx", exact)
    )
    assert np.max(np.abs(artifact - reference)) <= 1e-4 * np.max(np.abs(reference))


def test_broken_artifact_is_refused_and_nothing_is_left(tiny_slices, tmp_path, monkeypatch):
    """Corrupt a weight after conversion: the gate must catch it and leave no artifact behind."""
    real_convert = OnnxExporter.convert

    def convert_then_corrupt(self, source, path, precision, scheme, seq_len, work_dir, embeddings):
        real_convert(self, source, path, precision, scheme, seq_len, work_dir, embeddings)
        model = onnx.load(str(path))
        biggest = max(model.graph.initializer, key=lambda t: len(t.raw_data))
        values = onnx.numpy_helper.to_array(biggest).copy()
        values[: len(values) // 2] *= -3.0
        biggest.CopyFrom(onnx.numpy_helper.from_array(values, biggest.name))
        onnx.save(model, str(path))

    monkeypatch.setattr(OnnxExporter, "convert", convert_then_corrupt)
    artifact = tmp_path / "out" / "broken.onnx"
    with pytest.raises(EdgebertError, match=r"parity gate failed for onnx fp32: max_abs_diff .* nothing was written"):
        export_model(tiny_slices["bert-cls"], "onnx", "fp32", out=artifact)
    assert list((tmp_path / "out").iterdir()) == []


def test_export_cli(tiny_slices, tmp_path, run_cli):
    artifact = tmp_path / "cli.onnx"
    result = run_cli(
        "export", tiny_slices["bert-cls"], "--format", "onnx", "--precision", "int8", "--out", artifact, "--json"
    )
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["parity"]["gate"]["passed"] is True
    again = run_cli("export", tiny_slices["bert-cls"], "--format", "onnx", "--out", artifact)
    assert again.code == 1 and "already exists" in again.stderr and "--force" in again.stderr
    table = run_cli("export", tiny_slices["bert-cls"], "--format", "onnx", "--out", artifact, "--force")
    assert table.code == 0 and "passed" in table.stdout and "max abs diff" in table.stdout


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [  # a value the option itself refuses is a usage error (2); one the model refuses is an error (1)
        (["--format", "coreml"], "unknown --format 'coreml'", 2),
        (["--precision", "int4"], "unknown --precision 'int4'", 2),
        (["--format", "tflite", "--seq-len", "0"], "'--seq-len': Input should be greater than or equal to 1", 2),
        (["--format", "tflite"], "--seq-len 128 exceeds the model's 40 positions", 1),  # TFLite's default length
        (["--seq-len", "41"], "--seq-len 41 exceeds the model's 40 positions", 1),  # ONNX verifies it too
        (["--width", "0.5"], "already a slice", 1),
        (["--format", "executorch", "--precision", "fp16"], "executorch writes fp32 and int8, not fp16", 1),
    ],
)
def test_export_cli_bad_options(tiny_slices, tmp_path, run_cli, args, message, code):
    out = tmp_path / ("x.tflite" if "tflite" in args else "x.onnx")
    result = run_cli("export", tiny_slices["bert-cls"], *args, "--out", out)
    assert result.code == code and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_damaged_slice_directory_is_one_clear_error(tiny_slices, tmp_path, run_cli):
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_slices["bert-cls"], damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    result = run_cli("export", damaged, "--format", "onnx", "--out", tmp_path / "x.onnx")
    assert result.code == 1 and "is not a readable edgebert slice" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.onnx").exists()
