"""The numbers behind a report's plots (bench.plots.plot_lines), checked by hand, and the PNG files."""

from __future__ import annotations

import numpy as np
import pytest

from transrec.bench.collect import collect
from transrec.bench.plots import draw_plot, plot_lines
from transrec.bench.report_spec import ReportSpec
from transrec.config import ConfigError

from .report_cells import write_cell

AXES = {"ft": ["transfer", "user_fraction", "seed"]}


def plot(**entry):
    return ReportSpec.from_dict({"plots": [entry]}, AXES).plots[0]


@pytest.fixture
def records(tmp_path):
    planned = []
    # NoPT at 1.0: seed 0 stopped after 2 epochs, seed 1 ran 3. HasPT at 1.0: one seed.
    curves = {("NoPT", "0"): [0.1, 0.3], ("NoPT", "1"): [0.2, 0.5, 0.4], ("HasPT", "0"): [0.4, 0.6, 0.5]}
    # Test NDCG@10 by user fraction: NoPT at 0.1 {0.05, 0.07}, at 1.0 {0.2, 0.3}; HasPT at 1.0 {0.5}.
    tests = {("NoPT", "0.1", "0"): 0.05, ("NoPT", "0.1", "1"): 0.07, ("NoPT", "1.0", "0"): 0.2,
             ("NoPT", "1.0", "1"): 0.3, ("HasPT", "1.0", "0"): 0.5}  # fmt: skip
    for (transfer, fraction, seed), value in tests.items():
        labels = {"transfer": transfer, "user_fraction": fraction, "seed": seed}
        curve = curves.get((transfer, seed)) if fraction == "1.0" else [0.9]
        planned.append(write_cell(tmp_path, "ft", labels, {"NDCG@10": value}, curve=curve))
    planned.append(write_cell(tmp_path, "ft", {"transfer": "HasPT", "user_fraction": "0.1", "seed": "0"},
                              status="failed"))  # fmt: skip
    return collect(tmp_path, planned)


def test_convergence_is_the_mean_over_the_seeds_still_running(records):
    spec = plot(kind="convergence", stage="ft", series=["transfer"], metric="NDCG@10",
                filter={"user_fraction": "1.0"})  # fmt: skip
    # Series in the grid's label order (here HasPT first), whatever order the cells come in.
    lines = plot_lines(records, spec, {"transfer": ["HasPT", "NoPT"]})
    assert [line.name for line in lines] == ["transfer=HasPT", "transfer=NoPT"]
    nopt = lines[1]
    assert nopt.x.tolist() == [1, 2, 3] and nopt.n.tolist() == [2, 2, 1]
    # Epoch 1: (0.1 + 0.2) / 2; epoch 2: (0.3 + 0.5) / 2; epoch 3: seed 1 alone (seed 0 had stopped).
    assert nopt.mean == pytest.approx([0.15, 0.4, 0.4])
    assert nopt.std == pytest.approx([np.sqrt(0.005), np.sqrt(0.02), 0.0])
    assert lines[0].mean == pytest.approx([0.4, 0.6, 0.5])


def test_scaling_is_the_mean_and_sample_std_at_each_numeric_x(records):
    spec = plot(kind="scaling", stage="ft", x="user_fraction", series=["transfer"], metric="NDCG@10",
                log_x=True)  # fmt: skip
    lines = {line.name: line for line in plot_lines(records, spec)}
    nopt = lines["transfer=NoPT"]
    assert nopt.x.tolist() == [0.1, 1.0] and nopt.n.tolist() == [2, 2]
    assert nopt.mean == pytest.approx([0.06, 0.25])
    assert nopt.std == pytest.approx([np.sqrt(2 * 0.01**2), np.sqrt(2 * 0.05**2)])
    haspt = lines["transfer=HasPT"]  # its 0.1 cell failed: one point, one seed, no spread
    assert haspt.x.tolist() == [1.0] and haspt.mean.tolist() == [0.5] and haspt.std.tolist() == [0.0]
    # Only done cells count, even if an ended one held numbers.
    records[-1].metrics = {"NDCG@10": 9.0}
    assert plot_lines(records, spec)[1].x.tolist() == [1.0]


def test_png_files_are_written_and_a_plot_without_data_is_skipped(records, tmp_path):
    pytest.importorskip("matplotlib")
    convergence = plot(kind="convergence", stage="ft", series=["transfer"], metric="NDCG@10",
                       filter={"user_fraction": "1.0"})  # fmt: skip
    scaling = plot(kind="scaling", stage="ft", x="user_fraction", series=["transfer"], metric="NDCG@10")
    for spec, name in ((convergence, "c.png"), (scaling, "s.png")):
        assert draw_plot(records, spec, tmp_path / name)
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    nothing = plot(kind="scaling", stage="ft", x="user_fraction", series=["transfer"], metric="HR@10")
    assert not draw_plot(records, nothing, tmp_path / "n.png") and not (tmp_path / "n.png").exists()


def test_log_x_needs_positive_numbers(records):
    labels = {"ft": {"transfer": ["NoPT"], "user_fraction": ["0", "1.0"], "seed": ["0"]}}
    entry = {"kind": "scaling", "stage": "ft", "x": "user_fraction", "metric": "NDCG@10", "log_x": True,
             "filter": {"transfer": "NoPT"}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"report.plots\[0\].x: log_x needs labels above 0"):
        ReportSpec.from_dict({"plots": [entry]}, AXES, labels=labels)
