"""Retrieval behind one interface (issue 11, section 3): exact, faiss-flat, faiss-hnsw, faiss-ivf and faiss-pq
answer alike, and one index may be searched, changed and cloned from many threads at once."""

from __future__ import annotations

import importlib
import json
import sys
import threading

import pytest
import torch

from transrec.errors import UserError
from transrec.serving import INDEXES, RetrievalError, build_index, load_index
from transrec.serving.retrieval import make_index
from transrec.serving.retrieval_faiss import hnsw_ef_search, pq_sub_vectors
from transrec.utils.packages import MissingPackageError


# The exact kind and the missing-faiss error are tested without faiss; the FAISS kinds need it.
def _faiss_installed() -> bool:
    try:
        importlib.import_module("faiss")
    except ImportError:
        return False
    return True


needs_faiss = pytest.mark.skipif(not _faiss_installed(), reason="faiss-cpu not installed")
ALL_KINDS = [
    "exact",
    pytest.param("faiss-flat", marks=needs_faiss),
    pytest.param("faiss-hnsw", marks=needs_faiss),  # its defaults: 8-bit codes, candidates re-ranked
    pytest.param("faiss-hnsw/flat", marks=needs_faiss),
    pytest.param("faiss-ivf", marks=needs_faiss),
    pytest.param("faiss-pq", marks=needs_faiss),  # 4-bit codes scanned in full, candidates re-ranked
]
FLAT_KINDS = ["exact", pytest.param("faiss-flat", marks=needs_faiss)]
# Variants of a kind in ALL_KINDS: name -> (kind, parameters).
VARIANTS = {"faiss-hnsw/flat": ("faiss-hnsw", {"storage": "flat"})}


def build(variant: str, vectors, ids, **parameters):
    """``build_index`` of a kind or of a variant in ``VARIANTS``."""
    kind, preset = VARIANTS.get(variant, (variant, {}))
    return build_index(kind, vectors, ids, **{**preset, **parameters})


def random_set(n: int, d: int = 16, seed: int = 0, q: int = 7):
    g = torch.Generator().manual_seed(seed)
    vectors = torch.randn(n, d, generator=g)
    ids = torch.randperm(10 * n, generator=g)[:n]  # sparse, unsorted ids
    queries = torch.randn(q, d, generator=g)
    return vectors, ids, queries


def run_threads(*targets) -> list[BaseException]:
    """Run each target in its own thread, with frequent thread switches (to provoke races), and return
    what they raised."""
    raised = []

    def guarded(target):
        try:
            target()
        except BaseException as err:  # reported by the test
            raised.append(err)

    threads = [threading.Thread(target=guarded, args=(target,)) for target in targets]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    return raised


def assert_same(got, want):
    """``(scores, ids)`` of a search equal ``want``'s: the same ids in the same order, the same scores to
    float32 rounding."""
    (scores, found), (want_scores, want_ids) = got, want
    assert torch.equal(found, want_ids)
    torch.testing.assert_close(scores, want_scores, rtol=0, atol=1e-5)


def brute_force(vectors, ids, queries, k, exclude=None):
    """Full sort of every score, by score then id, with the excluded items dropped."""
    scores = queries @ vectors.T
    out_scores, out_ids = [], []
    for row in range(queries.shape[0]):
        banned = set() if exclude is None else set(exclude[row])
        pairs = sorted((-float(s), int(i)) for s, i in zip(scores[row], ids) if int(i) not in banned)[:k]
        out_scores.append([-s for s, _ in pairs])
        out_ids.append([i for _, i in pairs])
    return torch.tensor(out_scores), torch.tensor(out_ids)


def test_the_registry_holds_the_five_kinds():
    assert INDEXES.names() == ["exact", "faiss-flat", "faiss-hnsw", "faiss-ivf", "faiss-pq"]


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])
def test_exact_equals_a_full_sort_across_chunk_boundaries(chunk_size):
    vectors, ids, queries = random_set(150)
    index = build_index("exact", vectors, ids, chunk_size=chunk_size)
    for k in (1, 10, 150):
        scores, found = index.search(queries, k)
        want_scores, want_ids = brute_force(vectors, ids, queries, k)
        assert_same((scores, found), (want_scores, want_ids))


@needs_faiss
def test_ties_are_ordered_by_id_in_exact_and_faiss_flat():
    # Forty copies of each of 30 vectors: every score is tied forty times, and the chunk edges (chunk 7)
    # and the k cut (k = 12) fall inside the ties; in one chunk, torch.topk picks an arbitrary subset of
    # the items tied at the cut.
    base, _, queries = random_set(30, d=8)
    vectors = base.repeat(40, 1)
    ids = torch.randperm(1200, generator=torch.Generator().manual_seed(3)) * 3
    want_scores, want_ids = brute_force(vectors, ids, queries, 12)
    for kind, parameters in (("exact", {"chunk_size": 7}), ("exact", {}), ("faiss-flat", {})):
        scores, found = build_index(kind, vectors, ids, **parameters).search(queries, 12)
        assert torch.equal(found, want_ids), kind
        torch.testing.assert_close(scores, want_scores, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", FLAT_KINDS)
@pytest.mark.parametrize("n", [10, 100, 1000])
def test_when_every_item_ties_the_smallest_ids_win(kind, n):
    # One vector, n times: the k results are the k smallest ids, whatever subset topk or FAISS's heap
    # would pick among the ties.
    vectors = torch.ones(n, 4).index_fill_(1, torch.tensor([0]), 0.5)
    ids = torch.randperm(n, generator=torch.Generator().manual_seed(n)) + 1000
    index = build(kind, vectors, ids)
    scores, found = index.search(torch.ones(3, 4), 5)
    assert found.tolist() == [list(range(1000, 1005))] * 3
    assert torch.equal(scores, torch.full((3, 5), 3.5))
    # Items added later with smaller ids (FAISS holds them after the others) win the ties too.
    index.add(vectors[:3], [7, 3, 5])
    _, found = index.search(torch.ones(3, 4), 5)
    assert found.tolist() == [[3, 5, 7, 1000, 1001]] * 3


@needs_faiss
def test_exact_and_faiss_flat_agree_on_random_vectors():
    vectors, ids, queries = random_set(3000, d=32, q=20)
    exact = build_index("exact", vectors, ids, chunk_size=500).search(queries, 25)
    flat = build_index("faiss-flat", vectors, ids).search(queries, 25)
    assert torch.equal(exact[1], flat[1])
    torch.testing.assert_close(exact[0], flat[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_exclusion_drops_the_history(kind):
    vectors, ids, queries = random_set(200, q=4)
    index = build(kind, vectors, ids)
    _, top = index.search(queries, 10)
    exclude = [top[0, :5].tolist(), [], [int(ids[0]), 10**9], top[3].tolist()]  # 10**9: not indexed
    scores, found = index.search(queries, 10, exclude=exclude)
    want_scores, want_ids = brute_force(vectors, ids, queries, 10, exclude)
    assert_same((scores, found), (want_scores, want_ids))
    for row, banned in enumerate(exclude):
        assert not set(found[row].tolist()) & set(banned)


@pytest.mark.parametrize("kind", FLAT_KINDS)
def test_excluding_all_but_some_pads_with_minus_one(kind):
    vectors, ids, queries = random_set(6, q=1)
    scores, found = build(kind, vectors, ids).search(queries, 4, exclude=[ids[:4].tolist()])
    assert set(found[0, :2].tolist()) == set(ids[4:].tolist())
    assert found[0, 2:].tolist() == [-1, -1] and torch.isinf(scores[0, 2:]).all()


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_add_and_remove_change_the_results(kind):
    vectors, ids, queries = random_set(100, q=3)
    index = build(kind, vectors, ids)
    # A new item aligned with every query beats everything.
    big = 100 * queries.mean(0, keepdim=True)
    index.add(big, [999_999])
    assert len(index) == 101
    _, found = index.search(queries, 3)
    assert (found[:, 0] == 999_999).all()
    index.remove([999_999, int(ids[0])])
    assert len(index) == 99
    _, found = index.search(queries, 99)
    assert 999_999 not in found and int(ids[0]) not in found
    assert set(found[0].tolist()) == set(ids[1:].tolist())


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_save_and_load_round_trip(kind, tmp_path):
    vectors, ids, queries = random_set(300)
    index = build(kind, vectors, ids)
    index.remove(ids[:3])
    before = index.search(queries, 10, exclude=[[int(ids[5])]] * queries.shape[0])
    index.save(tmp_path / "index")
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == sorted(
        ["index.json", "vectors.safetensors"] + ([] if kind == "exact" else ["index.faiss"])
    )
    loaded = load_index(tmp_path / "index")
    assert loaded.kind == index.kind and loaded.parameters == index.parameters and len(loaded) == 297
    after = loaded.search(queries, 10, exclude=[[int(ids[5])]] * queries.shape[0])
    assert torch.equal(before[1], after[1]) and torch.equal(before[0], after[0])
    loaded.add(vectors[:3], ids[:3])  # the loaded index is live, not a snapshot
    assert len(loaded) == 300


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_a_clone_answers_alike_and_changes_independently(kind):
    vectors, ids, queries = random_set(300)
    index = build(kind, vectors, ids)
    index.remove(ids[:2])  # faiss-hnsw: removed ids still in its graph travel with the clone
    before = index.search(queries, 10)
    copy = index.clone()
    assert (copy.kind, copy.parameters, len(copy)) == (index.kind, index.parameters, 298)
    assert all(torch.equal(a, b) for a, b in zip(copy.search(queries, 10), before))
    copy.add(100 * queries.mean(0, keepdim=True), [999_999])
    copy.remove(ids[2:4])
    index.remove(ids[4:5])
    assert len(index) == 297 and len(copy) == 297
    _, found = index.search(queries, 297)
    assert 999_999 not in found and set(ids[2:4].tolist()) <= set(found[0].tolist())
    _, found = copy.search(queries, 297)
    assert (found[:, 0] == 999_999).all() and int(ids[4]) in found[0]


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_searches_during_adds_and_removes_see_the_index_before_or_after_each_change(kind):
    # A writer adds and removes item 0, the smallest id, over and over: each change moves every other
    # item's position in the sorted contents, so a search that read the contents half before and half
    # after a change (or a FAISS index half way through an add) would return ids of neither state.
    # (faiss-hnsw rebuilds its graph on every add of the removed item 0: a smaller catalogue there.)
    n, d = (400 if kind.startswith("faiss-hnsw") else 2000), 16
    g = torch.Generator().manual_seed(5)
    vectors, queries = torch.randn(n, d, generator=g), torch.randn(8, d, generator=g)
    newcomer = queries[:4].sum(0, keepdim=True)  # in the top 20 of some queries, not of others
    ids = torch.arange(1, n + 1)
    # Search exhaustively on the approximate kinds too, so that both states have one right answer.
    parameters = {
        "exact": {"chunk_size": 64},
        "faiss-hnsw": {"ef_search": n + 1},
        "faiss-ivf": {"nprobe": n},
        "faiss-pq": {"refine": n},
    }
    index = build(kind, vectors, ids, **parameters.get(VARIANTS.get(kind, (kind,))[0], {}))
    without = index.search(queries, 20)[1]
    index.add(newcomer, [0])
    with_it = index.search(queries, 20)[1]
    index.remove([0])
    assert not torch.equal(without, with_it)
    reading, wrong = [3], []

    def write() -> None:
        while reading[0]:
            index.add(newcomer, [0])
            index.remove([0])

    def read() -> None:
        try:
            for _ in range(150):
                found = index.search(queries, 20)[1]
                if not (torch.equal(found, without) or torch.equal(found, with_it)):
                    wrong.append(found)
        finally:
            reading[0] -= 1

    assert run_threads(write, read, read, read) == []
    assert wrong == []
    assert len(index) == n


@needs_faiss
def test_concurrent_hnsw_searches_with_different_k_equal_the_single_threaded_results():
    # A small graph (m 4) and ef_search 1: each search's candidate list is max(1, k + 1), so the answer
    # depends on k; a search that ran with another thread's candidate list would answer differently.
    vectors, ids, queries = random_set(4000, d=32, seed=2, q=64)
    index = build_index("faiss-hnsw", vectors, ids, m=4, ef_construction=8, ef_search=1)
    ks = [1, 3, 300]
    want = {k: index.search(queries, k)[1] for k in ks}
    assert not torch.equal(want[1][:, 0], want[300][:, 0])  # the candidate list matters here
    wrong = []

    def searching(k: int):
        def search() -> None:
            for _ in range(40):
                if not torch.equal(index.search(queries, k)[1], want[k]):
                    wrong.append(k)

        return search

    assert run_threads(*[searching(k) for k in ks + ks]) == []
    assert wrong == []


@needs_faiss
@pytest.mark.parametrize("storage", ["sq8", "flat"])
def test_hnsw_remove_filters_the_graph_until_a_fifth_is_removed_then_rebuilds(storage):
    vectors, ids, queries = random_set(500)
    index = build_index("faiss-hnsw", vectors, ids, ef_search=500, storage=storage)
    graph = index._index
    index.remove(ids[:50])  # 50 removed, 450 live: filtered, no rebuild
    assert index._index is graph
    want_scores, want_ids = brute_force(vectors[50:], ids[50:], queries, 30)
    scores, found = index.search(queries, 30)
    assert_same((scores, found), (want_scores, want_ids))
    index.add(vectors[:1], ids[:1])  # a removed id again: the graph is rebuilt without the removed ones
    assert index._index is not graph and index._index.ntotal == 451
    assert int(ids[0]) in index.search(queries, 451)[1][0]
    graph = index._index
    index.remove(ids[50:150])  # 100 removed > a fifth of the 351 left: rebuilt
    assert index._index is not graph and index._index.ntotal == 351
    live = torch.cat([torch.tensor([0]), torch.arange(150, 500)])
    assert torch.equal(index.search(queries, 30)[1], brute_force(vectors[live], ids[live], queries, 30)[1])


@needs_faiss
def test_hnsw_sq8_candidates_are_re_ranked_by_their_exact_scores():
    # Two outliers stretch the 8-bit range of every dimension to [-100, 100] (steps of 0.78), so the 40
    # items (1 + 0.001 i, 1, 1, 1) share one code: the graph walk scores them all alike, and only their
    # exact scores, 1 + 0.001 i for the query (1, 0, 0, 0), tell the best of them apart: the top five are
    # the outlier 40 (score 100), then items 39 to 36.
    near = torch.ones(40, 4)
    near[:, 0] += 0.001 * torch.arange(40)
    vectors = torch.cat([near, torch.full((1, 4), 100.0), torch.full((1, 4), -100.0)])
    ids = torch.arange(42)
    query = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    want_scores, want_ids = brute_force(vectors, ids, query, 5)
    # refine 10: 60 candidates, every item; each returned with its exact score, ordered by it.
    index = build_index("faiss-hnsw", vectors, ids, ef_search=100, refine=10)
    scores, found = index.search(query, 5)
    assert torch.equal(found, want_ids) and found[0].tolist() == [40, 39, 38, 37, 36]
    torch.testing.assert_close(scores, want_scores, rtol=0, atol=1e-6)
    # refine 1: 6 candidates, the outlier and 5 of the 40 tied items in the graph's tie order: not the best.
    _, found = build_index("faiss-hnsw", vectors, ids, ef_search=100, refine=1).search(query, 5)
    assert len(set(found[0].tolist()) & set(want_ids[0].tolist())) < 5
    # The float32 graph tells them apart without re-ranking.
    _, found = build_index("faiss-hnsw", vectors, ids, ef_search=100, refine=1, storage="flat").search(
        query, 5
    )
    assert torch.equal(found, want_ids)


@needs_faiss
def test_hnsw_storage_sets_the_faiss_index_and_a_save_without_it_loads_as_flat(tmp_path):
    import faiss

    vectors, ids, queries = random_set(300)
    default = build_index("faiss-hnsw", vectors, ids)
    assert default.parameters["storage"] == "sq8" and default.parameters["refine"] == 2
    assert isinstance(faiss.downcast_index(default._index.index), faiss.IndexHNSWSQ)
    flat = build_index("faiss-hnsw", vectors, ids, storage="flat")
    assert isinstance(faiss.downcast_index(flat._index.index), faiss.IndexHNSWFlat)
    # An index saved before `storage` existed (a flat graph, no storage in index.json) loads as flat.
    flat.save(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "index.json").read_text())
    del meta["parameters"]["storage"], meta["parameters"]["refine"]
    (tmp_path / "old" / "index.json").write_text(json.dumps(meta))
    loaded = load_index(tmp_path / "old")
    assert loaded.parameters["storage"] == "flat"
    assert all(torch.equal(a, b) for a, b in zip(loaded.search(queries, 10), flat.search(queries, 10)))
    with pytest.raises(RetrievalError, match="faiss-hnsw: storage must be one of sq8, flat, got 'pq'"):
        build_index("faiss-hnsw", vectors, ids, storage="pq")
    with pytest.raises(RetrievalError, match="faiss-hnsw: refine must be an integer >= 1, got 0"):
        build_index("faiss-hnsw", vectors, ids, refine=0)


@needs_faiss
def test_pq_returns_exact_scores_and_more_candidates_give_the_exact_top_k():
    vectors, ids, queries = random_set(3000, d=16, seed=4, q=20)
    want_scores, want_ids = brute_force(vectors, ids, queries, 10)
    by_id = dict(zip(ids.tolist(), vectors))
    # refine 1: 11 candidates from the 4-bit codes alone: not the exact top 10, but each result carries
    # its exact score, in order, never the code's approximate one.
    scores, found = build_index("faiss-pq", vectors, ids, refine=1).search(queries, 10)
    assert not torch.equal(found, want_ids)
    exact = torch.stack([torch.stack([by_id[int(i)] @ q for i in row]) for row, q in zip(found, queries)])
    torch.testing.assert_close(scores, exact, rtol=0, atol=1e-5)
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    # refine 100: 1,100 candidates of 3,000: the exact top 10 among them, ordered exactly.
    scores, found = build_index("faiss-pq", vectors, ids, refine=100).search(queries, 10)
    assert_same((scores, found), (want_scores, want_ids))


@needs_faiss
def test_pq_answers_queries_whose_codes_all_tie_like_exact():
    # FAISS's fast scan returns no candidate when every code scores alike: a zero query, or copies.
    vectors, ids, _ = random_set(300, d=8)
    copies = torch.ones(300, 8)
    for items, query in ((vectors, torch.zeros(2, 8)), (copies, torch.ones(2, 8))):
        want_scores, want_ids = brute_force(items, ids, query, 5)
        scores, found = build_index("faiss-pq", items, ids, refine=4).search(query, 5)
        assert_same((scores, found), (want_scores, want_ids))


@needs_faiss
@pytest.mark.parametrize(("kind", "per_result"), [("faiss-pq", 10), ("faiss-hnsw", 10), ("faiss-flat", 1)])
def test_excluded_items_add_their_number_of_candidates_not_a_multiple(kind, per_result, monkeypatch):
    vectors, ids, queries = random_set(3000, d=8, q=1)
    parameters = {} if kind == "faiss-flat" else {"refine": per_result}
    index = build_index(kind, vectors, ids, **parameters)
    asked = []
    backend = type(index)._backend_search

    def counting(self, faiss, q, wanted):
        asked.append(wanted)
        return backend(self, faiss, q, wanted)

    monkeypatch.setattr(type(index), "_backend_search", counting)
    exclude = [ids[:30].tolist()]
    _, found = index.search(queries, 5, exclude=exclude)
    assert asked[0] == per_result * (5 + 1) + 30
    assert not set(found[0].tolist()) & set(exclude[0])


@needs_faiss
def test_pq_recall_at_10_against_exact_with_default_parameters():
    vectors, ids, queries = random_set(20_000, d=64, seed=1, q=200)
    _, exact = build_index("exact", vectors, ids).search(queries, 10)
    index = build_index("faiss-pq", vectors, ids)
    assert (index.sub_vectors, index.parameters["refine"]) == (32, 48)
    _, approx = index.search(queries, 10)
    hits = sum(len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx, exact))
    assert hits / exact.numel() >= 0.95


@needs_faiss
def test_pq_parameters_are_checked_and_small_catalogues_train_without_faiss_warnings(capfd):
    vectors, ids, _ = random_set(100, d=12)
    assert [pq_sub_vectors(d) for d in (64, 12, 7, 1)] == [32, 6, 7, 1]
    assert build_index("faiss-pq", vectors, ids).sub_vectors == 6
    assert build_index("faiss-pq", vectors, ids, m=3).sub_vectors == 3
    assert "WARNING" not in capfd.readouterr().err  # FAISS's k-means asks for 39 items per codeword
    with pytest.raises(RetrievalError, match="faiss-pq: m 5 does not divide the vectors' dimension 12"):
        build_index("faiss-pq", vectors, ids, m=5)
    with pytest.raises(RetrievalError, match="needs at least 16 items, got 15; use 'exact'"):
        build_index("faiss-pq", vectors[:15], ids[:15])
    build_index("faiss-pq", vectors[:16], ids[:16])
    # The seed draws the k-means samples and starts: the same seed, the same codes; another, others.
    import faiss

    def codes(seed: int) -> bytes:
        return faiss.serialize_index(build_index("faiss-pq", vectors, ids, seed=seed)._index).tobytes()

    assert codes(0) == codes(0) != codes(1)
    for name, value in (("m", 0), ("refine", 0), ("seed", -1), ("refine", True)):
        with pytest.raises(RetrievalError, match=f"faiss-pq: {name} must be an integer >= "):
            build_index("faiss-pq", vectors, ids, **{name: value})


def test_load_of_a_missing_directory_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no saved retrieval index"):
        load_index(tmp_path)


@needs_faiss
def test_hnsw_recall_at_10_against_exact_with_default_parameters():
    vectors, ids, queries = random_set(10_000, d=64, seed=1, q=200)
    _, exact = build_index("exact", vectors, ids).search(queries, 10)
    _, approx = build_index("faiss-hnsw", vectors, ids).search(queries, 10)
    hits = sum(len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx, exact))
    assert hits / exact.numel() >= 0.9


def test_hnsw_ef_search_grows_with_the_fourth_root_of_the_catalogue():
    assert [hnsw_ef_search(n) for n in (1, 10_000, 40_000, 100_000, 1_000_000)] == [80, 80, 120, 144, 256]


@needs_faiss
def test_the_default_hnsw_ef_search_follows_the_size_of_the_index():
    vectors, ids, _ = random_set(300)
    index = build_index("faiss-hnsw", vectors, ids)
    assert index.ef_search == 80 and index.parameters["ef_search"] is None
    assert build_index("faiss-hnsw", vectors, ids, ef_search=7).ef_search == 7


@needs_faiss
def test_ivf_cells_default_to_four_square_roots_of_the_catalogue_and_bad_parameters_are_refused():
    vectors, ids, _ = random_set(4000, d=8)
    assert build_index("faiss-ivf", vectors, ids).nlist == 102  # min(4 sqrt(4000) = 253, 4000 // 39)
    assert build_index("faiss-ivf", vectors, ids, nlist=10).nlist == 10
    many, many_ids, _ = random_set(40_000, d=4)
    assert build_index("faiss-ivf", many, many_ids).nlist == 800  # 4 sqrt(40000), under 40000 // 39
    with pytest.raises(RetrievalError, match="nlist 5000 is more than the 4000 items"):
        build_index("faiss-ivf", vectors, ids, nlist=5000)
    with pytest.raises(RetrievalError, match="faiss-ivf: nprobe must be an integer >= 1, got 0"):
        build_index("faiss-ivf", vectors, ids, nprobe=0)
    with pytest.raises(RetrievalError, match="faiss-hnsw: ef_search must be an integer >= 1 or None, got 0"):
        build_index("faiss-hnsw", vectors, ids, ef_search=0)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_bad_input_is_a_clear_user_error(kind):
    vectors, ids, queries = random_set(20)
    index = build(kind, vectors, ids)
    with pytest.raises(RetrievalError, match="dimension 15; the index holds vectors of dimension 16"):
        index.search(queries[:, :15], 5)
    with pytest.raises(RetrievalError, match="k must be an integer from 1 to the 20 items"):
        index.search(queries, 0)
    with pytest.raises(RetrievalError, match="k must be an integer from 1 to the 20 items"):
        index.search(queries, 21)
    with pytest.raises(RetrievalError, match=rf"ids already in the index: \[{int(ids[2])}\]"):
        index.add(vectors[:2], [10**6, int(ids[2])])
    with pytest.raises(RetrievalError, match=r"ids not in the index: \[123456789\]"):
        index.remove([int(ids[0]), 123456789])
    with pytest.raises(RetrievalError, match="dimension"):
        index.add(torch.randn(1, 3), [10**6])
    with pytest.raises(RetrievalError, match="repeat ids"):
        build(kind, vectors[:2], [4, 4])
    with pytest.raises(RetrievalError, match="exclude has 1 rows for 7 queries"):
        index.search(queries, 5, exclude=[[1]])
    assert len(index) == 20  # nothing refused changed the index
    assert isinstance(RetrievalError("x"), ValueError)


@needs_faiss
def test_parameters_in_force_fill_in_the_defaults_chosen_for_the_contents(tmp_path):
    vectors, ids, _ = random_set(300, d=12)
    assert build_index("exact", vectors, ids).parameters_in_force() == {"chunk_size": 65536}
    hnsw = build_index("faiss-hnsw", vectors, ids)
    assert hnsw.parameters["ef_search"] is None and hnsw.parameters_in_force()["ef_search"] == 80
    assert build_index("faiss-pq", vectors, ids).parameters_in_force() == {"m": 6, "refine": 48, "seed": 0}
    assert build_index("faiss-ivf", vectors, ids).parameters_in_force()["nlist"] == 7  # 300 // 39
    # A saved index whose index.json names a parameter its kind does not take is refused as clearly.
    build_index("faiss-pq", vectors, ids).save(tmp_path / "saved")
    meta = json.loads((tmp_path / "saved" / "index.json").read_text())
    meta["parameters"]["bogus"] = 1
    (tmp_path / "saved" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(RetrievalError, match="the faiss-pq index has no parameter 'bogus'"):
        load_index(tmp_path / "saved")


def test_a_parameter_the_kind_does_not_take_is_refused_naming_the_ones_it_takes():
    with pytest.raises(
        RetrievalError, match=r"the exact index has no parameter 'ef_search', 'm'; it takes chunk_size"
    ):
        build_index("exact", torch.randn(2, 2), [0, 1], m=3, ef_search=1)
    with pytest.raises(RetrievalError, match="no parameter 'chunk'"):
        make_index("exact", chunk=4)
    assert make_index("exact", chunk_size=4).parameters == {"chunk_size": 4}


def test_unknown_kind_names_the_known_ones():
    with pytest.raises(UserError, match="unknown retrieval index 'annoy'; known: exact, faiss-flat"):
        build_index("annoy", torch.randn(2, 2), [0, 1])


def test_faiss_missing_is_one_line_naming_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(MissingPackageError, match=r"run `pip install 'transrec\[serving\]'`"):
        build_index("faiss-flat", torch.randn(2, 2), [0, 1])
    with pytest.raises(MissingPackageError, match="faiss-pq"):
        make_index("faiss-pq")  # when the index is made, before any vector is given
    build_index("exact", torch.randn(2, 2), [0, 1])  # the exact kind needs no faiss
