"""A large collection's current memories saved beside the database, so a new process is ready to
search in seconds instead of re-reading (and decoding) every event.

A snapshot is two files in ``<home>/memory-snapshots/``: the vectors as raw float32 rows
(``<key>.<token>.f32``), memory-mapped copy-on-write (pages are read as searches touch them, and a
changed row copies only its page), and the other columns as one uncompressed Arrow IPC file
(``<key>.arrow``), memory-mapped too, so contents and metadata are read only for the hits a search
returns. The Arrow file is written last and renamed into place: it names its vector file and
holds the watermark it reflects (the last event ``seq`` and access ``seq``, and the ``row_id`` at
that event ``seq``, so a rebuilt database -- new seqs -- is never mistaken for the same one).
A loader reads the snapshot, then the events after its watermark, as any process catches up.
The approximate index built over a snapshot's rows is saved beside it (``<key>.<mark>.<tag>.faiss``,
the tag naming its kind and settings, e.g. ``nlist4000`` or ``scan96.0of2``): the next process reads
it (a second or less at 1M) instead of training and filling a new one.

Only collections of at least ``SNAPSHOT_MIN`` memories get one (smaller ones load from DuckDB in
well under a second). A purge deletes the collection's snapshots: they hold the purged text.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..storage.files import private_dir, private_file

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

__all__ = ["Snapshot", "SNAPSHOT_MIN", "read", "allocate", "write", "purge_stamp", "remove", "ROW_COLUMNS",
           "read_index", "write_index"]

SNAPSHOT_MIN = 50_000
ROW_COLUMNS = ("memory_id", "user_id", "scope", "agent_id", "memory_type", "content", "content_hash", "metadata",
               "model", "ts", "created_at", "updated_at", "access_n", "access_last")  # fmt: skip
_FORMAT = 1


class Snapshot(NamedTuple):
    """A loaded snapshot: the row columns (memory-mapped Arrow), the vectors (memory-mapped,
    copy-on-write) and what it reflects."""

    rows: pa.Table
    vectors: np.ndarray
    model: str
    seq: int
    access_seq: int
    mark: str  # the row_id of the event at ``seq``
    stale: int  # memories of the collection embedded with another model, left out


def folder(home: Path) -> Path:
    return home / "memory-snapshots"


def key(collection: str) -> str:
    return hashlib.sha256(collection.encode()).hexdigest()[:24]


def read(home: Path, collection: str) -> Snapshot | None:
    """The collection's snapshot, or None (none, unreadable, or another format: the caller loads
    from the database and writes a new one)."""
    import numpy as np
    import pyarrow as pa

    path = folder(home) / f"{key(collection)}.arrow"
    try:
        source = pa.memory_map(str(path), "r")
        rows = pa.ipc.open_file(source).read_all()
        meta = json.loads((rows.schema.metadata or {})[b"cognitionos"])
        if meta["format"] != _FORMAT or meta["collection"] != collection:
            return None
        n, dim = rows.num_rows, int(meta["dim"])
        vec_path = folder(home) / meta["vectors"]
        if os.path.getsize(vec_path) != 4 * n * dim:
            return None
        vectors = np.memmap(vec_path, dtype="<f4", mode="c", shape=(n, dim)) if n else np.zeros((0, dim), np.float32)
    except (OSError, KeyError, ValueError, pa.ArrowException):
        return None
    return Snapshot(rows, vectors, str(meta["model"]), int(meta["seq"]), int(meta["access_seq"]), str(meta["mark"]),
                    int(meta.get("stale", 0)))


def allocate(home: Path, collection: str, n: int, dim: int) -> np.ndarray | None:
    """A new vector file for ``n`` rows of ``dim`` float32, mapped for writing (``write`` then saves
    it as the snapshot's), or None when the folder cannot hold it. The space is reserved up front:
    writing into a mapped file on a full disk would kill the process (SIGBUS), not raise."""
    import numpy as np

    d = folder(home)
    path = d / f"{key(collection)}.{uuid.uuid4().hex[:12]}.f32.tmp"
    try:
        private_dir(d)  # 0700, as the rest of the kit's home: the snapshot holds the memories' text
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.posix_fallocate(fd, 0, 4 * n * dim)
        finally:
            os.close(fd)
        return np.memmap(path, dtype="<f4", mode="r+", shape=(n, dim))
    except OSError:
        path.unlink(missing_ok=True)
        return None


def write(home: Path, collection: str, rows: pa.Table, vectors: np.ndarray, *, model: str, seq: int, access_seq: int,
          mark: str, stale: int = 0, purged: str | None = None) -> bool:
    """Save ``rows`` (the ``ROW_COLUMNS``) and their ``vectors`` (a file from ``allocate``, or an
    array) as the collection's snapshot, replacing any older one. False if it could not be saved
    (disk full, read-only folder), or if a purge came after ``purged`` (the ``purge_stamp`` read
    before the rows were): then there is no snapshot, never a half-written one or one holding
    purged text. (Checked after the rename: a purge stamps before it deletes, so one of the two
    always removes the file.)"""
    import numpy as np
    import pyarrow as pa

    d = folder(home)
    base = key(collection)
    token = uuid.uuid4().hex[:12]
    vec_name = f"{base}.{token}.f32"
    tmp_arrow = d / f"{base}.{token}.arrow.tmp"
    try:
        private_dir(d)  # 0700, as the rest of the kit's home: the snapshot holds the memories' text
        if isinstance(vectors, np.memmap) and vectors.filename and Path(vectors.filename).parent == d:
            vectors.flush()
            os.replace(vectors.filename, d / vec_name)  # the mapping follows the file
        else:
            with open(os.open(d / vec_name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
                np.ascontiguousarray(vectors, dtype="<f4").tofile(f)
        meta = {"format": _FORMAT, "collection": collection, "model": model, "dim": int(vectors.shape[1]),
                "vectors": vec_name, "seq": int(seq), "access_seq": int(access_seq), "mark": mark, "stale": int(stale)}
        table = rows.select(list(ROW_COLUMNS)).replace_schema_metadata({"cognitionos": json.dumps(meta)})
        with pa.OSFile(str(tmp_arrow), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            private_file(tmp_arrow)  # before the rows are in it
            writer.write_table(table)
        os.replace(tmp_arrow, d / f"{base}.arrow")
    except OSError:
        for p in (d / vec_name, tmp_arrow):
            p.unlink(missing_ok=True)
        return False
    if purged is not None and purge_stamp(home, collection) != purged:
        (d / f"{base}.arrow").unlink(missing_ok=True)
        (d / vec_name).unlink(missing_ok=True)
        return False
    _drop_old_vectors(d, base, keep=vec_name)
    return True


def remove(home: Path, collection: str) -> None:
    """Delete the collection's snapshot files (after a purge: they hold the purged text), first
    stamping the purge (``purge_stamp``) so a snapshot being written from older rows is not kept."""
    d = folder(home)
    base = key(collection)
    try:
        private_dir(d)  # 0700, as the rest of the kit's home: the snapshot holds the memories' text
        (d / f"{base}.purged").write_text(uuid.uuid4().hex)
    except OSError:
        pass
    (d / f"{base}.arrow").unlink(missing_ok=True)
    _drop_old_vectors(d, base, keep=None)


def purge_stamp(home: Path, collection: str) -> str:
    """The collection's last purge, as a token ("" if none): read before the rows a snapshot is
    written from, and handed to ``write``."""
    try:
        return (folder(home) / f"{key(collection)}.purged").read_text()
    except OSError:
        return ""


def _drop_old_vectors(d: Path, base: str, keep: str | None) -> None:
    """Delete the collection's vector files but ``keep``, half-written files and the approximate
    indexes of older snapshots. A process that mapped an older vector file keeps reading it after
    the unlink (POSIX)."""
    try:
        names = [e.name for e in os.scandir(d) if e.name.startswith(base + ".") and e.name != keep
                 and e.name.endswith((".f32", ".tmp", ".faiss"))]
    except FileNotFoundError:
        return
    for name in names:
        try:
            (d / name).unlink()
        except OSError:
            pass


def _index_path(home: Path, collection: str, mark: str, tag: str) -> Path:
    return folder(home) / f"{key(collection)}.{mark[:16]}.{tag}.faiss"


def read_index(home: Path, collection: str, mark: str, tag: str) -> Any:
    """The saved approximate index (a faiss index) of the snapshot ``mark`` that ``tag`` names
    (its kind and settings, e.g. ``nlist4000``), or None."""
    import faiss

    path = _index_path(home, collection, mark, tag)
    if not path.exists():
        return None
    try:
        return faiss.read_index(str(path))
    except RuntimeError:  # damaged or from another faiss: build a new one
        return None


def write_index(home: Path, collection: str, mark: str, tag: str, index: Any) -> None:
    """Save ``index`` (over the snapshot's rows, as ``ApproximateIndex`` built it) beside the snapshot;
    a failure only means the next process builds its own."""
    import faiss

    path = _index_path(home, collection, mark, tag)
    tmp = path.with_name(path.name + f".{uuid.uuid4().hex[:8]}.tmp")
    try:
        faiss.write_index(index, str(tmp))
        private_file(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError):
        tmp.unlink(missing_ok=True)
