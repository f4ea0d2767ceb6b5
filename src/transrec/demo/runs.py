"""Running the demo: one source pre-training per seed, every method and seed on the target, and the
target-scarcity grid; each trained run in its own run directory (``resume: auto``), so an interrupted
demo continues where it stopped and a finished run is never trained again.

Every run keeps each test user's rank (``test_ranks.npz`` of the trainer), from which the demo takes
the overall and new-item metrics and the paired significance tests (``demo.summary``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transrec.data.prepared import PreparedDataset
from transrec.demo.pipeline import TRAINED, DemoConfig, train_config
from transrec.evaluation.protocol import stage_histories
from transrec.evaluation.significance import hit_per_user, ndcg_per_user
from transrec.training.trainer import TEST_RANKS_FILE, TrainingCollapsed, train

logger = logging.getLogger(__name__)

SOURCE = "Source"  # the pre-training runs, reported beside the target's methods


@dataclass
class MethodRun:
    """One method, seed and user fraction: what the report needs.

    ``ranks``: each target test user's rank (1 = best), in user order; None for a collapsed run.
    ``stop``: ``patience`` (early stopping ended it), ``cap`` (it reached ``epochs``), ``collapsed``, or
    ``""`` for a method that does not train (Popularity, Zero-shot).
    """

    method: str
    seed: int
    fraction: float = 1.0
    ranks: np.ndarray | None = field(default=None, repr=False)
    valid_curve: list[float] = field(default_factory=list)  # validation NDCG@10 per epoch
    seconds: float = 0.0
    epochs_run: int = 0
    best_epoch: int = 0
    stop: str = ""
    test: dict[str, float] | None = None  # the trainer's test metrics (the source's own, for Source)


@dataclass
class DemoRuns:
    """Every run of the demo, the wall time of each stage, and which target test users have a new item
    as their target (``new_item_mask``)."""

    runs: list[MethodRun]
    stage_seconds: dict[str, float]
    new_item_mask: np.ndarray


def new_item_mask(dataset: PreparedDataset) -> np.ndarray:
    """bool ``[n_users]``: the test users whose target is an item made new by the new-item protocol
    (``PreparedDataset.item_is_new``), which no training or validation input contains."""
    _, targets = stage_histories(dataset, "test")
    return np.asarray(dataset.item_is_new, dtype=bool)[np.asarray(targets, dtype=np.int64)]


def cells(ranks: np.ndarray | None, new_users: np.ndarray, k: int = 10) -> dict[str, float | None]:
    """HR@k and NDCG@k over all users and over the users of ``new_users`` (None where there is no run or
    no such user)."""
    keys = (f"HR@{k}", f"NDCG@{k}", f"new/HR@{k}", f"new/NDCG@{k}")
    if ranks is None:
        return dict.fromkeys(keys)
    hits, gains = hit_per_user(ranks, k), ndcg_per_user(ranks, k)
    new = np.asarray(new_users, dtype=bool)
    values = [hits.mean(), gains.mean()]
    values += [hits[new].mean(), gains[new].mean()] if new.any() else [None, None]
    return {key: None if v is None else float(v) for key, v in zip(keys, values, strict=True)}


def run_all(source: PreparedDataset, target: PreparedDataset, config: DemoConfig,
            progress: bool = True) -> DemoRuns:  # fmt: skip
    """Pre-train on ``source`` once per seed, run every method and seed on ``target``, then the scarcity
    grid (the runs on all users are shared with the main table)."""
    needs_source = bool({"HasPT", "Zero-shot"} & {*config.methods, *config.scarcity_methods})
    grid = [(f, m, s) for f in config.fractions for m in config.scarcity_methods for s in config.grid_seeds]
    trained = {(m, s, 1.0) for m in config.methods if m in TRAINED for s in config.seeds} | set(
        (m, s, f) for f, m, s in grid
    )
    runner = _Runner(source, target, config, progress, total=len(config.seeds) * needs_source + len(trained))
    stages: dict[str, float] = {}

    started = time.perf_counter()
    sources = {seed: runner.source(seed) for seed in config.seeds} if needs_source else {}
    stages["source pre-training"] = time.perf_counter() - started

    started = time.perf_counter()
    runs = list(sources.values())
    for method in config.methods:
        if method == "Popularity":
            runs.append(runner.popularity())
        elif method == "Zero-shot":
            runs += [runner.zero_shot(seed) for seed in config.seeds]
        else:
            runs += [runner.trained(method, seed, 1.0) for seed in config.seeds]
    stages["target, all users"] = time.perf_counter() - started

    started = time.perf_counter()
    for fraction, method, seed in grid:
        run = runner.trained(method, seed, fraction)
        if all(run is not other for other in runs):  # the runs on all users are the main table's
            runs.append(run)
    stages["target scarcity"] = time.perf_counter() - started
    return DemoRuns(runs, stages, new_item_mask(target))


class _Runner:
    """Trains (or finds finished) each run once; keeps the count for the progress lines."""

    def __init__(self, source: PreparedDataset, target: PreparedDataset, config: DemoConfig,
                 progress: bool, total: int) -> None:  # fmt: skip
        self.source_data, self.target = source, target
        self.config, self.progress = config, progress
        self.out = Path(config.output_dir)
        self.done: dict[tuple[str, int, float], MethodRun] = {}
        self.step, self.total = 0, total

    def source_dir(self, seed: int) -> Path:
        return self.out / f"source-seed{seed}"

    def source(self, seed: int) -> MethodRun:
        """The pre-training of ``seed`` on the source platform (NoPT's model, the source's own test)."""
        self.step += 1
        data = self.source_data
        logger.info(f"[{self.step}/{self.total}] pre-training on the source, seed {seed} "
                    f"({data.n_users} users, {data.n_items} items)")  # fmt: skip
        run_config = train_config(self.config, data, self.source_dir(seed), "NoPT", seed,
                                  self.config.source_epochs)  # fmt: skip
        return self._train(SOURCE, seed, 1.0, run_config, keep_ranks=False)

    def trained(self, method: str, seed: int, fraction: float) -> MethodRun:
        key = (method, seed, fraction)
        if key in self.done:
            return self.done[key]
        self.step += 1
        share = "all users" if fraction == 1.0 else f"{fraction:.0%} of the users"
        logger.info(f"[{self.step}/{self.total}] {method} on the target, seed {seed}, {share}")
        name = f"{method}-seed{seed}" if fraction == 1.0 else f"{method}-users{fraction:g}-seed{seed}"
        run_config = train_config(self.config, self.target, self.out / name, method, seed, self.config.epochs,
                                  user_fraction=fraction)  # fmt: skip
        config = self.config
        patience = scaled_patience(config.patience, self.target.n_users, config.batch_size, fraction)
        run_config = replace(run_config, patience=patience)
        if method == "HasPT":
            # Seed s starts from the source pre-trained with seed s: HasPT's spread includes the source's.
            checkpoint = self.source_dir(seed) / "best"
            if not (checkpoint / "config.json").is_file():
                logger.warning(f"      no HasPT seed {seed}: its source pre-training collapsed")
                self.done[key] = MethodRun(method, seed, fraction)  # every cell missing, not a run
                return self.done[key]
            run_config = replace(run_config, init_checkpoint=str(checkpoint))
        self.done[key] = self._train(method, seed, fraction, run_config, keep_ranks=True)
        return self.done[key]

    def popularity(self) -> MethodRun:
        from transrec.models.baselines import BASELINES

        started = time.perf_counter()
        ranks = scorer_ranks(self.target, BASELINES.get("popularity")(self.target, 0))
        seconds = time.perf_counter() - started
        return MethodRun("Popularity", self.config.seeds[0], ranks=ranks, seconds=seconds)

    def zero_shot(self, seed: int) -> MethodRun:
        started = time.perf_counter()
        checkpoint = self.source_dir(seed) / "best"
        ranks = None
        if (checkpoint / "config.json").is_file():  # a collapsed source has no checkpoint to apply
            ranks = checkpoint_ranks(checkpoint, self.target)
            logger.info(f"      zero-shot, source seed {seed}: NDCG@10 {ndcg_per_user(ranks).mean():.4f}")
        return MethodRun("Zero-shot", seed, ranks=ranks, seconds=time.perf_counter() - started)

    def _train(self, method: str, seed: int, fraction: float, run_config, keep_ranks: bool) -> MethodRun:
        try:
            result = train(run_config, progress=self.progress)
        except TrainingCollapsed as err:
            logger.warning(f"      {method} seed {seed} collapsed: {err}")
            return MethodRun(method, seed, fraction, stop="collapsed")
        out = Path(result.output_dir)
        curve = [row["valid_NDCG@10"] for row in _metrics(out)]
        # Early stopping ended the run when its last `patience` epochs brought no better validation NDCG@10.
        stop = "patience" if result.epochs_run - result.best_epoch >= run_config.patience else "cap"
        ranks = _stored_ranks(out, run_config, self.target) if keep_ranks else None
        test = result.test or {}
        logger.info(f"      test NDCG@10 {test.get('NDCG@10', float('nan')):.4f} ({result.seconds:.0f} s, "
                    f"best epoch {result.best_epoch} of {result.epochs_run}, stopped by {stop})")  # fmt: skip
        return MethodRun(method, seed, fraction, ranks, curve, result.seconds, result.epochs_run,
                         result.best_epoch, stop, test)  # fmt: skip


def scaled_patience(patience: int, n_users: int, batch_size: int, fraction: float) -> int:
    """``patience`` epochs on all users, as the same number of optimizer steps on ``fraction`` of them.

    An epoch on 10% of the target's users is one step where an epoch on all of them is four (471 users,
    128 a batch): a patience of 3 epochs would stop such a run after three noisy validations of three
    steps, before a fine-tuned model has recovered from its first steps. Counting patience in steps
    gives every fraction the same number of steps without improvement."""
    steps = math.ceil(n_users / batch_size)
    steps_at_fraction = math.ceil(max(1, round(fraction * n_users)) / batch_size)
    return max(patience, math.ceil(patience * steps / steps_at_fraction))


def _metrics(out: Path) -> list[dict[str, Any]]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _stored_ranks(out: Path, run_config, dataset: PreparedDataset) -> np.ndarray:
    """The run's per-user test ranks; a run finished before the trainer kept them is evaluated again."""
    path = out / TEST_RANKS_FILE
    if path.is_file():
        stored = np.load(path)
        if len(stored["ranks"]) == dataset.n_users:
            return stored["ranks"]
    logger.info(f"      {out} has no {TEST_RANKS_FILE}: evaluating its best checkpoint again")
    return checkpoint_ranks(out / "best", dataset, run_config.device)


def scorer_ranks(dataset: PreparedDataset, scorer, batch_size: int = 1024) -> np.ndarray:
    """Each test user's rank under a non-learned scorer (``models.baselines``), history excluded, as
    ``evaluation.protocol.evaluate_scorer`` ranks them."""
    from transrec.evaluation.ranking import target_ranks

    histories, targets = stage_histories(dataset, "test")
    ranks = []
    for start in range(0, dataset.n_users, batch_size):
        users = np.arange(start, min(start + batch_size, dataset.n_users))
        batch = [histories[u] for u in users]
        exclude = [torch.from_numpy(h.astype(np.int64)) for h in batch]
        scores = scorer(users, batch)
        ranks.append(target_ranks(scores, torch.from_numpy(targets[users].astype(np.int64)), exclude).numpy())
    return np.concatenate(ranks) if ranks else np.zeros(0, dtype=np.int64)


def checkpoint_ranks(checkpoint: Path, dataset: PreparedDataset, device: str = "auto") -> np.ndarray:
    """Each test user's rank under a saved model (zero-shot: a source checkpoint on the target)."""
    from transrec.data.item_content import ItemContent
    from transrec.evaluation.model_eval import evaluate_model_detailed
    from transrec.models.recommender import SequentialRecommender
    from transrec.training.checkpoint import check_tokenizer
    from transrec.training.trainer import resolve_device

    torch_device = resolve_device(device)
    model = SequentialRecommender.from_pretrained(checkpoint, map_location=torch_device)
    model.attach_features(dataset)
    if model.item_encoder.needs_text:
        check_tokenizer(model.config, dataset, checkpoint)
    content = ItemContent(dataset, text=model.item_encoder.needs_text, image=model.item_encoder.needs_image)
    evaluation = evaluate_model_detailed(model, dataset, content, "test", (10,), device=torch_device)
    return evaluation.ranks
