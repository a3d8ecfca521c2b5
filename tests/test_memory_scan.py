"""The default approximate index (``memory/scan.py``): 4-bit codes of every memory scanned per
query, the best candidates re-scored exactly. Checked against exact search on real DuckDB-backed
memories: agreement, staying in step with stores, updates and deletes, splitting the scan over
threads, rebuilding when superseded codes pile up, tiny and odd-sized collections."""

from __future__ import annotations

import numpy as np
import pytest

from cognitionos_kit.core.errors import InvalidRequestError
from cognitionos_kit.memory import Memory, scan
from cognitionos_kit.memory.approximate import ApproximateIndex
from cognitionos_kit.memory.index import Table


def _clustered(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(1, n // 100), 384)).astype(np.float32)
    x = centers[rng.integers(0, len(centers), n)] + 0.8 * rng.standard_normal((n, 384)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _top(m: Memory, qs: np.ndarray, user: str = "u", k: int = 10) -> list[list[str]]:
    return [[h.id for h in m.retrieve_by_vector(user, q, k=k, now=2e9)] for q in qs]


def _recall(a: list[list[str]], b: list[list[str]]) -> float:
    return float(np.mean([len(set(x) & set(y)) / len(y) for x, y in zip(a, b)]))


@pytest.fixture
def filled(tmp_path):
    x = _clustered(6000)
    m = Memory(tmp_path / "home")
    ids = m.store_many("u", [f"doc {i}" for i in range(5000)], embeddings=x[:5000])
    m.store_many("w", [f"other {i}" for i in range(1000)], embeddings=x[5000:])
    qs = x[np.random.default_rng(1).integers(0, 5000, 30)] + 0.02 * np.random.default_rng(2).standard_normal((30, 384))
    return m, ids, x, qs.astype(np.float32)


def test_the_default_approximate_index_is_the_scan_and_agrees_with_exact(filled):
    m, ids, x, qs = filled
    exact = _top(m, qs)
    m.use_index("approximate", candidates=100)
    approx = _top(m, qs)
    ann = m.searcher.approximate
    assert isinstance(ann, scan.ScanIndex) and len(ann) == 6000 and ann.m == 96
    assert _recall(approx, exact) >= 0.95
    assert all(h.user_id == "u" for q in qs[:5] for h in m.retrieve_by_vector("u", q, k=10))  # others' rows masked
    # hits carry exact similarities, not the codes' estimates
    hit = m.retrieve_by_vector("u", x[7], k=1, now=2e9)[0]
    assert hit.id == ids[7] and hit.similarity == pytest.approx(1.0, abs=1e-5)


def test_the_scan_stays_in_step_with_stores_updates_and_deletes(filled):
    m, ids, x, qs = filled
    m.use_index("approximate")
    m.retrieve_by_vector("u", qs[0], k=3)  # built
    ann = m.searcher.approximate
    m.delete(ids[0], user_id="u")
    new = m.store_many("u", ["fresh"], embeddings=x[:1])[0]
    assert m.retrieve_by_vector("u", x[0], k=1)[0].id == new  # the deleted row never comes back
    m.update(ids[1], user_id="u", content="the locksmith opened the cellar door")  # re-embedded: a new vector
    q = m.embedder.embed(["the locksmith opened the cellar door"])[0]
    assert m.retrieve_by_vector("u", q, k=1)[0].id == ids[1]  # found by its new code
    assert ids[1] not in [h.id for h in m.retrieve_by_vector("u", x[1], k=5)]  # its old code only costs a slot
    assert m.searcher.approximate is ann and len(ann) == 6000 and ann.dead == 2
    m.use_index("exact")
    assert m.retrieve_by_vector("u", x[0], k=1)[0].id == new


def test_two_parts_on_two_threads_answer_as_one(filled, monkeypatch):
    m, _, _, qs = filled
    m.use_index("approximate")
    one = _top(m, qs)
    assert len(m.searcher.approximate.parts) == 1  # 6,000 rows: one thread is cheaper
    monkeypatch.setattr(scan, "PART_MIN", 1000)
    monkeypatch.setattr(scan.os, "cpu_count", lambda: 2)
    m.use_index("approximate", candidates=400)  # new settings: rebuilt
    two = _top(m, qs)
    parts = m.searcher.approximate.parts
    assert len(parts) == 2 and {p.ntotal for p in parts} == {3000}
    import faiss

    books = [faiss.vector_to_array(faiss.downcast_index(p.index).pq.centroids) for p in parts]
    assert np.array_equal(books[0], books[1])  # one set of codebooks: the parts' scores are comparable
    assert two == one


def test_superseded_codes_make_the_scan_stale_and_it_is_rebuilt(tmp_path):
    x = _clustered(400)
    m = Memory(tmp_path / "home")
    ids = m.store_many("u", [f"doc {i}" for i in range(400)], embeddings=x)
    m.use_index("approximate", candidates=20)
    m.retrieve_by_vector("u", x[0], k=1)
    first = m.searcher.approximate
    for i in range(100):  # a quarter of the rows rewritten (re-embedded): not yet stale
        m.update(ids[i], user_id="u", content=f"rewritten note number {i}")
    assert first.dead == 100 and not first.stale
    m.delete(ids[399], user_id="u")  # one more superseded code
    assert first.stale and first.dead == 101
    q = m.embedder.embed(["rewritten note number 50"])[0]
    assert m.retrieve_by_vector("u", q, k=1)[0].id == ids[50]
    second = m.searcher.approximate
    assert second is not first and second.dead == 0 and len(second) == 399


@pytest.mark.parametrize("n", [1, 3, 40])
def test_a_tiny_collection_is_searched_exactly_by_the_scan(tmp_path, n):
    x = _clustered(n, seed=n)
    m = Memory(tmp_path / "home")
    m.store_many("u", [f"doc {i}" for i in range(n)], embeddings=x)
    exact = _top(m, x[:3], k=n)
    m.use_index("approximate")
    assert _top(m, x[:3], k=n) == exact  # every row is a candidate: re-scored exactly


def test_the_code_size_follows_the_dimension():
    assert [scan.subvectors(d) for d in (384, 1536, 10, 7, 3, 1)] == [96, 384, 2, 1, 1, 1]
    rng = np.random.default_rng(0)
    for dim in (10, 7):  # dimensions that are not a multiple of 4 (codes still index them)
        t = Table(dim, capacity=0)
        t.n, t.vec = 300, rng.standard_normal((300, dim)).astype(np.float32)
        t.vec /= np.linalg.norm(t.vec, axis=1, keepdims=True)
        t.alive = np.ones(300, dtype=bool)
        ann = scan.ScanIndex(t, candidates=30)
        rows, sims = ann.search(t.vec[17], 5)
        assert 17 in rows and sims.max() == pytest.approx(1.0, abs=1e-5)
        assert len(rows) == 5 and np.allclose(sims, t.vec[rows] @ t.vec[17], atol=1e-6)


@pytest.mark.parametrize("kw, message", [
    ({"method": "hnsw"}, "unknown method"),
    ({"method": "scan", "nprobe": 10}, "nprobe: not a setting of method='scan'"),
    ({"nlist": 64, "candidates": 50}, "candidates: not a setting of method='ivf'"),
    ({"candidates": 0}, "candidates"),
])
def test_bad_scan_settings_are_refused(tmp_path, kw, message):
    m = Memory(tmp_path / "home")
    with pytest.raises(InvalidRequestError, match=message):
        m.use_index("approximate", **kw)
    assert m.index == "exact"


def test_naming_ivf_settings_picks_the_ivf_index(filled):
    m, _, _, qs = filled
    m.use_index("approximate", nprobe=64)
    m.retrieve_by_vector("u", qs[0], k=3)
    assert isinstance(m.searcher.approximate, ApproximateIndex)
    m.use_index("approximate", method="ivf")
    m.retrieve_by_vector("u", qs[0], k=3)
    ivf = m.searcher.approximate
    assert isinstance(ivf, ApproximateIndex)
    m.use_index("approximate", method="ivf")  # the same settings: the same index
    m.retrieve_by_vector("u", qs[0], k=3)
    assert m.searcher.approximate is ivf
    m.use_index("approximate")  # no settings: the defaults again, not the last ones
    m.retrieve_by_vector("u", qs[0], k=3)
    assert isinstance(m.searcher.approximate, scan.ScanIndex)


def _two_parts(m: Memory, monkeypatch) -> scan.ScanIndex:
    monkeypatch.setattr(scan, "PART_MIN", 1000)
    monkeypatch.setattr(scan.os, "cpu_count", lambda: 2)
    m.use_index("approximate", candidates=200)
    m.retrieve_by_vector("u", np.ones(384, dtype=np.float32) / np.sqrt(384), k=1)
    ann = m.searcher.approximate
    assert isinstance(ann, scan.ScanIndex) and len(ann.parts) == 2
    return ann


def test_rows_stored_after_the_parts_are_scanned_find_their_way(filled, monkeypatch):
    m, ids, x, _ = filled
    ann = _two_parts(m, monkeypatch)
    fresh = _clustered(50, seed=7)
    new = m.store_many("u", [f"new {i}" for i in range(50)], embeddings=fresh)
    assert sorted(p.ntotal for p in ann.parts) == [3000, 3050]  # into the smaller part
    assert [m.retrieve_by_vector("u", v, k=1)[0].id for v in fresh] == new


def test_a_forked_child_scans_the_parts_too(filled, monkeypatch):
    """faiss's shard threads belong to the parent: a forked child gets its own, instead of waiting
    forever on threads it does not have."""
    import multiprocessing

    m, ids, x, _ = filled
    ann = _two_parts(m, monkeypatch)
    rows, _ = ann.search(x[10], 5)  # the parent's shard threads exist now
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()

    def child() -> None:
        found, _ = ann.search(x[10], 5)
        out.put(sorted(found.tolist()))

    p = ctx.Process(target=child)
    p.start()
    p.join(60)
    alive = p.is_alive()
    if alive:
        p.kill()
    assert not alive and p.exitcode == 0
    assert out.get(timeout=5) == sorted(rows.tolist())
