"""``transrec serve DIR``: the HTTP service over an export (``transrec export``), on uvicorn.

    transrec serve exports/ml100k --port 8000 --index faiss-hnsw
    curl -s localhost:8000/recommend -H 'content-type: application/json' -d '{"history": ["242"], "k": 5}'

The export is loaded (and its checksums verified) before the server starts: a missing or broken export,
or a port that is taken, is a one-line error (exit 2). The URL is logged once the socket listens; Ctrl-C
(or SIGTERM) stops the server after the requests in flight and exits 0. One process serves: items added
through ``POST /items`` live in that process's catalogue (and in the export directory), so the command
offers no ``--workers``, which would give each worker a catalogue of its own. Items added, and the
content records of histories, are encoded in a second process, started with the service and stopped with
it (``serving.encoder_process``: the item encoder's forward pass then does not hold the serving process's
GIL; ``--encoder-engine`` says what runs its text backbone); ``--encode-in-process`` encodes them in the
serving process instead.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class _IndexKinds:
    """``INDEXES.names()``, looked up only when argparse checks ``--index`` or prints the help: importing
    the retrieval module imports torch, which every other command would pay for at start-up."""

    def _names(self) -> list[str]:
        from transrec.serving.retrieval import INDEXES

        return list(INDEXES.names())

    def __contains__(self, kind: object) -> bool:
        return kind in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())


def add_parser(commands) -> None:
    serve = commands.add_parser(
        "serve",
        help="the HTTP service over an export: recommend, add items from their content (FastAPI, uvicorn)",
        description="Serve an export written by `transrec export` over HTTP; API docs at /docs.",
    )
    serve.add_argument("export_dir", metavar="DIR", help="an export directory (transrec export --out)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    serve.add_argument(
        "--index",
        choices=_IndexKinds(),
        default="exact",
        metavar="KIND",  # argparse would list the choices when the parser is built, not when it prints
        help="retrieval index: %(choices)s (default exact; faiss-*: the [serving] extra)",
    )
    serve.add_argument(
        "--index-param",
        type=_index_parameter,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a parameter of the index, repeatable (e.g. --index faiss-pq --index-param refine=64; "
        "integers, decimals, none, or text; a name the index does not take is refused)",
    )
    serve.add_argument(
        "--torch-threads",
        type=_positive_int,
        default=1,
        help="torch's intra-op threads (default 1: requests run concurrently already, and small per-request "
        "operations lose to thread synchronisation when cores are shared)",
    )
    batching = serve.add_argument_group("micro-batching of POST /recommend")
    batching.add_argument(
        "--batch-wait-ms",
        type=_float_above(0, inclusive=True),
        default=2.0,
        help="how long the first request of a batch waits for others (default 2; 0: no waiting, requests "
        "that queued meanwhile are still answered together)",
    )
    batching.add_argument(
        "--max-batch-size",
        type=_positive_int,
        default=64,
        help="most requests answered by one forward pass (default 64; 1: no batching)",
    )
    limits = serve.add_argument_group("limits (a request over one is refused with 4xx)")
    limits.add_argument("--max-k", type=int, default=1000, help="largest k (default 1000)")
    limits.add_argument("--max-batch", type=int, default=256, help="histories per /recommend/batch (256)")
    limits.add_argument("--max-text-chars", type=int, default=10_000, help="an item's text (10,000)")
    limits.add_argument("--max-image-bytes", type=int, default=5 * 1024 * 1024, help="one image (5 MiB)")
    limits.add_argument(
        "--max-image-pixels", type=int, default=40_000_000, help="width x height of an image (40 million)"
    )
    limits.add_argument(
        "--max-body-bytes", type=int, help="a request body (default: one base64 image at the limit + 1 MiB)"
    )
    serve.add_argument(
        "--encode-in-process",
        action="store_true",
        help="encode items added through POST /items in the serving process itself (default: in a process "
        "of their own, started with the service, so that an add's forward pass does not hold the serving "
        "process's GIL; this uses one more process and a second copy of the model's weights)",
    )
    serve.add_argument(
        "--encoder-engine",
        choices=("auto", "torch", "onnxruntime"),
        default="auto",
        help="what runs the text backbone when the encoder process encodes an added item: onnxruntime "
        "(the [onnx] extra; about 2.7x less CPU per title, checked against torch when the process starts), "
        "torch, or auto (default: onnxruntime where it is installed and agrees with torch, else torch)",
    )
    serve.add_argument(
        "--onnx-cache",
        metavar="DIR",
        default=None,
        help="where the encoder process keeps the ONNX graph it exports, to load it at later starts "
        "(default: the export's cache/; none: keep nothing, export at every start)",
    )
    runtime = serve.add_argument_group("the server's runtime")
    runtime.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="uvicorn's event loop (default auto: uvloop when installed, as with the [serving] extra)",
    )
    runtime.add_argument(
        "--http",
        choices=("auto", "h11", "httptools"),
        default="auto",
        help="uvicorn's HTTP parser (default auto: httptools when installed, as with the [serving] extra)",
    )
    runtime.add_argument(
        "--switch-interval-ms",
        type=_float_above(0),
        default=None,
        help="Python's thread switch interval in ms (sys.setswitchinterval; default: Python's, 5 ms): how "
        "long a thread that needs the GIL back (after a socket read, a file write, a torch operator) may "
        "wait for the thread holding it",
    )
    serve.add_argument("--access-log", action="store_true", help="log one line per request")
    serve.add_argument("--quiet", action="store_true", help="only warnings and errors")
    serve.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from transrec.errors import UsageError
    from transrec.serving import Recommender
    from transrec.serving.app import HttpLimits, create_app
    from transrec.serving.batching import BatchingConfig
    from transrec.serving.content import ContentLimits
    from transrec.serving.server import listen, url_of, uvicorn_server
    from transrec.utils.packages import import_optional

    # Every refusal before the server starts, so that none of them is a traceback from inside uvicorn.
    import_optional("fastapi", "transrec serve", also=("uvicorn", "multipart"))
    import_optional("uvicorn", "transrec serve", also=("fastapi", "multipart"))
    import_optional("multipart", "transrec serve (image uploads)", also=("fastapi", "uvicorn"))
    content = ContentLimits(
        max_text_chars=args.max_text_chars,
        max_image_bytes=args.max_image_bytes,
        max_image_pixels=args.max_image_pixels,
    )
    limits = HttpLimits(max_k=args.max_k, max_batch=args.max_batch, max_body_bytes=args.max_body_bytes)
    batching = BatchingConfig(max_batch_size=args.max_batch_size, max_wait_ms=args.batch_wait_ms)
    if args.encode_in_process and args.encoder_engine == "onnxruntime":
        raise UsageError(
            "--encoder-engine onnxruntime runs in the encoder process, which --encode-in-process turns off"
        )
    if args.onnx_cache is not None and (args.encode_in_process or args.encoder_engine == "torch"):
        reason = "--encode-in-process" if args.encode_in_process else "--encoder-engine torch"
        raise UsageError(
            f"--onnx-cache is for the encoder process's ONNX Runtime engine, which {reason} turns off"
        )
    encoder_options: dict[str, Any] = {"torch_threads": 1, "engine": args.encoder_engine}
    if args.onnx_cache is not None:
        cache = None if args.onnx_cache.lower() == "none" else Path(args.onnx_cache).absolute()
        encoder_options["onnx_cache"] = cache
    set_torch_threads(args.torch_threads)
    if args.switch_interval_ms is not None:
        sys.setswitchinterval(args.switch_interval_ms / 1000)
    parameters = dict(args.index_param)
    if len(parameters) < len(args.index_param):
        repeated = sorted({n for n, _ in args.index_param if [m for m, _ in args.index_param].count(n) > 1})
        raise UsageError(f"--index-param given more than once for {', '.join(repeated)}")
    recommender = Recommender.load(
        args.export_dir, index=args.index, index_parameters=parameters, limits=content
    )
    sock = listen(args.host, args.port)  # before the encoder process: a port in use is refused at once
    encoder_process = not args.encode_in_process
    try:
        if encoder_process:
            # Started here, before the server, so that a failure is a one-line error rather than uvicorn's
            # "startup failed"; the application's lifespan stops it.
            recommender.start_encoder_process(**encoder_options)
        app = create_app(recommender, limits, batching, encoder_process=encoder_process)
        # The model, tokenizer and catalogue are millions of long-lived objects: left to the collector,
        # every full collection walks them all, a pause of tens of ms that was the load test's p99 (213 ms
        # -> 47 ms at 32 clients once frozen). Frozen, they are never scanned; they live as long as the
        # process anyway.
        gc.freeze()
        server = uvicorn_server(
            app,
            log_level="warning" if args.quiet else "info",
            access_log=args.access_log,
            loop=args.loop,
            http=args.http,
        )
        url = url_of(sock)
        adds = "in a process of their own" if encoder_process else "in this process"
        logger.info(
            "serving %s (%d items, %s index, %d torch threads; added items encoded %s) at %s; API docs at "
            "%s/docs; Ctrl-C stops",
            args.export_dir, recommender.catalogue_size, args.index, args.torch_threads, adds, url, url,
        )  # fmt: skip
        # uvicorn shuts down gracefully on the signal, then raises it again for the caller: done.
        with _sigterm_as_interrupt(), contextlib.suppress(KeyboardInterrupt):
            server.run(sockets=[sock])
    finally:
        sock.close()
        recommender.stop_encoder_process()  # the lifespan stopped it already, unless the server never ran
    logger.info("stopped")
    return 0


def set_torch_threads(n: int) -> None:
    """Give torch ``n`` intra-op threads, before the model loads (and before any parallel work starts)."""
    import torch

    torch.set_num_threads(n)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def _float_above(floor: float, inclusive: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number above ``floor`` (at least ``floor`` when ``inclusive``)."""
    bound = f"of at least {floor:g}" if inclusive else f"above {floor:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")  # fails both comparisons below
        if not ((value >= floor if inclusive else value > floor) and value < float("inf")):
            raise argparse.ArgumentTypeError(f"must be a number {bound}, got {text!r}")
        return value

    return parse


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the command as Ctrl-C does (uvicorn stops gracefully on both, then raises the signal
    again; SIGTERM's default would kill the process without a clean exit status)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _index_parameter(text: str) -> tuple[str, int | float | str | None]:
    """An argparse type: ``NAME=VALUE``, the value an integer, a decimal, ``none`` (None) or text; whether
    the index takes that name and value is checked when it is made, before the server starts."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"must be NAME=VALUE, e.g. refine=64, got {text!r}")
    raw = raw.strip()
    if raw.lower() == "none":
        return name, None
    for kind in (int, float):
        try:
            return name, kind(raw)
        except ValueError:
            pass
    return name, raw
