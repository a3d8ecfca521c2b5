"""The llm_usage ledger on real DuckDB files, including several processes at once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest

from cognitionos_kit.core.errors import InvalidRequestError, StorageError
from cognitionos_kit.storage.ledger import LEDGER_COLUMNS, Ledger
from cognitionos_kit.storage.migrations import LEDGER_MIGRATIONS, Migrations
from cognitionos_kit.storage.store import Store

TESTS = Path(__file__).parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
UTC = timezone.utc


def run_writer(mode: str, home: Path, n: int, tag: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(TESTS / "_ledger_writer.py"), mode, str(home), str(n), tag],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )


def hold_lock(db: Path, seconds: float) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, str(TESTS / "_lock_holder.py"), str(db), str(seconds)],
                         stdout=subprocess.PIPE, text=True, env=ENV)
    assert p.stdout.readline().strip() == "locked"
    return p


def na(v: Any) -> Any:
    return None if v is None or (not isinstance(v, str) and pd.isna(v)) else v


# --- record / usage -----------------------------------------------------------------------
def test_round_trip_keeps_types_and_nulls(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ts = datetime(2024, 5, 1, 23, 30, tzinfo=timezone(timedelta(hours=2)))
    before = datetime.now(UTC)
    ledger.record([
        {"ts": ts, "request_id": "r1", "attempt": 1, "kind": "chat", "user_id": "alice", "provider": "openai",
         "model": "gpt-4o-mini", "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
         "tokens_estimated": False, "cost_usd": 0.25, "latency_ms": 12.5, "status": "ok", "stream": True},
        {"request_id": "r2", "attempt": 2, "status": "error", "error_type": "timeout", "cost_usd": None},
    ])
    df = ledger.usage()
    assert list(df.columns) == list(LEDGER_COLUMNS)
    assert str(df["ts"].dtype).startswith("datetime64") and str(df["ts"].dt.tz) == "UTC"
    first, second = df.iloc[0], df.iloc[1]  # ordered by ts: the given one is in the past
    assert first["ts"].to_pydatetime() == ts
    assert before <= second["ts"].to_pydatetime() <= datetime.now(UTC)
    assert first["request_id"] == "r1" and int(first["prompt_tokens"]) == 10 and first["cost_usd"] == 0.25
    assert bool(first["stream"]) is True and bool(first["tokens_estimated"]) is False
    assert second["cost_usd"] is pd.NA  # NULL stays NULL (never 0), and reads <NA> like every missing value
    assert pd.isna(second["prompt_tokens"]) and pd.isna(second["stream"])
    assert df["row_id"].str.fullmatch(r"[0-9a-f]{32}").all() and df["row_id"].is_unique


def test_record_rejects_unknown_columns_before_writing(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    with pytest.raises(InvalidRequestError, match=r"\['colour', 'price'\]"):
        ledger.record([{"user_id": "a"}, {"user_id": "b", "price": 1, "colour": "red"}])
    with pytest.raises(InvalidRequestError):
        ledger.record([{"ts": "not a date"}])
    assert len(ledger.usage()) == 0
    assert isinstance(InvalidRequestError("x"), ValueError)


def test_record_accepts_a_single_dict_and_iso_ts(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.record({"user_id": "a", "ts": "2024-01-02T03:04:05Z"})
    ledger.record([{"user_id": "b", "ts": date(2024, 1, 1)}])
    df = ledger.usage()
    assert df["user_id"].tolist() == ["b", "a"]
    assert df["ts"].tolist() == [pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-02T03:04:05", tz="UTC")]


def test_usage_filters(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    base = datetime(2024, 6, 1, tzinfo=UTC)
    ledger.record([
        {"row_id": f"r{i}", "ts": base + timedelta(hours=i), "attempt": 1, "user_id": u, "provider": p, "status": s}
        for i, (u, p, s) in enumerate([("alice", "openai", "ok"), ("bob", "openai", "error"),
                                       ("alice", "anthropic", "ok"), (None, "openai", "ok")])
    ])

    def ids(**f: Any) -> list[str]:
        return ledger.usage(**f)["row_id"].tolist()

    assert ids() == ["r0", "r1", "r2", "r3"]
    assert ids(user_id="alice") == ["r0", "r2"]
    assert ids(provider="openai", status="ok") == ["r0", "r3"]
    assert ids(user_id=None) == ["r3"]
    assert ids(user_id=["bob", "alice"]) == ["r0", "r1", "r2"]
    assert ids(user_id=[]) == []
    assert ids(since=base + timedelta(hours=1)) == ["r1", "r2", "r3"]
    assert ids(until="2024-06-01T02:00:00+00:00") == ["r0", "r1"]
    assert ids(since="2024-06-01T03:00:00+02:00", until=base + timedelta(hours=3)) == ["r1", "r2"]
    assert ids(user_id="alice'; DROP TABLE llm_usage; --") == []
    assert len(ids()) == 4
    with pytest.raises(InvalidRequestError, match="valid columns: row_id, ts"):
        ledger.usage(colour="red")
    with pytest.raises(InvalidRequestError):
        ledger.usage(since="last tuesday")


def test_usage_orders_by_ts_then_attempt(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    t = datetime(2024, 1, 1, tzinfo=UTC)
    ledger.record([{"ts": t, "attempt": 2, "model": "b"}, {"ts": t, "attempt": 1, "model": "a"},
                   {"ts": t - timedelta(seconds=1), "attempt": 3, "model": "z"}])
    assert ledger.usage()["model"].tolist() == ["z", "a", "b"]


# --- spend --------------------------------------------------------------------------------
def make_rows(n: int = 120, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    plus5 = timezone(timedelta(hours=5))
    rows = []
    for i in range(n):
        status = rng.choice(["ok", "ok", "ok", "error", "interrupted"])
        p, c = rng.randint(1, 500), rng.randint(0, 300)
        rows.append({
            "row_id": f"row{i}",
            # local times around midnight at +05:00, so the UTC day differs from the local one
            "ts": datetime(2024, 2, rng.randint(1, 3), rng.choice([1, 4, 23]), rng.randint(0, 59), tzinfo=plus5),
            "attempt": rng.randint(1, 3),
            "user_id": rng.choice(["alice", "bob", "carol", None]),
            "agent_id": rng.choice(["a1", "a2"]),
            "task_id": rng.choice(["t1", "t2", "t3"]),
            "role": rng.choice(["planner", "executor", "critic"]),
            "provider": rng.choice(["openai", "anthropic"]),
            "model": rng.choice(["m-small", "m-large", "m-mid"]),
            "status": status,
            "prompt_tokens": p if status != "error" else None,
            "completion_tokens": c if status != "error" else None,
            "total_tokens": (p + c if rng.random() < 0.7 else None) if status != "error" else None,
            "cost_usd": rng.choice([None, round(rng.uniform(0, 0.05), 6)]) if status != "error" else None,
            "latency_ms": rng.choice([None, round(rng.uniform(50, 3000), 3)]),
        })
    return rows


def expected_spend(rows: list[dict], keys: list[str]) -> dict[tuple, dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[tuple(r["ts"].astimezone(UTC).date() if k == "day" else r[k] for k in keys)].append(r)

    def total(vals: list) -> Any:
        vals = [v for v in vals if v is not None]
        return sum(vals) if vals else None

    out = {}
    for key, rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok"]
        lat = [r["latency_ms"] for r in ok if r["latency_ms"] is not None]
        tt = [r["total_tokens"] if r["total_tokens"] is not None else
              (r["prompt_tokens"] + r["completion_tokens"] if r["prompt_tokens"] is not None else None) for r in rs]
        out[key] = {
            "calls": len(ok), "attempts": len(rs), "cost_usd": total([r["cost_usd"] for r in rs]),
            "unpriced_calls": sum(r["cost_usd"] is None for r in ok),
            "prompt_tokens": total([r["prompt_tokens"] for r in rs]),
            "completion_tokens": total([r["completion_tokens"] for r in rs]),
            "total_tokens": total(tt),
            "latency_ms_p50": float(np.percentile(lat, 50)) if lat else None,
            "latency_ms_p95": float(np.percentile(lat, 95)) if lat else None,
        }
    return out


@pytest.fixture(scope="module")
def spend_ledger(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ledger, list[dict]]:
    rows = make_rows()
    ledger = Ledger(tmp_path_factory.mktemp("spend"))
    ledger.record(rows)
    return ledger, rows


@pytest.mark.parametrize(
    "by", ["user_id", "model", "provider", "day", "role", "agent_id", "task_id", ["day", "model"], ["provider", "user_id"]]
)
def test_spend_matches_independent_computation(spend_ledger: tuple[Ledger, list[dict]], by: Any) -> None:
    ledger, rows = spend_ledger
    keys = [by] if isinstance(by, str) else by
    df = ledger.spend(by)
    metrics = ["calls", "attempts", "cost_usd", "unpriced_calls", "prompt_tokens", "completion_tokens",
               "total_tokens", "latency_ms_p50", "latency_ms_p95"]
    assert list(df.columns) == keys + metrics
    want = expected_spend(rows, keys)
    got = {}
    for rec in df.to_dict("records"):
        key = tuple(pd.Timestamp(rec[k]).date() if k == "day" else na(rec[k]) for k in keys)
        got[key] = {m: na(rec[m]) for m in metrics}
    assert got.keys() == want.keys()
    for key, w in want.items():
        for m in metrics:
            if w[m] is None:
                assert got[key][m] is None, (key, m)
            else:
                assert got[key][m] == pytest.approx(w[m], rel=1e-9), (key, m)
    costs = [c for c in df["cost_usd"] if not pd.isna(c)]
    assert costs == sorted(costs, reverse=True)
    assert df["cost_usd"].isna().sum() == 0 or df["cost_usd"].isna().iloc[-1]  # unpriced groups last


def test_spend_totals_and_filters(spend_ledger: tuple[Ledger, list[dict]]) -> None:
    ledger, rows = spend_ledger
    all_ = ledger.spend([])
    assert len(all_) == 1 and all_["attempts"][0] == len(rows)
    only = ledger.spend("model", provider="openai")
    assert only["attempts"].sum() == sum(r["provider"] == "openai" for r in rows)


def test_spend_unpriced_calls_are_not_zero_cost(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.record([{"user_id": "u", "status": "ok", "cost_usd": None}] * 2 + [{"user_id": "v", "status": "ok", "cost_usd": 0.0}])
    df = ledger.spend("user_id").set_index("user_id")
    assert pd.isna(df.loc["u", "cost_usd"]) and df.loc["u", "unpriced_calls"] == 2
    assert df.loc["v", "cost_usd"] == 0.0 and df.loc["v", "unpriced_calls"] == 0
    assert df.index.tolist() == ["v", "u"]


def test_spend_rejects_unknown_keys(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="choose from"):
        Ledger(tmp_path).spend("colour")
    with pytest.raises(InvalidRequestError):
        Ledger(tmp_path).spend(["model", "cost_usd"])


# --- schema -------------------------------------------------------------------------------
def test_old_schema_is_upgraded(tmp_path: Path) -> None:
    first = Migrations("ledger")
    first(LEDGER_MIGRATIONS.steps[0][1])  # a database created by migration 1 only
    old = Store(tmp_path / "cognitionos.duckdb", tmp_path / "journal", first)
    with old.connect() as con:
        con.execute("INSERT INTO llm_usage (row_id, ts, user_id) VALUES ('old', now(), 'alice')")
        assert "cache_hit" not in [r[0] for r in con.execute("DESCRIBE llm_usage").fetchall()]

    ledger = Ledger(tmp_path)
    ledger.record([{"row_id": "new", "cache_hit": True, "saved_cost_usd": 0.5}])
    df = ledger.usage().set_index("row_id")
    assert list(df.reset_index().columns) == list(LEDGER_COLUMNS)
    assert pd.isna(df.loc["old", "cache_hit"]) and df.loc["old", "user_id"] == "alice"
    assert bool(df.loc["new", "cache_hit"]) is True and df.loc["new", "saved_cost_usd"] == 0.5
    applied = ledger.query("SELECT name FROM _migrations ORDER BY applied_at")["name"].tolist()
    assert applied == [n for n, _ in LEDGER_MIGRATIONS.steps]


def test_migrations_run_once(tmp_path: Path) -> None:
    for _ in range(3):
        Ledger(tmp_path).flush()
    names = Ledger(tmp_path).store.query("SELECT name FROM _migrations")["name"].tolist()
    assert sorted(names) == sorted(n for n, _ in LEDGER_MIGRATIONS.steps)


# --- exactly once -------------------------------------------------------------------------
def test_two_ledgers_in_one_process_exactly_once(tmp_path: Path) -> None:
    a, b = Ledger(tmp_path), Ledger(tmp_path)
    a.record([{"user_id": "a"}] * 5)
    b.record([{"user_id": "b"}] * 5)
    assert a.flush() == 10
    assert b.flush() == 0
    a.record([{"user_id": "a"}])
    assert len(b.usage()) == 11 and len(a.usage()) == 11
    assert a.usage()["row_id"].is_unique


# --- several processes --------------------------------------------------------------------
@pytest.mark.slow
def test_two_processes_record_and_read_at_once(tmp_path: Path) -> None:
    procs = [run_writer("concurrent", tmp_path, 300, tag) for tag in ("p1", "p2")]
    (tmp_path / "go").touch()
    ids = set()
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        ids |= set(json.loads(out))
    assert len(ids) == 600
    df = Ledger(tmp_path).usage()
    assert len(df) == 600
    assert set(df["row_id"]) == ids
    assert df.groupby("user_id").size().to_dict() == {"p1": 300, "p2": 300}
    assert list((tmp_path / "journal").glob("*.jsonl")) == []  # both writers exited: files cleaned up


def test_rows_survive_sigkill_right_after_record(tmp_path: Path) -> None:
    p = run_writer("sigkill", tmp_path, 200, "killed")
    try:
        ids = json.loads(p.stdout.readline())
        assert p.stdout.readline().strip() == "done"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert p.returncode == -signal.SIGKILL
    df = Ledger(tmp_path).usage()
    assert df["row_id"].tolist() == ids  # all of them, in order of attempt
    assert list((tmp_path / "journal").glob("*.jsonl")) == []


def test_usage_waits_for_a_lock_held_briefly(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.record([{"user_id": "a"}])
    holder = hold_lock(ledger.db_path, 1.0)
    try:
        assert holder.poll() is None  # still holding while we start reading
        assert ledger.usage()["user_id"].tolist() == ["a"]
    finally:
        holder.kill()
        holder.wait()


def test_lock_held_past_timeout_raises_storage_error(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, lock_timeout=0.5)
    ledger.record([{"user_id": "a"}])
    holder = hold_lock(ledger.db_path, 60)
    try:
        with pytest.raises(StorageError, match=r"timed out after 0.5 s waiting for the lock on .*cognitionos.duckdb"):
            ledger.usage()
    finally:
        holder.kill()
        holder.wait()
    assert ledger.usage()["user_id"].tolist() == ["a"]  # nothing lost; works once the lock is gone


def test_fsync_option(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, fsync=True)
    ledger.record([{"user_id": "a"}])
    with ledger:
        pass
    with duckdb.connect(str(ledger.db_path)) as con:
        assert con.execute("SELECT count(*) FROM llm_usage").fetchone()[0] == 1  # close() flushed


def test_usage_read_through_arrow_is_the_frame_duckdb_and_tidy_give(tmp_path: Path) -> None:
    """usage() converts DuckDB's Arrow result to nullable dtypes directly (no Python object per
    value); it must be exactly tidy(DuckDB's own frame): values, NULLs, dtypes, column order."""
    from pandas.testing import assert_frame_equal

    from cognitionos_kit.storage.frames import tidy

    ledger = Ledger(tmp_path)
    rng = random.Random(3)
    ledger.record([{
        "request_id": f"req_{i // 2}", "attempt": 1 + i % 2, "provider": rng.choice(["openai", "anthropic"]),
        "model": rng.choice(["gpt-4o-mini", "claude-haiku-4-5", None]), "status": "ok" if i % 7 else "error",
        "user_id": rng.choice(["ada", "bob", None]), "prompt_tokens": rng.choice([None, rng.randint(1, 999)]),
        "completion_tokens": rng.randint(0, 500), "cost_usd": rng.choice([None, rng.random() / 1000]),
        "latency_ms": rng.random() * 900, "cache_hit": rng.choice([True, False, None]), "substituted": i % 5 == 0,
        "ts": datetime(2026, 11, 1, tzinfo=timezone.utc) + timedelta(minutes=i),
    } for i in range(500)])
    order = "ORDER BY u.ts, u.attempt, u.row_id"
    assert_frame_equal(ledger.usage(), tidy(ledger.store.query(f"SELECT * FROM llm_usage u {order}")))
    assert_frame_equal(ledger.usage(user_id="ada"),
                       tidy(ledger.store.query(f"SELECT * FROM llm_usage u WHERE u.user_id = ? {order}", ["ada"])))
    assert len(ledger.usage(last=7)) == 7 and ledger.usage(user_id="nobody").empty
    assert_frame_equal(ledger.usage(user_id="nobody"),
                       tidy(ledger.store.query(f"SELECT * FROM llm_usage u WHERE u.user_id = 'nobody' {order}")))
    # a column Arrow is not mapped for (a DATE): the same frame, through tidy
    sql = "SELECT CAST(u.ts AS DATE) AS day, count(*) AS n FROM llm_usage u GROUP BY 1 ORDER BY 1"
    assert_frame_equal(ledger.store.query_tidy(sql), tidy(ledger.store.query(sql)))
