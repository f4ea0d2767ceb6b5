"""Every rule a grid file must follow fails at load, before anything runs, with a ConfigError naming the key
path or the cell (bench.grid, bench.spec, bench.cells)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.bench.test_grid import two_stage
from transrec.bench import Grid, load_grid
from transrec.bench.spec import RUNNER_KEYS
from transrec.config import ConfigError
from transrec.errors import MissingPathError


def stage(data: dict[str, Any], index: int = 1) -> dict[str, Any]:
    return data["stages"][index]


def axes(data: dict[str, Any], index: int = 1) -> dict[str, Any]:
    return data["stages"][index]["axes"]


def evaluate_stage(data: dict[str, Any]) -> None:
    data["stages"].insert(1, {"name": "zero", "kind": "evaluate", "dataset": "target", "from": "pretrain",
                              "axes": {"seed": [0, 1]}})  # fmt: skip


FINETUNE_CELL = r"cell finetune/item=IDRec,transfer=NoPT,seed=0: "
CASES: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    # the file
    (
        "unknown top-level key",
        lambda d: d.update(stagez=[]),
        r"the grid: unknown key\(s\) stagez; known: name",
    ),
    ("grid name", lambda d: d.update(name="a b"), r"name: a grid needs a name .* got 'a b'"),
    ("no datasets", lambda d: d.update(datasets={}), r"datasets: a grid needs at least one named dataset"),
    ("no stages", lambda d: d.update(stages=[]), r"stages: a grid needs a list of at least one stage"),
    ("report not a mapping", lambda d: d.update(report=[1]), r"report: expected a mapping"),
    # datasets
    (
        "dataset name",
        lambda d: d["datasets"].update({"../up": {"builder": "synthetic", "part": "source"}}),
        r"datasets.../up: a dataset name is letters",
    ),
    (
        "builder needs part",
        lambda d: d["datasets"].update(source={"builder": "synthetic"}),
        r"datasets.source: builder synthetic needs part",
    ),
    (
        "unknown builder",
        lambda d: d["datasets"].update(source={"builder": "nope"}),
        r"datasets.source.builder: 'nope' is not one of",
    ),
    (
        "key the builder does not take",
        lambda d: d["datasets"].update(source={"builder": "prepared", "path": "p", "part": "source"}),
        r"datasets.source.part: builder prepared takes no part",
    ),
    (
        "new_items of a source",
        lambda d: d["datasets"].update(
            source={"builder": "ml100k-platforms", "part": "source", "new_items": 0.1}
        ),
        r"datasets.source.new_items: a share in \[0, 1\) of the target's items",
    ),
    (
        "synthetic option",
        lambda d: d["datasets"]["source"].update(options={"n_topicz": 3}),
        r"datasets.source.options.n_topicz",
    ),
    (
        "synthetic prepare option",
        lambda d: d["datasets"]["source"].update(prepare={"user_kk": 3}),
        r"datasets.source.prepare.user_kk",
    ),
    (
        "ml100k option",
        lambda d: d["datasets"].update(
            source={"builder": "ml100k-platforms", "part": "source", "options": {"colour": 1}}
        ),
        r"datasets.source.options.colour: unknown option of ml100k-platforms",
    ),
    # stages
    (
        "unknown stage key",
        lambda d: stage(d).update(axis={}),
        r"stages\[1\]: unknown key\(s\) axis; known: name",
    ),
    (
        "reserved stage name",
        lambda d: stage(d).update(name="report"),
        r"stages\[1\].name: .*other than report",
    ),
    ("stage name with a slash", lambda d: stage(d).update(name="a/b"), r"stages\[1\].name: .* got 'a/b'"),
    (
        "two stages of one name",
        lambda d: stage(d).update(name="pretrain"),
        r"stages\[1\].name: two stages are named pretrain",
    ),
    (
        "two stages of one name but for case",
        lambda d: stage(d).update(name="Pretrain"),
        r"stages\[1\].name: two stages are named Pretrain \(names differing only in case",
    ),
    (
        "labels differing in case",
        lambda d: axes(d).update(transfer={"NoPT": {"from": None}, "nopt": {"from": None}}),
        r"two cells have the folder finetune/item=IDRec,transfer=nopt,seed=0 .* differ only in case",
    ),
    (
        "unknown kind",
        lambda d: stage(d).update(kind="eval"),
        r"stages\[1\].kind: one of train, evaluate, popularity",
    ),
    (
        "stage dataset",
        lambda d: stage(d).update(dataset="tgt"),
        r"stages\[1\].dataset: 'tgt' is not a dataset of the grid; its datasets: source, target",
    ),
    (
        "level dataset",
        lambda d: axes(d)["transfer"]["HasPT"].update(dataset="tgt"),
        r"stages\[1\].axes.transfer.HasPT.dataset: 'tgt' is not a dataset",
    ),
    # dependencies
    (
        "from an unknown stage",
        lambda d: stage(d).update({"from": "pretrian"}),
        r"stages\[1\].from: 'pretrian' is not a stage listed before finetune",
    ),
    (
        "from a later stage",
        lambda d: stage(d, 0).update({"from": "finetune"}),
        r"stages\[0\].from: 'finetune' is not a stage listed before pretrain",
    ),
    (
        "from itself",
        lambda d: stage(d).update({"from": "finetune"}),
        r"stages\[1\].from: 'finetune' is not a stage listed before finetune",
    ),
    (
        "from an evaluate stage",
        lambda d: (evaluate_stage(d), stage(d, 2).update({"from": "zero"})),
        r"stages\[2\].from: stage zero is a evaluate stage and leaves no checkpoint",
    ),
    (
        "level from",
        lambda d: axes(d)["transfer"]["HasPT"].update({"from": "nope"}),
        r"stages\[1\].axes.transfer.HasPT.from: 'nope' is not a stage",
    ),
    (
        "from keys",
        lambda d: stage(d).update({"from": {"stage": "pretrain", "matches": {}}}),
        r"stages\[1\].from: unknown key\(s\) matches",
    ),
    (
        "match axis",
        lambda d: stage(d).update({"from": {"stage": "pretrain", "match": {"colour": "red"}}}),
        r"stages\[1\].from.match.colour: stage pretrain has no axis colour; its axes: item, seed",
    ),
    (
        "match label",
        lambda d: stage(d).update({"from": {"stage": "pretrain", "match": {"item": "Image"}}}),
        r"stages\[1\].from.match.item: 'Image' is not a label of stage pretrain's axis item: IDRec, Text",
    ),
    (
        "evaluate without from",
        lambda d: (evaluate_stage(d), stage(d).pop("from")),
        r"cell zero/seed=0: an evaluate cell applies the checkpoint of the cell its `from`",
    ),
    (
        "popularity with from",
        lambda d: stage(d).update(kind="popularity"),
        r"cell finetune/item=IDRec,transfer=HasPT,seed=0: a popularity cell .* its `from` \(pretrain\)",
    ),
    # axes and levels
    (
        "empty plain axis",
        lambda d: axes(d).update(seed=[]),
        r"stages\[1\].axes.seed: an axis needs at least one value",
    ),
    (
        "empty named axis",
        lambda d: axes(d).update(item={}),
        r"stages\[1\].axes.item: an axis needs at least one level",
    ),
    (
        "axis of a string",
        lambda d: axes(d).update(item="IDRec"),
        r"stages\[1\].axes.item: an axis is a list of values",
    ),
    ("axis name", lambda d: axes(d).update({"a b": [1]}), r"stages\[1\].axes.a b: an axis name is letters"),
    (
        "repeated value",
        lambda d: axes(d).update(seed=[0, 1, 0]),
        r"stages\[1\].axes.seed: the label '0' is given twice",
    ),
    (
        "repeated label",
        lambda d: axes(d).update(item={1: {}, "1": {}}),
        r"stages\[1\].axes.item: the label '1' is given twice",
    ),
    (
        "list value",
        lambda d: axes(d).update(eval_subsets=[["cold"]]),
        r"stages\[1\].axes.eval_subsets\[0\]: a value of a plain-list axis .* as named levels",
    ),
    (
        "level not a mapping",
        lambda d: axes(d)["item"].update(Text=3),
        r"stages\[1\].axes.item.Text: expected a mapping",
    ),
    # TrainConfig keys and values
    (
        "unknown key in a level",
        lambda d: axes(d)["item"]["Text"].update({"model.item_encoderr": "text"}),
        r"stages\[1\].axes.item.Text: model.item_encoderr is not a TrainConfig key",
    ),
    (
        "unknown key of a plain axis",
        lambda d: axes(d).update(user_frac=[0.1]),
        r"stages\[1\].axes.user_frac: user_frac is not a TrainConfig key",
    ),
    (
        "unknown key in set",
        lambda d: stage(d).update(set={"optim": {"lrr": 1}}),
        r"stages\[1\].set: optim.lrr is not a TrainConfig key",
    ),
    (
        "unknown key in base",
        lambda d: d["base"].update(epoch=3),
        r"base \(or base_config\): epoch is not a TrainConfig",
    ),
    (
        "key dotted and nested",
        lambda d: d["base"].update({"model.d_model": 8}),
        r"base.model.d_model: this key is given twice \(once dotted, once nested\)",
    ),
    (
        "value of the wrong type",
        lambda d: stage(d).update(set={"batch_size": "big"}),
        FINETUNE_CELL + r"batch_size: expected an integer, got 'big'",
    ),
    (
        "value out of range",
        lambda d: axes(d).update(user_fraction=[0.0]),
        r"cell finetune/item=IDRec,transfer=NoPT,seed=0,user_fraction=0.0: .*must be in \(0, 1\]",
    ),
    (
        "unknown encoder",
        lambda d: axes(d)["item"]["Text"].update({"model.item_encoder": "txt"}),
        r"cell finetune/item=Text,transfer=NoPT,seed=0: .*txt",
    ),
    (
        "training.validation",
        lambda d: stage(d).update(set={"objective": "cpc"}),
        FINETUNE_CELL + r"mode=s2s does not fit objective cpc",
    ),
    # include and exclude
    (
        "include axis",
        lambda d: stage(d).update(include=[{"item": "Text", "transfer": "NoPT", "seed": 0, "x": 1}]),
        r"stages\[1\].include\[0\].x: stage finetune has no axis x; its axes: item, transfer, seed",
    ),
    (
        "include label",
        lambda d: stage(d).update(include=[{"item": "Image", "transfer": "NoPT", "seed": 0}]),
        r"stages\[1\].include\[0\].item: 'Image' is not a level of axis item: IDRec, Text",
    ),
    (
        "include missing axis",
        lambda d: stage(d).update(include=[{"item": "Text", "transfer": "NoPT"}]),
        r"stages\[1\].include\[0\]: an included cell gives a label for every axis .*; missing: seed",
    ),
    (
        "exclude axis",
        lambda d: stage(d).update(exclude=[{"colour": "red"}]),
        r"stages\[1\].exclude\[0\].colour: stage finetune has no axis colour",
    ),
    (
        "exclude label",
        lambda d: stage(d).update(exclude=[{"seed": 5}]),
        r"stages\[1\].exclude\[0\].seed: '5' is not a level of axis seed: 0, 1",
    ),
    ("empty exclude", lambda d: stage(d).update(exclude=[{}]), r"stages\[1\].exclude\[0\]: an empty exclude"),
    (
        "include without axes",
        lambda d: stage(d).update(axes={}, include=[{}]),
        r"stages\[1\]: include and exclude name cells by their axes, and this stage has none",
    ),
    ("folder name too long", lambda d: axes(d).update(item={"x" * 300: {}}), r"longer than 255 bytes"),
]


@pytest.mark.parametrize(("mutate", "message"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_a_wrong_grid_fails_at_load_naming_the_key_or_the_cell(mutate, message):
    data = two_stage()
    Grid.from_dict(data)  # the unmutated grid is fine
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        Grid.from_dict(data)


PLACES: dict[str, Callable[[dict[str, Any], str], Any]] = {
    "base": lambda d, key: d["base"].update({key: "x"}),
    "stages[1].set": lambda d, key: stage(d).update(set={key: "x"}),
    "stages[1].axes.transfer.HasPT": lambda d, key: axes(d)["transfer"]["HasPT"].update({key: "x"}),
    "stages[1].axes": lambda d, key: axes(d).update({key: ["x"]}),
}


@pytest.mark.parametrize("place", list(PLACES))
@pytest.mark.parametrize("key", list(RUNNER_KEYS))
def test_keys_the_runner_sets_are_refused_saying_why(place, key):
    data = two_stage()
    PLACES[place](data, key)
    if key == "dataset" and place == "stages[1].axes.transfer.HasPT":
        # in a level, `dataset` names one of the grid's datasets (like `from`), not a path
        with pytest.raises(
            ConfigError, match=r"axes.transfer.HasPT.dataset: 'x' is not a dataset of the grid"
        ):
            Grid.from_dict(data)
        return
    where = f"{place}.{key}" if place != "stages[1].axes" else f"stages[1].axes.{key}.{key}"
    with pytest.raises(ConfigError) as caught:
        Grid.from_dict(data)
    assert str(caught.value) == f"{where}: a grid does not set {key}: {RUNNER_KEYS[key]}"


def test_missing_grid_and_base_config_files_are_named(tmp_path: Path):
    with pytest.raises(MissingPathError, match=r"grid file .*nope\.yaml does not exist"):
        load_grid(tmp_path / "nope.yaml")
    data = two_stage()
    data["base_config"] = "configs/none.yaml"
    with pytest.raises(MissingPathError, match=r"base_config: .*configs/none.yaml does not exist"):
        Grid.from_dict(data, tmp_path)
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_grid(tmp_path / "bad.yaml")


def test_a_wrong_report_section_fails_at_load():
    data = two_stage()
    data["report"] = {"tables": [{"title": "t", "stage": "finetune", "rows": ["item"], "columns": ["colour"],
                                  "metric": "NDCG@10"}]}  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"report.tables\[0\].columns\[0\]: stage 'finetune' has no axis 'colour'"
    ):
        Grid.from_dict(data)
    data["report"]["tables"][0]["columns"] = ["transfer"]
    assert Grid.from_dict(data).report["tables"][0]["columns"] == ["transfer"]
