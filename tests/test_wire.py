"""The OpenAI provider's lean path and the async aiohttp transport (both SDKs), checked on the wire.

Plain completions go through the SDK client's ``post`` instead of ``chat.completions.create``
(see providers/openai.py for why). These tests hold that shortcut to what ``create`` does: the
same path, body, auth and content headers; errors classified as before on the async transport;
an answer that is not a chat completion reported clearly; no aiohttp session left open.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import openai
import pytest
from conftest import OPENAI_KEY

from cognitionos_kit import AllProvidersFailedError

# headers whose values legitimately differ between two calls (retry counters, timeouts)
_VOLATILE = {"x-stainless-retry-count", "x-stainless-read-timeout", "x-stainless-timeout", "content-length"}


def _wire(req) -> tuple[str, str, dict, dict]:
    headers = {k.lower(): v for k, v in req.headers.items() if k.lower() not in _VOLATILE}
    return req.method, req.path, req.body, headers


@pytest.mark.parametrize("model, kwargs", [
    ("gpt-4o-mini", {}),
    ("gpt-4.1", {"system": "Answer in one word.", "temperature": 0.3, "seed": 7, "max_tokens": 40}),
    ("gpt-5-mini", {"max_tokens": 64}),  # reasoning models take max_completion_tokens
])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_kit_request_is_what_create_would_send(live_kit, openai_server, model, kwargs, mode):
    prompt = "Name a primary colour."
    if mode == "sync":
        live_kit.complete(prompt, model=model, providers=["openai"], **kwargs)
    else:
        asyncio.run(live_kit.acomplete(prompt, model=model, providers=["openai"], **kwargs))
    kit_req = openai_server.requests[-1]
    assert kit_req.body["model"] == model and kit_req.body["messages"][-1] == {"role": "user", "content": prompt}
    if "system" in kwargs:
        assert kit_req.body["messages"][0] == {"role": "system", "content": kwargs["system"]}
    if model.startswith("gpt-5"):
        assert kit_req.body["max_completion_tokens"] == 64 and "max_tokens" not in kit_req.body

    client = openai.OpenAI(api_key=OPENAI_KEY, base_url=openai_server.base_url, max_retries=1, timeout=2.0)
    if mode == "async":
        async def via_create():
            async with openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=openai_server.base_url,
                                          max_retries=1, timeout=2.0) as ac:
                await ac.chat.completions.create(**kit_req.body)
        asyncio.run(via_create())
    else:
        client.chat.completions.create(**kit_req.body)
    sdk_req = openai_server.requests[-1]
    assert _wire(kit_req) == _wire(sdk_req)
    assert {k.lower(): v for k, v in kit_req.headers.items()}.get("authorization") == f"Bearer {OPENAI_KEY}"


def test_answer_fields_match_the_sdk_model(live_kit, openai_server):
    """content, id, model, finish reason and usage as the SDK's own ChatCompletion reads them"""
    r = live_kit.complete("Say hi", model="gpt-4o-mini", providers=["openai"])
    client = openai.OpenAI(api_key=OPENAI_KEY, base_url=openai_server.base_url, max_retries=0)
    ref = client.chat.completions.create(**openai_server.requests[-1].body)
    assert r.content == ref.choices[0].message.content
    assert r.model == ref.model
    assert r.prompt_tokens == ref.usage.prompt_tokens and r.completion_tokens == ref.usage.completion_tokens


@pytest.mark.parametrize("ctype, body", [
    ("text/html", b"<html>the proxy says hello</html>"),
    ("application/json", b'{"status": "ok"}'),
])
def test_an_answer_that_is_not_a_chat_completion_is_a_clear_error(live_kit, openai_server, ctype, body):
    openai_server.enqueue_raw(200, ctype, body)
    with pytest.raises(AllProvidersFailedError) as e:
        live_kit.complete("Say hi", model="gpt-4o-mini", providers=["openai"])
    msg = str(e.value)
    assert "not a chat completion" in msg and "OPENAI_BASE_URL" in msg
    row = live_kit.usage().iloc[-1]
    assert row.status == "error" and row.error_type == "bad_response"


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
@pytest.mark.parametrize("provider, model", [("openai", "gpt-4o-mini"), ("anthropic", "claude-haiku-5-5")])
def test_async_errors_are_classified_as_on_the_sync_path(live_kit, openai_server, anthropic_server, monkeypatch,
                                                         transport, provider, model):
    monkeypatch.setenv("COGNITIONOS_ASYNC_HTTP", transport)
    server = openai_server if provider == "openai" else anthropic_server
    server.enqueue_disconnect()
    server.enqueue_disconnect()  # max_retries=1: the SDK tries twice
    server.enqueue_delay(3.0)  # a timeout ends the attempt: the SDK does not retry past it

    async def go():
        first = await live_kit.acomplete("a", model=model, providers=[provider, "simulated"])
        second = await live_kit.acomplete("b", model=model, providers=[provider, "simulated"])
        third = await live_kit.acomplete("c", model=model, providers=[provider, "simulated"])
        return first, second, third

    first, second, third = asyncio.run(go())
    assert [a.error_type for a in first.attempts] == ["connection_error", None]
    assert [a.error_type for a in second.attempts] == ["timeout", None]
    assert first.attempts[0].http_requests == 2 and second.attempts[0].http_requests == 1
    assert second.attempts[0].latency_ms < 2600  # timeout=2 s bounds the attempt
    assert first.provider == second.provider == "simulated"
    assert third.provider == provider and third.content  # the pool recovered


def test_no_http_session_outlives_its_event_loop(tmp_path, openai_server):
    """``asyncio.run(kit.acomplete(...))`` twice in a script: answers, and nothing on stderr
    about unclosed sessions or connectors (each loop's client is closed at its shutdown)."""
    script = textwrap.dedent(f"""
        import asyncio, gc
        from cognitionos_kit import Kit
        kit = Kit({str(tmp_path / 'home')!r}, dotenv=False, providers=["openai"])
        for i in range(2):
            r = asyncio.run(kit.acomplete(f"hello {{i}}", model="gpt-4o-mini"))
            print(r.provider, r.content[:20])
        gc.collect()
        kit.close()
    """)
    env = {**os.environ, "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": openai_server.base_url,
           "COGNITIONOS_DOTENV": "0", "PYTHONWARNINGS": "default"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("openai ") == 2
    assert "Unclosed" not in out.stderr and "unclosed" not in out.stderr, out.stderr
    assert len(openai_server.requests) == 2
