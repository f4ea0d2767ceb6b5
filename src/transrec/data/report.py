"""The preparation report: what was dropped or changed while reading and preparing a dataset, and why.

Loaders and the preparation steps add to one report; it is printed and written into the prepared
dataset's ``meta.json``. Each reason keeps a count and the first few examples (file, line, detail),
so a user can find the rows in question.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The reasons used across transrec, with what they mean (shown next to the counts).
REASONS: dict[str, str] = {
    "malformed_row": "row could not be parsed and was skipped (on_bad_row=skip)",
    "duplicate_interaction": "repeated (user, item) interaction removed; the earliest is kept",
    "unknown_item": "interaction with an item id absent from the item table, removed",
    "duplicate_item": "item id listed twice in the item table; the first row is kept",
    "empty_text": "item with empty text; it keeps only its image, if any",
    "missing_image": "item image file absent; the item keeps only its text, if any",
    "corrupt_image": "item image could not be decoded; the item keeps only its text, if any",
    "modality_dropped": "modality removed by the modality policy (text-only, image-only or one per item)",
    "item_without_content": "item with neither text nor image, removed with its interactions",
    "interaction_of_removed_item": "interaction removed because its item was removed for lack of content",
    "kcore_user": "user removed by k-core filtering",
    "kcore_item": "item removed by k-core filtering",
    "kcore_interaction": "interaction removed by k-core filtering",
    "short_user": "user with fewer than 3 interactions (cannot be split leave-one-out), removed",
    "short_user_interaction": "interaction of a user too short to split, removed",
    "new_item": "item marked new (new_items: first seen latest); kept in the catalogue and as test target",
    "new_item_interaction": "interaction with a new item that is not the user's test target, removed",
    "new_item_short_user": "user left with fewer than 3 interactions once new items were removed, removed",
    "new_item_user_interaction": "remaining interaction of such a user, removed",
    "new_item_test_user": "user whose test target is a new item (kept: the evaluation subset `new`)",
    "truncated_interaction": "interaction older than the user's last max_seq_len ones, removed",
    "unused_item": "item never interacted with after filtering, removed from the catalogue",
    "negative_feedback": "interaction with a negative label (e.g. a MIND impression clicked -0), not used",
    "unlabeled_impression": "impression without a click label (e.g. the MIND test split), not used",
}

MAX_EXAMPLES = 5


@dataclass
class PreparationReport:
    """Counts of dropped/changed rows per reason, with up to ``MAX_EXAMPLES`` examples each."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, count: int = 1, example: str | None = None) -> None:
        if reason not in REASONS:
            raise KeyError(f"unknown report reason {reason!r}; add it to transrec.data.report.REASONS")
        if count <= 0:
            return
        self.counts[reason] = self.counts.get(reason, 0) + count
        if example is not None:
            bucket = self.examples.setdefault(reason, [])
            if len(bucket) < MAX_EXAMPLES:
                bucket.append(example)

    def count(self, reason: str) -> int:
        return self.counts.get(reason, 0)

    def merge(self, other: PreparationReport) -> None:
        for reason, n in other.counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + n
        for reason, examples in other.examples.items():
            bucket = self.examples.setdefault(reason, [])
            bucket.extend(examples[: MAX_EXAMPLES - len(bucket)])

    def to_dict(self) -> dict[str, Any]:
        ordered = [r for r in REASONS if r in self.counts]
        return {
            "counts": {r: self.counts[r] for r in ordered},
            "examples": {r: self.examples[r] for r in ordered if r in self.examples},
        }

    def format(self) -> str:
        if not self.counts:
            return "nothing dropped"
        lines = []
        for reason in REASONS:
            if reason in self.counts:
                lines.append(f"  {reason:<28} {self.counts[reason]:>9,}  {REASONS[reason]}")
                for example in self.examples.get(reason, [])[:2]:
                    lines.append(f"  {'':<28} {'':>9}    e.g. {example}")
        return "\n".join(lines)
