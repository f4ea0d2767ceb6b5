"""Markdown tables laid out like the papers' tables, from a grid's cell rows (``bench.collect.cell_rows``
or ``cells.csv`` read back).

A table (``bench.report_spec.TableSpec``) takes the ``done`` cells of one stage that match its filter,
puts each at the row and column of its labels on the row and column axes, and prints the mean ± the
sample standard deviation (ddof = 1) of the metric over the seed axis. A cell of the grid without a
finished run prints ``–`` (missing, never 0) and is named in a footnote; one with fewer seeds than the
grid plans prints ``n=k``; a place the grid has no cell for at all (``exclude``) stays blank. The
improvement column (or row) prints ``(of - over) / over`` of the two means as ``+x.y%``, with the
paired test's p-value and ``*`` below the significance level when the table asks for it
(``bench.paired``).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from transrec.bench.report_spec import TableSpec
from transrec.evaluation.significance import BootstrapResult

MISSING = "–"
#: The most missing places a footnote names one by one.
MISSING_LISTED = 4
Context = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Summary:
    """The values of one place of a table over its seeds (``values``: seed label -> value)."""

    values: dict[str | None, float]
    planned: int

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values.values()) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values.values()) if self.n > 1 else None


def improvement_context(spec: TableSpec, labels: Mapping[str, str]) -> Context:
    """Where an improvement is taken: the labels of every laid-out axis but the improvement's own (the key
    of ``render_table``'s ``tests``)."""
    axis = spec.improvement.axis if spec.improvement else None
    return tuple((a, labels[a]) for a in (*spec.rows, *spec.columns) if a != axis)


def matches(row: Mapping[str, Any], stage: str, fixed: Mapping[str, str]) -> bool:
    """Whether ``row`` is a cell of ``stage`` with the labels ``fixed``."""
    return row.get("stage") == stage and all(_label(row.get(a)) == label for a, label in fixed.items())


def render_table(
    rows: Sequence[Mapping[str, Any]],
    spec: TableSpec,
    *,
    seed_axis: str | None = "seed",
    labels: Mapping[str, Sequence[str]] | None = None,
    planned: Sequence[Mapping[str, Any]] | None = None,
    tests: Mapping[Context, BootstrapResult | str] | None = None,
    level: float = 0.05,
) -> str:
    """The Markdown of one table: a ``###`` title, a line naming the cells it is built from, the table,
    and its footnotes.

    Args:
        rows: cell rows (dicts with ``stage``, the axis labels, optionally ``status``, and the metric).
            Rows whose ``status`` is not ``done`` count as missing.
        labels: ``{axis: [label, ...]}`` in the grid's order; default: the order rows first show them.
        planned: the grid's cells as rows (``stage`` and labels): each place's planned seeds, and which
            places the grid has; default: every label combination the rows show, each with every seed.
        tests: per improvement place (``improvement_context``), the paired test's result, or a string
            saying why there is none.
        level: a ``*`` marks p below it.
    """
    planned_rows = list(planned) if planned is not None else list(rows)
    fixed = spec.filter_labels
    mine = [r for r in rows if matches(r, spec.stage, fixed) and r.get("status", "done") == "done"]
    plan = [r for r in planned_rows if matches(r, spec.stage, fixed)]
    order = _label_order([*plan, *mine], [*spec.rows, *spec.columns], labels)
    seeds_of = _planned_seeds(plan, spec, seed_axis, every=planned is None)
    values: dict[tuple[tuple[str, ...], tuple[str, ...]], dict[str | None, float]] = {}
    for row in mine:
        value = row.get(spec.metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        place = (_key(row, spec.rows), _key(row, spec.columns))
        seed = _label(row.get(seed_axis)) if seed_axis else None
        values.setdefault(place, {})[seed] = float(value)
    row_keys = [
        k for k in itertools.product(*(order[a] for a in spec.rows)) if any(k == r for r, _ in seeds_of)
    ]
    column_keys = [k for k in itertools.product(*(order[a] for a in spec.columns))
                   if any(k == c for _, c in seeds_of)]  # fmt: skip
    summaries = {
        place: Summary({s: v for s, v in values.get(place, {}).items() if s in seeds}, len(seeds))
        for place, seeds in seeds_of.items()
    }
    table = _Table(spec, summaries, row_keys, column_keys, tests or {}, level)
    body = table.lines()
    lines = [f"### {spec.title}", "", _source_line(spec, seed_axis, list(seeds_of.values())), "", *body]
    notes = table.footnotes(seed_axis)
    if notes:  # a list, so that each note renders on a line of its own
        lines += ["", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


class _Table:
    """The printed grid of one table: header, rows, improvement cells, and what the footnotes need."""

    def __init__(self, spec: TableSpec, summaries: dict, row_keys: list, column_keys: list,
                 tests: Mapping[Context, BootstrapResult | str], level: float) -> None:  # fmt: skip
        self.spec, self.summaries, self.tests, self.level = spec, summaries, tests, level
        self.row_keys, self.column_keys = row_keys, column_keys
        self.missing: list[dict[str, str]] = []
        self.partial: set[tuple[int, int]] = set()
        self.untested: dict[str, list[Context]] = {}
        self.tested: list[tuple[Context, BootstrapResult]] = []

    def lines(self) -> list[str]:
        spec = self.spec
        improvement = spec.improvement
        in_columns = improvement is not None and improvement.axis in spec.columns
        in_rows = improvement is not None and improvement.axis in spec.rows
        headers = [" / ".join(k) for k in self.column_keys] if spec.columns else [spec.metric]
        extra_columns = []
        if in_columns:  # one per other-column combination where some row has both sides planned
            extra_columns = [rest for rest in self._improvement_places(spec.columns, self.column_keys)
                             if any(self._planned_pair(r, None, rest) for r in self.row_keys)]  # fmt: skip
        headers += [self._improvement_title(spec.columns, rest) for rest in extra_columns]
        # The corner names the row axes, and the column axes after a backslash (a cross table's habit).
        corner = (" / ".join(spec.rows) or "stage") + (
            " \\ " + " / ".join(spec.columns) if spec.columns else ""
        )
        out = ["| " + " | ".join([corner, *headers]) + " |", "|---" * (len(headers) + 1) + "|"]
        for row_key in self.row_keys:
            cells = [self._cell(row_key, column_key) for column_key in self.column_keys]
            cells += [self._improvement(row_key, None, rest) for rest in extra_columns]
            out.append("| " + " | ".join([" / ".join(row_key) or spec.stage, *cells]) + " |")
        if in_rows:
            for rest in self._improvement_places(spec.rows, self.row_keys):
                if not any(self._planned_pair(None, c, rest) for c in self.column_keys):
                    continue
                cells = [self._improvement(None, column_key, rest) for column_key in self.column_keys]
                cells += [""] * len(extra_columns)
                out.append("| " + " | ".join([self._improvement_title(spec.rows, rest), *cells]) + " |")
        return out

    def _cell(self, row_key: tuple[str, ...], column_key: tuple[str, ...]) -> str:
        summary = self.summaries.get((row_key, column_key))
        if summary is None:  # no cell of the grid falls here (an excluded combination)
            return ""
        if summary.n == 0:
            self.missing.append(self._labels(row_key, column_key))
            return MISSING
        text = self._number(summary.mean)
        if summary.std is not None:
            text += f" ± {self._number(summary.std)}"
        if summary.n < summary.planned:
            self.partial.add((summary.n, summary.planned))
            text += f" (n={summary.n})"
        return text

    def _improvement_places(self, axes: Sequence[str], keys: list) -> list[tuple[str, ...]]:
        """The label combinations of ``axes`` without the improvement axis, one extra column/row each."""
        skip = axes.index(self.spec.improvement.axis)
        return list(dict.fromkeys(key[:skip] + key[skip + 1 :] for key in keys))

    def _improvement_title(self, axes: Sequence[str], rest: tuple[str, ...]) -> str:
        improvement = self.spec.improvement
        name = f"{improvement.of} vs {improvement.over}"
        return " / ".join((*rest, name)) if rest else name

    def _pair(self, row_key: tuple | None, column_key: tuple | None, rest: tuple[str, ...]) -> tuple:
        """The places of ``of`` and ``over`` at an improvement place (``row_key`` None: a row of them)."""
        spec, improvement = self.spec, self.spec.improvement
        in_rows = row_key is None
        skip = (spec.rows if in_rows else spec.columns).index(improvement.axis)

        def place(label: str) -> tuple:
            key = (*rest[:skip], label, *rest[skip:])
            return (key, column_key) if in_rows else (row_key, key)

        return place(improvement.of), place(improvement.over)

    def _planned_pair(self, row_key: tuple | None, column_key: tuple | None, rest: tuple[str, ...]) -> bool:
        return all(place in self.summaries for place in self._pair(row_key, column_key, rest))

    def _improvement(self, row_key: tuple | None, column_key: tuple | None, rest: tuple[str, ...]) -> str:
        spec = self.spec
        of_place, over_place = self._pair(row_key, column_key, rest)
        of, over = self.summaries.get(of_place), self.summaries.get(over_place)
        if of is None or over is None:  # the grid has no cell for one side (excluded): nothing to compare
            return ""
        if of.n == 0 or over.n == 0 or over.mean == 0:
            return MISSING
        text = f"{round((of.mean - over.mean) / over.mean, 6) + 0.0:+.1%}"  # + 0.0: no "-0.0%"
        if not spec.significance:
            return text
        context = improvement_context(spec, self._labels(*of_place))
        result = self.tests.get(context, "not computed")
        if isinstance(result, str):
            self.untested.setdefault(result, []).append(context)
            return text + " (p n/a)"
        star = "*" if result.p_value < self.level else ""
        self.tested.append((context, result))
        return f"{text}{star} ({_p_value(result)})"

    def _labels(self, row_key: tuple[str, ...], column_key: tuple[str, ...]) -> dict[str, str]:
        return {**dict(zip(self.spec.rows, row_key)), **dict(zip(self.spec.columns, column_key))}

    def _number(self, value: float) -> str:
        scale = 100.0 if self.spec.percent else 1.0
        return f"{value * scale + 0.0:.{self.spec.digits}f}"

    def _signed(self, value: float) -> str:
        return f"{value * (100.0 if self.spec.percent else 1.0) + 0.0:+.{self.spec.digits}f}"

    def footnotes(self, seed_axis: str | None) -> list[str]:
        notes = []
        if self.missing:
            places = [", ".join(f"{a}={v}" for a, v in labels.items()) for labels in self.missing]
            if len(places) == len(self.summaries):
                notes.append(f"{MISSING} missing: no cell of this table has finished yet.")
            elif len(places) > MISSING_LISTED:  # a long list says less than a count
                notes.append(f"{MISSING} missing: {len(places)} of the {len(self.summaries)} places have no "
                             f"finished cell yet, e.g. {' | '.join(places[:MISSING_LISTED])}.")  # fmt: skip
            else:
                notes.append(f"{MISSING} missing: no finished cell yet for {' | '.join(places)}.")
        for n, planned in sorted(self.partial):
            notes.append(f"n={n}: only {n} of the {planned} {seed_axis or 'seed'} labels finished.")
        if self.spec.improvement is not None:
            improvement = self.spec.improvement
            notes.append(f"{improvement.of} vs {improvement.over}: ({improvement.of} - {improvement.over}) / "
                         f"{improvement.over} of the means, on axis {improvement.axis}.")  # fmt: skip
        if self.spec.significance:
            result = next((r for r in self.tests.values() if not isinstance(r, str)), None)
            detail = f" ({result.n_resamples} resamples)" if result is not None else ""
            notes.append(f"p: two-sided paired bootstrap over test users{detail}, seeds paired by label "
                         f"(evaluation.significance); * p < {self.level:g}.")  # fmt: skip
            improvement = self.spec.improvement
            for context, result in self.tested:
                where = ", ".join(f"{a}={v}" for a, v in context)
                notes.append(
                    (f"{where}: " if where else "")
                    + f"{improvement.of} - {improvement.over} = {self._signed(result.difference)} "
                    f"(95% CI [{self._signed(result.ci_low)}, {self._signed(result.ci_high)}]) per user, "
                    f"{result.n_seeds} seed(s) x {result.n_users} users, {_p_value(result)}."
                )
            for reason, contexts in self.untested.items():
                places = "; ".join(", ".join(f"{a}={v}" for a, v in c) or "the table" for c in contexts)
                notes.append(f"p n/a ({places}): {reason}.")
        return notes


def _source_line(spec: TableSpec, seed_axis: str | None, planned: list[list[str | None]]) -> str:
    """The line under the title: which cells, which metric, over which seeds (the grid may plan fewer seeds
    for some places, e.g. a scarcity grid on the first two)."""
    fixed = ", ".join(f"{a}={v}" for a, v in spec.filter_labels.items())
    scale = " ×100" if spec.percent else ""
    named = list(dict.fromkeys(s for seeds in planned for s in seeds if s is not None))
    counts = sorted({len(seeds) for seeds in planned})
    if seed_axis and named:
        per_cell = (
            f"{counts[0]} per cell"
            if len(counts) == 1
            else f"{counts[0]} to {counts[-1]} per cell as planned"
        )
        spread = f"mean ± std (ddof=1) over {seed_axis} {', '.join(named)} ({per_cell})"
        if len(named) == 1:
            spread = f"{seed_axis} {named[0]} only (n=1, no ±)"
    else:
        spread = "one run per cell (n=1, no ±)"
    where = f"stage `{spec.stage}`" + (f", {fixed}" if fixed else "")
    return f"Cells: {where}; test {spec.metric}{scale}, {spread}."


def _planned_seeds(plan: Sequence[Mapping[str, Any]], spec: TableSpec, seed_axis: str | None,
                   every: bool) -> dict[tuple, list[str | None]]:  # fmt: skip
    """``{(row key, column key): [seed label, ...]}`` of the places the grid has; with ``every``, each
    place plans every seed label seen anywhere in the table (the rows are all there is to go by)."""
    places: dict[tuple, list[str | None]] = {}
    for row in plan:
        if any(_label(row.get(a)) is None for a in (*spec.rows, *spec.columns)):
            continue
        seed = _label(row.get(seed_axis)) if seed_axis else None
        seeds = places.setdefault((_key(row, spec.rows), _key(row, spec.columns)), [])
        if seed not in seeds:
            seeds.append(seed)
    if every:
        union = list(dict.fromkeys(s for seeds in places.values() for s in seeds))
        places = {place: union for place in places}
    return places


def _label_order(rows: Sequence[Mapping[str, Any]], axes: Sequence[str],
                 labels: Mapping[str, Sequence[str]] | None) -> dict[str, list[str]]:  # fmt: skip
    order = {}
    for axis in axes:
        known = [str(label) for label in (labels or {}).get(axis, ())]
        seen = [_label(row.get(axis)) for row in rows if _label(row.get(axis)) is not None]
        order[axis] = list(dict.fromkeys([*known, *seen]))
    return order


def _key(row: Mapping[str, Any], axes: Sequence[str]) -> tuple[str, ...]:
    return tuple(_label(row.get(axis)) for axis in axes)


def _label(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _p_value(result: BootstrapResult) -> str:
    floor = 1.0 / (result.n_resamples + 1)
    if result.p_value <= floor * (1 + 1e-9):  # no replicate as extreme: the bootstrap's floor
        return f"p≤{floor:.1g}"
    return f"p={result.p_value:.3f}" if result.p_value >= 0.001 else f"p={result.p_value:.1e}"
