"""Prompt caching: Anthropic's cache_control where asked (sent as the SDK sends it), OpenAI's own
caching, cache reads and writes priced, the saving on the Completion, in the ledger and a chart."""

from __future__ import annotations

import asyncio
import json

import anthropic
import openai
import pytest
from conftest import ANTHROPIC_KEY, OPENAI_KEY

from cognitionos_kit import InvalidRequestError, Kit, LatencyModel
from cognitionos_kit.calls.pricing import PriceBook
from cognitionos_kit.core.types import Usage

SYSTEM = "You are a careful research assistant. " * 60
TURNS = [{"role": "user", "content": "Here is a long paper: " + "lorem ipsum " * 200},
         {"role": "assistant", "content": "Read it."},
         {"role": "user", "content": "Summarise it in one line."}]
EPHEMERAL = {"type": "ephemeral"}


def _text(text: str) -> list[dict]:
    return [{"type": "text", "text": text, "cache_control": EPHEMERAL}]


@pytest.mark.parametrize("cache_prompt, system, messages", [
    (True, _text(SYSTEM), [TURNS[0], TURNS[1], {"role": "user", "content": _text(TURNS[2]["content"])}]),
    ("system", _text(SYSTEM), TURNS),
    ([0], SYSTEM, [{"role": "user", "content": _text(TURNS[0]["content"])}, TURNS[1], TURNS[2]]),
])
def test_anthropic_cache_control_is_what_messages_create_sends(live_kit, anthropic_server, cache_prompt, system,
                                                               messages):
    live_kit.complete(TURNS, system=SYSTEM, model="claude-haiku-5-5", providers=["anthropic"], cache_prompt=cache_prompt)
    kit_body = anthropic_server.requests[-1].body
    client = anthropic.Anthropic(api_key=ANTHROPIC_KEY, base_url=anthropic_server.base_url, max_retries=0)
    client.messages.create(model="claude-haiku-5-5", max_tokens=1024, system=system, messages=messages)
    assert kit_body == anthropic_server.requests[-1].body


def _anthropic_reply(read: int, written: int) -> bytes:
    return json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-5-5",
                       "content": [{"type": "text", "text": "One line."}], "stop_reason": "end_turn",
                       "usage": {"input_tokens": 20, "output_tokens": 4, "cache_read_input_tokens": read,
                                 "cache_creation_input_tokens": written}}).encode()


def test_anthropic_cache_write_then_read_priced_and_saving_shown(live_kit, anthropic_server):
    book = PriceBook()
    anthropic_server.enqueue_raw(200, "application/json", _anthropic_reply(0, 1500))
    anthropic_server.enqueue_raw(200, "application/json", _anthropic_reply(1500, 0))
    first = live_kit.complete(TURNS, system=SYSTEM, model="claude-haiku-5-5", providers=["anthropic"], cache_prompt=True)
    second = live_kit.complete(TURNS, system=SYSTEM, model="claude-haiku-5-5", providers=["anthropic"],
                               cache_prompt=True)
    plain = book.cost("anthropic", "claude-haiku-5-5", Usage(prompt_tokens=1520, completion_tokens=4)).cost_usd
    assert first.cache_write_tokens == 1500 and first.cache_saving_usd == pytest.approx(plain - first.cost_usd)
    assert first.cache_saving_usd < 0 < second.cache_saving_usd  # a write costs more, a read less
    assert second.cached_tokens == 1500 and second.cache_saving_usd == pytest.approx(plain - second.cost_usd)
    assert "cache 1500 read" in second.footer() and "saved $" in second.footer()
    rows = live_kit.usage().sort_values("ts")
    assert rows.cache_saving_usd.tolist() == pytest.approx([first.cache_saving_usd, second.cache_saving_usd])
    fig = live_kit.charts.prompt_cache()
    assert fig.data[0].x == ("anthropic/claude-haiku-5-5",)
    assert fig.data[0].y[0] == pytest.approx(first.cache_saving_usd + second.cache_saving_usd)


def test_openai_caches_by_itself_and_its_reads_are_priced(live_kit, openai_server):
    live_kit.complete(TURNS, system=SYSTEM, model="gpt-4o-mini", providers=["openai"], cache_prompt=True)
    kit_body = openai_server.requests[-1].body
    client = openai.OpenAI(api_key=OPENAI_KEY, base_url=openai_server.base_url, max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", max_tokens=1024,
                                   messages=[{"role": "system", "content": SYSTEM}, *TURNS])
    assert kit_body == openai_server.requests[-1].body  # nothing to send: OpenAI caches long prefixes itself
    reply = {"id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
             "choices": [{"index": 0, "message": {"role": "assistant", "content": "One line."}, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 1600, "completion_tokens": 4, "total_tokens": 1604,
                       "prompt_tokens_details": {"cached_tokens": 1536}}}
    openai_server.enqueue_raw(200, "application/json", json.dumps(reply).encode())
    r = live_kit.complete(TURNS, system=SYSTEM, model="gpt-4o-mini", providers=["openai"])
    plain = PriceBook().cost("openai", "gpt-4o-mini", Usage(prompt_tokens=1600, completion_tokens=4)).cost_usd
    assert r.cached_tokens == 1536 and r.cache_saving_usd == pytest.approx(plain - r.cost_usd) and r.cache_saving_usd > 0


@pytest.mark.parametrize("cache_prompt, fragment", [
    ("all", "cache_prompt must be True, 'system' or a list of message indices"),
    ([1.5], "cache_prompt must be True"),
    ([7], "message indices must be within the 3 message"),
    ([0, 1, 2, -1, -2], "at most 4 places"),
])
def test_bad_cache_places_are_refused_before_sending(kit, cache_prompt, fragment):
    with pytest.raises(InvalidRequestError, match=fragment):
        kit.complete(TURNS, cache_prompt=cache_prompt)
    assert kit.usage().empty


def test_simulated_prompt_cache_reads_the_second_time_alike_in_every_mode(tmp_path):
    outcomes = []
    for mode in ("sync", "async", "stream"):
        kit = Kit(tmp_path / mode, dotenv=False, simulated_latency=LatencyModel(scale=0))
        got = []
        for _ in range(2):
            if mode == "sync":
                r = kit.complete(TURNS, system=SYSTEM, cache_prompt=True)
            elif mode == "async":
                r = asyncio.run(kit.acomplete(TURNS, system=SYSTEM, cache_prompt=True))
            else:
                s = kit.stream(TURNS, system=SYSTEM, cache_prompt=True)
                "".join(s)
                r = s.completion
            got.append((r.cached_tokens, r.cache_write_tokens, round(r.cache_saving_usd, 12), r.cost_usd))
        outcomes.append(got)
        kit.close()
    assert outcomes[0] == outcomes[1] == outcomes[2]
    (read1, write1, saving1, _), (read2, write2, saving2, _) = outcomes[0]
    assert read1 == 0 < write1 == read2 and write2 == 0 and saving1 < 0 < saving2
