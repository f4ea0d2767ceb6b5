"""The request and response bodies of the HTTP service, as pydantic models (what ``/docs`` shows).

pydantic comes with FastAPI (the ``[serving]`` extra), so the models are built by ``build_models`` when an
application is created, never at import: ``import transrec.serving.schemas`` needs no optional package.
Their bounds (``k``, the batch size, an id's length) come from the service's limits, so the generated
OpenAPI schema states the limits the service enforces.

An item in a history is either a catalogue id (a string, as in the raw data: ``"242"``) or a content record
for an item the catalogue has never seen: ``{"text": "...", "image": "<base64>"}``. Images travel as
base64 of their bytes in JSON, or as a multipart upload (``POST /items``); a string naming a path or a
URL is refused, never opened.
"""

# No ``from __future__ import annotations`` here: pydantic reads these annotations at class creation, and
# the classes are created inside a function, where postponed (string) annotations could not be resolved.

from dataclasses import dataclass
from typing import Annotated, Any

from transrec.utils.packages import import_optional

ENTRY_FORMS = 'a history entry is an item id (a string) or a content record {"text", "image"}'
#: The tags of a history entry's two forms; error locations leave them out (they start with "<").
ID_TAG, RECORD_TAG = "<id>", "<record>"


def _history_entry_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return ID_TAG
    if isinstance(value, dict) or hasattr(value, "model_fields"):
        return RECORD_TAG
    return None


@dataclass(frozen=True)
class Models:
    """The pydantic model classes of one application."""

    ContentRecord: Any
    RecommendRequest: Any
    BatchRecommendRequest: Any
    ItemRequest: Any
    Recommendation: Any
    BatchRecommendation: Any
    Item: Any
    Removed: Any
    Health: Any
    Error: Any


def build_models(max_k: int, max_batch: int, max_id_chars: int) -> Models:
    """The request and response models, with ``k`` in ``1..max_k``, at most ``max_batch`` histories per
    batch and ids of at most ``max_id_chars`` characters."""
    # pydantic comes with FastAPI: asking for FastAPI names the extra that installs both.
    import_optional("fastapi", "the HTTP service (transrec serve)", also=("uvicorn", "multipart"))
    import pydantic

    BaseModel, ConfigDict, Field = pydantic.BaseModel, pydantic.ConfigDict, pydantic.Field

    ItemId = pydantic.constr(min_length=1, max_length=max_id_chars)

    class ContentRecord(BaseModel):
        """An item the catalogue has never seen, given by its content (encoded on the fly, not added)."""

        model_config = ConfigDict(extra="forbid")
        id: ItemId | None = Field(None, description="the item's own id, if it has one (not looked up)")
        text: str | None = Field(None, description="the item's text (e.g. its title)")
        image: str | None = Field(
            None, description="the image's bytes (JPEG, PNG, ...), base64-encoded; never a path or a URL"
        )

    # An entry is told apart by its JSON type, so a wrong one gets one error naming both forms, not one per
    # member of the union; the tags are dropped from error locations (``http_errors``).
    HistoryEntry = Annotated[
        Annotated[ItemId, pydantic.Tag(ID_TAG)] | Annotated[ContentRecord, pydantic.Tag(RECORD_TAG)],
        pydantic.Discriminator(
            _history_entry_kind,
            custom_error_type="history_entry",
            custom_error_message=ENTRY_FORMS,
        ),
    ]

    class RecommendRequest(BaseModel):
        """One user's history, oldest first, and how many items to recommend."""

        model_config = ConfigDict(extra="forbid")
        history: list[HistoryEntry] = Field(
            default_factory=list,
            description="oldest first; catalogue ids and content records may be mixed; empty: the most "
            "popular items. Only the most recent max_len entries are read (the response says so).",
        )
        k: int = Field(10, ge=1, le=max_k, description=f"how many items to return (1..{max_k})")
        exclude_seen: bool = Field(True, description="never recommend an item of the history")

    class BatchRecommendRequest(BaseModel):
        """Several users' histories, answered by one forward pass and one index search."""

        model_config = ConfigDict(extra="forbid")
        histories: list[list[HistoryEntry]] = Field(
            ...,
            min_length=1,
            max_length=max_batch,
            description=f"1..{max_batch} histories, each oldest first",
        )
        k: int = Field(10, ge=1, le=max_k, description=f"how many items to return per history (1..{max_k})")
        exclude_seen: bool = Field(True, description="never recommend an item of its own history")

    class ItemRequest(BaseModel):
        """A new item: its id and its content (text and/or a base64 image, as the model reads them)."""

        model_config = ConfigDict(extra="forbid")
        id: ItemId = Field(..., description="the new item's id (an existing one needs ?replace=true)")
        text: str | None = Field(None, description="the item's text")
        image: str | None = Field(None, description="the image's bytes, base64-encoded; never a path or URL")

    class Recommendation(BaseModel):
        items: list[str] = Field(..., description="item ids, best first")
        scores: list[float] = Field(..., description="their scores (inner products), same order")
        popular: bool = Field(..., description="true for an empty history: the training data's most popular")
        used_history: int = Field(..., description="how many history entries the model read")
        truncated: int = Field(..., description="how many of the oldest history entries were dropped")
        note: str | None = Field(None, description="a sentence for a person when popular or truncated")

    class BatchRecommendation(BaseModel):
        results: list[Recommendation] = Field(..., description="one per history, in the request's order")

    class Item(BaseModel):
        id: str
        text: str | None = Field(None, description="the item's text, when it has one")
        modality: str = Field(..., description="text or image")
        added: bool = Field(..., description="added through the service (not in the exported catalogue)")

    class Removed(BaseModel):
        removed: str = Field(..., description="the id removed")
        catalogue: int = Field(..., description="items in the catalogue now")

    class Health(BaseModel):
        status: str = Field(..., description="ok")
        catalogue: int = Field(..., description="items in the catalogue")

    class Error(BaseModel):
        error: str = Field(..., description="what kind of refusal (see transrec.serving.http_errors)")
        message: str = Field(..., description="the problem, in a sentence")
        ids: list[str] | None = Field(None, description="every unknown or duplicate id")
        problems: list[dict[str, str]] | None = Field(None, description="each field that failed validation")

    return Models(
        ContentRecord=ContentRecord,
        RecommendRequest=RecommendRequest,
        BatchRecommendRequest=BatchRecommendRequest,
        ItemRequest=ItemRequest,
        Recommendation=Recommendation,
        BatchRecommendation=BatchRecommendation,
        Item=Item,
        Removed=Removed,
        Health=Health,
        Error=Error,
    )
