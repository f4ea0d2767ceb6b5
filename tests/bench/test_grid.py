"""Grid expansion (bench.grid, bench.cells, bench.spec): the cells a grid file means, in a fixed order, in
folders named from their labels, with their merged configs, dependencies and config hashes. No training."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from transrec.bench import Grid, format_cells, load_grid
from transrec.bench.cells import sanitise_label
from transrec.bench.grid import normalised_config
from transrec.bench.spec import format_label
from transrec.config import ConfigError

ITEM = {"IDRec": {"model.item_encoder": "id"}, "Text": {"model.item_encoder": "text"}}


def two_stage(**finetune: Any) -> dict[str, Any]:
    """pretrain: item x seed (2 x 2); finetune: item x transfer x seed (2 x 2 x 2), HasPT from pretrain."""
    stage = {
        "name": "finetune",
        "dataset": "target",
        "from": "pretrain",
        "axes": {
            "item": copy.deepcopy(ITEM),
            "transfer": {"NoPT": {"from": None}, "HasPT": {}},
            "seed": [0, 1],
        },
    }
    stage.update(finetune)
    return {
        "name": "g",
        "datasets": {
            "source": {"builder": "synthetic", "part": "source"},
            "target": {"builder": "synthetic", "part": "target"},
        },
        "base": {"model": {"d_model": 16, "max_len": 8}, "epochs": 2},
        "stages": [
            {"name": "pretrain", "dataset": "source", "axes": {"item": copy.deepcopy(ITEM), "seed": [0, 1]}},
            stage,
        ],
    }


def keys(grid: Grid, stage: str | None = None) -> list[str]:
    return [cell.key for cell in grid.cells() if stage is None or cell.stage == stage]


def test_two_stage_grid_expands_in_axis_order_last_axis_fastest():
    grid = Grid.from_dict(two_stage())
    assert keys(grid, "pretrain") == [
        "pretrain/item=IDRec,seed=0",
        "pretrain/item=IDRec,seed=1",
        "pretrain/item=Text,seed=0",
        "pretrain/item=Text,seed=1",
    ]
    finetune = keys(grid, "finetune")
    assert len(finetune) == 8
    assert finetune[:3] == [
        "finetune/item=IDRec,transfer=NoPT,seed=0",
        "finetune/item=IDRec,transfer=NoPT,seed=1",
        "finetune/item=IDRec,transfer=HasPT,seed=0",
    ]
    assert keys(grid) == keys(grid, "pretrain") + finetune  # stages in order
    cell = grid.cells()[5]
    assert cell.labels == (("item", "IDRec"), ("transfer", "NoPT"), ("seed", "1"))
    assert cell.label("transfer") == "NoPT" and cell.label("user_fraction") is None
    assert (cell.kind, cell.dataset) == ("train", "target")
    assert cell.config["model"] == {"d_model": 16, "max_len": 8, "item_encoder": "id"}
    assert cell.config["seed"] == 1 and "dataset" not in cell.config


def test_each_cell_owns_its_config():
    data = two_stage()
    data["stages"][1]["axes"]["transfer"]["NoPT"]["optim.lr"] = 0.01  # a section the base lacks
    grid = Grid.from_dict(data)
    first, second = (grid.cell(f"finetune/item=Text,transfer=NoPT,seed={seed}") for seed in (0, 1))
    first.config["optim"]["lr"] = 5.0
    assert second.config["optim"] == {"lr": 0.01}
    assert grid.stage("finetune").axis("transfer").level("NoPT").overrides["optim"] == {"lr": 0.01}


def test_exclude_drops_matching_product_cells_and_include_adds_cells_after_them():
    grid = Grid.from_dict(two_stage(
        exclude=[{"item": "IDRec", "transfer": "HasPT"}],
        include=[{"item": "Text", "transfer": "NoPT", "seed": 7},
                 {"item": "IDRec", "transfer": "HasPT", "seed": 0}],
    ))  # fmt: skip
    finetune = keys(grid, "finetune")
    assert len(finetune) == 8 - 2 + 2
    assert not any("IDRec,transfer=HasPT,seed=1" in key for key in finetune)
    # include comes after the product, in the order written; exclude does not apply to it
    assert finetune[-2:] == [
        "finetune/item=Text,transfer=NoPT,seed=7",
        "finetune/item=IDRec,transfer=HasPT,seed=0",
    ]
    seven = grid.cell("finetune/item=Text,transfer=NoPT,seed=7")
    assert seven.config["seed"] == 7  # a value the plain-list axis does not list
    # with HasPT, it would need a pre-training cell of seed 7
    with pytest.raises(ConfigError, match="no cell of stage pretrain has item=Text, seed=7"):
        Grid.from_dict(two_stage(include=[{"item": "Text", "transfer": "HasPT", "seed": 7}]))


def test_exclude_with_several_axes_drops_only_cells_matching_all():
    grid = Grid.from_dict(two_stage(exclude=[{"item": "IDRec", "transfer": "HasPT", "seed": 1}]))
    assert keys(grid, "finetune") == [k for k in keys(Grid.from_dict(two_stage()), "finetune")
                                      if k != "finetune/item=IDRec,transfer=HasPT,seed=1"]  # fmt: skip


def test_plain_axis_labels_print_values_stably_and_set_the_dotted_key():
    data = two_stage()
    data["stages"][1]["axes"] = {"user_fraction": [0.1, 1.0, 0.3], "optim.lr": [1.0e-3, 1e-05, "1e-3"]}
    data["stages"][1].pop("from")
    grid = Grid.from_dict(data)
    assert grid.axis_labels()["finetune"] == {"user_fraction": ["0.1", "1.0", "0.3"],
                                              "optim.lr": ["0.001", "1e-05", "1e-3"]}  # fmt: skip
    cell = grid.cell("finetune/user_fraction=1.0,optim.lr=1e-3")  # dotted axis names keep their dots
    assert cell.config["user_fraction"] == 1.0 and cell.config["optim"] == {"lr": "1e-3"}
    assert grid.train_config(cell, "out", "data").optim.lr == 0.001


LABELS = [(0, "0"), (1, "1"), (1.0, "1.0"), (0.1, "0.1"), (2.5e-4, "0.00025"), (1e-05, "1e-05"),
          (True, "true"), (None, "null"), ("a b", "a b")]  # fmt: skip


@pytest.mark.parametrize(("value", "label"), LABELS)
def test_plain_values_label_by_their_shortest_round_trip_form(value, label):
    assert format_label(value, "tag") == label


def test_dependency_is_the_cell_with_the_same_labels_on_the_shared_axes():
    grid = Grid.from_dict(two_stage())
    assert grid.cell("finetune/item=Text,transfer=HasPT,seed=1").depends_on == "pretrain/item=Text,seed=1"
    assert grid.cell("finetune/item=IDRec,transfer=HasPT,seed=0").depends_on == "pretrain/item=IDRec,seed=0"
    # the level's `from: null` overrides the stage's `from`
    assert grid.cell("finetune/item=Text,transfer=NoPT,seed=1").depends_on is None


def test_level_from_names_another_stage_than_the_stage_default():
    data = two_stage()
    data["stages"].insert(1, {"name": "other", "dataset": "source", "axes": {"seed": [0, 1]}})
    data["stages"][2]["axes"]["transfer"]["Other"] = {"from": "other"}
    grid = Grid.from_dict(data)
    assert grid.cell("finetune/item=Text,transfer=Other,seed=1").depends_on == "other/seed=1"
    assert grid.cell("finetune/item=Text,transfer=HasPT,seed=1").depends_on == "pretrain/item=Text,seed=1"


def test_dependency_missing_ambiguous_and_resolved_by_match():
    data = two_stage()
    data["stages"][1]["axes"]["seed"] = [0, 1, 2]
    with pytest.raises(ConfigError, match=r"cell finetune/item=IDRec,transfer=HasPT,seed=2: no cell of stage "
                                          r"pretrain has item=IDRec, seed=2"):  # fmt: skip
        Grid.from_dict(data)
    data = two_stage()
    del data["stages"][1]["axes"]["item"]  # pretrain has two items: which one does a cell start from?
    with pytest.raises(ConfigError, match=r"2 cells of stage pretrain have seed=0 .*match: \{item: \.\.\.\}"):
        Grid.from_dict(data)
    data["stages"][1]["from"] = {"stage": "pretrain", "match": {"item": "Text"}}
    grid = Grid.from_dict(data)
    assert grid.cell("finetune/transfer=HasPT,seed=1").depends_on == "pretrain/item=Text,seed=1"
    # an axis of the dependency with one level needs no match
    data = two_stage()
    data["stages"][0]["axes"]["item"] = {"Text": ITEM["Text"]}
    data["stages"][1]["axes"].pop("item")
    assert (
        Grid.from_dict(data).cell("finetune/transfer=HasPT,seed=0").depends_on == "pretrain/item=Text,seed=0"
    )


def test_evaluate_and_popularity_stages():
    data = two_stage()
    data["stages"] += [
        {"name": "zeroshot", "kind": "evaluate", "dataset": "target", "from": "pretrain",
         "axes": {"item": {"Text": {}}, "seed": [0, 1]}},
        {"name": "pop", "kind": "popularity", "dataset": "target"},
    ]  # fmt: skip
    grid = Grid.from_dict(data)
    zero = [cell for cell in grid.cells() if cell.stage == "zeroshot"]
    assert [(c.key, c.kind, c.depends_on) for c in zero] == [
        ("zeroshot/item=Text,seed=0", "evaluate", "pretrain/item=Text,seed=0"),
        ("zeroshot/item=Text,seed=1", "evaluate", "pretrain/item=Text,seed=1"),
    ]
    pop = grid.cells()[-1]
    assert (pop.key, pop.kind, pop.depends_on, pop.labels) == ("pop/default", "popularity", None, ())


def test_level_dataset_sets_the_cell_dataset():
    data = two_stage()
    data["datasets"]["other"] = {"builder": "prepared", "path": "/data/other"}
    data["stages"][1]["axes"]["data"] = {"T": {}, "O": {"dataset": "other"}}
    grid = Grid.from_dict(data)
    assert grid.cell("finetune/item=Text,transfer=NoPT,seed=0,data=O").dataset == "other"
    assert grid.cell("finetune/item=Text,transfer=NoPT,seed=0,data=T").dataset == "target"


def test_keys_are_sanitised_and_must_stay_unique():
    assert sanitise_label("a/b c:d+e-f.g_h") == "a_b_c_d+e-f.g_h"
    data = two_stage()
    data["stages"][1]["axes"]["transfer"] = {"Has PT/x": {}, "NoPT": {"from": None}}
    assert "finetune/item=Text,transfer=Has_PT_x,seed=0" in keys(Grid.from_dict(data))
    data["stages"][1]["axes"]["transfer"]["Has_PT_x"] = {}
    with pytest.raises(
        ConfigError, match="two cells have the folder finetune/item=IDRec,transfer=Has_PT_x,seed=0"
    ):
        Grid.from_dict(data)
    # an included cell that repeats a product cell
    with pytest.raises(ConfigError, match=r"include\[0\]: two cells have the folder"):
        Grid.from_dict(two_stage(include=[{"item": "Text", "transfer": "HasPT", "seed": 0}]))


def test_config_hash_changes_when_and_only_when_a_cell_computes_something_else():
    def hashes(data: dict[str, Any]) -> dict[str, str]:
        grid = Grid.from_dict(data)
        return {cell.key: grid.config_hash(cell) for cell in grid.cells()}

    base = hashes(two_stage())
    assert hashes(two_stage()) == base and len(set(base.values())) == len(base)
    same = two_stage()
    same["base"].update(device="cpu", num_workers=2, eval_batch_size=17, batch_size=64)  # 64: the default
    same["base"]["model"]["user_encoder"] = "sasrec"  # the default, spelt out
    same["stages"][0]["set"] = {"eval_batch_size": 99}
    same["base"]["tracking"] = "tensorboard"  # where a run is reported: turning it on keeps finished cells
    assert hashes(same) == base
    # keys at their default are left out (a key added later with a default changes no hash)
    assert normalised_config({"model": {"d_model": 16, "user_encoder": "sasrec"}, "batch_size": 64}) == {
        "model": {"d_model": 16}
    }
    changed = two_stage()
    changed["stages"][0]["axes"]["item"] = copy.deepcopy(ITEM)
    changed["stages"][0]["axes"]["item"]["Text"]["model.d_model"] = 32  # pre-training Text only
    new = hashes(changed)
    differ = sorted(key for key in base if new[key] != base[key])
    # the pre-training Text cells, and the cells that start from them
    assert differ == sorted(["pretrain/item=Text,seed=0", "pretrain/item=Text,seed=1",
                             "finetune/item=Text,transfer=HasPT,seed=0",
                             "finetune/item=Text,transfer=HasPT,seed=1"])  # fmt: skip
    spec = two_stage()
    spec["datasets"]["target"]["options"] = {"seed": 3}
    assert all((hashes(spec)[key] != base[key]) == key.startswith("finetune") for key in base)


def test_base_config_is_merged_under_base_then_set_then_levels(tmp_path: Path, monkeypatch, caplog):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "train.yaml").write_text(yaml.safe_dump({
        "dataset": "ml-100k", "output_dir": "runs/x", "resume": "never",
        "model": {"d_model": 8, "max_len": 6, "user_encoder": "gru4rec"},
        "batch_size": 8, "epochs": 9, "patience": 9, "seed": 9,
    }))  # fmt: skip
    data = two_stage()
    data["base_config"] = "configs/train.yaml"
    data["base"] = {"batch_size": 16, "epochs": 20, "model.d_model": 32}
    data["stages"][0]["set"] = {"epochs": 30}
    data["stages"][0]["axes"]["item"] = {"IDRec": {"model": {"item_encoder": "id", "d_model": 48}},
                                         "Text": {"model.item_encoder": "text"}}  # fmt: skip
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.chdir(tmp_path.parent)  # base_config is relative to the grid file, not the cwd
    with caplog.at_level(logging.INFO, logger="transrec.bench.grid"):
        grid = load_grid(tmp_path / "grid.yaml")
    assert "ignoring dataset, output_dir, resume" in caplog.text
    cell = grid.cell("pretrain/item=IDRec,seed=1")
    assert cell.config == {
        "model": {"d_model": 48, "max_len": 6, "user_encoder": "gru4rec", "item_encoder": "id"},
        "batch_size": 16, "epochs": 30, "patience": 9, "seed": 1,
    }  # fmt: skip
    assert grid.cell("pretrain/item=Text,seed=0").config["model"]["d_model"] == 32
    assert grid.cell("finetune/item=Text,transfer=HasPT,seed=0").config["epochs"] == 20
    assert grid.output_dir == "runs/bench/g"


def test_load_grid_reads_yaml_anchors_and_refuses_a_key_written_twice(tmp_path: Path):
    path = tmp_path / "anchors.yaml"
    path.write_text("""
name: anchors
datasets: {d: {builder: synthetic, part: source}}
stages:
  - name: a
    dataset: d
    axes:
      item: &item {IDRec: {model.item_encoder: id}, Text: {model.item_encoder: text}}
      seed: [0]
  - name: b
    dataset: d
    from: a
    axes: {item: *item, seed: [0]}
""")
    grid = load_grid(path)
    assert keys(grid, "b") == ["b/item=IDRec,seed=0", "b/item=Text,seed=0"]
    assert grid.cell("b/item=Text,seed=0").config["seed"] == 0  # values keep their YAML types
    assert grid.cell("b/item=Text,seed=0").depends_on == "a/item=Text,seed=0"
    twice = path.read_text().replace("seed: [0]\n  - name: b", "seed: [0]\n      seed: [1]\n  - name: b")
    path.write_text(twice)
    with pytest.raises(ConfigError, match="line 10: the key 'seed' is written twice"):
        load_grid(path)


def test_labels_written_as_yaml_keys_stay_as_written(tmp_path: Path):
    path = tmp_path / "keys.yaml"
    path.write_text("""
name: keys
datasets: {d: {builder: synthetic, part: source}}
stages:
  - name: a
    dataset: d
    axes:
      pretrained: {No: {}, Yes: {}}
      lr: {1.0e-3: {optim.lr: 1.0e-3}, 010: {optim.lr: 0.01}}
""")
    assert keys(load_grid(path)) == ["a/pretrained=No,lr=1.0e-3", "a/pretrained=No,lr=010",
                                     "a/pretrained=Yes,lr=1.0e-3", "a/pretrained=Yes,lr=010"]  # fmt: skip
    path.write_text(path.read_text().replace("010:", "'1.0e-3':"))
    with pytest.raises(ConfigError, match=r"line 9: the key '1\.0e-3' is written twice"):
        load_grid(path)


def test_format_cells_lists_every_cell_with_its_state_and_counts_states():
    grid = Grid.from_dict(two_stage())
    cells = grid.cells()
    states = {cell.key: "pending" for cell in cells}
    states.update({cells[0].key: "done", cells[1].key: "done", cells[-1].key: "blocked"})
    states[cells[4].key] = "weird"
    text = format_cells(cells, states)
    lines = text.splitlines()
    assert lines[0].split() == ["cell", "kind", "dataset", "depends", "on", "state"]
    assert lines[2].split() == ["pretrain/item=IDRec,seed=0", "train", "source", "-", "done"]
    assert lines[-3].split() == ["finetune/item=Text,transfer=HasPT,seed=1", "train", "target",
                                 "pretrain/item=Text,seed=1", "blocked"]  # fmt: skip
    assert len(lines) == 2 + len(cells) + 2
    assert lines[-1] == "12 cells: 2 done, 8 pending, 1 blocked, 1 weird"
    assert format_cells(cells[:1], {}).splitlines()[-1] == "1 cell: 1 unknown"


def test_an_evaluate_cell_hash_ignores_training_keys_it_does_not_read():
    from dataclasses import replace as dataclass_replace

    from transrec.bench.grid import load_grid

    grid = load_grid("configs/bench/demo.yaml")
    cells = {cell.key: cell for cell in grid.cells()}
    zero = next(cell for key, cell in cells.items() if key.startswith("zeroshot/"))
    longer = dataclass_replace(zero, config={**zero.config, "epochs": 7, "patience": 9})
    grid._hashes.clear()
    before = grid.config_hash(zero)
    grid._hashes.clear()
    assert grid.config_hash(longer) == before  # epochs/patience: no evaluate cell reads them
    grid._hashes.clear()
    assert grid.config_hash(dataclass_replace(zero, config={**zero.config, "ks": [5]})) != before
