"""Streaming: text as it arrives, fallback only before the first chunk, usage recorded once."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest
from loopback import load_fixtures

from cognitionos_kit import StreamInterruptedError

OPENAI_STREAM = next(e for e in load_fixtures("openai", stream=True, status=200) if not e["tools"])
ANTHROPIC_STREAM = next(e for e in load_fixtures("anthropic", stream=True, status=200) if not e["tools"])


def test_stream_yields_chunks_then_completion(kit):
    s = kit.stream("Explain vector databases for semantic search", user_id="ana")
    chunks = list(s)
    assert len(chunks) > 5 and all(isinstance(c, str) for c in chunks)
    c = s.completion
    assert c.content == "".join(chunks) and c.completion_tokens > 0 and c.cost_usd > 0
    rows = kit.usage(request_id=c.request_id)
    assert len(rows) == 1 and bool(rows.iloc[0].stream) and rows.iloc[0].status == "ok"
    assert int(rows.iloc[0].completion_tokens) == c.completion_tokens


def test_stream_same_answer_as_complete(kit):
    prompt = "What makes an experiment reproducible?"
    assert "".join(kit.stream(prompt)) == kit.complete(prompt).content


def test_failure_before_first_chunk_falls_back(live_kit, openai_server, anthropic_server):
    openai_server.enqueue_error(429, headers={"retry-after": "0"}, times=2)
    anthropic_server.enqueue(ANTHROPIC_STREAM)
    s = live_kit.stream("tell me", user_id="s1")
    text = "".join(s)
    assert s.completion.provider == "anthropic" and text == s.completion.content and text
    assert [a.status for a in s.completion.attempts] == ["error", "ok"]
    rows = live_kit.usage(request_id=s.completion.request_id).sort_values("attempt")
    assert list(rows.status) == ["error", "ok"]


def test_mid_stream_failure_raises_and_records_partial(live_kit, openai_server, anthropic_server):
    openai_server.enqueue_broken_stream(OPENAI_STREAM, after_events=4)
    s = live_kit.stream("tell me")
    got = []
    with pytest.raises(StreamInterruptedError) as info:
        for chunk in s:
            got.append(chunk)
    assert got and info.value.partial == "".join(got)
    assert len(anthropic_server.requests) == 0  # no second provider: never billed twice
    rows = live_kit.usage()
    assert len(rows) == 1
    row = rows.iloc[0]
    assert row.status == "interrupted" and bool(row.tokens_estimated)
    assert int(row.completion_tokens) > 0 and row.cost_usd > 0
    assert info.value.completion.content == "".join(got)


def test_consumer_stopping_early_is_recorded(kit):
    s = kit.stream("List 8 ideas for prompt experiments")
    for i, _ in enumerate(s):
        if i == 2:
            break
    s.close()
    rows = kit.usage()
    assert list(rows.status) == ["interrupted"] and rows.iloc[0].error_type == "cancelled"


def test_simulated_mid_stream_failure(kit):
    kit.simulated.fail_next(1, "server_error", mid_stream=True)
    s = kit.stream("Explain caching layers in depth")
    with pytest.raises(StreamInterruptedError):
        list(s)
    assert s.text and kit.usage().iloc[0].status == "interrupted"


def test_async_stream_over_both_providers(live_kit, openai_server, anthropic_server):
    openai_server.enqueue(OPENAI_STREAM)
    anthropic_server.enqueue(ANTHROPIC_STREAM)

    async def main():
        out = []
        for providers in (["openai"], ["anthropic"]):
            s = live_kit.astream("stream please", providers=providers)
            text = "".join([c async for c in s])
            out.append((s.completion.provider, text == s.completion.content, bool(text)))
        return out

    assert asyncio.run(main()) == [("openai", True, True), ("anthropic", True, True)]


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
def test_anthropic_stream_dropped_before_any_text_falls_back(live_kit, openai_server, anthropic_server, sync):
    """message_start arrives, then the connection drops: no text reached the user, so the chain moves on."""
    calls = live_kit.simulated.calls
    anthropic_server.enqueue_broken_stream(ANTHROPIC_STREAM, after_events=1)

    async def collect(s):
        return "".join([c async for c in s])

    if sync:
        s = live_kit.stream("tell me", providers=["anthropic", "simulated"])
        text = "".join(s)
    else:
        s = live_kit.astream("tell me", providers=["anthropic", "simulated"])
        text = asyncio.run(collect(s))
    c = s.completion
    assert c.provider == "simulated" and text == c.content and live_kit.simulated.calls == calls + 1
    assert [(a.provider, a.status, a.error_type) for a in c.attempts] == [
        ("anthropic", "error", "connection_error"), ("simulated", "ok", None)]
    rows = live_kit.usage(request_id=c.request_id).sort_values("attempt")
    assert list(rows.status) == ["error", "ok"] and rows.iloc[0].cost_usd is pd.NA  # nothing billed


def test_anthropic_mid_stream_failure_raises_and_records_partial(live_kit, openai_server, anthropic_server):
    events = [e for e in ANTHROPIC_STREAM["response"]["sse"].split("\n\n") if e.strip()]
    first_text = next(i for i, e in enumerate(events) if "text_delta" in e)
    anthropic_server.enqueue_broken_stream(ANTHROPIC_STREAM, after_events=first_text + 1)
    calls = live_kit.simulated.calls
    s = live_kit.stream("tell me", providers=["anthropic", "simulated"])
    got = []
    with pytest.raises(StreamInterruptedError) as info:
        for chunk in s:
            got.append(chunk)
    assert got and info.value.partial == "".join(got) and info.value.provider == "anthropic"
    assert live_kit.simulated.calls == calls  # never sent twice
    rows = live_kit.usage()
    assert len(rows) == 1 and rows.iloc[0].status == "interrupted" and bool(rows.iloc[0].tokens_estimated)
    assert rows.iloc[0].error_type == "connection_error" and rows.iloc[0].cost_usd > 0
