"""Running a grid: every kind of cell end to end, finished cells skipped, a killed cell resumed from
last/, changed cells refused until rerun, failures blocking only their dependents, and locks. Each cell
of the tiny grid (``tests/bench/tiny_grids.py``) trains in about a second."""

import json
import shutil

import numpy as np
import pytest

from tests.bench.test_lock import dead_pid, write_lock
from tests.bench.tiny_grids import CELLS, GRID, TEXT, pretrain_only, tiny_grid
from transrec.bench.runner import GridChangedError, cell_states, run_grid
from transrec.bench.shard import Shard
from transrec.data.prepared import PreparedDataset
from transrec.evaluation.model_eval import subset_masks
from transrec.evaluation.protocol import evaluate_scorer
from transrec.models.baselines import BASELINES
from transrec.training import trainer
from transrec.training.checkpoint import evaluate_checkpoint

REAL_TRAIN = trainer.train


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The whole tiny grid, run once: (its output directory, the summary)."""
    out = tmp_path_factory.mktemp("bench") / "tiny"
    return out, run_grid(tiny_grid(out), progress=False)


@pytest.fixture
def finished_copy(finished, tmp_path):
    """A copy of the finished grid's directory that a test may change."""
    out = tmp_path / "tiny"
    shutil.copytree(finished[0], out)
    return out


def recording_train(monkeypatch, fail=None, hook=None):
    """Replace the trainer's ``train`` by one that records each run's output_dir and resume mode, raises
    ``fail(config)`` when that returns an exception, and passes ``hook`` on."""
    calls = []

    def train(config, progress=True, hook_=None):
        calls.append((config.output_dir.split("tiny/")[-1], config.resume))
        error = fail(config) if fail else None
        if error is not None:
            raise error
        return REAL_TRAIN(config, progress=progress, hook=hook)

    monkeypatch.setattr(trainer, "train", train)
    return calls


def record(out, key):
    return json.loads((out / key / "cell.json").read_text())


def test_every_kind_of_cell_runs_and_leaves_the_trainers_files(finished):
    out, summary = finished
    grid = tiny_grid(out)
    assert [(c.key, c.outcome) for c in summary.cells] == [(key, "done") for key in CELLS] and summary.ok
    assert set(cell_states(grid).values()) == {"done"}
    for cell in grid.cells():
        data = record(out, cell.key)
        assert data["status"] == "done" and data["config_hash"] == grid.config_hash(cell)
        assert (data["stage"], data["kind"], data["labels"], data["depends_on"]) == (
            cell.stage, cell.kind, dict(cell.labels), cell.depends_on)  # fmt: skip
        ranks = np.load(out / cell.key / "test_ranks.npz")
        assert sorted(ranks.files) == ["ranks", "targets", "users"]
        assert {"HR@5", "NDCG@10"} <= set(json.loads((out / cell.key / "test_metrics.json").read_text()))
    # HasPT starts from the pre-training of its seed, NoPT from nothing.
    for seed in (0, 1):
        haspt = (out / f"finetune/transfer=HasPT,seed={seed}/config.yaml").read_text()
        assert f"init_checkpoint: {out}/pretrain/seed={seed}/best" in haspt
        assert (
            "init_checkpoint: null" in (out / f"finetune/transfer=NoPT,seed={seed}/config.yaml").read_text()
        )
        stamp = record(out, f"finetune/transfer=HasPT,seed={seed}")["dependency"]
        assert stamp["finished"] == record(out, f"pretrain/seed={seed}")["finished"]
    # Zero-shot: the pre-trained checkpoint applied to the target, as `transrec evaluate` computes it.
    target = record(out, "popularity/default")
    dataset = PreparedDataset(out / "datasets" / target["dataset"] / "data")
    zero_shot = evaluate_checkpoint(out / "pretrain/seed=1/best", dataset, "test", ks=(5, 10))
    assert json.loads((out / "zeroshot/seed=1/test_metrics.json").read_text()) == pytest.approx(zero_shot)
    popularity = evaluate_scorer(dataset, BASELINES.get("popularity")(dataset, 0), "test", ks=(5, 10))
    assert json.loads((out / "popularity/default/test_metrics.json").read_text()) == pytest.approx(popularity)
    ranks = np.load(out / "popularity/default/test_ranks.npz")
    assert len(ranks["users"]) == dataset.n_users and ranks["ranks"].min() >= 1


def test_running_a_finished_grid_again_trains_nothing(finished_copy, monkeypatch):
    best = finished_copy / "pretrain/seed=0/best/model.safetensors"
    before = best.stat().st_mtime_ns
    calls = recording_train(monkeypatch, fail=lambda config: AssertionError("a done cell was trained"))
    summary = run_grid(tiny_grid(finished_copy), progress=False)
    assert calls == [] and summary.ok
    assert {c.outcome for c in summary.cells} == {"skipped"}
    assert best.stat().st_mtime_ns == before


def test_a_changed_cell_is_refused_until_rerun_changed_runs_it_from_scratch(finished_copy, monkeypatch):
    stages = json.loads(json.dumps(GRID["stages"]))
    stages[1]["set"] = {**TEXT, "epochs": 1}  # finetune: one epoch instead of two
    grid = tiny_grid(finished_copy, stages=stages)
    changed = [key for key, state in cell_states(grid).items() if state == "changed"]
    assert changed == [key for key in CELLS if key.startswith("finetune/")]
    calls = recording_train(monkeypatch)
    with pytest.raises(GridChangedError, match=r"finetune/transfer=NoPT,seed=0.*--rerun changed"):
        run_grid(grid, progress=False)
    assert calls == []
    summary = run_grid(grid, rerun="changed", progress=False)
    assert summary.ok and calls == [(key, "never") for key in changed]
    assert set(cell_states(grid).values()) == {"done"}
    lines = (finished_copy / changed[0] / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1]


def test_a_rerun_dependency_makes_its_dependents_changed(finished_copy):
    grid = tiny_grid(finished_copy)
    summary = run_grid(grid, shard=Shard(0, 2), stages=["pretrain"], rerun="all", progress=False)
    assert [(c.key, c.outcome) for c in summary.cells] == [("pretrain/seed=0", "done")]
    states = cell_states(grid)
    assert states["finetune/transfer=HasPT,seed=0"] == states["zeroshot/seed=0"] == "changed"
    assert states["finetune/transfer=HasPT,seed=1"] == states["finetune/transfer=NoPT,seed=0"] == "done"


def test_a_killed_cell_resumes_from_last_and_ends_as_an_uninterrupted_one(finished, tmp_path, monkeypatch):
    out = tmp_path / "tiny"
    grid = pretrain_only(out, seeds=(0,))

    def kill_in_the_second_epoch(event, info):
        if event == "step" and info["epoch"] == 1:
            raise KeyboardInterrupt("killed")

    recording_train(monkeypatch, hook=kill_in_the_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_grid(grid, progress=False)
    assert record(out, "pretrain/seed=0")["status"] == "running"
    write_lock(out / "pretrain/seed=0", pid=dead_pid())  # as a SIGKILL leaves it
    assert cell_states(grid) == {"pretrain/seed=0": "resumable"}
    epochs = []
    calls = recording_train(monkeypatch, hook=lambda e, info: e == "step" and epochs.append(info["epoch"]))
    assert run_grid(grid, progress=False).ok
    assert calls == [("pretrain/seed=0", "auto")] and set(epochs) == {1}  # only the second epoch
    resumed = json.loads((out / "pretrain/seed=0/test_metrics.json").read_text())
    uninterrupted = json.loads((finished[0] / "pretrain/seed=0/test_metrics.json").read_text())
    assert resumed == pytest.approx(uninterrupted, abs=1e-6)


def test_a_failure_blocks_only_its_dependents_and_rerun_failed_retries_it(tmp_path, monkeypatch):
    out = tmp_path / "tiny"
    grid = tiny_grid(out, stages=[GRID["stages"][0], GRID["stages"][2]])  # pretrain and zeroshot
    failures = {
        "pretrain/seed=0": trainer.TrainingCollapsed("loss is nan"),
        "pretrain/seed=1": OSError("disk"),
    }
    calls = recording_train(
        monkeypatch, fail=lambda config: failures.get(config.output_dir.split("tiny/")[-1])
    )
    summary = run_grid(grid, progress=False)
    outcomes = {c.key: (c.outcome, c.error) for c in summary.cells}
    assert outcomes["pretrain/seed=0"] == ("collapsed", "loss is nan")
    assert outcomes["pretrain/seed=1"] == ("failed", "OSError: disk")
    assert outcomes["zeroshot/seed=0"][0] == outcomes["zeroshot/seed=1"][0] == "blocked"
    assert "pretrain/seed=1 is failed" in outcomes["zeroshot/seed=1"][1] and not summary.ok
    assert record(out, "pretrain/seed=1")["error"] == "OSError: disk"
    assert cell_states(grid)["zeroshot/seed=1"] == "blocked"

    failures.clear()
    calls.clear()
    assert not run_grid(grid, progress=False).ok and calls == []  # kept as they are
    summary = run_grid(grid, rerun="failed", progress=False)
    assert calls == [("pretrain/seed=1", "auto")]  # a collapse is an outcome: only --rerun all repeats it
    assert [c.outcome for c in summary.cells] == ["collapsed", "done", "blocked", "done"]


def test_a_live_lock_skips_its_cell_and_a_stale_one_is_taken_over(tmp_path, monkeypatch):
    out = tmp_path / "tiny"
    grid = pretrain_only(out, epochs=1)
    write_lock(out / "pretrain/seed=0", host="another-host.example", pid=1)
    write_lock(out / "pretrain/seed=1", pid=dead_pid())
    calls = recording_train(monkeypatch)
    assert cell_states(grid) == {"pretrain/seed=0": "running", "pretrain/seed=1": "pending"}
    summary = run_grid(grid, progress=False)
    assert [(c.key, c.outcome) for c in summary.cells] == [
        ("pretrain/seed=0", "locked"),
        ("pretrain/seed=1", "done"),
    ]
    assert "another-host.example" in summary.cells[0].error and calls == [("pretrain/seed=1", "auto")]
    assert not (out / "pretrain/seed=1/.lock").exists()  # released at the end
    # A lock taken between the look at the cell's state and the attempt to take it keeps the cell too.
    monkeypatch.setattr("transrec.bench.state.is_locked", lambda directory: None)
    summary = run_grid(grid, progress=False)
    assert [c.outcome for c in summary.cells] == ["locked", "skipped"] and len(calls) == 1


def test_evaluate_and_popularity_cells_keep_each_subsets_membership_as_the_trainer_does(tmp_path):
    pretrain, zeroshot, popularity = (json.loads(json.dumps(GRID["stages"][i])) for i in (0, 2, 3))
    pretrain["set"]["epochs"], pretrain["axes"], zeroshot["axes"] = 1, {"seed": [0]}, {"seed": [0]}
    base = {**GRID["base"], "eval_subsets": ["cold", "all"]}
    out = tmp_path / "tiny"
    assert run_grid(tiny_grid(out, base=base, stages=[pretrain, zeroshot, popularity]), progress=False).ok
    target = PreparedDataset(out / "datasets/target/data")
    masks = subset_masks(target, "test", ["cold", "all"])
    assert 0 < masks["cold"].sum() < target.n_users
    for key in ("zeroshot/seed=0", "popularity/default"):
        stored = np.load(out / key / "test_ranks.npz")
        assert sorted(stored.files) == ["ranks", "subset_all", "subset_cold", "targets", "users"]
        assert (stored["subset_cold"] == masks["cold"][stored["users"]]).all() and stored["subset_all"].all()
        metrics = json.loads((out / key / "test_metrics.json").read_text())
        assert metrics["cold/users"] == masks["cold"].sum() and "cold/NDCG@10" in metrics
    trained = np.load(out / "pretrain/seed=0/test_ranks.npz")  # the trainer's file has the same arrays
    assert sorted(trained.files) == ["ranks", "subset_all", "subset_cold", "targets", "users"]


def test_with_tracking_on_every_cell_logs_into_one_store_of_the_grid_named_by_its_key(tmp_path, monkeypatch):
    configs = []
    monkeypatch.setattr(trainer, "train", lambda config, **_: configs.append(config) or 1 / 0)
    for tracking, experiment in (("mlflow", {}), ("tensorboard", {}), ("wandb", {"experiment": "mine"})):
        base = {**GRID["base"], "tracking": tracking, "tracking_config": experiment}
        run_grid(tiny_grid(tmp_path / tracking, base=base, stages=[GRID["stages"][0]]), progress=False)
    names = [
        (c.tracking_config.dir, c.tracking_config.experiment, c.tracking_config.run_name) for c in configs
    ]
    expected = [
        (tmp_path / "mlflow", "tiny"),
        (tmp_path / "tensorboard", "transrec"),
        (tmp_path / "wandb", "mine"),
    ]
    assert names == [
        (str(out / "tracking"), name, f"pretrain/seed={s}") for out, name in expected for s in (0, 1)
    ]
