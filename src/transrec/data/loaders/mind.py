"""MIND (Microsoft News Dataset): ``behaviors.tsv`` and ``news.tsv`` of one or several splits.

Both files are tab separated, without a header::

    behaviors.tsv   impression id, user, time, click history (space separated, oldest first, may be
                    empty), impressions (news id - label: 1 clicked, 0 shown and not clicked)
        1	U13740	11/11/2019 9:05:58 AM	N55189 N42782	N55689-1 N35729-0
    news.tsv        id, category, subcategory, title, abstract, url, title entities, abstract entities
        N55189	tv	tvnews	'Wheel Of Fortune' Guest Delivers Answer	We'd like ...	https://...	[]	[]

Interactions, per user:

* The click history has no times. MIND gives each user one fixed history (clicks before the logged
  period), repeated on every impression row of that user, so it is read once per user: from the user's
  earliest impression (ties: the first row in file order, first split first), and placed just before
  that impression, one second apart in the listed order (the last history item at t0 - 1 s, where t0
  is that impression's time). Histories of the user's other rows are not read again.
* A clicked impression (``-1``) is an interaction at the impression's time; several clicks of one
  impression share that time and keep their listed order (the file-order tie rule).
* A ``-0`` impression (shown, not clicked) is counted as ``negative_feedback`` and not used; an
  impression without a label (the MIND-large test split) is counted as ``unlabeled_impression``.

Times (``11/15/2019 10:22:32 AM``, no zone given) are read as UTC. The interactions come out as all
histories (users in order of first appearance), then the clicks in file order.

Options:
    splits: sub-folders to read, in order, e.g. ``["MINDsmall_train", "MINDsmall_dev"]``; default None:
        ``path`` itself holds ``behaviors.tsv`` and ``news.tsv``. The news of all splits are merged; a
        news id listed again in a later split's ``news.tsv`` is the same article and is not reported,
        one listed twice in the same file is a ``duplicate_item``.
    text: ``"title"`` (default) or ``"title+abstract"`` (joined by a space).
    on_bad_row: "error" (default) or "skip".

Item features: ``category`` and ``subcategory``. MIND has no images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from transrec.config import ConfigError
from transrec.data.errors import DataError
from transrec.data.loaders import LOADERS
from transrec.data.loaders.common import (
    BadRowPolicy,
    bad_row,
    check_policy,
    normalise_text,
    parse_datetime,
    read_rows,
    require_file,
)
from transrec.data.report import PreparationReport
from transrec.data.schema import FeatureValue, RawDataset, RawInteractions, RawItems

TIME_FORMATS = ("%m/%d/%Y %I:%M:%S %p",)
TEXT_CHOICES = ("title", "title+abstract")
N_NEWS_FIELDS = 8


@LOADERS.register("mind")
def load_mind(
    path: Path,
    *,
    splits: Sequence[str] | None = None,
    text: str = "title",
    on_bad_row: BadRowPolicy = "error",
) -> RawDataset:
    check_policy(on_bad_row)
    if text not in TEXT_CHOICES:
        raise ConfigError(f"text must be one of {', '.join(TEXT_CHOICES)}, got {text!r}")
    if isinstance(splits, str):
        splits = [splits]
    path = Path(path)
    folders = [path] if not splits else [path / split for split in splits]
    report = PreparationReport()
    files: list[Path] = []
    behaviors = _Behaviors()
    items = RawItems(ids=[], texts=[], images=[], features={"category": [], "subcategory": []})
    known: set[str] = set()
    for folder in folders:
        behaviors_path = require_file(folder / "behaviors.tsv", "MIND behaviors file")
        news_path = require_file(folder / "news.tsv", "MIND news file")
        files += [behaviors_path, news_path]
        behaviors.read(behaviors_path, on_bad_row, report)
        _read_news(news_path, text == "title+abstract", items, known, on_bad_row, report)
    return RawDataset(
        name=path.name,
        interactions=behaviors.interactions(),
        items=items,
        report=report,
        files=files,
        notes=[
            "history clicks have no times: placed one second apart just before the user's first impression"
        ],
    )


class _Behaviors:
    """Collects the clicks of behaviors files and each user's history from their earliest impression."""

    def __init__(self) -> None:
        self.users: list[str] = []
        self.items: list[str] = []
        self.times: list[float] = []
        self.first: dict[str, tuple[float, list[str]]] = {}  # user -> (earliest time, its history)

    def read(self, path: Path, on_bad_row: BadRowPolicy, report: PreparationReport) -> None:
        for line, fields in read_rows(path, delimiter="\t", quoting=False):
            if len(fields) != 5:
                bad_row(
                    f"expected 5 tab-separated fields, found {len(fields)}", path, line, on_bad_row, report
                )
                continue
            _, user, time, history, impressions = (field.strip() for field in fields)
            if not user:
                bad_row("empty user id", path, line, on_bad_row, report)
                continue
            try:
                when = parse_datetime(time, TIME_FORMATS, path, line)
                shown = [_impression(token, path, line) for token in impressions.split()]
            except DataError as err:
                bad_row(err.problem, path, line, on_bad_row, report)
                continue
            if user not in self.first or when < self.first[user][0]:
                self.first[user] = (when, history.split())
            for item, label in shown:
                if label == "1":
                    self.users.append(user)
                    self.items.append(item)
                    self.times.append(when)
                elif label == "0":
                    report.add("negative_feedback", example=f"{path.name}:{line}: {user} {item}-0")
                else:
                    report.add("unlabeled_impression", example=f"{path.name}:{line}: {user} {item}")

    def interactions(self) -> RawInteractions:
        users, items, times = [], [], []
        for user, (start, history) in self.first.items():
            users += [user] * len(history)
            items += history
            times += [start - (len(history) - i) for i in range(len(history))]
        return RawInteractions.from_lists(users + self.users, items + self.items, times + self.times)


def _impression(token: str, path: Path, line: int) -> tuple[str, str]:
    """``N123-1`` -> (``N123``, ``"1"``); an unlabeled ``N123`` -> (``N123``, ``""``)."""
    item, dash, label = token.rpartition("-")
    if not dash:
        return token, ""
    if not item or label not in ("0", "1"):
        raise DataError(f"impression {token!r} is not of the form <news id>-<0 or 1>", path, line)
    return item, label


def _read_news(
    path: Path,
    with_abstract: bool,
    items: RawItems,
    known: set[str],
    on_bad_row: BadRowPolicy,
    report: PreparationReport,
) -> None:
    in_this_file: set[str] = set()
    features: dict[str, list[FeatureValue]] = items.features
    for line, fields in read_rows(path, delimiter="\t", quoting=False):
        if len(fields) != N_NEWS_FIELDS:
            bad_row(
                f"expected {N_NEWS_FIELDS} tab-separated fields, found {len(fields)}",
                path,
                line,
                on_bad_row,
                report,
            )
            continue
        news, category, subcategory, title, abstract = (field.strip() for field in fields[:5])
        if not news:
            bad_row("empty news id", path, line, on_bad_row, report)
            continue
        if news in in_this_file:
            report.add("duplicate_item", example=f"{path.name}:{line}: news {news}")
            continue
        in_this_file.add(news)
        if news in known:
            continue
        known.add(news)
        parts = [title, abstract] if with_abstract else [title]
        items.ids.append(news)
        items.texts.append(" ".join(t for t in map(normalise_text, parts) if t))
        items.images.append(None)
        features["category"].append(category or None)
        features["subcategory"].append(subcategory or None)
