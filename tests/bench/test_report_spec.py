"""The report section of a grid is checked against its stages, axes and labels, each error naming the key
path (bench.report_spec.ReportSpec.from_dict)."""

from __future__ import annotations

import pytest

from transrec.bench.report_spec import ReportSpec
from transrec.config import ConfigError

AXES = {"pretrain": ["item", "seed"], "finetune": ["item", "transfer", "user_fraction", "seed"]}
LABELS = {
    "pretrain": {"item": ["IDRec", "Text"], "seed": ["0", "1"]},
    "finetune": {"item": ["IDRec", "Text"], "transfer": ["NoPT", "HasPT"], "user_fraction": ["0.1", "1.0"],
                 "seed": ["0", "1"]},
}  # fmt: skip


def good_table(**changes):
    table = {"title": "t", "stage": "finetune", "rows": ["item"], "columns": ["transfer"],
             "metric": "NDCG@10", "filter": {"user_fraction": 1.0},
             "improvement": {"axis": "transfer", "of": "HasPT", "over": "NoPT"},
             "significance": True}  # fmt: skip
    table.update(changes)
    return table


def good_plot(**changes):
    plot = {"kind": "scaling", "stage": "finetune", "x": "user_fraction", "series": ["transfer"],
            "filter": {"item": "Text"}, "metric": "NDCG@10", "log_x": True}  # fmt: skip
    plot.update(changes)
    return plot


def parse(tables=(), plots=(), **top):
    return ReportSpec.from_dict({"tables": list(tables), "plots": list(plots), **top}, AXES, labels=LABELS)


def test_a_good_section_parses_with_labels_as_the_grid_names_them():
    spec = parse(
        [good_table()],
        [
            good_plot(),
            good_plot(
                kind="convergence", x=None, log_x=False, filter={"item": "Text", "user_fraction": "1.0"}
            ),
        ],
    )
    assert spec.tables[0].filter_labels == {"user_fraction": "1.0"}  # 1.0 in YAML is the label "1.0"
    assert spec.tables[0].improvement.of == "HasPT" and spec.tables[0].digits == 4
    assert [p.kind for p in spec.plots] == ["scaling", "convergence"]
    assert ReportSpec.from_dict(None, AXES).tables == ()


@pytest.mark.parametrize(
    ("tables", "plots", "message"),
    [
        ([good_table(stage="nope")], [], "report.tables[0].stage: no stage 'nope' in the grid"),
        ([good_table(rows=["colour"])], [],
         "report.tables[0].rows[0]: stage 'finetune' has no axis 'colour'"),
        ([good_table(columns=["seed"])], [], "report.tables[0].columns[0]: 'seed' is the seed axis"),
        ([good_table(columns=["item"])], [], "report.tables[0].columns[0]: axis 'item' is already laid out"),
        ([good_table(filter={})], [], "report.tables[0].filter: fix the axis(es) user_fraction of stage"),
        ([good_table(filter={"user_fraction": 0.5})], [],
         "report.tables[0].filter.user_fraction: axis 'user_fraction' of stage 'finetune' has no label "
         "'0.5'"),
        ([good_table(filter={"user_fraction": 1.0, "colour": "red"})], [],
         "report.tables[0].filter.colour: stage 'finetune' has no axis 'colour'"),
        ([good_table(filter={"user_fraction": 1.0, "seed": 0})], [],
         "report.tables[0].filter.seed: axis 'seed' is the seed axis"),
        ([good_table(filter={"user_fraction": 1.0, "item": "Text"})], [],
         "report.tables[0].filter.item: axis 'item' is laid out already"),
        ([good_table(filter={"user_fraction": [1.0]})], [], "report.tables[0].filter.user_fraction: a value"),
        ([good_table(improvement={"axis": "user_fraction", "of": "1.0", "over": "0.1"})], [],
         "report.tables[0].improvement.axis: 'user_fraction' is neither among the rows nor the columns"),
        ([good_table(improvement={"axis": "transfer", "of": "HasPT", "over": "Scratch"})], [],
         "report.tables[0].improvement.over: axis 'transfer' of stage 'finetune' has no label 'Scratch'"),
        ([good_table(improvement=None)], [], "report.tables[0].significance needs an improvement"),
        ([good_table(metric="MRR")], [], "report.tables[0].significance: the paired test computes per-user"),
        ([good_table(colour="red")], [], "report.tables[0].colour"),
        ([], [good_plot(x=None)], "report.plots[0].x: a scaling plot needs the numeric axis"),
        ([], [good_plot(x="item", filter={"user_fraction": "1.0"})],
         "report.plots[0].x: axis 'item' has the label 'IDRec', which is not a number"),
        ([], [good_plot(kind="convergence")], "report.plots[0]: x and log_x belong to scaling plots"),
        ([], [good_plot(filter={})], "report.plots[0].filter: fix the axis(es) item"),
        ([], [good_plot(kind="histogram")], "report.plots[0].kind"),
        ([], [good_plot(), good_plot(name="01-scaling-finetune")],
         "report.plots[1]: its file name 01-scaling-finetune.png is also that of report.plots[0]"),
    ],
)  # fmt: skip
def test_a_wrong_table_or_plot_is_refused_naming_the_key_path(tables, plots, message):
    with pytest.raises(ConfigError) as raised:
        parse(tables, plots)
    assert message in str(raised.value)


def test_settings_of_the_whole_section_are_checked():
    with pytest.raises(ConfigError, match=r"report\.bootstrap_resamples must be at least 1"):
        parse(bootstrap_resamples=0)
    with pytest.raises(ConfigError, match=r"report.significance_level must be in \(0, 1\)"):
        parse(significance_level=1.5)
    with pytest.raises(ConfigError, match="report: expected a mapping"):
        ReportSpec.from_dict(["tables"], AXES)


def test_a_stage_without_the_seed_axis_needs_no_seed_and_labels_are_optional():
    spec = ReportSpec.from_dict({"tables": [good_table(stage="pretrain", columns=[], filter={},
                                                       improvement=None, significance=False)]},
                                {"pretrain": ["item"]})  # fmt: skip
    assert spec.tables[0].rows == ("item",)
