"""Tool calls: schemas from type hints and docstrings, r.tool_calls from both wire formats (plain
and streamed, read from recorded exchanges), run_tools looping until the model answers with
every model turn a ledger row under one trace id, tool errors sent back to the model, max_steps,
the simulated provider calling tools deterministically, and sync/async/stream parity."""

from __future__ import annotations

import asyncio
import json
from typing import Literal

import anthropic
import openai
import pytest
from conftest import ANTHROPIC_KEY, OPENAI_KEY
from loopback import load_fixtures

from cognitionos_kit import InvalidRequestError, Kit, LatencyModel, ToolCall, ToolLoopError, tool

RECORDED = json.loads((__import__("pathlib").Path(__file__).parent / "fixtures" / "recorded-api-traffic.json").read_text())


def get_capital(country: str) -> str:
    """Get the capital of a country.

    Args:
        country: The country name.
    """
    return {"France": "Paris", "England": "London", "UK": "London"}.get(country, "unknown")


def get_user_country() -> str:
    return "Mexico"


def get_weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> dict:
    """Get the current weather for a city.

    Args:
        city: The city's name.
        unit: Which scale to answer in.
    """
    return {"city": city, "temperature": 18 if unit == "celsius" else 64, "unit": unit}


def divide(a: int, b: int) -> float:
    """Divide one number by another.

    Args:
        a: The dividend.
        b: The divisor.
    """
    return a / b


def _openai_text(text: str, prompt_tokens: int = 40, completion_tokens: int = 9) -> bytes:
    return json.dumps({"id": "c2", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                 "total_tokens": prompt_tokens + completion_tokens}}).encode()


def _anthropic_text(text: str) -> bytes:
    return json.dumps({"id": "msg_2", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
                       "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                       "usage": {"input_tokens": 820, "output_tokens": 14}}).encode()


def _sim_kit(path, **kw) -> Kit:
    return Kit(path, dotenv=False, seed=3, simulated_latency=LatencyModel(scale=0), **kw)


# --- schemas ----------------------------------------------------------------------------------
def test_a_function_schema_is_what_pydantic_ai_sent_in_the_recorded_exchange():
    recorded = RECORDED[69]["request"]["tools"][0]["function"]  # pydantic-ai's get_capital, as sent to OpenAI
    spec = tool(get_capital).spec
    assert spec.name == recorded["name"] and spec.description == recorded["description"]
    assert spec.parameters == recorded["parameters"]


def test_schemas_carry_types_defaults_enums_and_parameter_docs():
    p = tool(get_weather).spec.parameters
    assert p["required"] == ["city"] and p["additionalProperties"] is False
    assert p["properties"]["city"] == {"type": "string", "description": "The city's name."}
    assert p["properties"]["unit"]["enum"] == ["celsius", "fahrenheit"] and p["properties"]["unit"]["default"] == "celsius"
    assert tool(get_user_country).spec.parameters["properties"] == {}
    named = tool(name="weather_now", description="Weather, now.")(get_weather)
    assert named.spec.name == "weather_now" and named.spec.description == "Weather, now."


@pytest.mark.parametrize("options, fragment", [
    (dict(tools=[lambda *a: 1]), "a tool name must be 1-64 letters"),
    (dict(tools=[divide, print]), "cannot read the signature|\\*args and \\*\\*kwargs"),
    (dict(tools=[get_capital, tool(name="get_capital")(divide)]), "two tools are named get_capital"),
    (dict(tools=[get_capital], tool_choice="get_weather"), "tool_choice must be auto, required, none or a tool's name"),
    (dict(tool_choice="auto"), "tool_choice needs tools="),
    (dict(run_tools=True), "run_tools needs tools="),
    (dict(tools=[{"name": "lookup", "parameters": {"type": "object"}}], run_tools=True), "lookup is a JSON-schema tool"),
    (dict(tools=[{"name": "bad name!", "parameters": {"type": "object"}}]), "a tool name must be"),
    (dict(tools=[{"name": "x", "parameters": {"type": "object", "properties": {"a": {"type": "nope"}}}}]),
     "not a valid JSON schema"),
    (dict(tools=[get_capital], max_steps=0), "max_steps must be"),
    (dict(tools=[], ), "tools is empty"),
    (dict(tools=[get_capital], extra_body={"tools": []}), "extra_body may not set tools"),
])
def test_bad_tool_options_fail_before_anything_is_sent(tmp_path, options, fragment):
    kit = _sim_kit(tmp_path)
    with pytest.raises(InvalidRequestError, match=fragment):
        kit.complete("What is the capital of France?", **options)
    assert kit.simulated.calls == 0 and len(kit.usage()) == 0


# --- OpenAI -----------------------------------------------------------------------------------
def test_openai_request_matches_the_sdk_and_the_recorded_multi_turn_exchange(live_kit, openai_server):
    entry = RECORDED[69]  # a conversation holding earlier tool calls and results, answered in text
    openai_server.enqueue(entry)
    r = live_kit.complete(entry["request"]["messages"], model="gpt-4o-mini", providers=["openai"], tools=[get_capital],
                          tool_choice="auto")
    assert r.content == "The capital of England is London." and r.tool_calls == []
    assert r.prompt_tokens == 129 and r.completion_tokens == 9
    kit_body = openai_server.requests[-1].body
    for key in ("messages", "tools", "tool_choice", "model"):
        assert kit_body[key] == entry["request"][key], key
    openai_server.enqueue(entry)
    client = openai.OpenAI(api_key=OPENAI_KEY, base_url=openai_server.base_url, max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", max_tokens=1024, messages=entry["request"]["messages"],
                                   tools=entry["request"]["tools"], tool_choice="auto")
    assert kit_body == openai_server.requests[-1].body


def test_openai_tool_call_runs_and_its_result_goes_back(live_kit, openai_server):
    openai_server.enqueue(RECORDED[68])  # gpt-4o asks for get_user_country()
    openai_server.enqueue_raw(200, "application/json", _openai_text("The largest city in Mexico is Mexico City."))
    r = live_kit.complete("What is the largest city in the user country?", model="gpt-4o", providers=["openai"],
                          tools=[get_user_country], run_tools=True)
    assert r.content == "The largest city in Mexico is Mexico City."
    first, second = (q.body for q in openai_server.requests[-2:])
    assert first["tools"] == [{"type": "function", "function": {
        "name": "get_user_country", "description": "", "parameters": {
            "additionalProperties": False, "properties": {}, "required": [], "type": "object"}}}]
    call_id = "call_iXFttys57ap0o16JSlC8yhYo"
    assert second["messages"][1:] == [
        {"role": "assistant", "tool_calls": [{"id": call_id, "type": "function",
                                              "function": {"name": "get_user_country", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "Mexico"}]
    assert [s.tool_calls for s in r.steps] == [[ToolCall(call_id, "get_user_country", "{}")], []]
    assert r.tool_results[0].output == "Mexico" and r.tool_results[0].ok
    rows = live_kit.usage().sort_values("ts")
    assert rows.trace_id.nunique() == 1 and rows.trace_id.iloc[0] == r.trace_id and len(rows) == 2
    assert rows.tool_calls.tolist()[0] == 1 and rows.request_id.nunique() == 2
    assert rows.prompt_tokens.tolist() == [68, 40]  # the recorded usage of the first turn, then the second's
    assert r.total_cost_usd == pytest.approx(rows.cost_usd.sum()) and r.total_cost_usd > r.cost_usd
    assert "2 turns, 1 tool run(s)" in r.footer()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_openai_streamed_tool_call_is_assembled_from_its_deltas(live_kit, openai_server, mode):
    entry = RECORDED[76]  # gpt-4o-mini streams get_capital({"country": "UK"}) in five argument pieces
    openai_server.enqueue(entry)
    if mode == "sync":
        s = live_kit.stream(entry["request"]["messages"][0]["content"], model="gpt-4o-mini", providers=["openai"],
                            tools=[get_capital])
        assert "".join(s) == ""
    else:
        async def go():
            s = live_kit.astream(entry["request"]["messages"][0]["content"], model="gpt-4o-mini", providers=["openai"],
                                 tools=[get_capital])
            assert [c async for c in s] == []
            return s
        s = asyncio.run(go())
    c = s.completion
    assert c.tool_calls == [ToolCall("call_ZR5UUuTt3pf61kjwAJIYdVMj", "get_capital", '{"country":"UK"}')]
    assert c.tool_calls[0].arguments == {"country": "UK"} and c.finish_reason == "tool_calls"
    assert (c.prompt_tokens, c.completion_tokens) == (53, 15) and not c.tokens_estimated


def test_openai_stream_runs_tools_between_turns(live_kit, openai_server):
    openai_server.enqueue(RECORDED[76])
    openai_server.enqueue(load_fixtures("openai", stream=True, tools=False)[0])  # a streamed text answer
    s = live_kit.stream("What is the capital of the UK? Use the tool, then answer.", model="gpt-4o-mini",
                        providers=["openai"], tools=[get_capital], run_tools=True)
    text = "".join(s)
    assert text and text == s.completion.content
    assert openai_server.requests[-1].body["messages"][-1] == {
        "role": "tool", "tool_call_id": "call_ZR5UUuTt3pf61kjwAJIYdVMj", "content": "London"}
    assert len(s.completion.steps) == 2 and live_kit.usage().trace_id.nunique() == 1


# --- Anthropic --------------------------------------------------------------------------------
def test_anthropic_tool_use_runs_and_the_result_goes_back_as_recorded(live_kit, anthropic_server):
    anthropic_server.enqueue(RECORDED[36])  # claude asks for get_weather({"city": "Paris"})
    anthropic_server.enqueue_raw(200, "application/json", _anthropic_text("It is 18 degrees in Paris."))
    r = live_kit.complete("Get weather for Paris and summarize", model="claude-sonnet-4-5", providers=["anthropic"],
                          tools=[get_weather], tool_choice="required", run_tools=True)
    assert r.content == "It is 18 degrees in Paris."
    first, second = (q.body for q in anthropic_server.requests[-2:])
    assert first["tool_choice"] == {"type": "any"}
    tool_id = "toolu_01ALzezEGs8tF6RPL5m4hRZA"
    result = json.dumps({"city": "Paris", "temperature": 18, "unit": "celsius"})
    # the shape of the recorded follow-up (fixture 37): tool_use in the assistant turn, tool_result in a user turn
    assert second["messages"][1:] == [
        {"role": "assistant", "content": [{"type": "tool_use", "id": tool_id, "name": "get_weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": result,
                                      "is_error": False}]}]
    recorded = RECORDED[37]["request"]["messages"][2]["content"][0]
    assert set(second["messages"][2]["content"][0]) == set(recorded)
    rows = live_kit.usage()
    assert len(rows) == 2 and rows.trace_id.nunique() == 1 and sorted(rows.prompt_tokens) == [732, 820]


def test_anthropic_request_matches_the_sdk(live_kit, anthropic_server):
    anthropic_server.enqueue(RECORDED[36])
    r = live_kit.complete("Get weather for Paris and summarize", model="claude-sonnet-4-5", providers=["anthropic"],
                          tools=[get_weather], tool_choice="get_weather")
    assert r.tool_calls[0].arguments == {"city": "Paris"} and r.finish_reason == "tool_use" and r.content == ""
    kit_body = anthropic_server.requests[-1].body
    anthropic_server.enqueue(RECORDED[36])
    client = anthropic.Anthropic(api_key=ANTHROPIC_KEY, base_url=anthropic_server.base_url, max_retries=0)
    spec = tool(get_weather).spec
    client.messages.create(model="claude-sonnet-4-5", max_tokens=1024,
                           messages=[{"role": "user", "content": "Get weather for Paris and summarize"}],
                           tools=[{"name": spec.name, "description": spec.description, "input_schema": spec.parameters}],
                           tool_choice={"type": "tool", "name": "get_weather"})
    assert kit_body == anthropic_server.requests[-1].body


def test_anthropic_streamed_tool_use_skips_server_tools(live_kit, anthropic_server):
    entry = RECORDED[40]  # text, a server-side tool search, more text, then get_exchange_rate's input in pieces

    def get_exchange_rate(from_currency: str, to_currency: str) -> float:
        """Look up the current exchange rate between two currencies."""
        return 0.92

    anthropic_server.enqueue(entry)
    s = live_kit.stream("What is the current USD to EUR exchange rate?", model="claude-sonnet-4-6",
                        providers=["anthropic"], tools=[get_exchange_rate])
    text = "".join(s)
    assert text.startswith("Let me search") and "I found the right tool!" in text
    c = s.completion
    assert [(t.id, t.name, t.arguments) for t in c.tool_calls] == [
        ("toolu_01EFn5wTNBYA8Reni8rbmnHT", "get_exchange_rate", {"from_currency": "USD", "to_currency": "EUR"})]
    assert c.completion_tokens == 175 and c.finish_reason == "tool_use"


def test_a_tool_turn_falls_back_across_vendors_and_the_history_follows(live_kit, openai_server, anthropic_server):
    openai_server.enqueue_error(500, times=2)  # the first turn: OpenAI down (one SDK retry), Anthropic asks for the tool
    anthropic_server.enqueue(RECORDED[36])
    openai_server.enqueue_raw(200, "application/json", _openai_text("Paris: 18 degrees."))
    r = live_kit.complete("Get weather for Paris and summarize", role="executor", tools=[get_weather], run_tools=True)
    assert r.content == "Paris: 18 degrees." and r.steps[0].provider == "anthropic" and r.steps[0].substituted
    sent = openai_server.requests[-1].body["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "toolu_01ALzezEGs8tF6RPL5m4hRZA"
    assert sent[2]["tool_call_id"] == "toolu_01ALzezEGs8tF6RPL5m4hRZA"
    rows = live_kit.usage()
    assert set(rows.status) == {"ok", "error"} and rows.trace_id.nunique() == 1 and len(rows) == 3


# --- the loop, offline --------------------------------------------------------------------------
def test_a_tool_error_goes_back_to_the_model(tmp_path):
    kit = _sim_kit(tmp_path)
    r = kit.complete("Divide 1 by 0 with the divide tool", tools=[divide], run_tools=True)
    (res,) = r.tool_results
    assert res.call.arguments == {"a": 1, "b": 0} and not res.ok and res.error.startswith("ZeroDivisionError")
    assert r.messages[2] == {"role": "tool", "content": "Error: ZeroDivisionError: division by zero",
                             "tool_call_id": res.call.id, "name": "divide"}
    assert "divide failed" in r.content  # the simulated model saw the error


def test_wrong_arguments_and_unknown_tools_are_errors_for_the_model(tmp_path):
    kit = _sim_kit(tmp_path)
    from cognitionos_kit.calls.tools import make_tools
    from cognitionos_kit.calls.turns import ToolBatch

    batch = ToolBatch([ToolCall.of("c1", "divide", {"a": "one", "b": 2}), ToolCall.of("c2", "divide", "{not json"),
                       ToolCall.of("c3", "nope", {})], {t.name: t for t in make_tools([divide])})
    batch.run()
    errors = [r.error for r in batch.results]
    assert "invalid arguments for divide: a:" in errors[0] and "not valid JSON" in errors[1]
    assert "no tool named 'nope'" in errors[2] and "divide" in errors[2]
    asyncio.run(batch.arun())
    assert [r.error for r in batch.results] == errors
    kit.close()


def test_max_steps_stops_a_loop_that_never_answers(tmp_path):
    kit = _sim_kit(tmp_path)
    with pytest.raises(ToolLoopError, match="after max_steps=3 model turns") as info:
        kit.complete("Capital of France?", tools=[get_capital], tool_choice="required", run_tools=True, max_steps=3)
    c = info.value.completion
    assert len(c.steps) == 3 and len(c.tool_results) == 2
    rows = kit.usage()
    assert len(rows) == 3 and rows.trace_id.nunique() == 1 and rows.trace_id.iloc[0] == c.trace_id


def test_simulated_tool_calls_are_deterministic_and_follow_tool_choice(tmp_path):
    kit = _sim_kit(tmp_path)
    a = kit.complete("What's the weather in New York?", tools=[get_capital, get_weather])
    b = kit.complete("What's the weather in New York?", tools=[get_capital, get_weather])
    assert a.tool_calls == b.tool_calls and a.tool_calls[0].name == "get_weather"
    assert a.tool_calls[0].arguments == {"city": "New York"}
    assert kit.complete("Tell me a story", tools=[get_weather]).tool_calls == []  # nothing fits: it answers
    assert kit.complete("Tell me a story", tools=[get_weather], tool_choice="required").tool_calls[0].name == "get_weather"
    assert kit.complete("What's the weather in Oslo?", tools=[get_weather], tool_choice="none").tool_calls == []
    forced = kit.complete("What's the weather in Oslo?", tools=[get_capital, get_weather], tool_choice="get_capital")
    assert forced.tool_calls[0].name == "get_capital" and forced.tool_calls[0].arguments == {"country": "Oslo"}


async def _async_capital(country: str) -> str:
    """Get the capital of a country (asynchronously)."""
    await asyncio.sleep(0)
    return get_capital(country)


def test_sync_async_and_stream_give_the_same_turns_and_rows(tmp_path):
    got = []
    for mode in ("sync", "async", "stream"):
        kit = _sim_kit(tmp_path / mode)
        opts = dict(tools=[_async_capital, get_weather], run_tools=True)
        if mode == "sync":
            r = kit.complete("What is the capital of France?", **opts)
        elif mode == "async":
            r = asyncio.run(kit.acomplete("What is the capital of France?", **opts))
        else:
            s = kit.stream("What is the capital of France?", **opts)
            assert "".join(s) == s.completion.content
            r = s.completion
        rows = kit.usage().sort_values("ts")
        got.append((r.content, [t.output for t in r.tool_results], r.messages,
                    rows[["prompt_tokens", "completion_tokens", "tool_calls", "cost_usd"]].to_dict("list")))
        assert rows.trace_id.nunique() == 1
        kit.close()
    assert got[0] == got[1] == got[2]
    assert got[0][1] == ["Paris"] and "Paris" in got[0][0]


def test_a_json_schema_tool_is_described_but_left_to_the_caller(tmp_path):
    kit = _sim_kit(tmp_path)
    schema_tool = {"type": "function", "function": {"name": "lookup_order", "description": "Find an order by number.",
                                                    "parameters": {"type": "object", "required": ["number"],
                                                                   "properties": {"number": {"type": "integer"}}}}}
    r = kit.complete("Find order 4512 for me", tools=[schema_tool])
    assert r.tool_calls[0].name == "lookup_order" and r.tool_calls[0].arguments == {"number": 4512}
    follow = r.messages + [{"role": "tool", "tool_call_id": r.tool_calls[0].id, "content": "shipped"}]
    done = kit.complete(follow, tools=[schema_tool])
    assert "lookup_order says shipped" in done.content
    with pytest.raises(InvalidRequestError, match="did not ask for"):
        kit.complete([{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "x", "content": "1"}])


def test_tool_definitions_count_towards_the_prompt_before_sending(tmp_path):
    kit = _sim_kit(tmp_path)
    plain = kit.plan("What is the capital of France?", max_cost=1.0)
    with_tools = kit.plan("What is the capital of France?", max_cost=1.0, tools=[get_capital, get_weather])
    from cognitionos_kit.calls.plan import request_tokens

    a, b = (request_tokens(p.steps[0].request, "gpt-4o") for p in (plain, with_tools))
    assert b > a + 40  # two tool schemas
    r = kit.complete("What is the capital of France?", tools=[get_capital, get_weather])
    assert r.prompt_tokens == b or r.prompt_tokens == request_tokens(with_tools.steps[0].request, r.model)


def test_a_chat_keeps_the_tool_turns_in_its_history(tmp_path):
    kit = _sim_kit(tmp_path)
    chat = kit.chat(tools=[get_weather], run_tools=True)
    first = chat.send("What's the weather in Paris?")
    assert "Paris" in first.content and [m["role"] for m in chat.history] == ["user", "assistant", "tool", "assistant"]
    second = chat.send("And the weather in Oslo?")
    assert [m["role"] for m in chat.history][4:] == ["user", "assistant", "tool", "assistant"]
    assert second.tool_results[0].call.arguments == {"city": "Oslo"}
    assert chat.questions == ["What's the weather in Paris?", "And the weather in Oslo?"] and "Oslo" in repr(chat)
    assert chat.cost_usd == pytest.approx(first.total_cost_usd + second.total_cost_usd) == kit.usage().cost_usd.sum()
    assert first.total_cost_usd > first.cost_usd  # the tool-call turn is paid for too


# --- replies the kit cannot use ---------------------------------------------------------------
@pytest.mark.parametrize("tool_calls", [
    "not a list",
    [{"type": "function", "function": {"name": "get_capital", "arguments": "{}"}}],  # no id
    [{"id": "call_1", "type": "function"}],  # no function
])
def test_a_malformed_openai_tool_call_is_a_bad_response_that_falls_back(live_kit, openai_server, anthropic_server,
                                                                         tool_calls):
    body = {"id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": tool_calls},
                         "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 50, "completion_tokens": 5}}
    openai_server.enqueue_raw(200, "application/json", json.dumps(body).encode())
    anthropic_server.enqueue(RECORDED[36])
    r = live_kit.complete("Get weather for Paris and summarize", role="executor", tools=[get_weather])
    assert [a.error_type for a in r.attempts] == ["bad_response", None] and r.provider == "anthropic"
    assert r.tool_calls[0].name == "get_weather"


def test_a_stream_cut_inside_a_tool_call_is_incomplete_not_a_call(live_kit, openai_server, anthropic_server):
    from loopback import sse_events

    events = sse_events(RECORDED[76]["response"]["sse"])[:4]  # the call's name and half its arguments, no finish
    openai_server.enqueue_sse(events)
    anthropic_server.enqueue(RECORDED[40])  # a streamed tool_use
    s = live_kit.stream("What is the capital of the UK?", role="executor", tools=[get_capital])
    assert "".join(s).startswith("Let me search")
    c = s.completion
    assert [a.error_type for a in c.attempts] == ["incomplete_stream", None] and c.provider == "anthropic"
    assert [t.name for t in c.tool_calls] == ["get_exchange_rate"]  # only the complete call


def test_anthropic_tool_use_without_an_id_is_a_bad_response(live_kit, anthropic_server):
    body = dict(RECORDED[36]["response"]["json"], content=[{"type": "tool_use", "name": "get_weather", "input": {}}])
    anthropic_server.enqueue_raw(200, "application/json", json.dumps(body).encode())
    from cognitionos_kit import AllProvidersFailedError

    with pytest.raises(AllProvidersFailedError, match="bad_response"):
        live_kit.complete("Weather in Paris?", model="claude-sonnet-4-5", providers=["anthropic"], tools=[get_weather])
