"""The demo's configuration, its two platforms and the training run of each method.

Every method trains the same SASRec user encoder with the same objective, budget and protocol on the
target platform (5-core, leave-one-out, full ranking, history excluded); only the item side and the
initialisation differ:

    Popularity  the most popular training items (a non-learned reference)
    IDRec       item ID embeddings (nothing transfers)
    TS          two-stage: frozen MiniLM, its pooled output cached, a 2-layer DNN on top (NoPT)
    NoPT        MiniLM with its top block(s) fine-tuned end to end, user encoder from scratch
    HasPT       NoPT's model with every weight from the source checkpoint of the same seed
    Zero-shot   the source checkpoint of each seed applied to the target test set, no training

With ``modality: mom`` every item keeps one modality (its text or its rendered cover) and the item
encoder is MiniLM or EfficientNet-Lite0 per item (TransRec's mixture of modality).

The target platform is prepared with the new-item protocol (``PrepareConfig.new_items``): the items
first seen latest occur only as test targets, so that the test users whose target is new measure what
content does for items without interactions (MoRec Appendix Table 9). The source needs no new items.
The frozen bottom of every encoder is computed once per run (``TrainConfig.trunk_cache``), which is what
makes end-to-end top-block training fit a laptop CPU here.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from transrec.config import ConfigError, from_dict, merge, to_dict
from transrec.data.prepare import PrepareConfig, prepare
from transrec.data.prepared import PreparedDataset
from transrec.training.config import TrainConfig

logger = logging.getLogger(__name__)

METHODS = ("Popularity", "IDRec", "TS", "NoPT", "HasPT", "Zero-shot")
#: Methods that train on the target (one run per seed); the others are evaluated only.
TRAINED = ("IDRec", "TS", "NoPT", "HasPT")


@dataclass
class DemoConfig:
    """What the demo runs.

    Args:
        output_dir: results and every run directory (a run already finished there is not trained again).
        seeds: one source pre-training and one target run per method and seed; HasPT seed s starts from
            the source run of seed s.
        scarcity_seeds: the seeds of the target-scarcity grid (None: the first two of ``seeds``: the
            grid's 12 runs with a fine-tuned MiniLM are what the 15-minute budget cannot hold three times).
        fractions: shares of the target's users the scarcity grid trains on (``TrainConfig
            .user_fraction``, seeded); 1.0 is the main table's runs. Every run is tested on all users.
        scarcity_methods: the methods of the grid.
        new_items: share of the target's items made new (``PrepareConfig.new_items``; 0: none).
        modality: ``text`` (every item through MiniLM) or ``mom`` (each item keeps one modality).
        users_per_platform: keep this many users per platform (None: all); ``--quick`` uses a slice.
        split_seed: seed of the user and item halves.
        d_model, max_len, n_layers: the SASRec recommender (shared by every method).
        trainable_blocks: top blocks of MiniLM (and EfficientNet) fine-tuned end to end.
        epochs: the cap of every target run; early stopping (``patience`` epochs without a better
            validation NDCG@10) is meant to end them first. ``source_epochs``: the cap of pre-training.
        batch_size, lr, encoder_lr: per run (AdamW learning rates of the recommender and the encoders).
            A step's cost is that of encoding the batch's distinct items through the fine-tuned top block,
            and 64 users already touch most of the target's catalogue: 128 users halve an epoch's cost
            (6.3 -> 3.4 CPU seconds on one core) for the same items, and ``lr`` is doubled with the batch
            (the papers use 64 to 512 users and 1e-4 to 1e-3).
        image_size: side of the stored covers (``mom`` only; EfficientNet-Lite0 sees 224).
        bootstrap_resamples: replicates of each paired bootstrap (``evaluation.significance``).
    """

    output_dir: str = "runs/demo"
    seeds: tuple[int, ...] = (0, 1, 2)
    scarcity_seeds: tuple[int, ...] | None = None
    fractions: tuple[float, ...] = (0.1, 0.3, 1.0)
    scarcity_methods: tuple[str, ...] = ("IDRec", "NoPT", "HasPT")
    new_items: float = 0.1
    modality: Literal["text", "mom"] = "text"
    users_per_platform: int | None = None
    split_seed: int = 0
    d_model: int = 64
    max_len: int = 20
    n_layers: int = 2
    trainable_blocks: int = 1
    epochs: int = 100
    source_epochs: int = 100
    patience: int = 3
    batch_size: int = 128
    lr: float = 2e-3
    encoder_lr: float = 1e-4
    image_size: int = 224
    bootstrap_resamples: int = 10_000
    methods: tuple[str, ...] = field(default=METHODS)

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ConfigError(f"seeds must be distinct non-negative integers, got {list(self.seeds)}")
        if self.scarcity_seeds is not None and not set(self.scarcity_seeds) <= set(self.seeds):
            # HasPT at a fraction starts from the source run of its seed, which only `seeds` pre-train.
            raise ConfigError(
                f"scarcity_seeds {list(self.scarcity_seeds)} must be among seeds {list(self.seeds)}"
            )
        if not all(0.0 < f <= 1.0 for f in self.fractions) or len(set(self.fractions)) != len(self.fractions):
            raise ConfigError(f"fractions must be distinct shares in (0, 1], got {list(self.fractions)}")
        unknown = sorted(set(self.methods) - set(METHODS)) + sorted(set(self.scarcity_methods) - set(TRAINED))
        if unknown:
            raise ConfigError(f"unknown demo method(s) {unknown}: methods are {', '.join(METHODS)}, "
                              f"scarcity methods among {', '.join(TRAINED)}")  # fmt: skip
        if not 0.0 <= self.new_items < 1.0:
            raise ConfigError(f"new_items must be a share of the items in [0, 1), got {self.new_items}")
        for key in ("epochs", "source_epochs", "patience", "bootstrap_resamples"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, got {getattr(self, key)}")

    @property
    def grid_seeds(self) -> tuple[int, ...]:
        """The seeds of the scarcity grid."""
        return self.seeds[:2] if self.scarcity_seeds is None else self.scarcity_seeds

    @classmethod
    def quick(cls, **overrides: Any) -> DemoConfig:
        """The same pipeline on a slice: 40 users per platform, 2 seeds (1 for the scarcity grid, at 50%
        and 100%), at most 2 epochs."""
        options: dict[str, Any] = dict(users_per_platform=40, seeds=(0, 1), scarcity_seeds=(0,),
                                       fractions=(0.5, 1.0), epochs=2, source_epochs=2, max_len=10,
                                       image_size=64, bootstrap_resamples=1000,
                                       output_dir="runs/demo-quick")  # fmt: skip
        options.update(overrides)
        return cls(**options)


def prepare_platforms(raw_folder: Path, root: Path, config: DemoConfig) -> tuple[PreparedDataset, ...]:
    """Split MovieLens-100K into the two platforms and prepare each (reused when already prepared with the
    same settings); the target with ``config.new_items``."""
    from transrec.data.loaders import load_raw
    from transrec.demo.split import split_platforms

    prep = PrepareConfig(tokenizer="minilm", modality="mom" if config.modality == "mom" else "text",
                         image_size=config.image_size, seed=config.split_seed)  # fmt: skip
    preps = {"source": prep, "target": replace(prep, new_items=config.new_items)}
    slice_name = "all" if config.users_per_platform is None else f"{config.users_per_platform}u"
    base = root / "prepared" / f"ml-100k-demo-{config.modality}-{slice_name}-s{config.split_seed}"
    # The share of new items names the target's folder: a run directory records its dataset by path, so
    # runs on a target prepared otherwise are refused on resume instead of returned as finished.
    folders = {"source": base / "source", "target": base / f"target-new{config.new_items:g}"}
    if all(_prepared_with(folders[part], to_dict(preps[part])) for part in preps):
        logger.info(f"using the prepared platforms in {base}")
        return PreparedDataset(folders["source"]), PreparedDataset(folders["target"])
    logger.info("splitting MovieLens-100K into a source and a target platform (no shared user or item)...")
    raw = load_raw("movielens", raw_folder)
    parts = split_platforms(raw, config.split_seed, config.users_per_platform)
    out = []
    for part, platform in zip(preps, parts, strict=True):
        source = {"format": "movielens", "path": str(raw_folder), "split": part, "seed": config.split_seed,
                  "users_per_platform": config.users_per_platform}  # fmt: skip
        out.append(prepare(platform, preps[part], folders[part], source=source, overwrite=True,
                           progress=False))  # fmt: skip
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


def base_settings(config: DemoConfig) -> dict[str, Any]:
    """The TrainConfig keys every run of the demo shares (nested; the grid's ``base``)."""
    model = {"d_model": config.d_model, "max_len": config.max_len, "user_encoder": "sasrec",
             "user_encoder_config": {"n_layers": config.n_layers, "n_heads": 2}}  # fmt: skip
    return {"model": model, "mode": "s2s", "objective": "bce", "batch_size": config.batch_size,
            "epochs": config.epochs, "patience": config.patience, "eval_subsets": ["new"],
            "optim": {"lr": config.lr}}  # fmt: skip


def method_settings(config: DemoConfig, method: str) -> dict[str, Any]:
    """What ``method`` (``NoPT`` for the source pre-training) sets over ``base_settings`` (nested): its
    item encoder and, where one is fine-tuned, the encoders' learning rate."""
    name, items = item_encoder(config, method)
    model: dict[str, Any] = {"item_encoder": name, **({"item_encoder_config": items} if items else {})}
    settings: dict[str, Any] = {"model": model}
    # IDRec has no backbone and TS freezes its backbones: no optimizer group of theirs reads encoder_lr,
    # and training.validation refuses a key the run would ignore.
    if method not in ("IDRec", "TS"):
        settings["optim"] = {"encoder_lr": config.encoder_lr}
    return settings


def train_config(config: DemoConfig, dataset: PreparedDataset, out: Path, method: str, seed: int,
                 epochs: int, user_fraction: float = 1.0) -> TrainConfig:  # fmt: skip
    """The run of ``method`` (``NoPT`` for the source pre-training) with ``seed`` on ``dataset``, as one
    TrainConfig: what a cell of the demo's grid (``demo.grid``, built from the same settings) trains;
    the grid's runner sets HasPT's ``init_checkpoint`` (the source cell of the seed) and scales
    ``patience`` with the user fraction."""
    settings = merge(base_settings(config), method_settings(config, method))
    settings.update(dataset=str(dataset.path), output_dir=str(out), epochs=epochs, seed=seed,
                    user_fraction=user_fraction, resume="auto")  # fmt: skip
    return from_dict(TrainConfig, settings)
