"""Encoding added items in a process of their own, so that the item encoder's forward pass runs off the
serving process's GIL.

Why: an add costs about 10 ms of CPU, 8 of them the text encoder's forward pass (MiniLM, one thread). In
the serving process that pass holds the GIL in many short stretches between torch operators, and the
event loop (about 1,000 requests a second to parse and answer) and the /recommend batch thread hold it in
between, so under 32 clients an add's 10 ms stretched to 40-90 ms of wall time and slowed every
/recommend around it (benchmarks/README.md, "Serving"). Here the serving process prepares the item (checks,
tokenises, decodes the image: ``ContentPreprocessor``), sends the model inputs, waits for the vector with
the GIL released, and applies it (``Recommender.add_items``).

    worker = EncoderProcess(export_dir / "model", preprocessor.batch)   # starts it, waits for the model
    vectors = worker.encode(prepared_items)   # [U, d] float32: model.encode_items(preprocessor.batch(...))
    worker.close()                                   # stops it (also at interpreter exit: a daemon)

The process is a fresh interpreter (``python -m transrec.serving.encoder_worker``: never a fork of the
serving process, which runs threads and an event loop, and, unlike multiprocessing's spawn, it never
re-runs the caller's main script) with one torch thread; it talks over a socket pair with
``multiprocessing.connection`` and loads the export's own weights (``SequentialRecommender.
from_pretrained``), so its vectors are those the serving process would compute from the same inputs. Its
``engine`` (default ``auto``) runs the text backbones on ONNX Runtime where that is installed and agrees
with torch, about 2.7 times less CPU per title (``serving.onnx_backbone``; ``engine_choice`` says what
was used and why), and on torch otherwise. One
request at a time; callers in other threads wait their turn with the GIL released. When the serving
process goes away, the socket closes and the encoder process exits.

When the process dies (killed, out of memory) or stops answering within ``timeout_s``, ``encode`` starts a
new one and sends the request once more; if that fails too it raises ``ContentError("encode_failed")``
(422: the add, or the recommendation whose history held a content record, changes nothing and says
why), and the next call starts a process again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import torch

import transrec
from transrec.data.item_content import ItemBatch
from transrec.errors import UserError
from transrec.serving.errors import ContentError
from transrec.serving.onnx_backbone import ENGINES, EngineChoice

logger = logging.getLogger(__name__)

#: What the process runs (a module of its own: ``transrec.serving`` does not import it, so ``-m`` runs it
#: cleanly).
WORKER_MODULE = "transrec.serving.encoder_worker"

#: The fields of an ``ItemBatch`` sent to the process (as numpy arrays; None when absent).
BATCH_FIELDS = ("item_ids", "modality", "input_ids", "attention_mask", "images")


class EncoderStartError(UserError, RuntimeError):
    """The encoder process could not be started: its model did not load, or not in time."""


def _arrays(batch: ItemBatch) -> dict[str, np.ndarray | None]:
    return {
        name: None if getattr(batch, name) is None else getattr(batch, name).numpy() for name in BATCH_FIELDS
    }


class EncoderProcess:
    """The item encoder of the export's model in a process of its own (see the module).

    Args:
        model_dir: the export's ``model/`` directory (config and weights).
        make_batch: items -> the ``ItemBatch`` of their model inputs (``ContentPreprocessor.batch``).
        device: where the process runs the model (default cpu).
        torch_threads: the process's torch intra-op threads (default 1).
        start_timeout_s: longest wait for a new process to load its model (default 300 s).
        timeout_s: longest wait for one request's vectors before the process is replaced (default 60 s).
        max_batch: most items in one request (default 256).
        engine: what runs the text backbones: ``auto`` (default: ONNX Runtime where it can, else torch),
            ``torch``, or ``onnxruntime`` (the start fails, saying why, where it cannot); see
            ``serving.onnx_backbone``.
        onnx_cache: where the process keeps the ONNX graphs it exports and looks for them when it (or a
            replacement) starts (None, the default: exported at every start; ``Recommender`` passes the
            export's ``cache/``).
    """

    def __init__(
        self,
        model_dir: str | Path,
        make_batch: Callable[[list[Any]], ItemBatch],
        device: str = "cpu",
        torch_threads: int = 1,
        start_timeout_s: float = 300.0,
        timeout_s: float = 60.0,
        max_batch: int = 256,
        engine: str = "auto",
        onnx_cache: str | Path | None = None,
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        self.engine = engine
        self.onnx_cache = None if onnx_cache is None else Path(onnx_cache)
        self.engine_choice: EngineChoice | None = None  # what the running process uses, and why
        self.model_dir, self.device, self.torch_threads = Path(model_dir), str(device), torch_threads
        self.start_timeout_s, self.timeout_s = start_timeout_s, timeout_s
        self.make_batch, self.max_batch = make_batch, max_batch
        self._lock = threading.Lock()  # one request at a time, and no start racing a close
        self._queue_lock = threading.Lock()
        self._queue: list[_Call] = []
        self.requests = 0  # forward passes asked of the process
        self.calls = 0  # encode calls they answered
        self._process: Any = None
        self._conn: Any = None
        self._closed = False
        self.starts = 0  # processes started so far (1 + restarts)
        with self._lock:
            self._start()

    @property
    def pid(self) -> int | None:
        """The running process's id (None when none runs)."""
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def _start(self) -> None:
        """Start a process and wait until its model is loaded (under ``_lock``)."""
        ours, theirs = socket.socketpair()
        command = [sys.executable, "-m", WORKER_MODULE, "--fd", str(theirs.fileno()), "--model-dir"]
        command += [str(self.model_dir), "--device", self.device, "--torch-threads", str(self.torch_threads)]
        command += ["--engine", self.engine]
        if self.onnx_cache is not None:
            command += ["--onnx-cache", str(self.onnx_cache)]
        env = dict(os.environ)
        # The process imports this transrec, wherever the serving process found it.
        source = str(Path(transrec.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join([source, *filter(None, [env.get("PYTHONPATH")])])
        started = time.perf_counter()
        try:
            process = subprocess.Popen(command, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=env)
        finally:
            theirs.close()  # ours is the only end left here: a dead process then reads as EOF
        parent = Connection(ours.detach())
        self.starts += 1
        try:
            if not parent.poll(self.start_timeout_s):
                raise EncoderStartError(
                    f"the encoder process did not load {self.model_dir} within {self.start_timeout_s:.0f} s"
                )
            status, detail = parent.recv()
        except (EOFError, OSError) as err:
            self._kill(process, parent)
            raise EncoderStartError(
                f"the encoder process exited while loading {self.model_dir} (exit code {process.returncode})"
            ) from err
        except EncoderStartError:
            self._kill(process, parent)
            raise
        if status != "ready":
            self._kill(process, parent)
            raise EncoderStartError(f"the encoder process could not load {self.model_dir}:\n{detail}")
        self._process, self._conn = process, parent
        self.engine_choice = EngineChoice(detail["engine"], detail["detail"])
        logger.info(
            "encoder process %d ready in %.1f s, text backbones on %s (%s)",
            process.pid,
            time.perf_counter() - started,
            *astuple(self.engine_choice),
        )

    @staticmethod
    def _kill(process: Any, conn: Any) -> None:
        conn.close()
        if process.poll() is None:
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)

    def encode(self, items: Sequence[Any]) -> torch.Tensor:
        """``[len(items), d]`` float32 vectors of ``items`` (what ``make_batch`` takes: the serving
        code's ``PreparedItem`` records), computed in the process. Calls from several threads at once
        are answered together: while one request runs, the items of the calls that arrive queue up, and
        the next request encodes all of them in one forward pass (at most ``max_batch`` items each),
        which keeps up with bursts of adds where one request per call would queue.

        Raises ContentError ``encode_failed`` when the process died or hung twice on the request (nothing
        is changed: the caller adds nothing); RuntimeError, with the process's traceback, for an error
        raised in it (a bug, as it would be in the serving process)."""
        if not len(items):
            raise ValueError("nothing to encode")
        call = _Call(list(items))
        with self._queue_lock:
            self._queue.append(call)
        with self._lock:
            if not call.done:  # not answered by the request of an earlier caller: answer the queue
                with self._queue_lock:
                    calls, self._queue = self._queue, []
                self._answer(calls)
        if call.error is not None:
            raise call.error
        return call.vectors

    def _answer(self, calls: list[_Call]) -> None:
        """Encode the items of ``calls`` and give each call its rows, or every call the error (under
        ``_lock``)."""
        try:
            if self._closed:
                raise EncoderStartError("the encoder process has been stopped (the service is shutting down)")
            items = [item for call in calls for item in call.items]
            parts = [
                self._encode_batch(self.make_batch(items[start : start + self.max_batch]))
                for start in range(0, len(items), self.max_batch)
            ]
            vectors = torch.cat(parts)
        except Exception as err:
            for call in calls:
                call.error, call.done = err, True
            return
        self.requests += len(parts)
        self.calls += len(calls)
        start = 0
        for call in calls:
            call.vectors, call.done = vectors[start : start + len(call.items)], True
            start += len(call.items)

    def _encode_batch(self, batch: ItemBatch) -> torch.Tensor:
        """One request to the process, restarted and sent again once if it dies or hangs."""
        arrays = _arrays(batch)
        problems = []
        for attempt in range(2):
            try:
                if self._process is None:
                    self._start()
                return self._request(arrays)
            except _Lost as lost:
                problems.append(str(lost))
                self._kill(self._process, self._conn)
                self._process = self._conn = None
                logger.warning("encoder process lost (%s); %s", lost, "giving up" if attempt else "retrying")
            except EncoderStartError as err:  # a restart that failed
                problems.append(str(err))
                break
        raise ContentError(
            "encode_failed",
            "the item encoder's process failed while encoding this item, twice ("
            + "; ".join(problems)
            + "); nothing was added or changed, the next request starts a new process",
        )

    def _request(self, arrays: dict[str, np.ndarray | None]) -> torch.Tensor:
        try:
            self._conn.send(("encode", arrays))
            if not self._conn.poll(self.timeout_s):
                raise _Lost(f"no answer within {self.timeout_s:.0f} s")
            status, value = self._conn.recv()
        except (EOFError, OSError) as err:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=1)
            raise _Lost(f"process {self._process.pid} exited, code {self._process.returncode}") from err
        if status == "error":
            raise RuntimeError(f"encoding failed in the encoder process:\n{value}")
        return torch.from_numpy(value)

    def close(self) -> None:
        """Stop the process (it ends its request in progress first); idempotent."""
        with self._lock:
            self._closed = True
            process, conn, self._process, self._conn = self._process, self._conn, None, None
            if process is None:
                return
            with contextlib.suppress(OSError):  # a process that died already
                conn.send(("stop",))
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            self._kill(process, conn)
        logger.info("encoder process stopped")


@dataclass
class _Call:
    """One caller's items, and its answer once ``done``: its rows of the vectors, or the error."""

    items: list[Any]
    done: bool = False
    vectors: torch.Tensor | None = None
    error: Exception | None = None


class _Lost(Exception):
    """The process died or hung on a request (internal: ``encode`` restarts it and retries once)."""
