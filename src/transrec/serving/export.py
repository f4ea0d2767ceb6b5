"""``transrec export``: a trained model and its catalogue as one self-contained, versioned directory, and
``transrec export --check``: the directory verified against its checksums and a fresh encoding.

    export_model("runs/hm/best", "prepared/hm", "exports/hm")
    report = check_export("exports/hm", sample=64)

The directory (layout in ``serving.bundle``) holds the checkpoint's files as they are, the tokenizer and
image settings the dataset was prepared with, the catalogue's raw ids, texts and content, the item-vector
table that evaluation ranks with (``evaluation.model_eval.item_table``, so that serving scores equal
``transrec evaluate`` scores), and popularity counts of the training interactions only. Nothing in it
points at the dataset, the run directory or any other path of this machine. The same inputs give the
same bytes: JSON with sorted keys and no timestamps, safetensors files (whose header lists tensors in a
fixed order), files copied as they are.

Refused (``ExportError``): models that cannot recommend to a user they were not trained with, i.e. a
TransRec stage-1 UEP head (it scores one catalogue's indices through a projection, not item vectors), a
user-ID tower (DSSM) or user side features (both look the user up by dataset index); and models with
item side features (a new item has no values for them).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

import transrec
from transrec.data.item_content import ItemContent
from transrec.data.prepared import PreparedDataset
from transrec.data.tokenize import HashTokenizer, HFTokenizer, minilm_path
from transrec.errors import PathExistsError
from transrec.evaluation.model_eval import item_table
from transrec.models.recommender import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    SequentialRecommender,
    dataset_tokenizer,
    tokenizer_mismatch,
)
from transrec.serving.bundle import (
    ADDED_DIR,
    CONTENT_FILE,
    EXPORT_FORMAT,
    FORMAT_VERSION,
    IMAGES_DIR,
    ITEMS_FILE,
    MANIFEST_FILE,
    MODEL_DIR,
    POPULARITY_FILE,
    PREPROCESSING_FILE,
    TOKENIZER_DIR,
    VECTORS_FILE,
    checksum_problems,
    open_export,
    read_manifest,
    sha256_file,
)
from transrec.serving.content import modality_name
from transrec.serving.errors import ExportError
from transrec.serving.overlay import read_overlay, read_overlay_files
from transrec.utils.io import atomic_directory

logger = logging.getLogger(__name__)

#: ``check_export`` accepts a stored vector when ``|stored - fresh| <= ATOL + RTOL * |fresh|`` everywhere:
#: the same weights on the same inputs, batched differently (float32 sums in another order).
ATOL, RTOL = 1e-4, 1e-4


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def unservable_reason(model: SequentialRecommender) -> str | None:
    """Why ``model`` cannot serve users it was not trained with (see the module), or None."""
    config = model.config
    if model.uep_head is not None:
        return (
            "it ranks through a TransRec stage-1 UEP head (scores over its training catalogue's indices); "
            "export the stage-2 model trained from it"
        )
    if getattr(model.user_encoder, "uses_user_ids", False):
        return f"its {config.user_encoder!r} user encoder looks users up by training index (a user-ID tower)"
    if config.user_features:
        return f"it fuses user side features ({', '.join(config.user_features)}), looked up by user index"
    if config.item_features:
        return (
            f"it fuses item side features ({', '.join(config.item_features)}), which a new item would "
            "not have; serving does not support item side features yet"
        )
    return None


def training_popularity(data: PreparedDataset) -> np.ndarray:
    """int64 ``[n_items + 1]``: how often each item occurs in the training interactions (each user's
    ``s[:-2]``; validation and test targets are not training data)."""
    split = data.split
    lengths = np.diff(np.asarray(data.offsets, dtype=np.int64))
    user = np.repeat(np.arange(data.n_users), lengths)
    position = np.arange(len(user)) - np.asarray(split.starts, dtype=np.int64)[user]
    train = position < (np.asarray(split.train_ends) - np.asarray(split.starts))[user]
    items = np.asarray(data.items, dtype=np.int64)[train]
    return np.bincount(items, minlength=data.n_items + 1).astype(np.int64)


def _text_settings(data: PreparedDataset) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The text preprocessing of ``data`` and the tokenizer files to ship, checked to reproduce its ids."""
    recorded = data.meta["tokenizer"]
    spec = data.meta["config"]["tokenizer"]
    files: dict[str, bytes] = {}
    if spec == "hash":
        tokenizer = HashTokenizer(vocab_size=data.meta["config"]["hash_vocab_size"])
        settings = {
            "kind": "hash",
            "name": tokenizer.name,
            "vocab_size": tokenizer.vocab_size,
            "pad_id": tokenizer.pad_id,
            "cls_id": tokenizer.cls_id,
            "sep_id": tokenizer.sep_id,
        }
    else:
        directory = minilm_path() if spec == "minilm" else Path(spec)
        tokenizer = HFTokenizer(directory)
        settings = {"kind": "huggingface", "name": recorded["name"]}
        files[f"{TOKENIZER_DIR}/tokenizer.json"] = (directory / "tokenizer.json").read_bytes()
    if recorded.get("vocab_hash") and tokenizer.vocab_hash != recorded["vocab_hash"]:
        raise ExportError(
            f"the tokenizer {spec!r} found here ({tokenizer.vocab_hash[:19]}...) is not the one "
            f"{data.path} was prepared with ({recorded['vocab_hash'][:19]}...); "
            "its token ids would differ for new items"
        )
    settings["vocab_hash"] = tokenizer.vocab_hash
    text = {
        "tokenizer": settings,
        "max_tokens": recorded["max_tokens"],
        "pad_id": recorded["pad_id"],
        "normalisation": "whitespace collapsed to single spaces, stripped",
    }
    return text, files


def export_model(
    checkpoint: str | Path,
    dataset: str | Path,
    out: str | Path,
    *,
    force: bool = False,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
) -> Path:
    """Write the export of ``checkpoint`` (a model directory, e.g. ``RUN/best``) over the catalogue of the
    prepared ``dataset`` to ``out`` (atomically). ``out`` that exists is refused (PathExistsError) unless
    ``force``, which replaces it, items added while serving included. Raises ExportError for a model that
    cannot serve new users, or that does not fit the dataset (see the module)."""
    checkpoint, out = Path(checkpoint), Path(out)
    if out.exists() and not force:
        raise PathExistsError(f"{out} exists; pass --force to replace it (and the items added to it)")
    data = PreparedDataset(dataset)
    model = SequentialRecommender.from_pretrained(checkpoint, map_location=device)
    reason = unservable_reason(model)
    if reason:
        raise ExportError(f"{checkpoint} cannot serve users it was not trained with: {reason}")
    encoder = model.item_encoder
    if not encoder.transferable and model.config.n_items != data.n_items:
        raise ExportError(
            f"{checkpoint} scores the item IDs of a {model.config.n_items}-item catalogue; {data.path} has "
            f"{data.n_items} items"
        )
    if encoder.needs_text:
        problem = tokenizer_mismatch(model.config.tokenizer, dataset_tokenizer(data.meta))
        if problem:
            raise ExportError(
                f"{checkpoint} was trained on text tokenised otherwise than {data.path}: {problem}"
            )
    model.eval()
    content = ItemContent(data, text=encoder.needs_text, image=encoder.needs_image)
    vectors = item_table(model, content, batch_size, device).cpu().contiguous()

    files: dict[str, bytes | Path] = {  # bytes to write, or a file to copy as it is
        f"{MODEL_DIR}/{CONFIG_FILE}": checkpoint / CONFIG_FILE,
        f"{MODEL_DIR}/{WEIGHTS_FILE}": checkpoint / WEIGHTS_FILE,
    }
    preprocessing: dict[str, Any] = {"text": None, "images": None}
    if encoder.needs_text:
        preprocessing["text"], tokenizer_files = _text_settings(data)
        files.update(tokenizer_files)
    image_files: list[Path] = []
    if encoder.needs_image and data.images is not None:
        info = data.meta["images"]
        preprocessing["images"] = {
            "format": info["format"],
            "size": info["size"],
            "jpeg_quality": info.get("jpeg_quality"),
            "resize": info.get("resize"),
        }
        image_files = sorted(
            p for p in data.path.iterdir() if p.name in ("images.bin", "image_offsets.npy", "images.npy")
        )
    texts = data.item_texts
    rows = [
        {
            "index": i,
            "id": data.item_ids[i],
            "text": texts[i],
            "modality": modality_name(int(data.item_modality[i])),
        }
        for i in range(1, data.n_items + 1)
    ]
    tensors = {"modality": torch.from_numpy(np.asarray(data.item_modality, dtype=np.uint8))}
    if encoder.needs_text:
        tensors["text_tokens"] = torch.from_numpy(np.array(data.text_tokens, dtype=np.int32))
        tensors["text_lengths"] = torch.from_numpy(np.asarray(data.text_lengths, dtype=np.int32))
    popularity = training_popularity(data)

    with atomic_directory(out) as tmp:
        for name, payload in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            if isinstance(payload, Path):
                shutil.copyfile(payload, tmp / name)
            else:
                (tmp / name).write_bytes(payload)
        (tmp / PREPROCESSING_FILE).write_text(_json(preprocessing), encoding="utf-8")
        (tmp / ITEMS_FILE).write_text(
            "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
        )
        save_file({"vectors": vectors}, str(tmp / VECTORS_FILE))
        save_file(tensors, str(tmp / CONTENT_FILE))
        save_file({"counts": torch.from_numpy(popularity)}, str(tmp / POPULARITY_FILE))
        if image_files:
            (tmp / IMAGES_DIR).mkdir()
            for path in image_files:
                shutil.copyfile(path, tmp / IMAGES_DIR / path.name)
        listed = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {
            "format": EXPORT_FORMAT,
            "format_version": FORMAT_VERSION,
            "versions": {
                "transrec": transrec.__version__,
                "torch": version("torch"),
                "safetensors": version("safetensors"),
            },
            "model": {
                "item_encoder": model.config.item_encoder,
                "user_encoder": model.config.user_encoder,
                "d_model": model.config.d_model,
                "max_len": model.config.max_len,
            },
            "dataset": {
                "name": data.name,
                "users": data.n_users,
                "items": data.n_items,
                "interactions": data.n_interactions,
                "training_interactions": int(popularity.sum()),
            },
            "vectors": "evaluation.model_eval.item_table of the model over the catalogue (row 0: padding)",
            "popularity": "training interactions per item (each user's s[:-2], leave-one-out)",
            "files": {
                p.relative_to(tmp).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                for p in listed
            },
        }
        (tmp / MANIFEST_FILE).write_text(_json(manifest), encoding="utf-8")
    logger.info("exported %s over %s (%d items) to %s", checkpoint, data.name, data.n_items, out)
    return out


@dataclass
class ExportCheck:
    """What ``check_export`` found: ``problems`` (empty when the export is sound), how many files it
    checked, which items it re-encoded and the largest difference it saw."""

    directory: Path
    files_checked: int = 0
    items_sampled: list[str] = field(default_factory=list)
    max_abs_diff: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_export(
    directory: str | Path, sample: int = 64, seed: int = 0, device: str | torch.device = "cpu"
) -> ExportCheck:
    """Verify every file of the export (and of its ``added/`` items) against its SHA-256, then re-encode
    ``sample`` items drawn with ``seed`` (catalogue items, and added ones) and compare with the stored
    vectors within ``ATOL`` + ``RTOL`` x |fresh|. Problems are collected, not raised; a checksum problem
    skips the re-encoding (the files cannot be trusted)."""
    directory = Path(directory)
    report = ExportCheck(directory)
    manifest = read_manifest(directory)
    report.files_checked = len(manifest["files"])
    report.problems += checksum_problems(directory, manifest["files"])
    overlay_files = read_overlay_files(directory / ADDED_DIR)
    report.files_checked += len(overlay_files)
    report.problems += [f"{ADDED_DIR}/{p}" for p in checksum_problems(directory / ADDED_DIR, overlay_files)]
    if report.problems:
        return report
    bundle = open_export(directory, verify=False, device=device)
    rng = np.random.default_rng(seed)
    n = bundle.n_items
    picked = np.sort(rng.choice(np.arange(1, n + 1), size=min(sample, n), replace=False))
    with torch.no_grad():
        fresh = bundle.model.encode_items(bundle.content.batch(torch.from_numpy(picked)).to(device)).float()
    stored = bundle.vectors[torch.from_numpy(picked)]
    _compare(report, [bundle.item_ids[i] for i in picked], stored, fresh, VECTORS_FILE)
    overlay = read_overlay(directory / ADDED_DIR)
    if overlay is not None and len(overlay.ids):
        preprocessor = bundle.preprocessor()
        k = min(sample, len(overlay.ids))
        chosen = np.sort(rng.choice(len(overlay.ids), size=k, replace=False))
        items = [overlay.items[int(j)] for j in chosen]
        with torch.no_grad():
            fresh = bundle.model.encode_items(preprocessor.batch(items).to(device)).float()
        stored = overlay.vectors[torch.from_numpy(chosen)].to(device)
        _compare(report, [overlay.ids[j] for j in chosen], stored, fresh, "added items")
    return report


def _compare(
    report: ExportCheck, ids: list[str], stored: torch.Tensor, fresh: torch.Tensor, where: str
) -> None:
    report.items_sampled += ids
    diff = (stored - fresh).abs()
    if diff.numel():
        report.max_abs_diff = max(report.max_abs_diff, float(diff.max()))
    bad = (diff > ATOL + RTOL * fresh.abs()).any(dim=1)
    if bad.any():
        rows = bad.nonzero().squeeze(1).tolist()
        worst = max(rows, key=lambda r: float(diff[r].max()))
        report.problems.append(
            f"{where}: the stored vectors of {len(rows)} of {len(ids)} sampled items differ from a "
            f"fresh encoding (worst: item {ids[worst]!r}, max |difference| {float(diff[worst].max()):.3g}; "
            f"tolerance {ATOL:g} + {RTOL:g} x |value|)"
        )
