"""``kit.log_browser()``: find a request by its text and read its prompt and answer side by side,
with who answered, its cost and latency, and any attempt's error.

A search box and user/model pickers; the matching requests, newest first; the chosen one in
two columns (the system prompt and messages | the answer and any tool calls) over one line of
accounting, with the call that continues it as a chat. Every control is an attribute and
``refresh()`` is what Enter calls, so it runs headless too.
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from ..core.display import FONT, MUTED, error_html, money, note_html
from ..core.errors import KitError
from .style import LABEL, cell_layout, controls_grid, view_layout

if TYPE_CHECKING:
    import pandas as pd

    from ..kit import Kit

__all__ = ["LogBrowser", "log_browser", "entry_html"]

_PANE = ("border:1px solid var(--jp-border-color2,#ddd);border-radius:4px;padding:6px 10px;"
         "white-space:pre-wrap;word-break:break-word;max-height:420px;overflow:auto;font-size:13px")


def entry_html(entry: Any) -> str:
    """One logged request: prompt side and answer side, then its accounting line."""
    turns = []
    if isinstance(entry.system, str) and entry.system:
        turns.append(f"<div><b>system</b> · {html.escape(entry.system)}</div>")
    for m in json.loads(entry.messages) if isinstance(entry.messages, str) else []:
        text = html.escape(m.get("content") or "")
        extra = "".join(f"<br><span style='{MUTED}'>🔧 {html.escape(c['function']['name'])}"
                        f"({html.escape(c['function']['arguments'][:200])})</span>" for c in m.get("tool_calls") or ())
        extra += "".join(f"<br><span style='{MUTED}'>🖼 {html.escape(str(i))}</span>" for i in m.get("images") or ())
        turns.append(f"<div style='margin-top:4px'><b>{html.escape(m.get('role', '?'))}</b> · {text}{extra}</div>")
    answer = html.escape(entry.answer) if isinstance(entry.answer, str) and entry.answer else ""
    if isinstance(entry.tool_calls, str):
        answer += "".join(f"<div style='{MUTED}'>asks for 🔧 {html.escape(c['name'])}({html.escape(c['arguments'][:200])})</div>"
                          for c in json.loads(entry.tool_calls))
    if not answer:
        answer = f"<span style='{MUTED}'>(no answer)</span>"
    errors = f"<div style='color:#b91c1c;font-size:12px'>⚠ {html.escape(entry.errors)}</div>" \
        if isinstance(entry.errors, str) and entry.errors else ""
    import pandas as pd

    tokens = "" if pd.isna(entry.prompt_tokens) else \
        f"{int(entry.prompt_tokens)}+{int(0 if pd.isna(entry.completion_tokens) else entry.completion_tokens)} tokens · "
    latency = "" if pd.isna(entry.latency_ms) else f"{entry.latency_ms:,.0f} ms · "
    line = (f"{entry.provider}/{entry.model} · {tokens}{money(entry.cost_usd)} · {latency}{entry.status} · "
            f"{entry.attempts} attempt(s) · {entry.request_id}")
    resume = f"kit.chat(continue_from={entry.request_id!r})" if entry.status == "ok" else ""
    return (f"<div class='cok-log-entry' style='{FONT}'>"
            "<div style='display:grid;grid-template-columns:1fr 1fr;gap:10px'>"
            f"<div><div style='{MUTED}'>Prompt</div><div class='cok-log-prompt' style='{_PANE}'>{''.join(turns)}</div></div>"
            f"<div><div style='{MUTED}'>Answer</div><div class='cok-log-answer' style='{_PANE}'>{answer}</div></div></div>"
            f"<div style='{MUTED};margin-top:4px'>{html.escape(line)}</div>{errors}"
            + (f"<div style='{MUTED}'>Continue it: <code>{html.escape(resume)}</code></div>" if resume else "")
            + "</div>")


class LogBrowser(w.VBox):
    """Search the text log; pick a request to read it."""

    def __init__(self, kit: Kit, *, search: str = "", limit: int = 200) -> None:
        self.kit, self.limit = kit, limit
        self.entries: pd.DataFrame | None = None
        self.search = w.Text(value=search, placeholder="Find text in prompts and answers… (Enter)", description="Search",
                             continuous_update=False, style=LABEL, layout=w.Layout(width="100%"))
        self.user = w.Dropdown(description="User", style=LABEL, layout=cell_layout())
        self.model = w.Dropdown(description="Model", style=LABEL, layout=cell_layout())
        self.status = w.Dropdown(options=[("any", ""), ("ok", "ok"), ("failed", "error")], value="",
                                 description="Status", style=LABEL, layout=cell_layout())
        self.requests = w.Select(options=[], rows=8, description="Requests", style=LABEL, layout=w.Layout(width="100%"))
        self.count = w.HTML()
        self.error = w.HTML()
        self.detail = w.HTML(note_html("Pick a request above to read it."))
        self.search.observe(lambda _: self.refresh(), names="value")
        for picker in (self.user, self.model, self.status):
            picker.observe(lambda _: self.refresh(), names="value")
        self.requests.observe(lambda change: self.show(change["new"]), names="value")
        super().__init__([self.search, controls_grid([self.user, self.model, self.status]), self.count, self.requests,
                          self.error, self.detail], layout=view_layout())
        self.add_class("cok-log-browser")
        self._fill_pickers()
        self.refresh()

    def _fill_pickers(self) -> None:
        everything = self.kit.log(limit=5000)
        users = sorted({u for u in everything.user_id if isinstance(u, str)})
        models = sorted({m for m in everything.model if isinstance(m, str)})
        self.user.options = [("anyone", "")] + [(u, u) for u in users]
        self.model.options = [("any", "")] + [(m, m) for m in models]

    def refresh(self) -> pd.DataFrame | None:
        """Search again with the current text and pickers; the newest match is shown."""
        filters = {k: v for k, v in (("user_id", self.user.value), ("model", self.model.value),
                                     ("status", self.status.value)) if v}
        try:
            df = self.kit.log(self.search.value.strip() or None, limit=self.limit, **filters)
        except KitError as exc:
            self.error.value = error_html(exc)
            return None
        self.error.value = ""
        self.entries = df
        more = f" (the newest {self.limit})" if len(df) == self.limit else ""
        self.count.value = f"<div style='{FONT};{MUTED}'>{len(df)} request(s){more}</div>"
        self.requests.options = [(self._label(r), r.request_id) for r in df.itertuples()]
        if len(df):
            self.requests.value = df.request_id.iloc[0]
            self.show(df.request_id.iloc[0])
        else:
            self.detail.value = note_html("Nothing logged matches: try other words or pickers.")
        return df

    @staticmethod
    def _label(r: Any) -> str:
        prompt = " ".join(str(r.prompt or "").split())
        prompt = prompt if len(prompt) <= 60 else prompt[:59] + "…"
        flag = "" if r.status == "ok" else " ⚠"
        return f"{r.ts:%Y-%m-%d %H:%M:%S} · {r.model} · {money(r.cost_usd)}{flag} · {prompt}"

    def show(self, request_id: str | None) -> None:
        """Show one request's prompt and answer."""
        if self.entries is None or request_id is None:
            return
        rows = self.entries[self.entries.request_id == request_id]
        if len(rows):
            self.detail.value = entry_html(rows.iloc[0])


def log_browser(kit: Kit, *, search: str = "", limit: int = 200) -> LogBrowser:
    return LogBrowser(kit, search=search, limit=limit)
