"""The request-body limit of the HTTP service (issue 11, item 5): an oversized body is refused with 413
while it arrives, without being read into memory first."""

from __future__ import annotations

import asyncio
import json

import pytest

from transrec.serving.body_limit import BodyLimit


def echo_length_app(calls: list[str]):
    """An ASGI app that reads the whole body, then answers 200 with its length."""

    async def app(scope, receive, send):
        calls.append("app")
        size, more = 0, True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})

    return app


def run(app, chunks: list[bytes], content_length: int | None = None):
    """Send ``chunks`` as one request through ``app``; (status, body, number of receive calls, sent)."""
    headers = [] if content_length is None else [(b"content-length", str(content_length).encode())]
    scope = {"type": "http", "method": "POST", "path": "/items", "headers": headers}
    pulled = 0
    sent: list[dict] = []

    async def receive():
        nonlocal pulled
        pulled += 1
        index = pulled - 1
        if index >= len(chunks):
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunks[index], "more_body": index < len(chunks) - 1}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1, sent  # exactly one response, never the app's and the refusal both
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return starts[0]["status"], body, pulled


def test_a_body_within_the_limit_reaches_the_app_whole():
    calls: list[str] = []
    status, body, _ = run(BodyLimit(echo_length_app(calls), max_bytes=12), [b"abcd"] * 3, content_length=12)
    assert (status, body, calls) == (200, b"12", ["app"])


def test_a_declared_length_over_the_limit_is_refused_before_anything_is_read():
    calls: list[str] = []
    status, body, pulled = run(
        BodyLimit(echo_length_app(calls), max_bytes=10), [b"x" * 11], content_length=11
    )
    assert status == 413
    assert pulled == 0 and calls == []  # neither the body nor the app was touched
    refusal = json.loads(body)
    assert refusal["error"] == "too_large" and "10 bytes" in refusal["message"]


def test_a_chunked_body_is_cut_off_at_the_first_chunk_past_the_limit():
    calls: list[str] = []
    chunks = [b"abcd"] * 50  # 200 bytes, no Content-Length: counted as they come
    status, body, pulled = run(BodyLimit(echo_length_app(calls), max_bytes=10), chunks)
    assert status == 413 and json.loads(body)["error"] == "too_large"
    assert pulled == 3  # 4 + 4 + 4 > 10: the third chunk is the last one read, 47 stay unread


def test_the_apps_own_answer_to_the_cut_body_is_replaced_by_the_413():
    async def catching_app(scope, receive, send):
        try:
            while (await receive()).get("more_body"):
                pass
        except Exception:  # a framework that turns a failed read into its own error response
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": b"bad body"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    status, body, _ = run(BodyLimit(catching_app, max_bytes=5), [b"abc", b"abc", b"abc"])
    assert status == 413 and b"bad body" not in body


def test_an_error_the_app_raises_for_the_cut_body_becomes_the_413():
    async def wrapping_app(scope, receive, send):
        try:
            while (await receive()).get("more_body"):
                pass
        except Exception as err:  # a parser that wraps the failed read in an error of its own
            raise RuntimeError("cannot parse the body") from err

    status, body, _ = run(BodyLimit(wrapping_app, max_bytes=5), [b"abc", b"abc", b"abc"])
    assert status == 413 and json.loads(body)["error"] == "too_large"


def test_other_failures_of_the_app_are_not_disguised():
    async def broken_app(scope, receive, send):
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        run(BodyLimit(broken_app, max_bytes=5), [b"abc"])
