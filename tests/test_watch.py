"""Metrics, spans and spend alerts of every ledger row: the Prometheus text parsed back equals the
ledger, /metrics is served over real HTTP, spans follow the OpenTelemetry GenAI conventions (SDK
in-memory exporter), and an alert fires once per window."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict

import pytest
from conftest import OPENAI_KEY
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from cognitionos_kit import (
    AlertWarning,
    AllProvidersFailedError,
    AuthenticationWarning,
    InvalidRequestError,
    Kit,
    LatencyModel,
    ProviderError,
)
from cognitionos_kit.guards.metrics import LATENCY_BUCKETS

KEYS = ("kind", "provider", "model", "status", "cache_hit")


def samples(text: str) -> dict[str, dict[tuple, float]]:
    """{sample name: {label values (KEYS, then the rest by name): value}} of a Prometheus text."""
    out: dict[str, dict[tuple, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            rest = tuple(sorted((k, v) for k, v in s.labels.items() if k not in KEYS))
            out[s.name][tuple(s.labels.get(k) for k in KEYS) + rest] = s.value
    return out


def ledger_groups(kit: Kit, extra: tuple[str, ...] = ()):
    df = kit.usage()
    df["cache_hit"] = df["cache_hit"].fillna(False).map({True: "true", False: "false"})
    return df, df.groupby(list(KEYS) + list(extra))


def _mixed_calls(kit: Kit) -> None:
    """Two models, two users, a failed attempt and a response-cache hit."""
    kit.complete("What is a ledger?", role="executor", user_id="ann", temperature=0)
    kit.complete("Plan a study of ledgers", role="planner", user_id="bob")
    kit.complete("What is a ledger?", role="executor", user_id="ann", temperature=0)  # answered from the cache
    kit.simulated.fail_next(1, "rate_limit")
    with pytest.raises(AllProvidersFailedError):
        kit.complete("this one fails", role="executor", user_id="bob")


def test_metrics_text_equals_the_ledger(kit):
    _mixed_calls(kit)
    df, groups = ledger_groups(kit)
    assert set(df["status"]) == {"ok", "error"} and df["cache_hit"].eq("true").sum() == 1
    got = samples(kit.metrics_text())
    assert len(groups) >= 4
    for key, g in groups:
        assert got["cognitionos_llm_calls_total"][key] == len(g)
        assert got["cognitionos_llm_latency_seconds_count"][key] == len(g)
        assert got["cognitionos_llm_latency_seconds_sum"][key] == pytest.approx(g["latency_ms"].sum() / 1000)
        for le in LATENCY_BUCKETS:
            bucket = key + (("le", str(le)),)
            assert got["cognitionos_llm_latency_seconds_bucket"][bucket] == (g["latency_ms"] / 1000 <= le).sum()
        if key[3] == "ok":
            for kind, column in (("input", "prompt_tokens"), ("output", "completion_tokens")):
                assert got["cognitionos_llm_tokens_total"][key + (("type", kind),)] == g[column].sum() > 0
            assert got["cognitionos_llm_cost_usd_total"][key] == pytest.approx(g["cost_usd"].sum())
    # the failed attempt: status "error" as in the ledger, and its error type
    failed = df[df["status"] == "error"].iloc[0]
    key = ("chat", failed["provider"], failed["model"], "error", "false")
    assert got["cognitionos_llm_calls_total"][key] == 1 and got["cognitionos_llm_tokens_total"][key + (("type", "input"),)] == 0
    assert got["cognitionos_llm_errors_total"][("chat", failed["provider"], failed["model"], None, None,
                                                ("error_type", "rate_limit"))] == 1
    # the cache hit: its own series, $0 spent, the saving counted
    hit = df[df["cache_hit"] == "true"].iloc[0]
    key = ("chat", hit["provider"], hit["model"], "ok", "true")
    assert got["cognitionos_llm_calls_total"][key] == 1
    assert got["cognitionos_llm_cost_usd_total"][key] == 0
    assert hit["saved_cost_usd"] > 0 and got["cognitionos_llm_saved_usd_total"][key] == pytest.approx(hit["saved_cost_usd"])
    assert "user_id" not in kit.metrics_text()


def test_user_label_only_when_asked(kit):
    _mixed_calls(kit)
    by_user = samples(kit.metrics_text(by_user=True))
    df, groups = ledger_groups(kit, ("user_id",))
    for key, g in groups:
        assert by_user["cognitionos_llm_calls_total"][key[:5] + (("user_id", key[5]),)] == len(g)
    assert {dict(k[5:]).get("user_id") for k in by_user["cognitionos_llm_calls_total"]} == {"ann", "bob"}
    plain = samples(kit.metrics_text())
    assert all(len(k) == 5 for k in plain["cognitionos_llm_calls_total"])  # no user label by default
    assert sum(plain["cognitionos_llm_calls_total"].values()) == len(df)
    with pytest.raises(InvalidRequestError, match="by_user must be True or False"):
        kit.metrics_text(by_user="yes")


def test_each_kit_counts_its_own_calls(tmp_path):
    a = Kit(tmp_path / "a", dotenv=False, simulated_latency=LatencyModel(scale=0))
    b = Kit(tmp_path / "b", dotenv=False, simulated_latency=LatencyModel(scale=0))
    for i in range(3):
        a.complete(f"a {i}")
    b.complete("b")
    count = lambda k: sum(samples(k.metrics_text())["cognitionos_llm_calls_total"].values())  # noqa: E731
    assert (count(a), count(b)) == (3, 1)
    a.close()
    b.close()


def test_serve_metrics_over_http(kit):
    kit.complete("served", user_id="ann")
    server = kit.serve_metrics(0)
    assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}/metrics" and server.running
    with urllib.request.urlopen(server.url, timeout=5) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        body = resp.read().decode()
    assert samples(body)["cognitionos_llm_calls_total"] == samples(kit.metrics_text())["cognitionos_llm_calls_total"]
    kit.complete("another")  # a scrape sees the counts of now
    with urllib.request.urlopen(server.url, timeout=5) as resp:
        assert sum(samples(resp.read().decode())["cognitionos_llm_calls_total"].values()) == 2
    server.stop()
    assert not server.running and "stopped" in repr(server)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url, timeout=2)
    with kit.serve_metrics(0, by_user=True) as s:
        with urllib.request.urlopen(s.url, timeout=5) as resp:
            assert 'user_id="ann"' in resp.read().decode()
    for bad in (-1, 70000, "9090", True, 1.5):
        with pytest.raises(InvalidRequestError, match="port must be an int"):
            kit.serve_metrics(bad)


def test_no_key_in_metrics_or_spans(make_live_kit, openai_server):
    kit = make_live_kit()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    kit.set_tracing(tracer_provider=provider)
    kit.complete("hello", model="gpt-4o-mini", user_id="ann")
    openai_server.enqueue_error(401, times=3)
    with pytest.raises(AllProvidersFailedError), pytest.warns(AuthenticationWarning):
        kit.complete("hello", model="gpt-4o-mini", user_id="ann")
    text = kit.metrics_text(by_user=True)
    assert 'provider="openai"' in text and 'status="error"' in text
    spans = exporter.get_finished_spans()
    assert len(spans) == 2 and spans[0].name == "chat gpt-4o-mini"
    dumped = text + json.dumps([dict(s.attributes) for s in spans]) + "".join(s.status.description or "" for s in spans)
    assert OPENAI_KEY not in dumped and OPENAI_KEY[:12] not in dumped


# --- spans ------------------------------------------------------------------------------------
@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def test_spans_follow_the_genai_conventions(make_live_kit, openai_server, spans):
    provider, exporter = spans
    kit = make_live_kit()
    kit.set_tracing(tracer_provider=provider)
    r = kit.complete("Name a ledger", model="gpt-4o-mini")
    openai_server.enqueue_error(400)
    with pytest.raises(ProviderError):
        kit.complete("refused", model="gpt-4o-mini")
    ok, failed = exporter.get_finished_spans()
    row = kit.usage(request_id=r.request_id).iloc[0]
    assert ok.name == "chat gpt-4o-mini" and ok.kind == SpanKind.CLIENT
    a = ok.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == a["gen_ai.system"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o-mini" and a["gen_ai.response.model"] == row["response_model"]
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (r.prompt_tokens, r.completion_tokens) > (0, 0)
    assert a["cognitionos.cost_usd"] == pytest.approx(r.cost_usd) and a["cognitionos.request_id"] == r.request_id
    assert a["cognitionos.status"] == "ok" and "error.type" not in a and ok.status.status_code != StatusCode.ERROR
    assert (ok.end_time - ok.start_time) / 1e6 == pytest.approx(row["latency_ms"], abs=0.01)
    f = failed.attributes
    assert failed.name == "chat gpt-4o-mini" and failed.status.status_code == StatusCode.ERROR
    assert f["error.type"] == kit.usage(status="error").iloc[0]["error_type"] and f["cognitionos.status"] == "error"
    assert "gen_ai.usage.input_tokens" not in f


def test_spans_of_embeddings_cache_hits_and_the_callers_span(make_live_kit, spans):
    provider, exporter = spans
    kit = make_live_kit()
    kit.set_tracing(tracer_provider=provider)
    with provider.get_tracer("test").start_as_current_span("experiment") as parent:
        kit.complete("same question", model="gpt-4o-mini", seed=1)
        kit.complete("same question", model="gpt-4o-mini", seed=1)
    kit.embed(["a", "b"], model="text-embedding-3-small")
    first, hit, embedding = [s for s in exporter.get_finished_spans() if s.name != "experiment"]
    assert first.parent.span_id == hit.parent.span_id == parent.get_span_context().span_id
    assert first.attributes["cognitionos.cache_hit"] is False and hit.attributes["cognitionos.cache_hit"] is True
    assert hit.attributes["cognitionos.cost_usd"] == 0 and hit.attributes["cognitionos.saved_cost_usd"] > 0
    assert embedding.name == "embeddings text-embedding-3-small"
    assert embedding.attributes["gen_ai.operation.name"] == "embeddings"
    assert embedding.attributes["gen_ai.usage.input_tokens"] > 0
    kit.set_tracing(False)
    kit.complete("not traced", model="gpt-4o-mini")
    assert len(exporter.get_finished_spans()) == 4


def test_tracing_settings_are_checked(kit):
    for bad in ("yes", 1):
        with pytest.raises(InvalidRequestError, match="enabled must be True, False or None"):
            kit.set_tracing(bad)
    with pytest.raises(InvalidRequestError, match="must be an OpenTelemetry TracerProvider"):
        kit.set_tracing(tracer_provider="jaeger")
    with pytest.raises(InvalidRequestError, match="cannot be off and have a tracer_provider"):
        kit.set_tracing(False, tracer_provider=TracerProvider())


_GLOBAL = """
import json, sys
from cognitionos_kit import Kit, LatencyModel
kit = Kit(sys.argv[1], dotenv=False, simulated_latency=LatencyModel(scale=0))
kit.complete("before any set-up")
untouched = "opentelemetry" not in " ".join(sys.modules)
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
kit.complete("imported, nothing set up")
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
kit.complete("set up", model="sim-small")
print(json.dumps({"untouched": untouched, "spans": [s.name for s in exporter.get_finished_spans()]}))
"""


def test_spans_go_to_the_global_provider_once_one_is_set_and_otel_costs_nothing_before(tmp_path):
    out = subprocess.run([sys.executable, "-c", _GLOBAL, str(tmp_path / "home")], capture_output=True, text=True,
                         timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"untouched": True, "spans": ["chat sim-small"]}


# --- spend alerts -----------------------------------------------------------------------------
def test_an_alert_fires_once_per_window(kit):
    events = []
    alert = kit.on_spend(1e-9, events.append)
    assert not alert.fired and alert.spent_usd == 0
    for i in range(4):
        kit.complete(f"spending {i}")
    assert len(events) == 1 and alert.fired
    e = events[0]
    first = kit.usage().sort_values("ts").iloc[0]
    assert e.request_id == first["request_id"] and e.spent_usd == pytest.approx(first["cost_usd"])
    assert e.window == time.strftime("%Y-%m-%d", time.gmtime()) and e.period == "day" and e.user_id is None
    assert alert.spent_usd == pytest.approx(kit.usage()["cost_usd"].sum())

    alert.clock = lambda: time.time() + 86400  # tomorrow, UTC
    for i in range(3):
        kit.complete(f"tomorrow {i}")
    assert len(events) == 2 and events[1].window != e.window
    tomorrow = kit.usage().sort_values("ts").iloc[4]
    assert events[1].request_id == tomorrow["request_id"]
    assert events[1].spent_usd == pytest.approx(tomorrow["cost_usd"])  # a new window starts from nothing

    fired = kit.alerts()
    assert list(fired["request_id"]) == [e.request_id, events[1].request_id]
    assert list(fired["current"]) == [True, False]  # the second fired in tomorrow's window
    from datetime import datetime, timedelta, timezone

    assert list(kit.alerts(now=datetime.now(timezone.utc) + timedelta(days=1))["current"]) == [False, True]
    alert.remove()
    alert.clock = lambda: time.time() + 2 * 86400
    kit.complete("after remove")
    assert len(events) == 2


def test_an_alert_counts_what_the_ledger_already_holds(kit):
    for i in range(3):
        kit.complete(f"earlier {i}")
    spent = kit.usage()["cost_usd"].sum()
    events = []
    alert = kit.on_spend(spent * 1.0001, events.append, period="month")
    assert alert.spent_usd == pytest.approx(spent) and not events
    kit.complete("one more")
    assert len(events) == 1 and events[0].spent_usd == pytest.approx(kit.usage()["cost_usd"].sum())
    assert events[0].window == time.strftime("%Y-%m", time.gmtime())
    assert kit.on_spend(spent, events.append, period="total").spent_usd == pytest.approx(kit.usage()["cost_usd"].sum())


def test_a_users_alert_counts_only_that_user(kit):
    events = []
    alert = kit.on_spend(1e-9, events.append, user_id="ann")
    for i in range(3):
        kit.complete(f"bob spends {i}", user_id="bob")
    kit.complete("no user")
    assert not events and alert.spent_usd == 0
    kit.complete("ann spends", user_id="ann")
    kit.complete("ann spends again", user_id="ann")
    assert len(events) == 1 and events[0].user_id == "ann"
    assert alert.spent_usd == pytest.approx(kit.usage(user_id="ann")["cost_usd"].sum())
    assert "ann" in str(events[0]) and "fired" in repr(alert)


def test_a_callback_that_raises_does_not_break_the_call(kit):
    def broken(event):
        raise RuntimeError("pager down")

    kit.on_spend(1e-9, broken)
    with pytest.warns(AlertWarning, match="RuntimeError: pager down"):
        r = kit.complete("still answered")
    assert r.content and kit.usage(request_id=r.request_id)["status"].tolist() == ["ok"]
    assert kit.alerts()["request_id"].tolist() == [r.request_id]  # kept for the dashboard all the same


def test_alerts_are_seen_by_another_kit_on_the_folder(kit, tmp_path):
    kit.on_spend(1e-9, lambda e: None, user_id="ann")
    kit.complete("hi", user_id="ann")
    other = Kit(kit.home, dotenv=False)
    fired = other.alerts()
    assert len(fired) == 1 and fired.iloc[0]["user_id"] == "ann" and bool(fired.iloc[0]["current"])
    assert (kit.home / "guards" / "alerts.jsonl").stat().st_mode & 0o777 == 0o600
    other.close()


def test_bad_alerts_are_refused(kit):
    cases = [((0, print), "threshold_usd must be a positive number"), ((-1, print), "threshold_usd"),
             ((math.nan, print), "threshold_usd"), ((math.inf, print), "threshold_usd"), (("1", print), "threshold_usd"),
             ((True, print), "threshold_usd"), ((1, "print"), "callback must be a function")]
    for args, match in cases:
        with pytest.raises(InvalidRequestError, match=match):
            kit.on_spend(*args)
    with pytest.raises(InvalidRequestError, match="period must be one of day, month, total"):
        kit.on_spend(1, print, period="week")
    with pytest.raises(InvalidRequestError, match="user_id must be a non-empty string"):
        kit.on_spend(1, print, user_id=" ")
    assert kit.alerts().empty


def test_a_latency_past_the_last_bucket_counts_only_in_inf():
    from cognitionos_kit.guards.metrics import Metrics

    m = Metrics()
    row = {"kind": "chat", "provider": "p", "model": "m", "status": "ok", "latency_ms": 100_000.0,
           "prompt_tokens": 3, "completion_tokens": 2, "cost_usd": 0.5}
    m.observe(row)
    m.observe({**row, "latency_ms": 5.0})
    got = samples(m.text())
    key = ("chat", "p", "m", "ok", "false")
    assert got["cognitionos_llm_latency_seconds_count"][key] == 2
    assert got["cognitionos_llm_latency_seconds_bucket"][key + (("le", "+Inf"),)] == 2
    assert got["cognitionos_llm_latency_seconds_bucket"][key + (("le", str(LATENCY_BUCKETS[-1])),)] == 1
    assert got["cognitionos_llm_latency_seconds_bucket"][key + (("le", "0.01"),)] == 1
    assert got["cognitionos_llm_latency_seconds_sum"][key] == pytest.approx(100.005)
    assert got["cognitionos_llm_cost_usd_total"][key] == 1.0
    assert got["cognitionos_llm_tokens_total"][key + (("type", "input"),)] == 6
