"""User encoders, one file each, one registry (``USER_ENCODERS``).

Each registered class carries its typed config dataclass as ``config_class``; ``build_user_encoder``
turns a plain dict (from YAML) into that config, refusing unknown keys, and builds the encoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transrec.config import from_dict
from transrec.models.user_encoders.base import UserEncoder
from transrec.registry import Registry

USER_ENCODERS: Registry[type[UserEncoder]] = Registry("user encoder")


def build_user_encoder(
    name: str, d_model: int, max_len: int, n_users: int | None, config: Mapping[str, Any] | None
) -> UserEncoder:
    """The user encoder ``name`` of model size ``d_model`` for sequences of at most ``max_len`` items.

    ``n_users`` is passed only to encoders with a user-ID tower (``uses_user_ids``), which need it.
    """
    cls = USER_ENCODERS.get(name)
    typed = from_dict(cls.config_class, config)
    if cls.uses_user_ids:
        return cls(d_model, max_len, typed, n_users=n_users)
    return cls(d_model, max_len, typed)


# Imported for their @USER_ENCODERS.register side effect; after the registry exists.
from transrec.models.user_encoders import (  # noqa: E402
    bert4rec,
    dssm,
    gru4rec,
    mean_pool,
    nextitnet,
    sasrec,
)

__all__ = [
    "USER_ENCODERS",
    "UserEncoder",
    "bert4rec",
    "build_user_encoder",
    "dssm",
    "gru4rec",
    "mean_pool",
    "nextitnet",
    "sasrec",
]
