"""kit.run(exp, executor="batch"): OpenAI's Batch API and Anthropic's Message Batches through the
official SDKs against the loopback servers, at half price, resumable after a restart."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cognitionos_kit import BatchPendingError, Experiment, InvalidRequestError
from cognitionos_kit.calls.pricing import PriceBook
from cognitionos_kit.core.types import Usage
from cognitionos_kit.experiments import Batch

DATA = pd.DataFrame({"country": ["France", "Japan", "Peru"], "expected": ["Paris", "Tokyo", "Lima"]})
FAST = Batch(poll_interval=0.01)
PROVIDERS = {"openai": ("gpt-4o-mini", "/v1/batches"), "anthropic": ("claude-haiku-4-5", "/v1/messages/batches")}


def _exp(model: str, name: str = "capitals") -> Experiment:
    return Experiment(name, DATA, "What is the capital of {country}?", [model], scorers=["contains"])


def _server(provider: str, openai_server, anthropic_server):
    return openai_server if provider == "openai" else anthropic_server


def _creations(server, path: str) -> int:
    return sum(1 for r in server.requests if r.method == "POST" and r.path == path)


def _rows(kit, run_id: str) -> pd.DataFrame:
    return kit.usage(run_id=run_id).sort_values("ts", ignore_index=True)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_batch_run_answers_like_a_local_run_at_half_price(provider, make_live_kit, tmp_path, openai_server,
                                                            anthropic_server):
    model, create = PROVIDERS[provider]
    server = _server(provider, openai_server, anthropic_server)
    server.batch_polls = 3  # in progress twice, then ended
    local = make_live_kit(home=tmp_path / "local").run(_exp(model), progress=False)
    server.reset()
    server.batch_polls = 3
    kit = make_live_kit(home=tmp_path / "batch")
    run = kit.run(_exp(model), executor=FAST, progress=False)

    assert list(run.results.status) == ["ok"] * 3
    cols = ["output", "provider", "served_model", "prompt_tokens", "completion_tokens", "score_contains"]
    pd.testing.assert_frame_equal(run.results[cols], local.results[cols])
    assert _creations(server, create) == 1
    chat = "/v1/chat/completions" if provider == "openai" else "/v1/messages"
    assert not [r for r in server.requests if r.path == chat]  # nothing went through the live endpoint
    polls = [r for r in server.requests if r.method == "GET" and r.path.startswith(create + "/")
             and not r.path.endswith("/results")]
    assert len(polls) >= 3  # polled until it ended

    rows = _rows(kit, run.run_id)
    assert len(rows) == 3 and rows.batch_id.notna().all() and rows.batch_id.nunique() == 1
    assert set(rows.price_source) == {"genai-prices batch"}
    assert sorted(rows.cost_usd) == pytest.approx(sorted(local.results.cost_usd / 2))
    assert sorted(run.results.cost_usd) == pytest.approx(sorted(local.results.cost_usd / 2))
    assert run.cost_usd == pytest.approx(local.cost_usd / 2) and run.cost_usd > 0
    assert run.manifest["executor"] == "batch" and run.manifest["totals"]["calls_sent"] == 3

    sent = len(server.requests)
    again = kit.run(_exp(model), executor="batch", progress=False)
    assert len(server.requests) == sent  # every answer came from the cache
    assert again.cache_hits == 3 and again.cost_usd == 0.0
    assert list(again.results.output) == list(run.results.output)


def test_the_openai_batch_file_holds_each_cells_chat_request(live_kit, openai_server):
    run = live_kit.run(_exp("gpt-4o-mini"), executor=FAST, progress=False)
    upload = next(r for r in openai_server.requests if r.path == "/v1/files")
    assert b'name="purpose"' in upload.raw and b"batch" in upload.raw
    lines = [json.loads(line) for line in upload.raw.decode().splitlines() if line.startswith("{")]
    assert [x["url"] for x in lines] == ["/v1/chat/completions"] * 3
    assert sorted(x["body"]["messages"][-1]["content"] for x in lines) == sorted(run.results.prompt)
    create = next(r for r in openai_server.requests if r.path == "/v1/batches")
    assert create.body["endpoint"] == "/v1/chat/completions" and create.body["completion_window"] == "24h"


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_restart_mid_batch_resumes_by_run_id_without_resubmitting(provider, make_live_kit, tmp_path,
                                                                    openai_server, anthropic_server):
    model, create = PROVIDERS[provider]
    server = _server(provider, openai_server, anthropic_server)
    server.batch_polls = None  # the batch stays in progress
    home = tmp_path / "home"
    first = make_live_kit(home=home)
    with pytest.raises(BatchPendingError, match="resume=") as info:
        first.run(_exp(model), executor=Batch(poll_interval=0.01, max_wait_s=0), progress=False)
    run_id = info.value.run_id
    assert (home / "runs" / run_id / "batches.json").exists() and not (home / "runs" / run_id / "manifest.json").exists()
    assert _creations(server, create) == 1 and _rows(first, run_id).empty  # submitted, nothing answered yet
    first.close()  # the kernel goes away; the batch goes on at the provider

    server.batch_polls = 1  # it has ended by now
    second = make_live_kit(home=home)
    run = second.run(_exp(model), executor=FAST, resume=run_id, progress=False)
    assert run.run_id == run_id and list(run.results.status) == ["ok"] * 3
    assert _creations(server, create) == 1  # never sent twice
    rows = _rows(second, run_id)
    assert len(rows) == 3 and rows.batch_id.notna().all() and (rows.cost_usd > 0).all()
    assert run.manifest["batch"]["resumed"] is True

    sent = len(server.requests)
    assert second.run(_exp(model), executor="batch", resume=run_id, progress=False).run_id == run_id
    assert len(server.requests) == sent and len(_rows(second, run_id)) == 3  # an ended run is returned as it was


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_failed_batch_requests_become_error_cells_and_are_not_cached(provider, live_kit, openai_server,
                                                                     anthropic_server):
    model, create = PROVIDERS[provider]
    server = _server(provider, openai_server, anthropic_server)
    server.batch_fail = lambda body: "Japan" in json.dumps(body)
    run = live_kit.run(_exp(model), executor=FAST, progress=False)
    assert list(run.results.status) == ["ok", "error", "ok"]
    assert run.results.error.iloc[1].startswith("BatchRequestError:") and "fails" in run.results.error.iloc[1]
    rows = _rows(live_kit, run.run_id)
    assert sorted(rows.status) == ["error", "ok", "ok"] and rows.batch_id.notna().all()
    assert rows[rows.status == "error"].error_type.tolist() == ["batch_error"]

    server.batch_fail = None
    again = live_kit.run(_exp(model), executor=FAST, progress=False)
    assert list(again.results.status) == ["ok"] * 3 and list(again.results.cache_hit) == [True, False, True]
    assert _creations(server, create) == 2


def test_a_batch_run_offline_is_refused_before_anything_is_sent(kit):
    with pytest.raises(InvalidRequestError, match="simulated provider .*no batch API"):
        kit.run(_exp("sim-small"), executor="batch", progress=False)
    assert kit.usage().empty and not (kit.home / "runs").exists()


def test_bad_batch_arguments_are_refused(live_kit, openai_server):
    exp = _exp("gpt-4o-mini")
    with pytest.raises(InvalidRequestError, match="executor must be"):
        live_kit.run(exp, executor="batches", progress=False)
    for bad in ({"poll_interval": -1}, {"poll_interval": "fast"}, {"max_wait_s": float("inf")}):
        with pytest.raises(InvalidRequestError, match="Batch"):
            Batch(**bad)
    with pytest.raises(InvalidRequestError, match="executor='batch'"):
        live_kit.run(exp, resume="some-run", progress=False)
    with pytest.raises(InvalidRequestError, match="no batch run"):
        live_kit.run(exp, executor="batch", resume="no-such-run", progress=False)
    with pytest.raises(InvalidRequestError, match="resume must be"):
        live_kit.run(exp, executor="batch", resume="../elsewhere", progress=False)
    openai_server.batch_polls = None
    with pytest.raises(BatchPendingError) as info:
        live_kit.run(exp, executor=Batch(poll_interval=0.01, max_wait_s=0), progress=False)
    with pytest.raises(InvalidRequestError, match="another experiment"):
        live_kit.run(_exp("gpt-4o-mini", name="other"), executor="batch", resume=info.value.run_id, progress=False)
    assert _creations(openai_server, "/v1/batches") == 1


def test_a_budget_caps_what_a_batch_may_send(live_kit, openai_server):
    exp = _exp("gpt-4o-mini")
    one = live_kit.plan("What is the capital of France?", model="gpt-4o-mini").worst_case_usd(live_kit.prices)
    run = live_kit.run(exp, executor=FAST, budget_usd=one * 1.5, progress=False)
    assert list(run.results.status) == ["ok", "skipped", "skipped"]
    assert "budget exhausted" in run.stopped_reason
    upload = next(r for r in openai_server.requests if r.path == "/v1/files")
    assert upload.raw.count(b'"custom_id"') == 1


def test_batch_prices_come_from_genai_prices_or_are_halved_by_hand():
    prices, usage = PriceBook(), Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000)
    known = prices.batch_cost("openai", "gpt-4o-mini", usage)
    assert known.source == "genai-prices batch" and known.cost_usd == pytest.approx(0.375)
    prices.set_price("my-model", type(prices.price("openai", "gpt-4o-mini")[0])(1.0, 3.0))
    custom = prices.batch_cost("openai", "my-model", usage)
    assert custom.source == "custom batch 50%" and custom.cost_usd == pytest.approx(2.0)


@pytest.mark.filterwarnings("ignore:anthropic does not accept temperature")
def test_judges_score_batched_answers_with_live_calls(live_kit, openai_server, anthropic_server):
    from loopback import load_fixtures

    for text in ("0.9", "0.5", "1"):
        entry = load_fixtures("openai", "/v1/chat/completions", stream=False, tools=False, status=200)[0]
        entry["response"]["json"]["choices"][0]["message"]["content"] = text
        openai_server.enqueue(entry)
    exp = Experiment("judged", DATA, "What is the capital of {country}?", ["claude-haiku-4-5"],
                     scorers={"judge": {"llm_judge": {"model": "gpt-4o-mini", "rubric": "names the right city",
                                                     "field": "expected"}}})
    run = live_kit.run(exp, executor=FAST, concurrency=1, progress=False)
    assert list(run.results.status) == ["ok"] * 3 and sorted(run.results.score_judge) == [0.5, 0.9, 1.0]
    assert _creations(anthropic_server, "/v1/messages/batches") == 1
    assert [r.path for r in openai_server.requests] == ["/v1/chat/completions"] * 3  # the judges, live
    rows = _rows(live_kit, run.run_id)
    assert rows[rows.provider == "anthropic"].batch_id.notna().all() and rows[rows.provider == "openai"].batch_id.isna().all()
    assert run.cost_usd == pytest.approx(rows.cost_usd.sum())


def test_a_batch_keeps_to_the_folders_budgets(live_kit, openai_server):
    from cognitionos_kit import BudgetExceededError

    openai_server.batch_polls = 2
    live_kit.set_budget(0.0001)  # less than three worst cases of gpt-4o-mini
    with pytest.raises(BudgetExceededError, match="a batch of 3 request"):
        live_kit.run(_exp("gpt-4o-mini"), executor=FAST, progress=False)
    assert _creations(openai_server, "/v1/batches") == 0  # refused before anything was submitted
    live_kit.set_budget(1.0)
    run = live_kit.run(_exp("gpt-4o-mini"), executor=FAST, progress=False)
    b = live_kit.budgets().iloc[0]
    assert b.spent_usd == pytest.approx(run.cost_usd) and run.cost_usd > 0 and b.reserved_usd == 0
