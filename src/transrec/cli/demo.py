"""``transrec demo``: the main job on the embedded default (MovieLens-100K).

Fetches and prepares MovieLens-100K (5-core, leave-one-out), then evaluates the non-learned baselines
with full ranking over the whole catalogue, history excluded, and prints the table. The transfer demo
(source/target split, pre-training, fine-tuning) builds on these same steps.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from transrec.cli.data import print_summary
from transrec.data.paths import data_root


def add_parser(commands) -> None:
    demo = commands.add_parser("demo", help="run the demo on the embedded default (MovieLens-100K)")
    demo.add_argument("--root", help="data folder (default $TRANSREC_HOME or ~/.cache/transrec)")
    demo.add_argument(
        "--quick", action="store_true", help="small images and the first 200 users: a smoke test"
    )
    demo.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from transrec.data.loaders import load_raw
    from transrec.data.movielens import fetch_ml100k
    from transrec.data.prepare import PrepareConfig, prepare
    from transrec.data.prepared import PreparedDataset
    from transrec.evaluation.protocol import evaluate_scorer
    from transrec.models.baselines import BASELINES

    started = time.perf_counter()
    root = data_root(args.root)
    folder = fetch_ml100k(root)
    config = PrepareConfig(image_size=64 if args.quick else 224, tokenizer="hash")
    output = root / "prepared" / ("ml-100k-quick" if args.quick else "ml-100k")
    if _is_prepared_with(output, config):
        dataset = PreparedDataset(output)
        print(f"using the prepared dataset in {output}")
    else:
        print("preparing MovieLens-100K (5-core, leave-one-out; covers rendered from the metadata)...")
        raw = load_raw("movielens", folder)
        dataset = prepare(
            raw, config, output, source={"format": "movielens", "path": str(folder)}, overwrite=True
        )
    print_summary(dataset)

    users = None
    if args.quick:
        import numpy as np

        users = np.arange(min(200, dataset.n_users))
    rows = []
    for name in BASELINES.names():
        scorer = BASELINES.get(name)(dataset, 0)
        metrics = evaluate_scorer(dataset, scorer, "test", users=users)
        rows.append((name, metrics))
    print()
    print("Test metrics, full ranking over all items, history excluded, leave-one-out:")
    print(_table(rows))
    print(f"\ndone in {time.perf_counter() - started:.1f} s")
    return 0


def _is_prepared_with(path: Path, config) -> bool:
    import json

    from transrec.config import to_dict

    meta = path / "meta.json"
    return meta.is_file() and json.loads(meta.read_text()).get("config") == to_dict(config)


def _table(rows) -> str:
    columns = ["HR@10", "NDCG@10", "HR@20", "NDCG@20", "MRR"]
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, metrics in rows:
        lines.append(f"| {name} | " + " | ".join(f"{metrics[c]:.4f}" for c in columns) + " |")
    return "\n".join(lines)
