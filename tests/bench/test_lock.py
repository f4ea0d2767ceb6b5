"""The lock of a cell: one holder at a time, a dead holder on this host is taken over (by exactly one of
several contenders), another host's lock and a live one are respected, and a reused pid is no holder."""

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time

from transrec.bench.state import LOCK_FILE, CellLock, cell_state, is_locked, read_lock


def dead_pid() -> int:
    """The pid of a process that has ended (reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_lock(directory, host=None, pid=None, pid_start=None):
    directory.mkdir(parents=True, exist_ok=True)
    holder = {"host": host or socket.gethostname(), "pid": pid, "pid_start": pid_start, "since": "then"}
    (directory / LOCK_FILE).write_text(json.dumps(holder))


def test_one_holder_at_a_time_and_release_frees_it(tmp_path):
    first, second = CellLock(tmp_path / "cell"), CellLock(tmp_path / "cell")
    assert first.acquire()
    held = read_lock(tmp_path / "cell" / LOCK_FILE)
    assert (held.host, held.pid) == (socket.gethostname(), os.getpid())
    assert not second.acquire()  # our own process is alive: the lock is live
    assert second.holder == held and f"pid {os.getpid()}" in second.holder.describe()
    assert is_locked(tmp_path / "cell") == held
    assert cell_state(tmp_path / "cell", "hash") == "running"
    first.release()
    assert not (tmp_path / "cell" / LOCK_FILE).exists()
    assert second.acquire()
    second.release()


def test_a_lock_whose_process_ended_on_this_host_is_taken_over(tmp_path, caplog):
    write_lock(tmp_path / "cell", pid=dead_pid())
    assert is_locked(tmp_path / "cell") is None
    lock = CellLock(tmp_path / "cell")
    with caplog.at_level("WARNING", logger="transrec.bench.state"):
        assert lock.acquire()
    assert "taking over the lock" in caplog.text
    assert read_lock(tmp_path / "cell" / LOCK_FILE).pid == os.getpid()
    lock.release()


def test_a_reused_pid_is_not_the_holder(tmp_path):
    # Our own (live) pid, but a process start time that is not ours: the recorded process has ended and
    # its pid now belongs to another process.
    write_lock(tmp_path / "cell", pid=os.getpid(), pid_start="1")
    assert CellLock(tmp_path / "cell").acquire()


def test_another_hosts_lock_is_respected_even_with_a_pid_dead_here(tmp_path):
    write_lock(tmp_path / "cell", host="another-host.example", pid=dead_pid())
    lock = CellLock(tmp_path / "cell")
    assert not lock.acquire()
    assert lock.holder.host == "another-host.example"
    assert cell_state(tmp_path / "cell", "hash") == "running"


def test_release_leaves_a_lock_someone_else_took_over(tmp_path):
    lock = CellLock(tmp_path / "cell")
    assert lock.acquire()
    write_lock(tmp_path / "cell", host="another-host.example", pid=1)  # taken over behind our back
    lock.release()
    assert read_lock(tmp_path / "cell" / LOCK_FILE).host == "another-host.example"


def _contend(directory, start, end, results):
    from transrec.bench import state

    read = state.read_lock

    def slow_read(path):  # widen the window between reading a stale lock and replacing it
        holder = read(path)
        time.sleep(0.2)
        return holder

    state.read_lock = slow_read
    start.wait()
    results.put(CellLock(directory).acquire())
    end.wait()  # every winner stays alive (its lock live) until all have tried


def test_of_many_processes_finding_one_stale_lock_exactly_one_takes_it(tmp_path):
    directory = tmp_path / "cell"
    write_lock(directory, pid=dead_pid())
    context = multiprocessing.get_context("fork")
    start, end, results = context.Barrier(4), context.Barrier(4), context.Queue()
    processes = [context.Process(target=_contend, args=(directory, start, end, results)) for _ in range(4)]
    for process in processes:
        process.start()
    won = [results.get(timeout=30) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert sorted(won) == [False, False, False, True]
    assert read_lock(directory / LOCK_FILE).pid in {p.pid for p in processes}
