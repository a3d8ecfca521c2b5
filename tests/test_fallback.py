"""Fallback over real HTTP: OpenAI -> Anthropic -> simulated, driven by the official SDKs."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import ANTHROPIC_KEY, OPENAI_KEY

from cognitionos_kit import AllProvidersFailedError, Kit, LatencyModel, ProviderError

PROMPT = "Give one tip for reproducible experiments"


def _rows(kit, r_or_id):
    rid = getattr(r_or_id, "request_id", r_or_id)
    return kit.usage(request_id=rid).sort_values("attempt")


@pytest.mark.parametrize(
    "status,kind",
    [(429, "rate_limit"), (500, "server_error"), (503, "server_error"), (401, "auth_error"), (404, "not_found")],
)
def test_openai_error_falls_back_to_anthropic(live_kit, openai_server, anthropic_server, status, kind):
    # max_retries=1: the SDK's one retry loop tries twice, then the chain moves on
    openai_server.enqueue_error(status, headers={"retry-after": "0"}, times=2)
    r = live_kit.complete(PROMPT, user_id="u1")
    assert r.provider == "anthropic" and r.model == "claude-haiku-5-5"
    assert [(a.provider, a.status, a.error_type) for a in r.attempts] == [
        ("openai", "error", kind), ("anthropic", "ok", None)]
    retried = status in (429, 500, 503)  # the SDK retries these, not 401/404
    assert len(openai_server.requests) == (2 if retried else 1)
    assert len(anthropic_server.requests) == 1
    rows = _rows(live_kit, r)
    assert list(rows.status) == ["error", "ok"] and list(rows.provider) == ["openai", "anthropic"]
    assert rows.iloc[0].error_type == kind and rows.iloc[0].cost_usd is pd.NA  # nothing billed
    assert rows.iloc[1].cost_usd > 0 and (rows.user_id == "u1").all()


def test_sdk_retry_succeeds_without_fallback(live_kit, openai_server, anthropic_server):
    openai_server.enqueue_error(429, headers={"retry-after": "0"}, times=1)
    r = live_kit.complete(PROMPT)
    assert r.provider == "openai" and len(r.attempts) == 1
    assert len(openai_server.requests) == 2 and len(anthropic_server.requests) == 0


def test_anthropic_overloaded_falls_back_to_simulated_when_opted_in(make_live_kit, openai_server, anthropic_server):
    kit = make_live_kit(simulate_on_failure=True)
    openai_server.enqueue_error(500, times=2)
    anthropic_server.enqueue_error(529, times=2)
    r = kit.complete(PROMPT)
    assert r.provider == "simulated" and r.substituted and r.requested_model == "gpt-4o-mini"
    assert [a.error_type for a in r.attempts] == ["server_error", "overloaded", None]
    assert r.fallback_path == "openai -> anthropic -> simulated"
    rows = _rows(kit, r)
    assert len(rows) == 3 and rows.substituted.tolist() == [False, True, True]
    assert set(rows.requested_model) == {"gpt-4o-mini"}


def test_an_outage_everywhere_raises_instead_of_simulating(live_kit, openai_server, anthropic_server):
    """With real providers configured the simulator never stands in unasked."""
    openai_server.enqueue_error(500, times=2)
    anthropic_server.enqueue_error(529, times=2)
    with pytest.raises(AllProvidersFailedError) as info:
        live_kit.complete(PROMPT)
    assert [a.provider for a in info.value.attempts] == ["openai", "anthropic"]
    assert [a.http_requests for a in info.value.attempts] == [2, 2]  # the SDK's own retry counted
    assert live_kit.usage().status.tolist() == ["error", "error"]
    assert "HTTP 500" in str(info.value) and f"(at {openai_server.base_url.rstrip('/')}/chat/completions)" in str(info.value)
    assert live_kit.usage().error_message.str.contains("(at http://127.0.0.1:", regex=False).all()  # in the ledger too


def test_timeout_and_connection_errors_fall_back(live_kit, openai_server, anthropic_server):
    import time

    openai_server.enqueue_delay(3.0)  # the kit's timeout is 2 s
    openai_server.enqueue_delay(3.0)
    anthropic_server.enqueue_disconnect()
    anthropic_server.enqueue_disconnect()
    t0 = time.perf_counter()
    with pytest.raises(AllProvidersFailedError) as info:
        live_kit.complete(PROMPT)
    assert [a.error_type for a in info.value.attempts] == ["timeout", "connection_error"]
    # the timeout bounds the whole attempt: one request, no SDK retry after it, within timeout + 0.5 s
    assert info.value.attempts[0].http_requests == 1 and info.value.attempts[0].latency_ms < 2500
    assert time.perf_counter() - t0 < 4
    # each failure names where the request went (scheme, host, port, path: never a key)
    assert f"(at {openai_server.base_url.rstrip('/')}/chat/completions)" in info.value.attempts[0].error_message
    assert f"(at {anthropic_server.base_url.rstrip('/')}/v1/messages)" in info.value.attempts[1].error_message
    assert str(info.value).count("(at http://127.0.0.1:") == 2
    assert all(k not in str(info.value) for k in ("sk-", "api_key", "x-api-key"))


def test_invalid_request_does_not_fall_back(live_kit, openai_server, anthropic_server):
    openai_server.enqueue_error(400)
    with pytest.raises(ProviderError) as info:
        live_kit.complete(PROMPT)
    assert info.value.retryable is False and info.value.status_code == 400
    assert len(anthropic_server.requests) == 0
    rows = live_kit.usage()
    assert len(rows) == 1 and rows.iloc[0].error_type == "invalid_request"


def test_all_fail_lists_every_attempt(make_live_kit, openai_server, anthropic_server):
    live_kit = make_live_kit(simulate_on_failure=True)
    openai_server.enqueue_error(503, times=2)
    anthropic_server.enqueue_error(429, headers={"retry-after": "0"}, times=2)
    live_kit.simulated.fail_next(1, "server_error")
    with pytest.raises(AllProvidersFailedError) as info:
        live_kit.complete(PROMPT)
    err = info.value
    assert [(a.provider, a.error_type) for a in err.attempts] == [
        ("openai", "server_error"), ("anthropic", "rate_limit"), ("simulated", "server_error")]
    text = str(err)
    assert "openai/gpt-4o-mini" in text and "anthropic/claude-haiku-5-5" in text and "HTTP 429" in text
    assert list(_rows(live_kit, err.request_id).status) == ["error"] * 3


def test_per_call_providers_and_model_routing(live_kit, openai_server, anthropic_server):
    r = live_kit.complete(PROMPT, providers=["anthropic"], role="planner")
    assert (r.provider, r.model) == ("anthropic", "claude-sonnet-5-5")
    assert anthropic_server.requests[-1].body["model"] == "claude-sonnet-5-5"
    r = live_kit.complete(PROMPT, model="claude-haiku-5-5")  # model alone picks its provider
    assert r.provider == "anthropic" and len(openai_server.requests) == 0
    r = live_kit.complete(PROMPT, role="critic")
    assert (r.provider, r.model) == ("openai", "gpt-4.1")


def test_anthropic_request_shape(live_kit, anthropic_server):
    live_kit.complete(
        [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"},
         {"role": "assistant", "content": "hello"}, {"role": "user", "content": "and?"}],
        providers=["anthropic"], system="Answer in English.",
    )
    body = anthropic_server.requests[-1].body
    assert body["system"] == "Answer in English.\n\nBe terse."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["max_tokens"] == live_kit.default_max_tokens and "temperature" not in body


def test_kit_level_order(tmp_path, monkeypatch, openai_server, anthropic_server):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic_server.base_url)
    kit = Kit(tmp_path, providers=["anthropic", "openai"], dotenv=False, max_retries=0,
              simulated_latency=LatencyModel(scale=0))
    assert kit.chain == ["anthropic", "openai"] and kit.status()["simulation_mode"] is False
    anthropic_server.enqueue_error(529)
    r = kit.complete(PROMPT)
    assert r.fallback_path == "anthropic -> openai"
    assert len(anthropic_server.requests) == 1  # max_retries=0: no SDK retry at all


def test_base_url_alone_configures_openai(tmp_path, monkeypatch, openai_server):
    """An OpenAI-compatible local server (Ollama, vLLM, llama.cpp) needs only its base URL."""
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    kit = Kit(tmp_path, dotenv=False, max_retries=0)
    with pytest.warns(UserWarning, match="no price known for openai/llama3.2"):
        r = kit.complete("hello local model", model="llama3.2")
    assert r.provider == "openai" and openai_server.requests[-1].body["model"] == "llama3.2"
    with pytest.warns(UserWarning, match="no price known"):
        r2 = kit.complete("and again", model="llama3.1")
    assert r2.cost_usd is None
    assert kit.usage(request_id=r2.request_id).iloc[0].cost_usd is pd.NA
    kit.set_price("llama3.2", input_per_mtok=0.0, output_per_mtok=0.0)
    assert kit.complete("free now", model="llama3.2").cost_usd == 0.0


def test_retry_after_is_honoured_by_the_one_retry_loop(live_kit, openai_server, anthropic_server):
    """The SDK waits what the server asks (here 400 ms) and retries once; the chain does not move on."""
    import time

    openai_server.enqueue_error(429, headers={"retry-after-ms": "400"})
    t0 = time.perf_counter()
    r = live_kit.complete(PROMPT)
    waited = time.perf_counter() - t0
    assert r.provider == "openai" and len(r.attempts) == 1
    assert len(openai_server.requests) == 2 and len(anthropic_server.requests) == 0
    assert waited >= 0.4


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
def test_a_long_retry_after_moves_on_at_once(tmp_path, monkeypatch, openai_server, anthropic_server, sync):
    """A provider asking to wait longer than max_retry_wait is not retried: the next one answers now."""
    import asyncio
    import time

    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic_server.base_url)
    kit = Kit(tmp_path, dotenv=False, max_retries=2, max_retry_wait=1.0, simulated_latency=LatencyModel(scale=0),
              simulate_on_failure=True)
    openai_server.enqueue_error(429, headers={"retry-after": "30"})
    anthropic_server.enqueue_error(529, headers={"retry-after": "45"})
    t0 = time.perf_counter()
    r = kit.complete(PROMPT) if sync else asyncio.run(kit.acomplete(PROMPT))
    assert time.perf_counter() - t0 < 5
    assert r.fallback_path == "openai -> anthropic -> simulated"
    assert [a.error_type for a in r.attempts] == ["rate_limit", "overloaded", None]
    assert len(openai_server.requests) == 1 and len(anthropic_server.requests) == 1  # no SDK retry
    # openai's 30 s stand for every process on the folder: the next call does not send to it (nor
    # wait), it moves on at once, and says why
    t0 = time.perf_counter()
    r = kit.complete(PROMPT) if sync else asyncio.run(kit.acomplete(PROMPT))
    assert time.perf_counter() - t0 < 5 and r.provider == "anthropic" and len(openai_server.requests) == 1
    assert r.attempts[0].error_type == "rate_limit" and "not sent: openai" in r.attempts[0].error_message
    kit.close()
    # a wait within the cap is still honoured (and the retry succeeds)
    kit = Kit(tmp_path / "fresh", dotenv=False, max_retries=2, max_retry_wait=1.0, simulated_latency=LatencyModel(scale=0))
    openai_server.enqueue_error(429, headers={"retry-after": "0.2"})
    r = kit.complete(PROMPT) if sync else asyncio.run(kit.acomplete(PROMPT))
    assert r.provider == "openai" and len(openai_server.requests) == 3
    kit.close()


def test_bad_max_retry_wait(tmp_path):
    from cognitionos_kit import ConfigurationError

    for bad in (-1, "soon"):
        with pytest.raises(ConfigurationError, match="max_retry_wait"):
            Kit(tmp_path, dotenv=False, max_retry_wait=bad)
