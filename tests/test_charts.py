"""Chart builders: the data in each figure equals what the ledger holds; filters narrow it;
empty ledgers give a titled empty chart. Also the notebook reprs (AttemptList, UsageSummary)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import plotly.graph_objects as go
import pytest

from cognitionos_kit import Kit, LatencyModel, SimulatedProvider, charts
from cognitionos_kit.core.errors import InvalidRequestError
from cognitionos_kit.notebook.reprs import AttemptList, UsageSummary

USERS = ("alice", "bob", "carol")


@pytest.fixture
def busy(tmp_path):
    """A Kit with a flaky provider in front of the simulated one, and 30 recorded calls."""
    flaky = SimulatedProvider(name="flaky", seed=3, failure_rate=0.3, latency=LatencyModel(scale=0))
    kit = Kit(tmp_path / "busy", providers=[flaky, "simulated"], dotenv=False, simulated_latency=LatencyModel(scale=0))
    for i in range(30):
        kit.complete(f"Explain idea number {i} about caching", role=("planner", "executor", "critic")[i % 3],
                     user_id=USERS[i % 3], max_tokens=(40, 90)[i % 2], experiment_id="exp-a" if i < 20 else "exp-b")
    yield kit
    kit.close()


def _keys(df):
    return df["provider"] + "/" + df["model"]


def test_latency_percentile_markers_equal_numpy(busy):
    df = busy.usage()
    ok = df[df["status"] == "ok"]
    fig = busy.charts.latency()
    assert isinstance(fig, go.Figure)
    boxes = {t.name: t for t in fig.data if t.type == "box"}
    assert set(boxes) == set(_keys(ok))
    marks = {t.name: t for t in fig.data if t.name in ("p50", "p95", "p99")}
    assert set(marks) == {"p50", "p95", "p99"}
    for key, box in boxes.items():
        lat = ok.loc[_keys(ok) == key, "latency_ms"].to_numpy(dtype=float)
        assert sorted(box.x) == pytest.approx(sorted(lat))
        assert box.hoverinfo == "skip"  # no plotly five-number box tooltip
        points = next(t for t in fig.data if t.type == "scatter" and t.name == key)
        assert sorted(points.x) == pytest.approx(sorted(lat)) and "ms" in points.hovertemplate
        for q in (50, 95, 99):
            m = marks[f"p{q}"]
            i = [c[0] for c in m.customdata].index(key)
            value = np.percentile(lat, q, method="linear")
            assert m.x[i] == pytest.approx(value) and m.customdata[i][1] == len(lat)
            assert "ms over %{customdata[1]} calls" in m.hovertemplate and m.mode == "markers"  # no text to collide
            # the row label carries the percentiles, with their unit and the count
            assert f"p{q} {value:,.0f}" in m.y[i] and f"ms · {len(lat)} calls" in m.y[i]


def test_percentiles_on_known_values():
    import pandas as pd

    lat = [10.0, 20.0, 30.0, 40.0, 1000.0]
    df = pd.DataFrame({"status": "ok", "provider": "p", "model": "m", "latency_ms": lat})
    marks = {t.name: t.x[0] for t in charts.latency_distribution(df).data if t.name in ("p50", "p95", "p99")}
    assert marks == {"p50": 30.0, "p95": pytest.approx(808.0), "p99": pytest.approx(961.6)}


def test_latency_over_time_holds_every_attempt(busy):
    df = busy.usage()
    fig = busy.charts.latency_over_time()
    failed = [t for t in fig.data if t.name == "failed attempt"]
    assert len(failed) == 1 and len(failed[0].y) == int((df["status"] != "ok").sum()) > 0
    ok = df[df["status"] == "ok"]
    for t in fig.data:
        if t.name != "failed attempt":
            assert list(t.y) == pytest.approx(ok.loc[_keys(ok) == t.name, "latency_ms"].tolist())
    assert sum(len(t.y) for t in fig.data) == len(df)
    # failures are not latencies: they sit in their own strip (one row per provider), not at 0 ms
    assert failed[0].yaxis == "y2" and set(failed[0].y) <= set(df["provider"])
    assert all(t.yaxis in (None, "y") for t in fig.data if t.name != "failed attempt")


def test_cumulative_spend_ends_at_ledger_totals(busy):
    df = busy.usage()
    fig = busy.charts.spend_over_time()
    lines = {t.name: t for t in fig.data}
    assert lines["total"].y[-1] == pytest.approx(df["cost_usd"].sum())
    assert list(lines["total"].y) == sorted(lines["total"].y)  # cumulative: never decreases
    for provider, total in df.groupby("provider")["cost_usd"].sum().items():
        assert lines[provider].y[-1] == pytest.approx(total)


@pytest.mark.parametrize("by", ["user_id", "model", "provider"])
def test_spend_by_equals_groupby(busy, by):
    expected = busy.usage().groupby(by)["cost_usd"].sum()
    bar = busy.charts.spend_by(by).data[0]
    assert dict(zip(bar.x, bar.y)) == pytest.approx(expected.to_dict())
    assert list(bar.y) == sorted(bar.y, reverse=True)
    # and the same as the ledger's own SQL aggregation
    sql = busy.spend(by=by).set_index(by)["cost_usd"]
    assert dict(zip(bar.x, bar.y)) == pytest.approx(sql.to_dict())


def test_spend_by_day_in_date_order(tmp_path):
    kit = Kit(tmp_path / "days", dotenv=False, simulated_latency=LatencyModel(scale=0))
    day = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
    rows = [{"ts": day + timedelta(days=d), "request_id": f"r{d}{i}", "attempt": 1, "kind": "chat", "user_id": "u",
             "provider": "simulated", "model": "sim-small", "status": "ok", "latency_ms": 5.0, "cost_usd": 0.01 * (d + 1)}
            for d in (2, 0, 1) for i in range(2)]
    kit.ledger.record(rows)
    bar = kit.charts.spend_by("day").data[0]
    assert list(bar.x) == ["2026-03-01", "2026-03-02", "2026-03-03"]
    assert list(bar.y) == pytest.approx([0.02, 0.04, 0.06])
    assert list(kit.charts.spend_by("day", since="2026-03-02").data[0].x) == ["2026-03-02", "2026-03-03"]
    assert list(kit.charts.spend_by("day", until=day + timedelta(days=1)).data[0].x) == ["2026-03-01"]
    kit.close()


def test_tokens_vs_latency_points_are_ledger_rows(busy):
    ok = busy.usage(status="ok")
    fig = busy.charts.tokens_vs_latency()
    for t in fig.data:
        if t.name.startswith("fit"):
            continue
        g = ok[_keys(ok) == t.name]
        assert list(t.x) == g["completion_tokens"].astype(float).tolist()
        assert list(t.y) == pytest.approx(g["latency_ms"].tolist())
    assert sum(len(t.x) for t in fig.data if not t.name.startswith("fit")) == len(ok)
    total = busy.charts.tokens_vs_latency(tokens="total_tokens")
    assert sorted(x for t in total.data if not t.name.startswith("fit") for x in t.x) == sorted(ok["total_tokens"].astype(float))


def test_filters_narrow_the_data_and_title(busy):
    bar = busy.charts.spend_by("user_id", user_id="bob").data[0]
    assert list(bar.x) == ["bob"]
    assert bar.y[0] == pytest.approx(busy.usage(user_id="bob")["cost_usd"].sum())
    exp = busy.usage(experiment_id="exp-b")
    fig = busy.charts.latency_over_time(experiment_id="exp-b")
    assert sum(len(t.y) for t in fig.data) == len(exp) < len(busy.usage())
    assert "experiment exp-b" in fig.layout.title.text
    fig = busy.charts.spend_over_time(provider="simulated")
    assert [t.name for t in fig.data] == ["total"]
    assert fig.data[0].y[-1] == pytest.approx(busy.usage(provider="simulated")["cost_usd"].sum())
    future = datetime.now(timezone.utc) + timedelta(days=1)
    assert "no calls" in busy.charts.latency(since=future).layout.title.text
    assert "user dave" in busy.charts.latency(user_id="dave").layout.title.text
    with pytest.raises(TypeError, match="unexpected keyword argument 'usr'"):  # the filters are named parameters
        busy.charts.latency(usr="bob")


def test_every_chart_names_the_filters_in_its_signature():
    """shift-Tab in Jupyter shows them: keyword-only, defaults None, the same list as FILTERS."""
    import inspect

    for name in ("data", "latency", "latency_over_time", "spend_over_time", "spend_by", "tokens_vs_latency"):
        params = inspect.signature(getattr(charts.Charts, name)).parameters
        named = [p for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "last"]
        assert [p.name for p in named] == list(charts.FILTERS) and all(p.default is None for p in named), name
        if name in ("data", "latency_over_time", "tokens_vs_latency"):  # the per-call ones: a window, documented
            assert params["last"].default == charts.DEFAULT_LAST == 5_000, name
            assert "last" in (getattr(charts.Charts, name).__doc__ or "") or name == "data", name
        assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()), name


def test_bad_chart_arguments_are_kit_errors_that_say_what_is_accepted(busy):
    with pytest.raises(InvalidRequestError, match=r"unknown filter\(s\) \['usr'\]: use user_id, since"):
        charts.clean_filters({"usr": "bob", "model": None})
    assert charts.clean_filters({"user_id": "bob", "model": None}) == {"user_id": "bob"}
    with pytest.raises(InvalidRequestError, match="cannot chart spend by 'colour': use 'day' or a ledger column"):
        busy.charts.spend_by("colour")
    with pytest.raises(InvalidRequestError, match="cannot chart latency against 'words': use a ledger token column"):
        busy.charts.tokens_vs_latency("words")
    assert busy.charts.tokens_vs_latency("total_tokens").layout.xaxis.title.text == "total tokens"


def test_empty_ledger_gives_titled_empty_charts(kit):
    c = kit.charts
    figs = [c.latency(), c.latency_over_time(), c.spend_over_time(), c.tokens_vs_latency()]
    figs += [c.spend_by(by) for by in ("user_id", "model", "day", "provider")]
    for fig in figs:
        assert isinstance(fig, go.Figure) and not fig.data
        assert "no calls" in fig.layout.title.text
    # the module functions used by reports, on an empty frame
    df = kit.usage()
    for fn in (charts.latency_distribution, charts.cumulative_spend, charts.latency_over_time, charts.tokens_vs_latency):
        assert "no calls" in fn(df).layout.title.text
    assert "no calls" in charts.spend_by(df, "user_id").layout.title.text


def test_unpriced_calls_are_not_counted_as_spend(kit):
    kit.ledger.record([{"request_id": "r1", "attempt": 1, "provider": "local", "model": "m", "status": "ok",
                        "latency_ms": 3.0, "cost_usd": None}])
    fig = kit.charts.spend_over_time()
    assert not fig.data and "no calls with a known cost" in fig.layout.title.text
    kit.complete("hello", user_id="x")
    fig = kit.charts.spend_over_time()
    assert "1 unpriced" in fig.layout.title.text
    assert fig.data[0].y[-1] == pytest.approx(kit.usage()["cost_usd"].sum())


def test_charts_render_without_cdn(busy):
    html = busy.charts.latency().to_html(include_plotlyjs=False, full_html=False)
    assert "cdn" not in html.lower()


# --- reprs ---------------------------------------------------------------------------------
def test_attempt_list_renders(tmp_path):
    flaky = SimulatedProvider(name="flaky")
    kit = Kit(tmp_path / "h", providers=[flaky, "simulated"], dotenv=False, simulated_latency=LatencyModel(scale=0))
    flaky.fail_next(1, "overloaded")
    attempts = AttemptList(kit.complete("hi there", user_id="u").attempts)
    html, text = attempts._repr_html_(), str(attempts)
    assert "<table" in html and "overloaded" in html and "flaky" in html and "simulated" in html
    assert text.splitlines()[0] == "2 attempt(s): flaky -> simulated"
    assert "overloaded" in text.splitlines()[2] and "ok" in text.splitlines()[3]
    assert list(attempts.to_frame()["status"]) == ["error", "ok"]
    assert isinstance(attempts, list) and len(attempts) == 2
    kit.close()


def test_usage_summary_numbers(busy):
    df = busy.usage()
    s = UsageSummary(df)
    ok = df[df["status"] == "ok"]
    assert s.calls == df["request_id"].nunique() == 30
    assert s.attempts == len(df) and s.failures == int((df["status"] != "ok").sum()) > 0
    assert s.spend_usd == pytest.approx(df["cost_usd"].sum())
    assert s.p50_ms == pytest.approx(np.percentile(ok["latency_ms"], 50))
    assert s.p95_ms == pytest.approx(np.percentile(ok["latency_ms"], 95))
    by = s.by_provider.set_index("provider")
    assert by.loc["flaky", "failures"] == s.failures
    assert by["answered"].sum() == 30 and by["attempts"].sum() == len(df)
    html, text = s._repr_html_(), repr(s)
    for needle in (f"{s.calls} calls", f"{s.attempts} attempts", f"{s.failures} failed", f"${s.spend_usd:.6f}"):
        assert needle in html and needle in text
    assert "flaky" in text.splitlines()[2] and "<table" in html


def test_usage_summary_of_empty_ledger(kit):
    s = UsageSummary(kit.usage())
    assert (s.calls, s.attempts, s.spend_usd, s.p50_ms) == (0, 0, 0.0, None)
    assert "no calls" in repr(s) and "no calls" in s._repr_html_()


def test_legends_sit_below_the_axis_title_with_room_for_their_rows(kit):
    """Pinned to the figure's bottom edge with a margin for tick labels, the axis title and each
    legend row, a legend never overlaps the x-axis title (two-line date ticks included)."""
    from cognitionos_kit import AllProvidersFailedError

    for i in range(3):
        kit.complete(f"question {i}", role="planner")
        kit.complete(f"question {i}", role="executor")
    kit.simulated.fail_next(1, "server_error")
    with pytest.raises(AllProvidersFailedError):
        kit.complete("this one fails", providers=["simulated"])
    for fig, ticks in ((kit.charts.latency_over_time(), 2), (kit.charts.latency(), 1)):
        entries = sum(1 for t in fig.data if t.showlegend is not False)
        assert entries >= 3  # two models (+ failed attempts, or p50/p95/p99)
        legend = fig.layout.legend
        assert (legend.yref, legend.y, legend.yanchor) == ("container", 0, "bottom")
        assert fig.layout.margin.b == 40 + 18 * ticks + 22 * -(-entries // 4)
    assert kit.charts.spend_by("model").layout.margin.b is None  # one series, no legend: the template's margin


# --- the shared display helpers (core/display.py) -------------------------------------------
def _completion(**kw):
    from cognitionos_kit.core.types import Attempt, Completion

    fields = dict(content="hi", provider="simulated", model="sim-small", prompt_tokens=12, completion_tokens=34,
                  cost_usd=0.000123, latency_ms=56.4, request_id="r1",
                  attempts=[Attempt(1, "simulated", "sim-small", "ok", 56.4)])
    return Completion(**{**fields, **kw})


def test_footer_html_is_completion_footer_as_html():
    from cognitionos_kit.core.display import footer_html, plain_text
    from cognitionos_kit.core.types import Attempt

    c = _completion()
    assert plain_text(footer_html(c)) == c.footer() == "simulated/sim-small · 12+34 tokens · $0.000123 · 56 ms"
    assert plain_text(footer_html(c, shown=("simulated", "sim-small"))) == "12+34 tokens · $0.000123 · 56 ms"
    assert "white-space:nowrap" in footer_html(c)  # wraps between the parts, never inside one
    sub = _completion(requested_provider="openai", requested_model="gpt-4o-mini", substituted=True, tokens_estimated=True,
                      attempts=[Attempt(1, "openai", "gpt-4o-mini", "error", 3.0, error_type="rate_limit"),
                                Attempt(2, "simulated", "sim-small", "ok", 56.4)])
    first, path = plain_text(footer_html(sub)).splitlines()
    assert first == sub.footer().replace("SUBSTITUTE", "⚠ SUBSTITUTE") and "~12+~34 tokens" in first
    assert path == "fallback: openai (rate_limit) → simulated (ok)"


def test_error_and_note_lines_are_escaped_one_liners():
    from cognitionos_kit.core.display import error_html, note_html

    html = error_html(InvalidRequestError("bad <b>input</b>\n  detail one\n  detail two"))
    assert html.count("<div") == 1 and "<b>InvalidRequestError</b>: bad &lt;b&gt;input&lt;/b&gt;" in html
    assert "(detail one; detail two)" in html and "<br" not in html
    assert "a &amp; b" in note_html("a & b")


def test_one_hits_table_for_every_view():
    from cognitionos_kit.core.display import HIT_HEADERS, hits_table
    from cognitionos_kit.memory.hit import MemoryHit

    hit = MemoryHit(id="m1", content="DuckDB   runs\ninside " + "the process " * 10, score=0.71234, similarity=0.60449,
                    decay=0.5, boost=0.15, memory_type="semantic", scope="user", rank=1)
    html, text = hits_table([hit]), hits_table([hit], text=True)
    for h in HIT_HEADERS:
        assert f">{h}</th>" in html and h in text.splitlines()[0]
    assert "<td style='padding:2px 10px;text-align:right;border-bottom:1px solid #eee'>0.712</td>" in html
    cells = text.splitlines()[1].split()
    assert cells[:3] == ["1", "DuckDB", "runs"] and "0.712" in cells and "0.604" in cells
    assert "DuckDB runs inside the process" in html and "…" in html and len(text.splitlines()[1]) < len(html)
    assert "DuckDB runs inside the process the" not in hits_table([hit], width=33)


def test_usage_summary_to_html_is_what_the_notebook_shows(busy):
    s = UsageSummary(busy.usage())
    assert s.to_html() == s._repr_html_() and "<table" in s.to_html()


def test_money_has_one_format_on_axes_and_labels(busy):
    from cognitionos_kit.core.display import money

    for fig in (busy.charts.spend_by("user_id"), busy.charts.spend_over_time()):
        assert fig.layout.yaxis.tickprefix == "$" and fig.layout.yaxis.tickformat == charts.MONEY_AXIS  # no "80µ"
    bars = busy.charts.spend_by("model").data[0]
    assert list(bars.text) == [money(v) for v in bars.y]
    assert money(8.73e-05) == "$0.000087" and money(1234.5) == "$1,234.50" and money(None) == money(float("nan")) == "n/a"


def test_figures_built_unchecked_are_valid_plotly(busy):
    """latency_figure and spend_figure skip plotly's checks for speed: what they build passes them,
    and says the same once checked (a trace type, property or value plotly refuses fails here)."""
    from cognitionos_kit.storage.aggregates import POINTS, Aggregates, latency_groups, spend_lines

    df = busy.usage()
    agg = charts.read_aggregates(busy, {})
    total, lines = spend_lines(agg)
    boxed = [g._replace(box=(1.0, 2.0, 3.0, 0.5, 4.0), x=g.x[:2]) for g in latency_groups(agg)]  # the histogram form
    for fig in (charts.latency_distribution(df), charts.latency_figure(boxed), charts.cumulative_spend(df),
                charts.spend_figure(total, lines, unpriced=2, rows=len(df)), busy.charts.latency(),
                busy.charts.spend_over_time()):
        checked = go.Figure(fig.to_plotly_json())  # raises on anything plotly would refuse
        assert _plain(checked.to_plotly_json()) == _plain(fig.to_plotly_json())
    assert isinstance(agg, Aggregates) and len(busy.charts.latency().data) > 3 and POINTS >= 30


def _plain(value):
    """Arrays and tuples as lists, recursively: a checked figure holds what the unchecked one held."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    return value
