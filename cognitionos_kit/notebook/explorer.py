"""``kit.memory.explorer()``: search a user's memories and see why each hit ranks where it does.

A query box, user and type pickers, ``k``; the hits as a table with the score breakdown and a
stacked bar chart of the weighted parts (similarity, decay, boost add up to the score). Every
control is an attribute and ``.search()`` is what the button and Enter call, so it runs headless.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ipywidgets as w

from ..core.display import FONT, error_html, hits_table, note_html, shorten
from ..core.errors import InvalidRequestError
from ..memory.hit import MemoryHit
from ..memory.index import MEMORY_TYPES
from .figview import FigureView
from .style import LABEL, cell_layout, controls_grid, view_layout

if TYPE_CHECKING:
    from ..memory.memory import Memory

__all__ = ["MemoryExplorer", "explorer", "hits_html"]

PARTS = ("similarity", "decay", "boost")
_COLORS = {"similarity": "#4c78a8", "decay": "#f58518", "boost": "#54a24b"}
_LABEL_CHARS = 28  # characters of content in a bar's label


def hits_html(hits: list[MemoryHit]) -> str:
    """The hits as the explorer shows them: the shared hits table, or a note when there are none."""
    if not hits:
        return note_html("No memories match: try another query, user or type.")
    return f"<div style='{FONT}'>{hits_table(hits)}</div>"


class MemoryExplorer(w.VBox):
    """Query, user, type and k pickers, Search; the hits as a table and a score-breakdown chart."""

    def __init__(self, memory: Memory, *, user_id: str | None = None, k: int = 5, query: str = "",
                 now: Any = None) -> None:
        self.memory = memory
        self.now = now  # the clock decay is measured against (the caller's, e.g. a notebook's fixed NOW)
        self.hits: list[MemoryHit] = []
        self.query = w.Text(value=query, placeholder="Search memories… (Enter)", description="Query",
                            continuous_update=False, style=LABEL, layout=w.Layout(width="100%"))
        self.user = w.Dropdown(description="User", style=LABEL, layout=cell_layout())
        self.k = w.IntSlider(value=max(1, min(int(k), 20)), min=1, max=20, description="k", style=LABEL, layout=cell_layout())
        self.memory_type = w.Dropdown(options=[("any", "")] + [(t, t) for t in MEMORY_TYPES], value="",
                                      description="Type", style=LABEL, layout=cell_layout())
        self.search_button = w.Button(description="Search", button_style="primary", layout=w.Layout(width="120px"))
        self.error = w.HTML()
        self.table = w.HTML(note_html("Type a query and press Enter or Search."))
        self.chart = FigureView()
        self._draw()
        self.refresh_users(user_id)

        self.search_button.on_click(lambda _: self.search())
        self.query.observe(lambda _: self.search(), names="value")  # Enter (continuous_update=False)

        controls = controls_grid([self.user, self.memory_type, self.k])
        super().__init__([self.query, controls, self.search_button, self.error, self.table, self.chart],
                         layout=view_layout())
        self.add_class("cok-memory-explorer")

    def __repr__(self) -> str:  # the text a page shows where the widget cannot be drawn
        return (f"MemoryExplorer(user={self.user.value!r}, {len(self.hits)} hits): a live widget; if it is not drawn, "
                "its kernel has stopped or restarted: run the cell again")

    def refresh_users(self, user_id: str | None = None) -> None:
        """Fill the user picker from the memory's own listing (plus ``user_id``), keeping the choice."""
        keep = user_id or self.user.value
        try:
            users = sorted({str(u) for u in self.memory.frame()["user_id"]})
        except Exception as exc:  # an unreadable store is shown, not raised
            users, self.error.value = [], error_html(exc)
        if keep and keep not in users:
            users.append(keep)
        self.user.options = users
        self.user.value = keep if keep else (users[0] if users else None)

    def search(self) -> list[MemoryHit]:
        """Retrieve the hits for the query and draw them; errors show as one line in ``.error``."""
        self.error.value = ""
        try:
            if not self.query.value.strip():
                raise InvalidRequestError("query is empty: type what to search for")
            if not self.user.value:
                raise InvalidRequestError("no user picked: store a memory first or pass user_id=")
            hits = self.memory.retrieve(self.user.value, self.query.value, int(self.k.value),
                                        memory_type=self.memory_type.value or None, now=self.now)
        except Exception as exc:  # a widget never dumps a traceback
            self.error.value = error_html(exc)
            return []
        self.hits = list(hits)
        self.table.value = hits_html(self.hits)
        self._draw()
        return self.hits

    def _draw(self) -> None:
        import plotly.graph_objects as go

        from ..charts import legend_margin, template

        wts = self.memory.ranking.weights
        labels = [f"#{h.rank} {shorten(h.content, _LABEL_CHARS)}" for h in self.hits]
        fig = go.Figure(layout=dict(
            barmode="relative", template=template(), height=150 + 28 * max(len(self.hits), 1),
            title=dict(text="Score = weighted similarity + decay + boost", font_size=13),
            yaxis=dict(autorange="reversed", automargin=True), xaxis_title="score",
            # under the axis title, never over the first bar
            margin=dict(l=10, r=10, t=40, b=legend_margin(len(PARTS)))))
        for part in PARTS:
            weight = getattr(wts, part)
            fig.add_bar(name=part, orientation="h", marker_color=_COLORS[part], y=labels,
                        x=[weight * getattr(h, part) for h in self.hits], customdata=[getattr(h, part) for h in self.hits],
                        hovertemplate=f"%{{y}}<br>{part}: %{{customdata:.3f}} × {weight:g} = %{{x:.3f}}<extra></extra>")
        self.chart.show(fig)


def explorer(memory: Memory, *, user_id: str | None = None, k: int = 5, query: str = "",
             now: Any = None) -> MemoryExplorer:
    """Build a memory explorer; display it as a cell's last expression, or call ``.search()``.
    ``now``: the time decay is measured against (default: the clock), as ``retrieve(now=...)``."""
    return MemoryExplorer(memory, user_id=user_id, k=k, query=query, now=now)
