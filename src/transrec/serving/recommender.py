"""``Recommender``: top-k recommendations from an export, for users the model never saw, over a catalogue
that grows and shrinks while it serves.

    rec = Recommender.load("exports/hm")                     # index="faiss-hnsw" for large catalogues
    rec.recommend(["242", "302", {"text": "a new red dress", "image": None}], k=10)
    rec.add_items([{"id": "n1", "text": "a new red dress", "image": png_bytes}])
    rec.remove_items(["242"])

Scoring is the papers' ``s(u, i) = <h_u, e_i>`` (MoRec eq. 1; TransRec section 3.2): ``e_i`` is the item
encoder's vector of the item's content, ``h_u`` the user encoder's state at the last position of the
left-padded history (``evaluation.model_eval.user_vectors``, the code evaluation uses, so that serving
and ``transrec evaluate`` rank alike). Because ``e_i`` comes from content, an item that did not exist at
training time is scored the moment it is added (``add_items``), and a history may name such items by
their content (TransRec: a history may mix them).

Threads: ``recommend``, ``recommend_many``, ``similar_items``, ``item`` and ``metadata`` may run in any
number of threads alongside ``add_items`` / ``remove_items``. Readers share a readers-writer lock, held
while they read the catalogue and while they search the index, not during the model's forward pass in
between; a writer encodes its items and writes the ``added/`` overlay without it (writers serialise on
their own lock), then takes it exclusively only to apply the change to the index and the id maps, so no
reader sees a half-applied change. Whatever fails before that (a bad record, a duplicate, a full disk) leaves
the index and the files as they were. Adds that finish encoding while another change is being written
are committed together, by one write and one exclusive section (``_commit_adds``), each with its own
outcome; with ``start_encoder_process`` their encoding (and that of the content records in histories)
runs in another process, off this one's GIL.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

import transrec
from transrec.evaluation.model_eval import user_vectors
from transrec.serving.bundle import (
    ADDED_DIR,
    CACHE_DIR,
    FORMAT_VERSION,
    MODEL_DIR,
    checksum_problems,
    open_export,
)
from transrec.serving.content import ContentLimits, PreparedItem, modality_name
from transrec.serving.encoder_process import EncoderProcess
from transrec.serving.errors import DuplicateItemError, ExportError, InvalidRequestError, UnknownItemError
from transrec.serving.locks import ReadWriteLock
from transrec.serving.overlay import Overlay, read_overlay, read_overlay_files, write_overlay
from transrec.serving.retrieval import RetrievalIndex, make_index

logger = logging.getLogger(__name__)

#: ``k`` may be 1..MAX_K.
MAX_K = 1000
#: New items are encoded this many at a time.
ENCODE_BATCH = 256


@dataclass(frozen=True)
class Recommendation:
    """One answer: ``items`` (raw ids, best first) and their ``scores``; ``popular`` when the history was
    empty (the most popular items of the training data, scored by their training interaction counts);
    ``used_history`` history entries were used and ``truncated`` of the oldest were dropped because the
    history was longer than the model reads (``Recommender.max_len``)."""

    items: list[str]
    scores: list[float]
    popular: bool = False
    used_history: int = 0
    truncated: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Add:
    """One ``add_items`` call, encoded, waiting to be committed (``Recommender._commit_adds``), and its
    outcome once ``done``: ``error`` (None: added), ``replaced`` (how many of its ids it replaced)."""

    ids: list[str]
    prepared: list[PreparedItem]
    vectors: torch.Tensor
    replace: bool
    done: bool = False
    replaced: int = 0
    error: BaseException | None = None


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_K:
        raise InvalidRequestError(f"k must be an integer from 1 to {MAX_K}, got {k!r}")
    return int(k)


def _check_ids(ids: Any, what: str) -> list[str]:
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise InvalidRequestError(f"{what} must be a list of item id strings, got {type(ids).__name__}")
    bad = [i for i in ids if not isinstance(i, str) or not i]
    if bad:
        raise InvalidRequestError(f"{what}: item ids are non-empty strings; got {bad[:5]!r}")
    return list(ids)


class Recommender:
    """Recommendations from an export (``serving.export.export_model``); see the module docstring.

    Build it with ``Recommender.load``. ``max_len`` is the most history entries the model reads (the
    model's ``max_len``, one less for BERT4Rec, whose last slot holds the mask token); ``catalogue_size``
    the items that can be recommended now."""

    def __init__(
        self,
        bundle,
        overlay: Overlay,
        index: RetrievalIndex,
        limits: ContentLimits,
        device: torch.device,
    ) -> None:
        self._bundle, self._model, self._device = bundle, bundle.model, device
        self._preprocessor = bundle.preprocessor(limits)
        self.limits = limits
        self._lock = ReadWriteLock()
        self._writer = threading.Lock()
        self._encoder_process: EncoderProcess | None = None
        self._pending_lock = threading.Lock()
        self._pending: list[_Add] = []  # adds encoded and waiting for _writer (see _commit_adds)
        n = bundle.n_items
        self._n_exported = n
        self._popular_order = np.lexsort((np.arange(n), -bundle.popularity[1:])) + 1  # count desc, index asc
        encoder = self._model.user_encoder
        self._masked = bool(getattr(encoder, "masked_training", False))
        self._apply_overlay(overlay)
        ids = torch.tensor(sorted(self._internal_to_raw), dtype=torch.int64)
        if not len(ids):
            raise ExportError(f"{bundle.directory}: every item has been removed; the catalogue is empty")
        self._index = index.build(self._vectors_of(ids).cpu(), ids)

    # -- loading -------------------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        export_dir: str | Path,
        index: str = "exact",
        device: str | torch.device = "cpu",
        *,
        limits: ContentLimits | None = None,
        index_parameters: dict[str, Any] | None = None,
        verify: bool = True,
    ) -> Recommender:
        """Open the export in ``export_dir`` with its ``added/`` items, under a retrieval index of kind
        ``index`` (``serving.retrieval.INDEXES``: exact, faiss-flat, faiss-hnsw, faiss-ivf, faiss-pq;
        ``index_parameters`` go to it). With ``verify`` every file is checked against its SHA-256 first
        (ExportError naming the files that differ)."""
        empty = make_index(index, **(index_parameters or {}))  # a bad kind or parameter fails first
        device = torch.device(device)
        bundle = open_export(export_dir, verify=verify, device=device)
        overlay_dir = Path(export_dir) / ADDED_DIR
        overlay = read_overlay(overlay_dir)
        if overlay is None:
            overlay = Overlay(next_id=bundle.n_items + 1)
        elif verify:
            problems = checksum_problems(overlay_dir, read_overlay_files(overlay_dir))
            if problems:
                raise ExportError(f"{overlay_dir} does not match its checksums: " + "; ".join(problems))
        return cls(bundle, overlay, empty, limits or ContentLimits(), device)

    def _apply_overlay(self, overlay: Overlay) -> None:
        """Set the id maps and the added vectors from ``overlay`` (when the recommender is built)."""
        removed = set(overlay.removed)
        raw_to_internal = {
            self._bundle.item_ids[i]: i for i in range(1, self._n_exported + 1) if i not in removed
        }
        raw_to_internal.update(zip(overlay.ids, overlay.internal))
        self._raw_to_internal = raw_to_internal
        self._internal_to_raw = {i: raw for raw, i in raw_to_internal.items()}
        self._added_rows = {i: row for row, i in enumerate(overlay.internal)}
        self._overlay = overlay

    def _apply_change(self, overlay: Overlay, dropped: list[int], added: list[tuple[str, int]]) -> None:
        """Update the id maps in place for one change (under the write lock): O(change), not O(catalogue)."""
        for internal in dropped:
            del self._raw_to_internal[self._internal_to_raw.pop(internal)]
        for raw, internal in added:
            self._raw_to_internal[raw], self._internal_to_raw[internal] = internal, raw
        if any(i > self._n_exported for i in dropped):  # added items dropped: the rows below them move
            self._added_rows = {i: row for row, i in enumerate(overlay.internal)}
        else:  # the new items are the overlay's last rows
            for row in range(len(self._added_rows), len(overlay.internal)):
                self._added_rows[overlay.internal[row]] = row
        self._overlay = overlay

    # -- properties ----------------------------------------------------------------------------------------
    @property
    def max_len(self) -> int:
        return self._model.config.max_len - (1 if self._masked else 0)

    @property
    def catalogue_size(self) -> int:
        with self._lock.reading():
            return len(self._raw_to_internal)

    @property
    def export_dir(self) -> Path:
        return self._bundle.directory

    # -- reading -------------------------------------------------------------------------------------------
    def recommend(self, history: Sequence[Any], k: int = 10, exclude_seen: bool = True) -> Recommendation:
        """The top ``k`` items for a user whose history (oldest first) is ``history``: raw item ids of the
        catalogue and/or content records ``{"text", "image"}`` of items it does not hold (encoded on the
        fly, not added). With ``exclude_seen`` the history's catalogue items (and catalogue items named
        by a record's ``id``) are never recommended. Fewer than ``k`` items come back only when the
        catalogue has fewer left. Raises UnknownItemError (every unknown id), ContentError,
        InvalidRequestError (``k`` outside 1..1000, a malformed history)."""
        return self.recommend_many([history], k, exclude_seen)[0]

    def recommend_many(
        self, histories: Sequence[Sequence[Any]], k: int = 10, exclude_seen: bool = True
    ) -> list[Recommendation]:
        """``recommend`` for several users: one item-encoder pass over all their content records, one
        user-encoder pass, one index search."""
        k = _check_k(k)
        if isinstance(histories, (str, bytes)) or not isinstance(histories, Sequence):
            raise InvalidRequestError(
                f"histories must be a list of histories, got {type(histories).__name__}"
            )
        histories = [self._check_history(h, u) for u, h in enumerate(histories)]
        records = [
            (u, t, e) for u, h in enumerate(histories) for t, e in enumerate(h) if isinstance(e, Mapping)
        ]
        prepared = [self._preprocessor.prepare_one(e, f"history {u} entry {t}") for u, t, e in records]
        record_vectors = self._encode(prepared, self._encoder_process)
        record_row = {(u, t): j for j, (u, t, _) in enumerate(records)}
        answers: list[Recommendation | None] = [None] * len(histories)
        # Two short read sections: the catalogue is read (ids resolved, the vectors of the histories'
        # items copied), then the model runs with no lock held, then the index is searched and its ids
        # named. A change committed in between is simply seen by the search: a writer waits for a search,
        # not for a forward pass. Seen items are excluded by their raw id, resolved at the search.
        with self._lock.reading():
            unknown = list(
                dict.fromkeys(
                    e for h in histories for e in h if isinstance(e, str) and e not in self._raw_to_internal
                )
            )
            if unknown:
                raise UnknownItemError(unknown)
            queries = []
            for u, history in enumerate(histories):
                if not history:
                    answers[u] = self._popular(k)
                else:
                    queries.append(u)
            if not queries:
                return answers  # type: ignore[return-value]
            table, arrays, used = self._inputs(histories, queries, record_vectors, record_row)
        with torch.no_grad():
            vectors = user_vectors(
                self._model, table, arrays, np.zeros(len(arrays), dtype=np.int64), self._device
            )
        vectors = self._model.ranking_users(vectors).float().cpu()
        with self._lock.reading():
            self._search(histories, queries, vectors, used, k, exclude_seen, answers)
        return answers  # type: ignore[return-value]

    def _check_history(self, history: Any, u: int) -> list[Any]:
        if isinstance(history, (str, bytes)) or not isinstance(history, Sequence):
            raise InvalidRequestError(
                f"history {u} must be a list of item ids and content records, got {type(history).__name__}"
            )
        for t, entry in enumerate(history):
            if not (isinstance(entry, str) and entry) and not isinstance(entry, Mapping):
                raise InvalidRequestError(
                    f"history {u} entry {t}: an item id (a non-empty string) or a content record (a dict), "
                    f"got {entry!r}"[:300]
                )
        return list(history)

    def _inputs(self, histories, queries, record_vectors, record_row):
        """The user encoder's inputs for the users ``queries`` (under the read lock): a small item table
        (padding, the histories' catalogue items, then the records), each history's rows of it (its most
        recent ``max_len`` entries), and how many entries each uses."""
        room = self.max_len
        catalogue_rows: dict[int, int] = {}  # internal id -> row of the small table (row 0: padding)
        local, used = [], []
        for u in queries:
            history = histories[u]
            first = max(len(history) - room, 0)  # the most recent `room` entries
            rows = []
            for t in range(first, len(history)):
                entry = history[t]
                if isinstance(entry, str):
                    rows.append(
                        catalogue_rows.setdefault(self._raw_to_internal[entry], len(catalogue_rows) + 1)
                    )
                else:
                    rows.append(-1 - record_row[(u, t)])  # a record: placed after the catalogue rows below
            local.append(rows)
            used.append(len(history) - first)
        table = self._table(list(catalogue_rows), record_vectors)
        offset = len(catalogue_rows) + 1
        arrays = [
            np.array([r if r > 0 else offset + (-1 - r) for r in rows], dtype=np.int64) for rows in local
        ]
        return table, arrays, used

    def _search(self, histories, queries, vectors, used, k, exclude_seen, answers) -> None:
        """Fill ``answers[u]`` for each user ``u`` of ``queries`` from their ``vectors`` (under the read
        lock); with ``exclude_seen``, the catalogue items a history names (by id, or by a record's ``id``)
        are excluded."""
        excludes = []
        for u in queries:
            seen = set()
            if exclude_seen:
                for entry in histories[u]:
                    raw = entry if isinstance(entry, str) else entry.get("id")
                    if raw in self._raw_to_internal:
                        seen.add(self._raw_to_internal[raw])
            excludes.append(sorted(seen))
        kk = min(k, len(self._index))
        scores, ids = self._index.search(vectors, kk, exclude=excludes)
        for q, (row_scores, row_ids) in enumerate(zip(scores.tolist(), ids.tolist(), strict=True)):
            u = queries[q]
            items, kept = self._named(row_scores, row_ids)
            answers[u] = Recommendation(
                items=items,
                scores=kept,
                popular=False,
                used_history=used[q],
                truncated=len(histories[u]) - used[q],
            )

    def _named(self, scores: list[float], ids: list[int]) -> tuple[list[str], list[float]]:
        """One search result row as raw ids and their scores, without the padding (id -1). Python lists:
        iterating tensors element by element cost a tenth of a recommendation's CPU."""
        names = self._internal_to_raw
        return [names[i] for i in ids if i >= 0], [s for s, i in zip(scores, ids, strict=True) if i >= 0]

    def _table(self, internal_ids: list[int], record_vectors: torch.Tensor | None) -> torch.Tensor:
        """``[1 + len(internal_ids) + records, d]``: padding, the catalogue items, then the records."""
        d = self._model.config.d_model
        parts = [torch.zeros(1, d, device=self._device)]
        if internal_ids:
            parts.append(self._vectors_of(torch.tensor(internal_ids, dtype=torch.int64)).to(self._device))
        if record_vectors is not None and len(record_vectors):
            parts.append(record_vectors.to(self._device))
        return torch.cat(parts)

    def _vectors_of(self, internal: torch.Tensor) -> torch.Tensor:
        """``[len(internal), d]`` vectors of catalogue items (exported or added) by internal id."""
        exported = internal <= self._n_exported
        if bool(exported.all()):  # the common case, one gather
            return self._bundle.vectors[internal.to(self._bundle.vectors.device)].to(self._device)
        out = torch.empty(len(internal), self._model.config.d_model, device=self._device)
        if exported.any():
            out[exported] = self._bundle.vectors[internal[exported].to(self._bundle.vectors.device)].to(
                self._device
            )
        if (~exported).any():
            rows = torch.tensor([self._added_rows[int(i)] for i in internal[~exported]], dtype=torch.int64)
            out[~exported] = self._overlay.vectors[rows].to(self._device)
        return out

    def _vector(self, internal: int) -> torch.Tensor:
        return self._vectors_of(torch.tensor([internal], dtype=torch.int64))[0]

    def _popular(self, k: int) -> Recommendation:
        """The ``k`` most popular items now in the catalogue (training counts; added items count 0, after
        every catalogue item, oldest first)."""
        items, scores = [], []
        counts = self._bundle.popularity
        for index in self._popular_order:
            if len(items) == k:
                break
            raw = self._internal_to_raw.get(int(index))
            if raw is not None:
                items.append(raw)
                scores.append(float(counts[index]))
        for internal in self._overlay.internal:
            if len(items) == k:
                break
            items.append(self._internal_to_raw[internal])
            scores.append(0.0)
        return Recommendation(items=items, scores=scores, popular=True, used_history=0, truncated=0)

    def similar_items(self, item_id: str, k: int = 10) -> Recommendation:
        """The ``k`` items whose vectors have the largest inner product with ``item_id``'s (itself
        excluded); ``used_history`` is 1. Raises UnknownItemError."""
        k = _check_k(k)
        if not isinstance(item_id, str) or not item_id:
            raise InvalidRequestError(f"item_id must be a non-empty string, got {item_id!r}")
        with self._lock.reading():
            internal = self._raw_to_internal.get(item_id)
            if internal is None:
                raise UnknownItemError([item_id])
            query = self._model.ranking_users(self._vector(internal)[None]).float().cpu()
            scores, ids = self._index.search(query, min(k, len(self._index)), exclude=[[internal]])
            items, kept = self._named(scores[0].tolist(), ids[0].tolist())
            return Recommendation(items=items, scores=kept, used_history=1)

    def item(self, item_id: str) -> dict[str, Any]:
        """``{"id", "text", "modality", "added"}`` of a catalogue item; UnknownItemError otherwise."""
        with self._lock.reading():
            internal = self._raw_to_internal.get(item_id) if isinstance(item_id, str) else None
            if internal is None:
                raise UnknownItemError([item_id])
            if internal <= self._n_exported:
                b = self._bundle
                return {
                    "id": item_id,
                    "text": b.texts[internal],
                    "modality": modality_name(int(b.modality[internal])),
                    "added": False,
                }
            item = self._overlay.items[self._added_rows[internal]]
            return {"id": item_id, "text": item.text, "modality": modality_name(item.modality), "added": True}

    def metadata(self) -> dict[str, Any]:
        """Model, dataset, item counts, versions, the index kind and its parameters in force, and where
        added items are encoded (for ``GET /metadata``)."""
        config, manifest = self._model.config, self._bundle.manifest
        with self._lock.reading():
            added, removed = len(self._overlay.ids), len(self._overlay.removed)
            catalogue = len(self._raw_to_internal)
        return {
            "model": {
                "item_encoder": config.item_encoder,
                "user_encoder": config.user_encoder,
                "d_model": config.d_model,
                "max_len": self.max_len,
                "reads_text": self._preprocessor.reads_text,
                "reads_image": self._preprocessor.reads_image,
            },
            "dataset": {"name": manifest["dataset"]["name"]},
            "counts": {
                "exported": self._n_exported,
                "added": added,
                "removed": removed,
                "catalogue": catalogue,
            },
            "versions": {
                "transrec": transrec.__version__,
                "torch": version("torch"),
                "export_format": FORMAT_VERSION,
                "exported_with": manifest["versions"],
            },
            "index": self._index.kind,
            "index_parameters": self._index.parameters_in_force(),
            "encoder": self._encoder_info(),
            "limits": asdict(self.limits),
        }

    def _encoder_info(self) -> dict[str, str]:
        """Where added items are encoded, and what runs their text backbone (``serving.onnx_backbone``)."""
        process = self._encoder_process
        if process is None or process.engine_choice is None:
            return {"where": "this process", "engine": "torch", "detail": "no encoder process"}
        return {"where": "encoder process", **asdict(process.engine_choice)}

    # -- writing -------------------------------------------------------------------------------------------
    def start_encoder_process(self, **options: Any) -> EncoderProcess:
        """From now on ``add_items``, and ``recommend`` for the content records of histories, encode in a
        process of their own holding a copy of the item encoder (``serving.encoder_process``: the forward
        pass runs off this process's GIL, so it no longer slows the requests served meanwhile). Returns
        once that process has loaded the model (a few seconds; about 9 more for MiniLM when its text
        backbone is exported to ONNX Runtime, the default ``engine="auto"`` where the ``[onnx]`` extra is
        installed; 1-3 s more at later starts, which load the graph the first kept in the export's
        ``cache/``); ``options`` go to ``EncoderProcess`` (``engine``, ``torch_threads``, timeouts,
        ``onnx_cache``: None keeps no graph). Idempotent; ``stop_encoder_process`` ends it."""
        if self._encoder_process is None:
            options.setdefault("onnx_cache", self._bundle.directory / CACHE_DIR)
            self._encoder_process = EncoderProcess(
                self._bundle.directory / MODEL_DIR,
                self._preprocessor.batch,
                device=str(self._device),
                max_batch=ENCODE_BATCH,
                **options,
            )
        return self._encoder_process

    def stop_encoder_process(self) -> None:
        """Stop the encoder process (``start_encoder_process``): adds and history records are encoded here
        again."""
        process, self._encoder_process = self._encoder_process, None
        if process is not None:
            process.close()

    def _encode(
        self, prepared: list[PreparedItem], process: EncoderProcess | None = None
    ) -> torch.Tensor | None:
        """The item encoder's vectors of ``prepared``, here or by ``process``."""
        if not prepared:
            return None
        if process is not None:  # it batches, and answers concurrent calls together
            return process.encode(prepared).to(self._device)
        parts = []
        with torch.no_grad():
            for start in range(0, len(prepared), ENCODE_BATCH):
                batch = self._preprocessor.batch(prepared[start : start + ENCODE_BATCH]).to(self._device)
                parts.append(self._model.encode_items(batch).float())
        return torch.cat(parts)

    def add_items(self, records: Sequence[Mapping[str, Any]], replace: bool = False) -> list[str]:
        """Encode ``records`` (``{"id", "text", "image"}``) with the model's item encoder and add them to
        the catalogue: recommended from the next call on, and persisted in the export's ``added/`` so that
        ``load`` has them after a restart. An id already in the catalogue raises DuplicateItemError (all
        of them listed) unless ``replace``. Every record is checked and encoded before anything changes:
        one bad record (ContentError, InvalidRequestError) leaves the catalogue and the files as they
        were. Returns the ids added."""
        if isinstance(records, (Mapping, str, bytes)) or not isinstance(records, Sequence):
            raise InvalidRequestError(f"records must be a list of item records, got {type(records).__name__}")
        if not records:
            return []
        ids = []
        for j, record in enumerate(records):
            item_id = record.get("id") if isinstance(record, Mapping) else None
            if not isinstance(item_id, str) or not item_id:
                raise InvalidRequestError(f"record {j}: an added item needs an 'id' (a non-empty string)")
            ids.append(item_id)
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise DuplicateItemError(repeated, f"item ids repeated within one request: {repeated[:20]}")
        prepared = self._preprocessor.prepare(records)
        vectors = self._encode(prepared, self._encoder_process)
        change = _Add(ids, prepared, vectors, replace)
        with self._pending_lock:
            self._pending.append(change)
        with self._writer:
            if not change.done:  # not committed with an earlier caller's group: commit all that wait
                with self._pending_lock:
                    group, self._pending = self._pending, []
                self._commit_adds(group)
        if change.error is not None:
            raise change.error
        logger.info("added %d items (%d replaced)", len(ids), change.replaced)
        return ids

    def _commit_adds(self, group: list[_Add]) -> None:
        """Apply the adds of ``group`` (under ``_writer``), in their order, as one change: one write of
        ``added/`` and one exclusive section for the index and the maps. Concurrent adds queue while a
        commit writes; committing them together keeps a burst of adds from queueing one write behind the
        other. Each add gets its own outcome (``_Add.error``: a duplicate id refuses that add only); a
        failed write fails every add of the group and changes nothing."""
        staged: dict[str, int] = {}  # raw id -> internal id, for the ids the group's earlier adds set

        def current(raw: str) -> int | None:
            return staged[raw] if raw in staged else self._raw_to_internal.get(raw)

        overlay, accepted = self._overlay, []
        for change in group:
            existing = [i for i in change.ids if current(i) is not None]
            if existing and not change.replace:
                change.error, change.done = DuplicateItemError(existing), True
                continue
            old = [current(i) for i in existing]
            overlay = overlay.with_changes(
                drop_added={i for i in old if i > self._n_exported},
                drop_exported={i for i in old if i <= self._n_exported},
                new=list(zip(change.ids, change.prepared, strict=True)),
                new_vectors=change.vectors,
            )
            new_internal = list(overlay.internal[-len(change.ids) :])
            staged.update(zip(change.ids, new_internal, strict=True))
            change.replaced = len(existing)
            accepted.append((change, old, new_internal))
        if not accepted:
            return
        try:
            overlay = self._persist(overlay)
        except BaseException as err:
            for change, _, _ in accepted:  # each caller raises it (this one too, in add_items)
                change.error, change.done = err, True
            return
        with self._lock.writing():
            for change, old, new_internal in accepted:
                self._index.add(change.vectors.cpu(), torch.tensor(new_internal, dtype=torch.int64))
                if old:
                    self._index.remove(torch.tensor(old, dtype=torch.int64))
                self._apply_change(overlay, old, list(zip(change.ids, new_internal, strict=True)))
        for change, _, _ in accepted:
            change.done = True

    def remove_items(self, ids: Sequence[str]) -> None:
        """Remove the items ``ids`` from the catalogue (catalogue items and added ones alike), persisted
        like ``add_items``. Raises UnknownItemError listing every id it does not hold (nothing is removed
        then), InvalidRequestError when the catalogue would be left empty."""
        ids = list(dict.fromkeys(_check_ids(ids, "ids")))
        if not ids:
            return
        with self._writer:
            unknown = [i for i in ids if i not in self._raw_to_internal]
            if unknown:
                raise UnknownItemError(unknown)
            if len(ids) >= len(self._raw_to_internal):
                raise InvalidRequestError("removing these items would leave the catalogue empty")
            old = [self._raw_to_internal[i] for i in ids]
            overlay = self._overlay.with_changes(
                drop_added={i for i in old if i > self._n_exported},
                drop_exported={i for i in old if i <= self._n_exported},
                new=[],
                new_vectors=None,
            )
            overlay = self._persist(overlay)
            with self._lock.writing():
                self._index.remove(torch.tensor(old, dtype=torch.int64))
                self._apply_change(overlay, old, [])
        logger.info("removed %d items", len(ids))

    def _persist(self, overlay: Overlay) -> Overlay:
        return write_overlay(self._bundle.directory / ADDED_DIR, overlay)
