"""The transfer demo: pre-train on the source platform, compare transfer methods on the target.

Every method trains the same SASRec user encoder with the same objective, budget and protocol on the
target platform (5-core, leave-one-out, full ranking, history excluded); only the item side and the
initialisation differ:

    Popularity  the most popular training items (a non-learned reference)
    IDRec       item ID embeddings (nothing transfers)
    TS          two-stage: frozen MiniLM, its pooled output cached, a 2-layer DNN on top (NoPT)
    NoPT        MiniLM with its top block(s) fine-tuned end to end, user encoder from scratch
    HasPT       NoPT's model with every weight from the source checkpoint
    Zero-shot   the source checkpoint applied to the target test set, no training

With ``modality: mom`` every item keeps one modality (its text or its rendered cover) and the item
encoder is MiniLM or EfficientNet-Lite0 per item (TransRec's mixture of modality).
The frozen bottom of every encoder is computed once (``trunk_cache``), which is what makes end-to-end
top-block training fit a laptop CPU here.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from transrec.config import to_dict
from transrec.data.prepare import PrepareConfig, prepare
from transrec.data.prepared import PreparedDataset
from transrec.evaluation.protocol import evaluate_scorer
from transrec.models.baselines import BASELINES
from transrec.models.recommender import ModelConfig
from transrec.training.checkpoint import evaluate_checkpoint
from transrec.training.config import OptimConfig, TrainConfig
from transrec.training.trainer import train

logger = logging.getLogger(__name__)

METHODS = ("Popularity", "IDRec", "TS", "NoPT", "HasPT", "Zero-shot")


@dataclass
class DemoConfig:
    """What the demo runs.

    Args:
        output_dir: results and every run directory.
        seeds: one target run per method and seed (the source is pre-trained once, with the first).
        modality: ``text`` (every item through MiniLM) or ``mom`` (each item keeps one modality).
        users_per_platform: keep this many users per platform (None: all); ``--quick`` uses a slice.
        split_seed: seed of the user and item halves.
        d_model, max_len, n_layers: the SASRec recommender (shared by every method).
        trainable_blocks: top blocks of MiniLM (and EfficientNet) fine-tuned end to end.
        epochs, patience, batch_size: per run; the source pre-training gets ``source_epochs``.
        lr, encoder_lr: AdamW learning rates of the recommender and of the modality encoders.
        image_size: side of the stored covers (``mom`` only; EfficientNet-Lite0 sees 224).
    """

    output_dir: str = "runs/demo"
    seeds: tuple[int, ...] = (0, 1, 2)
    modality: Literal["text", "mom"] = "text"
    users_per_platform: int | None = None
    split_seed: int = 0
    d_model: int = 64
    max_len: int = 20
    n_layers: int = 2
    trainable_blocks: int = 1
    epochs: int = 12
    source_epochs: int = 12
    patience: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    encoder_lr: float = 1e-4
    image_size: int = 224
    methods: tuple[str, ...] = field(default=METHODS)

    @classmethod
    def quick(cls, **overrides: Any) -> DemoConfig:
        """The same pipeline on a slice: 60 users per platform, 2 seeds, 2 epochs."""
        options: dict[str, Any] = dict(users_per_platform=60, seeds=(0, 1), epochs=2, source_epochs=2,
                                       max_len=10, image_size=64, output_dir="runs/demo-quick")  # fmt: skip
        options.update(overrides)
        return cls(**options)


@dataclass
class MethodRun:
    method: str
    seed: int
    test: dict[str, float]
    valid_curve: list[float]  # validation NDCG@10 per epoch (empty for zero-shot)
    seconds: float


def prepare_platforms(raw_folder: Path, root: Path, config: DemoConfig) -> tuple[PreparedDataset, ...]:
    """Split MovieLens-100K into the two platforms and prepare each (reused when already prepared)."""
    from transrec.data.loaders import load_raw
    from transrec.demo.split import split_platforms

    prep = PrepareConfig(tokenizer="minilm", modality="mom" if config.modality == "mom" else "text",
                         image_size=config.image_size, seed=config.split_seed)  # fmt: skip
    slice_name = "all" if config.users_per_platform is None else f"{config.users_per_platform}u"
    base = root / "prepared" / f"ml-100k-demo-{config.modality}-{slice_name}-s{config.split_seed}"
    wanted = to_dict(prep)
    if all(_prepared_with(base / part, wanted) for part in ("source", "target")):
        logger.info(f"using the prepared platforms in {base}")
        return PreparedDataset(base / "source"), PreparedDataset(base / "target")
    logger.info("splitting MovieLens-100K into a source and a target platform (no shared user or item)...")
    raw = load_raw("movielens", raw_folder)
    parts = split_platforms(raw, config.split_seed, config.users_per_platform)
    out = []
    for part, platform in zip(("source", "target"), parts, strict=True):
        source = {"format": "movielens", "path": str(raw_folder), "split": part, "seed": config.split_seed,
                  "users_per_platform": config.users_per_platform}  # fmt: skip
        out.append(prepare(platform, prep, base / part, source=source, overwrite=True, progress=False))
    return tuple(out)


def _prepared_with(path: Path, wanted: dict) -> bool:
    meta = path / "meta.json"
    return meta.is_file() and json.loads(meta.read_text()).get("config") == wanted


def item_encoder(config: DemoConfig, method: str) -> tuple[str, dict[str, Any]]:
    """The item encoder (registered name, config) of a method."""
    if method == "IDRec":
        return "id", {}
    if method == "TS":
        text = {"pretrained": "minilm", "pooling": "mean", "freeze": "all", "dnn_layers": 2}
        image = {"backbone": "efficientnet-lite0", "freeze": "all", "dnn_layers": 2}
    else:
        top = {"freeze": "top_k", "trainable_blocks": config.trainable_blocks}
        text = {"pretrained": "minilm", "pooling": "mean", **top}
        image = {"backbone": "efficientnet-lite0", **top}
    if config.modality == "mom":
        return "mom", {"text": text, "image": image, "prefer": "text"}
    return "text", text


def train_config(config: DemoConfig, dataset: PreparedDataset, out: Path, method: str, seed: int,
                 epochs: int) -> TrainConfig:  # fmt: skip
    name, items = item_encoder(config, method)
    # IDRec has no backbone and TS freezes its backbones: no optimizer group of theirs reads encoder_lr,
    # and training.validation refuses a key the run would ignore.
    encoder_lr = {} if method in ("IDRec", "TS") else {"encoder_lr": config.encoder_lr}
    model = ModelConfig(d_model=config.d_model, max_len=config.max_len, item_encoder=name,
                        item_encoder_config=items, user_encoder="sasrec",
                        user_encoder_config={"n_layers": config.n_layers, "n_heads": 2})  # fmt: skip
    return TrainConfig(
        dataset=str(dataset.path), output_dir=str(out), model=model, mode="s2s", objective="bce",
        batch_size=config.batch_size, epochs=epochs, patience=config.patience, seed=seed,
        resume=False, optim=OptimConfig(lr=config.lr, **encoder_lr),
    )  # fmt: skip


def run_methods(source: PreparedDataset, target: PreparedDataset, config: DemoConfig,
                progress: bool = True) -> list[MethodRun]:  # fmt: skip
    """Pre-train on ``source`` once, then run every method and seed on ``target``."""
    out = Path(config.output_dir)
    runs: list[MethodRun] = []
    needs_source = {"HasPT", "Zero-shot"} & set(config.methods)
    checkpoint = out / "source" / "best"
    trained = [m for m in config.methods if m not in ("Zero-shot", "Popularity")]
    total = len(config.seeds) * len(trained) + bool(needs_source)
    step = 0
    if needs_source:
        step += 1
        logger.info(
            f"[{step}/{total}] pre-training on the source ({source.n_users} users, {source.n_items} items)"
        )
        started = time.perf_counter()
        pretrain = train_config(config, source, out / "source", "NoPT", config.seeds[0], config.source_epochs)
        result = train(pretrain, progress=progress)
        logger.info(
            f"      source test NDCG@10 {result.test['NDCG@10']:.4f} ({time.perf_counter() - started:.0f} s)"
        )
    for method in config.methods:
        if method == "Popularity":
            scorer = BASELINES.get("popularity")(target, 0)
            runs.append(MethodRun(method, config.seeds[0], evaluate_scorer(target, scorer, "test"), [], 0.0))
            continue
        if method == "Zero-shot":
            started = time.perf_counter()
            test = evaluate_checkpoint(checkpoint, target, "test")
            runs.append(MethodRun(method, config.seeds[0], test, [], time.perf_counter() - started))
            logger.info(f"      zero-shot on the target: NDCG@10 {test['NDCG@10']:.4f}")
            continue
        for seed in config.seeds:
            step += 1
            logger.info(f"[{step}/{total}] {method} on the target, seed {seed}")
            run_config = train_config(
                config, target, out / f"{method}-seed{seed}", method, seed, config.epochs
            )
            if method == "HasPT":
                run_config = replace(run_config, init_checkpoint=str(checkpoint))
            result = train(run_config, progress=progress)
            curve = [json.loads(line)["valid_NDCG@10"]
                     for line in (result.output_dir / "metrics.jsonl").read_text().splitlines()]  # fmt: skip
            runs.append(MethodRun(method, seed, result.test or {}, curve, result.seconds))
            logger.info(f"      test NDCG@10 {result.test['NDCG@10']:.4f} HR@10 {result.test['HR@10']:.4f} "
                        f"({result.seconds:.0f} s, best epoch {result.best_epoch})")  # fmt: skip
    return runs
