"""Query latency of the retrieval indexes (transrec.serving) and recall@10 of the approximate ones.

For each data set and size N: build each kind (exact, faiss-flat, and the approximate faiss-hnsw,
faiss-ivf and faiss-pq with their default parameters, printed, and in the last column the parameters in
force for that size: faiss-hnsw's m, ef_construction, ef_search, storage and refine, faiss-ivf's nlist,
faiss-pq's m and refine), then
time searches of k = 10 for a batch of 1 query (the median and the fastest of --single-queries queries)
and a batch of 64 (median over --batches batches), and the recall@10 of each kind against exact over
256 queries: |top-10 & exact top-10| / 10, averaged. On a machine that other processes load, the median
is what a caller waits and the fastest is close to what the search itself costs; --threads sets torch's
and FAISS's threads (default: theirs).

Two data sets (d = 64 by default):

- ``gaussian``: item and query vectors drawn from N(0, I): no structure at all, the hardest case for a
  graph or a cluster index (the nearest items are hardly nearer than the rest);
- ``clustered``: 1,000 centres drawn from N(0, I), each item (and query) a random centre plus
  N(0, noise^2 I) noise (--noise, default 1: as much spread within a cluster as between centres), closer
  to trained item vectors, which group by genre, style and audience.

One run; timings on shared machines vary, compare within a run. Each data set and size draws its vectors
from its own seeded generator, so a run of one size sees the same vectors as a run of all of them.
``--index-cache DIR`` saves each built HNSW or IVF index there (``RetrievalIndex.save``) and loads it
on the next run with the same data, size, seed and parameters (the build column then says ``cached``):
an HNSW graph of 10^6 items takes many minutes to build, and its search timings are best taken on an
idle machine, which the build need not wait for.

    python benchmarks/bench_retrieval.py                      # N = 10^4, 10^5, 10^6; both data sets
    python benchmarks/bench_retrieval.py --sizes 10000 100000 --data clustered --kinds exact faiss-ivf
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
import zlib
from pathlib import Path

import torch

from transrec.serving import INDEXES, build_index, load_index

KINDS = ("exact", "faiss-flat", "faiss-hnsw", "faiss-ivf", "faiss-pq")
CENTRES = 1000


def timings(index, queries: torch.Tensor, batch: int, repeats: int) -> tuple[float, float]:
    """(median, fastest) seconds of ``repeats`` searches of ``batch`` queries."""
    times = []
    for r in range(repeats):
        chunk = queries[(r * batch) % queries.shape[0] :][:batch]
        start = time.perf_counter()
        index.search(chunk, 10)
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def vectors_of(data: str, n: int, n_queries: int, dim: int, noise: float, g: torch.Generator):
    """``(items [n, dim], queries [n_queries, dim])`` of the data set ``data``."""
    if data == "gaussian":
        return torch.randn(n, dim, generator=g), torch.randn(n_queries, dim, generator=g)
    centres = torch.randn(CENTRES, dim, generator=g)

    def draw(count: int) -> torch.Tensor:
        picks = torch.randint(0, CENTRES, (count,), generator=g)
        return centres[picks] + noise * torch.randn(count, dim, generator=g)

    return draw(n), draw(n_queries)


def built(kind: str, vectors: torch.Tensor, ids: torch.Tensor, cache: Path | None, key: dict):
    """``(index, build seconds or None when loaded from cache)``; exact, faiss-flat and faiss-pq (seconds
    to build at 10^6) are never cached."""
    if cache is None or kind in ("exact", "faiss-flat", "faiss-pq"):
        start = time.perf_counter()
        index = build_index(kind, vectors, ids)
        return index, time.perf_counter() - start
    parameters = INDEXES.get(kind)().parameters
    name = json.dumps({**key, "kind": kind, "parameters": parameters}, sort_keys=True)
    folder = cache / f"{kind}-{key['data']}-{key['n']}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    if (folder / "key.json").is_file():
        return load_index(folder), None
    start = time.perf_counter()
    index = build_index(kind, vectors, ids)
    seconds = time.perf_counter() - start
    index.save(folder)
    (folder / "key.json").write_text(name)
    return index, seconds


def in_force(index) -> str:
    """The parameters of an approximate index, with the defaults it chose for its size."""
    if index.kind in ("exact", "faiss-flat"):
        return ""
    return ", ".join(f"{name} {value}" for name, value in index.parameters_in_force().items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument(
        "--data", nargs="+", choices=("gaussian", "clustered"), default=["gaussian", "clustered"]
    )
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--noise", type=float, default=1.0, help="clustered: noise std per coordinate")
    parser.add_argument("--single-queries", type=int, default=50)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch and FAISS threads")
    parser.add_argument("--index-cache", type=Path, help="save built approximate indexes here and reuse them")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        if any(kind.startswith("faiss") for kind in args.kinds):
            import faiss

            faiss.omp_set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; d = {args.dim}, k = 10")
    for kind in args.kinds:
        print(f"{kind} parameters: {INDEXES.get(kind)().parameters}")
    columns = "build s | batch 1 ms (median, fastest) | x exact (median, fastest) | batch 64 ms | recall@10"
    print(f"data | N | kind | {columns} | in force", flush=True)
    for data in args.data:
        for n in args.sizes:
            # Its own generator per data set and size: the same vectors whatever else the run measures.
            g = torch.Generator().manual_seed(zlib.crc32(f"{args.seed}-{data}-{n}".encode()))
            key = {"data": data, "n": n, "dim": args.dim, "noise": args.noise, "seed": args.seed}
            vectors, queries = vectors_of(data, n, max(256, 64 * args.batches), args.dim, args.noise, g)
            ids = torch.arange(n)
            _, exact_top = build_index("exact", vectors, ids).search(queries[:256], 10)
            exact_one = exact_fastest = None
            for kind in args.kinds:
                index, build = built(kind, vectors, ids, args.index_cache, key)
                one, fastest = timings(index, queries, 1, args.single_queries)
                many, _ = timings(index, queries, 64, args.batches)
                _, top = index.search(queries[:256], 10)
                hits = sum(len(set(a.tolist()) & set(e.tolist())) for a, e in zip(top, exact_top))
                if kind == "exact":
                    exact_one, exact_fastest = one, fastest
                speedup = (
                    "" if exact_one is None else f"{exact_one / one:.1f}x, {exact_fastest / fastest:.1f}x"
                )
                print(
                    f"{data} | {n} | {kind} | {'cached' if build is None else f'{build:.2f}'} | "
                    f"{one * 1e3:.2f}, {fastest * 1e3:.2f} | "
                    f"{speedup} | {many * 1e3:.2f} | "
                    f"{hits / exact_top.numel():.3f} | {in_force(index)}",
                    flush=True,
                )
                del index


if __name__ == "__main__":
    main()
