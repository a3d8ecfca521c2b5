"""Plotly figures built from ledger data (a DataFrame from ``kit.usage()``).

Each function returns a ``go.Figure``; an empty ledger gives an empty figure with a clear title.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

_TEMPLATE = "plotly_white"


def _empty(title: str) -> "go.Figure":
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.update_layout(title=f"{title} — no calls recorded yet", template=_TEMPLATE)
    return fig


def latency_distribution(df: "pd.DataFrame") -> "go.Figure":
    """Latency of successful attempts per provider/model, with p50/p95/p99 marked."""
    import plotly.graph_objects as go

    ok = df[df["status"] == "ok"] if len(df) else df
    if not len(ok):
        return _empty("Latency per provider/model")
    fig = go.Figure()
    for key, g in ok.groupby(ok["provider"] + "/" + ok["model"]):
        fig.add_trace(go.Box(x=g["latency_ms"], name=key, boxpoints="outliers", orientation="h"))
    for q, dash in ((0.5, "dot"), (0.95, "dash"), (0.99, "longdash")):
        v = float(ok["latency_ms"].quantile(q))
        fig.add_vline(x=v, line_dash=dash, line_color="#888", annotation_text=f"p{int(q * 100)} {v:.0f} ms")
    fig.update_layout(title="Latency per provider/model", xaxis_title="latency (ms)", template=_TEMPLATE, showlegend=False)
    return fig


def cumulative_spend(df: "pd.DataFrame") -> "go.Figure":
    """Cumulative spend over time, one line per provider."""
    import plotly.graph_objects as go

    priced = df.dropna(subset=["cost_usd"]) if len(df) else df
    if not len(priced):
        return _empty("Cumulative spend")
    fig = go.Figure()
    for provider, g in priced.sort_values("ts").groupby("provider"):
        fig.add_trace(go.Scatter(x=g["ts"], y=g["cost_usd"].cumsum(), mode="lines", name=provider))
    fig.update_layout(title="Cumulative spend (USD)", yaxis_title="USD", template=_TEMPLATE)
    return fig


def spend_by(df: "pd.DataFrame", by: str = "user_id") -> "go.Figure":
    """Spend per user, model, provider (any ledger column) as a bar chart."""
    import plotly.graph_objects as go

    priced = df.dropna(subset=["cost_usd"]) if len(df) else df
    if not len(priced):
        return _empty(f"Spend by {by}")
    totals = priced.groupby(priced[by].fillna("(none)"))["cost_usd"].sum().sort_values(ascending=False)
    fig = go.Figure(go.Bar(x=totals.index.astype(str), y=totals.values, text=[f"${v:.4f}" for v in totals.values]))
    fig.update_layout(title=f"Spend by {by} (USD)", yaxis_title="USD", template=_TEMPLATE)
    return fig
