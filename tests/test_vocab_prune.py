"""Vocabulary pruning: `edgebert slice --vocab-from FILE` keeps the word embeddings of the tokens FILE's texts need.

Every fact is computed apart from edgebert: the kept ids from the source's own tokenizer (transformers'
AutoTokenizer on the source directory), the reference outputs from the unpruned slice run on the
original tokenizer's ids, the pruned slice's through its own tokenizer loaded with AutoTokenizer from
the slice directory. What holds (edgebert/vocab.py): through tokenizer.json, a text whose tokens were
all kept gives the unpruned slice's outputs, and any other text the unpruned slice's outputs on the
original ids with each dropped token replaced by [UNK]'s id; a client reading only vocab.txt agrees on
the first kind of text and splits the second by WordPiece over the kept tokens.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

import edgebert  # noqa: F401 (registers the narrower slices' class with transformers' Auto classes)
from edgebert.slicing import slice_model
from tests.cli_checks import assert_one_line_error
from tests.labelled import WORDPIECE_KINDS
from tests.models import save_model, tiny_model

TOLERANCE = 1e-5
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Words before the special tokens, one of them dropped ("playing"), so the specials' ids change too.
VOCAB = [
    *["[PAD]", "the", "a", "playing", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    *["film", "movie", "is", "was", "good", "bad", "fun", "not", "and", "very", "great", "plot"],
    *["play", "##ing", "##ed", "un", "##aff", "##able", "charm", "##s", ",", ".", "!"],
]
UNK = VOCAB.index("[UNK]")
# The source texts: "playing", "##aff", "great" and "plot" never occur; "play", "##ing", "un", "##able" do.
SOURCE_TEXTS = ["the film is good.", "a movie was fun, not bad!", "charming", "he played", "unable and very charms"]
KEPT_TEXTS = ["the film was fun", "charming play, very good!", "unable movie", "a charm is not bad"]
# Each has a dropped token: a whole word ("playing"), a piece of one ("##aff"), words never seen (great, plot).
DROPPED_TEXTS = ["playing the film", "an unaffable movie", "great plot!", "the film was playing. great"]
SST2_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue" / "SST-2" / "dev.tsv"
MINILM_DROPPED = ["The xylophonist's quixotic zeitgeist bewildered Kyrgyzstan.", "Photosynthesis in cyanobacteria"]


def tokenizer_of(directory: Path):
    return transformers.AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


def model_of(directory: Path, classifier: bool):
    auto = transformers.AutoModelForSequenceClassification if classifier else transformers.AutoModel
    return auto.from_pretrained(str(directory)).eval()


def expected_kept(source: Path, texts: list[str], min_count: int = 1) -> list[int]:
    """The ids the source's own tokenizer produces on `texts` (at least `min_count` times), with its special ids."""
    tokenizer = tokenizer_of(source)
    counts: dict[int, int] = {}
    for text in texts:
        for token_id in tokenizer(text, add_special_tokens=False)["input_ids"]:
            counts[token_id] = counts.get(token_id, 0) + 1
    seen = {token_id for token_id, count in counts.items() if count >= min_count}
    return sorted(seen | set(tokenizer.all_special_ids))


def decoded_kept_ids(record: dict) -> list[int]:
    """The manifest's bitmap, read as README documents it: bit j of byte i marks original id 8 i + j."""
    bitmap = base64.b64decode(record["kept_ids"])
    return [8 * i + j for i, byte in enumerate(bitmap) for j in range(8) if byte >> j & 1]


def outputs(model, batch: dict, classifier: bool) -> torch.Tensor:
    with torch.no_grad():
        result = model(**batch)
    return result.logits if classifier else result.last_hidden_state


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def build_wordpiece_bert(directory: Path, num_labels: int = 2, kind: str = "bert") -> Path:
    """A tiny BERT classifier (a regressor for 1 label; another kind's with `kind`) with a WordPiece vocabulary that
    has whole words and pieces (vocab.txt only)."""
    model = tiny_model(kind, num_labels=num_labels, vocab_size=len(VOCAB), max_positions=64)
    return save_model(model, directory, VOCAB, json.dumps({"do_lower_case": True}))


@pytest.fixture(scope="module")
def wordpiece_bert(tmp_path_factory) -> Path:
    return build_wordpiece_bert(tmp_path_factory.mktemp("wp") / "wp-bert")


@pytest.fixture(scope="module")
def source_texts(tmp_path_factory) -> Path:
    return write_lines(tmp_path_factory.mktemp("texts") / "texts.txt", SOURCE_TEXTS)


@pytest.fixture(scope="module")
def tiny_slices(wordpiece_bert, source_texts, tmp_path_factory) -> dict:
    """(width, depth) -> (unpruned slice, pruned slice) of the tiny BERT: a stock class and a narrower one."""
    root = tmp_path_factory.mktemp("tiny-slices")
    slices = {}
    for width, depth in ((1.0, 0.5), (0.5, 0.75)):
        plain = slice_model(wordpiece_bert, width, depth, out=root / f"plain-{width}-{depth}")[0]
        pruned = slice_model(
            wordpiece_bert, width, depth, out=root / f"pruned-{width}-{depth}", vocab_from=[source_texts]
        )[0]
        slices[width, depth] = plain, pruned
    return slices


@pytest.fixture(scope="module")
def kind_slices(tiny_slices, wordpiece_bert, source_texts, tmp_path_factory):
    """(source, {shape: (unpruned, pruned)}) of each WordPiece kind's tiny classifier: BERT's are `tiny_slices`."""
    built = {"bert": (wordpiece_bert, tiny_slices)}

    def build(kind: str):
        if kind not in built:
            root = tmp_path_factory.mktemp(kind)
            source = build_wordpiece_bert(root / "source", kind=kind)
            built[kind] = (
                source,
                {
                    shape: tuple(
                        slice_model(source, *shape, out=root / f"{name}-{shape}", vocab_from=sources)[0]
                        for name, sources in (("plain", ()), ("pruned", [source_texts]))
                    )
                    for shape in tiny_slices
                },
            )
        return built[kind]

    return build


# --- what is kept, and in which order ------------------------------------------------------------------------


def test_kept_rows_are_the_texts_tokens_and_the_specials_in_their_original_order(
    wordpiece_bert, source_texts, tiny_slices
):
    kept = expected_kept(wordpiece_bert, SOURCE_TEXTS)
    names = [VOCAB[i] for i in kept]
    assert set(SPECIALS) <= set(names) and {"play", "##ing", "un", "##able"} <= set(names)
    assert not {"playing", "##aff", "great", "plot"} & set(names)
    original = load_file(str(wordpiece_bert / "model.safetensors"))["bert.embeddings.word_embeddings.weight"]
    for width, depth in tiny_slices:
        pruned = tiny_slices[width, depth][1]
        config = json.loads((pruned / "config.json").read_text())
        assert config["vocab_size"] == len(kept) and config["pad_token_id"] == kept.index(0)
        weights = load_file(str(pruned / "model.safetensors"))
        rows = weights["bert.embeddings.word_embeddings.weight"]
        assert torch.equal(rows, original[kept])  # the kept rows, in the original order
        plain = load_file(str(tiny_slices[width, depth][0] / "model.safetensors"))
        for name in ("position_embeddings", "token_type_embeddings"):  # untouched
            key = f"bert.embeddings.{name}.weight"
            assert torch.equal(weights[key], plain[key])
        assert (pruned / "vocab.txt").read_text().splitlines() == names
        tokenizer = tokenizer_of(pruned)
        for token in SPECIALS:
            assert tokenizer.convert_tokens_to_ids(token) == names.index(token)
        assert (tokenizer.unk_token_id, tokenizer.pad_token_id) == (names.index("[UNK]"), names.index("[PAD]"))
        model = model_of(pruned, classifier=True)
        assert model.get_input_embeddings().weight.shape == (len(kept), 48)
        assert model.get_output_embeddings() is None  # a classifier: no output head tied to the table


def test_manifest_records_the_sources_and_explains_every_id(wordpiece_bert, source_texts, tiny_slices):
    kept = expected_kept(wordpiece_bert, SOURCE_TEXTS)
    manifest = json.loads((tiny_slices[1.0, 0.5][1] / "edgebert.json").read_text())
    record = manifest["vocabulary"]
    assert record["sources"] == [
        {
            "path": str(source_texts.resolve()),
            "sha256": hashlib.sha256(source_texts.read_bytes()).hexdigest(),
            "examples": len(SOURCE_TEXTS),
        }
    ]
    assert (record["min_count"], record["original_size"], record["kept"]) == (1, len(VOCAB), len(kept))
    assert decoded_kept_ids(record) == kept  # new id i is original id kept[i]
    assert record["unknown_id"] == kept.index(UNK)
    plain = json.loads((tiny_slices[1.0, 0.5][0] / "edgebert.json").read_text())
    assert "vocabulary" not in plain
    assert plain["parameters"] - manifest["parameters"] == (len(VOCAB) - len(kept)) * 48


def test_min_count_keeps_the_tokens_seen_that_often_and_every_special(wordpiece_bert, tmp_path):
    texts = ["the film the film the", "a film", "good !"]  # the: 3, film: 3, a: 1, good: 1, !: 1
    source = write_lines(tmp_path / "texts.txt", texts)
    out = slice_model(wordpiece_bert, 1.0, 1.0, out=tmp_path / "pruned", vocab_from=[source], vocab_min_count=2)[0]
    kept = [VOCAB[i] for i in expected_kept(wordpiece_bert, texts, min_count=2)]
    assert kept == [token for token in VOCAB if token in {*SPECIALS, "the", "film"}]
    assert (out / "vocab.txt").read_text().splitlines() == kept
    assert json.loads((out / "edgebert.json").read_text())["vocabulary"]["min_count"] == 2


def test_tables_count_their_text_columns_only_and_several_files_add_up(wordpiece_bert, tmp_path):
    """A GLUE-style TSV is read as `eval` reads it (sentence1 and sentence2; index and label ignored)."""
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("index\tsentence1\tsentence2\tlabel\nplot\tthe film\ta movie\t1\ngreat\tis fun\tnot bad\t0\n")
    more = write_lines(tmp_path / "more.txt", ["very good!"])
    out = slice_model(wordpiece_bert, 1.0, 1.0, out=tmp_path / "pruned", vocab_from=[pairs, more])[0]
    kept = expected_kept(wordpiece_bert, ["the film", "a movie", "is fun", "not bad", "very good!"])
    assert (out / "vocab.txt").read_text().splitlines() == [VOCAB[i] for i in kept]
    assert "plot" not in (out / "vocab.txt").read_text().splitlines()
    sources = json.loads((out / "edgebert.json").read_text())["vocabulary"]["sources"]
    assert [(Path(s["path"]).name, s["examples"]) for s in sources] == [("pairs.tsv", 2), ("more.txt", 1)]


# --- the promise --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1.0, 0.5), (0.5, 0.75)], ids=["w1-d0.5-stock", "w0.5-d0.75-narrow"])
@pytest.mark.parametrize("kind", WORDPIECE_KINDS)
def test_texts_whose_tokens_were_all_kept_give_the_unpruned_outputs(kind_slices, kind, shape):
    wordpiece_bert, slices = kind_slices(kind)
    plain, pruned = slices[shape]
    kept = set(expected_kept(wordpiece_bert, SOURCE_TEXTS))
    original, own = tokenizer_of(wordpiece_bert), tokenizer_of(pruned)
    texts = [*SOURCE_TEXTS, *KEPT_TEXTS]
    pairs = list(reversed(texts))
    reference = original(texts, pairs, padding=True, return_tensors="pt")
    assert set(reference["input_ids"].flatten().tolist()) <= kept
    batch = own(texts, pairs, padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()  # padded rows too
    expected = outputs(model_of(plain, True), dict(reference), True)
    assert (outputs(model_of(pruned, True), dict(batch), True) - expected).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("shape", [(1.0, 0.5), (0.5, 0.75)], ids=["w1-d0.5-stock", "w0.5-d0.75-narrow"])
def test_a_dropped_token_becomes_the_unknown_token(wordpiece_bert, tiny_slices, shape):
    plain, pruned = tiny_slices[shape]
    kept = set(expected_kept(wordpiece_bert, SOURCE_TEXTS))
    original, own = tokenizer_of(wordpiece_bert), tokenizer_of(pruned)
    reference = original(DROPPED_TEXTS, padding=True, return_tensors="pt")
    ids = reference["input_ids"]
    dropped = ~torch.isin(ids, torch.tensor(sorted(kept)))
    assert dropped.sum(1).min() >= 1  # every text has a dropped token
    reference["input_ids"] = ids.masked_fill(dropped, UNK)  # the original ids, each dropped token made [UNK]'s
    batch = own(DROPPED_TEXTS, padding=True, return_tensors="pt")
    assert own.convert_ids_to_tokens(batch["input_ids"][1].tolist())[:6] == [
        "[CLS]", "[UNK]", "un", "[UNK]", "##able", "movie"  # "an" and "##aff" dropped: the other pieces stay
    ]  # fmt: skip
    expected = outputs(model_of(plain, True), dict(reference), True)
    assert (outputs(model_of(pruned, True), dict(batch), True) - expected).abs().max().item() <= TOLERANCE


def test_a_client_reading_only_vocab_txt_agrees_on_kept_texts_and_splits_others_over_the_kept_tokens(
    wordpiece_bert, tiny_slices, tmp_path
):
    """vocab.txt gives each id one token, so it cannot send a dropped piece to [UNK]: WordPiece over the kept
    tokens splits "playing" into kept pieces and makes "unaffable" one [UNK] (tokenizer.json: [UNK], and un [UNK]
    ##able)."""
    pruned = tiny_slices[1.0, 0.5][1]
    only_vocab = tmp_path / "vocab-only"
    only_vocab.mkdir()
    for name in ("vocab.txt", "tokenizer_config.json", "config.json"):
        shutil.copy(pruned / name, only_vocab / name)
    by_vocab, by_json = tokenizer_of(only_vocab), tokenizer_of(pruned)
    for text in [*SOURCE_TEXTS, *KEPT_TEXTS]:
        assert by_vocab(text)["input_ids"] == by_json(text)["input_ids"]
    assert by_vocab.tokenize("playing unaffable") == ["play", "##ing", "[UNK]"]
    ids = by_json("playing unaffable", add_special_tokens=False)["input_ids"]
    assert by_json.convert_ids_to_tokens(ids) == ["[UNK]", "un", "[UNK]", "##able"]


def test_tokenizer_config_ids_are_remapped(wordpiece_bert, source_texts, tmp_path):
    """A source with tokenizer.json and a tokenizer_config.json naming its tokens by id (transformers 4's
    added_tokens_decoder): the slice's files give the new ids."""
    source = Path(shutil.copytree(wordpiece_bert, tmp_path / "with-json"))
    tokenizer_of(wordpiece_bert).backend_tokenizer.save(str(source / "tokenizer.json"))
    decoder = {str(VOCAB.index(t)): {"content": t, "special": True} for t in SPECIALS}
    (source / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "added_tokens_decoder": decoder}))
    out = slice_model(source, 0.5, 0.5, out=tmp_path / "pruned", vocab_from=[source_texts])[0]
    names = (out / "vocab.txt").read_text().splitlines()
    written = json.loads((out / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    assert {key: token["content"] for key, token in written.items()} == {str(names.index(t)): t for t in SPECIALS}
    tokenizer = tokenizer_of(out)
    assert tokenizer("the film")["input_ids"] == [names.index(t) for t in ("[CLS]", "the", "film", "[SEP]")]


# --- real all-MiniLM-L6-v2 ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_slices(minilm_dir, tmp_path_factory) -> dict:
    """MiniLM (a bare sentence-transformers encoder, tokenizer.json) at (0.25, 0.5), pruned to SST-2 dev's tokens."""
    if not SST2_DEV.is_file():
        pytest.skip(f"{SST2_DEV} is not here")
    root = tmp_path_factory.mktemp("minilm-vocab")
    plain = slice_model(minilm_dir, 0.25, 0.5, out=root / "plain")[0]
    pruned = slice_model(minilm_dir, 0.25, 0.5, out=root / "pruned", vocab_from=[SST2_DEV])[0]
    return {"plain": plain, "pruned": pruned}


def sst2_sentences() -> list[str]:
    return [line.split("\t")[0] for line in SST2_DEV.read_text(encoding="utf-8").splitlines()[1:]]


def test_minilm_pruned_to_sst2_dev_keeps_its_tokens_and_outputs(minilm_dir, minilm_slices):
    sentences = sst2_sentences()
    kept = expected_kept(minilm_dir, sentences)
    plain, pruned = minilm_slices["plain"], minilm_slices["pruned"]
    record = json.loads((pruned / "edgebert.json").read_text())["vocabulary"]
    assert decoded_kept_ids(record) == kept and record["original_size"] == 30522
    assert record["sources"][0]["sha256"] == hashlib.sha256(SST2_DEV.read_bytes()).hexdigest()
    assert 2_000 < len(kept) < 10_000  # a few thousand of 30,522
    assert (pruned / "model.safetensors").stat().st_size < (plain / "model.safetensors").stat().st_size / 3
    original, own = tokenizer_of(minilm_dir), tokenizer_of(pruned)
    texts = sentences[:48]
    reference = original(texts, padding=True, truncation=True, return_tensors="pt")
    batch = own(texts, padding=True, truncation=True, return_tensors="pt")
    new_ids = {old: new for new, old in enumerate(kept)}
    assert batch["input_ids"].tolist() == [[new_ids[i] for i in row] for row in reference["input_ids"].tolist()]
    expected = outputs(model_of(plain, False), dict(reference), False)
    assert (outputs(model_of(pruned, False), dict(batch), False) - expected).abs().max().item() <= TOLERANCE


def test_minilm_dropped_tokens_become_unknown(minilm_dir, minilm_slices):
    kept = expected_kept(minilm_dir, sst2_sentences())
    original, own = tokenizer_of(minilm_dir), tokenizer_of(minilm_slices["pruned"])
    reference = original(MINILM_DROPPED, padding=True, return_tensors="pt")
    dropped = ~torch.isin(reference["input_ids"], torch.tensor(kept))
    assert dropped.sum(1).min() >= 2
    reference["input_ids"] = reference["input_ids"].masked_fill(dropped, original.unk_token_id)
    batch = own(MINILM_DROPPED, padding=True, return_tensors="pt")
    new_ids = {old: new for new, old in enumerate(kept)}
    assert batch["input_ids"].tolist() == [[new_ids[i] for i in row] for row in reference["input_ids"].tolist()]
    expected = outputs(model_of(minilm_slices["plain"], False), dict(reference), False)
    got = outputs(model_of(minilm_slices["pruned"], False), dict(batch), False)
    assert (got - expected).abs().max().item() <= TOLERANCE


def test_minilm_pruned_slice_loads_in_sentence_transformers(minilm_slices):
    st = pytest.importorskip("sentence_transformers")
    texts = sst2_sentences()[:8]  # all of their tokens are kept
    plain = st.SentenceTransformer(str(minilm_slices["plain"]), device="cpu").encode(texts, convert_to_tensor=True)
    pruned = st.SentenceTransformer(str(minilm_slices["pruned"]), device="cpu").encode(texts, convert_to_tensor=True)
    assert (plain - pruned).abs().max().item() <= TOLERANCE


# --- info ---------------------------------------------------------------------------------------------------


def test_info_shows_the_embedding_share_and_the_kept_vocabulary(run_cli, minilm_slices):
    pruned = minilm_slices["pruned"]
    result = run_cli("info", pruned, "--json")
    assert result.code == 0, result.stderr
    info = json.loads(result.stdout)
    model = model_of(pruned, False)
    (row,) = info["grid"]
    embeddings = sum(p.numel() for p in model.embeddings.parameters())
    assert row["parameters"] == sum(p.numel() for p in model.parameters())
    assert row["embedding_parameters"] == embeddings
    record = json.loads((pruned / "edgebert.json").read_text())["vocabulary"]
    assert info["vocabulary"]["kept"] == record["kept"] == model.config.vocab_size
    assert info["vocabulary"]["original_size"] == 30522 and info["architecture"]["vocab_size"] == 30522
    assert (row["width"], row["depth"], row["layers_kept"]) == (0.25, 0.5, [0, 2, 4])
    table = run_cli("info", pruned)
    assert table.code == 0, table.stderr
    share = round(100 * embeddings / row["parameters"])
    assert f"embeddings: {embeddings / 1e6:.1f} M parameters, {share}%" in table.stdout
    assert f"vocabulary kept: {record['kept']:,} of 30,522 tokens" in table.stdout


def test_info_on_an_unpruned_slice_shows_its_row(run_cli, minilm_slices):
    result = run_cli("info", minilm_slices["plain"], "--json")
    assert result.code == 0, result.stderr
    info = json.loads(result.stdout)
    assert "vocabulary" not in info and info["grid"][0]["embedding_parameters"] == (30522 + 512 + 2) * 384 + 2 * 384


def test_a_manifest_whose_kept_ids_disagree_is_refused(run_cli, tiny_slices, tmp_path):
    pruned = Path(shutil.copytree(tiny_slices[0.5, 0.75][1], tmp_path / "pruned"))
    manifest = json.loads((pruned / "edgebert.json").read_text())
    manifest["vocabulary"]["kept"] += 1
    (pruned / "edgebert.json").write_text(json.dumps(manifest))
    assert_one_line_error(run_cli("info", pruned), "kept_ids marks")
    manifest["vocabulary"]["kept"] -= 1
    manifest["vocabulary"]["kept_ids"] = manifest["vocabulary"]["kept_ids"][:-4]
    (pruned / "edgebert.json").write_text(json.dumps(manifest))
    assert_one_line_error(run_cli("info", pruned), "kept_ids has")
    bitmap = bytearray((len(VOCAB) + 7) // 8)
    bitmap[0] = 0b11111  # a valid record of another slice: ids 0 to 4
    manifest["vocabulary"] |= {"kept": 5, "unknown_id": 4, "kept_ids": base64.b64encode(bytes(bitmap)).decode()}
    (pruned / "edgebert.json").write_text(json.dumps(manifest))
    config = json.loads((pruned / "config.json").read_text())
    assert_one_line_error(
        run_cli("info", pruned), f"vocabulary.kept says 5, but config.json has {config['vocab_size']}"
    )


# --- bad input: one error line each, nothing written --------------------------------------------------------


def slice_with(run_cli, model: Path, work: Path, *options):
    return run_cli("slice", model, "--width", "0.5", "--depth", "0.5", "--out", work / "out", *options)


def assert_refused(result, work: Path, fragment: str) -> None:
    assert_one_line_error(result, fragment)
    assert list(work.iterdir()) == []


@pytest.mark.parametrize(
    ("content", "fragment"),
    [("", "no sentences"), ("\n \n", "no sentences"), ("sentence\tlabel\n", "no examples after the header")],
    ids=["empty", "blank-lines", "header-only"],
)
def test_an_empty_source_is_refused(run_cli, wordpiece_bert, work, tmp_path, content, fragment):
    source = tmp_path / "texts.tsv"
    source.write_text(content)
    assert_refused(slice_with(run_cli, wordpiece_bert, work, "--vocab-from", source), work, fragment)


def test_a_missing_or_unreadable_source_is_refused(run_cli, wordpiece_bert, work, tmp_path):
    assert_refused(slice_with(run_cli, wordpiece_bert, work, "--vocab-from", tmp_path / "nope.txt"), work, "no such")
    assert_refused(slice_with(run_cli, wordpiece_bert, work, "--vocab-from", tmp_path), work, "not a regular file")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    assert_refused(slice_with(run_cli, wordpiece_bert, work, "--vocab-from", tmp_path / "latin1.txt"), work, "UTF-8")


def test_a_source_that_keeps_no_token_beyond_the_specials_is_refused(run_cli, wordpiece_bert, work, tmp_path):
    unknown = write_lines(tmp_path / "unknown.txt", ["zzz qqq", "[UNK] [SEP]"])  # [UNK]s and specials only
    assert_refused(slice_with(run_cli, wordpiece_bert, work, "--vocab-from", unknown), work, "beyond the special ones")
    rare = write_lines(tmp_path / "rare.txt", ["the film", "a movie"])
    result = slice_with(run_cli, wordpiece_bert, work, "--vocab-from", rare, "--vocab-min-count", "2")
    assert_refused(result, work, "no token 2 times or more")


def test_min_count_needs_a_source_and_a_positive_count(run_cli, wordpiece_bert, work, source_texts):
    assert_refused(slice_with(run_cli, wordpiece_bert, work, "--vocab-min-count", "2"), work, "--vocab-from")
    zero = slice_with(run_cli, wordpiece_bert, work, "--vocab-from", source_texts, "--vocab-min-count", "0")
    assert zero.code == 2 and "--vocab-min-count" in zero.stderr and len(zero.stderr.splitlines()) == 1


@pytest.mark.parametrize("kind", ["roberta", "xlm-roberta", "modernbert"])
def test_a_tokenizer_not_wordpiece_is_refused_with_the_reason(run_cli, tiny_models, work, source_texts, kind):
    result = slice_with(run_cli, tiny_models[f"{kind}-cls"], work, "--vocab-from", source_texts)
    assert_refused(result, work, "merge by the ids of the two tokens it joins")


def test_a_tokenizer_that_cannot_be_remapped_is_refused(run_cli, tiny_models, wordpiece_bert, work, tmp_path):
    texts = write_lines(tmp_path / "texts.txt", ["tok5 tok6"])
    no_unknown = slice_with(run_cli, tiny_models["bert-cls"], work, "--vocab-from", texts)  # tok0..tok119, no [UNK]
    assert_refused(no_unknown, work, "no unknown token")

    source_texts = write_lines(tmp_path / "source.txt", SOURCE_TEXTS)
    disagree = Path(shutil.copytree(wordpiece_bert, tmp_path / "disagree"))
    tokenizer_of(wordpiece_bert).backend_tokenizer.save(str(disagree / "tokenizer.json"))
    lines = (disagree / "vocab.txt").read_text().splitlines()
    lines[5], lines[6] = lines[6], lines[5]
    (disagree / "vocab.txt").write_text("\n".join(lines) + "\n")
    assert_refused(slice_with(run_cli, disagree, work, "--vocab-from", source_texts), work, "different ids")

    from tokenizers import Tokenizer, models, pre_tokenizers

    bpe = Path(shutil.copytree(wordpiece_bert, tmp_path / "bpe"))
    (bpe / "vocab.txt").unlink()
    tokenizer = Tokenizer(models.BPE({token: i for i, token in enumerate(VOCAB)}, [], unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(bpe / "tokenizer.json"))
    assert_refused(slice_with(run_cli, bpe, work, "--vocab-from", source_texts), work, "is a 'BPE' model")

    beyond = Path(shutil.copytree(wordpiece_bert, tmp_path / "beyond"))
    write_lines(beyond / "vocab.txt", [*VOCAB, "extra"])  # one token more than the model has rows
    extra = write_lines(tmp_path / "extra.txt", ["the extra film"])
    assert_refused(slice_with(run_cli, beyond, work, "--vocab-from", extra), work, "embedding rows")
