"""The report's Samples section: every sample in a table, filters (model, status, score range,
text) and a detail pane with everything about the one clicked (every attempt of its call too),
beside the same sample of another run when the report compares two. Plain HTML and a few lines
of script, no library, no CDN: the page works offline, as the rest of the report does. The
records and the filters' rules are ``samples.py``'s, as in the notebook viewer."""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any

import orjson

from ..core.display import money
from .samples import attempt_rows, record_text, run_records

if TYPE_CHECKING:
    from .run import Run

__all__ = ["samples_html"]

_OUT_CHARS = 400

_SCRIPT = """
(function () {
  var data = JSON.parse(document.getElementById('kit-samples-data').textContent);
  var rows = Array.prototype.slice.call(document.querySelectorAll('#kit-samples tbody tr'));
  function $(id) { return document.getElementById(id); }
  function esc(x) {
    return String(x === null || x === undefined ? '' : x).replace(/[&<>"']/g, function (c) {
      return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c]; });
  }
  function apply() {
    var m = $('kit-f-model').value, s = $('kit-f-status').value, sc = $('kit-f-score').value;
    var lo = parseFloat($('kit-f-min').value), hi = parseFloat($('kit-f-max').value);
    var t = $('kit-f-text').value.trim().toLowerCase(), n = 0;
    rows.forEach(function (tr, i) {
      var r = data.records[i], ok = (!m || r.model === m) && (!s || r.status === s);
      if (ok && sc) {
        var v = r.scores[sc], missing = v === null || v === undefined;
        if (!isNaN(lo)) ok = !missing && v >= lo;
        if (ok && !isNaN(hi)) ok = !missing && v <= hi;
      }
      if (ok && t) ok = r.text.indexOf(t) >= 0;
      tr.hidden = !ok;
      if (ok) n += 1;
    });
    $('kit-f-count').textContent = n + ' of ' + rows.length + ' samples';
  }
  function card(r, title) {
    if (!r) return "<div class='kit-card'><h3>" + esc(title) + "</h3><p>no such sample in this run</p></div>";
    var kv = function (k, v) { return '<' + 'tr><th>' + esc(k) + '</th><td>' + esc(v) + '</td></tr>'; };
    var out = "<div class='kit-card'><h3>" + esc(title) + '</h3><table>';
    out += kv('sample', r.key) + kv('status', r.status + (r.error ? ': ' + r.error : ''));
    out += kv('answered by', r.provider + '/' + r.served_model + (r.substituted ? ' (a SUBSTITUTE for ' + r.model + ')' : '')
              + (r.cache_hit ? ' (from the cache)' : ''));
    out += kv('cost', r.cost_text) + kv('latency', r.latency_ms === null ? '' : Math.round(r.latency_ms) + ' ms');
    out += kv('tokens', (r.prompt_tokens === null ? '?' : r.prompt_tokens) + ' in, '
              + (r.completion_tokens === null ? '?' : r.completion_tokens) + ' out');
    (r.attempt_rows || []).forEach(function (p) { out += kv(p[0], p[1]); });
    Object.keys(r.scores).forEach(function (k) { out += kv('score ' + k, r.scores[k] === null ? 'none' : r.scores[k]); });
    Object.keys(r.notes).forEach(function (k) { out += kv('why (' + k + ')', r.notes[k]); });
    Object.keys(r.fields).forEach(function (k) { out += kv(k, r.fields[k]); });
    out += '</table><h4>Prompt</h4><pre>' + esc(r.prompt) + '</pre><h4>Output</h4><pre>' + esc(r.output) + '</pre>';
    if (r.parsed !== null && r.parsed !== undefined) {
      out += '<h4>Parsed</h4><pre>' + esc(JSON.stringify(r.parsed, null, 2)) + '</pre>';
    }
    return out + '</div>';
  }
  function show(i) {
    rows.forEach(function (tr) { tr.classList.remove('kit-picked'); });
    rows[i].classList.add('kit-picked');
    var r = data.records[i], html = card(r, 'run ' + data.run_id);
    if (data.pairs) html += card(data.pairs[r.key], 'run ' + data.other_run_id);
    $('kit-sample-detail').innerHTML = html;
  }
  rows.forEach(function (tr, i) { tr.addEventListener('click', function () { show(i); }); });
  ['kit-f-model', 'kit-f-status', 'kit-f-score', 'kit-f-min', 'kit-f-max', 'kit-f-text'].forEach(function (id) {
    $(id).addEventListener('input', apply); $(id).addEventListener('change', apply); });
  apply();
})();
"""

STYLE = """
#kit-sample-filters{display:flex;flex-wrap:wrap;gap:.5em;align-items:center;margin:.5em 0}
#kit-sample-filters input[type=number]{width:5em}
#kit-samples tbody tr{cursor:pointer} #kit-samples tbody tr.kit-picked{outline:2px solid #4c78a8}
#kit-sample-detail{display:flex;gap:1em;align-items:flex-start}
.kit-card{flex:1;min-width:0;border:1px solid #ddd;border-radius:6px;padding:.5em 1em}
.kit-card pre{white-space:pre-wrap;word-break:break-word;background:#f6f6f6;padding:.5em}
"""


def _options(name: str, values: list[str], label: str) -> str:
    opts = "".join(f"<option value='{html.escape(v)}'>{html.escape(v)}</option>" for v in values)
    return f"<label>{label} <select id='kit-f-{name}'><option value=''>all</option>{opts}</select></label>"


def samples_html(run: Run, other: Run | None = None, *, limit: int = 500) -> str:
    """The Samples section (the first ``limit`` samples; results.parquet has them all)."""
    data = run_records(run, other, limit=limit)  # the page shows these: only these are made into records
    records = data["records"]
    for r in [*records, *data.get("pairs", {}).values()]:
        if "cost_text" not in r:  # one sample of the other run may pair with several here
            r["text"] = record_text(r)
            r["cost_text"] = money(r.pop("cost_usd"))  # shown as money everywhere, never 2.7e-05
            r["attempt_rows"] = attempt_rows(r)  # the lines the page shows, not the attempts' raw fields
            r.pop("attempts")
    fields = list(dict.fromkeys(k for r in records for k in r["fields"]))
    data["records"] = records
    if "pairs" in data:  # only the shown samples' pairs travel in the page
        data["pairs"] = {r["key"]: data["pairs"][r["key"]] for r in records if r["key"] in data["pairs"]}
    scores = data["scores"]
    filters = (
        "<div id='kit-sample-filters'>"
        + _options("model", data["models"], "model") + _options("status", data["statuses"], "status")
        + _options("score", scores, "score")
        + "<label>from <input id='kit-f-min' type='number' step='any'></label>"
        + "<label>to <input id='kit-f-max' type='number' step='any'></label>"
        + "<label>text <input id='kit-f-text' type='search' placeholder='prompt, output, error…'></label>"
        + "<span id='kit-f-count'></span></div>"
    )
    head = "".join(f"<th>{html.escape(c)}</th>" for c in
                   [*fields, "template", "model", "settings", "repeat", "status", "output",
                    *(f"score_{s}" for s in scores), "cost_usd", "latency_ms"])
    body = "".join(_row(r, fields, scores) for r in records)
    more = (f"<p>The first {limit} of {len(run.results)} samples; all are in results.parquet.</p>"
            if len(run.results) > limit else "")
    compared = (f"<p>Beside each sample: the same sample in run {html.escape(str(other.run_id))}.</p>"
                if other is not None else "")
    payload = _json(data).replace("</", "<\\/")
    return (f"{more}{compared}<p>Click a sample to read all of it.</p>{filters}"
            f"<div style='overflow-x:auto'><table id='kit-samples'><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>"
            f"<div id='kit-sample-detail'></div>"
            f"<script type='application/json' id='kit-samples-data'>{payload}</script><script>{_SCRIPT}</script>")


def _json(data: dict[str, Any]) -> str:
    """``json.dumps(data, ensure_ascii=False, default=str)``, by orjson where it can (a fifth of the
    report's time at the end of a thousand-cell run went to the standard encoder)."""
    try:
        return orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME).decode()
    except (orjson.JSONEncodeError, TypeError):  # e.g. a lone surrogate in a dataset field
        return json.dumps(data, ensure_ascii=False, default=str)


def _row(r: dict[str, Any], fields: list[str], scores: list[str]) -> str:
    text = "" if r["output"] is None else str(r["output"])
    cut = html.escape(text[:_OUT_CHARS] + ("…" if len(text) > _OUT_CHARS else ""))
    sub = " <b>(substitute)</b>" if r["substituted"] else ""
    cells = [f"<td>{html.escape(str(r['fields'].get(k, '')))}</td>" for k in fields]
    cells += [f"<td>{html.escape(str(r[k]))}</td>" for k in ("template", "model", "settings", "repeat")]
    cells.append(f"<td>{html.escape(str(r['status']))}{sub}</td><td class='out'>{cut}</td>")
    for s in scores:
        v = r["scores"].get(s)
        cells.append(f"<td class='num'>{'' if v is None else f'{v:,.3g}'}</td>")
    lat = r["latency_ms"]
    cells.append(f"<td class='num'>{r['cost_text']}</td><td class='num'>{'' if lat is None else f'{lat:,.0f}'}</td>")
    return "<tr>" + "".join(cells) + "</tr>"
