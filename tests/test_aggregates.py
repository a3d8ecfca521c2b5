"""Reads that cost what they return: ``kit.summary()`` computed in DuckDB, and the dashboard's
running aggregates, which fold in only the rows added since its last refresh. Both are checked
against a full recomputation over real ledger files written by two processes."""

from __future__ import annotations

import random
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from cognitionos_kit import Kit, SimulatedProvider
from cognitionos_kit.calls.providers.simulated import LatencyModel
from cognitionos_kit.core.display import UsageSummary
from cognitionos_kit.storage import aggregates
from cognitionos_kit.storage.aggregates import Aggregates, latency_groups, summary_of
from cognitionos_kit.storage.ledger import where_clause

# the other process: its own Kit on the same data folder, calls for two users with two roles
WRITER = """
import sys
from cognitionos_kit import Kit
from cognitionos_kit.calls.providers.simulated import LatencyModel
home, batch, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
kit = Kit(home, dotenv=False, simulated_latency=LatencyModel(scale=0.001), project="other")
for i in range(n):
    kit.complete(f"Batch {batch} call {i}", user_id=("ines", "jon")[i % 2], role=("planner", "executor")[i % 2])
kit.close()
"""

SUMMARY_FIELDS = ("calls", "attempts", "failures", "failed_calls", "unpriced_calls", "tokens", "substituted", "estimated")


def _state(agg: Aggregates) -> tuple:
    groups = {k: ({n: round(v, 12) for n, v in g.counts.items()}, dict(g.bins), g.low, g.high, list(g.points),
                  g.first, g.last) for k, g in agg.groups.items()}
    return groups, {p: {m: round(v, 12) for m, v in line.items()} for p, line in agg.spend_minutes.items()}


def _odd_rows(rng: random.Random) -> list[dict]:
    """Rows the kit's calls here do not make: unpriced answers, an embedding in two batches, a
    failed attempt without a latency."""
    emb = "req_" + uuid.uuid4().hex[:24]
    now = time.time()
    return [
        {"request_id": "req_" + uuid.uuid4().hex[:24], "attempt": 1, "kind": "chat", "provider": "local",
         "model": "mystery-7b", "status": "ok", "latency_ms": rng.uniform(5, 900), "cost_usd": None,
         "total_tokens": 40, "user_id": "kim", "ts": now},
        {"request_id": emb, "attempt": 1, "kind": "embedding", "provider": "openai", "model": "text-embedding-3-small",
         "status": "ok", "latency_ms": rng.uniform(5, 50), "cost_usd": 1e-6, "total_tokens": 100, "user_id": "kim", "ts": now},
        {"request_id": emb, "attempt": 2, "kind": "embedding", "provider": "openai", "model": "text-embedding-3-small",
         "status": "ok", "latency_ms": rng.uniform(5, 50), "cost_usd": 2e-6, "total_tokens": 200, "user_id": "kim", "ts": now},
        {"request_id": "req_" + uuid.uuid4().hex[:24], "attempt": 1, "kind": "chat", "provider": "local",
         "model": "mystery-7b", "status": "error", "error_type": "timeout", "latency_ms": None, "cost_usd": None,
         "user_id": "kim", "ts": now},
    ]


def _full(kit: Kit) -> Aggregates:
    fresh = Aggregates(*where_clause({}, None, None, "u."))
    fresh.update(kit.ledger.store.query_many)
    return fresh


def _same_summary(shown: UsageSummary, exact: UsageSummary) -> None:
    assert {f: getattr(shown, f) for f in SUMMARY_FIELDS} == {f: getattr(exact, f) for f in SUMMARY_FIELDS}
    assert shown.spend_usd == pytest.approx(exact.spend_usd, rel=1e-9)
    assert (shown.p50_ms, shown.p95_ms) == pytest.approx((exact.p50_ms, exact.p95_ms), rel=1e-9)
    cols = ["provider", "answered", "attempts", "failures", "substitutes"]
    assert shown.by_provider[cols].to_dict("records") == exact.by_provider[cols].to_dict("records")
    assert shown.by_provider.spend_usd.tolist() == pytest.approx(exact.by_provider.spend_usd.tolist(), rel=1e-9)
    assert shown.by_provider.p95_ms.tolist() == pytest.approx(exact.by_provider.p95_ms.tolist(), rel=1e-9)


def test_incremental_dashboard_equals_a_full_recomputation_across_two_processes(tmp_path):
    home = tmp_path / "home"
    flaky = SimulatedProvider(name="flaky")
    kit = Kit(home, providers=[flaky, "simulated"], dotenv=False, simulated_latency=LatencyModel(scale=0.001))
    d = kit.dashboard(refresh_s=None)
    rng = random.Random(16)
    for batch in range(4):
        for _ in range(rng.randint(3, 10)):
            if rng.random() < 0.3:
                flaky.fail_next(1, rng.choice(["rate_limit", "server_error"]))  # a failed attempt, then a substitute
            kit.complete(f"Question {rng.randint(0, 4)}", user_id=rng.choice(["ana", "bo"]), temperature=0,
                         role=rng.choice(["planner", "executor"]))  # repeats: cache hits
        subprocess.run([sys.executable, "-c", WRITER, str(home), str(batch), str(rng.randint(2, 8))], check=True,
                       timeout=120)
        kit.ledger.record(_odd_rows(rng))
        assert d.refresh(force=False) is True
        assert _state(d._aggregates) == _state(_full(kit))
        exact = UsageSummary(kit.usage())
        _same_summary(summary_of(d._aggregates, "Usage"), exact)
        _same_summary(kit.summary(), exact)
        assert d.rows == len(kit.usage()) and d.spend_usd == pytest.approx(exact.spend_usd, rel=1e-9)
    assert exact.failures > 0 and exact.substituted > 0 and exact.unpriced_calls > 0
    assert len(exact.by_provider) == 4  # flaky, local, openai, simulated
    # a rebuilt ledger is folded again from scratch, to the same numbers
    before = _state(d._aggregates)
    kit.ledger.rebuild()
    kit.ledger.record(_odd_rows(rng))
    d.refresh()
    assert _state(d._aggregates) == _state(_full(kit)) != before
    kit.close()


def test_past_the_kept_points_percentiles_come_from_the_histogram_within_one_percent(tmp_path, monkeypatch):
    monkeypatch.setattr(aggregates, "POINTS", 5)
    kit = Kit(tmp_path / "home", dotenv=False)
    rng = np.random.default_rng(3)
    latencies = rng.lognormal(mean=5, sigma=1, size=400)
    t0 = time.time()  # one ms apart: rows written in one microsecond share a ts, and ties order by row_id
    kit.ledger.record([{"request_id": f"req_{i:06d}", "attempt": 1, "kind": "chat", "provider": "openai",
                        "model": "gpt-4o-mini", "status": "ok", "latency_ms": float(ms), "cost_usd": 1e-5,
                        "user_id": "ana", "ts": t0 + i / 1000} for i, ms in enumerate(latencies)])
    d = kit.dashboard(refresh_s=None)
    (group,) = latency_groups(d._aggregates)
    assert group.n == 400 and len(group.x) == 5 and group.x == pytest.approx(latencies[-5:].tolist())
    for q in (50, 95, 99):
        assert group.marks[q] == pytest.approx(np.percentile(latencies, q), rel=0.006)
    q1, med, q3, low, high = group.box
    assert (q1, med, q3) == pytest.approx(tuple(np.percentile(latencies, [25, 50, 75])), rel=0.006)
    assert low >= latencies.min() and high <= latencies.max() and low < q1 < q3 < high
    box = next(t for t in d.latency_fig.data if t.type == "box")
    assert box.q1 == (q1,) and box.upperfence == (high,) and box.x is None  # five numbers, not 400 points
    assert kit.summary().p95_ms == pytest.approx(np.percentile(latencies, 95))  # kit.summary() stays exact
    kit.close()


def test_the_spend_line_has_at_most_a_thousand_steps(tmp_path):
    kit = Kit(tmp_path / "home", dotenv=False)
    start = time.time() - 30 * 86400
    rows = [{"request_id": f"req_{i:06d}", "attempt": 1, "kind": "chat", "provider": ("openai", "anthropic")[i % 2],
             "model": "m", "status": "ok", "latency_ms": 10.0, "cost_usd": 0.001, "user_id": "ana",
             "ts": start + i * 600} for i in range(4000)]  # a call every 10 minutes for a month
    kit.ledger.record(rows)
    d = kit.dashboard(refresh_s=None)
    total = d.spend_fig.data[0]
    assert total.name == "total" and len(total.x) <= 1000 and total.y[-1] == pytest.approx(4.0)
    assert {t.name for t in d.spend_fig.data} == {"total", "openai", "anthropic"}
    kit.close()


def _calls(n: int, t0: float, **extra) -> list[dict]:
    return [{"request_id": f"req_{i:06d}", "attempt": 1, "kind": "chat", "provider": "openai", "model": "gpt-4o-mini",
             "status": "ok" if i % 7 else "error", "latency_ms": 50.0 + i % 90, "cost_usd": 1e-5, "user_id": "ana",
             "prompt_tokens": 10, "completion_tokens": 5 + i % 40, "total_tokens": 15 + i % 40, "ts": t0 + i, **extra}
            for i in range(n)]


def test_per_call_charts_draw_a_documented_window_of_the_newest_calls_that_can_be_widened(tmp_path):
    """At a million rows a scatter of every call would ship them all to the browser: the per-call
    charts draw the newest ``DEFAULT_LAST`` attempts (the title says so), ``last=`` changes it and
    ``last=None`` draws all; the aggregate charts still count every row."""
    from cognitionos_kit import charts

    kit = Kit(tmp_path / "home", dotenv=False)
    n = charts.DEFAULT_LAST + 40
    rows = _calls(n, time.time() - n)
    kit.ledger.record(rows)
    newest = [r["request_id"] for r in rows][-charts.DEFAULT_LAST:]
    assert kit.usage(last=charts.DEFAULT_LAST).request_id.tolist() == newest  # in time order, chosen in SQL
    assert len(kit.usage()) == n  # the full frame, one call away

    def drawn(fig) -> int:
        return sum(len(t.x) for t in fig.data if t.name != "failed attempt" and not str(t.name).startswith("fit"))

    ok = sum(1 for r in rows[-charts.DEFAULT_LAST:] if r["status"] == "ok")
    fig = kit.charts.latency_over_time()
    assert drawn(fig) == ok and len(fig.data[-1].x) == charts.DEFAULT_LAST - ok  # the window's failures, in red
    assert f"newest {charts.DEFAULT_LAST:,} attempts (last=None: all)" in fig.layout.title.text
    assert drawn(kit.charts.tokens_vs_latency()) == ok
    assert len(kit.charts.data()) == charts.DEFAULT_LAST and len(kit.charts.data(last=None)) == n
    wide = kit.charts.latency_over_time(last=None)
    assert drawn(wide) == sum(1 for r in rows if r["status"] == "ok") and "newest" not in wide.layout.title.text
    few = kit.charts.tokens_vs_latency(last=10)
    assert drawn(few) == sum(1 for r in rows[-10:] if r["status"] == "ok") and "newest 10 attempts" in few.layout.title.text
    assert "newest" not in kit.charts.latency_over_time(last=n + 1).layout.title.text  # all fit: nothing left out
    # the aggregates are not windowed: spend over every row, summed in DuckDB
    bar = kit.charts.spend_by("status").data[0]
    assert dict(zip(bar.x, bar.y)) == pytest.approx({"ok": 1e-5 * sum(r["status"] == "ok" for r in rows),
                                                     "error": 1e-5 * sum(r["status"] == "error" for r in rows)})
    assert kit.charts.latency().data[0].name.startswith("openai/gpt-4o-mini")
    from cognitionos_kit.core.errors import InvalidRequestError

    for bad in (0, -5, 2.5, True):
        with pytest.raises(InvalidRequestError, match="last must be a positive whole number"):
            kit.usage(last=bad)
    with pytest.raises(InvalidRequestError, match="last must be a positive whole number"):
        kit.charts.latency_over_time(last="all")
    kit.close()


def test_the_spend_line_is_the_running_total_per_bucket_across_a_month():
    """What the dashboard draws: per provider and overall, the cumulative spend at each bucket of
    minutes that had spend (at most _SPEND_POINTS of them), ending at the total; checked with pandas."""
    import numpy as np
    import pandas as pd

    from cognitionos_kit.storage.aggregates import _SPEND_POINTS, Aggregates, spend_lines

    rng = np.random.default_rng(7)
    agg = Aggregates()
    start = 29_000_000  # epoch minutes (2025)
    for provider, n in (("openai", 40_000), ("anthropic", 9_000)):  # a month of minutes, some shared
        minutes = np.unique(rng.integers(start, start + 30 * 1440, n))
        agg.spend_minutes[provider] = {int(m): float(v) for m, v in zip(minutes, rng.random(len(minutes)) / 100)}
    total, lines = spend_lines(agg)
    every = pd.DataFrame([(p, m, v) for p, line in agg.spend_minutes.items() for m, v in line.items()],
                         columns=["provider", "minute", "usd"])
    width = -(-(every.minute.max() - every.minute.min() + 1) // (_SPEND_POINTS - 1))
    for name, (times, cumulative) in [("total", total), *lines.items()]:
        rows = every if name == "total" else every[every.provider == name]
        want = rows.groupby(rows.minute // width).usd.sum().cumsum()
        got_minutes = (np.asarray(times) - np.datetime64(0, "m")) // np.timedelta64(1, "m")
        assert list(got_minutes) == [int(b) * width for b in want.index] and len(want) <= _SPEND_POINTS
        assert np.allclose(cumulative, want.to_numpy()) and cumulative[-1] == pytest.approx(rows.usd.sum())
