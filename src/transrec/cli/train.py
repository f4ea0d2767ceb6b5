"""``transrec train`` and ``transrec evaluate``.

``torchrun --nproc_per_node N $(which transrec) train ...`` trains with DDP (see ``training.trainer``).
Pre-training and fine-tuning are the same command: fine-tuning (HasPT) sets ``init_checkpoint`` to a
source run's ``best`` directory. ``evaluate`` applies a checkpoint to any prepared dataset, which is
zero-shot transfer when the dataset is another platform's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from transrec.config import load_config


def add_parser(commands) -> None:
    train = commands.add_parser(
        "train",
        help="train a model (pre-training and fine-tuning alike)",
        description="Train from a YAML config; trailing dotted key=value pairs override it, e.g. "
        "optim.lr=1e-4 model.user_encoder=gru4rec init_checkpoint=runs/source/best",
    )
    train.add_argument("--config", help="YAML file of TrainConfig fields (see configs/)")
    train.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    train.add_argument("--quiet", action="store_true", help="no progress bars or lines, only warnings")
    train.set_defaults(run=run_train)

    evaluate = commands.add_parser(
        "evaluate", help="evaluate a checkpoint on a prepared dataset (zero-shot on another platform)"
    )
    evaluate.add_argument(
        "--checkpoint", required=True, help="model directory (config.json + model.safetensors)"
    )
    evaluate.add_argument("--dataset", required=True, help="prepared dataset directory")
    evaluate.add_argument("--stage", default="test", choices=["valid", "test"])
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--output", help="write the metrics as JSON to this file")
    evaluate.add_argument(
        "--ks", type=_ks, default=(5, 10, 20, 50), help="comma-separated cut-offs (default 5,10,20,50)"
    )
    evaluate.add_argument(
        "--subset", action="append", type=_subset, default=[], dest="subsets",
        help="also report the metrics of the users whose target is cold (< 10 interactions before it), "
        "new (none) or warm-N (MoRec's >= N filter), or all users; repeatable; each with its user count",
    )  # fmt: skip
    evaluate.add_argument(
        "--no-exclude-history", dest="exclude_history", action="store_false",
        help="rank the user's earlier items too (RecBole's protocol); by default they are excluded",
    )  # fmt: skip
    evaluate.add_argument(
        "--per-user", metavar="FILE",
        help="write a Parquet table of user, target, rank and one boolean column per --subset",
    )  # fmt: skip
    evaluate.set_defaults(run=run_evaluate)


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ks must be comma-separated integers, got {text!r}") from None
    if any(k < 1 for k in ks):
        raise argparse.ArgumentTypeError(f"--ks must be positive, got {text!r}")
    return ks


def _subset(name: str) -> str:
    from transrec.evaluation.model_eval import parse_subset

    try:
        parse_subset(name)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return name


def run_train(args: argparse.Namespace) -> int:
    from transrec.training.config import TrainConfig
    from transrec.training.trainer import TrainingCollapsed, train
    from transrec.training.validation import validate_config

    config = load_config(TrainConfig, args.config, args.overrides)
    validate_config(config)  # train() checks again; here a refused key never even opens a process group
    try:
        result = train(config, progress=not args.quiet)
    except TrainingCollapsed as err:
        print(f"transrec: collapsed: {err}", file=sys.stderr)
        return 3
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return 0
    print(
        f"best epoch {result.best_epoch} of {result.epochs_run} ({result.seconds:.1f} s): {result.output_dir}"
    )
    print("test: " + format_metrics(result.test))
    return 0


def format_metrics(metrics: dict[str, float | int]) -> str:
    """One line of metrics: rates to 4 decimals, user counts (``<subset>/users``) as integers."""
    return "  ".join(f"{k} {v}" if isinstance(v, int) else f"{k} {v:.4f}" for k, v in metrics.items())


def run_evaluate(args: argparse.Namespace) -> int:
    from transrec.data.prepared import PreparedDataset
    from transrec.training.checkpoint import evaluate_checkpoint
    from transrec.training.trainer import resolve_device

    dataset = PreparedDataset(args.dataset)
    metrics = evaluate_checkpoint(
        args.checkpoint, dataset, args.stage, args.ks, device=resolve_device(args.device),
        exclude_history=args.exclude_history, subsets=tuple(dict.fromkeys(args.subsets)),
        per_user=args.per_user,
    )  # fmt: skip
    print(f"{args.stage} on {dataset.name}: {format_metrics(metrics)}")
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(metrics, indent=2))
    return 0
