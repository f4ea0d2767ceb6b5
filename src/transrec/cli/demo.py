"""``transrec demo``: the main job on the embedded default (MovieLens-100K).

1. fetches and prepares MovieLens-100K (5-core, leave-one-out) and prints its figures;
2. splits it into a source and a target platform that share no user and no item
   (``transrec.demo.split``) and prepares both with MiniLM tokens (and covers in ``--modality mom``), the
   target with the new-item protocol (``--new-items``);
3. pre-trains on the source once per seed, compares Popularity, IDRec, two-stage, NoPT, HasPT and
   zero-shot on the target over those seeds, then trains IDRec, NoPT and HasPT on shares of the target's
   users: the cells of the demo's grid (``transrec.demo.grid``), run by ``transrec bench``'s runner
   (``transrec.demo.runs``);
4. writes ``results.md``, ``results.json``, ``convergence.png`` and ``scarcity.png`` with the paired
   significance tests and the conclusions (``transrec.demo.summary``, ``report``, ``plots``), and prints
   them; and the grid's own report (``report/``: cells.csv, tables.md, plots), as ``transrec bench
   --report`` writes it.

Every run is a cell of the grid with its own directory under the output folder
(``<stage>/<axis>=<label>,...``, as ``transrec bench`` names them) and continues there: a demo
interrupted and started again runs only what is missing; one whose settings changed is refused unless
``--rerun changed``. ``--quick`` runs the same pipeline on a
slice (40 users per platform, 2 seeds, at most 2 epochs).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

from transrec.data.paths import data_root
from transrec.errors import UsageError

logger = logging.getLogger(__name__)


def add_parser(commands) -> None:
    demo = commands.add_parser(
        "demo", help="the transfer demo on MovieLens-100K: new items, target scarcity, paired tests, plots"
    )
    demo.add_argument("--root", help="data folder (default $TRANSREC_HOME or ~/.cache/transrec)")
    demo.add_argument("--output", help="results and run folder (default runs/demo, runs/demo-quick)")
    demo.add_argument("--quick", action="store_true", help="the same pipeline on a small slice (smoke test)")
    modality_help = "text: every item through MiniLM; mom: each item keeps its text or its cover"
    demo.add_argument("--modality", choices=["text", "mom"], default="text", help=modality_help)
    demo.add_argument("--seeds", type=int, help="seeds of the main table, each with its own source "
                      "pre-training (default 3; 2 with --quick)")  # fmt: skip
    demo.add_argument("--scarcity-seeds", type=int, help="seeds of the scarcity grid, the first of --seeds "
                      "(default 2; 1 with --quick)")  # fmt: skip
    demo.add_argument("--fractions", help="shares of the target's users of the scarcity grid, "
                      "comma-separated (default 0.1,0.3,1; 0.5,1 with --quick)")  # fmt: skip
    demo.add_argument("--new-items", type=float, help="share of the target's items made new (default 0.1)")
    demo.add_argument("--epochs", type=int, help="epoch cap of every run; early stopping ends them first "
                      "(default 100; 2 with --quick)")  # fmt: skip
    demo.add_argument("--patience", type=int, help="epochs without a better validation NDCG@10 (default 3)")
    demo.add_argument("--images", help="also copy the plots here as demo_*.png (e.g. docs/images)")
    demo.add_argument("--rerun", choices=["changed", "failed", "all"], help="run again the cells whose "
                      "settings changed, that failed, or all (as transrec bench --rerun)")  # fmt: skip
    demo.add_argument("--quiet", action="store_true", help="no progress bars or lines, only warnings")
    demo.set_defaults(run=run_demo)


def demo_config(args: argparse.Namespace):
    """The ``DemoConfig`` the arguments ask for; ``UsageError`` names a bad one."""
    from transrec.demo.pipeline import DemoConfig

    overrides: dict = {"modality": args.modality}
    if args.output:
        overrides["output_dir"] = args.output
    for name in ("seeds", "scarcity_seeds", "epochs", "patience"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.seeds:
        overrides["seeds"] = tuple(range(args.seeds))
    if args.scarcity_seeds:
        overrides["scarcity_seeds"] = tuple(range(args.scarcity_seeds))
    if args.fractions:
        try:
            overrides["fractions"] = tuple(float(f) for f in args.fractions.split(","))
        except ValueError:
            message = f"--fractions must be numbers separated by commas, got {args.fractions!r}"
            raise UsageError(message) from None
    if args.new_items is not None:
        overrides["new_items"] = args.new_items
    if args.epochs:
        overrides.update(epochs=args.epochs, source_epochs=args.epochs)
    if args.patience:
        overrides["patience"] = args.patience
    return DemoConfig.quick(**overrides) if args.quick else DemoConfig(**overrides)


def run_demo(args: argparse.Namespace) -> int:
    from transrec.bench.report import write_report
    from transrec.cli.data import print_summary
    from transrec.data.loaders import load_raw
    from transrec.data.movielens import fetch_ml100k
    from transrec.data.prepare import PrepareConfig, prepare
    from transrec.data.prepared import PreparedDataset
    from transrec.demo.grid import demo_grid
    from transrec.demo.report import main_table, scarcity_table, significance_lines, write_results
    from transrec.demo.runs import prepare_demo_platforms, run_all
    from transrec.demo.summary import summarise

    started = time.perf_counter()
    config = demo_config(args)
    root = data_root(args.root)
    stages: dict[str, float] = {}

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
    stages["MovieLens-100K"] = time.perf_counter() - started

    _stage("2/4 source and target platforms")
    mark = time.perf_counter()
    with _data_root(root):  # the grid's dataset builder fetches MovieLens-100K from the data root
        source, target = prepare_demo_platforms(config, args.rerun, progress=not args.quiet)
    for part in (source, target):
        counts = f"{part.n_users:,} users, {part.n_items:,} items, {part.n_interactions:,} interactions"
        new = (part.meta.get("new_items") or {}).get("items")
        print(f"{part.name}: {counts}" + (f", {new} new items" if new else ""))
    stages["platforms"] = time.perf_counter() - mark

    _stage("3/4 pre-training on the source, the methods on the target, the scarcity grid")
    demo = run_all(source, target, config, progress=not args.quiet, rerun=args.rerun)
    stages.update(demo.stage_seconds)

    _stage("4/4 results")
    mark = time.perf_counter()
    summary = summarise(demo, config)  # the paired bootstraps take most of this stage
    stages["summary and tests"] = time.perf_counter() - mark
    wall = time.perf_counter() - started  # the plots and files written next take about a second more
    summary["stage_seconds"] = {k: round(v, 1) for k, v in stages.items()}
    context = {**_context(args, config, source, target), "wall time (s)": round(wall, 1)}
    images = Path(args.images) if args.images else None
    files = write_results(summary, Path(config.output_dir), context, images)
    grid_files = write_report(demo_grid(config, target.n_users))
    print(main_table(summary))
    print()
    for line in significance_lines(summary):
        print(f"- {line}")
    table = scarcity_table(summary)
    if table:
        print()
        print(table)
    print()
    for line in summary["conclusions"][len(summary["significance"]) :]:
        print(f"- {line}")
    print()
    for kind, path in files.items():
        print(f"{kind}: {path}")
    print(f"grid report: {', '.join(str(path) for path in grid_files)}")
    print("stage wall times: " + ", ".join(f"{k} {v:.0f} s" for k, v in stages.items()))
    print(f"done in {wall:.0f} s")
    return 0


def _context(args, config, source, target) -> dict:
    grid = ", ".join(f"{f:.0%}" for f in config.fractions)
    return {
        "title": f"Transfer demo: MovieLens-100K source -> target ({config.modality})",
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {_cpu_count()} CPU cores, torch device {_device()}",
        "command": "transrec demo" + (" --quick" if args.quick else "") + f" --modality {config.modality}",
        "source": f"{source.n_users} users, {source.n_items} items, {source.n_interactions} interactions",
        "target": f"{target.n_users} users, {target.n_items} items ({config.new_items:.0%} made new: "
        f"{(target.meta.get('new_items') or {}).get('items', 0)}), {target.n_interactions} interactions",
        "protocol": "leave-one-out, full ranking over the target catalogue, history excluded; test metrics "
        "of the best validation epoch; new-item columns over the test users whose target is a new item",
        "model": (
            f"SASRec d={config.d_model}, {config.n_layers} blocks, max_len {config.max_len}, BCE with 1 "
            f"negative, batch {config.batch_size}; MiniLM top {config.trainable_blocks} block(s) fine-tuned "
            "(NoPT, HasPT, source), frozen with a 2-layer DNN on top (TS)"
        ),
        "budget": (
            f"early stopping with patience {config.patience} on validation NDCG@10, epoch cap "
            f"{config.epochs} (source {config.source_epochs}); seeds {list(config.seeds)}, each with its "
            f"own source pre-training; scarcity grid at {grid} of the target's users over seeds "
            f"{list(config.grid_seeds)}"
        ),
        "significance": (
            f"paired bootstrap of per-user NDCG@10 over test users ({config.bootstrap_resamples} "
            "resamples; every seed of a drawn user kept, seed s of one method paired with seed s of the "
            "other), 95% percentile interval, two-sided p-value (transrec.evaluation.significance)"
        ),
    }


@contextlib.contextmanager
def _data_root(root: Path) -> Iterator[None]:
    """``root`` as $TRANSREC_HOME while the platforms are prepared: ``bench.datasets`` reads the data
    root from the environment (``data.paths.data_root``), and ``--root`` must reach it."""
    before = os.environ.get("TRANSREC_HOME")
    os.environ["TRANSREC_HOME"] = str(root)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TRANSREC_HOME", None)
        else:
            os.environ["TRANSREC_HOME"] = before


def _stage(title: str) -> None:
    logger.info(f"== {title} ==")


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _is_prepared_with(path: Path, config) -> bool:
    import json

    from transrec.config import to_dict

    meta = path / "meta.json"
    return meta.is_file() and json.loads(meta.read_text()).get("config") == to_dict(config)
