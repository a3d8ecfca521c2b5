"""The self-contained HTML report of a run (plotly.js embedded once: opens offline, no CDN).

Its charts draw with the kit's chart look (``charts.template()``), as ``kit.charts`` and the
dashboard do, so a report and a notebook view of the same numbers look alike.
"""

from __future__ import annotations

import html
import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import charts
from ..storage.files import private_file

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

    from .run import Run
    from .runs import Comparison

__all__ = ["figures", "figure_specs", "write_report", "comparison_figure"]

_HEIGHT = 420


def _label(df: pd.DataFrame) -> pd.Series:
    return df["model"].astype(str) + " · " + df["template"].astype(str) + " · " + df["settings"].astype(str)


@lru_cache(maxsize=1)
def _look() -> dict[str, Any]:
    """``charts.template()`` as a plain dict, built once (the specs skip plotly's validation)."""
    return charts.template().to_plotly_json()


def _layout(title: str, *, legend: int = 0, **axes: Any) -> dict[str, Any]:
    """A chart's layout in the kit's look; ``legend`` entries get room under the axis title."""
    layout = {"title": {"text": title}, "template": _look(), "height": _HEIGHT, **axes}
    if legend > 1:
        layout["margin"] = {"b": charts.legend_margin(legend)}
    else:
        layout["showlegend"] = False
    return layout


def _values(col: pd.Series) -> list[Any]:
    return [None if v != v else v for v in col.tolist()]  # NaN -> null: JSON has no NaN


def figure_specs(run: Run) -> list[dict[str, Any]]:
    """The report's charts as plotly figure dicts: scores by group, cost by group, latency
    distribution, cost vs mean score.

    Plain dicts, rendered without validation: building the same charts through plotly.express
    and validated ``go.Figure`` objects costs many times more (plotly's template alone is
    deep-copied and validated once per figure; measured by benchmarks/bench_choices.py,
    figures in the README).
    """
    s = run.summary.copy()
    s["group"] = _label(s)
    ok = run.results[run.results.status == "ok"].copy()
    ok["group"] = _label(ok)
    scores = [c for c in s.columns if c.startswith("score_")]
    specs = []
    if scores:
        specs.append({"data": [{"type": "bar", "name": c, "x": s["group"].tolist(), "y": _values(s[c])} for c in scores],
                      "layout": _layout("Mean score by model · template · settings", legend=len(scores), barmode="group",
                                        yaxis={"title": {"text": "mean score"}})})
    by_model = list(s.groupby("model", sort=False))
    specs.append({"data": [{"type": "bar", "name": str(m), "x": g["group"].tolist(), "y": _values(g["cost_usd"])}
                           for m, g in by_model],
                  "layout": _layout("Cost of the answers (USD) by group", legend=len(by_model),
                                    yaxis={"title": {"text": "cost_usd"}})})
    if len(ok):
        ok_by_model = list(ok.groupby("model", sort=False))
        specs.append({"data": [{"type": "box", "name": str(m), "x": g["group"].tolist(), "y": _values(g["latency_ms"]),
                                "boxpoints": "all"} for m, g in ok_by_model],
                      "layout": _layout("Latency per call (ms, original call for cached answers)", legend=len(ok_by_model),
                                        boxmode="group", yaxis={"title": {"text": "latency_ms"}})})
    if scores and len(s):
        specs.append({"data": [{"type": "scatter", "mode": "markers+text", "textposition": "top center",
                                "x": _values(s["cost_usd"]), "y": _values(s[scores[0]]), "text": s["group"].tolist()}],
                      "layout": _layout(f"Cost vs {scores[0]}", xaxis={"title": {"text": "cost (USD)"}},
                                        yaxis={"title": {"text": scores[0]}})})
    return specs


def figures(run: Run) -> list[go.Figure]:
    """The report's charts as ``go.Figure`` objects (for a notebook)."""
    import plotly.graph_objects as go

    return [go.Figure(spec) for spec in figure_specs(run)]


def _table(d: dict[str, Any]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.6g}" if isinstance(v, float) else str(v)

    rows = "".join(f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td>{html.escape(cell(v))}</td></tr>"
                   for k, v in d.items())
    return f"<table>{rows}</table>"


@lru_cache(maxsize=1)
def _plotlyjs() -> bytes:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode("utf-8")


def write_report(run: Run) -> Path:
    """Write ``report.html`` into the run folder and return its path."""
    import plotly.io as pio

    m = run.manifest
    drawn = [pio.to_html(spec, full_html=False, include_plotlyjs=False, validate=False) for spec in figure_specs(run)]
    stopped = (f"<p style='color:#a15c00'><b>Stopped:</b> {html.escape(m['stopped_reason'])}</p>"
               if m.get("stopped_reason") else "")
    head = {k: m[k] for k in ("run_id", "experiment", "experiment_hash", "dataset_hash", "started_at", "ended_at",
                              "executor", "concurrency", "budget_usd", "cache_hit_ratio", "price_table_version")}
    head.update(m["code_version"])
    top = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(m['experiment'])} · {html.escape(m['run_id'])}</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;font-size:90%}"
        "td,th{border:1px solid #ddd;padding:3px 6px}</style><script type='text/javascript'>"
    )
    body = (
        "</script></head><body>"
        f"<h1>Experiment {html.escape(m['experiment'])}</h1>{stopped}"
        f"<h2>Run</h2>{_table(head)}<h2>Totals</h2>{_table(m['totals'])}"
        f"<h2>Summary</h2>{run.summary.to_html(index=False, float_format=lambda v: f'{v:.6g}')}"
        "<h2>Charts</h2>" + "".join(drawn)
        + "<h2>Manifest</h2><pre style='white-space:pre-wrap'>"
        + html.escape(json.dumps(m, indent=2, default=str)) + "</pre></body></html>"
    )
    path = Path(run.path) / "report.html"

    with open(path, "wb") as f:  # plotly.js (4.6 MB) goes in once, as bytes: no copy of it in a page string
        private_file(path)  # the user's only (0600), before anything is in it
        f.write(top.encode("utf-8"))
        f.write(_plotlyjs())
        f.write(body.encode("utf-8"))
    return path


def comparison_figure(c: Comparison) -> go.Figure:
    """One panel per metric (own units): B - A for each group."""
    from plotly.subplots import make_subplots

    t = c.table.copy()
    t["group"] = _label(t)
    cols = [x for x in t.columns if x.endswith("_delta") and x != "ok_delta"]
    fig = make_subplots(rows=1, cols=max(len(cols), 1), subplot_titles=[x.removesuffix("_delta") for x in cols])
    for i, col in enumerate(cols, 1):
        fig.add_bar(x=t["group"], y=t[col], name=col.removesuffix("_delta"), row=1, col=i, showlegend=False)
    fig.update_layout(title=f"Change from {c.a.run_id} to {c.b.run_id} (B - A)", template=charts.template(), height=460)
    return fig
