"""``run.viewer()``: browse every sample of an experiment run, filter them, and read one in full
(prompt, output, parsed output, scores and the judge's reasons, cost, latency, who answered
and every attempt of its call);
``run.viewer(other=earlier_run)`` puts the same sample of another run beside it.

The records and the filters' rules are ``experiments.samples``'s, shared with the Samples section
of the HTML report, so both show the same thing. Every control is an attribute and ``refresh()``
applies them, so it runs headless too (``viewer.shown`` holds the matching samples).
"""

from __future__ import annotations

import html
import json
import math
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from ..core.display import FONT, MUTED, error_html, money, note_html
from ..core.errors import KitError
from ..experiments.samples import attempt_rows, filter_records, run_records
from .style import LABEL, cell_layout, controls_grid, view_layout

if TYPE_CHECKING:
    from ..experiments.run import Run

__all__ = ["SampleViewer", "sample_card"]

_PANE = ("flex:1;min-width:0;border:1px solid var(--jp-border-color2,#ddd);border-radius:4px;padding:6px 10px;"
         "font-size:13px")
_PRE = "white-space:pre-wrap;word-break:break-word;max-height:320px;overflow:auto;margin:2px 0 8px"


def sample_card(r: dict[str, Any] | None, title: str) -> str:
    """One sample in full, as HTML (None: the other run has no such sample)."""
    if r is None:
        return f"<div style='{_PANE}'><b>{html.escape(title)}</b><p style='{MUTED}'>no such sample in this run</p></div>"

    def row(k: str, v: Any) -> str:
        return f"<tr><th style='text-align:left;padding-right:12px'>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"

    served = f"{r['provider']}/{r['served_model']}"
    if r["substituted"]:
        served += f" (a SUBSTITUTE for {r['model']})"
    if r["cache_hit"]:
        served += " (from the cache)"
    lat = r["latency_ms"]
    rows = [row("sample", r["key"]), row("status", r["status"] + (f": {r['error']}" if r["error"] else "")),
            row("answered by", served), row("cost", money(r["cost_usd"])),
            row("latency", "" if lat is None else f"{lat:,.0f} ms"),
            row("tokens", f"{r['prompt_tokens'] if r['prompt_tokens'] is not None else '?'} in, "
                          f"{r['completion_tokens'] if r['completion_tokens'] is not None else '?'} out")]
    rows += [row(k, v) for k, v in attempt_rows(r)]
    rows += [row(f"score {k}", "none" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}")
             for k, v in r["scores"].items()]
    rows += [row(f"why ({k})", v) for k, v in r["notes"].items()]
    rows += [row(k, v) for k, v in r["fields"].items()]
    parts = [f"<b>{html.escape(title)}</b><table>{''.join(rows)}</table>",
             f"<b>Prompt</b><pre style='{_PRE}'>{html.escape(str(r['prompt'] or ''))}</pre>",
             f"<b>Output</b><pre style='{_PRE}'>{html.escape(str(r['output'] or ''))}</pre>"]
    if r.get("parsed") is not None:
        parsed = json.dumps(r["parsed"], indent=2, default=str, ensure_ascii=False)
        parts.append(f"<b>Parsed</b><pre style='{_PRE}'>{html.escape(parsed)}</pre>")
    return f"<div style='{_PANE}'>{''.join(parts)}</div>"


class SampleViewer(w.VBox):
    """Every sample of ``run`` with filters; the chosen one in full (beside ``other``'s, if given)."""

    def __init__(self, run: Run, other: Run | None = None) -> None:
        data = run_records(run, other)
        self.run_id, self.other_run_id = run.run_id, data.get("other_run_id")
        self.records: list[dict[str, Any]] = data["records"]
        self.pairs: dict[str, dict[str, Any]] | None = data.get("pairs")
        self.shown: list[dict[str, Any]] = []
        values = [v for r in self.records for v in r["scores"].values()
                  if v is not None and not (isinstance(v, float) and math.isnan(v))]
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        hi = hi if hi > lo else lo + 1.0
        self.model = w.Dropdown(options=[("any", "")] + [(m, m) for m in data["models"]], value="",
                                description="Model", style=LABEL, layout=cell_layout())
        self.status = w.Dropdown(options=[("any", "")] + [(s, s) for s in data["statuses"]], value="",
                                 description="Status", style=LABEL, layout=cell_layout())
        self.score = w.Dropdown(options=[("any", "")] + [(s, s) for s in data["scores"]], value="",
                                description="Score", style=LABEL, layout=cell_layout())
        self.score_range = w.FloatRangeSlider(value=(lo, hi), min=lo, max=hi, step=(hi - lo) / 100,
                                              description="Between", style=LABEL, layout=cell_layout())
        self.text = w.Text(placeholder="Find text in prompts, outputs, errors, fields… (Enter)", description="Search",
                           continuous_update=False, style=LABEL, layout=w.Layout(width="100%"))
        self.samples = w.Select(options=[], rows=10, description="Samples", style=LABEL, layout=w.Layout(width="100%"))
        self.count, self.error = w.HTML(), w.HTML()
        self.detail = w.HTML(note_html("Pick a sample above to read it."))
        for control in (self.model, self.status, self.score, self.score_range, self.text):
            control.observe(lambda _: self.refresh(), names="value")
        self.samples.observe(lambda change: self.show(change["new"]), names="value")
        super().__init__([self.text, controls_grid([self.model, self.status, self.score, self.score_range]),
                          self.count, self.samples, self.error, self.detail], layout=view_layout())
        self.add_class("cok-sample-viewer")
        self.refresh()

    def refresh(self) -> list[dict[str, Any]]:
        """Apply the filters; the first match is shown."""
        score = self.score.value or None
        lo, hi = self.score_range.value if score else (None, None)
        try:
            self.shown = filter_records(self.records, model=self.model.value or None, status=self.status.value or None,
                                        score=score, min_score=lo, max_score=hi, text=self.text.value or None)
        except KitError as exc:
            self.error.value = error_html(exc)
            return self.shown
        self.error.value = ""
        self.count.value = f"<div style='{FONT};{MUTED}'>{len(self.shown)} of {len(self.records)} samples</div>"
        self.samples.options = [(self._label(r), r["key"]) for r in self.shown]
        if self.shown:
            self.samples.value = self.shown[0]["key"]
            self.show(self.shown[0]["key"])
        else:
            self.detail.value = note_html("No sample matches: loosen a filter.")
        return self.shown

    def show(self, key: str | None) -> None:
        """Show the sample ``key`` (and the other run's same sample)."""
        r = next((r for r in self.records if r["key"] == key), None)
        if r is None:
            return
        cards = sample_card(r, f"run {self.run_id}")
        if self.pairs is not None:
            cards += sample_card(self.pairs.get(r["key"]), f"run {self.other_run_id}")
        self.detail.value = f"<div style='display:flex;gap:12px;align-items:flex-start;{FONT}'>{cards}</div>"

    @staticmethod
    def _label(r: dict[str, Any]) -> str:
        out = " ".join(str(r["output"] or "").split())
        out = out if len(out) <= 50 else out[:49] + "…"
        scores = " ".join(f"{k}={v:.2g}" for k, v in r["scores"].items()
                          if v is not None and not (isinstance(v, float) and math.isnan(v)))
        flag = "" if r["status"] == "ok" else f" ⚠ {r['status']}"
        sub = " (substitute)" if r["substituted"] else ""
        return f"row {r['row']} · {r['model']}{sub} · {r['template']} · {r['settings']} · #{r['repeat']}{flag} · {scores} · {out}"
