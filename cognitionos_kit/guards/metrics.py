"""Prometheus metrics of every ledger row, through ``prometheus_client`` in a registry of the Kit's
own (two Kits in one process never collide).

Counters and a latency histogram by kind, provider, model, status (the ledger's: ok, error,
interrupted) and cache_hit. A second registry keeps the same metrics with a ``user_id`` label
too; ``metrics_text(by_user=True)`` or ``serve_metrics(port, by_user=True)`` exposes it, so a user
label reaches a scraper only when asked for. Counts start at zero with each Kit (as Prometheus
counters do with each process)."""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ..core.errors import ConfigurationError, InvalidRequestError

__all__ = ["Metrics", "MetricsServer", "LABELS", "LATENCY_BUCKETS"]

LABELS = ("kind", "provider", "model", "status", "cache_hit")
# seconds; the buckets the OpenTelemetry GenAI conventions advise for gen_ai.client.operation.duration
LATENCY_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
_BUCKETS = list(LATENCY_BUCKETS)  # a latency goes in the first bucket whose bound it does not pass (le)


def _number(x: Any) -> float | None:
    """A row's value as a float (None for missing and NaN)."""
    if x is None or isinstance(x, bool):
        return None
    x = float(x)
    return None if math.isnan(x) else x


class _Family(Collector):
    """One registry's metrics, labelled by ``labels``: a collector over plain sums.

    Each row adds to a few floats under a lock; the Prometheus families are built when scraped.
    ``Counter``/``Histogram`` objects cost about ten times more a row (a lock and a label lookup
    for each of six series), paid on every call of every experiment; the text is the same."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.labels = list(names)
        self._lock = threading.Lock()
        # label values -> [created, calls, tokens in, tokens out, cost, saved, latency sum, bucket counts...]
        self._series: dict[tuple[str, ...], list[float]] = {}
        self._errors: dict[tuple[str, ...], list[float]] = {}  # error labels -> [created, count]
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def observe(self, values: tuple[str, ...], row: dict[str, Any]) -> None:
        n_in, n_out = _number(row.get("prompt_tokens")), _number(row.get("completion_tokens"))
        usd = _number(row.get("cost_usd"))
        saved = _number(row.get("saved_cost_usd")) if row.get("cache_hit") else None
        ms = _number(row.get("latency_ms"))
        with self._lock:
            s = self._series.get(values)
            if s is None:
                s = self._series[values] = [time.time(), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0] + [0.0] * (len(_BUCKETS) + 1)
            s[1] += 1
            if n_in:
                s[2] += n_in
            if n_out:
                s[3] += n_out
            if usd is not None and usd >= 0:  # unknown price: not counted as $0
                s[4] += usd
            if saved:
                s[5] += saved
            if ms is not None:
                s[6] += ms / 1000
                s[7 + bisect.bisect_left(_BUCKETS, ms / 1000)] += 1
            if row.get("status") != "ok":
                key = (*values[:3], str(row.get("error_type") or "unknown"), *values[len(LABELS):])
                e = self._errors.get(key)
                if e is None:
                    e = self._errors[key] = [time.time(), 0.0]
                e[1] += 1

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            series = [(k, list(v)) for k, v in self._series.items()]
            errors = [(k, list(v)) for k, v in self._errors.items()]
        labels = self.labels
        calls = CounterMetricFamily("cognitionos_llm_calls", "Attempts recorded in the ledger (one row each; a cache "
                                    "hit is one too)", labels=labels)
        tokens = CounterMetricFamily("cognitionos_llm_tokens", "Tokens by type (input: prompt, output: completion)",
                                     labels=[*labels, "type"])
        cost = CounterMetricFamily("cognitionos_llm_cost_usd", "US dollars spent (attempts with a known price)",
                                   labels=labels)
        saved = CounterMetricFamily("cognitionos_llm_saved_usd", "US dollars the response cache saved (cache hits)",
                                    labels=labels)
        failed = CounterMetricFamily("cognitionos_llm_errors", "Failed attempts by error type",
                                     labels=["kind", "provider", "model", "error_type", *labels[len(LABELS):]])
        latency = HistogramMetricFamily("cognitionos_llm_latency_seconds", "Latency of each attempt (for a cache "
                                        "hit: the lookup)", labels=labels)
        for values, s in series:
            created, v = s[0], list(values)
            calls.add_metric(v, s[1], created=created)
            tokens.add_metric([*v, "input"], s[2], created=created)
            tokens.add_metric([*v, "output"], s[3], created=created)
            cost.add_metric(v, s[4], created=created)
            saved.add_metric(v, s[5], created=created)
            running, buckets = 0.0, []
            for le, count in zip((*_BUCKETS, math.inf), s[7:]):
                running += count
                buckets.append((floatToGoString(le), running))
            latency.add_metric(v, buckets, s[6])
        for values, (created, count) in errors:
            failed.add_metric(list(values), count, created=created)
        yield from (calls, tokens, cost, saved, failed, latency)


class Metrics:
    """The Prometheus metrics of one Kit: ``observe(row)`` for each ledger row."""

    def __init__(self) -> None:
        self.plain = _Family(LABELS)
        self.by_user = _Family((*LABELS, "user_id"))

    def observe(self, row: dict[str, Any]) -> None:
        values = (str(row.get("kind") or "chat"), str(row.get("provider") or ""), str(row.get("model") or ""),
                  str(row.get("status") or ""), "true" if row.get("cache_hit") else "false")
        self.plain.observe(values, row)
        self.by_user.observe((*values, str(row.get("user_id") or "")), row)

    def registry(self, by_user: bool = False) -> CollectorRegistry:
        if not isinstance(by_user, bool):
            raise InvalidRequestError(f"by_user must be True or False, got {by_user!r}")
        return (self.by_user if by_user else self.plain).registry

    def text(self, by_user: bool = False) -> str:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry(by_user)).decode("utf-8")

    def serve(self, port: int, *, addr: str = "127.0.0.1", by_user: bool = False) -> MetricsServer:
        """Serve ``/metrics`` over HTTP from a daemon thread (``port=0``: any free port)."""
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidRequestError(f"port must be an int from 0 (any free port) to 65535, got {port!r}")
        if not isinstance(addr, str) or not addr:
            raise InvalidRequestError(f"addr must be a host name or address such as '127.0.0.1', got {addr!r}")
        registry = self.registry(by_user)
        try:
            httpd, thread = start_http_server(port, addr=addr, registry=registry)
        except OSError as e:
            raise ConfigurationError(f"cannot serve metrics on {addr}:{port}: {e.strerror or e}") from None
        return MetricsServer(httpd, thread, addr)


class MetricsServer:
    """A running ``/metrics`` endpoint: ``.port``, ``.url``; ``.stop()`` (or ``with``) ends it."""

    def __init__(self, httpd: Any, thread: threading.Thread, addr: str) -> None:
        self._httpd, self._thread = httpd, thread
        self.addr = addr
        self.port: int = httpd.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop serving and free the port."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"MetricsServer({self.url}, {'running' if self.running else 'stopped'})"
