"""transrec export: a self-contained, byte-identical directory; --check catches flipped bytes and a wrong
vector table; models that cannot serve new users are refused; the tokenizer travels with the export."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.serving.exports import build_checkpoint, build_dataset, build_export, model_config
from transrec.cli.main import main
from transrec.data.prepare import PrepareConfig, prepare
from transrec.data.synthetic import SyntheticWorldConfig, make_world
from transrec.errors import PathExistsError
from transrec.models.item_encoders import tiny_text
from transrec.models.recommender import ModelConfig, SequentialRecommender, dataset_tokenizer
from transrec.serving import ExportError, Recommender, export_model
from transrec.serving.bundle import sha256_file


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_export(tmp_path_factory.mktemp("export"), "mom")


def files_of(directory):
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_an_export_is_byte_identical_when_rerun_and_needs_nothing_else(built, tmp_path):
    again = export_model(built.checkpoint, built.dataset.path, tmp_path / "again")
    first, second = files_of(built.directory), files_of(again)
    assert first.keys() == second.keys() and first == second
    assert {
        "model/model.safetensors",
        "item_vectors.safetensors",
        "images/images.bin",
        "manifest.json",
    } <= set(first)
    manifest = json.loads(first["manifest.json"])
    assert manifest["files"]["item_vectors.safetensors"]["sha256"] == sha256_file(
        again / "item_vectors.safetensors"
    )
    assert set(manifest["files"]) == set(first) - {"manifest.json"}
    assert (
        manifest["dataset"]["training_interactions"]
        == built.dataset.n_interactions - 2 * built.dataset.n_users
    )
    history = list(built.dataset.item_ids[1:4])
    before = Recommender.load(again).recommend(history, k=5)
    # Without the dataset and the run directory, the export serves and encodes new items.
    shutil.move(built.dataset.path, tmp_path / "dataset-elsewhere")
    shutil.move(built.checkpoint.parent, tmp_path / "run-elsewhere")
    try:
        rec = Recommender.load(again)
        assert rec.recommend(history, k=5) == before
        rec.add_items([{"id": "new", "text": "w1 w2 w3"}])
        assert "new" in rec.recommend(history, k=1000).items
        paths = (str(built.dataset.path), str(built.checkpoint.parent), str(tmp_path))
        for path in again.rglob("*"):
            if path.is_file() and path.suffix in (".json", ".jsonl"):
                assert not any(p in path.read_text() for p in paths), path  # no path of this machine
    finally:
        shutil.move(tmp_path / "dataset-elsewhere", built.dataset.path)
        shutil.move(tmp_path / "run-elsewhere", built.checkpoint.parent)


def test_an_existing_out_is_refused_unless_force(built, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("mine")
    args = [
        "export",
        "--checkpoint",
        str(built.checkpoint),
        "--dataset",
        str(built.dataset.path),
        "--out",
        str(out),
    ]
    assert main([*args, "--quiet"]) == 2
    assert "exists" in capsys.readouterr().err and (out / "keep").is_file()
    with pytest.raises(PathExistsError):
        export_model(built.checkpoint, built.dataset.path, out)
    assert main([*args, "--force", "--quiet"]) == 0
    assert not (out / "keep").exists() and files_of(out) == files_of(built.directory)
    assert main(["export", "--check", str(out), "--out", str(out)]) == 2
    assert "--check" in capsys.readouterr().err


def flip_byte(path, position=-1):
    data = bytearray(path.read_bytes())
    data[position] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["model/model.safetensors", "item_vectors.safetensors", "images/images.bin"])
def test_check_passes_then_names_the_file_whose_byte_flipped(built, tmp_path, capsys, name):
    directory = shutil.copytree(built.directory, tmp_path / "copy")
    assert main(["export", "--check", str(directory), "--sample", "8"]) == 0
    assert "8 items re-encoded" in capsys.readouterr().out
    flip_byte(directory / name)
    assert main(["export", "--check", str(directory)]) == 2
    err = capsys.readouterr().err
    assert f"{name}: SHA-256" in err and err.count("SHA-256") == 1
    with pytest.raises(ExportError, match=name):
        Recommender.load(directory)


def test_check_re_encodes_and_catches_a_vector_table_with_consistent_checksums(built, tmp_path, capsys):
    directory = shutil.copytree(built.directory, tmp_path / "copy")
    path = directory / "item_vectors.safetensors"
    vectors = load_file(str(path))["vectors"]
    wrong = vectors.clone()
    wrong[5] += 1e-3  # one item's vector, slightly off
    save_file({"vectors": wrong}, str(path))
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["files"]["item_vectors.safetensors"]["sha256"] = sha256_file(path)
    (directory / "manifest.json").write_text(json.dumps(manifest))
    assert main(["export", "--check", str(directory), "--sample", "1000"]) == 2
    err = capsys.readouterr().err
    assert "1 of" in err and f"item {built.dataset.item_ids[5]!r}" in err and "fresh encoding" in err


def test_check_covers_added_items(built, tmp_path, capsys):
    directory = shutil.copytree(built.directory, tmp_path / "copy")
    Recommender.load(directory).add_items([{"id": "n1", "text": "w5 w6"}, {"id": "n2", "text": "w7"}])
    assert main(["export", "--check", str(directory)]) == 0
    assert "files checked" in capsys.readouterr().out
    first = sorted((directory / "added" / "items").iterdir())[0]
    flip_byte(first)
    assert main(["export", "--check", str(directory)]) == 2
    assert f"added/items/{first.name}: SHA-256" in capsys.readouterr().err
    flip_byte(first)  # back as it was; now a consistent file holding a wrong vector
    tensors = load_file(str(first))
    tensors["vector"] = tensors["vector"] + 0.01
    save_file(tensors, str(first))
    state = json.loads((directory / "added" / "state.json").read_text())
    for row in state["items"]:
        if row["file"] == f"items/{first.name}":
            row["sha256"], row["bytes"] = sha256_file(first), first.stat().st_size
    (directory / "added" / "state.json").write_text(json.dumps(state))
    assert main(["export", "--check", str(directory)]) == 2
    assert "added items: the stored vectors of 1 of 2" in capsys.readouterr().err


def test_models_that_cannot_serve_new_users_are_refused(built, tmp_path):
    data = built.dataset
    base = dict(d_model=16, max_len=4, item_encoder="id", n_items=data.n_items, n_users=data.n_users)
    for config, reason in (
        (ModelConfig(**base, uep_head=True), "UEP head"),
        (ModelConfig(**base, user_encoder="dssm"), "user-ID tower"),
    ):
        checkpoint = SequentialRecommender(config).save_pretrained(tmp_path / reason / "best")
        with pytest.raises(ExportError, match=reason):
            export_model(checkpoint, data.path, tmp_path / "out")
        assert not (tmp_path / "out").exists()
    other = build_dataset(tmp_path, "text", seed=1)  # an ID model of another catalogue
    checkpoint = build_checkpoint(tmp_path, other, "id")
    assert other.n_items != data.n_items
    with pytest.raises(ExportError, match="item IDs"):
        export_model(checkpoint, data.path, tmp_path / "out")


def test_a_huggingface_tokenizer_travels_with_the_export(tmp_path):
    world = make_world(SyntheticWorldConfig.tiny(seed=0))
    config = PrepareConfig(user_k=3, item_k=3, modality="text", tokenizer="minilm", max_text_tokens=12)
    data = prepare(world.source, config, tmp_path / "prepared", progress=False)
    model = ModelConfig(
        d_model=16,
        max_len=4,
        item_encoder="text",
        item_encoder_config=tiny_text(hidden_size=16),
        user_encoder_config={"n_layers": 1, "n_heads": 2},
        tokenizer=dataset_tokenizer(data.meta),
    )
    torch.manual_seed(0)
    checkpoint = SequentialRecommender(model).save_pretrained(tmp_path / "run" / "best")
    directory = export_model(checkpoint, data.path, tmp_path / "export")
    assert (directory / "tokenizer" / "tokenizer.json").is_file()
    rec = Recommender.load(directory)
    a, b = data.item_ids[1], data.item_ids[2]
    by_id = rec.recommend([a, b], k=5, exclude_seen=False)
    mixed = rec.recommend([a, {"text": data.item_texts[2]}], k=5, exclude_seen=False)
    assert mixed.items == by_id.items and np.allclose(mixed.scores, by_id.scores, atol=1e-5)


def test_a_dataset_tokenised_otherwise_is_refused(built, tmp_path):
    world = make_world(SyntheticWorldConfig.tiny(seed=0))
    config = PrepareConfig(user_k=3, item_k=3, modality="text", hash_vocab_size=600, max_text_tokens=12)
    other = prepare(world.source, config, tmp_path / "prepared", progress=False)
    torch.manual_seed(0)
    checkpoint = SequentialRecommender(model_config("text", built.dataset)).save_pretrained(tmp_path / "best")
    with pytest.raises(ExportError, match="tokenised otherwise"):
        export_model(checkpoint, other.path, tmp_path / "out")
