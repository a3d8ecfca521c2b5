"""Storage: a journaled DuckDB store that several processes can write and read at the same time,
the LLM ledger on top of it, and the response cache.

DuckDB lets one process open a database file at a time, so nothing here holds it open:

* Writers append each batch of rows as JSON lines with a single ``os.write`` to this process's
  own journal file, ``<journal_dir>/<host>-<pid>-<random>.<table>.jsonl``. Once ``append``
  returns, the rows survive the process being killed (and power loss with ``fsync=True``).
  No DuckDB on this path: it costs a few microseconds.
* Readers open DuckDB briefly (``connect``), ingest every complete journal line not ingested
  yet, run their query and close. "Open" attaches the file to one in-memory DuckDB instance
  kept by the process (``instance``), "close" detaches it: the file is locked only meanwhile.
  Kit processes queue on a ``flock`` of ``<db>.lock`` (cheap to wait on); anyone else holding
  DuckDB's own lock is waited out by retrying the open, up to ``lock_timeout``.

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

Modules (import from them; this package imports nothing, so it costs nothing):

* ``store``: :class:`~.store.Store`, the journaled DuckDB database.
* ``journal``: this process's journal files and their JSON lines.
* ``ingest``: loading journal lines into DuckDB.
* ``archive``: the journal archive, and rebuilding from it.
* ``spool``: rows kept while the data folder cannot be written.
* ``locks``: one opener of a database at a time.
* ``instance``: the process's DuckDB, into which databases are attached.
* ``faults``: errors that say why and where.
* ``files``: private (0600/0700) files and folders.
* ``migrations``, ``ledger``, ``cache``: schema migrations, the ``llm_usage`` ledger, the response cache.
"""
