"""A byte limit on request bodies, enforced while the body arrives, not after it has been read.

``BodyLimit`` wraps an ASGI application. A request whose ``Content-Length`` is over the limit is answered
413 at once, before one byte of its body is read. A request without one (chunked transfer) is counted as
it is received: the first chunk past the limit stops the reading (the application's ``receive`` raises
``BodyTooLarge``) and the client gets 413 in place of whatever the application would have answered. So a
client can never make the service hold more than the limit (plus one network chunk) of its body.

Pure ASGI and no web framework: it works under any server and is tested on its own.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from transrec.serving.http_errors import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(Exception):
    """Raised by the wrapped ``receive`` when a body goes past the limit; ``BodyLimit`` answers 413."""


class BodyLimit:
    """ASGI middleware: HTTP request bodies over ``max_bytes`` (given by ``limit_for(path)``, or the same
    for every path) are answered ``413`` with a JSON body ``{"error": "too_large", "message": ...}``."""

    def __init__(self, app: ASGIApp, max_bytes: int, limit_for: Callable[[str], int] | None = None):
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", "")) if self.limit_for else self.max_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_413(send, limit, f"{declared:,} bytes declared")
            return

        received = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:  # the application asks again after the refusal: the body is over
                raise BodyTooLarge()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                # Whatever the application answers to the interrupted body (a parse error, ...) is replaced
                # by the 413 below; nothing of it reaches the client.
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            if started:
                raise
        except Exception:
            if not exceeded or started:
                raise
        if exceeded and not started:
            await _send_413(send, limit, f"more than {limit:,} bytes sent")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length itself
    return None


async def _send_413(send: Send, limit: int, what: str) -> None:
    body = error_body("too_large", f"the request body is over the limit of {limit:,} bytes ({what})")
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close"),  # the rest of the body is never read: this connection is done
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
