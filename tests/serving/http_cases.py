"""What the HTTP tests share: the service's test limits, the table of bad inputs (each with the status, the
error kind and a word of the message it must get), images made in memory, and a fingerprint of the state
a bad request must leave unchanged.

Both ``test_app.py`` (FastAPI's in-process client) and ``test_http.py`` (a real uvicorn on loopback) run
every case of ``bad_inputs``; the cases are plain ``httpx`` request arguments, so the two clients send
the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from transrec.serving import Recommender
from transrec.serving.app import HttpLimits
from transrec.serving.content import ContentLimits

#: Small limits, so that an over-limit request is small too.
CONTENT_LIMITS = ContentLimits(max_text_chars=200, max_image_bytes=20_000, max_image_pixels=250_000)
HTTP_LIMITS = HttpLimits(max_k=1000, max_batch=4, max_body_bytes=64_000)


def load(export: Path, copy_to: Path | None = None) -> Recommender:
    """The recommender over ``export`` (over a fresh copy of it at ``copy_to``, for a test that writes)."""
    if copy_to is not None:
        shutil.copytree(export, copy_to)
        export = copy_to
    return Recommender.load(export, limits=CONTENT_LIMITS)


def png(width: int = 24, height: int = 24, colour: tuple[int, int, int] = (200, 30, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png() -> bytes:
    """A small file that declares far more pixels than the limit: a 1-bit 2000 x 1000 PNG (~2 kB)."""
    buffer = io.BytesIO()
    Image.new("1", (2000, 1000)).save(buffer, format="PNG", optimize=True)
    data = buffer.getvalue()
    assert len(data) < CONTENT_LIMITS.max_image_bytes  # refused for its pixels, not its bytes
    return data


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass(frozen=True)
class BadInput:
    """One refused request: ``request`` holds ``method``, ``url`` and httpx keyword arguments."""

    request: dict[str, Any]
    status: int
    error: str
    names: str  # a piece of the message: the problem is named
    ids: list[str] | None = field(default=None)  # the ids the body must list (unknown, duplicate)


def bad_inputs(known: list[str], reads_image: bool) -> dict[str, BadInput]:
    """Every bad input of issue 11, item 5, for an export whose catalogue holds ``known`` (at least 3
    ids); ``reads_image``: the model reads images (then image content is decoded and can be a bomb)."""
    a, b, c = known[:3]
    json_type = {"content-type": "application/json"}
    over_text = "word " * (CONTENT_LIMITS.max_text_chars // 5 + 1)
    over_image = b"\x89PNG" + bytes(CONTENT_LIMITS.max_image_bytes)  # bytes over the limit, valid or not

    def post(url: str, **kwargs: Any) -> dict[str, Any]:
        return {"method": "POST", "url": url, **kwargs}

    def get(url: str) -> dict[str, Any]:
        return {"method": "GET", "url": url}

    cases = {
        # unknown ids: 422 in a body (every one listed), 404 in a path
        "unknown ids in a history": BadInput(
            post("/recommend", json={"history": [a, "nope-1", b, "nope-2"]}), 422, "unknown_items", "nope-2",
            ids=["nope-1", "nope-2"],
        ),
        "unknown ids in a batch": BadInput(
            post("/recommend/batch", json={"histories": [[a], ["nope-3"]]}), 422, "unknown_items", "nope-3",
            ids=["nope-3"],
        ),
        "unknown item": BadInput(get("/items/nope-4"), 404, "unknown_items", "nope-4", ids=["nope-4"]),
        "unknown similar": BadInput(get("/similar/nope-5"), 404, "unknown_items", "nope-5", ids=["nope-5"]),
        "unknown delete": BadInput(
            {"method": "DELETE", "url": "/items/nope-6"}, 404, "unknown_items", "nope-6", ids=["nope-6"]
        ),
        # k outside 1..1000
        "k zero": BadInput(post("/recommend", json={"history": [a], "k": 0}), 422, "invalid_request", "k:"),
        "k 1001": BadInput(
            post("/recommend", json={"history": [a], "k": 1001}), 422, "invalid_request", "k:"
        ),
        "k not a number": BadInput(
            post("/recommend", json={"history": [a], "k": "ten"}), 422, "invalid_request", "k:"
        ),
        "k of a batch": BadInput(
            post("/recommend/batch", json={"histories": [[a]], "k": -1}), 422, "invalid_request", "k:"
        ),
        "k of similar": BadInput(get(f"/similar/{a}?k=1001"), 422, "invalid_request", "k:"),
        # other malformed fields
        "batch over its limit": BadInput(
            post("/recommend/batch", json={"histories": [[a]] * 5}), 422, "invalid_request", "histories"
        ),
        "an entry that is neither an id nor a record": BadInput(
            post("/recommend", json={"history": [a, 42]}), 422, "invalid_request", "history[1]"
        ),
        "an unknown field": BadInput(
            post("/recommend", json={"history": [a], "kk": 3}), 422, "invalid_request", "kk"
        ),
        "an item without content": BadInput(post("/items", json={"id": "new-0"}), 422, "empty", "new-0"),
        # bytes over their limits: 413
        "an image over the limit (JSON)": BadInput(
            post("/items", json={"id": "new-1", "image": b64(over_image)}), 413, "too_large", "20,000"
        ),
        "an image over the limit (upload)": BadInput(
            post("/items", data={"id": "new-2"}, files={"image": ("a.png", over_image, "image/png")}),
            413, "too_large", "20,000",
        ),
        "an image over the limit (history)": BadInput(
            post("/recommend", json={"history": [a, {"image": b64(over_image)}]}), 413, "too_large", "image"
        ),
        "a body over the limit": BadInput(
            post("/recommend", json={"history": [a] * 10_000}), 413, "too_large", "64,000"
        ),
        # wrong content types: 415
        "text/plain to /recommend": BadInput(
            post("/recommend", content=b'{"history": []}', headers={"content-type": "text/plain"}),
            415, "unsupported_media_type", "text/plain",
        ),
        "no content type to /recommend": BadInput(
            post("/recommend", content=b'{"history": []}'), 415, "unsupported_media_type", "application/json"
        ),
        "text/plain to /items": BadInput(
            post("/items", content=b"id=x", headers={"content-type": "text/plain"}),
            415, "unsupported_media_type", "multipart/form-data",
        ),
        "an upload that is not an image": BadInput(
            post("/items", data={"id": "new-3"}, files={"image": ("a.txt", b"hello", "text/plain")}),
            415, "unsupported_media_type", "image/*",
        ),
        # text over its limit: 422
        "text over the limit (JSON)": BadInput(
            post("/items", json={"id": "new-4", "text": over_text}), 422, "text_too_long", "200"
        ),
        "text over the limit (form)": BadInput(
            post("/items", files={"id": (None, "new-5"), "text": (None, over_text)}),
            422, "text_too_long", "200",
        ),
        "a form field over its byte limit": BadInput(
            post("/items", files={"id": (None, "new-13"), "text": (None, "x" * 50_000)}),
            422, "text_too_long", "200 characters",
        ),
        "text over the limit (history)": BadInput(
            post("/recommend", json={"history": [{"text": over_text}]}), 422, "text_too_long", "200"
        ),
        # a duplicate id: 409
        "a duplicate id": BadInput(
            post("/items", json={"id": c, "text": "another text"}), 409, "duplicate_items", c, ids=[c]
        ),
        # malformed JSON: 400 with the parser's message
        "malformed JSON to /recommend": BadInput(
            post("/recommend", content=b'{"history": [', headers=json_type), 400, "malformed_json", "JSON"
        ),
        "malformed JSON to /items": BadInput(
            post("/items", content=b'{"id": "x",}', headers=json_type), 400, "malformed_json", "JSON"
        ),
        # a path or a URL given as an image: refused as not image bytes, never opened
        "a path as an image": BadInput(
            post("/items", json={"id": "new-6", "image": "/etc/passwd"}),
            422, "not_image_bytes", "/etc/passwd",
        ),
        "a URL as an image": BadInput(
            post("/items", json={"id": "new-7", "image": "http://127.0.0.1:9/cover.png"}),
            422, "not_image_bytes", "path or URL",
        ),
        "a file URL in a history": BadInput(
            post("/recommend", json={"history": [{"text": "t", "image": "file:///etc/passwd"}]}),
            422, "not_image_bytes", "never opens",
        ),
        "a path as a form field": BadInput(
            post("/items", files={"id": (None, "new-8"), "image": (None, "/etc/passwd")}),
            422, "not_image_bytes", "/etc/passwd",
        ),
    }  # fmt: skip
    if reads_image:
        cases.update({
            "an undecodable image": BadInput(
                post("/items", data={"id": "new-9"}, files={"image": ("a.png", b"garbage", "image/png")}),
                422, "undecodable", "decode",
            ),
            "a truncated image": BadInput(
                post("/items", json={"id": "new-10", "image": b64(png()[:60])}), 422, "undecodable", "decode"
            ),
            "a decompression bomb": BadInput(
                post("/items", data={"id": "new-11"}, files={"image": ("b.png", bomb_png(), "image/png")}),
                422, "decompression_bomb", "pixels",
            ),
            "a bomb in a history": BadInput(
                post("/recommend", json={"history": [a, {"image": b64(bomb_png())}]}),
                422, "decompression_bomb", "pixels",
            ),
        })  # fmt: skip
    else:
        cases["an image for a text model"] = BadInput(
            post("/items", data={"id": "new-12"}, files={"image": ("a.png", png(), "image/png")}),
            422, "unsupported_modality", "text",
        )  # fmt: skip
    return cases


#: The case names, for parametrising (the same for every catalogue).
TEXT_CASES = list(bad_inputs(["a", "b", "c"], reads_image=False))
IMAGE_CASES = [name for name in bad_inputs(["a", "b", "c"], reads_image=True) if name not in TEXT_CASES]


def check_refusal(response: Any, case: BadInput) -> None:
    """The response is the case's 4xx JSON refusal, naming the problem."""
    assert response.status_code == case.status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert body["error"] == case.error, body
    assert case.names in body["message"], body
    assert "Traceback" not in response.text
    if case.ids is not None:
        assert body["ids"] == case.ids, body


def fingerprint(client: Any, export: Path, history: list[str]) -> tuple:
    """What a refused request must not change: the catalogue size, a recommendation (items and scores)
    and every file of the export directory (its name and SHA-256)."""
    size = client.get("/health").json()["catalogue"]
    answer = client.post("/recommend", json={"history": history, "k": 5}).json()
    files = sorted(
        (p.relative_to(export).as_posix(), hashlib.sha256(p.read_bytes()).hexdigest())
        for p in export.rglob("*")
        if p.is_file()
    )
    return size, answer["items"], answer["scores"], files
