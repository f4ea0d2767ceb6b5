"""A seeded, generated stand-in for MovieLens-100K, so that the default tests never download it.

MovieLens may not be redistributed, so the real data is never committed and the default suite must not
depend on fetching it. This module writes, in a temporary data root, what ``fetch_ml100k`` leaves there
after a real fetch: the GroupLens archive's ``u.data``, ``u.item`` and ``u.user`` (in GroupLens's own
formats) converted by ``grouplens_to_atomic`` into ``ml-100k/ml-100k.{inter,item,user}``, plus
``SOURCE.json``; ``fetch_ml100k`` then finds the folder already cached and verifies it.

The content is random but plausible: titles with release years, one to three genres, ages, genders,
occupations and zip codes, ratings with MovieLens's distribution, and per-user bursts of timestamps with
many same-second ratings (as in the real log, where the tie rule decides some test targets). Its
figures are those of the real data by construction: 943 users, 1,682 items and 100,000 ratings (what
``verify_ml100k`` checks); every user has at least 20 ratings, exactly ``RARE_ITEMS`` items have fewer
than 5 ratings (``RARE_RATINGS`` in all) and every other item at least 5, so 5-core filtering removes
exactly those items and ratings and nothing else: 943 users, 1,349 items, 99,287 interactions, as on
MovieLens-100K.

    folder = write_ml100k_standin(root)   # root/ml-100k, as after `transrec data fetch ml-100k`
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from transrec.data.movielens import EXPECTED, FILES, GENRES, grouplens_to_atomic, verify_ml100k

N_USERS, N_ITEMS, N_RATINGS = EXPECTED["users"], EXPECTED["items"], EXPECTED["interactions"]
CORE = 5  # PrepareConfig's default user_k and item_k
RARE_ITEMS, RARE_RATINGS = 333, 713  # items below CORE ratings, and their ratings (MovieLens-100K's)
MIN_USER_RATINGS, MAX_USER_RATINGS = 20, 737  # GroupLens kept users with 20 ratings or more
FIRST_SECOND, LAST_SECOND = 874_724_710, 893_286_638  # the real log's span (Sep 1997 - Apr 1998)
RATING_SHARES = (0.061, 0.114, 0.271, 0.341, 0.213)  # ratings 1..5
OCCUPATIONS = (
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive", "healthcare",
    "homemaker", "lawyer", "librarian", "marketing", "none", "other", "programmer", "retired", "salesman",
    "scientist", "student", "technician", "writer",
)  # fmt: skip
ADJECTIVES = (
    "Silent", "Last", "Golden", "Broken", "Wild", "Dark", "Little", "Lost", "Secret", "Crimson", "Endless",
    "Hidden", "Distant", "Burning", "Frozen", "Quiet", "Electric", "Restless", "Forgotten", "Midnight",
)  # fmt: skip
NOUNS = (
    "River", "Harbor", "Empire", "Garden", "Stranger", "Highway", "Summer", "Island", "Promise", "Kingdom",
    "Detective", "Horizon", "Letter", "Mountain", "Station", "Shadow", "Dancer", "Winter", "Orchard",
    "Machine", "Witness", "Voyage", "Circus", "Frontier", "Lighthouse", "Sheriff", "Carnival", "Planet",
)  # fmt: skip
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def spread(total: int, weights: np.ndarray, low: int, high: int, rng: np.random.Generator) -> np.ndarray:
    """Integer counts ``low <= c <= high``, one per weight, summing to ``total``, drawn in proportion to
    ``weights`` (a multinomial whose overflow above ``high`` is drawn again among the others)."""
    if not low * len(weights) <= total <= high * len(weights):
        raise ValueError(f"cannot spread {total} over {len(weights)} counts in {low}..{high}")
    counts = np.full(len(weights), low, dtype=np.int64)
    while (left := total - int(counts.sum())) > 0:
        room = np.where(counts < high, weights, 0.0)
        counts = np.minimum(counts + rng.multinomial(left, room / room.sum()), high)
    return counts


def draw_ratings(rng: np.random.Generator) -> list[tuple[int, int]]:
    """The (user, item) pairs, 1-based ids, with the figures of the module docstring."""
    activity = rng.lognormal(0.0, 1.0, N_USERS)
    per_user = spread(N_RATINGS, activity, MIN_USER_RATINGS, MAX_USER_RATINGS, rng)
    items = rng.permutation(np.arange(1, N_ITEMS + 1))
    rare, core = items[:RARE_ITEMS], items[RARE_ITEMS:]
    per_rare = spread(RARE_RATINGS, np.ones(RARE_ITEMS), 1, CORE - 1, rng)
    taken = [set() for _ in range(N_USERS)]
    room = per_user.astype(np.float64)

    def give(item: int, n: int) -> None:
        # n distinct users, in proportion to how many ratings each still has to give
        for user in rng.choice(N_USERS, size=n, replace=False, p=room / room.sum()):
            taken[user].add(int(item))
            room[user] -= 1

    for item, n in zip(rare, per_rare, strict=True):
        give(item, int(n))
    for item in core:  # every other item reaches the core on its own
        give(item, CORE)
    popularity = 1.0 / np.arange(1, len(core) + 1) ** 0.8  # a long tail, as in the real catalogue
    pairs = []
    for user in range(N_USERS):
        free = np.array([item not in taken[user] for item in core])
        p = np.where(free, popularity, 0.0)
        extra = rng.choice(core, size=int(room[user]), replace=False, p=p / p.sum())
        pairs += [(user + 1, int(item)) for item in (*taken[user], *extra.tolist())]
    return pairs


def timestamps(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` non-decreasing seconds of one user: bursts within a session, about half in the same second
    as the rating before, and gaps of hours to weeks between sessions."""
    gaps = np.where(rng.random(n) < 0.5, 0, rng.exponential(40.0, n).astype(np.int64) + 1)
    new_session = rng.random(n) < 0.05
    gaps[new_session] = rng.exponential(5 * 86_400.0, int(new_session.sum())).astype(np.int64) + 3_600
    gaps[0] = 0
    offsets = np.cumsum(gaps)
    span = LAST_SECOND - FIRST_SECOND
    if offsets[-1] > span:
        offsets = offsets * span // offsets[-1]
    return FIRST_SECOND + int(rng.integers(0, span - offsets[-1] + 1)) + offsets


def grouplens_files(seed: int = 0) -> dict[str, str]:
    """``u.data``, ``u.item`` and ``u.user`` of the stand-in, in the GroupLens archive's formats."""
    rng = np.random.default_rng(seed)
    by_user: dict[int, list[int]] = {}
    for user, item in draw_ratings(rng):
        by_user.setdefault(user, []).append(item)
    rows = []
    for user, items in by_user.items():
        order = rng.permutation(items)
        seconds = timestamps(len(order), rng)
        ratings = rng.choice(np.arange(1, 6), size=len(order), p=RATING_SHARES)
        rows += [f"{user}\t{item}\t{r}\t{s}" for item, r, s in zip(order, ratings, seconds, strict=True)]
    data = "\n".join(rows[i] for i in rng.permutation(len(rows))) + "\n"  # the real file is unordered

    item_rows = []
    for item in range(1, N_ITEMS + 1):
        words = rng.choice(ADJECTIVES), rng.choice(NOUNS)
        title = f"The {words[0]} {words[1]}" if rng.random() < 0.4 else f"{words[0]} {words[1]}"
        if rng.random() < 0.15:
            title += f" of the {rng.choice(NOUNS)}"
        year = int(max(1922, 1998 - rng.gamma(1.2, 8.0)))
        date = f"{rng.integers(1, 29):02d}-{MONTHS[rng.integers(12)]}-{year}"
        url = "http://us.imdb.com/M/title-exact?" + f"{title} ({year})".replace(" ", "%20")
        flags = np.zeros(len(GENRES), dtype=np.int64)
        flags[1 + rng.choice(len(GENRES) - 1, size=int(rng.integers(1, 4)), replace=False)] = 1
        item_rows.append(f"{item}|{title} ({year})|{date}||{url}|" + "|".join(map(str, flags)))

    user_rows = []
    for user in range(1, N_USERS + 1):
        age = int(np.clip(rng.normal(34, 12), 7, 73))
        gender = "M" if rng.random() < 0.71 else "F"
        user_rows.append(f"{user}|{age}|{gender}|{rng.choice(OCCUPATIONS)}|{rng.integers(10_000, 99_999)}")
    return {"u.data": data, "u.item": "\n".join(item_rows) + "\n", "u.user": "\n".join(user_rows) + "\n"}


def grouplens_archive(seed: int = 0) -> bytes:
    """The stand-in as GroupLens ships MovieLens-100K: ``ml-100k.zip`` with an ``ml-100k/`` folder."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in grouplens_files(seed).items():
            archive.writestr(f"ml-100k/{name}", text.encode("latin-1"))
    return buffer.getvalue()


def write_ml100k_standin(root: Path, seed: int = 0) -> Path:
    """Write the stand-in into ``root/ml-100k`` as a finished fetch leaves it; returns that folder."""
    folder = Path(root) / "ml-100k"
    folder.mkdir(parents=True, exist_ok=True)
    grouplens_to_atomic(grouplens_archive(seed), folder)
    counts = verify_ml100k(folder)
    digests = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in FILES}
    origin = (
        f"generated stand-in for MovieLens-100K (tests/fixtures_movielens.py, seed {seed}), not MovieLens"
    )
    info = {"source": origin, "counts": counts, "sha256": digests}
    (folder / "SOURCE.json").write_text(json.dumps(info, indent=2) + "\n")
    return folder
