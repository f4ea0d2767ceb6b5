"""The parts of a grid file: datasets, stages, axes, levels and dependencies, parsed from plain data.

``bench.grid`` reads the whole file; this module turns one ``datasets`` entry or one ``stages`` entry
into typed dataclasses and refuses what cannot be meant, with a ``ConfigError`` naming the key path
(``stages[1].axes.item.HasPT``). What the levels' overrides mean for TrainConfig is checked later, when
``bench.grid`` builds the TrainConfig of every cell.

Labels. A named level's label is its key as written in the grid file (``bench.grid.load_grid`` reads keys
as text: ``No:`` is ``No``, not YAML 1.1's false; a non-string key of a dict handed to ``Grid.from_dict``
is labelled like a plain-list value). A plain-list axis (``seed: [0, 1, 2]``) labels each
value with ``format_label``: integers in decimal, floats by their shortest round-trip form (Python's
``repr``: ``0.1`` -> ``"0.1"``, ``1.0`` -> ``"1.0"``, ``1.0e-3`` -> ``"0.001"``, ``1e-05`` stays
``"1e-05"``), booleans ``true``/``false``, null ``null``, strings as written. So ``1`` and ``1.0`` are two
labels, and a YAML ``1e-3`` (no dot: a string in YAML 1.1) keeps its spelling ``"1e-3"``. The labels name
cell directories and report columns, so this format is part of what keeps a finished grid finished.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from transrec.config import ConfigError, from_dict

#: Keys of TrainConfig that the runner derives for every cell, with the reason shown when a grid sets one.
RUNNER_KEYS: dict[str, str] = {
    "dataset": "the stage's `dataset` (a key of `datasets`) names the cell's data, prepared by the runner",
    "output_dir": "every cell runs in <output_dir>/<cell key>",
    "init_checkpoint": "a cell starts from the best/ checkpoint of the cell that its stage's `from` names",
    "resume": "the runner resumes a killed cell from last/ and `--rerun` decides what runs again",
}
STAGE_KINDS = ("train", "evaluate", "popularity")
BUILDERS = ("ml100k-platforms", "synthetic", "prepared", "raw")
#: Options of the ``ml100k-platforms`` builder (``transrec.demo.pipeline.prepare_platforms``).
ML100K_OPTIONS = ("modality", "users_per_platform", "split_seed", "image_size")
#: Keys a level may hold besides TrainConfig overrides.
LEVEL_KEYS = ("from", "dataset")
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
#: Stage names that would clash with what the runner and the report write under the output directory.
RESERVED_STAGE_NAMES = ("report", "datasets")


@dataclass(frozen=True)
class DatasetSpec:
    """One named dataset of a grid, prepared once by the runner (``bench.datasets``).

    Args:
        builder: ``ml100k-platforms`` (MovieLens-100K split into two platforms without a shared user or
            item, as the demo does), ``synthetic`` (``data.synthetic``'s two-platform world), ``prepared``
            (a folder ``transrec data prepare`` wrote) or ``raw`` (a raw dataset read by a loader and
            prepared with ``prepare``).
        part: ``source`` or ``target`` (``ml100k-platforms`` and ``synthetic``).
        new_items: share of the target's items made new (``ml100k-platforms``, part target only;
            ``PrepareConfig.new_items``). For ``raw``, set ``prepare.new_items``.
        path: the folder of ``prepared`` and ``raw`` datasets, relative to the current directory.
        format: the loader of a ``raw`` dataset (``transrec data formats`` lists them).
        options: ``synthetic``: SyntheticWorldConfig fields; ``raw``: the loader's options;
            ``ml100k-platforms``: ``modality`` (text|mom), ``users_per_platform``, ``split_seed``,
            ``image_size``.
        prepare: PrepareConfig fields of a ``raw`` dataset, or for ``synthetic`` merged over the defaults
            of ``transrec data synth`` (``bench.datasets``).
    """

    builder: Literal["ml100k-platforms", "synthetic", "prepared", "raw"]
    part: Literal["source", "target"] | None = None
    new_items: float | None = None
    path: str | None = None
    format: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    prepare: dict[str, Any] = field(default_factory=dict)


def parse_dataset(data: Any, where: str) -> DatasetSpec:
    """``datasets.<name>`` -> DatasetSpec, with the keys each builder needs and accepts checked."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping such as {{builder: prepared, path: ...}}, "
                          f"got {data!r}")  # fmt: skip
    spec = from_dict(DatasetSpec, data, prefix=where + ".")
    given = {key for key, value in data.items() if value not in (None, {}, [])}
    needs = {"ml100k-platforms": {"part"}, "synthetic": {"part"}, "prepared": {"path"},
             "raw": {"path", "format"}}  # fmt: skip
    accepts = {"ml100k-platforms": {"part", "new_items", "options"},
               "synthetic": {"part", "options", "prepare"}, "prepared": {"path"},
               "raw": {"path", "format", "options", "prepare"}}  # fmt: skip
    missing = sorted(needs[spec.builder] - given)
    if missing:
        raise ConfigError(f"{where}: builder {spec.builder} needs {', '.join(missing)}")
    extra = sorted(given - accepts[spec.builder] - {"builder"})
    if extra:
        raise ConfigError(f"{where}.{extra[0]}: builder {spec.builder} takes no {extra[0]} "
                          f"(it takes {', '.join(sorted(accepts[spec.builder]))})")  # fmt: skip
    if spec.new_items is not None and (spec.part != "target" or not 0.0 <= spec.new_items < 1.0):
        raise ConfigError(f"{where}.new_items: a share in [0, 1) of the target's items (part: target only), "
                          f"got {spec.new_items} with part {spec.part}")  # fmt: skip
    if spec.builder == "synthetic":
        from transrec.data.synthetic import SyntheticWorldConfig

        from_dict(SyntheticWorldConfig, spec.options, prefix=f"{where}.options.")
    if spec.prepare:
        from transrec.data.prepare import PrepareConfig

        from_dict(PrepareConfig, spec.prepare, prefix=f"{where}.prepare.")
    if spec.builder == "ml100k-platforms":
        unknown = sorted(set(spec.options) - set(ML100K_OPTIONS))
        if unknown:
            raise ConfigError(f"{where}.options.{unknown[0]}: unknown option of ml100k-platforms; "
                              f"known: {', '.join(ML100K_OPTIONS)}")  # fmt: skip
        if spec.options.get("modality", "text") not in ("text", "mom"):
            raise ConfigError(f"{where}.options.modality: text or mom, got {spec.options['modality']!r}")
    return spec


@dataclass(frozen=True)
class Dependency:
    """A cell's dependency: the cell of ``stage`` whose labels equal the dependent cell's on every axis
    they share, with ``match`` fixing the labels of the others (``{axis: label}``)."""

    stage: str
    match: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Level:
    """One level of an axis: its label, its TrainConfig overrides (nested, no dotted keys left) and,
    where the level sets them, the cell's dependency (``dependency_set``; ``dependency`` None means no
    dependency) and dataset."""

    label: str
    overrides: dict[str, Any] = field(default_factory=dict, hash=False)
    dependency: Dependency | None = None
    dependency_set: bool = False
    dataset: str | None = None


@dataclass(frozen=True)
class Axis:
    """A named axis of a stage; ``plain``: given as a list of values of the config key ``name``."""

    name: str
    levels: tuple[Level, ...]
    plain: bool = False

    def level(self, label: str) -> Level | None:
        return next((level for level in self.levels if level.label == label), None)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(level.label for level in self.levels)


@dataclass(frozen=True)
class StageSpec:
    """One stage of a grid: every cell of it trains (``train``), evaluates a checkpoint (``evaluate``) or
    ranks by popularity (``popularity``) on ``dataset``; see ``bench.grid`` for the YAML keys."""

    name: str
    dataset: str
    kind: Literal["train", "evaluate", "popularity"] = "train"
    set: dict[str, Any] = field(default_factory=dict, hash=False)
    axes: tuple[Axis, ...] = ()
    dependency: Dependency | None = None
    include: tuple[tuple[tuple[str, Any], ...], ...] = ()
    exclude: tuple[tuple[tuple[str, str], ...], ...] = ()

    def axis(self, name: str) -> Axis | None:
        return next((axis for axis in self.axes if axis.name == name), None)


STAGE_KEYS = ("name", "dataset", "kind", "from", "set", "axes", "include", "exclude")


def parse_stage(
    data: Any, index: int, datasets: Mapping[str, Any], earlier: Mapping[str, StageSpec]
) -> StageSpec:
    """``stages[index]`` -> StageSpec; ``earlier``: the stages before it, by name (``from`` may only name
    one of them)."""
    where = f"stages[{index}]"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping with name, dataset and axes, got {data!r}")
    check_keys(data, STAGE_KEYS, where)
    name = data.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name in RESERVED_STAGE_NAMES:
        raise ConfigError(f"{where}.name: a stage needs a name of letters, digits, '_', '.' and '-' (it "
                          f"names a folder), other than {' and '.join(RESERVED_STAGE_NAMES)}; "
                          f"got {name!r}")  # fmt: skip
    if name.casefold() in (other.casefold() for other in earlier):  # one folder on macOS and Windows
        raise ConfigError(f"{where}.name: two stages are named {name} (names differing only in case count as "
                          "one: they name folders)")  # fmt: skip
    kind = data.get("kind", "train")
    if kind not in STAGE_KINDS:
        raise ConfigError(f"{where}.kind: one of {', '.join(STAGE_KINDS)}, got {kind!r}")
    dataset = _dataset_name(data.get("dataset"), datasets, f"{where}.dataset")
    settings = nest(_mapping(data.get("set"), f"{where}.set"), f"{where}.set")
    check_runner_keys(settings, f"{where}.set")
    dependency = parse_dependency(data.get("from"), f"{where}.from", name, earlier)
    axes_data = _mapping(data.get("axes"), f"{where}.axes")
    axes = tuple(
        _parse_axis(str(axis), levels, f"{where}.axes.{axis}", name, datasets, earlier)
        for axis, levels in axes_data.items()
    )
    stage = StageSpec(name=name, dataset=dataset, kind=kind, set=settings, axes=axes, dependency=dependency)
    include = tuple(_parse_include(entry, f"{where}.include[{i}]", stage) for i, entry in
                    enumerate(_list(data.get("include"), f"{where}.include")))  # fmt: skip
    exclude = tuple(_parse_exclude(entry, f"{where}.exclude[{i}]", stage) for i, entry in
                    enumerate(_list(data.get("exclude"), f"{where}.exclude")))  # fmt: skip
    if (include or exclude) and not axes:
        raise ConfigError(f"{where}: include and exclude name cells by their axes, and this stage has none")
    return replace(stage, include=include, exclude=exclude)


def parse_dependency(
    value: Any, where: str, stage: str, earlier: Mapping[str, StageSpec]
) -> Dependency | None:
    """``from: pretrain`` or ``from: {stage: pretrain, match: {axis: label}}`` or ``from: null``."""
    if value is None:
        return None
    if isinstance(value, str):
        value = {"stage": value}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: a stage name, {{stage: NAME, match: {{axis: label}}}} or null, "
                          f"got {value!r}")  # fmt: skip
    check_keys(value, ("stage", "match"), where)
    target = value.get("stage")
    if not isinstance(target, str) or target not in earlier:
        raise ConfigError(f"{where}: {target!r} is not a stage listed before {stage}; a cell can only start "
                          f"from an earlier stage: {', '.join(earlier) or 'none here'}")  # fmt: skip
    if earlier[target].kind != "train":
        raise ConfigError(f"{where}: stage {target} is a {earlier[target].kind} stage and leaves no "
                          "checkpoint to start from; name a train stage")  # fmt: skip
    match = []
    for axis, raw in _mapping(value.get("match"), f"{where}.match").items():
        target_axis = earlier[target].axis(str(axis))
        if target_axis is None:
            raise ConfigError(f"{where}.match.{axis}: stage {target} has no axis {axis}; its axes: "
                              f"{', '.join(a.name for a in earlier[target].axes) or 'none'}")  # fmt: skip
        label = format_label(raw, f"{where}.match.{axis}")
        if target_axis.level(label) is None:
            raise ConfigError(f"{where}.match.{axis}: {label!r} is not a label of stage {target}'s axis "
                              f"{axis}: {', '.join(target_axis.labels)}")  # fmt: skip
        match.append((str(axis), label))
    return Dependency(stage=target, match=tuple(match))


def _parse_axis(name: str, data: Any, where: str, stage: str, datasets: Mapping[str, Any],
                earlier: Mapping[str, StageSpec]) -> Axis:  # fmt: skip
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"{where}: an axis name is letters, digits, '_', '.' and '-' (it names folders)")
    if isinstance(data, (list, tuple)):
        if not data:
            raise ConfigError(f"{where}: an axis needs at least one value")
        check_runner_keys(nest({name: None}, where), where)
        levels = [Level(label=format_label(value, f"{where}[{i}]"), overrides=nest({name: value}, where))
                  for i, value in enumerate(data)]  # fmt: skip
        _check_unique([level.label for level in levels], where)
        return Axis(name=name, levels=tuple(levels), plain=True)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: an axis is a list of values of the config key {name} or a mapping of "
                          f"labels to overrides, got {data!r}")  # fmt: skip
    if not data:
        raise ConfigError(f"{where}: an axis needs at least one level")
    levels = []
    for raw_label, overrides in data.items():
        label = format_label(raw_label, where)
        levels.append(_parse_level(label, overrides, f"{where}.{label}", stage, datasets, earlier))
    _check_unique([level.label for level in levels], where)
    return Axis(name=name, levels=tuple(levels))


def _parse_level(label: str, data: Any, where: str, stage: str, datasets: Mapping[str, Any],
                 earlier: Mapping[str, StageSpec]) -> Level:  # fmt: skip
    if not label:
        raise ConfigError(f"{where}: a label must not be empty (it names the cell's folder)")
    data = dict(_mapping(data, where))
    dependency_set = "from" in data
    dependency = parse_dependency(data.pop("from", None), f"{where}.from", stage, earlier)
    dataset = None
    if "dataset" in data:
        dataset = _dataset_name(data.pop("dataset"), datasets, f"{where}.dataset")
    overrides = nest(data, where)
    check_runner_keys(overrides, where)
    return Level(label=label, overrides=overrides, dependency=dependency, dependency_set=dependency_set,
                 dataset=dataset)  # fmt: skip


def _parse_include(entry: Any, where: str, stage: StageSpec) -> tuple[tuple[str, Any], ...]:
    """A full ``{axis: label}`` map; a plain-list axis takes any value (a new value adds a level)."""
    entry = _mapping(entry, where)
    _check_axes_named(entry, where, stage)
    missing = [axis.name for axis in stage.axes if axis.name not in entry]
    if missing:
        raise ConfigError(f"{where}: an included cell gives a label for every axis of the stage; missing: "
                          f"{', '.join(missing)}")  # fmt: skip
    labels = []
    for axis in stage.axes:
        value = entry[axis.name]
        label = format_label(value, f"{where}.{axis.name}")
        if not axis.plain and axis.level(label) is None:
            raise ConfigError(f"{where}.{axis.name}: {label!r} is not a level of axis {axis.name}: "
                              f"{', '.join(axis.labels)}")  # fmt: skip
        labels.append((axis.name, value))
    return tuple(labels)


def _parse_exclude(entry: Any, where: str, stage: StageSpec) -> tuple[tuple[str, str], ...]:
    """Some axes' labels; every cell with all of them is dropped."""
    entry = _mapping(entry, where)
    if not entry:
        raise ConfigError(f"{where}: an empty exclude would drop every cell of the stage")
    _check_axes_named(entry, where, stage)
    labels = []
    for axis_name, value in entry.items():
        axis = stage.axis(str(axis_name))
        label = format_label(value, f"{where}.{axis_name}")
        if axis.level(label) is None:
            raise ConfigError(f"{where}.{axis_name}: {label!r} is not a level of axis {axis_name}: "
                              f"{', '.join(axis.labels)}")  # fmt: skip
        labels.append((axis.name, label))
    return tuple(labels)


def _check_axes_named(entry: Mapping[str, Any], where: str, stage: StageSpec) -> None:
    unknown = [str(axis) for axis in entry if stage.axis(str(axis)) is None]
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: stage {stage.name} has no axis {unknown[0]}; its axes: "
                          f"{', '.join(axis.name for axis in stage.axes)}")  # fmt: skip


def format_label(value: Any, where: str) -> str:
    """The label of a plain-list value (see the module docstring); ConfigError for lists and mappings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)  # shortest round-trip form, stable across Python versions since 3.1
    if isinstance(value, str):
        return value
    raise ConfigError(f"{where}: a value of a plain-list axis (or a label) must be a number, a string, true, "
                      f"false or null, got {value!r}; give lists and mappings as named levels")  # fmt: skip


def nest(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Expand dotted keys (``{"model.d_model": 64}`` -> ``{"model": {"d_model": 64}}``), also inside nested
    mappings, merging keys given both ways; ConfigError when one key is given twice."""
    result: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key)
        parts = key.split(".")
        if any(not part for part in parts):
            raise ConfigError(f"{where}: {key!r} is not a config key")
        if isinstance(value, Mapping):
            value = nest(value, f"{where}.{key}")
        node = result
        for depth, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{where}: {'.'.join(parts[: depth + 1])} is given both as a value and as "
                                  f"a section (by {key})")  # fmt: skip
        _put(node, parts[-1], value, f"{where}.{key}")
    return result


def _put(node: dict[str, Any], key: str, value: Any, where: str) -> None:
    if key not in node:
        node[key] = value
    elif isinstance(node[key], dict) and isinstance(value, dict):
        for sub_key, sub_value in value.items():
            _put(node[key], sub_key, sub_value, where)
    else:
        raise ConfigError(f"{where}: this key is given twice (once dotted, once nested)")


def check_runner_keys(overrides: Mapping[str, Any], where: str) -> None:
    """Refuse the TrainConfig keys the runner sets (``RUNNER_KEYS``), saying why."""
    for key, reason in RUNNER_KEYS.items():
        if key in overrides:
            raise ConfigError(f"{where}.{key}: a grid does not set {key}: {reason}")


def check_keys(data: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = [str(key) for key in data if key not in known]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")


def _dataset_name(value: Any, datasets: Mapping[str, Any], where: str) -> str:
    if value not in datasets:
        raise ConfigError(f"{where}: {value!r} is not a dataset of the grid; its datasets: "
                          f"{', '.join(datasets) or 'none'}")  # fmt: skip
    return value


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    return list(value)


def _check_unique(labels: list[str], where: str) -> None:
    seen = set()
    for label in labels:
        if label in seen:
            raise ConfigError(f"{where}: the label {label!r} is given twice")
        seen.add(label)
