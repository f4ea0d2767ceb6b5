"""The demo's numbers: per-method cells (mean and spread over seeds), the scarcity grid, the paired
significance tests, how the runs stopped, and the conclusions they support, as one JSON-able dict.

``summarise`` needs the runs' per-user ranks; everything after it (``conclusions`` here,
``demo.report``, ``demo.plots``) reads only the dict, so a report can be rendered again from a
``results.json``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from transrec.demo.pipeline import DemoConfig
from transrec.demo.runs import SOURCE, DemoRuns, MethodRun, cells
from transrec.evaluation.significance import ndcg_per_user, paired_bootstrap

METRIC = "NDCG@10"
#: The paired tests printed beside the table: (A, B, users); A - B is tested. The scarcity grid adds
#: HasPT vs NoPT at each fraction below 1.
COMPARISONS = (("HasPT", "NoPT", "all"), ("IDRec", "HasPT", "all"), ("HasPT", "IDRec", "new"))
LEVEL = 0.05


def summarise(demo: DemoRuns, config: DemoConfig) -> dict[str, Any]:
    """Everything the report shows (see the module docstring)."""
    new = demo.new_item_mask
    main = [run for run in demo.runs if run.fraction == 1.0 and run.method != SOURCE]
    summary: dict[str, Any] = {
        "users": {"all": len(new), "new": int(new.sum())},
        "methods": {},
        "source": _source(demo.runs),
        "scarcity": _scarcity(demo.runs, config),
        "significance": [],
        "stops": _stops(demo.runs, config),
        "stage_seconds": {k: round(v, 1) for k, v in demo.stage_seconds.items()},
    }
    for name in dict.fromkeys(run.method for run in main):
        mine = [run for run in main if run.method == name]
        per_seed = [cells(run.ranks, new) for run in mine]
        summary["methods"][name] = {
            "seeds": [run.seed for run in mine],
            "per_seed": per_seed,
            **_spread(per_seed),
            "seconds": [round(run.seconds, 1) for run in mine],
            "epochs_run": [run.epochs_run for run in mine],
            "best_epoch": [run.best_epoch for run in mine],
            "stop": [run.stop for run in mine],
            "valid_ndcg10_per_epoch": [run.valid_curve for run in mine],
        }
    tests = [(a, b, users, 1.0) for a, b, users in COMPARISONS]
    tests += [("HasPT", "NoPT", "all", f) for f in config.fractions if f < 1.0]
    for a, b, users, fraction in tests:
        comparison = compare(demo.runs, a, b, users, fraction, new, config.bootstrap_resamples)
        if comparison is not None:
            summary["significance"].append(comparison)
    summary["conclusions"] = conclusions(summary)
    return summary


def compare(runs: list[MethodRun], a: str, b: str, users: str, fraction: float, new: np.ndarray,
            resamples: int) -> dict[str, Any] | None:  # fmt: skip
    """The paired bootstrap of per-user NDCG@10, ``a`` - ``b``, over the seeds both have (seed s of A with
    seed s of B) and the test users of ``users`` (``all`` or ``new``); None when there is nothing to pair."""
    ranks = {m: {r.seed: r.ranks for r in runs if r.method == m and r.fraction == fraction
                 and r.ranks is not None} for m in (a, b)}  # fmt: skip
    seeds = sorted(set(ranks[a]) & set(ranks[b]))
    mask = new if users == "new" else np.ones(len(new), dtype=bool)
    if not seeds or not mask.any():
        return None
    values = {m: np.stack([ndcg_per_user(ranks[m][s])[mask] for s in seeds]) for m in (a, b)}
    result = paired_bootstrap(values[a], values[b], n_resamples=resamples, seed=0)
    return {"a": a, "b": b, "users": users, "fraction": fraction, "metric": METRIC, "seeds": seeds,
            **result.to_dict()}  # fmt: skip


def _spread(per_seed: list[dict[str, float | None]]) -> dict[str, dict[str, float | None]]:
    """Mean and standard deviation over the seeds that have a value (None where none has)."""
    mean: dict[str, float | None] = {}
    std: dict[str, float | None] = {}
    for key in per_seed[0] if per_seed else ():
        values = [c[key] for c in per_seed if c[key] is not None]
        mean[key] = float(np.mean(values)) if values else None
        std[key] = float(np.std(values, ddof=1)) if len(values) > 1 else (0.0 if values else None)
    return {"mean": mean, "std": std}


def _source(runs: list[MethodRun]) -> dict[str, Any]:
    mine = [run for run in runs if run.method == SOURCE]
    return {
        "seeds": [run.seed for run in mine],
        "test_ndcg10": [None if run.test is None else run.test.get(METRIC) for run in mine],
        "seconds": [round(run.seconds, 1) for run in mine],
        "epochs_run": [run.epochs_run for run in mine],
        "best_epoch": [run.best_epoch for run in mine],
        "stop": [run.stop for run in mine],
        "valid_ndcg10_per_epoch": [run.valid_curve for run in mine],
    }


def _scarcity(runs: list[MethodRun], config: DemoConfig) -> dict[str, Any]:
    """``{method: {fraction: {seeds, per_seed, mean, std, min, max}}}`` of test NDCG@10 (all users), over
    the grid's seeds only, at every fraction (1.0 included), so that each point has the same seeds."""
    grid: dict[str, Any] = {}
    for method in config.scarcity_methods:
        grid[method] = {}
        for fraction in config.fractions:
            mine = [r for r in runs if r.method == method and r.fraction == fraction
                    and r.seed in config.grid_seeds]  # fmt: skip
            values = [float(ndcg_per_user(r.ranks).mean()) for r in mine if r.ranks is not None]
            grid[method][f"{fraction:g}"] = {
                "seeds": [r.seed for r in mine if r.ranks is not None],
                "per_seed": values,
                **_stats(values),
            }
    return grid


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return dict.fromkeys(("mean", "std", "min", "max"))
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0  # sample std, as the bench tables
    return {"mean": float(np.mean(values)), "std": std, "min": float(np.min(values)),
            "max": float(np.max(values))}  # fmt: skip


def _stops(runs: list[MethodRun], config: DemoConfig) -> dict[str, Any]:
    trained = [run for run in runs if run.stop]
    capped = [_label(run) for run in trained if run.stop == "cap"]
    return {
        "runs": len(trained),
        "patience": sum(run.stop == "patience" for run in trained),
        "cap": len(capped),
        "collapsed": sum(run.stop == "collapsed" for run in trained),
        "capped_runs": capped,
        "epochs_cap": config.epochs,
        "source_epochs_cap": config.source_epochs,
        "patience_epochs": config.patience,
        "epochs_run": [run.epochs_run for run in trained if run.stop != "collapsed"],
    }


def _label(run: MethodRun) -> str:
    share = "" if run.fraction == 1.0 else f", {run.fraction:.0%} of the users"
    return f"{run.method} seed {run.seed}{share}"


# -- words from numbers ----------------------------------------------------------------------------------
def comparison_sentence(comparison: dict[str, Any], users: dict[str, int], level: float = LEVEL) -> str:
    """One sentence for a paired test: who beats whom by how much, with the interval and p-value, or that
    there is no significant difference at ``level``."""
    a, b, metric = comparison["a"], comparison["b"], comparison["metric"]
    where = _where(comparison, users)
    detail = (
        f"{a} - {b} = {_signed(comparison['difference'])}{_in_parentheses(comparison['relative'])}, "
        f"95% CI [{_signed(comparison['ci_low'])}, {_signed(comparison['ci_high'])}]"
    )
    if comparison.get("relative_ci_low") is not None:
        low, high = _relative(comparison["relative_ci_low"]), _relative(comparison["relative_ci_high"])
        detail += f" or [{low}, {high}]"
    detail += (
        f", {format_p(comparison['p_value'], comparison['n_resamples'])}; paired bootstrap over "
        f"{len(comparison['seeds'])} seed(s) x {comparison['n_users']} users"
    )
    if comparison["p_value"] >= level:
        return f"No significant difference at {level:.0%} between {a} and {b} in {metric} {where} ({detail})."
    verb = "beats" if comparison["difference"] > 0 else "trails"
    relative = comparison["relative"]
    size = _relative(abs(relative)) if relative is not None else _signed(abs(comparison["difference"]))
    return f"{a} {verb} {b} by {size.lstrip('+')} {metric} {where} ({detail})."


def format_p(p: float, resamples: int) -> str:
    """``p = 0.031``; at the bootstrap's floor, ``p <= 1/(R + 1)`` (no replicate was as extreme)."""
    if p <= 1.0 / (resamples + 1) * (1 + 1e-9):
        return f"p <= {1.0 / (resamples + 1):.1g}"
    return f"p = {p:.3f}" if p >= 0.001 else f"p = {p:.1e}"


def conclusions(summary: dict[str, Any]) -> list[str]:
    """Plain-words conclusions, each computed from the numbers of ``summary``."""
    users = summary["users"]
    out = [comparison_sentence(c, users) for c in summary["significance"]]
    methods = summary["methods"]
    new_rows = {name: entry["mean"].get(f"new/{METRIC}") for name, entry in methods.items()}
    known = {name: value for name, value in new_rows.items() if value is not None}
    if known:
        best = max(known, key=known.get)
        listing = ", ".join(f"{name} {value:.4f}" for name, value in known.items())
        out.append(f"On the {users['new']} test users whose target is a new item (never seen in training), "
                   f"NDCG@10 is: {listing}; {best} ranks them best.")  # fmt: skip
    elif users.get("new", 0) == 0:
        out.append("No test user has a new item as its target: the new-item column is empty.")
    out += _scarcity_words(summary["scarcity"])
    stops = summary["stops"]
    if stops["runs"]:
        sentence = (
            f"{stops['patience']} of {stops['runs']} trained runs stopped by early stopping (patience "
            f"{stops['patience_epochs']} epochs on all users, as many steps on fewer), {stops['cap']} "
            f"reached the epoch cap ({stops['epochs_cap']} on the target, {stops['source_epochs_cap']} on "
            "the source)"
        )
        if stops["collapsed"]:
            sentence += f", {stops['collapsed']} collapsed"
        if stops["cap"]:
            sentence += f"; these may still have been improving: {', '.join(stops['capped_runs'])}"
        out.append(sentence + ".")
    return out


def _scarcity_words(grid: dict[str, Any]) -> list[str]:
    out = []
    for method, points in grid.items():
        known = sorted((float(f), p) for f, p in points.items() if p["mean"] is not None)
        if len(known) < 2:
            continue
        (low, first), (high, last) = known[0], known[-1]
        ratio = f" ({first['mean'] / last['mean']:.0%} of it)" if last["mean"] else ""
        out.append(
            f"{method} trained on {low:.0%} of the target's users reaches NDCG@10 {first['mean']:.4f}, "
            f"against {last['mean']:.4f} with {high:.0%}{ratio}, over {len(first['seeds'])} seed(s)."
        )
    return out


def _where(comparison: dict[str, Any], users: dict[str, int]) -> str:
    new = comparison["users"] == "new"
    who = f"the {users['new']} new-item test users" if new else f"all {users['all']} test users"
    if comparison["fraction"] != 1.0:
        return f"on {who}, trained on {comparison['fraction']:.0%} of the target's users"
    return f"on {who}"


def _signed(value: float) -> str:
    return f"{value + 0.0:+.4f}"


def _in_parentheses(relative: float | None) -> str:
    return "" if relative is None else f" ({_relative(relative)})"  # none against a mean of 0


def _relative(value: float | None) -> str:
    return "n/a" if value is None else f"{round(value, 6) + 0.0:+.1%}"
