"""Calls you can trust under faults: a read-only, full or damaged data folder, on real files.

Real tmpfs mounts (root only), real DuckDB, real journals; nothing of the kit is mocked. Rows
written "by another process" come from a forked child that exits, so its journal is archived.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import warnings
from pathlib import Path

import duckdb
import pytest

from cognitionos_kit.core.errors import StorageError, StorageWarning
from cognitionos_kit.storage.cache import ResponseCache
from cognitionos_kit.storage.faults import cause
from cognitionos_kit.storage.journal import HOST
from cognitionos_kit.storage.ledger import Ledger

ROOT = Path(__file__).resolve().parent.parent


# --- helpers ----------------------------------------------------------------------------------
@pytest.fixture
def tmpfs():
    """``mount(path, size)``: a fresh tmpfs at ``path``; every mount is lazily unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount tmpfs")
    mounts: list[Path] = []

    def mount(path: Path, size: str = "4m") -> Path:
        path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount tmpfs: {r.stderr.strip()}")
        mounts.append(path)
        return path

    try:
        yield mount
    finally:
        for p in reversed(mounts):
            subprocess.run(["umount", "-l", str(p)], capture_output=True)


def remount(path: Path, mode: str) -> None:
    r = subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def fill(path: Path) -> None:
    """Write ``path`` until the file system is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"x" * 65536)
    except OSError as e:
        assert e.errno == 28, e  # ENOSPC
    try:
        while True:
            os.write(fd, b"x")  # the last bytes
    except OSError:
        pass
    finally:
        os.close(fd)


def record_in_child(home: Path, rows: list[dict]) -> None:
    """Record ``rows`` from a forked process that then exits (its journal is an exited writer's)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            Ledger(home).record(rows)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def row(rid: str, cost: float = 0.01, **kw) -> dict:
    return {"row_id": rid, "user_id": "ana", "status": "ok", "attempt": 1, "cost_usd": cost, **kw}


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture(autouse=True)
def _state_home(tmp_path, monkeypatch):
    """The per-user spool fallback goes under the test's folder, never the real ~/.local/state."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


# --- no paid answer is lost ------------------------------------------------------------------
def test_read_only_data_folder_keeps_rows_and_loads_them_once_writable(tmp_path, tmpfs):
    home = tmpfs(tmp_path / "data")
    record_in_child(home, [row("r1", 0.5)])
    ledger = Ledger(home)
    assert ledger.usage()["row_id"].tolist() == ["r1"]  # the kit wrote here: database, archive
    remount(home, "ro")

    with pytest.warns(StorageWarning) as caught:
        ledger.record(row("r2", 0.25))  # returns: the answer is not lost
    assert len(caught) == 1
    msg = str(caught[0].message)
    spool = tmp_path / ".data.spool" / "journal"
    assert f"read-only file system at {home / 'journal'}" in msg and str(spool) in msg, msg
    assert ledger.pending == 1
    (spooled,) = files(spool)
    assert b'"row_id":"r2"' in spooled.read_bytes()
    assert spooled.stat().st_mode & 0o777 == 0o600 and spool.stat().st_mode & 0o777 == 0o700

    with warnings.catch_warnings():
        warnings.simplefilter("error", StorageWarning)  # same episode: no second warning
        ledger.record(row("r3", 0.125))
    assert ledger.pending == 2
    # reads still answer (read-only view): every row, each once
    assert ledger.usage()["row_id"].tolist() == ["r1", "r2", "r3"]
    assert ledger.spend(by="user_id")["cost_usd"].tolist() == [0.875]
    with pytest.raises(StorageError, match="read-only file system at"):
        ledger.flush()  # cannot ingest: says why and where

    remount(home, "rw")
    ledger.record(row("r4", 0.0625))
    assert ledger.pending == 0
    assert not (tmp_path / ".data.spool").exists()  # drained into the journal, spool removed
    df = ledger.usage()
    assert df["row_id"].tolist() == ["r1", "r2", "r3", "r4"] and df["row_id"].is_unique
    assert ledger.spend(by="user_id")["cost_usd"].tolist() == [0.9375]


def test_spool_falls_back_to_the_per_user_state_folder(tmp_path, tmpfs):
    outer = tmpfs(tmp_path / "outer")
    home = tmpfs(outer / "data")
    record_in_child(home, [row("r1")])
    ledger = Ledger(home)
    ledger.usage()
    remount(home, "ro")
    remount(outer, "ro")  # the sibling <outer>/.data.spool cannot be created either
    with pytest.warns(StorageWarning, match="read-only file system") as caught:
        ledger.record(row("r2"))
    state = tmp_path / "state" / "cognitionos_kit" / "spool"
    (digest,) = [p.name for p in state.iterdir()]
    assert len(digest) == 16 and str(state / digest / "journal") in str(caught[0].message)
    assert (state / digest).stat().st_mode & 0o777 == 0o700
    assert ledger.usage()["row_id"].tolist() == ["r1", "r2"]  # the state spool is read too
    remount(outer, "rw")
    remount(home, "rw")
    assert ledger.usage()["row_id"].tolist() == ["r1", "r2"]  # a read drains it
    assert ledger.pending == 0 and files(state) == []


def test_full_disk_keeps_rows_usage_answers_and_all_load_after(tmp_path, tmpfs):
    home = tmpfs(tmp_path / "data", size="4m")
    ledger = Ledger(home)
    ledger.record(row("r0"))
    ledger.usage()
    fill(home / "filler")
    ids = ["r0"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(1, 200):  # the journal's last page may still take a few rows
            ids.append(f"r{i}")
            ledger.record(row(ids[-1], error_message="x" * 300))
            if ledger.pending:
                break
        ledger.record(row("late"))  # same episode: no second warning
        ids.append("late")
    kept = [w for w in caught if issubclass(w.category, StorageWarning)]
    assert ledger.pending >= 2 and len(kept) == 1, [str(w.message) for w in caught]
    assert f"no space left on device at {home / 'journal'}" in str(kept[0].message)

    assert sorted(ledger.usage()["row_id"]) == sorted(ids)  # answered from a read-only view
    with pytest.raises(StorageError, match="no space left on device"):
        ledger.flush()
    # DuckDB does not always say ENOSPC: a failed write on a full disk is called what it is
    hidden = duckdb.TransactionException("TransactionContext Error: Failed to commit: Could not write file")
    assert cause(hidden, home / "cognitionos.duckdb", writing=True) == (
        "no_space", f"no space left on device at {home / 'cognitionos.duckdb'}")
    assert cause(hidden, tmp_path / "x.duckdb", writing=True)[0] is None  # not full there

    (home / "filler").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no torn line left behind: no "malformed line" warning either
        ledger.record(row("after"))
        ids.append("after")
        df = ledger.usage()
    assert sorted(df["row_id"]) == sorted(ids) and df["row_id"].is_unique
    assert ledger.pending == 0 and not (tmp_path / ".data.spool").exists()


def test_unwritable_journal_folder_that_cannot_be_recreated(tmp_path, tmpfs):
    home = tmpfs(tmp_path / "data")
    ledger = Ledger(home)
    ledger.record(row("r1"))
    ledger.usage()
    for p in files(home / "journal"):
        p.unlink()  # the user cleared the data folder...
    (home / "journal").rmdir()
    (home / "journal").write_text("...and left a file where the journal folder was")
    with pytest.warns(StorageWarning, match=f"not a folder at {home / 'journal'}"):
        ledger.record(row("r2"))
    assert ledger.pending == 1
    (home / "journal").unlink()
    assert ledger.usage()["row_id"].tolist() == ["r1", "r2"]
    assert ledger.pending == 0


# --- a damaged database says how to rebuild, and the rebuild works ------------------------------
def test_damaged_database_names_the_rebuild_and_rebuild_restores_every_row(tmp_path):
    home = tmp_path / "data"
    record_in_child(home, [row(f"a{i}", 0.5) for i in range(3)])
    ledger = Ledger(home)
    assert len(ledger.usage()) == 3
    (archived,) = files(home / "journal" / "archive")  # the exited writer's journal, compressed
    assert archived.name.endswith(".llm_usage.jsonl.gz") and b'"a2"' in gzip.decompress(archived.read_bytes())
    ledger.record([row(f"b{i}", 0.25) for i in range(2)])
    ledger.flush()  # ingested, still in this process's live journal
    db = home / "cognitionos.duckdb"
    garbage = os.urandom(db.stat().st_size)
    db.write_bytes(garbage)

    with pytest.raises(StorageError) as exc:
        ledger.usage()
    msg = str(exc.value)
    assert f"the ledger database {db} is damaged" in msg
    assert "kit.ledger.rebuild()" in msg and f"python -m cognitionos_kit rebuild --home {home}" in msg
    assert "cognitionos.duckdb.corrupt-" in msg
    ledger.record(row("c0", 0.125))  # recording goes on meanwhile

    assert ledger.rebuild() == 6
    df = ledger.usage()
    assert sorted(df["row_id"]) == ["a0", "a1", "a2", "b0", "b1", "c0"] and df["row_id"].is_unique
    assert ledger.spend(by="user_id")["cost_usd"].tolist() == [1.5 + 0.5 + 0.125]
    (kept,) = home.glob("cognitionos.duckdb.corrupt-*")
    assert kept.read_bytes() == garbage and ledger.store.kept_as == str(kept)


def test_truncated_database_is_damaged_too(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.record(row("a"))
    ledger.usage()
    db = tmp_path / "cognitionos.duckdb"
    db.write_bytes(db.read_bytes()[:100])
    with pytest.raises(StorageError, match="is damaged .* Rebuild it from the journals"):
        ledger.spend()
    assert ledger.rebuild() == 1 and ledger.usage()["row_id"].tolist() == ["a"]


def test_cli_rebuild(tmp_path):
    home = tmp_path / "data"
    record_in_child(home, [row("a"), row("b")])
    ledger = Ledger(home)
    ledger.record(row("c"))
    ledger.usage()
    db = home / "cognitionos.duckdb"
    db.write_bytes(b"\0" * 4096 + db.read_bytes()[4096:])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COGNITIONOS_DOTENV": "0"}
    out = subprocess.run([sys.executable, "-m", "cognitionos_kit", "rebuild", "--home", str(home)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"rebuilt the ledger database {db}" in out.stdout and ": 3 rows" in out.stdout
    assert "cognitionos.duckdb.corrupt-" in out.stdout
    assert ledger.usage()["row_id"].tolist() == ["a", "b", "c"]


def test_rotated_own_journal_is_archived_not_lost(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.store.rotate_bytes = 1  # every ingested journal of this process is replaced
    ledger.record(row("a"))
    ledger.flush()
    ledger.record(row("b"))
    ledger.flush()
    assert len(files(tmp_path / "journal" / "archive")) == 2 and list((tmp_path / "journal").glob("*.jsonl")) == []
    assert ledger.rebuild() == 2 and ledger.usage()["row_id"].tolist() == ["a", "b"]


# --- private files ----------------------------------------------------------------------------
def test_everything_the_kit_creates_is_private(tmp_path):
    home = tmp_path / "home"
    ledger = Ledger(home)
    ledger.record(row("a"))
    ledger.usage()
    record_in_child(home, [row("b")])
    ledger.usage()  # archives the child's journal
    cache = ResponseCache(home)
    cache.put("k" * 64, {"content": "x", "provider": "simulated", "model": "m"})
    assert cache.get("k" * 64)["content"] == "x"  # open: its -wal and -shm exist
    try:
        made = [home, *home.rglob("*")]
        names = {p.name for p in made}
        assert {"cognitionos.duckdb", "cognitionos.duckdb.lock", "journal", "archive", "answers.sqlite",
                "answers.sqlite-wal", "answers.sqlite-shm"} <= names, names
        wrong = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in made
                 if p.stat().st_mode & 0o777 != (0o700 if p.is_dir() else 0o600)}
        assert wrong == {}
    finally:
        cache.close()


def test_a_folder_the_user_made_keeps_its_mode(tmp_path):
    home = tmp_path / "mine"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    Ledger(home).record(row("a"))
    assert home.stat().st_mode & 0o777 == 0o755
    assert (home / "journal").stat().st_mode & 0o777 == 0o700


def test_run_folders_are_private(kit):
    from cognitionos_kit import Experiment

    run = kit.run(Experiment("perm", [{"x": "a"}], "Say {x}", ["sim-small"]), progress=False)
    made = [run.path.parent, run.path, *run.path.iterdir()]
    assert {"results.parquet", "manifest.json", "report.html"} <= {p.name for p in made}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in made} == {
        p.name: oct(0o700 if p.is_dir() else 0o600) for p in made}


# --- journal rows always load -------------------------------------------------------------------
def test_row_with_a_lone_surrogate_loads_and_counts(tmp_path):
    ledger = Ledger(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "skipped malformed line"
        ledger.record(row("s", 0.75, user_id="ana\ud800", error_message="bad byte \udcff from a server"))
        ledger.record(row("t", 0.25, user_id="bo"))
        df = ledger.usage()
    assert df["row_id"].tolist() == ["s", "t"]
    assert df["user_id"].tolist() == ["ana\ufffd", "bo"] and df["error_message"][0] == "bad byte \ufffd from a server"
    spend = ledger.spend(by="user_id")
    assert dict(zip(spend["user_id"], spend["cost_usd"])) == {"ana\ufffd": 0.75, "bo": 0.25}


def test_garbage_journal_line_is_skipped_and_the_rest_loads(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.record(row("a"))
    dead = tmp_path / "journal" / f"{HOST}-999999-deadbeef.llm_usage.jsonl"
    dead.write_bytes(b'{"row_id":"b","cost_usd":0.5}\n\xff\xfe\x00garbage{{\n{"row_id":"c","cost_usd":0.25}\n')
    with pytest.warns(RuntimeWarning, match="skipped 1 malformed journal line"):
        df = ledger.usage()
    assert df["row_id"].tolist() == ["a", "b", "c"]
    assert not dead.exists() and files(tmp_path / "journal" / "archive")  # archived like any other


def test_scrub_archive_blanks_matching_rows_for_good(tmp_path):
    home = tmp_path / "data"
    record_in_child(home, [row("a", error_message="secret A", user_id="carol"), row("b", error_message="keep B")])
    ledger = Ledger(home)
    ledger.usage()  # archived
    assert ledger.store.scrub_archive("llm_usage", {"user_id": "carol"}, ["error_message"]) == 1
    assert ledger.store.scrub_archive("llm_usage", {"user_id": "nobody"}, ["error_message"]) == 0
    (archived,) = files(home / "journal" / "archive")
    assert b"secret A" not in gzip.decompress(archived.read_bytes()) and archived.stat().st_mode & 0o777 == 0o600
    assert ledger.rebuild() == 2
    df = ledger.usage()
    assert df["error_message"].isna().tolist() == [True, False] and df["user_id"].tolist() == ["carol", "ana"]


def test_a_full_disk_keeps_the_paid_answer_and_names_the_cause_everywhere(tmp_path, tmpfs):
    """End to end through a Kit: the call's answer comes back with a StorageWarning, memory
    says "no space left" as a StorageError (never DuckDB's bare TransactionException), and
    everything lands once there is room again."""
    from cognitionos_kit import Kit, KitError, LatencyModel

    home = tmpfs(tmp_path / "data", size="8m")
    kit = Kit(home, dotenv=False, simulated_latency=LatencyModel(scale=0))
    kit.complete("first, while there is room")
    kit.usage()
    mid = kit.memory.store("ana", "stored while there was room")
    fill(home / "filler")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answers = [kit.complete(f"call {i} on a full disk", max_tokens=64) for i in range(40)]
    assert all(a.content for a in answers)  # paid for, so returned
    kept = [w for w in caught if issubclass(w.category, StorageWarning)]
    assert kept and "no space left on device" in str(kept[0].message)
    with pytest.raises(KitError, match="no space left on device"):
        for i in range(200):  # the journal's last page may take a few events first
            kit.memory.store("ana", f"memory {i} on a full disk " + "x" * 500)
    try:
        hits = kit.memory.retrieve("ana", "room")
        assert hits[0].id == mid
    except KitError as exc:  # refusing is fine, as long as it is a KitError naming the cause
        assert "no space left" in str(exc) or "read-only" in str(exc), exc
    (home / "filler").unlink()
    df = kit.usage()
    assert len(df) == 41 and df.request_id.is_unique
    kit.close()
