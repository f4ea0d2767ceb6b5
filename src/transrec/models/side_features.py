"""User and item side features fused into the model's vectors (TransRec Figure 2b, section 3.4: "fuse
user/item features by simply concatenating them with user/item representation").

For one side (users or items) with fields ``f_1..f_F``, each an embedding table of size ``feature_dim``:

    v' = W [v ; emb_1(f_1) ; ... ; emb_F(f_F)] + b,      W: [d, d + F * feature_dim], b: [d]

where ``v`` is the encoder's vector (a user encoder state, or an item encoder vector) and ``emb_k(f_k)``
the mean of the embeddings of the field's categories (a multi-valued field such as genres has several;
the missing category 0 has a zero embedding and is left out of the mean, so a row without any category
contributes zeros). ``W`` starts as ``[I ; 0]`` and ``b`` as 0: a new model, or a model whose encoders
were just loaded from a checkpoint, starts out scoring exactly as without features.

The feature *values* (category indices per user or item) come from the prepared dataset
(``features/<side>.<name>.npy``, see ``data.prepared``) and are attached to a built model with
``attach``; they are not part of the weights, so a checkpoint applies to any dataset that has the
same fields. Categories are matched by value against the vocabularies the model was built with
(``ModelConfig.feature_vocab``, recorded in its ``config.json``): a category the model never saw
counts as missing, and a dataset without a field the model uses is refused with ``FeatureError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from transrec.errors import UserError

SIDES = ("user", "item")


class FeatureError(UserError, ValueError):
    """A dataset lacks a side feature the model uses, or has none of the model's categories for it."""


def feature_vocabularies(
    meta: Mapping[str, Any], user_features: Sequence[str], item_features: Sequence[str], where: object = ""
) -> dict[str, list[str]]:
    """The vocabularies (``"<side>.<name>" -> categories``, index k + 1 = ``categories[k]``) of the
    fields a model uses, read from a prepared dataset's ``meta.json`` (``meta["features"]``)."""
    known = meta.get("features") or {}
    vocab: dict[str, list[str]] = {}
    for side, names in (("user", user_features), ("item", item_features)):
        for name in names:
            if name not in known.get(side, {}):
                raise FeatureError(
                    f"the model uses the {side} feature {name!r}, but the dataset {where} has no such "
                    f"field (its {side} features: {', '.join(sorted(known.get(side, {}))) or 'none'}); "
                    f"use a dataset prepared with it, or remove it from model.{side}_features"
                )
            vocab[f"{side}.{name}"] = list(known[side][name]["vocab"])
    return vocab


def as_rows(values: np.ndarray) -> np.ndarray:
    """A feature array as int64 ``[n, width]`` (a single-valued ``[n]`` field has width 1)."""
    values = np.asarray(values, dtype=np.int64)
    return values[:, None] if values.ndim == 1 else values


def remap_categories(values: np.ndarray, theirs: Sequence[str], ours: Sequence[str]) -> np.ndarray:
    """``values`` (category indices into the vocabulary ``theirs``, 0 = missing) as indices into ``ours``;
    categories absent from ``ours`` become 0 (missing)."""
    position = {category: k + 1 for k, category in enumerate(ours)}
    lookup = np.array([0] + [position.get(category, 0) for category in theirs], dtype=np.int64)
    return lookup[values]


class FeatureFusion(nn.Module):
    """``Dense([v ; emb(features of row)]) -> d`` for one side (see the module docstring).

    Args:
        names: the fields, in order.
        vocab_sizes: categories per field (the embedding tables have one more row, 0 = missing).
        d_model: size of ``v`` and of the output.
        feature_dim: size of each field's embedding.
    """

    def __init__(self, names: Sequence[str], vocab_sizes: Sequence[int], d_model: int, feature_dim: int):
        super().__init__()
        bad = [name for name in names if not name or "." in name]
        if bad:
            raise FeatureError(f"feature names must be non-empty and contain no '.': {bad}")
        self.names = list(names)
        tables = {name: nn.Embedding(size + 1, feature_dim, padding_idx=0)
                  for name, size in zip(names, vocab_sizes, strict=True)}  # fmt: skip
        self.embeddings = nn.ModuleDict(tables)
        self.dense = nn.Linear(d_model + len(names) * feature_dim, d_model)
        with torch.no_grad():
            self.dense.weight.zero_()
            self.dense.weight[:, :d_model].copy_(torch.eye(d_model))
            self.dense.bias.zero_()
        for name in names:  # values per row, attached from a dataset; not part of the weights
            self.register_buffer(self._buffer(name), torch.zeros(0, 1, dtype=torch.long), persistent=False)

    @staticmethod
    def _buffer(name: str) -> str:
        return f"values_{name}"

    def attach(self, values: Mapping[str, np.ndarray]) -> None:
        """Set each field's category indices per row (int ``[n]`` or ``[n, width]``, 0 = missing)."""
        for name in self.names:
            rows = torch.from_numpy(as_rows(values[name]))
            setattr(self, self._buffer(name), rows.to(self.dense.weight.device))

    def embed(self, rows: torch.Tensor) -> torch.Tensor:
        """``[*rows.shape, F * feature_dim]``: each field's mean category embedding for each row index."""
        pooled = []
        for name in self.names:
            table = getattr(self, self._buffer(name))
            if table.shape[0] == 0:
                raise FeatureError(
                    f"no values attached for the feature {name!r}: call model.attach_features(dataset)"
                )
            categories = table[rows]  # [..., width]
            counts = (categories > 0).sum(-1, keepdim=True).clamp(min=1)
            pooled.append(self.embeddings[name](categories).sum(-2) / counts)
        return torch.cat(pooled, dim=-1)

    def forward(self, vectors: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``vectors [*rows.shape, ..., d]`` (user states ``[B, L, d]`` with ``rows [B]``, item vectors
        ``[U, d]`` with ``rows [U]``) -> the same shape."""
        features = self.embed(rows)
        extra = vectors.dim() - rows.dim() - 1  # positions sharing one row's features
        features = features.reshape(*rows.shape, *([1] * extra), -1).expand(*vectors.shape[:-1], -1)
        return self.dense(torch.cat([vectors, features.to(vectors.dtype)], dim=-1))


class SideFeatures(nn.Module):
    """The user and item ``FeatureFusion`` of a model (either may be None)."""

    def __init__(
        self,
        user_features: Sequence[str],
        item_features: Sequence[str],
        vocab: Mapping[str, Sequence[str]],
        d_model: int,
        feature_dim: int,
    ) -> None:
        super().__init__()
        self.vocab = {key: list(categories) for key, categories in vocab.items()}
        fusions = {}
        for side, names in (("user", user_features), ("item", item_features)):
            missing = [name for name in names if f"{side}.{name}" not in self.vocab]
            if missing:
                raise FeatureError(
                    f"model.feature_vocab has no vocabulary for the {side} feature(s) {missing}; it is set "
                    "from the dataset (the trainer does this), or read from a checkpoint's config.json"
                )
            sizes = [len(self.vocab[f"{side}.{name}"]) for name in names]
            fusions[side] = FeatureFusion(names, sizes, d_model, feature_dim) if names else None
        self.user, self.item = fusions["user"], fusions["item"]

    def attach(self, dataset) -> None:
        """Read the fields' values from a ``PreparedDataset``, mapped onto the model's vocabularies."""
        user = self.user.names if self.user is not None else []
        item = self.item.names if self.item is not None else []
        theirs = feature_vocabularies(dataset.meta, user, item, dataset.path)
        for side, fusion in (("user", self.user), ("item", self.item)):
            if fusion is None:
                continue
            values = {}
            for name in fusion.names:
                key, ours = f"{side}.{name}", self.vocab[f"{side}.{name}"]
                if ours and not set(ours) & set(theirs[key]):
                    raise FeatureError(
                        f"the {side} feature {name!r} of {dataset.path} shares no category with the one the "
                        f"model was trained on ({', '.join(ours[:5])}{' ...' if len(ours) > 5 else ''})"
                    )
                values[name] = remap_categories(dataset.feature(side, name), theirs[key], ours)
            fusion.attach(values)
