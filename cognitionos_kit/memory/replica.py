"""The in-process replica of one collection: a :class:`~.index.Table` kept in step with the event
log of ``store.py`` (DuckDB, after ingest, is the source of truth).

Every write of this process is an event appended to its journal (durable when the call returns),
applied to the table at once and remembered as pending until it comes back from DuckDB. Before
each call the replica checks, with one directory scan and a counter of this process's appends,
whether another process or another Memory object wrote events; only then does it open DuckDB and
load the new events. Access counts from retrievals are events too, applied here at once (other
writers' counts arrive with their next batch of events).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigurationError, warn_user
from . import snapshot
from .embedding import EMBEDDING_DIMS, LOCAL_MODEL
from .index import Table
from .store import EventLog, decode_vectors, encode_vectors

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

__all__ = ["Replica", "WRITE_CHUNK"]

WRITE_CHUNK = 20_000  # rows per journal write
ROW_FIELDS = ("op", "memory_id", "user_id", "scope", "agent_id", "memory_type", "content", "content_hash",
              "metadata", "model", "ts", "created_at", "updated_at")  # what the table keeps of an event


class Replica:
    """One collection's memories in this process (``table``), loaded from and written to ``log``.

    ``model`` is the collection's embedding model (the requested one, or the local MiniLM, until
    the first ``sync`` reads the collection's config); ``on_reload`` is called whenever the table
    is replaced by a new one (indexes built on the old one must go). Callers hold ``lock`` around
    a ``sync`` and the reads and writes that follow it."""

    def __init__(self, log: EventLog, collection: str, *, model: str | None, on_reload: Callable[[], None]) -> None:
        self.log = log
        self.collection = collection
        self.requested_model = model
        self.model: str = model or LOCAL_MODEL
        self.on_reload = on_reload
        self.lock = threading.RLock()
        self.table: Table | None = None
        self.stale = 0  # memories embedded with another model (an interrupted reembed), left out
        self._configured = False  # a config event exists for the collection
        self._seq = self._access_seq = 0
        self._sig: tuple[Any, ...] | None = None
        self._pending: set[str] = set()  # our own event row_ids, applied locally, not yet seen in DuckDB
        self._pending_access: set[str] = set()
        self._deleted: set[str] = set()
        self._purged = ""  # the collection's purge stamp when the last full load began (snapshot.purge_stamp)

    # --- reading ---------------------------------------------------------------------------
    def sync(self) -> Table:
        """The table, after loading what other processes and Memory objects wrote since the last call."""
        with self.lock:
            if self.table is not None and (self.log.signature(), self.log.db_state()) == self._sig:
                return self.table
            journals = self.log.signature()
            if self.table is None and self._from_snapshot(journals):
                assert self.table is not None
                return self.table
            self._purged = snapshot.purge_stamp(self.log.home, self.collection)  # before the rows a snapshot holds
            data = self.log.pull(self.collection, self._seq, self._access_seq, full=self.table is None,
                                 target=self._target)
            self._sig = (journals, self.log.db_state())
            config = data["config"]
            if self.table is not None and config and config[0] != self.model:
                self._replace(None)  # another process re-embedded the collection: reload it all
                data = self.log.pull(self.collection, 0, 0, full=True, target=self._target)
            table = self._load(data) if self.table is None else self._apply(self.table, data)
            self._seq, self._access_seq = data["seq"], data["access_seq"]
            return table

    def _replace(self, table: Table | None) -> None:
        self.table = table
        self.on_reload()

    def _from_snapshot(self, journals: tuple[Any, ...]) -> bool:
        """Load the table from the collection's snapshot and the events after it; False (load from
        the database instead) without one, or when it is from another database or model, or far behind."""
        snap = snapshot.read(self.log.home, self.collection)
        if snap is None or (self.requested_model is not None and self.requested_model != snap.model):
            return False
        data = self.log.pull(self.collection, snap.seq, snap.access_seq, full=False, mark=snap.mark)
        config = data["config"]
        behind = len(data["events"]["row_id"]) > max(snapshot.SNAPSHOT_MIN, snap.rows.num_rows // 4)
        if not data["mark_ok"] or not config or tuple(config) != (snap.model, snap.vectors.shape[1]) or behind:
            return False
        self._sig = (journals, self.log.db_state())
        self.model, self._configured, self.stale = snap.model, True, snap.stale
        self._deleted.update(data["deleted"])
        table = Table.from_arrow(snap.rows, snap.vectors, self.collection)
        table.origin = (self.log.home, self.collection, snap.mark)
        self._install(table)
        self._apply(table, data)
        self._seq, self._access_seq = data["seq"], data["access_seq"]
        return True

    def _target(self, rows: pa.Table, config: tuple[str, int] | None) -> tuple[pa.Table, np.ndarray]:
        """For a full load (``EventLog.pull``): check the collection's model, keep the rows embedded
        with it, and give the array their vectors go into -- a new snapshot's vector file for a
        large collection (written once, then mapped), else memory."""
        import numpy as np
        import pyarrow as pa

        model, dim = config if config else (self.requested_model or LOCAL_MODEL, None)
        if self.requested_model is not None and config and self.requested_model != model:
            raise ConfigurationError(
                f"collection {self.collection!r} holds {model} vectors ({dim} dims), not {self.requested_model}: "
                f"open it with embedding_model={model!r}, or migrate it with reembed(model={self.requested_model!r})"
            )
        if dim is None:
            dim = EMBEDDING_DIMS.get(model, 0)  # 0: not known until the first vectors arrive
        self.model = model
        ok = np.array([m == model and d == dim for m, d in zip(rows.column("model").to_pylist(),
                                                                rows.column("dim").to_pylist())], dtype=bool)
        self.stale = int(len(ok) - ok.sum())
        kept = rows if ok.all() else rows.filter(pa.array(ok))
        n = kept.num_rows
        out = snapshot.allocate(self.log.home, self.collection, n, int(dim)) if n >= snapshot.SNAPSHOT_MIN else None
        if out is None:
            out = np.empty((n, int(dim)), dtype=np.float32)
        return kept, out

    def _load(self, data: dict[str, Any]) -> Table:
        import numpy as np
        import pyarrow as pa

        self._configured = data["config"] is not None
        rows, vectors = data["events"]["table"], data["events"]["vectors"]
        del data["events"]
        table = Table(int(vectors.shape[1]), capacity=1024)
        origin = None
        if isinstance(vectors, np.memmap):  # a new snapshot's vector file, filled: save the rest beside it
            saved = data["mark"] is not None and snapshot.write(
                self.log.home, self.collection, rows, vectors, model=self.model, seq=data["seq"],
                access_seq=data["access_seq"], mark=data["mark"], stale=self.stale, purged=self._purged)
            snap = snapshot.read(self.log.home, self.collection) if saved else None
            if snap is not None and snap.mark == data["mark"]:
                rows, vectors = snap.rows, snap.vectors  # memory-mapped: pages are read as searches need them
                origin = (self.log.home, self.collection, data["mark"])
            else:  # not saved (a full or read-only folder): the vectors in memory, the file's mapping dropped
                vectors = np.array(vectors)
        if rows.num_rows:
            table = Table.from_arrow(rows, vectors, self.collection)
            table.origin = origin
        pa.default_memory_pool().release_unused()  # the first pass's columns: give the memory back
        self._install(table)
        return table

    def _install(self, table: Table) -> None:
        """Make a freshly loaded ``table`` the replica's: nothing of ours is pending in it; say
        whether memories of another model were left out."""
        self._replace(table)
        self._pending.clear()
        self._pending_access.clear()
        if self.stale:
            warn_user(f"{self.stale} memories of collection {self.collection!r} are embedded with another model than "
                      f"{self.model} and are left out of retrieval; run reembed(model={self.model!r}) to include them",
                      RuntimeWarning)

    def _apply(self, t: Table, data: dict[str, Any]) -> Table:
        """Apply other processes' events (ours were applied when written)."""
        import numpy as np

        ev = data["events"]
        rows = _rows(ev, self.collection)
        for r, rid, emb, model, dim in zip(rows, ev["row_id"], ev["embedding"], ev["model"], ev["dim"]):
            if rid in self._pending:  # ours: applied when written
                self._pending.discard(rid)
                continue
            mid = r["memory_id"]
            if r["op"] == "delete":
                self._deleted.add(mid)
                if mid in t.pos:
                    t.remove(mid)
                continue
            if mid in self._deleted or emb is None:  # emb None: purged, its delete follows
                continue
            if model != self.model or dim != t.dim:
                self.stale += 1
                continue
            vec = decode_vectors([emb], t.dim)[0]
            i = t.pos.get(mid)
            if i is None:
                t.add([r], vec[None])
            elif r["ts"] >= t.version[i]:
                t.replace(i, r, vec)
        acc = data["access"]
        for rid, ts, ids in zip(acc["row_id"], acc["ts"], acc["ids"]):
            if rid in self._pending_access:
                self._pending_access.discard(rid)
                continue
            p = np.array([t.pos[i] for i in ids if i in t.pos], dtype=np.int64)
            if len(p):
                t.count[p] += 1
                t.accessed[p] = np.maximum(t.accessed[p], ts)
        return t

    def fit(self, table: Table, width: int) -> Table:
        """``table`` checked against ``width`` dims (or, while its width is unknown, a new table that wide)."""
        if table.dim == 0 and not table.n:
            table = Table(int(width))
            self._replace(table)
        elif width != table.dim:
            raise ConfigurationError(f"{self.model} returned {width} dims, the collection holds {table.dim}")
        return table

    # --- writing ---------------------------------------------------------------------------
    def write(self, rows: list[dict[str, Any]], vecs: np.ndarray) -> None:
        """Journal events with their vectors (the collection's config first if it has none); the
        caller applies them to the table."""
        dim = int(vecs.shape[1])
        if not self._configured:
            config_id = uuid.uuid4().hex
            self.log.append([{"row_id": config_id, "ts": time.time(), "op": "config", "collection": self.collection,
                              "model": self.model, "dim": dim}])
            self._pending.add(config_id)
            self._configured = True
        for start in range(0, len(rows), WRITE_CHUNK):
            chunk = rows[start : start + WRITE_CHUNK]
            texts = encode_vectors(vecs[start : start + WRITE_CHUNK])
            self.log.append([{**r, "metadata": json.dumps(r["metadata"]), "dim": dim, "embedding": e}
                             for r, e in zip(chunk, texts)])
            self._pending.update(r["row_id"] for r in chunk)

    def delete(self, table: Table, memory_id: str, *, purge: bool) -> None:
        """Journal the deletion of a memory and drop it from ``table``; ``purge`` also blanks its past versions."""
        row_id = uuid.uuid4().hex
        self.log.append([{"row_id": row_id, "ts": time.time(), "op": "delete", "collection": self.collection,
                          "memory_id": memory_id}])
        self._pending.add(row_id)
        self._deleted.add(memory_id)
        table.remove(memory_id)
        if purge:
            self.log.purge(self.collection, memory_id)

    def record_access(self, table: Table, rows: np.ndarray, ids: list[str]) -> None:
        """Journal one use of the memories at ``rows`` (with ``ids``) and count it in ``table``."""
        import numpy as np

        row_id, ts = uuid.uuid4().hex, time.time()
        self.log.append_access({"row_id": row_id, "ts": ts, "collection": self.collection, "ids": ids})
        self._pending_access.add(row_id)
        table.touch(np.asarray(rows, dtype=np.int64), ts)

    def migrate(self, model: str, rows: list[dict[str, Any]], vecs: np.ndarray) -> Table:
        """Make ``model`` the collection's model with ``rows`` re-embedded as ``vecs``, and reload."""
        with self.lock:
            self.model, self._configured = model, False
            self.write(rows, vecs)
            self.requested_model = model
            self._replace(None)
            return self.sync()


def _rows(ev: dict[str, list[Any]], collection: str) -> list[dict[str, Any]]:
    """Event columns (from ``EventLog.pull``) as the row dicts the table keeps."""
    metas = json.loads("[" + ",".join(m or "{}" for m in ev["metadata"]) + "]")  # one parse, not one per row
    out = []
    for values, meta in zip(zip(*(ev[c] for c in ROW_FIELDS)), metas):
        rec = dict(zip(ROW_FIELDS, values))
        rec["metadata"] = meta
        rec["collection"] = collection
        out.append(rec)
    return out
