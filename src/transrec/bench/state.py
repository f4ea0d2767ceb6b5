"""What a grid's cells have on disk: the lock that keeps two invocations off one cell, ``cell.json``, and
the state of a cell (``--dry-run``) read from those files.

Lock (``<output_dir>/<cell.key>/.lock``): created with ``O_CREAT | O_EXCL``, so exactly one of any number
of processes (on any host sharing the file system) creates it. It holds the host, the pid, the start
time of that process (``/proc/<pid>/stat``, so that a reused pid is not mistaken for the holder) and when
it was taken. A lock of this host whose process is gone is stale and is taken over (logged); the
take-over itself is serialised by an ``flock`` on a sibling file, so that two processes finding the same
stale lock do not both take it. A lock of another host is always respected: this host cannot see its
processes.

States (``cell_state``), in the order they are decided:

    running     another live process (or another host) holds the cell's lock
    changed     cell.json records another config hash than the grid gives the cell now, or a
                dependency that has since been rerun or changed (refused unless ``--rerun changed|all``)
    done        cell.json says done
    failed      cell.json says failed (the error is in it; ``--rerun failed`` tries again)
    collapsed   the run collapsed (an outcome, kept; ``--rerun all`` trains it again)
    blocked     its dependency failed, collapsed, is blocked, or is changed: it cannot run now
    resumable   a killed train cell: ``last/`` holds its latest epoch, and it continues from there
    pending     nothing yet, or a dependency that is still to run
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from transrec.utils.io import atomic_write_text

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"
CELL_FILE = "cell.json"
#: Every state a cell can be in (see the module docstring), in the order ``--dry-run`` explains them.
STATES = ("done", "pending", "running", "resumable", "changed", "failed", "collapsed", "blocked")
#: States of a dependency that keep its dependents from running until someone acts.
BLOCKING = ("failed", "collapsed", "blocked", "changed")


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the millisecond (what cell.json and locks record)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _process_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (field 22 of ``/proc/<pid>/stat``), None where
    there is no /proc (then only the pid is compared)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count fields after its closing one.
    return stat[stat.rindex(")") + 2 :].split()[19]


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    current = _process_start(pid)
    return start is None or current is None or current == start


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock: ``host``, ``pid``, that process's ``pid_start`` and when it took the lock."""

    host: str
    pid: int
    pid_start: str | None
    since: str

    @classmethod
    def me(cls) -> LockHolder:
        return cls(socket.gethostname(), os.getpid(), _process_start(os.getpid()), now_iso())

    @property
    def is_stale(self) -> bool:
        """A lock of this host whose process has ended; another host's lock is never stale here."""
        return self.host == socket.gethostname() and not _alive(self.pid, self.pid_start)

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.since}"


def read_lock(path: Path) -> LockHolder | None:
    """The holder recorded in the lock file ``path``; None when there is none. A lock file that cannot
    be read as a holder (its writer was killed between creating and writing it) counts as held by an
    unknown process of this host that has ended."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        return LockHolder(str(data["host"]), int(data["pid"]), data.get("pid_start"), str(data["since"]))
    except (ValueError, KeyError, TypeError):
        return LockHolder(socket.gethostname(), -1, None, "?")


class CellLock:
    """The lock of one directory (a cell, or a dataset being prepared).

    ``acquire()`` returns True when this process now holds it, False when a live process (or another
    host) does; ``holder`` then says who. ``release()`` removes it when it is still ours. Also a context
    manager that raises ``LockedError`` when the lock is held elsewhere."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / LOCK_FILE
        self.holder: LockHolder | None = None
        self._mine: LockHolder | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._create():
            return True
        # Serialise take-overs of a stale lock among this host's processes: without it, two of them
        # could both find it stale, and the second would remove the lock the first has just taken.
        with _flocked(self.path.with_name(LOCK_FILE + ".takeover")):
            holder = read_lock(self.path)
            if holder is not None and not holder.is_stale:
                self.holder = holder
                return False
            if holder is not None:
                logger.warning(f"{self.path.parent}: taking over the lock of {holder.describe()}, which "
                               "has ended (stale)")  # fmt: skip
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            if self._create():
                return True
        self.holder = read_lock(self.path)
        return False

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        holder = LockHolder.me()
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(holder.__dict__) + "\n")
        self._mine = self.holder = holder
        return True

    def release(self) -> None:
        if self._mine is None:
            return
        if read_lock(self.path) == self._mine:  # never remove a lock someone took over from us
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self._mine = None

    @property
    def held(self) -> bool:
        return self._mine is not None

    def __enter__(self) -> CellLock:
        if not self.acquire():
            raise LockedError(f"{self.path.parent} is locked by {self.holder.describe()}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class LockedError(RuntimeError):
    """A directory is locked by a live process or another host."""


@contextlib.contextmanager
def _flocked(path: Path):
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_locked(directory: Path) -> LockHolder | None:
    """The live holder of ``directory``'s lock (a stale lock counts as free), or None."""
    holder = read_lock(Path(directory) / LOCK_FILE)
    return None if holder is None or holder.is_stale else holder


def read_cell_json(directory: Path) -> dict[str, Any] | None:
    """``cell.json`` of a cell directory, or None when there is none (or it is unreadable: a cell whose
    record was lost is run again rather than trusted)."""
    path = Path(directory) / CELL_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        logger.warning(f"{path} is not valid JSON: the cell counts as not run")
        return None
    return data if isinstance(data, dict) else None


def write_cell_json(directory: Path, record: dict[str, Any]) -> None:
    """Write ``cell.json`` atomically (readers see the old or the new record, never half)."""
    atomic_write_text(Path(directory) / CELL_FILE, json.dumps(record, indent=2) + "\n")


def dependency_stamp(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a dependent cell records of its dependency when it starts: the dependency's config hash and
    when it finished. A dependency rerun since (a later ``finished``) or changed makes the dependent
    ``changed``: it started from weights that no longer exist."""
    if record is None:
        return None
    return {key: record.get(key) for key in ("key", "config_hash", "finished")}


def cell_state(
    directory: Path,
    config_hash: str,
    dependency_state: str | None = None,
    dependency_record: dict[str, Any] | None = None,
    holding_lock: bool = False,
) -> str:
    """The state of the cell in ``directory`` whose config hash is now ``config_hash`` (module docstring).

    ``dependency_state`` and ``dependency_record``: the state and ``cell.json`` of the cell it depends on
    (None for a cell without one). ``holding_lock``: the caller holds the cell's lock (then the state is
    what the files say, not ``running``)."""
    directory = Path(directory)
    if not holding_lock and is_locked(directory) is not None:
        return "running"
    record = read_cell_json(directory)
    if record is not None:
        if record.get("config_hash") != config_hash:
            return "changed"
        recorded = record.get("dependency")
        if (recorded is not None and dependency_state == "done"
                and recorded != dependency_stamp(dependency_record)):  # fmt: skip
            return "changed"
        status = record.get("status")
        if status in ("done", "failed", "collapsed"):
            return status
    if dependency_state is not None and dependency_state != "done":
        return "blocked" if dependency_state in BLOCKING else "pending"
    if (directory / "last").is_dir():
        return "resumable"
    return "pending"
