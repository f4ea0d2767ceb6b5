"""``transrec demo``: the main job on the embedded default (MovieLens-100K).

1. fetches and prepares MovieLens-100K (5-core, leave-one-out) and prints its figures;
2. splits it into a source and a target platform that share no user and no item
   (``transrec.demo.split``) and prepares both with MiniLM tokens (and covers in ``--modality mom``);
3. pre-trains on the source, then compares IDRec, two-stage, NoPT, HasPT and zero-shot on the target
   over several seeds (``transrec.demo.pipeline``);
4. writes ``results.md``, ``results.json`` and ``convergence.png`` and prints the table.

``--quick`` runs the same pipeline on a slice (60 users per platform, 2 seeds, 2 epochs).
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from datetime import date
from pathlib import Path

from transrec.data.paths import data_root

logger = logging.getLogger(__name__)


def add_parser(commands) -> None:
    demo = commands.add_parser(
        "demo", help="the transfer demo on MovieLens-100K: source/target platforms, results table, plots"
    )
    demo.add_argument("--root", help="data folder (default $TRANSREC_HOME or ~/.cache/transrec)")
    demo.add_argument("--output", help="results folder (default runs/demo, runs/demo-quick)")
    demo.add_argument("--quick", action="store_true", help="the same pipeline on a small slice (smoke test)")
    modality_help = "text: every item through MiniLM; mom: each item keeps its text or its cover"
    demo.add_argument("--modality", choices=["text", "mom"], default="text", help=modality_help)
    demo.add_argument("--seeds", type=int, help="number of seeds per method (default 3; 2 with --quick)")
    demo.add_argument("--epochs", type=int, help="epochs per run (default 12; 2 with --quick)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars or lines, only warnings")
    demo.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from transrec.cli.data import print_summary
    from transrec.data.loaders import load_raw
    from transrec.data.movielens import fetch_ml100k
    from transrec.data.prepare import PrepareConfig, prepare
    from transrec.data.prepared import PreparedDataset
    from transrec.demo.pipeline import DemoConfig, prepare_platforms, run_methods
    from transrec.demo.report import markdown_table, summarise, write_results

    started = time.perf_counter()
    overrides: dict = {"modality": args.modality}
    if args.output:
        overrides["output_dir"] = args.output
    if args.seeds:
        overrides["seeds"] = tuple(range(args.seeds))
    if args.epochs:
        overrides.update(epochs=args.epochs, source_epochs=args.epochs)
    config = DemoConfig.quick(**overrides) if args.quick else DemoConfig(**overrides)
    root = data_root(args.root)

    _stage("1/4 MovieLens-100K")
    folder = fetch_ml100k(root)
    full = PrepareConfig(image_size=64 if args.quick else 224)
    output = root / "prepared" / ("ml-100k-quick" if args.quick else "ml-100k")
    if _is_prepared_with(output, full):
        dataset = PreparedDataset(output)
    else:
        raw = load_raw("movielens", folder)
        dataset = prepare(raw, full, output, source={"format": "movielens", "path": str(folder)},
                          overwrite=True, progress=False)  # fmt: skip
    print_summary(dataset)

    _stage("2/4 source and target platforms")
    source, target = prepare_platforms(folder, root, config)
    for part in (source, target):
        counts = f"{part.n_users:,} users, {part.n_items:,} items, {part.n_interactions:,} interactions"
        print(f"{part.name}: {counts}")

    _stage("3/4 pre-training on the source, transfer to the target")
    runs = run_methods(source, target, config, progress=not args.quiet)

    _stage("4/4 results")
    summary = summarise(runs)
    wall = time.perf_counter() - started
    context = {
        "title": f"Transfer demo: MovieLens-100K source -> target ({config.modality})",
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {_cpu_count()} CPU cores, torch device {_device()}",
        "wall time (s)": round(wall, 1),
        "command": "transrec demo" + (" --quick" if args.quick else "") + f" --modality {config.modality}",
        "source": f"{source.n_users} users, {source.n_items} items, {source.n_interactions} interactions",
        "target": f"{target.n_users} users, {target.n_items} items, {target.n_interactions} interactions",
        "protocol": "leave-one-out, full ranking over the target catalogue, history excluded; test metrics "
        "of the best validation epoch",
        "model": (
            f"SASRec d={config.d_model}, {config.n_layers} blocks, max_len {config.max_len}, BCE with 1 "
            f"negative, batch {config.batch_size}, at most {config.epochs} epochs (patience "
            f"{config.patience}); MiniLM top {config.trainable_blocks} block(s) fine-tuned (NoPT, HasPT), "
            "frozen with a 2-layer DNN on top (TS)"
        ),
    }
    files = write_results(summary, Path(config.output_dir), context)
    print(markdown_table(summary))
    print()
    for kind, path in files.items():
        print(f"{kind}: {path}")
    print(f"done in {wall:.0f} s")
    return 0


def _stage(title: str) -> None:
    logger.info(f"== {title} ==")


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _is_prepared_with(path: Path, config) -> bool:
    import json

    from transrec.config import to_dict

    meta = path / "meta.json"
    return meta.is_file() and json.loads(meta.read_text()).get("config") == to_dict(config)
