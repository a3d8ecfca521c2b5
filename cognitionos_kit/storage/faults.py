"""Storage errors that say what failed, why in words ("no space left on device", "read-only file
system", "permission denied") and where."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from ..core.errors import StorageError

__all__ = ["DAMAGED_MESSAGES", "LOCKED_MESSAGES", "STILL_ATTACHED", "WRITE_FAULTS", "cause", "reason_of", "storage_error"]

_NO_SPACE_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
WRITE_FAULTS = frozenset({"no_space", "read_only", "permission", "missing"})  # the folder cannot be written
_NEAR_FULL = 4 << 20  # free bytes under which a failed DuckDB write is blamed on a full disk
LOCKED_MESSAGES = ("could not set lock", "conflicting lock")  # DuckDB's words for a file another process holds
STILL_ATTACHED = "unique file handle conflict"  # this process's DuckDB instance has not yet let go of the file
DAMAGED_MESSAGES = ("not a valid duckdb database file", "corrupt", "checksum", "could not read enough bytes",
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


def cause(exc: BaseException, path: str | os.PathLike, *, writing: bool = False) -> tuple[str | None, str]:
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


def storage_error(doing: str, exc: BaseException, path: str | os.PathLike, *, writing: bool = False) -> StorageError:
    """A StorageError ``"<doing>: <cause> at <path>"``; ``.reason`` and ``.cause`` hold the parts."""
    reason, words = cause(exc, path, writing=writing)
    err = StorageError(f"{doing}: {words}")
    err.reason, err.cause = reason, words  # type: ignore[attr-defined]
    return err


def reason_of(exc: BaseException) -> str | None:
    """The ``reason`` of a StorageError made here (no_space, read_only, ...), else None."""
    return getattr(exc, "reason", None)
