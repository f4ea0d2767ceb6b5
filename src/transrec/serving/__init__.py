"""Serving: answering top-k queries over trained item vectors. Sits above ``models`` and ``data`` and
never imports ``training``.

    from transrec.serving import Recommender, export_model, build_index
    export_model("runs/x/best", "prepared/x", "exports/x")        # `transrec export`
    rec = Recommender.load("exports/x"); rec.recommend(["242", "302"], k=10)
    app = create_app(rec)                                          # the HTTP service (`transrec serve`)
    index = build_index("exact", item_vectors, item_ids)
    scores, ids = index.search(user_vectors, k=10, exclude=histories)
"""

from transrec.serving.app import HttpLimits, create_app
from transrec.serving.content import ContentLimits
from transrec.serving.errors import (
    ContentError,
    DuplicateItemError,
    ExportError,
    InvalidRequestError,
    UnknownItemError,
)
from transrec.serving.export import check_export, export_model
from transrec.serving.recommender import Recommendation, Recommender
from transrec.serving.retrieval import INDEXES, RetrievalError, RetrievalIndex, build_index, load_index

__all__ = [
    "INDEXES",
    "ContentError",
    "ContentLimits",
    "DuplicateItemError",
    "ExportError",
    "HttpLimits",
    "InvalidRequestError",
    "Recommendation",
    "Recommender",
    "RetrievalError",
    "RetrievalIndex",
    "UnknownItemError",
    "build_index",
    "check_export",
    "create_app",
    "export_model",
    "load_index",
]
