"""Paper-layout Markdown tables from cell rows (bench.tables.render_table): exact strings of small tables
whose every number is computed by hand in the comments."""

from __future__ import annotations

from dataclasses import replace

from transrec.bench.report_spec import ReportSpec
from transrec.bench.tables import render_table
from transrec.evaluation.significance import BootstrapResult

AXES = {"finetune": ["item", "transfer", "user_fraction", "seed"]}
#: NDCG@10 per seed. IDRec/NoPT: mean 0.12, sample std sqrt((0.02² + 0 + 0.02²) / 2) = 0.02.
#: IDRec/HasPT: 0.13 ± 0.02. Text/NoPT: 0.20 ± 0. Text/HasPT, seeds 0 and 1 only: 0.25 ± sqrt(2 x 0.01² / 1)
#: = 0.0141. Improvements: IDRec (0.13 - 0.12) / 0.12 = +8.3%, Text (0.25 - 0.20) / 0.20 = +25.0%.
VALUES = {
    ("IDRec", "NoPT"): [0.10, 0.12, 0.14],
    ("IDRec", "HasPT"): [0.11, 0.13, 0.15],
    ("Text", "NoPT"): [0.20, 0.20, 0.20],
    ("Text", "HasPT"): [0.24, 0.26],
}


def rows(values=VALUES, fraction="1.0"):
    out = []
    for (item, transfer), per_seed in values.items():
        for seed, value in enumerate(per_seed):
            out.append({"stage": "finetune", "item": item, "transfer": transfer, "user_fraction": fraction,
                        "seed": str(seed), "status": "done", "NDCG@10": value})  # fmt: skip
    return out


def table(**changes):
    entry = {"title": "Table 2: NDCG@10 (%)", "stage": "finetune", "rows": ["item"], "columns": ["transfer"],
             "metric": "NDCG@10", "percent": True, "filter": {"user_fraction": 1.0},
             "improvement": {"axis": "transfer", "of": "HasPT", "over": "NoPT"}}  # fmt: skip
    entry.update(changes)
    return ReportSpec.from_dict({"tables": [entry]}, AXES).tables[0]


HEADER = (
    "### Table 2: NDCG@10 (%)\n\n"
    "Cells: stage `finetune`, user_fraction=1.0; test NDCG@10 ×100, mean ± std (ddof=1) over seed 0, 1, 2 "
    "(3 per cell).\n\n"
)


def test_two_by_two_table_with_seeds_is_exact():
    # Cells of another user_fraction are not this table's: their 0.9 must not enter any mean.
    other = rows({key: [0.9, 0.9, 0.9] for key in VALUES}, fraction="0.1")
    assert render_table(rows() + other, table()) == HEADER + (
        "| item \\ transfer | NoPT | HasPT | HasPT vs NoPT |\n"
        "|---|---|---|---|\n"
        "| IDRec | 12.00 ± 2.00 | 13.00 ± 2.00 | +8.3% |\n"
        "| Text | 20.00 ± 0.00 | 25.00 ± 1.41 (n=2) | +25.0% |\n"
        "\n"
        "- n=2: only 2 of the 3 seed labels finished.\n"
        "- HasPT vs NoPT: (HasPT - NoPT) / NoPT of the means, on axis transfer.\n"
    )


def test_improvement_on_a_row_axis_prints_a_row_and_without_percent_four_digits():
    spec = table(rows=["transfer"], columns=["item"], percent=False)
    text = render_table(rows(), spec)
    assert (
        "| transfer \\ item | IDRec | Text |\n"
        "|---|---|---|\n"
        "| NoPT | 0.1200 ± 0.0200 | 0.2000 ± 0.0000 |\n"
        "| HasPT | 0.1300 ± 0.0200 | 0.2500 ± 0.0141 (n=2) |\n"
        "| HasPT vs NoPT | +8.3% | +25.0% |\n"
    ) in text


def test_missing_cell_prints_a_dash_and_a_footnote_never_zero():
    values = dict(VALUES)
    del values[("IDRec", "HasPT")]
    planned = rows()  # the grid plans every cell; IDRec/HasPT has not finished (a failed one counts as none)
    failed = [dict(r, status="failed", **{"NDCG@10": None}) for r in rows({("IDRec", "HasPT"): [0, 0, 0]})]
    text = render_table(rows(values) + failed, table(), planned=planned)
    assert "| IDRec | 12.00 ± 2.00 | – | – |\n" in text
    assert "- – missing: no finished cell yet for item=IDRec, transfer=HasPT.\n" in text
    assert "0.00" not in text.split("| IDRec")[1].split("\n")[0]


def test_a_cell_the_grid_excludes_stays_blank_and_is_not_called_missing():
    values = dict(VALUES)
    del values[("IDRec", "HasPT")]
    text = render_table(rows(values), table(), planned=rows(values))
    assert "| IDRec | 12.00 ± 2.00 |  |  |\n" in text  # nor is its improvement: it has nothing to compare
    assert "missing" not in text and "–" not in text


def test_one_seed_prints_no_spread_and_says_n_1():
    one = {key: per_seed[:1] for key, per_seed in VALUES.items()}
    text = render_table(rows(one), table())
    assert "NDCG@10 ×100, seed 0 only (n=1, no ±)." in text
    assert "| IDRec | 10.00 | 11.00 | +10.0% |\n" in text
    # No seed axis at all: one run per cell.
    no_seed = [{k: v for k, v in r.items() if k != "seed"} for r in rows(one)]
    text = render_table(no_seed, table(), seed_axis=None)
    assert "one run per cell (n=1, no ±)" in text and "| Text | 20.00 | 24.00 | +20.0% |\n" in text


def test_grid_label_order_wins_over_the_order_rows_arrive_in():
    text = render_table(list(reversed(rows())), table(), labels={"item": ["IDRec", "Text"],
                                                                 "transfer": ["NoPT", "HasPT"]})  # fmt: skip
    assert text.index("| IDRec |") < text.index("| Text |")
    assert "| item \\ transfer | NoPT | HasPT | HasPT vs NoPT |" in text


def test_nested_columns_and_improvement_per_other_column_label():
    spec = table(rows=["user_fraction"], columns=["item", "transfer"], filter={})
    text = render_table(rows(), spec)
    header = ("| user_fraction \\ item / transfer | IDRec / NoPT | IDRec / HasPT | Text / NoPT "
              "| Text / HasPT | IDRec / HasPT vs NoPT | Text / HasPT vs NoPT |")  # fmt: skip
    assert header in text
    assert (
        "| 1.0 | 12.00 ± 2.00 | 13.00 ± 2.00 | 20.00 ± 0.00 | 25.00 ± 1.41 (n=2) | +8.3% | +25.0% |" in text
    )


def test_significance_prints_p_and_a_star_below_the_level():
    def result(p):
        return BootstrapResult(mean_a=0.0, mean_b=0.0, difference=0.0, relative=None, ci_low=0.0, ci_high=0.0,
                               relative_ci_low=None, relative_ci_high=None, p_value=p, n=3, n_seeds=3,
                               n_users=1, n_resamples=999, confidence=0.95)  # fmt: skip

    tests = {(("item", "IDRec"),): result(0.0123), (("item", "Text"),): result(0.2)}
    text = render_table(rows(), table(significance=True), tests=tests)
    assert "| IDRec | 12.00 ± 2.00 | 13.00 ± 2.00 | +8.3%* (p=0.012) |\n" in text
    assert "| Text | 20.00 ± 0.00 | 25.00 ± 1.41 (n=2) | +25.0% (p=0.200) |\n" in text
    assert "paired bootstrap over test users (999 resamples)" in text and "* p < 0.05" in text
    # The bootstrap's floor, and a place without a test, say so.
    tests = {(("item", "IDRec"),): result(0.001), (("item", "Text"),): "a cell has no test_ranks.npz"}
    text = render_table(rows(), table(significance=True), tests=tests)
    assert "+8.3%* (p≤0.001)" in text and "+25.0% (p n/a)" in text
    assert "- p n/a (item=Text): a cell has no test_ranks.npz." in text


def test_rows_read_back_from_csv_render_the_same(tmp_path):
    from transrec.bench.collect import read_csv, write_csv

    path = write_csv(rows(), tmp_path / "cells.csv", ["stage", "item", "transfer", "user_fraction", "seed",
                                                       "status", "NDCG@10"])  # fmt: skip
    assert render_table(read_csv(path), table()) == render_table(rows(), table())


def test_improvement_over_a_mean_of_zero_is_missing():
    values = dict(VALUES)
    values[("Text", "NoPT")] = [0.0, 0.0, 0.0]
    text = render_table(rows(values), replace(table(), title="t"))
    assert "| Text | 0.00 ± 0.00 | 25.00 ± 1.41 (n=2) | – |" in text


def test_places_planned_with_fewer_seeds_are_not_marked_and_excluded_places_stay_blank():
    # A scarcity grid: 0.1 of the users on seeds 0 and 1 only, TS not at 0.1 (excluded). IDRec at 1.0:
    # 0.2 ± 0.1; at 0.1: 0.06 ± sqrt(2 x 0.01² / 1) = 0.0141; TS at 1.0: 0.3 ± 0.
    values = {
        ("IDRec", "1.0"): [0.1, 0.2, 0.3],
        ("IDRec", "0.1"): [0.05, 0.07],
        ("TS", "1.0"): [0.3, 0.3, 0.3],
    }
    cells = [{"stage": "target", "method": m, "user_fraction": f, "seed": str(s), "NDCG@10": v}
             for (m, f), per_seed in values.items() for s, v in enumerate(per_seed)]  # fmt: skip
    spec = ReportSpec.from_dict({"tables": [{"title": "Scarcity", "stage": "target", "rows": ["method"],
                                             "columns": ["user_fraction"], "metric": "NDCG@10"}]},
                                {"target": ["method", "user_fraction", "seed"]}).tables[0]  # fmt: skip
    planned = [{k: v for k, v in c.items() if k != "NDCG@10"} for c in cells]
    text = render_table(cells, spec, planned=planned, labels={"user_fraction": ["0.1", "1.0"]})
    assert text == (
        "### Scarcity\n\n"
        "Cells: stage `target`; test NDCG@10, mean ± std (ddof=1) over seed 0, 1, 2 (2 to 3 per cell as "
        "planned).\n\n"
        "| method \\ user_fraction | 0.1 | 1.0 |\n"
        "|---|---|---|\n"
        "| IDRec | 0.0600 ± 0.0141 | 0.2000 ± 0.1000 |\n"
        "| TS |  | 0.3000 ± 0.0000 |\n"
    )


def test_a_stage_without_axes_is_one_row_named_after_it():
    entry = {"title": "Popularity", "stage": "popularity", "metric": "NDCG@10"}
    spec = ReportSpec.from_dict({"tables": [entry]}, {"popularity": []}).tables[0]
    assert render_table([{"stage": "popularity", "status": "done", "NDCG@10": 0.05}], spec) == (
        "### Popularity\n\n"
        "Cells: stage `popularity`; test NDCG@10, one run per cell (n=1, no ±).\n\n"
        "| stage | NDCG@10 |\n"
        "|---|---|\n"
        "| popularity | 0.0500 |\n"
    )


def test_an_improvement_column_without_any_pair_is_left_out():
    # NineRec Table 2's DSSM: no HasPT (it does not transfer), so no "DSSM / HasPT vs NoPT" column at all.
    values = {("SASRec", "NoPT"): [0.1], ("SASRec", "HasPT"): [0.2], ("DSSM", "NoPT"): [0.3]}
    cells = [
        {"stage": "ft", "user": u, "transfer": t, "seed": "0", "HR@10": v[0]} for (u, t), v in values.items()
    ]
    entry = {"title": "t", "stage": "ft", "rows": [], "columns": ["user", "transfer"], "metric": "HR@10",
             "improvement": {"axis": "transfer", "of": "HasPT", "over": "NoPT"}}  # fmt: skip
    spec = ReportSpec.from_dict({"tables": [entry]}, {"ft": ["user", "transfer", "seed"]}).tables[0]
    assert (
        "| stage \\ user / transfer | SASRec / NoPT | SASRec / HasPT | DSSM / NoPT "
        "| SASRec / HasPT vs NoPT |\n"
        "|---|---|---|---|---|\n"
        "| ft | 0.1000 | 0.2000 | 0.3000 | +100.0% |\n"
    ) in render_table(cells, spec)
    by_rows = render_table(cells, replace(spec, rows=("user", "transfer"), columns=()))
    assert "| SASRec / HasPT vs NoPT | +100.0% |\n" in by_rows and "DSSM / HasPT vs NoPT" not in by_rows


def test_many_missing_places_are_counted_and_a_table_with_none_finished_says_so():
    values = {("IDRec", "NoPT"): [0.1], ("IDRec", "HasPT"): [], ("Text", "NoPT"): [], ("Text", "HasPT"): []}
    planned = rows({key: [0.0] for key in values})
    spec = table(improvement=None)
    text = render_table(rows(values), spec, planned=planned)
    assert (
        "- – missing: no finished cell yet for item=IDRec, transfer=HasPT | item=Text, transfer=NoPT | "
        in text
    )
    assert "- – missing: no cell of this table has finished yet.\n" in render_table([], spec, planned=planned)
    many = [dict(r, item=f"I{i}") for i in range(3) for r in planned]  # 6 more places, none finished
    text = render_table(rows(values), spec, planned=planned + many)
    assert (
        "- – missing: 9 of the 10 places have no finished cell yet, e.g. item=IDRec, transfer=HasPT | "
        in text
    )
