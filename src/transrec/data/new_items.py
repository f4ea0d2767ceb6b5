"""The new-item protocol of preparation (``PrepareConfig.new_items``): items a platform meets with no
interaction yet.

A leave-one-out split of a k-core dataset has almost no item without a training interaction, so the
new-item setting of MoRec (Appendix Table 9: ID-based models near zero, modality-based ones far above)
cannot be measured on it. This step makes such items the way a platform meets them:

1. **Marking.** Each item's *first-seen time* is the earliest timestamp of any interaction with it
   (after the k-core filter, over every user). Items are ordered by (first-seen time, item id; the id as
   in ``tie_break=item_id``: numeric when every id is an integer), and the last
   ``max(1, round(new_items * n_items))`` of that order, the items first seen latest, are *new*; ties
   on time go to the larger id, so the marking is deterministic and independent of file order.
2. **Removal.** Every interaction with a new item is removed, except a user's last one (the test target,
   ``s[-1]``): training ``s[:-2]`` and validation (inputs ``s[:-2]``, target ``s[-2]``) never contain a
   new item, and no test history ``s[:-1]`` does either. A user whose test target is new keeps it, with
   earlier interactions with new items removed as for everyone else (no new item reaches training);
   the rest of a user's sequence is kept, in order.
3. **Short users.** A user left with fewer than 3 interactions cannot be split leave-one-out and is
   removed with their remaining interactions (counted in the report).

New items stay in the catalogue (``items.jsonl``, tokens, images), even one left with no interaction,
so every model ranks them. Because no new item occurs in any training or validation interaction, the
evaluation subset ``new`` (``evaluation.model_eval.subset_masks``: the target has no interaction before
the stage's targets) contains every test user whose target is new (an old item that happens to occur
only as test targets is new by that definition too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NewItemRemoval:
    """What the removal step keeps, on the arrays it was given.

    ``keep``: bool per interaction; ``removed_interactions``: interactions with a new item removed (not
    a user's last); ``short_users``: user codes removed for being left with fewer than 3 interactions,
    ``short_user_interactions``: their interactions that were not already removed as new-item ones (the
    two counts add up to ``(~keep).sum()``);
    ``new_target_users``: users kept whose last interaction (test target) is a new item.
    """

    keep: np.ndarray
    removed_interactions: int
    short_users: np.ndarray
    short_user_interactions: int
    new_target_users: int


def new_item_count(fraction: float, n_items: int) -> int:
    """How many of ``n_items`` are marked new: ``round(fraction * n_items)``, at least 1 when
    ``fraction > 0``, 0 when it is 0."""
    if fraction <= 0 or n_items == 0:
        return 0
    return min(n_items, max(1, round(fraction * n_items)))


def mark_new_items(
    items: np.ndarray, stamps: np.ndarray, id_rank: np.ndarray, n_items: int, fraction: float
) -> np.ndarray:
    """Bool ``[n_items]`` over item codes: True for the ``new_item_count(fraction, k)`` items first seen
    latest among the ``k`` items that occur in ``items`` (codes ``0..n_items-1``, parallel to
    ``stamps``). ``id_rank[c]`` orders items of equal first-seen time (the larger rank counts as newer).
    """
    first_seen = np.full(n_items, np.inf)
    np.minimum.at(first_seen, items, stamps)
    present = np.flatnonzero(np.isfinite(first_seen))
    count = new_item_count(fraction, len(present))
    is_new = np.zeros(n_items, dtype=bool)
    if count:
        # lexsort: the last key is the primary one; latest first-seen last, the larger id rank last.
        order = present[np.lexsort((id_rank[present], first_seen[present]))]
        is_new[order[len(order) - count :]] = True
    return is_new


def remove_new_item_interactions(users: np.ndarray, items: np.ndarray, is_new: np.ndarray) -> NewItemRemoval:
    """Which interactions stay once new items leave training and validation (see the module docstring).

    ``users`` and ``items`` are codes sorted by user, chronologically within a user (the preparation
    order), ``is_new`` a bool mask over item codes.
    """
    n = len(users)
    last = np.ones(n, dtype=bool)
    last[:-1] = users[1:] != users[:-1]
    new = is_new[items]
    keep = ~new | last
    kept_users, kept_per_user = np.unique(users[keep], return_counts=True)
    short = kept_users[kept_per_user < 3]
    of_short = np.isin(users, short)
    short_interactions = int((keep & of_short).sum())
    removed = int((~keep).sum())
    keep &= ~of_short
    return NewItemRemoval(
        keep=keep,
        removed_interactions=removed,
        short_users=short,
        short_user_interactions=short_interactions,
        new_target_users=int((keep & last & new).sum()),
    )
