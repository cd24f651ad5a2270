"""Slicing a sentence-transformers model keeps its modules, so `SentenceTransformer(slice_dir)` loads.

The model is tests.labelled's tiny BERT encoder (real WordPiece vocabulary) with the files
sentence-transformers saves: modules.json (Transformer, mean Pooling, Normalize without a folder),
1_Pooling/config.json, sentence_bert_config.json, config_sentence_transformers.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.cli_checks import assert_one_line_error
from tests.labelled import VOCAB, build_classifier, tokenizer_for

HIDDEN = 48  # tests.models.ENCODER
MAX_SEQ_LENGTH = 32
SENTENCES = ["w1 w2 w3", "w4 w5 w6 w7 w8 w9 w10 w11", "w12", "w13 w14 w15 w16"]
MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
]
ST_FILES = ["modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling/config.json"]


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


@pytest.fixture(scope="module")
def st_model(tmp_path_factory) -> Path:
    """A sentence-transformers model directory as sentence-transformers saves one (copy it to change it)."""
    directory = build_classifier(tmp_path_factory.mktemp("st") / "tiny-st", num_labels=None)
    write_json(directory / "tokenizer_config.json", {"do_lower_case": True, "tokenizer_class": "BertTokenizer"})
    write_json(directory / "modules.json", MODULES)
    pooling = {"word_embedding_dimension": HIDDEN, "pooling_mode_mean_tokens": True}
    write_json(directory / "1_Pooling" / "config.json", pooling)
    write_json(directory / "sentence_bert_config.json", {"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": True})
    write_json(directory / "config_sentence_transformers.json", {"__version__": {"sentence_transformers": "5.1.0"}})
    (directory / "README.md").write_text("# tiny-st\n")  # the source's model card does not describe the slice
    return directory


@pytest.fixture
def source(tmp_path, st_model) -> Path:
    """A fresh copy of the sentence-transformers model to change."""
    return Path(shutil.copytree(st_model, tmp_path / "src" / "tiny-st"))


def files_under(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def slice_to(run_cli, model: Path, out: Path, *extra: str):
    return run_cli("slice", model, "--width", "0.5", "--depth", "0.5", "--out", out, *extra)


# --- without sentence-transformers: the files -------------------------------------------------------


def test_slice_keeps_the_modules_it_names(run_cli, source, tmp_path) -> None:
    """Top files and module folders are kept byte for byte; a Dense module's own weights too; nothing unnamed."""
    dense = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    modules = [MODULES[0], MODULES[1], dense, {**MODULES[2], "idx": 3, "name": "3", "path": "3_Normalize"}]
    write_json(source / "modules.json", modules)
    write_json(source / "2_Dense" / "config.json", {"in_features": HIDDEN, "out_features": 8, "bias": True})
    (source / "2_Dense" / "model.safetensors").write_bytes(b"dense weights, copied as they are")
    (source / "1_Pooling" / "notes.txt").write_text("not a file Pooling saves")
    (source / "9_Unnamed").mkdir()
    (source / "9_Unnamed" / "config.json").write_text("{}")

    out = tmp_path / "out"
    result = slice_to(run_cli, source, out)
    assert result.code == 0, result.stderr
    kept = [*ST_FILES, "2_Dense/config.json", "2_Dense/model.safetensors"]
    for name in kept:
        assert (out / name).read_bytes() == (source / name).read_bytes(), name
    model_files = ["config.json", "model.safetensors", "edgebert.json", "vocab.txt", "tokenizer_config.json"]
    assert files_under(out) == sorted([*model_files, *kept])
    assert not (out / "3_Normalize").exists()  # Normalize saves nothing

    from edgebert.checkpoint import read_slice

    _, _, manifest, _ = read_slice(out)
    assert manifest.task == "feature-extraction"
    again = slice_to(run_cli, out, tmp_path / "again")
    assert_one_line_error(again, "is a slice edgebert wrote")


def test_a_plain_model_gets_no_sentence_transformers_files(run_cli, tiny_models, tmp_path) -> None:
    result = slice_to(run_cli, tiny_models["bert-bare"], tmp_path / "out")
    assert result.code == 0, result.stderr
    assert not {"modules.json", "sentence_bert_config.json"} & set(files_under(tmp_path / "out"))


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("../outside", "is not a folder of the model directory"),
        ("/etc", "is not a folder of the model directory"),
        ("a/../../b", "is not a folder of the model directory"),
        ("..", "is not a folder of the model directory"),
        ("C:\\\\Windows", "is not a folder of the model directory"),
    ],
)
def test_a_module_outside_the_model_is_refused(run_cli, source, work, path, fragment) -> None:
    write_json(source / "modules.json", [MODULES[0], {**MODULES[1], "path": path}])
    assert_one_line_error(slice_to(run_cli, source, work / "out"), fragment)
    assert list(work.iterdir()) == []


def test_a_module_folder_linked_out_of_the_model_is_refused(run_cli, source, tmp_path, work) -> None:
    secret = tmp_path / "elsewhere"
    secret.mkdir()
    (secret / "config.json").write_text('{"secret": true}')
    shutil.rmtree(source / "1_Pooling")
    (source / "1_Pooling").symlink_to(secret)
    assert_one_line_error(slice_to(run_cli, source, work / "out"), "1_Pooling is a link to")
    assert list(work.iterdir()) == []


def test_a_hub_cache_snapshot_slices_with_its_modules(run_cli, st_model, tmp_path, monkeypatch) -> None:
    """The hub cache links every file of `snapshots/REV/`, module folders' too, into `blobs/`: those links are fine."""
    repo = tmp_path / "hub" / "models--someone--tiny-st"
    snapshot = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    for index, name in enumerate(files_under(st_model)):
        blob = repo / "blobs" / f"blob{index}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(st_model / name, blob)
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).symlink_to(Path("../" * (name.count("/") + 2)) / "blobs" / blob.name)
    monkeypatch.chdir(tmp_path)
    result = run_cli("slice", snapshot, "--width", "0.5", "--depth", "0.5")
    assert result.code == 0, result.stderr
    out = tmp_path / "tiny-st-w0.5-d0.5"  # named after the repository, not the snapshot's commit
    for name in ST_FILES:
        assert (out / name).read_bytes() == (st_model / name).read_bytes()
        assert not (out / name).is_symlink()


def test_oversized_module_files_are_refused_before_loading(run_cli, source, work) -> None:
    from edgebert.st_modules import MAX_ST_MODULE_BYTES

    dense = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    write_json(source / "modules.json", [*MODULES[:2], dense])
    (source / "2_Dense").mkdir()
    with (source / "2_Dense" / "model.safetensors").open("wb") as f:
        f.truncate(MAX_ST_MODULE_BYTES + 1)  # sparse: no disk used
    assert_one_line_error(slice_to(run_cli, source, work / "out"), "too large to copy")
    assert list(work.iterdir()) == []


@pytest.mark.parametrize(
    ("modules", "fragment"),
    [
        ([{**MODULES[1], "idx": 0}], "not the Transformer at the top"),
        ([{**MODULES[0], "path": "0_Transformer"}], "not the Transformer at the top"),
        (
            [MODULES[0], {**MODULES[1], "type": "sentence_transformers.models.WeightedLayerPooling"}],
            "may not fit a slice",
        ),
        ([MODULES[0], {**MODULES[1], "type": "my_package.Pooling"}], "may not fit a slice"),
        ([MODULES[0], MODULES[1], {**MODULES[2], "path": "1_Pooling"}], "two modules share a folder"),
        ([MODULES[0], {**MODULES[1], "idx": "1"}], "1.idx"),
        ({"modules": []}, "modules.json"),
    ],
)
def test_modules_a_slice_cannot_keep_are_refused_before_loading(run_cli, source, work, modules, fragment) -> None:
    write_json(source / "modules.json", modules)
    (source / "model.safetensors").write_bytes(b"not read: modules.json is refused first")
    assert_one_line_error(slice_to(run_cli, source, work / "out"), fragment)
    assert list(work.iterdir()) == []


def test_force_replaces_a_sentence_transformers_slice(run_cli, source, tmp_path) -> None:
    out = tmp_path / "out"
    assert slice_to(run_cli, source, out).code == 0
    (out / "1_Pooling" / "config.json").write_text("{}")
    replaced = slice_to(run_cli, source, out, "--force")
    assert replaced.code == 0, replaced.stderr
    assert (out / "1_Pooling" / "config.json").read_bytes() == (source / "1_Pooling" / "config.json").read_bytes()


@pytest.mark.parametrize(
    ("foreign", "fragment"),
    [
        ("1_Pooling/notes.txt", "edgebert does not write (1_Pooling/notes.txt)"),
        ("extra/x.txt", "edgebert does not write (extra)"),
        ("notes.txt", "edgebert does not write (notes.txt)"),
    ],
)
def test_force_refuses_a_slice_holding_foreign_files(run_cli, source, tmp_path, foreign, fragment) -> None:
    out = tmp_path / "out"
    assert slice_to(run_cli, source, out).code == 0
    (out / foreign).parent.mkdir(exist_ok=True)
    (out / foreign).write_text("the user's")
    assert_one_line_error(slice_to(run_cli, source, out, "--force"), fragment)
    assert (out / foreign).read_text() == "the user's"


def test_force_refuses_a_slice_whose_modules_lead_out(run_cli, source, tmp_path) -> None:
    out = tmp_path / "out"
    assert slice_to(run_cli, source, out).code == 0
    write_json(out / "modules.json", [MODULES[0], {**MODULES[1], "path": "../elsewhere"}])
    assert_one_line_error(slice_to(run_cli, source, out, "--force"), "modules.json edgebert would not write")


# --- with sentence-transformers: the slice loads and encodes as edgebert's model + the pooling ------


def mean_pooled(model):
    """`model`'s last_hidden_state on SENTENCES, then a masked mean over the real tokens and an L2 norm."""
    import numpy as np
    import torch

    tokenizer = tokenizer_for(VOCAB)
    batch = tokenizer(SENTENCES, padding=True, truncation=True, max_length=MAX_SEQ_LENGTH, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state.double().numpy()  # (B, S, D)
    mask = batch["attention_mask"].double().numpy()[:, :, None]
    mean = (hidden * mask).sum(1) / mask.sum(1)
    return mean / np.linalg.norm(mean, axis=1, keepdims=True)


@pytest.mark.parametrize(("width", "depth"), [(0.5, 0.5), (1.0, 1.0)], ids=["w0.5-d0.5", "w1-d1"])
def test_sentence_transformer_loads_the_slice(run_cli, st_model, tmp_path, width, depth) -> None:
    st = pytest.importorskip("sentence_transformers")
    import numpy as np

    import edgebert  # noqa: F401  (registers the slice's model_type with transformers)
    from edgebert.slicing import load_slice

    out = tmp_path / "slice"
    result = run_cli("slice", st_model, "--width", width, "--depth", depth, "--out", out)
    assert result.code == 0, result.stderr
    model = st.SentenceTransformer(str(out), device="cpu")
    assert model.max_seq_length == MAX_SEQ_LENGTH
    embeddings = model.encode(SENTENCES, convert_to_numpy=True)
    assert embeddings.shape == (len(SENTENCES), HIDDEN)
    np.testing.assert_allclose(embeddings, mean_pooled(load_slice(out).model), atol=1e-5)
    original = st.SentenceTransformer(str(st_model), device="cpu").encode(SENTENCES, convert_to_numpy=True)
    if (width, depth) == (1.0, 1.0):  # the whole model: what sentence-transformers computes on the original
        np.testing.assert_allclose(embeddings, original, atol=1e-5)
    else:  # a sub-network: not the original's embeddings (else nothing was sliced)
        assert np.abs(embeddings - original).max() > 1e-2


def test_a_pruned_slice_encodes_as_the_unpruned_one(run_cli, st_model, tmp_path) -> None:
    """`--vocab-from` keeps the modules, and sentence-transformers reads the slice's remapped tokenizer.json: kept
    sentences encode as on the unpruned slice, a dropped word as the unknown token."""
    st = pytest.importorskip("sentence_transformers")
    import numpy as np

    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(SENTENCES) + "\n")
    plain, pruned = tmp_path / "plain", tmp_path / "pruned"
    assert slice_to(run_cli, st_model, plain).code == 0
    result = slice_to(run_cli, st_model, pruned, "--vocab-from", texts)
    assert result.code == 0, result.stderr
    for name in ST_FILES:
        assert (pruned / name).read_bytes() == (st_model / name).read_bytes()
    model = st.SentenceTransformer(str(pruned), device="cpu")
    words = {word for sentence in SENTENCES for word in sentence.split()}
    assert model[0].auto_model.get_input_embeddings().num_embeddings == VOCAB.index("w0") + len(words)  # + specials
    reference = st.SentenceTransformer(str(plain), device="cpu")
    np.testing.assert_allclose(model.encode(SENTENCES), reference.encode(SENTENCES), atol=1e-5)
    np.testing.assert_allclose(model.encode(["w1 w40"]), reference.encode(["w1 [UNK]"]), atol=1e-5)


@pytest.mark.parametrize("tokenizer_config", [None, {"do_lower_case": True}])
def test_a_slice_names_the_tokenizer_class_its_source_left_to_model_type(run_cli, source, tmp_path, tokenizer_config):
    """The slice's model_type "edgebert" maps to no tokenizer: AutoTokenizer must still load it, as on the source."""
    from transformers import AutoTokenizer

    if tokenizer_config is None:
        (source / "tokenizer_config.json").unlink()
    else:
        write_json(source / "tokenizer_config.json", tokenizer_config)
    assert slice_to(run_cli, source, tmp_path / "slice").code == 0
    expected = AutoTokenizer.from_pretrained(source)(SENTENCES)["input_ids"]  # model_type bert names the class
    assert AutoTokenizer.from_pretrained(tmp_path / "slice")(SENTENCES)["input_ids"] == expected
    settings = json.loads((tmp_path / "slice" / "tokenizer_config.json").read_text())
    assert settings == (tokenizer_config or {}) | {"tokenizer_class": "BertTokenizer"}
