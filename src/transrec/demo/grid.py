"""The demo as a ``transrec bench`` grid: ``demo_grid(config, target_users)`` turns a ``DemoConfig`` into
the grid that ``transrec demo`` runs through ``bench.runner.run_grid`` (configs/bench/demo.yaml is the
same grid for the defaults; tests/demo/test_grid.py keeps the two equal).

Stages (each cell in ``<output_dir>/<stage>/<axis>=<label>,...``):

    source      NoPT's model pre-trained on the source platform, one cell per seed
    target      axes method (IDRec, TS, NoPT, HasPT; HasPT starts from the source cell of its seed),
                user_fraction (the scarcity fractions and 1.0) and seed; the cells neither the main table
                (every method at 1.0 over ``seeds``) nor the scarcity grid (``scarcity_methods`` at each
                fraction over ``grid_seeds``) needs are excluded
    zeroshot    the source cell of each seed applied to the target's test users (``kind: evaluate``)
    popularity  the non-learned popularity ranking of the target (``kind: popularity``)

Patience counts optimizer steps at every fraction (``scaled_patience``), which needs the number of the
target's users: the caller prepares the datasets (``demo_datasets``) first and passes it.
"""

from __future__ import annotations

import math
from typing import Any

from transrec.bench.grid import Grid
from transrec.bench.spec import format_label
from transrec.demo.pipeline import TRAINED, DemoConfig, base_settings, method_settings

#: Every platform option of ``bench.datasets``' ml100k-platforms builder, with DemoConfig's field of it.
PLATFORM_OPTIONS = ("modality", "users_per_platform", "split_seed", "image_size")


def scaled_patience(patience: int, n_users: int, batch_size: int, fraction: float) -> int:
    """``patience`` epochs on all users, as the same number of optimizer steps on ``fraction`` of them.

    An epoch on 10% of the target's users is one step where an epoch on all of them is four (471 users,
    128 a batch): a patience of 3 epochs would stop such a run after three noisy validations of three
    steps, before a fine-tuned model has recovered from its first steps. Counting patience in steps
    gives every fraction the same number of steps without improvement."""
    steps = math.ceil(n_users / batch_size)
    steps_at_fraction = math.ceil(max(1, round(fraction * n_users)) / batch_size)
    return max(patience, math.ceil(patience * steps / steps_at_fraction))


def demo_datasets(config: DemoConfig) -> dict[str, dict[str, Any]]:
    """The grid's ``datasets:``: the two MovieLens-100K platforms of ``config`` (only the options that
    differ from the builder's defaults, DemoConfig's, so that the default demo's specs are the shortest)."""
    defaults = DemoConfig()
    options = {
        key: getattr(config, key)
        for key in PLATFORM_OPTIONS
        if getattr(config, key) != getattr(defaults, key)
    }
    source: dict[str, Any] = {"builder": "ml100k-platforms", "part": "source"}
    target: dict[str, Any] = {"builder": "ml100k-platforms", "part": "target", "new_items": config.new_items}
    if options:
        source["options"], target["options"] = dict(options), dict(options)
    return {"source": source, "target": target}


def demo_grid(config: DemoConfig, target_users: int) -> Grid:
    """The grid of the demo ``config`` (module docstring), in ``config.output_dir``; ``target_users``: the
    number of users of the prepared target platform (for ``scaled_patience``)."""
    fractions = [*config.fractions, *(() if 1.0 in config.fractions else (1.0,))]
    trained = [m for m in TRAINED if m in config.methods or m in config.scarcity_methods]
    needs_source = "Zero-shot" in config.methods or "HasPT" in trained
    stages: list[dict[str, Any]] = []
    if needs_source:
        nopt = method_settings(config, "NoPT")
        if config.source_epochs != config.epochs:
            nopt["epochs"] = config.source_epochs
        stages.append(
            {"name": "source", "dataset": "source", "set": nopt, "axes": {"seed": list(config.seeds)}}
        )
    if trained:
        stages.append(_target_stage(config, trained, fractions, target_users))
    if "Zero-shot" in config.methods:
        stages.append(
            {
                "name": "zeroshot",
                "kind": "evaluate",
                "dataset": "target",
                "from": "source",
                "axes": {"method": {"Zero-shot": {}}, "seed": list(config.seeds)},
            }
        )
    if "Popularity" in config.methods:
        stages.append(
            {
                "name": "popularity",
                "kind": "popularity",
                "dataset": "target",
                "axes": {"method": {"Popularity": {}}},
            }
        )
    data = {
        "name": "demo",
        "description": _description(config),
        "output_dir": config.output_dir,
        "datasets": demo_datasets(config),
        "base": base_settings(config),
        "stages": stages,
        "report": demo_report(config, trained, [format_label(f, "fractions") for f in fractions]),
    }
    return Grid.from_dict(data)


def _target_stage(config: DemoConfig, trained: list[str], fractions: list[float], target_users: int) -> dict:
    methods = {m: method_settings(config, m) for m in trained}
    if "HasPT" in methods:
        methods["HasPT"]["from"] = "source"  # seed s starts from the source pre-trained with seed s
    levels = {}
    for fraction in fractions:
        level: dict[str, Any] = {"user_fraction": fraction}
        patience = scaled_patience(config.patience, target_users, config.batch_size, fraction)
        if patience != config.patience:
            level["patience"] = patience
        levels[format_label(fraction, "fractions")] = level
    seeds = list(config.seeds)  # DemoConfig checks that grid_seeds are among them

    def needed(method: str, fraction: float, seed: int) -> bool:
        main = fraction == 1.0 and method in config.methods and seed in config.seeds
        scarcity = fraction in config.fractions and method in config.scarcity_methods
        return main or (scarcity and seed in config.grid_seeds)

    exclude: list[dict[str, Any]] = []
    for fraction in fractions:
        label = format_label(fraction, "fractions")
        for method in trained:
            if not any(needed(method, fraction, seed) for seed in seeds):
                exclude.append({"method": method, "user_fraction": label})
        for seed in seeds:
            unused = [m for m in trained if not needed(m, fraction, seed)]
            if len(unused) == len(trained):
                exclude.append({"user_fraction": label, "seed": seed})
            else:  # the methods excluded at every seed above are not named again
                exclude += [
                    {"method": m, "user_fraction": label, "seed": seed}
                    for m in unused
                    if any(needed(m, fraction, s) for s in seeds)
                ]
    stage: dict[str, Any] = {
        "name": "target",
        "dataset": "target",
        "axes": {"method": methods, "user_fraction": levels, "seed": seeds},
    }
    if exclude:
        stage["exclude"] = exclude
    return stage


def _description(config: DemoConfig) -> str:
    return (
        "The transrec demo as a grid: MovieLens-100K cut into a source and a target platform without a "
        f"shared user or item ({config.modality}); on the target (new-item protocol, {config.new_items:.0%} "
        f"of the items new) {', '.join(config.methods)}; SASRec user encoder, BCE, patience "
        f"{config.patience}; seeds {list(config.seeds)}, the scarcity grid on {list(config.grid_seeds)}."
    )


def demo_report(config: DemoConfig, trained: list[str], fraction_labels: list[str]) -> dict[str, Any]:
    """The grid's ``report:``: the demo's tables and plots (the demo's own report, ``demo.report``, is
    written beside them); a comparison is left out when the config drops one of its methods."""

    def improvement(of: str, over: str) -> dict[str, Any]:
        return (
            {"improvement": {"axis": "method", "of": of, "over": over}} if {of, over} <= set(trained) else {}
        )

    all_users = {"stage": "target", "rows": ["method"], "filter": {"user_fraction": "1.0"}}
    tables: list[dict[str, Any]] = []
    plots: list[dict[str, Any]] = []
    if trained:
        haspt_nopt = improvement("HasPT", "NoPT")
        haspt_idrec = improvement("HasPT", "IDRec")
        tables += [
            {
                "title": "Demo: test NDCG@10 on the target, all test users, trained on all users",
                **all_users,
                "metric": "NDCG@10",
                **haspt_nopt,
                **({"significance": True} if haspt_nopt else {}),
            },
            {
                "title": "Demo: test HR@10 on the target, all test users, trained on all users",
                **all_users,
                "metric": "HR@10",
                **haspt_nopt,
            },
            {
                "title": "Demo: test NDCG@10 on the new-item users (their target was never trained on)",
                **all_users,
                "metric": "new/NDCG@10",
                **haspt_idrec,
                **({"significance": True} if haspt_idrec else {}),
            },
            {"title": "Demo: test HR@10 on the new-item users", **all_users, "metric": "new/HR@10"},
        ]
        plots.append(
            {
                "kind": "convergence",
                "stage": "target",
                "series": ["method"],
                "filter": {"user_fraction": "1.0"},
                "metric": "NDCG@10",
                "name": "convergence",
            }
        )
    if "Zero-shot" in config.methods:
        tables += [
            {
                "title": "Demo: zero-shot (source pre-training applied to the target), NDCG@10",
                "stage": "zeroshot",
                "rows": ["method"],
                "metric": "NDCG@10",
            },
            {
                "title": "Demo: zero-shot, NDCG@10 on the new-item users",
                "stage": "zeroshot",
                "rows": ["method"],
                "metric": "new/NDCG@10",
            },
        ]
    if "Popularity" in config.methods:
        tables.append(
            {
                "title": "Demo: popularity (non-learned reference), NDCG@10",
                "stage": "popularity",
                "rows": ["method"],
                "metric": "NDCG@10",
            }
        )
    if trained and len(fraction_labels) > 1:
        scarcity = improvement("HasPT", "NoPT")
        tables.append(
            {
                "title": "Demo: target scarcity, test NDCG@10 on all test users by the share of users "
                "trained on",
                "stage": "target",
                "rows": ["method"],
                "columns": ["user_fraction"],
                "metric": "NDCG@10",
                **scarcity,
                **({"significance": True} if scarcity else {}),
            }
        )
    if "Zero-shot" in config.methods or "HasPT" in trained:
        plots.append(
            {"kind": "convergence", "stage": "source", "metric": "NDCG@10", "name": "convergence-source"}
        )
    if trained and len(fraction_labels) > 1:
        plots.append(
            {
                "kind": "scaling",
                "stage": "target",
                "x": "user_fraction",
                "series": ["method"],
                "metric": "NDCG@10",
                "name": "scarcity",
            }
        )
    return {"seed_axis": "seed", "tables": tables, "plots": plots}
