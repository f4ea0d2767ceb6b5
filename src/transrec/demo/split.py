"""Two platforms that share no user and no item, cut out of one dataset.

Items and users are each split in two halves by seeded permutations. The *source* platform keeps the
interactions of source users with source items, the *target* platform those of target users with target
items; interactions across the halves (about half of all) belong to neither. So nothing but content
(titles, years, genres, covers) and general sequential behaviour can carry knowledge from one platform
to the other. The split is a pure function of the dataset and the seed.

    source, target = split_platforms(load_raw("movielens", folder), seed=0)
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from transrec.data.errors import DataError
from transrec.data.schema import RawDataset, RawInteractions, RawItems, RawUsers


def split_platforms(
    raw: RawDataset, seed: int = 0, max_users: int | None = None
) -> tuple[RawDataset, RawDataset]:
    """``(source, target)`` with disjoint users and items (see the module docstring).

    Args:
        raw: a dataset with an item table.
        seed: seed of the two permutations.
        max_users: keep only this many users per platform (the first of the permutation): a small
            slice for smoke tests.
    """
    if raw.items is None:
        raise DataError(f"{raw.name} has no item table: platforms are split by their items' content")
    rng = np.random.default_rng(seed)
    item_ids = np.array(raw.items.ids, dtype=object)
    user_ids = np.array(sorted(set(raw.interactions.users.tolist())), dtype=object)
    item_half = rng.permutation(len(item_ids)) % 2  # 0 = source, 1 = target
    user_order = rng.permutation(len(user_ids))
    user_half = user_order % 2
    item_side = dict(zip(item_ids.tolist(), item_half.tolist(), strict=True))
    user_side = dict(zip(user_ids.tolist(), user_half.tolist(), strict=True))
    if max_users is not None:
        rank = {u: r // 2 for u, r in zip(user_ids.tolist(), user_order.tolist(), strict=True)}
        user_side = {u: side if rank[u] < max_users else -1 for u, side in user_side.items()}
    log = raw.interactions
    items_side = np.array([item_side.get(i, -1) for i in log.items.tolist()])
    users_side = np.array([user_side[u] for u in log.users.tolist()])
    return tuple(
        _platform(raw, part, side, items_side == side, users_side == side, item_half == side)
        for part, side in (("source", 0), ("target", 1))
    )  # type: ignore[return-value]


def _platform(raw, part, side, item_rows, user_rows, catalogue) -> RawDataset:
    log = raw.interactions
    keep = item_rows & user_rows
    interactions = RawInteractions(log.users[keep], log.items[keep], log.timestamps[keep])
    index = np.flatnonzero(catalogue)
    items = RawItems(
        ids=[raw.items.ids[i] for i in index],
        texts=[raw.items.texts[i] for i in index],
        images=[raw.items.images[i] for i in index],
        features={name: [values[i] for i in index] for name, values in raw.items.features.items()},
    )
    users = None
    if raw.users is not None:
        kept = set(interactions.users.tolist())
        rows = [r for r, u in enumerate(raw.users.ids) if u in kept]
        users = RawUsers(
            ids=[raw.users.ids[r] for r in rows],
            features={name: [values[r] for r in rows] for name, values in raw.users.features.items()},
        )
    note = (
        f"{part} platform of {raw.name}: users and items split in two halves by seeded permutations; "
        "interactions across the halves dropped (transrec.demo.split)"
    )
    return replace(raw, name=f"{raw.name}-{part}", interactions=interactions, items=items, users=users,
                   notes=[*raw.notes, note])  # fmt: skip
