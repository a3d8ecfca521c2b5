"""The journaled DuckDB store and the migrations runner, on real files."""

from __future__ import annotations

import math
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from cognitionos_kit.core.errors import InvalidRequestError, StorageError
from cognitionos_kit.storage.journal import HOST
from cognitionos_kit.storage.migrations import Migrations
from cognitionos_kit.storage.store import Store


def events_migrations() -> Migrations:
    m = Migrations("test")

    @m
    def m001_events(con: duckdb.DuckDBPyConnection) -> None:
        con.execute("CREATE TABLE events (row_id VARCHAR PRIMARY KEY, n INTEGER, label VARCHAR, ts TIMESTAMPTZ, naive TIMESTAMP)")

    return m


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "db.duckdb", tmp_path / "journal", events_migrations())


def count(store: Store, table: str = "events") -> int:
    return int(store.query(f"SELECT count(*) AS n FROM {table}")["n"][0])


def dead_writer_file(store: Store, table: str = "events", pid: int = 999_999) -> Path:
    """A journal file named like one from a process on this host that has exited (nobody holds its flock)."""
    return store.journal_dir / f"{HOST}-{pid}-deadbeef.{table}.jsonl"


# --- migrations ---------------------------------------------------------------------------
def test_migrations_apply_once_in_order(tmp_path: Path) -> None:
    m = Migrations("t")

    @m
    def m001_log(con):
        con.execute("CREATE TABLE log (step VARCHAR)")

    @m
    def m002_a(con):
        con.execute("INSERT INTO log VALUES ('m002')")

    @m
    def m003_b(con):
        con.execute("ALTER TABLE log ADD COLUMN extra INTEGER")  # needs m001: fails if run out of order
        con.execute("INSERT INTO log VALUES ('m003', 1)")

    s = Store(tmp_path / "db.duckdb", tmp_path / "j", m)
    for _ in range(3):
        with s.connect():
            pass
    assert s.query("SELECT step FROM log ORDER BY rowid")["step"].tolist() == ["m002", "m003"]
    names = s.query("SELECT name FROM _migrations ORDER BY applied_at, rowid")["name"].tolist()
    assert names == ["t:m001_log", "t:m002_a", "t:m003_b"]

    # A later release adds a step: only that one runs.
    @m
    def m004_c(con):
        con.execute("INSERT INTO log VALUES ('m004', 4)")

    with Store(tmp_path / "db.duckdb", tmp_path / "j", m).connect() as con:
        assert m.applied(con) == ["t:m001_log", "t:m002_a", "t:m003_b", "t:m004_c"]
        assert [r[0] for r in con.execute("SELECT step FROM log ORDER BY rowid").fetchall()] == ["m002", "m003", "m004"]


def test_failed_migration_rolls_back_and_retries(tmp_path: Path) -> None:
    state = {"fail": True}
    m = Migrations("t")

    @m
    def m001_table(con):
        con.execute("CREATE TABLE a (x INTEGER)")
        if state["fail"]:
            raise RuntimeError("boom")

    s = Store(tmp_path / "db.duckdb", tmp_path / "j", m)
    with pytest.raises(StorageError, match="t:m001_table failed: boom"):
        with s.connect():
            pass
    with duckdb.connect(str(tmp_path / "db.duckdb")) as con:
        assert con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'a'").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM _migrations").fetchone()[0] == 0
    state["fail"] = False
    with s.connect() as con:
        assert m.applied(con) == ["t:m001_table"]


def test_duplicate_migration_name_rejected() -> None:
    m = Migrations("t")

    def step(con):
        pass

    m(step)
    with pytest.raises(ValueError):
        m(step)


# --- ingest -------------------------------------------------------------------------------
def test_append_then_query_round_trip(store: Store) -> None:
    store.append("events", [{"n": i, "label": f"l{i}"} for i in range(5)])
    df = store.query("SELECT * FROM events ORDER BY n")
    assert df["n"].tolist() == [0, 1, 2, 3, 4]
    assert df["row_id"].str.fullmatch(r"[0-9a-f]{32}").all() and df["row_id"].is_unique


def test_query_parameters_are_bound(store: Store) -> None:
    store.append("events", [{"label": "O'Brien; DROP TABLE events; --"}, {"label": "x"}])
    df = store.query("SELECT label FROM events WHERE label = ?", ["O'Brien; DROP TABLE events; --"])
    assert df["label"].tolist() == ["O'Brien; DROP TABLE events; --"]
    assert count(store) == 2


def test_ingest_is_exactly_once(store: Store) -> None:
    store.append("events", [{"n": i} for i in range(10)])
    assert store.flush() == 10
    assert store.flush() == 0
    store.append("events", [{"n": 10}])
    assert store.flush() == 1
    assert count(store) == 11
    (journal,) = store.journal_dir.glob("*.jsonl")
    offsets = store.query('SELECT file, "offset" FROM _journal_offsets')
    assert offsets.to_dict("records") == [{"file": journal.name, "offset": journal.stat().st_size}]


def test_two_stores_in_one_process_do_not_duplicate(tmp_path: Path) -> None:
    a = Store(tmp_path / "db.duckdb", tmp_path / "journal", events_migrations())
    b = Store(tmp_path / "db.duckdb", tmp_path / "journal", events_migrations())
    a.append("events", [{"n": 1}])
    b.append("events", [{"n": 2}])
    a.flush()
    b.append("events", [{"n": 3}])
    b.flush()
    a.flush()
    assert sorted(a.query("SELECT n FROM events")["n"]) == [1, 2, 3]
    assert sorted(b.query("SELECT n FROM events")["n"]) == [1, 2, 3]


def _journals_open_under(folder: Path) -> int:
    """How many of this process's descriptors are journal files under ``folder``."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the descriptor listdir itself used, closed by now
            pass
    return sum(1 for t in targets if t.startswith(str(folder)) and t.endswith(".jsonl"))


def test_writing_into_many_folders_holds_a_bounded_number_of_files(tmp_path: Path, monkeypatch) -> None:
    from cognitionos_kit.storage import journal

    monkeypatch.setattr(journal, "MAX_OPEN", 8)
    stores = [Store(tmp_path / f"s{i}" / "db.duckdb", tmp_path / f"s{i}" / "journal", events_migrations())
              for i in range(30)]
    for round_ in range(2):  # the second round writes again into folders whose files were closed
        for i, s in enumerate(stores):
            s.append("events", [{"n": i * 10 + round_}])
            assert _journals_open_under(tmp_path) <= 8
    for i, s in enumerate(stores):
        assert sorted(s.query("SELECT n FROM events")["n"]) == [i * 10, i * 10 + 1]  # nothing lost or doubled


def test_row_id_dedupes_a_reingested_file(store: Store) -> None:
    store.append("events", [{"n": i} for i in range(4)])
    store.flush()
    (journal,) = store.journal_dir.glob("*.jsonl")
    copy = dead_writer_file(store)
    copy.write_bytes(journal.read_bytes() * 2)  # same rows, twice, under a name with no offset recorded
    store.append("events", [{"n": 4}])
    assert store.flush() == 1
    assert count(store) == 5
    assert not copy.exists()  # its writer is gone and it is fully ingested


def test_torn_last_line_waits_for_its_newline(store: Store) -> None:
    store.append("events", [{"row_id": "a", "n": 1}])
    store.flush()
    (journal,) = store.journal_dir.glob("*.jsonl")
    with open(journal, "ab") as f:
        f.write(b'{"row_id":"b","n"')  # a write caught half-way
    assert store.flush() == 0
    assert count(store) == 1
    with open(journal, "ab") as f:
        f.write(b':2}\n')
    assert store.flush() == 1
    assert sorted(store.query("SELECT row_id FROM events")["row_id"]) == ["a", "b"]


def test_dead_writers_torn_line_is_dropped_with_its_file(store: Store) -> None:
    f = dead_writer_file(store)
    f.write_bytes(b'{"row_id":"a","n":1}\n{"row_id":"b","n":2}\n{"row_id":"c","n"')
    assert store.flush() == 2
    assert sorted(store.query("SELECT row_id FROM events")["row_id"]) == ["a", "b"]
    assert not f.exists()
    assert count(store, "_journal_offsets") == 0


def test_malformed_line_is_skipped_with_a_warning(store: Store) -> None:
    f = dead_writer_file(store)
    f.write_bytes(b'{"row_id":"a","n":1}\nnot json at all\n{"n":5}\n{"row_id":"b","n":"x"}\n')
    with pytest.warns(RuntimeWarning, match="2 malformed"):
        store.flush()
    df = store.query("SELECT row_id, n FROM events ORDER BY row_id")
    assert df["row_id"].tolist() == ["a", "b"]
    assert df["n"].isna().tolist() == [False, True]  # a value of the wrong type becomes NULL


def test_journal_of_an_unknown_table_is_left_alone(store: Store) -> None:
    f = dead_writer_file(store, table="not_here")
    f.write_bytes(b'{"row_id":"a"}\n')
    store.flush()
    assert f.exists()
    assert count(store, "_journal_offsets") == 0


def test_timestamps_are_utc_from_epoch_or_iso(store: Store) -> None:
    t = datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=timezone.utc)
    rows = {
        "epoch": t.timestamp(),
        "z": "2024-03-01T12:30:15.123456Z",
        "offset": "2024-03-01T14:30:15.123456+02:00",
        "naive": "2024-03-01 12:30:15.123456",
        "datetime": t.astimezone(timezone(timedelta(hours=-5))),
        "nan": float("nan"),
        "garbage": "yesterday",
    }
    store.append("events", [{"row_id": k, "ts": v, "naive": v} for k, v in rows.items()])
    df = store.query("SELECT row_id, ts, naive FROM events").set_index("row_id")
    assert str(df["ts"].dtype) .endswith(", UTC]")
    for k in ("epoch", "z", "offset", "naive", "datetime"):
        assert df.loc[k, "ts"].to_pydatetime() == t, k
        assert df.loc[k, "naive"].to_pydatetime() == t.replace(tzinfo=None), k
    assert df.loc[["nan", "garbage"], "ts"].isna().all()


def test_non_serializable_row_is_rejected_before_writing(store: Store) -> None:
    with pytest.raises(InvalidRequestError):
        store.append("events", [{"n": 1}, {"n": object()}])
    assert list(store.journal_dir.glob("*.jsonl")) == []
    with pytest.raises(InvalidRequestError):
        store.append("bad table", [{"n": 1}])


def test_nan_values_become_null(store: Store) -> None:
    store.append("events", [{"row_id": "a", "n": math.inf, "label": "x"}])
    df = store.query("SELECT n, label FROM events")
    assert df["n"].isna().all() and df["label"].tolist() == ["x"]


def test_own_journal_is_rotated_once_ingested(tmp_path: Path) -> None:
    s = Store(tmp_path / "db.duckdb", tmp_path / "journal", events_migrations(), rotate_bytes=1)
    s.append("events", [{"n": 1}])
    (first,) = s.journal_dir.glob("*.jsonl")
    s.flush()
    assert not first.exists() and count(s, "_journal_offsets") == 0
    s.append("events", [{"n": 2}])
    (second,) = s.journal_dir.glob("*.jsonl")
    assert second != first
    assert sorted(s.query("SELECT n FROM events")["n"]) == [1, 2]


def test_journal_deleted_under_a_live_writer_is_recreated(store: Store) -> None:
    store.append("events", [{"row_id": "a"}])
    for f in store.journal_dir.glob("*.jsonl"):
        f.unlink()  # e.g. the user cleared the data folder
    store.append("events", [{"row_id": "b"}])
    assert store.query("SELECT row_id FROM events")["row_id"].tolist() == ["b"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_writes_its_own_journal(store: Store) -> None:
    store.append("events", [{"row_id": "parent-1"}])
    pid = os.fork()
    if pid == 0:  # child: must not write into (or later delete) the parent's file
        try:
            store.append("events", [{"row_id": "child-1"}])
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    store.append("events", [{"row_id": "parent-2"}])
    assert sorted(store.query("SELECT row_id FROM events")["row_id"]) == ["child-1", "parent-1", "parent-2"]
    names = [p.name for p in store.journal_dir.glob("*.jsonl")]
    assert len(names) == 1 and f"-{os.getpid()}-" in names[0]  # the exited child's file was cleaned up


def test_fsync_mode_writes(tmp_path: Path) -> None:
    s = Store(tmp_path / "db.duckdb", tmp_path / "journal", events_migrations(), fsync=True)
    s.append("events", [{"n": 7}])
    assert s.query("SELECT n FROM events")["n"].tolist() == [7]


def test_not_a_database_gives_storage_error(tmp_path: Path) -> None:
    (tmp_path / "db.duckdb").write_bytes(b"this is not a duckdb file" * 1000)
    s = Store(tmp_path / "db.duckdb", tmp_path / "journal", events_migrations(), lock_timeout=1)
    with pytest.raises(StorageError, match="cannot open"):
        s.flush()



def test_a_large_finished_journal_is_read_whole_with_the_same_rules(store: Store) -> None:
    """A dead writer's journal of WHOLE_MIN bytes or more goes through DuckDB's JSON reader in one
    statement: the same rows as the block path (malformed lines skipped with a warning, a value of
    the wrong type NULL, blank lines ignored), then archived in the background and removed."""
    import threading

    from cognitionos_kit.storage.ingest import WHOLE_MIN

    pad = "x" * 200
    good = [f'{{"row_id":"r{i:07d}","n":{i},"label":"{pad}","ts":{1_700_000_000 + i}}}' for i in range(WHOLE_MIN // 200)]
    odd = ["not json at all", '{"n":5}', '{"row_id":"bad-type","n":"x"}', ""]
    f = dead_writer_file(store)
    f.write_text("\n".join(good[:100] + odd + good[100:]) + "\n")
    assert f.stat().st_size >= WHOLE_MIN
    with pytest.warns(RuntimeWarning, match="skipped 2 malformed"):
        assert store.flush() == len(good) + 1
    df = store.query("SELECT row_id, n, ts FROM events WHERE row_id IN ('r0000000', 'r0000123', 'bad-type') ORDER BY row_id")
    assert df["row_id"].tolist() == ["bad-type", "r0000000", "r0000123"]
    assert df["n"].isna().tolist() == [True, False, False] and int(df["n"].iloc[2]) == 123
    assert df["ts"].iloc[2] == datetime.fromtimestamp(1_700_000_123, timezone.utc)
    for t in threading.enumerate():
        if t.name == "cognitionos-archive":
            t.join(timeout=60)
    assert not f.exists() and list((store.journal_dir / "archive").glob("*.gz"))
    assert count(store) == len(good) + 1  # nothing read twice


# --- the kept DuckDB instance (storage.instance) -------------------------------------------
_OTHER_PROCESS = """
import sys, duckdb
try:
    con = duckdb.connect(sys.argv[1])
except duckdb.Error as e:
    print("locked" if "lock" in str(e).lower() else f"error {e}")
else:
    con.execute("INSERT INTO events (row_id, n) VALUES ('other', 7)")
    con.close()
    print("wrote")
"""


def _other_process(path: Path) -> str:
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", _OTHER_PROCESS, str(path)], capture_output=True, text=True,
                          timeout=60).stdout.strip()


def test_the_file_is_locked_only_during_an_operation_and_its_writes_are_on_disk_after(store: Store) -> None:
    store.append("events", [{"row_id": "a", "n": 1}])
    assert count(store) == 1  # ingested by this process's instance, then detached
    with store.connect() as con:  # attached: another process cannot open it now
        assert _other_process(store.db_path) == "locked"
        assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 1
    assert _other_process(store.db_path) == "wrote"  # detached: it can, and sees what this process wrote
    assert sorted(store.query("SELECT row_id FROM events")["row_id"]) == ["a", "other"]
    assert not Path(f"{store.db_path}.wal").exists()  # checkpointed when detached, as when closed


def test_a_connect_inside_a_connect_and_two_stores_of_one_file_share_the_attachment(tmp_path: Path) -> None:
    one = Store(tmp_path / "db.duckdb", tmp_path / "journal", events_migrations())
    two = Store(tmp_path / "db.duckdb", tmp_path / "journal", events_migrations())
    one.append("events", [{"row_id": "x", "n": 1}])
    with one.connect() as outer:
        with two.connect() as inner:  # the same file, the same thread: no second ATTACH
            inner.execute("INSERT INTO events (row_id, n) VALUES ('y', 2)")
        # still attached after the inner one, and it sees its row ('x' is still in the journal: no query ingested it)
        assert outer.execute("SELECT row_id FROM events").fetchall() == [("y",)]
    assert count(two) == 2 and _other_process(one.db_path) == "wrote"


def test_a_forked_child_reads_with_an_instance_of_its_own(store: Store) -> None:
    store.append("events", [{"row_id": "before-fork", "n": 1}])
    assert count(store) == 1  # the parent's instance exists and has been used
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.write(w, str(count(store)).encode())
        finally:
            os._exit(0)
    os.close(w)
    import time

    deadline = time.monotonic() + 30
    while os.waitpid(pid, os.WNOHANG)[0] == 0:  # a child that hangs fails the test, not the run
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung starting DuckDB (an instance alive across the fork)")
        time.sleep(0.05)
    assert os.read(r, 100) == b"1"
    os.close(r)
    store.append("events", [{"row_id": "after-fork", "n": 2}])
    assert count(store) == 2  # the parent's own instance still works


def test_many_threads_reading_and_writing_stores_at_once(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    stores = [Store(tmp_path / f"db{i}.duckdb", tmp_path / f"journal{i}", events_migrations()) for i in range(3)]

    def work(i: int) -> int:
        s = stores[i % 3]
        s.append("events", [{"row_id": f"r{i}", "n": i}])
        return count(s)

    with ThreadPoolExecutor(6) as pool:
        assert all(n >= 1 for n in pool.map(work, range(60)))
    assert sum(count(s) for s in stores) == 60

