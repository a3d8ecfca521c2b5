"""What the summary and the dashboard show, computed in DuckDB over the ledger: reads that cost
what they return, not what is stored.

- ``summary_stats``: the numbers of ``kit.summary()`` in one query (exact percentiles).
- ``Aggregates``: the dashboard's running totals per provider/model (counts, spend, tokens, a
  latency histogram, the newest points) and the spend per minute. ``update`` folds in only the
  rows DuckDB added since the last update (by ``rowid``: ingest only appends), so a refresh at a
  million rows costs what was added since the last one. A ledger that shrank or was rebuilt (the
  rows up to the last ``rowid`` are no longer the ones counted) is folded again from scratch.

Counting requests: a request's rows are its attempts 1..n (an embedding's, one per batch), so
``attempt = 1`` counts requests without a DISTINCT over every id (which costs 100+ ms at 1M rows).
Percentiles: exact while a provider/model's points are all kept (``POINTS`` each); past that,
from a histogram of 1%-wide latency bins (each percentile within 0.5% of the exact one).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from ..core.display import UsageSummary

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["summary_stats", "Aggregates", "GroupTotals", "Runner", "POINTS", "quantile", "LatencyGroup", "PERCENTILES",
           "frame_runner", "summary_of", "latency_groups", "spend_lines", "cache_savings"]

Runner = Callable[[Sequence[tuple[str, Any]]], "list[pd.DataFrame]"]  # statements -> frames (Store.query_many)
POINTS = 300  # the newest successful calls kept per provider/model, for the chart's points
PERCENTILES = (50, 95, 99)  # the marks of the latency chart
_SPEND_POINTS = 1000  # at most this many steps in the spend line (minutes, or wider buckets)
_BINS_PER_E = 100  # latency bins: ln(ms) * 100, so each is 1% wide

_COUNTS = """count(*) FILTER (WHERE u.attempt = 1) AS calls, count(*) AS attempts,
    count(*) FILTER (WHERE u.status <> 'ok') AS failures, count(*) FILTER (WHERE u.status = 'ok') AS ok,
    count(*) FILTER (WHERE u.status = 'ok' AND (u.kind IS DISTINCT FROM 'embedding' OR u.attempt = 1)) AS answered,
    coalesce(sum(u.cost_usd), 0) AS spend_usd, count(*) FILTER (WHERE u.status = 'ok' AND u.cost_usd IS NULL) AS unpriced,
    coalesce(sum(u.total_tokens) FILTER (WHERE u.status = 'ok'), 0) AS tokens,
    count(*) FILTER (WHERE u.status = 'ok' AND u.substituted) AS substituted,
    count(*) FILTER (WHERE u.status = 'ok' AND u.tokens_estimated) AS estimated, min(u.ts) AS first, max(u.ts) AS last"""
_OK_LATENCY = "u.status = 'ok' AND u.latency_ms IS NOT NULL"


def _cond(where: str) -> str:
    """A WHERE clause (``ledger.where_clause``) as a condition to AND with others."""
    return where.removeprefix(" WHERE ") if where else "TRUE"


def summary_stats(run: Runner, where: str, params: Sequence[Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``kit.summary()``'s totals and per-provider rows (``UsageSummary.from_totals``) for the rows
    ``where`` selects, exact: the counts, then the percentiles over the successful calls only (a
    WHERE, not a FILTER: the quantiles then sort only those rows; 30% faster at 1M rows)."""
    sets = "GROUP BY GROUPING SETS ((u.provider), ())"
    counts, quantiles = run([
        (f"SELECT grouping(u.provider) AS overall, u.provider, {_COUNTS} FROM llm_usage u WHERE {_cond(where)} {sets} "
         "ORDER BY 1 DESC, 2", list(params)),
        (f"SELECT grouping(u.provider) AS overall, u.provider, quantile_cont(u.latency_ms, [0.5, 0.95]) AS q "
         f"FROM llm_usage u WHERE {_cond(where)} AND {_OK_LATENCY} {sets}", list(params)),
    ])
    def key(r: Mapping[str, Any]) -> Any:  # the overall row's provider is NULL (None or NaN)
        return None if int(r["overall"]) else r["provider"]

    qs = {key(r): r["q"] for r in quantiles.to_dict("records")}
    rows = [_row({**r, "q": qs.get(key(r))}) for r in counts.to_dict("records")]
    if not rows or rows[0]["attempts"] == 0:
        return {}, []
    providers = [{"provider": r["provider"], "answered": r["ok"], "attempts": r["attempts"], "failures": r["failures"],
                  "substitutes": r["substituted"], "spend_usd": r["spend_usd"], "p50_ms": r["p50_ms"],
                  "p95_ms": r["p95_ms"]} for r in rows[1:]]
    return rows[0], providers


def _row(r: Mapping[str, Any]) -> dict[str, Any]:
    q = r["q"]
    has_q = q is not None and not (isinstance(q, float) and math.isnan(q)) and len(q) == 2
    return {"provider": r["provider"], "calls": int(r["calls"]), "attempts": int(r["attempts"]), "failures": int(r["failures"]),
            "ok": int(r["ok"]), "answered": int(r["answered"]), "spend_usd": float(r["spend_usd"]),
            "unpriced": int(r["unpriced"]), "tokens": int(r["tokens"]), "substituted": int(r["substituted"]),
            "estimated": int(r["estimated"]), "first": r["first"], "last": r["last"],
            "p50_ms": float(q[0]) if has_q and q[0] is not None else None,
            "p95_ms": float(q[1]) if has_q and q[1] is not None else None}


def quantile(values: Sequence[float] | None, bins: Mapping[int, int], n: int, q: float) -> float | None:
    """The ``q`` quantile of ``n`` latencies: exact (linear, as numpy) from ``values`` when they
    are all there, else from the histogram ``bins`` (the middle of the bin holding it)."""
    if n == 0:
        return None
    if values is not None and len(values) == n:
        s = sorted(values)
        pos = q * (n - 1)
        lo = math.floor(pos)
        return s[lo] + (s[min(lo + 1, n - 1)] - s[lo]) * (pos - lo)
    pos = q * (n - 1)
    lo = math.floor(pos)
    order = sorted(bins)

    def at(k: int) -> float:  # the k-th smallest latency (0-based): the middle of its bin
        seen = 0
        for b in order:
            seen += bins[b]
            if seen > k:
                return math.exp((b + 0.5) / _BINS_PER_E)
        return math.exp((order[-1] + 0.5) / _BINS_PER_E)

    low = at(lo)
    return low + (at(min(lo + 1, n - 1)) - low) * (pos - lo)  # between two neighbours, as the exact one


class LatencyGroup(NamedTuple):
    """One provider/model's latencies for ``charts.latency_figure``: ``n`` calls, the ``marks``
    (ms at each of ``PERCENTILES``), the points drawn (all of them, or the newest) with their
    users, and the box's five numbers (None: plotly computes them from the points, then all)."""

    key: str
    n: int
    marks: dict[int, float]
    x: list[float]
    users: list[str] | None = None
    box: tuple[float, float, float, float, float] | None = None  # q1, median, q3, lower and upper fence


@dataclass
class GroupTotals:
    """One provider/model's running totals (the columns of ``_COUNTS``), its latency histogram,
    range, and newest points."""

    counts: dict[str, float] = field(default_factory=dict)
    first: Any = None
    last: Any = None
    low: float | None = None
    high: float | None = None
    bins: dict[int, int] = field(default_factory=dict)
    points: list[tuple[Any, str, float, str]] = field(default_factory=list)  # (ts, row_id, ms, user), oldest first

    @property
    def timed(self) -> int:
        """Successful calls with a latency (those the histogram holds)."""
        return sum(self.bins.values())


class Aggregates:
    """The dashboard's running totals for the ledger rows ``where`` selects (see the module's docstring)."""

    def __init__(self, where: str = "", params: Sequence[Any] = ()) -> None:
        self.where, self.params = where, list(params)
        self.reset()

    def reset(self) -> None:
        self.last_rowid = -1  # the rows up to here are folded in
        self.seen = 0  # how many rows (all, not only the filtered) were up to last_rowid
        self.mark: str | None = None  # the row_id at last_rowid: another one there means another ledger
        self.groups: dict[tuple[str, str], GroupTotals] = {}
        self.spend_minutes: dict[str, dict[int, float]] = {}  # provider -> epoch minute -> USD

    def update(self, run: Runner) -> int:
        """Fold in the rows added since the last update; return how many (filtered) rows were new.

        A look at the table (rowid lookups and metadata: a filter on rowid skips the rows before
        it), then, only when rows were added, the fold, in one more ``run``."""
        new_rows = f"u.rowid > {self.last_rowid}"
        (head,) = run([(
            "SELECT (SELECT coalesce(max(rowid), -1) FROM llm_usage) AS top, (SELECT count(*) FROM llm_usage) AS total, "
            f"(SELECT count(*) FROM llm_usage u WHERE {new_rows}) AS newer, "
            f"(SELECT row_id FROM llm_usage WHERE rowid = {self.last_rowid}) AS at_last", None)])  # the row folded last
        h = head.iloc[0]
        top, total = int(h["top"]), int(h["total"])
        if total - int(h["newer"]) != self.seen or (self.mark is not None and h["at_last"] != self.mark):
            self.reset()  # rebuilt, or rows gone: what was folded is not what is there; fold it all
            return self.update(run)
        if top <= self.last_rowid:
            return 0
        window = f"{new_rows} AND u.rowid <= {top} AND {_cond(self.where)}"
        p = self.params
        counts, bins, minutes, points, mark = run([
            (f"SELECT u.provider, u.model, {_COUNTS}, min(u.latency_ms) FILTER (WHERE {_OK_LATENCY}) AS low, "
             f"max(u.latency_ms) FILTER (WHERE {_OK_LATENCY}) AS high FROM llm_usage u WHERE {window} GROUP BY 1, 2", p),
            (f"SELECT u.provider, u.model, floor(ln(greatest(u.latency_ms, 0.001)) * {_BINS_PER_E})::INTEGER AS bin, "
             f"count(*) AS n FROM llm_usage u WHERE {window} AND {_OK_LATENCY} GROUP BY 1, 2, 3", p),
            (f"SELECT (epoch(u.ts) // 60)::BIGINT AS minute, u.provider, sum(u.cost_usd) AS usd FROM llm_usage u "
             f"WHERE {window} AND u.cost_usd IS NOT NULL GROUP BY 1, 2", p),
            # the newest POINTS per provider/model (ts, then row_id): a top-N aggregate, not a window
            # over every row (which sorted them all: 200 ms and +390 MB at a million rows; this 140 ms)
            ("SELECT provider, model, p.ts, p.row_id, p.latency_ms, p.user_id FROM (SELECT u.provider, u.model, "
             "unnest(max_by({'ts': u.ts, 'row_id': u.row_id, 'latency_ms': u.latency_ms, 'user_id': u.user_id}, "
             f"{{'ts': u.ts, 'row_id': u.row_id}}, {POINTS})) AS p FROM llm_usage u WHERE {window} AND {_OK_LATENCY} "
             "GROUP BY 1, 2)", p),
            (f"SELECT row_id FROM llm_usage WHERE rowid = {top}", None),
        ])
        for r in counts.to_dict("records"):
            g = self.groups.setdefault((str(r["provider"]), str(r["model"])), GroupTotals())
            for k in ("calls", "attempts", "failures", "ok", "answered", "spend_usd", "unpriced", "tokens",
                      "substituted", "estimated"):
                g.counts[k] = g.counts.get(k, 0) + (float(r[k]) if k == "spend_usd" else int(r[k]))
            g.first = r["first"] if g.first is None else min(g.first, r["first"])
            g.last = r["last"] if g.last is None else max(g.last, r["last"])
            if r["low"] is not None and not math.isnan(r["low"]):
                g.low = r["low"] if g.low is None else min(g.low, r["low"])
                g.high = r["high"] if g.high is None else max(g.high, r["high"])
        for provider, model, b, n in bins.itertuples(index=False):
            group = self.groups[(str(provider), str(model))].bins
            group[int(b)] = group.get(int(b), 0) + int(n)
        for minute, provider, usd in minutes.itertuples(index=False):
            line = self.spend_minutes.setdefault(str(provider), {})
            line[int(minute)] = line.get(int(minute), 0.0) + float(usd)
        fresh: dict[tuple[str, str], list[tuple[Any, str, float, str]]] = {}
        for provider, model, ts, row_id, ms, user in points.itertuples(index=False):
            fresh.setdefault((str(provider), str(model)), []).append((ts, row_id, float(ms), user))
        for key, new in fresh.items():  # the newest by time (another process's rows may be older)
            g = self.groups[key]
            g.points = sorted(g.points + new)[-POINTS:]
        self.last_rowid, self.seen, self.mark = top, total, mark["row_id"].iloc[0]
        return int(counts["attempts"].sum()) if len(counts) else 0

    # --- what the views read ------------------------------------------------------------------
    def total(self, name: str, provider: str | None = None) -> float:
        """A count or sum over every provider/model (or one provider's)."""
        return sum(g.counts.get(name, 0) for (p, _), g in self.groups.items() if provider in (None, p))

    def percentile(self, q: float, groups: Sequence[GroupTotals] | None = None) -> float | None:
        """The ``q`` quantile of the successful calls' latency over ``groups`` (default all)."""
        chosen = list(self.groups.values()) if groups is None else list(groups)
        n = sum(g.timed for g in chosen)
        whole = all(len(g.points) == g.timed for g in chosen)  # every point kept: exact
        bins: dict[int, int] = {}
        for g in chosen:
            for b, c in g.bins.items():
                bins[b] = bins.get(b, 0) + c
        return quantile([p[2] for g in chosen for p in g.points] if whole else None, bins, n, q)


def frame_runner(frame: pd.DataFrame) -> Runner:
    """A runner over ledger rows already read (a client Kit's, from its server): the same SQL, on
    an in-memory DuckDB table of ``frame`` named ``llm_usage``."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("frame", frame)
    con.execute("CREATE TABLE llm_usage AS SELECT * FROM frame")
    con.unregister("frame")
    return lambda statements: [con.execute(sql, params).df() if params else con.execute(sql).df()
                               for sql, params in statements]


def summary_of(agg: Aggregates, title: str) -> UsageSummary:
    """The summary table of the running totals (as ``kit.summary()`` of the same rows)."""
    providers = sorted({p for p, _ in agg.groups})
    rows = [{"provider": p, "answered": int(agg.total("ok", p)), "attempts": int(agg.total("attempts", p)),
             "failures": int(agg.total("failures", p)), "substitutes": int(agg.total("substituted", p)),
             "spend_usd": float(agg.total("spend_usd", p)),
             "p50_ms": agg.percentile(0.5, [g for (q, _), g in agg.groups.items() if q == p]),
             "p95_ms": agg.percentile(0.95, [g for (q, _), g in agg.groups.items() if q == p])} for p in providers]
    names = ("calls", "attempts", "failures", "answered", "spend_usd", "unpriced", "tokens", "substituted", "estimated")
    totals: dict[str, Any] = {k: agg.total(k) for k in names}
    firsts = [g.first for g in agg.groups.values() if g.first is not None]
    lasts = [g.last for g in agg.groups.values() if g.last is not None]
    totals.update(p50_ms=agg.percentile(0.5), p95_ms=agg.percentile(0.95), first=min(firsts, default=None),
                  last=max(lasts, default=None))
    return UsageSummary.from_totals(totals, rows, title=title)


def latency_groups(agg: Aggregates) -> list[LatencyGroup]:
    """Each provider/model's latency for the chart: exact with all its points, else its histogram's."""
    groups = []
    for (provider, model), g in sorted(agg.groups.items()):
        if not g.timed:
            continue
        marks = {q: agg.percentile(q / 100, [g]) or 0.0 for q in PERCENTILES}
        box = None
        if len(g.points) < g.timed:  # only the newest points are kept: the box from the histogram
            q1, med, q3 = (agg.percentile(q, [g]) or 0.0 for q in (0.25, 0.5, 0.75))
            low, high = g.low if g.low is not None else q1, g.high if g.high is not None else q3
            box = (q1, med, q3, max(low, q1 - 1.5 * (q3 - q1)), min(high, q3 + 1.5 * (q3 - q1)))
        groups.append(LatencyGroup(f"{provider}/{model}", g.timed, marks, [p[2] for p in g.points],
                                   [str(p[3]) if p[3] is not None else "—" for p in g.points], box))
    return groups


def spend_lines(agg: Aggregates) -> tuple[tuple[Any, Any], dict[str, tuple[Any, Any]]]:
    """Cumulative spend per minute (wider buckets past ``_SPEND_POINTS`` of them): the total and
    per provider, times as numpy UTC minutes (plotly takes an array without checking each value)."""
    import numpy as np

    lines = {p: (np.fromiter(m, dtype="int64", count=len(m)), np.fromiter(m.values(), dtype="float64", count=len(m)))
             for p, m in sorted(agg.spend_minutes.items()) if m}
    if not lines:
        return ([], []), {}
    first = min(int(k.min()) for k, _ in lines.values())
    last = max(int(k.max()) for k, _ in lines.values())
    width = max(1, -(-(last - first + 1) // (_SPEND_POINTS - 1)))  # buckets cut at multiples: one more

    low = first // width

    def line(minutes: Any, usd: Any) -> tuple[Any, Any]:
        # the buckets that have a minute, each with its sum: counted, not sorted (np.unique sorted
        # every minute of the month on each refresh: a third of it at a million rows)
        at = minutes // width - low
        sums, seen = np.bincount(at, weights=usd), np.bincount(at)
        buckets = np.flatnonzero(seen)
        return (buckets + low) * width * np.timedelta64(1, "m") + np.datetime64(0, "m"), np.cumsum(sums[buckets])

    total = line(np.concatenate([k for k, _ in lines.values()]), np.concatenate([v for _, v in lines.values()]))
    return total, {p: line(k, v) for p, (k, v) in lines.items()}


def cache_savings(run: Runner, where: str, params: Sequence[Any]) -> pd.DataFrame:
    """What prompt caches saved per provider/model over the rows ``where`` selects that read or wrote
    one: ``key`` ("provider/model"), ``saved`` (USD, net of what cache writes cost extra), ``read``
    and ``written`` tokens, ``calls``; most saved first."""
    return run([(
        "SELECT u.provider || '/' || u.model AS key, sum(u.cache_saving_usd) AS saved, "
        "CAST(coalesce(sum(u.cached_tokens), 0) AS BIGINT) AS read, "
        "CAST(coalesce(sum(u.cache_write_tokens), 0) AS BIGINT) AS written, count(*) AS calls "
        f"FROM llm_usage u WHERE {_cond(where)} AND u.cache_saving_usd IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1",
        list(params))])[0]
