"""The memory explorer widget, driven headless: search, table, chart, user isolation, errors."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("plotly")

from cognitionos_kit.notebook.explorer import MemoryExplorer  # noqa: E402

ADA = [
    "DuckDB is an embedded analytical database that runs inside the Python process.",
    "The cat sleeps on the windowsill every afternoon.",
    "Bake the bread at 220 degrees for thirty minutes.",
]
BOB = ["Bob's favourite hiking trail climbs the north ridge of the mountain.", "Bob drinks green tea in the morning."]


@pytest.fixture
def ex(kit) -> MemoryExplorer:
    kit.memory.store_many("ada", ADA)
    kit.memory.store_many("bob", BOB)
    return kit.memory.explorer(user_id="ada", k=3)


def _rows(table_html: str) -> list[list[str]]:
    body = table_html.split("<tbody>", 1)[1]
    return [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in body.split("</tr>") if "<td" in r]


def test_search_table_and_chart_match_the_hits(ex, kit):
    assert set(ex.user.options) == {"ada", "bob"} and ex.user.value == "ada"
    ex.query.value = "which database is embedded in Python?"
    hits = ex.search()
    assert [h.content for h in hits][0] == ADA[0] and len(hits) == 3
    assert ex.error.value == ""
    rows = _rows(ex.table.value)
    assert len(rows) == 3 and rows[0][1].startswith("DuckDB is an embedded")
    for row, h in zip(rows, hits):
        assert row[0] == str(h.rank)
        assert [float(v) for v in row[2:6]] == [round(h.score, 3), round(h.similarity, 3), round(h.decay, 3), round(h.boost, 3)]
        assert row[6:] == [h.memory_type, h.scope]
    w = kit.memory.ranking.weights
    sim, dec, bst = (list(t.x) for t in ex.chart.data)
    assert [t.name for t in ex.chart.data] == ["similarity", "decay", "boost"]
    assert ex.chart.figure.layout.barmode == "relative"
    assert list(ex.chart.data[0].y)[0].startswith("#1 DuckDB")
    for i, h in enumerate(hits):
        assert sim[i] + dec[i] + bst[i] == pytest.approx(h.score, abs=1e-9)
        assert sim[i] == pytest.approx(w.similarity * h.similarity) and bst[i] == pytest.approx(w.boost * h.boost)


def test_users_are_isolated_and_type_filter(ex):
    ex.user.value = "bob"
    ex.query.value = "embedded analytical database"
    hits = ex.search()
    assert hits and all(h.user_id == "bob" for h in hits)
    assert "DuckDB" not in ex.table.value and not any("DuckDB" in y for y in ex.chart.data[0].y)
    ex.memory_type.value = "procedural"  # every memory here is semantic (the default)
    assert ex.search() == []
    assert "No memories match" in ex.table.value and len(ex.chart.data[0].x) == 0


def test_bad_input_is_one_line_not_an_exception(kit):
    ex = kit.memory.explorer()  # nothing stored yet: no user to pick
    assert ex.user.value is None
    ex.query.value = "anything"
    assert ex.search() == [] and "no user picked" in ex.error.value
    kit.memory.store("ada", "hello world")
    ex.refresh_users()
    ex.query.value = "   "
    assert ex.search() == []
    assert "query is empty" in ex.error.value and "Traceback" not in ex.error.value
    assert ex.error.value.count("<div") == 1
    ex.query.value = "hello"
    assert ex.search() and ex.error.value == ""
    assert "MemoryExplorer" in repr(ex)


def test_decay_follows_the_callers_clock_and_the_legend_sits_under_the_bars(kit):
    from datetime import datetime, timedelta, timezone

    from cognitionos_kit import charts

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    kit.memory.store("ana", "The weekly sync moved to Wednesday.", created_at=now - timedelta(days=3))
    ex = kit.memory.explorer(user_id="ana", query="when is the weekly sync?", now=now)
    (hit,) = ex.search()
    assert hit.decay == pytest.approx(kit.memory.retrieve("ana", "when is the weekly sync?", now=now)[0].decay)
    assert hit.decay > 0.5  # three days old by the notebook's clock, not by today's
    layout = ex.chart.figure.layout
    legend = layout.template.layout.legend  # the kit's look: pinned to the bottom edge, under the axis title
    assert legend.yref == "container" and legend.y == 0 and layout.margin.b == charts.legend_margin(3)
    assert "run the cell again" in repr(ex)
