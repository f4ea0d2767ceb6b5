"""Training batches: per-user windows over the training split, sampled negatives, unique-item batches.

``SequenceTrainingData`` yields left-padded windows of each user's training interactions ``s[:-2]``:
the most recent one (``windows="last"``, the papers') or every window along the sequence at a stride
(``windows="all"``, optionally sampled per epoch); ``CollateSequences`` turns a list of windows into a
batch whose distinct items are listed once (``unique_items``) with inverse maps for every slot, so each
item's content is loaded and encoded once.

Everything random (shuffling, window sampling, negatives, masks) is a pure function of
``(seed, epoch, user)``: a run resumed at epoch e draws exactly what an uninterrupted run draws at epoch
e, whatever the number of DataLoader workers.

    data = SequenceTrainingData(dataset, max_len=50, mode="s2s", n_negatives=1, content=None, seed=0)
    for batch in make_loader(data, batch_size=64, shuffle=True, num_workers=2, epoch=epoch): ...
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from transrec.data.errors import DataError
from transrec.data.item_content import ItemBatch, ItemContent
from transrec.data.prepared import PreparedDataset
from transrec.training import reference

Mode = Literal["s2s", "s2o", "masked", "cpc"]
MODES = ("s2s", "s2o", "masked", "cpc")
Windows = Literal["last", "all"]
#: The item slots of an example; a batch lists the distinct items of those present once.
SLOTS = ("inputs", "targets", "negatives", "positives")

# Separate random streams so that, e.g., changing the user fraction never changes the negatives.
_SUBSET, _EXAMPLE, _SHUFFLE, _WINDOWS = 0, 1, 2, 3


def sample_uniform_excluding(
    rng: np.random.Generator, n_items: int, excluded: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """Items drawn uniformly from ``1..n_items`` minus ``excluded`` (sorted, unique, within 1..n_items).

    Exact and without rejection: draw a rank r among the allowed items, then map it to the r-th allowed
    item. With e_0 < e_1 < ... the excluded items, e_j - 1 - j allowed items precede e_j, so the r-th
    allowed item is r + 1 + #{j : e_j - 1 - j <= r}, one ``searchsorted`` for the whole draw. Returns
    int64 of ``shape``.
    """
    n_allowed = n_items - len(excluded)
    count = int(np.prod(shape))
    if count == 0:
        return np.zeros(shape, dtype=np.int64)
    if n_allowed <= 0:
        raise DataError(f"no item left to sample: all {n_items} items are excluded for this user")
    ranks = rng.integers(0, n_allowed, size=count)
    allowed_before = np.asarray(excluded, dtype=np.int64) - 1 - np.arange(len(excluded))
    items = ranks + 1 + np.searchsorted(allowed_before, ranks, side="right")
    return items.reshape(shape)


def _left_pad(values: np.ndarray, length: int) -> np.ndarray:
    out = np.zeros(length, dtype=np.int64)
    if len(values):
        out[length - len(values) :] = values
    return out


def training_item_counts(dataset: PreparedDataset) -> np.ndarray:
    """Interactions per item in the training split: int64 ``[n_items + 1]`` (index 0, padding, is 0)."""
    split = dataset.split
    lengths = np.diff(dataset.offsets)
    owner = np.repeat(np.arange(dataset.n_users), lengths)
    in_training = np.arange(dataset.n_interactions) < split.train_ends[owner]
    items = np.asarray(dataset.items)[in_training]
    return np.bincount(items, minlength=dataset.n_items + 1).astype(np.int64)


class SequenceTrainingData(Dataset):
    """Training windows over users' training sequences, a torch ``Dataset`` of dicts of numpy arrays (see
    ``__getitem__``): one per user (``windows="last"``) or several (``windows="all"``).

    Args:
        dataset: the prepared dataset; only each user's training interactions ``s[:-2]`` are read.
        max_len: window length L. s2s/s2o use the most recent ``max_len + 1`` training items
            (inputs ``items[:-1]``, targets ``items[1:]``); masked uses the most recent ``max_len``.
        mode: ``s2s`` (a target at every position), ``s2o`` (target only at the last position, NineRec
            S2O), ``masked`` (BERT4Rec: targets at masked positions only) or ``cpc`` (TransRec eq. 10:
            the last ``positives`` training items are the positives of the ``max_len`` items before them).
        n_negatives: k uniform negatives per target position, never an item of the user's training
            sequence (MoRec: k=1). 0 for in-batch or full-softmax training. In cpc mode, j per user.
        content: item content gathered per batch by the collate function (None: ID models).
        seed: base seed of the user subset, shuffling, negatives and masks.
        mask_prob: probability that a real position is masked (masked mode; at least one per window).
        user_fraction: keep this fraction of the users (TransRec 4.3 data scaling). The subset is a
            prefix of one seeded permutation, so a smaller fraction is contained in a larger one.
        positives: l, the positives per user in cpc mode (TransRec: 5).
        windows: ``last``: each user's most recent window only (the papers'). ``all``: with W the window
            width (``max_len + 1``, or ``max_len`` in masked mode) and n the user's training items, the
            windows of (at most) W consecutive items ending at n, n - S, n - 2S, ...: in s2s and masked
            mode down to the first that starts at the first item (shorter, left-padded, when S does not
            divide n - W), so ``1 + ceil(max(0, n - W) / S)`` windows, one (the ``last`` window) when
            n <= W, and every training target is in a window; in s2o mode, which trains only a window's
            last item, down to the earliest target (end 2, one input), so ``1 + (n - 2) // S`` windows
            training every S-th target: with S = 1, RecBole's every prefix, one target each.
            Not for cpc mode (one user vector per user, TransRec eq. 10).
        window_stride: S (None: ``max(1, max_len // 2)``, and 1 in s2o mode); at most ``max_len``, so that
            every training target is in some window of s2s or masked mode.
        windows_per_user: with ``all``, at most this many windows per user and epoch (None: all): the
            most recent one and the others drawn uniformly without replacement, seeded by
            ``(seed, epoch, user)``. The number per user is fixed, so ``len()`` is the same every epoch.

    Users with fewer than 2 training interactions have no window (no input/target pair) and are skipped.
    Items marked new by the new-item protocol (``PreparedDataset.item_is_new``) are never drawn as
    negatives: they do not exist yet when the platform trains, and drawing them would push them down in
    every user's ranking before they arrive.
    The kept users (``users``) come first (``user_fraction``), then their windows; ``len()`` is the
    number of windows, which a sampler (DDP) and the batch count read.
    """

    def __init__(
        self,
        dataset: PreparedDataset,
        max_len: int,
        mode: Mode,
        n_negatives: int,
        content: ItemContent | None,
        seed: int,
        mask_prob: float = 0.2,
        user_fraction: float = 1.0,
        positives: int = 5,
        windows: Windows = "last",
        window_stride: int | None = None,
        windows_per_user: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if windows not in get_args(Windows):
            raise ValueError(f"windows must be one of {get_args(Windows)}, got {windows!r}")
        if windows == "all" and mode == "cpc":
            raise ValueError("cpc mode reads one window per user (TransRec eq. 10): use windows='last'")
        default_stride = 1 if mode == "s2o" else max(1, max_len // 2)
        stride = default_stride if window_stride is None else window_stride
        if not 1 <= stride <= max_len:
            raise ValueError(f"window_stride must be within 1..max_len={max_len}, got {stride}")
        if windows_per_user is not None and windows_per_user < 1:
            raise ValueError(f"windows_per_user must be at least 1 (None: all), got {windows_per_user}")
        if max_len < 1 or n_negatives < 0:
            raise ValueError("max_len must be >= 1 and n_negatives >= 0")
        if mode == "cpc" and positives < 1:
            raise ValueError("cpc mode needs positives >= 1")
        if not 0.0 < mask_prob <= 1.0 or not 0.0 < user_fraction <= 1.0:
            raise ValueError("mask_prob and user_fraction must be within (0, 1]")
        split = dataset.split
        self.starts = np.asarray(split.starts, dtype=np.int64)
        self.train_ends = np.asarray(split.train_ends, dtype=np.int64)
        self.items = dataset.items  # memory-mapped; read per example
        self.n_items = dataset.n_items
        self.max_len, self.mode, self.n_negatives = max_len, mode, n_negatives
        self.content, self.seed, self.mask_prob = content, seed, mask_prob
        self.positives = positives
        # Sorted item indices that are never negatives (the new-item protocol's items); empty otherwise.
        self.unavailable = np.flatnonzero(dataset.item_is_new).astype(np.int64)
        self.epoch = 0
        eligible = np.flatnonzero(self.train_ends - self.starts >= 2)
        if user_fraction < 1.0:
            keep = max(1, round(user_fraction * len(eligible)))
            order = np.random.default_rng([seed, _SUBSET]).permutation(len(eligible))
            eligible = np.sort(eligible[order[:keep]])
        self.users = eligible
        self.windows, self.window_stride, self.windows_per_user = windows, stride, windows_per_user
        self.width = max_len if mode == "masked" else max_len + 1
        self.user_windows = self._count_windows(self.train_ends[eligible] - self.starts[eligible])
        cap = windows_per_user or int(self.user_windows.max(initial=1))
        drawn = np.minimum(self.user_windows, cap)
        #: ``window_offsets[i]:window_offsets[i + 1]`` are the dataset indices of ``users[i]``'s windows.
        self.window_offsets = np.concatenate([[0], np.cumsum(drawn)]).astype(np.int64)

    def _count_windows(self, n_train: np.ndarray) -> np.ndarray:
        """Windows of each training length (int64, as ``n_train``): 1 with ``last``, see ``windows``."""
        if self.windows == "last":
            return np.ones(len(n_train), dtype=np.int64)
        if self.mode == "s2o":  # one target per window: windows down to the first target
            return 1 + (n_train - 2) // self.window_stride
        return 1 + -(-np.maximum(0, n_train - self.width) // self.window_stride)

    def window_ends(self, index: int) -> tuple[int, int]:
        """``(user, end)`` of dataset item ``index`` in this epoch: its window is the user's training
        items ``[max(0, end - width), end)``, with ``end = n - j * window_stride`` for its window j."""
        slot = int(np.searchsorted(self.window_offsets, index, side="right")) - 1
        user = int(self.users[slot])
        n_train = int(self.train_ends[user] - self.starts[user])
        k = index - int(self.window_offsets[slot])
        count = int(self.user_windows[slot])
        drawn = int(self.window_offsets[slot + 1] - self.window_offsets[slot])
        if drawn < count:  # the most recent window, and drawn - 1 of the others
            rng = np.random.default_rng([self.seed, _WINDOWS, self.epoch, user])
            chosen = np.concatenate([[0], 1 + np.sort(rng.choice(count - 1, drawn - 1, replace=False))])
            k = int(chosen[k])
        return user, n_train - k * self.window_stride

    def set_epoch(self, epoch: int) -> None:
        """Negatives and masks drawn after this are those of ``epoch`` (call before building a loader)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self.window_offsets[-1])

    def __getitem__(self, index: int) -> dict[str, Any]:
        """The ``index``-th window (with ``windows="last"``: the window of the ``index``-th kept user).

        Returns numpy arrays: ``user_id`` (int), ``inputs`` [L], ``targets`` [L] (0 = no loss),
        ``negatives`` [L, k] (0 wherever the target is 0), ``valid`` [L] bool (real positions, masked
        ones included), ``masked`` [L] bool, ``history`` (sorted distinct training items of the user).
        In masked mode the input at a masked position is 0, so an encoder that forgot the mask would
        see a zero vector, never the answer. cpc mode: see ``_cpc_window``. Negatives avoid the whole
        training sequence, not only the window.
        """
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} of {len(self)}")
        user, end = self.window_ends(index)
        train = np.asarray(self.items[self.starts[user] : self.train_ends[user]], dtype=np.int64)
        history = np.unique(train)
        # The most recent window draws what the single window of windows="last" draws.
        key = [self.seed, _EXAMPLE, self.epoch, user] + ([end] if end < len(train) else [])
        rng = np.random.default_rng(key)
        if self.mode == "cpc":
            return self._cpc_window(user, train, history, rng)
        length = self.max_len
        window = train[max(0, end - self.width) : end]
        if self.mode == "masked":
            chosen = rng.random(len(window)) < self.mask_prob
            if not chosen.any():
                chosen[rng.integers(len(window))] = True
            inputs = _left_pad(window, length)
            masked = np.zeros(length, dtype=bool)
            masked[length - len(window) :] = chosen
            valid = inputs != 0
            targets = np.where(masked, inputs, 0)
            inputs = np.where(masked, 0, inputs)
        else:
            inputs = _left_pad(window[:-1], length)
            targets = _left_pad(window[1:], length)
            if self.mode == "s2o":
                targets[:-1] = 0
            valid = inputs != 0
            masked = np.zeros(length, dtype=bool)
        negatives = np.zeros((length, self.n_negatives), dtype=np.int64)
        rows = np.flatnonzero(targets)
        negatives[rows] = sample_uniform_excluding(
            rng, self.n_items, self._not_negatives(history), (len(rows), self.n_negatives)
        )
        return {
            "user_id": user,
            "inputs": inputs,
            "targets": targets,
            "negatives": negatives,
            "valid": valid,
            "masked": masked,
            "history": history,
        }

    def _not_negatives(self, history: np.ndarray) -> np.ndarray:
        """The user's training items and the items that do not exist yet (sorted, unique)."""
        return np.union1d(history, self.unavailable) if len(self.unavailable) else history

    def _cpc_window(
        self, user: int, train: np.ndarray, history: np.ndarray, rng: np.random.Generator
    ) -> dict[str, Any]:
        """TransRec eq. 10's split of a training sequence C = C^u + C^e: ``positives`` [l] the last
        l' = min(l, len - 1) items, right-padded with 0 (at least one item stays an input);
        ``inputs`` [L] the ``max_len`` items before them, left-padded; ``negatives`` [j] uniform
        outside the user's training items; ``valid`` [L] the real inputs; ``masked`` [L] all False."""
        count = min(self.positives, len(train) - 1)
        positives = np.zeros(self.positives, dtype=np.int64)
        positives[:count] = train[len(train) - count :]
        inputs = _left_pad(train[: len(train) - count][-self.max_len :], self.max_len)
        excluded = self._not_negatives(history)
        negatives = sample_uniform_excluding(rng, self.n_items, excluded, (self.n_negatives,))
        return {
            "user_id": user,
            "inputs": inputs,
            "positives": positives,
            "negatives": negatives,
            "valid": inputs != 0,
            "masked": np.zeros(self.max_len, dtype=bool),
            "history": history,
        }


class CollateSequences:
    """Builds a batch from windows; a plain class so DataLoader workers can pickle it.

    The batch (a dict; B users, L positions, k negatives, U distinct items):
        inputs, targets: long [B, L] (targets 0 = no loss); negatives: long [B, L, k];
        (cpc windows: no targets; positives: long [B, l], 0 = none; negatives: long [B, j]);
        valid, masked: bool [B, L]; user_ids: long [B];
        unique_items: long [U], sorted distinct non-zero items of inputs, targets and negatives;
        inputs_inv, targets_inv: long [B, L], negatives_inv: long [B, L, k] (and positives_inv):
            positions into ``unique_items``, -1 where the item index is 0 (what ``encode_sequences``
            expects);
        in_history: bool [B, U], True where unique_items[j] is in user b's training sequence (the
            false negatives of in-batch softmax, PMMRec eq. 5);
        histories: long [B, H], each user's training sequence right-padded with 0; only with
            ``with_histories`` (the in-batch softmax across processes needs it);
        items: ``ItemBatch`` of ``unique_items`` (gathered here, in the worker), or None without content.
    With ``reference`` (the papers' path, ``training.reference``; s2s windows, one negative), instead of
    ``items``: slots: long [B, L + 1, 2], the papers' item slots; slot_items: ``ItemBatch`` of all
    ``B * (L + 1) * 2`` slots in that order, texts at the papers' fixed width.
    """

    def __init__(
        self, content: ItemContent | None = None, with_histories: bool = False, reference: bool = False
    ) -> None:
        self.content = content
        self.with_histories = with_histories
        self.reference = reference

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        slots = {key: np.stack([e[key] for e in examples]) for key in SLOTS if key in examples[0]}
        unique = np.unique(np.concatenate([values.ravel() for values in slots.values()]))
        unique = unique[unique != 0]

        def inverse(values: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.where(values == 0, -1, np.searchsorted(unique, values)))

        batch: dict[str, Any] = {key: torch.from_numpy(values) for key, values in slots.items()}
        batch.update({
            "valid": torch.from_numpy(np.stack([e["valid"] for e in examples])),
            "masked": torch.from_numpy(np.stack([e["masked"] for e in examples])),
            "user_ids": torch.tensor([e["user_id"] for e in examples], dtype=torch.long),
            "unique_items": torch.from_numpy(unique),
            **{f"{key}_inv": inverse(values) for key, values in slots.items()},
            "in_history": torch.from_numpy(self._membership([e["history"] for e in examples], unique)),
            "items": None,
        })  # fmt: skip
        if self.with_histories:
            batch["histories"] = torch.from_numpy(_pad_right([e["history"] for e in examples]))
        if self.reference:
            # The papers gather every slot's content in the worker (MoRec's item_content[sample_items]).
            batch["slots"] = reference.slot_layout(batch)
            batch["slot_items"] = reference.slot_content(self.content, batch["slots"])
        elif self.content is not None:
            batch["items"] = self.content.batch(batch["unique_items"])
        return batch

    @staticmethod
    def _membership(histories: list[np.ndarray], unique: np.ndarray) -> np.ndarray:
        """bool [B, U]: one searchsorted over (user slot, item) keys instead of a loop per user."""
        stride = 1 + max([int(unique.max(initial=0))] + [int(h.max(initial=0)) for h in histories])
        # Each history is sorted and slots are increasing, so the concatenated keys are sorted too.
        keys = np.concatenate([slot * stride + h for slot, h in enumerate(histories)])
        queries = np.arange(len(histories))[:, None] * stride + unique[None, :]
        if len(keys) == 0:
            return np.zeros(queries.shape, dtype=bool)
        found = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
        return keys[found] == queries


def _pad_right(rows: list[np.ndarray]) -> np.ndarray:
    """int64 ``[B, longest]``, each row's values then zeros (the padding item)."""
    out = np.zeros((len(rows), max([len(r) for r in rows] + [1])), dtype=np.int64)
    for index, row in enumerate(rows):
        out[index, : len(row)] = row
    return out


def batch_to(batch: dict[str, Any], device: torch.device | str, non_blocking: bool = False) -> dict[str, Any]:
    """The batch with every tensor (and the ``ItemBatch``) moved to ``device``."""
    moved: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, (torch.Tensor, ItemBatch)):
            value = value.to(device, non_blocking=non_blocking)
        moved[key] = value
    return moved


def shuffle_seed(seed: int, epoch: int) -> int:
    """Seed of the shuffling generator of ``epoch``."""
    return int(np.random.SeedSequence([seed, _SHUFFLE, epoch]).generate_state(1)[0])


def make_loader(
    data: SequenceTrainingData,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    epoch: int,
    pin_memory: bool = False,
    rank: int = 0,
    world_size: int = 1,
    reference: bool = False,
) -> DataLoader:
    """A DataLoader over ``data`` for ``epoch``: order, negatives and masks depend only on (seed, epoch).

    Build one per epoch: workers copy ``data`` (and its epoch) when the loader starts iterating, so
    persistent workers would keep drawing the first epoch's negatives. With ``world_size > 1`` (DDP)
    every process draws the same order and takes the examples ``rank, rank + world_size, ...`` of it,
    the order padded by its first examples to a multiple of ``world_size`` so that every process runs
    the same number of steps; ``batch_size`` is per process. ``reference``: batches for the papers'
    path (``TrainConfig.reference_path``; see ``CollateSequences``).
    """
    data.set_epoch(epoch)
    generator = torch.Generator().manual_seed(shuffle_seed(data.seed, epoch))
    sampler = None
    if world_size > 1:
        order = torch.randperm(len(data), generator=generator) if shuffle else torch.arange(len(data))
        padded = torch.cat([order, order[: (-len(order)) % world_size]])
        sampler, shuffle = padded[rank::world_size].tolist(), False
    return DataLoader(
        data,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=CollateSequences(data.content, with_histories=world_size > 1, reference=reference),
        generator=generator,
        persistent_workers=False,
        pin_memory=pin_memory,
    )
