"""kit.chat(): the history goes with every turn (on the wire), each turn is costed and ledgered,
a failed turn leaves the history as it was, sync, async and streaming alike."""

from __future__ import annotations

import asyncio

import pytest

from cognitionos_kit import AllProvidersFailedError, InvalidRequestError, Kit, LatencyModel


def test_each_turn_carries_the_history_and_is_costed(live_kit, openai_server):
    chat = live_kit.chat(system="Answer in one sentence.", model="gpt-4o-mini", user_id="ana")
    first = chat.send("What is DuckDB?")
    second = chat.send("And what is it good for?")
    body = openai_server.requests[-1].body
    assert body["messages"] == [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "What is DuckDB?"},
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": "And what is it good for?"},
    ]
    assert chat.history[-1] == {"role": "assistant", "content": second.content} and len(chat) == 2
    assert chat.cost_usd == pytest.approx(first.cost_usd + second.cost_usd) and chat.cost_usd > 0
    rows = live_kit.usage()
    assert len(rows) == 2 and set(rows.user_id) == {"ana"} and rows.cost_usd.sum() == pytest.approx(chat.cost_usd)
    assert "2 turn(s)" in repr(chat) and "What is DuckDB?" in chat._repr_html_()


def test_a_failed_turn_leaves_the_history_unchanged(make_live_kit, openai_server):
    kit = make_live_kit(providers=["openai"])
    chat = kit.chat(model="gpt-4o-mini")
    chat.send("Hello")
    openai_server.enqueue_error(500, headers={"retry-after-ms": "5"}, times=2)
    with pytest.raises(AllProvidersFailedError):
        chat.send("Are you there?")
    assert len(chat.history) == 2 and len(chat) == 1
    chat.send("Are you there?")
    assert [m["role"] for m in chat.history] == ["user", "assistant", "user", "assistant"]


def test_chat_options_are_checked_at_once(kit):
    with pytest.raises(InvalidRequestError, match="unknown role"):
        kit.chat(role="poet")
    chat = kit.chat()
    with pytest.raises(InvalidRequestError, match="needs some text"):
        chat.send("   ")
    with pytest.raises(InvalidRequestError, match="system prompt is set by kit.chat"):
        chat.send("hi", system="other")
    assert kit.usage().empty


def test_sync_async_and_streamed_chats_end_alike(tmp_path):
    transcripts = []
    for mode in ("sync", "async", "stream", "astream"):
        kit = Kit(tmp_path / mode, dotenv=False, simulated_latency=LatencyModel(scale=0))
        chat = kit.chat(system="Be brief.", role="executor")
        for q in ("Name a colour.", "Another one?"):
            if mode == "sync":
                chat.send(q)
            elif mode == "async":
                asyncio.run(chat.asend(q))
            elif mode == "stream":
                assert "".join(chat.stream(q)) == chat.turns[-1].content
            else:
                async def consume(q=q, chat=chat):
                    return "".join([c async for c in chat.astream(q)])
                assert asyncio.run(consume()) == chat.turns[-1].content
        rows = kit.usage().sort_values("ts")
        transcripts.append((chat.history, round(chat.cost_usd, 12), rows.prompt_tokens.tolist()))
        kit.close()
    assert all(t == transcripts[0] for t in transcripts)
    history, _, prompt_tokens = transcripts[0]
    assert len(history) == 4 and prompt_tokens[1] > prompt_tokens[0]  # the second turn sends the first
