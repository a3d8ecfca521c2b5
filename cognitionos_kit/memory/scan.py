"""The default approximate index: every vector as 4-bit product-quantized codes (faiss
``IndexPQFastScan``, one byte per 8 dimensions: 48 bytes for 384), all of them scanned for each
query, split over the cores, and the best few hundred re-scored exactly from the table.

Why a full scan of small codes rather than inverted lists (``approximate.ApproximateIndex``): a
scan does not depend on the data falling into lists. On the synthetic clustered vectors of
``benchmarks/bench_memory_10m.py`` (10M x 384) IVF with 8-bit codes reached recall@10 0.81 at
45 ms; this scan 0.98 at 15.5-16.5 ms on 2 cores, built in 35 s instead of 19 minutes and holding
0.45 GB of codes instead of 3.8 GB (figures in the README). Its cost grows with the collection
(~2 ms per million vectors and core at 384 dims), affordable up to the 10M the kit is sized for;
IVF stays available (``use_index("approximate", method="ivf")``) for collections whose
embeddings fall into lists well.

Codes are labelled with their table row. A changed row gets a new code and keeps its old one until
the index is rebuilt: a candidate is always re-scored with the row's current vector, so an old code
only costs a candidate slot; rows removed from the table are dropped from the candidates. The index
asks to be rebuilt (``stale``) when such codes exceed a quarter of the live ones, or the collection
has grown ``retrain_growth`` times since the codes were trained.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .approximate import SLICE, Following, load_faiss
from .index import Table

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ScanIndex"]

PART_MIN = 100_000  # rows per part (and thread) below which one thread scans all: starting one costs more
TRAIN = 65_536  # rows the codebooks are trained on
TRAIN_MIN = 1_024  # faiss wants >= 39 points per codeword (16 per sub-vector): a small table is padded
DEAD_SHARE = 0.25  # superseded codes (of changed or removed rows) per live one that make the index stale
_ORPHANED: list[Any] = []  # shards inherited through a fork, kept from being deleted (see _sharded)


def subvectors(dim: int) -> int:
    """Sub-vectors per code: ``dim / 4`` (4 dimensions per 4-bit codeword: at 384 dims 96, whose
    codes kept recall@10 >= 0.95 at 10M; 48 did not reach 0.85 at 1M) or the largest divisor below."""
    return max(m for m in range(1, max(1, dim // 4) + 1) if dim % m == 0)


class ScanIndex(Following):
    """4-bit product-quantized codes of every row, scanned in full per query in ``parts`` (one
    thread each), the best ``candidates`` by their codes re-scored exactly; ids are table rows."""

    def __init__(self, table: Table, *, candidates: int = 400, retrain_growth: float = 4.0) -> None:
        import numpy as np

        faiss = load_faiss()
        self.table = table
        self.candidates = candidates
        self.retrain_growth = retrain_growth
        self.m = subvectors(table.dim)
        rows = np.flatnonzero(table.alive[: table.n])
        n = len(rows)
        sized = table.base_n if table.origin is not None else n
        self.parts_n = max(1, min(os.cpu_count() or 1, 8, sized // PART_MIN))
        self.dead = 0  # codes of rows changed or removed since they were coded
        self.parts: list[Any] = []  # faiss IndexIDMap over IndexPQFastScan, ids = table rows
        self._shards: tuple[int, Any] | None = None  # (pid, the parts as one IndexShards)
        self.loaded = False
        if table.origin is not None:
            self.loaded = self._read_saved(rows)
        if not self.loaded:
            trained = self._trained(rows)  # one set of codebooks: the parts' scores are merged
            self.parts = [faiss.IndexIDMap(faiss.clone_index(trained)) for _ in range(self.parts_n)]
            self._fill(rows)
        self.trained_on = max(n, 1)
        table.listeners.append(self)

    def _trained(self, rows: np.ndarray) -> Any:
        """An empty IndexPQFastScan trained on (a sample of) ``rows``' vectors."""
        import numpy as np

        faiss = load_faiss()
        rng = np.random.default_rng(0)
        sample = rows if len(rows) <= TRAIN else np.sort(rng.choice(rows, TRAIN, replace=False))
        x = self._gather(sample) if len(sample) else np.zeros((0, self.table.dim), dtype=np.float32)
        if len(x) < TRAIN_MIN:  # a small table: every row is re-scored anyway (candidates >= rows)
            pad = rng.standard_normal((TRAIN_MIN - len(x), self.table.dim)).astype(np.float32)
            pad /= np.linalg.norm(pad, axis=1, keepdims=True)
            x = np.concatenate([x, pad])
        pq = faiss.IndexPQFastScan(self.table.dim, self.m, 4, faiss.METRIC_INNER_PRODUCT)
        pq.train(np.ascontiguousarray(x))
        return pq

    def _tags(self) -> list[str]:
        return [f"scan{self.m}.{i}of{self.parts_n}" for i in range(self.parts_n)]

    def _read_saved(self, rows: np.ndarray) -> bool:
        """Use the parts saved beside the snapshot, catching up with the rows changed since it was
        written; False (build anew) when they are missing or too much has changed."""
        import numpy as np

        from . import snapshot

        t = self.table
        assert t.origin is not None
        if len(t.dirty) > DEAD_SHARE * max(len(rows), 1):
            return False
        parts = [snapshot.read_index(*t.origin, tag) for tag in self._tags()]
        if any(p is None or p.d != t.dim for p in parts):
            return False
        self.parts = parts
        dirty = np.fromiter(sorted(t.dirty), dtype=np.int64, count=len(t.dirty))
        if len(dirty):  # their saved codes stay (superseded); the live ones get new codes below
            faiss = load_faiss()
            self.dead = int(sum(np.isin(faiss.vector_to_array(p.id_map), dirty).sum() for p in parts))
        self._add(np.concatenate([dirty[t.alive[dirty]], rows[rows >= t.base_n]]).astype(np.int64))
        return True

    def _fill(self, rows: np.ndarray) -> None:
        """Fill new parts with ``rows`` in slices. Over a snapshot: its rows unchanged since loading,
        read from the file and saved for the next process, then the changed and new ones."""
        import numpy as np

        from . import snapshot

        t = self.table
        clean = self._clean(rows) if t.origin is not None else np.ones(len(rows), dtype=np.bool_)
        for part, chunk in zip(self.parts, np.array_split(rows[clean], self.parts_n)):
            for start in range(0, len(chunk), SLICE):
                keys = chunk[start : start + SLICE]
                part.add_with_ids(self._from_file(keys) if t.origin is not None else t.vec[keys], keys.astype(np.int64))
        if t.origin is not None:
            for part, tag in zip(self.parts, self._tags()):
                snapshot.write_index(*t.origin, tag, part)
            self._add(rows[~clean].astype(np.int64))

    def _add(self, keys: np.ndarray) -> None:
        """Code the current vectors of table rows ``keys`` into the smallest part."""
        if len(keys):
            min(self.parts, key=lambda p: p.ntotal).add_with_ids(self.table.vec[keys], keys)

    def __len__(self) -> int:
        """Rows with a current code (every live row of the table)."""
        return self.codes - self.dead

    @property
    def codes(self) -> int:
        """Codes held, superseded ones included."""
        return int(sum(p.ntotal for p in self.parts))

    @property
    def stale(self) -> bool:
        """True when superseded codes exceed a quarter of the live ones, or the collection has
        grown ``retrain_growth`` times since the codes were trained."""
        live = len(self)
        return self.dead > DEAD_SHARE * max(live, 1) or live > self.retrain_growth * self.trained_on

    def added(self, rows: range) -> None:
        """Code the vectors of new table rows."""
        import numpy as np

        self._add(np.arange(rows.start, rows.stop, dtype=np.int64))

    def changed(self, row: int) -> None:
        """Code the new vector of a table row (its old code stays until the rebuild)."""
        import numpy as np

        self.dead += 1
        self._add(np.array([row], dtype=np.int64))

    def removed(self, row: int) -> None:
        """A row left the table: its code is dropped from candidates from now on."""
        self.dead += 1

    def search(self, query: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, exact cosine similarities) of up to ``count`` approximate nearest neighbours: the
        best ``max(count, candidates)`` rows by their codes, re-scored exactly, the best ``count`` kept."""
        import numpy as np

        t = self.table
        q = np.ascontiguousarray(np.asarray(query, dtype=np.float32)[None])
        k = int(min(max(count, self.candidates), self.codes))
        if k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        _, labels = self.scan(q, k)
        rows = np.unique(labels[labels >= 0])  # sorted (reads the table in order); a changed row's two codes once
        rows = rows[t.alive[rows]]
        sims = (self._current(rows) @ q[0]).astype(np.float64)
        if len(rows) > count:
            top = np.argpartition(-sims, count - 1)[:count]
            rows, sims = rows[top], sims[top]
        return rows, sims

    def scan(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` codes' (scores, rows) for the query rows ``q``, best first, over every part."""
        if len(self.parts) == 1:
            d, labels = self.parts[0].search(q, k)
        else:
            d, labels = self._sharded().search(q, k)
        return d[0], labels[0]

    def _sharded(self) -> Any:
        """The parts as one faiss IndexShards: each part scanned on its own thread, the results
        merged. Those threads are faiss's (std::thread, started with the shards and kept): Python
        threads were slower (16 vs 11 ms at 10M: faiss's OpenMP team per search oversubscribed the
        cores). A forked child has none of its parent's threads, so it gets new shards."""
        pid = os.getpid()
        if self._shards is None or self._shards[0] != pid:
            if self._shards is not None:
                _ORPHANED.append(self._shards[1])  # the parent's: deleting it would join threads that are not here
            shards = load_faiss().IndexShards(self.table.dim, True, False)  # threaded; ids are the parts' (table rows)
            for part in self.parts:
                shards.add_shard(part)
            self._shards = (pid, shards)
        return self._shards[1]
