"""The HTTP service over a ``Recommender``: FastAPI endpoints, their limits and their refusals.

    from transrec.serving import Recommender
    from transrec.serving.app import create_app
    app = create_app(Recommender.load("exports/ml100k"))   # then: uvicorn.run(app), or `transrec serve`

Endpoints (``/docs`` and ``/openapi.json`` describe each, with its bodies and limits):

- ``POST /recommend`` ``{"history": [...], "k": 10, "exclude_seen": true}``: the top k for one history
  (catalogue ids and content records ``{"text": ..., "image": <base64>}`` mixed, oldest first).
- ``POST /recommend/batch`` ``{"histories": [[...], ...], "k": 10}``: several, in one forward pass.
- ``POST /items`` (JSON ``{"id", "text", "image": <base64>}`` or a multipart form: ``id``, ``text``, an
  ``image`` upload), ``?replace=true`` to replace an existing id: encoded with the model's item encoder,
  recommendable from the next request on, persisted in the export directory (``Recommender.add_items``).
- ``GET /items/{id}``, ``DELETE /items/{id}``, ``GET /similar/{id}?k=``, ``GET /health``, ``GET /metadata``.

Refusals are 4xx JSON bodies ``{"error": ..., "message": ...}`` (the table in ``http_errors``); none of
them changes the catalogue, because the ``Recommender`` validates and encodes before it applies anything.
Request bodies are limited while they arrive (``body_limit.BodyLimit``), image uploads are read up to
their limit and no further, and nothing a request names (a path, a URL) is ever opened: images are bytes.

Concurrency: concurrent ``POST /recommend`` requests are answered together, by one ``recommend_many``
call in a thread of its own (``batching.MicroBatcher``: a batch closes at ``max_batch_size`` requests or
``max_wait_ms`` after its first; each request still gets its own answer or its own 4xx). The other model
work runs in the server's thread pool (plain-function endpoints, or ``run_in_threadpool``), so an add is
never queued behind the recommendations; with ``encoder_process`` (``transrec serve``'s default) an add's
forward pass runs in a process of its own, and its thread only waits for the vector with the GIL released
(``serving.encoder_process``). The application's lifespan stops the batcher and that process. The
``Recommender`` swaps whole snapshots of its catalogue, so a reader never sees a half-applied add or
remove. One process holds the catalogue: several server processes would each see only their own
additions.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations (the request models,
# built inside ``create_app``) when it registers them, and could not resolve them as strings.

import base64
import binascii
import contextlib
import logging
import math
from dataclasses import dataclass, fields
from typing import Any

from transrec import __version__
from transrec.config import ConfigError
from transrec.serving.batching import BatchingConfig, MicroBatcher
from transrec.serving.body_limit import BodyLimit
from transrec.serving.http_errors import (
    HttpInputError,
    error_body,
    user_error_response,
    validation_error_response,
)
from transrec.serving.schemas import build_models
from transrec.utils.packages import import_optional

logger = logging.getLogger(__name__)

MIB = 1024 * 1024


@dataclass(frozen=True)
class HttpLimits:
    """What the HTTP layer accepts beyond the content limits (``ContentLimits``, held by the recommender).

    Args:
        max_k: the largest ``k`` of a request (default 1000; the smallest is 1).
        max_batch: most histories in one ``POST /recommend/batch`` (default 256).
        max_id_chars: longest item id, in characters (default 256).
        max_body_bytes: largest request body, in bytes; ``None`` (default): room for one image at the
            content limit, base64-encoded, plus 1 MiB (about 7.7 MiB for the default 5 MiB images).
    """

    max_k: int = 1000
    max_batch: int = 256
    max_id_chars: int = 256
    max_body_bytes: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"HttpLimits.{f.name} must be a whole number of at least 1, got {value!r}")

    def body_bytes(self, max_image_bytes: int) -> int:
        """The request-body limit in bytes (``max_body_bytes``, or its default for these image limits)."""
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return base64_length(max_image_bytes) + MIB


def base64_length(n_bytes: int) -> int:
    """Length of the base64 text of ``n_bytes`` bytes (padded)."""
    return 4 * math.ceil(n_bytes / 3)


def decode_image_field(value: str, max_bytes: int, field: str = "image") -> bytes:
    """The image bytes a JSON field carries as base64 (optionally as a ``data:image/...;base64,`` URL).

    Raises HttpInputError: 413 ``too_large`` when the bytes are over ``max_bytes`` (judged from the text's
    length, before decoding); 422 ``not_image_bytes`` when the text is not base64, which is what a path or
    a URL is: such a string is refused, never opened."""
    text = "".join(value.split())  # base64 tools wrap lines; whitespace is never part of the data
    if text.startswith("data:") and ";base64," in text[:100]:
        text = text.split(";base64,", 1)[1]
    if len(text) > base64_length(max_bytes) + 4:
        raise HttpInputError(
            413,
            "too_large",
            f"{field} is over the limit of {max_bytes:,} bytes ({len(text):,} base64 characters)",
        )
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        looks_like = "a path or URL" if _looks_like_path_or_url(text) else "not base64"
        raise HttpInputError(
            422,
            "not_image_bytes",
            f"{field} must be the image's bytes, base64-encoded; {value[:60]!r} is {looks_like}. The service "
            "never opens a path or URL named in a request: send the bytes (or upload the file as multipart)",
        ) from None
    if len(data) > max_bytes:
        raise HttpInputError(
            413, "too_large", f"{field} is {len(data):,} bytes, over the limit of {max_bytes:,}"
        )
    return data


def _looks_like_path_or_url(text: str) -> bool:
    return "://" in text or text.startswith(("/", "~", ".", "file:", "\\")) or text[1:3] in (":\\", ":/")


def recommendation_body(rec: Any, max_len: int) -> dict[str, Any]:
    """The JSON of one ``Recommendation``, with a ``note`` for a person when it is not what was asked."""
    note = None
    if rec.truncated:
        total = rec.used_history + rec.truncated
        note = (
            f"the {rec.truncated} oldest of {total} history items were dropped: the model reads the most "
            f"recent {max_len}"
        )
    elif rec.popular:
        note = "empty history: the most popular items of the training data"
    return {
        "items": list(rec.items),
        "scores": [float(s) for s in rec.scores],
        "popular": bool(rec.popular),
        "used_history": int(rec.used_history),
        "truncated": int(rec.truncated),
        "note": note,
    }


def create_app(
    recommender: Any,
    limits: HttpLimits | None = None,
    batching: BatchingConfig | None = None,
    encoder_process: bool = False,
) -> Any:
    """A FastAPI application answering for ``recommender`` (a ``transrec.serving.Recommender``) within
    ``limits`` (default ``HttpLimits()``); content limits are the recommender's own (``.limits``).
    ``batching`` (default ``BatchingConfig()``): how concurrent ``POST /recommend`` requests are coalesced;
    the batcher is ``app.state.batcher`` and stops with the application's lifespan. ``encoder_process``:
    added items are encoded in a process of their own (``Recommender.start_encoder_process``), started
    when the application starts (unless started already) and stopped when it stops."""
    fastapi = import_optional("fastapi", "the HTTP service (transrec serve)", also=("uvicorn", "multipart"))
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from transrec.errors import UserError

    limits = limits or HttpLimits()
    content = recommender.limits
    models = build_models(limits.max_k, limits.max_batch, limits.max_id_chars)
    body_limit = limits.body_bytes(content.max_image_bytes)
    errors = {
        status: {"model": models.Error, "description": text}
        for status, text in {
            400: "malformed JSON",
            404: "unknown item (in the path)",
            409: "the id is in the catalogue already (without ?replace=true)",
            413: "a body or an image over its byte limit",
            415: "a body that is not JSON (or multipart, for /items), an upload that is not an image",
            422: "a field out of range, unknown items (in the body), content the model cannot encode",
        }.items()
    }

    # Looked up at each call, not bound now: the recommender's method is the one answering (tests wrap it).
    batcher = MicroBatcher(lambda *args: recommender.recommend_many(*args), batching)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if encoder_process:
            await run_in_threadpool(recommender.start_encoder_process)
        try:
            yield
        finally:
            await batcher.aclose()
            if encoder_process:
                await run_in_threadpool(recommender.stop_encoder_process)

    app = fastapi.FastAPI(
        lifespan=lifespan,
        title="transrec",
        version=__version__,
        description=(
            "Sequential recommendation from item content. Histories may name catalogue items by id or give "
            "new items by their content; new items are added by encoding their content, with no retraining. "
            "Every refusal is a 4xx JSON body {error, message} naming the problem."
        ),
    )
    app.state.recommender = recommender
    app.state.batcher = batcher
    app.state.limits = limits
    app.add_middleware(BodyLimit, max_bytes=body_limit)

    # -- refusals ---------------------------------------------------------------------------------------

    @app.exception_handler(UserError)
    async def user_error(request, err: UserError):
        status, body = user_error_response(err, in_path="item_id" in request.path_params)
        return JSONResponse(body, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, err):
        status, body = validation_error_response(err.errors())
        return JSONResponse(body, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, err):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        return JSONResponse(
            error_body(kind, str(err.detail)), status_code=err.status_code, headers=err.headers
        )

    @app.exception_handler(Exception)
    async def internal_error(request, err):
        # A bug, not the client's doing: the traceback goes to the log, never into the response.
        logger.exception("internal error answering %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal", "internal error; the server log has the details"), 500)

    async def require_json(request: fastapi.Request) -> None:  # async: no trip to the thread pool
        _require_content_type(request, ("application/json",), "application/json")

    json_body = [fastapi.Depends(require_json)]

    # -- recommending -----------------------------------------------------------------------------------

    def history_of(entries: list[Any]) -> list[Any]:
        out: list[Any] = []
        for position, entry in enumerate(entries):
            if isinstance(entry, str):
                out.append(entry)
                continue
            record: dict[str, Any] = {"text": entry.text, "image": None}
            if entry.id is not None:
                record["id"] = entry.id
            if entry.image is not None:
                record["image"] = decode_image_field(
                    entry.image, content.max_image_bytes, field=f"history[{position}].image"
                )
            out.append(record)
        return out

    @app.post(
        "/recommend",
        response_model=models.Recommendation,
        dependencies=json_body,
        responses=errors,
        summary="Recommend for one history",
    )
    async def recommend(request: models.RecommendRequest):
        """The top ``k`` items for one user's history (oldest first). An entry is a catalogue id or a
        content record of an item the catalogue has never seen (encoded on the fly, not added). An empty
        history gets the training data's most popular items (``popular: true``); a history longer than the
        model's ``max_len`` is cut to its most recent entries (``truncated`` and ``note`` say so). Unknown
        ids: 422 listing every one."""
        # Async: it only queues the history for the batcher, which answers it with those around it.
        rec = await batcher.submit(history_of(request.history), request.k, request.exclude_seen)
        # A response, not a dict: FastAPI would validate the dict against the model again; the body is
        # built from the Recommendation and needs no second check.
        return JSONResponse(recommendation_body(rec, recommender.max_len))

    @app.post(
        "/recommend/batch",
        response_model=models.BatchRecommendation,
        dependencies=json_body,
        responses=errors,
        summary="Recommend for several histories",
    )
    def recommend_batch(request: models.BatchRecommendRequest):
        """As ``POST /recommend`` for each history, answered by one forward pass and one index search;
        the results come in the request's order. Any unknown id refuses the whole batch (422)."""
        histories = [history_of(h) for h in request.histories]
        results = recommender.recommend_many(histories, k=request.k, exclude_seen=request.exclude_seen)
        return JSONResponse({"results": [recommendation_body(r, recommender.max_len) for r in results]})

    @app.get(
        "/similar/{item_id:path}",
        response_model=models.Recommendation,
        responses=errors,
        summary="Items similar to an item",
    )
    def similar(item_id: str, k: int = fastapi.Query(10, ge=1, le=limits.max_k, description="how many")):
        """The ``k`` items whose vectors have the largest inner product with this item's (itself
        excluded). Unknown id: 404."""
        return JSONResponse(recommendation_body(recommender.similar_items(item_id, k=k), recommender.max_len))

    # -- the catalogue ----------------------------------------------------------------------------------

    item_schema = models.ItemRequest.model_json_schema()
    form_schema = {
        "type": "object",
        "required": ["id"],
        "properties": {
            "id": {"type": "string", "maxLength": limits.max_id_chars},
            "text": {"type": "string", "maxLength": content.max_text_chars},
            "image": {"type": "string", "format": "binary", "description": "an image/* upload"},
        },
    }
    items_body = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": item_schema},
                "multipart/form-data": {"schema": form_schema},
            },
        }
    }

    @app.post(
        "/items",
        status_code=201,
        response_model=models.Item,
        responses=errors,
        openapi_extra=items_body,
        summary="Add (or replace) an item",
    )
    async def add_item(
        request: fastapi.Request,
        replace: bool = fastapi.Query(False, description="replace an item that has this id"),
    ):
        """Adds one item from its content: JSON ``{"id", "text", "image": <base64>}`` or a multipart form
        (``id``, ``text``, an ``image`` file of type ``image/*``). The item is encoded with the model's own
        item encoder, is recommendable from the next request on, and is saved in the export directory (a
        restart keeps it). An id already in the catalogue: 409, unless ``?replace=true``. Images over the
        limit: 413 (the upload is read no further than the limit); undecodable images, decompression bombs
        and text over its limit: 422."""
        kind = _require_content_type(
            request, ("application/json", "multipart/form-data"), "application/json or multipart/form-data"
        )
        if kind == "application/json":
            raw = await request.body()
            try:
                item = models.ItemRequest.model_validate_json(raw)
            except ValueError as err:  # pydantic's ValidationError derives from ValueError
                raise RequestValidationError(err.errors()) from None
            record = {"id": item.id, "text": item.text, "image": None}
            if item.image is not None:
                record["image"] = decode_image_field(item.image, content.max_image_bytes)
        else:
            record = await _form_record(request, content, limits)
        await run_in_threadpool(recommender.add_items, [record], replace=replace)
        logger.debug("%s item %r", "replaced or added" if replace else "added", record["id"])
        # A response, not a dict: the item's fields need no second validation against the model.
        return JSONResponse(recommender.item(record["id"]), status_code=201)

    @app.get("/items/{item_id:path}", response_model=models.Item, responses=errors, summary="An item")
    def get_item(item_id: str):
        """The item's id, text, modality and whether it was added through the service. Unknown id: 404."""
        return recommender.item(item_id)

    @app.delete(
        "/items/{item_id:path}", response_model=models.Removed, responses=errors, summary="Remove an item"
    )
    def delete_item(item_id: str):
        """Removes the item from the catalogue (an exported one too), at once and persistently: no later
        request recommends it. Unknown id: 404."""
        recommender.remove_items([item_id])
        logger.debug("removed item %r", item_id)
        return {"removed": item_id, "catalogue": recommender.catalogue_size}

    # -- the service ------------------------------------------------------------------------------------

    @app.get("/health", response_model=models.Health, summary="Liveness")
    def health():
        """``{"status": "ok", "catalogue": <items>}`` while the service answers."""
        return {"status": "ok", "catalogue": recommender.catalogue_size}

    @app.get("/metadata", summary="The model, dataset, counts and versions")
    def metadata():
        """The export's model (item and user encoder, d_model, max_len), dataset, item counts (exported,
        added, removed, catalogue), versions (transrec, torch, export format), index kind and its
        parameters in force (``index_parameters``), where added items are encoded (``encoder``: where,
        engine, detail), and the limits this service enforces."""
        info = dict(recommender.metadata())
        info["limits"] = {
            "max_k": limits.max_k,
            "max_batch": limits.max_batch,
            "max_id_chars": limits.max_id_chars,
            "max_body_bytes": body_limit,
            "max_text_chars": content.max_text_chars,
            "max_image_bytes": content.max_image_bytes,
            "max_image_pixels": content.max_image_pixels,
        }
        return info

    return app


def _require_content_type(request: Any, accepted: tuple[str, ...], wanted: str) -> str:
    """The request's media type (``application/json``...) when it is one of ``accepted``; else
    HttpInputError 415 naming what was sent and what is wanted."""
    header = request.headers.get("content-type", "")
    media = header.split(";", 1)[0].strip().lower()
    if media.startswith("application/") and media.endswith("+json"):
        media = "application/json"
    if media not in accepted:
        sent = f"Content-Type {header!r}" if header else "no Content-Type"
        raise HttpInputError(415, "unsupported_media_type", f"{request.url.path} takes {wanted}; got {sent}")
    return media


async def _form_record(request: Any, content: Any, limits: HttpLimits) -> dict[str, Any]:
    """The item record of a multipart ``POST /items`` form: ``id``, optional ``text``, optional ``image``
    upload (``image/*``, read up to ``content.max_image_bytes`` and no further)."""
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException as StarletteHTTPException

    # Text fields may hold max_text_chars characters of up to 4 UTF-8 bytes each; a larger part is refused
    # by the parser while it reads, before it is held in memory whole.
    field_bytes = 4 * max(content.max_text_chars, limits.max_id_chars) + 1024
    try:
        form = await request.form(max_files=1, max_fields=3, max_part_size=field_bytes)
    except StarletteHTTPException as err:
        detail = str(err.detail)
        if "maximum size" in detail:
            raise HttpInputError(
                422,
                "text_too_long",
                f"a form field is over {field_bytes:,} bytes: text is limited to "
                f"{content.max_text_chars:,} characters and ids to {limits.max_id_chars}",
            ) from None
        raise HttpInputError(400, "malformed_form", f"the multipart form cannot be read: {detail}") from None
    unknown = sorted(set(form.keys()) - {"id", "text", "image"})
    if unknown:
        raise HttpInputError(
            422, "invalid_request", f"unknown form field(s) {unknown}; known: id, text, image"
        )
    item_id, text, image = form.get("id"), form.get("text"), form.get("image")
    if not isinstance(item_id, str) or not item_id:
        raise HttpInputError(422, "invalid_request", "the form needs a non-empty text field 'id'")
    if len(item_id) > limits.max_id_chars:
        raise HttpInputError(422, "invalid_request", f"id is over {limits.max_id_chars} characters")
    if text is not None and not isinstance(text, str):
        raise HttpInputError(422, "invalid_request", "'text' must be a text field, not a file")
    record: dict[str, Any] = {"id": item_id, "text": text, "image": None}
    if image is None:
        return record
    if not isinstance(image, UploadFile):
        message = f"'image' must be an uploaded file, not the text {image[:60]!r}"
        raise HttpInputError(422, "not_image_bytes", message + ": a path or URL in a request is never opened")
    media = (image.content_type or "").split(";", 1)[0].strip().lower()
    if not media.startswith("image/"):
        raise HttpInputError(
            415,
            "unsupported_media_type",
            f"the 'image' upload has type {media or 'none'!r}; it must be image/*",
        )
    data = await image.read(content.max_image_bytes + 1)
    if len(data) > content.max_image_bytes:
        raise HttpInputError(
            413, "too_large", f"the image is over the limit of {content.max_image_bytes:,} bytes"
        )
    record["image"] = data
    return record
