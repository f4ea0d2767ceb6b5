"""Errors raised on bad input data: each names the file, the line (when there is one) and the problem."""

from __future__ import annotations

from pathlib import Path

from transrec.errors import UserError


class DataError(UserError, ValueError):
    """Input data that transrec refuses, with the place and the reason in the message."""

    def __init__(self, problem: str, file: str | Path | None = None, line: int | None = None) -> None:
        self.problem = problem
        self.file = None if file is None else str(file)
        self.line = line
        where = ""
        if self.file is not None:
            where = self.file if line is None else f"{self.file}, line {line}"
            where += ": "
        super().__init__(where + problem)
