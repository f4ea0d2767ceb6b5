"""``evaluate_model`` (the path behind every trainer and README figure) against a hand computation."""

import math

import numpy as np
import pytest
import torch

from transrec.data.item_content import ItemContent
from transrec.data.prepare import PrepareConfig, prepare
from transrec.evaluation.model_eval import evaluate_model
from transrec.evaluation.protocol import stage_histories
from transrec.models.recommender import ModelConfig, SequentialRecommender

from ..data.rawbuild import raw_dataset

# Chronological sequences (raw item ids 1..6). Leave-one-out: valid predicts the second to last item
# from the items before it, test predicts the last item from every item before it (valid item included).
SEQUENCES = {
    "A": [6, 5, 1, 2],
    "B": [1, 2, 6, 3, 4],
    "C": [5, 4, 6, 1],
    "D": [1, 5, 2, 3, 4],
}
MAX_LEN = 3  # shorter than D's test history: the user vector sees 3 items, the exclusion all of them


@pytest.fixture
def world(tmp_path):
    """A prepared dataset of ``SEQUENCES`` and a model whose scores are known in closed form.

    Item j (raw id) has the vector ``e_j = (1, j - 3.5)``; the user encoder is the plain mean of the
    last ``MAX_LEN`` history vectors (mean_pool without layers), so a user whose window has mean raw id
    m gets ``h = (1, m - 3.5)`` and ``score_j = 1 + (j - 3.5)(m - 3.5)``: m > 3.5 ranks high ids first,
    m < 3.5 low ids first. No window below has m = 3.5, so there are no ties.
    """
    log = [(user, str(item), float(t)) for user, items in SEQUENCES.items() for t, item in enumerate(items)]
    raw = raw_dataset(log, {str(j): (f"item {j}", None) for j in range(1, 7)})
    prep = PrepareConfig(user_k=1, item_k=1, tokenizer="none")
    dataset = prepare(raw, prep, tmp_path / "p", progress=False)
    config = ModelConfig(d_model=2, max_len=MAX_LEN, item_encoder="id", user_encoder="mean_pool",
                         user_encoder_config={"n_layers": 0}, n_items=dataset.n_items,
                         n_users=dataset.n_users)  # fmt: skip
    model = SequentialRecommender(config)
    raw_ids = torch.tensor([float(i) for i in dataset.item_ids[1:]])  # item index i -> its raw id
    with torch.no_grad():
        model.item_encoder.embedding.weight[1:] = torch.stack([torch.ones(6), raw_ids - 3.5], dim=1)
    return dataset, model, ItemContent(dataset, text=False, image=False)


def raw_ids_of(dataset, indices) -> list[int]:
    return [int(dataset.item_ids[i]) for i in indices]


def test_the_prepared_split_is_the_one_derived_by_hand(world):
    dataset, _, _ = world
    assert dataset.user_ids == list(SEQUENCES)
    for stage, cut in (("valid", -2), ("test", -1)):
        histories, targets = stage_histories(dataset, stage)
        assert [raw_ids_of(dataset, h) for h in histories] == [s[:cut] for s in SEQUENCES.values()]
        assert raw_ids_of(dataset, targets) == [s[cut] for s in SEQUENCES.values()]


def test_history_is_excluded_from_the_ranking_as_derived_by_hand(world):
    dataset, model, content = world
    # Valid (history = all but the last two items; window = its last 3 items):
    #   A [6 5] -> 1: m 5.5, high first 6 5 4 3 2 1; 6, 5 excluded -> above 1: 4 3 2 -> rank 4
    #   B [1 2 6] -> 3: m 3, low first 1 2 3 ...; 1, 2 excluded -> rank 1
    #   C [5 4] -> 6: m 4.5, high first -> rank 1
    #   D [1 5 2] -> 3: m 8/3, low first 1 2 3 ...; 1, 2 excluded -> rank 1
    # Test (history = all but the last item, the validation item included):
    #   A [6 5 1] -> 2: m 4, high first; 6, 5 excluded -> above 2: 4 3 -> rank 3
    #   B [1 2 6 3] -> 4: window [2 6 3], m 11/3, high first; 6 excluded -> above 4: 5 -> rank 2
    #   C [5 4 6] -> 1: m 5, high first; 5, 4 and the validation item 6 excluded -> above 1: 3 2 -> rank 3
    #   D [1 5 2 3] -> 4: window [5 2 3], m 10/3, low first; 1 (outside the window), 2, 3 excluded
    #      -> rank 1
    expected_ranks = {"valid": [4, 1, 1, 1], "test": [3, 2, 3, 1]}
    for stage, ranks in expected_ranks.items():
        for user, rank in enumerate(ranks):
            alone = evaluate_model(model, dataset, content, stage, ks=(1,), users=np.array([user]))
            assert alone["MRR"] == pytest.approx(1 / rank), (stage, user)

    valid = evaluate_model(model, dataset, content, "valid", ks=(1, 3))
    # Ranks 4, 1, 1, 1: HR@1 = HR@3 = 3/4; NDCG@3 = (0 + 1 + 1 + 1) / 4; MRR = (1/4 + 3) / 4.
    assert valid == pytest.approx({"HR@1": 0.75, "HR@3": 0.75, "NDCG@1": 0.75, "NDCG@3": 0.75, "MRR": 0.8125})
    test = evaluate_model(model, dataset, content, "test", ks=(1, 3))
    # Ranks 3, 2, 3, 1: HR@1 = 1/4; HR@3 = 1; NDCG@3 = (1/log2(4) + 1/log2(3) + 1/log2(4) + 1) / 4
    # = (0.5 + 0.63093 + 0.5 + 1) / 4; MRR = (1/3 + 1/2 + 1/3 + 1) / 4 = 13/24.
    assert test == pytest.approx(
        {"HR@1": 0.25, "HR@3": 1.0, "NDCG@1": 0.25, "NDCG@3": 0.6577324383928644, "MRR": 0.5416666666666666}
    )
    assert test["NDCG@3"] == pytest.approx((2 + 1 / math.log2(3)) / 4)  # the literal above, derived


def test_without_exclusion_the_history_competes(world):
    dataset, model, content = world
    # The same orders with nothing excluded (test): A 2 after 6 5 4 3 -> 5; B 4 after 6 5 -> 3;
    # C 1 last of 6 -> 6; D 4 after 1 2 3 -> 4. HR@3 = 1/4 (B); NDCG@3 = (1/log2(4)) / 4 = 0.125;
    # MRR = (1/5 + 1/3 + 1/6 + 1/4) / 4 = 0.2375.
    plain = evaluate_model(model, dataset, content, "test", ks=(3,), exclude_history=False)
    assert plain == pytest.approx({"HR@3": 0.25, "NDCG@3": 0.125, "MRR": 0.2375})
