"""Every attempt behind each sample of a run (experiments.attempts): read from the ledger in one
query by run id, shown in the viewer widget and in the report's Samples section. Fallbacks go
over real HTTP (the official SDKs against the loopback servers)."""

from __future__ import annotations

import json
import re

from conftest import ANTHROPIC_KEY, OPENAI_KEY

from cognitionos_kit import Experiment
from cognitionos_kit.experiments.attempts import attempt_line, attempts_by_request, run_attempts
from cognitionos_kit.experiments.report import write_report
from cognitionos_kit.experiments.runs import load_run
from cognitionos_kit.experiments.samples import attempt_rows, run_records
from cognitionos_kit.notebook.sample_viewer import SampleViewer, sample_card

DATA = [{"topic": "caching"}, {"topic": "retries"}, {"topic": "budgets"}]


def _exp(models, **kw):
    return Experiment(name="tips", dataset=DATA, prompts={"q": "One tip about {topic}"}, models=models, **kw)


def _page_records(path):
    page = path.read_text()
    section = page.split("<h2>Samples</h2>", 1)[1].split("<h2>", 1)[0]
    data = json.loads(re.search(r"<script type='application/json' id='kit-samples-data'>(.*?)</script>", section,
                                re.S).group(1).replace("<\\/", "</"))
    return page, data


def _same_attempts(kit, run) -> bool:
    """The attempts the run kept in memory are what the ledger holds for it (as the viewers read them)."""
    ledger = attempts_by_request(run_attempts(kit.ledger, run.run_id))
    # as the report reads them (straight from the rows kept), and as run.attempts shows them (a frame)
    rows = run._known.by_request() if run._known is not None else None
    kept = attempts_by_request(run.attempts)
    return bool(kept) and kept == ledger and rows in (None, ledger)


def _counting_queries(ledger, monkeypatch):
    sql: list[str] = []
    real = ledger.query

    def query(q, params=None):
        if "FROM llm_usage" in q:
            sql.append(q)
        return real(q, params)

    monkeypatch.setattr(ledger, "query", query)
    return sql


def test_a_plain_run_shows_one_attempt_per_sample_read_in_one_query(kit, monkeypatch):
    sql = _counting_queries(kit.ledger, monkeypatch)
    fresh = kit.run(_exp(["sim-small", "sim-nano"], repeats=2), progress=False)  # writes the report too
    assert sql == []  # the run kept its cells' attempts as they ended: its report reads no ledger
    assert _same_attempts(kit, fresh)
    sql.clear()
    run = load_run(kit, fresh.run_id)  # a run read back from its folder reads the ledger, once
    assert run.results.request_id.notna().all() and run.results.request_id.is_unique
    records = run_records(run)["records"]
    assert len(sql) == 1 and "WHERE run_id = ?" in sql[0]  # one query for the run, not one per sample
    assert len(records) == 12
    for rec in records:
        (a,) = rec["attempts"]
        assert (a["provider"], a["model"], a["status"], a["answer"], a["cache_hit"]) == (
            "simulated", rec["model"], "ok", True, False)
        assert rec["attempts_text"] == "1 attempt" and a["line"].startswith(f"simulated/{rec['model']} ok (the answer) ")
        assert attempt_rows(rec) == [("attempts", f"1 attempt: {a['line']}")]  # compact: one line
    write_report(run)
    run.viewer()
    assert len(sql) == 1  # the report and the widget reuse what the run read
    _, data = _page_records(run.report_path)
    assert [r["attempt_rows"][0][1].split(":")[0] for r in data["records"]] == ["1 attempt"] * 12
    assert all(len(r["attempt_rows"]) == 1 for r in data["records"])  # compact: one line


def test_a_rerun_from_the_cache_shows_the_cache_hit_as_its_attempt(kit):
    first = kit.run(_exp(["sim-small"]), progress=False)
    again = kit.run(_exp(["sim-small"]), progress=False)
    assert again.cache_hits == 3
    assert _same_attempts(kit, again)
    assert set(again.results.request_id).isdisjoint(first.results.request_id)  # its own ledger rows
    for rec in run_records(again)["records"]:
        (a,) = rec["attempts"]
        assert a["cache_hit"] and a["answer"] and a["outcome"] == "cache hit (the answer)"


def test_a_fallback_shows_both_attempts_in_the_table_the_widget_and_the_report(make_live_kit, openai_server,
                                                                               anthropic_server):
    kit = make_live_kit(fallback_models={"gpt-4o-mini": "claude-haiku-5-5"})  # a named model may fall back
    # the first call's OpenAI attempt is rate limited (max_retries=1: the SDK sends it twice), so the
    # chain moves on to Anthropic; the other two are answered by OpenAI at once
    openai_server.enqueue_error(429, headers={"retry-after": "0"}, times=2)
    run = kit.run(_exp(["gpt-4o-mini"]), concurrency=1, progress=False)
    assert list(run.results.status) == ["ok"] * 3
    assert list(run.results.provider) == ["anthropic", "openai", "openai"]
    assert _same_attempts(kit, run)

    records = run_records(run)["records"]
    first, *rest = records
    assert [(a["n"], a["provider"], a["model"], a["status"], a["error_type"], a["answer"])
            for a in first["attempts"]] == [(1, "openai", "gpt-4o-mini", "error", "rate_limit", False),
                                            (2, "anthropic", "claude-haiku-5-5", "ok", None, True)]
    assert first["attempts_text"] == "2 attempts (1 failed)"
    failed, answer = first["attempts"]
    assert failed["cost_usd"] is None and answer["cost_usd"] > 0 and answer["latency_ms"] > 0
    assert failed["key"].startswith("sha256:") and answer["key"].startswith("sha256:")  # the fingerprint only
    assert [len(r["attempts"]) for r in rest] == [1, 1] and all(r["attempts"][0]["provider"] == "openai" for r in rest)
    line = attempt_line(failed)
    assert line.startswith("attempt 1 openai/gpt-4o-mini rate_limit") and " ms" in line

    rows = attempt_rows(first)
    assert rows[0] == ("attempts", "2 attempts (1 failed)")
    assert [k for k, _ in rows[1:]] == ["attempt 1", "attempt 2"]
    assert rows[2][1].startswith("anthropic/claude-haiku-5-5 ok (the answer)")

    card = sample_card(first, "this run")  # the widget's detail pane
    assert "attempt 1" in card and "rate_limit" in card and "anthropic/claude-haiku-5-5 ok (the answer)" in card
    viewer = SampleViewer(run)
    viewer.show(first["key"])
    assert "2 attempts (1 failed)" in viewer.detail.value and "attempt 2" in viewer.detail.value

    page, data = _page_records(run.report_path)  # the report written at the end of the run
    shown = {r["key"]: r["attempt_rows"] for r in data["records"]}
    assert [k for k, _ in shown[first["key"]]] == ["attempts", "attempt 1", "attempt 2"]
    assert "rate_limit" in shown[first["key"]][1][1]
    assert all(len(shown[r["key"]]) == 1 for r in rest)
    for secret in (OPENAI_KEY, ANTHROPIC_KEY):  # never a key, anywhere on the page or in the records
        assert secret not in page and secret not in json.dumps(records)


def test_a_failed_sample_lists_every_failed_attempt(make_live_kit, openai_server, anthropic_server):
    kit = make_live_kit(fallback_models={"gpt-4o-mini": "claude-haiku-5-5"})  # a named model may fall back
    openai_server.enqueue_error(503, times=2)
    anthropic_server.enqueue_error(500, times=2)
    openai_server.enqueue_error(400, times=1)  # the second call: a request the provider rejects stops the chain
    run = kit.run(_exp(["gpt-4o-mini"]), concurrency=1, progress=False)
    assert list(run.results.status) == ["error", "error", "ok"]
    assert run.results.request_id.notna().all()
    assert _same_attempts(kit, run)
    everywhere, rejected, ok = run_records(run)["records"]
    assert [(a["provider"], a["error_type"]) for a in everywhere["attempts"]] == [
        ("openai", "server_error"), ("anthropic", "server_error")]
    assert everywhere["attempts_text"] == "2 attempts (2 failed)" and not any(a["answer"] for a in everywhere["attempts"])
    assert [(a["provider"], a["error_type"]) for a in rejected["attempts"]] == [("openai", "invalid_request")]
    assert rejected["attempts_text"] == "1 attempt (1 failed)"
    assert attempt_rows(rejected)[0][1].startswith("1 attempt (1 failed): openai/gpt-4o-mini invalid_request")
    assert ok["attempts_text"] == "1 attempt"


def test_a_run_without_a_ledger_or_a_skipped_sample_says_so(kit):
    run = kit.run(_exp(["sim-small"]), progress=False)
    run.ledger = None  # e.g. a Run built by hand: nothing to read, nothing shown
    assert all(r["attempts"] is None and attempt_rows(r) == [] for r in run_records(run)["records"])
    exp = _exp(["sim-large"], repeats=3, settings={"max_tokens": [200]})
    full_cost = kit.run(exp, cache=False, progress=False).cost_usd
    capped = kit.run(exp, budget_usd=full_cost / 2, cache=False, progress=False)
    skipped = [r for r in run_records(capped)["records"] if r["status"] == "skipped"]
    assert skipped and all(r["attempts"] == [] and r["attempts_text"] == "none sent" for r in skipped)
