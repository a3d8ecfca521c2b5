"""Loading journal lines into DuckDB: one ``INSERT ... SELECT`` over ``json_transform`` per block
of complete lines, so a block of rows costs one statement, whatever its size.

A finished journal (its writer exited) of ``WHOLE_MIN`` to ``WHOLE_MAX`` bytes is read instead by
DuckDB's own JSON reader in one statement, which parses in parallel: a 1M-row ledger backlog folds
in about half the time. Larger files (a million memories' vectors: 2.4 GB) stay on the block path,
whose memory stays flat (the JSON reader peaked at 7.6 GiB on that file, the blocks at 2.9 GiB).
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import IO, TYPE_CHECKING

from ..core.errors import StorageError
from .faults import storage_error
from .journal import journal_at, writer_gone
from .spool import SPOOL_PREFIX

if TYPE_CHECKING:
    import gzip

    import duckdb

__all__ = [
    "CHUNK", "OFFSETS_DDL", "Entry", "ingest_file", "ingest_journals", "insert_block", "insert_sql", "load_unread",
    "quote_ident", "sql_literal",
    "table_columns", "table_spec",
]

Entry = tuple[str, str, str, str]  # a journal or spool file: (its key in _journal_offsets, path, host, table)

CHUNK = 16 << 20  # ingest at most this many journal bytes per INSERT
WHOLE_MIN, WHOLE_MAX = 32 << 20, 1 << 30  # finished journals this large are read by DuckDB's JSON reader
_FROM_LINES = ("unnest(json_transform(line, ?)) FROM (SELECT unnest(string_split(?, chr(10))) AS line)"
               " WHERE line <> '' AND json_valid(line)")
_BAD_LINES_SQL = (
    "SELECT count(*) FROM (SELECT unnest(string_split(?, chr(10))) AS line)"
    " WHERE line <> '' AND (NOT json_valid(line) OR json_extract(line, '$.row_id') IS NULL)"
)
OFFSETS_DDL = 'CREATE TABLE IF NOT EXISTS _journal_offsets (file VARCHAR PRIMARY KEY, "offset" BIGINT NOT NULL)'



def open_journal(path: str | os.PathLike[str]) -> IO[bytes] | None:
    """A journal opened for reading, or None when it is gone (ingested and archived meanwhile)."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise storage_error("cannot read the journal", e, path) from e

def quote_ident(ident: str) -> str:
    """``ident`` as a double-quoted SQL identifier."""
    return '"' + ident.replace('"', '""') + '"'


def sql_literal(s: str) -> str:
    """``s`` as a single-quoted SQL string (where DuckDB takes no bound parameter: ATTACH, catalog names)."""
    return "'" + s.replace("'", "''") + "'"


def insert_sql(table: str, columns: list[tuple[str, str]], dedupe: bool) -> str:
    """INSERT of a block of JSON lines (parameter 2) into ``table``; with ``dedupe``, row_ids
    already stored or repeated within the block are skipped."""
    exprs = []
    for name, typ in columns:
        v = quote_ident(name)
        if typ.startswith("TIMESTAMP"):
            # Journals hold epoch seconds or ISO strings; anything unparseable becomes NULL.
            d = f"TRY_CAST({v} AS DOUBLE)"
            e = (f"CASE WHEN {d} IS NULL THEN TRY_CAST({v} AS TIMESTAMPTZ) "
                 f"ELSE to_timestamp(CASE WHEN isfinite({d}) AND abs({d}) < 1e11 THEN {d} END) END")
            exprs.append(e if typ == "TIMESTAMP WITH TIME ZONE" else f"CAST({e} AS {typ})")
        else:
            exprs.append(v)
    cols = ", ".join(quote_ident(n) for n, _ in columns)
    # json_transform is lenient: a value of the wrong type becomes NULL instead of failing the batch.
    verb, distinct = ("INSERT OR IGNORE", "DISTINCT ON (row_id) ") if dedupe else ("INSERT", "")
    return (
        f"{verb} INTO {quote_ident(table)} ({cols}) SELECT {distinct}{', '.join(exprs)} FROM ("
        f" SELECT {_FROM_LINES}"
        ") WHERE row_id IS NOT NULL"
    )


def insert_block(con: duckdb.DuckDBPyConnection, spec: tuple[str, str], block: bytes, name: str = "") -> int:
    """Insert the JSON lines of ``block`` (complete lines) with ``spec``; return rows inserted.
    ``name``: the file, for the warning about malformed lines."""
    text = block.decode("utf-8", "replace")
    n = int(con.execute(spec[1], [spec[0], text]).fetchall()[0][0])
    if n < text.count("\n") + (not text.endswith("\n")) - text.count("\n\n"):
        # Fewer rows than lines: duplicates (fine) or malformed lines (worth a warning).
        bad = con.execute(_BAD_LINES_SQL, [text]).fetchall()[0][0]
        if bad:
            warnings.warn(f"skipped {bad} malformed journal line(s){' in ' + name if name else ''}", RuntimeWarning,
                          stacklevel=4)
    return n


def table_columns(con: duckdb.DuckDBPyConnection, table: str, catalog: str | None = None) -> list[tuple[str, str]]:
    """``(name, type)`` of each column of ``table`` (in ``catalog``, else the current database), in order."""
    where = "table_catalog = current_database() AND table_schema = current_schema()" if catalog is None \
        else f"table_catalog = {sql_literal(catalog)} AND table_schema = 'main'"
    return con.execute(
        f"SELECT column_name, data_type FROM information_schema.columns WHERE {where} AND table_name = ?"
        " ORDER BY ordinal_position",
        [table],
    ).fetchall()


def table_spec(con: duckdb.DuckDBPyConnection, table: str, dedupe: bool, catalog: str | None = None,
                into: str | None = None) -> tuple[str, str] | None:
    """``(json_transform structure, INSERT statement)`` for ``table`` (inserting into ``into``
    if given), None if it does not exist."""
    cols = table_columns(con, table, catalog)
    if not cols:
        return None
    if "row_id" not in {c for c, _ in cols}:
        raise StorageError(f"table {table} has no row_id column; journaled tables need row_id VARCHAR PRIMARY KEY")
    structure = json.dumps({c: ("VARCHAR" if t.startswith("TIMESTAMP") else t) for c, t in cols})
    return structure, insert_sql(into or table, cols, dedupe)


def ingest_file(con: duckdb.DuckDBPyConnection, spec: tuple[str, str], f: IO[bytes] | gzip.GzipFile,
                start: int) -> tuple[int, int]:
    """Insert the complete lines of ``f`` from byte ``start``; return (offset after them, rows inserted)."""
    f.seek(start)
    pos, buf, inserted = start, b"", 0
    while True:
        chunk = f.read(CHUNK)
        if not chunk:
            return pos, inserted
        buf = buf + chunk if buf else chunk
        cut = buf.rfind(b"\n")
        if cut < 0:  # a line longer than a chunk, or a torn tail: read on
            continue
        inserted += insert_block(con, spec, buf[:cut], str(f.name))
        pos += cut + 1
        buf = buf[cut + 1 :]


def ingest_whole(con: duckdb.DuckDBPyConnection, spec: tuple[str, str], path: str, size: int) -> int | None:
    """Insert every line of the finished journal at ``path`` (``size`` bytes) with DuckDB's own
    parallel JSON reader; return rows inserted, or None (nothing done) unless the file ends with a
    complete line. For a backlog left by exited writers: about twice as fast as blocks of lines."""
    import numpy as np

    with open(path, "rb") as f:
        f.seek(max(0, size - 1))
        if f.read(1) != b"\n":
            return None  # a torn last line: the block path stops before it
    structure, sql = spec
    columns = "{" + ", ".join(f"{sql_literal(c)}: {sql_literal(t)}" for c, t in json.loads(structure).items()) + "}"
    source = (f"read_json({sql_literal(path)}, format = 'newline_delimited', columns = {columns}, "
              "ignore_errors = true, maximum_object_size = 1073741824)")
    con.execute("SET enable_progress_bar = false")  # DuckDB draws one on long statements, into the notebook
    n = int(con.execute(sql.replace(_FROM_LINES, f"* FROM {source}")).fetchall()[0][0])  # no parameters left
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    ends = np.flatnonzero(raw == 10)
    lines = int(np.count_nonzero(np.diff(np.concatenate([[-1], ends])) > 1))  # not blank
    del raw
    if n < lines:
        warnings.warn(f"skipped {lines - n} malformed or repeated journal line(s) in {path}", RuntimeWarning, stacklevel=4)
    return n


def ingest_journals(con: duckdb.DuckDBPyConnection, entries: Sequence[Entry], dedupe: bool, rotate_bytes: int,
                    archive: Callable[[str, str, int], bool] | None) -> int:
    """Insert the complete, not yet ingested lines of the files ``entries``, and their new offsets, in
    one transaction; return rows inserted. Then remove the files of exited writers (after
    ``archive(path, key, end)``, if given, saved them) and retire this process's own files past
    ``rotate_bytes`` (spool files excepted)."""
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
                specs[table] = table_spec(con, table, dedupe)
            spec = specs[table]
            if spec is None:  # a table this database does not have (yet): leave the file
                continue
            f = open_journal(path)
            if f is None:
                continue
            with f:
                # Decide "exited" before reading: a dead writer cannot add lines after we look.
                dead = writer_gone(host, f.fileno())
                start = offsets.get(key, 0)
                size = os.fstat(f.fileno()).st_size
                if size < start:  # only if edited by hand: reread, row_id dedupes
                    start = 0
                whole = ingest_whole(con, spec, path, size) if dead and not start and WHOLE_MIN <= size <= WHOLE_MAX else None
                end, n = (size, whole) if whole is not None else ingest_file(con, spec, f, start)
            inserted += n
            if end != offsets.get(key, 0):
                con.execute(
                    'INSERT INTO _journal_offsets VALUES (?, ?) ON CONFLICT (file) DO UPDATE SET "offset" = excluded."offset"',
                    [key, end],
                )
            if dead:  # bytes past ``end`` are a line torn by the writer's death: never completed
                gone.append((key, path, end))
            elif end >= rotate_bytes and not key.startswith(SPOOL_PREFIX):
                rotate.append((key, path, end))
        present = {e[0] for e in entries}
        stale = [k for k in offsets if k.startswith(SPOOL_PREFIX) and k not in present]  # spool files written to the journal
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
    dropped = [key for key, path, end in gone if end < WHOLE_MIN and _archive_and_remove(archive, key, path, end)]
    large = [g for g in gone if g[2] >= WHOLE_MIN]
    if large:
        # Compressing a large backlog takes seconds (4 s for 800 MB): the read need not wait for it.
        # Safe to be cut short: a file still there is fully ingested (its offset says so), and the
        # next ingest archives it again (rebuilds skip repeated row_ids).
        threading.Thread(target=lambda: [_archive_and_remove(archive, *g) for g in large],
                         name="cognitionos-archive").start()
    for key, path, end in rotate:
        j = journal_at(path)
        save = partial(archive, path, key, end) if archive is not None else None
        if j is not None and j.retire(path, end, save):
            dropped.append(key)
    if dropped:
        try:
            con.execute(f"DELETE FROM _journal_offsets WHERE file IN ({', '.join('?' * len(dropped))})", dropped)
        except duckdb.Error:
            pass  # offsets of files that are gone are harmless (names are never reused)
    return inserted


def _archive_and_remove(archive: Callable[[str, str, int], bool] | None, key: str, path: str, end: int) -> bool:
    """Archive an ingested journal whose writer exited (if ``archive``), then delete it; False if it stays."""
    if archive is not None and not archive(path, key, end):
        return False  # kept, fully ingested: archived (and removed) by a later ingest
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def load_unread(con: duckdb.DuckDBPyConnection, entries: Sequence[Entry], pending: Sequence[tuple[str, bytes, int]]) -> None:
    """Make each table of ``_ro`` a view in the default catalog: its rows plus the journal,
    spool (``entries``) and ``pending`` rows it does not hold yet (loaded into ``_unread_<table>``)."""
    tables = [r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = '_ro' AND schema_name = 'main'").fetchall()]
    offsets = dict(con.execute('SELECT file, "offset" FROM _ro.main._journal_offsets').fetchall()) \
        if "_journal_offsets" in tables else {}
    specs: dict[str, tuple[str, str]] = {}
    for t in tables:
        if not t.startswith("_") and any(c == "row_id" for c, _ in table_columns(con, t, "_ro")):
            con.execute(f"CREATE TABLE {quote_ident('_unread_' + t)} AS SELECT * FROM _ro.main.{quote_ident(t)} LIMIT 0")
            specs[t] = table_spec(con, t, False, "_ro", "_unread_" + t)  # type: ignore[assignment]
        else:
            con.execute(f"CREATE VIEW {quote_ident(t)} AS SELECT * FROM _ro.main.{quote_ident(t)}")
    for key, path, _host, table in entries:
        if table not in specs:
            continue
        f = open_journal(path)
        if f is None:
            continue
        with f:
            start = offsets.get(key, 0)
            ingest_file(con, specs[table], f, start if os.fstat(f.fileno()).st_size >= start else 0)
    for table, data, _ in pending:
        if table in specs:
            insert_block(con, specs[table], data)
    for t in specs:
        src, new = f"_ro.main.{quote_ident(t)}", quote_ident("_unread_" + t)
        con.execute(
            f"CREATE VIEW {quote_ident(t)} AS SELECT * FROM {src}"
            f" UNION ALL SELECT * FROM (SELECT DISTINCT ON (row_id) * FROM {new}) n"
            f" WHERE NOT EXISTS (SELECT 1 FROM {src} o WHERE o.row_id = n.row_id)"
        )
