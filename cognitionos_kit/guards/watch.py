"""What a Kit watches every ledger row for: Prometheus metrics (``metrics``), OpenTelemetry spans
(``tracing``) and spend alerts (``alerts``); and the ``Kit`` methods over them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .alerts import SpendAlert, SpendAlerts, SpendEvent, alerts_frame
from .metrics import Metrics, MetricsServer
from .tracing import Tracing

if TYPE_CHECKING:
    import pandas as pd

    from ..calls.recorder import Recorder
    from ..storage.ledger import Ledger

__all__ = ["Watch", "WatchMethods"]


class Watch:
    """One observer of a Kit's recorder, called with each ledger row after it is written."""

    def __init__(self, home: str | Path) -> None:
        self.home = Path(home)
        self.metrics = Metrics()
        self.tracing = Tracing()
        self.alerts = SpendAlerts(home)

    def __call__(self, row: dict[str, Any]) -> None:
        self.metrics.observe(row)
        self.tracing.observe(row)
        self.alerts.observe(row)

    @classmethod
    def attach(cls, recorder: Recorder, home: str | Path) -> Watch:
        watch = cls(home)
        recorder.observers.append(watch)
        return watch

    @staticmethod
    def of(recorder: Recorder) -> Watch:
        return next(o for o in recorder.observers if isinstance(o, Watch))


class WatchMethods:
    """Mixed into ``Kit``: needs its ``recorder`` (with a ``Watch`` attached) and ``ledger``."""

    recorder: Recorder

    if TYPE_CHECKING:
        @property
        def ledger(self) -> Ledger: ...

    def metrics_text(self, *, by_user: bool = False) -> str:
        """This Kit's calls since it was built, in the Prometheus text format: counts, tokens, cost,
        cache savings, errors and a latency histogram by kind, provider, model, status and cache_hit
        (``by_user=True``: a ``user_id`` label too)."""
        return Watch.of(self.recorder).metrics.text(by_user)

    def serve_metrics(self, port: int, *, addr: str = "127.0.0.1", by_user: bool = False) -> MetricsServer:
        """Serve ``metrics_text`` at ``http://addr:port/metrics`` from a daemon thread (``port=0``: a
        free one; ``addr="0.0.0.0"`` to let other machines scrape). ``.port``, ``.url``; ``.stop()``."""
        return Watch.of(self.recorder).metrics.serve(port, addr=addr, by_user=by_user)

    def set_tracing(self, enabled: bool | None = True, *, tracer_provider: Any = None) -> None:
        """OpenTelemetry spans for every attempt (GenAI conventions). By default (``None``) they go to
        the global tracer provider once one is set; ``True`` always, ``False`` never; or to the
        ``tracer_provider`` given. Needs ``opentelemetry-sdk`` (the ``otel`` extra)."""
        Watch.of(self.recorder).tracing.set(enabled, tracer_provider)

    def on_spend(self, threshold_usd: float, callback: Callable[[SpendEvent], Any], *, user_id: str | None = None,
                 period: Literal["day", "month", "total"] = "day") -> SpendAlert:
        """Call ``callback(event)`` once per UTC window when spend (the data folder's, or ``user_id``'s)
        reaches ``threshold_usd``: counted from the ledger when set, then from this Kit's calls. The
        dashboard shows a banner; ``kit.alerts()`` lists what fired; ``.remove()`` ends it."""
        return Watch.of(self.recorder).alerts.add(threshold_usd, callback, user_id=user_id, period=period,
                                                  spent_since=self.ledger.spent_since)

    def alerts(self, *, now: datetime | None = None) -> pd.DataFrame:
        """Every spend alert fired on this data folder (by any process), oldest first; ``current``
        says it fired in the window ``now`` (default: now) is in."""
        return alerts_frame(Watch.of(self.recorder).home, now)
