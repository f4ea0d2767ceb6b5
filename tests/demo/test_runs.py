"""How the demo wires its runs through the bench runner: one source pre-training per seed and HasPT seed
s from source seed s, every cell resumable, the scarcity grid, what a collapsed or failed cell leaves,
and the new-item column on the users whose target is new.

Training and zero-shot evaluation are replaced by stand-ins that record each config and store ranks
chosen by the test, so the wiring from the grid's cells to the report is checked without training."""

import json
import time
from pathlib import Path

import numpy as np
import pytest

from tests.data.rawbuild import raw_dataset
from transrec.bench.runner import GridChangedError
from transrec.data.prepare import PrepareConfig, prepare
from transrec.demo.grid import scaled_patience
from transrec.demo.pipeline import DemoConfig
from transrec.demo.runs import SOURCE, DemoIncompleteError, cells, new_item_mask, run_all, stored_ranks
from transrec.demo.summary import summarise
from transrec.errors import UserError
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
    """Stands in for ``trainer.train`` under the bench runner: records the config, writes what a finished
    run leaves (metrics, result.json, best/, test ranks) and returns a result; a HasPT run's ranks are 1 +
    the seed of the source cell it starts from, every other run's 2 + its seed."""

    def __init__(self, collapse=(), fail=()):
        self.configs = []
        self.collapse, self.fail = collapse, fail  # cell keys that collapse, or fail

    def __call__(self, config, progress=True):
        self.configs.append(config)
        time.sleep(0.01)  # a run takes time: the stage wall times of a demo that trained are not 0
        out = Path(config.output_dir)
        key = f"{out.parent.name}/{out.name}"
        if key in self.collapse:
            raise TrainingCollapsed("validation NDCG@10 stayed at the level of a random ranking")
        if key in self.fail:
            raise RuntimeError("out of memory")
        (out / "best").mkdir(parents=True, exist_ok=True)
        (out / "best" / "config.json").write_text("{}")
        (out / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "valid_NDCG@10": 0.1 * e}) + "\n"
                                                   for e in range(1, 6)))  # fmt: skip
        n_users = len(np.load(Path(config.dataset) / "seq_offsets.npy")) - 1
        rank = 1 + _seed_of(config.init_checkpoint) if config.init_checkpoint else 2 + config.seed
        # Stored in reverse user order: the demo must put each rank back with its user.
        users = np.arange(n_users)[::-1]
        np.savez(out / TEST_RANKS_FILE, users=users, targets=np.ones(n_users, dtype=np.int64),
                 ranks=np.full(n_users, rank) + (users == 0))  # fmt: skip
        # Best epoch 2, then `patience` epochs without a better one: early stopping ended it.
        result = RunResult("finished", 2, {"NDCG@10": 0.2}, {"NDCG@10": 0.3}, 2 + config.patience, 1.5, out)
        (out / "result.json").write_text(json.dumps({
            "status": "finished", "best_epoch": 2, "best_valid": {"NDCG@10": 0.2}, "test": {"NDCG@10": 0.3},
            "epochs_run": 2 + config.patience, "seconds": 1.5}))  # fmt: skip
        return result


def _seed_of(checkpoint) -> int:
    """The seed of the source cell whose best/ ``checkpoint`` is (``source/seed=<s>/best``)."""
    assert Path(checkpoint).parent.parent.name == "source", checkpoint
    return int(Path(checkpoint).parent.name.removeprefix("seed="))


def fake_evaluate(config, checkpoint):
    """Zero-shot: ranks 10 + the seed of the source applied, for every user."""
    n_users = len(np.load(Path(config.dataset) / "seq_offsets.npy")) - 1
    ranks = np.full(n_users, 10 + _seed_of(checkpoint))
    np.savez(Path(config.output_dir) / TEST_RANKS_FILE, users=np.arange(n_users),
             targets=np.ones(n_users, dtype=np.int64), ranks=ranks)  # fmt: skip
    return {"checkpoint": str(checkpoint)}


def run_fake(platforms, tmp_path, monkeypatch, collapse=(), fail=(), target=None, **overrides):
    """``run_all`` through the real bench runner, with training and zero-shot evaluation replaced and
    the grid's datasets being the test's platforms."""
    source, target = platforms[0], target or platforms[1]
    fake = FakeTrain(collapse, fail)
    monkeypatch.setattr("transrec.training.trainer.train", fake)
    monkeypatch.setattr("transrec.bench.runner.run_evaluate_cell", fake_evaluate)
    paths = {"source": source.path, "target": target.path}
    monkeypatch.setattr("transrec.bench.runner.prepare_dataset", lambda out, name, spec, **kw: paths[name])
    options = {"methods": ("Popularity", "IDRec", "NoPT", "HasPT", "Zero-shot"), **overrides}
    config = DemoConfig(output_dir=str(tmp_path / "demo"), **options)
    return fake, config, run_all(source, target, config, progress=False)


def test_each_seed_pretrains_its_own_source_and_haspt_seed_s_starts_from_it(platforms, tmp_path, monkeypatch):
    fake, config, demo = run_fake(platforms, tmp_path, monkeypatch, seeds=(0, 1, 2), scarcity_seeds=(1, 2))
    out = Path(config.output_dir)
    sources = {c.seed: c for c in fake.configs if Path(c.output_dir).parent.name == "source"}
    assert sorted(sources) == [0, 1, 2]
    for seed, source in sources.items():
        assert Path(source.output_dir) == out / "source" / f"seed={seed}" and source.init_checkpoint is None
        assert source.dataset == str(platforms[0].path)
    haspt = [c for c in fake.configs if "method=HasPT" in Path(c.output_dir).name]
    # 3 seeds on all users, and seeds 1 and 2 at 10% and 30% (their 100% runs are the main table's).
    assert sorted((c.seed, c.user_fraction) for c in haspt) == [
        (0, 1.0), (1, 0.1), (1, 0.3), (1, 1.0), (2, 0.1), (2, 0.3), (2, 1.0)]  # fmt: skip
    for run in haspt:
        assert run.init_checkpoint == str(out / "source" / f"seed={run.seed}" / "best"), run.output_dir
        assert run.dataset == str(platforms[1].path)
    # What each run reports comes from its own cell: HasPT 1 + its source's seed, NoPT 2 + its seed, and
    # zero-shot 10 + the seed of the source it applied; user 0 (stored last) one rank lower.
    ranks = {(r.method, r.fraction, r.seed): r.ranks.tolist() for r in demo.runs if r.ranks is not None}
    assert {s: ranks[("HasPT", 1.0, s)] for s in (0, 1, 2)} == {0: [2, 1, 1, 1], 1: [3, 2, 2, 2],
                                                                 2: [4, 3, 3, 3]}  # fmt: skip
    assert ranks[("NoPT", 0.3, 2)] == [5, 4, 4, 4] and ranks[("IDRec", 0.1, 1)] == [4, 3, 3, 3]
    assert [ranks[("Zero-shot", 1.0, s)][0] for s in (0, 1, 2)] == [10, 11, 12]
    assert ("Popularity", 1.0, 0) in ranks  # ranked for real by the runner
    # The report's order: sources, then the methods on all users in DemoConfig order, then the grid.
    order = [(r.method, r.fraction, r.seed) for r in demo.runs]
    assert order[:9] == [(SOURCE, 1.0, s) for s in (0, 1, 2)] + [("Popularity", 1.0, 0)] + [
        ("IDRec", 1.0, s) for s in (0, 1, 2)] + [("NoPT", 1.0, 0), ("NoPT", 1.0, 1)]  # fmt: skip
    assert len(order) == 3 + 1 + 3 * 3 + 3 + 3 * 2 * 2


def test_a_second_demo_trains_nothing(platforms, tmp_path, monkeypatch):
    _, _, first = run_fake(platforms, tmp_path, monkeypatch, seeds=(0, 1), fractions=(1.0,))
    fake, _, again = run_fake(platforms, tmp_path, monkeypatch, seeds=(0, 1), fractions=(1.0,))
    assert fake.configs == [] and again.stage_seconds == dict.fromkeys(again.stage_seconds, 0.0)

    def seen(runs):
        return [(r.method, r.seed, None if r.ranks is None else r.ranks.tolist()) for r in runs]

    assert seen(again.runs) == seen(first.runs)
    assert first.stage_seconds["source pre-training"] > 0.0


def test_a_demo_with_other_options_is_refused_before_anything_runs_unless_rerun(platforms, tmp_path,
                                                                                monkeypatch):  # fmt: skip
    run_fake(platforms, tmp_path, monkeypatch, seeds=(0,), fractions=(1.0,))
    refused = r"ran target/method=IDRec,user_fraction=1\.0,seed=0, .* with other options.*--rerun changed"
    with pytest.raises(GridChangedError, match=refused):
        run_fake(platforms, tmp_path, monkeypatch, seeds=(0,), fractions=(1.0,), epochs=5)
    fake = FakeTrain()
    monkeypatch.setattr("transrec.training.trainer.train", fake)
    config = DemoConfig(output_dir=str(tmp_path / "demo"), seeds=(0,), fractions=(1.0,), epochs=5,
                        methods=("Popularity", "IDRec", "NoPT", "HasPT", "Zero-shot"))  # fmt: skip
    run_all(*platforms, config, progress=False, rerun="changed")
    # The target's 3 methods again; the source keeps its own epoch cap (source_epochs) and is not rerun.
    assert {c.epochs for c in fake.configs} == {5} and len(fake.configs) == 3


def test_the_summary_counts_runs_stopped_by_patience_and_pairs_the_seeds(platforms, tmp_path, monkeypatch):
    fake, config, demo = run_fake(platforms, tmp_path, monkeypatch, seeds=(0, 1), fractions=(0.5, 1.0),
                                  batch_size=2)  # fmt: skip
    # 4 target users, 2 a batch: 2 steps an epoch on all of them, 1 on half: patience 3, then 6 epochs.
    patience = {Path(c.output_dir).name: c.patience for c in fake.configs}
    assert patience["method=NoPT,user_fraction=1.0,seed=0"] == 3
    assert patience["method=NoPT,user_fraction=0.5,seed=0"] == 6
    summary = summarise(demo, config)
    stops = summary["stops"]
    # 2 sources + 3 methods x 2 seeds on all users + 3 methods x 2 seeds at 50%.
    assert (stops["runs"], stops["patience"], stops["cap"]) == (14, 14, 0)
    assert summary["methods"]["HasPT"]["seeds"] == [0, 1]
    assert summary["methods"]["HasPT"]["epochs_run"] == [5, 5]  # best epoch 2 + patience 3
    curves = summary["methods"]["HasPT"]["valid_ndcg10_per_epoch"]
    assert curves[0] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert summary["source"]["test_ndcg10"] == [0.3, 0.3] and summary["source"]["seconds"] == [1.5, 1.5]
    tests = {(c["a"], c["b"], c["users"], c["fraction"]): c for c in summary["significance"]}
    assert set(tests) == {("HasPT", "NoPT", "all", 1.0), ("IDRec", "HasPT", "all", 1.0),
                          ("HasPT", "IDRec", "new", 1.0), ("HasPT", "NoPT", "all", 0.5)}  # fmt: skip
    haspt_nopt = tests[("HasPT", "NoPT", "all", 1.0)]
    # Seed s: HasPT rank 1 + s, NoPT rank 2 + s (user 0 one lower in both), so NDCG@10 1/log2(2 + s) -
    # 1/log2(3 + s) for users 1-3, and 1/log2(3 + s) - 1/log2(4 + s) for user 0.
    gain = lambda r: 1 / np.log2(1 + r)  # noqa: E731
    expected = np.mean([[gain(1 + s + (u == 0)) - gain(2 + s + (u == 0)) for u in range(4)] for s in (0, 1)])
    assert haspt_nopt["seeds"] == [0, 1] and haspt_nopt["difference"] == pytest.approx(expected)
    assert haspt_nopt["n_users"] == platforms[1].n_users
    assert tests[("HasPT", "IDRec", "new", 1.0)]["n_users"] == 2
    assert len(fake.configs) == 14


def test_a_collapsed_source_leaves_its_haspt_and_zero_shot_missing(platforms, tmp_path, monkeypatch):
    fake, config, demo = run_fake(platforms, tmp_path, monkeypatch, collapse=("source/seed=1",), seeds=(0, 1),
                                  fractions=(1.0,))  # fmt: skip
    names = [Path(c.output_dir).name for c in fake.configs]
    assert {"method=HasPT,user_fraction=1.0,seed=0", "method=NoPT,user_fraction=1.0,seed=1"} <= set(names)
    assert "method=HasPT,user_fraction=1.0,seed=1" not in names  # blocked by the runner, not trained
    summary = summarise(demo, config)
    assert summary["stops"]["collapsed"] == 1 and summary["source"]["test_ndcg10"][1] is None
    assert summary["methods"]["HasPT"]["per_seed"][1]["NDCG@10"] is None  # shown as missing
    assert summary["methods"]["Zero-shot"]["per_seed"][1]["NDCG@10"] is None
    assert summary["methods"]["Zero-shot"]["per_seed"][0]["NDCG@10"] == pytest.approx(1 / np.log2(11))
    haspt_nopt = next(c for c in summary["significance"] if (c["a"], c["b"]) == ("HasPT", "NoPT"))
    assert haspt_nopt["seeds"] == [0]  # only the seeds both methods have are paired


def test_a_failed_cell_stops_the_demo_naming_it_and_the_others_still_run(platforms, tmp_path, monkeypatch):
    with pytest.raises(DemoIncompleteError, match=r"target/method=NoPT,user_fraction=1\.0,seed=0 failed "
                       r"\(RuntimeError: out of memory\).*--rerun failed"):  # fmt: skip
        run_fake(platforms, tmp_path, monkeypatch, fail=("target/method=NoPT,user_fraction=1.0,seed=0",),
                 seeds=(0,), fractions=(1.0,))  # fmt: skip
    done = json.loads((tmp_path / "demo/target/method=HasPT,user_fraction=1.0,seed=0/cell.json").read_text())
    assert done["status"] == "done"


def test_a_target_without_new_items_leaves_the_new_item_column_empty(platforms, tmp_path, monkeypatch):
    methods = ("IDRec", "NoPT", "HasPT")
    _, config, demo = run_fake(platforms, tmp_path, monkeypatch, target=platforms[0], seeds=(0, 1),
                               fractions=(1.0,), new_items=0.0, methods=methods)  # fmt: skip
    summary = summarise(demo, config)
    assert summary["users"]["new"] == 0 and summary["methods"]["HasPT"]["mean"]["new/NDCG@10"] is None
    assert [c["users"] for c in summary["significance"]] == ["all", "all"]  # no new-item test
    empty = "No test user has a new item as its target: the new-item column is empty."
    assert empty in summary["conclusions"]


def test_stored_ranks_of_another_dataset_are_refused(tmp_path):
    np.savez(tmp_path / TEST_RANKS_FILE, users=np.arange(3), targets=np.ones(3), ranks=np.ones(3))
    with pytest.raises(UserError, match="ranks 3 test users, not the 4 of the target platform"):
        stored_ranks(tmp_path, 4)


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
