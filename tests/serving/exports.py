"""Tiny exports for serving tests, built in seconds: a synthetic world prepared once, random tiny models
saved as checkpoints (a run's ``best/``), exported with ``export_model``.

    from tests.serving.exports import build_export
    export = build_export(tmp_path, "text")      # .directory, .dataset, .checkpoint
    rec = Recommender.load(export.directory)

Kinds: ``text`` (a tiny random BERT over hash tokens, SASRec; the dataset keeps texts only), ``mom``
(TransRec's mixture of modality: tiny BERT or tiny ViT per item, images stored as JPEG), ``id`` (IDRec:
an embedding table), ``bert4rec`` (the text model with a BERT4Rec user encoder).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from transrec.data.prepare import PrepareConfig, prepare
from transrec.data.prepared import PreparedDataset
from transrec.data.synthetic import SyntheticWorldConfig, make_world
from transrec.models.item_encoders import tiny_text, tiny_vit
from transrec.models.recommender import ModelConfig, SequentialRecommender, dataset_tokenizer
from transrec.serving.export import export_model

HASH_VOCAB = 500
IMAGE_SIZE = 16
KINDS = ("text", "mom", "id", "bert4rec")


@dataclass(frozen=True)
class BuiltExport:
    directory: Path
    dataset: PreparedDataset
    checkpoint: Path


def build_dataset(
    root: Path, modality: str = "text", seed: int = 0, image_format: str = "jpeg"
) -> PreparedDataset:
    """The source platform of a tiny synthetic world, prepared (hash tokens; images of 16 px stored as JPEG,
    or ``raw``) under ``root`` (once: a second call reads it)."""
    name = f"prepared-{modality}" + ("" if image_format == "jpeg" else f"-{image_format}")
    if (root / name / "meta.json").is_file():
        return PreparedDataset(root / name)
    world = make_world(SyntheticWorldConfig.tiny(seed=seed))
    config = PrepareConfig(
        user_k=3,
        item_k=3,
        image_size=IMAGE_SIZE,
        image_format=image_format,
        max_text_tokens=12,
        hash_vocab_size=HASH_VOCAB,
        modality=modality,
    )
    return prepare(world.source, config, root / name, progress=False)


def model_config(kind: str, dataset: PreparedDataset, max_len: int = 4) -> ModelConfig:
    """A random tiny model of ``kind`` (see the module) for ``dataset``."""
    user = {"n_layers": 1, "n_heads": 2}
    text = tiny_text(vocab_size=HASH_VOCAB, hidden_size=16, layers=1)
    tokenizer = dataset_tokenizer(dataset.meta)
    if kind == "text":
        return ModelConfig(
            d_model=16,
            max_len=max_len,
            item_encoder="text",
            item_encoder_config=text,
            user_encoder="sasrec",
            user_encoder_config=user,
            tokenizer=tokenizer,
        )
    if kind == "bert4rec":
        return ModelConfig(
            d_model=16,
            max_len=max_len,
            item_encoder="text",
            item_encoder_config=text,
            user_encoder="bert4rec",
            user_encoder_config=user,
            tokenizer=tokenizer,
        )
    if kind == "mom":
        image = tiny_vit(image_size=IMAGE_SIZE, hidden_size=16, layers=1, pooling="cls")
        return ModelConfig(
            d_model=16,
            max_len=max_len,
            item_encoder="mom",
            item_encoder_config={"text": text, "image": image},
            user_encoder="sasrec",
            user_encoder_config=user,
            tokenizer=tokenizer,
        )
    if kind == "id":
        return ModelConfig(
            d_model=16,
            max_len=max_len,
            item_encoder="id",
            n_items=dataset.n_items,
            user_encoder="sasrec",
            user_encoder_config=user,
        )
    raise ValueError(f"unknown kind {kind!r}; kinds are {KINDS}")


def build_checkpoint(root: Path, dataset: PreparedDataset, kind: str, seed: int = 0, **config) -> Path:
    """A random model of ``kind`` saved as ``root/<kind>-run/best`` (what ``transrec train`` leaves)."""
    torch.manual_seed(seed)
    model = SequentialRecommender(model_config(kind, dataset, **config))
    return model.save_pretrained(root / f"{kind}-run" / "best")


def build_export(root: Path, kind: str = "text", seed: int = 0) -> BuiltExport:
    """Prepare, build a checkpoint of ``kind`` and export it to ``root/<kind>-export``."""
    dataset = build_dataset(root, "all" if kind in ("mom", "id") else "text")
    checkpoint = build_checkpoint(root, dataset, kind, seed)
    directory = export_model(checkpoint, dataset.path, root / f"{kind}-export")
    return BuiltExport(directory, dataset, checkpoint)
