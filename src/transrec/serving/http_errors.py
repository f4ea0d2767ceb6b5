"""What the HTTP service answers for each input it refuses: a status and a JSON body naming the problem.

Every refusal is a JSON object ``{"error": KIND, "message": TEXT, ...}``: ``KIND`` is a stable, machine
-readable name (the table below), ``TEXT`` a sentence for a person, and some kinds carry more fields
(``ids``: every unknown or duplicate item id; ``problems``: one entry per field that failed validation).

========================== ====== ===========================================================
error                      status when
========================== ====== ===========================================================
``malformed_json``         400    the body is not valid JSON (the parser's message is given)
``malformed_form``         400    a multipart body that cannot be parsed
``unknown_items``          404    the path names an item the catalogue does not hold
``unknown_items``          422    the body names items the catalogue does not hold (all listed)
``duplicate_items``        409    ``POST /items`` with an id the catalogue holds, without ``replace=true``
``too_large``              413    the body, or one image, is over its byte limit
``unsupported_media_type`` 415    a body that is not JSON (or multipart for ``/items``), or an upload
                                  that is not ``image/*``
``invalid_request``        422    a field out of range or of the wrong type (``k`` outside 1..1000, ...)
``undecodable`` etc.       422    content the model cannot encode (``ContentError.reason``: undecodable,
                                  decompression_bomb, text_too_long, unsupported_modality, empty)
``not_image_bytes``        422    an ``image`` given as a path or URL, or as text that is not base64:
                                  nothing a request names is ever opened
``internal``               500    a bug; the body holds no traceback (the server log does)
========================== ====== ===========================================================

Unknown ids get two statuses on purpose: in a path (``GET /items/{id}``) the resource does not exist
(404); in a body (a history) the request is well-formed but refers to what is not there (422).

This module imports no web framework: ``app.py`` turns these (status, body) pairs into responses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from transrec.errors import UserError

#: ``ContentError.reason`` -> status: an image over its byte limit is "too large" (413), every other
#: content the model refuses is unprocessable (422).
CONTENT_STATUS = {"too_large": 413}


class HttpInputError(UserError, ValueError):
    """A request the HTTP layer refuses before the model sees it (a wrong content type, an image given as
    a path, a batch over its limit...): ``status`` and ``kind`` say how it is answered."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


def error_body(kind: str, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON body of every refusal: ``{"error": kind, "message": message, **extra}``."""
    return {"error": kind, "message": message, **extra}


def user_error_response(err: UserError, *, in_path: bool = False) -> tuple[int, dict[str, Any]]:
    """(status, body) for a user error raised while answering a request. ``in_path``: the request's path
    (not its body) named the item, so an unknown id is 404 rather than 422."""
    from transrec.serving.errors import ContentError, DuplicateItemError, UnknownItemError

    message = str(err)
    if isinstance(err, HttpInputError):
        return err.status, error_body(err.kind, message)
    if isinstance(err, UnknownItemError):
        return (404 if in_path else 422), error_body("unknown_items", message, ids=list(err.ids))
    if isinstance(err, DuplicateItemError):
        return 409, error_body("duplicate_items", message, ids=list(err.ids))
    if isinstance(err, ContentError):
        return CONTENT_STATUS.get(err.reason, 422), error_body(err.reason, message)
    return 422, error_body("invalid_request", message)


def validation_error_response(errors: Sequence[Mapping[str, Any]]) -> tuple[int, dict[str, Any]]:
    """(status, body) for pydantic's validation errors of a request: 400 with the parser's message for
    malformed JSON, else 422 listing every field that failed (``"k: Input should be less than or equal to
    1000"``)."""
    for error in errors:
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error") or error.get("msg", "")
            where = _json_position(error)
            return 400, error_body("malformed_json", f"the body is not valid JSON: {reason}{where}")
    problems = [{"field": _field(error.get("loc", ())), "problem": error.get("msg", "")} for error in errors]
    if not problems:
        problems = [{"field": "body", "problem": "invalid request"}]
    summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:10])
    more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
    return 422, error_body("invalid_request", f"invalid request: {summary}{more}", problems=problems)


def _field(loc: Iterable[Any]) -> str:
    """``("body", "history", 3, "text")`` -> ``"history[3].text"``: the field as the client wrote it."""
    # "body" is where FastAPI puts the JSON body; "<...>" parts are the tags of a union's members.
    parts = [p for p in loc if p != "body" and not (isinstance(p, str) and p.startswith("<"))]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def _json_position(error: Mapping[str, Any]) -> str:
    loc = [p for p in error.get("loc", ()) if isinstance(p, int)]
    return f" (at character {loc[-1]})" if loc else ""
