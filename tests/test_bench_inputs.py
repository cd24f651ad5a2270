"""What bench feeds and reports: every text line at its real length, input dtypes as declared, counts and
lengths checked before running, and the model's memory footprint apart from the runtime's baseline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgebert.bench import bench_artifact, budgets, memory_block
from edgebert.errors import EdgebertError
from edgebert.inputs import MAX_TEXT_TOKENS, InputPlan, id_range, model_inputs, random_tokens, role_arrays
from edgebert.profiles import ProfileError, load_profile
from edgebert.runtimes import Session
from edgebert.sidecar import sidecar_path
from tests.artifacts import QUICK, tiny_artifacts, write_test_sidecar
from tests.artifacts import VOCAB as MODEL_VOCAB
from tests.models import KINDS, tiny_model

WORDS = ["the", "edge", "device", "runs", "bert", "fast", "on", "a", "small", "board"]
WORDPIECE = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    return tiny_artifacts(tmp_path_factory)


@pytest.fixture
def tokenizer_dir(tmp_path) -> Path:
    (tmp_path / "vocab.txt").write_text("\n".join(WORDPIECE))
    return tmp_path


@pytest.fixture
def fed_shapes(monkeypatch) -> list[tuple[int, int]]:
    """The input_ids shape of every batch bench binds for the runtime, in order."""
    shapes: list[tuple[int, int]] = []
    bind = Session.bind

    def recording(self, feeds):
        shapes.append(tuple(next(v for k, v in feeds.items() if k.endswith("input_ids")).shape))
        return bind(self, feeds)

    monkeypatch.setattr(Session, "bind", recording)
    return shapes


def _lines(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "lines.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_text_runs_every_line_at_its_real_length(artifacts, tokenizer_dir, fed_shapes):
    """ONNX has dynamic axes: batch 1 runs each line unpadded, and the runs cycle through the lines."""
    text = _lines(tokenizer_dir, "the edge device runs bert", "", "bert runs fast", "small board")
    lengths = [5 + 2, 3 + 2, 2 + 2]  # words + [CLS] + [SEP]
    result = bench_artifact(
        artifacts["onnx"],
        load_profile("local"),
        text_file=text,
        tokenizer_dir=tokenizer_dir,
        runs=7,
        threads=1,  # one thread count: each line is fed once per run
        warmup=0,
        min_time_s=0,
    )
    inputs = result["inputs"]
    assert fed_shapes == [(1, n) for n in lengths]
    assert inputs["batches"] == 3 and inputs["seq_len"] == max(lengths)
    assert inputs["real_tokens"] == inputs["total_tokens"] == sum(lengths) and inputs["padding_share"] == 0
    assert "3 lines at their real lengths" in inputs["source"] and "cycled over the runs" in inputs["source"]
    # 7 runs cycle 7, 5, 4, 7, 5, 4, 7 tokens through the runtime
    seconds = result["latency_ms"]["mean"] * result["settings"]["runs"] / 1e3
    tokens = sum(lengths[i % 3] for i in range(7))
    assert result["throughput"]["real_tokens_per_s"] == pytest.approx(tokens / seconds, rel=1e-6)
    assert result["throughput"]["sequences_per_s"] == pytest.approx(7 / seconds, rel=1e-6)


def test_text_batches_pad_to_their_longest_row(artifacts, tokenizer_dir, fed_shapes):
    text = _lines(tokenizer_dir, "the edge device runs bert", "bert runs fast", "small board")
    profile = load_profile("local").model_copy(update={"batch_size": 2})
    result = bench_artifact(artifacts["onnx"], profile, text_file=text, tokenizer_dir=tokenizer_dir, threads=1, **QUICK)
    # lines 1+2 (7 and 5 tokens) and lines 3+1 (4 and 7 tokens): each batch as long as its longest row
    assert fed_shapes == [(2, 7), (2, 7)]
    inputs = result["inputs"]
    assert (inputs["real_tokens"], inputs["total_tokens"]) == (7 + 5 + 4 + 7, 2 * 7 + 2 * 7)
    assert inputs["padding_share"] == pytest.approx(1 - 23 / 28)


def test_text_on_a_fixed_shape_is_padded_to_it_and_says_so(artifacts, tokenizer_dir, fed_shapes):
    """TFLite fixes 1 x 16: every line is padded (or cut) to 16 tokens, and the result says so."""
    long = " ".join(WORDS * 2)  # 20 words: cut to 16 tokens with [CLS] and [SEP]
    text = _lines(tokenizer_dir, "bert runs fast", long)
    result = bench_artifact(
        artifacts["tflite"], load_profile("local"), text_file=text, tokenizer_dir=tokenizer_dir, threads=1, **QUICK
    )
    inputs = result["inputs"]
    assert fed_shapes == [(1, 16), (1, 16)]
    assert (inputs["real_tokens"], inputs["total_tokens"]) == (5 + 16, 2 * 16)
    assert "padded to the model's fixed 16 tokens" in inputs["source"] and "1 cut at 16 tokens" in inputs["source"]
    assert any("fixed sequence length of 16" in w for w in result["warnings"])


def test_text_is_bounded_and_bad_text_is_one_line(artifacts, tokenizer_dir):
    onnx, local = artifacts["onnx"], load_profile("local")
    big = tokenizer_dir / "big.txt"
    big.write_text("the edge device runs bert\n" * 45_000)  # 1.17 MB, 7 tokens a line
    result = bench_artifact(onnx, local, text_file=big, tokenizer_dir=tokenizer_dir, **QUICK)
    read = (1 << 20) // len("the edge device runs bert\n")  # whole lines in the first MiB
    assert f"first {MAX_TEXT_TOKENS // 7} of {read} lines" in result["inputs"]["source"]
    assert "only the file's first 1 MiB read" in result["inputs"]["source"]
    assert result["inputs"]["total_tokens"] <= MAX_TEXT_TOKENS

    cases = {
        b"\xff\xfe not utf-8\n": "not UTF-8 text",
        b"\n  \n": "no text in it",
    }
    for content, message in cases.items():
        big.write_bytes(content)
        with pytest.raises(EdgebertError, match=message):
            bench_artifact(onnx, local, text_file=big, tokenizer_dir=tokenizer_dir, **QUICK)
    big.write_text("bert\n")
    (tokenizer_dir / "tokenizer.json").write_text("{not json")
    with pytest.raises(EdgebertError, match="cannot load its tokenizer files"):
        bench_artifact(onnx, local, text_file=big, tokenizer_dir=tokenizer_dir, **QUICK)
    (tokenizer_dir / "tokenizer.json").unlink()
    (tokenizer_dir / "vocab.txt").write_text("\n".join(WORDPIECE + [f"tok{i}" for i in range(3000 - len(WORDPIECE))]))
    with pytest.raises(EdgebertError, match="gives ids up to 2999, the model has only 2048 embedding rows"):
        bench_artifact(onnx, local, text_file=big, tokenizer_dir=tokenizer_dir, **QUICK)


def test_onnx_float16_and_double_inputs_get_their_numpy_dtypes(tmp_path):
    """ORT spells float32 'float' and float64 'double'; 'float16' must stay float16 (was 'float3216')."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    batch_seq = ["batch", "sequence"]
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["input_ids"], ["ids"], to=TensorProto.FLOAT),
            helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
            helper.make_node("Cast", ["token_type_ids"], ["types"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["ids", "mask"], ["masked"]),
            helper.make_node("Add", ["masked", "types"], ["logits"]),
        ],
        "dtypes",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, batch_seq),
            helper.make_tensor_value_info("attention_mask", TensorProto.FLOAT16, batch_seq),
            helper.make_tensor_value_info("token_type_ids", TensorProto.DOUBLE, batch_seq),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, batch_seq)],
    )
    path = tmp_path / "dtypes.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    result = bench_artifact(path, load_profile("local"), seq_len=8, **QUICK)
    assert result["inputs"]["dtypes"] == {
        "input_ids": "int64",
        "attention_mask": "float16",
        "token_type_ids": "float64",
    }


def test_seq_len_above_the_models_positions_fails_before_running(artifacts, tmp_path):
    short = tmp_path / "short.onnx"
    shutil.copy(artifacts["onnx"], short)
    write_test_sidecar(short, max_seq_len=64)
    with pytest.raises(EdgebertError) as info:
        bench_artifact(short, load_profile("local"), seq_len=65, **QUICK)
    assert str(info.value) == (
        f"{short}: sequence length 65 exceeds the model's 64 positions (its sidecar's max_seq_len); "
        "use --seq-len 64 or less"
    )
    assert bench_artifact(short, load_profile("local"), seq_len=64, **QUICK)["inputs"]["seq_len"] == 64
    # the real model has 512 positions: 600 used to reach ORT and come back as a broadcast error
    with pytest.raises(EdgebertError, match="sequence length 600 exceeds the model's 512 positions"):
        bench_artifact(artifacts["onnx"], load_profile("local"), seq_len=600, **QUICK)


def test_bad_settings_and_sidecars_are_not_load_failures(artifacts, tmp_path, run_cli):
    """Only the runtime's own refusal says it cannot load the file; bad counts are refused before anything runs."""
    onnx, local = artifacts["onnx"], load_profile("local")
    for bad in ({"threads": 10**23}, {"runs": 10**12}, {"warmup": 10**12}, {"min_time_s": float("inf")}):
        with pytest.raises(ProfileError, match="bench settings: ") as info:
            bench_artifact(onnx, local, **(QUICK | bad))
        assert "cannot load" not in str(info.value)
    cli = run_cli("bench", onnx, "--runs", "1000000000000", "--min-time", "0")
    assert cli.code == 2 and cli.stderr.splitlines() == [  # an option's value out of range: a usage error
        "error: Invalid value for '--runs': Input should be less than or equal to 100000"
    ]
    for runtime, message in (
        ("garbage", "runtime"),
        ({"graph_optimization_level": "fastest"}, "graph_optimization_level 'fastest' is none of"),
    ):
        copy = tmp_path / "copy.onnx"
        shutil.copy(onnx, copy)
        write_test_sidecar(copy)
        sidecar = json.loads(sidecar_path(copy).read_text())  # edited by hand: the schema refuses to write these
        sidecar["runtime"] = runtime if isinstance(runtime, str) else sidecar["runtime"] | runtime
        sidecar_path(copy).write_text(json.dumps(sidecar))
        with pytest.raises(EdgebertError, match=message) as info:
            bench_artifact(copy, local, **QUICK)
        assert "cannot load" not in str(info.value)


def test_memory_block_separates_the_runtime_baseline_from_the_models_footprint():
    mb = 1_000_000
    block = memory_block(
        100 * mb, loaded=130 * mb, after_runs=125 * mb, peak=160 * mb, peak_counts_from_load=True, baseline_of=""
    )
    assert (block["baseline_bytes"], block["model_footprint_bytes"]) == (100 * mb, 60 * mb)
    assert block["footprint_from"] == "peak RSS since load"
    # where the peak cannot be reset it may predate the model: the largest sample after load is used
    block_no_reset = memory_block(100 * mb, 130 * mb, 125 * mb, 500 * mb, peak_counts_from_load=False, baseline_of="")
    assert block_no_reset["model_footprint_bytes"] == 30 * mb
    assert block_no_reset["footprint_from"] == "RSS sampled after load and runs"

    profile = load_profile("pixel-7").model_copy(update={"memory_budget_mb": 100.0})  # 100 MB
    latency = {"p95": 1.0}
    footprint = budgets(profile, latency, block)
    assert footprint["memory_checked"] == "model_footprint_bytes" and footprint["within_memory_budget"]
    process = budgets(profile.model_copy(update={"memory_budget_scope": "process"}), latency, block)
    assert process["memory_checked"] == "peak_rss_bytes" and not process["within_memory_budget"]


def test_result_and_table_show_footprint_and_baseline(artifacts, tmp_path, run_cli):
    result = bench_artifact(artifacts["onnx"], load_profile("local"), **QUICK)
    memory = result["memory"]
    assert memory["baseline_bytes"] == memory["rss_before_load_bytes"] > 0  # the runtime is imported by then
    assert memory["baseline_of"] == "the process with onnxruntime imported"
    if memory["peak_counts_from_load"]:
        assert memory["model_footprint_bytes"] == memory["peak_rss_bytes"] - memory["baseline_bytes"]
    assert 0 <= memory["model_footprint_bytes"] < memory["peak_rss_bytes"]

    profile = tmp_path / "budget.yaml"
    profile.write_text(
        "name: budget\ndescription: d\nruntime: onnxruntime\nthreads: 1\nhardware: detect\n"
        "runs: 3\nwarmup_runs: 0\nmemory_budget_mb: 4096\nlatency_budget_ms: 10000\n"
    )
    table = run_cli("bench", artifacts["onnx"], "--profile", profile)
    assert table.code == 0, table.stderr
    assert "model footprint" in table.stdout and "runtime baseline" in table.stdout
    assert "within memory budget" in table.stdout and "yes (model footprint" in table.stdout
    assert "yes (p95" in table.stdout


# ---- the one input generator --------------------------------------------------------------------


# Each family's stock vocabulary (its released tokenizer files): size and the ids that are no regular token.
# bert-base-uncased (ELECTRA's and DistilBERT's too): [PAD] 0, [unused0-98] 1-99, [UNK] [CLS] [SEP] [MASK] 100-103,
# [unused99-993] 104-998; roberta-base and xlm-roberta-base: <s> <pad> </s> <unk> 0-3, <mask> last; ModernBERT-base:
# |||IP_ADDRESS||| 0, <|padding|> 1, |||EMAIL_ADDRESS||| ... [MASK] 50277-50284, [unused0-82] 50285-50367.
BERT_UNCASED = (30_522, set(range(999)))
STOCK_SPECIALS = {
    "bert": BERT_UNCASED,
    "roberta": (50_265, {0, 1, 2, 3, 50_264}),
    "xlm-roberta": (250_002, {0, 1, 2, 3, 250_001}),
    "electra": BERT_UNCASED,
    "distilbert": BERT_UNCASED,
    "modernbert": (50_368, {0, 1, *range(50_277, 50_368)}),
}
TOKEN_ID_FIELDS = ("pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id")


def config_ids(config) -> set[int]:
    """The token ids a transformers config names (padding, begin, end, classification, separator)."""
    return {i for field in TOKEN_ID_FIELDS if (i := getattr(config, field, None)) is not None}


def tiny_tokenizer(kind: str, directory: Path):
    """tests.labelled's tokenizer of `kind` (None for RoBERTa, which has none there) and its model's vocabulary size."""
    import transformers

    from tests.labelled import (
        BPE_KINDS,
        PIECES,
        TOKENIZED_KINDS,
        UNIGRAM_KINDS,
        VOCAB,
        tokenizer_for,
        write_bpe_tokenizer,
        write_unigram_tokenizer,
    )

    if kind not in TOKENIZED_KINDS:
        return None, 0
    if kind in UNIGRAM_KINDS:
        write_unigram_tokenizer(directory)
        return transformers.AutoTokenizer.from_pretrained(directory), len(PIECES)
    if kind in BPE_KINDS:
        write_bpe_tokenizer(directory)
        return transformers.AutoTokenizer.from_pretrained(directory), len(VOCAB)
    return tokenizer_for(VOCAB), len(VOCAB)


@pytest.mark.parametrize("kind", KINDS)
def test_random_ids_are_no_special_token_of_the_family(kind, tmp_path):
    """Never a special (or unused) token's id, nor the pad id: in the family's real vocabulary (its stock config's pad
    and token ids, and its tokenizer's specials above), in its tiny test models (their configs' ids) and in its tiny
    tokenizer (tests.labelled's); most of each vocabulary is still drawn from."""
    import transformers

    size, specials = STOCK_SPECIALS[kind]
    stock = transformers.AutoConfig.for_model(kind)
    assert config_ids(stock) <= specials  # the facts above hold the stock config's own ids
    tiny = tiny_model(kind).config
    vocabularies = [(size, stock.pad_token_id, specials), (tiny.vocab_size, tiny.pad_token_id, config_ids(tiny))]
    tokenizer, tokenizer_vocab = tiny_tokenizer(kind, tmp_path)
    if tokenizer is not None:
        vocabularies.append((tokenizer_vocab, tokenizer.pad_token_id, set(tokenizer.all_special_ids)))
    for vocab, pad_id, avoided in vocabularies:
        low, high = id_range(vocab, pad_id, kind)
        assert not avoided & set(range(low, high)), (vocab, sorted(avoided & set(range(low, high)))[:5])
        assert high - low >= 0.8 * vocab if vocab > 2000 else high - low >= vocab / 2
        ids, mask, description = random_tokens(16, 24, vocab, pad_id, kind, padding_share=0.25, seed=3)
        real = ids[mask == 1]
        assert low <= real.min() and real.max() < high and (ids[mask == 0] == pad_id).all()
        assert description == f"random ids in [{low}, {high}), seed 3"
        again, _, _ = random_tokens(16, 24, vocab, pad_id, kind, padding_share=0.25, seed=3)
        assert (again == ids).all()  # seeded


@pytest.mark.parametrize(
    ("vocab", "pad_id", "expected"), [(30_522, 5000, (5001, 30_522)), (120, 100, (5, 100)), (2, 0, (1, 2))]
)
def test_a_pad_id_among_the_regular_ids_is_never_drawn(vocab, pad_id, expected):
    """A custom vocabulary's pad id where regular tokens are: the longer side of it (in a 2-token one, the other)."""
    assert id_range(vocab, pad_id, "bert") == expected


@pytest.mark.parametrize(("batch", "seq", "share"), [(8, 37, 0.4), (4, 128, 0.25), (1, 16, 0.25), (2, 16, 0.0)])
def test_rows_are_right_padded_to_the_requested_share(batch, seq, share):
    _, mask, _ = random_tokens(batch, seq, MODEL_VOCAB, 0, "bert", share, seed=0)
    lengths = mask.sum(-1)
    assert (mask == (np.arange(seq)[None, :] < lengths[:, None])).all()  # real tokens first, then padding
    assert lengths.min() >= 2 and 1 - mask.mean() == pytest.approx(share, abs=1 / seq + 0.01)


def test_two_segments_cover_each_rows_real_tokens():
    """The gate's rows have token types 0 then 1 over the real tokens, 0 on padding; bench's are all 0."""
    ids, mask, _ = random_tokens(6, 20, MODEL_VOCAB, 0, "bert", 0.4, seed=1)
    types = role_arrays(ids, mask, segments=True)["token_type_ids"]
    for row, length in zip(types, mask.sum(-1), strict=True):
        assert row.tolist() == [0] * (length // 2) + [1] * (length - length // 2) + [0] * (20 - length)
    assert not role_arrays(ids, mask)["token_type_ids"].any()


def test_inputs_from_a_sidecar_match_the_sessions_without_opening_one(artifacts):
    """benchmarks/run.py's PyTorch baseline builds the runtimes' very inputs from the sidecar alone."""
    from edgebert.bench import read_sidecar, session_options
    from edgebert.runtimes import open_session

    for artifact in artifacts.values():
        sidecar = read_sidecar(artifact)
        session = open_session(artifact, session_options(sidecar, 1, load_profile("local")))
        plan = InputPlan(1, 12, 0.25, seed=5)
        from_session = model_inputs(session.inputs, sidecar, plan, source=artifact)
        from_sidecar = model_inputs(sidecar.input_specs(), sidecar, plan, source=artifact)
        assert from_session.info == from_sidecar.info
        for name, array in from_session.batches[0].feeds.items():
            assert array.dtype == from_sidecar.batches[0].feeds[name].dtype
            assert (array == from_sidecar.batches[0].feeds[name]).all()


def test_session_run_casts_to_the_declared_dtypes(artifacts):
    """`Session.run` (the gate's call) feeds what the signature declares: int64 ids run on TFLite's int32 inputs."""
    from edgebert.runtimes import SessionOptions, open_session

    session = open_session(artifacts["tflite"], SessionOptions(threads=1))
    assert {spec.dtype for spec in session.inputs} == {"int32"}
    ids, mask, _ = random_tokens(1, 16, MODEL_VOCAB, 0, "bert", 0.25, seed=2)
    feeds = {spec.name: role_arrays(ids, mask)[spec.name] for spec in session.inputs}
    (logits,) = session.run(feeds)
    (expected,) = session.run({name: array.astype(np.int32) for name, array in feeds.items()})
    assert logits.shape == (1, 2) and (logits == expected).all()
