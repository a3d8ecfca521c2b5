"""``FigureView``: a plotly figure inside an ``ipywidgets.Output``, for the live views.

A plotly ``FigureWidget`` is an anywidget model whose front-end code does not come back after a
browser reload ("[anywidget] Failed to initialize model": empty axes). An Output widget's state is
its outputs, kept by the kernel: after a reload JupyterLab restores it and draws the figure with
its own plotly renderer (the ``application/vnd.plotly.v1+json`` mime type, as the notebooks'
charts are drawn), sized to the cell. The figure is set by assigning the ``outputs`` trait, which
is safe from the dashboard's polling thread (no output capture involved).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["FigureView"]

_MIME = "application/vnd.plotly.v1+json"


class FigureView(widgets.Output):
    """Shows ``figure`` (a ``go.Figure``); ``show(fig)`` replaces it."""

    def __init__(self, fig: go.Figure | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.figure: go.Figure | None = None
        self.add_class("cok-figure")
        if fig is not None:
            self.show(fig)

    def show(self, fig: go.Figure) -> None:
        import plotly.io as pio

        self.figure = fig
        spec = json.loads(pio.to_json(fig, validate=False))  # plotly's encoder: numpy, datetimes
        title = (fig.layout.title.text or "chart") if fig.layout.title else "chart"
        self.outputs = ({"output_type": "display_data", "metadata": {},
                         "data": {_MIME: {**spec, "config": {"displaylogo": False, "responsive": True}},
                                  "text/plain": f"<plotly figure: {title}>"}},)

    @property
    def data(self) -> tuple[Any, ...]:
        """The figure's traces (empty before the first ``show``)."""
        return tuple(self.figure.data) if self.figure is not None else ()
