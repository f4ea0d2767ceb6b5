"""The generated interaction logs and the measured stages of ``bench_scaling.py`` (one stage per process).

The generator (``generate_log``), seeded and fully vectorised:

- sequence lengths: ``min_length`` plus a geometric draw, so the mean is ``mean_length`` (defaults 5 and
  20: every user passes the papers' 5-core, and the lengths have the long tail of real logs);
- items: drawn i.i.d. from a Zipf-like popularity, P(item of popularity rank r) proportional to
  1 / r^``zipf`` (default 1.0), the ranks mapped to item ids by a seeded permutation;
- coverage: ``n_items`` of the interaction slots, chosen at random, are overwritten with a permutation of
  all items, so every item of the catalogue occurs at least once and the prepared catalogue has the
  requested size (this needs at least as many interactions as items; at the items axis's largest point
  half of the slots are such uniform draws, a flatter popularity than Zipf's);
- timestamps: each user's interactions one minute apart, users one after the other in the file;
- texts: eight pseudo-words per item from a 5,000-word vocabulary of syllables (for the text encoders;
  the words are not English, so MiniLM splits them into several word pieces, as it does rare words).

Repeated (user, item) pairs are left in the log: preparation removes them (``dedup: first``) and the
prepared counts are what the report gives.
"""

from __future__ import annotations

import json
import os
import resource
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench_training import run_config
from transrec.data.prepare import PrepareConfig, prepare
from transrec.data.prepared import PreparedDataset
from transrec.data.schema import RawDataset, RawInteractions, RawItems
from transrec.evaluation.model_eval import evaluate_model
from transrec.models.item_encoders.text import tiny_text
from transrec.models.recommender import SequentialRecommender, dataset_tokenizer
from transrec.training.batches import SequenceTrainingData, make_loader
from transrec.training.precision import Precision
from transrec.training.step import TrainingObjective
from transrec.training.trainer import build_optimizer, item_content, seed_everything

SYLLABLES = ("ka", "lo", "mi", "ren", "tu", "sha", "vo", "pel", "dri", "an", "os", "qui", "ber", "za", "ne",
             "fit", "gor", "ul", "yam", "cle")  # fmt: skip
N_WORDS = 5_000
WORDS_PER_TEXT = 8
#: preparation of the sweep: the papers' 5-core on users (the generator guarantees it), every item kept.
PREPARE = {"user_k": 5, "item_k": 1, "max_text_tokens": 16}
#: the text encoder of the sweep: a randomly initialised 2-layer BERT (hidden 32) on the hash tokenizer,
#: its top layer trained, the bottom one cached (speed does not depend on the weights being pre-trained).
TINY_TEXT = tiny_text(hidden_size=32, layers=2, freeze="top_k", trainable_blocks=1)
#: the real all-MiniLM-L6-v2 (6 layers, hidden 384), top 2 layers trained, as in ``bench_training``.
MINILM = {"pretrained": "minilm", "freeze": "top_k", "trainable_blocks": 2}


@dataclass(frozen=True)
class LogSpec:
    """A generated log: ``n_users`` sequences over ``n_items`` items (see the module docstring)."""

    n_users: int
    n_items: int
    mean_length: float = 20.0
    min_length: int = 5
    zipf: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_users < 1 or self.n_items < 2:
            raise ValueError(f"a log needs users >= 1 and items >= 2, got {self.n_users} and {self.n_items}")
        if self.mean_length <= self.min_length:
            raise ValueError(f"mean_length {self.mean_length} must exceed min_length {self.min_length}")


def generate_log(spec: LogSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(users, items, timestamps)`` of the log in file order: 0-based user and item codes, seconds.

    Raises ValueError when the log would have fewer interactions than items (no full coverage).
    """
    rng = np.random.default_rng(spec.seed)
    extra = spec.mean_length - spec.min_length
    lengths = spec.min_length + rng.geometric(1.0 / (extra + 1.0), spec.n_users) - 1
    total = int(lengths.sum())
    if total < spec.n_items:
        raise ValueError(
            f"{spec.n_users} users of mean length {spec.mean_length} give {total} interactions, fewer than "
            f"the {spec.n_items} items: raise the user count so that every item can occur"
        )
    users = np.repeat(np.arange(spec.n_users, dtype=np.int64), lengths)
    weights = 1.0 / np.arange(1, spec.n_items + 1, dtype=np.float64) ** spec.zipf
    cdf = np.cumsum(weights / weights.sum())
    ranks = np.minimum(np.searchsorted(cdf, rng.random(total), side="right"), spec.n_items - 1)
    items = rng.permutation(spec.n_items)[ranks]
    items[rng.choice(total, spec.n_items, replace=False)] = rng.permutation(spec.n_items)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    timestamps = (np.arange(total) - starts).astype(np.float64) * 60.0 + users * 1e6
    return users, items, timestamps


def item_texts(n_items: int, seed: int = 0) -> list[str]:
    """``n_items`` texts of ``WORDS_PER_TEXT`` pseudo-words each, seeded."""
    rng = np.random.default_rng(seed + 1)
    picks = rng.integers(0, len(SYLLABLES), (N_WORDS, 3))
    vocabulary = np.array(["".join(SYLLABLES[s] for s in row) for row in picks], dtype=object)
    words = vocabulary[rng.integers(0, N_WORDS, (n_items, WORDS_PER_TEXT))]
    return [" ".join(row) for row in words]


def raw_dataset(spec: LogSpec) -> RawDataset:
    """The generated log as a loader would return it (string ids, texts, no images)."""
    users, items, timestamps = generate_log(spec)
    user_ids = np.array([f"u{k}" for k in range(spec.n_users)], dtype=object)
    item_ids = [f"i{k}" for k in range(spec.n_items)]
    interactions = RawInteractions(user_ids[users], np.array(item_ids, dtype=object)[items], timestamps)
    catalogue = RawItems(
        ids=item_ids, texts=item_texts(spec.n_items, spec.seed), images=[None] * spec.n_items
    )
    return RawDataset(
        name=f"scaling-u{spec.n_users}-i{spec.n_items}", interactions=interactions, items=catalogue
    )


def resident_mb() -> float:
    """Resident memory of this process now, in MiB (Linux ``/proc/self/statm``)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    """High-water mark of this process's resident memory, in MiB (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


#: resident memory of a worker once its modules are imported, before any data: ``peak_mb - BASE_MB`` is
#: what the measured stage added (torch alone is a few hundred MiB, which hides any growth at small sizes)
BASE_MB = resident_mb()


class Clock:
    """Wall and CPU seconds since it was made: on a shared machine the wall time counts the other
    processes too, the CPU time of this (one-thread) process is its own work."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> dict[str, float]:
        return {"seconds": time.perf_counter() - self.wall, "cpu_seconds": time.process_time() - self.cpu}


def emit(record: dict[str, Any]) -> None:
    """Hand one finished figure to the parent on stdout (one JSON line), so that a figure measured before
    the process is stopped at its time cap is kept."""
    peak = peak_mb()
    record = {
        **record,
        "peak_mb": round(peak, 1),
        "base_mb": round(BASE_MB, 1),
        "added_mb": round(peak - BASE_MB, 1),
    }
    print("RESULT " + json.dumps(record), flush=True)


def prepared_path(workdir: Path, spec: LogSpec, tokenizer: str = "hash") -> Path:
    return workdir / f"u{spec.n_users}-i{spec.n_items}" / f"prepared-{tokenizer}"


def ensure_prepared(workdir: Path, spec: LogSpec, tokenizer: str = "hash") -> Path:
    """The prepared dataset of ``spec``, prepared here (before any clock) when no ``prepare`` process left
    one (MiniLM's token ids, or a stage run on its own with ``--workers``)."""
    path = prepared_path(workdir, spec, tokenizer)
    if not path.exists():
        prepare(raw_dataset(spec), PrepareConfig(**PREPARE, tokenizer=tokenizer), path, progress=False)
    return path


def run_prepare(workdir: Path, spec: LogSpec, tokenizer: str = "hash") -> None:
    """Time ``transrec.data.prepare`` on the generated log (the log is built before the clock)."""
    raw = raw_dataset(spec)
    config, output = PrepareConfig(**PREPARE, tokenizer=tokenizer), prepared_path(workdir, spec, tokenizer)
    before = resident_mb()
    clock = Clock()
    dataset = prepare(raw, config, output, overwrite=True, progress=False)
    timing = clock.read()
    counts = dataset.meta["counts"]
    emit({"stage": "prepare", **timing, "rss_before_mb": round(before, 1),
          "raw_interactions": counts["raw_interactions"], "users": counts["users"],
          "items": counts["items"], "interactions": counts["interactions"], "mean_length": spec.mean_length,
          "min_length": spec.min_length, "zipf": spec.zipf, "seed": spec.seed})  # fmt: skip


def run_epoch(workdir: Path, spec: LogSpec, model: str, batch_size: int, max_steps: int = 0) -> None:
    """Time one training epoch (every user's last window, as ``windows: last``) of ``model``: ``idrec``,
    ``morec`` (the tiny BERT) or ``minilm``; for the text models the trunk cache's build first.

    With ``max_steps`` (> 0) an epoch of more steps is timed over its first ``max_steps`` steps and
    extrapolated to all of them (``extrapolated``; the timed part is kept as ``timed_*``)."""
    path = ensure_prepared(workdir, spec, "minilm" if model == "minilm" else "hash")
    encoder, items, variant = {"idrec": ("id", {}, "no cache"), "morec": ("text", TINY_TEXT, "cache"),
                               "minilm": ("text", MINILM, "cache")}[model]  # fmt: skip
    config = run_config(str(path), encoder, items, variant, "cpu", workdir / "runs" / model, batch_size)
    device = torch.device("cpu")
    started = time.perf_counter()
    dataset = PreparedDataset(config.dataset)
    seed_everything(config.seed)
    net = SequentialRecommender(replace(config.model, n_items=dataset.n_items, n_users=dataset.n_users,
                                        tokenizer=dataset_tokenizer(dataset.meta))).train()  # fmt: skip
    setup = time.perf_counter() - started
    if encoder == "text":
        clock = Clock()
        content = item_content(
            net, dataset, config, device, workdir / "runs" / model / "cache", progress=False
        )
        emit({"stage": f"{model}-cache", **clock.read(), "items": dataset.n_items})
    else:
        content = item_content(net, dataset, config, device, workdir / "runs" / model, progress=False)
    started = time.perf_counter()
    data = SequenceTrainingData(dataset, max_len=config.model.max_len, mode="s2s", n_negatives=1,
                                content=content, seed=config.seed)  # fmt: skip
    objective = TrainingObjective(config, dataset, content, device)
    optimizer = build_optimizer(net, config.optim)
    precision = Precision(config.precision, device)
    setup += time.perf_counter() - started
    loader = make_loader(data, config.batch_size, shuffle=True, num_workers=0, epoch=0)
    clock, steps, distinct = Clock(), 0, 0
    for batch in loader:  # collation included: an epoch is what a run waits for
        distinct += len(batch["unique_items"])
        with precision.autocast():
            loss = objective.loss(net, batch)
        optimizer.zero_grad(set_to_none=True)
        precision.backward_and_step(loss, optimizer, net.parameters(), config.optim.grad_clip)
        steps += 1
        if steps == max_steps:
            break
    timed, epoch_steps = clock.read(), len(loader)
    # the loader's start (its shuffle) is in the first step; the rest of the epoch runs the same steps
    scale = epoch_steps / steps
    emit({"stage": f"{model}-epoch", "seconds": timed["seconds"] * scale,
          "cpu_seconds": timed["cpu_seconds"] * scale, "extrapolated": scale > 1, "timed_steps": steps,
          "timed_seconds": timed["seconds"], "timed_cpu_seconds": timed["cpu_seconds"],
          "setup_seconds": setup, "steps": epoch_steps, "sequences": len(data), "batch_size": batch_size,
          "distinct_items_per_step": distinct / max(steps, 1)})  # fmt: skip


def run_evaluate(workdir: Path, spec: LogSpec) -> None:
    """Time full-ranking evaluation (test targets, history excluded) of every user by an IDRec-SASRec
    (untrained: the cost does not depend on the weights)."""
    path = ensure_prepared(workdir, spec)
    config = run_config(str(path), "id", {}, "no cache", "cpu", workdir / "runs", 64)
    dataset = PreparedDataset(config.dataset)
    seed_everything(0)
    net = SequentialRecommender(replace(config.model, n_items=dataset.n_items, n_users=dataset.n_users))
    content = item_content(net, dataset, config, torch.device("cpu"), workdir / "runs", progress=False)
    clock = Clock()
    metrics = evaluate_model(net, dataset, content, "test", batch_size=config.eval_batch_size)
    emit({"stage": "evaluate", **clock.read(), "users": dataset.n_users,
          "items": dataset.n_items, "scores": dataset.n_users * dataset.n_items,
          "NDCG@10": metrics["NDCG@10"]})  # fmt: skip
