"""Cost of Ledger.record() on the hot path, and of ingesting a backlog into DuckDB.

    python benchmarks/bench_ledger_record.py [--n 20000]

Targets: record() of one row well under 50 µs (median); ingesting 10k rows well under 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cognitionos_kit.storage.ledger import Ledger  # noqa: E402


def row(i: int) -> dict:
    """A row shaped like the ones Kit writes for one chat attempt."""
    return {
        "ts": datetime.now(timezone.utc).isoformat(), "request_id": f"req_{i:024d}", "attempt": 1,
        "kind": "chat", "user_id": "alice", "agent_id": "agent-1", "task_id": "task-9", "role": "executor",
        "provider": "openai", "model": "gpt-4o-mini", "prompt_tokens": 812, "completion_tokens": 164,
        "total_tokens": 976, "cached_tokens": 0, "cache_write_tokens": 0, "tokens_estimated": False,
        "cost_usd": 0.0002202, "price_source": "genai-prices", "price_version": "0.0.30",
        "latency_ms": 734.2, "status": "ok", "error_type": None, "error_message": None, "stream": False,
        "experiment_id": "exp-1", "run_id": "run-1",
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000, help="record() calls to time")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        ledger = Ledger(home)
        rows = [row(i) for i in range(args.n)]
        for r in rows[:1000]:  # warm-up: opens the journal file
            ledger.record([r])
        samples = []
        for r in rows:
            t = time.perf_counter_ns()
            ledger.record([r])
            samples.append(time.perf_counter_ns() - t)
        samples.sort()
        print(f"record() one row: median {statistics.median(samples) / 1000:.1f} µs, "
              f"p99 {samples[int(len(samples) * 0.99)] / 1000:.1f} µs  (n={args.n})")

    with tempfile.TemporaryDirectory() as home:
        ledger = Ledger(home)
        ledger.flush()  # create the database and apply migrations outside the timing
        t = time.perf_counter()
        for i in range(10_000):
            ledger.record([row(i)])
        t_rec = time.perf_counter() - t
        t = time.perf_counter()
        added = ledger.flush()
        t_ingest = time.perf_counter() - t
        ledger.usage(user_id="nobody")  # import pandas outside the timing
        t = time.perf_counter()
        df = ledger.usage()
        t_read = time.perf_counter() - t
        assert added == 10_000 and len(df) == 10_000
        print(f"record 10k rows one by one: {t_rec * 1000:.0f} ms; ingest them (open, insert, commit, close): "
              f"{t_ingest * 1000:.0f} ms; usage() returning 10k rows: {t_read * 1000:.0f} ms")


if __name__ == "__main__":
    main()
