"""Structured outputs: output=Model (or a JSON schema) asked as each SDK's parse() asks, the answer
parsed onto r.output, a misfit a StructuredOutputError holding the raw text, output_retries asking
again with the error (one ledger row per ask), the simulated provider answering schema-valid JSON."""

from __future__ import annotations

import asyncio
import json

import anthropic
import openai
import pydantic
import pytest
from conftest import ANTHROPIC_KEY, OPENAI_KEY

from cognitionos_kit import InvalidRequestError, Kit, KitError, LatencyModel
from cognitionos_kit.calls.structured import StructuredOutputError

PROMPT = "Give the title and year of one classic database paper."


class Paper(pydantic.BaseModel):
    title: str
    year: int = pydantic.Field(ge=1900, le=2100)
    tags: list[str] = []


SCHEMA = {"title": "Verdict", "type": "object", "required": ["ok", "score"], "additionalProperties": False,
          "properties": {"ok": {"type": "boolean"}, "score": {"type": "integer", "minimum": 1, "maximum": 5}}}


def _openai_reply(content: str) -> bytes:
    return json.dumps({"id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}}).encode()


def _anthropic_reply(content: str) -> bytes:
    return json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-5-5",
                       "content": [{"type": "text", "text": content}], "stop_reason": "end_turn",
                       "usage": {"input_tokens": 30, "output_tokens": 12}}).encode()


GOOD = json.dumps({"title": "A Relational Model of Data", "year": 1970, "tags": ["relational"]})


def test_openai_asks_as_parse_does_and_the_answer_is_parsed(live_kit, openai_server):
    openai_server.enqueue_raw(200, "application/json", _openai_reply(GOOD))
    r = live_kit.complete(PROMPT, model="gpt-4o-mini", output=Paper, providers=["openai"])
    assert isinstance(r.output, Paper) and r.output.year == 1970
    kit_body = openai_server.requests[-1].body
    openai_server.enqueue_raw(200, "application/json", _openai_reply(GOOD))
    client = openai.OpenAI(api_key=OPENAI_KEY, base_url=openai_server.base_url, max_retries=0)
    client.chat.completions.parse(model="gpt-4o-mini", max_tokens=1024, response_format=Paper,
                                  messages=[{"role": "user", "content": PROMPT}])
    sdk_body = dict(openai_server.requests[-1].body)
    assert sdk_body.pop("stream") is False  # parse() spells out the default the kit leaves implicit
    assert kit_body == sdk_body


def test_anthropic_asks_as_parse_does_and_the_answer_is_parsed(live_kit, anthropic_server):
    anthropic_server.enqueue_raw(200, "application/json", _anthropic_reply(GOOD))
    r = live_kit.complete(PROMPT, model="claude-haiku-5-5", output=Paper, providers=["anthropic"],
                          reasoning_effort="low")
    assert r.output == Paper(title="A Relational Model of Data", year=1970, tags=["relational"])
    kit_body = anthropic_server.requests[-1].body
    anthropic_server.enqueue_raw(200, "application/json", _anthropic_reply(GOOD))
    client = anthropic.Anthropic(api_key=ANTHROPIC_KEY, base_url=anthropic_server.base_url, max_retries=0)
    client.messages.parse(model="claude-haiku-5-5", max_tokens=1024, output_format=Paper,
                          output_config={"effort": "low"}, messages=[{"role": "user", "content": PROMPT}])
    assert kit_body == anthropic_server.requests[-1].body


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_misfit_is_asked_again_with_the_error_then_raises_with_the_raw_text(live_kit, openai_server, mode):
    bad = json.dumps({"title": "Too old", "year": 1066})
    openai_server.enqueue_raw(200, "application/json", _openai_reply(bad))
    openai_server.enqueue_raw(200, "application/json", _openai_reply(GOOD))
    ask = (lambda **kw: live_kit.complete(PROMPT, model="gpt-4o-mini", providers=["openai"], output=Paper, **kw)) \
        if mode == "sync" else (lambda **kw: asyncio.run(
            live_kit.acomplete(PROMPT, model="gpt-4o-mini", providers=["openai"], output=Paper, **kw)))
    r = ask(output_retries=1)
    assert r.output.year == 1970
    second = openai_server.requests[-1].body["messages"]
    assert second[1] == {"role": "assistant", "content": bad}
    assert "does not fit the required Paper schema" in second[2]["content"] and "year" in second[2]["content"]
    assert len(live_kit.usage()) == 2  # each ask is its own ledger row
    openai_server.enqueue_raw(200, "application/json", _openai_reply("Sure! Here it is: {"))
    with pytest.raises(StructuredOutputError, match="does not fit Paper after 1 ask") as info:
        ask()
    assert isinstance(info.value, KitError) and info.value.raw == "Sure! Here it is: {"
    assert info.value.completion is not None and info.value.completion.cost_usd > 0  # paid for, and recorded
    assert len(live_kit.usage()) == 3


@pytest.mark.parametrize("output", [Paper, SCHEMA])
def test_simulated_answers_fit_and_are_the_same_in_every_mode(tmp_path, output):
    outputs = []
    for mode in ("sync", "async", "stream"):
        kit = Kit(tmp_path / mode, dotenv=False, seed=11, simulated_latency=LatencyModel(scale=0))
        if mode == "sync":
            r = kit.complete(PROMPT, output=output)
        elif mode == "async":
            r = asyncio.run(kit.acomplete(PROMPT, output=output))
        else:
            s = kit.stream(PROMPT, output=output)
            "".join(s)
            r = s.completion
        outputs.append((r.output, r.content, kit.usage().completion_tokens.tolist()))
        kit.close()
    assert outputs[0] == outputs[1] == outputs[2]
    value = outputs[0][0]
    if output is Paper:
        assert isinstance(value, Paper) and 1900 <= value.year <= 2100
    else:
        assert set(value) == {"ok", "score"} and 1 <= value["score"] <= 5


@pytest.mark.parametrize("options, fragment", [
    ({"output": int}, "output must be a pydantic model class or a JSON schema dict"),
    ({"output": {"type": "nonsense"}}, "output is not a valid JSON schema"),
    ({"output_retries": 2}, "output_retries needs output="),
    ({"output": Paper, "output_retries": -1}, "output_retries must be a whole number from 0 to 10"),
])
def test_bad_output_requests_fail_before_sending(kit, options, fragment):
    with pytest.raises(InvalidRequestError, match=fragment):
        kit.complete(PROMPT, **options)
    assert kit.usage().empty
