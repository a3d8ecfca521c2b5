"""The HTML report of a run: the run, its totals, the summary, the charts and every sample.

Its charts draw with the kit's chart look (``charts.template()``), as ``kit.charts`` and the
dashboard do, so a report and a notebook view of the same numbers look alike. plotly.js (4.6 MB)
is written once per data folder (``runs/assets/``) and every report loads it from there, offline
and without a CDN, so a report is a few hundred kB and reruns add no copy of it.
``write_report(run, standalone=True)`` (CLI: ``report RUN_ID --standalone``) embeds it instead,
for one file that opens anywhere.
"""

from __future__ import annotations

import html
import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import charts
from ..core.display import money
from ..storage.files import private_file
from .samples_html import STYLE as SAMPLES_STYLE
from .samples_html import samples_html

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


def _score_bars(s: pd.DataFrame, c: str) -> dict[str, Any]:
    """One score's bars with its 95% interval as error bars (from the summary's ``_ci_`` columns)."""
    bars: dict[str, Any] = {"type": "bar", "name": c, "x": s["group"].tolist(), "y": _values(s[c])}
    if {f"{c}_ci_low", f"{c}_ci_high", f"{c}_n"} <= set(s.columns):
        bars["error_y"] = {"type": "data", "symmetric": False, "array": _values(s[f"{c}_ci_high"] - s[c]),
                           "arrayminus": _values(s[c] - s[f"{c}_ci_low"])}
        bars["customdata"] = [_values(s[f"{c}_ci_low"])[i:i + 1] + _values(s[f"{c}_ci_high"])[i:i + 1]
                              + [int(s[f"{c}_n"].iloc[i])] for i in range(len(s))]
        bars["hovertemplate"] = ("%{x}<br>" + c + " %{y:.3f} [%{customdata[0]:.3f}, %{customdata[1]:.3f}]"
                                 "<br>n=%{customdata[2]} samples<extra></extra>")
    return bars


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
    # the results' score columns (the summary also holds each one's _n, _se, _ci_low, _ci_high); only what has bars
    scores = [c for c in run.results.columns if c.startswith("score_") and c in s and s[c].notna().any()]
    specs = []
    if scores:
        specs.append({"data": [_score_bars(s, c) for c in scores],
                      "layout": _layout("Mean score by model · template · settings", legend=len(scores), barmode="group",
                                        yaxis={"title": {"text": "mean score (error bars: 95% interval)"}})})
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
        # one marker series per model (a legend, not labels that overlap and run off the plot);
        # each point names its group on hover
        groups = list(s.groupby("model", sort=False))
        specs.append({"data": [{"type": "scatter", "mode": "markers", "name": str(m), "marker": {"size": 11},
                                "x": _values(g["cost_usd"]), "y": _values(g[scores[0]]), "text": g["group"].tolist(),
                                "hovertemplate": "%{text}<br>cost $%{x:.6f}<br>" + scores[0] + " %{y:.3f}<extra></extra>"}
                               for m, g in groups],
                      "layout": _layout(f"Cost vs {scores[0]}", legend=len(groups),
                                        xaxis={"title": {"text": "cost of the answers"}, "tickprefix": "$",
                                               "tickformat": ",.6~f"},
                                        yaxis={"title": {"text": scores[0]}})})
    return specs


def figures(run: Run) -> list[go.Figure]:
    """The report's charts as ``go.Figure`` objects (for a notebook)."""
    import plotly.graph_objects as go

    return [go.Figure(spec) for spec in figure_specs(run)]


def _table(d: dict[str, Any]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.6g}" if isinstance(v, float) else str(v)

    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(cell(v))}</td></tr>" for k, v in d.items())
    return f"<table class='kv'>{rows}</table>"


_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;color:#1f2937;background:#f8fafc;margin:0}
main{max-width:1150px;margin:auto;padding:24px}
header{background:#1e293b;color:#f8fafc;padding:18px 24px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;color:#cbd5e1;font-size:13px}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #e2e8f0;padding-bottom:4px}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:10px 14px;min-width:120px}
.card b{display:block;font-size:20px} .card span{color:#64748b;font-size:12px}
.chart{background:#fff;border:1px solid #e2e8f0;border-radius:8px;margin:12px 0;padding:4px}
table{border-collapse:collapse;font-size:13px;background:#fff}
td,th{border:1px solid #e2e8f0;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f1f5f9} tr:nth-child(even) td{background:#fafafa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.out{min-width:240px;max-width:420px;white-space:pre-wrap;word-break:break-word}
td{overflow-wrap:anywhere;max-width:300px}
.stopped{color:#a15c00;font-weight:600} .nojs{color:#a15c00}
details pre{white-space:pre-wrap;font-size:12px}
"""
_SAMPLE_ROWS = 500  # the per-sample table's length in the page (the Parquet file has every row)


def _frame_html(df: pd.DataFrame) -> str:
    """A summary frame as a table: money in the one money format, other numbers plainly (never 3.12e-05)."""
    def cell(col: str, v: Any) -> str:
        if isinstance(v, float) and v != v:
            return "<td class='num'>—</td>"
        if col.endswith("_usd"):
            return f"<td class='num'>{money(v)}</td>"
        if isinstance(v, float):
            return f"<td class='num'>{v:,.3f}</td>" if not v.is_integer() else f"<td class='num'>{v:,.0f}</td>"
        if isinstance(v, int):
            return f"<td class='num'>{v:,}</td>"
        return f"<td>{html.escape(str(v))}</td>"

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(cell(str(c), v) for c, v in zip(df.columns, row)) + "</tr>"
                   for row in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@lru_cache(maxsize=1)
def _plotlyjs() -> bytes:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode("utf-8")


def plotly_asset(runs_dir: Path) -> Path:
    """``runs/assets/plotly-<version>.min.js``, written once per data folder."""
    import plotly

    path = runs_dir / "assets" / f"plotly-{plotly.__version__}.min.js"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{__import__('os').getpid()}.tmp")
        tmp.write_bytes(_plotlyjs())
        tmp.replace(path)  # atomic: a concurrent report never loads half a file
    return path


def write_report(run: Run, *, standalone: bool = False, other: Run | None = None) -> Path:
    """Write ``report.html`` into the run folder and return its path; ``standalone`` embeds plotly.js
    (one file to mail), else the page loads it from the data folder's ``runs/assets/``. With
    ``other`` (another run), each sample's detail shows the same sample there beside it."""
    import plotly.io as pio

    m = run.manifest
    drawn = [f"<div class='chart'>{pio.to_html(spec, full_html=False, include_plotlyjs=False, validate=False)}</div>"
             for spec in figure_specs(run)]
    stopped = f"<p class='stopped'>Stopped: {html.escape(m['stopped_reason'])}</p>" if m.get("stopped_reason") else ""
    head = {k: m[k] for k in ("run_id", "experiment", "experiment_hash", "dataset_hash", "started_at", "ended_at",
                              "executor", "concurrency", "budget_usd", "cache_hit_ratio", "price_table_version")}
    head.update(m["code_version"])
    t = m["totals"]
    cards = "".join(f"<div class='card'><b>{html.escape(v)}</b><span>{html.escape(k)}</span></div>" for k, v in (
        ("samples", str(t.get("cells", len(run.results)))), ("sent", str(t.get("calls_sent", ""))),
        ("cache hits", str(t.get("cache_hits", ""))), ("errors", str(t.get("errors", ""))),
        ("spent", money(t.get("spent_usd")) + (f" + unpriced: {t['unpriced_calls']} calls" if t.get("unpriced_calls") else "")),
        ("answers cost", money(t.get("answers_cost_usd")) if t.get("answers_cost_usd") is not None else "unknown (unpriced)")))
    path = Path(run.path) / "report.html"
    if standalone:
        script_tag = "<script type='text/javascript'>"
    else:
        asset = plotly_asset(path.parent.parent)
        script_tag = f"<script src='../assets/{asset.name}'></script><script>"
    top = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(m['experiment'])} · {html.escape(m['run_id'])}</title><style>{_STYLE + SAMPLES_STYLE}</style>"
        f"{script_tag}"
    )
    summary = _frame_html(run.summary)
    nojs = ("" if standalone else "<p class='nojs' id='nojs'>The charts load plotly.js from this data folder "
            "(runs/assets); for one file that opens anywhere: <code>python -m cognitionos_kit report "
            f"{html.escape(m['run_id'])} --standalone</code></p><script>if(window.Plotly)"
            "document.getElementById('nojs').remove()</script>")
    body = (
        "</script></head><body>"
        f"<header><h1>Experiment {html.escape(m['experiment'])}</h1><p>{html.escape(m['run_id'])} · "
        f"{html.escape(str(m.get('started_at', '')))}</p></header><main>{stopped}<div class='cards'>{cards}</div>"
        f"<h2>Summary</h2>{summary}<h2>Charts</h2>{nojs}" + "".join(drawn)
        + f"<h2>Samples</h2>{samples_html(run, other, limit=_SAMPLE_ROWS)}<h2>Run</h2>{_table(head)}<h2>Totals</h2>{_table(t)}"
        "<h2>Manifest</h2><details><summary>manifest.json</summary><pre>"
        + html.escape(json.dumps(m, indent=2, default=str)) + "</pre></details></main></body></html>"
    )
    with open(path, "wb") as f:
        private_file(path)  # the user's only (0600), before anything is in it
        f.write(top.encode("utf-8"))
        if standalone:  # plotly.js goes in once, as bytes: no copy of it in a page string
            f.write(_plotlyjs())
        f.write(body.encode("utf-8"))
    return path


def comparison_figure(c: Comparison) -> go.Figure:
    """One panel per score (B - A per paired cell, error bars: its interval), then cost, spend and
    latency (B - A for each cell in both runs)."""
    from plotly.subplots import make_subplots

    t = c.table.copy()
    t["group"] = _label(t)
    d = c.deltas.copy()
    d["group"] = _label(d)
    scores = list(dict.fromkeys(t["score"]))
    cols = [x for x in d.columns if x.endswith("_delta") and x != "ok_delta" and not x.startswith("score_")]
    titles = [f"{x} (B - A)" for x in scores] + [x.removesuffix("_delta") for x in cols]
    fig = make_subplots(rows=1, cols=max(len(titles), 1), subplot_titles=titles)
    for i, score in enumerate(scores, 1):
        g = t[t["score"] == score]
        fig.add_bar(x=g["group"], y=g["diff"], name=score, row=1, col=i, showlegend=False,
                    error_y={"type": "data", "symmetric": False, "array": g["ci_high"] - g["diff"],
                             "arrayminus": g["diff"] - g["ci_low"]},
                    marker_color=["#c2410c" if sig else "#94a3b8" for sig in g["significant"]])
    for i, col in enumerate(cols, len(scores) + 1):
        fig.add_bar(x=d["group"], y=d[col], name=col.removesuffix("_delta"), row=1, col=i, showlegend=False)
    fig.update_layout(title=f"Change from {c.a.run_id} to {c.b.run_id} (B - A)", template=charts.template(), height=460)
    return fig
