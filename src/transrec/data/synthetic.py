"""A synthetic mixture-of-modality world: two platforms that share meaning but no user and no item.

The world has ``n_topics`` latent topics. Each topic has a word distribution over one shared vocabulary
(texts look like ``"w12 w407 w3 ..."``, so a word means the same thing on both platforms) and a visual
signature (a colour palette, a stripe orientation and frequency) rendered into small PNG images. Items
of the *source* (``s_i0``, ``s_u0``...) and the *target* (``t_i0``, ``t_u0``...) platform are drawn from
the same topics with per-item noise; each item has text only, an image only, or both. Users walk a
topic-transition matrix shared by both platforms, so sequential patterns learnt on the source transfer to
the target. Everything is generated from ``config.seed``: the same config gives byte-identical texts,
images and interactions.

    from transrec.data.synthetic import SyntheticWorldConfig, make_world
    world = make_world(SyntheticWorldConfig())            # default world, about a second
    world = make_world(SyntheticWorldConfig.tiny(seed=3))  # unit tests, a few milliseconds
    world.source, world.target                             # RawDataset each
    world.item_topics["t_i7"]                              # ground-truth topic of an item
"""

from __future__ import annotations

import bisect
import colorsys
import io
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from transrec.config import ConfigError
from transrec.data.schema import BytesImage, RawDataset, RawInteractions, RawItems

#: The clock starts here (2020-09-13); timestamps are whole seconds stored as float64.
START_TIME = 1_600_000_000


@dataclass
class SyntheticWorldConfig:
    """Sizes and noise of a synthetic world.

    Args:
        seed: seed of every random draw (default 0).
        n_topics: latent topics shared by both platforms (default 8, at least 2).
        source_users / source_items: size of the source platform (default 1500 / 600).
        target_users / target_items: size of the target platform (default 500 / 300).
        min_seq_len / max_seq_len: each user's number of interactions, uniform in this range (default
            8 / 20). No user interacts with the same item twice.
        image_size: side of the square RGB images in pixels (default 32).
        words_per_text: words in each item text (default 12).
        vocab_size: shared vocabulary ``w0 .. w{vocab_size-1}`` (default 1000).
        words_per_topic: characteristic words of each topic, drawn from the vocabulary (default 30).
        text_only_fraction / image_only_fraction: share of items with only a text / only an image; the
            rest have both (default 1/3 each, so 1/3 have both).
        text_noise: share of each text's words drawn uniformly from the whole vocabulary (default 0.3).
        image_noise: standard deviation of per-pixel Gaussian noise, on a 0-1 scale (default 0.08).
        colour_noise: standard deviation of each item's jitter of its topic's colours (default 0.06).
        angle_noise: standard deviation of each item's jitter of its topic's stripe angle, in radians
            (default 0.15).
        domain_shift: how much the platforms differ in style: the share of text words drawn from
            platform-specific style words, and the weight of a platform-specific tint blended into
            images (default 0.1; 0 makes the platforms differ only by noise).
        style_words: style words per platform (default 20).
        popularity_skew: Zipf exponent of item popularity within a topic; 0 is uniform (default 0.8).
        topic_stickiness: probability that a user's next item is of the same topic (default 0.3).
        transition_paths: number of favoured successor topics of each topic (default 2).
        transition_smoothing: probability mass spread uniformly over all topics at each step (default
            0.1). The transition matrix is doubly stochastic, so every topic is equally popular.
        time_span_days: users start uniformly within this many days (default 60).
        mean_gap_seconds: mean gap between a user's consecutive interactions (default 3600).
        same_second_fraction: share of users whose sequence is shifted to start at exactly the same
            second as another user's, so that cross-user timestamp ties exist (default 0.05).
    """

    seed: int = 0
    n_topics: int = 8
    source_users: int = 1500
    source_items: int = 600
    target_users: int = 500
    target_items: int = 300
    min_seq_len: int = 8
    max_seq_len: int = 20
    image_size: int = 32
    words_per_text: int = 12
    vocab_size: int = 1000
    words_per_topic: int = 30
    text_only_fraction: float = 1 / 3
    image_only_fraction: float = 1 / 3
    text_noise: float = 0.3
    image_noise: float = 0.08
    colour_noise: float = 0.06
    angle_noise: float = 0.15
    domain_shift: float = 0.1
    style_words: int = 20
    popularity_skew: float = 0.8
    topic_stickiness: float = 0.3
    transition_paths: int = 2
    transition_smoothing: float = 0.1
    time_span_days: float = 60.0
    mean_gap_seconds: float = 3600.0
    same_second_fraction: float = 0.05

    def __post_init__(self) -> None:
        if self.n_topics < 2:
            raise ConfigError(f"n_topics must be at least 2, got {self.n_topics}")
        for name in ("source_users", "target_users", "words_per_text", "words_per_topic", "transition_paths"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("source_items", "target_items"):
            if getattr(self, name) < max(self.max_seq_len, self.n_topics):
                raise ConfigError(f"{name} ({getattr(self, name)}) must be at least max_seq_len and n_topics")
        if not 1 <= self.min_seq_len <= self.max_seq_len:
            raise ConfigError(
                f"need 1 <= min_seq_len <= max_seq_len, got {self.min_seq_len}, {self.max_seq_len}"
            )
        if self.image_size < 8:
            raise ConfigError(f"image_size must be at least 8, got {self.image_size}")
        if self.vocab_size < self.words_per_topic + 2 * self.style_words:
            raise ConfigError("vocab_size must be at least words_per_topic + 2 * style_words")
        for name in (
            "text_only_fraction",
            "image_only_fraction",
            "text_noise",
            "domain_shift",
            "topic_stickiness",
            "transition_smoothing",
            "same_second_fraction",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.text_only_fraction + self.image_only_fraction > 1.0 + 1e-9:
            raise ConfigError("text_only_fraction + image_only_fraction must not exceed 1")
        if self.text_noise + self.domain_shift > 1.0:
            raise ConfigError("text_noise + domain_shift must not exceed 1")
        if self.topic_stickiness + self.transition_smoothing > 1.0:
            raise ConfigError("topic_stickiness + transition_smoothing must not exceed 1")
        for name in ("image_noise", "colour_noise", "angle_noise", "popularity_skew", "style_words"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.time_span_days <= 0 or self.mean_gap_seconds <= 0:
            raise ConfigError("time_span_days and mean_gap_seconds must be positive")

    @classmethod
    def tiny(cls, seed: int = 0, **overrides: object) -> SyntheticWorldConfig:
        """A world small enough for unit tests: 4 topics, a few dozen users and items per platform."""
        sizes = dict(
            n_topics=4,
            source_users=40,
            source_items=24,
            target_users=30,
            target_items=16,
            min_seq_len=5,
            max_seq_len=8,
            vocab_size=200,
            words_per_topic=15,
            style_words=5,
            words_per_text=8,
        )
        return replace(cls(seed=seed), **{**sizes, **overrides})


@dataclass
class SyntheticWorld:
    """A generated world: two platforms with disjoint ids and the ground truth behind them.

    ``item_topics`` maps every item id of both platforms to its topic; ``topic_transitions`` is the
    (n_topics, n_topics) row-stochastic matrix both platforms' users follow.
    """

    config: SyntheticWorldConfig
    source: RawDataset
    target: RawDataset
    item_topics: dict[str, int]
    topic_transitions: np.ndarray


@dataclass
class _Topics:
    """What both platforms share: word distributions, visual signatures, transitions."""

    word_ids: np.ndarray  # (n_topics, words_per_topic) vocabulary indices
    word_probs: np.ndarray  # (n_topics, words_per_topic)
    style_words: list[np.ndarray]  # per platform, vocabulary indices
    palettes: np.ndarray  # (n_topics, 3 colours, RGB) in [0, 1]: background, stripes, spot
    angles: np.ndarray  # (n_topics,) stripe orientation in radians
    frequencies: np.ndarray  # (n_topics,) stripe cycles per image side
    tints: np.ndarray  # (2, RGB): the platforms' image tints
    transitions: np.ndarray  # (n_topics, n_topics)


def make_world(config: SyntheticWorldConfig) -> SyntheticWorld:
    """Generate the source and target platforms of ``config`` (deterministic in ``config.seed``).

    The shared topics, the source and the target draw from separate random streams, so changing the
    target's sizes leaves the source platform unchanged.
    """
    shared_seed, source_seed, target_seed = np.random.SeedSequence(config.seed).spawn(3)
    topics = _make_topics(config, np.random.default_rng(shared_seed))
    item_topics: dict[str, int] = {}
    platforms = []
    for index, (prefix, seed, n_users, n_items) in enumerate(
        [
            ("s", source_seed, config.source_users, config.source_items),
            ("t", target_seed, config.target_users, config.target_items),
        ]
    ):
        rng = np.random.default_rng(seed)
        dataset, topic_of_item = _make_platform(config, topics, rng, index, prefix, n_users, n_items)
        item_topics.update(zip(dataset.items.ids, topic_of_item.tolist()))
        platforms.append(dataset)
    return SyntheticWorld(config, platforms[0], platforms[1], item_topics, topics.transitions)


def _make_topics(config: SyntheticWorldConfig, rng: np.random.Generator) -> _Topics:
    n = config.n_topics
    vocab = rng.permutation(config.vocab_size)
    n_style = config.style_words
    # Style words are never topic words, so platform style carries no topic signal.
    style_words = [vocab[:n_style], vocab[n_style : 2 * n_style]]
    topic_pool = vocab[2 * n_style :]
    word_ids = np.stack([rng.choice(topic_pool, config.words_per_topic, replace=False) for _ in range(n)])
    word_probs = rng.dirichlet(np.ones(config.words_per_topic), size=n)

    # Hues evenly spread (with a random offset) keep topics visually apart; stripes and spots use
    # hues a half and a quarter turn away.
    hue_offset = rng.random()
    palettes = np.zeros((n, 3, 3))
    for t in range(n):
        hue = (hue_offset + t / n) % 1.0
        for c, (shift, value) in enumerate([(0.0, 0.9), (0.5, 0.45), (0.25, 0.75)]):
            saturation = rng.uniform(0.5, 0.9)
            palettes[t, c] = colorsys.hsv_to_rgb((hue + shift) % 1.0, saturation, value)
    angles = (rng.permutation(n) / n) * np.pi + rng.uniform(0, np.pi / n)
    frequencies = rng.uniform(1.5, 4.0, size=n)
    tints = rng.uniform(0.0, 1.0, size=(2, 3))

    # A convex mix of the identity, shifted random orders (derangements) and the uniform matrix:
    # doubly stochastic, hence a uniform stationary topic distribution, with a few favoured successors.
    n_paths = min(config.transition_paths, n - 1)
    shifts = rng.choice(np.arange(1, n), size=n_paths, replace=False)
    path_weights = rng.dirichlet(np.ones(n_paths)) * (
        1 - config.topic_stickiness - config.transition_smoothing
    )
    transitions = config.topic_stickiness * np.eye(n) + config.transition_smoothing / n
    for shift, weight in zip(shifts, path_weights):
        order = rng.permutation(n)
        transitions[order, np.roll(order, -shift)] += weight
    return _Topics(word_ids, word_probs, style_words, palettes, angles, frequencies, tints, transitions)


def _make_platform(
    config: SyntheticWorldConfig,
    topics: _Topics,
    rng: np.random.Generator,
    index: int,
    prefix: str,
    n_users: int,
    n_items: int,
) -> tuple[RawDataset, np.ndarray]:
    topic_of_item = rng.permutation(np.arange(n_items) % config.n_topics)
    n_text_only = round(n_items * config.text_only_fraction)
    n_image_only = min(round(n_items * config.image_only_fraction), n_items - n_text_only)
    # 0: text only, 1: image only, 2: both.
    modality = rng.permutation(
        np.repeat([0, 1, 2], [n_text_only, n_image_only, n_items - n_text_only - n_image_only])
    )
    item_ids = [f"{prefix}_i{i}" for i in range(n_items)]
    texts = [
        _make_text(config, topics, rng, index, topic_of_item[i]) if modality[i] != 1 else ""
        for i in range(n_items)
    ]
    images: list[BytesImage | None] = [
        BytesImage(_make_image(config, topics, rng, index, topic_of_item[i]), name=f"{item_ids[i]}.png")
        if modality[i] != 0
        else None
        for i in range(n_items)
    ]
    users, items, timestamps = _make_interactions(config, topics.transitions, rng, topic_of_item, n_users)
    interactions = RawInteractions(
        np.array([f"{prefix}_u{u}" for u in users], dtype=object),
        np.array(item_ids, dtype=object)[items],
        timestamps,
    )
    name = "synthetic_source" if index == 0 else "synthetic_target"
    note = (
        f"synthetic world (transrec.data.synthetic, seed={config.seed}): texts and images are generated "
        "from latent topics, not real content"
    )
    dataset = RawDataset(name, interactions, RawItems(item_ids, texts, images), notes=[note])
    return dataset, topic_of_item


def _make_text(
    config: SyntheticWorldConfig, topics: _Topics, rng: np.random.Generator, platform: int, topic: int
) -> str:
    n = config.words_per_text
    kind = rng.choice(
        3, size=n, p=[1 - config.text_noise - config.domain_shift, config.text_noise, config.domain_shift]
    )
    words = rng.choice(topics.word_ids[topic], size=n, p=topics.word_probs[topic])
    noise = rng.integers(0, config.vocab_size, size=n)
    style_pool = topics.style_words[platform]
    style = rng.choice(style_pool, size=n) if len(style_pool) else noise
    words = np.where(kind == 0, words, np.where(kind == 1, noise, style))
    return " ".join(f"w{w}" for w in words)


def _make_image(
    config: SyntheticWorldConfig, topics: _Topics, rng: np.random.Generator, platform: int, topic: int
) -> bytes:
    size = config.image_size
    y, x = np.mgrid[0:size, 0:size] / size
    angle = topics.angles[topic] + rng.normal(0.0, config.angle_noise)
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.sin(2 * np.pi * topics.frequencies[topic] * (x * np.cos(angle) + y * np.sin(angle)) + phase)
    stripes = (0.5 + 0.5 * np.tanh(4 * wave))[..., None]
    background, stripe_colour, spot_colour = topics.palettes[topic] + rng.normal(
        0, config.colour_noise, (3, 3)
    )
    image = background * (1 - stripes) + stripe_colour * stripes
    # A spot at a random place and size makes items of one topic look different from each other.
    cy, cx = rng.uniform(0.2, 0.8, size=2)
    radius = rng.uniform(0.08, 0.2)
    spot = ((y - cy) ** 2 + (x - cx) ** 2 < radius**2)[..., None]
    image = np.where(spot, spot_colour, image)
    image = image + rng.normal(0.0, config.image_noise, image.shape)
    image = (1 - config.domain_shift) * image + config.domain_shift * topics.tints[platform]
    pixels = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _make_interactions(
    config: SyntheticWorldConfig,
    transitions: np.ndarray,
    rng: np.random.Generator,
    topic_of_item: np.ndarray,
    n_users: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Users' item sequences and timestamps, returned as a log in chronological order.

    Returns (user index, item index, timestamp) arrays; ties in time keep user order.
    """
    n_topics = config.n_topics
    members = [np.flatnonzero(topic_of_item == t) for t in range(n_topics)]
    popularity = [(rng.permutation(len(m)) + 1.0) ** -config.popularity_skew for m in members]
    transition_cdf = np.cumsum(transitions, axis=1).tolist()
    lengths = rng.integers(config.min_seq_len, config.max_seq_len + 1, size=n_users)

    topic_cdfs = [np.cumsum(w / w.sum()).tolist() for w in popularity]
    users, items, timestamps = [], [], []
    for user, length in enumerate(lengths):
        seen: set[int] = set()
        topic = int(rng.integers(n_topics))
        for step in range(length):
            if step > 0:
                topic = min(bisect.bisect_right(transition_cdf[topic], rng.random()), n_topics - 1)
            item = _draw_unseen(rng, members[topic], topic_cdfs[topic], seen, len(topic_of_item))
            seen.add(item)
            users.append(user)
            items.append(item)
        gaps = 1 + np.floor(rng.exponential(config.mean_gap_seconds, size=length - 1))
        start = START_TIME + rng.integers(0, int(config.time_span_days * 86400))
        timestamps.append(start + np.concatenate([[0.0], np.cumsum(gaps)]))

    # Deliberate same-second ties across users: shift some users to start when another user starts.
    n_tied = min(round(n_users * config.same_second_fraction), n_users // 2)
    if n_tied:
        order = rng.permutation(n_users)
        for user, partner in zip(order[:n_tied], order[n_tied : 2 * n_tied]):
            timestamps[user] = timestamps[user] - timestamps[user][0] + timestamps[partner][0]

    users_array, items_array = np.array(users), np.array(items)
    times = np.concatenate(timestamps).astype(np.float64)
    chronological = np.argsort(times, kind="stable")
    return users_array[chronological], items_array[chronological], times[chronological]


def _draw_unseen(
    rng: np.random.Generator, members: np.ndarray, cdf: list[float], seen: set[int], n_items: int
) -> int:
    """One item of a topic by popularity, never one the user has already seen."""
    # Rejection is exact (it samples the popularity renormalised over unseen items) and cheap while
    # users have seen a small part of the topic; past a few tries, sample the unseen ones directly.
    for _ in range(20):
        item = int(members[min(bisect.bisect_right(cdf, rng.random()), len(members) - 1)])
        if item not in seen:
            return item
    weights = np.diff(cdf, prepend=0.0) * np.array([m not in seen for m in members.tolist()])
    if weights.sum() == 0:  # the user has seen the whole topic: any unseen item will do
        members = np.setdiff1d(np.arange(n_items), np.fromiter(seen, int))
        weights = np.ones(len(members))
    return int(rng.choice(members, p=weights / weights.sum()))
