"""Micro-batching of ``POST /recommend``: concurrent requests answered by one ``recommend_many`` call.

One recommendation costs about a millisecond of CPU, most of it fixed per call (a user-encoder forward
and an index search); ``recommend_many`` over 32 histories costs about a seventh of that per history. The
``MicroBatcher`` collects the requests that arrive together and answers them with one call:

    batcher = MicroBatcher(recommender.recommend_many, BatchingConfig(max_batch_size=64, max_wait_ms=2))
    rec = await batcher.submit(history, k=10, exclude_seen=True)   # inside the server's event loop
    await batcher.aclose()                                         # at shutdown

How a batch forms: the first request to arrive opens it; it closes when it holds ``max_batch_size``
requests or when its first request has waited ``max_wait_ms``. One batch runs at a time, in a worker
thread of its own, while the next one collects on the event loop: under load the requests that queued
during a run form the next batch at once (their first has waited longer than ``max_wait_ms`` already),
so batches grow with the load and an idle service adds at most ``max_wait_ms`` to a request.

Each request keeps its own answer: requests of a batch with different ``k`` or ``exclude_seen`` are
answered by one call per (k, exclude_seen) group, and when a call fails (one request's unknown id or bad
content) its requests are answered again one by one, so each gets its own result or its own error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from transrec.config import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchingConfig:
    """How ``POST /recommend`` requests are coalesced (``transrec serve --max-batch-size --batch-wait-ms``).

    Args:
        max_batch_size: most requests answered by one ``recommend_many`` call (default 64; 1: each request
            is answered alone, still one at a time in the batch thread).
        max_wait_ms: longest time the first request of a batch waits for more (default 2 ms; 0: none,
            but requests queued while the previous batch ran are still answered together).
    """

    max_batch_size: int = 64
    max_wait_ms: float = 2.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"BatchingConfig.{f.name} must be a number, got {value!r}")
        if not isinstance(self.max_batch_size, int) or self.max_batch_size < 1:
            raise ConfigError(
                "BatchingConfig.max_batch_size must be a whole number of at least 1, "
                f"got {self.max_batch_size!r}"
            )
        if not 0 <= self.max_wait_ms < float("inf"):
            raise ConfigError(f"BatchingConfig.max_wait_ms must be at least 0, got {self.max_wait_ms!r}")


class BatcherClosedError(RuntimeError):
    """A request submitted to a batcher that has been closed (the service is shutting down)."""


@dataclass
class _Request:
    history: Sequence[Any]
    k: int
    exclude_seen: bool
    future: asyncio.Future
    arrived: float  # event-loop time


@dataclass
class BatchStats:
    """What the batcher has done so far (read by tests and the logs)."""

    batches: int = 0
    requests: int = 0
    largest: int = 0
    calls: int = 0  # recommend_many calls: one per (k, exclude_seen) group, more after a failed call
    retried: int = 0  # requests answered one by one after their group's call failed


class _LoopState:
    """The queue of one event loop: a batcher serves the loop it is first used from (a test client may
    run each request on a loop of its own, one after another)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: list[_Request] = []
        self.arrived = asyncio.Event()
        self.worker: asyncio.Task | None = None


class MicroBatcher:
    """Coalesces concurrent ``submit`` calls into ``run_many(histories, k, exclude_seen)`` calls.

    Args:
        run_many: ``Recommender.recommend_many`` or a function like it: a list of histories, one ``k``,
            one ``exclude_seen`` -> one answer per history, in order. It runs in the batcher's own thread.
        config: batch size and waiting time (``BatchingConfig``).
    """

    def __init__(self, run_many: Callable[..., list[Any]], config: BatchingConfig | None = None) -> None:
        self._run_many = run_many
        self.config = config or BatchingConfig()
        self.stats = BatchStats()
        self._state: _LoopState | None = None
        self._closed = False
        # One thread: one batch at a time, which is what lets the next batch collect meanwhile.
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="transrec-batch")

    @property
    def closed(self) -> bool:
        return self._closed

    async def submit(self, history: Sequence[Any], k: int, exclude_seen: bool) -> Any:
        """The answer ``run_many`` gives for ``history`` (or the error it raises for it), computed in a
        batch with the requests submitted around the same time. Raises BatcherClosedError after
        ``aclose``."""
        if self._closed:
            raise BatcherClosedError("the service is shutting down")
        loop = asyncio.get_running_loop()
        state = self._state
        if state is None or state.loop is not loop or state.worker is None or state.worker.done():
            state = self._state = _LoopState(loop)
            state.worker = loop.create_task(self._work(state), name="transrec-batcher")
        request = _Request(history, k, exclude_seen, loop.create_future(), loop.time())
        state.pending.append(request)
        state.arrived.set()
        return await request.future

    async def aclose(self) -> None:
        """Stop: the batch running (and the one collecting) are answered, requests submitted from now on
        fail with BatcherClosedError, then the thread ends. Idempotent."""
        self._closed = True
        state, self._state = self._state, None
        if state is not None and state.worker is not None and state.loop is asyncio.get_running_loop():
            state.arrived.set()
            await state.worker
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)

    def close(self) -> None:
        """``aclose`` for callers outside an event loop (nothing may be queued any more): ends the thread."""
        self._closed = True
        self._executor.shutdown()

    async def _work(self, state: _LoopState) -> None:
        loop = state.loop
        size, wait = self.config.max_batch_size, self.config.max_wait_ms / 1000
        while state.pending or not self._closed:
            if not state.pending:
                state.arrived.clear()
                await state.arrived.wait()
                continue
            # The batch closes when full or when its first request has waited `wait`: requests queued
            # while the previous batch ran waited already, so a loaded service does not wait again.
            deadline = state.pending[0].arrived + wait
            while len(state.pending) < size and not self._closed:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                state.arrived.clear()
                try:
                    await asyncio.wait_for(state.arrived.wait(), remaining)
                except TimeoutError:
                    break
            batch, state.pending[:] = state.pending[:size], state.pending[size:]
            batch = [r for r in batch if not r.future.done()]  # a client that went away cancelled its own
            if not batch:
                continue
            self.stats.batches += 1
            self.stats.requests += len(batch)
            self.stats.largest = max(self.stats.largest, len(batch))
            try:
                outcomes = await loop.run_in_executor(self._executor, self._answer, batch)
            except Exception as err:  # a bug in the batching itself: every request of the batch learns it
                logger.exception("a batch of %d recommendations failed", len(batch))
                outcomes = [(False, err)] * len(batch)
            for request, (ok, value) in zip(batch, outcomes, strict=True):
                if request.future.done():
                    continue
                if ok:
                    request.future.set_result(value)
                else:
                    request.future.set_exception(value)

    def _answer(self, batch: list[_Request]) -> list[tuple[bool, Any]]:
        """``(True, answer)`` or ``(False, error)`` for each request of ``batch`` (in the batch thread)."""
        outcomes: list[tuple[bool, Any]] = [(False, None)] * len(batch)
        groups: dict[tuple[int, bool], list[int]] = {}
        for j, request in enumerate(batch):
            groups.setdefault((request.k, request.exclude_seen), []).append(j)
        for (k, exclude_seen), members in groups.items():
            self.stats.calls += 1
            try:
                answers = self._run_many([batch[j].history for j in members], k, exclude_seen)
            except Exception as err:
                if len(members) == 1:
                    outcomes[members[0]] = (False, err)
                    continue
                # One request's bad input fails the whole call: answer each alone, so that the others
                # get their answers and the bad one its own error.
                self.stats.retried += len(members)
                for j in members:
                    self.stats.calls += 1
                    try:
                        outcomes[j] = (True, self._run_many([batch[j].history], k, exclude_seen)[0])
                    except Exception as single:
                        outcomes[j] = (False, single)
                continue
            for j, answer in zip(members, answers, strict=True):
                outcomes[j] = (True, answer)
        return outcomes
