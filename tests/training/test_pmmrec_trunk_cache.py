"""PMMRec pre-training with the mm encoder's frozen-trunk cache trains the same model as without it, and
with the cache the frozen blocks run once per item, before training."""

import json
from itertools import pairwise

import pytest

from tests.frozen_blocks import FrozenBlockCounter
from transrec.data.prepare import PrepareConfig, prepare
from transrec.data.synthetic import SyntheticWorldConfig, make_world
from transrec.models.item_encoders.multimodal import pmmrec_tiny
from transrec.models.recommender import ModelConfig
from transrec.training.config import OptimConfig, TrainConfig
from transrec.training.trainer import train

VOCAB = 200


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    world = make_world(SyntheticWorldConfig.tiny(seed=4, text_only_fraction=0.0, image_only_fraction=0.0))
    prep = PrepareConfig(user_k=3, item_k=3, image_size=32, image_format="raw", hash_vocab_size=VOCAB)
    return prepare(world.source, prep, tmp_path_factory.mktemp("pmmrec_cache") / "source", progress=False)


def losses(out) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_pmmrec_pretraining_with_the_trunk_cache_gives_the_uncached_metrics(source, tmp_path, monkeypatch):
    # The text trunk ends below its top block, the all-frozen image trunk at its patch tokens.
    items = pmmrec_tiny(vocab_size=VOCAB)
    items["text"].update(freeze="top_k", trainable_blocks=1)
    items["image"].update(freeze="all")
    model = ModelConfig(d_model=16, max_len=8, item_encoder="mm", item_encoder_config=items,
                        user_encoder_config={"n_layers": 1, "n_heads": 2}, nid_head=True)  # fmt: skip
    runs, counters = {}, {}
    for cache in (True, False):
        config = TrainConfig(dataset=str(source.path), output_dir=str(tmp_path / str(cache)), model=model,
                             objective="pmmrec", epochs=2, batch_size=8, device="cpu", seed=0,
                             collapse_factor=0.0, optim=OptimConfig(lr=3e-3, encoder_lr=1e-3),
                             trunk_cache=cache)  # fmt: skip
        counters[cache] = FrozenBlockCounter()
        with monkeypatch.context() as patch:
            counters[cache].watch_new_backbones(patch)
            runs[cache] = train(config, progress=False, hook=counters[cache].hook)
    cached, plain = runs[True], runs[False]
    # Every item has both modalities here, so both caches hold every item: the frozen text block and the
    # frozen ViT saw each item once, while the caches were built, and never in a step or an evaluation.
    assert counters[True].backbone_rows() == {"BertModel": source.n_items, "HFVisionFeatures": source.n_items}
    on, off = counters[True].snapshots, counters[False].snapshots
    assert len(on) > 3 and all(rows == counters[True].rows for _, rows in on)
    # Without the cache they run in every step and every evaluation.
    assert len(off) == len(on) and all(
        all(after[key] > before[key] for key in before) for (_, before), (_, after) in pairwise(off)
    )
    assert cached.best_epoch == plain.best_epoch
    assert losses(tmp_path / "True") == pytest.approx(losses(tmp_path / "False"), rel=1e-5)
    for key, value in plain.test.items():
        assert cached.test[key] == pytest.approx(value, abs=1e-6), key
