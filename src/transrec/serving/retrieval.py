"""Top-k retrieval over item vectors behind one interface, with four kinds of index.

Every kind scores an item by the inner product of the query and the item vector (the papers' scoring
``s(u, i) = h_u . e_i``, e.g. eq. 1 of the MoRec paper) and answers the same calls:

- ``build(vectors [N, d], ids [N])``: replace the contents; ids are unique non-negative integers;
- ``search(queries [Q, d], k, exclude=None) -> (scores [Q, k] float32, ids [Q, k] int64)``: the k best
  items per query, best first. ``exclude[q]`` lists item ids query ``q`` may not return (the user's
  history); ids not in the index are ignored there. When fewer than k items remain, the trailing slots
  hold id ``-1`` and score ``-inf``;
- ``add(vectors, ids)`` (ids not yet in the index) and ``remove(ids)`` (ids in the index);
- ``clone()``: an independent copy (the vectors are shared, never modified in place; the FAISS backend
  is copied), for copy-on-write snapshots;
- ``save(directory)`` and ``load_index(directory)``: ``index.json`` (kind, parameters, shape),
  ``vectors.safetensors`` (the vectors and ids, and for ``faiss-hnsw`` the removed ids still in its
  graph) and, for the FAISS kinds, ``index.faiss`` (the bytes of ``faiss.serialize_index``). Nothing is
  pickled.

Tie order: results are ordered by score, descending, then by item id, ascending, and an item tied with
the k-th result is never preferred to one with a smaller id. ``exact`` and ``faiss-flat`` both
guarantee it (they then return the same ids; their scores differ by float rounding only).

Threads: any number of threads may call ``search`` on one index at once (each call passes its own
search parameters to FAISS; nothing shared is set). ``build``, ``add`` and ``remove`` may run while
other threads search: a readers-writer lock makes each change wait for the searches in flight and holds
new searches back until it is done, so a search sees the index before or after a change, never during
it. A change therefore pauses searches for its duration: short for ``add`` and ``remove`` (milliseconds
at 10^5 items), long for whatever rebuilds an HNSW graph (see ``faiss-hnsw``). A service that must not
pause treats an index as an immutable snapshot: ``clone()``, change the clone, then swap the reference
its readers use.

Kinds (``INDEXES``, a ``Registry``; ``build_index(kind, vectors, ids, **parameters)``):

- ``exact``: a torch matrix product, chunked over items (``chunk_size`` items at a time, default
  65,536), so memory stays at ``Q x chunk_size`` scores; the top k of each chunk are merged with the
  running top k. No extra dependency.
- ``faiss-flat``: FAISS's exact ``IndexFlatIP`` inside an ``IndexIDMap2``. Needs ``faiss-cpu``
  (``pip install 'transrec[serving]'``).
- ``faiss-hnsw``, ``faiss-ivf`` and ``faiss-pq``: approximate FAISS indexes; see
  ``transrec.serving.retrieval_faiss`` for their parameters, defaults and measured recall.

Every index keeps its vectors (sorted by id) in memory next to the backend's own copy: that is what
``save`` writes and what the approximate kinds rebuild from.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from transrec.errors import MissingPathError, UserError
from transrec.registry import Registry
from transrec.serving.locks import ReadWriteLock

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


class RetrievalError(UserError, ValueError):
    """Input a retrieval index refuses: a wrong shape or dimension, a bad k, duplicate or unknown ids."""


INDEXES: Registry[type[RetrievalIndex]] = Registry("retrieval index")


def make_index(kind: str, **parameters: Any) -> RetrievalIndex:
    """A new, empty index of the registered ``kind`` with ``parameters``; a parameter the kind does not
    take is a RetrievalError naming the ones it does."""
    cls = INDEXES.get(kind)
    accepted = [name for name in inspect.signature(cls.__init__).parameters if name != "self"]
    unknown = sorted(set(parameters) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) if accepted else "no parameters"
        raise RetrievalError(
            f"the {kind} index has no parameter {', '.join(map(repr, unknown))}; it takes {takes}"
        )
    return cls(**parameters)


def build_index(kind: str, vectors: Any, ids: Any, **parameters: Any) -> RetrievalIndex:
    """A new index of the registered ``kind`` holding ``vectors`` [N, d] under ``ids`` [N]."""
    return make_index(kind, **parameters).build(vectors, ids)


def load_index(directory: str | Path) -> RetrievalIndex:
    """The index ``RetrievalIndex.save`` wrote to ``directory``, answering exactly as it did."""
    directory = Path(directory)
    meta_path = directory / "index.json"
    if not meta_path.is_file():
        raise MissingPathError(f"{directory} holds no saved retrieval index (no index.json)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT_VERSION:
        raise RetrievalError(f"{meta_path}: unsupported format {meta.get('format')!r}")
    index = make_index(meta["kind"], **meta["parameters"])
    tensors = load_file(str(directory / "vectors.safetensors"))
    index._set_contents(tensors["vectors"], tensors["ids"])
    if index._vectors.shape != (meta["count"], meta["dim"]):
        raise RetrievalError(
            f"{directory}: vectors.safetensors holds {tuple(index._vectors.shape)}, index.json says "
            f"({meta['count']}, {meta['dim']})"
        )
    index._restore(directory, {name: t for name, t in tensors.items() if name not in ("vectors", "ids")})
    return index


def _matrix(x: Any, name: str, dim: int | None) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise RetrievalError(f"{name} must be a non-empty [rows, dim] matrix, got shape {tuple(t.shape)}")
    if not (t.is_floating_point()):
        raise RetrievalError(f"{name} must be floating point, got {t.dtype}")
    if dim is not None and t.shape[1] != dim:
        raise RetrievalError(
            f"{name} have dimension {t.shape[1]}; the index holds vectors of dimension {dim}"
        )
    t = t.detach().to("cpu", torch.float32).contiguous()
    # numpy's check: torch's isfinite + all cost about 50 us, a few percent of an HNSW search of one query.
    if not np.isfinite(t.numpy()).all():
        raise RetrievalError(f"{name} contain NaN or infinite values")
    return t


def _id_vector(x: Any, name: str, length: int | None = None) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.ndim != 1 or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise RetrievalError(f"{name} must be a 1-D sequence of integers, got {t.dtype} {tuple(t.shape)}")
    t = t.to("cpu", torch.int64)
    if length is not None and t.numel() != length:
        raise RetrievalError(f"{name}: {t.numel()} ids for {length} vectors")
    if t.numel() and int(t.min()) < 0:
        raise RetrievalError(f"{name} must be non-negative (-1 marks a missing result), got {int(t.min())}")
    unique, counts = torch.unique(t, return_counts=True)
    if (counts > 1).any():
        raise RetrievalError(f"{name} repeat ids: {unique[counts > 1][:5].tolist()}")
    return t


def _first(values: torch.Tensor, limit: int = 5) -> list[int]:
    return values[:limit].tolist()


def order_rows(scores: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row sorted by score, descending, then id, ascending (the documented tie order)."""
    ids_sorted, by_id = ids.sort(dim=1, stable=True)
    scores_by_id = scores.gather(1, by_id)
    scores_sorted, by_score = scores_by_id.sort(dim=1, descending=True, stable=True)
    return scores_sorted, ids_sorted.gather(1, by_score)


class RetrievalIndex(ABC):
    """The interface every kind implements; see the module docstring for the promises."""

    kind = ""

    def __init__(self) -> None:
        self.parameters: dict[str, Any] = {}
        self._vectors = torch.empty(0, 0)
        self._ids = torch.empty(0, dtype=torch.int64)
        self._lock = ReadWriteLock()

    # -- the interface ------------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._vectors.shape[1]

    def __len__(self) -> int:
        return self._ids.numel()

    def parameters_in_force(self) -> dict[str, Any]:
        """``parameters`` with each default that depends on the contents (None there) replaced by the
        value in use now, e.g. faiss-hnsw's ``ef_search`` for the current size."""
        return dict(self.parameters)

    def build(self, vectors: Any, ids: Any) -> RetrievalIndex:
        """Replace the contents with ``vectors`` [N, d] (N >= 1) under the unique ids ``ids`` [N]."""
        vectors = _matrix(vectors, "vectors", None)
        ids = _id_vector(ids, "ids", vectors.shape[0])
        with self._lock.writing():
            self._change(vectors, ids, self._rebuild)
        return self

    def add(self, vectors: Any, ids: Any) -> None:
        """Add ``vectors`` under ``ids``, none of which may be in the index already."""
        self._require_built()
        vectors = _matrix(vectors, "vectors", self.dim)
        ids = _id_vector(ids, "ids", vectors.shape[0])
        with self._lock.writing():
            present = torch.isin(ids, self._ids)
            if present.any():
                raise RetrievalError(f"ids already in the index: {_first(ids[present])}; remove them first")
            self._change(
                torch.cat([self._vectors, vectors]),
                torch.cat([self._ids, ids]),
                lambda: self._backend_add(vectors, ids),
            )

    def remove(self, ids: Any) -> None:
        """Remove the items ``ids``, all of which must be in the index; at least one item must remain."""
        self._require_built()
        ids = _id_vector(ids, "ids")
        with self._lock.writing():
            unknown = ~torch.isin(ids, self._ids)
            if unknown.any():
                raise RetrievalError(f"ids not in the index: {_first(ids[unknown])}")
            keep = ~torch.isin(self._ids, ids)
            if not keep.any():
                raise RetrievalError(
                    "removing every item would leave the index empty; build a new one instead"
                )
            self._change(self._vectors[keep], self._ids[keep], lambda: self._backend_remove(ids))

    def search(
        self, queries: Any, k: int, exclude: Sequence[Iterable[int]] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` best items for each query: ``(scores [Q, k] float32, ids [Q, k] int64)``, ordered by
        score then id; ``exclude[q]`` holds the ids query ``q`` may not return (padding: id -1, -inf)."""
        self._require_built()
        queries = _matrix(queries, "queries", self.dim)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(self):
            raise RetrievalError(f"k must be an integer from 1 to the {len(self)} items indexed, got {k!r}")
        excluded = self._exclusions(exclude, queries.shape[0])
        with self._lock.reading():
            return self._search(queries, int(k), excluded)

    def clone(self) -> RetrievalIndex:
        """An independent copy with the same parameters and contents: a change to either never shows in
        the other. The vectors are shared (no index modifies them in place); the backend is copied."""
        self._require_built()
        with self._lock.reading():
            other = type(self)(**self.parameters)
            other._vectors, other._ids = self._vectors, self._ids
            self._clone_backend(other)
        return other

    def save(self, directory: str | Path) -> None:
        """Write the index to ``directory`` (created if missing; its index files are replaced)."""
        self._require_built()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock.reading():
            tensors = {"vectors": self._vectors, "ids": self._ids, **self._extra_tensors()}
            save_file(tensors, str(directory / "vectors.safetensors"))
            self._save_backend(directory)
            meta = {
                "format": FORMAT_VERSION,
                "kind": self.kind,
                "parameters": self.parameters,
                "dim": self.dim,
                "count": len(self),
            }
        (directory / "index.json").write_text(json.dumps(meta, indent=2) + "\n")

    # -- shared machinery ---------------------------------------------------------------------------------

    def _require_built(self) -> None:
        if len(self) == 0:
            raise RetrievalError(f"the {self.kind} index is empty; call build(vectors, ids) first")

    def _change(self, vectors: torch.Tensor, ids: torch.Tensor, apply_to_backend: Any) -> None:
        """Set the contents to ``vectors`` and ``ids``, then ``apply_to_backend()``; if that fails, the
        contents are restored (the backend hooks change the backend last), so a refused change changes
        nothing. The caller holds the write lock."""
        before = self._vectors, self._ids
        self._set_contents(vectors, ids)
        try:
            apply_to_backend()
        except BaseException:
            self._vectors, self._ids = before
            raise

    def _set_contents(self, vectors: torch.Tensor, ids: torch.Tensor) -> None:
        # Kept sorted by id, so that a position order is an id order (the exact kind's tie order).
        order = ids.argsort()
        self._vectors, self._ids = vectors[order].contiguous(), ids[order].contiguous()

    def _exclusions(self, exclude: Sequence[Iterable[int]] | None, n_queries: int) -> torch.Tensor | None:
        """``exclude`` as a [Q, E] int64 tensor padded with -1, or None when nothing is excluded."""
        if exclude is None:
            return None
        if len(exclude) != n_queries:
            raise RetrievalError(f"exclude has {len(exclude)} rows for {n_queries} queries")
        rows = [torch.as_tensor(list(row), dtype=torch.int64) for row in exclude]
        width = max((r.numel() for r in rows), default=0)
        if width == 0:
            return None
        table = torch.full((n_queries, width), -1, dtype=torch.int64)
        for q, row in enumerate(rows):
            table[q, : row.numel()] = row
        return table

    # -- what each kind implements --------------------------------------------------------------------

    @abstractmethod
    def _rebuild(self) -> None:
        """Build the backend from ``self`` 's sorted vectors and ids (after ``build`` or a load)."""

    @abstractmethod
    def _backend_add(self, vectors: torch.Tensor, ids: torch.Tensor) -> None:
        """Add ``vectors [n, d]`` under ``ids [n]`` (already checked to be new) to the backend."""

    @abstractmethod
    def _backend_remove(self, ids: torch.Tensor) -> None:
        """Drop ``ids`` (already checked to be present) from the backend."""

    @abstractmethod
    def _search(
        self, queries: torch.Tensor, k: int, excluded: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and ids ``[Q, k]`` ordered by score then id; ``excluded`` is the bool mask of
        ``_exclusions`` (or None)."""

    @abstractmethod
    def _save_backend(self, directory: Path) -> None:
        """Write what the backend needs beyond the vectors and ids into ``directory``."""

    @abstractmethod
    def _restore(self, directory: Path, extra: dict[str, torch.Tensor]) -> None:
        """Read what ``_save_backend`` wrote; the vectors and ids are already loaded, and ``extra`` holds
        the tensors of ``_extra_tensors`` that ``save`` wrote."""

    @abstractmethod
    def _clone_backend(self, other: RetrievalIndex) -> None:
        """Give ``other`` (same parameters, contents already shared) its own copy of the backend."""

    def _extra_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors beyond the vectors and ids that ``save`` writes into ``vectors.safetensors``."""
        return {}


def _top_by_score_then_position(scores: torch.Tensor, kk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``kk`` best columns of each row, ordered by score (descending) then column (ascending)."""
    values, columns = scores.topk(kk, dim=1)
    values, columns = order_rows(values, columns)
    # topk picks an arbitrary subset of the items tied with the kk-th: where a tie straddles the cut, the
    # row is sorted in full (stable, so the smallest columns win), which random float data makes rare.
    kth = values[:, -1:]
    straddles = (scores == kth).sum(1) > (values == kth).sum(1)
    if straddles.any():
        rows = straddles.nonzero().squeeze(1)
        full_values, full_columns = scores[rows].sort(dim=1, descending=True, stable=True)
        values[rows], columns[rows] = full_values[:, :kk], full_columns[:, :kk]
    return values, columns


@INDEXES.register("exact")
class ExactIndex(RetrievalIndex):
    """Exact inner-product search with torch, ``chunk_size`` items at a time."""

    kind = "exact"

    def __init__(self, chunk_size: int = 65536) -> None:
        super().__init__()
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise RetrievalError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        self.parameters = {"chunk_size": chunk_size}

    def _rebuild(self) -> None:
        pass  # the sorted vectors are the index

    def _backend_add(self, vectors: torch.Tensor, ids: torch.Tensor) -> None:
        pass

    def _backend_remove(self, ids: torch.Tensor) -> None:
        pass

    def _save_backend(self, directory: Path) -> None:
        pass

    def _restore(self, directory: Path, extra: dict[str, torch.Tensor]) -> None:
        pass

    def _clone_backend(self, other: RetrievalIndex) -> None:
        pass

    def _search(
        self, queries: torch.Tensor, k: int, excluded: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, chunk = len(self), self.parameters["chunk_size"]
        if excluded is not None:
            # Exclusions as (row, position) pairs; ids not in the index drop out here.
            positions = torch.searchsorted(self._ids, excluded).clamp(max=n - 1)
            present = (self._ids[positions] == excluded) & (excluded >= 0)
            ex_rows = present.nonzero()[:, 0]
            ex_positions = positions[present]
        best_scores = torch.empty(queries.shape[0], 0)
        best_positions = torch.empty(queries.shape[0], 0, dtype=torch.int64)
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            scores = queries @ self._vectors[start:stop].T
            if excluded is not None:
                here = (ex_positions >= start) & (ex_positions < stop)
                scores[ex_rows[here], ex_positions[here] - start] = -math.inf
            values, columns = _top_by_score_then_position(scores, min(k, stop - start))
            # Earlier chunks hold smaller ids, so a stable sort of [running best, this chunk] keeps the
            # tie order without looking at the ids.
            merged_scores = torch.cat([best_scores, values], dim=1)
            merged_positions = torch.cat([best_positions, columns + start], dim=1)
            merged_scores, order = merged_scores.sort(dim=1, descending=True, stable=True)
            best_scores = merged_scores[:, :k].contiguous()
            best_positions = merged_positions.gather(1, order[:, :k])
        ids = self._ids[best_positions]
        ids[best_scores == -math.inf] = -1
        return best_scores, ids


# The FAISS kinds register themselves in INDEXES; imported last because they build on the classes above.
from transrec.serving import retrieval_faiss  # noqa: E402, F401
