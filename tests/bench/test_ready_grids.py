"""The ready grids of configs/bench/ (issue 13 item 4): each paper table in two flavours, each grid expanding
to the cells its header promises, every trained cell a valid TrainConfig, the mini grids buildable here
and timed, the paper grids on the real datasets, every grid with a report laid out like its table."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from transrec.bench.grid import load_grid
from transrec.training.validation import validate_config

BENCH = Path(__file__).parents[2] / "configs" / "bench"

#: The tables issue 13 asks for, each as ``<paper>_<table>``; every one has a ``_paper`` and a ``_mini`` grid.
TABLES = (
    "ninerec_table2", "ninerec_table3", "ninerec_table4",
    "morec_table2", "morec_table5", "morec_table9",
    "transrec_table6", "transrec_table7",
    "pmmrec_table5", "pmmrec_table8",
)  # fmt: skip

#: Cells per stage of every grid: what each header's "Cells:" line and the README promise.
EXPECTED = {
    "demo": {"source": 3, "target": 24, "zeroshot": 3, "popularity": 1},
    "ninerec_table2_mini": {"pretrain": 20, "finetune": 56},
    "ninerec_table2_paper": {"pretrain": 10, "text": 99, "image": 99, "idrec": 54},
    "ninerec_table3_mini": {"pretrain_text": 6, "text": 6, "pretrain_image": 2, "image": 2},
    "ninerec_table3_paper": {"pretrain_text": 2, "pretrain_image": 2, "text": 18, "image": 18},
    "ninerec_table4_mini": {"pretrain": 6, "zeroshot": 6, "haspt": 3, "popularity": 1},
    "ninerec_table4_paper": {"pretrain_text": 2, "pretrain_image": 2, "zeroshot_text": 18,
                             "zeroshot_image": 18, "popularity": 9},
    "morec_table2_mini": {"text": 12, "mom": 4},
    "morec_table2_paper": {"mind": 7, "hm": 8, "bili": 8},
    "morec_table5_mini": {"text": 15, "mom": 3, "idrec": 3},
    "morec_table5_paper": {"morec": 40, "idrec": 3},
    "morec_table9_mini": {"text": 6, "mom": 4},
    "morec_table9_paper": {"items": 6},
    "transrec_table6_mini": {"stage1": 3, "stage2": 3, "target": 15},
    "transrec_table6_paper": {"stage1": 1, "stage2": 1, "target": 10},
    "transrec_table7_mini": {"stage1": 6, "stage2": 6, "target": 16},
    "transrec_table7_paper": {"stage1": 3, "stage2": 3, "target": 16},
    "pmmrec_table5_mini": {"pretrain": 2, "finetune": 12},
    "pmmrec_table5_paper": {"pretrain": 1, "finetune": 18},
    "pmmrec_table8_mini": {"pretrain": 6, "finetune": 6},
    "pmmrec_table8_paper": {"pretrain": 6, "finetune": 6},
}  # fmt: skip

#: Builders that need no download: MovieLens-100K (fetched by `make demo`) and the generated world.
BUILDABLE_HERE = ("ml100k-platforms", "synthetic")
KIND_WORDS = (("train", "trained"), ("evaluate", "evaluated"), ("popularity", "popularity"))
MINI_MINUTES = 30


def grid_files() -> list[Path]:
    return sorted(BENCH.glob("*.yaml"))


class _Grids(dict):
    """Each grid loaded once, on first use, so that a broken grid fails its own tests only."""

    def __missing__(self, name: str):
        self[name] = load_grid(BENCH / f"{name}.yaml")
        return self[name]


@pytest.fixture(scope="module")
def grids():
    return _Grids()


def test_every_table_of_the_issue_has_a_paper_and_a_mini_grid_and_nothing_else_is_there():
    wanted = {f"{table}_{flavour}" for table in TABLES for flavour in ("paper", "mini")} | {"demo"}
    assert {path.stem for path in grid_files()} == wanted
    assert set(EXPECTED) == wanted


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_grid_expands_to_the_promised_cells(grids, name):
    counts = Counter(cell.stage for cell in grids[name].cells())
    assert dict(counts) == EXPECTED[name]
    assert [stage.name for stage in grids[name].stages] == list(EXPECTED[name])
    kinds = Counter(cell.kind for cell in grids[name].cells())
    said = re.search(r"^(\d+) cells in all \((.*)\)\.$", _header(name), re.M)
    assert said is not None, f"{name}: the header does not say how many cells the grid has"
    breakdown = [f"{kinds[kind]} {word}" for kind, word in KIND_WORDS if kinds[kind]]
    assert (int(said.group(1)), said.group(2)) == (sum(counts.values()), ", ".join(breakdown))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_trained_cell_is_a_valid_train_config(grids, name):
    grid = grids[name]
    for cell in grid.cells():
        dependency = f"runs/{cell.depends_on}/best" if cell.depends_on else None
        config = grid.train_config(cell, f"runs/{cell.key}", f"data/{cell.dataset}", dependency)
        if cell.kind == "train":
            validate_config(config)  # raises ConfigError naming every key the run would ignore
        else:
            assert cell.depends_on or cell.kind == "popularity", f"{cell.key}: evaluates no checkpoint"


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if not n.endswith("_paper")))
def test_mini_grids_use_only_datasets_this_machine_builds_and_state_their_wall_time(grids, name):
    grid = grids[name]
    used = {cell.dataset for cell in grid.cells()}
    for dataset in used:
        assert grid.datasets[dataset].builder in BUILDABLE_HERE, f"{name}: dataset {dataset} needs a download"
    minutes = re.search(r"Expected wall time: about (\d+) minutes?", _header(name))
    assert minutes is not None, f"{name}: no expected wall time at the top"
    assert int(minutes.group(1)) < MINI_MINUTES


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if n.endswith("_paper")))
def test_paper_grids_train_on_the_real_datasets(grids, name):
    grid = grids[name]
    for cell in grid.cells():
        assert grid.datasets[cell.dataset].builder in ("raw", "prepared"), f"{cell.key} trains on a stand-in"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_grid_reports_its_tables_on_its_stages(grids, name):
    report = grids[name].report
    assert report.get("tables"), f"{name} has no report tables"
    titles = " ".join(table["title"] for table in report["tables"])
    paper = name.split("_")[0]
    if paper != "demo":
        number = name.split("_")[1].removeprefix("table")
        roman = {"5": "V", "8": "VIII"}.get(number) if paper == "pmmrec" else None
        assert re.search(rf"\bTables? {roman or number}\b", titles), f"{name}: no table named as the paper's"
    # The stages no cell starts from hold the grid's results: each is in some table.
    cells = grids[name].cells()
    started_from = {cell.depends_on.split("/")[0] for cell in cells if cell.depends_on}
    results = {cell.stage for cell in cells} - started_from
    reported = {table["stage"] for table in report["tables"]}
    assert results <= reported, f"{name}: the final stage(s) {sorted(results - reported)} are in no table"


def test_the_demo_grid_matches_the_demo_config():
    """configs/bench/demo.yaml runs what `transrec demo` runs: DemoConfig's defaults, methods and seeds."""
    from transrec.demo.grid import scaled_patience
    from transrec.demo.pipeline import METHODS, DemoConfig, train_config

    demo, grid = DemoConfig(), load_grid(BENCH / "demo.yaml")
    labels = {axis: set() for axis in ("method", "user_fraction", "seed")}
    for cell in grid.cells():
        for axis, label in cell.labels:
            labels[axis].add(label)
    assert labels["method"] == set(METHODS)
    assert labels["seed"] == {str(seed) for seed in demo.seeds}
    assert labels["user_fraction"] == {repr(fraction) for fraction in demo.fractions}
    target = [cell for cell in grid.cells() if cell.stage == "target"]
    for cell in target:
        method, seed = cell.label("method"), int(cell.label("seed"))
        fraction = float(cell.label("user_fraction"))
        if fraction != 1.0:
            assert method in demo.scarcity_methods and seed in demo.grid_seeds, cell.key
        config = grid.train_config(cell, "out", "data", "ckpt" if cell.depends_on else None)
        wanted = train_config(demo, _FakeDataset(), Path("out"), method, seed, demo.epochs, fraction)
        assert config.model == wanted.model, cell.key
        assert config.optim == wanted.optim, cell.key
        for key in ("mode", "objective", "batch_size", "epochs", "seed", "user_fraction"):
            assert getattr(config, key) == getattr(wanted, key), (cell.key, key)
        assert config.patience == scaled_patience(demo.patience, 471, demo.batch_size, fraction), cell.key
        assert (cell.depends_on is not None) == (method == "HasPT"), cell.key
    source = [cell for cell in grid.cells() if cell.stage == "source"]
    for cell in source:
        config = grid.train_config(cell, "out", "data")
        seed = int(cell.label("seed"))
        wanted = train_config(demo, _FakeDataset(), Path("out"), "NoPT", seed, demo.source_epochs)
        assert (config.model, config.optim, config.epochs) == (wanted.model, wanted.optim, wanted.epochs)
    target_spec = grid.datasets["target"]
    assert (target_spec.builder, target_spec.part, target_spec.new_items) == ("ml100k-platforms", "target",
                                                                              demo.new_items)  # fmt: skip


class _FakeDataset:
    """What ``demo.pipeline.train_config`` reads of a prepared dataset: its path."""

    path = "data"


def _header(name: str) -> str:
    lines = (BENCH / f"{name}.yaml").read_text().splitlines()
    return "\n".join(line[2:] for line in lines if line.startswith("#"))
