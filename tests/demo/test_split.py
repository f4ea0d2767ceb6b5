"""The demo's platform split: disjoint users and items, deterministic, every kept interaction in place."""

import numpy as np

from transrec.data.synthetic import SyntheticWorldConfig, make_world
from transrec.demo.split import split_platforms


def test_platforms_share_no_user_and_no_item_and_keep_their_own_interactions():
    raw = make_world(SyntheticWorldConfig.tiny(seed=2)).source
    source, target = split_platforms(raw, seed=0)
    assert not set(source.items.ids) & set(target.items.ids)
    assert set(source.items.ids) | set(target.items.ids) == set(raw.items.ids)
    assert not set(source.interactions.users) & set(target.interactions.users)
    for part in (source, target):
        assert set(part.interactions.items) <= set(part.items.ids)
        assert part.notes[-1].startswith(("source platform", "target platform"))
    # Every interaction of the original is in exactly one platform or crosses the halves.
    pairs = set(zip(raw.interactions.users, raw.interactions.items, strict=True))
    kept = [set(zip(p.interactions.users, p.interactions.items, strict=True)) for p in (source, target)]
    assert kept[0] | kept[1] <= pairs and not kept[0] & kept[1]
    users = {u: ("s" if u in set(source.interactions.users) else "t") for u in raw.interactions.users}
    crossing = [(u, i) for u, i in pairs if (i in set(source.items.ids)) != (users[u] == "s")]
    assert len(kept[0]) + len(kept[1]) + len(crossing) == len(pairs)


def test_the_split_is_a_function_of_the_seed():
    raw = make_world(SyntheticWorldConfig.tiny(seed=2)).source
    a, b = split_platforms(raw, seed=0), split_platforms(raw, seed=0)
    c = split_platforms(raw, seed=1)
    assert a[0].items.ids == b[0].items.ids
    assert np.array_equal(a[1].interactions.timestamps, b[1].interactions.timestamps)
    assert a[0].items.ids != c[0].items.ids


def test_max_users_keeps_a_slice_of_each_platform():
    raw = make_world(SyntheticWorldConfig.tiny(seed=2)).source
    source, target = split_platforms(raw, seed=0, max_users=5)
    assert len(set(source.interactions.users)) == 5 and len(set(target.interactions.users)) == 5
