"""Large collections load from a snapshot (memory-mapped vectors and columns, plus the events after
it) and their approximate index from the file the last builder saved: checked against a load from
DuckDB alone, across processes, after changes, a purge, a rebuild and damage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cognitionos_kit.memory import Memory, snapshot

QUERIES = 6
NOW = 2_000_000_000.0  # pinned: scores are comparable across loads


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    """Clustered unit vectors (384 dims), as embeddings of related texts are."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(1, n // 50), 384)).astype(np.float32)
    x = centers[rng.integers(0, len(centers), n)] + 0.5 * rng.standard_normal((n, 384), dtype=np.float32) / np.sqrt(384)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _fill(home: Path, n: int) -> tuple[list[str], np.ndarray]:
    x = _vectors(n)
    mem = Memory(home)
    ids = mem.store_many("ana", [f"note {i}" for i in range(n // 2)], embeddings=x[: n // 2], metadata={"half": 1})
    ids += mem.store_many("ben", [f"note {i}" for i in range(n // 2, n)], embeddings=x[n // 2 :], metadata={"half": 2})
    mem.close()
    return ids, x


def _answers(mem: Memory, qs: np.ndarray, **kw) -> list[list[tuple[str, float, int]]]:
    return [[(h.id, h.score, h.access_count) for h in mem.retrieve_by_vector(user, q, k=8, now=NOW, **kw)]
            for user in ("ana", "ben") for q in qs]


def _same(a: list, b: list) -> bool:
    """The same hits with the same access counts, in the same order up to near-ties: scores equal
    rank by rank to float32 rounding (a product over a memory map, or over candidate rows, may sum in
    another order than over an array, and so swap two hits whose scores differ by less)."""
    return [sorted((i, c) for i, _, c in hits) for hits in a] == [sorted((i, c) for i, _, c in hits) for hits in b] and \
        [s for hits in a for _, s, _ in hits] == pytest.approx([s for hits in b for _, s, _ in hits], abs=1e-6)


def _files(home: Path) -> list[str]:
    d = home / "memory-snapshots"
    return sorted(p.name.split(".", 1)[1] for p in d.iterdir() if p.suffix != ".purged") if d.exists() else []


def _state(mem: Memory) -> list[tuple]:
    f = mem.frame()
    return sorted(zip(f["id"], f["content"], f["user_id"], f["access_count"], f["metadata"].map(json.dumps)))


AFTER = """
import json, sys
import numpy as np
from cognitionos_kit.memory import Memory
home, qs = sys.argv[1], np.array(json.loads(sys.argv[2]), dtype=np.float32)
mem = Memory(home)
n = len(mem)
vec = mem.replica.table.vec
exact = [[(h.id, h.score, h.access_count) for h in mem.retrieve_by_vector(u, q, k=8, now=2_000_000_000.0)]
         for u in ("ana", "ben") for q in qs]
mem.use_index("approximate")
approx = [[h.id for h in mem.retrieve_by_vector(u, q, k=8, now=2_000_000_000.0)] for u in ("ana", "ben") for q in qs]
print(json.dumps({"n": n, "mapped": type(vec).__name__, "exact": exact, "approx": approx,
                  "index_loaded": mem.searcher.approximate.loaded}))
"""


def test_a_new_process_loads_a_large_collection_from_its_snapshot_and_its_saved_index(tmp_path):
    """At ``SNAPSHOT_MIN`` memories, the first full load saves a snapshot and the first approximate
    search saves its index; a new process maps both and answers exactly as the first one did."""
    home = tmp_path / "home"
    ids, x = _fill(home, snapshot.SNAPSHOT_MIN)
    first = Memory(home)
    assert len(first) == snapshot.SNAPSHOT_MIN and "arrow" in _files(home)  # saved by the full load
    assert isinstance(first.replica.table.vec, np.memmap)  # and searched from the mapped file since
    qs = x[np.random.default_rng(1).integers(0, len(x), QUERIES)]
    exact = _answers(first, qs)
    first.use_index("approximate")
    approx = [[h.id for h in first.retrieve_by_vector(u, q, k=8, now=NOW)] for u in ("ana", "ben") for q in qs]
    assert any(name.endswith(".faiss") for name in _files(home))
    first.close()
    out = subprocess.run([sys.executable, "-c", AFTER, str(home), json.dumps(qs.tolist())], capture_output=True,
                         text=True, check=True, timeout=300)
    got = json.loads(out.stdout)
    assert got["n"] == snapshot.SNAPSHOT_MIN and got["mapped"] == "memmap" and got["index_loaded"] is True
    assert _same(got["exact"], exact)
    assert got["approx"] == approx
    assert all(hits[0][0] in ids for hits in exact)


@pytest.fixture
def small_snapshots(monkeypatch):
    """Snapshots from 100 memories: the same code paths as at 50k, in a fraction of the time."""
    monkeypatch.setattr(snapshot, "SNAPSHOT_MIN", 100)


def _fresh_from_db(home: Path) -> Memory:
    """A Memory that must load from DuckDB alone (its snapshot files moved away, then put back)."""
    d = home / "memory-snapshots"
    aside = home / "snapshots-aside"
    d.rename(aside)
    mem = Memory(home)
    len(mem)
    import shutil

    shutil.rmtree(d, ignore_errors=True)  # the full load wrote a new one: keep the original
    aside.rename(d)
    return mem


def test_changes_after_the_snapshot_are_applied_on_load(tmp_path, small_snapshots):
    home = tmp_path / "home"
    ids, x = _fill(home, 300)
    base = Memory(home)
    assert len(base) == 300 and _files(home)
    writer = Memory(home)
    new = writer.store("ana", "a memory stored after the snapshot")
    writer.update(ids[3], user_id="ana", content="note three, rewritten", metadata={"half": 9})
    writer.delete(ids[4], user_id="ana")
    writer.delete(ids[200], user_id="ben")
    writer.mark_used([ids[5], ids[6]], user_id="ana")
    writer.mark_used([ids[5]], user_id="ana")
    loaded = Memory(home)
    assert len(loaded) == 300 - 2 + 1 and loaded.replica.table.origin is not None  # from the snapshot
    reference = _fresh_from_db(home)
    assert _state(loaded) == _state(reference)
    assert loaded.get(ids[3], user_id="ana")["content"] == "note three, rewritten"
    assert loaded.get(new, user_id="ana")["access_count"] == 0 and loaded.get(ids[5], user_id="ana")["access_count"] == 2
    qs = np.vstack([x[[3, 5, 150, 200]], loaded.embedder.embed(["a memory stored after the snapshot"])])
    assert _same(_answers(loaded, qs), _answers(reference, qs))
    assert loaded.store("ana", "note 7") == ids[7]  # the dedupe map, built from the mapped columns
    assert loaded.store("ana", "note three, rewritten") == ids[3]
    # the approximate index saved by one process, caught up by another with other changes since
    base.use_index("approximate")
    base.retrieve_by_vector("ana", x[0], k=3)
    writer.update(ids[8], user_id="ana", content="note eight, rewritten")
    later = Memory(home)
    later.use_index("approximate", candidates=10_000)  # every row re-scored: the same hits as exact search
    reference.use_index("exact")
    assert _same(_answers(later, qs), _answers(reference, qs))
    assert later.searcher.approximate is not None and later.searcher.approximate.loaded  # read, not built
    assert len(later.searcher.approximate) == len(later)
    # the same with the IVF index: built by one process, read by the next
    base.use_index("approximate", method="ivf")
    base.retrieve_by_vector("ana", x[0], k=3)
    ivf = Memory(home)
    ivf.use_index("approximate", nprobe=10_000)  # every list
    assert _same(_answers(ivf, qs), _answers(reference, qs))
    assert ivf.searcher.approximate is not None and ivf.searcher.approximate.loaded
    assert len(ivf.searcher.approximate) == len(ivf)
    ivf.close()
    for m in (base, writer, loaded, reference, later):
        m.close()


def test_purge_deletes_the_snapshot_that_holds_the_text(tmp_path, small_snapshots):
    home = tmp_path / "home"
    ids, _ = _fill(home, 200)
    mem = Memory(home)
    len(mem)
    secret = mem.get(ids[0], user_id="ana")["content"]
    mem.update(ids[0], user_id="ana", content="ana's bank PIN is 4321")
    mem.use_index("approximate")
    mem.retrieve_by_vector("ana", _vectors(1, seed=5)[0], k=2)
    Memory(home).retrieve_by_vector("ana", _vectors(1, seed=5)[0], k=2)  # a load from the snapshot
    assert _files(home)
    mem.delete(ids[0], user_id="ana", purge=True)
    assert _files(home) == [], _files(home)
    again = Memory(home)
    assert len(again) == 199
    snap = snapshot.read(home, "default")  # the new snapshot: its text columns hold neither version
    assert snap is not None and snap.rows.num_rows == 199
    texts = snap.rows.column("content").to_pylist()
    assert secret not in texts and not any("bank PIN" in t for t in texts)
    assert ids[0] not in snap.rows.column("memory_id").to_pylist()
    arrow = [p for p in (home / "memory-snapshots").iterdir() if p.suffix == ".arrow"]
    assert len(arrow) == 1 and b"bank PIN" not in arrow[0].read_bytes()  # (digits alone turn up in hex ids)
    mem.close()
    again.close()


def test_a_snapshot_of_rows_read_before_a_purge_is_not_kept(tmp_path):
    """A process that read the rows before another one purged a memory must not leave a snapshot
    holding the purged text: ``write`` checks the purge stamp read before the rows."""
    import pyarrow as pa

    home = tmp_path / "home"
    rows = pa.table({c: [None] for c in snapshot.ROW_COLUMNS}).cast(pa.schema(
        [(c, pa.float64() if c in ("ts", "created_at", "updated_at", "access_last") else
          pa.int64() if c == "access_n" else pa.string()) for c in snapshot.ROW_COLUMNS]))
    vectors = np.ones((1, 4), dtype=np.float32)
    kw = dict(model="m", seq=1, access_seq=0, mark="r1")
    before = snapshot.purge_stamp(home, "default")
    snapshot.remove(home, "default")  # a purge, between the read and the write
    assert snapshot.write(home, "default", rows, vectors, **kw, purged=before) is False
    assert snapshot.read(home, "default") is None and _files(home) == []
    now = snapshot.purge_stamp(home, "default")
    assert now != before and snapshot.write(home, "default", rows, vectors, **kw, purged=now) is True
    assert snapshot.read(home, "default") is not None


def test_a_rebuilt_or_damaged_database_or_snapshot_is_never_trusted(tmp_path, small_snapshots):
    home = tmp_path / "home"
    ids, x = _fill(home, 200)
    first = Memory(home)
    expected = _state(first)
    first.store("ben", "written after the snapshot")
    expected_after = _state(first)
    first.close()
    # a rebuilt database numbers its events anew: the snapshot's mark no longer matches
    Memory(home).log.store.rebuild()
    rebuilt = Memory(home)
    assert _state(rebuilt) == expected_after
    rebuilt.close()
    # a truncated vector file, then an unreadable Arrow file: loaded from DuckDB, and saved anew
    d = home / "memory-snapshots"
    (vec,) = [p for p in d.iterdir() if p.suffix == ".f32"]
    vec.write_bytes(vec.read_bytes()[:1000])
    assert _state(Memory(home)) == expected_after
    (arrow,) = [p for p in d.iterdir() if p.suffix == ".arrow"]
    arrow.write_bytes(b"not arrow")
    damaged = Memory(home)
    assert _state(damaged) == expected_after and expected != expected_after
    assert snapshot.read(home, "default") is not None  # rewritten by that load
    damaged.close()


def test_another_embedding_model_or_collection_does_not_use_the_snapshot(tmp_path, small_snapshots):
    home = tmp_path / "home"
    _fill(home, 200)
    assert len(Memory(home)) == 200
    other = Memory(home, collection="other")
    assert len(other) == 0
    other.store("ana", "only in the other collection")
    assert len(Memory(home, collection="other")) == 1 and len(Memory(home)) == 200
    from cognitionos_kit.core.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="holds .* vectors"):
        len(Memory(home, embedding_model="text-embedding-3-small"))  # the snapshot's model is checked too


def _mapped_kib(suffix: str) -> int:
    """Resident KiB of this process's mappings of files ending in ``suffix`` (Linux smaps)."""
    total, mine = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and not head[0].endswith(":"):  # a mapping's first line
            mine = line.rstrip().endswith(suffix)
        elif mine and line.startswith("Rss:"):
            total += int(head[1])
    return total


def _changed_and_indexed(home: Path, **index: object) -> tuple[Memory, list[str], np.ndarray, np.ndarray]:
    """20,000 memories loaded from their snapshot, one rewritten and one deleted in this process,
    then the approximate index (``index``: its settings) built over them by a search for the
    rewritten one; returns the memory, the ids, the stored vectors and that search's query."""
    ids, x = _fill(home, 20_000)
    Memory(home).close()  # the full load: saves the snapshot
    loaded = Memory(home)
    assert len(loaded) == 20_000 and loaded.replica.table.origin is not None
    loaded.update(ids[3], user_id="ana", content="note three, rewritten")  # a new vector, in the copy-on-write map
    loaded.delete(ids[4], user_id="ana")
    loaded.use_index("approximate", **index)
    q = loaded.embedder.embed(["note three, rewritten"])[0]
    assert loaded.retrieve_by_vector("ana", q, k=1, now=NOW)[0].id == ids[3]  # indexed with its new vector
    return loaded, ids, x, q


def test_building_the_index_over_a_snapshot_takes_changed_rows_from_the_table(tmp_path, small_snapshots):
    """The IVF index is filled from the snapshot's vector file slice by slice, except rows changed
    since loading: their new vectors."""
    loaded, ids, x, _ = _changed_and_indexed(tmp_path / "home", nprobe=10_000)
    ann, table = loaded.searcher.approximate, loaded.replica.table
    assert ann is not None and len(ann) == len(loaded) == 19_999
    rows = np.append(np.random.default_rng(2).choice(20_000, 2000, replace=False), table.pos[ids[3]])
    rows = rows[table.alive[rows]]
    codes = ann.index.reconstruct_batch(rows.astype(np.int64))  # what the index holds (8-bit codes, decoded)
    assert np.abs(codes - np.asarray(table.vec[rows])).max() < 0.02  # each row's current vector
    assert np.abs(codes[-1] - x[3]).max() > 0.05  # the rewritten row: its new vector, not the file's
    loaded.close()


def test_the_scan_over_a_snapshot_codes_each_row_from_its_current_vector(tmp_path, small_snapshots, monkeypatch):
    """The scan's parts (two here) hold one code per live row, filled from the file, the rewritten
    row's from the table; the deleted row has none."""
    import faiss

    from cognitionos_kit.memory import scan

    monkeypatch.setattr(scan, "PART_MIN", 5_000)
    monkeypatch.setattr(scan.os, "cpu_count", lambda: 2)
    loaded, ids, x, q = _changed_and_indexed(tmp_path / "home")
    ann, table = loaded.searcher.approximate, loaded.replica.table
    assert isinstance(ann, scan.ScanIndex) and len(ann.parts) == 2 and min(p.ntotal for p in ann.parts) > 9_000
    assert len(ann) == len(loaded) == 19_999
    rows = np.concatenate([faiss.vector_to_array(p.id_map) for p in ann.parts])
    decoded = np.vstack([p.index.reconstruct_n(0, p.ntotal) for p in ann.parts])  # 4-bit codes, decoded
    assert sorted(rows) == sorted(np.flatnonzero(table.alive[: table.n]))  # every live row once
    own = np.einsum("ij,ij->i", decoded, np.asarray(table.vec[rows]))
    assert own.min() > 0.6, own.min()  # each code is of its row's current vector (others: ~0.1-0.3)
    three = int(np.flatnonzero(rows == table.pos[ids[3]])[0])
    assert own[three] > 0.6 and decoded[three] @ x[3] < 0.3  # the rewritten row: its new vector, not the file's
    loaded.close()


# Only Linux says which pages of a file mapping are resident (/proc/self/smaps); CI runs on Linux.
@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads Linux's /proc/self/smaps")
@pytest.mark.parametrize("index", [{"candidates": 50}, {"nprobe": 10_000}], ids=["scan", "ivf"])
def test_building_the_index_over_a_snapshot_leaves_the_file_unmapped(tmp_path, small_snapshots, index):
    """The process keeps none of the vector file's pages it read to build the index."""
    loaded, *_ = _changed_and_indexed(tmp_path / "home", **index)
    file_kib = 20_000 * 384 * 4 // 1024
    # read, not kept resident (the search's 50 re-scored rows map some pages: the kernel maps up to 16 around each)
    assert _mapped_kib(".f32") < file_kib // 4, (_mapped_kib(".f32"), file_kib)
    loaded.close()


def test_snapshot_files_are_private_as_the_rest_of_the_home(tmp_path, small_snapshots):
    """The snapshot holds every memory's text and vector: 0700 folder, 0600 files, as the database."""
    import stat

    home = tmp_path / "home"
    _fill(home, 200)
    mem = Memory(home)
    mem.use_index("approximate")
    mem.retrieve_by_vector("ana", _vectors(1, seed=5)[0], k=2)  # builds and saves the index
    mem.close()
    d = home / "memory-snapshots"
    names = sorted(p.name.rsplit(".", 1)[-1] for p in d.iterdir())
    assert names == ["arrow", "f32", "faiss"], names
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in d.iterdir()} == {p.name: 0o600 for p in d.iterdir()}


def test_rows_added_after_loading_leave_the_snapshot_mapped(tmp_path, small_snapshots):
    """Storing into a collection loaded from its snapshot keeps the snapshot's vectors mapped (they
    used to be copied into a new array twice their size by the first store) and searches, exact
    and approximate, answer as a load from DuckDB does."""
    from cognitionos_kit.memory.vectors import Vectors

    home = tmp_path / "home"
    ids, x = _fill(home, 2000)
    Memory(home).close()  # the full load: saves the snapshot
    mem = Memory(home)
    assert len(mem) == 2000
    mapped = mem.replica.table.vec
    assert isinstance(mapped, np.memmap)
    new = [mem.store("ana", f"a note stored after loading, number {i}") for i in range(3)]
    new += mem.store_many("ben", [f"bulk note {i}" for i in range(3000)], embeddings=_vectors(3000, seed=4))
    mem.update(ids[5], user_id="ana", content="note five, rewritten")  # a mapped row
    mem.update(new[1], user_id="ana", content="an added note, rewritten")  # an added row
    mem.delete(ids[6], user_id="ana")
    vec = mem.replica.table.vec
    assert isinstance(vec, Vectors) and vec.mapped is mapped  # the map itself, not a copy
    reference = _fresh_from_db(home)
    assert _state(mem) == _state(reference)
    qs = np.vstack([x[[3, 5, 1500]], _vectors(3000, seed=4)[[0, 2999]],
                    mem.embedder.embed(["note five, rewritten", "an added note, rewritten"])])
    assert _same(_answers(mem, qs), _answers(reference, qs))
    mem.use_index("approximate", candidates=10_000)  # every row re-scored: exact answers
    assert _same(_answers(mem, qs), _answers(reference, qs))
    mem.close()
    reference.close()


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads Linux's /proc/self/smaps")
@pytest.mark.parametrize("index", [{"candidates": 50}, {"nprobe": 10_000}], ids=["scan", "ivf"])
def test_searching_does_not_keep_the_vector_file_resident(tmp_path, small_snapshots, monkeypatch, index):
    """Re-scoring reads the rows of a snapshot's file larger than MAPPED_MAX (here: any) one by one:
    after many searches the process maps none of the file, and the similarities are those of the
    rows' current vectors (a rewritten row's too)."""
    from cognitionos_kit.memory import approximate

    monkeypatch.setattr(approximate, "MAPPED_MAX", 0)
    loaded, ids, x, q = _changed_and_indexed(tmp_path / "home", **index)
    ann, table = loaded.searcher.approximate, loaded.replica.table
    three = table.pos[ids[3]]
    current = np.fromfile(table.vec.filename, dtype="<f4").reshape(-1, 384)  # read, not mapped
    current[three] = table.vec[three]  # the rewritten row
    for v in _vectors(200, seed=8):
        rows, sims = ann.search(v, 50)
        assert np.allclose(sims, current[rows] @ v, atol=1e-5)
    file_kib = 20_000 * 384 * 4 // 1024
    assert _mapped_kib(".f32") < file_kib // 4, (_mapped_kib(".f32"), file_kib)
    rows, sims = ann.search(q, 50)  # the rewritten row: its new vector, from the table
    assert three in rows and sims[list(rows).index(three)] == pytest.approx(float(table.vec[three] @ q), abs=1e-5)
    loaded.close()
