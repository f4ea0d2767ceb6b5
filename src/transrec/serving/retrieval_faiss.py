"""The FAISS kinds of retrieval index (``faiss-flat``, ``faiss-hnsw``, ``faiss-ivf``, ``faiss-pq``); the
interface, its promises and the thread-safety contract are in ``transrec.serving.retrieval``.

Each holds a FAISS inner-product index that answers with our item ids: flat, HNSW and PQ inside an
``IndexIDMap2``; IVF holds the ids itself (``IndexIDMap2.remove_ids`` would misnumber an IVF index, whose
entries keep the internal ids they were added with). Searches pass their own ``SearchParameters`` to
FAISS on every call (``efSearch``, ``nprobe``, the removed-id selector) instead of setting them on the
shared index, so concurrent searches with different ``k`` never see each other's settings; flat, HNSW and
PQ search the index inside the ``IndexIDMap2`` and map its ids themselves (``_FaissIndex._backend_search``
says why). Needs ``faiss-cpu`` (``pip install 'transrec[serving]'``).

- ``faiss-flat``: exact, FAISS's ``IndexFlatIP``.
- ``faiss-hnsw``: approximate, an HNSW graph of FAISS (``IndexHNSWSQ`` or ``IndexHNSWFlat``) whose
  candidates are re-ranked by their exact scores. ``m`` (default 64): graph neighbours per node;
  ``ef_construction`` (default 160): candidate list while building; ``ef_search``: candidate list while
  searching, the accuracy / latency knob, raised to the number of candidates asked for when that is
  larger. ``ef_search=None`` (the default) scales it with the catalogue: ``hnsw_ef_search(N)``, 80 up
  to 10^4 items, then growing with N^(1/4) to 256 at 10^6 (``benchmarks/README.md`` has the recall
  and latency this gives on random and on clustered vectors). ``storage`` (default ``"sq8"``): what the
  graph walk scores with: ``"sq8"``, each vector as 8-bit codes (FAISS's ``ScalarQuantizer.QT_8bit``,
  one byte per dimension, 64 B at d = 64 instead of 256 B, its per-dimension ranges trained on the
  vectors given to ``build``; values added later outside them are clipped); ``"flat"``, the float32
  vectors. ``refine`` (default 2): the graph is asked for ``refine`` times the results needed, and those
  candidates are scored exactly with the index's own float32 vectors (the ones ``save`` writes) and the
  best kept, so the 8-bit scores only choose candidates and every returned score is exact (with
  ``"flat"`` the walk's scores are exact already: ``refine`` 1 there). An 8-bit search reads a quarter
  of the vector bytes per visited node, which is much of what an HNSW search over 10^6 items waits for
  (cache misses): on the same graph of 10^6 Gaussian vectors, the same recall took about two thirds of
  the time of the float32 walk (``benchmarks/README.md``); and the FAISS index holds 64 MB of codes at
  10^6 items instead of a second 256 MB copy of the vectors. The defaults buy recall per unit of
  search time with memory and build time: m 64 doubles the graph of FAISS's usual m 32 (about 0.5 GB of
  links at 10^6 items) and builds about twice as slowly, but reaches recall@10 0.95 on random Gaussian
  vectors at 10^6 with ef_search about 240, where m 48 needs about 450 and m 32 about 800. HNSW cannot
  delete a node: ``remove`` marks the ids removed (kept in the graph, filtered out of every search by a
  FAISS ``IDSelector``), and the graph is rebuilt from the live vectors (and the 8-bit ranges retrained)
  when the removed ones exceed a fifth of the live ones, or when a removed id is added again; a rebuild
  costs what ``build`` does (seconds at 10^5 items, minutes at 10^6).
- ``faiss-ivf``: approximate, FAISS's ``IndexIVFFlat``: k-means cells (``nlist``, default ``None``:
  about 4 sqrt(N), at least 1, at most N / 39, FAISS's minimum of training points per cell), of which
  ``nprobe`` (default 32) nearest the query are scanned. Trained at ``build`` (seeded); items added later
  join the cell nearest to them without retraining; ``remove`` deletes them from their cells. Meant for
  large catalogues of clustered vectors (10^5 items and more, where 32 cells are a small share of them):
  on structureless random vectors, or on 10^4 items, its recall@10 at nprobe 32 is far below HNSW's
  (``benchmarks/README.md``), and ``exact`` is fast there anyway.
- ``faiss-pq``: approximate, a full scan of compressed vectors, then exact re-ranking: each item is held
  as a product-quantized code of ``m`` sub-vectors (default ``pq_sub_vectors(d)``: two dimensions each,
  so 32 at d = 64), each sub-vector one of 16 codewords (4 bits; k-means per sub-space, trained at
  ``build`` on at most 4,096 of the vectors, seeded by ``seed``), and every code is scored for each
  query with FAISS's fast-scan kernels (``IndexPQFastScan``: SIMD look-up tables over 16 B per item at d
  = 64, a sixteenth of the float32 bytes); the ``refine`` (default 48) x (k + 1) best codes are then
  scored exactly with the float32 vectors and the best kept, as in ``faiss-hnsw``. No graph or cells, so
  its recall does not depend on how the vectors cluster: on 10^6 random Gaussian vectors (d = 64), where
  HNSW needs a long candidate list, it reached recall@10 0.967 at about 1.3 ms a query, 12x faster than
  exact, and builds in seconds instead of half an hour (``benchmarks/README.md``). Its cost grows in
  proportion to N (one scan of every code), a graph's far more slowly, so well beyond 10^6 items a graph
  or cell index should win (not measured). Items added later
  are encoded with the codebooks of the last ``build`` (trained again only by a new ``build``), and
  ``remove`` deletes their codes. Needs at least 16 items to train.
"""

from __future__ import annotations

import logging
import math
from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transrec.errors import MissingPathError
from transrec.serving.retrieval import INDEXES, RetrievalError, RetrievalIndex
from transrec.utils.packages import import_optional

logger = logging.getLogger(__name__)

# A removed node of an HNSW graph still costs search effort (it is visited, then filtered out); past this
# fraction of the live items the graph is rebuilt without them.
HNSW_MAX_REMOVED_FRACTION = 0.2
# What the graph walk of faiss-hnsw scores with: 8-bit codes or the float32 vectors.
HNSW_STORAGES = ("sq8", "flat")
# faiss-pq's codes: 4 bits per sub-vector (what FAISS's fast-scan kernels read), so 16 codewords each.
PQ_CODEWORDS = 16


def hnsw_ef_search(n_items: int) -> int:
    """The default ``ef_search`` of ``faiss-hnsw`` for ``n_items``: 80 up to 10^4 items, then
    ``80 (N / 10^4)^(1/4)`` rounded up to a multiple of 8: 144 at 10^5, 256 at 10^6. Chosen for random
    Gaussian vectors (d = 64) with the default m 64, ef_construction 160, 8-bit storage and refine 2, the
    hardest case for a graph index, where recall@10 falls as N grows at a fixed ef_search (measured
    2026-12-03, 256 queries): 0.987 at 10^4, 0.977 at 10^5, 0.962 at 10^6 (there 0.929 with 192, 0.949
    with 224, 0.973 with 304); clustered item vectors reach 0.997 or more with it."""
    ef = 80 * (max(n_items, 10_000) / 10_000) ** 0.25
    return int(math.ceil(ef / 8) * 8)


def _positive_int(kind: str, name: str, value: Any, least: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        allowed = f"an integer >= {least}" + (" or None" if optional else "")
        raise RetrievalError(f"{kind}: {name} must be {allowed}, got {value!r}")


class _FaissIndex(RetrievalIndex):
    """A FAISS index inside an ``IndexIDMap2``: the kinds differ in the inner index they build and the
    search parameters they pass."""

    def __init__(self) -> None:
        super().__init__()
        self._faiss()  # a missing faiss-cpu is reported when the index is made, before any data is read

    def _faiss(self) -> Any:
        return import_optional("faiss", f"the {self.kind!r} retrieval index")

    @abstractmethod
    def _new_inner(self, faiss: Any, vectors: np.ndarray) -> Any:
        """The kind's inner inner-product FAISS index over ``self.dim`` dimensions, empty but ready for
        ``vectors`` (the items about to be added: what a trained index trains on)."""

    def _search_parameters(self, faiss: Any, wanted: int) -> Any:
        """This call's own FAISS ``SearchParameters`` for ``wanted`` results (None: FAISS's defaults);
        a selector in them filters the inner index's own sequential ids (see ``_backend_search``)."""
        return None

    def _backend_search(self, faiss: Any, queries: np.ndarray, wanted: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and item ids (-1: none) of FAISS's ``wanted`` best items for each query (faiss-hnsw:
        its candidates, with their exact scores, not in order).

        Searches the index inside the ``IndexIDMap2`` and maps its sequential ids to item ids here:
        ``IndexIDMap2.search`` maps them in an OpenMP parallel loop even for one query, which then waits
        for a second thread to be scheduled; on a loaded 2-core machine that made the median single-query
        search of 10^5 items take 15 ms instead of 1.7 ms (2026-12-03, load average 6)."""
        params = self._search_parameters(faiss, wanted)
        scores, internal = self._index.index.search(queries, wanted, params=params)
        # A view of the id map, valid while the caller holds the read lock (no change reallocates it).
        labels = faiss.rev_swig_ptr(self._index.id_map.data(), self._index.id_map.size())
        return scores, np.where(internal >= 0, labels[internal], -1)

    def _with_ids(self, faiss: Any, inner: Any) -> Any:
        """``inner`` made to store and answer with item ids."""
        return faiss.IndexIDMap2(inner)

    def _rebuild(self) -> None:
        faiss = self._faiss()
        vectors = self._vectors.numpy()
        index = self._with_ids(faiss, self._new_inner(faiss, vectors))
        index.add_with_ids(vectors, self._ids.numpy())
        self._index = index  # assigned last: a failure above leaves the previous backend in place

    def _backend_add(self, vectors: torch.Tensor, ids: torch.Tensor) -> None:
        self._index.add_with_ids(vectors.numpy(), ids.numpy())

    def _backend_remove(self, ids: torch.Tensor) -> None:
        removed = self._index.remove_ids(ids.numpy())
        if removed != ids.numel():  # the inner index lost track of an id that the index holds: our bug
            raise RuntimeError(f"FAISS removed {removed} of {ids.numel()} ids")

    def _clone_backend(self, other: RetrievalIndex) -> None:
        other._index = self._faiss().clone_index(self._index)

    def _save_backend(self, directory: Path) -> None:
        self._faiss().serialize_index(self._index).tofile(directory / "index.faiss")

    def _backend_count(self) -> int:
        """How many vectors the FAISS index should hold: the live items (and, for HNSW, the removed)."""
        return len(self)

    def _restore(self, directory: Path, extra: dict[str, torch.Tensor]) -> None:
        faiss = self._faiss()
        path = directory / "index.faiss"
        if not path.is_file():
            raise MissingPathError(f"{directory} has no index.faiss for its {self.kind} index")
        self._index = faiss.deserialize_index(np.fromfile(path, dtype=np.uint8))
        if self._index.ntotal != self._backend_count():
            raise RetrievalError(
                f"{path} holds {self._index.ntotal} vectors, vectors.safetensors {self._backend_count()}"
            )

    def _candidates(self, wanted: int) -> int:
        """How many results to ask FAISS for when ``wanted`` are needed (more where they are re-ranked)."""
        return wanted

    def _search(
        self, queries: torch.Tensor, k: int, excluded: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # In numpy, not torch: for one query, the per-call cost of a dozen small torch operations is a
        # sizeable share of an HNSW search (about 0.15 ms in all, measured at 10^5 items).
        faiss, n, q = self._faiss(), len(self), queries.numpy()
        banned = None if excluded is None else excluded.numpy()[:, None, :]
        # One more than needed, so that the k-th result usually beats the last one returned and no
        # second search is needed to settle ties (see below).
        wanted = min(n, k + 1)
        # Excluded items take at most as many places among the candidates as there are of them: they are
        # added to the candidates once, not multiplied like the results needed (with refine 48, a history
        # of 20 would otherwise cost 960 more candidates instead of 20).
        width = 0 if banned is None else banned.shape[2]
        while True:
            asked = min(n, self._candidates(wanted) + width)
            scores, ids = self._backend_search(faiss, q, asked)
            lowest = scores.min(1, keepdims=True)  # the last one's, unless re-ranked (faiss-hnsw)
            missing = ids < 0
            if banned is not None:
                missing |= (ids[:, :, None] == banned).any(2)
            scores[missing], ids[missing] = -math.inf, -1
            # Ordered by score, descending, then id, ascending (lexsort: the last key first).
            order = np.lexsort((ids, -scores), axis=1)[:, :k]
            rows = np.arange(order.shape[0])[:, None]
            scores, ids = scores[rows, order], ids[rows, order]
            # An item tied with the k-th result may lie beyond the candidates FAISS returned (and FAISS
            # breaks ties its own way): ask for more until the k-th result beats the last one returned.
            if asked == n or not (scores[:, -1:] <= lowest).any():
                return torch.from_numpy(scores), torch.from_numpy(ids)
            wanted = min(n, 2 * wanted)


@INDEXES.register("faiss-flat")
class FaissFlatIndex(_FaissIndex):
    """Exact inner-product search with FAISS's ``IndexFlatIP``."""

    kind = "faiss-flat"

    def _new_inner(self, faiss: Any, vectors: np.ndarray) -> Any:
        return faiss.IndexFlatIP(self.dim)


class _RerankedFaissIndex(_FaissIndex):
    """An approximate FAISS index inside an ``IndexIDMap2`` that only proposes candidates: ``refine``
    (a parameter) times the results needed, each then scored exactly with the float32 vectors the index
    keeps (the ones ``save`` writes), so that every returned score is exact and the approximate scores
    only choose which items are looked at. The kinds call ``_set_rows`` after every change."""

    def _candidates(self, wanted: int) -> int:
        return self.parameters["refine"] * wanted

    def _backend_search(self, faiss: Any, queries: np.ndarray, wanted: int) -> tuple[np.ndarray, np.ndarray]:
        # The FAISS index's candidates (its sequential numbers), scored exactly with the float32 vectors.
        _, nodes = self._index.index.search(queries, wanted, params=self._search_parameters(faiss, wanted))
        found = nodes >= 0
        rows = self._rows[nodes]
        if (rows[found] < 0).any():  # a removed item the selector let through: our bug
            raise RuntimeError(f"the {self.kind} index answered with an item it does not hold")
        rows[~found] = 0
        scores = np.matmul(self._vectors.numpy()[rows], queries[:, :, None])[:, :, 0]
        scores[~found] = -math.inf
        return scores, np.where(found, self._ids.numpy()[rows], -1)

    def _set_rows(self) -> None:
        """``self._rows[j]``: the row of the sorted vectors that holds entry j of the FAISS index (-1:
        removed but still in an HNSW graph), so that a search reads its candidates' vectors without
        looking their ids up (a binary search over 10^6 ids per candidate cost about 0.05 ms a query in
        cache misses). Called after every change to the contents, which moves the rows; never modified
        in place (clones share it)."""
        faiss, live = self._faiss(), self._ids.numpy()
        labels = faiss.rev_swig_ptr(self._index.id_map.data(), self._index.id_map.size())
        rows = np.minimum(np.searchsorted(live, labels), len(live) - 1)
        rows[live[rows] != labels] = -1
        self._rows = rows


@INDEXES.register("faiss-hnsw")
class FaissHNSWIndex(_RerankedFaissIndex):
    """Approximate inner-product search with an HNSW graph of FAISS, its candidates re-ranked exactly;
    ``m``, ``ef_construction``, ``ef_search`` (None: ``hnsw_ef_search(N)``), ``storage`` (``"sq8"``:
    8-bit codes, ``IndexHNSWSQ``; ``"flat"``: float32, ``IndexHNSWFlat``) and ``refine`` (candidates
    per result needed, scored exactly) as in the module docstring."""

    kind = "faiss-hnsw"

    def __init__(
        self,
        m: int = 64,
        ef_construction: int = 160,
        ef_search: int | None = None,
        storage: str = "sq8",
        refine: int = 2,
    ) -> None:
        super().__init__()
        _positive_int(self.kind, "m", m, 2)
        _positive_int(self.kind, "ef_construction", ef_construction, 1)
        _positive_int(self.kind, "ef_search", ef_search, 1, optional=True)
        if storage not in HNSW_STORAGES:
            raise RetrievalError(
                f"{self.kind}: storage must be one of {', '.join(HNSW_STORAGES)}, got {storage!r}"
            )
        _positive_int(self.kind, "refine", refine, 1)
        self.parameters = {
            "m": m,
            "ef_construction": ef_construction,
            "ef_search": ef_search,
            "storage": storage,
            "refine": refine,
        }
        self._parameters: dict[int, Any] = {}  # efSearch -> FAISS search parameters without a selector
        self._set_removed(torch.empty(0, dtype=torch.int64))

    @property
    def ef_search(self) -> int:
        """The ``ef_search`` in force: the parameter, or ``hnsw_ef_search`` of the current size."""
        chosen = self.parameters["ef_search"]
        return hnsw_ef_search(len(self)) if chosen is None else chosen

    def parameters_in_force(self) -> dict[str, Any]:
        return {**self.parameters, "ef_search": self.ef_search}

    def _new_inner(self, faiss: Any, vectors: np.ndarray) -> Any:
        m, metric = self.parameters["m"], faiss.METRIC_INNER_PRODUCT
        if self.parameters["storage"] == "sq8":
            inner = faiss.IndexHNSWSQ(self.dim, faiss.ScalarQuantizer.QT_8bit, m, metric)
        else:
            inner = faiss.IndexHNSWFlat(self.dim, m, metric)
        inner.hnsw.efConstruction = self.parameters["ef_construction"]
        inner.train(vectors)  # sq8: each dimension's range (flat: nothing to train)
        return inner

    def _set_removed(self, removed: torch.Tensor) -> None:
        """``removed``: ids still in the graph but no longer in the index, filtered out of searches."""
        self._removed = removed.sort().values
        self._selector = None
        if removed.numel():
            faiss = self._faiss()
            # IDSelectorNot keeps a reference to the batch selector; both live as long as this index.
            batch = faiss.IDSelectorBatch(self._removed.numpy())
            self._selector = (batch, faiss.IDSelectorNot(batch))

    def _rebuild(self) -> None:
        super()._rebuild()
        self._set_removed(torch.empty(0, dtype=torch.int64))
        self._set_rows()

    def _backend_add(self, vectors: torch.Tensor, ids: torch.Tensor) -> None:
        if torch.isin(ids, self._removed).any():
            # The graph still holds the removed node under that id, and the selector filters by id.
            logger.info(
                "faiss-hnsw: a removed id is added again; rebuilding the graph of %d items", len(self)
            )
            self._rebuild()
        else:
            super()._backend_add(vectors, ids)
            self._set_rows()

    def _backend_remove(self, ids: torch.Tensor) -> None:
        removed = torch.cat([self._removed, ids])
        if removed.numel() > HNSW_MAX_REMOVED_FRACTION * len(self):
            logger.info(
                "faiss-hnsw: %d removed items; rebuilding the graph of %d", removed.numel(), len(self)
            )
            self._rebuild()
        else:
            self._set_removed(removed)
            self._set_rows()

    def _clone_backend(self, other: RetrievalIndex) -> None:
        super()._clone_backend(other)
        other._set_removed(self._removed)
        other._rows = self._rows

    def _backend_count(self) -> int:
        return len(self) + self._removed.numel()

    def _extra_tensors(self) -> dict[str, torch.Tensor]:
        return {"removed": self._removed} if self._removed.numel() else {}

    def _restore(self, directory: Path, extra: dict[str, torch.Tensor]) -> None:
        self._set_removed(extra.get("removed", torch.empty(0, dtype=torch.int64)))
        super()._restore(directory, extra)
        faiss = self._faiss()
        held = "sq8" if isinstance(faiss.downcast_index(self._index.index), faiss.IndexHNSWSQ) else "flat"
        # An index saved before ``storage`` existed (always flat) loads with the default in its place.
        self.parameters["storage"] = held
        self._set_rows()

    def _search_parameters(self, faiss: Any, wanted: int) -> Any:
        # The graph holds sequential ids: the selector of item ids is applied through the IndexIDMap2's
        # id map, by an object made for this call. Without one, the parameters hold nothing but efSearch,
        # which FAISS only reads: one object per value is kept and shared by every search (making one
        # cost about 25 us, a percent or two of a search of 10^6 items).
        ef = max(self.ef_search, wanted)
        if self._selector is None:
            params = self._parameters.get(ef)
            if params is None:
                params = self._parameters[ef] = faiss.SearchParametersHNSW(efSearch=ef)
            return params
        sel = faiss.IDSelectorTranslated(self._index.id_map, self._selector[1])
        return faiss.SearchParametersHNSW(efSearch=ef, sel=sel)


@INDEXES.register("faiss-ivf")
class FaissIVFIndex(_FaissIndex):
    """Approximate inner-product search with FAISS's ``IndexIVFFlat``; ``nlist`` (None: about 4 sqrt(N))
    and ``nprobe`` as in the module docstring."""

    kind = "faiss-ivf"

    def __init__(self, nlist: int | None = None, nprobe: int = 32, seed: int = 0) -> None:
        super().__init__()
        _positive_int(self.kind, "nlist", nlist, 1, optional=True)
        _positive_int(self.kind, "nprobe", nprobe, 1)
        _positive_int(self.kind, "seed", seed, 0)
        self.parameters = {"nlist": nlist, "nprobe": nprobe, "seed": seed}

    @property
    def nlist(self) -> int:
        """The number of cells of the trained index."""
        return int(self._index.nlist)

    def parameters_in_force(self) -> dict[str, Any]:
        return {**self.parameters, "nlist": self.nlist}

    def _new_inner(self, faiss: Any, vectors: np.ndarray) -> Any:
        n = vectors.shape[0]
        nlist = self.parameters["nlist"]
        if nlist is None:
            nlist = max(1, min(round(4 * math.sqrt(n)), n // 39))
        elif nlist > n:
            raise RetrievalError(f"faiss-ivf: nlist {nlist} is more than the {n} items to train on")
        inner = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        inner.cp.seed = self.parameters["seed"]
        inner.train(vectors)  # faiss's Python wrapper keeps the quantizer alive as long as `inner`
        return inner

    def _with_ids(self, faiss: Any, inner: Any) -> Any:
        return inner  # an IVF index stores the ids given to add_with_ids and removes by them

    def _search_parameters(self, faiss: Any, wanted: int) -> Any:
        return faiss.SearchParametersIVF(nprobe=self.parameters["nprobe"])

    def _backend_search(self, faiss: Any, queries: np.ndarray, wanted: int) -> tuple[np.ndarray, np.ndarray]:
        return self._index.search(queries, wanted, params=self._search_parameters(faiss, wanted))


def pq_sub_vectors(dim: int) -> int:
    """The default number of sub-vectors of ``faiss-pq`` for vectors of ``dim`` dimensions: two
    dimensions each (``dim / 2``) when ``dim`` is even, else one each (``dim``)."""
    return dim // 2 if dim % 2 == 0 else dim


@INDEXES.register("faiss-pq")
class FaissPQIndex(_RerankedFaissIndex):
    """Approximate inner-product search by scanning every item's 4-bit product-quantized code with
    FAISS's fast-scan kernels (``IndexPQFastScan``), then re-ranking the ``refine`` x (k + 1) best
    candidates by their exact scores; ``m`` (None: ``pq_sub_vectors(d)``), ``refine`` and ``seed`` as in
    the module docstring."""

    kind = "faiss-pq"

    def __init__(self, m: int | None = None, refine: int = 48, seed: int = 0) -> None:
        super().__init__()
        _positive_int(self.kind, "m", m, 1, optional=True)
        _positive_int(self.kind, "refine", refine, 1)
        _positive_int(self.kind, "seed", seed, 0)
        self.parameters = {"m": m, "refine": refine, "seed": seed}

    @property
    def sub_vectors(self) -> int:
        """The number of sub-vectors each code holds (``m``, or its default for the dimension)."""
        return int(self._faiss().downcast_index(self._index.index).M)

    def parameters_in_force(self) -> dict[str, Any]:
        return {**self.parameters, "m": self.sub_vectors}

    def _new_inner(self, faiss: Any, vectors: np.ndarray) -> Any:
        m = self.parameters["m"] or pq_sub_vectors(self.dim)
        if self.dim % m:
            raise RetrievalError(f"faiss-pq: m {m} does not divide the vectors' dimension {self.dim}")
        if vectors.shape[0] < PQ_CODEWORDS:
            raise RetrievalError(
                f"faiss-pq: training its {PQ_CODEWORDS} codewords per sub-vector needs at least "
                f"{PQ_CODEWORDS} items, got {vectors.shape[0]}; use 'exact' for a catalogue this small"
            )
        inner = faiss.IndexPQFastScan(self.dim, m, 4, faiss.METRIC_INNER_PRODUCT)
        inner.pq.cp.seed = self.parameters["seed"]
        # FAISS warns on stderr below 39 training items per codeword; its k-means samples at most 256
        # per codeword (4,096 vectors), so a catalogue of any size trains in about a second.
        inner.pq.cp.min_points_per_centroid = 1
        inner.train(vectors)
        return inner

    def _backend_search(self, faiss: Any, queries: np.ndarray, wanted: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = super()._backend_search(faiss, queries, wanted)
        # The fast-scan kernels return no candidate at all when every code scores alike (a zero query, a
        # catalogue of copies): those queries are scored exactly, every item, as the exact kind would.
        short = (ids < 0).any(1)
        if short.any():
            every = queries[short] @ self._vectors.numpy().T  # [s, N]
            top = np.argpartition(-every, wanted - 1, axis=1)[:, :wanted]
            scores[short] = np.take_along_axis(every, top, axis=1)
            ids[short] = self._ids.numpy()[top]
        return scores, ids

    def _rebuild(self) -> None:
        super()._rebuild()
        self._set_rows()

    def _backend_add(self, vectors: torch.Tensor, ids: torch.Tensor) -> None:
        super()._backend_add(vectors, ids)  # encoded with the codebooks trained at build
        self._set_rows()

    def _backend_remove(self, ids: torch.Tensor) -> None:
        super()._backend_remove(ids)
        self._set_rows()

    def _clone_backend(self, other: RetrievalIndex) -> None:
        super()._clone_backend(other)
        other._rows = self._rows

    def _restore(self, directory: Path, extra: dict[str, torch.Tensor]) -> None:
        super()._restore(directory, extra)
        self._set_rows()
