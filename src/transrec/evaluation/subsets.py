"""The evaluation settings of the papers as boolean user masks: cold items, new items and warm-N.

Every function takes the interactions that *count* in CSR form, one row per evaluated user:
``offsets`` ``[n_users + 1]`` (non-decreasing, from 0 to nnz) and ``items`` ``[nnz]`` (item indices in
1..n_items), plus ``targets`` ``[n_users]`` (each user's held-out item, 1..n_items). Torch tensors or
numpy arrays are accepted; masks come back as torch BoolTensors on the device of ``items``.

What counts is the caller's choice, and it decides what the setting means:

- cold / new items (NineRec, TransRec): "seen in training" is counted over the interactions passed.
  For the test set of a leave-one-out split pass, for every user, all items before the test target
  (training + validation part); for the validation set pass the items before the validation target.
  Counts run over all users' rows, so a user's own history counts too.
- warm-N (MoRec): MoRec filters the whole dataset before splitting, so to reproduce it pass each user's
  full sequence *including* the test target; pass only the training part for a stricter variant.

Counts are interactions, not distinct users: an item a user consumed twice counts twice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray | Sequence[int]


def _as_index_tensor(values: ArrayLike, name: str, device: torch.device | None = None) -> torch.Tensor:
    tensor = torch.as_tensor(values, device=device)
    if tensor.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(tensor.shape)}")
    if tensor.dtype.is_floating_point or tensor.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer indices, got dtype {tensor.dtype}")
    return tensor.long()


def _checked_csr(
    offsets: ArrayLike, items: ArrayLike, n_items: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validated ``(offsets, items, owner)``, where ``owner[i]`` is the row of ``items[i]``."""
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    items = _as_index_tensor(items, "items")
    offsets = _as_index_tensor(offsets, "offsets", device=items.device)
    if offsets.numel() < 1 or offsets[0] != 0 or offsets[-1] != items.numel():
        raise ValueError(
            f"offsets must run from 0 to len(items) = {items.numel()}, got {offsets.numel()} offsets"
            + (f" from {int(offsets[0])} to {int(offsets[-1])}" if offsets.numel() else "")
        )
    lengths = offsets[1:] - offsets[:-1]
    if bool((lengths < 0).any()):
        raise ValueError("offsets must never decrease")
    if items.numel() and (items.min() < 1 or items.max() > n_items):
        got = f"{int(items.min())}..{int(items.max())}"
        raise ValueError(f"interaction items must lie in 1..{n_items}, got values in {got}")
    owner = torch.repeat_interleave(torch.arange(lengths.numel(), device=items.device), lengths)
    return offsets, items, owner


def _checked_targets(targets: ArrayLike, n_users: int, n_items: int, device: torch.device) -> torch.Tensor:
    targets = _as_index_tensor(targets, "targets", device=device)
    if targets.numel() != n_users:
        raise ValueError(f"targets has {targets.numel()} entries but offsets describe {n_users} users")
    if n_users and (targets.min() < 1 or targets.max() > n_items):
        raise ValueError(
            f"targets must lie in 1..{n_items}, got values in {int(targets.min())}..{int(targets.max())}"
        )
    return targets


def item_interaction_counts(offsets: ArrayLike, items: ArrayLike, n_items: int) -> torch.Tensor:
    """Interactions per item: LongTensor ``[n_items + 1]`` (entry 0, padding, is 0)."""
    _, items, _ = _checked_csr(offsets, items, n_items)
    return torch.bincount(items, minlength=n_items + 1)


def cold_item_users(
    offsets: ArrayLike, items: ArrayLike, targets: ArrayLike, n_items: int, threshold: int = 10
) -> torch.Tensor:
    """Users whose target was seen fewer than ``threshold`` times in the counted interactions.

    Returns BoolTensor ``[n_users]``. New items (seen 0 times) are cold too.
    """
    if threshold < 1:
        raise ValueError(f"threshold must be >= 1, got {threshold}")
    offsets, items, _ = _checked_csr(offsets, items, n_items)
    targets = _checked_targets(targets, offsets.numel() - 1, n_items, items.device)
    return torch.bincount(items, minlength=n_items + 1)[targets] < threshold


def new_item_users(offsets: ArrayLike, items: ArrayLike, targets: ArrayLike, n_items: int) -> torch.Tensor:
    """Users whose target never occurs in the counted interactions: BoolTensor ``[n_users]``."""
    return cold_item_users(offsets, items, targets, n_items, threshold=1)


def iterative_filter(
    offsets: ArrayLike,
    items: ArrayLike,
    n_items: int,
    min_item_interactions: int,
    min_user_interactions: int = 5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeatedly drop items with fewer than ``min_item_interactions`` and users with fewer than
    ``min_user_interactions`` interactions (each drop removes its interactions from the other side's
    counts) until nothing changes.

    Returns ``(item_mask [n_items + 1], user_mask [n_users])``, BoolTensors of the survivors (entry 0 of
    ``item_mask``, padding, is False). The survivors are the unique largest set meeting both minimums, so
    the order of the drops does not matter.
    """
    if min_item_interactions < 1 or min_user_interactions < 0:
        raise ValueError(
            "min_item_interactions must be >= 1 and min_user_interactions >= 0, "
            f"got {min_item_interactions} and {min_user_interactions}"
        )
    offsets, items, owner = _checked_csr(offsets, items, n_items)
    n_users = offsets.numel() - 1
    alive = torch.ones(items.numel(), dtype=torch.bool, device=items.device)
    n_alive = items.numel()
    while True:
        item_mask = torch.bincount(items[alive], minlength=n_items + 1) >= min_item_interactions
        user_mask = torch.bincount(owner[alive], minlength=n_users) >= min_user_interactions
        alive &= item_mask[items] & user_mask[owner]
        now_alive = int(alive.sum())
        if now_alive == n_alive:
            return item_mask, user_mask
        n_alive = now_alive


def warm_item_users(
    offsets: ArrayLike,
    items: ArrayLike,
    targets: ArrayLike,
    n_items: int,
    min_item_interactions: int,
    min_user_interactions: int = 5,
) -> torch.Tensor:
    """MoRec's warm-N test users: BoolTensor ``[n_users]``, True for users who survive
    :func:`iterative_filter` (N = ``min_item_interactions``) and whose target is among the surviving items.
    """
    item_mask, user_mask = iterative_filter(
        offsets, items, n_items, min_item_interactions, min_user_interactions
    )
    targets = _checked_targets(targets, user_mask.numel(), n_items, user_mask.device)
    return user_mask & item_mask[targets]


def evaluation_subsets(
    offsets: ArrayLike,
    items: ArrayLike,
    targets: ArrayLike,
    n_items: int,
    *,
    cold_threshold: int = 10,
    warm_ns: Sequence[int] = (),
    min_user_interactions: int = 5,
) -> dict[str, torch.Tensor]:
    """All settings at once: ``{"regular", "cold", "new", "warm-N" for N in warm_ns}`` -> BoolTensor
    ``[n_users]``, all computed from the same counted interactions (see the module docstring; MoRec's
    warm-N counts the full sequences, so call :func:`warm_item_users` separately when the two differ).
    """
    n_users = _as_index_tensor(offsets, "offsets").numel() - 1
    subsets = {
        "regular": torch.ones(max(n_users, 0), dtype=torch.bool, device=torch.as_tensor(items).device),
        "cold": cold_item_users(offsets, items, targets, n_items, cold_threshold),
        "new": new_item_users(offsets, items, targets, n_items),
    }
    for n in warm_ns:
        subsets[f"warm-{n}"] = warm_item_users(offsets, items, targets, n_items, n, min_user_interactions)
    return subsets
