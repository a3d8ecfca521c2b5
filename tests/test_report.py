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
    assert [d["name"] for d in scatter["data"]] == ["sim-small", "sim-nano"]  # one series per model, in a legend
    assert scatter["layout"]["margin"]["b"] == charts.legend_margin(2)


def test_comparison_uses_the_kit_template(kit):
    a, b = _run(kit), _run(kit, models=("sim-small", "sim-large"))
    fig = comparison_figure(kit.compare(a, b.run_id))
    assert fig.layout.template.layout.font.family == charts.template().layout.font.family


def test_reports_share_one_plotly_per_data_folder_and_stay_small(kit, run):
    again = _run(kit)
    assets = list((kit.home / "runs" / "assets").glob("plotly-*.min.js"))
    assert len(assets) == 1 and assets[0].stat().st_size > 3_000_000  # written once, for every report
    for r in (run, again):
        page = r.report_path.read_text()
        assert f"src='../assets/{assets[0].name}'" in page and "plotly.js v" not in page
        assert r.report_path.stat().st_size < 500_000  # a size a reader can mail
        assert page.count("Plotly.newPlot(") == 4 and "system-ui" in page
    standalone = write_report(run, standalone=True).read_text()
    assert standalone.count("plotly.js v") == 1 and "../assets/" not in standalone


def test_report_has_a_per_sample_table(run):
    page = write_report(run).read_text()
    samples = page.split("<h2>Samples</h2>", 1)[1].split("<h2>", 1)[0]
    assert samples.count("<tr>") == len(run.results) + 1  # a header and every sample
    for col in ("country", "expected", "template", "model", "output", "score_contains", "cost_usd"):
        assert f"<th>{col}</th>" in samples
    assert "France" in samples and run.results.output.iloc[0][:30] in samples.replace("&#x27;", "'")


def test_report_charts_list_only_what_they_draw(kit):
    exp = Experiment(name="caps", dataset=DATA, prompts="What is the capital of {country}?", models=["sim-small"],
                     scorers=["contains", {"regex": "capital"}, lambda output, row: float("nan")])
    specs = {s["layout"]["title"]["text"]: s for s in figure_specs(kit.run(exp, progress=False))}
    bars = specs["Mean score by model · template · settings"]["data"]
    assert [b["name"] for b in bars] == ["score_contains", "score_regex"]  # the all-NaN scorer has no bars, no entry
    scatter = next(s for t, s in specs.items() if t.startswith("Cost vs"))
    assert all(d["mode"] == "markers" for d in scatter["data"])  # no text labels to overlap


def test_report_tables_show_money_plainly(run):
    page = write_report(run).read_text()
    summary = page.split("<h2>Summary</h2>", 1)[1].split("<h2>", 1)[0]
    assert "e-0" not in summary and "e-0" not in page.split("<h2>Samples</h2>", 1)[1].split("<h2>", 1)[0]
    assert "$0.0000" in summary
