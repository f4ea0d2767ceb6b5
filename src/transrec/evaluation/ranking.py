"""Full-catalogue ranking metrics (HR@k, NDCG@k, MRR) by rank counting, chunked and exact.

Conventions shared by every function here:

- Item index 0 is padding: column 0 of a score matrix (row 0 of an item-vector table) is never ranked.
  Real items are 1..n_items.
- A user's rank is ``1 + #{other ranked items j : score[j] >= score[target]}``. "Other ranked" means
  j != 0, j != target and j not in the user's exclusion set. Ties count against the target, so a
  collapsed model that scores every item alike ranks every target last instead of first.
- The exclusion set (usually the user's history) never removes the target itself: a target that is also
  in the history stays ranked.
- Ranks are integers counted block by block over ``user_chunk x item_chunk`` comparisons, so they are
  identical for any chunk sizes, batch split or number of processes, and so are the metrics computed
  from them by :class:`RankingMetrics` (it keeps an integer rank histogram, not float sums).

Exclusion sets (``exclude``) may be given as any of:

- ``None``: nothing excluded;
- a list (or tuple) with one sequence or 1-D tensor of item indices per user (ragged);
- a 2-D integer tensor ``[n_users, L]`` padded with 0;
- an :class:`ItemSets` (CSR: ``offsets [n_users + 1]``, ``items [nnz]``).

Index 0 inside any of them is padding and ignored; duplicates are harmless.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import torch

DEFAULT_KS: tuple[int, ...] = (5, 10, 20, 50)
# Measured with benchmarks/bench_full_ranking.py on a 2-core CPU (10,000 users x 20,000 items): blocks of
# about 128 x 32,768 comparisons keep the boolean block in cache and were the fastest of the sizes tried.
DEFAULT_USER_CHUNK = 128
DEFAULT_ITEM_CHUNK = 32768


@dataclass(frozen=True)
class ItemSets:
    """One set of item indices per user in CSR form.

    ``offsets``: LongTensor ``[n_users + 1]``, non-decreasing, ``offsets[0] == 0``,
    ``offsets[-1] == nnz``; user u owns ``items[offsets[u]:offsets[u + 1]]``.
    ``items``: LongTensor ``[nnz]`` of item indices in 0..n_items (0 is padding and ignored).
    """

    offsets: torch.Tensor
    items: torch.Tensor

    @property
    def n_users(self) -> int:
        return self.offsets.numel() - 1

    @classmethod
    def from_lists(cls, sets: Sequence[Sequence[int] | torch.Tensor]) -> ItemSets:
        """Build from one sequence (or 1-D tensor) of item indices per user."""
        lengths = [len(s) for s in sets]
        if sets and all(isinstance(s, torch.Tensor) for s in sets):
            items = torch.cat([s.reshape(-1).to(device="cpu", dtype=torch.long) for s in sets])
        else:
            flat = chain.from_iterable(s.tolist() if isinstance(s, torch.Tensor) else s for s in sets)
            items = torch.tensor(list(flat), dtype=torch.long)
        offsets = torch.zeros(len(sets) + 1, dtype=torch.long)
        offsets[1:] = torch.tensor(lengths, dtype=torch.long).cumsum(0)
        return cls(offsets, items)

    @classmethod
    def from_padded(cls, padded: torch.Tensor) -> ItemSets:
        """Build from a 2-D integer tensor ``[n_users, L]`` padded with 0 (zeros are dropped)."""
        if padded.dim() != 2:
            raise ValueError(
                f"a padded exclusion tensor must be 2-D [n_users, L], got shape {tuple(padded.shape)}"
            )
        kept = padded != 0
        offsets = torch.zeros(padded.shape[0] + 1, dtype=torch.long, device=padded.device)
        offsets[1:] = kept.sum(dim=1).cumsum(0)
        return cls(offsets, padded[kept].long())  # row-major order keeps each user's items contiguous


ExcludeLike = ItemSets | torch.Tensor | Sequence[Sequence[int] | torch.Tensor] | None


def as_item_sets(exclude: ExcludeLike, n_users: int, n_items: int, device: torch.device) -> ItemSets | None:
    """Normalise any accepted ``exclude`` form to a validated :class:`ItemSets` on ``device``, without the
    padding zeros (None stays None)."""
    if exclude is None:
        return None
    if isinstance(exclude, ItemSets):
        sets = exclude
    elif isinstance(exclude, torch.Tensor):
        sets = ItemSets.from_padded(exclude)
    elif isinstance(exclude, (list, tuple)):
        sets = ItemSets.from_lists(exclude)
    else:
        raise TypeError(
            "exclude must be None, a list of per-user item sequences, a 2-D tensor padded with 0, "
            f"or an ItemSets; got {type(exclude).__name__}"
        )
    offsets, items = sets.offsets, sets.items
    if offsets.dim() != 1 or items.dim() != 1:
        raise ValueError("ItemSets offsets and items must be 1-D tensors")
    if offsets.dtype.is_floating_point or items.dtype.is_floating_point:
        raise ValueError("exclusion item indices and offsets must be integers")
    if sets.n_users != n_users:
        raise ValueError(f"exclude describes {sets.n_users} users but there are {n_users}")
    if offsets[0] != 0 or offsets[-1] != items.numel() or bool((offsets[1:] < offsets[:-1]).any()):
        raise ValueError("ItemSets offsets must start at 0, never decrease and end at len(items)")
    if items.numel() and (items.min() < 0 or items.max() > n_items):
        raise ValueError(
            f"exclusion item indices must lie in 0..{n_items} (0 = padding); "
            f"got values in {int(items.min())}..{int(items.max())}"
        )
    offsets = offsets.to(device=device, dtype=torch.long)
    items = items.to(device=device, dtype=torch.long)
    padding = items == 0
    if bool(padding.any()):
        # Drop padding once here, so that rank counting can index blocks without filtering it out.
        owner = torch.repeat_interleave(torch.arange(n_users, device=device), offsets[1:] - offsets[:-1])
        offsets = torch.zeros_like(offsets)
        offsets[1:] = torch.bincount(owner[~padding], minlength=n_users).cumsum(0)
        items = items[~padding]
    return ItemSets(offsets, items)


def _check_targets(targets: torch.Tensor, n_users: int, n_items: int, device: torch.device) -> torch.Tensor:
    if not isinstance(targets, torch.Tensor) or targets.dim() != 1:
        raise ValueError(
            f"targets must be a 1-D tensor [n_users], got {getattr(targets, 'shape', type(targets))}"
        )
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ValueError(f"targets must hold integer item indices, got dtype {targets.dtype}")
    if targets.numel() != n_users:
        raise ValueError(f"targets has {targets.numel()} entries but there are {n_users} users")
    if n_users and (targets.min() < 1 or targets.max() > n_items):
        raise ValueError(
            f"targets must be item indices in 1..{n_items} (0 is padding), "
            f"got values in {int(targets.min())}..{int(targets.max())}"
        )
    return targets.to(device=device, dtype=torch.long)


def _check_chunks(user_chunk: int, item_chunk: int) -> None:
    if user_chunk < 1 or item_chunk < 1:
        raise ValueError(f"user_chunk and item_chunk must be >= 1, got {user_chunk} and {item_chunk}")


def _raise_nan(block: torch.Tensor, user0: int, item0: int, what: str) -> None:
    row, col = (int(i) for i in torch.nonzero(torch.isnan(block))[0])
    raise ValueError(f"{what} contain NaN (first at user {user0 + row}, item {item0 + col}); cannot rank")


def _count_ranks(
    targets: torch.Tensor,
    target_scores: torch.Tensor,
    exclusion: ItemSets | None,
    n_items: int,
    score_block,
    user_chunk: int,
    item_chunk: int,
    what: str,
) -> torch.Tensor:
    """Ranks ``[n_users]`` from ``score_block(u0, u1, j0, j1) -> [u1 - u0, j1 - j0]`` score blocks.

    ``target_scores[u]`` is compared with every ranked column 1..n_items; the target column and the
    excluded columns are switched off inside each boolean block, so an item's score is only ever read
    from the block (consistent even when blocks are recomputed on the fly).
    """
    n_users = targets.numel()
    device = targets.device
    ranks = torch.ones(n_users, dtype=torch.long, device=device)
    if exclusion is not None:
        offsets = exclusion.offsets.tolist()  # host ints for slicing; one transfer per call
        owner = torch.repeat_interleave(
            torch.arange(n_users, device=device), exclusion.offsets[1:] - exclusion.offsets[:-1]
        )
    for u0 in range(0, n_users, user_chunk):
        u1 = min(u0 + user_chunk, n_users)
        t = target_scores[u0:u1, None]
        # Positions switched off in this user chunk: each user's target, then its excluded items.
        off_rows = torch.arange(u1 - u0, device=device)
        off_cols = targets[u0:u1]
        if exclusion is not None and offsets[u1] > offsets[u0]:
            off_rows = torch.cat([off_rows, owner[offsets[u0] : offsets[u1]] - u0])
            off_cols = torch.cat([off_cols, exclusion.items[offsets[u0] : offsets[u1]]])
        counts = torch.zeros(u1 - u0, dtype=torch.long, device=device)
        for j0 in range(1, n_items + 1, item_chunk):
            j1 = min(j0 + item_chunk, n_items + 1)
            block = score_block(u0, u1, j0, j1)
            # amax propagates NaN and costs a fraction of an isnan pass over the block.
            if torch.isnan(block.amax()):
                _raise_nan(block, u0, j0, what)
            at_least = block >= t
            rows, cols = off_rows, off_cols
            if j0 > 1 or j1 <= n_items:  # the block is not the whole catalogue: keep what falls inside it
                inside = (off_cols >= j0) & (off_cols < j1)
                rows, cols = off_rows[inside], off_cols[inside]
            at_least.view(-1)[rows * (j1 - j0) + (cols - j0)] = False
            counts += at_least.sum(dim=1, dtype=torch.int32)
        ranks[u0:u1] += counts
    return ranks


def target_ranks(
    scores: torch.Tensor,
    targets: torch.Tensor,
    exclude: ExcludeLike = None,
    *,
    user_chunk: int = DEFAULT_USER_CHUNK,
    item_chunk: int = DEFAULT_ITEM_CHUNK,
) -> torch.Tensor:
    """Rank of each user's target among the ranked items: LongTensor ``[n_users]`` in 1..n_items.

    ``scores``: float ``[n_users, n_items + 1]``, column j scores item j (column 0 ignored).
    ``targets``: integer ``[n_users]`` in 1..n_items. ``exclude``: see the module docstring.
    Runs on ``scores.device``; at most ``user_chunk x item_chunk`` comparisons are held at once.
    Raises ValueError on NaN scores (a NaN target would otherwise rank first), bad shapes or indices;
    +/-inf are legal scores.
    """
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2 or not scores.dtype.is_floating_point:
        got = f"{getattr(scores, 'shape', type(scores))} of dtype {getattr(scores, 'dtype', None)}"
        raise ValueError(f"scores must be a 2-D float tensor [n_users, n_items + 1], got {got}")
    n_users, n_items = scores.shape[0], scores.shape[1] - 1
    if n_items < 1:
        raise ValueError("scores needs at least 2 columns: padding column 0 and one item")
    _check_chunks(user_chunk, item_chunk)
    targets = _check_targets(targets, n_users, n_items, scores.device)
    exclusion = as_item_sets(exclude, n_users, n_items, scores.device)
    if n_users and torch.isnan(scores[:, 0]).any():
        _raise_nan(scores[:, :1], 0, 0, "scores")
    target_scores = scores.gather(1, targets[:, None]).squeeze(1)
    return _count_ranks(
        targets,
        target_scores,
        exclusion,
        n_items,
        lambda u0, u1, j0, j1: scores[u0:u1, j0:j1],
        user_chunk,
        item_chunk,
        "scores",
    )


def ranks_from_embeddings(
    user_vectors: torch.Tensor,
    item_vectors: torch.Tensor,
    targets: torch.Tensor,
    exclude: ExcludeLike = None,
    *,
    user_chunk: int = DEFAULT_USER_CHUNK,
    item_chunk: int = DEFAULT_ITEM_CHUNK,
) -> torch.Tensor:
    """Ranks as :func:`target_ranks` for the scores ``user_vectors @ item_vectors.T``, never materialised.

    ``user_vectors``: float ``[n_users, d]``; ``item_vectors``: float ``[n_items + 1, d]`` (row 0 is
    padding and never ranked). Score blocks ``[user_chunk, item_chunk]`` are computed by matrix product
    on the fly on ``user_vectors.device``; for cosine similarity pass L2-normalised vectors.

    The target's score is a row-wise dot product while the other items' scores come from block matrix
    products; in floating point these may round differently, which can only move items whose score is
    within rounding of the target's (exactly representable products, e.g. small integers, agree exactly).
    """
    if user_vectors.dim() != 2 or item_vectors.dim() != 2:
        raise ValueError(
            f"user_vectors [n_users, d] and item_vectors [n_items + 1, d] must be 2-D, got "
            f"{tuple(user_vectors.shape)} and {tuple(item_vectors.shape)}"
        )
    if user_vectors.shape[1] != item_vectors.shape[1]:
        raise ValueError(
            f"user and item vectors differ in size: {user_vectors.shape[1]} vs {item_vectors.shape[1]}"
        )
    if not (user_vectors.dtype.is_floating_point and item_vectors.dtype.is_floating_point):
        raise ValueError("user_vectors and item_vectors must be floating point")
    n_users, n_items = user_vectors.shape[0], item_vectors.shape[0] - 1
    if n_items < 1:
        raise ValueError("item_vectors needs at least 2 rows: padding row 0 and one item")
    _check_chunks(user_chunk, item_chunk)
    device = user_vectors.device
    item_vectors = item_vectors.to(device=device, dtype=user_vectors.dtype)
    targets = _check_targets(targets, n_users, n_items, device)
    exclusion = as_item_sets(exclude, n_users, n_items, device)
    target_scores = (user_vectors * item_vectors[targets]).sum(dim=1)
    if torch.isnan(target_scores).any():
        _raise_nan(target_scores[:, None], 0, 0, "target scores (user_vectors . item_vectors[target])")
    return _count_ranks(
        targets,
        target_scores,
        exclusion,
        n_items,
        lambda u0, u1, j0, j1: user_vectors[u0:u1] @ item_vectors[j0:j1].T,
        user_chunk,
        item_chunk,
        "scores from user_vectors @ item_vectors.T",
    )


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1 or len(set(ks)) != len(ks):
        raise ValueError(f"ks must be distinct positive cut-offs, got {ks}")
    return ks


class RankingMetrics:
    """Accumulates ranks and computes HR@k, NDCG@k and MRR, exactly, over any split of the users.

    The state is one integer histogram ``rank_counts`` (LongTensor; entry r counts the users ranked r,
    entry 0 is unused). Integer addition is associative, so updating batch by batch, merging accumulators
    or summing ``rank_counts`` across processes gives bit-identical metrics to ranking all users at once.
    :meth:`compute` turns it into float64 averages with a correctly rounded sum (``math.fsum``),
    independent of order and thread count.

    With ``n_items`` the histogram has the fixed shape ``[n_items + 1]`` and ranks above n_items are
    refused; give it for ``torch.distributed.all_reduce(m.rank_counts)``, which needs equal shapes on every
    process. Without it the histogram grows to the largest rank seen.
    """

    def __init__(
        self,
        ks: Sequence[int] = DEFAULT_KS,
        n_items: int | None = None,
        device: torch.device | str | None = None,
    ):
        if n_items is not None and n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {n_items}")
        self.ks = _check_ks(ks)
        self.n_items = n_items
        self.rank_counts = torch.zeros(1 if n_items is None else n_items + 1, dtype=torch.long, device=device)

    @property
    def num_users(self) -> int:
        return int(self.rank_counts.sum())

    def _grow(self, size: int) -> None:
        if size > self.rank_counts.numel():
            self.rank_counts = torch.cat(
                [self.rank_counts, self.rank_counts.new_zeros(size - self.rank_counts.numel())]
            )

    def update(self, ranks: torch.Tensor) -> None:
        """Add the ranks ``[batch]`` (integers >= 1, and <= n_items when it was given) of a batch of users."""
        if ranks.dim() != 1 or ranks.dtype.is_floating_point:
            raise ValueError(f"ranks must be a 1-D integer tensor, got {tuple(ranks.shape)} {ranks.dtype}")
        if ranks.numel() == 0:
            return
        low, high = int(ranks.min()), int(ranks.max())
        if low < 1 or (self.n_items is not None and high > self.n_items):
            raise ValueError(f"ranks must lie in 1..{self.n_items or 'n_items'}, got {low}..{high}")
        self._grow(high + 1)
        self.rank_counts += torch.bincount(
            ranks.to(self.rank_counts.device, torch.long), minlength=self.rank_counts.numel()
        )

    def merge(self, other: RankingMetrics) -> RankingMetrics:
        """Add another accumulator's users into this one (same ks, and same n_items if both have one)."""
        if other.ks != self.ks or (
            None not in (self.n_items, other.n_items) and other.n_items != self.n_items
        ):
            raise ValueError(
                f"cannot merge metrics over {other.n_items} items with ks={other.ks} "
                f"into metrics over {self.n_items} items with ks={self.ks}"
            )
        if self.n_items is not None and other.rank_counts.numel() > self.rank_counts.numel():
            if bool(other.rank_counts[self.n_items + 1 :].any()):
                raise ValueError(f"cannot merge ranks above n_items={self.n_items}")
        else:
            self._grow(other.rank_counts.numel())
        size = min(self.rank_counts.numel(), other.rank_counts.numel())
        self.rank_counts[:size] += other.rank_counts[:size].to(self.rank_counts.device)
        return self

    def compute(self) -> dict[str, float]:
        """``{"HR@k": ..., "NDCG@k": ... for k in ks, "MRR": ...}``, each averaged over the users seen."""
        counts = self.rank_counts.cpu()
        n = int(counts.sum())
        if n == 0:
            raise ValueError("no users were ranked; metrics over an empty set are undefined")
        present = torch.nonzero(counts).squeeze(1).tolist()
        per_rank = dict(zip(present, counts[present].tolist(), strict=True))
        out: dict[str, float] = {}
        for k in self.ks:
            out[f"HR@{k}"] = sum(c for r, c in per_rank.items() if r <= k) / n
        for k in self.ks:
            out[f"NDCG@{k}"] = math.fsum(c / math.log2(r + 1) for r, c in per_rank.items() if r <= k) / n
        out["MRR"] = math.fsum(c / r for r, c in per_rank.items()) / n
        return out


def full_ranking_metrics(
    scores: torch.Tensor,
    targets: torch.Tensor,
    ks: Sequence[int] = DEFAULT_KS,
    exclude: ExcludeLike = None,
    *,
    user_chunk: int = DEFAULT_USER_CHUNK,
    item_chunk: int = DEFAULT_ITEM_CHUNK,
) -> dict[str, float]:
    """HR@k and NDCG@k for each k in ``ks``, and MRR, averaged over all users of a full score matrix.

    ``scores``: float ``[n_users, n_items + 1]`` (column j scores item j; column 0 never ranked);
    ``targets``: ``[n_users]`` in 1..n_items; ``exclude``: per-user items removed from the ranking (any
    form in the module docstring; never removes the target). With ``rank`` from :func:`target_ranks`:
    HR@k = 1[rank <= k], NDCG@k = 1/log2(rank + 1) if rank <= k else 0, MRR = 1/rank (untruncated).
    The result does not depend on ``user_chunk`` / ``item_chunk``.
    """
    ks = _check_ks(ks)
    ranks = target_ranks(scores, targets, exclude, user_chunk=user_chunk, item_chunk=item_chunk)
    metrics = RankingMetrics(ks, n_items=scores.shape[1] - 1, device=scores.device)
    metrics.update(ranks)
    return metrics.compute()
