"""Private files and folders: everything the kit creates under a data folder is the user's only
(files 0600, folders 0700)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = ["fsync_dir", "private_dir", "private_file"]


def private_dir(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` and any missing parents as 0700; return it.

    Folders that already exist are left as they are (the user's own choice of permissions); only
    the ones created here are made private (chmod as well, since a umask may be unusual). Raises
    OSError like ``os.mkdir``: callers in storage turn it into a StorageError that says why."""
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


def fsync_dir(folder: str) -> None:
    """Make the entries of ``folder`` (a file created or renamed in it) durable; never raises."""
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
