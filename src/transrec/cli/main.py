"""``transrec`` entry point: one sub-command per job, each a thin layer over a library function.

Exit status: 0 done; 2 a user error (``transrec.errors.UserError``: a bad config, path, dataset,
checkpoint or argument), shown as ``transrec: error: <message>`` without a traceback; 3 a training run
that collapsed (``transrec train``); anything else is a bug and leaves with its traceback (status 1).

The library reports progress through the ``transrec`` logger; the command line shows it on stderr (INFO,
or WARNING and no progress bars with ``--quiet``), through tqdm's logging bridge so that a log line never
breaks a progress bar. Results the user asked for (tables, metrics) go to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator

from tqdm.contrib.logging import logging_redirect_tqdm

from transrec import __version__
from transrec.cli import bench as bench_cli
from transrec.cli import data as data_cli
from transrec.cli import demo as demo_cli
from transrec.cli import serve as serve_cli
from transrec.cli import serving as serving_cli
from transrec.cli import train as train_cli
from transrec.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transrec", description="Transferable, modality-based sequential recommendation."
    )
    parser.add_argument("--version", action="version", version=f"transrec {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data_cli.add_parser(commands)
    train_cli.add_parser(commands)
    demo_cli.add_parser(commands)
    serving_cli.add_parser(commands)
    serve_cli.add_parser(commands)
    bench_cli.add_parser(commands)
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
    with command_logging(quiet=getattr(args, "quiet", False)):
        try:
            return int(args.run(args) or 0)
        except UserError as err:
            # The user's mistake, said in their terms; a traceback would only bury it. Bugs propagate.
            print(f"transrec: error: {err}", file=sys.stderr)
            return 2


class _Formatter(logging.Formatter):
    """Progress lines as they are; warnings and errors marked as such."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"transrec: {record.levelname.lower()}: {message}"
        return message


@contextlib.contextmanager
def command_logging(quiet: bool = False) -> Iterator[None]:
    """For one command: the ``transrec`` logger writes INFO (WARNING when ``quiet``) and above to stderr,
    through tqdm so that progress bars stay whole. The logger's handlers and level are restored after,
    so that an embedding program (or a test) calling ``main`` keeps its own logging set-up."""
    logger = logging.getLogger("transrec")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    try:
        with logging_redirect_tqdm(loggers=[logger]):
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
