"""The DuckDB instance a process keeps (storage.instance): shared by the threads' operations,
retired without pulling it from under them, never holding one file twice."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from test_storage import count, events_migrations

from cognitionos_kit.core.errors import StorageError
from cognitionos_kit.storage import instance
from cognitionos_kit.storage.ingest import sql_literal
from cognitionos_kit.storage.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "db.duckdb", tmp_path / "journal", events_migrations())


@pytest.fixture
def other(tmp_path: Path) -> Store:
    return Store(tmp_path / "other.duckdb", tmp_path / "journal-other", events_migrations())


def test_the_instance_is_kept_between_reads_and_closed_after_a_large_one(store: Store) -> None:
    store.append("events", [{"row_id": "a", "n": 1}])
    count(store)  # the first read of a process may grow it past LARGE_BYTES (pandas' import)
    count(store)
    kept = instance._live
    assert kept is not None
    count(store)
    assert instance._live is kept  # a small read: the same instance, started once
    before = instance.resident()
    ballast = b"x" * (instance.LARGE_BYTES + (64 << 20))  # what a million-row read leaves behind
    instance.after(before)
    assert instance._live is None and len(ballast) > instance.LARGE_BYTES  # closed: its memory went with it
    del ballast
    assert count(store) == 1 and instance._live is not None  # the next read starts a new one


def test_retiring_the_instance_leaves_another_threads_operation_running(store: Store, other: Store) -> None:
    # Another thread's large read retires the instance while this operation is half done: it
    # used to be closed at once, failing this one with "Connection already closed".
    store.append("events", [{"row_id": "a", "n": 1}])
    other.append("events", [{"row_id": "b", "n": 2}])
    assert count(store) == 1  # ingested
    with store.connect() as con:
        inst = instance._live
        assert inst is not None and inst.users == 1
        t = threading.Thread(target=instance.discard)
        t.start()
        t.join()
        assert instance._live is None and inst.retired
        assert con.execute("SELECT count(*) FROM events").fetchone() == (1,)
        assert count(other) == 1  # meanwhile a new instance serves the next operation
        assert instance._live is not inst
    assert inst.users == 0 and inst not in instance._retired  # closed by its last operation
    assert count(store) == 1


def test_a_file_still_held_by_a_retired_instance_waits_for_it(store: Store, other: Store) -> None:
    # A DETACH that failed (a full disk) leaves the file attached to the instance, which is
    # retired; while another operation still uses that instance, the file is not attached twice.
    other.append("events", [{"row_id": "b", "n": 2}])
    count(store)
    with store.connect():
        inst = instance._live
        instance.discard(inst, held=other._db_key)
        quick = Store(other.db_path, other.journal_dir, events_migrations(), lock_timeout=0.3)
        with pytest.raises(StorageError, match="could not let go of it") as e:
            count(quick)
        assert "damaged" not in str(e.value)
    assert count(other) == 1  # the retired instance is closed: the file is free


def test_a_failed_detach_on_an_instance_already_retired_still_holds_the_file(store: Store, other: Store) -> None:
    # Another thread's large read retired the instance first; the DETACH that then fails must
    # still keep the file from being attached to the new instance while the old one lives.
    other.append("events", [{"row_id": "b", "n": 2}])
    count(store)
    with store.connect():
        inst = instance._live
        instance.discard()  # retired by another thread's large read
        instance.discard(inst, held=other._db_key)  # then other's DETACH on it failed
        quick = Store(other.db_path, other.journal_dir, events_migrations(), lock_timeout=0.3)
        with pytest.raises(StorageError, match="could not let go of it"):
            count(quick)
    assert count(other) == 1


def _hold_the_alias(store: Store) -> tuple[object, object]:
    """Attach the store's file to the live instance under its alias, as DuckDB still had it for
    a moment after a DETACH under load."""
    import duckdb

    con, inst = instance.cursor(duckdb)
    con.execute(f"ATTACH {sql_literal(str(store.db_path))} AS {store._alias}")
    return con, inst


def test_a_file_the_instance_has_not_yet_let_go_of_is_waited_for(store: Store) -> None:
    store.append("events", [{"row_id": "a", "n": 1}])
    count(store)
    con, inst = _hold_the_alias(store)

    def let_go() -> None:
        time.sleep(0.15)
        con.execute(f"DETACH {store._alias}")
        con.close()
        instance.release(inst)

    t = threading.Thread(target=let_go)
    t.start()
    try:
        assert count(store) == 1  # waited, then attached: not "damaged", not an error
    finally:
        t.join()


def test_a_file_the_instance_never_lets_go_of_times_out_and_is_not_called_damaged(tmp_path: Path, store: Store) -> None:
    store.append("events", [{"row_id": "a", "n": 1}])
    count(store)
    con, inst = _hold_the_alias(store)
    try:
        quick = Store(store.db_path, store.journal_dir, events_migrations(), lock_timeout=0.2)
        with pytest.raises(StorageError, match="timed out after 0.2 s") as e:
            count(quick)
        assert "damaged" not in str(e.value) and getattr(e.value, "reason", None) != "damaged"
        assert sorted(p.name for p in tmp_path.iterdir() if "corrupt" in p.name) == []
    finally:
        con.execute(f"DETACH {store._alias}")
        con.close()
        instance.release(inst)
    assert count(store) == 1
