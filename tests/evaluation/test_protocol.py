import numpy as np
import pytest
import torch

from transrec.data.prepare import PrepareConfig, prepare
from transrec.evaluation.protocol import evaluate_scorer, stage_histories

from ..data.rawbuild import raw_dataset


@pytest.fixture
def dataset(tmp_path):
    log = [
        ("a", "1", 1), ("a", "2", 2), ("a", "3", 3), ("a", "4", 4),
        ("b", "2", 1), ("b", "3", 2), ("b", "1", 3),
        ("c", "4", 1), ("c", "1", 2), ("c", "2", 3), ("c", "3", 4), ("c", "5", 5),
    ]  # fmt: skip
    raw = raw_dataset(log, {str(i): (f"item {i}", None) for i in range(1, 6)})
    return prepare(raw, PrepareConfig(user_k=1, item_k=1), tmp_path / "p", progress=False)


def test_histories_follow_leave_one_out(dataset):
    histories, targets = stage_histories(dataset, "test")
    assert [h.tolist() for h in histories] == [[1, 2, 3], [2, 3], [4, 1, 2, 3]]
    assert targets.tolist() == [4, 1, 5]
    histories, targets = stage_histories(dataset, "valid")
    assert [h.tolist() for h in histories] == [[1, 2], [2], [4, 1, 2]]
    assert targets.tolist() == [3, 3, 3]


def test_history_is_excluded_and_results_do_not_depend_on_batch_size(dataset):
    # Scores prefer low item indices: 1 > 2 > 3 > 4 > 5.
    def scorer(users, histories):
        return torch.tensor([0.0, 5, 4, 3, 2, 1]).expand(len(users), -1)

    # Test targets 4, 1, 5 with histories excluded: user a ranks 4 first (1-3 excluded) -> rank 1;
    # user b: item 1 is not in b's history [2, 3] -> rank 1; user c: 5 after excluding 1-4 -> rank 1.
    assert evaluate_scorer(dataset, scorer, "test", ks=(1,))["HR@1"] == 1.0
    # Without exclusion: ranks 4, 1, 5 -> HR@1 = 1/3, MRR = (1/4 + 1 + 1/5) / 3.
    plain = evaluate_scorer(dataset, scorer, "test", ks=(1,), exclude_history=False)
    assert plain["HR@1"] == pytest.approx(1 / 3)
    assert plain["MRR"] == pytest.approx((0.25 + 1 + 0.2) / 3)
    one = evaluate_scorer(dataset, scorer, "test", batch_size=1, exclude_history=False)
    all_ = evaluate_scorer(dataset, scorer, "test", batch_size=100, exclude_history=False)
    assert one == all_
    subset = evaluate_scorer(dataset, scorer, "test", ks=(1,), users=np.array([1]), exclude_history=False)
    assert subset["HR@1"] == 1.0
