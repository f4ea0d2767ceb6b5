"""Running the HTTP service on uvicorn: a listening socket, the server, the URL it answers at.

``transrec serve`` and the tests use these, so that the service a test talks to over loopback is started
exactly as the command starts it.

    sock = listen("127.0.0.1", 0)                 # port 0: any free port; the socket knows which
    server = uvicorn_server(create_app(recommender))
    server.run(sockets=[sock])                   # until Ctrl-C (main thread) or server.should_exit
"""

from __future__ import annotations

import socket
from typing import Any

from transrec.errors import UserError
from transrec.utils.packages import import_optional


class ListenError(UserError, OSError):
    """The service cannot listen where it was asked to (the port is taken, the host is not this one's)."""


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening (``port`` 0: a free port chosen by the system).

    Binding here, before the server starts, turns "address already in use" into a ``ListenError`` the
    command line reports in one line, and lets a caller learn the port it got (``url_of``)."""
    if not 0 <= port <= 65535:
        raise ListenError(f"--port must be in 0..65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise ListenError(f"cannot listen on {host!r}: the host name does not resolve ({err})") from None
    sock = socket.socket(family, kind, proto)
    try:
        # A restarted service may reuse its port while the old connections linger in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://host:port`` of a listening socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def uvicorn_server(
    app: Any, log_level: str = "info", access_log: bool = False, loop: str = "auto", http: str = "auto"
) -> Any:
    """A ``uvicorn.Server`` for ``app``; run it with ``.run(sockets=[listen(...)])``. The application's
    lifespan runs (its shutdown stops the /recommend batcher); ``access_log``: one log line per request
    (off by default: it costs throughput, and errors are logged anyway). ``loop`` and ``http``: uvicorn's
    event loop (auto, asyncio, uvloop) and HTTP parser (auto, h11, httptools); auto takes uvloop and
    httptools when they are installed (``uvicorn[standard]``, in the ``serving`` extra), which parse and
    answer a request in less CPU than asyncio's loop and the pure-Python h11."""
    uvicorn = import_optional("uvicorn", "the HTTP service (transrec serve)", also=("fastapi", "multipart"))
    for name, value, package in (("loop", loop, "uvloop"), ("http", http, "httptools")):
        if value == package:
            import_optional(package, f"transrec serve --{name} {value}")
    config = uvicorn.Config(
        app, log_level=log_level, access_log=access_log, lifespan="on", loop=loop, http=http
    )
    return uvicorn.Server(config)
