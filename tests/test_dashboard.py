"""The live dashboard: its figures equal the ledger after refresh(), the background thread picks
up new calls without being asked, a budget gauge shows spend, an empty ledger does not crash, and
the figures live in the widgets' own state (so a browser reload redraws them)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from cognitionos_kit.notebook.dashboard import Dashboard, dashboard, gauge
from cognitionos_kit.notebook.figview import FigureView

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "03_costs_and_latency.ipynb"


def _calls(kit, n, user="alice"):
    for i in range(n):
        kit.complete(f"Question {i} about ledgers", user_id=user, role=("planner", "executor")[i % 2])


def test_empty_ledger_then_refresh_reflects_calls(kit):
    d = kit.dashboard(refresh_s=None, budget_usd=0.05)
    assert isinstance(d, Dashboard)
    assert isinstance(d.latency_fig, FigureView) and isinstance(d.spend_fig, FigureView)
    assert isinstance(d.latency_fig.figure, go.Figure)
    assert "no calls" in d.latency_fig.figure.layout.title.text and not d.latency_fig.data
    assert d.gauge_fig.data[0].value == 0
    assert "no calls" in d.summary.value

    _calls(kit, 6)
    assert d.refresh() is True
    df = kit.usage()
    ok = df[df["status"] == "ok"]
    boxes = {t.name: t for t in d.latency_fig.data if t.type == "box"}
    assert set(boxes) == set(ok["provider"] + "/" + ok["model"])
    assert sum(len(b.x) for b in boxes.values()) == len(ok)
    p95 = next(t for t in d.latency_fig.data if t.name == "p95")
    for key, box in boxes.items():
        assert p95.x[[c[0] for c in p95.customdata].index(key)] == pytest.approx(np.percentile(box.x, 95))
    assert d.latency_fig.figure.layout.annotations == ()  # the "no calls" note is gone
    assert d.spend_fig.data[0].y[-1] == pytest.approx(df["cost_usd"].sum())
    assert d.gauge_fig.data[0].value == pytest.approx(df["cost_usd"].sum()) == pytest.approx(d.spend_usd)
    assert "6 calls" in d.summary.value
    assert d.refresh(force=False) is False  # nothing new: no ledger read

    _calls(kit, 2, user="bob")
    assert d.refresh(force=False) is True
    assert d.gauge_fig.data[0].value == pytest.approx(kit.usage()["cost_usd"].sum())
    assert "8 calls" in d.summary.value
    d.close()


def test_filters_apply(kit):
    _calls(kit, 3, "alice")
    _calls(kit, 2, "bob")
    d = dashboard(kit, refresh_s=None, user_id="bob")
    assert "user bob" in d.latency_fig.figure.layout.title.text
    assert d.spend_fig.data[0].y[-1] == pytest.approx(kit.usage(user_id="bob")["cost_usd"].sum())
    assert "2 calls" in d.summary.value
    assert d.gauge_fig is None
    d.close()


def test_background_thread_updates_without_refresh_call(kit):
    d = kit.dashboard(refresh_s=0.02, budget_usd=1.0)
    assert d.running
    _calls(kit, 3)
    spend = kit.usage()["cost_usd"].sum()
    deadline = time.monotonic() + 30
    while d.gauge_fig.data[0].value != pytest.approx(spend) and time.monotonic() < deadline:
        time.sleep(0.02)  # nobody calls refresh(): the dashboard's thread must notice the calls
    assert d.gauge_fig.data[0].value == pytest.approx(spend)
    d.stop()
    assert not d.running and not d._thread.is_alive()
    assert "stopped" in d.status_line.value and "stopped" in repr(d)
    d.start()
    assert d.running
    d.close()
    assert not d._thread.is_alive()


def test_bad_arguments(kit):
    from cognitionos_kit.core.errors import InvalidRequestError

    for bad in (0, -1.5, float("nan"), "1", True):
        with pytest.raises(InvalidRequestError, match=r"refresh_s must be a positive number of seconds \(or None\), got "):
            kit.dashboard(refresh_s=bad)
    with pytest.raises(InvalidRequestError, match="budget_usd must be a positive number of US dollars"):
        kit.dashboard(budget_usd=-1)
    with pytest.raises(InvalidRequestError, match="budget_usd must be a positive number of US dollars"):
        gauge(0.1, 0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'usr'"):  # the filters are named parameters
        kit.dashboard(refresh_s=None, usr="x")
    d = dashboard(kit, refresh_s=None, user_id="ann", model=["sim-large", "sim-nano"])
    assert d.filters == {"user_id": "ann", "model": ["sim-large", "sim-nano"]} and "user ann" in d.note
    d.close()


def test_notebook_03_loads_no_script_from_a_cdn():
    text = NOTEBOOK.read_text(encoding="utf-8")
    # saved widget state would embed plotly's 5 MB widget bundle (which names CDN URLs) per FigureWidget
    assert len(text) < 1_000_000, "strip metadata.widgets (NotebookClient(store_widget_state=False))"
    nb = json.loads(text)
    outputs = json.dumps([c.get("outputs", []) for c in nb["cells"]])
    assert "<script src=" not in outputs.replace('"', "'").replace("\\'", "'")
    assert "cdn." not in outputs.lower() and "cdn.plot.ly" not in text and "cdn.jsdelivr" not in text
    assert 'pio.renderers.default = "plotly_mimetype"' in "".join(nb["cells"][1]["source"])


def test_layout_fills_the_width_with_legends_clear_of_the_axis_titles(kit):
    _calls(kit, 4)
    d = kit.dashboard(refresh_s=None, budget_usd=0.05)
    for fig in (d.latency_fig, d.spend_fig):
        assert fig.figure.layout.autosize is True and fig.figure.layout.width is None  # as wide as the cell, not 700 px
        if fig.figure.layout.showlegend is True or sum(t.showlegend is not False for t in fig.data) > 1:  # a legend is drawn
            # pinned to the figure's bottom edge, under the tick labels and the axis title
            legend = fig.figure.layout.legend
            assert (legend.yref, legend.y, legend.yanchor) == ("container", 0, "bottom")
            assert fig.figure.layout.margin.b >= 80
    assert d.latency_fig.figure.layout.showlegend is True and d.latency_fig.figure.layout.legend.yref == "container"
    assert d.gauge_fig.figure.layout.width == 360  # a fixed size beside the summary table
    row = d.children[2]  # under the alert banner and the status line
    assert list(row.children) == [d.summary, d.gauge_fig] and row.layout.flex_flow == "row wrap"
    assert "line-height:1.45" in d.summary.value  # not the HTML widget's 28 px one-line height
    assert "cok-dashboard" in d._dom_classes
    d.close()


def test_the_figures_are_in_the_widgets_state_for_a_reload(kit):
    """What JupyterLab restores after a reload is each widget's state: the figure must be in it
    (as plotly's mime bundle, drawn by JupyterLab's own renderer), not only in the kernel."""
    _calls(kit, 3)
    d = kit.dashboard(refresh_s=None, budget_usd=0.05)
    for view in (d.latency_fig, d.spend_fig, d.gauge_fig):
        state = view.get_state()
        (out,) = state["outputs"]
        bundle = out["data"]["application/vnd.plotly.v1+json"]
        assert bundle["data"] == json.loads(view.figure.to_json())["data"] and bundle["data"]
        json.dumps(state["outputs"])  # plain JSON, as the widget protocol carries it
    assert "run the cell again" in repr(d)  # the text a page shows when the kernel is gone
    d.close()


def test_summary_and_dashboard_show_substitutes_unmistakably(kit):
    d = kit.dashboard(refresh_s=None)
    kit.complete("a real answer for the role", role="executor")
    kit.complete("asked for a model the simulator stands in for", model="gpt-4o-mini")
    s = kit.summary()
    assert s.substituted == 1 and "1 answered by a SUBSTITUTE" in repr(s)
    assert "<b style='color:#b45309'>1 answered by a SUBSTITUTE</b>" in s._repr_html_()
    assert s.by_provider.set_index("provider").loc["simulated", "substitutes"] == 1
    d.refresh()
    assert "1 answered by a SUBSTITUTE" in d.summary.value
    d.close()


def test_a_banner_when_a_spend_alert_fired_seen_from_another_kit(kit):
    from cognitionos_kit import Kit

    d = kit.dashboard(refresh_s=None)
    assert d.banner.layout.display == "none" and d.alert_html == ""
    kit.on_spend(1e-9, lambda event: None, user_id="ann")
    _calls(kit, 2, user="bob")
    d.refresh()
    assert d.banner.layout.display == "none"  # bob's spend does not fire ann's alert
    _calls(kit, 2, user="ann")
    d.refresh()
    assert d.banner.layout.display is None and "Spend alert" in d.banner.value and "ann" in d.banner.value
    assert "$1e-09 alert" in d.banner.value and "SPEND ALERT" in repr(d) and d.children[0] is d.banner
    other = Kit(kit.home, dotenv=False)  # what a dashboard in another kernel reads: the data folder
    d2 = other.dashboard(refresh_s=None)
    assert d2.banner.value == d.banner.value
    d2.close()
    other.close()
    d.close()


def test_the_background_thread_shows_a_new_alert(kit):
    d = kit.dashboard(refresh_s=0.02)
    kit.on_spend(1e-9, lambda event: None)
    _calls(kit, 1)
    deadline = time.monotonic() + 30
    while "Spend alert" not in d.banner.value and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "all users" in d.banner.value
    d.close()


def test_a_gauge_per_user_budget(kit):
    kit.set_budget(0.5, user_id="ann")
    kit.set_budget(0.25, user_id="bob")
    kit.set_team("lab", ["ann", "bob"])
    kit.set_budget(1.0, team="lab")  # not a user's: no gauge of its own
    _calls(kit, 3, user="ann")
    d = kit.dashboard(refresh_s=None)
    budgets = kit.budgets().set_index("name")
    assert [v.data[0].title.text.split(":")[0] for v in d.budget_row.children] == ["ann", "bob"]
    for view, user in zip(d.budget_row.children, ("ann", "bob")):
        g = view.data[0]
        assert g.type == "indicator" and g.value == pytest.approx(budgets.loc[user, "spent_usd"])
        assert g.gauge.threshold.value == budgets.loc[user, "limit_usd"]
        assert view.get_state()["outputs"][0]["data"]["application/vnd.plotly.v1+json"]["data"]  # drawn offline
    ann_spent = kit.usage(user_id="ann")["cost_usd"].sum()
    assert ann_spent > 0 and d.budget_row.children[0].data[0].value == pytest.approx(ann_spent)
    kit.set_budget(None, user_id="bob")
    d.refresh()
    assert len(d.budget_row.children) == 1
    d.close()
    only_bob = kit.dashboard(refresh_s=None, user_id="bob")
    assert only_bob.budget_row.children == ()  # bob's budget is gone, ann's is filtered out
    only_bob.close()
