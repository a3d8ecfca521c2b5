"""Widget styling shared by the notebook views (playground, memory explorer).

Plain HTML helpers that reprs use too (the font, error and note lines) are in ``core.display``;
this module holds what only ipywidgets need: label width, grid cells, the view's outer box.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ipywidgets as w

__all__ = ["LABEL", "INDENT", "cell_layout", "controls_grid", "view_layout"]

LABEL = {"description_width": "90px"}  # every control's label: the inputs line up in a column
INDENT = "98px"  # label width + its margin: lines buttons and answers up with the inputs


def cell_layout() -> Any:
    """A control that fills one column of ``controls_grid`` (a new Layout each: widgets must not share one)."""
    return w.Layout(width="auto", min_width="0")


def controls_grid(children: Sequence[Any]) -> Any:
    """Pickers three to a row, each column as wide as the others."""
    return w.GridBox(list(children), layout=w.Layout(grid_template_columns="repeat(3, minmax(0, 1fr))",
                                                     grid_gap="2px 16px", align_items="flex-start"))


def view_layout() -> Any:
    """The outer box of a view: the cell's width, at most 1100 px."""
    return w.Layout(width="100%", max_width="1100px", grid_gap="4px")
