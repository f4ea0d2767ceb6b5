"""Training windows on MovieLens-100K: IDRec-SASRec and MoRec text with ``windows: last`` and ``all``.

Issue 12 section 3. For every model config, windows setting and seed: train (validation NDCG@10 picks
the best epoch and stops early), then evaluate ``best/`` on the test targets (5-core, leave-one-out,
full ranking) twice: with the user's history excluded (the papers' protocol) and not (RecBole's), and
print a table of test HR@10 / NDCG@10, mean +- std over the seeds (sample std), with the wall time of
each run and the load average around it. The reference row is RecBole 1.2.1's SASRec (CE loss,
``MAX_ITEM_LIST_LENGTH`` 20, its defaults), 0.120 / 0.058 under its own protocol, as quoted in issue 12.

MovieLens-100K is fetched (offline, from the recbole wheel when it is installed) and prepared 5-core
with the papers' leave-one-out when the prepared folder is missing: the ID model reads the default
``ml-100k`` (hash tokenizer), the text model ``ml-100k-minilm`` (the all-MiniLM-L6-v2 tokenizer).
``--new-items 0.1`` prepares ``ml-100k[-minilm]-new10`` instead (``PrepareConfig.new_items``: the 10%
of items first seen latest occur only as test targets) and also reports the ``new`` subset: the test
users whose target is one of them (MoRec Appendix Table 9).

Every finished run leaves ``bench.json`` (its config and results) in its directory; a second invocation
with the same config reuses it (``--rerun`` trains again), so an interrupted grid resumes where it
stopped. ``--set KEY=VALUE`` overrides every run's config (for tuning on validation; use another
``--runs`` to keep the runs apart).

    python benchmarks/bench_windows.py                                   # 2 models x {last, all} x 3 seeds
    python benchmarks/bench_windows.py --models idrec --windows all --seeds 0
    python benchmarks/bench_windows.py --new-items 0.1 --windows last --seeds 0 --output new10.md
    python benchmarks/bench_windows.py --report-only                    # the table of what has finished
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transrec.config import load_config, to_dict
from transrec.data.paths import data_root
from transrec.training.config import TrainConfig

REPO = Path(__file__).resolve().parent.parent
#: RecBole 1.2.1 SASRec on the same 5-core leave-one-out ML-100K targets, history not excluded (issue 12).
RECBOLE = {"HR@10": 0.120, "NDCG@10": 0.058}
#: Per model: its name, its config for each windows setting, and the tokenizer its prepared dataset needs.
MODELS = {
    "idrec": ("IDRec-SASRec", {"last": "configs/ml100k_idrec_sasrec_softmax.yaml",
                               "all": "configs/ml100k_idrec_sasrec_softmax_windows.yaml"}, "hash"),
    "morec-text": ("MoRec text (MiniLM)", {"last": "configs/ml100k_morec_text_softmax.yaml",
                                           "all": "configs/ml100k_morec_text_softmax_windows.yaml"},
                   "minilm"),
}  # fmt: skip
PROTOCOLS = (("excluded", True), ("not excluded", False))


@dataclass
class Run:
    model: str
    windows: str
    seed: int
    record: dict[str, Any]


def dataset_name(tokenizer: str, new_items: float) -> str:
    name = "ml-100k" if tokenizer == "hash" else f"ml-100k-{tokenizer}"
    return f"{name}-new{round(new_items * 100)}" if new_items > 0 else name


def ensure_prepared(root: Path, tokenizer: str, new_items: float) -> Path:
    """The prepared dataset folder, fetched and prepared (5-core, leave-one-out) when missing."""
    output = root / "prepared" / dataset_name(tokenizer, new_items)
    if (output / "meta.json").is_file():
        return output
    from transrec.data.loaders import load_raw
    from transrec.data.movielens import fetch_ml100k
    from transrec.data.prepare import PrepareConfig, prepare

    raw_folder = fetch_ml100k(root)
    print(f"preparing {output} (tokenizer {tokenizer}, new_items {new_items})", flush=True)
    config = PrepareConfig(tokenizer=tokenizer, new_items=new_items)
    prepare(load_raw("movielens", raw_folder), config, output, source={"format": "movielens",
            "path": str(raw_folder), "options": {}}, progress=False)  # fmt: skip
    return output


def run_config(
    model: str, windows: str, seed: int, dataset: Path, runs: Path, extra: list[str]
) -> TrainConfig:
    """The model's config for ``windows`` with this seed, dataset and run directory (and ``extra``)."""
    out = runs / f"{model}-{windows}-s{seed}"
    overrides = [f"dataset={dataset}", f"seed={seed}", "resume=never", f"output_dir={out}", *extra]
    config = load_config(TrainConfig, REPO / MODELS[model][1][windows], overrides)
    if config.windows != windows:
        raise SystemExit(f"{MODELS[model][1][windows]} trains windows {config.windows}, not {windows}")
    return config


def train_and_evaluate(config: TrainConfig, subsets: tuple[str, ...]) -> dict[str, Any]:
    """Train ``config`` and evaluate its best checkpoint on test under both protocols."""
    import torch

    from transrec.training.checkpoint import evaluate_checkpoint
    from transrec.training.trainer import train

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    result = train(config, progress=False)
    seconds = time.perf_counter() - started
    record: dict[str, Any] = {
        "config": str(config.output_dir), "status": result.status, "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run, "seconds": seconds, "load_before": load_before,
        "load_after": os.getloadavg()[0], "threads": torch.get_num_threads(),
        "valid_NDCG@10": result.best_valid["NDCG@10"], "valid_HR@10": result.best_valid["HR@10"],
    }  # fmt: skip
    for protocol, exclude in PROTOCOLS:
        record[protocol] = evaluate_checkpoint(
            Path(config.output_dir) / "best", config.dataset, "test", ks=(10,), exclude_history=exclude,
            subsets=subsets,
        )  # fmt: skip
    return record


def summary(run: Run) -> str:
    """One line per run, printed as soon as it ends."""
    r = run.record
    metrics = ", ".join(
        f"{protocol} {r[protocol]['HR@10']:.4f} / {r[protocol]['NDCG@10']:.4f}" for protocol, _ in PROTOCOLS
    )
    return (f"{run.model} windows={run.windows} seed={run.seed}: best epoch {r['best_epoch']}/"
            f"{r['epochs_run']}, {r['seconds']:.0f} s (load {r['load_before']:.1f}-{r['load_after']:.1f}); "
            f"valid NDCG@10 {r['valid_NDCG@10']:.4f}; test HR@10 / NDCG@10 history {metrics}")  # fmt: skip


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def cell(values: list[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.4f} ± {std:.4f}" if len(values) > 1 else f"{mean:.4f}"


def table(runs: list[Run], subsets: tuple[str, ...]) -> str:
    """The Markdown table: one row per (model, windows), means +- std over its seeds."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.model, run.windows), []).append(run)
    head = ["model", "windows", "seeds", "valid NDCG@10"]
    for protocol, _ in PROTOCOLS:
        head += [f"HR@10 ({protocol})", f"NDCG@10 ({protocol})"]
    for name in subsets:
        head += [f"{name} users", f"{name} HR@10", f"{name} NDCG@10"]
    head += ["best epoch", "wall time per run", "torch threads", "load avg"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (model, windows), group in groups.items():
        records = [run.record for run in group]
        row = [MODELS[model][0], windows, ",".join(str(run.seed) for run in group),
               cell([r["valid_NDCG@10"] for r in records])]  # fmt: skip
        for protocol, _ in PROTOCOLS:
            row += [cell([r[protocol][metric] for r in records]) for metric in ("HR@10", "NDCG@10")]
        for name in subsets:
            users = {int(r["excluded"][f"{name}/users"]) for r in records}
            row.append("/".join(str(u) for u in sorted(users)))
            for metric in ("HR@10", "NDCG@10"):
                values = [r["excluded"].get(f"{name}/{metric}") for r in records]
                row.append(cell(values) if None not in values else "n/a")
        seconds = [r["seconds"] for r in records]
        loads = [r[key] for r in records for key in ("load_before", "load_after")]
        spread = f" ({min(seconds):.0f}-{max(seconds):.0f})" if len(seconds) > 1 else ""
        row += [
            ",".join(str(r["best_epoch"]) + "/" + str(r["epochs_run"]) for r in records),
            f"{statistics.fmean(seconds):.0f} s{spread}",
            ",".join(str(r.get("threads", "?")) for r in records),
            f"{min(loads):.1f}-{max(loads):.1f}",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def verdicts(runs: list[Run]) -> list[str]:
    """Against RecBole under both protocols: the mean's gap and whether it exceeds the seeds' std."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run.model, run.windows), []).append(run.record)
    lines = []
    for (model, windows), records in groups.items():
        parts = []
        for protocol, _ in PROTOCOLS:
            for metric in ("HR@10", "NDCG@10"):
                mean, std = mean_std([r[protocol][metric] for r in records])
                gap = mean - RECBOLE[metric]
                if len(records) == 1:
                    parts.append(f"{metric} {protocol} {gap:+.4f} (one seed: no spread)")
                    continue
                beyond = "beyond" if abs(gap) > std else "within"
                parts.append(f"{metric} {protocol} {gap:+.4f} ({beyond} the std {std:.4f})")
        lines.append(f"{MODELS[model][0]}, windows {windows}, vs RecBole: " + "; ".join(parts))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--windows", nargs="+", choices=("last", "all"), default=["last", "all"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every run")
    parser.add_argument("--new-items", type=float, default=0.0, help="prepare with new_items and report them")
    parser.add_argument("--runs", default="runs/bench_windows", help="run directories (one per run)")
    parser.add_argument("--root", default=None, help="data folder ($TRANSREC_HOME or ~/.cache/transrec)")
    parser.add_argument("--output", default=None, help="also write the table (Markdown) and records (.json)")
    parser.add_argument("--rerun", action="store_true", help="train again even where bench.json exists")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: tabulate the grid's runs that have a bench.json")  # fmt: skip
    args = parser.parse_args()

    import torch

    root = data_root(args.root)
    runs_dir = Path(args.runs)
    if args.new_items > 0:
        runs_dir = runs_dir / dataset_name("hash", args.new_items).removeprefix("ml-100k-")
    subsets = ("new",) if args.new_items > 0 else ()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    runs: list[Run] = []
    for model in args.models:
        dataset = ensure_prepared(root, MODELS[model][2], args.new_items)
        for windows in args.windows:
            for seed in args.seeds:
                config = run_config(model, windows, seed, dataset, runs_dir, args.set)
                stored = Path(config.output_dir) / "bench.json"
                record = json.loads(stored.read_text()) if stored.is_file() and not args.rerun else None
                if args.report_only and (record is None or record.get("train_config") != to_dict(config)):
                    print(f"{model} windows={windows} seed={seed}: no finished run of this config")
                    continue
                if record is None or record.get("train_config") != to_dict(config):  # another --set: train
                    record = {**train_and_evaluate(config, subsets), "train_config": to_dict(config)}
                    stored.write_text(json.dumps(record, indent=2) + "\n")
                runs.append(Run(model, windows, seed, record))
                print(summary(runs[-1]), flush=True)
    if not runs:
        raise SystemExit("no finished run to tabulate")
    text = table(runs, subsets)
    reference = (f"RecBole 1.2.1 SASRec (issue 12), history not excluded: HR@10 {RECBOLE['HR@10']:.3f} / "
                 f"NDCG@10 {RECBOLE['NDCG@10']:.3f}")  # fmt: skip
    # With new_items the training data differ from RecBole's (the new items' interactions are removed).
    lines = verdicts(runs) if args.new_items == 0 else []
    reference = reference if args.new_items == 0 else "(no RecBole reference: new items change the data)"
    print("\n" + text + "\n\n" + reference)
    print("\n".join(lines))
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n\n" + reference + "\n\n" + "\n".join(lines) + "\n")
        records = [{"model": r.model, "windows": r.windows, "seed": r.seed, **r.record} for r in runs]
        output.with_suffix(".json").write_text(json.dumps(records, indent=2) + "\n")


if __name__ == "__main__":
    main()
