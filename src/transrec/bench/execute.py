"""Running one cell of each kind in its directory: ``train`` through the trainer, ``evaluate`` (a
dependency's ``best/`` checkpoint applied to the cell's dataset, no training: zero-shot) and ``popularity``
(the non-learned popularity ranking). Every kind leaves the same test files: ``test_metrics.json``
(``HR@k``, ``NDCG@k``, ``MRR`` for the config's ``ks``, and ``<subset>/users``, ``<subset>/<metric>``
for its ``eval_subsets``) and ``test_ranks.npz`` (``users``, ``targets``, ``ranks``, 1 = best, and
``subset_<name>``, each subset's membership per user), written as the trainer writes them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transrec.utils.distributed import DistributedContext
from transrec.utils.io import atomic_write_text

logger = logging.getLogger(__name__)

TEST_METRICS_FILE = "test_metrics.json"


def run_train_cell(config, progress: bool) -> dict[str, Any]:
    """Train (or resume, or return the stored result of) the TrainConfig ``config``; what cell.json
    records of it: ``epochs_run``, ``best_epoch`` and ``resumed`` (whether ``last/`` was there)."""
    from transrec.training.trainer import train

    resumed = (Path(config.output_dir) / "last").is_dir() and config.resume != "never"
    result = train(config, progress=progress)
    return {"epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "resumed": resumed}


def run_evaluate_cell(config, checkpoint: Path) -> dict[str, Any]:
    """Apply ``checkpoint`` (a dependency's ``best/``) to the test users of ``config.dataset`` with the
    config's ``ks``, ``eval_subsets``, ``device`` and ``eval_batch_size``; writes the test files."""
    from transrec.training.checkpoint import checkpoint_evaluation
    from transrec.training.trainer import resolve_device

    evaluation = checkpoint_evaluation(
        checkpoint, config.dataset, "test", tuple(config.ks), resolve_device(config.device),
        config.eval_batch_size, subsets=tuple(config.eval_subsets),
    )  # fmt: skip
    write_test_outputs(Path(config.output_dir), evaluation.metrics, evaluation.users, evaluation.targets,
                       evaluation.ranks, evaluation.subsets)  # fmt: skip
    return {"checkpoint": str(checkpoint)}


def run_popularity_cell(config) -> dict[str, Any]:
    """Rank every test user's items by their training popularity (``models.baselines``), history excluded,
    as ``evaluation.protocol.evaluate_scorer`` does; writes the test files."""
    from transrec.data.prepared import PreparedDataset
    from transrec.evaluation.model_eval import subset_masks, subset_metrics
    from transrec.evaluation.protocol import absent_items, exclusion_lists, stage_histories
    from transrec.evaluation.ranking import RankingMetrics, target_ranks
    from transrec.models.baselines import BASELINES

    dataset = PreparedDataset(config.dataset)
    scorer = BASELINES.get("popularity")(dataset, config.seed)
    histories, targets = stage_histories(dataset, "test")
    absent = absent_items(dataset, "test")
    users = np.arange(dataset.n_users)
    ranks = np.zeros(len(users), dtype=np.int64)
    for start in range(0, len(users), config.eval_batch_size):
        batch = users[start : start + config.eval_batch_size]
        batch_histories = [histories[u] for u in batch]
        exclude = exclusion_lists(batch_histories, True, absent)
        batch_targets = torch.from_numpy(targets[batch].astype(np.int64))
        ranks[batch] = target_ranks(scorer(batch, batch_histories), batch_targets, exclude).numpy()
    metrics = RankingMetrics(tuple(config.ks), n_items=dataset.n_items)
    metrics.update(torch.from_numpy(ranks))
    result = metrics.compute()
    masks = subset_masks(dataset, "test", tuple(config.eval_subsets))
    result.update(subset_metrics(ranks, masks, tuple(config.ks), dataset.n_items))
    write_test_outputs(Path(config.output_dir), result, users, np.asarray(targets)[users], ranks, masks)
    return {}


def write_test_outputs(out: Path, metrics: dict[str, float], users: np.ndarray, targets: np.ndarray,
                       ranks: np.ndarray, subsets: dict[str, np.ndarray]) -> None:  # fmt: skip
    """``test_metrics.json`` and ``test_ranks.npz`` as the trainer writes them, ``subset_<name>`` arrays
    included (each file atomically; rank 0 only under ``torchrun``)."""
    from transrec.training.trainer import TEST_RANKS_FILE, _write_test_ranks

    if not DistributedContext.current().is_main:
        return
    out.mkdir(parents=True, exist_ok=True)
    # The trainer's own writer: an evaluate or popularity cell's ranks are read exactly as a train cell's.
    _write_test_ranks(
        out / TEST_RANKS_FILE, np.asarray(users), np.asarray(targets), np.asarray(ranks), subsets
    )
    atomic_write_text(out / TEST_METRICS_FILE, json.dumps(metrics, indent=2) + "\n")


def remove_test_outputs(out: Path) -> None:
    """Remove what an evaluate or popularity cell wrote (before it runs again)."""
    from transrec.training.trainer import TEST_RANKS_FILE

    for name in (TEST_METRICS_FILE, TEST_RANKS_FILE):
        (Path(out) / name).unlink(missing_ok=True)
