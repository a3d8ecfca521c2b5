"""The team server's OpenAI-compatible endpoint, driven by the official ``openai`` SDK (sync and
async) pointed at ``<server>/v1`` with a user's server token as its API key; the server's Kit talks
to the loopback provider servers. One server process for the module."""

from __future__ import annotations

import asyncio

import numpy as np
import openai
import pytest
from team_server import guarded_server

from cognitionos_kit import Kit

MODEL = "gpt-4o-mini"


@pytest.fixture(scope="module")
def server(tmp_path_factory, _openai_server, _anthropic_server):
    with guarded_server(tmp_path_factory.mktemp("team_openai"), _openai_server, _anthropic_server) as s:
        yield s


def client(server, user: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.tokens.get(user, user), max_retries=0)


def ledger(server, request_id: str) -> list[dict]:
    return server.as_("ana", "GET", "/usage", params={"request_id": request_id}).json()["rows"]


def test_a_chat_completion_through_the_sdk_is_costed_and_ledgered_for_the_token_user(server, providers):
    openai_server, _ = providers
    r = client(server, "bob").chat.completions.create(
        model=MODEL, max_tokens=30, temperature=0, seed=7, stop=["\n\n"],
        messages=[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a colour"}])
    assert r.object == "chat.completion" and r.model == MODEL
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    note = r.cognitionos  # the SDK keeps fields it does not know
    assert note["provider"] == "openai" and note["substituted"] is False and note["requested_model"] == MODEL
    assert note["cost_usd"] > 0 and r._request_id == note["request_id"] and r.id == "chatcmpl-" + note["request_id"]
    sent = openai_server.requests[0].body
    assert sent["model"] == MODEL and sent["max_tokens"] == 30 and sent["seed"] == 7 and sent["stop"] == ["\n\n"]
    assert sent["messages"][0] == {"role": "system", "content": "Answer briefly."}
    rows = ledger(server, note["request_id"])
    assert [(row["user_id"], row["model"], row["status"]) for row in rows] == [("bob", MODEL, "ok")]
    assert rows[0]["completion_tokens"] == r.usage.completion_tokens


def test_a_user_field_in_the_body_does_not_change_who_the_call_is_for(server, providers):
    r = client(server, "bob").chat.completions.create(
        model=MODEL, max_completion_tokens=20, user="dave", messages=[{"role": "user", "content": "Hi"}])
    assert providers[0].requests[0].body["max_tokens"] == 20
    assert [row["user_id"] for row in ledger(server, r.cognitionos["request_id"])] == ["bob"]
    dave = server.as_("dave", "GET", "/usage").json()["rows"]
    assert r.cognitionos["request_id"] not in {row["request_id"] for row in dave}


def test_a_streamed_completion_through_the_async_sdk_ends_with_usage(server, providers):
    async def stream() -> list:
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=server.tokens["dave"], max_retries=0) as c:
            chunks = await c.chat.completions.create(
                model=MODEL, max_tokens=30, stream=True, stream_options={"include_usage": True},
                messages=[{"role": "user", "content": "Count to three"}])
            return [chunk async for chunk in chunks]

    chunks = asyncio.run(stream())
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].finish_reason == "stop"
    *_, last = chunks
    assert last.choices == [] and last.usage.completion_tokens > 0 and last.model == MODEL
    request_id = last.cognitionos["request_id"]
    assert last.cognitionos["substituted"] is False and finish[0].cognitionos["request_id"] == request_id
    assert providers[0].requests[0].body["stream"] is True
    rows = ledger(server, request_id)
    assert [(row["user_id"], row["stream"]) for row in rows] == [("dave", True)]
    assert rows[0]["completion_tokens"] == last.usage.completion_tokens
    logged = Kit(server.home, dotenv=False)
    try:
        assert logged.log(request_id=request_id)["answer"].tolist() == [text]
    finally:
        logged.close()


def test_a_stream_without_include_usage_has_no_usage_chunk(server, providers):
    chunks = list(client(server, "bob").chat.completions.create(
        model=MODEL, max_tokens=30, stream=True, messages=[{"role": "user", "content": "Hello"}]))
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].cognitionos["provider"] == "openai"


def test_embeddings_through_the_sdk_are_the_local_models_vectors(server, providers):
    c = client(server, "bob")
    texts = ["a cat", "a dog"]
    default = c.embeddings.create(model="all-MiniLM-L6-v2", input=texts)  # the SDK asks for base64
    as_floats = c.embeddings.create(model="all-MiniLM-L6-v2", input=texts, encoding_format="float")
    expected = Kit(server.home / "elsewhere", dotenv=False).embed(texts)
    for answer in (default, as_floats):
        got = np.array([d.embedding for d in answer.data], dtype=np.float32)
        assert got.shape == (2, 384) and [d.index for d in answer.data] == [0, 1]
        np.testing.assert_allclose(got, expected, atol=1e-6)
        assert answer.model == "all-MiniLM-L6-v2" and answer.usage.prompt_tokens > 0
    with pytest.raises(openai.BadRequestError) as bad:
        c.embeddings.create(model="all-MiniLM-L6-v2", input=texts, dimensions=64)
    assert bad.value.body["param"] == "dimensions"
    assert providers[0].requests == []  # local: nothing sent


def test_models_lists_chat_and_embedding_models(server):
    models = client(server, "bob").models.list()
    owners = {m.id: m.owned_by for m in models.data}
    assert owners["all-MiniLM-L6-v2"] == "local" and owners["text-embedding-3-small"] == "openai"
    assert {"openai", "anthropic"} <= set(owners.values())
    assert all(m.object == "model" for m in models.data)


def test_a_bad_token_is_an_authentication_error(server, providers):
    bob = server.tokens["bob"]
    for token in ("nope", bob[:-1] + ("A" if bob[-1] != "A" else "B")):
        c = openai.OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as err:
            c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
        assert err.value.status_code == 401 and err.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            c.models.list()
    assert providers[0].requests == []


@pytest.mark.parametrize("extra, param", [
    ({"logprobs": True}, "logprobs"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"n": 2}, "n"),
    ({"temperature": 5}, "temperature"),
    ({"messages": [{"role": "robot", "content": "Hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "/etc/passwd"}}]}]},
     "messages[0].content[0].image_url.url"),
])
def test_an_unsupported_or_bad_parameter_is_a_bad_request_naming_it(server, providers, extra, param):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], **extra}
    with pytest.raises(openai.BadRequestError) as err:
        client(server, "bob").chat.completions.create(**body)
    assert err.value.status_code == 400 and err.value.param == param, err.value.body
    assert param.split("[")[0].split(".")[0] in err.value.message
    assert providers[0].requests == []  # refused before sending


def test_a_per_user_budget_is_refused_with_its_message(server, providers):
    c = client(server, "carol")
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as err:
            c.chat.completions.create(model=MODEL, stream=stream, messages=[{"role": "user", "content": "An essay"}])
        assert err.value.status_code == 402 and err.value.code == "budget_exceeded"
        assert "budget" in err.value.message and "carol" in err.value.message
    assert providers[0].requests == []
    assert client(server, "bob").chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "An essay"}]).choices[0].message.content


def test_a_per_user_rate_limit_is_a_rate_limit_error_with_retry_after(server, providers):
    c = client(server, "fay")
    assert c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "One"}]).choices
    with pytest.raises(openai.RateLimitError) as err:
        c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Two"}])
    assert err.value.code == "rate_limit_exceeded" and int(err.value.response.headers["retry-after"]) >= 1
    assert len(providers[0].requests) == 1  # the second call was not sent


def test_failing_providers_are_a_502_the_sdk_does_not_retry(server, providers):
    openai_server, _ = providers
    openai_server.enqueue_error(400, openai_server.error_body(400, "bad things"), times=5)
    c = openai.OpenAI(base_url=server.url + "/v1", api_key=server.tokens["bob"])  # the SDK's default retries
    with pytest.raises(openai.InternalServerError) as err:
        c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    assert err.value.status_code == 502 and err.value.code == "upstream_error"
    assert len(openai_server.requests) == 1  # once: the SDK did not ask again


@pytest.fixture
def fallback_server(make_live_kit, tmp_path, openai_server, anthropic_server):
    """The server's app on a Kit whose gpt-4o-mini may fall back to Claude, under uvicorn in a thread."""
    import threading
    import time

    import uvicorn
    from team_server import free_port

    from cognitionos_kit.server import Accounts
    from cognitionos_kit.server.app import create_app

    kit = make_live_kit(fallback_models={MODEL: "claude-haiku-4-5"})
    accounts = Accounts(kit.home)
    accounts.add_user("bob")
    token = accounts.create_token("bob").token
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(kit, accounts), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.started
    yield openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=token, max_retries=0)
    srv.should_exit = True
    thread.join(10)


def test_a_fallback_answer_names_the_model_that_answered_and_says_it_is_a_substitute(fallback_server, openai_server,
                                                                                     anthropic_server):
    openai_server.enqueue_error(500, times=10)
    r = fallback_server.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    assert r.model == "claude-haiku-4-5" and r.system_fingerprint == "cognitionos:anthropic:substituted"
    note = r.cognitionos
    assert note["substituted"] is True and note["requested_model"] == MODEL and note["provider"] == "anthropic"
    assert "SUBSTITUTE" in note["note"] and [a["provider"] for a in note["attempts"]][-1] == "anthropic"
    assert r.choices[0].message.content and len(anthropic_server.requests) == 1

    chunks = list(fallback_server.chat.completions.create(
        model=MODEL, stream=True, stream_options={"include_usage": True}, messages=[{"role": "user", "content": "Hi"}]))
    assert chunks[0].model == MODEL  # named as asked until the answer is done...
    *_, finish, usage = chunks
    for last in (finish, usage):  # ...then for the model that answered, marked a substitute
        assert last.model == "claude-haiku-4-5" and last.cognitionos["substituted"] is True
    assert finish.choices[0].finish_reason == "stop" and usage.usage.completion_tokens > 0


def test_tools_and_their_results_go_through_in_openais_format(server, providers):
    from loopback import load_fixtures

    openai_server, _ = providers
    recorded = load_fixtures("openai", "/v1/chat/completions", False, tools=True, status=200)[0]
    openai_server.enqueue(recorded)
    c = client(server, "bob")
    ask = [{"role": "user", "content": "What is the largest city in the user country?"}]
    r = c.chat.completions.create(model=MODEL, messages=ask, tools=recorded["request"]["tools"], tool_choice="required")
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "get_user_country"
    sent = openai_server.requests[0].body
    assert sent["tool_choice"] == "required" and [t["function"]["name"] for t in sent["tools"]] == [
        "get_user_country", "final_result"]

    answer = c.chat.completions.create(model=MODEL, tools=recorded["request"]["tools"], messages=[
        *ask, r.choices[0].message.model_dump(exclude_none=True, exclude={"refusal", "annotations"}),
        {"role": "tool", "tool_call_id": call.id, "content": "France"}])
    assert answer.choices[0].message.content and answer.choices[0].finish_reason == "stop"
    turns = openai_server.requests[1].body["messages"]
    assert turns[-1] == {"role": "tool", "tool_call_id": call.id, "content": "France"}
    assert turns[-2]["tool_calls"][0]["id"] == call.id
