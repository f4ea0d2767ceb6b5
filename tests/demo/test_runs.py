"""How the demo wires its runs: one source pre-training per seed and HasPT seed s from source seed s,
every run resumable, the scarcity grid, and the new-item column on the users whose target is new.

Training is replaced by a stand-in that records each config and stores ranks chosen by the test, so the
wiring is checked without training anything."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.data.rawbuild import raw_dataset
from transrec.data.prepare import PrepareConfig, prepare
from transrec.demo.pipeline import DemoConfig
from transrec.demo.runs import cells, new_item_mask, run_all, scaled_patience
from transrec.demo.summary import summarise
from transrec.evaluation.model_eval import subset_masks
from transrec.training.trainer import TEST_RANKS_FILE, RunResult, TrainingCollapsed

# Items first seen latest: 7 and 8 (new with new_items=0.25); test targets [4, 8, 8, 2]: users 1 and 2
# (u2, u3) have a new item as their target (tests/data/test_new_items.py builds the same log).
LOG = {
    "u1": [(1, 1), (2, 2), (3, 3), (7, 30), (4, 31)],
    "u2": [(2, 4), (1, 5), (5, 6), (8, 40)],
    "u3": [(3, 7), (6, 8), (7, 41), (1, 42), (2, 43), (8, 44)],
    "u4": [(4, 9), (7, 35), (8, 45)],
    "u5": [(5, 10), (6, 11), (4, 12), (2, 13)],
}


@pytest.fixture(scope="module")
def platforms(tmp_path_factory):
    root = tmp_path_factory.mktemp("platforms")
    rows = [(user, str(item), float(t)) for user, events in LOG.items() for item, t in events]
    raw = raw_dataset(rows, {str(i): (f"item number {i}", None) for i in range(1, 9)})
    config = PrepareConfig(user_k=1, item_k=1, tokenizer="hash")
    source = prepare(raw, config, root / "source", progress=False)
    with_new = PrepareConfig(user_k=1, item_k=1, tokenizer="hash", new_items=0.25)
    target = prepare(raw, with_new, root / "target", progress=False)
    return source, target


class FakeTrain:
    """Stands in for ``trainer.train``: records the config, writes what a finished run leaves (metrics,
    best/, test ranks) and returns a result; a HasPT run's ranks are 1 + the seed of the source it loads."""

    def __init__(self, collapse=()):
        self.configs = []
        self.collapse = collapse  # run directory names that collapse

    def __call__(self, config, progress=True):
        self.configs.append(config)
        out = Path(config.output_dir)
        if out.name in self.collapse:
            raise TrainingCollapsed("validation NDCG@10 stayed at the level of a random ranking")
        (out / "best").mkdir(parents=True, exist_ok=True)
        (out / "best" / "config.json").write_text("{}")
        (out / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "valid_NDCG@10": 0.1 * e}) + "\n"
                                                   for e in range(1, 6)))  # fmt: skip
        n_users = len(np.load(Path(config.dataset) / "seq_offsets.npy")) - 1
        rank = 1 + int(Path(config.init_checkpoint).parent.name.removeprefix("source-seed")) \
            if config.init_checkpoint else 2 + config.seed  # fmt: skip
        np.savez(out / TEST_RANKS_FILE, users=np.arange(n_users), targets=np.ones(n_users, dtype=np.int64),
                 ranks=np.full(n_users, rank))  # fmt: skip
        # Best epoch 2, then `patience` epochs without a better one: early stopping ended it.
        return RunResult("finished", 2, {"NDCG@10": 0.2}, {"NDCG@10": 0.3}, 2 + config.patience, 1.0, out)


def run_fake(platforms, tmp_path, monkeypatch, collapse=(), **overrides):
    fake = FakeTrain(collapse)
    monkeypatch.setattr("transrec.demo.runs.train", fake)
    config = DemoConfig(output_dir=str(tmp_path / "demo"), methods=("Popularity", "IDRec", "NoPT", "HasPT"),
                        **overrides)  # fmt: skip
    return fake, config, run_all(*platforms, config, progress=False)


def test_each_seed_pretrains_its_own_source_and_haspt_seed_s_starts_from_it(platforms, tmp_path, monkeypatch):
    fake, config, demo = run_fake(platforms, tmp_path, monkeypatch, seeds=(0, 1, 2), scarcity_seeds=(1, 2))
    out = Path(config.output_dir)
    sources = {c.seed: c for c in fake.configs if Path(c.output_dir).name.startswith("source")}
    assert sorted(sources) == [0, 1, 2]
    for seed, source in sources.items():
        assert Path(source.output_dir) == out / f"source-seed{seed}" and source.init_checkpoint is None
        assert source.dataset == str(platforms[0].path)
    haspt = [c for c in fake.configs if Path(c.output_dir).name.startswith("HasPT")]
    # 3 seeds on all users, and seeds 1 and 2 at 10% and 30% (their 100% runs are the main table's).
    assert sorted((c.seed, c.user_fraction) for c in haspt) == [
        (0, 1.0), (1, 0.1), (1, 0.3), (1, 1.0), (2, 0.1), (2, 0.3), (2, 1.0)]  # fmt: skip
    for run in haspt:
        assert run.init_checkpoint == str(out / f"source-seed{run.seed}" / "best"), run.output_dir
        assert run.dataset == str(platforms[1].path)
    assert all(c.resume == "auto" for c in fake.configs)  # an interrupted demo continues its runs
    # What HasPT reports comes from its own seed's source (rank 1 + source seed, by the stand-in).
    ranks = {r.seed: r.ranks[0] for r in demo.runs if r.method == "HasPT" and r.fraction == 1.0}
    assert ranks == {0: 1, 1: 2, 2: 3}


def test_the_summary_counts_runs_stopped_by_patience_and_pairs_the_seeds(platforms, tmp_path, monkeypatch):
    fake, config, demo = run_fake(platforms, tmp_path, monkeypatch, seeds=(0, 1), fractions=(0.5, 1.0),
                                  batch_size=2)  # fmt: skip
    # 4 target users, 2 a batch: 2 steps an epoch on all of them, 1 on half: patience 3, then 6 epochs.
    patience = {Path(c.output_dir).name: c.patience for c in fake.configs}
    assert patience["NoPT-seed0"] == 3 and patience["NoPT-users0.5-seed0"] == 6
    summary = summarise(demo, config)
    stops = summary["stops"]
    # 2 sources + 3 methods x 2 seeds on all users + 3 methods x 2 seeds at 50%.
    assert (stops["runs"], stops["patience"], stops["cap"]) == (14, 14, 0)
    assert summary["methods"]["HasPT"]["seeds"] == [0, 1]
    assert summary["methods"]["HasPT"]["epochs_run"] == [5, 5]  # best epoch 2 + patience 3
    tests = {(c["a"], c["b"], c["users"], c["fraction"]): c for c in summary["significance"]}
    assert set(tests) == {("HasPT", "NoPT", "all", 1.0), ("IDRec", "HasPT", "all", 1.0),
                          ("HasPT", "IDRec", "new", 1.0), ("HasPT", "NoPT", "all", 0.5)}  # fmt: skip
    haspt_nopt = tests[("HasPT", "NoPT", "all", 1.0)]
    # Seed s: HasPT rank 1 + s, NoPT rank 2 + s, so NDCG@10 1/log2(2 + s) - 1/log2(3 + s) for every user.
    expected = np.mean([1 / np.log2(2 + s) - 1 / np.log2(3 + s) for s in (0, 1)])
    assert haspt_nopt["seeds"] == [0, 1] and haspt_nopt["difference"] == pytest.approx(expected)
    assert haspt_nopt["n_users"] == platforms[1].n_users
    assert tests[("HasPT", "IDRec", "new", 1.0)]["n_users"] == 2
    assert len(fake.configs) == 14


def test_a_collapsed_source_leaves_its_haspt_seed_missing_and_the_rest_runs(platforms, tmp_path, monkeypatch):
    fake, config, demo = run_fake(platforms, tmp_path, monkeypatch, collapse=("source-seed1",), seeds=(0, 1),
                                  fractions=(1.0,))  # fmt: skip
    names = [Path(c.output_dir).name for c in fake.configs]
    assert "HasPT-seed0" in names and "HasPT-seed1" not in names and "NoPT-seed1" in names
    summary = summarise(demo, config)
    assert summary["stops"]["collapsed"] == 1 and summary["source"]["test_ndcg10"][1] is None
    assert summary["methods"]["HasPT"]["per_seed"][1]["NDCG@10"] is None  # shown as missing
    haspt_nopt = next(c for c in summary["significance"] if (c["a"], c["b"]) == ("HasPT", "NoPT"))
    assert haspt_nopt["seeds"] == [0]  # only the seeds both methods have are paired


def test_a_target_without_new_items_leaves_the_new_item_column_empty(platforms, tmp_path, monkeypatch):
    monkeypatch.setattr("transrec.demo.runs.train", FakeTrain())
    config = DemoConfig(output_dir=str(tmp_path / "demo"), methods=("IDRec", "NoPT", "HasPT"), seeds=(0, 1),
                        fractions=(1.0,), new_items=0.0)  # fmt: skip
    summary = summarise(run_all(platforms[0], platforms[0], config, progress=False), config)
    assert summary["users"]["new"] == 0 and summary["methods"]["HasPT"]["mean"]["new/NDCG@10"] is None
    assert [c["users"] for c in summary["significance"]] == ["all", "all"]  # no new-item test
    empty = "No test user has a new item as its target: the new-item column is empty."
    assert empty in summary["conclusions"]


def test_patience_counts_the_same_steps_at_every_fraction():
    # 471 users, 128 a batch: 4 steps an epoch on all, 2 on 30% (141 users), 1 on 10% (47 users).
    assert [scaled_patience(3, 471, 128, f) for f in (1.0, 0.3, 0.1)] == [3, 6, 12]
    assert scaled_patience(3, 40, 128, 0.5) == 3  # one step an epoch either way
    assert scaled_patience(2, 1000, 100, 0.25) == 7  # 2 x 10 steps, at 3 steps an epoch


def test_the_new_item_users_are_those_whose_test_target_is_new(platforms):
    target = platforms[1]
    mask = new_item_mask(target)
    assert mask.tolist() == [False, True, True, False]  # targets 4, 8, 8, 2; items 7 and 8 are new
    assert np.array_equal(mask, subset_masks(target, "test", ["new"])["new"])
    assert mask.sum() == json.loads((target.path / "meta.json").read_text())["new_items"]["test_users"]
    assert not new_item_mask(platforms[0]).any()  # the source was prepared without new items


def test_cells_over_all_users_and_over_the_new_item_users():
    ranks = np.array([1, 3, 50, 1])
    new = np.array([False, True, True, False])
    got = cells(ranks, new)
    assert got["HR@10"] == pytest.approx(0.75)
    assert got["NDCG@10"] == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert got["new/HR@10"] == pytest.approx(0.5) and got["new/NDCG@10"] == pytest.approx(0.25)
    assert cells(ranks, np.zeros(4, dtype=bool))["new/NDCG@10"] is None  # no new-item user: no value
    assert cells(None, new) == dict.fromkeys(got)  # a collapsed run: every cell missing
