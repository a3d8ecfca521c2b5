"""The :class:`Store`: a DuckDB database fed by per-process JSONL journals, safe for many processes
at once (the package docstring of :mod:`cognitionos_kit.storage` tells how)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import InvalidRequestError, StorageError
from . import instance
from .archive import archive_journal, ingest_archive, move_aside, scrub_archive
from .faults import DAMAGED_MESSAGES, LOCKED_MESSAGES, STILL_ATTACHED, WRITE_FAULTS, cause, reason_of, storage_error
from .files import private_dir, private_file
from .frames import tidy as tidy_frame
from .frames import tidy_arrow
from .ingest import OFFSETS_DDL, Entry, ingest_journals, load_unread, quote_ident, sql_literal, table_columns
from .journal import encode_rows, own_journal, parse_name
from .locks import gate
from .migrations import Migrations
from .spool import SPOOL_PREFIX, Spool

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

__all__ = ["Store"]


class Store:
    """A DuckDB database fed by per-process JSONL journals; safe for many processes at once.

    ``migrations`` are applied on every open (only pending ones run). Tables fed through
    :meth:`append` need a ``row_id VARCHAR PRIMARY KEY`` column; rows get a uuid4 hex if absent.
    ``label`` names the database in messages ("ledger database"), ``rebuild_hint`` tells how to
    rebuild it when it is damaged; ``archive=False`` deletes ingested journals instead of
    archiving them (the database then cannot be rebuilt from them).
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
        label: str = "database",
        rebuild_hint: str | None = None,
        archive: bool = True,
    ) -> None:
        self.db_path = Path(db_path)
        self.journal_dir = Path(journal_dir)
        self.migrations = [migrations] if isinstance(migrations, Migrations) else list(migrations)
        self.lock_timeout = lock_timeout
        self.fsync = fsync
        self.rotate_bytes = rotate_bytes  # this process's own fully ingested journal is replaced past this size
        self.label = label
        self.rebuild_hint = rebuild_hint
        self.archive = archive
        for folder in (self.db_path.parent, self.journal_dir):
            try:
                private_dir(folder)
            except OSError:
                pass  # said, with its cause, by the first write or read that needs the folder
        self._folder = os.path.realpath(self.journal_dir)
        self._db_key = os.path.realpath(self.db_path)
        # its name while attached to this process's DuckDB instance (storage.instance): one per file
        self._alias = "kit_" + hashlib.sha1(self._db_key.encode()).hexdigest()[:16]
        self._spool = Spool(self._folder)
        self.kept_as: str | None = None  # where rebuild() moved the damaged database

    @property
    def journal_folder(self) -> str:
        """The journal folder's real path: the key of this process's journal files (``own_journal``)."""
        return self._folder

    # --- writing (hot path) ----------------------------------------------------------------
    def append(self, table: str, rows: Sequence[Mapping[str, Any]], *, keep: bool = False) -> bool:
        """Journal ``rows`` for ``table`` with one write; durable when this returns True.

        If the journal cannot be written (read-only or full data folder, permission denied, folder
        gone and not re-creatable) this raises StorageError; with ``keep=True`` it returns False
        instead, the rows kept in memory (:attr:`pending`) and in a spool file outside the data
        folder (:meth:`spool_dirs`), and written to the journal by the next append or read that
        can write it (``fault`` says why, ``kept_in`` where, ``episode`` counts such episodes).
        Rows that cannot be stored at all raise InvalidRequestError either way, before any write.
        """
        if not rows:
            return True
        data = encode_rows(table, rows)
        journal = own_journal(self._folder, table)
        if keep and self._spool.rows and not self._spool.drain(self.fsync):
            return self._spool.keep(table, data, len(rows), None, self.fsync)
        try:
            journal.write(data, self.fsync)
        except StorageError as e:
            if not keep:
                raise
            return self._spool.keep(table, data, len(rows), e, self.fsync)
        return True

    @property
    def pending(self) -> int:
        """How many rows ``append(keep=True)`` kept that are not in the journal yet."""
        return self._spool.count

    @property
    def fault(self) -> StorageError | None:
        """Why rows are pending."""
        return self._spool.fault

    @property
    def kept_in(self) -> str | None:
        """Where pending rows are kept besides memory."""
        return self._spool.kept_in

    @property
    def episode(self) -> int:
        """+1 each time rows start being kept: one warning per episode."""
        return self._spool.episode

    def spool_dirs(self) -> list[str]:
        """Where kept rows are spooled, first choice first (see :meth:`Spool.dirs`)."""
        return self._spool.dirs()

    # --- DuckDB ----------------------------------------------------------------------------
    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the database briefly (waiting up to ``lock_timeout`` for other processes),
        apply pending migrations, yield the connection, close it.

        "Open" is an ``ATTACH`` to this process's kept DuckDB instance (``storage.instance``):
        the file is locked until the ``DETACH`` at the end, as it was until ``close``."""
        import duckdb

        deadline = time.monotonic() + self.lock_timeout
        door = gate(self._db_key)
        with door.hold(deadline, self._timed_out):
            nested = door.attached > 0  # this thread has it attached already (a connect inside a connect)
            began = 0 if nested else instance.resident()
            con, inst = self._open(duckdb, deadline, door.instance if nested else None)
            door.attached += 1
            door.instance = inst
            try:
                try:
                    con.execute("SET TimeZone = 'UTC'")  # TIMESTAMPTZ in and out as UTC
                except duckdb.Error:  # no ICU: TIMESTAMPTZ is UTC already
                    pass
                try:
                    con.execute(OFFSETS_DDL)
                    for m in self.migrations:
                        m.apply(con)
                except (duckdb.Error, StorageError) as e:
                    err = self._db_error("could not prepare", e)
                    if err is e:
                        raise
                    raise err from e
                try:
                    yield con
                except duckdb.Error as e:
                    # the caller's own SQL (memory, ledger readers) failed: a full disk hides behind
                    # TransactionException; name the cause and the path, as a KitError
                    raise self._db_error("could not use", e) from e
            finally:
                door.attached -= 1
                if not door.attached:
                    door.instance = None
                self._private_files()  # the .wal exists while the database is open
                self._close(con, inst, duckdb, nested)
                instance.after(began)  # a large operation: its memory goes with the instance

    def _close(self, con: duckdb.DuckDBPyConnection, inst: instance.Instance, duckdb: Any, nested: bool) -> None:
        detached = True
        try:
            if not nested:
                con.execute("USE memory")
                con.execute(f"DETACH {self._alias}")
        except duckdb.Error:
            detached = False  # a checkpoint that failed (full disk): the WAL keeps the data for the next open
        finally:
            try:
                con.close()
            except duckdb.Error:
                pass
            if not detached:  # it may still hold the file (and its lock): the next open waits for it to close
                instance.discard(inst, held=self._db_key)
            instance.release(inst)

    def _private_files(self) -> None:
        private_file(self.db_path)
        private_file(f"{self.db_path}.wal")

    def _timed_out(self, holder: str) -> StorageError:
        return StorageError(
            f"timed out after {self.lock_timeout:g} s waiting for the lock on {self.db_path}: held by {holder}. "
            "The kit opens the database only for a moment; a long-lived duckdb.connect() elsewhere "
            "(another notebook?) is the likely holder. Close it, or raise lock_timeout."
        )

    def _open(
        self, duckdb: Any, deadline: float, within: instance.Instance | None = None
    ) -> tuple[duckdb.DuckDBPyConnection, instance.Instance]:
        """A cursor with the file attached and in use, and its instance; ``within``: the instance
        an enclosing connect of this thread attached it to."""
        con, inst = instance.cursor(duckdb, self._db_key, deadline, within, self._still_held)
        attached = False
        try:
            if within is None:
                self._attach(con, duckdb, deadline)
                attached = True
            con.execute(f"USE {self._alias}")
            if attached:
                self._private_files()
            return con, inst
        except BaseException:
            if attached:  # never leave it attached to the instance: the next ATTACH would fail
                self._close(con, inst, duckdb, nested=False)
            else:
                try:
                    con.close()
                finally:
                    instance.release(inst)
            raise

    def _still_held(self) -> StorageError:
        return self._timed_out("this process's DuckDB, which could not let go of it (its DETACH failed)")

    def _attach(self, con: duckdb.DuckDBPyConnection, duckdb: Any, deadline: float) -> None:
        # Kit processes are already kept out by the gate; this waits out anyone else (a DuckDB
        # CLI, a notebook's own duckdb.connect) holding DuckDB's lock on the file.
        import random

        delay = 0.005
        while True:
            try:
                con.execute(f"ATTACH {sql_literal(str(self.db_path))} AS {self._alias}")
                return
            except duckdb.Error as e:
                msg, left = str(e), deadline - time.monotonic()
                if STILL_ATTACHED in msg.lower():
                    # Our instance has not quite let go of the file detached by this store's last
                    # operation: a statement of another thread still held it (seen once in ~6,000
                    # operations with 6 threads on 3 files; the next try, 1 ms later, attached).
                    if left <= 0:
                        raise self._timed_out(f"this process's DuckDB, which had not let go of it ({msg})") from e
                    time.sleep(min(left, 0.001))
                    continue
                locked = any(s in msg.lower() for s in LOCKED_MESSAGES)
                if not locked or left <= 0:
                    if locked:
                        raise self._timed_out(f"another process ({msg})") from e
                    raise self._db_error("cannot open", e, opening=True) from e
                time.sleep(min(left, delay * random.uniform(0.5, 1.5)))
                delay = min(delay * 2, 0.1)

    def _db_error(self, doing: str, exc: BaseException, *, writing: bool = True, opening: bool = False) -> StorageError:
        """The StorageError for a DuckDB failure (or a StorageError wrapping one): damaged file,
        or the cause in words; ``exc`` itself when it is a StorageError with nothing to add."""
        inner = exc.__cause__ if isinstance(exc, StorageError) and exc.__cause__ is not None else exc
        msg = str(inner).strip()
        low = msg.lower()
        if any(s in low for s in DAMAGED_MESSAGES):
            return self._damaged(msg)
        reason, words = cause(inner, self.db_path, writing=writing)
        if reason is None and opening and "version" not in low:
            return self._damaged(msg)  # neither a lock, nor the folder, nor a newer DuckDB's file: the file
        if reason is None and isinstance(exc, StorageError):
            return exc
        err = StorageError(f"{doing} the {self.label}: {words}")
        err.reason, err.cause = reason, words  # type: ignore[attr-defined]
        return err

    def _damaged(self, detail: str) -> StorageError:
        hint = self.rebuild_hint or f"Store({str(self.db_path)!r}, {str(self.journal_dir)!r}, migrations).rebuild()"
        err = StorageError(
            f"the {self.label} {self.db_path} is damaged ({detail}) and the kit cannot open it. "
            f"Rebuild it from the journals with {hint}; the damaged file is kept as "
            f"{self.db_path.name}.corrupt-<UTC time> next to it."
        )
        err.reason, err.cause = "damaged", f"damaged database at {self.db_path}"  # type: ignore[attr-defined]
        return err

    def _entries(self) -> list[Entry]:
        """``(key, path, host, table)`` of every journal file and spool file; ``key`` is its name
        in ``_journal_offsets`` (spool files' prefixed with ``spool/``)."""
        entries = []
        for folder, prefix in [(self._folder, "")] + [(d, SPOOL_PREFIX) for d in self.spool_dirs()]:
            try:
                with os.scandir(folder) as it:
                    for e in it:
                        parsed = parse_name(e.name)
                        if parsed:
                            entries.append((prefix + e.name, e.path, *parsed))
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as e:
                if not prefix:
                    raise storage_error("cannot read the journal folder", e, folder) from e
        return entries

    def ingest(self, con: duckdb.DuckDBPyConnection) -> int:
        """Load every complete, not yet ingested journal (and spool) line into ``con``; return rows inserted."""
        import duckdb

        entries = self._entries()
        if not entries:
            return 0
        archive = self._archive_file if self.archive else None
        try:
            try:
                return ingest_journals(con, entries, False, self.rotate_bytes, archive)
            except duckdb.ConstraintException:
                # A row_id already stored: a journal was read twice (offsets lost or a file copied).
                # Plain INSERT is much faster than INSERT OR IGNORE, so dedupe only when needed.
                return ingest_journals(con, entries, True, self.rotate_bytes, archive)
        except duckdb.Error as e:
            raise self._db_error("could not ingest the journals into", e) from e

    def _archive_file(self, path: str, key: str, end: int) -> bool:
        return archive_journal(self._folder, path, key, end, self.fsync)

    # --- reading ---------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Ingest pending journal rows, run ``sql`` with bound ``params``, return a DataFrame.

        A malformed ``sql`` raises InvalidRequestError; a storage failure StorageError."""
        return self.query_many([(sql, params)])[0]

    def query_tidy(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pd.DataFrame:
        """``tidy(query(sql, params))``, read through Arrow when every column allows (``frames.tidy_arrow``)."""
        return self.query_many([(sql, params)], tidy=True)[0]

    def query_many(self, statements: Sequence[tuple[str, Sequence[Any] | Mapping[str, Any] | None]], *,
                   tidy: bool = False) -> list[pd.DataFrame]:
        """``query`` for several statements on one connection, after one ingest: they see the same rows."""
        self._spool.drain(self.fsync)
        try:
            with self.connect() as con:
                self.ingest(con)
                return [self._run(con, sql, params, tidy) for sql, params in statements]
        except StorageError as e:
            if reason_of(e) not in WRITE_FAULTS:
                raise
        # The data folder cannot be written (read-only, full, not ours, gone), so nothing can be
        # ingested: rather than fail, answer from a read-only view. The database is attached
        # read-only and every journal and spool line not in it yet (and the rows pending in
        # memory) is loaded next to it, in memory; nothing is written. The next read that can
        # write ingests them for good. This costs a scan of the unread lines on every read.
        return [self._query_read_only(sql, params, tidy) for sql, params in statements]

    def _run(self, con: duckdb.DuckDBPyConnection, sql: str, params: Any, tidy: bool = False) -> pd.DataFrame:
        import duckdb

        try:
            if tidy:
                frame = tidy_arrow(con.sql(sql, params=params or None).to_arrow_table())
                if frame is not None:
                    return frame
            df = con.execute(sql, params).df() if params else con.execute(sql).df()
            return tidy_frame(df) if tidy else df
        except duckdb.Error as e:
            io = tuple(getattr(duckdb, n) for n in ("IOException", "OutOfMemoryException", "InternalException",
                                                    "FatalException") if hasattr(duckdb, n))
            if isinstance(e, io) or any(s in str(e).lower() for s in DAMAGED_MESSAGES):
                raise self._db_error("could not read", e) from e
            raise InvalidRequestError(f"query failed: {e}") from e

    def _query_read_only(self, sql: str, params: Any, tidy: bool = False) -> pd.DataFrame:
        import duckdb

        deadline = time.monotonic() + self.lock_timeout
        with gate(self._db_key).hold(deadline, self._timed_out, optional=True):
            con = duckdb.connect(":memory:")
            try:
                try:
                    con.execute("SET TimeZone = 'UTC'")
                except duckdb.Error:
                    pass
                self._attach_read_only(con, duckdb, deadline)
                load_unread(con, self._entries(), list(self._spool.rows))
                return self._run(con, sql, params, tidy)
            finally:
                con.close()

    def _attach_read_only(self, con: duckdb.DuckDBPyConnection, duckdb: Any, deadline: float) -> None:
        """Attach the database as ``_ro``, read-only; an empty one with the schema if there is none."""
        if not self.db_path.exists():
            con.execute("ATTACH ':memory:' AS _ro")
            con.execute("USE _ro")
            con.execute(OFFSETS_DDL)
            for m in self.migrations:
                m.apply(con)
            con.execute("USE memory")
            return
        delay = 0.005
        while True:
            try:
                con.execute(f"ATTACH {sql_literal(str(self.db_path))} AS _ro (READ_ONLY)")
                return
            except duckdb.Error as e:
                msg = str(e)
                if not any(s in msg.lower() for s in LOCKED_MESSAGES):
                    raise self._db_error("cannot read", e, writing=False, opening=True) from e
                if time.monotonic() >= deadline:
                    raise self._timed_out(f"another process ({msg})") from e
                time.sleep(delay)
                delay = min(delay * 2, 0.1)

    def flush(self) -> int:
        """Ingest all pending journal rows now; return how many were inserted."""
        self._spool.drain(self.fsync)
        with self.connect() as con:
            return self.ingest(con)

    # --- repair ----------------------------------------------------------------------------
    def rebuild(self) -> int:
        """Rebuild the database from the journals; return the number of rows it then holds.

        Moves the database aside as ``<name>.corrupt-<UTC time>`` (its ``.wal`` too; see
        ``kept_as``), creates a fresh one (migrations), then loads every archived journal and
        every live journal and spool file, each row once (``row_id``). Rows ingested before
        journals were archived (older versions of the kit) are only in the old file."""
        import duckdb

        self._spool.drain(self.fsync)
        deadline = time.monotonic() + self.lock_timeout
        with gate(self._db_key).hold(deadline, self._timed_out):
            self.kept_as = move_aside(self.db_path, self.label)
            with self.connect() as con:
                try:
                    ingest_archive(con, self._folder)
                except duckdb.Error as e:
                    raise self._db_error("could not rebuild", e) from e
                self.ingest(con)
                tables = [r[0] for r in con.execute(
                    "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
                    " AND schema_name = current_schema()").fetchall()]
                n = 0
                for t in tables:
                    if not t.startswith("_") and any(c == "row_id" for c, _ in table_columns(con, t)):
                        n += con.execute(f"SELECT count(*) FROM {quote_ident(t)}").fetchone()[0]  # type: ignore[index]
                return n

    def scrub_archive(self, table: str, where: Mapping[str, Any], blank: Sequence[str]) -> int:
        """Blank (set to null) the fields ``blank`` of every archived ``table`` row whose fields
        equal ``where``, e.g. a purged memory's content; return how many rows changed.

        Archived journals are rewritten atomically; live journals and the database are the
        caller's (purge them first: ingesting archives the journals of exited writers)."""
        return scrub_archive(self._folder, table, where, blank)
