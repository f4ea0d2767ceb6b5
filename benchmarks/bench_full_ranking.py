"""Time transrec's chunked full-ranking metrics against the papers' per-user sort loop.

Run:
    python benchmarks/bench_full_ranking.py                      # 10,000 users x 20,000 items, CPU
    python benchmarks/bench_full_ranking.py --device cuda --users 50000 --items 100000
    python benchmarks/bench_full_ranking.py --chunks 64x8192,128x32768,1024x32768

The reference does what the papers' code does for each user: copy the score row, set the history (and
the padding column) to -inf, sort the whole row in descending order, find the target's position and
accumulate HR/NDCG. Its tie rule differs from transrec's (a sort puts tied items in arbitrary order,
transrec counts ties against the target), so the scores here are continuous random numbers where ties
are rare, and the two are compared with a tolerance; the number of users whose ranks differ is printed.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from transrec.evaluation import ItemSets, RankingMetrics, full_ranking_metrics, target_ranks
from transrec.evaluation.ranking import DEFAULT_ITEM_CHUNK, DEFAULT_USER_CHUNK


def make_problem(n_users: int, n_items: int, min_history: int, max_history: int, seed: int, device: str):
    """Random scores ``[n_users, n_items + 1]``, targets ``[n_users]`` and histories that avoid the target."""
    gen = torch.Generator().manual_seed(seed)
    scores = torch.rand(n_users, n_items + 1, generator=gen)
    targets = torch.randint(1, n_items + 1, (n_users,), generator=gen)
    lengths = torch.randint(min_history, max_history + 1, (n_users,), generator=gen)
    items = torch.randint(1, n_items, (int(lengths.sum()),), generator=gen)
    owner_targets = torch.repeat_interleave(targets, lengths)
    items = items + (items >= owner_targets).long()  # shift past the target: 1..n_items without it
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    return scores.to(device), targets.to(device), ItemSets(offsets.to(device), items.to(device))


def reference_ranks(scores: torch.Tensor, targets: torch.Tensor, history: ItemSets) -> torch.Tensor:
    """The papers' per-user loop: mask the history with -inf, full descending sort, find the target."""
    offsets = history.offsets.tolist()
    ranks = torch.empty_like(targets)
    for u in range(scores.shape[0]):
        row = scores[u].clone()
        row[0] = -math.inf
        row[history.items[offsets[u] : offsets[u + 1]]] = -math.inf
        order = torch.argsort(row, descending=True)
        ranks[u] = int(torch.nonzero(order == targets[u])[0, 0]) + 1
    return ranks


def reference_metrics(ranks: torch.Tensor, ks: tuple[int, ...]) -> dict[str, float]:
    ranks = ranks.double()
    out = {f"HR@{k}": float((ranks <= k).double().mean()) for k in ks}
    out.update(
        {f"NDCG@{k}": float(torch.where(ranks <= k, 1 / torch.log2(ranks + 1), 0.0).mean()) for k in ks}
    )
    out["MRR"] = float((1 / ranks).mean())
    return out


def timed(fn, device: str, repeats: int):
    """Best wall time of ``repeats`` runs (after one warm-up run) and the last result."""
    result = fn()
    best = math.inf
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--min-history", type=int, default=20)
    parser.add_argument("--max-history", type=int, default=50)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs of the vectorised path (best kept)"
    )
    parser.add_argument("--user-chunk", type=int, default=DEFAULT_USER_CHUNK)
    parser.add_argument("--item-chunk", type=int, default=DEFAULT_ITEM_CHUNK)
    parser.add_argument(
        "--chunks",
        default="",
        help="extra USERxITEM chunk sizes to time, comma-separated (e.g. 64x8192,1024x32768)",
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")

    ks = (5, 10, 20, 50)
    scores, targets, history = make_problem(
        args.users, args.items, args.min_history, args.max_history, args.seed, args.device
    )
    print(
        f"{args.users} users x {args.items} items, history {args.min_history}-{args.max_history} excluded "
        f"items per user, device {args.device}, torch threads {torch.get_num_threads()}"
    )

    fast_s, fast = timed(
        lambda: full_ranking_metrics(
            scores, targets, ks, history, user_chunk=args.user_chunk, item_chunk=args.item_chunk
        ),
        args.device,
        args.repeats,
    )
    for spec in filter(None, args.chunks.split(",")):
        user_chunk, item_chunk = (int(x) for x in spec.lower().split("x"))
        seconds, other = timed(
            lambda u=user_chunk, i=item_chunk: full_ranking_metrics(
                scores, targets, ks, history, user_chunk=u, item_chunk=i
            ),
            args.device,
            args.repeats,
        )
        assert other == fast, f"chunks {spec} changed the metrics"
        print(f"vectorised, chunks {user_chunk}x{item_chunk}: {seconds:.3f} s")

    # One run of the reference: it is the slow side, and a warm-up would double the wait.
    ref_start = time.perf_counter()
    ref_ranks = reference_ranks(scores, targets, history)
    if args.device == "cuda":
        torch.cuda.synchronize()
    ref_s = time.perf_counter() - ref_start
    reference = reference_metrics(ref_ranks, ks)

    ranks = target_ranks(scores, targets, history, user_chunk=args.user_chunk, item_chunk=args.item_chunk)
    check = RankingMetrics(ks, n_items=args.items, device=ranks.device)
    check.update(ranks)
    assert check.compute() == fast
    differing = int((ranks != ref_ranks).sum())
    worst = max(abs(fast[name] - reference[name]) for name in fast)
    tolerance = 1e-3  # a tie moves one user's rank by its tie count; a few of 10,000 users at most
    print(
        f"metrics agree within {tolerance}: {worst <= tolerance} (max |diff| {worst:.2e}; "
        f"{differing} users ranked differently, from ties in the float32 scores)"
    )
    print("  ".join(f"{name} {value:.4f}" for name, value in fast.items()))
    print(f"vectorised (chunks {args.user_chunk}x{args.item_chunk}): {fast_s:.3f} s")
    print(f"reference per-user sort loop: {ref_s:.3f} s")
    print(f"speed-up: {ref_s / fast_s:.1f}x")
    if worst > tolerance:
        raise SystemExit("the vectorised metrics disagree with the reference beyond the tolerance")


if __name__ == "__main__":
    main()
