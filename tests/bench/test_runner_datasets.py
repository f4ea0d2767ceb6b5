"""A grid's named datasets: prepared once (under a lock, which others wait for), a changed spec refused
like a changed cell, already prepared folders used as they are, and the demo's two MovieLens platforms
prepared together."""

import threading
import time

import pytest

from tests.bench.tiny_grids import GRID, WORLD, pretrain_only
from transrec.bench import datasets
from transrec.bench.datasets import DatasetChangedError, dataset_state, prepare_dataset
from transrec.bench.runner import GridChangedError, cell_states, run_grid
from transrec.bench.spec import DatasetSpec
from transrec.bench.state import LOCK_FILE
from transrec.data.prepared import PreparedDataset
from transrec.errors import MissingPathError, UserError

SOURCE = DatasetSpec(builder="synthetic", part="source", options=WORLD)


def counting_builder(monkeypatch, builder="synthetic", delay=0.0):
    calls = []
    real = datasets.BUILDERS[builder]

    def build(*args):
        calls.append(args[0])
        time.sleep(delay)
        return real(*args)

    monkeypatch.setitem(datasets.BUILDERS, builder, build)
    return calls


def test_a_dataset_is_prepared_once_and_concurrent_callers_wait_for_it(tmp_path, monkeypatch):
    calls = counting_builder(monkeypatch, delay=0.5)
    paths = []
    other = threading.Thread(
        target=lambda: paths.append(prepare_dataset(tmp_path, "source", SOURCE, poll=0.05))
    )
    other.start()
    time.sleep(0.1)
    paths.append(prepare_dataset(tmp_path, "source", SOURCE, poll=0.05))
    other.join(timeout=60)
    assert len(calls) == 1 and paths[0] == paths[1] == tmp_path / "datasets/source/data"
    assert PreparedDataset(paths[0]).n_users > 0 and dataset_state(tmp_path, "source", SOURCE) == "prepared"
    assert prepare_dataset(tmp_path, "source", SOURCE) == paths[0] and len(calls) == 1
    assert not (tmp_path / "datasets/source" / LOCK_FILE).exists()


def test_a_changed_dataset_is_refused_until_rerun_changed_prepares_it_again(tmp_path, monkeypatch):
    grid = pretrain_only(tmp_path / "tiny", epochs=1, seeds=(0,))
    assert run_grid(grid, progress=False).ok
    before = PreparedDataset(tmp_path / "tiny/datasets/source/data").n_users
    smaller = {**GRID["datasets"], "source": {"builder": "synthetic", "part": "source",
                                              "options": {**WORLD, "source_users": 30}}}  # fmt: skip
    changed = pretrain_only(tmp_path / "tiny", epochs=1, seeds=(0,), datasets=smaller)
    assert dataset_state(tmp_path / "tiny", "source", changed.datasets["source"]) == "changed"
    with pytest.raises(DatasetChangedError, match="--rerun changed"):
        prepare_dataset(tmp_path / "tiny", "source", changed.datasets["source"])
    # The cells on it change with it (their config hash holds the spec); the grid names the dataset.
    assert cell_states(changed) == {"pretrain/seed=0": "changed"}
    with pytest.raises(GridChangedError, match="datasets source"):
        run_grid(changed, progress=False)
    calls = counting_builder(monkeypatch)
    assert run_grid(changed, rerun="changed", progress=False).ok and len(calls) == 1
    assert PreparedDataset(tmp_path / "tiny/datasets/source/data").n_users < min(before, 31)


def test_a_prepared_folder_is_used_as_it_is_and_a_missing_one_is_named(tmp_path):
    path = prepare_dataset(tmp_path, "source", SOURCE)
    spec = DatasetSpec(builder="prepared", path=str(path))
    assert prepare_dataset(tmp_path / "other", "mine", spec) == path
    assert not (tmp_path / "other").exists()
    with pytest.raises(MissingPathError, match=r"datasets\.gone\.path"):
        prepare_dataset(tmp_path, "gone", DatasetSpec(builder="prepared", path=str(tmp_path / "nowhere")))


def test_a_dataset_locked_elsewhere_past_the_wait_is_an_error_naming_the_holder(tmp_path):
    from tests.bench.test_lock import write_lock

    write_lock(tmp_path / "datasets/source", host="another-host.example", pid=1)
    with pytest.raises(UserError, match=r"still locked by pid 1 on another-host\.example"):
        prepare_dataset(tmp_path, "source", SOURCE, wait=0.2, poll=0.05)


def test_the_two_movielens_platforms_are_prepared_together_once(ml100k_root, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSREC_HOME", str(ml100k_root))
    options = {"users_per_platform": 40, "image_size": 32}
    source = DatasetSpec(builder="ml100k-platforms", part="source", options=options)
    target = DatasetSpec(builder="ml100k-platforms", part="target", new_items=0.1, options=options)
    from transrec.demo import pipeline

    prepared = []
    real = pipeline.prepare
    monkeypatch.setattr(
        pipeline,
        "prepare",
        lambda raw, config, out, **kw: prepared.append(out) or real(raw, config, out, **kw),
    )
    paths = [prepare_dataset(tmp_path, name, spec) for name, spec in (("source", source), ("target", target))]
    assert paths[0].parent == paths[1].parent and paths[0].parent.parent.parent.name.startswith(".ml100k")
    data = [PreparedDataset(p) for p in paths]
    assert data[0].n_users <= 40 and data[1].meta.get("new_items") and not data[0].meta.get("new_items")
    assert prepared == paths  # each part once: the target's dataset finds both parts ready
    assert not set(data[0].item_ids[1:]) & set(data[1].item_ids[1:])  # item 0 is the padding


def test_a_dataset_that_cannot_be_had_stops_the_grid_with_its_name_and_leaves_no_lock(tmp_path):
    missing = {**GRID["datasets"], "source": {"builder": "prepared", "path": str(tmp_path / "nowhere")}}
    grid = pretrain_only(tmp_path / "tiny", epochs=1, seeds=(0,), datasets=missing)
    with pytest.raises(MissingPathError, match=r"datasets\.source\.path"):
        run_grid(grid, progress=False)
    assert not (tmp_path / "tiny/pretrain/seed=0/.lock").exists()
    assert cell_states(grid) == {"pretrain/seed=0": "pending"}


def test_a_raw_dataset_is_read_by_its_loader_and_prepared_with_the_grids_settings(tmp_path):
    import shutil
    from pathlib import Path

    folder = tmp_path / "Bili_Mini"
    shutil.copytree(Path(__file__).resolve().parents[1] / "fixtures/ninerec/Bili_Mini", folder)
    spec = DatasetSpec(builder="raw", format="ninerec", path=str(folder), options={"on_bad_row": "skip"},
                       prepare={"user_k": 1, "item_k": 1, "modality": "text"})  # fmt: skip
    data = PreparedDataset(prepare_dataset(tmp_path / "out", "bili", spec, progress=False))
    assert data.meta["config"]["modality"] == "text" and data.meta["config"]["user_k"] == 1
    source = data.meta["source"]
    assert source["format"] == "ninerec" and source["options"] == {"on_bad_row": "skip"}
    assert data.n_users == 2 and data.path == tmp_path / "out/datasets/bili/data"
