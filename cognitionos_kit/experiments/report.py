"""The self-contained HTML report of a run (plotly.js embedded once: opens offline, no CDN)."""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runner import Run
    from .runs import Comparison

__all__ = ["figures", "write_report", "comparison_figure"]


def _label(df: Any) -> Any:
    return df["model"].astype(str) + " · " + df["template"].astype(str) + " · " + df["settings"].astype(str)


def figures(run: "Run") -> list[Any]:
    """Scores by group, cost by group, latency distribution, cost vs mean score."""
    import plotly.express as px
    import plotly.graph_objects as go

    s = run.summary.copy()
    s["group"] = _label(s)
    ok = run.results[run.results.status == "ok"].copy()
    ok["group"] = _label(ok)
    scores = [c for c in s.columns if c.startswith("score_")]
    figs = []
    if scores:
        long = s.melt(id_vars="group", value_vars=scores, var_name="scorer", value_name="mean score")
        figs.append(px.bar(long, x="group", y="mean score", color="scorer", barmode="group",
                           title="Mean score by model · template · settings"))
    figs.append(px.bar(s, x="group", y="cost_usd", color="model", title="Cost of the answers (USD) by group"))
    if len(ok):
        figs.append(px.box(ok, x="group", y="latency_ms", color="model", points="all",
                           title="Latency per call (ms, original call for cached answers)"))
    if scores and len(s):
        fig = go.Figure(go.Scatter(x=s["cost_usd"], y=s[scores[0]], text=s["group"], mode="markers+text",
                                   textposition="top center"))
        fig.update_layout(title=f"Cost vs {scores[0]}", xaxis_title="cost (USD)", yaxis_title=scores[0])
        figs.append(fig)
    for f in figs:
        f.update_layout(template="plotly_white", height=420)
    return figs


def _table(d: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in d.items())
    return f"<table>{rows}</table>"


def write_report(run: "Run") -> Any:
    """Write ``report.html`` into the run folder and return its path."""
    m = run.manifest
    figs = figures(run)
    parts = [f.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, f in enumerate(figs)]
    stopped = (f"<p style='color:#a15c00'><b>Stopped:</b> {html.escape(m['stopped_reason'])}</p>"
               if m.get("stopped_reason") else "")
    head = {k: m[k] for k in ("run_id", "experiment", "experiment_hash", "dataset_hash", "started_at", "ended_at",
                              "executor", "concurrency", "budget_usd", "cache_hit_ratio", "price_table_version")}
    head.update(m["code_version"])
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(m['experiment'])} · {html.escape(m['run_id'])}</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;font-size:90%}"
        "td,th{border:1px solid #ddd;padding:3px 6px}</style></head><body>"
        f"<h1>Experiment {html.escape(m['experiment'])}</h1>{stopped}"
        f"<h2>Run</h2>{_table(head)}<h2>Totals</h2>{_table(m['totals'])}"
        f"<h2>Summary</h2>{run.summary.to_html(index=False, float_format=lambda v: f'{v:.6g}')}"
        "<h2>Charts</h2>" + "".join(parts)
        + "<h2>Manifest</h2><pre style='white-space:pre-wrap'>"
        + html.escape(json.dumps(m, indent=2, default=str)) + "</pre></body></html>"
    )
    path = run.path / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def comparison_figure(c: "Comparison") -> Any:
    """One panel per metric (own units): B - A for each group."""
    from plotly.subplots import make_subplots

    t = c.table.copy()
    t["group"] = _label(t)
    cols = [x for x in t.columns if x.endswith("_delta") and x != "ok_delta"]
    fig = make_subplots(rows=1, cols=max(len(cols), 1), subplot_titles=[x.removesuffix("_delta") for x in cols])
    for i, col in enumerate(cols, 1):
        fig.add_bar(x=t["group"], y=t[col], name=col.removesuffix("_delta"), row=1, col=i, showlegend=False)
    fig.update_layout(title=f"Change from {c.a.run_id} to {c.b.run_id} (B - A)", template="plotly_white", height=460)
    return fig
