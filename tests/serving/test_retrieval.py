"""Retrieval behind one interface (issue 11, section 3): exact, faiss-flat and faiss-hnsw answer alike."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

from transrec.errors import UserError
from transrec.serving import INDEXES, RetrievalError, build_index, load_index
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
    pytest.param("faiss-hnsw", marks=needs_faiss),
]
FLAT_KINDS = ["exact", pytest.param("faiss-flat", marks=needs_faiss)]


def random_set(n: int, d: int = 16, seed: int = 0, q: int = 7):
    g = torch.Generator().manual_seed(seed)
    vectors = torch.randn(n, d, generator=g)
    ids = torch.randperm(10 * n, generator=g)[:n]  # sparse, unsorted ids
    queries = torch.randn(q, d, generator=g)
    return vectors, ids, queries


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


def test_the_registry_holds_the_three_kinds():
    assert INDEXES.names() == ["exact", "faiss-flat", "faiss-hnsw"]


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])
def test_exact_equals_a_full_sort_across_chunk_boundaries(chunk_size):
    vectors, ids, queries = random_set(150)
    index = build_index("exact", vectors, ids, chunk_size=chunk_size)
    for k in (1, 10, 150):
        scores, found = index.search(queries, k)
        want_scores, want_ids = brute_force(vectors, ids, queries, k)
        assert torch.equal(found, want_ids)
        torch.testing.assert_close(scores, want_scores, rtol=0, atol=1e-5)


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
    index = build_index(kind, vectors, ids)
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
    index = build_index(kind, vectors, ids)
    _, top = index.search(queries, 10)
    exclude = [top[0, :5].tolist(), [], [int(ids[0]), 10**9], top[3].tolist()]  # 10**9: not indexed
    scores, found = index.search(queries, 10, exclude=exclude)
    want_scores, want_ids = brute_force(vectors, ids, queries, 10, exclude)
    assert torch.equal(found, want_ids)
    torch.testing.assert_close(scores, want_scores, rtol=0, atol=1e-5)
    for row, banned in enumerate(exclude):
        assert not set(found[row].tolist()) & set(banned)


@pytest.mark.parametrize("kind", FLAT_KINDS)
def test_excluding_all_but_some_pads_with_minus_one(kind):
    vectors, ids, queries = random_set(6, q=1)
    scores, found = build_index(kind, vectors, ids).search(queries, 4, exclude=[ids[:4].tolist()])
    assert set(found[0, :2].tolist()) == set(ids[4:].tolist())
    assert found[0, 2:].tolist() == [-1, -1] and torch.isinf(scores[0, 2:]).all()


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_add_and_remove_change_the_results(kind):
    vectors, ids, queries = random_set(100, q=3)
    index = build_index(kind, vectors, ids)
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
    index = build_index(kind, vectors, ids)
    index.remove(ids[:3])
    before = index.search(queries, 10, exclude=[[int(ids[5])]] * queries.shape[0])
    index.save(tmp_path / "index")
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == sorted(
        ["index.json", "vectors.safetensors"] + ([] if kind == "exact" else ["index.faiss"])
    )
    loaded = load_index(tmp_path / "index")
    assert loaded.kind == kind and loaded.parameters == index.parameters and len(loaded) == 297
    after = loaded.search(queries, 10, exclude=[[int(ids[5])]] * queries.shape[0])
    assert torch.equal(before[1], after[1]) and torch.equal(before[0], after[0])
    loaded.add(vectors[:3], ids[:3])  # the loaded index is live, not a snapshot
    assert len(loaded) == 300


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


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_bad_input_is_a_clear_user_error(kind):
    vectors, ids, queries = random_set(20)
    index = build_index(kind, vectors, ids)
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
        build_index(kind, vectors[:2], [4, 4])
    with pytest.raises(RetrievalError, match="exclude has 1 rows for 7 queries"):
        index.search(queries, 5, exclude=[[1]])
    assert len(index) == 20  # nothing refused changed the index
    assert isinstance(RetrievalError("x"), ValueError)


def test_unknown_kind_names_the_known_ones():
    with pytest.raises(UserError, match="unknown retrieval index 'annoy'; known: exact, faiss-flat"):
        build_index("annoy", torch.randn(2, 2), [0, 1])


def test_faiss_missing_is_one_line_naming_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(MissingPackageError, match=r"run `pip install 'transrec\[serving\]'`"):
        build_index("faiss-flat", torch.randn(2, 2), [0, 1])
    build_index("exact", torch.randn(2, 2), [0, 1])  # the exact kind needs no faiss
