"""Experiment tracking (issue 13, item 5): a tiny run tracked with each file-based backend, read back with
the backend's own reader and compared with what the run directory holds (``config.yaml``, every row of
``metrics.jsonl``, ``test_metrics.json``); a killed run resumed into the same tracked run with every epoch
once; the final status; a missing package refused before anything is read; only rank 0 logging."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
import yaml

from transrec.data.prepare import PrepareConfig, prepare
from transrec.data.synthetic import SyntheticWorldConfig, make_world
from transrec.models.recommender import ModelConfig
from transrec.training import tracking as tracking_module
from transrec.training.config import OptimConfig, TrainConfig
from transrec.training.tracking import TRACKING_STATE_FILE, RunTracking, TrackingConfig
from transrec.training.trainer import TrainingCollapsed, train
from transrec.utils.packages import MissingPackageError

BACKENDS = ("tensorboard", "mlflow", "wandb")


def require(backend: str) -> None:
    """Skip (with the install command) where the backend's extra is not installed."""
    pytest.importorskip(
        backend, reason=f"tracking: {backend} needs `pip install 'transrec[tracking-{backend}]'`"
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    world = make_world(SyntheticWorldConfig.tiny(seed=0))
    config = PrepareConfig(user_k=3, item_k=3, image_size=16, image_format="raw", max_text_tokens=12)
    return prepare(world.source, config, tmp_path_factory.mktemp("world") / "source", progress=False)


def run_config(dataset, out: Path, backend: str, **overrides) -> TrainConfig:
    model = ModelConfig(d_model=16, max_len=8, item_encoder="id", user_encoder="sasrec",
                        user_encoder_config={"n_layers": 1, "n_heads": 2})  # fmt: skip
    base = {"dataset": str(dataset.path), "output_dir": str(out), "model": model, "epochs": 3,
            "batch_size": 16, "patience": 10, "seed": 1, "device": "cpu", "collapse_factor": 0.0,
            "optim": OptimConfig(lr=3e-3), "tracking": backend}  # fmt: skip
    base.update(overrides)
    return TrainConfig(**base)


def kill_after_epoch(n: int):
    """A ``train`` hook that interrupts the run once epoch ``n`` is checkpointed (and tracked)."""

    def hook(event, info):
        if event == "epoch" and info["epoch"] == n:
            raise KeyboardInterrupt(f"killed after epoch {n}")

    return hook


# -- what the run directory says should have been logged -----------------------------------------------


def expected_epochs(out: Path) -> dict[str, list[tuple[int, float]]]:
    """Tracked name -> [(epoch, value)] from ``metrics.jsonl``: ``loss`` is ``train/loss``, ``valid_X`` is
    ``valid/X``."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    series: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for key, value in row.items():
            if key == "loss":
                series.setdefault("train/loss", []).append((row["epoch"], value))
            elif key.startswith("valid_"):
                series.setdefault("valid/" + key[len("valid_") :], []).append((row["epoch"], value))
    return series


def expected_test(out: Path) -> dict[str, float]:
    return {f"test/{k}": v for k, v in json.loads((out / "test_metrics.json").read_text()).items()}


def config_leaves(data: dict, prefix: str = "") -> dict:
    """The leaves of ``config.yaml`` as dotted keys (empty dicts and lists are leaves)."""
    leaves = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            leaves.update(config_leaves(value, f"{prefix}{key}."))
        else:
            leaves[prefix + key] = value
    return leaves


def saved_config(out: Path) -> dict:
    return yaml.safe_load((out / "config.yaml").read_text())


# -- reading each backend back with its own reader -----------------------------------------------------


def tensorboard_run(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()  # applies the purges a resumed session asked for, as TensorBoard shows them
    return accumulator


def tensorboard_scalars(accumulator) -> dict[str, list[tuple[int, float]]]:
    return {t: [(e.step, e.value) for e in accumulator.Scalars(t)] for t in accumulator.Tags()["scalars"]}


def tensorboard_hparams(accumulator) -> tuple[dict, int | None]:
    """(the HParams of the session start, the session end's status or None without one)."""
    from tensorboard.plugins.hparams import metadata

    start = metadata.parse_session_start_info_plugin_data(
        accumulator.SummaryMetadata(metadata.SESSION_START_INFO_TAG).plugin_data.content
    )
    values = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    try:
        content = accumulator.SummaryMetadata(metadata.SESSION_END_INFO_TAG).plugin_data.content
    except KeyError:
        return values, None
    return values, metadata.parse_session_end_info_plugin_data(content).status


def tensorboard_statuses(accumulator) -> list[str]:
    return [e.tensor_proto.string_val[0].decode() for e in accumulator.Tensors("status/text_summary")]


def mlflow_runs(out: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(out / "tracking" / "mlruns").resolve().as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "transrec"]
    return client, client.search_runs([experiment.experiment_id])


def wandb_records(out: Path) -> list[tuple[str, list]]:
    """Every record of every offline session under ``out/tracking/wandb``, in session order, as
    (session folder, [protobuf records]); read from the ``.wandb`` transaction log (a LevelDB-style log
    of 32 KiB blocks after a 7-byte header, each chunk a CRC, a length and a type: full/first/middle/last)."""
    from wandb.proto import wandb_internal_pb2

    sessions = []
    for folder in sorted((out / "tracking" / "wandb").glob("offline-run-*")):
        (log,) = folder.glob("run-*.wandb")
        data, position, block, pending, records = log.read_bytes(), 7, 32768, b"", []
        assert data[:4] == b":W&B"
        while position + 7 <= len(data):
            if block - position % block < 7:  # a block's tail too short for a chunk header is padding
                position += block - position % block
                continue
            _, length, kind = struct.unpack("<IHB", data[position : position + 7])
            if kind == 0 and length == 0:
                break
            pending += data[position + 7 : position + 7 + length]
            position += 7 + length
            if kind in (1, 4):  # a full record, or the last chunk of one
                record = wandb_internal_pb2.Record()
                record.ParseFromString(pending)
                records.append(record)
                pending = b""
        sessions.append((folder.name, records))
    return sessions


def wandb_items(items) -> dict:
    return {".".join(item.nested_key) or item.key: json.loads(item.value_json) for item in items}


# -- each backend, killed and resumed, read back ---------------------------------------------------------


def _killed_then_resumed(dataset, out: Path, backend: str) -> None:
    with pytest.raises(KeyboardInterrupt):
        train(run_config(dataset, out, backend), progress=False, hook=kill_after_epoch(2))
    assert json.loads((out / TRACKING_STATE_FILE).read_text())["epochs_logged"] == 2


def test_tensorboard_holds_the_config_every_epoch_once_the_test_metrics_and_the_status(dataset, tmp_path):
    require("tensorboard")
    out = tmp_path / "run"
    _killed_then_resumed(dataset, out, "tensorboard")
    killed = tensorboard_run(out / "tracking" / "run")
    assert tensorboard_statuses(killed) == ["killed"]
    assert tensorboard_hparams(killed)[1] is None  # HParams keeps the first end: only a run's last is written
    train(run_config(dataset, out, "tensorboard"), progress=False)

    (log_dir,) = (out / "tracking").iterdir()  # one log dir, named after the run directory
    assert log_dir.name == "run"
    run = tensorboard_run(log_dir)
    scalars = tensorboard_scalars(run)
    wanted = expected_epochs(out)
    for name, series in wanted.items():  # every epoch once, at step = epoch, the value of metrics.jsonl
        assert [step for step, _ in scalars[name]] == [step for step, _ in series] == [1, 2, 3], name
        assert [v for _, v in scalars[name]] == pytest.approx([v for _, v in series], rel=1e-6), name
    for name, value in expected_test(out).items():
        assert scalars[name] == [(3, pytest.approx(value, rel=1e-6))], name
    assert set(scalars) == set(wanted) | set(expected_test(out))
    from tensorboard.plugins.hparams import api_pb2

    params, status = tensorboard_hparams(run)
    assert status == api_pb2.STATUS_SUCCESS
    leaves = config_leaves(saved_config(out))
    assert set(params) == set(leaves)
    assert params["model.user_encoder"] == "sasrec" and params["optim.lr"] == pytest.approx(3e-3)
    assert params["ks"] == "[5, 10, 20, 50]" and params["seed"] == 1
    assert tensorboard_statuses(run) == ["killed", "finished"]


def test_mlflow_continues_the_same_run_with_every_epoch_once_params_and_status(dataset, tmp_path):
    require("mlflow")
    out = tmp_path / "run"
    _killed_then_resumed(dataset, out, "mlflow")
    client, (killed,) = mlflow_runs(out)
    assert killed.info.status == "KILLED" and killed.data.tags["transrec.status"] == "killed"
    assert set(killed.data.params) == set(config_leaves(saved_config(out)))  # logged when the run started
    # Resumed with more epochs (trajectory-free): MLflow never changes a param, the new value is a tag.
    train(run_config(dataset, out, "mlflow", epochs=4), progress=False)

    client, runs = mlflow_runs(out)
    assert [r.info.run_id for r in runs] == [killed.info.run_id]  # the same tracked run, continued
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["transrec.status"] == "finished"
    assert run.info.run_name == "run"
    for name, series in expected_epochs(out).items():
        history = client.get_metric_history(run.info.run_id, name.replace("@", "_at_"))
        assert sorted((m.step, m.value) for m in history) == series, name
    assert len(expected_epochs(out)["train/loss"]) == 4
    for name, value in expected_test(out).items():
        history = client.get_metric_history(run.info.run_id, name.replace("@", "_at_"))
        assert [(m.step, m.value) for m in history] == [(4, value)], name
    leaves = config_leaves(saved_config(out))
    assert set(run.data.params) == set(leaves)
    assert run.data.params["epochs"] == "3" and run.data.tags["resumed.epochs"] == "4"
    assert run.data.params["model.user_encoder"] == "sasrec" and run.data.params["ks"] == "[5, 10, 20, 50]"
    assert run.data.params["init_checkpoint"] == "null" and run.data.params["optim.lr"] == "0.003"
    assert run.data.params["logq"] == "false" and run.data.params["seed"] == "1"
    artifact = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path)))
    assert yaml.safe_load(artifact.read_text()) == saved_config(out)


def test_wandb_offline_sessions_share_one_run_id_and_hold_every_epoch_once(dataset, tmp_path):
    require("wandb")
    out = tmp_path / "run"
    _killed_then_resumed(dataset, out, "wandb")
    train(run_config(dataset, out, "wandb"), progress=False)

    sessions = wandb_records(out)
    assert len(sessions) == 2  # one offline-run folder per session
    history: dict[int, dict] = {}
    summaries, exits, ids, configs = [], [], set(), []
    for _, records in sessions:
        summary = {}
        for record in records:
            kind = record.WhichOneof("record_type")
            if kind == "run":
                ids.add(record.run.run_id)
                configs.append(wandb_items(record.run.config.update))
                assert record.run.display_name == "run" and record.run.project == "transrec"
            elif kind == "history":
                row = wandb_items(record.history.item)
                assert row["_step"] not in history, f"epoch {row['_step']} logged twice"
                history[row["_step"]] = row
            elif kind == "summary":
                summary.update(wandb_items(record.summary.update))
            elif kind == "exit":
                exits.append(record.exit.exit_code)
        summaries.append(summary)
    assert len(ids) == 1  # the resumed session continues the killed one's run id
    assert exits == [1, 0] and summaries[0]["status"] == "killed" and summaries[1]["status"] == "finished"
    assert sorted(history) == [1, 2, 3]
    for name, series in expected_epochs(out).items():
        assert [(step, history[step][name]) for step in sorted(history)] == series, name
    for name, value in expected_test(out).items():
        assert summaries[1][name] == value, name
    config = {k: v for k, v in configs[-1].items() if k != "_wandb"}
    assert config == saved_config(out)


# -- resuming: what the backend already holds is logged once ---------------------------------------------


@pytest.mark.parametrize("backend", ["tensorboard", "mlflow"])
def test_an_epoch_logged_but_not_counted_before_a_kill_is_held_once(dataset, tmp_path, monkeypatch, backend):
    # Killed between the backend receiving epoch 2 and tracking.json counting it: the resumed run replays
    # epoch 2 from metrics.jsonl, and the backend must still show it once (TensorBoard: purge_step;
    # MLflow: the run's own history).
    require(backend)
    out = tmp_path / "run"
    save = RunTracking._save

    def killed_before_counting(self):
        if self.epochs_logged == 2:
            raise KeyboardInterrupt("killed before tracking.json counted epoch 2")
        save(self)

    monkeypatch.setattr(RunTracking, "_save", killed_before_counting)
    with pytest.raises(KeyboardInterrupt):
        train(run_config(dataset, out, backend), progress=False)
    monkeypatch.setattr(RunTracking, "_save", save)
    assert json.loads((out / TRACKING_STATE_FILE).read_text())["epochs_logged"] == 1
    train(run_config(dataset, out, backend), progress=False)
    if backend == "tensorboard":
        scalars = tensorboard_scalars(tensorboard_run(out / "tracking" / "run"))
        steps = {n: [s for s, _ in v] for n, v in scalars.items() if not n.startswith("test/")}
    else:
        client, (run,) = mlflow_runs(out)
        steps = {n: [m.step for m in client.get_metric_history(run.info.run_id, n.replace("@", "_at_"))]
                 for n in expected_epochs(out)}  # fmt: skip
    assert steps and all(sorted(s) == [1, 2, 3] for s in steps.values()), steps


def test_tracking_turned_on_for_a_resumed_run_replays_its_earlier_epochs(dataset, tmp_path):
    require("mlflow")
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(run_config(dataset, out, "none"), progress=False, hook=kill_after_epoch(2))
    assert not (out / "tracking").exists()
    train(run_config(dataset, out, "mlflow"), progress=False)  # tracking is trajectory-free: it resumes
    client, (run,) = mlflow_runs(out)
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == expected_epochs(out)["train/loss"]


def test_a_run_resumed_under_another_run_name_is_a_new_tracked_run_with_every_epoch(dataset, tmp_path):
    require("tensorboard")
    out = tmp_path / "run"
    _killed_then_resumed(dataset, out, "tensorboard")
    renamed = run_config(dataset, out, "tensorboard", tracking_config=TrackingConfig(run_name="renamed"))
    train(renamed, progress=False)
    run = tensorboard_run(out / "tracking" / "renamed")
    assert [s for s, _ in tensorboard_scalars(run)["train/loss"]] == [1, 2, 3]
    assert tensorboard_statuses(run) == ["finished"] and tensorboard_hparams(run)[1] is not None


def test_a_run_started_afresh_starts_a_new_tracked_run(dataset, tmp_path):
    # resume: never removes the old run's files, its tracking directory and tracking.json among them.
    require("mlflow")
    out = tmp_path / "run"
    train(run_config(dataset, out, "mlflow", epochs=1), progress=False)
    _, (first,) = mlflow_runs(out)
    train(run_config(dataset, out, "mlflow", epochs=1, resume="never"), progress=False)
    _, (second,) = mlflow_runs(out)
    assert second.info.run_id != first.info.run_id and second.info.status == "FINISHED"


# -- the final status --------------------------------------------------------------------------------------


def test_a_collapsed_and_a_failed_run_end_their_tracked_run_with_that_status(dataset, tmp_path):
    require("mlflow")
    collapsing = run_config(dataset, tmp_path / "collapsed", "mlflow", collapse_factor=1e9, collapse_grace=1)
    with pytest.raises(TrainingCollapsed):
        train(collapsing, progress=False)
    _, (run,) = mlflow_runs(tmp_path / "collapsed")
    assert run.info.status == "FAILED" and run.data.tags["transrec.status"] == "collapsed"

    def fail(event, info):
        if event == "epoch":
            raise RuntimeError("a bug in a hook")

    with pytest.raises(RuntimeError):
        train(run_config(dataset, tmp_path / "failed", "mlflow"), progress=False, hook=fail)
    _, (run,) = mlflow_runs(tmp_path / "failed")
    assert run.info.status == "FAILED" and run.data.tags["transrec.status"] == "failed"


def test_a_backend_error_while_recording_a_collapse_does_not_replace_the_collapse(
    dataset, tmp_path, monkeypatch
):
    require("mlflow")

    def broken(self, status):
        raise OSError("the store went away")

    monkeypatch.setattr(tracking_module.MLflowTracker, "finish", broken)
    collapsing = run_config(dataset, tmp_path / "run", "mlflow", collapse_factor=1e9, collapse_grace=1)
    with pytest.raises(TrainingCollapsed):  # the CLI exits 3 on it: it must stay what the run raises
        train(collapsing, progress=False)


# -- before anything is read: a missing package ---------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_missing_package_stops_the_run_before_anything_is_read(dataset, tmp_path, monkeypatch, backend):
    monkeypatch.setitem(sys.modules, backend, None)  # as where the package is not installed
    out = tmp_path / "run"
    with pytest.raises(MissingPackageError) as caught:
        train(run_config(dataset, out, backend), progress=False)
    assert f"`pip install 'transrec[tracking-{backend}]'`" in str(caught.value)
    assert not out.exists()  # refused before the run directory was made


# -- only rank 0 logs --------------------------------------------------------------------------------------


def test_only_rank_0_logs_but_every_rank_checks_the_package(tmp_path, monkeypatch):
    require("tensorboard")
    other = RunTracking("tensorboard", TrackingConfig(), tmp_path / "run", main=False)
    other.start({"seed": 1}, [{"epoch": 1, "loss": 0.5}], resumed=False)
    other.log_epoch({"epoch": 2, "loss": 0.4})
    other.log_test(2, {"NDCG@10": 0.1})
    other.finish("finished")
    assert not (tmp_path / "run").exists()
    main = RunTracking("tensorboard", TrackingConfig(), tmp_path / "run", main=True)
    main.start({"seed": 1}, [{"epoch": 1, "loss": 0.5}], resumed=False)
    main.finish("finished")
    assert [s for s, _ in tensorboard_scalars(tensorboard_run(tmp_path / "run" / "tracking" / "run"))[
        "train/loss"]] == [1]  # fmt: skip
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(MissingPackageError):
        other.check_installed()


def _train_as_rank(rank, init_file, dataset, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        train(run_config(dataset, out, "tensorboard", epochs=2), progress=False)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_under_two_processes_rank_0_alone_writes_the_tracked_run(dataset, tmp_path):
    require("tensorboard")
    import torch.multiprocessing as mp

    out = tmp_path / "run"
    mp.spawn(_train_as_rank, args=(tmp_path / "init", dataset, out), nprocs=2)
    (log_dir,) = (out / "tracking").iterdir()
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 1  # one writer: rank 0's
    scalars = tensorboard_scalars(tensorboard_run(log_dir))
    for name, series in expected_epochs(out).items():
        assert [s for s, _ in scalars[name]] == [s for s, _ in series] == [1, 2], name


def test_params_flatten_the_nested_config_to_dotted_keys():
    flat = tracking_module.flat_params(
        {"seed": 1, "model": {"d_model": 16, "feature_vocab": {}, "tokenizer": None}, "ks": [5, 10]}
    )
    assert flat == {"seed": 1, "model.d_model": 16, "model.feature_vocab": "{}", "model.tokenizer": "null",
                    "ks": "[5, 10]"}  # fmt: skip
    assert tracking_module.mlflow_name("valid/NDCG@10") == "valid/NDCG_at_10"
