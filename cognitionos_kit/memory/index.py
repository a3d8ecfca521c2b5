"""The in-process table of one collection's memories, searched exactly with numpy (the optional
approximate index kept in step with it is in ``approximate.py``).

The table mirrors DuckDB (the source of truth): rows are appended, replaced in place or marked
dead; vectors are float32, L2-normalised, in one contiguous matrix, so an exact search is one
matrix-vector product plus masks -- the same work as a plain numpy brute force.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, SupportsIndex, TypeAlias

from .vectors import Vectors

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

__all__ = ["Table", "ArrowRows", "TableListener", "SCOPES", "MEMORY_TYPES", "utc"]

SCOPES = ("user", "agent", "global")
MEMORY_TYPES = ("working", "episodic", "semantic", "procedural")


_SCOPE = {s: i for i, s in enumerate(SCOPES)}
_MTYPE = {t: i for i, t in enumerate(MEMORY_TYPES)}


DedupeKey: TypeAlias = "tuple[str, str, str | None, str]"  # user_id, scope, agent_id, content hash


def utc(ts: float) -> datetime | None:
    """Epoch seconds as an aware UTC datetime; 0 (never) as None."""
    return datetime.fromtimestamp(ts, timezone.utc) if ts else None


class TableListener(Protocol):
    """An index told about every vector change of a table (rows are positions in it)."""

    def added(self, rows: range) -> None: ...

    def changed(self, row: int) -> None: ...

    def removed(self, row: int) -> None: ...


class _Codes:
    """Strings as small ints, so visibility masks are integer comparisons."""

    def __init__(self) -> None:
        self.code: dict[str | None, int] = {None: 0}

    def __call__(self, value: str | None) -> int:
        c = self.code.get(value)
        if c is None:
            c = self.code[value] = len(self.code)
        return c

    def get(self, value: str | None) -> int:
        return self.code.get(value, -1)


class Table:
    """The memories of one collection as parallel columns; ``pos`` maps memory id -> row."""

    NUMERIC = ("user", "agent", "scope", "mtype", "alive", "created", "updated", "accessed", "count", "version")

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        import numpy as np

        self.dim = dim
        self.n = 0
        # A snapshot's memory map (Table.from_arrow), or Vectors once rows are added to one
        self.vec: Any = np.zeros((capacity, dim), dtype=np.float32)
        self.user = np.zeros(capacity, dtype=np.int32)
        self.agent = np.zeros(capacity, dtype=np.int32)
        self.scope = np.zeros(capacity, dtype=np.int8)
        self.mtype = np.zeros(capacity, dtype=np.int8)
        self.alive = np.zeros(capacity, dtype=bool)
        self.created = np.zeros(capacity)
        self.updated = np.zeros(capacity)
        self.accessed = np.zeros(capacity)  # 0 = never
        self.count = np.zeros(capacity, dtype=np.int64)
        self.version = np.zeros(capacity)  # ts of the event that wrote the row (last writer wins)
        self.ids: list[str] = []
        # user_id, scope, agent_id, memory_type, content, content_hash, metadata, model
        self.rows: list[dict[str, Any]] | ArrowRows = []
        self.pos: dict[str, int] = {}
        self._dedupe: dict[DedupeKey, str] | None = {}  # None: not built yet (a table from a snapshot)
        self.users, self.agents = _Codes(), _Codes()
        self.listeners: list[TableListener] = []  # approximate indexes told about every vector change
        # A table loaded from a snapshot: (home, collection, the snapshot's mark), its first
        # ``base_n`` rows are the snapshot's, and ``dirty`` those of them changed or removed since.
        self.origin: tuple[Path, str, str] | None = None
        self.base_n = 0
        self.dirty: set[int] = set()

    @classmethod
    def from_arrow(cls, rows: pa.Table, vectors: np.ndarray, collection: str) -> Table:
        """A table of ``rows`` (``snapshot.ROW_COLUMNS``, e.g. a memory-mapped snapshot) and their
        ``vectors`` (used as they are: a memory map stays one). Contents and metadata stay in
        ``rows`` until a row is read; the dedupe map is built on first use."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        n = rows.num_rows
        t = cls(int(vectors.shape[1]), capacity=0)
        t.n, t.vec = n, vectors

        def floats(name: str) -> np.ndarray:
            return np.array(rows.column(name).to_numpy(), dtype=np.float64)

        def codes(name: str, into: _Codes) -> np.ndarray:
            col = rows.column(name)
            values = pc.unique(col).drop_null()
            at = np.array([into(v) for v in values.to_pylist()], dtype=np.int32)  # None is 0 already
            found = pc.index_in(col, value_set=values).to_numpy(zero_copy_only=False)  # NaN where null
            out = np.zeros(n, dtype=np.int32)
            hit = ~np.isnan(found)
            out[hit] = at[found[hit].astype(np.int64)]
            return out

        def fixed(name: str, names: tuple[str, ...]) -> np.ndarray:
            return pc.index_in(rows.column(name), value_set=pa.array(names)).to_numpy(zero_copy_only=False).astype(np.int8)

        t.user, t.agent = codes("user_id", t.users), codes("agent_id", t.agents)
        t.scope, t.mtype = fixed("scope", SCOPES), fixed("memory_type", MEMORY_TYPES)
        t.alive = np.ones(n, dtype=bool)
        t.created, t.updated, t.version = floats("created_at"), floats("updated_at"), floats("ts")
        t.accessed = floats("access_last")
        t.count = np.array(rows.column("access_n").to_numpy(), dtype=np.int64)
        t.ids = rows.column("memory_id").to_pylist()
        t.pos = dict(zip(t.ids, range(n)))
        t.rows = ArrowRows(rows, collection)
        t._dedupe = None
        t.base_n = n
        return t

    def similarities(self, q: np.ndarray) -> np.ndarray:
        """The cosine similarity of every row (dead ones too) to the unit vector ``q``."""
        if isinstance(self.vec, Vectors):
            return self.vec.product(q, self.n)
        return self.vec[: self.n] @ q

    def __len__(self) -> int:
        return len(self.pos)

    @property
    def dedupe(self) -> dict[DedupeKey, str]:
        """(owner, scope, agent, content hash) -> the live memory with that content."""
        if self._dedupe is None:
            keys = self.rows.keys() if isinstance(self.rows, ArrowRows) else [self.key(r) if r else None for r in self.rows]
            alive = self.alive
            self._dedupe = {k: self.ids[i] for i, k in enumerate(keys) if alive[i] and k is not None}
        return self._dedupe

    def _grow(self, need: int) -> None:
        import numpy as np

        cap = len(self.alive)
        if need <= cap:
            return
        new = max(need, cap * 2)
        if isinstance(self.vec, Vectors):
            self.vec.grow(new - cap)
        elif isinstance(self.vec, np.memmap):  # a snapshot's rows: they stay mapped, new rows go beside them
            self.vec = Vectors(self.vec, new - cap)
        else:
            self.vec = np.concatenate([self.vec, np.zeros((new - cap, self.dim), dtype=np.float32)])
        for name in self.NUMERIC:
            a = getattr(self, name)
            setattr(self, name, np.concatenate([a, np.zeros(new - cap, dtype=a.dtype)]))

    @staticmethod
    def key(row: dict[str, Any]) -> DedupeKey:
        """What makes two stores the same memory: owner, scope, agent and content."""
        return (row["user_id"], row["scope"], row.get("agent_id"), row["content_hash"])

    def _fill(self, i: int, row: dict[str, Any]) -> None:
        self.user[i] = self.users(row["user_id"])
        self.agent[i] = self.agents(row.get("agent_id"))
        self.scope[i] = SCOPES.index(row["scope"])
        self.mtype[i] = MEMORY_TYPES.index(row["memory_type"])
        self.created[i] = row["created_at"]
        self.updated[i] = row["updated_at"]
        self.version[i] = row["ts"]

    def add(self, rows: Sequence[dict[str, Any]], vectors: np.ndarray) -> None:
        """Append new memories (ids not in the table)."""
        start, end = self.n, self.n + len(rows)
        self._grow(end)
        self.vec[start:end] = vectors
        self.alive[start:end] = True
        # column by column: a first load of 100k memories is one pass per field, not 100k _fill calls
        self.user[start:end] = [self.users(r["user_id"]) for r in rows]
        self.agent[start:end] = [self.agents(r.get("agent_id")) for r in rows]
        self.scope[start:end] = [_SCOPE[r["scope"]] for r in rows]
        self.mtype[start:end] = [_MTYPE[r["memory_type"]] for r in rows]
        self.created[start:end] = [r["created_at"] for r in rows]
        self.updated[start:end] = [r["updated_at"] for r in rows]
        self.version[start:end] = [r["ts"] for r in rows]
        ids = [r["memory_id"] for r in rows]
        self.ids.extend(ids)
        self.rows.extend(rows)
        self.pos.update(zip(ids, range(start, end)))
        if self._dedupe is not None:
            self._dedupe.update(zip(map(self.key, rows), ids))
        self.n = end
        for ix in self.listeners:
            ix.added(range(start, self.n))

    def replace(self, i: int, row: dict[str, Any], vector: np.ndarray | None) -> None:
        """Overwrite row ``i`` (same memory id) with a newer version, and its vector if given."""
        d = self._dedupe
        if d is not None:
            old = self.rows[i]
            if d.get(self.key(old)) == old["memory_id"]:
                del d[self.key(old)]
            d[self.key(row)] = row["memory_id"]
        self._fill(i, row)
        self.rows[i] = row
        if vector is not None:
            self.vec[i] = vector
            if i < self.base_n:
                self.dirty.add(i)
            for ix in self.listeners:
                ix.changed(i)

    def remove(self, memory_id: str) -> None:
        """Mark a memory dead: no search, dedupe or listing sees it again."""
        i = self.pos.pop(memory_id)
        d = self._dedupe
        if d is not None:
            row = self.rows[i]
            if d.get(self.key(row)) == memory_id:
                del d[self.key(row)]
        self.alive[i] = False
        self.rows[i] = {}
        if i < self.base_n:
            self.dirty.add(i)
        for ix in self.listeners:
            ix.removed(i)

    def touch(self, positions: np.ndarray, ts: float) -> None:
        """Count one access of each row in ``positions`` at ``ts``."""
        self.count[positions] += 1
        self.accessed[positions] = max(ts, 0.0)

    def record(self, i: int) -> dict[str, Any]:
        """Row ``i`` as a dict: id, content, type, scope, owner, agent, metadata (a copy), times,
        access count and model."""
        r = self.rows[i]
        return {"id": self.ids[i], "content": r["content"], "memory_type": r["memory_type"], "scope": r["scope"],
                "user_id": r["user_id"], "agent_id": r.get("agent_id"), "metadata": dict(r["metadata"]),
                "created_at": utc(self.created[i]), "updated_at": utc(self.updated[i]),
                "last_accessed_at": utc(self.accessed[i]), "access_count": int(self.count[i]), "model": r["model"]}

    def visible(self, user_id: str, agent_id: str | None, rows: np.ndarray | None = None) -> np.ndarray:
        """Rows ``user_id`` may see: its own user-scoped ones, its own with this agent, global ones.
        Over every row, or only over ``rows`` (a candidate list: much cheaper at 1M rows)."""
        n = self.n
        pick = slice(0, n) if rows is None else rows
        alive, scope = self.alive[pick], self.scope[pick]
        u = self.users.get(user_id)
        mine = self.user[pick] == u
        ok = (scope == 2) | (mine & (scope == 0))
        if agent_id is not None:
            ok |= mine & (scope == 1) & (self.agent[pick] == self.agents.get(agent_id))
        return ok & alive


class ArrowRows:
    """A table's row dicts over Arrow columns (a memory-mapped snapshot): each is built when read;
    rows the table replaces or appends are kept as dicts over them."""

    FIELDS = ("memory_id", "user_id", "scope", "agent_id", "memory_type", "content", "content_hash", "model", "ts",
              "created_at", "updated_at")

    def __init__(self, base: pa.Table, collection: str) -> None:
        self.base, self.collection, self.n0 = base, collection, base.num_rows
        self.cols = {c: base.column(c) for c in (*self.FIELDS, "metadata")}
        self.changed: dict[int, dict[str, Any]] = {}
        self.tail: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return self.n0 + len(self.tail)

    def __getitem__(self, at: SupportsIndex) -> dict[str, Any]:
        i = at.__index__()
        if i >= self.n0:
            return self.tail[i - self.n0]
        row = self.changed.get(i)
        if row is None:
            import json

            row = {c: self.cols[c][i].as_py() for c in self.FIELDS}
            row["metadata"] = json.loads(self.cols["metadata"][i].as_py() or "{}")
            row["collection"] = self.collection
        return row

    def __setitem__(self, i: int, row: dict[str, Any]) -> None:
        if i >= self.n0:
            self.tail[i - self.n0] = row
        else:
            self.changed[i] = row

    def extend(self, rows: Sequence[dict[str, Any]]) -> None:
        self.tail.extend(rows)

    def keys(self) -> list[DedupeKey | None]:
        """Every row's dedupe key (``Table.key``), read column by column."""
        cols = [self.cols[c].to_pylist() for c in ("user_id", "scope", "agent_id", "content_hash")]
        keys: list[DedupeKey | None] = list(zip(*cols))
        for i, row in self.changed.items():
            keys[i] = Table.key(row) if row else None
        return keys + [Table.key(r) if r else None for r in self.tail]
