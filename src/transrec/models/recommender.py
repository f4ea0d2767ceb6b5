"""The sequential recommender: an item encoder, a user encoder, and dot-product scoring.

The same class serves IDRec (``item_encoder="id"``) and MoRec/NineRec/TransRec (text, image, mixture of
modality): only the item encoder differs, so comparisons are fair by construction. A model saves to a
directory with ``config.json`` and ``model.safetensors`` (the Hugging Face convention; never pickle).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from transrec.config import from_dict, to_dict
from transrec.data.item_content import ItemBatch
from transrec.models.item_encoders import build_item_encoder
from transrec.models.user_encoders import build_user_encoder
from transrec.utils.io import atomic_directory

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class ModelConfig:
    """Architecture of a ``SequentialRecommender``.

    Args:
        d_model: size of item vectors and user hidden states (papers: 64-512).
        max_len: longest input sequence (papers: 20-25).
        item_encoder: registered item encoder (``id``, ``text``, ``image``, ``mom``...).
        item_encoder_config: that encoder's config fields (see its config dataclass).
        user_encoder: registered user encoder (``sasrec``, ``bert4rec``, ``gru4rec``, ``nextitnet``,
            ``mean_pool``, ``dssm``).
        user_encoder_config: that encoder's config fields.
        n_items: catalogue size (set from the dataset; the ``id`` encoder's table depends on it).
        n_users: number of users (set from the dataset; only the DSSM user tower uses it).
        nid_head: add PMMRec's noised-item-detection classifier (``Linear(d, 3)``, eq. 10) used by the
            ``pmmrec`` pre-training objective; a fine-tuned model does without it.
        tokenizer: the text tokenizer of the dataset the model was trained on (``name`` and
            ``vocab_size``; set from the dataset). Transfer and zero-shot evaluation of a text model
            refuse a dataset tokenised otherwise, whose token ids would mean other words.
    """

    d_model: int = 64
    max_len: int = 20
    item_encoder: str = "id"
    item_encoder_config: dict[str, Any] = field(default_factory=dict)
    user_encoder: str = "sasrec"
    user_encoder_config: dict[str, Any] = field(default_factory=dict)
    n_items: int = 0
    n_users: int = 0
    tokenizer: dict[str, Any] | None = None
    nid_head: bool = False


def dataset_tokenizer(meta: dict[str, Any]) -> dict[str, Any] | None:
    """What of a prepared dataset's ``meta.json`` a text model depends on: tokenizer name and vocabulary."""
    tokenizer = meta.get("tokenizer")
    return None if not tokenizer else {"name": tokenizer["name"], "vocab_size": tokenizer["vocab_size"]}


class SequentialRecommender(nn.Module):
    """``score(user, item) = <h_user, e_item>`` with ``e = item_encoder(content)`` and ``h`` the user
    encoder's hidden state at the last position of the user's history."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.item_encoder = build_item_encoder(
            config.item_encoder, config.d_model, config.n_items, dict(config.item_encoder_config)
        )
        self.user_encoder = build_user_encoder(
            config.user_encoder, config.d_model, config.max_len, config.n_users or None,
            dict(config.user_encoder_config),
        )  # fmt: skip
        self.nid_classifier = nn.Linear(config.d_model, 3) if config.nid_head else None

    def encode_items(self, items: ItemBatch) -> torch.Tensor:
        """``[U, d]`` vectors of distinct items."""
        return self.item_encoder(items)

    def user_states(
        self,
        item_vectors: torch.Tensor,
        valid: torch.Tensor,
        user_ids: torch.Tensor | None = None,
        masked: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states ``[B, L, d]`` of left-padded sequences of item vectors ``[B, L, d]``."""
        return self.user_encoder(item_vectors, valid, user_ids=user_ids, masked=masked)

    # -- checkpoints -------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, extra_files: dict[str, bytes] | None = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (and ``extra_files``) atomically to ``directory``."""
        with atomic_directory(Path(directory)) as tmp:
            (tmp / CONFIG_FILE).write_text(json.dumps(to_dict(self.config), indent=2) + "\n")
            state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_FILE))
            for name, data in (extra_files or {}).items():
                (tmp / name).write_bytes(data)
        return Path(directory)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, map_location: str | torch.device = "cpu"
    ) -> SequentialRecommender:
        directory = Path(directory)
        config_file = directory / CONFIG_FILE
        if not config_file.is_file():
            raise FileNotFoundError(f"{directory} is not a transrec checkpoint (no {CONFIG_FILE})")
        config = from_dict(ModelConfig, json.loads(config_file.read_text()))
        model = cls(config)
        state = load_file(str(directory / WEIGHTS_FILE), device=str(map_location))
        model.load_state_dict(state, strict=True)
        return model.to(map_location)


def read_model_config(directory: str | Path) -> ModelConfig:
    return from_dict(ModelConfig, json.loads((Path(directory) / CONFIG_FILE).read_text()))
