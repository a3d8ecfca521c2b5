"""The approximate indexes of a collection, kept in step with the table: what they share
(:class:`Following`: the table's rows, read from a snapshot's file without keeping its pages) and
the inverted-file one (faiss IVF lists with 8-bit codes). The default, a full scan of 4-bit codes,
is in ``scan.py``; :func:`build` picks one from the caller's settings."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, TypedDict

from ..core.errors import ConfigurationError
from .index import Table

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ApproximateIndex", "ApproximateParams", "Following", "SLICE", "METHODS", "MAPPED_MAX", "build", "load_faiss",
           "method_of", "read_rows"]

SLICE = 200_000  # rows read and indexed at a time when building over a snapshot
MAPPED_MAX = 2 << 30  # a snapshot's vector file re-scoring may keep mapped (see Following._current)
METHODS = ("scan", "ivf")


class ApproximateParams(TypedDict, total=False):
    """The settings of an approximate index a caller may choose (``Memory.use_index``)."""

    method: str  # "scan" (default) or "ivf"
    candidates: int  # scan: codes' best rows re-scored exactly per query
    nlist: int  # ivf
    nprobe: int  # ivf
    retrain_growth: float


def method_of(params: ApproximateParams) -> str:
    """The index ``params`` ask for: their ``method``, else IVF when they name ``nlist`` or ``nprobe``, else the scan."""
    return params.get("method") or ("ivf" if "nlist" in params or "nprobe" in params else "scan")


def build(table: Table, params: ApproximateParams) -> Following:
    """The approximate index ``params`` ask for over ``table`` (see :func:`method_of`)."""
    method = method_of(params)
    p = {k: v for k, v in params.items() if k != "method"}
    if method == "ivf":
        return ApproximateIndex(table, **p)  # type: ignore[arg-type]
    from .scan import ScanIndex

    return ScanIndex(table, **p)  # type: ignore[arg-type]


def load_faiss() -> Any:
    """The faiss module, or a ConfigurationError saying how to install it."""
    try:
        import faiss
    except ImportError as e:
        raise ConfigurationError("index='approximate' needs faiss: pip install faiss-cpu") from e
    return faiss


def read_rows(path: str, offset: int, rows: np.ndarray, dim: int) -> np.ndarray:
    """Rows of a float32 (n, dim) file at ``offset``, read one by one into one array (no mapping)."""
    import numpy as np

    size = dim * 4
    out = np.empty((len(rows), dim), dtype=np.float32)
    if not len(rows):
        return out
    view = out.data.cast("B")
    preadv = getattr(os, "preadv", None)  # absent on Windows: seek and read instead
    fd = os.open(path, os.O_RDONLY)
    try:
        for j, r in enumerate(rows.tolist()):
            if preadv is not None:
                preadv(fd, [view[j * size : (j + 1) * size]], offset + r * size)
            else:
                os.lseek(fd, offset + r * size, os.SEEK_SET)
                view[j * size : (j + 1) * size] = os.read(fd, size)
    finally:
        os.close(fd)
    return out


class Following(ABC):
    """What an approximate index over a table shares: it follows the table's changes (as one of
    its listeners), reads the vectors of a snapshot's rows from the file in slices, and says when
    it should be rebuilt (``stale``)."""

    table: Table
    loaded: bool  # read from the file saved beside the snapshot, not built here
    _view: Any = None  # the read-only map of the snapshot's file that re-scoring reads (see _current)

    @abstractmethod
    def __len__(self) -> int:
        """Rows the index answers for (every live row of the table)."""

    @property
    @abstractmethod
    def stale(self) -> bool:
        """True when the index should be rebuilt from the table."""

    @abstractmethod
    def search(self, query: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, exact cosine similarities) of up to ``count`` approximate nearest neighbours."""

    @abstractmethod
    def added(self, rows: range) -> None:
        """Index the vectors of new table rows."""

    @abstractmethod
    def changed(self, row: int) -> None:
        """Index the new vector of a table row."""

    @abstractmethod
    def removed(self, row: int) -> None:
        """Drop a row that left the table."""

    def detach(self) -> None:
        """Stop following the table (before the index is dropped)."""
        if self in self.table.listeners:
            self.table.listeners.remove(self)

    def _clean(self, rows: np.ndarray) -> np.ndarray:
        """Which of ``rows`` are the snapshot's, unchanged since loading: their vectors are the file's."""
        import numpy as np

        t = self.table
        clean = rows < (t.base_n if t.origin is not None else 0)
        if not t.dirty:
            return clean
        if len(rows) < len(t.dirty):  # a search's few candidates: look each up
            return clean & np.fromiter((r not in t.dirty for r in rows.tolist()), dtype=np.bool_, count=len(rows))
        return clean & ~np.isin(rows, np.fromiter(t.dirty, dtype=np.int64, count=len(t.dirty)))

    def _snapshot_file(self) -> Any:
        """The memory map of the snapshot's vector file the table's rows start with (its ``filename``
        and ``offset`` say where they are), or None for a table in memory."""
        import numpy as np

        vec = getattr(self.table.vec, "mapped", self.table.vec)  # with rows added since (Vectors) or not
        return vec if isinstance(vec, np.memmap) and vec.filename else None

    def _from_file(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of sorted snapshot rows unchanged since loading, read through a mapping of
        their stretch of the snapshot's vector file that is dropped on return. Pages read through
        the table's own (copy-on-write) map stay in the process's resident set for good: building
        over 10M rows would have kept all 14 GiB of them."""
        import numpy as np

        vec = self._snapshot_file()
        if not len(rows) or vec is None:
            return np.asarray(self.table.vec[rows])
        path = vec.filename
        lo, hi, dim = int(rows[0]), int(rows[-1]) + 1, self.table.dim
        if len(rows) * 8 < hi - lo:
            # Scattered rows (a training sample): read each, mapping nothing. Through a mapping the
            # kernel maps the cached pages around every row read too: 65k rows of 10M, 8 GiB at once.
            return read_rows(path, vec.offset, rows, dim)
        view = np.memmap(path, dtype="<f4", mode="r", offset=vec.offset + lo * dim * 4, shape=(hi - lo, dim))
        try:
            return view[rows - lo]  # a copy (fancy indexing)
        finally:
            view._mmap.close()  # type: ignore[attr-defined]  # unmapped now, not when collected

    def _current(self, rows: np.ndarray) -> np.ndarray:
        """The current vectors of table ``rows``, to re-score candidates with. The snapshot's rows
        unchanged since loading are not read through the table's own map: the pages each search
        touches there (up to ~300 KB around each row, the kernel's fault-around) stay in the
        process's resident set, until at 10M it held most of the 15 GB file. A file of up to
        ``MAPPED_MAX`` gets a read-only map of its own (kept: at most the file); a larger one is
        read row by row (400 rows: ~1 ms, mapping nothing)."""
        import numpy as np

        t = self.table
        vec = self._snapshot_file()
        if t.origin is None or vec is None or not len(rows):
            return np.asarray(t.vec[rows])
        clean = self._clean(rows)
        out = np.empty((len(rows), t.dim), dtype=np.float32)
        if t.base_n * t.dim * 4 <= MAPPED_MAX:
            if self._view is None:
                self._view = np.memmap(vec.filename, dtype="<f4", mode="r", offset=vec.offset, shape=(t.base_n, t.dim))
            out[clean] = self._view[rows[clean]]
        else:
            out[clean] = read_rows(vec.filename, vec.offset, rows[clean], t.dim)
        out[~clean] = t.vec[rows[~clean]]
        return out

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of sorted table rows: the snapshot's unchanged ones from its file (in
        slices, see :meth:`_from_file`), the others from the table."""
        import numpy as np

        t = self.table
        clean = self._clean(rows)
        at = np.flatnonzero(clean)
        if not len(at):
            return np.asarray(t.vec[rows])
        out = np.empty((len(rows), t.dim), dtype=np.float32)
        for start in range(0, len(at), SLICE):
            part = at[start : start + SLICE]
            out[part] = self._from_file(rows[part])
        rest = np.flatnonzero(~clean)
        out[rest] = t.vec[rows[rest]]
        return out


class ApproximateIndex(Following):
    """An inverted-file index over the table's vectors (faiss ``IndexIVFScalarQuantizer``, 8-bit
    codes, inner product on unit vectors); ids are table rows. Its candidates are re-scored
    exactly from the table, so similarities are exact and the 8-bit codes only choose candidates.

    Chosen on measurements at 1M vectors (benchmarks/bench_memory.py; figures in the README): IVF
    builds far faster than an HNSW index built beside it and reaches a higher recall; 8-bit codes
    scan a quarter of the bytes of IVF-Flat for the same recall. Built from the table on first
    use, then updated as rows change; retrained when the collection has grown ``retrain_growth``
    times since. ``nprobe`` (lists searched per query) trades speed for recall; the default 320
    is the one that met recall@10 >= 0.95 within the 5 ms target at 1M.
    """

    def __init__(self, table: Table, *, nlist: int | None = None, nprobe: int = 320, retrain_growth: float = 4.0) -> None:
        import numpy as np

        faiss = load_faiss()

        self.table = table
        self.retrain_growth = retrain_growth
        rows = np.flatnonzero(table.alive[: table.n])
        n = len(rows)
        # ~4 sqrt(n) lists, with at least 39 training points per list (faiss's own minimum); over a
        # snapshot's rows, from their count, so every process loading it asks for the same index.
        sized = table.base_n if table.origin is not None else n
        self.nlist = nlist or int(max(1, min(4 * np.sqrt(max(sized, 1)), sized // 39)))
        saved = None
        self.index: Any  # a faiss IndexIVFScalarQuantizer (faiss's stubs want IDSelectors where ids work)
        if table.origin is not None:
            from . import snapshot

            saved = snapshot.read_index(*table.origin, f"nlist{self.nlist}")
        self.loaded = saved is not None and saved.d == table.dim and saved.nlist == self.nlist
        if self.loaded:
            self.index = saved
            self.quantizer = None
        else:
            saved = None
            quantizer = faiss.IndexFlatIP(table.dim)
            self.index = faiss.IndexIVFScalarQuantizer(quantizer, table.dim, self.nlist, faiss.ScalarQuantizer.QT_8bit,
                                                       faiss.METRIC_INNER_PRODUCT)
            self.index.set_direct_map_type(faiss.DirectMap.Hashtable)  # cheap removals
            self.quantizer = quantizer  # faiss does not own it from Python
            sample = rows if n <= 64 * self.nlist else np.random.default_rng(0).choice(rows, 64 * self.nlist, replace=False)
            self.index.train(self._gather(np.sort(sample)) if n else np.zeros((1, table.dim), np.float32))
        self.index.nprobe = min(nprobe, self.nlist)
        # One query at a time (as retrieve asks): faiss's default splits a batch of queries over its
        # threads and so runs one query on one core; split over the probed lists instead (200k
        # vectors, 2 cores: 1.74 -> 1.01 ms per top-10; bench_memory_10m.py prints both at 10M).
        self.index.parallel_mode = 1
        if table.origin is None:
            if n:
                self.index.add_with_ids(table.vec[rows], rows.astype(np.int64))
        else:
            self._from_snapshot(rows, self.loaded)
        self.trained_on = max(n, 1)
        table.listeners.append(self)

    def _from_snapshot(self, rows: np.ndarray, loaded: bool) -> None:
        """Fill (or, ``loaded``, catch up) an index over a snapshot-backed table: the snapshot's
        rows unchanged since it was loaded -- saved for the next process when built here -- then
        the changed and new ones."""
        import numpy as np

        t = self.table
        assert t.origin is not None
        dirty = np.fromiter(sorted(t.dirty), dtype=np.int64, count=len(t.dirty))
        if loaded:
            if len(dirty):
                self.index.remove_ids(dirty)
        else:
            base = rows[self._clean(rows)]
            for start in range(0, len(base), SLICE):  # in slices: a gather of 1M rows would copy 1.5 GB
                part = base[start : start + SLICE]
                self.index.add_with_ids(self._from_file(part), part.astype(np.int64))
            from . import snapshot

            snapshot.write_index(*t.origin, f"nlist{self.nlist}", self.index)
        rest = np.concatenate([dirty[t.alive[dirty]] if len(dirty) else dirty, rows[rows >= t.base_n]]).astype(np.int64)
        if len(rest):
            self.index.add_with_ids(t.vec[rest], rest)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def stale(self) -> bool:
        """True when the lists were trained on far fewer vectors than the index holds now."""
        return len(self) > self.retrain_growth * self.trained_on

    def added(self, rows: range) -> None:
        """Index the vectors of new table rows."""
        import numpy as np

        keys = np.arange(rows.start, rows.stop, dtype=np.int64)
        self.index.add_with_ids(self.table.vec[keys], keys)

    def changed(self, row: int) -> None:
        """Index the new vector of a table row."""
        import numpy as np

        key = np.array([row], dtype=np.int64)
        self.index.remove_ids(key)  # faiss's wrapper takes ids
        self.index.add_with_ids(self.table.vec[key], key)

    def removed(self, row: int) -> None:
        """Drop a dead table row."""
        import numpy as np

        self.index.remove_ids(np.array([row], dtype=np.int64))

    def search(self, query: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, exact cosine similarities) of up to ``count`` approximate nearest neighbours."""
        import numpy as np

        q = np.asarray(query, dtype=np.float32)
        _, keys = self.index.search(q[None], int(min(count, max(len(self), 1))))
        rows = keys[0][keys[0] >= 0]
        return rows, (self._current(rows) @ q).astype(np.float64)
