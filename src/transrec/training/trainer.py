"""The training loop: one function for pre-training, fine-tuning and training from scratch.

``train(config)`` prepares the data pipeline and the model (optionally loading components of a source
checkpoint: HasPT transfer), trains with AdamW (separate learning rate and weight decay for the
modality backbones), evaluates on validation after every epoch (full ranking, NDCG@10), keeps the best
checkpoint, stops early, detects collapse, and evaluates the test set once, at the end, on the best
checkpoint. Everything random is a function of (seed, epoch), and ``last/`` is rewritten atomically
after every epoch, so a killed run resumed with the same config ends with the same metrics.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm

from transrec.config import ConfigError, to_dict
from transrec.data.item_content import ItemContent
from transrec.data.prepared import PreparedDataset
from transrec.errors import TransrecError
from transrec.evaluation.model_eval import evaluate_model, evaluate_model_detailed
from transrec.models.recommender import (
    WEIGHTS_FILE,
    SequentialRecommender,
    dataset_tokenizer,
    read_model_config,
)
from transrec.models.side_features import feature_vocabularies
from transrec.training.batches import SequenceTrainingData, make_loader
from transrec.training.checkpoint import (
    check_tokenizer,
    load_components,
    load_last_optimizer,
    load_last_weights,
    load_model_state,
    model_state,
    optimizer_tensors,
    save_last,
    save_model,
)
from transrec.training.config import OptimConfig, TrainConfig
from transrec.training.fsdp import full_parameters, shard
from transrec.training.precision import Precision
from transrec.training.run_directory import open_run_directory, record_resumed_config
from transrec.training.step import TrainingObjective
from transrec.training.tracking import RunTracking, failure_status, open_tracking
from transrec.training.validation import validate_config
from transrec.utils.distributed import DistributedContext, join_process_group, local_device
from transrec.utils.io import atomic_write_text

logger = logging.getLogger(__name__)

TRUNK_CACHE_DIR = "trunk_cache"  # a memory-mapped frozen-trunk cache too large for memory; removed at the end
#: Every test user's target and rank (1 = best) on the best checkpoint, for paired significance tests
#: across runs (``evaluation.significance``): arrays ``users``, ``targets``, ``ranks``.
TEST_RANKS_FILE = "test_ranks.npz"

#: Called with an event name ("step", "epoch") and a dict of details; may raise to stop the run.
Hook = Callable[[str, dict[str, Any]], None]


class TrainingCollapsed(TransrecError, RuntimeError):
    """The run collapsed (non-finite loss, or validation metrics at the level of a random ranking)."""


@dataclass
class RunResult:
    status: str  # "finished" or "collapsed"
    best_epoch: int
    best_valid: dict[str, float]
    test: dict[str, float] | None
    epochs_run: int
    seconds: float
    output_dir: Path


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when there is one, else the CPU) or a torch device name; ConfigError for a name torch
    does not know or a CUDA device this machine lacks."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device: {name!r} is not a device (auto, cpu, cuda, cuda:<index>, mps)") from err
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"device: {name}, but this machine has {torch.cuda.device_count()} CUDA devices")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_optimizer(model: SequentialRecommender, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW with two parameter groups: modality backbones (``encoder_lr``) and the rest (``lr``)."""
    encoder_ids = {id(p) for p in model.item_encoder.modality_parameters()}
    encoder = [p for p in model.parameters() if p.requires_grad and id(p) in encoder_ids]
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in encoder_ids]
    groups = [{"params": rest, "lr": config.lr, "weight_decay": config.weight_decay, "name": "recommender"}]
    if encoder:
        groups.append(
            {
                "params": encoder,
                "lr": config.encoder_lr,
                "weight_decay": config.encoder_weight_decay,
                "name": "encoder",
            }
        )
    return torch.optim.AdamW(groups, betas=tuple(config.betas))


def check_mode(model: SequentialRecommender, mode: str) -> None:
    """Refuse training modes that leak the target or that the user encoder cannot be evaluated after:
    a bidirectional encoder trained S2S would see each position's next item; a masked-item model is
    evaluated through its mask slot, so it must be trained by masking (and only it can be)."""
    encoder = type(model.user_encoder).__name__
    if mode == "masked" and not model.user_encoder.masked_training:
        raise ConfigError(f"mode=masked needs a masked-item user encoder (bert4rec); {encoder} is not one")
    if mode != "masked" and model.user_encoder.masked_training:
        raise ConfigError(f"{encoder} is trained by masked-item prediction: use mode=masked, not {mode}")
    if mode == "s2s" and not model.user_encoder.causal:
        raise ConfigError(f"{encoder} is bidirectional: S2S training would show it every next item")


def item_content(
    model: SequentialRecommender,
    dataset: PreparedDataset,
    config: TrainConfig,
    device: torch.device,
    directory: Path,
    progress: bool,
) -> ItemContent:
    """The item content the run reads, after building the frozen-trunk cache when the model has a
    frozen trunk and ``config.trunk_cache`` is on (then images are no longer loaded); a cache too large
    for memory is memory-mapped in ``directory``. ``progress``: this process logs the time the cache took."""
    encoder = model.item_encoder
    content = ItemContent(dataset, text=encoder.needs_text, image=encoder.needs_image)
    if not (config.trunk_cache and encoder.has_frozen_trunk) or config.reference_path:
        return content
    started = time.perf_counter()
    cached = encoder.build_trunk_cache(content, device=device, max_memory_mb=config.trunk_cache_max_memory_mb,
                                       directory=directory)  # fmt: skip
    _log(progress, f"frozen-trunk cache: {cached} items in {time.perf_counter() - started:.1f} s")
    content.load_pixels = encoder.reads_pixels  # a cached image trunk never reads pixels again
    return content


def random_ndcg_at_10(dataset: PreparedDataset) -> float:
    """Expected validation NDCG@10 of a uniformly random ranking (history excluded)."""
    history = float(np.mean(dataset.split.train_ends - dataset.split.starts))
    candidates = max(dataset.n_items - history, 1.0)
    return sum(1.0 / math.log2(r + 1) for r in range(1, min(10, int(candidates)) + 1)) / candidates


def train(config: TrainConfig, *, progress: bool = True, hook: Hook | None = None) -> RunResult:
    """Run ``config``; returns the result and writes everything into ``config.output_dir``.

    Under ``torchrun --nproc_per_node N`` (or inside an initialised process group) the same call trains
    with DDP, or FSDP with ``parallel: fsdp`` (``training.fsdp``): each process takes its share of every
    epoch's users, gradients are averaged, evaluation is sharded and combined exactly, and only rank 0
    writes files (whole tensors, whatever the sharding) and shows progress.
    """
    ctx, owns_group = join_process_group(config.device)
    tracking = open_tracking(config, ctx.is_main)  # ``tracking``: only rank 0 logs
    try:
        return _train(config, ctx, progress and ctx.is_main, hook, tracking)
    except BaseException as err:  # the tracked run ends as the run did
        tracking.finish("collapsed" if isinstance(err, TrainingCollapsed) else failure_status(err))
        raise
    finally:
        if owns_group:
            torch.distributed.destroy_process_group()


def _train(
    config: TrainConfig, ctx: DistributedContext, progress: bool, hook: Hook | None, tracking: RunTracking
) -> RunResult:
    started = time.perf_counter()
    validate_config(config)  # before anything is read, built or written: a refused key costs nothing
    tracking.check_installed()  # every process: a missing package stops them all, with its install command
    out = Path(config.output_dir)
    main = ctx.is_main
    if main:
        out.mkdir(parents=True, exist_ok=True)
    device = local_device(resolve_device(config.device), ctx)
    dataset = PreparedDataset(config.dataset)
    tokenizer = dataset_tokenizer(dataset.meta)
    sizes = {"n_items": dataset.n_items, "n_users": dataset.n_users}
    vocab = feature_vocabularies(dataset.meta, config.model.user_features, config.model.item_features,
                                 dataset.path)  # fmt: skip
    model_config = replace(config.model, **sizes, tokenizer=tokenizer, feature_vocab=vocab)
    # Before any weight is built: a run of another config is refused, a finished one is returned as stored.
    plan = open_run_directory(out, replace(config, model=model_config), ctx)
    for name in plan.restored:
        _log(main, f"{out / name} restored from the copy a killed process had moved aside")
    if plan.collapsed is not None:
        raise TrainingCollapsed(f"{plan.collapsed} (stored in {out}; resume=never trains it again)")
    if plan.finished is not None:
        _log(main, f"{out} holds a finished run: returning its stored result (resume=never trains it again)")
        return _stored_result(plan.finished, out)

    seed_everything(config.seed)  # the same initial weights in every process
    model = SequentialRecommender(model_config).to(device)
    check_mode(model, config.mode)
    if config.init_checkpoint and not plan.resume:  # a resumed run's weights all come from last/
        loaded = load_components(model, config.init_checkpoint, list(config.init_components))
        if any(c.startswith("item_encoder") for c in loaded) and model.item_encoder.needs_text:
            check_tokenizer(read_model_config(config.init_checkpoint), dataset, config.init_checkpoint)
        _log(main, f"loaded {', '.join(f'{c} ({len(k)} tensors)' for c, k in loaded.items())} "
                   f"from {config.init_checkpoint}")  # fmt: skip
    model.attach_features(dataset)
    model.freeze(config.frozen)  # before the optimizer, which then never holds the frozen parameters

    state = {"epoch": 0, "step": 0, "best": -1.0, "best_epoch": -1, "best_valid": {}, "bad_epochs": 0,
             "low_evals": 0}  # fmt: skip
    precision = Precision(config.precision, device)
    ctx.barrier()  # rank 0 has created the run directory
    resuming = plan.resume
    if resuming:
        load_last_weights(out / "last", model)  # before the trunk cache is built from them
    cache_dir = out / TRUNK_CACHE_DIR / f"rank{ctx.rank}"
    content = item_content(model, dataset, config, device, cache_dir, main)
    data = SequenceTrainingData(
        dataset,
        max_len=model_config.max_len,
        mode="cpc" if config.objective == "cpc" else config.mode,
        n_negatives={"bce": config.n_negatives, "cpc": config.cpc.negatives}.get(config.objective, 0),
        positives=config.cpc.positives,
        content=content,
        seed=config.seed,
        mask_prob=config.mask_prob,
        user_fraction=config.user_fraction,
        windows=config.windows,
        window_stride=config.window_stride,
        windows_per_user=config.windows_per_user,
    )
    objective = TrainingObjective(config, dataset, content, device)
    step_module = distributed_step(model, objective, ctx, device, config.parallel)
    # After sharding (FSDP): the optimizer holds each process's shards of the parameters.
    optimizer = build_optimizer(model, config.optim)
    if resuming:
        state = load_last_optimizer(out / "last", optimizer, model)
        precision.load_state_dict(state.pop("loss_scale", {}))
        if main:  # the checkpoint fits: from here on the run continues with this config
            record_resumed_config(out, replace(config, model=model_config), plan)
        changed = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in plan.changed.items())
        _log(main, f"resuming from {out / 'last'} after epoch {state['epoch']}"
                   + (f" with {changed}" if changed else ""))  # fmt: skip
    history = _read_metrics(out / "metrics.jsonl", before_epoch=state["epoch"])
    tracking.start(to_dict(replace(config, model=model_config)), history, resuming)
    random_level = random_ndcg_at_10(dataset)

    for epoch in range(state["epoch"], config.epochs):
        if state["bad_epochs"] >= config.patience:  # stopped early, then killed before the test
            break
        # Dropout and any other torch randomness: a pure function of (seed, epoch, rank), so resuming works.
        torch.manual_seed(config.seed * 100_003 + epoch + 7_919 * ctx.rank)
        data.set_epoch(epoch)
        shard = {"rank": ctx.rank, "world_size": ctx.world_size}
        loader = make_loader(data, config.batch_size, True, config.num_workers, epoch=epoch,
                             reference=config.reference_path, **shard)  # fmt: skip
        model.train()
        epoch_loss, steps = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, disable=not progress)
        for batch in bar:
            with precision.autocast():
                loss = step_module(batch)
            mean_loss = ctx.all_reduce_sum(loss.detach().float().clone()) / ctx.world_size
            if not torch.isfinite(mean_loss):  # the same decision in every process
                _collapse(out, config, epoch, f"the training loss became {mean_loss.item()}", main)
            optimizer.zero_grad(set_to_none=True)
            _warmup(optimizer, config.optim, state["step"])
            precision.backward_and_step(loss, optimizer, model.parameters(), config.optim.grad_clip)
            state["step"] += 1
            epoch_loss += mean_loss.item()
            steps += 1
            bar.set_postfix(loss=f"{epoch_loss / steps:.4f}")
            if hook:
                hook("step", {"epoch": epoch, "step": state["step"], "loss": mean_loss.item()})
        with full_parameters(step_module):  # FSDP: whole in every process while evaluating
            valid = evaluate_model(
                model, dataset, content, "valid", config.ks, config.eval_batch_size, device
            )
        record = {
            "epoch": epoch + 1,
            "loss": epoch_loss / max(steps, 1),
            **{f"valid_{k}": v for k, v in valid.items()},
        }
        history.append(record)
        _log(main, f"epoch {epoch + 1}: loss {record['loss']:.4f}  valid NDCG@10 {valid['NDCG@10']:.4f}  "
                   f"HR@10 {valid['HR@10']:.4f}")  # fmt: skip
        improved = valid["NDCG@10"] > state["best"]
        if improved:
            state.update(best=valid["NDCG@10"], best_epoch=epoch + 1, best_valid=valid, bad_epochs=0)
        else:
            state["bad_epochs"] += 1
        threshold = config.collapse_factor * random_level
        state["low_evals"] = state["low_evals"] + 1 if valid["NDCG@10"] < threshold else 0
        state["epoch"] = epoch + 1
        # Whole tensors, gathered from every process under FSDP: checkpoints never depend on sharding.
        weights = model_state(model, keep=main)
        optimizer_state = optimizer_tensors(optimizer, model, keep=main)
        if main:
            _write_metrics(out / "metrics.jsonl", history)
            if improved:
                save_model(out / "best", model.config, weights)
            save_last(out / "last", model.config, weights, optimizer_state,
                      {**state, "loss_scale": precision.state_dict()})  # fmt: skip
        del weights, optimizer_state
        ctx.barrier()  # best/ and last/ are complete before anyone goes on (or is killed)
        tracking.log_epoch(record)  # once checkpointed: a resumed run logs every epoch once
        if hook:
            with full_parameters(step_module):
                hook("epoch", {"epoch": epoch + 1, "valid": valid, "model": model})
        # A fall from above the random level, or a run that never rose within its grace epochs.
        risen = state["best"] >= threshold or epoch + 1 >= config.collapse_grace
        if state["low_evals"] >= config.collapse_patience and risen:
            _collapse(
                out, config, epoch,
                f"validation NDCG@10 {valid['NDCG@10']:.5f} stayed below {config.collapse_factor} x "
                f"the level of a random ranking ({random_level:.5f}) for {state['low_evals']} evaluations",
                main,
            )  # fmt: skip
        if state["bad_epochs"] >= config.patience:
            _log(main, f"early stop: no better validation NDCG@10 for {config.patience} epochs")
            break

    # The best weights go into this model: its frozen trunk, and so its cache, are those of best/.
    load_model_state(model, load_file(str(out / "best" / WEIGHTS_FILE), device=str(device)))
    with full_parameters(step_module):
        evaluation = evaluate_model_detailed(
            model, dataset, content, "test", config.ks, config.eval_batch_size, device,
            subsets=config.eval_subsets,
        )  # fmt: skip
    test = evaluation.metrics
    model.item_encoder.drop_trunk_cache()
    shutil.rmtree(cache_dir, ignore_errors=True)
    result = RunResult("finished", state["best_epoch"], state["best_valid"], test, state["epoch"],
                       time.perf_counter() - started, out)  # fmt: skip
    if main:
        shutil.rmtree(out / TRUNK_CACHE_DIR, ignore_errors=True)
        atomic_write_text(out / "test_metrics.json", json.dumps(test, indent=2) + "\n")
        _write_test_ranks(out / TEST_RANKS_FILE, evaluation.users, evaluation.targets, evaluation.ranks,
                          evaluation.subsets)  # fmt: skip
        atomic_write_text(out / "result.json", json.dumps(_result_dict(result), indent=2) + "\n")
        tracking.log_test(state["epoch"], test)
        tracking.finish(result.status)
    ctx.barrier()
    return result


class _StepLoss(nn.Module):
    """The training loss of a batch as a module's forward, which DDP needs to synchronise gradients."""

    def __init__(self, model: SequentialRecommender, objective: TrainingObjective, touch_all: bool) -> None:
        super().__init__()
        self.model, self.objective, self.touch_all = model, objective, touch_all

    def forward(self, batch: dict) -> torch.Tensor:
        loss = self.objective.loss(self.model, batch)
        if self.touch_all:
            # A batch may leave some trainable parameters unused (e.g. no image item in a mom batch);
            # a zero-weighted term gives them a zero gradient, so DDP needs no find_unused_parameters.
            loss = loss + sum(p.view(-1)[0] * 0.0 for p in self.model.parameters() if p.requires_grad)
        return loss


def distributed_step(
    model: SequentialRecommender,
    objective: TrainingObjective,
    ctx: DistributedContext,
    device: torch.device,
    parallel: str = "ddp",
) -> nn.Module:
    """The module whose forward gives a batch's loss: plain in one process; in several, DDP-wrapped, or
    with ``parallel="fsdp"`` the root of the model sharded in place (``training.fsdp``)."""
    module = _StepLoss(model, objective, touch_all=ctx.world_size > 1 and parallel == "ddp")
    if ctx.world_size == 1:
        return module
    if parallel == "fsdp":
        return shard(module, model, device)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def _warmup(optimizer: torch.optim.Optimizer, config: OptimConfig, step: int) -> None:
    if config.warmup_steps <= 0:
        return
    scale = min(1.0, (step + 1) / config.warmup_steps)
    for group in optimizer.param_groups:
        base = config.encoder_lr if group.get("name") == "encoder" else config.lr
        group["lr"] = base * scale


def _collapse(out: Path, config: TrainConfig, epoch: int, reason: str, write: bool = True) -> None:
    message = (
        f"training collapsed in epoch {epoch + 1}: {reason}. Learning rates: lr={config.optim.lr}, "
        f"encoder_lr={config.optim.encoder_lr}; lower them (MoRec section 7 reports collapse with too "
        "high encoder learning rates) or check the data"
    )
    if write:
        atomic_write_text(
            out / "result.json", json.dumps({"status": "collapsed", "reason": message}, indent=2) + "\n"
        )
    raise TrainingCollapsed(message)


def _stored_result(stored: dict[str, Any], out: Path) -> RunResult:
    """The ``RunResult`` of a finished run, from its ``result.json``."""
    return RunResult(stored["status"], stored["best_epoch"], stored["best_valid"], stored["test"],
                     stored["epochs_run"], stored["seconds"], out)  # fmt: skip


def _result_dict(result: RunResult) -> dict[str, Any]:
    return {
        "status": result.status, "best_epoch": result.best_epoch, "best_valid": result.best_valid,
        "test": result.test, "epochs_run": result.epochs_run, "seconds": round(result.seconds, 2),
    }  # fmt: skip


def _write_test_ranks(path: Path, users: np.ndarray, targets: np.ndarray, ranks: np.ndarray,
                      subsets: dict[str, np.ndarray] | None = None) -> None:  # fmt: skip
    """``users``, ``targets``, ``ranks`` and each eval subset's membership as ``subset_<name>`` (bool per
    user), which paired tests on a subset's metric need (``bench.paired``)."""
    # Written before result.json, and atomically: a run whose result is stored always has its ranks.
    partial = path.with_name(path.name + ".partial")
    masks = {f"subset_{name}": np.asarray(mask, dtype=bool) for name, mask in (subsets or {}).items()}
    with partial.open("wb") as handle:
        np.savez(handle, users=users.astype(np.int64), targets=targets.astype(np.int64),
                 ranks=ranks.astype(np.int64), **masks)  # fmt: skip
    partial.replace(path)


def _read_metrics(path: Path, before_epoch: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row for row in rows if row["epoch"] <= before_epoch]


def _write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def _log(enabled: bool, message: str) -> None:
    if enabled:  # one process reports: rank 0 under torchrun
        logger.info(message)
