"""`edgebert augment`: TinyBERT's data augmentation, on a tiny teacher with a vocabulary of real words.

The teacher and the masked LM are tests.models' randomised BERTs (built once per session); their neighbours
mean nothing, but every rule is checked: neighbour search against a brute-force loop of cosines, whole-word
candidates, masked-LM candidates against a direct forward pass, GloVe for multi-piece words, determinism,
no dev leakage, pairs, the manifest, and one-line errors.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from edgebert import augment as aug
from edgebert.augment import AugmentOptions, augment_file, read_augmented
from edgebert.errors import EdgebertError
from tests.models import randomize, save_model, tiny_model

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PIECES = ["[unused0]", "[unused1]", "##s", "##ing", "##watch", "##able", "un", ".", ",", "!", "2020", "x7"]
WORDS = """the a is was and it movie film story plot actor cast scene music good great fine bad awful dull funny sad
long short fun boring love hate really quite watch""".split()  # noqa: SIM905 (two lines, not one per word)
VOCAB = SPECIAL + PIECES + WORDS
LOWER_CASE = json.dumps({"do_lower_case": True})
SENTENCES = [
    "The movie was good .",
    "a great film , really fun !",
    "the plot is dull and the cast is awful",
    "I love the music",
    "an unwatchable story",
    "the actor was funny and the scene was sad",
    "quite a long film",
    "boring , boring , boring",
]
GLOVE = """3 4
unwatchable 1.0 0.0 0.0 0.1
dull 0.9 0.1 0.0 0.0
boring 0.8 0.3 0.0 0.0
tedious 0.5 0.0 0.8 0.0
, 0.99 0.0 0.0 0.1
sky 0.0 0.0 1.0 0.0
"""


@pytest.fixture(scope="session")
def teacher(tmp_path_factory) -> Path:
    """A 2-label tiny BERT classifier whose vocabulary holds words, pieces, placeholders and specials."""
    model = tiny_model("bert", num_labels=2, vocab_size=len(VOCAB), max_positions=64)
    return save_model(model, tmp_path_factory.mktemp("augment") / "teacher", VOCAB, LOWER_CASE)


@pytest.fixture(scope="session")
def masked_lm(tmp_path_factory) -> Path:
    """A tiny BertForMaskedLM (random weights) with the same vocabulary, as any local HF masked-LM directory."""
    import transformers

    config = transformers.BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=64,
    )
    model = transformers.BertForMaskedLM(config).eval()
    randomize(model, seed=3)
    return save_model(model, tmp_path_factory.mktemp("augment") / "mlm", VOCAB, LOWER_CASE)


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\n" + "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(SENTENCES)))
    return path


def rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()[1:]]


def variant_rows(path: Path, originals: list[str]) -> list[tuple[str, list[str]]]:
    """(source text, row) of every variant: a row follows its original or another variant of it."""
    found, source = [], None
    for row in rows(path):
        if row[0] in originals:
            source = row[0]
        else:
            found.append((source, row))
    return found


def replaced_words(original: str, variant: str) -> list[str]:
    """The words of `variant` that differ from `original`'s at the same place (same word count: one word each)."""
    return [new for old, new in zip(original.split(), variant.split(), strict=True) if old != new]


def teacher_tokenizer(directory: Path):
    from edgebert.data import load_tokenizer

    return load_tokenizer(directory, "bert")


# ---- neighbours and candidates -------------------------------------------------------------------------------


def test_neighbour_search_matches_a_brute_force_loop_of_cosines(teacher, monkeypatch):
    from safetensors.numpy import load_file

    embeddings = load_file(str(teacher / "model.safetensors"))["bert.embeddings.word_embeddings.weight"]
    whole = aug.whole_word_tokens(teacher_tokenizer(teacher))
    table, table_rows = aug.teacher_table(embeddings, whole)
    ids = sorted(whole)
    monkeypatch.setattr("edgebert.augment.neighbours.QUERY_BATCH", 3)  # several products, the last one partial
    found = aug.nearest_neighbours(table.vectors, aug.unit_rows(embeddings[ids]), 5, table_rows[ids])

    def cosine(a, b) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    vectors = [[float(x) for x in embeddings[i]] for i in ids]
    for query, row in enumerate(found):
        ranked = sorted(
            (j for j in range(len(ids)) if j != query), key=lambda j: (-cosine(vectors[query], vectors[j]), j)
        )
        assert row.tolist() == ranked[:5]


def test_candidates_are_whole_words_only(teacher):
    whole = set(aug.whole_word_tokens(teacher_tokenizer(teacher)).values())
    assert whole == {*WORDS, "un"}  # no [PAD]/[MASK], [unused0], ##s; 'un' is a whole entry; no '.', '2020', 'x7'


def test_whole_words_of_a_byte_level_bpe_vocabulary(tmp_path):
    """RoBERTa's vocabulary: the entries that start a word (Ġ), decoded, without specials or continuations."""
    import transformers

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4, "Ġgood": 5, "good": 6, "Ġ2020": 7, "ĠcafÃ©": 8}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.RobertaTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    assert aug.whole_word_tokens(tokenizer) == {5: "good", 8: "café"}


def test_words_are_the_teachers_and_keep_their_case(teacher):
    text = "The Movie was NOT unwatchable, really."
    words = aug.split_words([text], teacher_tokenizer(teacher))[0]
    assert [(text[w.start : w.end], w.token_id is None) for w in words] == [
        ("Movie", False),
        ("unwatchable", True),  # un ##watch ##able: several wordpieces
        ("really", False),
    ]  # "The", "was", "NOT" are stop words; "," and "." are not words of letters
    assert aug.select_candidates("Movie", ["movie", "film", "story"], 2) == ("Film", "Story")
    assert aug.select_candidates("NASA", ["nasa", "esa"], 2) == ("ESA",)


def test_masked_lm_candidates_are_its_top_k_by_a_direct_forward(masked_lm):
    import torch

    mlm = aug.load_masked_lm(masked_lm)
    text = "the plot is dull and the cast is awful"
    start = text.index("dull")
    found = aug.masked_lm_candidates(mlm, [(text, start, start + 4), (text, 0, 3)], 6, batch_size=1)

    tokenizer, whole = mlm.tokenizer, aug.whole_word_tokens(mlm.tokenizer)
    inputs = tokenizer(text[:start] + "[MASK]" + text[start + 4 :], text, return_tensors="pt")
    position = inputs["input_ids"][0].tolist().index(tokenizer.mask_token_id)
    with torch.no_grad():
        logits = mlm.model(**inputs).logits[0, position]
    ids = sorted(whole)
    expected = [whole[ids[j]] for j in logits[ids].topk(6).indices.tolist()]
    assert found[0] == expected
    assert aug.select_candidates("dull", found[0], 5) == tuple(w for w in expected if w != "dull")[:5]


# ---- the file ------------------------------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes(teacher, data, tmp_path, monkeypatch):
    first = augment_file(teacher, data, tmp_path / "a.tsv")
    monkeypatch.setattr("edgebert.augment.variants.EXAMPLE_CHUNK", 3)  # other chunks: the same draws
    again = augment_file(teacher, data, tmp_path / "b.tsv")
    augment_file(teacher, data, tmp_path / "c.tsv", AugmentOptions(seed=7))
    assert (tmp_path / "a.tsv").read_bytes() == (tmp_path / "b.tsv").read_bytes()
    assert first.augmented.sha256 == again.augmented.sha256
    assert (tmp_path / "c.tsv").read_bytes() != (tmp_path / "a.tsv").read_bytes()
    written = rows(tmp_path / "a.tsv")
    assert len(written) == first.counts.rows == len(SENTENCES) + first.counts.variants_written
    assert first.counts.variants_written + first.counts.duplicates_removed == len(SENTENCES) * 20
    for source, row in variant_rows(tmp_path / "a.tsv", SENTENCES):  # labels copied, no repeats, words replaced
        assert row[1] == str(SENTENCES.index(source) % 2)
        assert replaced_words(source, row[0])
    assert len({tuple(row) for row in written}) == len(written)


def test_variants_use_the_teachers_neighbours(teacher, data, tmp_path):
    from safetensors.numpy import load_file

    augment_file(teacher, data, tmp_path / "out.tsv", AugmentOptions(top_k=3, probability=1.0))
    embeddings = load_file(str(teacher / "model.safetensors"))["bert.embeddings.word_embeddings.weight"]
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    words = {VOCAB.index(w): w for w in WORDS}

    def top3(word: str) -> set[str]:
        scores = {w: float(unit[VOCAB.index(word.lower())] @ unit[i]) for i, w in words.items() if w != word.lower()}
        return set(sorted(scores, key=lambda w: -scores[w])[:3])

    found = variant_rows(tmp_path / "out.tsv", SENTENCES)
    assert found
    for source, row in found:
        for old, new in zip(source.split(), row[0].split(), strict=True):
            if old != new:
                assert old.lower() not in aug.STOP_WORDS and new.lower() in top3(old)
                assert new[0].isupper() == old[0].isupper()


def test_masked_lm_mode_uses_its_candidates_whatever_the_batch_size(teacher, masked_lm, data, tmp_path):
    one = augment_file(teacher, data, tmp_path / "one.tsv", AugmentOptions(mlm=masked_lm, batch_size=1, top_k=4))
    many = augment_file(teacher, data, tmp_path / "many.tsv", AugmentOptions(mlm=masked_lm, batch_size=64, top_k=4))
    assert (tmp_path / "one.tsv").read_bytes() == (tmp_path / "many.tsv").read_bytes()
    assert (
        one.mlm is not None
        and one.mlm.sha256 == hashlib.sha256((masked_lm / "model.safetensors").read_bytes()).hexdigest()
    )
    assert one.counts == many.counts
    mlm = aug.load_masked_lm(masked_lm)
    for source, row in variant_rows(tmp_path / "one.tsv", SENTENCES):
        for position, (old, new) in enumerate(zip(source.split(), row[0].split(), strict=True)):
            if old != new:
                start = len(" ".join(source.split()[:position])) + (position > 0)
                ranked = aug.masked_lm_candidates(mlm, [(source, start, start + len(old))], 6, 8)[0]
                assert new in aug.select_candidates(old, ranked, 4)


def test_glove_neighbours_for_words_of_several_pieces(teacher, tmp_path):
    data = tmp_path / "train.tsv"
    data.write_text("sentence\tlabel\nan unwatchable story\t0\n")
    glove = tmp_path / "glove.txt"
    glove.write_text(GLOVE)
    options = AugmentOptions(word_vectors=glove, top_k=2, probability=1.0, variants=30)
    manifest = augment_file(teacher, data, tmp_path / "glove.tsv", options)
    firsts = {row[0].split()[1] for row in rows(tmp_path / "glove.tsv")}
    assert firsts == {"unwatchable", "dull", "boring"}  # the top 2 by cosine; ',' is not a word, 'sky' is far
    assert manifest.word_vectors.examples == 5  # the fastText header skipped, ',' left out
    assert manifest.word_vectors.sha256 == hashlib.sha256(GLOVE.encode()).hexdigest()
    augment_file(teacher, data, tmp_path / "kept.tsv", AugmentOptions(probability=1.0, variants=30))
    assert {row[0].split()[1] for row in rows(tmp_path / "kept.tsv")} == {"unwatchable"}  # no vectors: kept


def test_pairs_augment_both_sides(teacher, tmp_path):
    data = tmp_path / "pairs.tsv"
    pairs = [(SENTENCES[i], SENTENCES[i + 1]) for i in range(0, len(SENTENCES), 2)]
    data.write_text(
        "index\tsentence1\tsentence2\tlabel\n"
        + "".join(f"{i}\t{a}\t{b}\t{'entailment' if i % 2 else 'not_entailment'}\n" for i, (a, b) in enumerate(pairs))
    )
    augment_file(teacher, data, tmp_path / "out.tsv")
    assert (tmp_path / "out.tsv").read_text().splitlines()[0] == "sentence1\tsentence2\tlabel"
    changed = {0: 0, 1: 0}
    current = None
    for row in rows(tmp_path / "out.tsv"):
        if (row[0], row[1]) in pairs:
            current = pairs.index((row[0], row[1]))
            continue
        assert row[2] == ("entailment" if current % 2 else "not_entailment")
        for side in (0, 1):
            changed[side] += row[side] != pairs[current][side]
    assert changed[0] > 0 and changed[1] > 0


def test_dev_matches_are_refused_or_dropped_and_counted(teacher, data, tmp_path, run_cli):
    augment_file(teacher, data, tmp_path / "plain.tsv")
    variants = [row[0] for _, row in variant_rows(tmp_path / "plain.tsv", SENTENCES)]
    leaked = variants[0]
    count = variants.count(leaked)
    dev = tmp_path / "dev.tsv"
    dev.write_text(f"sentence\tlabel\n{'  '.join(leaked.upper().split())}\t1\n")  # other case and spacing

    refused = run_cli("augment", teacher, "--data", data, "--out", tmp_path / "out.tsv", "--dev", dev)
    assert refused.code == 1 and refused.stderr.count("\n") == 1
    assert refused.stderr.startswith(f"error: {count} variant(s) equal a text of {dev}")
    assert not (tmp_path / "out.tsv").exists() and not (tmp_path / "out.tsv.json").exists()

    args = ("augment", teacher, "--data", data, "--out", tmp_path / "out.tsv", "--dev", dev, "--drop-dev-matches")
    dropped = run_cli(*args, "--json")
    assert dropped.code == 0, dropped.stderr
    manifest = json.loads(dropped.stdout)
    assert manifest["counts"]["dev_matches_dropped"] == count
    assert manifest["dev_data"]["sha256"] == hashlib.sha256(dev.read_bytes()).hexdigest()
    assert leaked not in [row[0] for _, row in variant_rows(tmp_path / "out.tsv", SENTENCES)]
    assert len(rows(tmp_path / "out.tsv")) == len(rows(tmp_path / "plain.tsv")) - count


def test_the_manifest_records_the_source_and_settings_and_is_checked_on_read(teacher, data, tmp_path):
    out = tmp_path / "aug.tsv"
    options = AugmentOptions(variants=5, probability=0.5, top_k=4, seed=3)
    written = augment_file(teacher, data, out, options)
    manifest = read_augmented(out)
    assert manifest == written
    assert manifest.data.sha256 == hashlib.sha256(data.read_bytes()).hexdigest()
    assert manifest.augmented.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    assert manifest.teacher.sha256 == hashlib.sha256((teacher / "model.safetensors").read_bytes()).hexdigest()
    settings = manifest.settings
    assert (settings.variants, settings.probability, settings.top_k, settings.seed) == (5, 0.5, 4, 3)
    assert (settings.text_columns, settings.label_column) == (["sentence"], "label")

    out.write_text(out.read_text() + "extra\t1\n")
    with pytest.raises(EdgebertError, match="another sha256"):
        read_augmented(out)
    assert augment_file(teacher, data, out, options, force=True) == read_augmented(out)  # its own: replaced
    record = json.loads((tmp_path / "aug.tsv.json").read_text())
    record["counts"]["variants_written"] += 1  # no longer adds up
    (tmp_path / "aug.tsv.json").write_text(json.dumps(record))
    with pytest.raises(EdgebertError, match="is not a valid AugmentManifest"):
        read_augmented(out)


def test_force_replaces_only_what_augment_wrote_and_the_table_reads_at_80_columns(teacher, data, tmp_path, run_cli):
    args = ("augment", teacher, "--data", data, "--out", tmp_path / "aug.tsv")
    for result in (run_cli(*args), run_cli(*args, "--force", "--variants", "3")):
        assert result.code == 0, result.stderr
        assert "…" not in result.stdout and max(map(len, result.stdout.splitlines())) <= 80, result.stdout
    assert read_augmented(tmp_path / "aug.tsv").settings.variants == 3
    foreign = tmp_path / "notes.tsv"
    foreign.write_text("mine\n")
    result = run_cli("augment", teacher, "--data", data, "--out", foreign, "--force")
    assert result.code == 1 and "refusing to replace it, even with --force" in result.stderr
    assert foreign.read_text() == "mine\n"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--variants", "0"], 2, "--variants must be at least 1, got 0"),
        (["--top-k", "0"], 2, "--top-k must be at least 1"),
        (["--prob", "0"], 2, r"--prob must be in \(0, 1\], got 0.0"),
        (["--prob", "nan"], 2, "--prob must be in"),
        (["--seed", "-1"], 2, "--seed must be 0 or more"),
        (["--batch-size", "0"], 2, "--batch-size must be at least 1"),
        (["--text-column", "a,a"], 2, "--text-column"),
        (["--data", "{missing}"], 1, "no such data file"),
        (["--label-column", "y"], 1, "no column 'y'"),
        (["--mlm", "{missing}"], 1, "has no config.json"),
        (["--word-vectors", "{bad_vectors}"], 1, r"bad\.txt:2: 2 numbers, the first vector has 3"),
        (["--dev", "{pair_dev}"], 1, "2 text column"),
        (["--out", "{exists}"], 1, "already exists: pass --force"),
    ],
)
def test_bad_input_is_one_error_line(teacher, data, tmp_path, run_cli, args, code, message):
    (tmp_path / "bad.txt").write_text("good 1 2 3\nbad 1 2\n")
    (tmp_path / "pair.tsv").write_text("sentence1\tsentence2\tlabel\na\tb\t0\n")
    (tmp_path / "exists.tsv").write_text("x\n")
    places = {"bad_vectors": "bad.txt", "pair_dev": "pair.tsv", "exists": "exists.tsv", "missing": "missing"}
    args = [arg.format(**{name: tmp_path / file for name, file in places.items()}) for arg in args]
    result = run_cli("augment", teacher, "--data", data, "--out", tmp_path / "out.tsv", *args)
    assert result.code == code
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert not (tmp_path / "out.tsv").exists()


def test_a_damaged_masked_lm_is_one_error_line(teacher, masked_lm, data, tmp_path, run_cli):
    import shutil

    damaged = tmp_path / "mlm"
    shutil.copytree(masked_lm, damaged)
    (damaged / "model.safetensors").write_bytes(b"not safetensors")
    result = run_cli("augment", teacher, "--data", data, "--out", tmp_path / "out.tsv", "--mlm", damaged)
    assert result.code == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: {damaged}: cannot load it as a masked language model (")
    assert not (tmp_path / "out.tsv").exists()
