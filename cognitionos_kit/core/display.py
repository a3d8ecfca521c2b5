"""Display helpers shared by every view, report and repr (the core never imports a notebook view).

``AttemptList``: the attempts of one call. ``UsageSummary``: calls, failures, spend and latency of
a ledger DataFrame, overall and per provider. ``html_table``/``text_table`` render any rows;
``hits_table`` the hits of a memory search. ``footer_html``, ``error_html`` and ``note_html`` are
the small HTML lines every view shows (built on ``Completion.footer()`` for the cost line).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from ..memory.hit import MemoryHit
    from .types import Completion

__all__ = [
    "AttemptList", "UsageSummary", "html_table", "text_table", "hits_table", "HIT_HEADERS", "shorten",
    "footer_html", "error_html", "note_html", "plain_text", "FONT", "MUTED", "money", "log_ref", "kit_html", "kit_text",
    "missing",
]  # fmt: skip

FONT = "font-family:var(--jp-content-font-family,system-ui,sans-serif)"  # the notebook's own font
_BOX = f"{FONT};font-size:13px"
_TD = "padding:2px 10px;text-align:{align};border-bottom:1px solid #eee"
_FAILED = "color:#b42318"


def missing(v: Any) -> bool:
    """None, NaN, pandas' NA or NaT: a value a view shows as missing (without importing pandas)."""
    return v is None or (isinstance(v, float) and math.isnan(v)) or type(v).__name__ in ("NAType", "NaTType")


def _cell(v: Any) -> str:
    return "—" if missing(v) else str(v)


def html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, row_styles: Sequence[str] | None = None) -> str:
    """A small HTML table; numbers right-aligned, None shown as a dash."""
    def td(v: Any, tag: str = "td") -> str:
        align = "right" if isinstance(v, (int, float)) and not isinstance(v, bool) else "left"
        return f"<{tag} style='{_TD.format(align=align)}'>{html.escape(_cell(v))}</{tag}>"

    head = "".join(f"<th style='{_TD.format(align='left')};color:#555'>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        f"<tr style='{(row_styles or [''] * len(rows))[i]}'>" + "".join(td(v) for v in r) + "</tr>" for i, r in enumerate(rows)
    )
    return f"<table style='border-collapse:collapse;margin:4px 0'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "  ") -> str:
    """The same table as aligned plain text."""
    cells = [list(headers)] + [[_cell(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join(indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def shorten(text: str, n: int) -> str:
    """``text`` on one line, cut to ``n`` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def money(usd: Any) -> str:
    """The one money format of every view, table and card: ``$0.000087`` (six decimals below a
    dollar, where LLM costs live), ``$1,234.50`` from a dollar up, ``n/a`` when unknown."""
    if missing(usd):
        return "n/a"
    try:
        v = float(usd)
    except (TypeError, ValueError):
        return "n/a"
    if math.isnan(v):
        return "n/a"
    return f"${v:,.2f}" if abs(v) >= 1 else f"${v:.6f}"


# --- small HTML lines every view shows ------------------------------------------------------
_MUTED = "color:var(--jp-content-font-color2,#666)"
MUTED = f"{_MUTED};font-size:12px"  # a secondary line (labels, accounting)
_SUBSTITUTE = "color:#b45309;font-weight:600"


def footer_html(c: Completion, *, shown: tuple[str, str] | None = None) -> str:
    """``c.footer()`` as HTML: who answered · tokens · cost · latency (· SUBSTITUTE for ... in orange),
    then the fallback path when it took more than one attempt. The line wraps between its parts,
    never inside one. ``shown=(provider, model)`` leaves out who answered when a title already says it."""
    line = c.footer()
    if shown == (c.provider, c.model):
        line = line.removeprefix(f"{c.served} · ")
    note = c.substitute_note

    def part(p: str) -> str:
        if p == note:
            return f"<span class='cok-substitute' style='{_SUBSTITUTE};white-space:nowrap'>⚠ {html.escape(p)}</span>"
        if c.cache_hit and p.startswith("CACHED answer"):
            return f"<span class='cok-cached' style='color:#1f5fa8;font-weight:600;white-space:nowrap'>{html.escape(p)}</span>"
        return f"<span style='white-space:nowrap'>{html.escape(p)}</span>"

    markup = " · ".join(part(p) for p in line.split(" · "))
    markup += log_ref(c.request_id)
    if len(c.attempts) > 1:
        path = " → ".join(f"{a.provider} ({a.error_type or a.status})" for a in c.attempts)
        markup += f"<br><span style='color:#a15c00'>fallback: {html.escape(path)}</span>"
    return f"<div class='cok-footer' style='{FONT};{_MUTED};font-size:12px;line-height:1.4'>{markup}</div>"


def kit_text(st: Mapping[str, Any]) -> str:
    """A Kit's repr, from its ``status()``."""
    mode = " simulation mode" if st["simulation_mode"] else ""
    project = f", project={st['project']!r}" if st.get("project") else ""
    return f"Kit(home={st['home']!r}{project}, chain={st['chain']}{mode})"


def kit_html(st: Mapping[str, Any]) -> str:
    """A Kit's notebook card, from its ``status()``."""
    badge = "<b style='color:#a15c00'>simulation mode</b>" if st["simulation_mode"] else "<b>live</b>"
    project = f" · project: <code>{html.escape(st['project'])}</code>" if st.get("project") else ""
    return (f"<div><code>Kit</code> {badge} · chain: {html.escape(' → '.join(st['chain']))} · "
            f"home: <code>{html.escape(st['home'])}</code>{project}</div>")


def log_ref(request_id: str) -> str:
    """Where a card's request is in the text log: its id, with how to open it on hover."""
    tip = f"kit.log(request_id='{request_id}'), or search for it in kit.log_browser()"
    return (f" · <span class='cok-log-ref' title=\"{html.escape(tip)}\" style='white-space:nowrap'>"
            f"log {html.escape(request_id[:12])}…</span>")


def error_html(exc: BaseException) -> str:
    """One readable line for an error (its type and the first line of its message), never a traceback."""
    first, *rest = (str(exc) or type(exc).__name__).splitlines()
    more = ""
    if rest:  # e.g. every failed attempt of an AllProvidersFailedError, kept on the same line
        more = f" <span style='color:#888'>({html.escape('; '.join(r.strip() for r in rest))})</span>"
    return (
        f"<div class='cok-error' style='{FONT};color:#b00020;font-size:13px;line-height:1.4'>"
        f"<b>{html.escape(type(exc).__name__)}</b>: {html.escape(first)}{more}</div>"
    )


def note_html(text: str) -> str:
    """A muted one-line note (an empty result, a hint)."""
    return f"<div style='{FONT};{_MUTED};font-size:13px'>{html.escape(text)}</div>"


def plain_text(markup: str) -> str:
    """The text of one of these small HTML snippets: ``<br>`` kept as line breaks, tags dropped
    (the log reference too: it is a pointer for the eye, not part of the line)."""
    markup = re.sub(r" · <span class='cok-log-ref'[^>]*>[^<]*</span>", "", markup)
    return html.unescape(re.sub(r"<[^>]+>", "", markup.replace("<br>", "\n")))


# --- the hits of a memory search -------------------------------------------------------------
HIT_HEADERS = ("rank", "content", "score", "similarity", "decay", "boost", "type", "scope")


def hits_table(hits: Iterable[MemoryHit], *, text: bool = False, width: int | None = None) -> str:
    """The hits as one table: rank, content (cut to ``width`` characters: 80 in HTML, 48 as text),
    score and its three terms (similarity, decay, boost) rounded to 3 places, type, scope.
    HTML by default; ``text=True`` gives the aligned plain-text table."""
    n = width or (48 if text else 80)
    rows = [(h.rank, shorten(h.content, n), round(h.score, 3), round(h.similarity, 3), round(h.decay, 3),
             round(h.boost, 3), h.memory_type, h.scope) for h in hits]
    return text_table(HIT_HEADERS, rows) if text else html_table(HIT_HEADERS, rows)


# --- the attempts of one call ----------------------------------------------------------------
class AttemptList(list):
    """A list of ``Attempt``s that renders as a table: provider, model, status, error, latency."""

    HEADERS = ("#", "provider", "model", "status", "error", "latency ms")

    def _rows(self) -> list[tuple]:
        return [(a.number, a.provider, a.model, a.status, a.error_type, round(a.latency_ms, 1)) for a in self]

    def __str__(self) -> str:
        if not self:
            return "no attempts"
        return f"{len(self)} attempt(s): {' -> '.join(a.provider for a in self)}\n" + text_table(self.HEADERS, self._rows())

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # IPython's plain-text repr
        p.text("[...]" if cycle else str(self))

    def _repr_html_(self) -> str:
        styles = ["" if a.status == "ok" else _FAILED for a in self]
        return f"<div style='{_BOX}'>{html_table(self.HEADERS, self._rows(), row_styles=styles)}</div>"

    def to_frame(self) -> pd.DataFrame:
        """The attempts as a DataFrame (one row each)."""
        import pandas as pd

        return pd.DataFrame([dict(a.__dict__) for a in self])


# --- a ledger summary --------------------------------------------------------------------------
def _quantile(s: pd.Series, q: float) -> float | None:
    return float(s.quantile(q)) if len(s) else None


class UsageSummary:
    """Calls, attempts, failures, spend and p50/p95 latency of ledger rows, overall and per provider.

    ``calls`` counts requests (distinct ``request_id``), ``attempts`` ledger rows, ``failures``
    failed attempts and ``failed_calls`` requests that never succeeded. Spend ignores unknown costs.
    """

    def __init__(self, df: pd.DataFrame, title: str = "Usage") -> None:
        import pandas as pd

        self.title = title
        ok = df[df["status"] == "ok"] if len(df) else df
        self.calls = int(df["request_id"].nunique()) if len(df) else 0
        self.attempts = len(df)
        self.failures = int((df["status"] != "ok").sum()) if len(df) else 0
        self.failed_calls = self.calls - (int(ok["request_id"].nunique()) if len(ok) else 0)
        self.spend_usd = float(df["cost_usd"].sum()) if len(df) else 0.0
        self.unpriced_calls = int(ok["cost_usd"].isna().sum()) if len(ok) else 0
        self.tokens = int(ok["total_tokens"].astype("float64").fillna(0).sum()) if len(ok) else 0
        # answers that did not come from what was asked (another vendor or model, the simulator)
        sub = ok["substituted"] if len(ok) and "substituted" in ok else None
        self.substituted = int(sub.eq(True).sum()) if sub is not None else 0
        est = ok["tokens_estimated"] if len(ok) and "tokens_estimated" in ok else None
        self.estimated = int(est.eq(True).sum()) if est is not None else 0
        lat = ok["latency_ms"].dropna().astype("float64") if len(ok) else pd.Series(dtype="float64")
        self.p50_ms, self.p95_ms = _quantile(lat, 0.5), _quantile(lat, 0.95)
        self.first = df["ts"].min() if len(df) else None
        self.last = df["ts"].max() if len(df) else None
        rows = []
        for provider, g in (df.groupby("provider", sort=True) if len(df) else []):
            gl = g.loc[g["status"] == "ok", "latency_ms"].dropna().astype("float64")
            gs = g.loc[g["status"] == "ok", "substituted"] if "substituted" in g else None
            rows.append({
                "provider": provider, "answered": int((g["status"] == "ok").sum()), "attempts": len(g),
                "failures": int((g["status"] != "ok").sum()),
                "substitutes": int(gs.eq(True).sum()) if gs is not None else 0,
                "spend_usd": float(g["cost_usd"].sum()),
                "p50_ms": _quantile(gl, 0.5), "p95_ms": _quantile(gl, 0.95),
            })
        cols = ["provider", "answered", "attempts", "failures", "substitutes", "spend_usd", "p50_ms", "p95_ms"]
        self.by_provider = pd.DataFrame(rows, columns=cols)

    @classmethod
    def from_totals(cls, totals: Mapping[str, Any], by_provider: Sequence[Mapping[str, Any]],
                    title: str = "Usage") -> UsageSummary:
        """A summary of counts made elsewhere (in DuckDB, ``storage.aggregates``): ``totals`` has
        calls, attempts, failures, answered (requests with an answer), spend_usd, unpriced, tokens,
        substituted, estimated, p50_ms, p95_ms, first and last; ``by_provider`` the rows of
        ``by_provider``. An empty ``totals``: no calls."""
        import pandas as pd

        self = cls.__new__(cls)
        self.title = title
        get = lambda k: totals.get(k) or 0  # noqa: E731
        self.calls, self.attempts, self.failures = int(get("calls")), int(get("attempts")), int(get("failures"))
        self.failed_calls = max(0, self.calls - int(get("answered")))
        self.spend_usd, self.unpriced_calls, self.tokens = float(get("spend_usd")), int(get("unpriced")), int(get("tokens"))
        self.substituted, self.estimated = int(get("substituted")), int(get("estimated"))
        self.p50_ms, self.p95_ms = totals.get("p50_ms"), totals.get("p95_ms")
        self.first, self.last = totals.get("first"), totals.get("last")
        cols = ["provider", "answered", "attempts", "failures", "substitutes", "spend_usd", "p50_ms", "p95_ms"]
        self.by_provider = pd.DataFrame(list(by_provider), columns=cols)
        return self

    def to_dict(self) -> dict[str, Any]:
        keys = ("calls", "attempts", "failures", "failed_calls", "substituted", "estimated", "spend_usd", "unpriced_calls",
                "tokens", "p50_ms", "p95_ms")
        return {k: getattr(self, k) for k in keys}

    def headline(self) -> str:
        """One line: calls, attempts, failures, spend, tokens, latency."""
        if not self.attempts:
            return f"{self.title}: no calls recorded"
        ms = lambda v: "—" if v is None else f"{v:,.0f} ms" if v >= 10 else f"{v:.1f} ms"  # noqa: E731
        unpriced = f" (+{self.unpriced_calls} unpriced)" if self.unpriced_calls else ""
        failed = f", {self.failed_calls} never answered" if self.failed_calls else ""
        sub = f", {self.substituted} answered by a SUBSTITUTE" if self.substituted else ""
        est = f" ({self.estimated} estimated)" if self.estimated else ""
        return (f"{self.title}: {self.calls} calls ({self.attempts} attempts, {self.failures} failed{failed}{sub}) · "
                f"${self.spend_usd:.6f}{unpriced} · {self.tokens:,} tokens{est} · "
                f"latency p50 {ms(self.p50_ms)} / p95 {ms(self.p95_ms)}")

    def _rows(self) -> list[tuple]:
        r1 = lambda v: None if missing(v) else round(v, 1)  # noqa: E731
        return [(r.provider, r.answered, r.attempts, r.failures, r.substitutes, f"${r.spend_usd:.6f}", r1(r.p50_ms),
                 r1(r.p95_ms)) for r in self.by_provider.itertuples()]

    _HEADERS = ("provider", "answered", "attempts", "failed", "substitutes", "spend", "p50 ms", "p95 ms")

    def __repr__(self) -> str:
        if not self.attempts:
            return self.headline()
        return self.headline() + "\n" + text_table(self._HEADERS, self._rows())

    def to_html(self) -> str:
        """The headline and the per-provider table as HTML (what a notebook shows)."""
        if not self.attempts:
            return f"<div style='{_BOX};color:#666'>{html.escape(self.headline())}</div>"
        line = html.escape(self.headline())
        if self.substituted:  # unmistakable: the words in orange
            words = html.escape(f"{self.substituted} answered by a SUBSTITUTE")
            line = line.replace(words, f"<b style='color:#b45309'>{words}</b>")
        return (f"<div style='{_BOX}'><div style='margin-bottom:2px'>{line}</div>"
                f"{html_table(self._HEADERS, self._rows())}</div>")

    def _repr_html_(self) -> str:
        return self.to_html()
