"""Rows a Store could not journal (read-only or full data folder, permission denied), kept in
memory and in spool files outside the data folder until they can be written to the journal."""

from __future__ import annotations

import hashlib
import os
import threading

from ..core.errors import StorageError
from .faults import reason_of
from .journal import JournalFile, own_journal

__all__ = ["SPOOL_PREFIX", "Spool"]

SPOOL_PREFIX = "spool/"  # prefix of spool files' keys in _journal_offsets


class Spool:
    """The rows ``Store.append(keep=True)`` could not journal to ``journal_folder`` (a real path),
    oldest first, as ``(table, lines, row count)``; :meth:`drain` writes them to the journal."""

    def __init__(self, journal_folder: str) -> None:
        self.journal_folder = journal_folder
        self.home = os.path.dirname(journal_folder)  # the data folder
        self.digest = hashlib.sha256(self.home.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        self.rows: list[tuple[str, bytes, int]] = []
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.files: list[JournalFile] = []  # this Spool's own spool files
        self.fault: StorageError | None = None  # why rows are pending
        self.kept_in: str | None = None  # where they are kept besides memory
        self.episode = 0  # +1 each time rows start being kept: one warning per episode

    @property
    def count(self) -> int:
        """How many rows are kept."""
        return sum(n for _, _, n in self.rows)

    def dirs(self) -> list[str]:
        """Where kept rows are spooled, first choice first: ``<parent of home>/.<home name>.spool/``,
        else ``$XDG_STATE_HOME/cognitionos_kit/spool/<sha256 of home>[:16]/`` (default
        ``~/.local/state``), each with a subfolder named like the journal folder."""
        sub = os.path.basename(self.journal_folder)
        parent, name = os.path.split(self.home)
        state = os.environ.get("XDG_STATE_HOME", "")
        if not os.path.isabs(state):
            state = os.path.join(os.path.expanduser("~"), ".local", "state")
        return [os.path.join(parent, f".{name}.spool", sub), os.path.join(state, "cognitionos_kit", "spool", self.digest, sub)]

    def _forget_parent(self) -> None:
        """In a forked child: the parent keeps (and writes) the rows it had pending."""
        if self.pid != os.getpid():
            for j in self.files:
                j.close()
            self.files.clear()
            self.rows.clear()
            self.fault = self.kept_in = None
            self.pid = os.getpid()

    def keep(self, table: str, data: bytes, n: int, err: StorageError | None, fsync: bool) -> bool:
        """Keep the ``n`` rows journal lines ``data`` of ``table`` could not be written (``err`` says
        why, if it is known); return False, what ``Store.append`` returns then."""
        with self.lock:
            self._forget_parent()
            if not self.rows:
                self.episode += 1
            if err is not None:
                self.fault = err
            self.rows.append((table, data, n))
            self.kept_in = self._write(table, data, fsync)
        return False

    def _write(self, table: str, data: bytes, fsync: bool) -> str:
        """Append ``data`` to this Spool's file for ``table`` in the first spool folder that takes
        it; return that folder, or say the rows are in memory only."""
        causes = []
        for folder in self.dirs():
            j = next((s for s in self.files if s.folder == folder and s.table == table), None)
            if j is None:
                j = JournalFile(folder, table)
                self.files.append(j)
            for _ in range(2):  # twice: another process may remove an emptied spool folder meanwhile
                try:
                    j.write(data, fsync)
                    return folder
                except StorageError as e:
                    cause = getattr(e, "cause", str(e))
                    if reason_of(e) != "missing":
                        break
            causes.append(cause)
        return f"memory only (no spool folder could be written either: {'; '.join(causes)}), lost if this process exits first"

    def drain(self, fsync: bool) -> bool:
        """Write the kept rows to the journal; True when none are left (their spool files are
        then removed)."""
        if not self.rows:
            return True
        with self.lock:
            self._forget_parent()
            while self.rows:
                table, data, _ = self.rows[0]
                try:
                    own_journal(self.journal_folder, table).write(data, fsync)
                except StorageError as e:
                    self.fault = e
                    return False
                del self.rows[0]
            folders = []
            for j in self.files:
                path = j.path
                j.close()
                if path:
                    try:
                        os.unlink(path)
                    except OSError:
                        pass  # ingested (and archived) once this process has exited; row_id dedupes
                folders.append(j.folder)
            self.files.clear()
            for folder in dict.fromkeys(folders):
                for d in (folder, os.path.dirname(folder)):  # the spool folder, then its root, if empty
                    try:
                        os.rmdir(d)
                    except OSError:
                        break
            self.fault = self.kept_in = None
            return True
