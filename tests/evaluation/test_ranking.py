import math

import pytest
import torch

from transrec.evaluation import (
    ItemSets,
    RankingMetrics,
    full_ranking_metrics,
    ranks_from_embeddings,
    target_ranks,
)

# Four users, six items (column 0 is padding). Ranks worked out by hand:
# A: target 2 (0.5); items 3 (0.9) and 5 (0.7) score higher; column 0 (9.0) is never ranked -> rank 3
# B: target 2 (0.8); item 3 ties at 0.8 and ties count against the target                    -> rank 2
# C: target 4 (0.6); items 1 and 2 score higher but are excluded; 4 is excluded too but is
#    the target, so it stays ranked                                                            -> rank 1
# D: target 5; every item scores 1.0, so all 5 other items tie with it                        -> rank 6
SCORES = torch.tensor(
    [
        [9.0, 0.1, 0.5, 0.9, 0.3, 0.7, 0.2],
        [0.0, 0.4, 0.8, 0.8, 0.1, 0.2, 0.3],
        [0.0, 0.9, 0.95, 0.1, 0.6, 0.5, 0.4],
        [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
    ]
)
TARGETS = torch.tensor([2, 2, 4, 5])
EXCLUDE = [[], [], [1, 2, 4], []]


def test_hand_computed_example():
    assert target_ranks(SCORES, TARGETS, EXCLUDE).tolist() == [3, 2, 1, 6]
    metrics = full_ranking_metrics(SCORES, TARGETS, ks=(1, 3, 5), exclude=EXCLUDE)
    assert list(metrics) == ["HR@1", "HR@3", "HR@5", "NDCG@1", "NDCG@3", "NDCG@5", "MRR"]
    assert metrics["HR@1"] == 0.25  # only C (rank 1)
    assert metrics["HR@3"] == 0.75  # A, B, C
    assert metrics["HR@5"] == 0.75  # D's rank 6 is still outside
    assert metrics["NDCG@1"] == 0.25  # C: 1/log2(2) = 1
    # A: 1/log2(4) = 0.5; B: 1/log2(3) = 0.6309297535714575; C: 1; D: 0 -> 2.1309297535714575 / 4
    assert metrics["NDCG@3"] == pytest.approx(0.5327324383928644, rel=1e-12)
    assert metrics["NDCG@5"] == pytest.approx(0.5327324383928644, rel=1e-12)
    # 1/3 + 1/2 + 1 + 1/6 = 2 -> 2 / 4
    assert metrics["MRR"] == pytest.approx(0.5, rel=1e-12)


def test_exclude_forms_agree():
    padded = torch.tensor([[0, 0, 0], [0, 0, 0], [1, 2, 4], [0, 0, 0]])
    csr = ItemSets(offsets=torch.tensor([0, 0, 0, 3, 3]), items=torch.tensor([1, 2, 4]))
    as_tensors = [torch.tensor(x, dtype=torch.long) for x in EXCLUDE]
    for exclude in (EXCLUDE, padded, csr, as_tensors, ItemSets.from_padded(padded)):
        assert target_ranks(SCORES, TARGETS, exclude).tolist() == [3, 2, 1, 6]
    # Without exclusion C's target is beaten by items 1 and 2.
    assert target_ranks(SCORES, TARGETS).tolist() == [3, 2, 3, 6]


def test_all_equal_scores_rank_last():
    n_items = 1000
    scores = torch.zeros(3, n_items + 1)
    targets = torch.tensor([1, 500, 1000])
    assert target_ranks(scores, targets).tolist() == [n_items] * 3
    metrics = full_ranking_metrics(scores, targets)
    assert metrics["HR@10"] == 0.0 and metrics["NDCG@50"] == 0.0
    assert metrics["MRR"] == pytest.approx(1 / n_items)
    # Ten excluded items (none of them a target) leave 999 - 10 others tied with the target.
    exclude = [list(range(2, 12))] * 3
    assert target_ranks(scores, targets, exclude).tolist() == [990, 990, 990]


def test_excluded_items_and_padding_column_never_count():
    scores = torch.tensor([[float("inf"), 5.0, 1.0, 4.0, 0.0]])
    assert target_ranks(scores, torch.tensor([2])).tolist() == [3]  # items 1 and 3 beat it; column 0 not
    assert target_ranks(scores, torch.tensor([2]), [[1, 3]]).tolist() == [1]
    # Duplicates and padding zeros inside an exclusion list are harmless.
    assert target_ranks(scores, torch.tensor([2]), [[0, 1, 1, 3, 0]]).tolist() == [1]
    # The target in its own exclusion list stays ranked.
    assert target_ranks(scores, torch.tensor([2]), [[2]]).tolist() == [3]


def test_infinities_are_legal_and_ties_still_count():
    inf = float("inf")
    scores = torch.tensor([[0.0, inf, inf, 1.0], [0.0, -inf, 2.0, -inf], [0.0, 3.0, -inf, inf]])
    # user 0: target 1 ties with item 2 at +inf -> 2; user 1: target 3 ties with item 1 at -inf and is
    # beaten by item 2 -> 3; user 2: target 3 at +inf beats everything -> 1
    assert target_ranks(scores, torch.tensor([1, 3, 3])).tolist() == [2, 3, 1]


def brute_force_ranks(scores, targets, exclude):
    """The rank rule written out literally, one user at a time."""
    ranks = []
    for u, target in enumerate(targets.tolist()):
        skip = set(exclude[u]) | {0, target}
        t = scores[u, target]
        ranks.append(1 + sum(1 for j in range(scores.shape[1]) if j not in skip and scores[u, j] >= t))
    return ranks


def random_case(n_users=37, n_items=53, seed=0):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 5, (n_users, n_items + 1), generator=gen).float()  # many ties
    targets = torch.randint(1, n_items + 1, (n_users,), generator=gen)
    exclude = []
    for u in range(n_users):
        length = int(torch.randint(0, 12, (1,), generator=gen))
        history = torch.randint(0, n_items + 1, (length,), generator=gen).tolist()
        if u % 5 == 0:
            history.append(int(targets[u]))  # the target in its own history stays ranked
        exclude.append(history)
    return scores, targets, exclude


def test_chunk_sizes_do_not_change_ranks_or_metrics():
    scores, targets, exclude = random_case()
    expected_ranks = brute_force_ranks(scores, targets, exclude)
    expected = full_ranking_metrics(scores, targets, exclude=exclude)
    for user_chunk, item_chunk in [(1, 1), (1, 53), (5, 7), (8, 16), (36, 52), (37, 100), (1000, 1)]:
        ranks = target_ranks(scores, targets, exclude, user_chunk=user_chunk, item_chunk=item_chunk)
        assert ranks.tolist() == expected_ranks
        metrics = full_ranking_metrics(
            scores, targets, exclude=exclude, user_chunk=user_chunk, item_chunk=item_chunk
        )
        assert metrics == expected  # bit-identical, not approximately equal


def test_accumulator_over_parts_equals_one_shot():
    scores, targets, exclude = random_case(seed=1)
    expected = full_ranking_metrics(scores, targets, exclude=exclude)
    parts = [(0, 10), (10, 11), (11, 30), (30, 37)]
    accumulators = []
    for lo, hi in parts:
        part = RankingMetrics(n_items=53)
        part.update(target_ranks(scores[lo:hi], targets[lo:hi], exclude[lo:hi]))
        accumulators.append(part)
    merged = RankingMetrics(n_items=53)
    for part in reversed(accumulators):  # order of merging must not matter either
        merged.merge(part)
    assert merged.num_users == 37
    assert merged.compute() == expected
    # Summing the raw state (what an all_reduce does) gives the same.
    summed = RankingMetrics(n_items=53)
    summed.rank_counts = sum(p.rank_counts for p in accumulators)
    assert summed.compute() == expected


def test_accumulator_without_n_items_grows_and_merges():
    scores, targets, exclude = random_case(seed=3)
    expected = full_ranking_metrics(scores, targets, exclude=exclude)
    ranks = target_ranks(scores, targets, exclude)
    first, second = RankingMetrics(), RankingMetrics()
    first.update(ranks[:20])
    second.update(ranks[20:])
    assert first.merge(second).compute() == expected
    fixed = RankingMetrics(n_items=53)
    fixed.update(ranks[:5])
    assert fixed.merge(second).merge(RankingMetrics()).num_users == 22
    small = RankingMetrics(n_items=2)
    with pytest.raises(ValueError, match="above n_items"):
        small.merge(second)


def test_metric_definitions_from_ranks():
    metrics = RankingMetrics(n_items=100, ks=(2, 10))
    metrics.update(torch.tensor([1, 3]))
    metrics.update(torch.tensor([12]))
    result = metrics.compute()
    assert result["HR@2"] == pytest.approx(1 / 3)
    assert result["HR@10"] == pytest.approx(2 / 3)
    assert result["NDCG@10"] == pytest.approx((1.0 + 0.5) / 3)  # rank 3 -> 1/log2(4) = 0.5
    assert result["MRR"] == pytest.approx((1 + 1 / 3 + 1 / 12) / 3)  # untruncated: rank 12 counts


def test_ranks_from_embeddings_match_explicit_scores():
    gen = torch.Generator().manual_seed(2)
    # Small integers make every dot product exact, so ties are exact in both paths.
    users = torch.randint(-2, 3, (29, 4), generator=gen).float()
    items = torch.randint(-2, 3, (41, 4), generator=gen).float()
    items[0] = 100.0  # the padding row would win everything if it were ranked
    targets = torch.randint(1, 41, (29,), generator=gen)
    exclude = [torch.randint(0, 41, (u % 7,), generator=gen) for u in range(29)]
    expected = target_ranks(users @ items.T, targets, exclude)
    for user_chunk, item_chunk in [(1, 1), (4, 9), (29, 40), (128, 4096)]:
        ranks = ranks_from_embeddings(
            users, items, targets, exclude, user_chunk=user_chunk, item_chunk=item_chunk
        )
        assert torch.equal(ranks, expected)


@pytest.mark.parametrize("where", [(0, 3), (1, 2), (2, 0)])
def test_nan_scores_raise(where):
    scores = torch.rand(3, 6)
    scores[where] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        full_ranking_metrics(scores, torch.tensor([2, 2, 2]))


def test_nan_embeddings_raise():
    users, items = torch.rand(3, 4), torch.rand(6, 4)
    items[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ranks_from_embeddings(users, items, torch.tensor([1, 2, 4]))
    with pytest.raises(ValueError, match="NaN"):
        ranks_from_embeddings(users, items, torch.tensor([1, 3, 4]))  # NaN in a target's own score


@pytest.mark.parametrize(
    ("scores", "targets", "exclude", "message"),
    [
        (torch.rand(6), torch.tensor([1]), None, "2-D float"),
        (torch.randint(0, 3, (2, 6)), torch.tensor([1, 1]), None, "2-D float"),
        (torch.rand(2, 1), torch.tensor([1, 1]), None, "at least 2 columns"),
        (torch.rand(2, 6), torch.tensor([1, 1, 1]), None, "3 entries but there are 2 users"),
        (torch.rand(2, 6), torch.tensor([[1, 1]]), None, "1-D"),
        (torch.rand(2, 6), torch.tensor([0, 1]), None, r"1\.\.5"),
        (torch.rand(2, 6), torch.tensor([1, 6]), None, r"1\.\.5"),
        (torch.rand(2, 6), torch.tensor([1.0, 2.0]), None, "integer"),
        (torch.rand(2, 6), torch.tensor([1, 2]), [[1]], "1 users but there are 2"),
        (torch.rand(2, 6), torch.tensor([1, 2]), [[1], [7]], r"0\.\.5"),
        (torch.rand(2, 6), torch.tensor([1, 2]), torch.tensor([1, 2]), "2-D"),
        (
            torch.rand(2, 6),
            torch.tensor([1, 2]),
            ItemSets(torch.tensor([0, 2, 1]), torch.tensor([1])),
            "offsets",
        ),
    ],
)
def test_bad_input_raises(scores, targets, exclude, message):
    with pytest.raises(ValueError, match=message):
        full_ranking_metrics(scores, targets, exclude=exclude)


def test_bad_options_raise():
    scores, targets = torch.rand(2, 6), torch.tensor([1, 2])
    with pytest.raises(ValueError, match="chunk"):
        target_ranks(scores, targets, user_chunk=0)
    with pytest.raises(ValueError, match="ks"):
        full_ranking_metrics(scores, targets, ks=(0, 5))
    with pytest.raises(TypeError, match="exclude"):
        target_ranks(scores, targets, exclude={1: [2]})
    with pytest.raises(ValueError, match="no users"):
        RankingMetrics(n_items=5).compute()
    with pytest.raises(ValueError, match=r"1\.\.5"):
        RankingMetrics(n_items=5).update(torch.tensor([6]))
    with pytest.raises(ValueError, match="merge"):
        RankingMetrics(n_items=5).merge(RankingMetrics(n_items=6))


def test_log2_discount_literal():
    # Guard the discount convention itself: rank r -> 1 / log2(r + 1).
    metrics = RankingMetrics(n_items=10, ks=(10,))
    metrics.update(torch.tensor([7]))
    assert metrics.compute()["NDCG@10"] == pytest.approx(1 / math.log2(8))  # = 1/3
