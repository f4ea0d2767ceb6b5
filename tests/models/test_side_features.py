"""Side features (TransRec Figure 2b): values read from a prepared dataset, pooled by hand, fused into
item and user vectors, matched across vocabularies, and refused loudly where a dataset lacks them."""

import numpy as np
import pytest
import torch

from transrec.data.item_content import ItemContent
from transrec.data.prepare import PrepareConfig, prepare
from transrec.data.schema import RawUsers
from transrec.models.recommender import ModelConfig, SequentialRecommender
from transrec.models.side_features import FeatureError, feature_vocabularies, remap_categories

from ..data.rawbuild import raw_dataset

GENRES = {"1": ["drama", "comedy"], "2": ["comedy"], "3": None, "4": ["war"], "5": ["drama"]}
GENDER = {"u1": "F", "u2": "M", "u3": "F"}  # u4 is not in the user table: missing


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    sequences = {"u1": "12345", "u2": "54321", "u3": "1324", "u4": "2453"}
    log = [(u, i, float(t)) for u, items in sequences.items() for t, i in enumerate(items)]
    raw = raw_dataset(log, {i: (f"item {i}", None) for i in GENRES})
    raw.items.features["genre"] = list(GENRES.values())
    raw.users = RawUsers(ids=list(GENDER), features={"gender": list(GENDER.values())})
    config = PrepareConfig(user_k=1, item_k=1)
    return prepare(raw, config, tmp_path_factory.mktemp("features") / "p", progress=False)


def model_for(dataset, user_features=("gender",), item_features=("genre",)) -> SequentialRecommender:
    vocab = feature_vocabularies(dataset.meta, user_features, item_features, dataset.path)
    config = ModelConfig(d_model=4, max_len=5, item_encoder="id", user_encoder="mean_pool",
                         n_items=dataset.n_items, n_users=dataset.n_users, user_features=user_features,
                         item_features=item_features, feature_dim=3, feature_vocab=vocab)  # fmt: skip
    torch.manual_seed(0)
    model = SequentialRecommender(config)
    model.attach_features(dataset)
    return model


def test_feature_values_are_looked_up_and_pooled_as_by_hand(dataset):
    model = model_for(dataset)
    genre = model.features.item.embeddings["genre"].weight.detach()
    vocab = model.config.feature_vocab["item.genre"]  # sorted: comedy, drama, war
    assert vocab == ["comedy", "drama", "war"]
    row = {name: vocab.index(name) + 1 for name in vocab}
    index = {item_id: i for i, item_id in enumerate(dataset.item_ids)}
    items = torch.tensor([index[i] for i in "1234"])
    expected = torch.stack([(genre[row["drama"]] + genre[row["comedy"]]) / 2, genre[row["comedy"]],
                            torch.zeros(3), genre[row["war"]]])  # fmt: skip
    torch.testing.assert_close(model.features.item.embed(items), expected)
    gender = model.features.user.embeddings["gender"].weight.detach()
    users = {user_id: u for u, user_id in enumerate(dataset.user_ids)}
    embedded = model.features.user.embed(torch.tensor([users["u1"], users["u2"], users["u4"]]))
    torch.testing.assert_close(embedded, torch.stack([gender[1], gender[2], torch.zeros(3)]))  # F, M, missing


def test_fusion_is_a_dense_layer_over_the_concatenation_and_starts_as_the_identity(dataset):
    model = model_for(dataset).eval()  # no dropout: the same states twice
    content = ItemContent(dataset, text=False, image=False)
    items = content.batch(torch.arange(1, dataset.n_items + 1))
    plain = model.item_encoder(items)
    torch.testing.assert_close(model.encode_items(items), plain)  # W = [I ; 0], b = 0 at the start
    with torch.no_grad():
        for fusion in (model.features.item, model.features.user):
            fusion.dense.weight.normal_()
            fusion.dense.bias.normal_()
    fusion = model.features.item
    expected = torch.cat([plain, fusion.embed(items.item_ids)], 1) @ fusion.dense.weight.T + fusion.dense.bias
    torch.testing.assert_close(model.encode_items(items), expected)
    # User states [B, L, d]: every position of a user is fused with that user's features.
    vectors, valid = torch.randn(2, 5, 4), torch.ones(2, 5, dtype=torch.bool)
    user_ids = torch.tensor([0, 1])
    states = model.user_encoder(vectors, valid, user_ids=user_ids)
    fusion = model.features.user
    features = fusion.embed(user_ids)[:, None, :].expand(2, 5, 3)
    expected = torch.cat([states, features], -1) @ fusion.dense.weight.T + fusion.dense.bias
    torch.testing.assert_close(model.user_states(vectors, valid, user_ids), expected)


def test_categories_are_matched_by_value_and_unknown_ones_count_as_missing():
    values = np.array([[1, 2], [3, 0]])
    assert remap_categories(values, ["a", "b", "c"], ["c", "a"]).tolist() == [[2, 0], [1, 0]]


def test_a_dataset_without_a_used_field_is_refused_with_the_fields_it_has(dataset):
    with pytest.raises(FeatureError, match=r"user feature 'age'.*its user features: gender"):
        model_for(dataset, user_features=("age",))
    model = model_for(dataset)
    model.config.feature_vocab["user.gender"] = ["x", "y"]
    model.features.vocab["user.gender"] = ["x", "y"]
    with pytest.raises(FeatureError, match="shares no category"):
        model.attach_features(dataset)


def test_a_model_without_features_has_no_feature_weights(dataset):
    model = model_for(dataset, user_features=(), item_features=())
    assert model.features is None and not any(k.startswith("features") for k in model.state_dict())
