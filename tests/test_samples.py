"""The per-sample viewer: records of every sample, the filters, two runs side by side, the widget
and the report's Samples section (its filters in a real browser are in test_browser.py)."""

from __future__ import annotations

import json
import re

import pytest

from cognitionos_kit import Experiment, InvalidRequestError
from cognitionos_kit.experiments.report import write_report
from cognitionos_kit.experiments.samples import filter_records, pair_records, sample_records
from cognitionos_kit.notebook.sample_viewer import SampleViewer

DATA = [{"country": "France", "expected": "Paris"}, {"country": "Japan", "expected": "Tokyo"},
        {"country": "Peru", "expected": "Lima"}]


def _exp(prompt="Capital of {country}?", **kw):
    spec = dict(name="caps", dataset=DATA, prompts={"q": prompt}, models=["sim-small", "sim-nano"], repeats=2,
                scorers=["contains", {"regex": "capital"}])
    spec.update(kw)
    return Experiment(**spec)


@pytest.fixture
def run(kit):
    return kit.run(_exp(), progress=False)


def test_every_sample_is_a_record_with_what_a_reader_needs(run):
    records = sample_records(run.results)
    assert len(records) == len(run.results) == 3 * 2 * 2
    assert len({r["key"] for r in records}) == len(records)  # a key names one sample
    r = records[0]
    row = run.results.iloc[0]
    assert r["prompt"] == row.prompt and r["output"] == row.output and r["fields"] == {"country": "France",
                                                                                          "expected": "Paris"}
    assert r["scores"] == {"contains": row.score_contains, "regex": row.score_regex}
    assert r["cost_usd"] == pytest.approx(row.cost_usd) and r["served_model"] == row.served_model
    json.dumps(records)  # plain values only: it travels to a browser


def test_filters_by_model_status_score_and_text(run):
    records = sample_records(run.results)
    assert len(filter_records(records, model="sim-nano")) == 6
    assert len(filter_records(records, status="ok")) == 12 and filter_records(records, status="error") == []
    regex_hits = int((run.results.score_regex == 1).sum())
    assert len(filter_records(records, score="regex", min_score=1)) == regex_hits
    assert len(filter_records(records, score="regex", max_score=0)) == 12 - regex_hits
    assert {r["fields"]["country"] for r in filter_records(records, text="JAPAN")} == {"Japan"}  # any case
    assert len(filter_records(records, model="sim-small", text="peru")) == 2
    with pytest.raises(InvalidRequestError, match="need score="):
        filter_records(records, min_score=0.5)
    with pytest.raises(InvalidRequestError, match="no score 'bleu'.*contains, regex"):
        filter_records(records, score="bleu")


def test_two_runs_pair_the_same_sample(kit, run):
    other = kit.run(_exp(prompt="What is the capital city of {country}?"), progress=False)
    mine, theirs = sample_records(run.results), sample_records(other.results)
    pairs = pair_records(mine, theirs)
    assert len(pairs) == len(mine)
    for r in mine:
        p = pairs[r["key"]]
        assert (p["fields"], p["model"], p["repeat"]) == (r["fields"], r["model"], r["repeat"])
        assert p["prompt"].startswith("What is the capital city of")
    one_model = kit.run(_exp(models=["sim-large"]), progress=False)  # other models: same row and repeat
    pairs = pair_records(mine, sample_records(one_model.results))
    assert all(pairs[r["key"]]["fields"] == r["fields"] and pairs[r["key"]]["model"] == "sim-large" for r in mine)


def test_the_viewer_widget_filters_and_shows_a_sample_beside_the_other_run(kit, run):
    v = run.viewer()
    assert isinstance(v, SampleViewer) and len(v.shown) == 12 and "12 of 12 samples" in v.count.value
    v.model.value = "sim-small"
    v.text.value = "japan"
    assert [r["fields"]["country"] for r in v.shown] == ["Japan", "Japan"] and "2 of 12" in v.count.value
    assert "Capital of Japan?" in v.detail.value and "score contains" in v.detail.value
    v.text.value = "no such words anywhere"
    assert v.shown == [] and "No sample matches" in v.detail.value
    v.text.value, v.model.value = "", ""
    v.score.value = "regex"
    v.score_range.value = (1.0, 1.0)
    assert len(v.shown) == int((run.results.score_regex == 1).sum())

    other = kit.run(_exp(prompt="What is the capital city of {country}?"), progress=False)
    side = run.viewer(other=other)
    side.show(side.records[0]["key"])
    assert f"run {run.run_id}" in side.detail.value and f"run {other.run_id}" in side.detail.value
    assert "What is the capital city of France?" in side.detail.value and "Capital of France?" in side.detail.value


def test_the_report_section_carries_the_same_records_and_filters_offline(kit, run):
    other = kit.run(_exp(prompt="What is the capital city of {country}?"), progress=False)
    page = write_report(run, other=other).read_text()
    section = page.split("<h2>Samples</h2>", 1)[1].split("<h2>", 1)[0]
    data = json.loads(re.search(r"<script type='application/json' id='kit-samples-data'>(.*?)</script>", section,
                                re.S).group(1).replace("<\\/", "</"))
    assert [r["key"] for r in data["records"]] == [r["key"] for r in sample_records(run.results)]
    assert data["other_run_id"] == other.run_id and len(data["pairs"]) == len(run.results)
    for control in ("kit-f-model", "kit-f-status", "kit-f-score", "kit-f-min", "kit-f-max", "kit-f-text"):
        assert f"id='{control}'" in section
    assert "<script src=" not in section and "http" not in section.split("kit-samples-data")[0]  # nothing to fetch
