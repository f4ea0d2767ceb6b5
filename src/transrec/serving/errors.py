"""The errors of serving: each names the problem, and the HTTP layer maps each to one status.

    UnknownItemError     an item id the catalogue does not hold (``.ids``: every one of them)   404 / 422
    DuplicateItemError   an added id the catalogue already holds (``.ids``), without replace    409
    ContentError         an item's content refused (``.reason``, see ``CONTENT_REASONS``)        413 / 422
    InvalidRequestError  an argument out of range (``k`` outside 1..1000, a malformed record)     422
    ExportError          an export that cannot be written, read or trusted                       (CLI: 2)

All derive from ``transrec.errors.UserError`` (and from the built-in type code may already catch).
"""

from __future__ import annotations

from collections.abc import Sequence

from transrec.errors import UserError

#: ``ContentError.reason`` values: ``too_large`` (image bytes over ``ContentLimits.max_image_bytes``: 413),
#: the others 422.
CONTENT_REASONS = (
    "too_large",
    "undecodable",
    "decompression_bomb",
    "unsupported_modality",
    "text_too_long",
    "empty",
    "encode_failed",  # the encoder process died on the item twice (serving.encoder_process)
)


def _listed(ids: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


class UnknownItemError(UserError, KeyError):
    """Item ids that the catalogue does not hold; ``ids`` lists every one, in the order given."""

    def __init__(self, ids: Sequence[str], what: str = "unknown item id") -> None:
        self.ids = list(ids)
        plural = "s" if len(self.ids) != 1 else ""
        super().__init__(f"{what}{plural}: {_listed(self.ids)}")

    def __str__(self) -> str:
        # KeyError's str() is the repr of its argument; a user reads the message.
        return str(self.args[0])


class DuplicateItemError(UserError, ValueError):
    """Added item ids the catalogue already holds (or repeated within one call); ``ids`` lists them."""

    def __init__(self, ids: Sequence[str], message: str | None = None) -> None:
        self.ids = list(ids)
        plural = "s" if len(self.ids) != 1 else ""
        super().__init__(
            message
            or f"item id{plural} already in the catalogue: {_listed(self.ids)}; pass replace=True to replace"
        )


class ContentError(UserError, ValueError):
    """An item's content that serving refuses. ``reason`` is one of ``CONTENT_REASONS``; ``item`` names
    the record (its id, or its position in the request) when known."""

    def __init__(self, reason: str, message: str, item: str | None = None) -> None:
        if reason not in CONTENT_REASONS:
            raise ValueError(f"unknown content error reason {reason!r}")
        self.reason, self.item = reason, item
        super().__init__(f"{item}: {message}" if item else message)


class InvalidRequestError(UserError, ValueError):
    """An argument outside what serving accepts (``k`` outside 1..1000, a record that is not a dict...)."""


class ExportError(UserError, ValueError):
    """A model that cannot be exported for serving, or an export directory that is incomplete, of another
    format, or whose files do not match their checksums."""
