"""Vectorised interaction filtering: chronological order, de-duplication, k-core, truncation.

All functions work on parallel integer arrays (``users``, ``items`` codes, ``timestamps`` and a tie key)
and return boolean keep-masks or orders, so that preparation can count what each step removed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transrec.config import ConfigError


def chronological_order(users: np.ndarray, timestamps: np.ndarray, tie_key: np.ndarray) -> np.ndarray:
    """Permutation sorting by user, then timestamp, then ``tie_key`` (all ascending, stable).

    The tie key decides which of two same-second interactions comes last, i.e. which one becomes the
    test target: preparation passes the file order (default) or the item-id rank (``tie_break``).
    """
    return np.lexsort((tie_key, timestamps, users))


def first_occurrence_mask(users: np.ndarray, items: np.ndarray, n_items: int, keep: str) -> np.ndarray:
    """On chronologically sorted arrays, True for the interaction kept of each repeated (user, item).

    ``keep="first"`` keeps the earliest, ``"last"`` the latest, ``"none"`` keeps all.
    """
    if keep == "none":
        return np.ones(len(users), dtype=bool)
    key = users.astype(np.int64) * (n_items + 1) + items.astype(np.int64)
    mask = np.zeros(len(key), dtype=bool)
    if keep == "first":
        _, index = np.unique(key, return_index=True)
    elif keep == "last":
        _, index = np.unique(key[::-1], return_index=True)
        index = len(key) - 1 - index
    else:
        raise ConfigError(f"dedup must be 'first', 'last' or 'none', got {keep!r}")
    mask[index] = True
    return mask


@dataclass
class KCoreResult:
    keep: np.ndarray  # bool per interaction
    removed_users: np.ndarray  # user codes removed
    removed_items: np.ndarray  # item codes removed
    short_users: np.ndarray  # user codes removed for having fewer than min_split interactions
    short_user_interactions: int  # interactions removed with the short users


def k_core(
    users: np.ndarray,
    items: np.ndarray,
    n_users: int,
    n_items: int,
    user_k: int,
    item_k: int,
    min_split: int = 3,
) -> KCoreResult:
    """Iterative k-core: repeat until every user has >= max(user_k, min_split) and every item >= item_k.

    Users below ``min_split`` interactions cannot be split leave-one-out; when ``user_k < min_split``
    they are reported as *short users* rather than k-core removals.
    """
    min_user = max(user_k, min_split)
    keep = np.ones(len(users), dtype=bool)
    removed_user = np.zeros(n_users, dtype=bool)
    removed_item = np.zeros(n_items, dtype=bool)
    short_user = np.zeros(n_users, dtype=bool)
    short_interactions = 0
    while True:
        user_count = np.bincount(users[keep], minlength=n_users)
        item_count = np.bincount(items[keep], minlength=n_items)
        bad_user = (user_count > 0) & (user_count < min_user)
        bad_item = (item_count > 0) & (item_count < item_k)
        if not bad_user.any() and not bad_item.any():
            break
        if user_k < min_split:
            short = bad_user & (user_count < min_split)
            short_user |= short
            short_interactions += int(user_count[short].sum())
            removed_user |= bad_user & ~short
        else:
            removed_user |= bad_user
        removed_item |= bad_item
        keep &= ~bad_user[users] & ~bad_item[items]
    return KCoreResult(
        keep=keep,
        removed_users=np.flatnonzero(removed_user),
        removed_items=np.flatnonzero(removed_item),
        short_users=np.flatnonzero(short_user),
        short_user_interactions=short_interactions,
    )


def last_n_mask(sorted_users: np.ndarray, max_len: int) -> np.ndarray:
    """On arrays sorted by user (chronological within a user), True for each user's last ``max_len``."""
    n = len(sorted_users)
    if n == 0:
        return np.ones(0, dtype=bool)
    boundaries = np.flatnonzero(np.diff(sorted_users)) + 1
    ends = np.append(boundaries, n)
    lengths = np.diff(np.concatenate(([0], ends)))
    end_of_row = np.repeat(ends, lengths)
    return (end_of_row - np.arange(n)) <= max_len
