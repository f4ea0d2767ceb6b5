"""Every finished run stores its test users' ranks (``test_ranks.npz``), and they are the test metrics."""

import numpy as np
import pytest

from transrec.data.prepare import PrepareConfig, prepare
from transrec.data.synthetic import SyntheticWorldConfig, make_world
from transrec.evaluation.protocol import stage_histories
from transrec.evaluation.significance import hit_per_user, ndcg_per_user
from transrec.models.recommender import ModelConfig
from transrec.training.config import OptimConfig, TrainConfig
from transrec.training.trainer import TEST_RANKS_FILE, train


def test_the_stored_ranks_give_the_test_metrics_and_survive_a_finished_resume(tmp_path):
    world = make_world(SyntheticWorldConfig.tiny(seed=0))
    config = PrepareConfig(user_k=3, item_k=3, image_size=16, image_format="raw", max_text_tokens=12)
    dataset = prepare(world.source, config, tmp_path / "data", progress=False)
    model = ModelConfig(d_model=16, max_len=8, item_encoder="id", user_encoder="sasrec",
                        user_encoder_config={"n_layers": 1, "n_heads": 2})  # fmt: skip
    run = TrainConfig(dataset=str(dataset.path), output_dir=str(tmp_path / "run"), model=model, epochs=2,
                      batch_size=16, seed=1, device="cpu", collapse_factor=0.0, eval_subsets=("cold",),
                      optim=OptimConfig(lr=3e-3))  # fmt: skip
    result = train(run, progress=False)
    stored = np.load(tmp_path / "run" / TEST_RANKS_FILE)
    assert stored["users"].tolist() == list(range(dataset.n_users))
    assert np.array_equal(stored["targets"], stage_histories(dataset, "test")[1])
    assert ndcg_per_user(stored["ranks"], 10).mean() == pytest.approx(result.test["NDCG@10"])
    assert hit_per_user(stored["ranks"], 20).mean() == pytest.approx(result.test["HR@20"])
    # Each eval subset's membership is stored beside the ranks (paired tests on a subset's metric need it).
    cold = stored["subset_cold"]
    assert cold.dtype == bool and int(cold.sum()) == result.test["cold/users"] > 0
    assert ndcg_per_user(stored["ranks"][cold], 10).mean() == pytest.approx(result.test["cold/NDCG@10"])
    # A finished run is returned as stored, its ranks untouched.
    again = train(run, progress=False)
    assert again.test == result.test and (tmp_path / "run" / TEST_RANKS_FILE).is_file()
