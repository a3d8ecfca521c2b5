"""The journal archive, ``<journal_dir>/archive/``: every fully ingested journal, gzip-compressed,
so that a damaged database can be rebuilt from it and the live journals."""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import warn_user
from .faults import storage_error
from .files import fsync_dir, private_dir
from .ingest import CHUNK, ingest_file, table_spec
from .journal import encode_rows, parse_name

if TYPE_CHECKING:
    import duckdb

__all__ = ["archive_journal", "ingest_archive", "move_aside", "scrub_archive"]

_ARCHIVE = "archive"
# Level 1: fast and already several times smaller for journal lines; level 6 is much slower for
# files only somewhat smaller (measured by benchmarks/bench_choices.py; figures in the README).
_GZIP_LEVEL = 1


def archive_journal(journal_dir: str, path: str, key: str, end: int, fsync: bool) -> bool:
    """Save the first ``end`` bytes (the ingested lines) of the journal at ``path`` (``key`` in
    ``_journal_offsets``), gzip compressed, as ``<journal_dir>/archive/<name>.gz``; False if that failed."""
    if end <= 0:
        return True
    name = key.rpartition("/")[2]
    folder = os.path.join(journal_dir, _ARCHIVE)
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
                    chunk = src.read(min(CHUNK, left))
                    if not chunk:
                        break
                    gz.write(chunk)
                    left -= len(chunk)
            if fsync:
                raw.flush()
                os.fsync(raw.fileno())
        os.rename(tmp, dest)
        if fsync:
            fsync_dir(folder)
        return True
    except OSError:
        if tmp:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        return False


def move_aside(db_path: Path, label: str) -> str | None:
    """Rename the database at ``db_path`` (and its ``.wal``) to ``<name>.corrupt-<UTC time>``;
    return that path, or None if there was nothing to move. ``label`` names it in errors."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    dest, n = f"{db_path}.corrupt-{stamp}", 1
    while os.path.exists(dest) or os.path.exists(dest + ".wal"):
        n += 1
        dest = f"{db_path}.corrupt-{stamp}-{n}"
    moved = False
    for src, dst in ((str(db_path), dest), (f"{db_path}.wal", dest + ".wal")):
        try:
            os.rename(src, dst)
            moved = True
        except FileNotFoundError:
            pass
        except OSError as e:
            raise storage_error(f"cannot move the {label} aside", e, src) from e
    return dest if moved else None


def scrub_archive(journal_dir: str, table: str, where: Mapping[str, Any], blank: Sequence[str]) -> int:
    """Blank (set to null) the fields ``blank`` of every archived ``table`` row whose fields
    equal ``where``, e.g. a purged memory's content; return how many rows changed.

    Archived journals are rewritten atomically; live journals and the database are the
    caller's (purge them first: ingesting archives the journals of exited writers)."""
    folder = os.path.join(journal_dir, _ARCHIVE)
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(f".{table}.jsonl.gz"))
    except FileNotFoundError:
        return 0
    except OSError as e:
        raise storage_error("cannot read the journal archive", e, folder) from e
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
                    lines[i] = encode_rows(table, [obj]).rstrip(b"\n")
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
            raise storage_error("cannot rewrite the archived journal", e, path) from e
    return changed


def ingest_archive(con: duckdb.DuckDBPyConnection, journal_dir: str) -> int:
    """Insert every archived journal's rows into ``con`` (each ``row_id`` once); return rows inserted."""
    folder = os.path.join(journal_dir, _ARCHIVE)
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".jsonl.gz"))
    except FileNotFoundError:
        return 0
    except OSError as e:
        raise storage_error("cannot read the journal archive", e, folder) from e
    specs: dict[str, tuple[str, str] | None] = {}
    inserted = 0
    con.begin()
    try:
        for name in names:
            parsed = parse_name(name[: -len(".gz")])
            if parsed is None:
                continue
            table = parsed[1]
            if table not in specs:
                specs[table] = table_spec(con, table, dedupe=True)
            spec = specs[table]
            if spec is None:
                continue
            path = os.path.join(folder, name)
            try:
                with gzip.open(path, "rb") as f:
                    inserted += ingest_file(con, spec, f, 0)[1]
            except (OSError, EOFError, zlib.error) as e:
                warn_user(f"the archived journal {path} is damaged ({e}): rows past the damage were not restored",
                              RuntimeWarning)
        con.commit()
    except BaseException:
        try:
            con.rollback()
        except Exception:
            pass
        raise
    return inserted
