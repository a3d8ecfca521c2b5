"""The loopback servers, driven over real HTTP by the raw official OpenAI and Anthropic SDKs."""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import socket
import statistics
import struct
import threading
import time

import anthropic
import openai
import pytest
from loopback import AnthropicServer, OpenAIServer, load_fixtures, sse_events

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

OPENAI_CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
COUNT_TOKENS = "/v1/messages/count_tokens"


def _ids(entries: list[dict]) -> list[str]:
    return [e["source"].split("/cassettes/", 1)[-1] for e in entries]


def _params(entries: list[dict]):
    return pytest.mark.parametrize("entry", entries, ids=_ids(entries))


def sdk_kwargs(method, request: dict, drop: tuple[str, ...] = ()) -> dict:
    """Recorded request body as SDK kwargs; keys the method doesn't accept go via extra_body."""
    accepted = inspect.signature(method).parameters
    kwargs = {k: v for k, v in request.items() if k in accepted and k not in drop}
    extra = {k: v for k, v in request.items() if k not in accepted and k not in drop}
    return {**kwargs, "extra_body": extra} if extra else kwargs


def sse_payloads(entry: dict) -> list[dict]:
    """JSON data payloads of a recorded SSE stream (without ``[DONE]``)."""
    out = []
    for ev in sse_events(entry["response"]["sse"]):
        for line in ev.splitlines():
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                out.append(json.loads(line[5:]))
    return out


def anthropic_stream_expectations(entry: dict) -> tuple[str, dict]:
    """(text, usage) of a recorded Anthropic stream: message_start usage updated by message_delta."""
    text, usage = "", {}
    for p in sse_payloads(entry):
        if p["type"] == "message_start":
            usage = dict(p["message"]["usage"])
        elif p["type"] == "message_delta":
            usage.update({k: v for k, v in p["usage"].items() if v is not None})
        elif p["type"] == "content_block_delta" and p["delta"]["type"] == "text_delta":
            text += p["delta"]["text"]
    return text, usage


@pytest.fixture(scope="module")
def _servers():
    with OpenAIServer() as o, AnthropicServer() as a:
        yield o, a


@pytest.fixture(scope="module")
def _clients(_servers):
    """SDK clients are slow to build (~0.1 s for the TLS context), so share them per module."""
    o, a = _servers
    with openai.OpenAI(base_url=o.base_url, api_key="test-key", max_retries=0) as oc, \
            anthropic.Anthropic(base_url=a.base_url, api_key="test-key", max_retries=0) as ac:
        yield oc, ac


@pytest.fixture
def oai_server(_servers):
    _servers[0].reset()
    return _servers[0]


@pytest.fixture
def ant_server(_servers):
    _servers[1].reset()
    return _servers[1]


@pytest.fixture
def oai(oai_server, _clients):
    return _clients[0]


@pytest.fixture
def ant(ant_server, _clients):
    return _clients[1]


# -- fixtures file ---------------------------------------------------------------------------


def test_fixture_inventory():
    assert len(load_fixtures()) == 80
    assert len(load_fixtures("openai", OPENAI_CHAT, stream=False, tools=False, status=200)) == 15
    assert len(load_fixtures("anthropic", MESSAGES, stream=False, tools=False, status=200)) == 29
    assert len(load_fixtures(stream=True)) == 9
    assert load_fixtures()[0] is not load_fixtures()[0]  # deep copies: safe to mutate


def test_base_urls_and_request_log(oai_server, ant_server, oai, ant):
    assert oai_server.base_url == f"http://127.0.0.1:{oai_server.port}/v1"
    assert ant_server.base_url == f"http://127.0.0.1:{ant_server.port}"
    assert oai_server.env() == {"OPENAI_BASE_URL": oai_server.base_url}
    oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    ant.messages.create(model="claude-haiku-4-5", max_tokens=7, system="Be brief.",
                        messages=[{"role": "user", "content": "hi"}])
    (o,), (a,) = oai_server.requests, ant_server.requests
    assert (o.method, o.path, o.headers["authorization"]) == ("POST", OPENAI_CHAT, "Bearer test-key")
    assert (a.method, a.path) == ("POST", MESSAGES)
    assert "anthropic-version" in a.headers
    assert a.body == {"model": "claude-haiku-4-5", "max_tokens": 7, "system": "Be brief.",
                      "messages": [{"role": "user", "content": "hi"}]}


# -- recorded non-stream exchanges -----------------------------------------------------------


@_params(load_fixtures("openai", OPENAI_CHAT, stream=False, tools=False, status=200))
def test_openai_recorded_chat(oai_server, oai, entry):
    oai_server.enqueue(entry)
    resp = oai.chat.completions.create(**sdk_kwargs(oai.chat.completions.create, entry["request"]))
    rec = entry["response"]["json"]
    assert oai_server.requests[-1].body == entry["request"]
    assert resp.model == rec["model"]
    assert [c.message.content for c in resp.choices] == [c["message"]["content"] for c in rec["choices"]]
    assert resp.usage.prompt_tokens == rec["usage"]["prompt_tokens"]
    assert resp.usage.completion_tokens == rec["usage"]["completion_tokens"]
    assert resp.usage.prompt_tokens_details.cached_tokens == rec["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert (resp.usage.completion_tokens_details.reasoning_tokens
            == rec["usage"]["completion_tokens_details"]["reasoning_tokens"])


@_params(load_fixtures("anthropic", MESSAGES, stream=False, tools=False, status=200))
def test_anthropic_recorded_messages(ant_server, ant, entry):
    ant_server.enqueue(entry)
    resp = ant.messages.create(**sdk_kwargs(ant.messages.create, entry["request"]))
    rec = entry["response"]["json"]
    assert ant_server.requests[-1].body == entry["request"]
    assert resp.model == rec["model"]
    assert [b.type for b in resp.content] == [b["type"] for b in rec["content"]]
    text = "".join(b.text for b in resp.content if b.type == "text")
    assert text == "".join(b["text"] for b in rec["content"] if b["type"] == "text")
    for field in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
        assert getattr(resp.usage, field) == rec["usage"][field], field


@_params(load_fixtures("anthropic", COUNT_TOKENS, status=200))
def test_anthropic_recorded_count_tokens(ant_server, ant, entry):
    ant_server.enqueue(entry)
    resp = ant.messages.count_tokens(**sdk_kwargs(ant.messages.count_tokens, entry["request"]))
    assert resp.input_tokens == entry["response"]["json"]["input_tokens"]
    assert ant_server.requests[-1].path == COUNT_TOKENS


@_params(load_fixtures("openai", "/v1/embeddings", status=200))
def test_openai_recorded_embeddings(oai_server, oai, entry):
    oai_server.enqueue(entry)
    resp = oai.embeddings.create(**entry["request"])  # explicit base64: SDK returns the raw string
    rec = entry["response"]["json"]
    raw = base64.b64decode(rec["data"][0]["embedding"])
    assert resp.data[0].embedding == rec["data"][0]["embedding"]
    assert resp.usage.prompt_tokens == rec["usage"]["prompt_tokens"] == 4
    assert len(raw) // 4 == entry["request"].get("dimensions", 1536)

    oai_server.enqueue(entry)  # SDK default: asks for base64 itself and decodes to floats
    resp = oai.embeddings.create(**sdk_kwargs(oai.embeddings.create, entry["request"], drop=("encoding_format",)))
    assert resp.data[0].embedding == pytest.approx(struct.unpack(f"<{len(raw) // 4}f", raw))


# -- recorded streams ------------------------------------------------------------------------


@_params(load_fixtures("openai", OPENAI_CHAT, stream=True))
def test_openai_recorded_stream(oai_server, oai, entry):
    oai_server.enqueue(entry)
    text, args, usages = "", "", []
    for chunk in oai.chat.completions.create(**sdk_kwargs(oai.chat.completions.create, entry["request"])):
        for c in chunk.choices:
            text += c.delta.content or ""
            args += "".join(t.function.arguments or "" for t in c.delta.tool_calls or [])
        if chunk.usage:
            usages.append(chunk.usage)
    payloads = sse_payloads(entry)
    deltas = [c["delta"] for p in payloads for c in p["choices"]]
    assert text == "".join(d.get("content") or "" for d in deltas)
    assert args == "".join(t["function"].get("arguments", "") for d in deltas for t in d.get("tool_calls") or [])
    assert text or json.loads(args)  # each recording carries something real
    (rec_usage,) = [p["usage"] for p in payloads if p.get("usage")]
    (usage,) = usages
    assert (usage.prompt_tokens, usage.completion_tokens) == (rec_usage["prompt_tokens"], rec_usage["completion_tokens"])
    assert usage.prompt_tokens_details.cached_tokens == rec_usage["prompt_tokens_details"]["cached_tokens"]
    assert oai_server.requests[-1].body["stream_options"] == {"include_usage": True}


@_params(load_fixtures("anthropic", MESSAGES, stream=True))
def test_anthropic_recorded_stream(ant_server, ant, entry):
    ant_server.enqueue(entry)
    with ant.messages.stream(**sdk_kwargs(ant.messages.stream, entry["request"], drop=("stream",))) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    rec_text, rec_usage = anthropic_stream_expectations(entry)
    assert text == rec_text and text
    assert ant_server.requests[-1].body == entry["request"]
    for field in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
        assert getattr(final.usage, field) == rec_usage[field], field


# -- recorded errors -------------------------------------------------------------------------

ERROR_CLASSES = {400: "BadRequestError", 404: "NotFoundError"}


@_params([e for e in load_fixtures("openai") if e["response"]["status"] >= 400])
def test_openai_recorded_errors(oai_server, oai, entry):
    oai_server.enqueue(entry)
    call = oai.embeddings.create if entry["endpoint"] == "/v1/embeddings" else oai.chat.completions.create
    status, rec = entry["response"]["status"], entry["response"]["json"]["error"]
    with pytest.raises(getattr(openai, ERROR_CLASSES[status])) as exc_info:
        call(**entry["request"])
    assert exc_info.value.status_code == status
    assert exc_info.value.body["message"] == rec["message"]
    assert exc_info.value.code == rec["code"]


@_params([e for e in load_fixtures("anthropic") if e["response"]["status"] >= 400])
def test_anthropic_recorded_errors(ant_server, ant, entry):
    ant_server.enqueue(entry)
    call = ant.messages.count_tokens if entry["endpoint"] == COUNT_TOKENS else ant.messages.create
    status, rec = entry["response"]["status"], entry["response"]["json"]
    with pytest.raises(getattr(anthropic, ERROR_CLASSES[status])) as exc_info:
        call(**sdk_kwargs(call, entry["request"]))
    assert exc_info.value.status_code == status
    assert exc_info.value.body["error"] == rec["error"]
    assert rec["error"]["message"] in str(exc_info.value)


# -- defaults --------------------------------------------------------------------------------


def test_defaults_echo_requested_model(oai_server, ant_server, oai, ant):
    rec_oai = load_fixtures("openai", OPENAI_CHAT, stream=False, tools=False, status=200)[0]["response"]["json"]
    resp = oai.chat.completions.create(model="my-model", messages=[{"role": "user", "content": "x"}])
    assert resp.model == "my-model" != rec_oai["model"]
    assert resp.choices[0].message.content == rec_oai["choices"][0]["message"]["content"]
    assert resp.usage.prompt_tokens == rec_oai["usage"]["prompt_tokens"]

    rec_ant = load_fixtures("anthropic", MESSAGES, stream=False, tools=False, status=200)[0]["response"]["json"]
    msg = ant.messages.create(model="claude-x", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert msg.model == "claude-x" != rec_ant["model"]
    assert msg.content[0].text == rec_ant["content"][0]["text"]
    assert msg.usage.input_tokens == rec_ant["usage"]["input_tokens"]
    assert ant.messages.count_tokens(model="claude-x", messages=[{"role": "user", "content": "x"}]).input_tokens == 16


def test_default_streams(oai, ant):
    rec = load_fixtures("openai", OPENAI_CHAT, stream=True, tools=False)[0]
    chunks = list(oai.chat.completions.create(model="gpt-z", messages=[{"role": "user", "content": "x"}],
                                              stream=True, stream_options={"include_usage": True}))
    assert {c.model for c in chunks} == {"gpt-z"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Paris."
    assert [c.usage.completion_tokens for c in chunks if c.usage] == [11]
    assert len(chunks) == len(sse_payloads(rec)) - 1  # no moderation chunk: not asked for
    plain = list(oai.chat.completions.create(model="gpt-z", messages=[], stream=True))
    assert all(c.choices for c in plain) and len(plain) == len(chunks) - 1  # no usage chunk either

    rec_text, rec_usage = anthropic_stream_expectations(load_fixtures("anthropic", MESSAGES, stream=True, tools=False)[0])
    with ant.messages.stream(model="claude-x", max_tokens=5, messages=[{"role": "user", "content": "x"}]) as s:
        assert "".join(s.text_stream) == rec_text
        final = s.get_final_message()
    assert (final.model, final.usage.output_tokens) == ("claude-x", rec_usage["output_tokens"])


def test_default_embeddings(oai):
    resp = oai.embeddings.create(model="text-embedding-3-small", input=["a", "b", "c"])
    assert [d.index for d in resp.data] == [0, 1, 2]
    assert len(resp.data[2].embedding) == 1536 and resp.model == "text-embedding-3-small"
    floats = oai.embeddings.create(model="m", input="a", encoding_format="float").data[0].embedding
    assert floats == resp.data[0].embedding


def test_unknown_path_is_404(oai_server, oai):
    with pytest.raises(openai.NotFoundError):
        oai.models.list()
    assert oai_server.requests[-1].path == "/v1/models"


# -- scripted failures -----------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{"retry-after": "0"}, {"retry-after-ms": "1"}], ids=["retry-after-0", "retry-after-ms-1"])
def test_openai_429_retried_then_succeeds(oai_server, headers):
    oai_server.enqueue_error(429, headers=headers, times=2)
    with openai.OpenAI(base_url=oai_server.base_url, api_key="test-key", max_retries=2) as client:
        resp = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert resp.model == "gpt-4o-mini"
    assert [r.headers["x-stainless-retry-count"] for r in oai_server.requests] == ["0", "1", "2"]
    assert oai_server.pending == 0


def test_anthropic_429_retried_then_succeeds(ant_server):
    ant_server.enqueue_error(429, headers={"retry-after-ms": "1"}, times=2)
    with anthropic.Anthropic(base_url=ant_server.base_url, api_key="test-key", max_retries=2) as client:
        t0 = time.perf_counter()
        msg = client.messages.create(model="claude-x", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert time.perf_counter() - t0 < 0.3  # retry-after-ms honoured (retry-after: 0 falls back to ~0.5 s backoff)
    assert msg.model == "claude-x" and len(ant_server.requests) == 3


def test_error_bodies_are_provider_shaped(oai_server, ant_server, oai, ant):
    oai_server.enqueue_error(429)
    with pytest.raises(openai.RateLimitError) as e1:
        oai.chat.completions.create(model="m", messages=[])
    assert e1.value.code == "rate_limit_exceeded" and set(e1.value.body) == {"message", "type", "param", "code"}
    ant_server.enqueue_error(401)
    with pytest.raises(anthropic.AuthenticationError) as e2:
        ant.messages.create(model="m", max_tokens=5, messages=[])
    assert e2.value.body["type"] == "error" and e2.value.body["error"]["type"] == "authentication_error"


def test_anthropic_529_overloaded(ant_server, ant):
    ant_server.enqueue_error(529)
    with pytest.raises(anthropic.InternalServerError) as exc_info:
        ant.messages.create(model="claude-x", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert isinstance(exc_info.value, anthropic.OverloadedError) and exc_info.value.status_code == 529
    assert exc_info.value.body["error"]["type"] == "overloaded_error"
    assert len(ant_server.requests) == 1


def test_delay_beyond_timeout(oai_server, ant_server, oai, ant):
    oai_server.enqueue_delay(2.0)
    ant_server.enqueue_delay(2.0)
    t0 = time.perf_counter()
    with pytest.raises(openai.APITimeoutError):
        oai.with_options(timeout=0.2).chat.completions.create(model="m", messages=[])
    with pytest.raises(anthropic.APITimeoutError):
        ant.with_options(timeout=0.2).messages.create(model="m", max_tokens=5, messages=[])
    assert time.perf_counter() - t0 < 1.5
    assert oai.chat.completions.create(model="next", messages=[]).model == "next"  # server still fine


def test_delay_then_entry(oai_server, oai):
    entry = load_fixtures("openai", OPENAI_CHAT, stream=False, tools=False)[3]
    oai_server.enqueue_delay(0.05, then=entry)
    t0 = time.perf_counter()
    resp = oai.chat.completions.create(model="m", messages=[])
    assert time.perf_counter() - t0 >= 0.05
    assert resp.id == entry["response"]["json"]["id"]


def test_disconnect(oai_server, ant_server, oai, ant):
    oai_server.enqueue_disconnect()
    ant_server.enqueue_disconnect()
    with pytest.raises(openai.APIConnectionError) as e1:
        oai.chat.completions.create(model="m", messages=[])
    with pytest.raises(anthropic.APIConnectionError) as e2:
        ant.messages.create(model="m", max_tokens=5, messages=[])
    assert not isinstance(e1.value, openai.APITimeoutError)
    assert not isinstance(e2.value, anthropic.APITimeoutError)
    assert oai.chat.completions.create(model="next", messages=[]).model == "next"


def test_openai_broken_stream(oai_server, oai):
    entry = load_fixtures("openai", OPENAI_CHAT, stream=True, tools=False)[0]
    oai_server.enqueue_broken_stream(entry, after_events=2)
    text = ""
    with pytest.raises(openai.APIConnectionError):  # the SDK wraps the incomplete chunked read
        for chunk in oai.chat.completions.create(**entry["request"]):
            text += chunk.choices[0].delta.content or ""
    assert text == "Paris"


def test_anthropic_broken_stream(ant_server, ant):
    entry = load_fixtures("anthropic", MESSAGES, stream=True)[-1]
    kinds = [p.get("delta", {}).get("type") for p in sse_payloads(entry)]
    after = kinds.index("text_delta") + 2
    ant_server.enqueue_broken_stream(entry, after_events=after)
    full, _ = anthropic_stream_expectations(entry)
    pieces = []
    with pytest.raises(Exception) as exc_info:  # raw httpx2.RemoteProtocolError: not wrapped by the SDK
        with ant.messages.stream(**sdk_kwargs(ant.messages.stream, entry["request"], drop=("stream",))) as s:
            pieces.extend(s.text_stream)
    assert "incomplete chunked read" in str(exc_info.value)
    assert pieces and full.startswith("".join(pieces)) and "".join(pieces) != full


def test_clients_leaving_mid_response_are_quiet(oai_server, ant_server, oai, ant, capfd):
    oai_server.enqueue_delay(0.3)  # answer lands on a socket the client already closed
    with pytest.raises(openai.APITimeoutError):
        oai.with_options(timeout=0.1).chat.completions.create(model="m", messages=[])
    with ant.messages.create(model="m", max_tokens=5, messages=[], stream=True) as events:
        assert next(iter(events)).type == "message_start"  # then hang up mid-stream
    time.sleep(0.4)
    assert oai.chat.completions.create(model="after", messages=[]).model == "after"
    assert ant.messages.create(model="after", max_tokens=5, messages=[]).model == "after"
    assert capfd.readouterr().err == ""


# -- concurrency -----------------------------------------------------------------------------


def _run_threads(fn, n: int = 50) -> list:
    results, barrier = [None] * n, threading.Barrier(n)

    def work(i):
        barrier.wait()
        results[i] = fn(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return results


def test_concurrent_threads(oai_server, ant_server, oai, ant):
    models = _run_threads(lambda i: oai.chat.completions.create(model=f"m{i}", messages=[]).model)
    assert models == [f"m{i}" for i in range(50)]
    models = _run_threads(lambda i: ant.messages.create(model=f"c{i}", max_tokens=5, messages=[]).model)
    assert models == [f"c{i}" for i in range(50)]
    assert len(oai_server.requests) == len(ant_server.requests) == 50


def test_concurrent_scripted_entries(oai_server, oai):
    entries = load_fixtures("openai", OPENAI_CHAT, stream=False, tools=False, status=200)
    script = [entries[i % len(entries)] for i in range(50)]
    for e in script:
        oai_server.enqueue(e)
    ids = _run_threads(lambda i: oai.chat.completions.create(model="m", messages=[]).id)
    assert sorted(ids) == sorted(e["response"]["json"]["id"] for e in script)


def test_concurrent_async(oai_server, ant_server):
    async def main():
        async with openai.AsyncOpenAI(base_url=oai_server.base_url, api_key="k", max_retries=0) as oc, \
                anthropic.AsyncAnthropic(base_url=ant_server.base_url, api_key="k", max_retries=0) as ac:
            o = await asyncio.gather(*(oc.chat.completions.create(model=f"m{i}", messages=[]) for i in range(50)))
            a = await asyncio.gather(*(ac.messages.create(model=f"c{i}", max_tokens=5, messages=[]) for i in range(50)))
        return [r.model for r in o], [r.model for r in a]

    o, a = asyncio.run(main())
    assert o == [f"m{i}" for i in range(50)] and a == [f"c{i}" for i in range(50)]


# -- lifecycle and speed ---------------------------------------------------------------------


def test_stop_is_clean_with_kept_alive_and_sleeping_connections():
    server = OpenAIServer()
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    client.chat.completions.create(model="m", messages=[])  # leaves a kept-alive connection
    server.enqueue_delay(30)
    outcome = []

    def waiting_call():
        try:
            client.chat.completions.create(model="m", messages=[])
        except Exception as exc:
            outcome.append(exc)

    t = threading.Thread(target=waiting_call)
    t.start()
    time.sleep(0.1)
    t0 = time.perf_counter()
    server.stop()  # wakes the sleeping handler, which drops the connection
    t.join(5)
    assert time.perf_counter() - t0 < 2 and not t.is_alive()
    assert len(outcome) == 1 and type(outcome[0]) is openai.APIConnectionError
    client.close()


def test_raw_sdk_call_is_fast(oai):
    for _ in range(10):
        oai.chat.completions.create(model="m", messages=[])
    times = []
    for _ in range(50):
        t0 = time.perf_counter()
        oai.chat.completions.create(model="m", messages=[])
        times.append(time.perf_counter() - t0)
    assert statistics.median(times) < 0.025  # ~40 ms each without TCP_NODELAY


def test_tcp_nodelay_keeps_streams_fast(ant_server, ant):
    """Multi-write SSE responses stall ~40 ms per request on delayed ACK without TCP_NODELAY."""
    times = []
    for _ in range(15):
        t0 = time.perf_counter()
        list(ant.messages.create(model="m", max_tokens=5, messages=[], stream=True))
        times.append(time.perf_counter() - t0)
    assert min(times) < 0.035  # min: robust to a loaded machine; the ACK stall is in every call
    sockets = list(ant_server._httpd.open_sockets)
    assert sockets and all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in sockets)
