"""A journaled DuckDB store that several processes can write and read at the same time.

DuckDB lets one process open a database file at a time, so nothing here holds it open:

* Writers append each batch of rows as JSON lines with a single ``os.write`` to this process's
  own journal file, ``<journal_dir>/<host>-<pid>-<random>.<table>.jsonl``. Once ``append``
  returns, the rows survive the process being killed (and power loss with ``fsync=True``).
  No DuckDB on this path: it costs a few microseconds.
* Readers open DuckDB briefly (``connect``), ingest every complete journal line not ingested
  yet, run their query and close. Kit processes queue on a ``flock`` of ``<db>.lock`` (cheap
  to wait on); anyone else holding DuckDB's own lock is waited out by retrying the open, up to
  ``lock_timeout``.

Ingestion is exactly-once: each file's ingested byte offset lives in ``_journal_offsets`` and is
updated in the same transaction as the inserted rows; ``row_id`` (the table's primary key) is a
second guard. Files whose writer has exited are deleted once fully ingested. A writer holds a
shared ``flock`` on its file for its whole life, so "exited" is known exactly (no pid reuse or
zombie confusion); without ``fcntl`` (Windows) files are never deleted.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
import uuid
import warnings
from contextlib import contextmanager
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from .errors import InvalidRequestError, StorageError
from .migrations import Migrations

try:
    import fcntl
except ImportError:  # Windows: no flock, so journal files of exited writers are kept
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

__all__ = ["Store"]

_HOST = re.sub(r"[^A-Za-z0-9_.-]", "_", os.uname().nodename if hasattr(os, "uname") else os.environ.get("COMPUTERNAME", "host"))
_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CHUNK = 16 << 20  # ingest at most this many journal bytes per INSERT
_BAD_LINES_SQL = (
    "SELECT count(*) FROM (SELECT unnest(string_split(?, chr(10))) AS line)"
    " WHERE line <> '' AND (NOT json_valid(line) OR json_extract(line, '$.row_id') IS NULL)"
)
_OFFSETS_DDL = 'CREATE TABLE IF NOT EXISTS _journal_offsets (file VARCHAR PRIMARY KEY, "offset" BIGINT NOT NULL)'


# --- journal lines ------------------------------------------------------------------------
def _default(o: Any) -> Any:
    if isinstance(o, datetime):
        return (o if o.tzinfo else o.replace(tzinfo=timezone.utc)).astimezone(timezone.utc).isoformat()
    if isinstance(o, date):
        return o.isoformat()
    if isinstance(o, uuid.UUID):
        return o.hex
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if hasattr(o, "tolist"):  # numpy scalars and arrays
        return o.tolist()
    if hasattr(o, "__float__"):  # Decimal and friends
        return float(o)
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


_ENC = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_default)


def _finite(v: Any) -> Any:
    """``v`` with NaN and infinities replaced by None (JSON has no NaN; DuckDB would choke)."""
    if isinstance(v, Mapping):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):
        v = v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _line(row: Mapping[str, Any]) -> str:
    try:
        return _ENC.encode(row)
    except ValueError:  # NaN or infinity somewhere: the rare slow path
        return _ENC.encode(_finite(row))


# --- this process's journal files ---------------------------------------------------------
class _Journal:
    """This process's append-only journal for one table in one folder (opened lazily)."""

    def __init__(self, folder: str, table: str) -> None:
        self.folder, self.table = folder, table
        self.lock = threading.Lock()
        self.fd = -1
        self.path = ""
        self.torn = False  # a write failed part-way: start the next one on a fresh line

    def _open(self, fsync: bool) -> None:
        os.makedirs(self.folder, exist_ok=True)
        stem = f"{_HOST}-{os.getpid()}-{os.urandom(4).hex()}.{self.table}"
        tmp, path = os.path.join(self.folder, stem + ".tmp"), os.path.join(self.folder, stem + ".jsonl")
        fd = os.open(tmp, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_SH)  # held until we exit: tells ingesters we are alive
        os.rename(tmp, path)  # visible under its real name only once locked
        if fsync:
            _fsync_dir(self.folder)
        self.fd, self.path, self.torn = fd, path, False

    def write(self, data: bytes, fsync: bool) -> None:
        with self.lock:
            try:
                # Reopen if the file was deleted under us (someone cleared the data folder).
                if self.fd < 0 or os.fstat(self.fd).st_nlink == 0:
                    self.close()
                    self._open(fsync)
                if self.torn:
                    data = b"\n" + data
                n = os.write(self.fd, data)
                while n < len(data):
                    data = data[n:]
                    n = os.write(self.fd, data)
                if fsync:
                    os.fsync(self.fd)
            except OSError as e:
                self.torn = self.fd >= 0
                raise StorageError(f"could not write the journal in {self.folder}: {e}") from e
            self.torn = False

    def retire(self, path: str, size: int) -> bool:
        """Close and delete the file at ``path`` if it still is ours and holds exactly ``size`` bytes."""
        with self.lock:
            if self.path != path or self.fd < 0 or os.fstat(self.fd).st_size != size:
                return False
            self.close()
            os.unlink(path)
            return True

    def close(self) -> None:
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
        self.fd, self.path = -1, ""


_JOURNALS: dict[tuple[str, str], _Journal] = {}
_REGISTRY_LOCK = threading.Lock()
_GATES: dict[str, "_Gate"] = {}


def _journal(folder: str, table: str) -> _Journal:
    j = _JOURNALS.get((folder, table))
    if j is None:
        if not _TABLE_RE.match(table):
            raise InvalidRequestError(f"invalid table name {table!r}")
        with _REGISTRY_LOCK:
            j = _JOURNALS.setdefault((folder, table), _Journal(folder, table))
    return j


def _after_fork_in_child() -> None:
    # The child must not write into (or delete) files named after its parent's pid.
    global _REGISTRY_LOCK
    for j in _JOURNALS.values():
        j.close()
    _JOURNALS.clear()
    for g in _GATES.values():
        if g.fd >= 0:
            os.close(g.fd)
    _GATES.clear()
    _REGISTRY_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _parse_name(name: str) -> tuple[str, str] | None:
    """``(host, table)`` from a journal file name, or None if it is not one."""
    if not name.endswith(".jsonl"):
        return None
    writer, _, table = name[: -len(".jsonl")].rpartition(".")
    parts = writer.rsplit("-", 2)
    if len(parts) != 3 or not _TABLE_RE.match(table):
        return None
    return parts[0], table


def _writer_gone(host: str, fd: int) -> bool:
    """True if the process that wrote this file has exited (it no longer holds its flock)."""
    if fcntl is None or host != _HOST:  # other machines' processes cannot be checked
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _q(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _insert_sql(table: str, columns: list[tuple[str, str]], dedupe: bool) -> str:
    """INSERT of a block of JSON lines (parameter 2) into ``table``; with ``dedupe``, row_ids
    already stored or repeated within the block are skipped."""
    exprs = []
    for name, typ in columns:
        v = _q(name)
        if typ.startswith("TIMESTAMP"):
            # Journals hold epoch seconds or ISO strings; anything unparseable becomes NULL.
            d = f"TRY_CAST({v} AS DOUBLE)"
            e = (f"CASE WHEN {d} IS NULL THEN TRY_CAST({v} AS TIMESTAMPTZ) "
                 f"ELSE to_timestamp(CASE WHEN isfinite({d}) AND abs({d}) < 1e11 THEN {d} END) END")
            exprs.append(e if typ == "TIMESTAMP WITH TIME ZONE" else f"CAST({e} AS {typ})")
        else:
            exprs.append(v)
    cols = ", ".join(_q(n) for n, _ in columns)
    # json_transform is lenient: a value of the wrong type becomes NULL instead of failing the batch.
    verb, distinct = ("INSERT OR IGNORE", "DISTINCT ON (row_id) ") if dedupe else ("INSERT", "")
    return (
        f"{verb} INTO {_q(table)} ({cols}) SELECT {distinct}{', '.join(exprs)} FROM ("
        " SELECT unnest(json_transform(line, ?)) FROM (SELECT unnest(string_split(?, chr(10))) AS line)"
        " WHERE line <> '' AND json_valid(line)"
        ") WHERE row_id IS NOT NULL"
    )


class _Gate:
    """Admits one opener of one database at a time: threads of this process via an RLock, kit
    processes via ``flock`` on ``<db>.lock``. Waiting on a flock costs nothing, where a refused
    ``duckdb.connect`` costs a whole DuckDB start-up (~30 ms of CPU per try)."""

    FAIR_GAP = 0.004  # pause between our back-to-back opens so a polling process gets its turn

    def __init__(self, lock_path: str) -> None:
        self.lock_path = lock_path
        self.rlock = threading.RLock()
        self.depth = 0
        self.fd = -1
        self.released = 0.0

    @contextmanager
    def hold(self, deadline: float, timed_out: Any) -> Iterator[None]:
        if not self.rlock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise timed_out("another thread of this process")
        try:
            if self.depth == 0 and fcntl is not None:
                self._flock(deadline, timed_out)
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
                if self.depth == 0 and self.fd >= 0:
                    os.close(self.fd)  # releases the flock
                    self.fd, self.released = -1, time.monotonic()
        finally:
            self.rlock.release()

    def _flock(self, deadline: float, timed_out: Any) -> None:
        gap = self.released + self.FAIR_GAP - time.monotonic()
        if gap > 0:
            time.sleep(gap)
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StorageError(f"cannot create the lock file {self.lock_path}: {e}") from e
        delay = 0.0005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.fd = fd
                return
            except OSError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise timed_out(f"another cognitionos_kit process (it holds {self.lock_path})") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.002)


def _gate(db_path: str) -> _Gate:
    with _REGISTRY_LOCK:
        return _GATES.setdefault(db_path, _Gate(db_path + ".lock"))


# --- the store ----------------------------------------------------------------------------
class Store:
    """A DuckDB database fed by per-process JSONL journals; safe for many processes at once.

    ``migrations`` are applied on every open (only pending ones run). Tables fed through
    :meth:`append` need a ``row_id VARCHAR PRIMARY KEY`` column; rows get a uuid4 hex if absent.
    """

    def __init__(
        self,
        db_path: str | Path,
        journal_dir: str | Path,
        migrations: Migrations | Sequence[Migrations] = (),
        *,
        lock_timeout: float = 30.0,
        fsync: bool = False,
        rotate_bytes: int = 64 << 20,
    ) -> None:
        self.db_path = Path(db_path)
        self.journal_dir = Path(journal_dir)
        self.migrations = [migrations] if isinstance(migrations, Migrations) else list(migrations)
        self.lock_timeout = lock_timeout
        self.fsync = fsync
        self.rotate_bytes = rotate_bytes  # this process's own fully ingested journal is replaced past this size
        try:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
            self.journal_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(f"cannot create the data folder: {e}") from e
        self._folder = os.path.realpath(self.journal_dir)
        self._db_key = os.path.realpath(self.db_path)

    # --- writing (hot path) ----------------------------------------------------------------
    def append(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Journal ``rows`` for ``table`` with one write; durable when this returns."""
        if not rows:
            return
        try:
            text = "".join([_line(r if "row_id" in r else {**r, "row_id": uuid.uuid4().hex}) + "\n" for r in rows])
        except (TypeError, ValueError) as e:
            raise InvalidRequestError(f"row for {table} cannot be stored: {e}") from e
        _journal(self._folder, table).write(text.encode(), self.fsync)

    # --- DuckDB ----------------------------------------------------------------------------
    @contextmanager
    def connect(self) -> Iterator["duckdb.DuckDBPyConnection"]:
        """Open the database briefly (waiting up to ``lock_timeout`` for other processes),
        apply pending migrations, yield the connection, close it."""
        import duckdb

        deadline = time.monotonic() + self.lock_timeout
        with _gate(self._db_key).hold(deadline, self._timed_out):
            con = self._open(duckdb, deadline)
            try:
                try:
                    con.execute("SET TimeZone = 'UTC'")  # TIMESTAMPTZ in and out as UTC
                except duckdb.Error:  # no ICU: TIMESTAMPTZ is UTC already
                    pass
                con.execute(_OFFSETS_DDL)
                for m in self.migrations:
                    m.apply(con)
                yield con
            finally:
                con.close()

    def _timed_out(self, holder: str) -> StorageError:
        return StorageError(
            f"timed out after {self.lock_timeout:g} s waiting for the lock on {self.db_path}: held by {holder}. "
            "The kit opens the database only for a moment; a long-lived duckdb.connect() elsewhere "
            "(another notebook?) is the likely holder. Close it, or raise lock_timeout."
        )

    def _open(self, duckdb: Any, deadline: float) -> "duckdb.DuckDBPyConnection":
        # Kit processes are already kept out by the gate; this waits out anyone else (a DuckDB
        # CLI, a notebook's own duckdb.connect) holding DuckDB's lock on the file.
        import random

        delay = 0.005
        while True:
            try:
                return duckdb.connect(str(self.db_path))
            except duckdb.Error as e:
                msg = str(e)
                if "could not set lock" not in msg.lower() and "conflicting lock" not in msg.lower():
                    raise StorageError(f"cannot open the database {self.db_path}: {msg}") from e
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._timed_out(f"another process ({msg})") from e
                time.sleep(min(left, delay * random.uniform(0.5, 1.5)))
                delay = min(delay * 2, 0.1)

    def ingest(self, con: "duckdb.DuckDBPyConnection") -> int:
        """Load every complete, not yet ingested journal line into ``con``; return rows inserted."""
        import duckdb

        entries = []
        try:
            with os.scandir(self._folder) as it:
                for e in it:
                    parsed = _parse_name(e.name)
                    if parsed:
                        entries.append((e.name, e.path, *parsed))
        except FileNotFoundError:
            return 0
        if not entries:
            return 0
        try:
            return self._ingest(con, entries, dedupe=False)
        except duckdb.ConstraintException:
            # A row_id already stored: a journal was read twice (offsets lost or a file copied).
            # Plain INSERT is much faster than INSERT OR IGNORE, so dedupe only when needed.
            return self._ingest(con, entries, dedupe=True)

    def _ingest(self, con: "duckdb.DuckDBPyConnection", entries: list[tuple[str, str, str, str]], dedupe: bool) -> int:
        inserted = 0
        gone: list[tuple[str, str]] = []  # (name, path) of files whose writer exited, fully read
        rotate: list[tuple[str, str, int]] = []  # fully read and large: replaced if they are ours
        specs: dict[str, tuple[str, str] | None] = {}
        con.begin()
        try:
            offsets = dict(con.execute('SELECT file, "offset" FROM _journal_offsets').fetchall())
            for name, path, host, table in entries:
                if table not in specs:
                    specs[table] = self._table_spec(con, table, dedupe)
                spec = specs[table]
                if spec is None:  # a table this database does not have (yet): leave the file
                    continue
                try:
                    f = open(path, "rb")
                except FileNotFoundError:
                    continue
                except OSError as e:
                    raise StorageError(f"cannot read the journal {path}: {e}") from e
                with f:
                    # Decide "exited" before reading: a dead writer cannot add lines after we look.
                    dead = _writer_gone(host, f.fileno())
                    start = offsets.get(name, 0)
                    if os.fstat(f.fileno()).st_size < start:  # only if edited by hand: reread, row_id dedupes
                        start = 0
                    end, n = self._ingest_file(con, spec, f, start)
                inserted += n
                if end != offsets.get(name, 0):
                    con.execute(
                        'INSERT INTO _journal_offsets VALUES (?, ?) ON CONFLICT (file) DO UPDATE SET "offset" = excluded."offset"',
                        [name, end],
                    )
                if dead:  # bytes past ``end`` are a line torn by the writer's death: never completed
                    gone.append((name, path))
                elif end >= self.rotate_bytes:
                    rotate.append((name, path, end))
            con.commit()
        except BaseException:
            con.rollback()
            raise
        # Only after the commit: deleting a file whose rows were rolled back would lose them.
        dropped = []
        for name, path in gone:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError:
                continue
            dropped.append(name)
        for name, path, end in rotate:
            j = next((j for j in list(_JOURNALS.values()) if j.path == path), None)
            if j is not None and j.retire(path, end):
                dropped.append(name)
        if dropped:
            con.execute(f"DELETE FROM _journal_offsets WHERE file IN ({', '.join('?' * len(dropped))})", dropped)
        return inserted

    def _table_spec(self, con: "duckdb.DuckDBPyConnection", table: str, dedupe: bool) -> tuple[str, str] | None:
        """``(json_transform structure, INSERT statement)`` for ``table``, None if it does not exist."""
        cols = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_catalog = current_database() AND table_schema = current_schema() AND table_name = ?"
            " ORDER BY ordinal_position",
            [table],
        ).fetchall()
        if not cols:
            return None
        if "row_id" not in {c for c, _ in cols}:
            raise StorageError(f"table {table} has no row_id column; journaled tables need row_id VARCHAR PRIMARY KEY")
        structure = json.dumps({c: ("VARCHAR" if t.startswith("TIMESTAMP") else t) for c, t in cols})
        return structure, _insert_sql(table, cols, dedupe)

    def _ingest_file(self, con: "duckdb.DuckDBPyConnection", spec: tuple[str, str], f: Any, start: int) -> tuple[int, int]:
        """Insert the complete lines of ``f`` from byte ``start``; return (offset after them, rows inserted)."""
        structure, sql = spec
        f.seek(start)
        pos, buf, inserted = start, b"", 0
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                return pos, inserted
            buf = buf + chunk if buf else chunk
            cut = buf.rfind(b"\n")
            if cut < 0:  # a line longer than a chunk, or a torn tail: read on
                continue
            block = buf[:cut].decode("utf-8", "replace")
            n = con.execute(sql, [structure, block]).fetchone()[0]  # type: ignore[index]
            inserted += n
            if n < block.count("\n") + 1 - block.count("\n\n"):
                # Fewer rows than lines: duplicates (fine) or malformed lines (worth a warning).
                bad = con.execute(_BAD_LINES_SQL, [block]).fetchone()[0]  # type: ignore[index]
                if bad:
                    warnings.warn(f"skipped {bad} malformed journal line(s) in {f.name}", RuntimeWarning, stacklevel=4)
            pos += cut + 1
            buf = buf[cut + 1 :]

    # --- reading ---------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> "pd.DataFrame":
        """Ingest pending journal rows, run ``sql`` with bound ``params``, return a DataFrame."""
        with self.connect() as con:
            self.ingest(con)
            return con.execute(sql, params).df() if params else con.execute(sql).df()

    def flush(self) -> int:
        """Ingest all pending journal rows now; return how many were inserted."""
        with self.connect() as con:
            return self.ingest(con)
