"""The paired significance tests behind a table's improvement column: at each place of the table, the
cells of ``of`` against those of ``over``, per test user, seeds paired by label.

Per-user values come from each cell's ``test_ranks.npz`` (``evaluation.significance.hit_per_user`` or
``ndcg_per_user`` of the ranks), the test is ``evaluation.significance.paired_bootstrap`` (resampling
test users, every seed kept). Users are matched by their index (the ``users`` array), so two cells
must have evaluated the same test users; for a subset metric (``new/NDCG@10``) the cells' ranks must
carry the subset's membership (``subset_new``), the same in both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from transrec.bench.collect import SUBSET_PREFIX, CellRecord
from transrec.bench.report_spec import RANK_METRIC, TableSpec
from transrec.bench.tables import Context, improvement_context, matches
from transrec.evaluation.significance import BootstrapResult, hit_per_user, ndcg_per_user, paired_bootstrap

PER_USER = {"HR": hit_per_user, "NDCG": ndcg_per_user}


def improvement_tests(
    records: Sequence[CellRecord],
    spec: TableSpec,
    seed_axis: str | None,
    resamples: int = 10_000,
    seed: int = 0,
) -> dict[Context, BootstrapResult | str]:
    """For every place of ``spec``'s improvement (``tables.improvement_context``), the paired bootstrap of
    the per-user metric of ``of`` minus ``over``, or a sentence saying why there is none."""
    improvement = spec.improvement
    if improvement is None or not spec.significance:
        return {}
    parsed = RANK_METRIC.match(spec.metric)
    if parsed is None:
        return {}
    per_user = PER_USER[parsed["name"]]
    k, subset = int(parsed["k"]), parsed["subset"]
    done = [r for r in records if r.status == "done" and matches({"stage": r.stage, **r.labels}, spec.stage,
                                                                 spec.filter_labels)]  # fmt: skip
    groups: dict[Context, dict[str, dict[str | None, CellRecord]]] = {}
    laid_out = (*spec.rows, *spec.columns)
    for record in done:
        label = record.labels.get(improvement.axis)
        if label not in (improvement.of, improvement.over) or any(a not in record.labels for a in laid_out):
            continue
        context = improvement_context(spec, record.labels)
        seed_label = record.labels.get(seed_axis) if seed_axis else None
        groups.setdefault(context, {}).setdefault(label, {})[seed_label] = record
    tests: dict[Context, BootstrapResult | str] = {}
    for context, sides in groups.items():
        of, over = sides.get(improvement.of, {}), sides.get(improvement.over, {})
        seeds = [s for s in of if s in over]
        if not seeds:
            tests[context] = "no seed finished on both sides"
            continue
        try:
            pairs = [_paired_values(of[s], over[s], per_user, k, subset) for s in seeds]
        except _Unpaired as reason:
            tests[context] = str(reason)
            continue
        if len({p[0].shape for p in pairs}) != 1:
            tests[context] = "the seeds evaluated different test users"
            continue
        a, b = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
        tests[context] = paired_bootstrap(a, b, n_resamples=resamples, seed=seed)
    return tests


class _Unpaired(Exception):
    """Two cells whose per-user values cannot be paired; the message says why."""


def _paired_values(a: CellRecord, b: CellRecord, per_user, k: int,
                   subset: str | None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    ranks_a, ranks_b = a.ranks(), b.ranks()
    if ranks_a is None or ranks_b is None:
        raise _Unpaired("a cell has no test_ranks.npz")
    order_a, order_b = (
        np.argsort(ranks_a["users"], kind="stable"),
        np.argsort(ranks_b["users"], kind="stable"),
    )
    if not np.array_equal(ranks_a["users"][order_a], ranks_b["users"][order_b]):
        raise _Unpaired("the two cells evaluated different test users")
    values_a = per_user(ranks_a["ranks"][order_a], k)
    values_b = per_user(ranks_b["ranks"][order_b], k)
    if subset is not None and subset != "all":
        name = SUBSET_PREFIX + subset
        if name not in ranks_a or name not in ranks_b:
            raise _Unpaired(f"test_ranks.npz holds no membership of the subset {subset!r} ({name})")
        mask_a, mask_b = ranks_a[name][order_a].astype(bool), ranks_b[name][order_b].astype(bool)
        if not np.array_equal(mask_a, mask_b):
            raise _Unpaired(f"the two cells disagree on which users are in the subset {subset!r}")
        if not mask_a.any():
            raise _Unpaired(f"no test user is in the subset {subset!r}")
        values_a, values_b = values_a[mask_a], values_b[mask_a]
    return values_a, values_b
