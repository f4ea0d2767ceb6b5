"""Preparation: a raw dataset (any loader) -> a prepared dataset directory (``transrec.data.prepared``).

Steps, in order, each counted in the preparation report:

1. Item content: empty texts, missing and corrupt images are found (images are decoded and resized once,
   here, only for items that occur in the interaction log); the modality policy is applied
   (``all``, ``text``, ``image``, or ``mom``: exactly one modality per item); items left with no content
   are removed with their interactions (``require_content``).
2. Interactions with items absent from the item table are removed.
3. Chronological order per user: by timestamp, ties broken by **file order** (the row read first comes
   first; ``tie_break="file_order"``, the default) or by item id (``"item_id"``: numeric ids compare as
   numbers, otherwise as strings). The last interaction after this ordering is the test target.
4. De-duplication of repeated (user, item) pairs, keeping the earliest (``dedup``).
5. Iterative k-core (``user_k``, ``item_k``); users with fewer than 3 interactions (which cannot be split
   leave-one-out) are always removed.
6. Optional new-item protocol (``new_items``, ``transrec.data.new_items``): the items first seen latest
   are marked new; their interactions leave training and validation (a user's last one, the test
   target, stays); users left with fewer than 3 interactions are removed; new items stay in the
   catalogue. Recorded in ``meta.json`` (``new_items``) and ``item_is_new.npy``.
7. Optional truncation to each user's most recent ``max_seq_len`` interactions (after k-core, which is
   not re-run; the papers train on the last 20-25 items).
8. Items are indexed 1..n in item-table order (0 is padding), users 0..n-1 in order of first appearance
   in the log; texts are tokenised once and images stored once.

Output is written to a temporary directory and renamed into place, so a killed preparation never
leaves a half-written dataset. The same inputs and config give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

import transrec
from transrec.config import ConfigError, to_dict
from transrec.data import filtering, new_items
from transrec.data.errors import DataError
from transrec.data.image_store import CorruptImageError, ImageStore, ImageStoreWriter, decode_and_resize
from transrec.data.loaders.common import normalise_text
from transrec.data.prepared import FORMAT_VERSION, IMAGE, TEXT, PreparedDataset
from transrec.data.report import PreparationReport
from transrec.data.schema import FeatureValue, ImageRef, RawDataset
from transrec.data.tokenize import build_tokenizer, tokenize_texts
from transrec.errors import PathExistsError


@dataclass
class PrepareConfig:
    """How a raw dataset is prepared.

    Args:
        user_k: users with fewer interactions are removed, iteratively with ``item_k`` (papers: 5).
        item_k: items with fewer interactions are removed (papers: 5).
        dedup: repeated (user, item) pairs: keep the ``first`` (earliest), the ``last``, or ``none`` removed.
        tie_break: order of same-timestamp interactions of a user: ``file_order`` or ``item_id``.
        max_seq_len: keep only each user's most recent interactions (None: all).
        modality: ``all`` keeps what items have; ``text``/``image`` keep one modality for every item;
            ``mom`` (mixture of modality, TransRec) keeps exactly one per item, choosing the image for
            an item with both with probability ``mom_image_fraction`` (seeded by ``seed``).
        mom_image_fraction: see ``modality``.
        require_content: remove items without text and image (set False for ID-only data).
        tokenizer: ``hash``, ``minilm``, ``none`` or a Hugging Face tokenizer directory.
        hash_vocab_size: vocabulary size of the hash tokenizer.
        max_text_tokens: tokens kept per text, special tokens included (papers: 30-50).
        image_size: images are resized (shorter side) and centre-cropped to this square (papers: 224).
        image_format: ``jpeg`` (compact) or ``raw`` (uint8 array, no decoding when training).
        jpeg_quality: JPEG quality of stored images.
        seed: seed of the ``mom`` modality draw.
        new_items: mark this fraction of the items (after k-core) as new, those first seen latest (ties
            by item id), and keep every interaction with them out of training and validation: only a
            user's last interaction, the test target, may be a new item; users left with fewer than 3
            interactions are removed. New items stay in the catalogue. 0: no new-item protocol. See
            ``transrec.data.new_items``; MoRec Appendix Table 9 evaluates such items.
        workers: processes decoding images (0: in this process).
    """

    user_k: int = 5
    item_k: int = 5
    dedup: Literal["first", "last", "none"] = "first"
    tie_break: Literal["file_order", "item_id"] = "file_order"
    max_seq_len: int | None = None
    modality: Literal["all", "text", "image", "mom"] = "all"
    mom_image_fraction: float = 0.5
    require_content: bool = True
    tokenizer: str = "hash"
    hash_vocab_size: int = 30522
    max_text_tokens: int = 32
    image_size: int = 224
    image_format: Literal["jpeg", "raw"] = "jpeg"
    jpeg_quality: int = 95
    seed: int = 0
    new_items: float = 0.0
    workers: int = 0

    def __post_init__(self) -> None:
        if self.user_k < 1 or self.item_k < 1:
            raise ConfigError("user_k and item_k must be at least 1")
        if self.max_seq_len is not None and self.max_seq_len < 3:
            raise ConfigError("max_seq_len must be at least 3 (training, validation and test items)")
        if not 0.0 <= self.mom_image_fraction <= 1.0:
            raise ConfigError("mom_image_fraction must be within [0, 1]")
        if self.image_size < 8:
            raise ConfigError("image_size must be at least 8")
        if not 0.0 <= self.new_items < 1.0:
            raise ConfigError(f"new_items must be a fraction of the items in [0, 1), got {self.new_items}")


def _decode(args: tuple[ImageRef, int]) -> tuple[str, Any]:
    """Read, decode and resize one image: ("ok", uint8 array) or ("missing"/"corrupt", message)."""
    ref, size = args
    try:
        data = ref.read_bytes()
    except FileNotFoundError:
        return "missing", ref.describe()
    except OSError as err:
        return "missing", f"{ref.describe()}: {err}"
    try:
        return "ok", np.asarray(decode_and_resize(data, size), dtype=np.uint8)
    except CorruptImageError as err:
        return "corrupt", f"{ref.describe()}: {err}"


def _natural_rank(ids: list[str]) -> np.ndarray:
    """Rank of each id in natural order: as integers when all are integers, else as strings."""
    try:
        keys: list[Any] = [int(i) for i in ids]
    except ValueError:
        keys = list(ids)
    order = sorted(range(len(ids)), key=keys.__getitem__)
    rank = np.empty(len(ids), dtype=np.int64)
    rank[order] = np.arange(len(ids))
    return rank


def _factorize(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Codes in order of first appearance, and the distinct values in that order."""
    codes = np.empty(len(values), dtype=np.int64)
    table: dict[str, int] = {}
    for i, value in enumerate(values):
        codes[i] = table.setdefault(value, len(table))
    return codes, list(table)


def _encode_feature(values: list[FeatureValue]) -> tuple[np.ndarray, list[str], str]:
    """Category indices (0 = missing), the sorted vocabulary, and the kind ('single' or 'multi')."""
    multi = any(isinstance(v, list) for v in values)
    vocab = sorted({x for v in values if v for x in (v if isinstance(v, list) else [v])})
    index = {value: i + 1 for i, value in enumerate(vocab)}
    if not multi:
        return np.array([index[v] if v else 0 for v in values], dtype=np.int32), vocab, "single"
    width = max((len(v) for v in values if isinstance(v, list)), default=1)
    array = np.zeros((len(values), max(width, 1)), dtype=np.int32)
    for row, v in enumerate(values):
        cats = v if isinstance(v, list) else ([v] if v else [])
        array[row, : len(cats)] = [index[c] for c in cats]
    return array, vocab, "multi"


def _fingerprint(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def _save_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


def prepare(
    raw: RawDataset,
    config: PrepareConfig,
    output: str | Path,
    *,
    source: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> PreparedDataset:
    """Prepare ``raw`` into the directory ``output`` and open it.

    ``source`` (e.g. the loader's name and options) is recorded in the metadata. An existing
    ``output`` is replaced only with ``overwrite``. Raises DataError when nothing survives filtering.
    """
    output = Path(output)
    if output.exists() and not overwrite:
        raise PathExistsError(f"{output} exists; pass overwrite=True (--overwrite) to replace it")
    started = time.perf_counter()
    report = PreparationReport()
    report.merge(raw.report)
    inter = raw.interactions
    if len(inter) == 0:
        raise DataError(f"dataset {raw.name!r} has no interactions")

    # 1-2. Item content and the catalogue.
    if raw.items is None:
        if config.require_content:
            raise DataError(
                f"dataset {raw.name!r} has no item table, so items have no content; "
                "set require_content=false to prepare it for ID models only"
            )
        item_codes, item_ids = _factorize(inter.items)
        texts = [""] * len(item_ids)
        images: list[ImageRef | None] = [None] * len(item_ids)
        features: dict[str, list[FeatureValue]] = {}
    else:
        item_ids, texts = raw.items.ids, [normalise_text(t) for t in raw.items.texts]
        images, features = list(raw.items.images), raw.items.features
        position = {item: k for k, item in enumerate(item_ids)}
        item_codes = np.array([position.get(i, -1) for i in inter.items], dtype=np.int64)
    n_raw_items = len(item_ids)
    known = item_codes >= 0
    if not known.all():
        bad = np.flatnonzero(~known)
        report.add("unknown_item", len(bad), example=f"user {inter.users[bad[0]]} item {inter.items[bad[0]]}")
    used = np.zeros(n_raw_items, dtype=bool)
    used[item_codes[known]] = True

    has_text = np.array([bool(t) for t in texts], dtype=bool)
    has_image = np.array([img is not None for img in images], dtype=bool)
    if raw.items is not None:
        report.add("empty_text", int((used & ~has_text).sum()), example=_first_id(item_ids, used & ~has_text))
    if config.modality == "text":
        report.add("modality_dropped", int((used & has_image).sum()))
        has_image[:] = False
    if config.modality == "image":
        report.add("modality_dropped", int((used & has_text).sum()))
        has_text[:] = False

    work = tempfile_dir(output)
    try:
        staged_row = np.full(n_raw_items, -1, dtype=np.int64)
        staged = None
        to_decode = np.flatnonzero(used & has_image)
        if len(to_decode):
            staged, ok = _stage_images(work, images, to_decode, config, report, progress)
            staged_row[to_decode[ok]] = np.flatnonzero(ok)
            has_image[to_decode[~ok]] = False
        has_image &= staged_row >= 0
        if config.modality == "mom":
            draw = np.random.default_rng(config.seed).random(n_raw_items)
            both = used & has_text & has_image
            keep_image = draw < config.mom_image_fraction
            report.add("modality_dropped", int(both.sum()))
            has_text &= ~(both & keep_image)
            has_image &= ~(both & ~keep_image)

        valid_item = np.ones(n_raw_items, dtype=bool)
        if config.require_content:
            valid_item = has_text | has_image
            contentless = used & ~valid_item
            report.add(
                "item_without_content", int(contentless.sum()), example=_first_id(item_ids, contentless)
            )
        keep = known.copy()
        keep[known] = valid_item[item_codes[known]]
        report.add("interaction_of_removed_item", int((known & ~keep).sum()))

        # 3-6. Order, de-duplicate, filter, truncate.
        user_codes, user_ids = _factorize(inter.users)
        rows = np.flatnonzero(keep)
        users, items, stamps = user_codes[rows], item_codes[rows], inter.timestamps[rows]
        tie = rows if config.tie_break == "file_order" else _natural_rank(item_ids)[items]
        order = filtering.chronological_order(users, stamps, tie)
        users, items, stamps = users[order], items[order], stamps[order]
        first = filtering.first_occurrence_mask(users, items, n_raw_items, config.dedup)
        if not first.all():
            d = np.flatnonzero(~first)[0]
            report.add(
                "duplicate_interaction",
                int((~first).sum()),
                example=f"user {user_ids[users[d]]} item {item_ids[items[d]]}",
            )
        users, items, stamps = users[first], items[first], stamps[first]
        core = filtering.k_core(users, items, len(user_ids), n_raw_items, config.user_k, config.item_k)
        report.add("kcore_user", len(core.removed_users))
        report.add("kcore_item", len(core.removed_items))
        report.add(
            "short_user",
            len(core.short_users),
            example=user_ids[core.short_users[0]] if len(core.short_users) else None,
        )
        report.add("short_user_interaction", core.short_user_interactions)
        report.add("kcore_interaction", int((~core.keep).sum()) - core.short_user_interactions)
        users, items, stamps = users[core.keep], items[core.keep], stamps[core.keep]
        is_new = np.zeros(n_raw_items, dtype=bool)
        if config.new_items > 0:
            users, items, stamps, is_new = _apply_new_items(users, items, stamps, item_ids, config, report)
        if config.max_seq_len is not None:
            recent = filtering.last_n_mask(users, config.max_seq_len)
            report.add("truncated_interaction", int((~recent).sum()))
            users, items, stamps = users[recent], items[recent], stamps[recent]
        if len(users) == 0:
            raise DataError(
                f"no interaction of {raw.name!r} survives filtering (user_k={config.user_k}, "
                f"item_k={config.item_k}); report:\n{report.format()}"
            )

        # 8. Indexing and writing; new items stay in the catalogue even without any interaction left.
        final_items = np.flatnonzero((np.bincount(items, minlength=n_raw_items) > 0) | is_new)
        removed_by_core = np.zeros(n_raw_items, dtype=bool)
        removed_by_core[core.removed_items] = True
        unused = valid_item & ~removed_by_core & ~np.isin(np.arange(n_raw_items), final_items)
        report.add("unused_item", int(unused.sum()))
        item_index = np.zeros(n_raw_items, dtype=np.int64)
        item_index[final_items] = np.arange(1, len(final_items) + 1)
        final_users = np.flatnonzero(np.bincount(users, minlength=len(user_ids)) > 0)
        user_index = np.zeros(len(user_ids), dtype=np.int64)
        user_index[final_users] = np.arange(len(final_users))
        seq_users = user_index[users]
        offsets = np.concatenate(([0], np.cumsum(np.bincount(seq_users, minlength=len(final_users))))).astype(
            np.int64
        )
        np.save(work / "seq_offsets.npy", offsets)
        np.save(work / "seq_items.npy", item_index[items].astype(np.int32))
        np.save(work / "seq_timestamps.npy", stamps.astype(np.float64))

        modality = np.zeros(len(final_items) + 1, dtype=np.uint8)
        modality[1:] = has_text[final_items] * TEXT + has_image[final_items] * IMAGE
        np.save(work / "item_modality.npy", modality)
        new_meta = None
        if config.new_items > 0:
            item_is_new = np.concatenate([[False], is_new[final_items]])
            np.save(work / "item_is_new.npy", item_is_new)
            last_items = item_index[items][np.cumsum(np.bincount(seq_users)) - 1]
            new_meta = {
                "fraction": config.new_items,
                "items": int(item_is_new.sum()),
                "test_users": int(item_is_new[last_items].sum()),
                "indices": np.flatnonzero(item_is_new).tolist(),
                "rule": _NEW_ITEM_RULE,
            }
        _save_jsonl(
            work / "users.jsonl", [{"index": i, "id": user_ids[u]} for i, u in enumerate(final_users)]
        )
        item_texts = [texts[c] if has_text[c] else "" for c in final_items]
        _save_jsonl(
            work / "items.jsonl",
            [
                {
                    "index": i + 1,
                    "id": item_ids[c],
                    "text": item_texts[i],
                    "modality": ["none", "text", "image", "both"][int(modality[i + 1])],
                }
                for i, c in enumerate(final_items)
            ],
        )
        tokenizer_meta = _write_tokens(work, item_texts, config)
        image_meta = None
        if staged is not None and has_image[final_items].any():
            image_meta = _write_images(work, staged, staged_row[final_items], config)
        feature_meta = _write_features(work, raw, features, final_items, [user_ids[u] for u in final_users])
        if staged is not None:
            staged.cleanup()

        counts = {
            "users": len(final_users),
            "items": len(final_items),
            "interactions": len(items),
            "items_text_only": int((modality[1:] == TEXT).sum()),
            "items_image_only": int((modality[1:] == IMAGE).sum()),
            "items_text_and_image": int((modality[1:] == TEXT | IMAGE).sum()),
            "raw_interactions": len(inter),
            "raw_items": n_raw_items,
        }
        meta = {
            "format_version": FORMAT_VERSION,
            "name": raw.name,
            "transrec_version": transrec.__version__,
            "counts": counts,
            "config": to_dict(config),
            "source": {**(source or {}), "files": [_fingerprint(f) for f in raw.files]},
            "split": "leave-one-out: train s[:-2], valid target s[-2], test target s[-1]",
            "tie_rule": _TIE_RULES[config.tie_break],
            "new_items": new_meta,
            "tokenizer": tokenizer_meta,
            "images": image_meta,
            "features": feature_meta,
            "notes": list(raw.notes),
            "report": report.to_dict(),
        }
        (work / "meta.json").write_text(
            json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        _move_into_place(work, output, overwrite)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    dataset = PreparedDataset(output)
    dataset.elapsed_seconds = time.perf_counter() - started
    return dataset


_TIE_RULES = {
    "file_order": "same-timestamp interactions of a user keep their file order (the row read first first)",
    "item_id": "same-timestamp interactions of a user are ordered by item id (numeric if all ids are)",
}


_NEW_ITEM_RULE = (
    "the items first seen latest (earliest interaction after k-core; ties by item id) are new: no "
    "interaction with them in training or validation, only as a user's last item (test target)"
)


def _apply_new_items(users, items, stamps, item_ids, config, report):
    """Step 6: mark the new items (bool over raw item codes) and drop their interactions, except each
    user's last; returns the remaining ``users, items, stamps`` and the mask (``data.new_items``)."""
    is_new = new_items.mark_new_items(items, stamps, _natural_rank(item_ids), len(item_ids), config.new_items)
    removal = new_items.remove_new_item_interactions(users, items, is_new)
    report.add("new_item", int(is_new.sum()), example=_first_id(item_ids, is_new))
    report.add("new_item_interaction", removal.removed_interactions)
    report.add("new_item_short_user", len(removal.short_users))
    report.add("new_item_user_interaction", removal.short_user_interactions)
    report.add("new_item_test_user", removal.new_target_users)
    keep = removal.keep
    return users[keep], items[keep], stamps[keep], is_new


def _first_id(ids: list[str], mask: np.ndarray) -> str | None:
    hits = np.flatnonzero(mask)
    return f"item {ids[hits[0]]}" if len(hits) else None


def tempfile_dir(output: Path) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    work = output.parent / f".{output.name}.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    return work


def _move_into_place(work: Path, output: Path, overwrite: bool) -> None:
    if output.exists():
        if not overwrite:
            raise PathExistsError(f"{output} exists")
        old = output.parent / f".{output.name}.old-{os.getpid()}"
        output.rename(old)
        work.rename(output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        work.rename(output)


class _StagedImages:
    """Images of candidate items, decoded once, in a temporary store until the indexing is known.

    Staged in the final layout, so JPEG bytes are encoded once and copied, never re-compressed.
    """

    def __init__(self, directory: Path, image_format: str, size: int) -> None:
        self.directory = directory
        self.store = ImageStore(directory, image_format, size)

    def row(self, index: int) -> bytes | np.ndarray:
        return self.store.encoded(index) if self.store.format == "jpeg" else self.store[index]

    def cleanup(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _stage_images(work, images, candidates, config, report, progress):
    """Decode and resize the images of ``candidates`` (raw item positions) into a staging store.

    Returns the store (row k = candidate k, empty when it failed) and a bool mask of the successes;
    missing and corrupt images are counted in ``report``.
    """
    stage_dir = work / "staging"
    stage_dir.mkdir()
    writer = ImageStoreWriter(
        stage_dir, len(candidates), config.image_format, config.image_size, config.jpeg_quality
    )
    jobs = ((images[c], config.image_size) for c in candidates)
    ok = np.zeros(len(candidates), dtype=bool)
    bar = tqdm(total=len(candidates), desc="decoding images", unit="img", disable=not progress, leave=False)
    pool = Pool(config.workers) if config.workers > 0 else None
    try:
        decoded = pool.imap(_decode, jobs, chunksize=64) if pool else map(_decode, jobs)
        for k, (status, value) in enumerate(decoded):
            bar.update()
            if status == "ok":
                ok[k] = True
                writer.add(value)
            else:
                writer.add(None)
                report.add(f"{status}_image", example=value)
    finally:
        bar.close()
        if pool:
            pool.close()
    writer.close()
    return _StagedImages(stage_dir, config.image_format, config.image_size), ok


def _write_images(
    work: Path, staged: _StagedImages, rows: np.ndarray, config: PrepareConfig
) -> dict[str, Any]:
    writer = ImageStoreWriter(
        work, len(rows) + 1, config.image_format, config.image_size, config.jpeg_quality
    )
    writer.add(None)
    for row in rows:
        writer.add(None if row < 0 else staged.row(int(row)))
    writer.close()
    info: dict[str, Any] = {
        "format": config.image_format,
        "size": config.image_size,
        "resize": "shorter side to size (bicubic), centre crop",
    }
    if config.image_format == "jpeg":
        info["jpeg_quality"] = config.jpeg_quality
    return info


def _write_tokens(work: Path, texts: list[str], config: PrepareConfig) -> dict[str, Any] | None:
    tokenizer = build_tokenizer(config.tokenizer, config.hash_vocab_size)
    if tokenizer is None:
        return None
    tokens, lengths = tokenize_texts(tokenizer, texts, config.max_text_tokens)
    pad_row = np.full((1, config.max_text_tokens), tokenizer.pad_id, dtype=np.int32)
    np.save(work / "text_tokens.npy", np.concatenate([pad_row, tokens]))
    np.save(work / "text_lengths.npy", np.concatenate([[0], lengths]).astype(np.int32))
    return {
        "name": tokenizer.name,
        "vocab_size": tokenizer.vocab_size,
        "vocab_hash": tokenizer.vocab_hash,  # its identity: the name may be a path of this machine
        "pad_id": tokenizer.pad_id,
        "max_tokens": config.max_text_tokens,
    }


def _write_features(work, raw: RawDataset, item_features, final_items, final_user_ids) -> dict[str, Any]:
    meta: dict[str, Any] = {"item": {}, "user": {}}
    if not item_features and not (raw.users and raw.users.features):
        return meta
    (work / "features").mkdir()
    for name, values in item_features.items():
        array, vocab, kind = _encode_feature([None] + [values[c] for c in final_items])
        np.save(work / "features" / f"item.{name}.npy", array)
        meta["item"][name] = {"kind": kind, "vocab": vocab}
    if raw.users is not None:
        position = {user: k for k, user in enumerate(raw.users.ids)}
        rows = [position.get(u) for u in final_user_ids]
        for name, values in raw.users.features.items():
            array, vocab, kind = _encode_feature([values[r] if r is not None else None for r in rows])
            np.save(work / "features" / f"user.{name}.npy", array)
            meta["user"][name] = {"kind": kind, "vocab": vocab, "missing_users": rows.count(None)}
    return meta
