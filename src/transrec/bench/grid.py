"""A benchmark grid: datasets, a base config and stages of cells, read from one YAML file.

    transrec bench configs/bench/ninerec_table2_mini.yaml --dry-run

The file (keys in the order they are usually written):

``name`` (required, ``[A-Za-z0-9_.-]+``), ``description`` (shown in the report), ``output_dir`` (default
``runs/bench/<name>``, relative to the current directory), ``datasets`` (name -> ``spec.DatasetSpec``),
``base_config`` (a TrainConfig YAML, relative to the grid file, merged under ``base``; its ``dataset``,
``output_dir``, ``init_checkpoint`` and ``resume`` are ignored), ``base`` (TrainConfig keys of every
cell, nested or dotted), ``stages`` (a list; each: ``name``, ``dataset``, ``kind`` train|evaluate|
popularity, ``from``, ``set``, ``axes``, ``include``, ``exclude``; see ``bench.spec`` and
``bench.cells``) and ``report`` (the tables and plots, parsed by ``bench.report_spec``).

``load_grid`` refuses a wrong grid before anything runs: unknown keys, a key given twice in one mapping
(YAML would keep the last silently), unknown datasets and stages, a ``from`` to a later stage, empty
axes, repeated labels, include/exclude naming unknown axes or labels, two cells in one folder, keys the
runner sets, and every cell whose TrainConfig cannot be built or fails ``training.validation``; each
message names the key path or the cell.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from transrec.bench.cells import Cell, expand_stages
from transrec.bench.spec import (
    NAME_PATTERN,
    RUNNER_KEYS,
    DatasetSpec,
    StageSpec,
    check_keys,
    check_runner_keys,
    nest,
    parse_dataset,
    parse_stage,
)
from transrec.config import ConfigError, from_dict, merge, to_dict
from transrec.errors import MissingPathError, UserError

if TYPE_CHECKING:
    from transrec.training.config import TrainConfig

logger = logging.getLogger(__name__)

GRID_KEYS = ("name", "description", "output_dir", "datasets", "base_config", "base", "stages", "report")
#: TrainConfig keys that change neither the weights nor the metrics of a run, left out of
#: ``Grid.config_hash`` so that the same grid moved to a GPU machine keeps its finished cells.
RESULT_FREE = (
    "device", "num_workers", "eval_batch_size", "parallel", "trunk_cache", "trunk_cache_max_memory_mb",
    "tracking", "tracking_config",  # where a run is reported (training.tracking), not what it computes
)  # fmt: skip


@dataclass
class Grid:
    """A parsed grid (module docstring). Build it with ``load_grid`` or ``Grid.from_dict``.

    Attributes:
        name, description, output_dir: as in the file (``output_dir`` with its default filled in).
        datasets: the named datasets.
        base: the merged ``base_config`` and ``base`` (nested, dotted keys expanded).
        stages: in dependency order.
        report: the raw ``report`` mapping (``bench.report_spec.ReportSpec.from_dict`` parses it).
        path: the grid file, when read from one.
    """

    name: str
    description: str
    output_dir: str
    datasets: dict[str, DatasetSpec]
    base: dict[str, Any]
    stages: tuple[StageSpec, ...]
    report: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    _cells: list[Cell] = field(default_factory=list, init=False, repr=False)
    _by_key: dict[str, Cell] = field(default_factory=dict, init=False, repr=False)
    _hashes: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], base_dir: str | Path = ".", *, path: Path | None = None
    ) -> Grid:
        """Parse and check a grid (every rule of the module docstring); ``base_dir``: the folder
        ``base_config`` is relative to."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a grid is a mapping with name, datasets, base and stages, got {data!r}")
        check_keys(data, GRID_KEYS, "the grid")
        name = data.get("name")
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise ConfigError(f"name: a grid needs a name of letters, digits, '_', '.' and '-', got {name!r}")
        description = data.get("description") or ""
        output_dir = data.get("output_dir") or f"runs/bench/{name}"
        if not isinstance(description, str) or not isinstance(output_dir, str):
            raise ConfigError("description and output_dir must be strings")
        raw_datasets = data.get("datasets")
        if not isinstance(raw_datasets, Mapping) or not raw_datasets:
            raise ConfigError("datasets: a grid needs at least one named dataset, e.g. "
                              "{source: {builder: ml100k-platforms, part: source}}")  # fmt: skip
        for key in raw_datasets:
            if not NAME_PATTERN.fullmatch(str(key)):  # the runner prepares it in <output_dir>/datasets/<name>
                raise ConfigError(f"datasets.{key}: a dataset name is letters, digits, '_', '.' and '-' (it "
                                  "names a folder)")  # fmt: skip
        datasets = {str(k): parse_dataset(v, f"datasets.{k}") for k, v in raw_datasets.items()}
        base = _base(data, Path(base_dir))
        raw_stages = data.get("stages")
        if not isinstance(raw_stages, list) or not raw_stages:
            raise ConfigError("stages: a grid needs a list of at least one stage")
        stages: dict[str, StageSpec] = {}
        for index, raw in enumerate(raw_stages):
            stage = parse_stage(raw, index, datasets, stages)
            stages[stage.name] = stage
        report = data.get("report") or {}
        if not isinstance(report, Mapping):
            raise ConfigError(f"report: expected a mapping of tables and plots, got {report!r}")
        grid = cls(name=name, description=description, output_dir=output_dir, datasets=datasets, base=base,
                   stages=tuple(stages.values()), report=dict(report), path=path)  # fmt: skip
        _check_override_keys(base, grid.stages)
        grid._expand()
        if grid.report:
            grid._check_report()
        return grid

    def cells(self) -> list[Cell]:
        """Every cell: stages in order, each as ``bench.cells`` orders them."""
        return list(self._cells)

    def stage(self, name: str) -> StageSpec:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise ConfigError(f"grid {self.name} has no stage {name!r}; its stages: "
                          f"{', '.join(s.name for s in self.stages)}")  # fmt: skip

    def cell(self, key: str) -> Cell:
        """The cell of folder ``key``."""
        if key not in self._by_key:
            raise ConfigError(f"grid {self.name} has no cell {key!r}")
        return self._by_key[key]

    def config_hash(self, cell: Cell) -> str:
        """sha256 (hex) of what the cell computes: its kind, its dataset's name and spec, its TrainConfig
        (``normalised_config``) and its dependency's key and config_hash, so that a cell is changed when
        the cell it starts from is."""
        if cell.key not in self._hashes:
            dependency = self.cell(cell.depends_on) if cell.depends_on else None
            payload = {
                "kind": cell.kind,
                "dataset": cell.dataset,
                "dataset_spec": to_dict(self.datasets[cell.dataset]),
                "config": _computed(cell.kind, normalised_config(cell.config)),
                "depends_on": cell.depends_on,
                "depends_on_hash": self.config_hash(dependency) if dependency else None,
            }
            text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
            self._hashes[cell.key] = hashlib.sha256(text.encode()).hexdigest()
        return self._hashes[cell.key]

    def train_config(
        self, cell: Cell, output_dir: str | Path, dataset: str | Path,
        init_checkpoint: str | Path | None = None, resume: str = "auto",
    ) -> TrainConfig:  # fmt: skip
        """The cell's TrainConfig with the keys the runner owns filled in (ConfigError naming the key when
        a value does not fit; ``load_grid`` has built every cell's once with placeholders)."""
        from transrec.training.config import TrainConfig

        data = dict(cell.config, dataset=str(dataset), output_dir=str(output_dir), resume=resume,
                    init_checkpoint=None if init_checkpoint is None else str(init_checkpoint))  # fmt: skip
        return from_dict(TrainConfig, data)

    def _expand(self) -> None:
        from transrec.training.validation import validate_config

        self._cells = expand_stages(self.stages, self.base)
        self._by_key = {cell.key: cell for cell in self._cells}
        for cell in self._cells:
            try:
                config = self.train_config(cell, f"<output_dir>/{cell.key}", f"<dataset {cell.dataset}>",
                                           "<checkpoint>" if cell.depends_on else None)  # fmt: skip
                if cell.kind == "train":
                    validate_config(config)
            except UserError as err:  # ConfigError, and UnknownNameError for an unknown encoder name
                raise ConfigError(f"cell {cell.key}: {err}") from err

    def axis_labels(self) -> dict[str, dict[str, list[str]]]:
        """``{stage: {axis: [label, ...]}}``: every stage in order, its axes in order, each axis's labels in
        the order its cells first use them (included values after the listed ones)."""
        result: dict[str, dict[str, list[str]]] = {s.name: {a.name: [] for a in s.axes} for s in self.stages}
        for cell in self._cells:
            for axis, label in cell.labels:
                if label not in result[cell.stage][axis]:
                    result[cell.stage][axis].append(label)
        return result

    def _check_report(self) -> None:
        """Parse ``report`` with ``bench.report_spec``, so that a wrong table fails at load as a wrong cell
        does, before anything runs."""
        from transrec.bench.report_spec import ReportSpec

        labels = self.axis_labels()
        axes = {stage: list(names) for stage, names in labels.items()}
        ReportSpec.from_dict(self.report, axes, labels=labels)


def load_grid(path: str | Path) -> Grid:
    """Read and check the grid file ``path`` (``base_config`` relative to its folder)."""
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"grid file {path} does not exist")
    try:
        data = yaml.load(path.read_text(), Loader=_GridLoader)  # a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    try:
        return Grid.from_dict(data or {}, path.parent, path=path)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def normalised_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A cell's TrainConfig as ``Grid.config_hash`` compares it: built (so 0.1, ``"0.1"`` and ``1e-1``
    agree), without the runner's keys and ``RESULT_FREE``, and with every value equal to TrainConfig's
    default left out (so spelling out a default, or a new transrec version adding a key with a default,
    changes no cell)."""
    from transrec.training.config import TrainConfig

    placeholders = {"dataset": "", "output_dir": ""}
    built = to_dict(from_dict(TrainConfig, {**config, **placeholders}))
    defaults = _defaults()
    for key in (*RUNNER_KEYS, *RESULT_FREE):
        built.pop(key, None)
    return _differences(built, defaults)


#: The TrainConfig keys an evaluate or popularity cell reads (``bench.execute``): a training key such as
#: ``epochs`` set for the whole grid changes no such cell.
EVALUATION_KEYS = ("ks", "eval_subsets", "seed")


def _computed(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """What of a normalised config a cell of ``kind`` computes with: all of it for ``train``."""
    if kind == "train":
        return config
    return {key: config[key] for key in EVALUATION_KEYS if key in config}


@functools.cache
def _defaults() -> dict[str, Any]:
    from transrec.training.config import TrainConfig

    return to_dict(TrainConfig(dataset="", output_dir=""))


def _differences(value: dict[str, Any], default: Mapping[str, Any]) -> dict[str, Any]:
    result = {}
    for key, item in value.items():
        if key not in default:
            result[key] = item
        elif isinstance(item, dict) and isinstance(default[key], Mapping):
            inner = _differences(item, default[key])
            if inner:
                result[key] = inner
        elif item != default[key]:
            result[key] = item
    return result


def _check_override_keys(base: Mapping[str, Any], stages: tuple[StageSpec, ...]) -> None:
    """Refuse a key TrainConfig does not have where it is written (``stages[1].axes.item.HasPT``), before
    the cells are built (whose errors name the cell)."""
    from transrec.training.config import TrainConfig

    layers = [("base (or base_config)", base)]
    for index, stage in enumerate(stages):
        layers.append((f"stages[{index}].set", stage.set))
        for axis in stage.axes:
            for level in axis.levels:
                path = f"stages[{index}].axes.{axis.name}" + ("" if axis.plain else f".{level.label}")
                layers.append((path, level.overrides))
    for where, overrides in layers:
        unknown = unknown_keys(TrainConfig, overrides)
        if unknown:
            raise ConfigError(f"{where}: {', '.join(unknown)} is not a TrainConfig key (they are listed in "
                              "training/config.py)")  # fmt: skip


def unknown_keys(cls: type, data: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys of ``data`` that the dataclass ``cls`` (and its nested dataclasses) lacks."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = []
    for key, value in data.items():
        if key not in names:
            unknown.append(prefix + key)
        elif dataclasses.is_dataclass(hints[key]) and isinstance(value, Mapping):
            unknown += unknown_keys(hints[key], value, f"{prefix}{key}.")
    return unknown


def _base(data: Mapping[str, Any], base_dir: Path) -> dict[str, Any]:
    """``base_config`` (its runner keys dropped) merged under ``base``."""
    merged: dict[str, Any] = {}
    if data.get("base_config") is not None:
        file = base_dir / str(data["base_config"])
        if not file.is_file():
            raise MissingPathError(f"base_config: {file} does not exist (the path is relative to the grid)")
        loaded = yaml.safe_load(file.read_text()) or {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"base_config: {file} must hold a mapping of TrainConfig keys")
        merged = nest(loaded, "base_config")
        dropped = [key for key in RUNNER_KEYS if merged.pop(key, None) is not None]
        if dropped:
            logger.info(f"base_config {file}: ignoring {', '.join(dropped)} (the bench runner sets them)")
    base = data.get("base")
    if base is not None and not isinstance(base, Mapping):
        raise ConfigError(f"base: expected a mapping of TrainConfig keys, got {base!r}")
    base = nest(base or {}, "base")
    check_runner_keys(base, "base")
    return merge(merged, base)


class _GridLoader(yaml.SafeLoader):
    """SafeLoader that keeps every plain scalar key as the text written (a level ``No:`` is the label
    ``No``, not YAML 1.1's false; ``1.0e-3:`` stays ``1.0e-3``) and refuses a key written twice in one
    mapping (keys brought in by a ``<<`` merge may be overridden, as YAML intends). Values keep their
    types: ``seed: [0, 1]`` is two integers."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if isinstance(key_node, yaml.ScalarNode) and key_node.style is None:
                key_node.tag = "tag:yaml.org,2002:str"
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str):
                if key in seen:
                    line = key_node.start_mark.line + 1
                    raise ConfigError(f"line {line}: the key {key!r} is written twice in one mapping (YAML "
                                      "would keep only the last)")  # fmt: skip
                seen.add(key)
        return super().construct_mapping(node, deep=deep)
