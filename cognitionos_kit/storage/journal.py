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
second guard. Files whose writer has exited are, once fully ingested, moved gzip-compressed into
``<journal_dir>/archive/`` (so is this process's own journal when it is rotated): the archive
holds every row ever ingested, and :meth:`Store.rebuild` rebuilds a damaged database from it and
the live journals. A writer holds a shared ``flock`` on its file for its whole life, so "exited"
is known exactly (no pid reuse or zombie confusion); without ``fcntl`` (Windows) files are never
archived.

Faults. Every failure to open, read or write says what failed, why in words ("no space left on
device", "read-only file system", "permission denied") and where, as a :class:`StorageError`.
``append(..., keep=True)`` never loses rows to a data folder that cannot be written: it keeps them
in memory and in a spool folder outside the data folder (see :meth:`Store.append`) and writes
them to the journal at the next append or read that can. ``query`` answers from a read-only view
when the folder cannot be written. Everything created under the data folder is private to the
user (files 0600, folders 0700).
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import math
import os
import re
import shutil
import threading
import time
import uuid
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import InvalidRequestError, StorageError
from ..core.validation import clean_text
from .migrations import Migrations

try:
    import fcntl
except ImportError:  # Windows: no flock, so journal files of exited writers are kept
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

__all__ = ["Store", "private_dir", "private_file"]

_HOST = re.sub(r"[^A-Za-z0-9_.-]", "_", os.uname().nodename if hasattr(os, "uname") else os.environ.get("COMPUTERNAME", "host"))
_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CHUNK = 16 << 20  # ingest at most this many journal bytes per INSERT
_GZIP_LEVEL = 1  # ~100 MB/s and 5x smaller for journal lines; level 6 is 2.5x slower for 10% less
_BAD_LINES_SQL = (
    "SELECT count(*) FROM (SELECT unnest(string_split(?, chr(10))) AS line)"
    " WHERE line <> '' AND (NOT json_valid(line) OR json_extract(line, '$.row_id') IS NULL)"
)
_OFFSETS_DDL = 'CREATE TABLE IF NOT EXISTS _journal_offsets (file VARCHAR PRIMARY KEY, "offset" BIGINT NOT NULL)'
_ARCHIVE = "archive"
_SPOOL = "spool/"  # prefix of spool files' keys in _journal_offsets


# --- private files and folders --------------------------------------------------------------
def private_dir(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` and any missing parents as 0700; return it.

    Folders that already exist are left as they are (the user's own choice of permissions); only
    the ones created here are made private (chmod as well, since a umask may be unusual)."""
    p = Path(path)
    try:
        os.mkdir(p, 0o700)
    except FileExistsError:
        if not p.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(p)) from None
        return p
    except FileNotFoundError:
        if p.parent == p:
            raise
        private_dir(p.parent)
        try:
            os.mkdir(p, 0o700)
        except FileExistsError:
            return p
    try:
        os.chmod(p, 0o700)
    except OSError:
        pass
    return p


def private_file(path: str | os.PathLike) -> None:
    """Make the file at ``path`` readable and writable by its owner only (0600), if it exists.

    For files made by others' code (DuckDB, SQLite, pandas): call it right after they create one.
    Never raises: a file we cannot chmod (not ours, read-only folder) is left as it is."""
    try:
        if os.stat(path).st_mode & 0o777 != 0o600:
            os.chmod(path, 0o600)
    except OSError:
        pass


# --- errors that say why and where ----------------------------------------------------------
_NO_SPACE_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_WRITE_FAULTS = frozenset({"no_space", "read_only", "permission", "missing"})  # the folder cannot be written
_NEAR_FULL = 4 << 20  # free bytes under which a failed DuckDB write is blamed on a full disk
_LOCKED = ("could not set lock", "conflicting lock")
_DAMAGED = ("not a valid duckdb database file", "corrupt", "checksum", "could not read enough bytes",
            "replaying wal", "replay wal")
_IO_WORDS = (
    (("no space left on device", "disk quota exceeded", "disk full"), "no_space", "no space left on device"),
    (("read-only file system",), "read_only", "read-only file system"),
    (("permission denied", "operation not permitted"), "permission", "permission denied"),
    (("no such file or directory",), "missing", "no such file or folder"),
)


def _disk_full(path: str | os.PathLike) -> bool:
    p = Path(path)
    while not p.exists() and p.parent != p:
        p = p.parent
    try:
        return shutil.disk_usage(p).free < _NEAR_FULL
    except OSError:
        return False


def _cause(exc: BaseException, path: str | os.PathLike, *, writing: bool = False) -> tuple[str | None, str]:
    """``(reason, words)``: why ``exc`` happened at ``path``, e.g. ``("no_space", "no space left on device at /x")``.

    ``reason`` is one of no_space, read_only, permission, missing, or None. DuckDB hides ENOSPC
    behind messages such as "Could not write file"; with ``writing``, a failure of a write on a
    (nearly) full disk is reported as one."""
    if isinstance(exc, OSError) and exc.errno is not None:
        code = exc.errno
        if code in _NO_SPACE_ERRNOS:
            return "no_space", f"no space left on device at {path}"
        if code == errno.EROFS:
            return "read_only", f"read-only file system at {path}"
        if code in (errno.EACCES, errno.EPERM):
            return "permission", f"permission denied at {path}"
        if code == errno.ENOENT:
            return "missing", f"no such file or folder at {path}"
        if code == errno.ENOTDIR:
            return "missing", f"not a folder at {path}"
        return None, f"{exc.strerror or exc} at {path}"
    low = str(exc).lower()
    for needles, reason, words in _IO_WORDS:
        if any(n in low for n in needles):
            return reason, f"{words} at {path}"
    if writing and _disk_full(path) and (type(exc).__name__ in ("IOException", "TransactionException")
                                        or any(w in low for w in ("write", "commit", "i/o", "flush"))):
        return "no_space", f"no space left on device at {path}"
    return None, f"{str(exc).strip() or type(exc).__name__} (at {path})"


def _error(doing: str, exc: BaseException, path: str | os.PathLike, *, writing: bool = False) -> StorageError:
    """A StorageError ``"<doing>: <cause> at <path>"``; ``.reason`` and ``.cause`` hold the parts."""
    reason, words = _cause(exc, path, writing=writing)
    err = StorageError(f"{doing}: {words}")
    err.reason, err.cause = reason, words  # type: ignore[attr-defined]
    return err


def _reason(exc: BaseException) -> str | None:
    return getattr(exc, "reason", None)


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


# ensure_ascii=False: text is written as UTF-8. Escaped, a lone surrogate ("\ud800", e.g. in a
# server's error message) is valid JSON that DuckDB refuses, which dropped the whole row; raw, it
# fails to encode, and that rare slow path replaces it (see _encode).
_ENC = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_default, ensure_ascii=False)


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


def _encode(table: str, rows: Sequence[Mapping[str, Any]]) -> bytes:
    """The journal lines of ``rows`` as UTF-8 (a ``row_id`` added where missing)."""
    try:
        text = "".join([_line(r if "row_id" in r else {**r, "row_id": uuid.uuid4().hex}) + "\n" for r in rows])
    except (TypeError, ValueError) as e:
        raise InvalidRequestError(f"row for {table} cannot be stored: {e}") from e
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate in some string: U+FFFD instead (JSON text has no others)
        return clean_text(text).encode()


# --- this process's journal files ---------------------------------------------------------
class _Journal:
    """This process's append-only journal for one table in one folder (opened lazily)."""

    def __init__(self, folder: str, table: str) -> None:
        self.folder, self.table = folder, table
        self.lock = threading.Lock()
        self.fd = -1
        self.path = ""
        self.torn = False  # a write failed part-way and could not be undone: start the next one on a fresh line

    def _open(self, fsync: bool) -> None:
        private_dir(self.folder)
        stem = f"{_HOST}-{os.getpid()}-{os.urandom(4).hex()}.{self.table}"
        tmp, path = os.path.join(self.folder, stem + ".tmp"), os.path.join(self.folder, stem + ".jsonl")
        fd = os.open(tmp, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_SH)  # held until we exit: tells ingesters we are alive
            os.rename(tmp, path)  # visible under its real name only once locked
        except BaseException:
            os.close(fd)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        private_file(path)  # in case the umask took more than group and other bits
        if fsync:
            _fsync_dir(self.folder)
        self.fd, self.path, self.torn = fd, path, False

    def write(self, data: bytes, fsync: bool) -> None:
        with self.lock:
            written = 0
            try:
                # Reopen if the file was deleted under us (someone cleared the data folder).
                if self.fd < 0 or os.fstat(self.fd).st_nlink == 0:
                    self.close()
                    self._open(fsync)
                if self.torn:
                    data = b"\n" + data
                while written < len(data):
                    written += os.write(self.fd, data[written:] if written else data)
                if fsync:
                    os.fsync(self.fd)
            except OSError as e:
                if written and self.fd >= 0:
                    # Take back the part that was written (a full disk takes what fits), so the
                    # rows, kept by the caller, are written whole later and no torn line is left.
                    try:
                        os.ftruncate(self.fd, os.fstat(self.fd).st_size - written)
                        written = 0
                    except OSError:
                        pass
                self.torn = self.torn or written > 0
                raise _error("could not write the journal", e, self.folder) from e
            self.torn = False

    def retire(self, path: str, size: int, archive: Callable[[], bool] | None = None) -> bool:
        """Close and delete the file at ``path`` if it still is ours and holds exactly ``size``
        bytes, after ``archive()`` (if given) has saved a copy of it: nothing happens if it fails."""
        with self.lock:
            if self.path != path or self.fd < 0 or os.fstat(self.fd).st_size != size:
                return False
            if archive is not None and not archive():
                return False
            self.close()
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError:
                return False  # it is now a file of an exited writer: archived (again) and removed later
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
_GATES: dict[str, _Gate] = {}


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
        self.private = False  # the lock file's mode was checked (files of older versions were 0644)

    @contextmanager
    def hold(self, deadline: float, timed_out: Any, optional: bool = False) -> Iterator[None]:
        """With ``optional``, a lock file that cannot be opened at all (a read-only folder that has
        none) is skipped instead of raising: for readers that write nothing."""
        if not self.rlock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise timed_out("another thread of this process")
        try:
            if self.depth == 0 and fcntl is not None:
                self._flock(deadline, timed_out, optional)
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

    def _flock(self, deadline: float, timed_out: Any, optional: bool) -> None:
        gap = self.released + self.FAIR_GAP - time.monotonic()
        if gap > 0:
            time.sleep(gap)
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            try:
                fd = os.open(self.lock_path, os.O_RDONLY)  # a read-only folder: a flock needs no write access
            except OSError:
                if optional:
                    return
                raise _error("cannot create the lock file", e, self.lock_path) from e
        if not self.private:
            private_file(self.lock_path)
            self.private = True
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
        self._home = os.path.dirname(self._folder)  # the data folder
        self._digest = hashlib.sha256(self._home.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        # Rows append(keep=True) could not journal, oldest first: (table, lines, row count).
        self._pending: list[tuple[str, bytes, int]] = []
        self._plock = threading.Lock()
        self._pid = os.getpid()
        self._spools: list[_Journal] = []  # this Store's own spool files
        self.fault: StorageError | None = None  # why rows are pending
        self.kept_in: str | None = None  # where they are kept besides memory
        self.episode = 0  # +1 each time rows start being kept: one warning per episode
        self.kept_as: str | None = None  # where rebuild() moved the damaged database

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
        data = _encode(table, rows)
        journal = _journal(self._folder, table)
        if keep and self._pending and not self._drain():
            return self._keep(table, data, len(rows), None)
        try:
            journal.write(data, self.fsync)
        except StorageError as e:
            if not keep:
                raise
            return self._keep(table, data, len(rows), e)
        return True

    @property
    def pending(self) -> int:
        """How many rows ``append(keep=True)`` kept that are not in the journal yet."""
        return sum(n for _, _, n in self._pending)

    def spool_dirs(self) -> list[str]:
        """Where kept rows are spooled, first choice first: ``<parent of home>/.<home name>.spool/``,
        else ``$XDG_STATE_HOME/cognitionos_kit/spool/<sha256 of home>[:16]/`` (default
        ``~/.local/state``), each with a subfolder named like the journal folder."""
        sub = os.path.basename(self._folder)
        parent, name = os.path.split(self._home)
        state = os.environ.get("XDG_STATE_HOME", "")
        if not os.path.isabs(state):
            state = os.path.join(os.path.expanduser("~"), ".local", "state")
        return [os.path.join(parent, f".{name}.spool", sub), os.path.join(state, "cognitionos_kit", "spool", self._digest, sub)]

    def _forget_parent(self) -> None:
        """In a forked child: the parent keeps (and writes) the rows it had pending."""
        if self._pid != os.getpid():
            for j in self._spools:
                j.close()
            self._spools.clear()
            self._pending.clear()
            self.fault = self.kept_in = None
            self._pid = os.getpid()

    def _keep(self, table: str, data: bytes, n: int, err: StorageError | None) -> bool:
        with self._plock:
            self._forget_parent()
            if not self._pending:
                self.episode += 1
            if err is not None:
                self.fault = err
            self._pending.append((table, data, n))
            self.kept_in = self._spool(table, data)
        return False

    def _spool(self, table: str, data: bytes) -> str:
        """Append ``data`` to this Store's spool file for ``table`` in the first spool folder that
        takes it; return that folder, or say the rows are in memory only."""
        causes = []
        for folder in self.spool_dirs():
            j = next((s for s in self._spools if s.folder == folder and s.table == table), None)
            if j is None:
                j = _Journal(folder, table)
                self._spools.append(j)
            for _ in range(2):  # twice: another process may remove an emptied spool folder meanwhile
                try:
                    j.write(data, self.fsync)
                    return folder
                except StorageError as e:
                    cause = getattr(e, "cause", str(e))
                    if _reason(e) != "missing":
                        break
            causes.append(cause)
        return f"memory only (no spool folder could be written either: {'; '.join(causes)}), lost if this process exits first"

    def _drain(self) -> bool:
        """Write the pending rows to the journal; True when none are left (their spool files are
        then removed)."""
        if not self._pending:
            return True
        with self._plock:
            self._forget_parent()
            while self._pending:
                table, data, _ = self._pending[0]
                try:
                    _journal(self._folder, table).write(data, self.fsync)
                except StorageError as e:
                    self.fault = e
                    return False
                del self._pending[0]
            folders = []
            for j in self._spools:
                path = j.path
                j.close()
                if path:
                    try:
                        os.unlink(path)
                    except OSError:
                        pass  # ingested (and archived) once this process has exited; row_id dedupes
                folders.append(j.folder)
            self._spools.clear()
            for folder in dict.fromkeys(folders):
                for d in (folder, os.path.dirname(folder)):  # the spool folder, then its root, if empty
                    try:
                        os.rmdir(d)
                    except OSError:
                        break
            self.fault = self.kept_in = None
            return True

    # --- DuckDB ----------------------------------------------------------------------------
    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
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
                try:
                    con.execute(_OFFSETS_DDL)
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
                self._private_files()  # the .wal exists while the database is open
                try:
                    con.close()
                except duckdb.Error:
                    pass  # a checkpoint that failed (full disk): the WAL keeps the data for the next open

    def _private_files(self) -> None:
        private_file(self.db_path)
        private_file(f"{self.db_path}.wal")

    def _timed_out(self, holder: str) -> StorageError:
        return StorageError(
            f"timed out after {self.lock_timeout:g} s waiting for the lock on {self.db_path}: held by {holder}. "
            "The kit opens the database only for a moment; a long-lived duckdb.connect() elsewhere "
            "(another notebook?) is the likely holder. Close it, or raise lock_timeout."
        )

    def _open(self, duckdb: Any, deadline: float) -> duckdb.DuckDBPyConnection:
        # Kit processes are already kept out by the gate; this waits out anyone else (a DuckDB
        # CLI, a notebook's own duckdb.connect) holding DuckDB's lock on the file.
        import random

        delay = 0.005
        while True:
            try:
                con = duckdb.connect(str(self.db_path))
            except duckdb.Error as e:
                msg = str(e)
                if not any(s in msg.lower() for s in _LOCKED):
                    raise self._db_error("cannot open", e, opening=True) from e
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._timed_out(f"another process ({msg})") from e
                time.sleep(min(left, delay * random.uniform(0.5, 1.5)))
                delay = min(delay * 2, 0.1)
            else:
                self._private_files()
                return con

    def _db_error(self, doing: str, exc: BaseException, *, writing: bool = True, opening: bool = False) -> StorageError:
        """The StorageError for a DuckDB failure (or a StorageError wrapping one): damaged file,
        or the cause in words; ``exc`` itself when it is a StorageError with nothing to add."""
        inner = exc.__cause__ if isinstance(exc, StorageError) and exc.__cause__ is not None else exc
        msg = str(inner).strip()
        low = msg.lower()
        if any(s in low for s in _DAMAGED):
            return self._damaged(msg)
        reason, words = _cause(inner, self.db_path, writing=writing)
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

    def _entries(self) -> list[tuple[str, str, str, str]]:
        """``(key, path, host, table)`` of every journal file and spool file; ``key`` is its name
        in ``_journal_offsets`` (spool files' prefixed with ``spool/``)."""
        entries = []
        for folder, prefix in [(self._folder, "")] + [(d, _SPOOL) for d in self.spool_dirs()]:
            try:
                with os.scandir(folder) as it:
                    for e in it:
                        parsed = _parse_name(e.name)
                        if parsed:
                            entries.append((prefix + e.name, e.path, *parsed))
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as e:
                if not prefix:
                    raise _error("cannot read the journal folder", e, folder) from e
        return entries

    def ingest(self, con: duckdb.DuckDBPyConnection) -> int:
        """Load every complete, not yet ingested journal (and spool) line into ``con``; return rows inserted."""
        import duckdb

        entries = self._entries()
        if not entries:
            return 0
        try:
            try:
                return self._ingest(con, entries, dedupe=False)
            except duckdb.ConstraintException:
                # A row_id already stored: a journal was read twice (offsets lost or a file copied).
                # Plain INSERT is much faster than INSERT OR IGNORE, so dedupe only when needed.
                return self._ingest(con, entries, dedupe=True)
        except duckdb.Error as e:
            raise self._db_error("could not ingest the journals into", e) from e

    def _ingest(self, con: duckdb.DuckDBPyConnection, entries: list[tuple[str, str, str, str]], dedupe: bool) -> int:
        import duckdb

        inserted = 0
        gone: list[tuple[str, str, int]] = []  # (key, path, end) of files whose writer exited, fully read
        rotate: list[tuple[str, str, int]] = []  # fully read and large: replaced if they are ours
        specs: dict[str, tuple[str, str] | None] = {}
        con.begin()
        try:
            offsets = dict(con.execute('SELECT file, "offset" FROM _journal_offsets').fetchall())
            for key, path, host, table in entries:
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
                    raise _error("cannot read the journal", e, path) from e
                with f:
                    # Decide "exited" before reading: a dead writer cannot add lines after we look.
                    dead = _writer_gone(host, f.fileno())
                    start = offsets.get(key, 0)
                    if os.fstat(f.fileno()).st_size < start:  # only if edited by hand: reread, row_id dedupes
                        start = 0
                    end, n = self._ingest_file(con, spec, f, start)
                inserted += n
                if end != offsets.get(key, 0):
                    con.execute(
                        'INSERT INTO _journal_offsets VALUES (?, ?) ON CONFLICT (file) DO UPDATE SET "offset" = excluded."offset"',
                        [key, end],
                    )
                if dead:  # bytes past ``end`` are a line torn by the writer's death: never completed
                    gone.append((key, path, end))
                elif end >= self.rotate_bytes and not key.startswith(_SPOOL):
                    rotate.append((key, path, end))
            present = {e[0] for e in entries}
            stale = [k for k in offsets if k.startswith(_SPOOL) and k not in present]  # spool files written to the journal
            if stale:
                con.execute(f"DELETE FROM _journal_offsets WHERE file IN ({', '.join('?' * len(stale))})", stale)
            con.commit()
        except BaseException:
            try:
                con.rollback()
            except duckdb.Error:
                pass  # a failed commit has rolled back already
            raise
        # Only after the commit: removing a file whose rows were rolled back would lose them.
        dropped = []
        for key, path, end in gone:
            if not self._archive_file(path, key, end):
                continue  # kept, fully ingested: archived (and removed) by a later ingest
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError:
                continue
            dropped.append(key)
        for key, path, end in rotate:
            j = next((j for j in list(_JOURNALS.values()) if j.path == path), None)
            save = (lambda p=path, k=key, e=end: self._archive_file(p, k, e)) if self.archive else None
            if j is not None and j.retire(path, end, save):
                dropped.append(key)
        if dropped:
            try:
                con.execute(f"DELETE FROM _journal_offsets WHERE file IN ({', '.join('?' * len(dropped))})", dropped)
            except duckdb.Error:
                pass  # offsets of files that are gone are harmless (names are never reused)
        return inserted

    def _archive_file(self, path: str, key: str, end: int) -> bool:
        """Save the first ``end`` bytes (the ingested lines) of the journal at ``path``, gzip
        compressed, as ``<journal_dir>/archive/<name>.gz``; False if that failed."""
        if not self.archive or end <= 0:
            return True
        name = key.rpartition("/")[2]
        folder = os.path.join(self._folder, _ARCHIVE)
        tmp = ""
        try:
            private_dir(folder)
            dest = os.path.join(folder, name + ".gz")
            if os.path.exists(dest):  # archived before, but the journal could not be removed then
                stem, table = name[: -len(".jsonl")].rsplit(".", 1)
                dest = os.path.join(folder, f"{stem}~{os.urandom(4).hex()}.{table}.jsonl.gz")
            tmp = os.path.join(folder, "." + os.path.basename(dest) + ".tmp")
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as raw:
                with open(path, "rb") as src, gzip.GzipFile(name, "wb", _GZIP_LEVEL, raw, mtime=0) as gz:
                    left = end
                    while left > 0:
                        chunk = src.read(min(_CHUNK, left))
                        if not chunk:
                            break
                        gz.write(chunk)
                        left -= len(chunk)
                if self.fsync:
                    raw.flush()
                    os.fsync(raw.fileno())
            os.rename(tmp, dest)
            if self.fsync:
                _fsync_dir(folder)
            return True
        except OSError:
            if tmp:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            return False

    def _columns(self, con: duckdb.DuckDBPyConnection, table: str, catalog: str | None = None) -> list[tuple[str, str]]:
        where = "table_catalog = current_database() AND table_schema = current_schema()" if catalog is None \
            else f"table_catalog = {_lit(catalog)} AND table_schema = 'main'"
        return con.execute(
            f"SELECT column_name, data_type FROM information_schema.columns WHERE {where} AND table_name = ?"
            " ORDER BY ordinal_position",
            [table],
        ).fetchall()

    def _table_spec(self, con: duckdb.DuckDBPyConnection, table: str, dedupe: bool, catalog: str | None = None,
                    into: str | None = None) -> tuple[str, str] | None:
        """``(json_transform structure, INSERT statement)`` for ``table`` (inserting into ``into``
        if given), None if it does not exist."""
        cols = self._columns(con, table, catalog)
        if not cols:
            return None
        if "row_id" not in {c for c, _ in cols}:
            raise StorageError(f"table {table} has no row_id column; journaled tables need row_id VARCHAR PRIMARY KEY")
        structure = json.dumps({c: ("VARCHAR" if t.startswith("TIMESTAMP") else t) for c, t in cols})
        return structure, _insert_sql(into or table, cols, dedupe)

    def _ingest_file(self, con: duckdb.DuckDBPyConnection, spec: tuple[str, str], f: Any, start: int) -> tuple[int, int]:
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
    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Ingest pending journal rows, run ``sql`` with bound ``params``, return a DataFrame.

        A malformed ``sql`` raises InvalidRequestError; a storage failure StorageError."""
        self._drain()
        try:
            with self.connect() as con:
                self.ingest(con)
                return self._run(con, sql, params)
        except StorageError as e:
            if _reason(e) not in _WRITE_FAULTS:
                raise
        # The data folder cannot be written (read-only, full, not ours, gone), so nothing can be
        # ingested: rather than fail, answer from a read-only view. The database is attached
        # read-only and every journal and spool line not in it yet (and the rows pending in
        # memory) is loaded next to it, in memory; nothing is written. The next read that can
        # write ingests them for good. This costs a scan of the unread lines on every read.
        return self._query_read_only(sql, params)

    def _run(self, con: duckdb.DuckDBPyConnection, sql: str, params: Any) -> pd.DataFrame:
        import duckdb

        try:
            return con.execute(sql, params).df() if params else con.execute(sql).df()
        except duckdb.Error as e:
            io = tuple(getattr(duckdb, n) for n in ("IOException", "OutOfMemoryException", "InternalException",
                                                    "FatalException") if hasattr(duckdb, n))
            if isinstance(e, io) or any(s in str(e).lower() for s in _DAMAGED):
                raise self._db_error("could not read", e) from e
            raise InvalidRequestError(f"query failed: {e}") from e

    def _query_read_only(self, sql: str, params: Any) -> pd.DataFrame:
        import duckdb

        deadline = time.monotonic() + self.lock_timeout
        with _gate(self._db_key).hold(deadline, self._timed_out, optional=True):
            con = duckdb.connect(":memory:")
            try:
                try:
                    con.execute("SET TimeZone = 'UTC'")
                except duckdb.Error:
                    pass
                self._attach_read_only(con, duckdb, deadline)
                self._load_unread(con)
                return self._run(con, sql, params)
            finally:
                con.close()

    def _attach_read_only(self, con: duckdb.DuckDBPyConnection, duckdb: Any, deadline: float) -> None:
        """Attach the database as ``_ro``, read-only; an empty one with the schema if there is none."""
        if not self.db_path.exists():
            con.execute("ATTACH ':memory:' AS _ro")
            con.execute("USE _ro")
            con.execute(_OFFSETS_DDL)
            for m in self.migrations:
                m.apply(con)
            con.execute("USE memory")
            return
        delay = 0.005
        while True:
            try:
                con.execute(f"ATTACH {_lit(str(self.db_path))} AS _ro (READ_ONLY)")
                return
            except duckdb.Error as e:
                msg = str(e)
                if not any(s in msg.lower() for s in _LOCKED):
                    raise self._db_error("cannot read", e, writing=False, opening=True) from e
                if time.monotonic() >= deadline:
                    raise self._timed_out(f"another process ({msg})") from e
                time.sleep(delay)
                delay = min(delay * 2, 0.1)

    def _load_unread(self, con: duckdb.DuckDBPyConnection) -> None:
        """Make each table of ``_ro`` a view in the default catalog: its rows plus the journal,
        spool and pending rows it does not hold yet (loaded into ``_unread_<table>``)."""
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = '_ro' AND schema_name = 'main'").fetchall()]
        offsets = dict(con.execute('SELECT file, "offset" FROM _ro.main._journal_offsets').fetchall()) \
            if "_journal_offsets" in tables else {}
        specs: dict[str, tuple[str, str]] = {}
        for t in tables:
            if not t.startswith("_") and any(c == "row_id" for c, _ in self._columns(con, t, "_ro")):
                con.execute(f"CREATE TABLE {_q('_unread_' + t)} AS SELECT * FROM _ro.main.{_q(t)} LIMIT 0")
                specs[t] = self._table_spec(con, t, False, "_ro", "_unread_" + t)  # type: ignore[assignment]
            else:
                con.execute(f"CREATE VIEW {_q(t)} AS SELECT * FROM _ro.main.{_q(t)}")
        for key, path, _host, table in self._entries():
            if table not in specs:
                continue
            try:
                f = open(path, "rb")
            except FileNotFoundError:
                continue
            except OSError as e:
                raise _error("cannot read the journal", e, path) from e
            with f:
                start = offsets.get(key, 0)
                self._ingest_file(con, specs[table], f, start if os.fstat(f.fileno()).st_size >= start else 0)
        for table, data, _ in list(self._pending):
            if table in specs:
                con.execute(specs[table][1], [specs[table][0], data.decode("utf-8", "replace")])
        for t in specs:
            src, new = f"_ro.main.{_q(t)}", _q("_unread_" + t)
            con.execute(
                f"CREATE VIEW {_q(t)} AS SELECT * FROM {src} UNION ALL SELECT * FROM (SELECT DISTINCT ON (row_id) * FROM {new}) n"
                f" WHERE NOT EXISTS (SELECT 1 FROM {src} o WHERE o.row_id = n.row_id)"
            )

    def flush(self) -> int:
        """Ingest all pending journal rows now; return how many were inserted."""
        self._drain()
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

        self._drain()
        deadline = time.monotonic() + self.lock_timeout
        with _gate(self._db_key).hold(deadline, self._timed_out):
            self.kept_as = self._move_aside()
            with self.connect() as con:
                try:
                    self._ingest_archive(con)
                except duckdb.Error as e:
                    raise self._db_error("could not rebuild", e) from e
                self.ingest(con)
                tables = [r[0] for r in con.execute(
                    "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
                    " AND schema_name = current_schema()").fetchall()]
                n = 0
                for t in tables:
                    if not t.startswith("_") and any(c == "row_id" for c, _ in self._columns(con, t)):
                        n += con.execute(f"SELECT count(*) FROM {_q(t)}").fetchone()[0]  # type: ignore[index]
                return n

    def _move_aside(self) -> str | None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        dest, n = f"{self.db_path}.corrupt-{stamp}", 1
        while os.path.exists(dest) or os.path.exists(dest + ".wal"):
            n += 1
            dest = f"{self.db_path}.corrupt-{stamp}-{n}"
        moved = False
        for src, dst in ((str(self.db_path), dest), (f"{self.db_path}.wal", dest + ".wal")):
            try:
                os.rename(src, dst)
                moved = True
            except FileNotFoundError:
                pass
            except OSError as e:
                raise _error(f"cannot move the {self.label} aside", e, src) from e
        return dest if moved else None

    def scrub_archive(self, table: str, where: Mapping[str, Any], blank: Sequence[str]) -> int:
        """Blank (set to null) the fields ``blank`` of every archived ``table`` row whose fields
        equal ``where``, e.g. a purged memory's content; return how many rows changed.

        Archived journals are rewritten atomically; live journals and the database are the
        caller's (purge them first: ingesting archives the journals of exited writers)."""
        folder = os.path.join(self._folder, _ARCHIVE)
        try:
            names = sorted(n for n in os.listdir(folder) if n.endswith(f".{table}.jsonl.gz"))
        except FileNotFoundError:
            return 0
        except OSError as e:
            raise _error("cannot read the journal archive", e, folder) from e
        # Cheap pre-filter on the raw bytes: only lines holding every (ASCII) value are parsed.
        needles = [json.dumps(v).encode() for v in where.values() if isinstance(v, str) and v.isascii()]
        changed = 0
        for name in names:
            path = os.path.join(folder, name)
            tmp = os.path.join(folder, f".{name}.tmp")
            try:
                with gzip.open(path, "rb") as f:
                    data = f.read()
                if not all(n in data for n in needles):
                    continue
                lines, n = data.split(b"\n"), 0
                for i, line in enumerate(lines):
                    if not line or not all(nd in line for nd in needles):
                        continue
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(obj, dict) and all(obj.get(k) == v for k, v in where.items()):
                        obj.update({b: None for b in blank if b in obj})
                        lines[i] = _encode(table, [obj]).rstrip(b"\n")
                        n += 1
                if not n:
                    continue
                with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as raw:
                    with gzip.GzipFile(name[: -len(".gz")], "wb", _GZIP_LEVEL, raw, mtime=0) as gz:
                        gz.write(b"\n".join(lines))
                    raw.flush()
                    os.fsync(raw.fileno())
                os.rename(tmp, path)
                changed += n
            except (OSError, EOFError, zlib.error) as e:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise _error("cannot rewrite the archived journal", e, path) from e
        return changed

    def _ingest_archive(self, con: duckdb.DuckDBPyConnection) -> int:
        folder = os.path.join(self._folder, _ARCHIVE)
        try:
            names = sorted(n for n in os.listdir(folder) if n.endswith(".jsonl.gz"))
        except FileNotFoundError:
            return 0
        except OSError as e:
            raise _error("cannot read the journal archive", e, folder) from e
        specs: dict[str, tuple[str, str] | None] = {}
        inserted = 0
        con.begin()
        try:
            for name in names:
                parsed = _parse_name(name[: -len(".gz")])
                if parsed is None:
                    continue
                table = parsed[1]
                if table not in specs:
                    specs[table] = self._table_spec(con, table, dedupe=True)
                spec = specs[table]
                if spec is None:
                    continue
                path = os.path.join(folder, name)
                try:
                    with gzip.open(path, "rb") as f:
                        inserted += self._ingest_file(con, spec, f, 0)[1]
                except (OSError, EOFError, zlib.error) as e:
                    warnings.warn(f"the archived journal {path} is damaged ({e}): rows past the damage were not restored",
                                  RuntimeWarning, stacklevel=3)
            con.commit()
        except BaseException:
            try:
                con.rollback()
            except Exception:
                pass
            raise
        return inserted
