"""Persistence of the memory: an event log in ``<home>/memory.duckdb`` fed by per-process journals.

Every change is one journaled event (``store``, ``update``, ``reembed``, ``delete``, ``config``)
in ``memory_events``; each use of memories (``hit.used()``, ``mark_used``) appends one
``memory_access`` row. Appends are durable when they return (see
:class:`cognitionos_kit.storage.store.Store`); DuckDB, after ingest, is the source of truth.
Ingest stamps new rows with a global ``seq`` so every process can load just the events it has not
seen yet. The memory lives in its own database file and journal folder: its rows carry
embeddings (about 2 KB each), and the LLM ledger should not pay for ingesting them.
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import StorageError
from ..storage.journal import HOST, own_journal, parse_name
from ..storage.migrations import Migrations
from ..storage.store import Store
from . import snapshot

if TYPE_CHECKING:
    import duckdb
    import numpy as np
    import pandas as pd
    import pyarrow as pa

__all__ = ["EventLog", "MEMORY_MIGRATIONS", "VectorTarget", "encode_vectors", "decode_vectors"]

EVENTS, ACCESS = "memory_events", "memory_access"
EVENT_COLUMNS = (
    "row_id", "seq", "ts", "op", "collection", "memory_id", "user_id", "scope", "agent_id", "memory_type",
    "content", "content_hash", "metadata", "model", "dim", "embedding", "created_at", "updated_at",
)  # fmt: skip
MEMORY_MIGRATIONS = Migrations("memory")

# Event appends by every EventLog of this process, per journal folder. They share one journal
# file, so its size cannot tell one Memory object what the others wrote; these counts can.
_APPENDS: dict[str, int] = {}
_APPENDS_LOCK = threading.Lock()


@MEMORY_MIGRATIONS
def m001_events(con: duckdb.DuckDBPyConnection) -> None:
    # Times are epoch seconds (DOUBLE): exact ordering, and cheap to load into numpy.
    con.execute(
        """
        CREATE TABLE memory_events (
            row_id VARCHAR PRIMARY KEY, seq BIGINT, ts DOUBLE, op VARCHAR, collection VARCHAR,
            memory_id VARCHAR, user_id VARCHAR, scope VARCHAR, agent_id VARCHAR, memory_type VARCHAR,
            content VARCHAR, content_hash VARCHAR, metadata VARCHAR, model VARCHAR, dim INTEGER,
            embedding VARCHAR, created_at DOUBLE, updated_at DOUBLE
        )
        """
    )
    con.execute("CREATE TABLE memory_access (row_id VARCHAR PRIMARY KEY, seq BIGINT, ts DOUBLE, collection VARCHAR, "
                "ids VARCHAR[])")
    con.execute("CREATE SEQUENCE memory_seq")


def encode_vectors(vectors: np.ndarray) -> list[str]:
    """Each float32 row as base64 text: exact, smaller than JSON floats and much faster to write."""
    import numpy as np

    v = np.ascontiguousarray(vectors, dtype="<f4")
    return [base64.b64encode(row.tobytes()).decode("ascii") for row in v]


def decode_vectors(texts: Sequence[str], dim: int) -> np.ndarray:
    """The float32 rows (n, dim) of texts made by :func:`encode_vectors`."""
    import numpy as np

    # Rows of 3n bytes encode without padding, so their texts can be decoded in one call.
    raw = base64.b64decode("".join(texts)) if (4 * dim) % 3 == 0 else b"".join(map(base64.b64decode, texts))
    return np.frombuffer(raw, dtype="<f4").reshape(len(texts), dim).astype(np.float32, copy=True)


class EventLog:
    """The memory's tables in one data folder, shared by every process using it."""

    def __init__(self, home: str | Path, *, lock_timeout: float = 30.0, fsync: bool = False) -> None:
        self.home = Path(home).expanduser()
        self.db_path = self.home / "memory.duckdb"
        self.journal_dir = self.home / "memory-journal"
        self.store = Store(
            self.db_path, self.journal_dir, MEMORY_MIGRATIONS, lock_timeout=lock_timeout, fsync=fsync,
            label="memory database",
            rebuild_hint=f"`python -m cognitionos_kit rebuild --memory --home {str(self.db_path.parent)!r}` "
                         "(then restart the processes that use this memory)",
        )
        self._folder = self.store.journal_folder
        self._own = 0  # of _APPENDS[folder], the appends made through this EventLog

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        self.store.append(EVENTS, rows)
        with _APPENDS_LOCK:
            _APPENDS[self._folder] = _APPENDS.get(self._folder, 0) + 1
            self._own += 1

    def append_access(self, row: dict[str, Any]) -> None:
        self.store.append(ACCESS, [row])

    def signature(self) -> tuple:
        """What others have written: other processes' event journal sizes, and how many event
        appends other EventLogs of this process made. Unchanged means nothing new to load (our
        own events are applied as we write)."""
        with _APPENDS_LOCK:
            others_here = _APPENDS.get(self._folder, 0) - self._own
        me = f"-{os.getpid()}-"
        files = []
        try:
            with os.scandir(self.journal_dir) as it:
                for e in it:
                    parsed = parse_name(e.name)
                    if parsed and parsed[1] == EVENTS and not (parsed[0] == HOST and me in e.name[len(HOST):]):
                        try:
                            files.append((e.name, e.stat().st_size))
                        except FileNotFoundError:
                            pass
        except FileNotFoundError:
            pass
        return (others_here, tuple(sorted(files)))

    def db_state(self) -> tuple:
        """The database file's (and its WAL's) change stamps: unchanged means nobody ingested since."""
        try:
            st = os.stat(self.db_path)
            wal = os.stat(str(self.db_path) + ".wal").st_mtime_ns if os.path.exists(str(self.db_path) + ".wal") else 0
            return (st.st_mtime_ns, st.st_size, wal)
        except FileNotFoundError:
            return ()

    def pull(self, collection: str, after: int, after_access: int, full: bool, mark: str | None = None,
             target: VectorTarget | None = None) -> dict[str, Any]:
        """Ingest every journal, then read this collection's events with ``seq > after`` (or, with
        ``full``, its folded current state) and access rows with ``seq > after_access``.

        ``full`` reads in two passes so that no more than one copy of the vectors is ever held:
        first every column but the embedding (an Arrow table of ``snapshot.ROW_COLUMNS`` with the
        access counts, ``rid`` and ``dim``, in ``seq`` order: ``events["table"]``), which ``target``
        turns into the rows to fill and the array to fill them into (in memory, or a file to be
        mapped); then the embeddings, streamed in batches into that array (``events["vectors"]``).

        ``mark`` (a snapshot's row_id at ``after``): ``mark_ok`` says whether the event at that seq
        is still that one (not after a rebuild), and ``deleted`` lists the memories of the new
        events that were deleted at or before ``after`` (a late update must not revive them)."""
        with self.store.connect() as con:
            self.store.ingest(con)
            for table in (EVENTS, ACCESS):
                con.execute(f"UPDATE {table} SET seq = nextval('memory_seq') WHERE seq IS NULL").fetchall()
            # fetchall, not fetchone: DuckDB 2 refuses con.sql() while a result is half read
            top = con.execute("SELECT max(seq) FROM memory_events").fetchall()[0][0] or 0
            top_access = con.execute("SELECT max(seq) FROM memory_access").fetchall()[0][0] or 0
            configs = con.execute(
                "SELECT model, dim FROM memory_events WHERE collection = ? AND op = 'config' ORDER BY ts DESC, seq DESC LIMIT 1",
                [collection],
            ).fetchall()
            config = configs[0] if configs else None
            cols = ", ".join(f"e.{c}" for c in EVENT_COLUMNS)
            extra: dict[str, Any] = {}
            if full:
                assert target is not None
                events = _current_state(con, collection, config, target)
                access: dict[str, list[Any]] = {}
                extra["mark"] = _one(con, "SELECT row_id FROM memory_events WHERE seq = ?", [top])
            else:
                events = _columns(con.execute(
                    f"SELECT {cols} FROM memory_events e WHERE collection = ? AND op <> 'config' AND seq > ? ORDER BY ts, seq",
                    [collection, after],
                ))
                access = _columns(con.execute(
                    "SELECT row_id, ts, ids FROM memory_access WHERE collection = ? AND seq > ?", [collection, after_access]
                ))
                if mark is not None:
                    extra["mark_ok"] = _one(con, "SELECT row_id FROM memory_events WHERE seq = ?", [after]) == mark
                    extra["deleted"] = [r[0] for r in con.execute(
                        "SELECT DISTINCT memory_id FROM memory_events WHERE collection = ? AND op = 'delete' AND seq <= ? "
                        "AND memory_id IN (SELECT memory_id FROM memory_events WHERE collection = ? AND seq > ?)",
                        [collection, after, collection, after]).fetchall()]
        return {"events": events, "access": access, "config": config, "seq": top, "access_seq": top_access, **extra}

    def purge(self, collection: str, memory_id: str) -> None:
        """Blank the content, metadata and embedding of every stored event of one memory, and
        retire this process's event journal (which holds them as written) once it is ingested."""
        with self.store.connect() as con:
            self.store.ingest(con)
            con.execute(
                "UPDATE memory_events SET content = NULL, content_hash = NULL, metadata = NULL, embedding = NULL"
                " WHERE collection = ? AND memory_id = ?",
                [collection, memory_id],
            )
            journal = own_journal(self._folder, EVENTS)
            name = os.path.basename(journal.path)
            done = con.execute('SELECT "offset" FROM _journal_offsets WHERE file = ?', [name]).fetchall()
            if name and done and journal.retire(journal.path, done[0][0]):
                con.execute("DELETE FROM _journal_offsets WHERE file = ?", [name])
            con.execute("CHECKPOINT")
        snapshot.remove(self.home, collection)  # it holds the purged text
        # ingested journals are archived for rebuilds: blank the purged memory there too
        self.store.scrub_archive(EVENTS, {"collection": collection, "memory_id": memory_id},
                                 ["content", "content_hash", "metadata", "embedding"])

    def query(self, sql: str, params: Sequence[Any]) -> pd.DataFrame:
        """Run ``sql`` with bound ``params`` after ingesting every journal."""
        with self.store.connect() as con:
            self.store.ingest(con)
            return con.execute(sql, list(params)).df()


# (the current rows, the collection's config) -> (the rows to load, in order; the float32 array,
# one row each, to fill with their vectors)
VectorTarget = Callable[["pa.Table", "tuple[str, int] | None"], "tuple[pa.Table, np.ndarray]"]
_BATCH = 65_536  # embeddings per streamed batch: ~100 MB of vectors at 384 dims


def _current_state(con: duckdb.DuckDBPyConnection, collection: str, config: tuple[str, int] | None,
                   target: VectorTarget) -> dict[str, Any]:
    """The latest event of every live memory, in two passes (see ``EventLog.pull``)."""
    import numpy as np
    import pyarrow as pa

    plain = ", ".join(f"e.{c}" for c in EVENT_COLUMNS if c != "embedding")
    rel = con.sql(f"""WITH latest AS (
                SELECT arg_max(row_id, (ts, seq)) AS rid FROM memory_events
                WHERE collection = $1 AND op <> 'config' GROUP BY memory_id HAVING bool_and(op <> 'delete')),
            acc AS (SELECT id, count(*) AS n, max(ts) AS last
                FROM (SELECT unnest(ids) AS id, ts FROM memory_access WHERE collection = $1) GROUP BY id)
            SELECT e.rowid AS rid, {plain}, coalesce(acc.n, 0)::BIGINT AS access_n,
                coalesce(acc.last, 0)::DOUBLE AS access_last
            FROM memory_events e JOIN latest ON e.row_id = latest.rid LEFT JOIN acc ON acc.id = e.memory_id
            ORDER BY e.seq""", params=[collection])
    table, out = target(rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow(), config)
    rids = table.column("rid").to_numpy()
    if len(rids) >= _BATCH:
        # The scan reads every stored embedding (base64: 2 GB at 1M): a small buffer pool lets DuckDB
        # drop each block once read, instead of keeping the file's blocks cached (the peak, else).
        limit = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
        con.execute("SET memory_limit = '512MB'")
    else:
        limit = None
    if len(rids):
        order = np.argsort(rids)
        sorted_rids = rids[order]
        con.register("wanted_rows", pa.table({"rid": sorted_rids}))
        try:
            # No ORDER BY: DuckDB streams the scan (a sort would hold every vector), and each batch
            # lands at its rows' places.
            rel = con.sql("SELECT e.rowid AS rid, from_base64(e.embedding) AS v FROM memory_events e "
                          "SEMI JOIN wanted_rows w ON e.rowid = w.rid")
            reader: Any = rel.to_arrow_reader(_BATCH) if hasattr(rel, "to_arrow_reader") \
                else rel.fetch_arrow_reader(_BATCH)  # DuckDB 1.x
            filled = 0
            for batch in reader:
                at = order[np.searchsorted(sorted_rids, batch.column(0).to_numpy())]
                out[at] = _vectors_of(batch.column(1), out.shape[1])
                filled += len(at)
        finally:
            con.unregister("wanted_rows")
            if limit is not None:
                con.execute(f"SET memory_limit = '{limit}'")
        if filled != len(rids):
            raise StorageError("memory_events lost rows while they were read: the memory database is damaged")
    return {"table": table, "vectors": out}


def _vectors_of(column: Any, dim: int) -> np.ndarray:
    """A BLOB column of float32 vectors (``dim`` wide) as an (n, dim) view of its buffer."""
    import numpy as np

    if column.null_count:
        raise StorageError("memory_events holds a current memory without an embedding: the memory database is damaged")
    width = 8 if "large" in str(column.type) else 4
    buffers = column.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int32 if width == 4 else np.int64)[column.offset:column.offset + len(column) + 1]
    n = len(column)
    if n and not (offsets[-1] - offsets[0] == 4 * dim * n and bool((np.diff(offsets) == 4 * dim).all())):
        raise StorageError(f"memory_events holds a vector that is not {dim} float32 wide: the memory database is damaged")
    data = np.frombuffer(buffers[2], dtype=np.uint8) if n else np.zeros(0, dtype=np.uint8)
    return data[offsets[0]:offsets[-1]].view("<f4").reshape(n, dim)


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any]) -> Any:
    """The first value of a query's first row, or None."""
    rows = con.execute(sql, list(params)).fetchall()
    return rows[0][0] if rows else None


def _columns(cursor: Any) -> dict[str, list[Any]]:
    """A result as {column: list of Python values}: no pandas on the load path (much faster)."""
    names = [d[0] for d in cursor.description]
    rows = cursor.fetchall()
    return {n: [r[i] for r in rows] for i, n in enumerate(names)}
