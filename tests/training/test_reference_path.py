"""The papers' reference path (``training.reference``): their slot layout, their fixed-width titles,
and the same loss and gradients as transrec's own step when both see the same negatives."""

from dataclasses import replace

import pytest
import torch

from transrec.config import ConfigError
from transrec.data.item_content import ItemBatch, ItemContent
from transrec.data.prepare import PrepareConfig, prepare
from transrec.data.synthetic import SyntheticWorldConfig, make_world
from transrec.models.item_encoders import tiny_text
from transrec.models.recommender import ModelConfig, SequentialRecommender
from transrec.training import reference
from transrec.training.batches import CollateSequences, SequenceTrainingData, make_loader
from transrec.training.config import TrainConfig
from transrec.training.step import TrainingObjective

VOCAB = 100
L = 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Items that all have a text of at most 12 tokens (so that the papers' 30 only pads)."""
    world = make_world(SyntheticWorldConfig.tiny(seed=3))
    config = PrepareConfig(user_k=3, item_k=3, modality="text", hash_vocab_size=VOCAB, max_text_tokens=12)
    return prepare(world.source, config, tmp_path_factory.mktemp("reference") / "text", progress=False)


def text_model(dataset) -> SequentialRecommender:
    """A tiny text model without dropout anywhere, its top block trainable."""
    hf = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    encoder = tiny_text(vocab_size=VOCAB, freeze="top_k", trainable_blocks=1)
    encoder["hf_config"].update(hf)
    user = {"n_layers": 1, "n_heads": 2, "dropout": 0.0}
    config = ModelConfig(d_model=16, max_len=L, item_encoder="text", item_encoder_config=encoder,
                         user_encoder="sasrec", user_encoder_config=user, n_items=dataset.n_items,
                         n_users=dataset.n_users)  # fmt: skip
    torch.manual_seed(0)
    return SequentialRecommender(config).train()


def train_config(dataset, tmp_path, **fields) -> TrainConfig:
    return TrainConfig(dataset=str(dataset.path), output_dir=str(tmp_path), device="cpu", **fields)


def examples(dataset, content, count=8):
    data = SequenceTrainingData(dataset, max_len=L, mode="s2s", n_negatives=1, content=content, seed=0)
    return [data[i] for i in range(count)]


def test_the_reference_encodes_every_slot_of_the_papers_layout_at_30_tokens(dataset):
    content = ItemContent(dataset, text=True, image=False)
    model = text_model(dataset)
    shapes = []
    backbone = model.item_encoder.backbone.model

    def record(module, args, kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))

    handle = backbone.register_forward_pre_hook(record, with_kwargs=True)
    data = SequenceTrainingData(dataset, max_len=L, mode="s2s", n_negatives=1, content=content, seed=0)
    batch = next(iter(make_loader(data, 8, shuffle=True, num_workers=0, epoch=0, reference=True)))
    try:
        reference.reference_loss(model, batch)
    finally:
        handle.remove()
    # MoRec/NineRec: B x (L + 1) x 2 slots (the sequence once, one negative each), padding included,
    # in one call of the backbone, every title padded to num_words_title = 30.
    assert shapes == [(8 * (L + 1) * 2, 30)]
    slots = batch["slots"]
    assert slots.shape == (8, L + 1, 2)
    assert torch.equal(slots[:, :-1, 0], batch["inputs"])
    assert torch.equal(slots[:, -1, 0], batch["targets"][:, -1])
    assert torch.equal(slots[:, :-1, 1], batch["negatives"][..., 0])
    assert (slots[:, -1, 1] == 0).all()
    assert torch.equal(batch["slot_items"].item_ids, slots.reshape(-1).clamp(min=1))


def test_the_reference_loss_and_gradients_equal_transrecs_bce_on_the_same_batch(dataset, tmp_path):
    content = ItemContent(dataset, text=True, image=False)
    windows = examples(dataset, content)
    assert any((w["inputs"] == 0).any() for w in windows), "some window must be padded"
    model = text_model(dataset)
    fast_config = train_config(dataset, tmp_path)
    slow_config = replace(fast_config, reference_path=True)
    device = torch.device("cpu")

    def loss_and_grads(config, batch):
        model.zero_grad(set_to_none=True)
        loss = TrainingObjective(config, dataset, content, device).loss(model, batch)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    fast, fast_grads = loss_and_grads(fast_config, CollateSequences(content)(windows))
    slow, slow_grads = loss_and_grads(slow_config, CollateSequences(content, reference=True)(windows))
    assert slow.item() == pytest.approx(fast.item(), rel=1e-5)
    assert fast_grads.keys() == slow_grads.keys()
    assert any("backbone" in name for name in fast_grads)  # the text backbone's top block trains too
    for name, grad in fast_grads.items():
        torch.testing.assert_close(slow_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_longer_texts_are_cut_to_30_tokens_keeping_the_closing_token():
    ids = torch.arange(1, 41).repeat(2, 1)
    mask = torch.zeros(2, 40, dtype=torch.long)
    mask[0, :35], mask[1, :5] = 1, 1
    items = ItemBatch(item_ids=torch.tensor([1, 2]), modality=torch.ones(2, dtype=torch.uint8),
                      input_ids=ids * mask, attention_mask=mask)  # fmt: skip
    fixed = reference.fixed_width_text(items, 30, pad_id=0)
    assert fixed.input_ids.shape == fixed.attention_mask.shape == (2, 30)
    assert fixed.input_ids[0].tolist() == [*range(1, 30), 35]
    assert fixed.attention_mask[0].sum() == 30
    assert fixed.input_ids[1].tolist() == [1, 2, 3, 4, 5] + [0] * 25
    assert fixed.attention_mask[1].tolist() == [1] * 5 + [0] * 25


REFUSED = [
    {"objective": "inbatch", "n_negatives": 0},
    {"mode": "s2o"},
    {"n_negatives": 2},
    {"objective": "pmmrec"},
]


@pytest.mark.parametrize("fields", REFUSED)
def test_settings_the_papers_path_does_not_have_are_refused(dataset, tmp_path, fields):
    content = ItemContent(dataset, text=True, image=False)
    config = train_config(dataset, tmp_path, reference_path=True, **fields)
    with pytest.raises(ConfigError, match="reference path implements the papers' BCE objective in mode s2s"):
        TrainingObjective(config, dataset, content, torch.device("cpu"))


def test_encoders_other_than_text_image_and_id_are_refused(dataset):
    content = ItemContent(dataset, text=True, image=False)
    model = text_model(dataset)
    model.item_encoder = torch.nn.Identity()
    batch = CollateSequences(content, reference=True)(examples(dataset, content))
    with pytest.raises(ConfigError, match="supports the text, image and id item encoders, not Identity"):
        reference.reference_loss(model, batch)
