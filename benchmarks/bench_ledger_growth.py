"""Ledger reads as history grows: the kit's dashboard, summary, usage and spend at 10k, 100k and 1M
rows, beside the same SQL on a persistent read-only DuckDB connection, plus the fold of a journal
backlog (issue 16).

    python benchmarks/bench_ledger_growth.py                          # 10k, 100k and 1M rows (~5 min on 2 cores)
    python benchmarks/bench_ledger_growth.py --sizes 10000,100000     # a quick run

Each size runs in fresh processes: one builds the data, one times the kit's reads, one the floor
(the kit's SQL on ``duckdb.connect(path, read_only=True)``, opened once), one the fold. Timings are
medians of ``--repeats`` runs (fewer at 1M). RSS growth is the reading process's VmRSS (from
/proc/self/status) after the reads minus before them (after imports, the Kit and a warm-up read),
and its peak: ``ru_maxrss`` minus the same VmRSS before, taken once before ``usage()`` of all rows
(timed last: the whole frame weighs most) and once after it.

Rows are shaped like the kit's own (every ledger column; 30 days of history ending now, 20 users,
4 models from 2 providers, token counts, costs and latencies by model, ~4% of calls with a failed
attempt before a retry, ~0.3% failing for good, ~1% cache hits). The database for the reads is
filled by DuckDB (``INSERT ... SELECT`` over ``range()``) into a ledger made by the kit's own
migrations; the backlog is written through ``Ledger.record`` by ``--writers`` processes that then
exit, and the fold is the first read of a fresh process after them (ingesting every row).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from procmem import rss  # noqa: E402  (benchmarks/procmem.py, beside this script)

GiB = 1 << 30
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "claude-haiku-4-5")
ONE_USER = "user-07"

# One row per attempt, as the kit writes them; columns not named here are NULL, as in the kit's
# rows (reasoning_tokens, dropped_params, tool_calls, project, batch_id, memory_*, ...).
ROWS_SQL = """
WITH calls AS (
    SELECT c, (hash(c, 1) % 1000000)::BIGINT AS h, CASE WHEN hash(c, 2) % 1000 < 40 THEN 2 ELSE 1 END AS tries
    FROM range({calls}) t(c)
), attempts AS (
    SELECT c, h, tries, unnest(range(1, tries + 1)) AS attempt FROM calls
), b AS (
    SELECT c, h, tries, attempt,
        floor(sqrt(h % 400))::INTEGER AS u,                             -- 20 users, a few heavy ones
        [1, 1, 1, 2, 2, 3, 3, 3, 3, 4][(hash(c, 3) % 10)::BIGINT + 1] AS m,       -- 4 models
        attempt < tries AS retried,                                     -- rate-limited, then retried
        attempt = tries AND hash(c, 4) % 1000 < 3 AS failed,            -- gave up (timeout)
        tries = 1 AND hash(c, 5) % 100 = 0 AS hit,                      -- served from the cache
        (200 + hash(c, 6) % 2800)::INTEGER AS pt,
        (10 + hash(c, 7) % 600)::INTEGER AS ct,
        CASE WHEN hash(c, 8) % 10 = 0 THEN 1024 ELSE 0 END AS cached,
        (hash(c, 9) % 1000) / 1000.0 AS jitter,
        {t0} + c * {span} / {calls} AS t,
        (c * 30 // {calls})::INTEGER AS day
    FROM attempts
), p AS (
    SELECT *, NOT (retried OR failed) AS ok,
        ['openai', 'openai', 'anthropic', 'anthropic'][m] AS provider,
        {models}[m] AS model,
        (pt * [2.5, 0.15, 3.0, 1.0][m] + ct * [10.0, 0.6, 15.0, 5.0][m]) / 1e6 AS price
    FROM b
)
SELECT
    md5(c::VARCHAR || ':' || attempt::VARCHAR) AS row_id,
    t + (attempt - 1) * 1.5 AS ts_epoch,
    'req_' || substr(md5(c::VARCHAR), 1, 24) AS request_id,
    attempt::INTEGER AS attempt,
    'chat' AS kind,
    'user-' || lpad(u::VARCHAR, 2, '0') AS user_id,
    'agent-' || (h % 8)::VARCHAR AS agent_id,
    'task-' || (hash(c, 10) % 200)::VARCHAR AS task_id,
    ['executor', 'planner', 'critic', 'judge'][h // 8 % 4 + 1] AS role,
    provider, model,
    CASE WHEN ok THEN pt END AS prompt_tokens,
    CASE WHEN ok THEN ct END AS completion_tokens,
    CASE WHEN ok THEN pt + ct END AS total_tokens,
    CASE WHEN ok THEN CASE WHEN hit THEN 0 ELSE cached END END AS cached_tokens,
    CASE WHEN ok THEN 0 END AS cache_write_tokens,
    CASE WHEN ok THEN false END AS tokens_estimated,
    CASE WHEN hit THEN 0.0 WHEN ok THEN price END AS cost_usd,
    CASE WHEN hit THEN 'cache' WHEN ok THEN 'genai-prices' END AS price_source,
    CASE WHEN ok AND NOT hit THEN '0.0.30' END AS price_version,
    CASE WHEN hit THEN 1 + 4 * jitter
         WHEN failed THEN 60000 + 100 * jitter
         WHEN retried THEN 80 + 400 * jitter
         ELSE [450, 300, 700, 400][m] + ct * [12.0, 8.0, 20.0, 9.0][m] * (0.8 + 0.4 * jitter) END AS latency_ms,
    CASE WHEN ok THEN 'ok' ELSE 'error' END AS status,
    CASE WHEN failed THEN 'APITimeoutError' WHEN retried THEN 'RateLimitError' END AS error_type,
    CASE WHEN failed THEN 'Request timed out.'
         WHEN retried THEN 'Error code: 429 - Rate limit reached for requests' END AS error_message,
    hash(c, 11) % 5 = 0 AS stream,
    CASE WHEN h % 10 >= 3 THEN 'exp-' || (day * 3 + h % 3)::VARCHAR END AS experiment_id,
    CASE WHEN h % 10 >= 3 THEN 'run-' || (day * 6 + h % 6)::VARCHAR END AS run_id,
    hit AS cache_hit,
    CASE WHEN hit THEN price END AS saved_cost_usd,
    provider AS requested_provider, model AS requested_model, false AS substituted,
    CASE WHEN ok AND NOT hit THEN ['gpt-4o-2024-08-06', 'gpt-4o-mini-2024-07-18', 'claude-sonnet-4-5-20250929',
                                   'claude-haiku-4-5-20251001'][m] END AS response_model,
    CASE WHEN NOT hit THEN 1 END AS http_requests,
    CASE WHEN NOT hit THEN 0.2 + 2 * jitter END AS setup_ms,
    CASE WHEN ok AND NOT hit AND cached > 0 THEN cached * [2.5, 0.15, 3.0, 1.0][m] * 0.5 / 1e6 END AS cache_saving_usd,
    CASE WHEN h % 10 < 2 THEN 'tr_' || substr(md5((c // 4)::VARCHAR), 1, 16) END AS trace_id,
    'sess-' || u::VARCHAR || '-' || day::VARCHAR AS session_id,
    CASE WHEN NOT hit THEN 'sha256:' || substr(md5(provider), 1, 16) END AS key_fingerprint
FROM p
ORDER BY c, attempt
LIMIT {n}
"""

# The SQL the kit runs for usage(), usage(user_id=...) and spend(by="model") (storage/ledger.py).
ORDER = " ORDER BY u.ts, u.attempt, u.row_id"
USAGE_SQL = "SELECT * FROM llm_usage u" + ORDER
USAGE_USER_SQL = "SELECT * FROM llm_usage u WHERE u.user_id = ?" + ORDER
_OK = "FILTER (WHERE u.status = 'ok')"
SPEND_MODEL_SQL = (
    f"SELECT u.model AS model, count(*) {_OK} AS calls, count(*) AS attempts, sum(u.cost_usd) AS cost_usd, "
    "count(*) FILTER (WHERE u.status = 'ok' AND u.cost_usd IS NULL) AS unpriced_calls, "
    "CAST(sum(u.prompt_tokens) AS BIGINT) AS prompt_tokens, "
    "CAST(sum(u.completion_tokens) AS BIGINT) AS completion_tokens, "
    "CAST(sum(coalesce(u.total_tokens, u.prompt_tokens + u.completion_tokens)) AS BIGINT) AS total_tokens, "
    f"quantile_cont(u.latency_ms, 0.5) {_OK} AS latency_ms_p50, quantile_cont(u.latency_ms, 0.95) {_OK} AS latency_ms_p95 "
    "FROM llm_usage u GROUP BY 1 ORDER BY 4 DESC NULLS LAST, 1"
)


def rows_sql(n: int, t0: float) -> str:
    calls = math.ceil(n / 1.035) + 100  # ~4% of calls take two attempts: always at least n rows
    return ROWS_SQL.format(n=n, calls=calls, t0=repr(t0), span=30 * 86400.0, models=list(MODELS))


def max_rss() -> int:
    """This process's peak resident memory so far in bytes (``ru_maxrss``, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``repeats`` calls."""
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


# --- the child processes (one job each, a JSON line on stdout) ------------------------------
def make_ledger(home: str, n: int, t0: float) -> dict:
    import duckdb

    from cognitionos_kit.storage.ledger import Ledger

    ledger = Ledger(home)
    ledger.flush()  # creates the database with the kit's migrations
    t = time.perf_counter()
    con = duckdb.connect(str(ledger.db_path))
    con.execute(f"INSERT INTO llm_usage BY NAME SELECT * EXCLUDE (ts_epoch), to_timestamp(ts_epoch) AS ts "
                f"FROM ({rows_sql(n, t0)})")
    count = con.execute("SELECT count(*) FROM llm_usage").fetchone()[0]
    con.close()
    return {"rows": count, "build_s": time.perf_counter() - t}


def write_journal(home: str, n: int, t0: float, start: int, count: int) -> dict:
    """Rows ``start:start+count`` through ``Ledger.record`` in batches, as a kit process writes them."""
    import duckdb

    from cognitionos_kit.storage.ledger import Ledger

    ledger = Ledger(home)
    con = duckdb.connect()
    if not count:
        ledger.flush()  # creates the database with the kit's migrations
    cur = con.execute(f"SELECT * FROM ({rows_sql(n, t0)}) ORDER BY ts_epoch, row_id LIMIT {count} OFFSET {start}")
    names = [d[0] for d in cur.description]
    written = 0
    while batch := cur.fetchmany(2000):
        rows = [{("ts" if k == "ts_epoch" else k): v for k, v in zip(names, r) if v is not None} for r in batch]
        ledger.record(rows)  # epoch-second floats in "ts", as the kit's recorder writes them
        written += len(rows)
    return {"rows": written}


def fold(home: str) -> dict:
    import duckdb  # noqa: F401  (imports outside the timing)
    import pandas  # noqa: F401

    from cognitionos_kit.storage.ledger import Ledger

    backlog = sum(p.stat().st_size for p in (Path(home) / "journal").glob("*.jsonl"))
    t = time.perf_counter()
    rows = int(Ledger(home).query("SELECT count(*) AS n FROM llm_usage")["n"].iloc[0])
    return {"fold_s": time.perf_counter() - t, "rows": rows, "backlog_bytes": backlog}


def kit_reads(home: str, n: int, t0: float, repeats: int) -> dict:
    import pandas as pd  # noqa: F401  (imports before the RSS baseline)

    import cognitionos_kit.notebook.dashboard  # noqa: F401
    from cognitionos_kit import Kit

    kit = Kit(home, dotenv=False)
    kit.usage(user_id="nobody")  # warm-up: opens DuckDB once, imports what a read needs
    rss0 = rss()
    few = max(1, min(repeats, 3))  # the same at every size: the first refresh after dashboard() is the slowest
    out: dict = {}
    t = time.perf_counter()
    d = kit.dashboard(refresh_s=None)
    out["dashboard()"] = time.perf_counter() - t
    out["dashboard.refresh()"] = timed(lambda: d.refresh(), few)
    out["summary()"] = timed(kit.summary, repeats)
    out["usage(user_id=)"] = timed(lambda: kit.usage(user_id=ONE_USER), repeats)
    out['spend(by="model")'] = timed(lambda: kit.spend(by="model"), repeats)
    out["rss_peak_partial"] = (max_rss() - rss0) / GiB
    out["usage()"] = timed(kit.usage, repeats)  # last: the whole frame weighs most
    out["rss_peak_growth"] = (max_rss() - rss0) / GiB
    out["rss_growth"] = (rss() - rss0) / GiB
    df = kit.usage()
    out["rows_read"] = len(df)
    out["dashboard_rows"] = getattr(d, "rows", n)  # the rows it drew, while it says so
    d.close()
    out["dtypes_match"] = _dtypes_match(df, n, t0)
    return out


def _dtypes_match(df: object, n: int, t0: float) -> str:
    """'ok' if the generated rows read back with the dtypes of the same rows recorded by the kit."""
    import duckdb

    from cognitionos_kit.storage.ledger import Ledger

    with tempfile.TemporaryDirectory() as home:
        cur = duckdb.connect().execute(f"SELECT * FROM ({rows_sql(n, t0)}) LIMIT 2000")
        names = [d[0] for d in cur.description]
        ledger = Ledger(home)
        ledger.record([{("ts" if k == "ts_epoch" else k): v for k, v in zip(names, r) if v is not None}
                       for r in cur.fetchall()])
        ref = ledger.usage().dtypes
    got = df.dtypes  # type: ignore[attr-defined]
    bad = [f"{c}: {got[c]} vs {ref[c]}" for c in ref.index if c not in got or got[c] != ref[c]]
    return "ok" if not bad else "; ".join(bad)


def floor_reads(home: str, repeats: int) -> dict:
    import duckdb

    con = duckdb.connect(str(Path(home) / "cognitionos.duckdb"), read_only=True)
    con.execute("SELECT count(*) FROM llm_usage").fetchall()  # warm-up
    return {
        "usage()": timed(lambda: con.execute(USAGE_SQL).df(), repeats),
        "usage(user_id=)": timed(lambda: con.execute(USAGE_USER_SQL, [ONE_USER]).df(), repeats),
        'spend(by="model")': timed(lambda: con.execute(SPEND_MODEL_SQL).df(), repeats),
    }


# --- the parent: one set of processes per size, then the table -------------------------------
def child(*args: object) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps([str(a) for a in args])]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{args[0]} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def run_child(spec: str) -> None:
    job, *a = json.loads(spec)
    if job == "make_ledger":
        out = make_ledger(a[0], int(a[1]), float(a[2]))
    elif job == "write_journal":
        out = write_journal(a[0], int(a[1]), float(a[2]), int(a[3]), int(a[4]))
    elif job == "fold":
        out = fold(a[0])
    elif job == "kit_reads":
        out = kit_reads(a[0], int(a[1]), float(a[2]), int(a[3]))
    else:
        out = floor_reads(a[0], int(a[1]))
    print(json.dumps(out))


def measure(n: int, t0: float, repeats: int, writers: int, do_fold: bool) -> dict:
    reps = repeats if n < 1_000_000 else max(1, repeats // 2)
    with tempfile.TemporaryDirectory(prefix="ledger-growth-") as tmp:
        home = os.path.join(tmp, "reads")
        built = child("make_ledger", home, n, t0)
        print(f"  {n:,} rows: database built by DuckDB in {built['build_s']:.1f} s", flush=True)
        kit = child("kit_reads", home, n, t0, reps)
        print(f"  {n:,} rows: kit reads done ({kit['rows_read']:,} rows read back, dtypes {kit['dtypes_match']})",
              flush=True)
        floor = child("floor_reads", home, reps)
        res = {"kit": kit, "floor": floor, "rows": built["rows"]}
        if do_fold:
            jhome = os.path.join(tmp, "journals")
            child("write_journal", jhome, n, t0, 0, 0)  # creates the database (migrations) in its own process
            per = math.ceil(n / writers)
            t = time.perf_counter()
            for start in range(0, n, per):
                child("write_journal", jhome, n, t0, start, min(per, n - start))
            print(f"  {n:,} rows: journals written by {math.ceil(n / per)} processes in "
                  f"{time.perf_counter() - t:.1f} s", flush=True)
            res["fold"] = child("fold", jhome)
        return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000", help="ledger rows, comma-separated")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per read (half at 1M and more)")
    ap.add_argument("--writers", type=int, default=4, help="processes writing the journal backlog")
    ap.add_argument("--no-fold", action="store_true", help="skip the journal backlog")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_child(args.child)
        return
    sizes = sorted(int(s) for s in args.sizes.split(","))
    t0 = time.time() - 30 * 86400  # 30 days of history ending now
    print(f"## ledger reads at {', '.join(f'{n:,}' for n in sizes)} rows (20 users, 4 models, 30 days)", flush=True)
    results = {n: measure(n, t0, args.repeats, args.writers, not args.no_fold) for n in sizes}
    report(sizes, results)


def report(sizes: list[int], results: dict[int, dict]) -> None:
    big = sizes[-1]
    kit_big, floor_big = results[big]["kit"], results[big]["floor"]
    small = results[10_000]["kit"] if 10_000 in sizes else None

    def ms(s: float) -> str:
        return f"{s * 1000:,.0f} ms" if s < 10 else f"{s:,.1f} s"

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    cols = [f"{n // 1000:,}k rows" if n < 1_000_000 else f"{n / 1e6:g}M rows" for n in sizes]
    head = f"| read | {' | '.join(cols)} | same SQL, persistent DuckDB, {cols[-1]} | kit/floor | target at {cols[-1]} |"
    print()
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for read in ("dashboard()", "dashboard.refresh()", "summary()", "usage()", "usage(user_id=)", 'spend(by="model")'):
        times = [results[n]["kit"][read] for n in sizes]
        f = floor_big.get(read)
        floor = ms(f) if f is not None else "—"
        ratio = f"{kit_big[read] / f:.2f}x" if f is not None else "—"
        target = "—"
        if read == "dashboard.refresh()":
            ok = kit_big[read] <= 0.150
            target = f"<= 150 ms: {verdict(ok)}"
            if small is not None:
                target += f"; <= 2x 10k ({kit_big[read] / small[read]:.1f}x): {verdict(kit_big[read] <= 2 * small[read])}"
        elif read == "summary()":
            target = f"<= 300 ms: {verdict(kit_big[read] <= 0.300)}"
        elif read in ("usage(user_id=)", 'spend(by="model")'):
            target = f"<= 1.5x floor: {verdict(kit_big[read] <= 1.5 * f)}"  # type: ignore[operator]
        name = {"dashboard()": "kit.dashboard(refresh_s=None)", "usage(user_id=)": f"usage(user_id={ONE_USER!r})"}.get(read, read)
        print(f"| `{name}` | {' | '.join(ms(t) for t in times)} | {floor} | {ratio} | {target} |")
    for key, label in (("rss_growth", "RSS growth after the reads (VmRSS)"),
                       ("rss_peak_partial", "RSS peak growth, all reads but `usage()` (ru_maxrss)"),
                       ("rss_peak_growth", "RSS peak growth, all the reads (ru_maxrss)")):
        vals = [results[n]["kit"][key] for n in sizes]
        ok = kit_big[key] <= 0.5
        print(f"| {label} | {' | '.join(f'{v:.2f} GiB' for v in vals)} | — | — | <= 0.5 GiB: {verdict(ok)} |")
    if all("fold" in results[n] for n in sizes):
        folds = [results[n]["fold"] for n in sizes]
        target = f"<= 10 s: {verdict(folds[-1]['fold_s'] <= 10)}" if big >= 1_000_000 else "<= 10 s at 1M (not run)"
        print(f"| fold the journal backlog (first read) | {' | '.join(ms(f['fold_s']) for f in folds)} | — | — | {target} |")
        for n, f in zip(sizes, folds):
            if f["rows"] != n:
                print(f"!! fold at {n:,}: {f['rows']:,} rows in DuckDB after the first read, expected {n:,}")
        mb = ", ".join(f"{f['backlog_bytes'] / 1e6:,.0f} MB" for f in folds)
        print(f"\njournal backlog folded: {mb}")
    for n in sizes:
        k = results[n]["kit"]
        if results[n]["rows"] != n:
            print(f"!! the database built for {n:,} rows holds {results[n]['rows']:,}")
        if k["rows_read"] != n or k["dashboard_rows"] != n:
            print(f"note: at {n:,} rows usage() returned {k['rows_read']:,} rows and the dashboard showed "
                  f"{k['dashboard_rows']:,} (a default time window?)")
        if k["dtypes_match"] != "ok":
            print(f"!! at {n:,} rows the generated rows read back with other dtypes than recorded ones: {k['dtypes_match']}")


if __name__ == "__main__":
    main()
