"""The named datasets of a grid, prepared once per grid (under a lock) and reused by every cell.

A grid's ``datasets:`` maps names to specs (``bench.spec.DatasetSpec``), each with a ``builder``:

    ml100k-platforms  {part: source|target, new_items, options: {modality: text|mom, users_per_platform,
                       split_seed, image_size}}: the demo's two platforms of MovieLens-100K, which share
                       no user and no item (``demo.pipeline.prepare_platforms``); the raw files come from
                       the data root (``$TRANSREC_HOME`` or ~/.cache/transrec, where ``transrec data fetch
                       ml-100k`` puts them; fetched when missing). Unset keys take the demo's defaults
                       (``DemoConfig``: text, all users, split seed 0, 224-pixel covers, and new items
                       0.1 of the target's items).
    synthetic         {part: source|target, options: {SyntheticWorldConfig fields}, prepare: {PrepareConfig
                       fields}}: the synthetic mixture-of-modality world, prepared as ``transrec data
                       synth`` does (5-core, raw images of the world's size) unless ``prepare`` says
                       otherwise.
    prepared          {path}: a dataset already prepared (``transrec data prepare``); a relative path that
                       is not a folder here is looked up under ``<data root>/prepared``.
    raw               {format, path, options: {loader options}, prepare: {PrepareConfig fields}}: a raw
                       dataset in a registered format, as ``transrec data prepare`` reads it.

Each dataset is prepared into ``<output_dir>/datasets/<name>/data`` (the two ML-100K platforms of one
setting share ``<output_dir>/datasets/.ml100k-platforms-<hash>``), and ``dataset.json`` beside it records
the spec. A spec that has changed since is refused, as a changed cell is, unless the grid is rerun with
``--rerun changed|all``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from transrec.bench.shard import wait_for
from transrec.bench.spec import DatasetSpec
from transrec.bench.state import CellLock, now_iso
from transrec.config import from_dict, merge, to_dict
from transrec.errors import MissingPathError, UserError
from transrec.utils.io import atomic_write_text

logger = logging.getLogger(__name__)

DATASET_FILE = "dataset.json"

#: The settings of the demo's platforms a ``ml100k-platforms`` spec may give (``DemoConfig`` fields).
PLATFORM_KEYS = ("modality", "users_per_platform", "split_seed", "new_items", "image_size")


class DatasetChangedError(UserError):
    """A grid's dataset was prepared from another spec than the grid gives now."""


def spec_dict(spec: DatasetSpec) -> dict[str, Any]:
    """The keys a dataset spec sets (those not at their default), ``builder`` first."""
    defaults = to_dict(type(spec)(builder=spec.builder))
    return {k: v for k, v in to_dict(spec).items() if k == "builder" or v != defaults[k]}


def spec_hash(spec: DatasetSpec) -> str:
    """sha256 of the canonical JSON of the keys ``spec`` sets (what "a changed dataset" compares)."""
    return hashlib.sha256(json.dumps(spec_dict(spec), sort_keys=True).encode()).hexdigest()


def dataset_dir(output_dir: Path, name: str) -> Path:
    return Path(output_dir) / "datasets" / name


def recorded_dataset(output_dir: Path, name: str) -> dict[str, Any] | None:
    """``dataset.json`` of a grid's dataset, or None when it has not been prepared; its ``path`` as a
    path from the current directory (it is stored relative to ``output_dir`` when inside it, so that
    a grid's output directory can move)."""
    path = dataset_dir(output_dir, name) / DATASET_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    record["path"] = str(Path(output_dir) / record["path"])  # an absolute stored path stays as it is
    return record


def dataset_state(output_dir: Path, name: str, spec: DatasetSpec) -> str:
    """``prepared``, ``missing`` or ``changed`` (prepared from another spec); a ``prepared`` builder's
    dataset is ``prepared`` when its folder holds a prepared dataset."""
    if spec.builder == "prepared":
        return "prepared" if (_prepared_path(spec) / "meta.json").is_file() else "missing"
    record = recorded_dataset(output_dir, name)
    if record is None or not (Path(record["path"]) / "meta.json").is_file():
        return "missing"
    return "prepared" if record["spec_hash"] == spec_hash(spec) else "changed"


def prepare_dataset(
    output_dir: Path,
    name: str,
    spec: DatasetSpec,
    *,
    replace_changed: bool = False,
    wait: float = 24 * 3600,
    poll: float = 5.0,
    progress: bool = True,
) -> Path:
    """The prepared folder of the grid's dataset ``name``: prepared now, under the dataset's lock, unless
    it already is. Another process preparing it is waited for (at most ``wait`` seconds). A dataset
    prepared from another spec raises ``DatasetChangedError``, or is prepared again with
    ``replace_changed``."""
    if spec.builder == "prepared":
        path = _prepared_path(spec)
        if not (path / "meta.json").is_file():
            raise MissingPathError(f"datasets.{name}.path: {path} is not a prepared dataset (no meta.json); "
                                   "prepare it with `transrec data prepare`")  # fmt: skip
        return path
    directory = dataset_dir(output_dir, name)
    lock = CellLock(directory)
    announced: list[bool] = []

    def ready_or_locked() -> bool | None:
        state = dataset_state(output_dir, name, spec)
        if state == "prepared":
            return True
        if state == "changed" and not replace_changed:
            record = recorded_dataset(output_dir, name)
            raise DatasetChangedError(
                f"dataset {name!r} in {directory} was prepared from {record['spec']}, and the grid now "
                f"gives {spec_dict(spec)}: rerun with --rerun changed to prepare it again (every cell on it "
                "then counts as changed too)"
            )
        if lock.acquire():
            return False
        if not announced:
            logger.info(f"dataset {name!r} is being prepared by {lock.holder.describe()}: waiting")
            announced.append(True)
        return None

    answer = wait_for(ready_or_locked, wait, poll)
    if answer is None:
        raise UserError(f"dataset {name!r}: still locked by {lock.holder.describe()} after {wait:.0f} s")
    if answer:
        return Path(recorded_dataset(output_dir, name)["path"])
    try:
        # Checked again under the lock: another process may have finished it after our first look.
        if dataset_state(output_dir, name, spec) == "prepared":
            return Path(recorded_dataset(output_dir, name)["path"])
        logger.info(f"preparing dataset {name!r} ({spec.builder}) in {directory}")
        path = BUILDERS[spec.builder](spec, Path(output_dir), directory, progress, wait)
        stored = path.relative_to(output_dir) if path.is_relative_to(output_dir) else path.resolve()
        record = {"name": name, "spec": spec_dict(spec), "spec_hash": spec_hash(spec), "path": str(stored),
                  "prepared": now_iso()}  # fmt: skip
        atomic_write_text(directory / DATASET_FILE, json.dumps(record, indent=2) + "\n")
        return path
    finally:
        lock.release()


def _prepared_path(spec: DatasetSpec) -> Path:
    from transrec.data.paths import resolve_dataset

    return resolve_dataset(spec.path)


def _build_ml100k_platforms(
    spec: DatasetSpec, output_dir: Path, directory: Path, progress: bool, wait: float
) -> Path:
    from transrec.data.movielens import fetch_ml100k
    from transrec.data.paths import data_root
    from transrec.demo.pipeline import DemoConfig, prepare_platforms

    settings = dict(spec.options)
    if spec.new_items is not None:
        settings["new_items"] = spec.new_items
    config = DemoConfig(**settings)
    raw = fetch_ml100k(data_root())
    # Both parts of one setting are prepared together and shared by the grid's datasets of that setting
    # (a source and its target); another setting gets its own folder, so none is ever prepared over
    # while a cell of another shard reads it.
    shared = {"raw": str(raw), **{k: getattr(config, k) for k in PLATFORM_KEYS}}
    digest = hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:12]
    root = output_dir / "datasets" / f".ml100k-platforms-{digest}"
    lock = CellLock(root)  # the source's and the target's dataset of one setting both take it
    if not wait_for(lambda: lock.acquire() or None, wait, poll=2.0):
        raise UserError(f"{root}: still locked by {lock.holder.describe()} after {wait:.0f} s")
    try:
        source, target = prepare_platforms(raw, root, config)
    finally:
        lock.release()
    return Path((source if spec.part == "source" else target).path)


def _build_synthetic(
    spec: DatasetSpec, output_dir: Path, directory: Path, progress: bool, wait: float
) -> Path:
    from transrec.data.prepare import PrepareConfig, prepare
    from transrec.data.synthetic import SyntheticWorldConfig, make_world

    world_config = from_dict(SyntheticWorldConfig, spec.options, prefix="options.")
    world = make_world(world_config)
    # As `transrec data synth`: 5-core, and raw images, which the world's small images make cheaper than JPEG.
    defaults = {"user_k": 5, "item_k": 5, "image_size": world_config.image_size, "image_format": "raw"}
    prep = from_dict(PrepareConfig, merge(defaults, getattr(spec, "prepare", {})), prefix="prepare.")
    raw = world.source if spec.part == "source" else world.target
    source = {"format": "synthetic", "world": to_dict(world_config), "part": spec.part}
    return _prepare_into(directory, lambda out: prepare(raw, prep, out, source=source, overwrite=True,
                                                        progress=progress))  # fmt: skip


def _build_raw(spec: DatasetSpec, output_dir: Path, directory: Path, progress: bool, wait: float) -> Path:
    from transrec.data.loaders import load_raw
    from transrec.data.prepare import PrepareConfig, prepare

    prep = from_dict(PrepareConfig, spec.prepare, prefix="prepare.")
    raw = load_raw(spec.format, Path(spec.path), **spec.options)
    source = {"format": spec.format, "path": str(spec.path), "options": spec.options}
    return _prepare_into(directory, lambda out: prepare(raw, prep, out, source=source, overwrite=True,
                                                        progress=progress))  # fmt: skip


def _prepare_into(directory: Path, run) -> Path:
    out = directory / "data"
    record = directory / DATASET_FILE
    record.unlink(missing_ok=True)  # a dataset half replaced is never taken for the old one
    shutil.rmtree(out, ignore_errors=True)
    return Path(run(out).path)


BUILDERS = {
    "ml100k-platforms": _build_ml100k_platforms,
    "synthetic": _build_synthetic,
    "raw": _build_raw,
}
