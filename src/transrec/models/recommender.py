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

from transrec.config import ConfigError, from_dict, to_dict
from transrec.data.item_content import ItemBatch
from transrec.errors import MissingPathError
from transrec.models.item_encoders import build_item_encoder
from transrec.models.item_encoders.freezing import fully_frozen_modules
from transrec.models.side_features import SideFeatures
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
        uep_head: add TransRec's stage-1 projection ``ReLU(S'_t W^U + b^U)`` over the catalogue
            (``Linear(d, n_items + 1)``, eq. 8) used by the ``uep`` objective. It belongs to its
            catalogue: transfer never loads it, a stage-2 model does without it, and a model that has
            it is evaluated through it (see ``ranking_items``).
        user_features / item_features: side-feature fields of the prepared dataset fused into the user
            and item vectors (TransRec Figure 2b; ``models.side_features``), e.g. ``[age, gender,
            occupation]`` and ``[class]`` on MovieLens. Empty: no features, the model is unchanged.
        feature_dim: embedding size of each side-feature field.
        feature_vocab: each used field's categories, ``"<side>.<name>" -> [...]`` (set from the dataset).
        tokenizer: the text tokenizer of the dataset the model was trained on (``name``, ``vocab_size``
            and ``vocab_hash``; set from the dataset by ``dataset_tokenizer``). Transfer and zero-shot
            evaluation of a text model refuse a dataset tokenised otherwise, whose token ids would mean
            other words (``tokenizer_mismatch``).
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
    uep_head: bool = False
    user_features: tuple[str, ...] = ()
    item_features: tuple[str, ...] = ()
    feature_dim: int = 16
    feature_vocab: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("d_model", "max_len", "feature_dim"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, got {getattr(self, key)}")


def dataset_tokenizer(meta: dict[str, Any]) -> dict[str, Any] | None:
    """What of a prepared dataset's ``meta.json`` a text model depends on: the tokenizer's ``name``,
    ``vocab_size`` and ``vocab_hash`` (its identity; absent from datasets prepared before it was recorded).
    None for a dataset without text tokens."""
    tokenizer = meta.get("tokenizer")
    if not tokenizer:
        return None
    record = {"name": tokenizer["name"], "vocab_size": tokenizer["vocab_size"]}
    if tokenizer.get("vocab_hash"):
        record["vocab_hash"] = tokenizer["vocab_hash"]
    return record


def tokenizer_mismatch(model: dict[str, Any] | None, dataset: dict[str, Any] | None) -> str | None:
    """Why token ids of a dataset tokenised as ``dataset`` would mean other words to a model trained on
    ``model`` (both ``dataset_tokenizer`` records), or None when they mean the same.

    With a ``vocab_hash`` on both sides only the hashes count: the same vocabulary loaded from another
    directory, or on another machine, passes whatever its name. A record without one (a dataset or a
    checkpoint from before hashes were recorded) falls back to comparing name and vocabulary size. A
    model that records no tokenizer accepts any dataset."""
    if model is None:
        return None
    if dataset is None:
        return "the dataset has no text tokens (prepared with tokenizer=none)"
    if model.get("vocab_hash") and dataset.get("vocab_hash"):
        if model["vocab_hash"] == dataset["vocab_hash"]:
            return None
        return (
            f"the vocabularies differ (model: {model['name']}, {model['vocab_size']} tokens, "
            f"{model['vocab_hash'][:19]}...; dataset: {dataset['name']}, {dataset['vocab_size']} tokens, "
            f"{dataset['vocab_hash'][:19]}...)"
        )
    if (model["name"], model["vocab_size"]) == (dataset["name"], dataset["vocab_size"]):
        return None
    unhashed = " and ".join(
        side for side, r in (("the model", model), ("the dataset", dataset)) if not r.get("vocab_hash")
    )
    return (
        f"{unhashed} recorded no vocabulary hash (made before transrec recorded one), so the tokenizers are "
        f"compared by name and size, and those differ (model: {model['name']}, {model['vocab_size']} "
        f"tokens; dataset: {dataset['name']}, {dataset['vocab_size']} tokens)"
    )


class SequentialRecommender(nn.Module):
    """``score(user, item) = <h_user, e_item>`` with ``e = item_encoder(content)`` and ``h`` the user
    encoder's hidden state at the last position of the user's history (with side features, both pass
    through their ``FeatureFusion``; with a UEP head, items are scored through it)."""

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
        if config.uep_head and config.n_items < 1:
            raise ValueError("uep_head needs n_items (the catalogue it scores), set from the dataset")
        self.uep_head = nn.Linear(config.d_model, config.n_items + 1) if config.uep_head else None
        self.features = None
        if config.user_features or config.item_features:
            self.features = SideFeatures(config.user_features, config.item_features, config.feature_vocab,
                                         config.d_model, config.feature_dim)  # fmt: skip
        self.frozen_modules: list[str] = []

    def encode_items(self, items: ItemBatch) -> torch.Tensor:
        """``[U, d]`` vectors of distinct items."""
        return self.with_item_features(self.item_encoder(items), items.item_ids)

    def with_item_features(self, vectors: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        """Item encoder vectors ``[U, d]`` of ``item_ids [U]`` fused with the items' side features (as they
        are when the model has no item features)."""
        if self.features is None or self.features.item is None:
            return vectors
        return self.features.item(vectors, item_ids)

    def attach_features(self, dataset) -> None:
        """Read the side-feature values this model uses from a ``PreparedDataset`` (no-op without
        features); raises ``FeatureError`` when the dataset lacks one of them."""
        if self.features is not None:
            self.features.attach(dataset)

    def user_states(
        self,
        item_vectors: torch.Tensor,
        valid: torch.Tensor,
        user_ids: torch.Tensor | None = None,
        masked: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states ``[B, L, d]`` of left-padded sequences of item vectors ``[B, L, d]``."""
        states = self.user_encoder(item_vectors, valid, user_ids=user_ids, masked=masked)
        if self.features is None or self.features.user is None:
            return states
        if user_ids is None:
            raise ValueError("a model with user features needs the user_ids of the sequences")
        return self.features.user(states, user_ids)

    # -- scoring for evaluation ----------------------------------------------------------------------
    def ranking_items(self, item_table: torch.Tensor) -> torch.Tensor:
        """The rows items are ranked by, ``[n_items + 1, d']`` from the item vectors ``[n_items + 1, d]``:
        the vectors themselves, or with a UEP head (a stage-1 model) its rows ``[W^U_i ; b^U_i]``, so
        that ``<[h ; 1], row_i>`` is eq. 8's logit before the ReLU (the same order as eq. 8's
        probabilities, with the ties ReLU makes among negative logits broken by the logit)."""
        if self.uep_head is None:
            return item_table
        return torch.cat([self.uep_head.weight, self.uep_head.bias[:, None]], dim=1).float()

    def ranking_users(self, user_vectors: torch.Tensor) -> torch.Tensor:
        """User vectors ``[B, d]`` as ``ranking_items`` expects them (``[h ; 1]`` with a UEP head)."""
        if self.uep_head is None:
            return user_vectors
        return torch.cat([user_vectors, user_vectors.new_ones(user_vectors.shape[0], 1)], dim=1)

    # -- freezing whole parts for a training stage ---------------------------------------------------
    def freeze(self, parts: tuple[str, ...] | list[str]) -> None:
        """Stop training ``parts`` (``FREEZABLE``): their parameters no longer require gradients (so an
        optimizer built afterwards never holds them) and every module whose parameters are then all
        frozen stays in eval mode (no dropout), whatever ``train()`` says. TransRec stage 1 freezes
        ``modality_encoders``: the pretrained backbones (``item_encoder.modality_parameters()``)."""
        unknown = sorted(set(parts) - set(FREEZABLE))
        if unknown:
            raise ConfigError(f"cannot freeze {unknown}; parts are {', '.join(FREEZABLE)}")
        for part in parts:
            if part == "modality_encoders":
                params = self.item_encoder.modality_parameters()
            else:
                params = list(getattr(self, part).parameters())
            for param in params:
                param.requires_grad_(False)
        self.frozen_modules = fully_frozen_modules(self, "")
        self.train(self.training)

    def train(self, mode: bool = True) -> SequentialRecommender:
        super().train(mode)
        for name in self.frozen_modules:
            nn.Module.train(self.get_submodule(name), False)  # the base method: "" (all) must not recurse
        return self

    # -- checkpoints -------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, extra_files: dict[str, bytes] | None = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (and ``extra_files``) atomically to ``directory``."""
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        return write_pretrained(directory, self.config, state, extra_files)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, map_location: str | torch.device = "cpu"
    ) -> SequentialRecommender:
        directory = Path(directory)
        config_file = directory / CONFIG_FILE
        if not config_file.is_file():
            raise MissingPathError(f"{directory} is not a transrec checkpoint (no {CONFIG_FILE})")
        if not (directory / WEIGHTS_FILE).is_file():
            raise MissingPathError(f"{directory} is not a transrec checkpoint (no {WEIGHTS_FILE})")
        config = from_dict(ModelConfig, json.loads(config_file.read_text()))
        model = cls(config)
        state = load_file(str(directory / WEIGHTS_FILE), device=str(map_location))
        model.load_state_dict(state, strict=True)
        return model.to(map_location)


#: What ``SequentialRecommender.freeze`` accepts.
FREEZABLE = ("modality_encoders", "item_encoder", "user_encoder")


def write_pretrained(
    directory: str | Path,
    config: ModelConfig,
    state: dict[str, torch.Tensor],
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """The checkpoint format: ``config.json`` + ``model.safetensors`` of ``state`` (whole CPU tensors)
    and ``extra_files``, written atomically to ``directory``."""
    with atomic_directory(Path(directory)) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(to_dict(config), indent=2) + "\n")
        save_file(state, str(tmp / WEIGHTS_FILE))
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
    return Path(directory)


def read_model_config(directory: str | Path) -> ModelConfig:
    """The ModelConfig of the checkpoint in ``directory``; MissingPathError if it holds none."""
    config_file = Path(directory) / CONFIG_FILE
    if not config_file.is_file():
        raise MissingPathError(f"{directory} is not a transrec checkpoint (no {CONFIG_FILE})")
    return from_dict(ModelConfig, json.loads(config_file.read_text()))
