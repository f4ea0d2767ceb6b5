"""A run directory belongs to one run: what ``train`` does with an ``output_dir`` that already holds one.

Before any weight is built, ``open_run_directory`` compares the resolved config of the new call (the
dict written to ``config.yaml``: model sizes, tokenizer and feature vocabularies filled in from the
dataset) with the ``config.yaml`` on disk, and decides, by ``TrainConfig.resume``:

=================  ==========================================================================================
``auto`` (default) an empty directory starts a run; a run whose config matches, or differs only in the
                   keys of ``TRAJECTORY_FREE`` below, continues from ``last/``; a finished run that would
                   train no further under this config is not trained again: its stored result is returned;
                   any other difference is refused (``ConfigError`` listing each key, old and new value).
``force``          as ``auto``, but a run of another config continues too, with the new config; the old
                   ``config.yaml`` is kept as ``config.<n>.yaml`` and ``config_changes.jsonl`` records after
                   which epoch and in which keys the config changed, so that no config file silently
                   describes weights it did not produce.
``never``          always trains from scratch: the files of a run already in the directory (``config*.yaml``,
                   ``metrics.jsonl``, ``result.json``, ``test_metrics.json``, ``best/``, ``last/``...) are
                   removed first, so that nothing of it mixes with the new run. Other files are left alone.
=================  ==========================================================================================

A run that collapsed stays collapsed: starting it again raises ``TrainingCollapsed`` with the stored reason
(``never`` starts it afresh). Before deciding, a ``last/`` or ``best/`` left moved aside by a process killed
inside ``utils.io.atomic_directory`` is put back (``recover_directory``).

Under ``torchrun`` every process makes the same decision from the same files; only rank 0 writes.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from transrec.config import ConfigError, dump_yaml, from_dict, to_dict
from transrec.data.paths import resolve_dataset
from transrec.training.checkpoint import STATE_FILE, check_optimizer_format, read_trainer_state
from transrec.training.config import TrainConfig
from transrec.training.tracking import TRACKING_DIR, TRACKING_KEYS, TRACKING_STATE_FILE
from transrec.utils.distributed import DistributedContext
from transrec.utils.io import atomic_write_text, recover_directory

CONFIG_FILE = "config.yaml"
RESULT_FILE = "result.json"
CHANGES_FILE = "config_changes.jsonl"
#: What a run writes into its directory (besides ``config.<n>.yaml``); ``resume: never`` removes these.
RUN_FILES = (CONFIG_FILE, "metrics.jsonl", RESULT_FILE, "test_metrics.json", "test_ranks.npz", CHANGES_FILE,
             "best", "last", "trunk_cache", TRACKING_STATE_FILE, TRACKING_DIR)  # fmt: skip

#: Keys of the resolved config (dotted) that may differ between the run on disk and the run continuing it
#: under ``resume: auto``, with why none of them can change the weights already trained nor the weights
#: an uninterrupted run of the new config would train. Everything else (seed, data, model, objective,
#: optimisation, precision, batch size, transfer source...) is refused without ``resume: force``.
TRAJECTORY_FREE: dict[str, str] = {
    "output_dir": "the run directory itself, which may be named by another path or have been moved",
    "resume": "how this call treats the directory, not how the model trains",
    "epochs": "where the run stops; no schedule depends on it (warm-up counts steps)",
    "patience": "when early stopping ends the run, not what an epoch computes",
    "collapse_factor": "when the run is declared collapsed, not what an epoch computes",
    "collapse_patience": "when the run is declared collapsed, not what an epoch computes",
    "collapse_grace": "when the run is declared collapsed, not what an epoch computes",
    "ks": "which cut-offs are reported; the best epoch is chosen by NDCG@10 whatever they are",
    "eval_batch_size": "how many users are scored at once; every user's scores are the same",
    "num_workers": "batches are a function of (seed, epoch, user), whatever process builds them",
    "device": "where the same computation runs (only float rounding differs)",
    "parallel": "how processes hold the model; DDP and FSDP take the same steps (only float rounding "
    "differs)",
    "trunk_cache": "a frozen trunk's output computed once instead of in every step (the same, to float "
    "rounding)",
    "trunk_cache_max_memory_mb": "whether that cache is held in memory or memory-mapped",
    **dict.fromkeys(
        TRACKING_KEYS,
        "where the run is reported (training.tracking), which no computation reads; a run continued with "
        "tracking turned on replays its earlier epochs from metrics.jsonl",
    ),
}


@dataclass
class RunPlan:
    """What ``train`` does with the directory.

    Attributes:
        resume: continue from ``last/``.
        finished: the stored ``result.json`` of a finished run that would train no further: return it.
        collapsed: the stored reason of a collapsed run: raise it again.
        changed: dotted key -> (value on disk, value now) for every key that differs (continued runs).
        restored: ``last/`` or ``best/`` were put back from their moved-aside copies.
    """

    resume: bool = False
    finished: dict[str, Any] | None = None
    collapsed: str | None = None
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    restored: list[str] = field(default_factory=list)


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (old, new) for every leaf of two configs' plain data (``to_dict``) that differs;
    a key on one side only pairs with ``None``. Lists are compared whole."""
    flat_old, flat_new = _flatten(old), _flatten(new)
    return {
        key: (flat_old.get(key), flat_new.get(key))
        for key in sorted(set(flat_old) | set(flat_new))
        if flat_old.get(key, _ABSENT) != flat_new.get(key, _ABSENT)
    }


_ABSENT = object()


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def open_run_directory(out: Path, resolved: TrainConfig, ctx: DistributedContext | None = None) -> RunPlan:
    """Decide what to do with ``out`` for the resolved config ``resolved`` (see the module docstring).
    Every process must call it; rank 0 restores moved-aside checkpoints and, for a run that starts from
    scratch, removes what it replaces and writes ``config.yaml``. A run that continues is written to only
    by ``record_resumed_config``, once its checkpoint has loaded; a finished or collapsed one, never.

    Raises ConfigError when ``out`` holds a run of another config (each differing dotted key with its
    old and new value), or a checkpoint without the ``config.yaml`` to check it against."""
    ctx = ctx or DistributedContext()
    out = Path(out)
    plan = RunPlan()
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        plan.restored = [name for name in ("last", "best") if recover_directory(out / name)]
    ctx.barrier()  # checkpoints are back in place before any process looks
    new = _comparable(to_dict(resolved))
    result = _read_result(out)
    holds_run = (out / "last").is_dir() or result is not None
    if holds_run and resolved.resume != "never":
        _continue(out, resolved, new, result, plan)
    ctx.barrier()  # every process has decided before rank 0 changes the directory
    if ctx.is_main and not (plan.resume or plan.finished or plan.collapsed):
        _remove_run(out)
        atomic_write_text(out / CONFIG_FILE, dump_yaml(resolved))
    return plan


def record_resumed_config(out: Path, resolved: TrainConfig, plan: RunPlan) -> None:
    """Once ``last/`` has been loaded into the model and the optimizer (so the run really continues), write
    ``resolved`` as ``config.yaml``: after a forced change, the old file is kept as ``config.<n>.yaml`` and
    the change recorded in ``config_changes.jsonl``; a finished run's ``result.json``, ``test_metrics.json``
    and ``test_ranks.npz``, which no longer describe where it ends, are removed. Rank 0 only."""
    out = Path(out)
    forced = {k: v for k, v in plan.changed.items() if k not in TRAJECTORY_FREE}
    if forced:
        _keep_previous_config(out, forced)
    for stale in (RESULT_FILE, "test_metrics.json", "test_ranks.npz"):
        (out / stale).unlink(missing_ok=True)
    atomic_write_text(out / CONFIG_FILE, dump_yaml(resolved))


def _continue(out: Path, resolved: TrainConfig, new: dict, result: dict | None, plan: RunPlan) -> None:
    config_file = out / CONFIG_FILE
    if not config_file.is_file():
        raise ConfigError(
            f"{out} holds a run (last/ or {RESULT_FILE}) but no {CONFIG_FILE} to check this config against; "
            "use another output_dir, resume=force to continue it with this config, or resume=never to "
            "replace it"
        )
    try:
        old = _comparable(to_dict(from_dict(TrainConfig, yaml.safe_load(config_file.read_text()))))
    except (yaml.YAMLError, TypeError, ValueError) as err:
        raise ConfigError(
            f"{config_file} cannot be read by this transrec ({err}); use another output_dir, or resume=never "
            "to replace the run"
        ) from err
    plan.changed = config_differences(old, new)
    refused = {k: v for k, v in plan.changed.items() if k not in TRAJECTORY_FREE}
    if refused and resolved.resume != "force":
        listed = "; ".join(f"{key}: {_short(a)} -> {_short(b)}" for key, (a, b) in refused.items())
        raise ConfigError(
            f"{out} holds a run of another config ({listed}); use another output_dir, resume=force to "
            f"continue it with this config (the old one is kept), or resume=never to replace it"
        )
    if result is not None and result.get("status") == "collapsed":
        plan.collapsed = result.get("reason", "collapsed")
        return
    state_file = out / "last" / STATE_FILE
    saved = json.loads(state_file.read_text()) if state_file.is_file() else None
    state = saved["trainer"] if saved else None
    done = state is None or state["epoch"] >= resolved.epochs or state["bad_epochs"] >= resolved.patience
    if result is not None and result.get("status") == "finished" and done:
        plan.finished = result
        return
    if state is None:
        raise ConfigError(f"{out / 'last'} has no {STATE_FILE}; use resume=never to replace the run")
    check_optimizer_format(saved["optimizer"], out / "last")  # now, not after the model is built
    plan.resume = True


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    # The same dataset may be named relative to another directory, or by name under $TRANSREC_HOME.
    return {**config, "dataset": str(resolve_dataset(config["dataset"]).resolve())}


def _read_result(out: Path) -> dict[str, Any] | None:
    file = out / RESULT_FILE
    return json.loads(file.read_text()) if file.is_file() else None


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _keep_previous_config(out: Path, changed: dict[str, tuple[Any, Any]]) -> None:
    n = 1
    while (out / f"config.{n}.yaml").exists():
        n += 1
    (out / CONFIG_FILE).rename(out / f"config.{n}.yaml")
    epoch = read_trainer_state(out / "last")["epoch"]
    line = {"after_epoch": epoch, "previous": f"config.{n}.yaml",
            "changed": {key: {"old": a, "new": b} for key, (a, b) in changed.items()}}  # fmt: skip
    with open(out / CHANGES_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")


def _remove_run(out: Path) -> None:
    for name in [*RUN_FILES, *(p.name for p in out.glob("config.*.yaml"))]:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
