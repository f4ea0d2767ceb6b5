"""The synthetic world: deterministic, well-formed, and carrying a topic signal that transfers."""

from __future__ import annotations

import io
import itertools
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from transrec.config import ConfigError, from_dict
from transrec.data.schema import RawDataset
from transrec.data.synthetic import SyntheticWorld, SyntheticWorldConfig, make_world


@pytest.fixture(scope="module")
def default_world() -> SyntheticWorld:
    return make_world(SyntheticWorldConfig())


def snapshot(dataset: RawDataset) -> tuple:
    items = dataset.items
    images = tuple(None if image is None else image.read_bytes() for image in items.images)
    log = dataset.interactions
    return (
        tuple(items.ids),
        tuple(items.texts),
        images,
        tuple(log.users),
        tuple(log.items),
        log.timestamps.tobytes(),
    )


def sequences(dataset: RawDataset) -> dict[str, list[tuple[float, str]]]:
    """Each user's (timestamp, item) list in log order."""
    by_user: dict[str, list[tuple[float, str]]] = {}
    log = dataset.interactions
    for user, item, time in zip(log.users, log.items, log.timestamps):
        by_user.setdefault(user, []).append((float(time), item))
    return by_user


def test_same_config_builds_byte_identical_world_and_another_seed_differs() -> None:
    first = make_world(SyntheticWorldConfig.tiny(seed=7))
    second = make_world(SyntheticWorldConfig.tiny(seed=7))
    assert snapshot(first.source) == snapshot(second.source)
    assert snapshot(first.target) == snapshot(second.target)
    assert first.item_topics == second.item_topics
    np.testing.assert_array_equal(first.topic_transitions, second.topic_transitions)

    other = make_world(SyntheticWorldConfig.tiny(seed=8))
    for mine, theirs in [(first.source, other.source), (first.target, other.target)]:
        a, b = snapshot(mine), snapshot(theirs)
        assert a[1] != b[1] and a[2] != b[2] and a[4] != b[4]


def test_source_does_not_change_when_only_the_target_size_changes() -> None:
    world = make_world(SyntheticWorldConfig.tiny(seed=1))
    bigger_target = make_world(SyntheticWorldConfig.tiny(seed=1, target_users=50, target_items=20))
    assert snapshot(world.source) == snapshot(bigger_target.source)
    assert len(bigger_target.target.items) == 20


def test_platforms_share_no_user_and_no_item() -> None:
    world = make_world(SyntheticWorldConfig.tiny())
    source_users, target_users = set(world.source.interactions.users), set(world.target.interactions.users)
    source_items, target_items = set(world.source.items.ids), set(world.target.items.ids)
    assert source_users and target_users and not source_users & target_users
    assert not source_items & target_items
    assert all(u.startswith("s_u") for u in source_users) and all(u.startswith("t_u") for u in target_users)
    # Every logged item is in its own platform's catalogue, and every item has a ground-truth topic.
    assert set(world.source.interactions.items) <= source_items
    assert set(world.target.interactions.items) <= target_items
    assert set(world.item_topics) == source_items | target_items


@pytest.mark.parametrize("text_only, image_only", [(1 / 3, 1 / 3), (0.2, 0.5), (1.0, 0.0), (0.0, 0.0)])
def test_modality_fractions_follow_the_config_and_no_item_is_empty(
    text_only: float, image_only: float
) -> None:
    config = SyntheticWorldConfig.tiny(
        source_items=300, target_items=90, text_only_fraction=text_only, image_only_fraction=image_only
    )
    world = make_world(config)
    for dataset in (world.source, world.target):
        items = dataset.items
        has_text = np.array([text != "" for text in items.texts])
        has_image = np.array([image is not None for image in items.images])
        assert (has_text | has_image).all()
        n = len(items)
        assert abs((has_text & ~has_image).sum() - n * text_only) <= 1
        assert abs((has_image & ~has_text).sum() - n * image_only) <= 1
        assert abs((has_text & has_image).sum() - n * (1 - text_only - image_only)) <= 1


def test_images_decode_to_the_configured_size_and_texts_use_the_vocabulary() -> None:
    config = SyntheticWorldConfig.tiny(image_size=24)
    world = make_world(config)
    n_images = 0
    for dataset in (world.source, world.target):
        for text, image in zip(dataset.items.texts, dataset.items.images):
            if image is not None:
                decoded = Image.open(io.BytesIO(image.read_bytes()))
                assert decoded.format == "PNG" and decoded.mode == "RGB" and decoded.size == (24, 24)
                n_images += 1
            if text:
                words = text.split(" ")
                assert len(words) == config.words_per_text
                assert all(w[0] == "w" and 0 <= int(w[1:]) < config.vocab_size for w in words)
    assert n_images > 0


def test_sequences_are_strictly_increasing_without_repeats_and_users_tie_across() -> None:
    config = SyntheticWorldConfig.tiny(source_users=200)
    world = make_world(config)
    log = world.source.interactions
    assert (np.diff(log.timestamps) >= 0).all(), "the log is in chronological order"
    users = sequences(world.source)
    assert len(users) == 200
    for events in users.values():
        times = [time for time, _ in events]
        assert config.min_seq_len <= len(events) <= config.max_seq_len
        assert all(later > earlier for earlier, later in itertools.pairwise(times))
        assert len({item for _, item in events}) == len(events)
    # Same-second ties between different users exist on purpose (tie rules must be exercised).
    time_to_users: dict[float, set[str]] = {}
    for user, time in zip(log.users, log.timestamps):
        time_to_users.setdefault(float(time), set()).add(user)
    assert sum(len(owners) > 1 for owners in time_to_users.values()) >= round(
        200 * config.same_second_fraction
    )


def test_default_world_keeps_its_items_under_5_core(default_world: SyntheticWorld) -> None:
    for dataset in (default_world.source, default_world.target):
        counts = Counter(dataset.interactions.items)
        share = sum(counts[item] >= 5 for item in dataset.items.ids) / len(dataset.items)
        assert share >= 0.97
        assert min(Counter(dataset.interactions.users).values()) >= 5


def test_topic_transitions_in_sequences_follow_the_shared_matrix(default_world: SyntheticWorld) -> None:
    matrix = default_world.topic_transitions
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
    for dataset in (default_world.source, default_world.target):
        counts = np.zeros_like(matrix)
        for events in sequences(dataset).values():
            topics = [default_world.item_topics[item] for _, item in events]
            np.add.at(counts, (topics[:-1], topics[1:]), 1)
        empirical = counts / counts.sum(axis=1, keepdims=True)
        assert np.corrcoef(empirical.ravel(), matrix.ravel())[0, 1] > 0.97
        assert np.abs(empirical - matrix).max() < 0.06


def nearest_centroid_accuracy(
    train: np.ndarray, train_topics: np.ndarray, test: np.ndarray, test_topics: np.ndarray
) -> float:
    centroids = np.stack([train[train_topics == t].mean(axis=0) for t in np.unique(train_topics)])
    distances = ((test[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=-1)
    return float((np.unique(train_topics)[distances.argmin(axis=1)] == test_topics).mean())


def text_features(world: SyntheticWorld, dataset: RawDataset) -> tuple[np.ndarray, np.ndarray]:
    """Normalised bag of words of the items that have text, and their topics."""
    keep = [i for i, text in enumerate(dataset.items.texts) if text]
    bags = np.zeros((len(keep), world.config.vocab_size))
    for row, i in enumerate(keep):
        for word in dataset.items.texts[i].split(" "):
            bags[row, int(word[1:])] += 1
    bags /= np.linalg.norm(bags, axis=1, keepdims=True)
    return bags, np.array([world.item_topics[dataset.items.ids[i]] for i in keep])


def image_features(world: SyntheticWorld, dataset: RawDataset) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread of each colour plus the dominant edge orientation (doubled angle)."""
    rows, topics = [], []
    for item_id, image in zip(dataset.items.ids, dataset.items.images):
        if image is None:
            continue
        pixels = np.asarray(Image.open(io.BytesIO(image.read_bytes())), dtype=np.float64) / 255
        grey = pixels.mean(axis=2)
        gx, gy = np.diff(grey, axis=1)[:-1], np.diff(grey, axis=0)[:, :-1]
        energy = (gx**2 + gy**2).mean()
        orientation = [(gx**2 - gy**2).mean() / energy, 2 * (gx * gy).mean() / energy]
        rows.append([*pixels.mean(axis=(0, 1)), *pixels.std(axis=(0, 1)), *orientation])
        topics.append(world.item_topics[item_id])
    return np.array(rows), np.array(topics)


@pytest.mark.parametrize("features", [text_features, image_features], ids=["text", "image"])
def test_content_carries_the_topic_from_source_to_target(default_world: SyntheticWorld, features) -> None:
    train, train_topics = features(default_world, default_world.source)
    test, test_topics = features(default_world, default_world.target)
    # Standardise with the source statistics only: the target is unseen, as in transfer.
    mean, std = train.mean(axis=0), train.std(axis=0) + 1e-9
    accuracy = nearest_centroid_accuracy((train - mean) / std, train_topics, (test - mean) / std, test_topics)
    chance = 1 / default_world.config.n_topics
    assert accuracy > 0.8 > 5 * chance


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="must not exceed 1"):
        SyntheticWorldConfig(text_only_fraction=0.7, image_only_fraction=0.5)
    with pytest.raises(ValueError, match="min_seq_len"):
        SyntheticWorldConfig(min_seq_len=9, max_seq_len=4)
    with pytest.raises(ConfigError, match="n_topics"):
        from_dict(SyntheticWorldConfig, {"n_topics": 1})
    assert from_dict(SyntheticWorldConfig, {"source_users": 10}).source_users == 10
