"""Tiny grids on the tiny synthetic world for the runner's tests: a cell trains in about a second.

``tiny_grid(out)``: pretrain (text items, seeds 0 and 1) on the source, then on the target finetune
{NoPT, HasPT} x seeds, zeroshot (the pretrain checkpoint of each seed applied to the target) and a
popularity ranking: 2 + 4 + 2 + 1 = 9 cells, in the order ``CELLS`` lists them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from transrec.bench.grid import Grid

#: The tiny world (``SyntheticWorldConfig.tiny``'s sizes): 40 source users, 30 target users.
WORLD = {"n_topics": 4, "source_users": 40, "source_items": 24, "target_users": 30, "target_items": 16,
         "min_seq_len": 5, "max_seq_len": 8, "vocab_size": 200, "words_per_topic": 15, "style_words": 5,
         "words_per_text": 8, "image_only_fraction": 0.0}  # fmt: skip
TEXT = {"model.item_encoder": "text",
        "model.item_encoder_config": {"pretrained": None, "pooling": "cls", "hf_config": {
            "model_type": "bert", "vocab_size": 30522, "hidden_size": 16, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 64}}}  # fmt: skip

# fmt: off
GRID: dict[str, Any] = {
    "name": "tiny",
    "description": "a tiny grid for the runner's tests",
    "datasets": {
        "source": {"builder": "synthetic", "part": "source", "options": WORLD},
        "target": {"builder": "synthetic", "part": "target", "options": WORLD},
    },
    "base": {
        "model": {"d_model": 16, "max_len": 6, "user_encoder": "sasrec",
                  "user_encoder_config": {"n_layers": 1, "n_heads": 2}},
        "batch_size": 16, "epochs": 2, "patience": 5, "device": "cpu", "collapse_factor": 0.0,
        "ks": [5, 10], "optim": {"lr": 3.0e-3},
    },
    "stages": [
        {"name": "pretrain", "dataset": "source", "set": TEXT, "axes": {"seed": [0, 1]}},
        {"name": "finetune", "dataset": "target", "from": "pretrain", "set": TEXT,
         "axes": {"transfer": {"NoPT": {"from": None}, "HasPT": {}}, "seed": [0, 1]}},
        {"name": "zeroshot", "kind": "evaluate", "dataset": "target", "from": "pretrain", "set": TEXT,
         "axes": {"seed": [0, 1]}},
        {"name": "popularity", "kind": "popularity", "dataset": "target"},
    ],
}
# fmt: on

CELLS = [
    "pretrain/seed=0", "pretrain/seed=1",
    "finetune/transfer=NoPT,seed=0", "finetune/transfer=NoPT,seed=1",
    "finetune/transfer=HasPT,seed=0", "finetune/transfer=HasPT,seed=1",
    "zeroshot/seed=0", "zeroshot/seed=1", "popularity/default",
]  # fmt: skip


def tiny_grid(out: Path, **changes: Any) -> Grid:
    """The tiny grid writing into ``out``; ``changes`` replace top-level keys (``stages=...``)."""
    data = copy.deepcopy(GRID)
    data.update(copy.deepcopy(changes))
    data["output_dir"] = str(out)
    return Grid.from_dict(data)


def pretrain_only(out: Path, epochs: int = 2, seeds: tuple[int, ...] = (0, 1), **changes: Any) -> Grid:
    """Only the pretrain stage (``seeds``), ``epochs`` epochs: the cheapest grid that trains."""
    stage = {**copy.deepcopy(GRID["stages"][0]), "axes": {"seed": list(seeds)}}
    stage["set"] = {**stage["set"], "epochs": epochs}
    return tiny_grid(out, stages=[stage], **changes)
