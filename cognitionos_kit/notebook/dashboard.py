"""``kit.dashboard()``: live plotly charts and a summary table over the ledger.

The charts are ``FigureView``s (plotly figures in Output widgets), so a browser reload redraws
them from the kernel's state; a FigureWidget would come back as empty axes.

A daemon thread wakes every ``refresh_s`` seconds and looks at the journal folder's file names,
sizes and mtimes (a directory listing, no DuckDB). Only when they changed does it read the ledger
and redraw, so a quiet dashboard costs nothing and never holds the database file. Widget changes
from a thread reach the browser through ipykernel's thread-safe IOPub channel.
"""

from __future__ import annotations

import html
import os
import threading
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import ipywidgets as widgets

from .. import charts
from ..charts import Match, Time
from ..core.display import money
from ..core.errors import InvalidRequestError
from ..storage.aggregates import Aggregates, latency_groups, spend_lines, summary_of
from .figview import FigureView

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

    from ..kit import Kit

__all__ = ["Dashboard", "dashboard", "gauge", "alert_banner", "user_budget_gauges"]


def dashboard(
    kit: Kit, *, refresh_s: float | None = 1.0, budget_usd: float | None = None, user_id: Match = None,
    since: Time = None, until: Time = None, experiment_id: Match = None, provider: Match = None, model: Match = None,
    run_id: Match = None, kind: Match = None,
) -> Dashboard:
    """A live view of ``kit``'s ledger; ``.stop()`` ends polling.

    ``refresh_s``: seconds between checks for new calls (None: only on ``.refresh()``).
    ``budget_usd``: adds a gauge of spend against it. The filters are those of ``kit.charts``
    (None means any, a list any of its values).
    """
    return Dashboard(kit, refresh_s=refresh_s, budget_usd=budget_usd, user_id=user_id, since=since, until=until,
                     experiment_id=experiment_id, provider=provider, model=model, run_id=run_id, kind=kind)


_GAUGE_WIDTH = 360  # px; the summary table takes the rest of the row


def _positive(x: object) -> bool:
    """A real number above zero (not a bool, not NaN)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0


def _fit(fig: go.Figure) -> go.Figure:
    """Dashboard layout for a chart: fill the cell's width (the legend already sits at the bottom edge)."""
    fig.update_layout(autosize=True, width=None)
    return fig


def gauge(spend_usd: float, budget_usd: float, *, title: str | None = None) -> go.Figure:
    """A gauge of spend against a budget (red past it); ``title`` replaces the default one."""
    import plotly.graph_objects as go

    if not _positive(budget_usd):
        raise InvalidRequestError(f"budget_usd must be a positive number of US dollars, got {budget_usd!r}")
    top = max(budget_usd, spend_usd) * 1.1
    fig = go.Figure(go.Indicator(
        mode="gauge+number", value=spend_usd, number=dict(prefix="$", valueformat=",.5f"),
        title=dict(text=title or f"spend of ${budget_usd:g} budget ({spend_usd / budget_usd:.0%})", font_size=13),
        gauge=dict(axis=dict(range=[0, top], tickprefix="$"), bar_color="#D62728" if spend_usd > budget_usd else "#4C78A8",
                   threshold=dict(value=budget_usd, line=dict(color="#D62728", width=3), thickness=0.8)),
    ))
    fig.update_layout(template=charts.template(), height=220, width=_GAUGE_WIDTH,
                      margin=dict(l=45, r=55, t=50, b=10))  # room for the end ticks' labels
    return fig


_PERIOD_WORDS = {"day": "today", "month": "this month", "total": "in total"}


def alert_banner(alerts: pd.DataFrame) -> str:
    """HTML naming each spend alert fired in its current window (empty when none)."""
    current = alerts[alerts["current"].fillna(False).astype(bool)] if len(alerts) else alerts
    if not len(current):
        return ""
    latest = current.drop_duplicates(["user_id", "period", "threshold_usd"], keep="last")
    items = []
    for e in latest.itertuples():
        who = f"user <b>{html.escape(str(e.user_id))}</b>" if isinstance(e.user_id, str) else "<b>all users</b>"
        items.append(f"{who} reached {money(e.spent_usd)} {_PERIOD_WORDS.get(e.period, e.period)} (UTC), past the "
                     f"${e.threshold_usd:g} alert, at {e.fired_at:%H:%M} UTC")
    more = f"; and {len(items) - 5} more (kit.alerts())" if len(items) > 5 else ""
    return ("<div style='background:#fdecea;border-left:4px solid #b42318;color:#7a1a12;padding:6px 10px;"
            "font-size:13px'>&#9888; Spend alert: " + "; ".join(items[-5:]) + more + "</div>")


def user_budget_gauges(budgets: pd.DataFrame, users: set[str] | None = None) -> dict[str, go.Figure]:
    """A gauge per user budget (of ``users``, or every user), spent against its limit."""
    out = {}
    for b in budgets[budgets["scope"] == "user"].itertuples():
        if (users is None or b.name in users) and _positive(b.limit_usd):
            label = f"{b.name}: {money(b.spent_usd)} of ${b.limit_usd:g} {_PERIOD_WORDS.get(b.period, b.period)}"
            out[f"{b.name} ({b.period})"] = gauge(float(b.spent_usd), float(b.limit_usd), title=label)
    return out


class Dashboard(widgets.VBox):
    """Summary table, latency per model, cumulative spend, (with a budget) a spend gauge, a gauge
    per user budget (``kit.set_budget(user_id=...)``) and a banner when a spend alert fired.

    ``refresh()`` redraws now; ``stop()`` ends the background polling (``close()`` stops too).
    ``refresh_s=None`` never polls: call ``refresh()`` yourself.
    """

    def __init__(
        self, kit: Kit, *, refresh_s: float | None = 1.0, budget_usd: float | None = None, user_id: Match = None,
        since: Time = None, until: Time = None, experiment_id: Match = None, provider: Match = None,
        model: Match = None, run_id: Match = None, kind: Match = None,
    ) -> None:

        if refresh_s is not None and not _positive(refresh_s):
            raise InvalidRequestError(f"refresh_s must be a positive number of seconds (or None), got {refresh_s!r}")
        if budget_usd is not None and not _positive(budget_usd):
            raise InvalidRequestError(f"budget_usd must be a positive number of US dollars (or None), got {budget_usd!r}")
        self.kit, self.refresh_s, self.budget_usd = kit, refresh_s, budget_usd
        self.filters = charts.clean_filters(dict(user_id=user_id, since=since, until=until, experiment_id=experiment_id,
                                                 provider=provider, model=model, run_id=run_id, kind=kind))
        self.note = charts.describe_filters(self.filters)
        self.status_line = widgets.HTML()
        self.summary = widgets.HTML()
        self.latency_fig = FigureView()
        self.spend_fig = FigureView()
        self.gauge_fig = FigureView(layout=widgets.Layout(width=f"{_GAUGE_WIDTH}px")) if budget_usd else None
        self.summary.layout = widgets.Layout(flex="1 1 420px", min_width="0", overflow="auto")
        top = [self.summary] + ([self.gauge_fig] if self.gauge_fig is not None else [])
        row = widgets.HBox(top, layout=widgets.Layout(flex_flow="row wrap", align_items="center", grid_gap="8px 24px"))
        self.banner = widgets.HTML(layout=widgets.Layout(display="none"))
        self.user_gauges: dict[str, FigureView] = {}
        self.budget_row = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap", grid_gap="8px 24px"))
        super().__init__(children=[self.banner, self.status_line, row, self.budget_row, self.latency_fig, self.spend_fig],
                         layout=widgets.Layout(width="100%", max_width="1100px"))
        self.add_class("cok-dashboard")
        self.spend_usd = 0.0
        self.alert_html = ""  # the spend alert banner's HTML ("" when none fired)
        self.rows = 0
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        self._error = ""
        self._aggregates: Aggregates | None = None  # the running totals (charts.read_aggregates)
        self.refresh()
        if refresh_s is not None:
            self.start()

    # --- drawing -------------------------------------------------------------------------
    def _journal_signature(self) -> tuple[tuple[str, int, int], ...]:
        """Names, sizes and mtimes of the journal files and of the guards folder (budgets, fired
        alerts): changes whenever a call is recorded. A client Kit's: the team server's newest row."""
        if (newest := getattr(self.kit, "newest_row", None)) is not None:
            return ((str(newest(**self.filters)), 0, 0),)
        sig: list[tuple[str, int, int]] = []
        for folder in (self.kit.ledger.journal_dir, os.path.join(self.kit.home, "guards")):
            try:
                with os.scandir(folder) as it:
                    sig.extend((e.path, s.st_size, s.st_mtime_ns) for e in it for s in [e.stat()])
            except FileNotFoundError:
                pass
        return tuple(sorted(sig))

    def refresh(self, force: bool = True) -> bool:
        """Fold in the calls recorded since the last refresh and redraw (with ``force=False`` only if
        the ledger changed); True if redrawn. The ledger is read incrementally: a refresh costs what
        was added since the last one (``storage.aggregates``)."""
        with self._lock:
            sig = self._journal_signature()
            if not force and sig == self._signature:
                return False
            self._aggregates = charts.read_aggregates(self.kit, self.filters, self._aggregates)
            self._signature = sig
            self._draw(self._aggregates)
            return True

    def _draw(self, agg: Aggregates | None) -> None:
        assert agg is not None
        title = "Usage" + self.note
        # an HTML widget's 28 px line height suits one-line labels, not a wrapped title or header
        self.summary.value = f"<div style='line-height:1.45'>{summary_of(agg, title).to_html()}</div>"
        self.latency_fig.show(_fit(charts.latency_figure(latency_groups(agg), note=self.note)))
        total, lines = spend_lines(agg)
        self.spend_fig.show(_fit(charts.spend_figure(total, lines, unpriced=int(agg.total("unpriced")),
                                                     rows=int(agg.total("attempts")), note=self.note)))
        self.rows = int(agg.total("attempts"))
        self.spend_usd = float(agg.total("spend_usd"))
        if self.gauge_fig is not None and self.budget_usd is not None:
            self.gauge_fig.show(gauge(self.spend_usd, self.budget_usd))
        self._draw_guards()
        self._error = ""
        self._show_status()

    def _draw_guards(self) -> None:
        """The alert banner and one gauge per user budget."""
        self.alert_html = alert_banner(self.kit.alerts())
        self.banner.value = self.alert_html
        self.banner.layout.display = None if self.alert_html else "none"
        wanted = self.filters.get("user_id")
        users = None if wanted is None else {wanted} if isinstance(wanted, str) else set(wanted)
        figs = user_budget_gauges(self.kit.budgets(), users)
        for name in set(self.user_gauges) - set(figs):
            self.user_gauges.pop(name).close()
        for name, fig in figs.items():
            if name not in self.user_gauges:
                self.user_gauges[name] = FigureView(layout=widgets.Layout(width=f"{_GAUGE_WIDTH}px"))
            self.user_gauges[name].show(fig)
        self.budget_row.children = [self.user_gauges[n] for n in sorted(self.user_gauges)]

    def _show_status(self) -> None:
        now = datetime.now(timezone.utc).strftime("%H:%M:%S")
        if self._error:
            state = f"<span style='color:#b42318'>● {html.escape(self._error)}</span>"
        elif self.running:
            state = f"<span style='color:#2e7d32'>● live</span> (checks every {self.refresh_s:g} s)"
        else:
            state = "<span style='color:#888'>○ stopped</span> (call <code>.refresh()</code> to update)"
        self.status_line.value = (f"<div style='font-size:12px;color:#555'>{state} · {self.rows} ledger rows · "
                                  f"updated {now} UTC · <code>{html.escape(str(self.kit.home))}</code></div>")

    # --- polling -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while the background thread polls the ledger."""
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def start(self) -> None:
        """Poll the ledger in a daemon thread (again, after ``stop()``)."""
        if self.running:
            return
        if self.refresh_s is None:
            self.refresh_s = 1.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(self._stop,), name="cognitionos-dashboard", daemon=True)
        self._thread.start()
        self._show_status()

    def _poll(self, stop: threading.Event) -> None:
        while not stop.wait(self.refresh_s):
            try:
                self.refresh(force=False)
            except Exception as e:  # a locked or missing ledger: say so, keep polling
                self._error = f"{type(e).__name__}: {e}"[:200]
                self._show_status()

    def stop(self) -> None:
        """Stop polling; the widgets keep their last state."""
        self._halt()
        self._show_status()

    def _halt(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def close(self) -> None:
        """Stop polling and close the widgets."""
        if "_stop" in self.__dict__:  # not when __init__ failed half-way
            self._halt()
        for name in ("latency_fig", "spend_fig", "gauge_fig"):
            if self.__dict__.get(name) is not None:
                self.__dict__[name].close()
        for view in self.__dict__.get("user_gauges", {}).values():
            view.close()
        super().close()

    def __repr__(self) -> str:
        state = "live" if self.running else "stopped"
        budget = f", budget ${self.budget_usd:g}" if self.budget_usd else ""
        budget += ", SPEND ALERT fired" if self.alert_html else ""
        # what a page shows where the widget cannot be drawn: a notebook viewer, or a kernel that is gone
        return (f"Dashboard({state}, {self.rows} ledger rows, spend ${self.spend_usd:.6f}{budget}{self.note}): a live "
                "widget; if it is not drawn, its kernel has stopped or restarted: run the cell again")
