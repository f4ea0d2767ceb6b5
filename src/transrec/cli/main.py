"""``transrec`` entry point: one sub-command per job, each a thin layer over a library function."""

from __future__ import annotations

import argparse
import sys

from transrec import __version__
from transrec.cli import data as data_cli
from transrec.cli import demo as demo_cli
from transrec.cli import train as train_cli
from transrec.config import ConfigError
from transrec.data.errors import DataError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transrec", description="Transferable, modality-based sequential recommendation."
    )
    parser.add_argument("--version", action="version", version=f"transrec {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data_cli.add_parser(commands)
    train_cli.add_parser(commands)
    demo_cli.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may come before or after options; argparse only takes them in one block.
    args, extra = parser.parse_known_args(argv)
    if extra:
        stray = [e for e in extra if e.startswith("-") or "=" not in e]
        if stray or not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        return int(args.run(args) or 0)
    except (DataError, ConfigError, FileExistsError, FileNotFoundError, KeyError, ValueError) as err:
        # User errors get one clear line, not a traceback.
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"transrec: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
