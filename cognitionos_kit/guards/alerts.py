"""Spend alerts: ``kit.on_spend(threshold_usd, callback, *, user_id=None, period="day")`` calls
``callback(event)`` once per UTC window (a day, a month, or ever) when spend reaches the threshold.

An alert starts from the ledger's spend in its window (the whole data folder's, or the user's)
when it is set, then adds each row its Kit records; in a new window it starts again from the
ledger. A fired alert is appended to ``<home>/guards/alerts.jsonl``, so a dashboard in another
process shows it. The callback runs in the calling thread right after the row is written (keep it
quick); one that raises is an ``AlertWarning``, never the call's error."""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import AlertWarning, InvalidRequestError, KitError, StorageWarning, warn_user
from ..storage.files import private_dir
from .windows import PERIODS, resets_at, window_of, window_start

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["AlertWarning", "SpendAlert", "SpendAlerts", "SpendEvent", "ALERT_COLUMNS", "alerts_frame"]

ALERTS_FILE = "alerts.jsonl"
ALERT_COLUMNS = ["fired_at", "user_id", "period", "window", "threshold_usd", "spent_usd", "request_id", "current"]

SpentSince = Callable[[datetime | None, Sequence[str] | None], float]


@dataclass(frozen=True)
class SpendEvent:
    """What a callback is given: the threshold passed, the spend then, and where."""

    threshold_usd: float
    spent_usd: float
    period: str
    window: str
    user_id: str | None
    request_id: str | None
    fired_at: float  # epoch seconds

    def __str__(self) -> str:
        who = f"user {self.user_id!r}" if self.user_id else "the data folder"
        return (f"spend of {who} reached ${self.spent_usd:.4f} in {self.period} {self.window} "
                f"(alert at ${self.threshold_usd:g})")


class SpendAlert:
    """One ``kit.on_spend``: ``spent_usd`` in ``window``, whether it ``fired``; ``remove()`` ends it.

    ``clock`` (epoch seconds) says which window a row falls in; tests move it to the next one."""

    def __init__(self, threshold_usd: float, callback: Callable[[SpendEvent], Any], user_id: str | None,
                 period: str, spent_since: SpentSince, owner: SpendAlerts) -> None:
        self.threshold_usd, self.callback, self.user_id, self.period = threshold_usd, callback, user_id, period
        self.clock: Callable[[], float] = time.time
        self._spent_since, self._owner = spent_since, owner
        self.window, self.spent_usd, self.fired = "", 0.0, False
        self._span = (math.inf, -math.inf)  # the window's [start, end) in epoch seconds
        self._begin(self.clock())

    def _begin(self, now: float, row_ts: float | None = None, row_usd: float = 0.0) -> None:
        """Start the window of ``now`` from the ledger (which holds the row just written, if it is in it)."""
        at = datetime.fromtimestamp(now, timezone.utc)
        start, end = window_start(self.period, at), resets_at(self.period, at)
        self.window, self.fired = window_of(self.period, at), False
        self._span = (start.timestamp() if start else -math.inf, end.timestamp() if end else math.inf)
        spent = self._spent_since(start, [self.user_id] if self.user_id else None)
        if row_ts is not None and row_ts < self._span[0]:
            spent += row_usd  # a row from before the window the clock is in: not in the ledger's sum
        self.spent_usd = spent

    def add(self, row: dict[str, Any], usd: float) -> SpendEvent | None:
        """Count one ledger row; the event when it takes spend to the threshold (once per window)."""
        if self.user_id is not None and row.get("user_id") != self.user_id:
            return None
        now = self.clock()
        if self._span[0] <= now < self._span[1]:
            self.spent_usd += usd
        else:
            try:
                self._begin(now, float(row.get("ts") or time.time()), usd)
            except KitError:  # the ledger cannot be read now: count from this row
                self.spent_usd = usd
        if self.fired or self.spent_usd < self.threshold_usd:
            return None
        self.fired = True
        return SpendEvent(self.threshold_usd, self.spent_usd, self.period, self.window, self.user_id,
                          row.get("request_id"), time.time())

    def remove(self) -> None:
        """Stop watching (a fired alert stays in ``kit.alerts()``)."""
        self._owner.remove(self)

    def __repr__(self) -> str:
        who = f"user {self.user_id!r}" if self.user_id else "all users"
        state = "fired" if self.fired else "not fired"
        return (f"SpendAlert(${self.threshold_usd:g} per {self.period}, {who}: ${self.spent_usd:.4f} in "
                f"{self.window}, {state})")


class SpendAlerts:
    """The spend alerts of one Kit; ``observe(row)`` for each ledger row."""

    def __init__(self, home: str | Path) -> None:
        self.path = Path(home) / "guards" / ALERTS_FILE
        self.alerts: list[SpendAlert] = []
        self._lock = threading.Lock()

    def add(self, threshold_usd: float, callback: Callable[[SpendEvent], Any], *, user_id: str | None,
            period: str, spent_since: SpentSince) -> SpendAlert:
        if isinstance(threshold_usd, bool) or not isinstance(threshold_usd, (int, float)) \
                or not 0 < threshold_usd < math.inf:
            raise InvalidRequestError(f"threshold_usd must be a positive number of US dollars, got {threshold_usd!r}")
        if not callable(callback):
            raise InvalidRequestError(f"callback must be a function taking the SpendEvent, got {callback!r}")
        if user_id is not None and (not isinstance(user_id, str) or not user_id.strip()):
            raise InvalidRequestError(f"user_id must be a non-empty string (or None: everyone), got {user_id!r}")
        if period not in PERIODS:
            raise InvalidRequestError(f"period must be one of {', '.join(PERIODS)}, got {period!r}")
        alert = SpendAlert(float(threshold_usd), callback, user_id, period, spent_since, self)
        with self._lock:
            self.alerts.append(alert)
        return alert

    def remove(self, alert: SpendAlert) -> None:
        with self._lock:
            if alert in self.alerts:
                self.alerts.remove(alert)

    def observe(self, row: dict[str, Any]) -> None:
        if not self.alerts:
            return
        usd = row.get("cost_usd")
        usd = float(usd) if isinstance(usd, (int, float)) and usd == usd else 0.0
        with self._lock:
            fired = [(a, e) for a in self.alerts if (e := a.add(row, usd)) is not None]
        for alert, event in fired:
            self._keep(event)
            try:
                alert.callback(event)
            except Exception as exc:
                warn_user(f"a spend alert's callback raised {type(exc).__name__}: {exc} (the call went on)", AlertWarning)

    def _keep(self, event: SpendEvent) -> None:
        """Append the event to the data folder's alerts file (a dashboard anywhere shows it)."""
        line = json.dumps(asdict(event)) + "\n"
        try:
            private_dir(self.path.parent)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode("utf-8"))  # one short append: whole lines even with several writers
            finally:
                os.close(fd)
        except OSError as exc:
            warn_user(f"a fired spend alert could not be saved to {self.path}: {exc.strerror or exc}", StorageWarning)


def alerts_frame(home: str | Path, now: datetime | None = None) -> pd.DataFrame:
    """The data folder's fired alerts, oldest first; ``current``: fired in the window ``now`` is in."""
    import pandas as pd

    now = now or datetime.now(timezone.utc)
    rows = []
    try:
        with open(Path(home) / "guards" / ALERTS_FILE, encoding="utf-8") as f:
            lines = f.readlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            e = json.loads(line)
            rows.append({**e, "fired_at": datetime.fromtimestamp(float(e["fired_at"]), timezone.utc),
                         "current": e["window"] == window_of(e["period"], now)})
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a full disk
    df = pd.DataFrame(rows, columns=ALERT_COLUMNS)
    df["fired_at"] = pd.to_datetime(df["fired_at"], utc=True)
    from ..storage.frames import tidy

    return tidy(df)
