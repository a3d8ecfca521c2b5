"""The figures: each takes a ledger DataFrame (``kit.usage()``) or the totals computed from one in
DuckDB, and returns a ``go.Figure`` in the kit's look (``template()``). An empty ledger gives an
empty figure whose title says "no calls", never an exception. Latency charts use successful
attempts only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, TypedDict

from ..core.display import money
from ..core.errors import InvalidRequestError
from ..storage.aggregates import PERCENTILES, LatencyGroup, cache_savings, frame_runner

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

__all__ = [
    "ChartFilters", "FILTERS", "latency_distribution", "latency_over_time", "cumulative_spend", "spend_over_time",
    "LatencyGroup", "latency_figure", "spend_figure", "PERCENTILES", "spend_by", "spend_bars", "prompt_cache",
    "cache_bars", "tokens_vs_latency", "DEFAULT_LAST", "template", "legend_margin", "Match", "Time", "MONEY_AXIS",
]  # fmt: skip

FILTERS = ("user_id", "since", "until", "experiment_id", "provider", "model", "run_id", "kind")
Match = str | Sequence[str] | None  # a ledger filter: one value, a list meaning any of them, None meaning any
Time = datetime | date | str | float | None  # a time bound: datetime (naive is UTC), date, ISO string, epoch seconds


class ChartFilters(TypedDict, total=False):
    """The ledger filters every chart and the dashboard take (all optional)."""

    user_id: Match
    since: Time
    until: Time
    experiment_id: Match
    provider: Match
    model: Match
    run_id: Match
    kind: Match
DEFAULT_LAST = 5_000  # the per-call charts draw the newest this many attempts unless told otherwise (last=)
MONEY_AXIS = ",.6~f"  # money on an axis: plain decimals ($0.00008), never SI prefixes ("80µ")
_PALETTE = ("#4C78A8", "#F58518", "#54A24B", "#B279A2", "#72B7B2", "#EECA3B", "#9D755D", "#BAB0AC", "#FF9DA6")
_FAIL = "#D62728"
_template: Any = None


def template() -> go.layout.Template:
    """The kit's chart look: plotly_white, system font, left-aligned titles, tidy margins."""
    global _template
    if _template is None:
        import plotly.graph_objects as go
        import plotly.io as pio

        # plotly_white's axes, backgrounds and the defaults of the traces drawn here, not its 24
        # trace types and 3D/geo/polar scenes: the full template costs ~35 ms per figure to copy
        base = pio.templates["plotly_white"]
        keep = ("xaxis", "yaxis", "plot_bgcolor", "paper_bgcolor", "hovermode", "hoverlabel", "font", "title",
                "colorway", "annotationdefaults", "shapedefaults", "autotypenumbers")
        layout = base.layout.to_plotly_json()
        t = go.layout.Template(layout={k: layout[k] for k in keep if k in layout},
                               data={k: base.data[k] for k in ("scatter", "bar", "box", "indicator") if base.data[k]})
        t.layout.update(
            font=dict(family="system-ui, -apple-system, Segoe UI, sans-serif", size=12, color="#333"),
            title=dict(x=0.01, xanchor="left", font_size=15),
            colorway=list(_PALETTE),
            margin=dict(l=60, r=20, t=60, b=50),
            hoverlabel=dict(font_size=12),
            # pinned to the figure's bottom edge: just under the plot it overlaps the x-axis title
            # once tick labels take two lines (dates) or the legend wraps; charts with a legend
            # leave room for it with _legend_room
            legend=dict(orientation="h", yref="container", y=0, yanchor="bottom", x=0, xanchor="left"),
        )
        _template = t
    return _template


def _figure(title: str, **layout: Any) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.update_layout(title=title, template=template(), **layout)
    return fig


def legend_margin(entries: int, *, ticks: int = 1) -> int:
    """The bottom margin (px) a chart in ``template()`` needs for its tick labels (``ticks`` lines),
    its x-axis title and a legend of ``entries`` below them (the template pins it to the bottom edge)."""
    rows = max(1, -(-entries // 4))  # about four entries fit on a row of a notebook-wide chart
    return 40 + 18 * ticks + 22 * rows


def _legend_room(fig: go.Figure, *, ticks: int = 1) -> go.Figure:
    """Room for the legend under the x-axis title, when the figure shows one."""
    entries = sum(1 for t in fig.data if t.showlegend is not False)
    if fig.layout.showlegend is False or (entries < 2 and fig.layout.showlegend is not True):
        return fig
    fig.update_layout(legend=dict(yref="container", y=0, yanchor="bottom", x=0, xanchor="left"),
                      margin_b=legend_margin(entries, ticks=ticks))
    return fig


def _empty(title: str, note: str = "", why: str = "") -> go.Figure:
    """An empty chart whose title says there is nothing to show."""
    why = why or ("no calls match the filters" if note else "no calls recorded yet")
    fig = _figure(f"{title}{note} — {why}", xaxis_visible=False, yaxis_visible=False, height=260)
    fig.add_annotation(text=why, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font_color="#888", font_size=16)
    return fig


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    """Successful attempts with a latency."""
    if not len(df):
        return df
    return df[(df["status"] == "ok") & df["latency_ms"].notna()]


def _keys(df: pd.DataFrame) -> pd.Series:
    return df["provider"].astype(str) + "/" + df["model"].astype(str)


def _colors(keys: list[str]) -> dict[str, str]:
    return {k: _PALETTE[i % len(_PALETTE)] for i, k in enumerate(keys)}


def _floats(s: pd.Series) -> list[float]:
    """Plain floats (nullable ints and NA become float/NaN) for plotly."""
    return s.astype("float64").tolist()


def _text(s: pd.Series) -> list[str]:
    return s.astype(object).where(s.notna(), "—").astype(str).tolist()


def latency_distribution(df: pd.DataFrame, *, note: str = "") -> go.Figure:
    """Latency of successful attempts per provider/model: a box, every call as a point, and the
    p50/p95/p99 marks. Each group's row label says its percentiles in ms and its call count, so
    no label sits on the data; hovering a call or a mark gives its value, unit and count."""
    ok = _ok(df)
    keys = _keys(ok) if len(ok) else None
    groups = []
    for key in sorted(keys.unique()) if keys is not None else []:
        lat = ok.loc[keys == key, "latency_ms"].astype("float64")
        users = _text(ok.loc[keys == key, "user_id"]) if "user_id" in ok.columns else None
        # linear interpolation, as numpy
        groups.append(LatencyGroup(key, len(lat), {q: float(lat.quantile(q / 100)) for q in PERCENTILES}, lat.tolist(), users))
    return latency_figure(groups, note=note)


def latency_figure(groups: Sequence[LatencyGroup], *, note: str = "") -> go.Figure:
    """The figure of ``latency_distribution`` from per-group numbers (the dashboard's come from
    its running aggregates: a million calls are a box and their newest points, not a million points)."""
    import numpy as np

    title = "Latency per provider/model"
    if not groups:
        return _empty(title, note)
    colors = _colors([g.key for g in groups])
    labels = {g.key: f"<b>{g.key}</b><br><span style='font-size:11px'>"
                     f"{' · '.join(f'p{q} {g.marks[q]:,.0f}' for q in PERCENTILES)} ms · {g.n} calls</span>"
              for g in groups}
    traces: list[dict[str, Any]] = []
    for g in groups:
        x, y = np.asarray(g.x, dtype="float64"), np.full(len(g.x), labels[g.key], dtype=object)
        # the box only draws the spread; hovering it would show plotly's own five-number tooltip
        spread: dict[str, Any] = (dict(x=x, y=y) if g.box is None else
                                  dict(y=[labels[g.key]], q1=[g.box[0]], median=[g.box[1]], q3=[g.box[2]],
                                       lowerfence=[g.box[3]], upperfence=[g.box[4]]))
        traces.append(dict(type="box", **spread, name=g.key, orientation="h", boxpoints=False,
                           marker=dict(color=colors[g.key]), showlegend=False, hoverinfo="skip"))
        traces.append(dict(
            type="scatter", x=x, y=y, mode="markers", name=g.key, showlegend=False,
            marker=dict(color=colors[g.key], size=5, opacity=0.45),
            customdata=None if g.users is None else np.asarray(g.users, dtype=object),
            hovertemplate=f"{g.key}<br>%{{x:,.1f}} ms" + (" · user %{customdata}" if g.users is not None else "")
                          + "<extra></extra>",
        ))
    symbols = {50: "circle", 95: "diamond", 99: "x"}
    for q in PERCENTILES:
        traces.append(dict(
            type="scatter", x=[g.marks[q] for g in groups], y=[labels[g.key] for g in groups], name=f"p{q}",
            mode="markers", marker=dict(symbol=symbols[q], size=11, color="#222", line=dict(width=1, color="#fff")),
            customdata=[(g.key, g.n) for g in groups],
            hovertemplate=f"%{{customdata[0]}}<br>p{q}: %{{x:,.1f}} ms over %{{customdata[1]}} calls<extra></extra>",
        ))
    return _built(f"{title}{note}", traces, dict(
        xaxis=dict(title=dict(text="latency (ms)")), yaxis=dict(automargin=True), showlegend=True,
        height=max(280, 100 + 80 * len(groups)), hovermode="closest"))


def _built(title: str, traces: list[dict[str, Any]], layout: dict[str, Any], *, ticks: int = 1) -> go.Figure:
    """A figure from plotly's own dicts, in ``template()``, legend room as ``_legend_room``, taken
    unchecked: checking costs ~30 ms a chart, most of a dashboard refresh (tests/test_charts.py checks them)."""
    import plotly.graph_objects as go

    entries = sum(1 for t in traces if t.get("showlegend") is not False)
    if layout.get("showlegend") is True or (entries >= 2 and layout.get("showlegend") is not False):
        layout = {**layout, "legend": dict(yref="container", y=0, yanchor="bottom", x=0, xanchor="left"),
                  "margin": dict(b=legend_margin(entries, ticks=ticks))}
    spec = {"data": traces, "layout": {"title": dict(text=title), "template": template(), **layout}}
    try:
        return go.Figure(spec, _validate=False)
    except TypeError:  # a plotly without the flag: checked, only slower
        return go.Figure(spec)


def latency_over_time(df: pd.DataFrame, *, note: str = "") -> go.Figure:
    """Latency of each successful attempt against time, per provider/model. Failed attempts are
    not latencies (many fail at once, at "0 ms"): they are drawn as red marks in a strip of their
    own under the chart, one row per provider, with the error and the time to fail on hover."""
    import plotly.graph_objects as go

    title = "Latency over time"
    ok = _ok(df)
    bad = df[df["status"] != "ok"] if len(df) else df
    if not len(ok) and not len(bad):
        return _empty(title, note)
    hover = "%{x|%H:%M:%S.%L}<br>%{y:,.1f} ms<br>user %{customdata[0]} · %{customdata[1]} tokens<extra>%{fullData.name}</extra>"
    keys = _keys(ok)
    if len(bad):
        from plotly.subplots import make_subplots

        fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.8, 0.2], vertical_spacing=0.04)
        fig.update_layout(title=f"{title}{note}", template=template(), hovermode="closest", height=460)
        fig.update_yaxes(title_text="latency (ms)", row=1, col=1)
        fig.update_yaxes(title_text="failed", type="category", row=2, col=1)
        fig.update_xaxes(title_text="time (UTC)", row=2, col=1)
    else:
        fig = _figure(f"{title}{note}", yaxis_title="latency (ms)", xaxis_title="time (UTC)", hovermode="closest")
    for key, color in _colors(sorted(keys.unique())).items():
        g = ok[keys == key]
        fig.add_trace(go.Scatter(x=g["ts"].tolist(), y=_floats(g["latency_ms"]), name=key, mode="markers",
                                 marker=dict(color=color, size=7, opacity=0.8),
                                 customdata=list(zip(_text(g["user_id"]), _text(g["total_tokens"]))), hovertemplate=hover),
                      **({"row": 1, "col": 1} if len(bad) else {}))
    if len(bad):
        fig.add_trace(go.Scatter(
            x=bad["ts"].tolist(), y=bad["provider"].astype(str).tolist(), name="failed attempt", mode="markers",
            marker=dict(color=_FAIL, symbol="x", size=9),
            customdata=list(zip(_text(bad["error_type"]), _text(bad["latency_ms"].round(1)), _text(bad["model"]))),
            hovertemplate=("%{x|%H:%M:%S.%L}<br>%{y}/%{customdata[2]}: %{customdata[0]}<br>"
                           "failed after %{customdata[1]} ms<extra></extra>"),
        ), row=2, col=1)
    return _legend_room(fig, ticks=2)


def cumulative_spend(df: pd.DataFrame, *, note: str = "") -> go.Figure:
    """Cumulative spend over time: a total line, plus one per provider when there are several."""
    priced = df.dropna(subset=["cost_usd"]).sort_values("ts", kind="stable") if len(df) else df
    unpriced = int(((df["status"] == "ok") & df["cost_usd"].isna()).sum()) if len(df) else 0
    lines = {p: (g["ts"].tolist(), g["cost_usd"].cumsum().tolist()) for p, g in priced.groupby("provider", sort=True)} \
        if len(priced) else {}
    total = (priced["ts"].tolist(), priced["cost_usd"].cumsum().tolist()) if len(priced) else ([], [])
    return spend_figure(total, lines, unpriced=unpriced, rows=len(df), note=note)


def spend_figure(total: tuple[Any, Any], providers: Mapping[str, tuple[Any, Any]], *,
                 unpriced: int = 0, rows: int = 0, note: str = "") -> go.Figure:
    """The figure of ``cumulative_spend`` from its lines: (times, cumulative USD) for the total and
    per provider (drawn when there are several); ``unpriced`` ok calls are named, not counted."""
    title = "Cumulative spend (USD)"
    if not len(total[0]):
        return _empty(title, note, "" if not rows else "no calls with a known cost")
    extra = f" · {unpriced} unpriced call(s) not counted" if unpriced else ""
    hover = "$%{y:,.6f}<extra>%{fullData.name}</extra>"
    traces = [dict(type="scatter", x=total[0], y=total[1], name="total", mode="lines",
                   line=dict(color="#222", width=2.5, shape="hv"), hovertemplate=hover)]
    if len(providers) > 1:
        for provider, color in _colors(sorted(providers)).items():
            traces.append(dict(type="scatter", x=providers[provider][0], y=providers[provider][1], name=provider,
                               mode="lines", line=dict(color=color, dash="dot", shape="hv"), hovertemplate=hover))
    return _built(f"{title}{note}{extra}", traces, dict(
        yaxis=dict(title=dict(text="USD"), tickprefix="$", tickformat=MONEY_AXIS), xaxis=dict(title=dict(text="time (UTC)")),
        hovermode="x unified"), ticks=2)


spend_over_time = cumulative_spend


def spend_by(df: pd.DataFrame, by: str = "user_id", *, note: str = "") -> go.Figure:
    """Spend per user, model, provider, day (UTC) or any ledger column, as bars (days in order)."""
    if by != "day" and by not in df.columns:
        raise InvalidRequestError(
            f"cannot chart spend by {by!r}: use 'day' or a ledger column such as user_id, model, provider"
        )
    if not len(df):
        return spend_bars(df, by, note=note)
    key = df["ts"].dt.tz_convert("UTC").dt.date if by == "day" else df[by]
    frame = df.assign(_key=key, _ok=df["status"] == "ok", _tokens=df["total_tokens"].astype("float64"))
    totals = frame.groupby("_key", dropna=False).agg(cost_usd=("cost_usd", "sum"), calls=("_ok", "sum"),
                                                     total_tokens=("_tokens", "sum"))
    totals.loc[frame.groupby("_key", dropna=False)["cost_usd"].count() == 0, "cost_usd"] = float("nan")
    return spend_bars(totals.rename_axis(by).reset_index(), by, note=note)


def spend_bars(totals: pd.DataFrame, by: str = "user_id", *, note: str = "") -> go.Figure:
    """The figure of ``spend_by`` from spend totals (``kit.spend(by=...)``'s columns ``by``,
    ``cost_usd``, ``calls``, ``total_tokens``): bars, days in order, else most expensive first."""
    import plotly.graph_objects as go

    title = f"Spend by {by.removesuffix('_id')} (USD)"
    if not len(totals) or totals["cost_usd"].isna().all():
        return _empty(title, note, "" if not len(totals) else "no calls with a known cost")
    if by == "day":
        totals = totals.assign(_key=[str(d)[:10] for d in totals[by]]).sort_values("_key", kind="stable")
    else:
        totals = totals.assign(_key=totals[by].astype(object).fillna("(none)").astype(str))
        totals = totals.sort_values(["cost_usd", "_key"], ascending=[False, True], kind="stable", na_position="last")
    cost = totals["cost_usd"].astype("float64").fillna(0.0)
    fig = _figure(f"{title}{note}", yaxis_title="USD", yaxis_tickprefix="$", yaxis_tickformat=MONEY_AXIS, xaxis_title=by,
                  xaxis_type="category")
    fig.add_trace(go.Bar(
        x=totals["_key"].tolist(), y=cost.tolist(), marker_color=_PALETTE[0], name="spend",
        text=[money(v) for v in cost], textposition="auto",
        customdata=list(zip(totals["calls"].astype(int), totals["total_tokens"].astype("float64").fillna(0).astype(int))),
        hovertemplate="%{x}<br>$%{y:,.6f}<br>%{customdata[0]} calls · %{customdata[1]:,} tokens<extra></extra>",
    ))
    return fig


def prompt_cache(df: pd.DataFrame, *, note: str = "") -> go.Figure:
    """What the providers' prompt caches saved, per model: bars of USD saved (reads) net of what
    cache writes cost extra; hover shows the tokens read from and written to the cache."""
    if not len(df) or "cache_saving_usd" not in df.columns:
        return cache_bars(None, note=note, rows=len(df))
    return cache_bars(cache_savings(frame_runner(df), "", []), note=note, rows=len(df))


def cache_bars(totals: pd.DataFrame | None, *, note: str = "", rows: int = 0) -> go.Figure:
    """The figure of ``prompt_cache`` from ``storage.aggregates.cache_savings``' totals (None: no
    rows); ``rows`` the rows read, to tell "no calls" from "no cache use"."""
    import plotly.graph_objects as go

    title = "Prompt cache savings by model (USD)"
    if totals is None or not len(totals):
        return _empty(title, note, "" if not rows else "no call read or wrote a prompt cache")
    fig = _figure(f"{title}{note}", yaxis_title="USD saved", yaxis_tickprefix="$", yaxis_tickformat=MONEY_AXIS,
                  xaxis_title="model", xaxis_type="category")
    fig.add_trace(go.Bar(
        x=totals["key"].tolist(), y=totals["saved"].tolist(), name="saved",
        marker_color=[_PALETTE[2] if v >= 0 else _FAIL for v in totals["saved"]],
        text=[money(v) for v in totals["saved"]], textposition="auto",
        customdata=list(zip(totals["calls"].astype(int), totals["read"].astype(int), totals["written"].astype(int))),
        hovertemplate=("%{x}<br>saved $%{y:,.6f} over %{customdata[0]} calls<br>"
                       "%{customdata[1]:,} tokens read from the cache · %{customdata[2]:,} written<extra></extra>"),
    ))
    return fig


def tokens_vs_latency(df: pd.DataFrame, *, tokens: str = "completion_tokens", note: str = "") -> go.Figure:
    """Latency against tokens (output tokens by default) per provider/model, with a least-squares line."""
    import numpy as np
    import plotly.graph_objects as go

    if len(df.columns) and tokens not in df.columns:
        raise InvalidRequestError(
            f"cannot chart latency against {tokens!r}: use a ledger token column such as completion_tokens, "
            "prompt_tokens, total_tokens"
        )
    title = f"Latency vs {tokens.replace('_', ' ')}"
    ok = _ok(df)
    ok = ok[ok[tokens].notna()] if len(ok) else ok
    if not len(ok):
        return _empty(title, note)
    fig = _figure(f"{title}{note}", xaxis_title=tokens.replace("_", " "), yaxis_title="latency (ms)")
    keys = _keys(ok)
    for key, color in _colors(sorted(keys.unique())).items():
        g = ok[keys == key]
        fig.add_trace(go.Scatter(
            x=_floats(g[tokens]), y=_floats(g["latency_ms"]), name=key, mode="markers",
            marker=dict(color=color, size=7, opacity=0.8),
            customdata=list(zip(_text(g["prompt_tokens"]), _text(g["completion_tokens"]), _text(g["user_id"]))),
            hovertemplate="%{y:,.1f} ms<br>%{customdata[0]} in + %{customdata[1]} out tokens<br>user %{customdata[2]}"
                          "<extra>%{fullData.name}</extra>",
        ))
    x, y = np.asarray(_floats(ok[tokens])), np.asarray(_floats(ok["latency_ms"]))
    if len(np.unique(x)) > 1:
        slope, icept = np.polyfit(x, y, 1)
        xs = [float(x.min()), float(x.max())]
        fig.add_trace(go.Scatter(x=xs, y=[icept + slope * v for v in xs], mode="lines", name=f"fit: {slope:.2f} ms/token",
                                 line=dict(color="#888", dash="dash"), hoverinfo="skip"))
    return _legend_room(fig)


