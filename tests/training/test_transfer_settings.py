"""PMMRec's five transfer settings (section III-E, Table V): each loads exactly its parameters."""

import pytest
import torch

from transrec.models.item_encoders.multimodal import pmmrec_tiny
from transrec.models.recommender import ModelConfig, SequentialRecommender
from transrec.training.checkpoint import TRANSFER_SETTINGS, TransferError, load_components

PARTS = {
    "full": ("item_encoder.", "user_encoder."),
    "item_encoders": ("item_encoder.",),
    "user_encoder": ("user_encoder.",),
    "text": ("item_encoder.text.",),
    "vision": ("item_encoder.image.",),
}


def model(seed: int, n_items: int = 20) -> SequentialRecommender:
    torch.manual_seed(seed)
    items = pmmrec_tiny(vocab_size=100)
    config = ModelConfig(d_model=16, max_len=6, item_encoder="mm", item_encoder_config=items,
                         user_encoder_config={"n_layers": 1, "n_heads": 2}, n_items=n_items)  # fmt: skip
    return SequentialRecommender(config)


@pytest.mark.parametrize("setting", list(TRANSFER_SETTINGS))
def test_each_setting_loads_its_parameters_and_nothing_else(setting, tmp_path):
    source = model(seed=0)
    source.save_pretrained(tmp_path / "source")
    target = model(seed=1, n_items=35)  # another catalogue: nothing is tied to item ids
    before = {k: v.clone() for k, v in target.state_dict().items()}
    loaded = load_components(target, tmp_path / "source", TRANSFER_SETTINGS[setting])
    assert set(loaded) == set(TRANSFER_SETTINGS[setting])
    after, theirs = target.state_dict(), source.state_dict()
    inside = [k for k in after if k.startswith(PARTS[setting])]
    outside = [k for k in after if not k.startswith(PARTS[setting])]
    assert inside and sorted(k for keys in loaded.values() for k in keys) == sorted(inside)
    for key in inside:
        assert torch.equal(after[key], theirs[key]), key
    for key in outside:  # untouched: still the target's own initialisation
        assert torch.equal(after[key], before[key]), key
    assert any(not torch.equal(before[k], theirs[k]) for k in outside + inside if before[k].dim() == 2)


def test_settings_that_do_not_fit_fail_loudly(tmp_path):
    model(seed=0).save_pretrained(tmp_path / "source")
    text = pmmrec_tiny(vocab_size=100)["text"]
    text_only = SequentialRecommender(
        ModelConfig(d_model=16, max_len=6, item_encoder="text", item_encoder_config=text)
    )
    with pytest.raises(TransferError, match=r"the model has no item_encoder\.image"):
        load_components(text_only, tmp_path / "source", ["item_encoder.image"])
    with pytest.raises(TransferError, match="already part of another component"):
        load_components(model(seed=1), tmp_path / "source", ["item_encoder", "item_encoder.text"])
    with pytest.raises(TransferError, match="unknown component"):
        load_components(model(seed=1), tmp_path / "source", ["item_encoder.fusion"])
