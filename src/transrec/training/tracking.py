"""Experiment tracking: a training run's resolved config, per-epoch losses and validation metrics, test
metrics and final status, logged to TensorBoard, MLflow or Weights & Biases, offline by default, so that
the runs of a grid can be compared in the tools researchers already use.

``TrainConfig.tracking`` names the backend (``none``, the default, logs nothing and needs nothing);
``TrainConfig.tracking_config`` (``TrackingConfig``) says where and under which names. The backends write
under ``D`` = ``tracking_config.dir`` (default ``<output_dir>/tracking``), never to the network. What each
writes, and what a resumed run (``resume: auto`` or ``force``) does with it:

- ``tensorboard``: event files in ``D/<run_name>`` (scalars; the config as text and as HParams);
  ``tensorboard --logdir D`` or the grid's directory. Resumed: the same log dir, with a ``purge_step``
  that hides what the killed session logged past the point the run continues from. HParams records the
  end of a run that finished or collapsed (TensorBoard reads only the first end of a log dir, so a
  session that failed or was killed, which may yet resume, records none).
- ``mlflow``: a local file store ``D/mlruns`` (``mlflow ui --backend-store-uri file:D/mlruns``), or
  ``tracking_config.mlflow_uri``. Resumed: the same MLflow run, by the run id kept in
  ``<output_dir>/tracking.json``; RUNNING again, then FINISHED, FAILED or KILLED.
- ``wandb``: an offline run in ``D/wandb/offline-run-*`` (no login, no network; ``wandb sync`` uploads
  it). Resumed: the same run id with ``resume="allow"``; each session is its own offline-run folder
  holding that id, to be synced in order.

A resumed run whose backend, store, experiment or run name changed starts a new tracked run, which
receives every epoch so far.

What is logged, under the same names in every backend (MLflow allows no ``@`` in a name: ``_at_`` there):
the resolved config (the dict of ``config.yaml``) as flattened dotted parameters (MLflow params,
TensorBoard HParams; W&B keeps it nested) and whole (``config.yaml`` as an MLflow artifact, TensorBoard
text); per epoch, at step = epoch (1-based), the rows of ``metrics.jsonl``: ``train/loss`` and
``valid/<metric>`` (``valid_NDCG@10`` -> ``valid/NDCG@10``); at the end ``test/<metric>`` from
``test_metrics.json`` (subset keys too: ``test/cold/NDCG@10``; W&B puts them in the run summary) and the
final status: ``finished``, ``collapsed``, ``failed`` (an exception) or ``killed`` (interrupted).

Only rank 0 logs under ``torchrun``; every rank imports the backend's package first, so that a missing
package stops every process with the install command before anything is read (``check_installed``).
Epochs are logged once checkpointed (after ``last/`` is written), and ``tracking.json`` counts those the
backend has received, so that a resumed run logs each epoch once: the ones checkpointed but not yet logged
are replayed from ``metrics.jsonl``, as are all earlier epochs when tracking is turned on for a resumed
run (``tracking`` and ``tracking_config.*`` are ``run_directory.TRAJECTORY_FREE``). An epoch the backend
received just before a kill, before ``tracking.json`` counted it, is sent again: TensorBoard's purge step
and MLflow's own metric history keep it once; two W&B offline sessions then both hold it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import yaml

from transrec.registry import Registry
from transrec.utils.io import atomic_write_text
from transrec.utils.packages import import_optional

logger = logging.getLogger(__name__)

#: Kept in the run directory: which backend tracks the run, its run id, and how many epochs it received.
TRACKING_STATE_FILE = "tracking.json"
#: The default ``tracking_config.dir``, inside the run directory.
TRACKING_DIR = "tracking"
#: The keys of ``TrainConfig`` (dotted) that say where a run is reported and that no computation reads.
TRACKING_KEYS = ("tracking", "tracking_config.dir", "tracking_config.experiment", "tracking_config.run_name",
                 "tracking_config.mlflow_uri")  # fmt: skip
#: Final statuses, as logged.
STATUSES = ("finished", "collapsed", "failed", "killed")


@dataclass
class TrackingConfig:
    """Where and under which names a tracked run is logged (``TrainConfig.tracking`` picks the backend).

    Args:
        dir: the directory the backend writes into (see the module docstring); None:
            ``<output_dir>/tracking``. A directory shared by several runs (a grid's) puts them side by
            side: one TensorBoard log dir per run name, one MLflow store, one ``wandb`` folder of
            offline runs.
        experiment: the MLflow experiment and the W&B project (TensorBoard has neither).
        run_name: the run's name in the tool (TensorBoard: its log dir under ``dir``); None: the name of
            ``output_dir`` (its last path component).
        mlflow_uri: an MLflow tracking URI to log to instead of the file store ``file:<dir>/mlruns``, e.g.
            ``sqlite:////abs/path/mlflow.db`` (needs ``sqlalchemy`` and ``alembic``, which ``mlflow``
            installs and ``mlflow-skinny`` does not) or a tracking server's ``http://`` address.
    """

    dir: str | None = None
    experiment: str = "transrec"
    run_name: str | None = None
    mlflow_uri: str | None = None


@dataclass(frozen=True)
class TrackedRun:
    """One run as a backend sees it.

    Attributes:
        directory: where the backend writes (``tracking_config.dir`` resolved).
        experiment, run_name, uri: ``TrackingConfig``'s, resolved (``uri``: ``mlflow_uri``).
        run_id: the backend's id of the run to continue (from ``tracking.json``), or None for a new run.
        first_epoch: the first epoch this session logs (1 for a new run); a resumed TensorBoard run hides
            whatever an earlier session logged from this step on.
    """

    directory: Path
    experiment: str
    run_name: str
    uri: str | None
    run_id: str | None
    first_epoch: int


class Tracker(ABC):
    """One backend. A tracker is made for one run: ``start`` once, then ``log_epoch`` per epoch,
    ``log_test`` once, ``finish`` once. Names are ``train/loss``, ``valid/<metric>``, ``test/<metric>``."""

    #: The import name of the package the backend needs (an extra of ``pyproject.toml``).
    package: ClassVar[str]

    def __init__(self, run: TrackedRun) -> None:
        self.run = run

    @classmethod
    def require(cls) -> ModuleType:
        """Import the backend's package, or raise ``MissingPackageError`` with the install command."""
        return import_optional(cls.package, f"tracking: {cls.package} (experiment tracking)")

    @abstractmethod
    def start(self, config: dict[str, Any]) -> str:
        """Open (or reopen) the run and log ``config`` (the resolved config, nested); returns the run id
        that continues it after a restart."""

    @abstractmethod
    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Log ``metrics`` (``train/loss``, ``valid/...``) at step ``epoch``."""

    @abstractmethod
    def log_test(self, epoch: int, metrics: dict[str, float]) -> None:
        """Log the test metrics (``test/...``) of the run that ended after ``epoch`` epochs."""

    @abstractmethod
    def finish(self, status: str) -> None:
        """Record the final status (one of ``STATUSES``) and close the run."""


TRACKERS: Registry[type[Tracker]] = Registry("tracking backend")


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, str | int | float | bool]:
    """The leaves of a nested config as dotted keys; lists, None and empty dicts as their JSON text
    (``ks`` -> ``"[5, 10, 20, 50]"``), numbers, strings and booleans as they are."""
    flat: dict[str, str | int | float | bool] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flat_params(value, f"{prefix}{key}."))
        elif isinstance(value, (str, int, float, bool)):
            flat[prefix + key] = value
        else:
            flat[prefix + key] = json.dumps(value)
    return flat


def epoch_metrics(record: dict[str, Any]) -> dict[str, float]:
    """A ``metrics.jsonl`` row as tracked metrics: ``loss`` -> ``train/loss``, ``valid_X`` -> ``valid/X``."""
    metrics = {}
    for key, value in record.items():
        if key == "epoch":
            continue
        name = "train/loss" if key == "loss" else "valid/" + key.removeprefix("valid_")
        metrics[name] = float(value)
    return metrics


def failure_status(error: BaseException) -> str:
    """The status of a run that ended by ``error`` (a collapse is the trainer's to name)."""
    return "killed" if isinstance(error, (KeyboardInterrupt, SystemExit)) else "failed"


class RunTracking:
    """What the trainer holds: the tracker of one ``train`` call, or nothing to do (``tracking: none``,
    or a process other than rank 0). Every method but ``check_installed`` is a no-op then."""

    def __init__(self, backend: str, settings: TrackingConfig, output_dir: str | Path, main: bool) -> None:
        self.backend, self.settings = backend, settings
        self.output_dir = Path(output_dir)
        self.enabled = main and backend != "none"
        self.tracker: Tracker | None = None
        self.epochs_logged = 0
        self.run_id: str | None = None
        self.run_name = ""

    def check_installed(self) -> None:
        """Import the backend's package in every process: ``MissingPackageError`` naming the install command,
        before the run reads or builds anything."""
        if self.backend != "none":
            TRACKERS.get(self.backend).require()

    @property
    def directory(self) -> Path:
        return Path(self.settings.dir) if self.settings.dir else self.output_dir / TRACKING_DIR

    def start(self, config: dict[str, Any], history: list[dict[str, Any]], resumed: bool) -> None:
        """Open the tracked run of a run that starts (``resumed`` False) or continues from ``last/``
        after the epochs of ``history`` (its ``metrics.jsonl`` rows), log ``config``, and replay the rows
        of ``history`` the backend has not received."""
        if not self.enabled:
            return
        run_name = self.settings.run_name or self.output_dir.resolve().name
        stored = self._stored() if resumed else None
        # The same tracked run continues only where it is: another backend, store, experiment or run name
        # starts a new one, which receives every epoch so far.
        if stored is not None and stored.get("where") == self._where(run_name):
            self.run_id = stored.get("run_id")
            self.epochs_logged = min(int(stored.get("epochs_logged", 0)), len(history))
        run = TrackedRun(
            directory=self.directory,
            experiment=self.settings.experiment,
            run_name=run_name,
            uri=self.settings.mlflow_uri,
            run_id=self.run_id,
            first_epoch=self.epochs_logged + 1,
        )
        self.run_name = run_name
        run.directory.mkdir(parents=True, exist_ok=True)
        tracker = TRACKERS.get(self.backend)(run)
        self.run_id = tracker.start(config)
        self.tracker = tracker  # only a started tracker is finished
        self._save()
        for record in history:
            if record["epoch"] > self.epochs_logged:
                self.log_epoch(record)
        logger.info("tracking with %s in %s (run %s)", self.backend, run.directory, self.run_id)

    def log_epoch(self, record: dict[str, Any]) -> None:
        """Log one ``metrics.jsonl`` row (after its epoch is checkpointed)."""
        if self.tracker is None:
            return
        self.tracker.log_epoch(int(record["epoch"]), epoch_metrics(record))
        self.epochs_logged = int(record["epoch"])
        self._save()

    def log_test(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.tracker is not None:
            self.tracker.log_test(epoch, {f"test/{k}": float(v) for k, v in metrics.items()})

    def finish(self, status: str) -> None:
        """Close the tracked run with ``status``; later calls do nothing (the first status stands). A run
        that did not finish is ending by an exception, which a backend's own error must not replace: that
        error is logged instead."""
        if self.tracker is None:
            return
        tracker, self.tracker = self.tracker, None
        if status == "finished":
            tracker.finish(status)
            return
        try:
            tracker.finish(status)
        except Exception:
            logger.exception("tracking: %s could not record the status %s", self.backend, status)

    def _stored(self) -> dict[str, Any] | None:
        path = self.output_dir / TRACKING_STATE_FILE
        return json.loads(path.read_text()) if path.is_file() else None

    def _where(self, run_name: str) -> dict[str, Any]:
        # The default directory is named relative to the run directory, which may be moved with it.
        directory = f"<output_dir>/{TRACKING_DIR}"
        if self.settings.dir:
            directory = str(Path(self.settings.dir).resolve())
        return {"backend": self.backend, "dir": directory, "experiment": self.settings.experiment,
                "run_name": run_name, "mlflow_uri": self.settings.mlflow_uri}  # fmt: skip

    def _save(self) -> None:
        state = {"backend": self.backend, "run_id": self.run_id, "epochs_logged": self.epochs_logged,
                 "where": self._where(self.run_name)}  # fmt: skip
        atomic_write_text(self.output_dir / TRACKING_STATE_FILE, json.dumps(state) + "\n")


def open_tracking(config: Any, main: bool) -> RunTracking:
    """The ``RunTracking`` of a ``TrainConfig`` in this process (``main``: rank 0)."""
    return RunTracking(config.tracking, config.tracking_config, config.output_dir, main)


# -- the backends --------------------------------------------------------------------------------------


@TRACKERS.register("tensorboard")
class TensorBoardTracker(Tracker):
    """Event files through ``torch.utils.tensorboard.SummaryWriter`` (which needs the ``tensorboard``
    package): scalars at step = epoch, the config as text at step 0 and as an HParams session whose end
    carries the status (TensorBoard's HPARAMS tab compares the runs of a log dir by their params)."""

    package = "tensorboard"
    #: The HParams session-end status of the statuses that end a run for good. TensorBoard reads only the
    #: first session end of a log dir, so a run that failed or was killed, which may yet be resumed, writes
    #: none (HParams shows it as running); the ``status`` text records every session's end.
    END_STATUS: ClassVar[dict[str, str]] = {"finished": "STATUS_SUCCESS", "collapsed": "STATUS_FAILURE"}

    def start(self, config: dict[str, Any]) -> str:
        self.require()
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        log_dir = self.run.directory / self.run.run_name
        new = self.run.run_id is None
        # purge_step: TensorBoard hides what earlier sessions logged from that step on: everything of an
        # earlier run in the same log dir (a new run), or the epochs this session logs again (a resumed one).
        self.writer = SummaryWriter(str(log_dir), purge_step=0 if new else self.run.first_epoch)
        step = 0 if new else self.run.first_epoch - 1
        self.writer.add_text("config", _as_code(yaml.safe_dump(config, sort_keys=False)), step)
        if new:
            params = flat_params(config)
            ks = config.get("ks") or [10]
            metric_tags = {f"test/{m}@{k}": 0.0 for k in ks for m in ("NDCG", "HR")}
            experiment, session_start, _ = hparams(params, {**metric_tags, "test/MRR": 0.0})
            self.writer.file_writer.add_summary(experiment)
            self.writer.file_writer.add_summary(session_start)
        self.writer.flush()
        return str(log_dir)

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, epoch)
        self.writer.flush()

    def log_test(self, epoch: int, metrics: dict[str, float]) -> None:
        self.log_epoch(epoch, metrics)

    def finish(self, status: str) -> None:
        if status in self.END_STATUS:
            self._end_session(status)
        self.writer.add_text("status", status)
        self.writer.close()

    def _end_session(self, status: str) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        end = plugin_data_pb2.HParamsPluginData(
            session_end_info=plugin_data_pb2.SessionEndInfo(
                status=api_pb2.Status.Value(self.END_STATUS[status]), end_time_secs=time.time()
            ),
            version=metadata.PLUGIN_DATA_VERSION,
        )
        summary_metadata = metadata.create_summary_metadata(end)
        self.writer.file_writer.add_summary(
            Summary(value=[Summary.Value(tag=metadata.SESSION_END_INFO_TAG, metadata=summary_metadata)])
        )


@TRACKERS.register("mlflow")
class MLflowTracker(Tracker):
    """An MLflow run through ``MlflowClient`` (``mlflow-skinny`` is enough for the file store): params,
    metrics at step = epoch, ``config.yaml`` as an artifact, the status as the tag ``transrec.status``
    and as the run's own status (FINISHED, FAILED, KILLED)."""

    package = "mlflow"
    RUN_STATUS: ClassVar[dict[str, str]] = {"finished": "FINISHED", "collapsed": "FAILED", "failed": "FAILED",
                                            "killed": "KILLED"}  # fmt: skip
    #: Entries per ``log_batch`` call (MLflow's limit on params per batch is 100).
    BATCH = 100

    def start(self, config: dict[str, Any]) -> str:
        self.require()
        from mlflow.tracking import MlflowClient

        uri = self.run.uri
        if uri is None:
            # MLflow 3 keeps its file store in maintenance mode behind this opt-in; it is the store that
            # needs no database package and that runs of a grid can share, so it is transrec's default.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            from mlflow.store.tracking.file_store import FileStore

            store = self.run.directory / "mlruns"
            uri = store.resolve().as_uri()
            # MLflow keeps one store object per URI in a process, which made these folders once: a store
            # whose directory ``resume: never`` removed (with the run's other files) needs them again.
            (store / FileStore.TRASH_FOLDER_NAME).mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=uri)
        # As YAML and JSON write them (false, not Python's False), for comparing with config.yaml.
        params = {k: v if isinstance(v, str) else json.dumps(v) for k, v in flat_params(config).items()}
        #: Epochs this run already holds: a session killed after logging an epoch but before
        #: ``tracking.json`` counted it replays that epoch, which MLflow would otherwise hold twice.
        self.logged_until = 0
        if self.run.run_id is None:
            experiment_id = self._experiment_id()
            run = self.client.create_run(experiment_id, run_name=self.run.run_name)
            self.run_id = run.info.run_id
            self._log_params(params)
        else:
            self.run_id = self.run.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            history = self.client.get_metric_history(self.run_id, "train/loss")
            self.logged_until = max((m.step for m in history), default=0)
            known = self.client.get_run(self.run_id).data.params
            self._log_params({k: v for k, v in params.items() if k not in known})
            # MLflow never changes a param: a key that changed for this session (resume: force) is a tag.
            for key, value in params.items():
                if key in known and known[key] != value:
                    self.client.set_tag(self.run_id, f"resumed.{key}", value)
        self.client.log_text(self.run_id, yaml.safe_dump(config, sort_keys=False), "config.yaml")
        return self.run_id

    def _experiment_id(self) -> str:
        existing = self.client.get_experiment_by_name(self.run.experiment)
        if existing is not None:
            return existing.experiment_id
        try:
            return self.client.create_experiment(self.run.experiment)
        except Exception:  # another run of the grid created it in between
            existing = self.client.get_experiment_by_name(self.run.experiment)
            if existing is None:
                raise
            return existing.experiment_id

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(key, value) for key, value in params.items()]
        for start in range(0, len(items), self.BATCH):
            self.client.log_batch(self.run_id, params=items[start : start + self.BATCH])

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        if epoch <= self.logged_until:
            return
        self._log_metrics(epoch, metrics)

    def _log_metrics(self, epoch: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(mlflow_name(k), v, now, epoch) for k, v in metrics.items() if math.isfinite(v)]
        for start in range(0, len(items), self.BATCH):
            self.client.log_batch(self.run_id, metrics=items[start : start + self.BATCH])

    def log_test(self, epoch: int, metrics: dict[str, float]) -> None:
        self._log_metrics(epoch, metrics)

    def finish(self, status: str) -> None:
        self.client.set_tag(self.run_id, "transrec.status", status)
        self.client.set_terminated(self.run_id, self.RUN_STATUS[status])


def mlflow_name(name: str) -> str:
    """A metric name as MLflow accepts it (alphanumerics, ``_ - . / :`` and spaces): ``@`` -> ``_at_``."""
    name = name.replace("@", "_at_")
    return "".join(c if c.isalnum() or c in "_-./: " else "_" for c in name)


@TRACKERS.register("wandb")
class WandbTracker(Tracker):
    """A W&B run in offline mode (no login, no network): the config nested, metrics at step = epoch,
    test metrics and the status in the run summary, exit code 0 for ``finished`` and 1 otherwise.
    ``wandb sync <dir>/wandb/offline-run-*`` uploads it later."""

    package = "wandb"

    def start(self, config: dict[str, Any]) -> str:
        wandb = self.require()
        resumed = self.run.run_id is not None
        self.wandb_run = wandb.init(
            mode="offline",
            dir=str(self.run.directory),
            project=self.run.experiment,
            name=self.run.run_name,
            id=self.run.run_id,
            resume="allow" if resumed else None,
            config=config,
            # console="off": W&B would otherwise wrap this process's stdout and stderr; silent: its own
            # banners and run summary would go around transrec's logging (the sync command is logged).
            settings=wandb.Settings(console="off", silent=True),
        )
        if resumed:  # an offline session does not read back the old config: this one is the run's now
            self.wandb_run.config.update(config, allow_val_change=True)
        return self.wandb_run.id

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.wandb_run.log(metrics, step=epoch)

    def log_test(self, epoch: int, metrics: dict[str, float]) -> None:
        self.wandb_run.summary.update(metrics)

    def finish(self, status: str) -> None:
        self.wandb_run.summary["status"] = status
        sync_dir = self.wandb_run.settings.sync_dir
        self.wandb_run.finish(exit_code=0 if status == "finished" else 1)
        logger.info("W&B offline run %s ended (%s): `wandb sync %s` uploads it", self.wandb_run.id, status,
                    sync_dir)  # fmt: skip


def _as_code(text: str) -> str:
    """Text that TensorBoard's Markdown shows as it is (an indented code block)."""
    return "\n".join("    " + line for line in text.splitlines())
