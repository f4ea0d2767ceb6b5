"""The cells of a grid: one run each, named by its stage and labels, with its merged config and dependency.

A stage's cells, in this order: the product of its axes in the order written (the last axis varies
fastest) minus every cell that matches an ``exclude`` entry, then its ``include`` cells in the order
written. As in a GitHub Actions matrix, ``exclude`` applies to the product only, so ``include`` can add
back one cell of an excluded group. An included cell may give a plain-list axis a value it does not
list (``user_fraction: 0.3``); on a named axis it must use one of the labels.

A cell's TrainConfig dict merges, later winning key by key: the grid's ``base_config`` file, ``base``,
the stage's ``set``, then the levels of the cell in axis order. Its dataset and dependency are the
stage's, unless a level sets ``dataset`` or ``from`` (the last axis that sets one wins). The dependency
is the one cell of the named stage whose labels equal this cell's on every axis the two stages share, and
the ``match`` labels on the axes it names (``match`` wins on a shared axis); none or several is a
ConfigError naming the cell. Mappings merge key by key, so a level's ``model.item_encoder_config`` adds to
the base's rather than replacing it.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from transrec.bench.spec import Axis, Dependency, Level, StageSpec, format_label, nest
from transrec.config import ConfigError, merge

#: Longest folder name of a cell (most file systems allow 255 bytes).
MAX_KEY_PART = 255
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")


@dataclass(frozen=True)
class Cell:
    """One run of a grid.

    Attributes:
        stage: the stage's name.
        kind: ``train``, ``evaluate`` or ``popularity`` (the stage's kind).
        labels: ``((axis, label), ...)`` in the stage's axis order.
        key: the cell's folder relative to the grid's output directory:
            ``<stage>/<axis>=<label>,<axis>=<label>`` with each label's characters outside
            ``[A-Za-z0-9_.+-]`` replaced by ``_``; ``<stage>/default`` for a stage without axes.
        dataset: a key of the grid's ``datasets``.
        config: the merged TrainConfig dict without ``dataset``, ``output_dir``, ``init_checkpoint`` and
            ``resume`` (the runner sets them).
        depends_on: the key of the cell whose ``best/`` checkpoint this one starts from (train) or
            evaluates (evaluate), or None.
    """

    stage: str
    kind: Literal["train", "evaluate", "popularity"]
    labels: tuple[tuple[str, str], ...]
    key: str
    dataset: str
    config: dict[str, Any] = field(hash=False)
    depends_on: str | None = None

    def label(self, axis: str) -> str | None:
        """This cell's label on ``axis``, None when its stage has no such axis."""
        return dict(self.labels).get(axis)

    @property
    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)


def sanitise_label(label: str) -> str:
    """``label`` with every character outside ``[A-Za-z0-9_.+-]`` replaced by ``_`` (a folder name)."""
    return _UNSAFE.sub("_", label)


def cell_key(stage: str, labels: Sequence[tuple[str, str]]) -> str:
    """``<stage>/<axis>=<label>,...`` (labels sanitised), ``<stage>/default`` without axes."""
    if not labels:
        return f"{stage}/default"
    part = ",".join(f"{axis}={sanitise_label(label)}" for axis, label in labels)
    if len(part.encode()) > MAX_KEY_PART:
        raise ConfigError(f"stage {stage}: the folder name {part!r} of a cell is longer than {MAX_KEY_PART} "
                          "bytes; use shorter axis names or labels")  # fmt: skip
    return f"{stage}/{part}"


def expand_stages(stages: Sequence[StageSpec], base: Mapping[str, Any]) -> list[Cell]:
    """Every cell of ``stages`` (in order, each as the module docstring says); ``base``: the merged
    base_config and base."""
    earlier = _Earlier({stage.name: stage for stage in stages})
    for stage in stages:
        earlier.cells[stage.name] = expand_stage(stage, base, earlier)
    return [cell for stage in stages for cell in earlier.cells[stage.name]]


class _Earlier:
    """The cells of the stages expanded so far, with an index by labels for the dependency look-ups (a
    grid of thousands of cells would otherwise compare every pair)."""

    def __init__(self, stages: Mapping[str, StageSpec]) -> None:
        self.stages = stages
        self.cells: dict[str, list[Cell]] = {}
        self._tables: dict[tuple[str, tuple[str, ...]], dict[tuple[str | None, ...], list[Cell]]] = {}

    def find(self, stage: str, wanted: Mapping[str, str]) -> list[Cell]:
        """The cells of ``stage`` with the labels ``wanted`` (``{axis: label}``)."""
        axes = tuple(sorted(wanted))
        table = self._tables.get((stage, axes))
        if table is None:
            table = {}
            for cell in self.cells[stage]:
                table.setdefault(tuple(cell.label(axis) for axis in axes), []).append(cell)
            self._tables[(stage, axes)] = table
        return table.get(tuple(wanted[axis] for axis in axes), [])


def expand_stage(stage: StageSpec, base: Mapping[str, Any], earlier: _Earlier) -> list[Cell]:
    """The cells of ``stage`` (order: module docstring); ``earlier``: the stages before it."""
    where = f"stage {stage.name}"
    combos: list[tuple[str, tuple[Level, ...]]] = []
    for levels in itertools.product(*(axis.levels for axis in stage.axes)):
        labels = {axis.name: level.label for axis, level in zip(stage.axes, levels, strict=True)}
        if not any(all(labels[axis] == label for axis, label in entry) for entry in stage.exclude):
            combos.append((where, levels))
    for i, entry in enumerate(stage.include):
        values = [value for _, value in entry]
        levels = tuple(_included_level(axis, value) for axis, value in zip(stage.axes, values, strict=True))
        combos.append((f"{where}, include[{i}]", levels))
    cells: list[Cell] = []
    origin: dict[str, str] = {}
    for source, levels in combos:
        cell = _cell(stage, levels, base, earlier)
        # Case-folded: macOS and Windows file systems would put Text and text in one folder.
        folded = cell.key.casefold()
        if folded in origin:
            raise ConfigError(f"{source}: two cells have the folder {cell.key} ({origin[folded]} and this "
                              "one); labels that differ only in case or in characters outside "
                              "[A-Za-z0-9_.+-] share a folder, and an included cell must not repeat one of "
                              "the product")  # fmt: skip
        origin[folded] = source
        cells.append(cell)
    return cells


def _included_level(axis: Axis, value: Any) -> Level:
    label = format_label(value, axis.name)
    level = axis.level(label)
    if level is not None:
        return level
    # Only a plain-list axis gets here (spec._parse_include checks named labels): a value it does not list.
    return Level(label=label, overrides=nest({axis.name: value}, axis.name))


def _cell(stage: StageSpec, levels: tuple[Level, ...], base: Mapping[str, Any], earlier: _Earlier) -> Cell:
    labels = tuple((axis.name, level.label) for axis, level in zip(stage.axes, levels, strict=True))
    key = cell_key(stage.name, labels)
    config = merge(base, stage.set)
    dataset, dependency = stage.dataset, stage.dependency
    for level in levels:
        config = merge(config, level.overrides)
        if level.dataset is not None:
            dataset = level.dataset
        if level.dependency_set:
            dependency = level.dependency
    if stage.kind == "evaluate" and dependency is None:
        raise ConfigError(f"cell {key}: an evaluate cell applies the checkpoint of the cell its `from` "
                          "names, and this one has none")  # fmt: skip
    if stage.kind == "popularity" and dependency is not None:
        raise ConfigError(f"cell {key}: a popularity cell ranks by the dataset's popularity and starts from "
                          f"no checkpoint; remove its `from` ({dependency.stage})")  # fmt: skip
    depends_on = None
    if dependency is not None:
        depends_on = _resolve(key, labels, dependency, earlier)
    # A copy: merge() shares the nested mappings of the levels, which a caller must not change for every cell.
    return Cell(stage=stage.name, kind=stage.kind, labels=labels, key=key, dataset=dataset,
                config=copy.deepcopy(config), depends_on=depends_on)  # fmt: skip


def _resolve(key: str, labels: tuple[tuple[str, str], ...], dependency: Dependency, earlier: _Earlier) -> str:
    target = earlier.stages[dependency.stage]
    own = dict(labels)
    wanted = {axis.name: own[axis.name] for axis in target.axes if axis.name in own}
    wanted.update(dependency.match)
    found = earlier.find(target.name, wanted)
    shown = ", ".join(f"{axis}={label}" for axis, label in wanted.items()) or "no labels"
    if not found:
        raise ConfigError(f"cell {key}: no cell of stage {target.name} has {shown} (from: {target.name}); "
                          f"its cells: {_some(earlier.cells[target.name])}")  # fmt: skip
    if len(found) > 1:
        free = [axis.name for axis in target.axes if axis.name not in wanted]
        raise ConfigError(f"cell {key}: {len(found)} cells of stage {target.name} have {shown} "
                          f"({_some(found)}); fix the other axes with "
                          f"from: {{stage: {target.name}, match: {{{free[0]}: ...}}}}")  # fmt: skip
    return found[0].key


def _some(cells: Sequence[Cell], shown: int = 6) -> str:
    """The keys of ``cells``, the first ``shown`` of a longer list and how many more."""
    more = f" and {len(cells) - shown} more" if len(cells) > shown else ""
    return ", ".join(cell.key for cell in cells[:shown]) + more
