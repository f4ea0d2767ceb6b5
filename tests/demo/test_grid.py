"""The demo's grid (``demo.grid.demo_grid``): the same cells as configs/bench/demo.yaml for the defaults,
so that the file and ``transrec demo`` cannot drift, and every demo option reaches the cells."""

from pathlib import Path

import pytest

from transrec.bench.grid import load_grid
from transrec.demo.grid import demo_grid
from transrec.demo.pipeline import DemoConfig

DEMO_YAML = Path(__file__).parents[2] / "configs" / "bench" / "demo.yaml"
#: The target platform of the full MovieLens-100K split (split seed 0, 5-core), as demo.yaml's patience
#: levels assume (12 epochs at 10% of the users, 6 at 30%).
TARGET_USERS = 471


def _shape(grid):
    return [(c.key, c.kind, c.dataset, c.depends_on, grid.config_hash(c)) for c in grid.cells()]


def test_the_default_demo_is_configs_bench_demo_yaml():
    built, written = demo_grid(DemoConfig(), TARGET_USERS), load_grid(DEMO_YAML)
    assert _shape(built) == _shape(written)  # keys, kinds, datasets, dependencies and config hashes
    assert built.report == written.report  # the same tables and plots
    assert len(built.cells()) == 31


def test_the_quick_demo_runs_the_main_table_on_two_seeds_and_the_grid_on_one():
    grid = demo_grid(DemoConfig.quick(output_dir="out"), 40)
    keys = [cell.key for cell in grid.cells()]
    assert keys[:2] == ["source/seed=0", "source/seed=1"]
    target = [k.removeprefix("target/") for k in keys if k.startswith("target/")]
    main = [
        f"method={m},user_fraction=1.0,seed={s}" for m in ("IDRec", "TS", "NoPT", "HasPT") for s in (0, 1)
    ]
    scarcity = [f"method={m},user_fraction=0.5,seed=0" for m in ("IDRec", "NoPT", "HasPT")]
    assert sorted(target) == sorted(main + scarcity)
    assert keys[-3:] == ["zeroshot/method=Zero-shot,seed=0", "zeroshot/method=Zero-shot,seed=1",
                         "popularity/method=Popularity"]  # fmt: skip
    assert grid.output_dir == "out" and grid.datasets["target"].options["users_per_platform"] == 40
    haspt = grid.cell("target/method=HasPT,user_fraction=0.5,seed=0")
    assert haspt.depends_on == "source/seed=0"
    zero_shot = grid.cell("zeroshot/method=Zero-shot,seed=1")
    assert (zero_shot.kind, zero_shot.depends_on) == ("evaluate", "source/seed=1")
    source = grid.train_config(grid.cell("source/seed=1"), "o", "d")
    assert (source.epochs, source.seed, source.model.max_len, source.eval_subsets) == (2, 1, 10, ("new",))


def test_every_demo_option_reaches_the_cells():
    config = DemoConfig(output_dir="out", seeds=(3, 4), scarcity_seeds=(4,), fractions=(0.25,), epochs=7,
                        source_epochs=9, patience=2, modality="mom", new_items=0.2, batch_size=50,
                        methods=("IDRec", "HasPT"), scarcity_methods=("IDRec",))  # fmt: skip
    grid = demo_grid(config, 1000)
    assert [s.name for s in grid.stages] == ["source", "target"]  # no zero-shot, no popularity
    by_key = {cell.key: grid.train_config(cell, "o", "d", "c" if cell.depends_on else None)
              for cell in grid.cells()}  # fmt: skip
    # The main table at 1.0 (added though not among the fractions), the grid's IDRec at seed 4 only.
    assert sorted(k for k in by_key if k.startswith("target/")) == [
        "target/method=HasPT,user_fraction=1.0,seed=3", "target/method=HasPT,user_fraction=1.0,seed=4",
        "target/method=IDRec,user_fraction=0.25,seed=4", "target/method=IDRec,user_fraction=1.0,seed=3",
        "target/method=IDRec,user_fraction=1.0,seed=4"]  # fmt: skip
    idrec = by_key["target/method=IDRec,user_fraction=0.25,seed=4"]
    # 1000 users at 50 a batch: 20 steps an epoch, 5 on a quarter: patience 2 x 4 epochs.
    assert (idrec.patience, idrec.user_fraction, idrec.epochs, idrec.batch_size) == (8, 0.25, 7, 50)
    assert by_key["target/method=IDRec,user_fraction=1.0,seed=3"].patience == 2
    haspt = by_key["target/method=HasPT,user_fraction=1.0,seed=4"]
    assert haspt.model.item_encoder == "mom" and haspt.optim.encoder_lr == 1e-4 and haspt.seed == 4
    assert grid.cell("target/method=HasPT,user_fraction=1.0,seed=4").depends_on == "source/seed=4"
    assert by_key["source/seed=4"].epochs == 9 and by_key["source/seed=4"].model.item_encoder == "mom"
    assert grid.datasets["source"].options == {"modality": "mom"}
    assert grid.datasets["target"].new_items == 0.2
    # A report without the comparisons of methods the config dropped (HasPT vs NoPT), with the others.
    improvements = [table.get("improvement") for table in grid.report["tables"]]
    assert improvements[:3] == [None, None, {"axis": "method", "of": "HasPT", "over": "IDRec"}]


@pytest.mark.parametrize("users", [471, 40])
def test_patience_of_the_default_fractions(users):
    grid = demo_grid(DemoConfig(), users)
    cells = [cell for cell in grid.cells() if cell.stage == "target"]
    configs = {
        cell.key: grid.train_config(cell, "o", "d", "c" if cell.depends_on else None) for cell in cells
    }
    patience = {cell.label("user_fraction"): configs[cell.key].patience for cell in cells}
    assert patience == ({"0.1": 12, "0.3": 6, "1.0": 3} if users == 471 else {"0.1": 3, "0.3": 3, "1.0": 3})


def test_a_scarcity_method_outside_the_main_table_runs_on_the_grid_seeds_only():
    config = DemoConfig(seeds=(0, 1), scarcity_seeds=(0,), fractions=(0.5, 1.0), methods=("IDRec",),
                        scarcity_methods=("NoPT",))  # fmt: skip
    keys = [cell.key for cell in demo_grid(config, 100).cells()]
    idrec, nopt = "target/method=IDRec,user_fraction=", "target/method=NoPT,user_fraction="
    assert keys == [f"{idrec}1.0,seed=0", f"{idrec}1.0,seed=1", f"{nopt}0.5,seed=0", f"{nopt}1.0,seed=0"]
