"""Query latency of the retrieval indexes (transrec.serving) and recall@10 of the approximate one.

For each size N (random Gaussian item vectors, dimension d): build each kind (exact, faiss-flat,
faiss-hnsw with its default parameters, printed), then time searches of k = 10 for a batch of 1 query
(median over --single-queries queries) and a batch of 64 (median over --batches batches), and the
recall@10 of faiss-hnsw against exact over 256 queries: |approx top-10 & exact top-10| / 10, averaged.
One run; timings on shared machines vary, compare within a run.

    python benchmarks/bench_retrieval.py                     # N = 10^4, 10^5, 10^6, d = 64
    python benchmarks/bench_retrieval.py --sizes 10000 100000 --dim 128
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from transrec.serving import INDEXES, build_index

KINDS = ("exact", "faiss-flat", "faiss-hnsw")


def median_seconds(index, queries: torch.Tensor, batch: int, repeats: int) -> float:
    times = []
    for r in range(repeats):
        chunk = queries[(r * batch) % queries.shape[0] :][:batch]
        start = time.perf_counter()
        index.search(chunk, 10)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--single-queries", type=int, default=50)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; d = {args.dim}, k = 10")
    for kind in KINDS:
        print(f"{kind} parameters: {INDEXES.get(kind)().parameters}")
    print("N | kind | build s | batch 1 ms | batch 64 ms | recall@10")
    g = torch.Generator().manual_seed(args.seed)
    for n in args.sizes:
        vectors = torch.randn(n, args.dim, generator=g)
        ids = torch.arange(n)
        queries = torch.randn(max(256, 64 * args.batches), args.dim, generator=g)
        exact_top = None
        for kind in KINDS:
            start = time.perf_counter()
            index = build_index(kind, vectors, ids)
            build = time.perf_counter() - start
            one = median_seconds(index, queries, 1, args.single_queries)
            many = median_seconds(index, queries, 64, args.batches)
            _, top = index.search(queries[:256], 10)
            if kind == "exact":
                exact_top, recall = top, ""
            else:
                hits = sum(len(set(a.tolist()) & set(e.tolist())) for a, e in zip(top, exact_top))
                recall = f"{hits / exact_top.numel():.3f}"
            print(f"{n} | {kind} | {build:.2f} | {one * 1e3:.2f} | {many * 1e3:.2f} | {recall}", flush=True)
            del index


if __name__ == "__main__":
    main()
