"""Training and validation under the new-item protocol: items that arrive after training (``new_items``)
are never sampled as negatives, never a class of the full softmax, and not ranked at validation, which
stands before they exist; at test they are ranked like every other item."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transrec.data.item_content import ItemContent
from transrec.data.prepare import prepare
from transrec.evaluation.model_eval import evaluate_model_detailed
from transrec.evaluation.protocol import evaluate_scorer
from transrec.models.recommender import ModelConfig, SequentialRecommender
from transrec.training.batches import CollateSequences, SequenceTrainingData
from transrec.training.config import TrainConfig
from transrec.training.losses import full_softmax_loss
from transrec.training.step import TrainingObjective

from ..data.test_new_items import config, raw

NEW = [7, 8]  # the hand-built log's new items (tests/data/test_new_items.py)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare(raw(), config(), tmp_path_factory.mktemp("new") / "p", progress=False)


@pytest.mark.parametrize("mode", ["s2s", "s2o", "masked", "cpc"])
def test_new_items_are_never_sampled_as_negatives(prepared, mode):
    assert np.flatnonzero(prepared.item_is_new).tolist() == NEW
    data = SequenceTrainingData(prepared, max_len=3, mode=mode, n_negatives=4, content=None, seed=0)
    drawn = set()
    for epoch in range(30):
        data.set_epoch(epoch)
        for index in range(len(data)):
            drawn.update(data[index]["negatives"].ravel().tolist())
    drawn.discard(0)
    assert not drawn & set(NEW)
    # Not vacuous: every other item outside some user's history is drawn.
    assert drawn == {1, 2, 3, 4, 5, 6}


def test_the_full_softmax_leaves_unavailable_items_out_of_the_normaliser():
    torch.manual_seed(0)
    hidden, table = torch.randn(3, 4), torch.randn(6, 4)  # items 1..5
    targets = torch.tensor([1, 2, 5])
    unavailable = torch.tensor([False, False, False, True, True, False])  # items 3 and 4
    kept = torch.tensor([1, 2, 5])
    by_hand = F.cross_entropy(hidden @ table[kept].T, torch.tensor([0, 1, 2]))
    got = full_softmax_loss(hidden, targets, table, unavailable)
    torch.testing.assert_close(got, by_hand)
    assert not torch.allclose(full_softmax_loss(hidden, targets, table), by_hand)


def test_the_trainer_full_softmax_leaves_new_items_out(prepared, tmp_path):
    content = ItemContent(prepared, text=True, image=False)
    model_config = ModelConfig(d_model=8, max_len=3, item_encoder="id", n_items=prepared.n_items,
                               user_encoder_config={"n_layers": 1, "n_heads": 1})  # fmt: skip
    torch.manual_seed(0)
    model = SequentialRecommender(model_config).eval()
    data = SequenceTrainingData(prepared, max_len=3, mode="s2s", n_negatives=0, content=content, seed=0)
    batch = CollateSequences(content)([data[i] for i in range(len(data))])
    config = TrainConfig(dataset=str(prepared.path), output_dir=str(tmp_path), model=model_config,
                         objective="full_softmax")  # fmt: skip
    with torch.no_grad():
        loss = TrainingObjective(config, prepared, content, torch.device("cpu")).loss(model, batch)
        vectors = model.encode_items(batch["items"])
        table = torch.cat([vectors.new_zeros(1, vectors.shape[1]), vectors])
        hidden = model.user_states(table[batch["inputs_inv"] + 1], batch["valid"], batch["user_ids"], None)
        at = batch["targets"] != 0
        catalogue = model.encode_items(content.batch(torch.arange(1, prepared.n_items + 1)))
        logits = hidden[at] @ catalogue.T  # class c is item c + 1
        old = torch.tensor([i + 1 not in NEW for i in range(prepared.n_items)])
        expected = F.cross_entropy(logits[:, old], batch["targets"][at] - 1)  # targets are never new
    torch.testing.assert_close(loss, expected)
    assert not torch.allclose(loss, F.cross_entropy(logits, batch["targets"][at] - 1))


class Favourite:
    """Scores one item (10) above each user's history (7) above their target of ``stage`` (5) above every
    other item (0)."""

    def __init__(self, dataset, stage: str, favourite: int):
        self.n_items, self.favourite = dataset.n_items, favourite
        self.targets = dataset.split.targets(stage)

    def __call__(self, users, histories):
        scores = torch.zeros(len(users), self.n_items + 1)
        for row, history in enumerate(histories):
            scores[row, torch.from_numpy(history.astype(np.int64))] = 7.0
        scores[torch.arange(len(users)), torch.from_numpy(self.targets[users].astype(np.int64))] = 5.0
        scores[:, self.favourite] = 10.0
        return scores


def test_validation_does_not_rank_new_items_and_test_does(prepared):
    assert NEW[0] not in prepared.split.test_targets
    for exclude_history in (True, False):
        valid = evaluate_scorer(prepared, Favourite(prepared, "valid", NEW[0]), "valid", ks=(1,),
                                exclude_history=exclude_history)  # fmt: skip
        test = evaluate_scorer(prepared, Favourite(prepared, "test", NEW[0]), "test", ks=(1,),
                               exclude_history=exclude_history)  # fmt: skip
        # The favourite does not exist yet at validation; the history is ranked unless excluded.
        assert valid["HR@1"] == (1.0 if exclude_history else 0.0)
        assert test["HR@1"] == 0.0  # at test it does, and comes before every target


def test_model_validation_does_not_rank_new_items_and_test_does(prepared):
    content = ItemContent(prepared, text=True, image=False)
    model_config = ModelConfig(d_model=8, max_len=3, item_encoder="id", n_items=prepared.n_items,
                               user_encoder_config={"n_layers": 1, "n_heads": 1})  # fmt: skip
    torch.manual_seed(0)
    model = SequentialRecommender(model_config).eval()
    table = model.item_encoder.embedding.weight
    before = {
        stage: evaluate_model_detailed(model, prepared, content, stage).ranks for stage in ("valid", "test")
    }
    users = torch.from_numpy(np.arange(prepared.n_users))
    with torch.no_grad():  # the new item 7 moves far along the mean user vector
        from transrec.evaluation.model_eval import item_table, user_vectors
        from transrec.evaluation.protocol import stage_histories

        histories, _ = stage_histories(prepared, "valid")
        hidden = user_vectors(model, item_table(model, content, 64, "cpu"), histories, users.numpy(), "cpu")
        table[NEW[0]] = 1e4 * hidden.mean(0) / hidden.mean(0).norm()
    after = {
        stage: evaluate_model_detailed(model, prepared, content, stage).ranks for stage in ("valid", "test")
    }
    np.testing.assert_array_equal(after["valid"], before["valid"])  # not in the validation ranking
    assert (after["test"] != before["test"]).any()  # at test it is ranked: moving it moves the ranks
