"""Serving: answering top-k queries over trained item vectors. Sits above ``models`` and ``data`` and
never imports ``training``.

    from transrec.serving import build_index
    index = build_index("exact", item_vectors, item_ids)
    scores, ids = index.search(user_vectors, k=10, exclude=histories)
"""

from transrec.serving.retrieval import INDEXES, RetrievalError, RetrievalIndex, build_index, load_index

__all__ = ["INDEXES", "RetrievalError", "RetrievalIndex", "build_index", "load_index"]
