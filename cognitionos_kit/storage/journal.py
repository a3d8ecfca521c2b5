"""This process's append-only journal files, one per table and folder, and their JSON lines.

A file is named ``<host>-<pid>-<random>.<table>.jsonl``; each batch of rows is one ``os.write``,
so once it returns the rows survive the process being killed (power loss too, with ``fsync``).
A writer holds a shared ``flock`` on its file for its whole life, so an ingester knows exactly
when the writer has exited (no pid reuse or zombie confusion); without ``fcntl`` (Windows) that
is never known and such files are never archived.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timezone
from typing import Any

import orjson

from ..core.errors import InvalidRequestError
from ..core.validation import clean_text
from .faults import storage_error
from .files import fsync_dir, private_dir, private_file

try:
    import fcntl
except ImportError:  # Windows: no flock, so journal files of exited writers are kept
    fcntl = None  # type: ignore[assignment]

__all__ = ["HOST", "JournalFile", "encode_rows", "journal_at", "own_journal", "parse_name", "writer_gone"]

HOST = re.sub(r"[^A-Za-z0-9_.-]", "_", os.uname().nodename if hasattr(os, "uname") else os.environ.get("COMPUTERNAME", "host"))
_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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
    raise TypeError(f"{type(o).__name__} is not JSON serializable")  # json's protocol; encode_rows raises InvalidRequestError


# The slow path's encoder. ensure_ascii=False: text is written as UTF-8. Escaped, a lone
# surrogate ("\ud800", e.g. in a server's error message) is valid JSON that DuckDB refuses, which
# dropped the whole row; raw, it fails to encode, and that rare path replaces it (see encode_rows).
_ENC = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_default, ensure_ascii=False)
# orjson writes the same compact UTF-8 JSON about ten times faster than json (every ledger row
# and text-log row of every call goes through here). Datetimes go through _default, as with json;
# NaN and infinities become null, as _finite makes them.
_FAST = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_APPEND_NEWLINE


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


def _slow_line(row: Mapping[str, Any]) -> bytes:
    """What orjson refused (a lone surrogate, an int past 64 bits, a non-string key): json's way."""
    try:
        text = _ENC.encode(row)
    except ValueError:  # NaN or infinity somewhere
        text = _ENC.encode(_finite(row))
    try:
        return text.encode() + b"\n"
    except UnicodeEncodeError:  # a lone surrogate in some string: U+FFFD instead (JSON text has no others)
        return clean_text(text).encode() + b"\n"


def _line(row: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(row, default=_default, option=_FAST)
    except orjson.JSONEncodeError:
        return _slow_line(row)


def encode_rows(table: str, rows: Sequence[Mapping[str, Any]]) -> bytes:
    """The journal lines of ``rows`` as UTF-8 (a ``row_id`` added where missing)."""
    try:
        return b"".join([_line(r if "row_id" in r else {**r, "row_id": uuid.uuid4().hex}) for r in rows])
    except (TypeError, ValueError) as e:
        raise InvalidRequestError(f"row for {table} cannot be stored: {e}") from e


# --- this process's journal files ---------------------------------------------------------
class JournalFile:
    """This process's append-only journal for one table in one folder (opened lazily)."""

    def __init__(self, folder: str, table: str) -> None:
        self.folder, self.table = folder, table
        self.lock = threading.Lock()
        self.fd = -1
        self.path = ""
        self.torn = False  # a write failed part-way and could not be undone: start the next one on a fresh line

    def _open(self, fsync: bool) -> None:
        private_dir(self.folder)
        stem = f"{HOST}-{os.getpid()}-{os.urandom(4).hex()}.{self.table}"
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
            fsync_dir(self.folder)
        self.fd, self.path, self.torn = fd, path, False
        _opened(self)

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
                raise storage_error("could not write the journal", e, self.folder) from e
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
            _OPEN.pop(self, None)
            try:
                os.close(self.fd)
            except OSError:
                pass
        self.fd, self.path = -1, ""


_JOURNALS: dict[tuple[str, str], JournalFile] = {}
_REGISTRY_LOCK = threading.Lock()

# A process that writes into many folders (a notebook making a Kit per experiment, a test suite)
# would otherwise hold two descriptors per folder for its whole life. Past MAX_OPEN the least
# recently opened idle file is closed: unlocked, it is then an exited writer's file, ingested and
# removed as usual, and the next write to that folder opens a fresh one.
MAX_OPEN = 64
_OPEN: dict[JournalFile, None] = {}  # insertion-ordered: oldest first


def _opened(j: JournalFile) -> None:
    _OPEN[j] = None
    for other in list(_OPEN)[: max(0, len(_OPEN) - MAX_OPEN)]:
        if other is not j and other.lock.acquire(blocking=False):  # busy ones stay open for now
            try:
                other.close()
            finally:
                other.lock.release()


def own_journal(folder: str, table: str) -> JournalFile:
    """This process's journal file for ``table`` in ``folder`` (one per process, made on first use)."""
    j = _JOURNALS.get((folder, table))
    if j is None:
        if not _TABLE_RE.match(table):
            raise InvalidRequestError(f"invalid table name {table!r}")
        with _REGISTRY_LOCK:
            j = _JOURNALS.setdefault((folder, table), JournalFile(folder, table))
    return j


def journal_at(path: str) -> JournalFile | None:
    """This process's open journal file at ``path``, if it is one."""
    return next((j for j in list(_JOURNALS.values()) if j.path == path), None)


def _after_fork_in_child() -> None:
    # The child must not write into (or delete) files named after its parent's pid.
    global _REGISTRY_LOCK
    for j in _JOURNALS.values():
        j.close()
    _JOURNALS.clear()
    _OPEN.clear()
    _REGISTRY_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def parse_name(name: str) -> tuple[str, str] | None:
    """``(host, table)`` from a journal file name, or None if it is not one."""
    if not name.endswith(".jsonl"):
        return None
    writer, _, table = name[: -len(".jsonl")].rpartition(".")
    parts = writer.rsplit("-", 2)
    if len(parts) != 3 or not _TABLE_RE.match(table):
        return None
    return parts[0], table


def writer_gone(host: str, fd: int) -> bool:
    """True if the process that wrote this file has exited (it no longer holds its flock)."""
    if fcntl is None or host != HOST:  # other machines' processes cannot be checked
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True

