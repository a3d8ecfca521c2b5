"""Every sampling setting: sent as each official SDK sends it, refused before sending where the
first provider does not take it, dropped (and said so) on a fallback provider without it, read
back (log-probabilities, reasoning and thinking tokens) sync, async and streaming."""

from __future__ import annotations

import asyncio
import json

import anthropic
import openai
import pandas as pd
import pytest
from conftest import ANTHROPIC_KEY, OPENAI_KEY

from cognitionos_kit import InvalidRequestError, Kit, KitWarning, LatencyModel
from cognitionos_kit.calls.options import CallOptions
from cognitionos_kit.core.types import ProviderRequest
from cognitionos_kit.storage.cache import cache_key

PROMPT = "Name a primary colour."


def _body(server):
    return server.requests[-1].body


@pytest.mark.parametrize("model, options, sdk", [
    ("gpt-4o-mini",
     {"stop": ["\n", "END"], "top_p": 0.5, "frequency_penalty": 0.4, "presence_penalty": -0.3, "logprobs": 2,
      "extra_body": {"user": "lab-7"}},
     {"stop": ["\n", "END"], "top_p": 0.5, "frequency_penalty": 0.4, "presence_penalty": -0.3, "logprobs": True,
      "top_logprobs": 2, "extra_body": {"user": "lab-7"}}),
    ("gpt-4o-mini", {"stop": "END", "logprobs": True}, {"stop": ["END"], "logprobs": True}),
    ("o4-mini", {"reasoning_effort": "low"}, {"reasoning_effort": "low"}),
])
def test_openai_body_is_what_create_sends(live_kit, openai_server, model, options, sdk):
    live_kit.complete(PROMPT, model=model, max_tokens=50, providers=["openai"], **options)
    kit_body = _body(openai_server)
    client = openai.OpenAI(api_key=OPENAI_KEY, base_url=openai_server.base_url, max_retries=0)
    tokens = {"max_completion_tokens": 50} if model.startswith("o") else {"max_tokens": 50}
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPT}], **tokens, **sdk)
    assert kit_body == _body(openai_server)


def test_anthropic_body_is_what_messages_create_sends(live_kit, anthropic_server):
    options = {"stop": ["###"], "reasoning_effort": "low", "thinking_budget": 2048,
               "extra_body": {"metadata": {"user_id": "u-1"}}}
    live_kit.complete(PROMPT, model="claude-haiku-5-5", max_tokens=4096, providers=["anthropic"], **options)
    kit_body = _body(anthropic_server)
    client = anthropic.Anthropic(api_key=ANTHROPIC_KEY, base_url=anthropic_server.base_url, max_retries=0)
    client.messages.create(model="claude-haiku-5-5", max_tokens=4096, messages=[{"role": "user", "content": PROMPT}],
                           stop_sequences=["###"], output_config={"effort": "low"},
                           thinking={"type": "enabled", "budget_tokens": 2048},
                           extra_body={"metadata": {"user_id": "u-1"}})
    assert kit_body == _body(anthropic_server)


@pytest.mark.parametrize("options, fragment", [
    ({"frequency_penalty": 0.5}, "anthropic/claude-haiku-5-5 does not accept frequency_penalty"),
    ({"logprobs": True, "presence_penalty": 1}, "does not accept presence_penalty, logprobs"),
    ({"top_p": 0.5}, "does not accept top_p"),
    ({"reasoning_effort": "minimal"}, "does not accept reasoning_effort"),
])
def test_a_setting_the_first_provider_lacks_fails_before_sending(live_kit, anthropic_server, openai_server, options,
                                                                 fragment):
    with pytest.raises(InvalidRequestError, match=fragment):
        live_kit.complete(PROMPT, role="executor", providers=["anthropic", "openai"], **options)
    assert not anthropic_server.requests and not openai_server.requests
    with pytest.raises(InvalidRequestError, match="does not accept reasoning_effort"):
        live_kit.complete(PROMPT, model="gpt-4o-mini", reasoning_effort="low")  # not a reasoning model
    assert not live_kit.usage().shape[0]


@pytest.mark.parametrize("mode", ["sync", "async", "stream"])
def test_a_fallback_provider_without_a_setting_is_sent_the_call_without_it(make_live_kit, openai_server,
                                                                          anthropic_server, mode):
    kit = make_live_kit()
    openai_server.enqueue_error(500, headers={"retry-after-ms": "5"}, times=2)
    with pytest.warns(KitWarning, match="anthropic does not accept frequency_penalty"):
        if mode == "sync":
            r = kit.complete(PROMPT, role="executor", frequency_penalty=0.5, stop=["\n\n"])
        elif mode == "async":
            r = asyncio.run(kit.acomplete(PROMPT, role="executor", frequency_penalty=0.5, stop=["\n\n"]))
        else:
            s = kit.stream(PROMPT, role="executor", frequency_penalty=0.5, stop=["\n\n"])
            "".join(s)
            r = s.completion
    assert r.provider == "anthropic" and r.substituted
    assert openai_server.requests[0].body["frequency_penalty"] == 0.5
    body = anthropic_server.requests[-1].body
    assert "frequency_penalty" not in body and body["stop_sequences"] == ["\n\n"]
    rows = kit.usage().sort_values("attempt")
    assert pd.isna(rows.dropped_params.tolist()[0]) and rows.dropped_params.tolist()[1] == "frequency_penalty"
    assert [a.dropped_params for a in r.attempts] == [(), ("frequency_penalty",)]


def _openai_reply(extra_choice: dict, usage: dict) -> bytes:
    return json.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "o4-mini-2025-04-16",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Red"}, "finish_reason": "stop",
                     **extra_choice}],
        "usage": usage,
    }).encode()


def test_openai_reasoning_tokens_and_logprobs_are_read_and_recorded(live_kit, openai_server):
    usage = {"prompt_tokens": 12, "completion_tokens": 300, "total_tokens": 312,
             "completion_tokens_details": {"reasoning_tokens": 256}}
    openai_server.enqueue_raw(200, "application/json", _openai_reply({}, usage))
    r = live_kit.complete(PROMPT, model="o4-mini", reasoning_effort="medium", providers=["openai"])
    assert (r.completion_tokens, r.reasoning_tokens) == (300, 256)
    row = live_kit.usage().iloc[-1]
    assert row.reasoning_tokens == 256 and row.completion_tokens == 300  # priced as output, all 300
    lp = {"content": [{"token": "Red", "logprob": -0.01, "top_logprobs": [{"token": "Red", "logprob": -0.01},
                                                                         {"token": "Blue", "logprob": -4.6}]}]}
    openai_server.enqueue_raw(200, "application/json", _openai_reply({"logprobs": lp}, {
        "prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}))
    r = live_kit.complete(PROMPT, model="gpt-4o-mini", logprobs=2, providers=["openai"])
    assert r.logprobs == [{"token": "Red", "logprob": -0.01, "top_logprobs": [{"token": "Red", "logprob": -0.01},
                                                                              {"token": "Blue", "logprob": -4.6}]}]


def test_openai_stream_gathers_logprobs(live_kit, openai_server):
    def chunk(delta, finish=None, lp=None):
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        if lp is not None:
            choice["logprobs"] = {"content": [lp]}
        return "data: " + json.dumps({"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
                                      "choices": [choice]}) + "\n\n"
    events = [chunk({"role": "assistant", "content": "Re"}, lp={"token": "Re", "logprob": -0.2, "top_logprobs": []}),
              chunk({"content": "d"}, lp={"token": "d", "logprob": -0.1, "top_logprobs": []}),
              chunk({}, finish="stop"),
              "data: " + json.dumps({"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
                                     "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2,
                                                              "total_tokens": 11}}) + "\n\n",
              "data: [DONE]\n\n"]
    openai_server.enqueue_sse(events)
    s = live_kit.stream(PROMPT, model="gpt-4o-mini", logprobs=True, providers=["openai"])
    assert "".join(s) == "Red"
    assert [t["token"] for t in s.completion.logprobs] == ["Re", "d"]
    assert _body(openai_server)["logprobs"] is True and "top_logprobs" not in _body(openai_server)


def test_anthropic_thinking_is_not_the_answer_but_is_counted(live_kit, anthropic_server):
    thought = "The user wants one primary colour. Red, yellow and blue are the painter's primaries. " * 4
    reply = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-5-5",
             "content": [{"type": "thinking", "thinking": thought, "signature": "sig"},
                         {"type": "text", "text": "Red."}],
             "stop_reason": "end_turn", "usage": {"input_tokens": 14, "output_tokens": 120}}
    anthropic_server.enqueue_raw(200, "application/json", json.dumps(reply).encode())
    r = live_kit.complete(PROMPT, model="claude-haiku-5-5", max_tokens=4096, thinking_budget=1024,
                          providers=["anthropic"])
    assert r.content == "Red." and r.completion_tokens == 120 and 40 < r.reasoning_tokens <= 120
    events = [
        {"type": "message_start", "message": {"id": "msg_2", "type": "message", "role": "assistant", "content": [],
                                              "model": "claude-haiku-5-5", "usage": {"input_tokens": 14, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": thought}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Red."}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 120}},
        {"type": "message_stop"},
    ]
    anthropic_server.enqueue_sse([f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events])
    s = live_kit.stream(PROMPT, model="claude-haiku-5-5", max_tokens=4096, thinking_budget=1024,
                        providers=["anthropic"])
    assert "".join(s) == "Red."
    assert s.completion.reasoning_tokens == r.reasoning_tokens


@pytest.mark.parametrize("options, fragment", [
    ({"top_p": 1.5}, "top_p must be between 0 and 1"),
    ({"frequency_penalty": -3}, "frequency_penalty must be between -2 and 2"),
    ({"stop": []}, "stop must be a non-empty string"),
    ({"stop": ["ok", ""]}, "stop must be a non-empty string"),
    ({"logprobs": 21}, "logprobs must be True or a number"),
    ({"reasoning_effort": "max"}, "reasoning_effort must be one of minimal, low, medium, high"),
    ({"thinking_budget": 100}, "thinking_budget must be a whole number of tokens, at least 1024"),
    ({"thinking_budget": 2048, "max_tokens": 1024}, "thinking_budget=2048 must be below max_tokens=1024"),
    ({"extra_body": {"model": "gpt-5"}}, "extra_body may not set model"),
    ({"extra_body": {"x": float("nan")}}, "extra_body must be JSON"),
])
def test_bad_settings_are_refused_before_anything_is_sent(kit, options, fragment):
    with pytest.raises(InvalidRequestError, match=fragment):
        kit.complete(PROMPT, **options)
    assert kit.usage().empty


def test_the_cache_tells_calls_with_different_settings_apart():
    base = ProviderRequest("gpt-4o-mini", (), None, 10, None)
    with_stop = ProviderRequest("gpt-4o-mini", (), None, 10, None, sampling=CallOptions(stop=".").sampling())
    with_top = ProviderRequest("gpt-4o-mini", (), None, 10, None, sampling=CallOptions(top_p=0.5).sampling())
    keys = {cache_key("openai", r, 0) for r in (base, with_stop, with_top)}
    assert len(keys) == 3


@pytest.mark.parametrize("options", [{"stop": ["."], "logprobs": 3}, {"reasoning_effort": "high"},
                                     {"thinking_budget": 2048, "max_tokens": 4096}])
def test_simulated_provider_honours_settings_alike_in_every_mode(tmp_path, options):
    outcomes = []
    for mode in ("sync", "async", "stream"):
        kit = Kit(tmp_path / mode, dotenv=False, simulated_latency=LatencyModel(scale=0))
        prompt = "Explain regular expressions. Then give an example."
        if mode == "sync":
            r = kit.complete(prompt, **options)
        elif mode == "async":
            r = asyncio.run(kit.acomplete(prompt, **options))
        else:
            s = kit.stream(prompt, **options)
            "".join(s)
            r = s.completion
        row = kit.usage().iloc[0]
        outcomes.append((r.content, r.reasoning_tokens, r.completion_tokens, r.logprobs,
                         0 if pd.isna(row.reasoning_tokens) else int(row.reasoning_tokens)))
        kit.close()
    assert outcomes[0] == outcomes[1] == outcomes[2]
    content, reasoning, completion, logprobs, row_reasoning = outcomes[0]
    if "stop" in options:
        assert "." not in content and len(logprobs) > 0 and all(len(t["top_logprobs"]) == 3 for t in logprobs)
    else:
        assert reasoning > 0 and row_reasoning == reasoning and completion > reasoning


def test_an_experiment_grid_varies_sampling_settings_and_caches_them_apart(tmp_path):
    import pandas as pd

    from cognitionos_kit import Experiment

    kit = Kit(tmp_path, dotenv=False, simulated_latency=LatencyModel(scale=0))
    exp = Experiment(name="effort", dataset=pd.DataFrame({"topic": ["caching", "retries"]}),
                     prompts={"q": "Plan an ablation of {topic}."}, models=["executor"],
                     settings={"reasoning_effort": ["low", "high"], "max_tokens": [4096]})
    run = kit.run(exp, progress=False)
    assert len(run.results) == 4 and (run.results.status == "ok").all()
    rows = kit.usage(run_id=run.run_id)
    by_effort = rows.groupby(rows.completion_tokens > 1000).size().to_dict()
    assert by_effort == {False: 2, True: 2}  # high effort thinks 1,024 tokens, low 64
    rerun = kit.run(exp, progress=False)
    assert rerun.cache_hits == 4 and rerun.cost_usd == 0  # each setting cached under its own key
    kit.close()
