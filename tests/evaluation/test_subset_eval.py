"""Evaluation subsets (cold, new, warm-N; MoRec A.1 and 4.2) wherever a user evaluates: ``evaluate_model``,
``transrec evaluate`` and the trainer's ``test_metrics.json``, against a hand computation."""

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from transrec.cli.main import main
from transrec.config import ConfigError
from transrec.data.item_content import ItemContent
from transrec.data.prepare import PrepareConfig, prepare
from transrec.evaluation.model_eval import evaluate_model, subset_masks
from transrec.models.recommender import ModelConfig, SequentialRecommender
from transrec.training.config import OptimConfig, TrainConfig
from transrec.training.trainer import train
from transrec.training.validation import validate_config

from ..data.rawbuild import raw_dataset

# Ten users "p0".."p9" share one sequence; "q" and "r" differ (raw item ids 1..6, oldest first).
SEQUENCES = {
    **{f"p{i}": [4, 1, 2, 3, 5] for i in range(10)},
    "q": [2, 5, 4, 3, 1],
    "r": [1, 2, 3, 4, 6],
}
# Test: the target is the last item; what counts (cold/new) are all users' items before their targets:
#   1: 10 (p) + 1 (r) = 11   2: 10 + q + r = 12   3: 12   4: 12   5: q = 1   6: none.
#   p -> 5: 1 < 10, cold, not new.   q -> 1: 11, not cold.   r -> 6: 0, new (and cold).
# warm-N counts the full sequences (MoRec filters before splitting), users need >= 5 interactions:
#   1..4: 12 each, 5: 11 (p, q), 6: 1 (r).
#   warm-2: 6 drops, r falls to 4 interactions and drops; 1..4 keep 11 -> p and q (targets 5, 1) survive.
#   warm-12: 5 and 6 drop, every user falls to 4 interactions -> nobody.
TEST_SUBSETS = {"all": 12, "cold": 11, "new": 1, "warm-2": 11, "warm-12": 0}
# Valid: the target is the second to last item, counted over the items before it:
#   p [4 1 2] -> 3, q [2 5 4] -> 3, r [1 2 3] -> 4. Counts: 3: r = 1; 4: 10 (p) + q = 11.
#   p and q are cold (not new); r is not cold.
MAX_LEN = 3


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The prepared ``SEQUENCES`` and a model whose scores are known in closed form.

    As in ``test_model_eval``: item j (raw id) has the vector ``(1, j - 3.5)`` and the user vector is the
    mean of the last 3 history vectors, so with m the mean raw id of that window ``score_j = 1 +
    (j - 3.5)(m - 3.5)``: m > 3.5 ranks high ids first, m < 3.5 low ids first.
    """
    root = tmp_path_factory.mktemp("subsets")
    log = [(user, str(item), float(t)) for user, items in SEQUENCES.items() for t, item in enumerate(items)]
    raw = raw_dataset(log, {str(j): (f"item {j}", None) for j in range(1, 7)})
    dataset = prepare(raw, PrepareConfig(user_k=1, item_k=1, tokenizer="none"), root / "p", progress=False)
    config = ModelConfig(d_model=2, max_len=MAX_LEN, item_encoder="id", user_encoder="mean_pool",
                         user_encoder_config={"n_layers": 0}, n_items=dataset.n_items,
                         n_users=dataset.n_users)  # fmt: skip
    model = SequentialRecommender(config)
    raw_ids = torch.tensor([float(i) for i in dataset.item_ids[1:]])
    with torch.no_grad():
        model.item_encoder.embedding.weight[1:] = torch.stack([torch.ones(6), raw_ids - 3.5], dim=1)
    model.save_pretrained(root / "model")
    return dataset, model, ItemContent(dataset, text=False, image=False), root / "model"


def users_of(dataset, mask) -> set[str]:
    return {dataset.user_ids[u] for u in np.flatnonzero(mask)}


P = {f"p{i}" for i in range(10)}


def test_subsets_are_the_users_derived_by_hand(world):
    dataset = world[0]
    test = subset_masks(dataset, "test", list(TEST_SUBSETS))
    assert {name: users_of(dataset, mask) for name, mask in test.items()} == {
        "all": P | {"q", "r"}, "cold": P | {"r"}, "new": {"r"}, "warm-2": P | {"q"}, "warm-12": set(),
    }  # fmt: skip
    valid = subset_masks(dataset, "valid", ["cold", "new"])
    assert users_of(dataset, valid["cold"]) == P | {"q"} and not valid["new"].any()


# Test ranks (history excluded):
#   p [4 1 2 3] -> 5: window [1 2 3], m 2, low first 1..6; 1-4 excluded -> rank 1
#   q [2 5 4 3] -> 1: window [5 4 3], m 4, high first 6 5 4 3 2 1; 2-5 excluded -> above 1: 6 -> rank 2
#   r [1 2 3 4] -> 6: window [2 3 4], m 3, low first; 1-4 excluded -> above 6: 5 -> rank 2
RANKS = {**{p: 1 for p in P}, "q": 2, "r": 2}
NDCG2_AT_2 = 1 / math.log2(3)  # the NDCG@2 of one user ranked 2


def expected_metrics() -> dict[str, float]:
    return {
        "HR@1": 10 / 12, "HR@2": 1.0, "NDCG@1": 10 / 12, "NDCG@2": (10 + 2 * NDCG2_AT_2) / 12, "MRR": 11 / 12,
        "cold/users": 11, "cold/HR@1": 10 / 11, "cold/HR@2": 1.0, "cold/NDCG@1": 10 / 11,
        "cold/NDCG@2": (10 + NDCG2_AT_2) / 11, "cold/MRR": 10.5 / 11,
        "new/users": 1, "new/HR@1": 0.0, "new/HR@2": 1.0, "new/NDCG@1": 0.0, "new/NDCG@2": NDCG2_AT_2,
        "new/MRR": 0.5,
        "warm-2/users": 11, "warm-2/HR@1": 10 / 11, "warm-2/HR@2": 1.0, "warm-2/NDCG@1": 10 / 11,
        "warm-2/NDCG@2": (10 + NDCG2_AT_2) / 11, "warm-2/MRR": 10.5 / 11,
        "warm-12/users": 0,  # metrics over nobody are undefined: only the count
    }  # fmt: skip


def test_metrics_per_subset_as_derived_by_hand(world):
    dataset, model, content, _ = world
    metrics = evaluate_model(
        model, dataset, content, "test", ks=(1, 2), subsets=["cold", "new", "warm-2", "warm-12"]
    )
    assert metrics == pytest.approx(expected_metrics())
    assert all(isinstance(metrics[f"{s}/users"], int) for s in ("cold", "new", "warm-2", "warm-12"))


def test_a_bad_subset_name_is_refused_before_any_work(world):
    dataset, model, content, _ = world
    with pytest.raises(ValueError, match="unknown evaluation subset 'hot'"):
        evaluate_model(model, dataset, content, "test", subsets=["hot"])
    with pytest.raises(ValueError, match="'warm-0'"):
        evaluate_model(model, dataset, content, "test", subsets=["warm-0"])


def test_cli_evaluate_reports_subsets_and_writes_per_user_ranks(world, tmp_path, capsys):
    dataset, _, _, checkpoint = world
    common = ["evaluate", "--checkpoint", str(checkpoint), "--dataset", str(dataset.path), "--device", "cpu",
              "--ks", "1,2"]  # fmt: skip
    flags = ["--subset", "cold", "--subset", "new", "--subset", "warm-2", "--subset", "warm-12"]
    out = tmp_path / "m.json"
    assert main([*common, *flags, "--output", str(out), "--per-user", str(tmp_path / "u.parquet")]) == 0
    assert json.loads(out.read_text()) == pytest.approx(expected_metrics())
    assert "cold/users 11 " in capsys.readouterr().out

    table = pq.read_table(tmp_path / "u.parquet").to_pydict()
    assert list(table) == ["user", "target", "rank", "cold", "new", "warm-2", "warm-12"]
    names = [dataset.user_ids[u] for u in table["user"]]
    assert names == list(SEQUENCES)
    assert [int(dataset.item_ids[t]) for t in table["target"]] == [s[-1] for s in SEQUENCES.values()]
    assert table["rank"] == [RANKS[n] for n in names]
    assert table["cold"] == [n != "q" for n in names] and table["new"] == [n == "r" for n in names]
    assert table["warm-2"] == [n != "r" for n in names] and table["warm-12"] == [False] * 12

    # RecBole's protocol, nothing excluded: p 5 after 1 2 3 4 -> 5; q 1 last of 6 -> 6; r 6 last -> 6.
    assert main([*common, "--subset", "all", "--no-exclude-history", "--output", str(out),
                 "--per-user", str(tmp_path / "plain.parquet")]) == 0  # fmt: skip
    plain = pq.read_table(tmp_path / "plain.parquet").to_pydict()
    assert list(plain) == ["user", "target", "rank", "all"] and plain["all"] == [True] * 12
    assert plain["rank"] == [5] * 10 + [6, 6]
    assert json.loads(out.read_text()) == pytest.approx(
        {
            "HR@1": 0.0,
            "HR@2": 0.0,
            "NDCG@1": 0.0,
            "NDCG@2": 0.0,
            "MRR": (10 / 5 + 2 / 6) / 12,
            "all/users": 12,
            "all/HR@1": 0.0,
            "all/HR@2": 0.0,
            "all/NDCG@1": 0.0,
            "all/NDCG@2": 0.0,
            "all/MRR": (10 / 5 + 2 / 6) / 12,
        }
    )


@pytest.mark.parametrize("flag", [["--subset", "hot"], ["--ks", "5,x"], ["--ks", "0"]])
def test_cli_refuses_bad_flags(world, flag, capsys):
    dataset, _, _, checkpoint = world
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--checkpoint", str(checkpoint), "--dataset", str(dataset.path), *flag])
    assert exit_info.value.code == 2 and flag[1] in capsys.readouterr().err


def test_trainer_reports_the_configured_subsets_in_test_metrics(world, tmp_path):
    dataset, _, _, _ = world
    model = ModelConfig(d_model=8, max_len=MAX_LEN, item_encoder="id", user_encoder="mean_pool",
                        user_encoder_config={"n_layers": 0})  # fmt: skip
    config = TrainConfig(dataset=str(dataset.path), output_dir=str(tmp_path / "run"), model=model, epochs=1,
                         batch_size=4, seed=1, device="cpu", collapse_factor=0.0, optim=OptimConfig(lr=1e-2),
                         eval_subsets=("cold", "new", "warm-2", "warm-12"))  # fmt: skip
    result = train(config, progress=False)
    stored = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert stored == result.test
    assert {k: v for k, v in stored.items() if k.endswith("/users")} == {
        f"{name}/users": TEST_SUBSETS[name] for name in ("cold", "new", "warm-2", "warm-12")
    }
    # all = warm-2 (p, q) + new (r), disjoint: the subset metrics are those of their own users.
    assert {f"new/{m}" for m in ("HR@10", "NDCG@10", "MRR")} <= set(stored) and "warm-12/MRR" not in stored
    for metric in ("MRR", "NDCG@10"):
        assert stored[metric] * 12 == pytest.approx(stored[f"warm-2/{metric}"] * 11 + stored[f"new/{metric}"])


def test_config_refuses_an_unknown_subset_by_key():
    ok = TrainConfig(dataset="d", output_dir="o", eval_subsets=("cold", "new", "warm-20", "all"))
    validate_config(ok)
    with pytest.raises(ConfigError, match="eval_subsets"):
        validate_config(TrainConfig(dataset="d", output_dir="o", eval_subsets=("cold", "warmish")))
