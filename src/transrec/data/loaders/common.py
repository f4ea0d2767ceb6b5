"""Reading helpers shared by the loaders: delimited files with line numbers, bad-row policy, ids, times."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from transrec.config import ConfigError
from transrec.data.errors import DataError
from transrec.data.report import PreparationReport

BadRowPolicy = Literal["error", "skip"]

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{what} not found (expected the file {path.name} here)", file=path)
    return path


def check_policy(on_bad_row: str) -> None:
    if on_bad_row not in ("error", "skip"):
        raise ConfigError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")


def bad_row(problem: str, path: Path, line: int, on_bad_row: BadRowPolicy, report: PreparationReport) -> None:
    """Refuse the row (on_bad_row='error') or count it as skipped (on_bad_row='skip')."""
    if on_bad_row == "error":
        raise DataError(problem + " (pass on_bad_row=skip to skip such rows and count them)", path, line)
    report.add("malformed_row", example=f"{path.name}:{line}: {problem}")


def read_rows(
    path: Path,
    *,
    delimiter: str,
    quoting: bool = True,
    encoding: str = "utf-8",
) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, fields)`` for every non-empty row; line numbers are 1-based physical lines.

    With ``quoting`` the csv module handles quoted fields (which may span lines); without it every
    physical line is one row split on ``delimiter`` (TSV files whose text contains stray quotes).
    Undecodable bytes raise DataError naming the line.
    """
    try:
        with open(path, encoding=encoding, newline="") as handle:
            if quoting:
                reader = csv.reader(handle, delimiter=delimiter)
                line = 1
                for row in reader:
                    if row and any(field.strip() for field in row):
                        yield line, row
                    line = reader.line_num + 1
            else:
                for line, text in enumerate(handle, start=1):
                    text = text.rstrip("\r\n")
                    if text.strip():
                        yield line, text.split(delimiter)
    except UnicodeDecodeError as err:
        raise DataError(f"not valid {encoding} text ({err.reason} at byte {err.start})", path) from err
    except csv.Error as err:
        raise DataError(f"unreadable CSV ({err})", path) from err


def header_index(header: Sequence[str], wanted: dict[str, str], path: Path) -> dict[str, int]:
    """Map logical names to column positions; ``wanted`` is logical name -> column name in the file.

    A missing column raises DataError listing the columns the file has.
    """
    positions = {name.strip(): i for i, name in enumerate(header)}
    result = {}
    for logical, column in wanted.items():
        if column not in positions:
            raise DataError(
                f"no column {column!r} (for {logical}); the header has: {', '.join(positions)}", path, 1
            )
        result[logical] = positions[column]
    return result


def parse_float(value: str, what: str, path: Path, line: int) -> float:
    try:
        number = float(value)
    except ValueError:
        raise DataError(f"{what} {value!r} is not a number", path, line) from None
    if number != number or number in (float("inf"), float("-inf")):
        raise DataError(f"{what} {value!r} is not a finite number", path, line)
    return number


def parse_datetime(value: str, formats: Sequence[str], path: Path, line: int) -> float:
    """Seconds since the epoch (UTC) of a date/time string in one of ``formats``."""
    text = value.strip()
    for fmt in formats:
        try:
            moment = datetime.strptime(text, fmt)
        except ValueError:
            continue
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    raise DataError(f"time {value!r} matches none of the formats {', '.join(formats)}", path, line)


class TextTemplate:
    """Composes an item's text from its fields, e.g. ``"{title} ({year}). Genres: {genres}"``.

    Missing or empty fields render as empty strings; the result is whitespace-normalised, and a text
    that is only punctuation left over from the template counts as empty.
    """

    def __init__(self, template: str) -> None:
        self.template = template
        from string import Formatter

        self.fields = [name for _, name, _, _ in Formatter().parse(template) if name]

    def render(self, values: dict[str, str]) -> str:
        filled = {name: (values.get(name) or "").strip() for name in self.fields}
        if not any(filled.values()):
            return ""
        return " ".join(self.template.format(**filled).split())


def normalise_text(text: str | None) -> str:
    return " ".join((text or "").split())
