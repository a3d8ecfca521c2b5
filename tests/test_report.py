"""An experiment's report draws with the same chart look as kit.charts and the dashboard."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import pytest

from cognitionos_kit import Experiment, charts
from cognitionos_kit.experiments.report import comparison_figure, figure_specs, figures, write_report

DATA = pd.DataFrame({"country": ["France", "Japan"], "expected": ["Paris", "Tokyo"]})


def _run(kit, models=("sim-small", "sim-nano")):
    exp = Experiment(name="capitals", dataset=DATA, prompts={"q": "What is the capital of {country}?"},
                     models=list(models), settings={"temperature": [0.0, 0.7]}, scorers=["contains", {"regex": "capital"}])
    return kit.run(exp, progress=False)


@pytest.fixture
def run(kit):
    return _run(kit)


def test_report_charts_use_the_kit_template(run):
    look = charts.template().to_plotly_json()
    specs = figure_specs(run)
    assert len(specs) == 4
    for spec in specs:
        assert spec["layout"]["template"] == look  # not plotly_white: the views' own look
    for fig in figures(run):
        assert isinstance(fig, go.Figure)
        assert fig.layout.template.layout.font.family == charts.template().layout.font.family
        assert fig.layout.template.layout.colorway == charts.template().layout.colorway


def test_report_legends_get_room_under_the_axis_title(run):
    specs = {s["layout"]["title"]["text"]: s for s in figure_specs(run)}
    scores = specs["Mean score by model · template · settings"]
    assert len(scores["data"]) == 2 and scores["layout"]["margin"]["b"] == charts.legend_margin(2)
    scatter = next(s for t, s in specs.items() if t.startswith("Cost vs"))
    assert scatter["layout"]["showlegend"] is False and "margin" not in scatter["layout"]


def test_comparison_uses_the_kit_template(kit):
    a, b = _run(kit), _run(kit, models=("sim-small", "sim-large"))
    fig = comparison_figure(kit.compare(a, b.run_id))
    assert fig.layout.template.layout.font.family == charts.template().layout.font.family


def test_written_report_embeds_plotly_once(run):
    page = write_report(run).read_text()
    assert page.count("plotly.js v") == 1 and page.count("Plotly.newPlot(") == 4
    assert "system-ui" in page  # the template's font family is in every chart's layout
