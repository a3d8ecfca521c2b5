"""The fault matrix: every kind of failure the two APIs (and the networks between) can produce, at
the first provider of the chain, through the official SDKs and the loopback servers, in each call
mode (``sync``, ``async``, ``stream``, ``astream``).

Each test asserts the outcome (a fallback answer, an error that stops the chain, an interrupted
stream, or everything failing), the exception's type and message, the server's request counts, the
ledger rows (one per attempt: status, error type, tokens, cost and their estimated flags) and that
neither API key appears anywhere: not in exceptions, tracebacks, reprs, warnings, the ledger,
``kit.status()`` or any file under the Kit's home. The servers echo the keys where real ones do
(a 401's "Incorrect API key provided: ...", a proxy's debug page), so redaction is really tested.

Faults are injected at the first provider; the second answers normally from the recorded defaults:
OpenAI faults use the default chain (openai -> anthropic), Anthropic faults
``providers=["anthropic", "openai"]``; both with ``role="executor"``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import ANTHROPIC_KEY, OPENAI_KEY
from loopback import load_fixtures

from cognitionos_kit import AllProvidersFailedError, AuthenticationWarning, ProviderError, StreamInterruptedError

PROMPT = "Give one tip for reproducible experiments"
TIMEOUT = 1.0
BOUND_MS = (TIMEOUT + 0.5) * 1000  # a timed-out attempt, SDK retries included, ends within timeout + 0.5 s
MODES = ("sync", "async", "stream", "astream")
PLAIN = ("sync", "async")
STREAMS = ("stream", "astream")
PROVIDERS = ("openai", "anthropic")
OTHER = {"openai": "anthropic", "anthropic": "openai"}
MODEL = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-5-5"}  # role="executor"
TYPO = {"openai": "gpt-4o-mnii", "anthropic": "claude-haiku-5-5x"}
KEY = {"openai": OPENAI_KEY, "anthropic": ANTHROPIC_KEY}
SDK_RETRIED = {408, 409, 429, 500, 502, 503, 504, 529}  # statuses both SDKs retry (max_retries=1: sent twice)
FAST_RETRY = {"retry-after-ms": "5"}  # the SDK's retry comes at once instead of after its 0.5 s backoff
DRIP_EVERY_S = 0.3

# --- what the servers say ------------------------------------------------------------------
# status: ((OpenAI type, code, message), (Anthropic type, message)); {key} and {model} are filled in
_STATUS_BODIES: dict[int, tuple[tuple[str, str | None, str], tuple[str, str]]] = {
    400: (("invalid_request_error", None, "Invalid value for 'max_tokens': the value is too large."),
          ("invalid_request_error", "max_tokens: the value is larger than the model allows")),
    401: (("invalid_request_error", "invalid_api_key",
           ("Incorrect API key provided: {key}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.")),
          ("authentication_error", "invalid x-api-key: {key}")),
    402: (("insufficient_quota", "insufficient_quota",
           "You exceeded your current quota, please check your plan and billing details."),
          ("billing_error", "Your credit balance is too low to access the Anthropic API.")),
    403: (("invalid_request_error", "unsupported_country_region_territory",
           "Country, region, or territory not supported (key {key})"),
          ("permission_error", "Your API key {key} does not have permission to use the specified resource.")),
    404: (("invalid_request_error", "model_not_found",
           "The model `{model}` does not exist or you do not have access to it."),
          ("not_found_error", "model: {model}")),
    408: (("timeout", None, "Request timed out while waiting for the body."),
          ("timeout_error", "Request timed out while waiting for the body.")),
    409: (("conflict", None, "Another request with this idempotency key is still being processed."),
          ("conflict_error", "Another request with this idempotency key is still being processed.")),
    413: (("invalid_request_error", "request_too_large", "Request too large: the body exceeds the maximum size."),
          ("request_too_large", "Request exceeds the maximum allowed number of bytes.")),
    422: (("invalid_request_error", None, "Unprocessable entity: messages[0].content could not be read."),
          ("invalid_request_error", "Unprocessable entity: messages.0.content could not be read.")),
    429: (("requests", "rate_limit_exceeded", "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3."),
          ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit.")),
    500: (("server_error", None, "The server had an error while processing your request. Sorry about that!"),
          ("api_error", "Internal server error")),
    502: (("server_error", None, "Bad gateway: the upstream answered nothing usable."),
          ("api_error", "Bad gateway: the upstream answered nothing usable.")),
    503: (("server_error", None, "The engine is currently overloaded, please try again later."),
          ("api_error", "Service unavailable: please try again later.")),
    504: (("server_error", None, "Gateway timeout: the upstream took too long."),
          ("timeout_error", "Request timed out before the model finished.")),
    529: (("server_error", None, "The service is temporarily overloaded."),
          ("overloaded_error", "Overloaded")),
}


def _status_message(provider: str, status: int, model: str | None = None) -> str:
    spec = _STATUS_BODIES[status][0 if provider == "openai" else 1]
    return spec[-1].format(key=KEY[provider], model=model or MODEL[provider])


def _status_body(provider: str, status: int, model: str | None = None) -> dict:
    message = _status_message(provider, status, model)
    if provider == "openai":
        typ, code, _ = _STATUS_BODIES[status][0]
        return {"error": {"message": message, "type": typ, "param": None, "code": code}}
    typ = _STATUS_BODIES[status][1][0]
    return {"type": "error", "error": {"type": typ, "message": message}, "request_id": "req_011CfaultMatrix0000000001"}


def _status_fragment(provider: str, status: int, model: str | None = None) -> str:
    """The part of the server's message a redacted error message still holds verbatim."""
    spec = _STATUS_BODIES[status][0 if provider == "openai" else 1][-1]
    return spec.split("{key}")[0].format(model=model or MODEL[provider]).strip()


# --- bodies ---------------------------------------------------------------------------------
_OPENAI_JSON = next(e for e in load_fixtures("openai", "/v1/chat/completions", False, tools=False, status=200))
_ANTHROPIC_JSON = next(e for e in load_fixtures("anthropic", "/v1/messages", False, tools=False, status=200))
VALID_JSON = {
    "openai": {**_OPENAI_JSON["response"]["json"], "model": MODEL["openai"]},
    "anthropic": {**_ANTHROPIC_JSON["response"]["json"], "model": MODEL["anthropic"]},
}
_OPENAI_USAGE = {"prompt_tokens": 14, "completion_tokens": 9, "total_tokens": 23}
_ANTHROPIC_USAGE = {"input_tokens": 14, "output_tokens": 9}
MISSING_FIELD = {
    "empty_choices": {"id": "chatcmpl-fault", "object": "chat.completion", "created": 1, "model": MODEL["openai"],
                      "choices": [], "usage": _OPENAI_USAGE},
    "no_choices": {"id": "chatcmpl-fault", "object": "chat.completion", "created": 1, "model": MODEL["openai"],
                   "usage": _OPENAI_USAGE},
    "no_content": {"id": "msg_fault", "type": "message", "role": "assistant", "model": MODEL["anthropic"],
                   "stop_reason": "end_turn", "stop_sequence": None, "usage": _ANTHROPIC_USAGE},
}


def _auth_echo(provider: str) -> str:
    """How a misconfigured proxy's debug output would show the request's credentials."""
    if provider == "openai":
        return f"Authorization: Bearer {OPENAI_KEY}"
    return f"x-api-key: {ANTHROPIC_KEY}"


def _html_page(provider: str) -> bytes:
    # a short head: an error message quoting the page's first 60-80 characters cuts it inside the key
    return (f"<html><body><h1>Sign in</h1><pre>{_auth_echo(provider)}</pre>"
            "<p>Corporate proxy: please sign in to continue.</p></body></html>").encode()


def _invalid_json(provider: str) -> bytes:
    cut = ', "choices": [{"index": 0, "message": {"role": "assis'  # the body stops inside a string
    return (json.dumps({"debug": _auth_echo(provider)})[:-1] + cut).encode()


# --- SSE ------------------------------------------------------------------------------------
TEXT = ["Pin ", "your dependencies", " and record seeds."]


def _oai_chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None) -> str:
    chunk: dict[str, Any] = {"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 1,
                             "model": MODEL["openai"], "system_fingerprint": None}
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    chunk["choices"] = [] if delta is None else [choice]
    if usage is not None:
        chunk["usage"] = usage
    return "data: " + json.dumps(chunk, separators=(",", ":")) + "\n\n"


def _ant_event(kind: str, **data: Any) -> str:
    return f"event: {kind}\ndata: " + json.dumps({"type": kind, **data}, separators=(",", ":")) + "\n\n"


def _sse_head(provider: str) -> list[str]:
    """The events a stream starts with, before any text."""
    if provider == "openai":
        return [_oai_chunk({"role": "assistant", "content": "", "refusal": None})]
    message = {"id": "msg_fault", "type": "message", "role": "assistant", "model": MODEL["anthropic"], "content": [],
               "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 14, "output_tokens": 1}}
    return [_ant_event("message_start", message=message),
            _ant_event("content_block_start", index=0, content_block={"type": "text", "text": ""})]


def _sse_text(provider: str) -> list[str]:
    if provider == "openai":
        return [_oai_chunk({"content": t}) for t in TEXT]
    return [_ant_event("content_block_delta", index=0, delta={"type": "text_delta", "text": t}) for t in TEXT]


def _sse_tail(provider: str) -> list[str]:
    """The finish events a complete stream ends with."""
    if provider == "openai":
        return [_oai_chunk({}, "stop"), _oai_chunk(usage=_OPENAI_USAGE), "data: [DONE]\n\n"]
    return [_ant_event("content_block_stop", index=0),
            _ant_event("message_delta", delta={"stop_reason": "end_turn", "stop_sequence": None},
                       usage={"output_tokens": 9}),
            _ant_event("message_stop")]


def _sse_error(provider: str) -> str:
    if provider == "openai":
        return "data: " + json.dumps({"error": {"message": "The server had an error while processing your request.",
                                                "type": "server_error", "param": None, "code": None}}) + "\n\n"
    return "event: error\ndata: " + json.dumps({"type": "error", "error": {"type": "overloaded_error",
                                                                           "message": "Overloaded"}}) + "\n\n"


ERROR_EVENT_TYPE = {"openai": "server_error", "anthropic": "overloaded"}
ERROR_EVENT_TEXT = {"openai": "The server had an error", "anthropic": "Overloaded"}


def _garbage_sse(provider: str) -> list[str]:
    if provider == "openai":
        return ["data: {not json\n\n"]
    return ["event: message_start\ndata: {garbage\n\n"]


# --- the faults -----------------------------------------------------------------------------
Inject = Callable[[Any, str, str], None]  # (server, provider, mode)


@dataclass(frozen=True)
class Fault:
    name: str
    outcome: str  # "fallback" | "stop" | "interrupted" | "all_fail"
    error_type: str | tuple[str, ...] | Callable[[str], str]
    inject: Inject
    modes: tuple[str, ...] = MODES
    providers: tuple[str, ...] = PROVIDERS
    requests: int | None = 1  # requests the faulty server receives (None: 1 or 2)
    message: Callable[[str], str] | str | None = None  # regex the error message must contain
    bounded: bool = False  # the attempt ends within timeout + 0.5 s having sent one request
    stalled: bool = False  # a stream stalls after text: the error comes within timeout + 0.5 s of the last chunk
    max_latency_ms: float | None = None
    status: int | None = None
    typo: bool = False  # call with an explicitly named model the provider does not know
    kit_kw: dict = field(default_factory=dict)

    def expected_type(self, provider: str) -> tuple[str, ...]:
        t = self.error_type(provider) if callable(self.error_type) else self.error_type
        return t if isinstance(t, tuple) else (t,)

    def message_re(self, provider: str) -> str | None:
        return self.message(provider) if callable(self.message) else self.message


def _status_fault(status: int, error_type: str, outcome: str = "fallback", **kw: Any) -> Fault:
    retried = status in SDK_RETRIED

    def inject(srv: Any, provider: str, mode: str) -> None:
        # enqueued twice either way: a retry the SDK should not make would get the same error
        srv.enqueue_error(status, body=_status_body(provider, status), headers=FAST_RETRY if retried else None, times=2)

    return Fault(f"http_{status}", outcome, error_type, inject, requests=2 if retried else 1,
                 message=lambda p: re.escape(_status_fragment(p, status)), status=status, **kw)


def _typo_404(srv: Any, provider: str, mode: str) -> None:
    srv.enqueue_error(404, body=_status_body(provider, 404, TYPO[provider]), times=2)


def _retry_after_over_cap(srv: Any, provider: str, mode: str) -> None:
    # the kit's max_retry_wait is 0.2 s; the server asks for 0.6 s: no retry, move on at once
    srv.enqueue_error(429, body=_status_body(provider, 429), headers={"retry-after-ms": "600"}, times=2)


def _retry_after_beyond_timeout(srv: Any, provider: str, mode: str) -> None:
    # 5 s is within max_retry_wait (20 s) but beyond the attempt's timeout: no retry, move on at once
    srv.enqueue_error(503, body=_status_body(provider, 503), headers={"retry-after": "5"}, times=2)


def _drip(srv: Any, provider: str, mode: str) -> None:
    if mode in STREAMS:
        data = "".join(_sse_head(provider) + _sse_text(provider) + _sse_tail(provider)).encode()
        srv.enqueue_drip(200, "text/event-stream; charset=utf-8", data, DRIP_EVERY_S, times=2)
    else:
        srv.enqueue_drip(200, "application/json", json.dumps(VALID_JSON[provider]).encode(), DRIP_EVERY_S, times=2)


def _truncated(srv: Any, provider: str, mode: str) -> None:
    if mode in STREAMS:
        data = _sse_head(provider)[0][:60].encode()  # part of the first event: no text can have arrived
        srv.enqueue_truncated(200, "text/event-stream; charset=utf-8", data, len(data) + 400, times=2)
    else:
        data = json.dumps(VALID_JSON[provider]).encode()
        srv.enqueue_truncated(200, "application/json", data[: len(data) // 2], len(data), times=2)


def _reset_after_headers(srv: Any, provider: str, mode: str) -> None:
    ctype = "text/event-stream; charset=utf-8" if mode in STREAMS else "application/json"
    srv.enqueue_truncated(200, ctype, b"", 400, times=2, reset=True)


def _reset_mid_body(srv: Any, provider: str, mode: str) -> None:
    if mode in STREAMS:  # the first events, no text yet
        srv.enqueue_sse(_sse_head(provider), terminate=False, reset=True, times=2)
    else:
        data = json.dumps(VALID_JSON[provider]).encode()
        srv.enqueue_truncated(200, "application/json", data[: len(data) // 2], len(data), times=2, reset=True)


def _drip_after_text(srv: Any, provider: str, mode: str) -> None:
    prefix = "".join(_sse_head(provider) + _sse_text(provider)).encode()
    tail = "".join(_sse_tail(provider)).encode()
    srv.enqueue_drip(200, "text/event-stream; charset=utf-8", tail, DRIP_EVERY_S, chunked=True, prefix=prefix, times=2)


def _raw(status: int, ctype: str, make: Callable[[str], bytes]) -> Inject:
    def inject(srv: Any, provider: str, mode: str) -> None:
        for _ in range(2):
            srv.enqueue_raw(status, ctype, make(provider))

    return inject


def _sse(make: Callable[[str], list[str]], terminate: bool, **kw: Any) -> Inject:
    def inject(srv: Any, provider: str, mode: str) -> None:
        srv.enqueue_sse(make(provider), terminate=terminate, times=2, **kw)

    return inject


def _with_text(p: str) -> list[str]:
    return _sse_head(p) + _sse_text(p)


def _closed(srv: Any, provider: str, mode: str) -> None:
    for _ in range(2):  # the SDK retries a connection error once
        srv.enqueue_disconnect()


def _all_fail(srv: Any, provider: str, mode: str) -> None:
    srv.enqueue_error(503, body=_status_body(provider, 503), headers=FAST_RETRY, times=2)


_CONN = r"(?i)connect|disconnect|reset|closed|peer|incomplete|lost|payload is not completed|not enough data"
_TIME = r"(?i)time"  # "timeout", "timed out"
_NO_FINISH = r"(?i)final event|finish|message_stop|ended"

FAULTS: list[Fault] = [
    # --- statuses the APIs document, and unlisted ones: the chain moves on -----------------
    _status_fault(401, "auth_error"),
    _status_fault(402, "http_error"),
    _status_fault(403, "auth_error"),
    _status_fault(404, "not_found"),  # a role call: the provider does not have this role's model
    _status_fault(408, "timeout"),
    _status_fault(409, "http_error"),
    _status_fault(429, "rate_limit"),
    _status_fault(500, "server_error"),
    _status_fault(502, "server_error"),
    _status_fault(503, "server_error"),
    _status_fault(504, "server_error"),
    _status_fault(529, "overloaded"),
    # --- the request is wrong: the chain stops -----------------------------------------------
    _status_fault(400, "invalid_request", "stop"),
    _status_fault(413, "invalid_request", "stop"),
    _status_fault(422, "invalid_request", "stop"),
    Fault("model_typo_404", "stop", "not_found", _typo_404, status=404, typo=True,
          message=lambda p: re.escape(TYPO[p])),
    # --- retry waits -------------------------------------------------------------------------
    Fault("retry_after_over_cap", "fallback", "rate_limit", _retry_after_over_cap, status=429,
          message=lambda p: re.escape(_status_fragment(p, 429)), max_latency_ms=550, kit_kw={"max_retry_wait": 0.2}),
    Fault("retry_after_beyond_timeout", "fallback", "server_error", _retry_after_beyond_timeout, status=503,
          message=lambda p: re.escape(_status_fragment(p, 503)), bounded=True),
    # --- the network -------------------------------------------------------------------------
    Fault("conn_reset", "fallback", "connection_error", lambda s, p, m: s.enqueue_reset(times=2), requests=2,
          message=_CONN),
    Fault("conn_closed", "fallback", "connection_error", _closed, requests=2, message=_CONN),
    Fault("hang", "fallback", "timeout", lambda s, p, m: s.enqueue_hang(5.0, times=2), bounded=True, message=_TIME),
    Fault("slow_drip", "fallback", "timeout", _drip, bounded=True, message=_TIME),
    Fault("reset_after_headers", "fallback", "connection_error", _reset_after_headers, requests=None, message=_CONN),
    Fault("reset_mid_body", "fallback", "connection_error", _reset_mid_body, requests=None, message=_CONN),
    Fault("truncated_body", "fallback", ("connection_error", "bad_response"), _truncated, requests=None,
          message=_CONN + "|JSON"),
    # --- 200s the kit cannot read ------------------------------------------------------------
    Fault("html_200", "fallback", "bad_response", _raw(200, "text/html; charset=utf-8", _html_page),
          message=r"(?i)content type|text/html"),
    Fault("invalid_json", "fallback", "bad_response", _raw(200, "application/json", _invalid_json),
          modes=PLAIN, message=r"JSON"),
    Fault("json_list", "fallback", "bad_response",
          _raw(200, "application/json", lambda p: json.dumps([VALID_JSON[p]]).encode()), modes=PLAIN,
          message=r"(?i)JSON object|not a chat completion|list"),
    Fault("empty_choices", "fallback", "bad_response",
          _raw(200, "application/json", lambda p: json.dumps(MISSING_FIELD["empty_choices"]).encode()),
          modes=PLAIN, providers=("openai",), message=r"(?i)choices"),
    Fault("no_choices", "fallback", "bad_response",
          _raw(200, "application/json", lambda p: json.dumps(MISSING_FIELD["no_choices"]).encode()),
          modes=PLAIN, providers=("openai",), message=r"(?i)chat completion|choices"),
    Fault("no_content", "fallback", "bad_response",
          _raw(200, "application/json", lambda p: json.dumps(MISSING_FIELD["no_content"]).encode()),
          modes=PLAIN, providers=("anthropic",), message=r"(?i)content"),
    # --- streams, before any text: the chain moves on ----------------------------------------
    Fault("garbage_sse", "fallback", "bad_response", _sse(_garbage_sse, True), modes=STREAMS, message=r"JSON"),
    Fault("non_sse_body", "fallback", "bad_response",
          _raw(200, "application/json", lambda p: json.dumps(VALID_JSON[p]).encode()), modes=STREAMS,
          message=r"(?i)content type"),
    Fault("sse_no_finish_before_text", "fallback", "incomplete_stream", _sse(_sse_head, True), modes=STREAMS,
          message=_NO_FINISH),
    Fault("sse_dropped_before_text", "fallback", "connection_error", _sse(_sse_head, False), modes=STREAMS,
          message=_CONN),
    Fault("sse_error_event_before_text", "fallback", lambda p: ERROR_EVENT_TYPE[p],
          _sse(lambda p: _sse_head(p)[:1] + [_sse_error(p)], True), modes=STREAMS,
          message=lambda p: re.escape(ERROR_EVENT_TEXT[p])),
    # --- streams, after text: committed, StreamInterruptedError ------------------------------
    Fault("sse_dropped_after_text", "interrupted", "connection_error", _sse(_with_text, False), modes=STREAMS,
          message=_CONN),
    # the pause lets the client read the text before the reset (a reset can discard unread data)
    Fault("sse_reset_after_text", "interrupted", "connection_error", _sse(_with_text, False, reset=True, pause_s=0.2),
          modes=STREAMS, message=_CONN),
    Fault("sse_no_finish_after_text", "interrupted", "incomplete_stream", _sse(_with_text, True), modes=STREAMS,
          message=_NO_FINISH),
    Fault("sse_error_event_after_text", "interrupted", lambda p: ERROR_EVENT_TYPE[p],
          _sse(lambda p: _with_text(p) + [_sse_error(p)], True), modes=STREAMS,
          message=lambda p: re.escape(ERROR_EVENT_TEXT[p])),
    Fault("sse_stall_after_text", "interrupted", "timeout", _sse(_with_text, False, pause_s=5.0), modes=STREAMS,
          message=_TIME, stalled=True),
    Fault("sse_drip_after_text", "interrupted", "timeout", _drip_after_text, modes=STREAMS, message=_TIME,
          stalled=True),
    # --- both providers fail -----------------------------------------------------------------
    Fault("all_fail", "all_fail", "server_error", _all_fail, requests=2,
          message=lambda p: re.escape(_status_fragment(p, 503))),
]
FAULTS_BY_NAME = {f.name: f for f in FAULTS}
assert len(FAULTS_BY_NAME) == len(FAULTS)

CASES = [
    pytest.param(provider, fault.name, mode, id=f"{provider}-{fault.name}-{mode}")
    for fault in FAULTS
    for provider in fault.providers
    for mode in fault.modes
]


@pytest.fixture(autouse=True)
def _no_ca_bundle(monkeypatch, tmp_path_factory):
    """Every Kit builds its SDK clients afresh and each client loads the system CA bundle (about
    50 ms each; the loopback servers speak plain HTTP, so nothing is verified): an empty CA folder
    keeps the matrix's 250 Kits within its time budget."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path_factory.mktemp("no-ca")))


# --- running a call ---------------------------------------------------------------------------
@dataclass
class Outcome:
    result: Any = None  # the Completion
    exc: BaseException | None = None
    chunks: list[str] = field(default_factory=list)
    chunk_times: list[float] = field(default_factory=list)  # perf_counter() as each chunk arrived
    warnings: list[warnings.WarningMessage] = field(default_factory=list)
    seconds: float = 0.0
    ended: float = 0.0  # perf_counter() when the call returned or raised


def _run(kit: Any, mode: str, **kw: Any) -> Outcome:
    out = Outcome()

    async def consume() -> Any:
        s = kit.astream(PROMPT, **kw)
        async for chunk in s:
            out.chunks.append(chunk)
            out.chunk_times.append(time.perf_counter())
        return s.completion

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        try:
            if mode == "sync":
                out.result = kit.complete(PROMPT, **kw)
            elif mode == "async":
                out.result = asyncio.run(kit.acomplete(PROMPT, **kw))
            elif mode == "stream":
                s = kit.stream(PROMPT, **kw)
                for chunk in s:
                    out.chunks.append(chunk)
                    out.chunk_times.append(time.perf_counter())
                out.result = s.completion
            else:
                out.result = asyncio.run(consume())
        except Exception as exc:  # noqa: BLE001 - every outcome is asserted below
            out.exc = exc
        out.ended = time.perf_counter()
        out.seconds = out.ended - t0
    out.warnings = list(caught)
    return out


def _call_kwargs(fault: Fault, provider: str) -> dict[str, Any]:
    if fault.typo:
        return {"model": TYPO[provider]}
    kw: dict[str, Any] = {"role": "executor"}
    if provider == "anthropic":
        kw["providers"] = ["anthropic", "openai"]
    return kw


def _describe(out: Outcome) -> str:
    if out.exc is not None:
        return f"raised {type(out.exc).__name__}: {out.exc}"
    r = out.result
    attempts = getattr(r, "attempts", None)
    return f"returned {r!r} (attempts: {attempts!r})"


def _b(value: Any) -> bool | None:
    return None if value is None or pd.isna(value) else bool(value)


def _null(value: Any) -> bool:
    return value is None or bool(pd.isna(value))


# --- the checks that apply to every test ------------------------------------------------------
def _texts_of(obj: Any) -> list[str]:
    if obj is None:
        return []
    texts = [str(obj), repr(obj)]
    if isinstance(obj, BaseException):
        texts.append("".join(traceback.format_exception(obj)))
        for a in getattr(obj, "attempts", None) or []:
            texts += [repr(a), str(a.error_message), json.dumps(a.__dict__, default=str)]
        texts += _texts_of(getattr(obj, "completion", None))
    else:  # a Completion
        texts += [obj._repr_html_(), obj.footer(), json.dumps(obj.to_dict(), default=str)]
    return texts


def _assert_no_key(kit: Any, out: Outcome, ledger: pd.DataFrame) -> None:
    texts = _texts_of(out.exc) + _texts_of(out.result) + out.chunks
    texts += [f"{w.category.__name__}: {w.message}" for w in out.warnings]
    texts.append(ledger.to_json(date_format="iso"))
    texts.append(json.dumps(kit.status(), default=str))
    blob = "\n".join(texts)
    for name, key in KEY.items():
        assert key not in blob, f"the {name} key leaked into the exception, completion, warnings, ledger or status"
        leaked = [w for w in _key_windows(key) if w in blob]
        assert not leaked, f"part of the {name} key leaked (a message cut inside it?): {leaked[:3]}"
    files = [p for p in Path(kit.home).rglob("*") if p.is_file()]
    assert files, "the Kit's home holds no files: the ledger was not written"
    for path in files:
        data = path.read_bytes()
        for name, key in KEY.items():
            assert key.encode() not in data, f"the {name} key leaked into {path}"
            leaked = [w for w in _key_windows(key) if w.encode() in data]
            assert not leaked, f"part of the {name} key leaked into {path}: {leaked[:3]}"


def _key_windows(key: str, n: int = 12, step: int = 3) -> list[str]:
    """Runs of ``n`` characters of a key, one every ``step``: any ``n + step - 1`` characters of the
    key in a row contain one of them, so a message cut inside a key cannot show most of it."""
    starts = list(range(0, len(key) - n + 1, step))
    if starts[-1] != len(key) - n:
        starts.append(len(key) - n)
    return [key[i:i + n] for i in starts]


def _assert_key_sent(srv: Any, provider: str) -> None:
    """The servers really received the keys (so the redaction checks above mean something)."""
    assert srv.requests, f"{provider} received no request"
    headers = srv.requests[0].headers
    sent = {headers.get("authorization"), headers.get("x-api-key")}  # this anthropic SDK sends a bearer token
    assert f"Bearer {KEY[provider]}" in sent or KEY[provider] in sent, f"{provider} did not receive its key"


def _assert_message(text: str, fault: Fault, provider: str, what: str) -> None:
    pattern = fault.message_re(provider)
    if pattern is not None:
        assert re.search(pattern, text or ""), f"{what} {text!r} does not match {pattern!r}"


def _auth_warnings(out: Outcome) -> list[warnings.WarningMessage]:
    return [w for w in out.warnings if issubclass(w.category, AuthenticationWarning)]


# --- the test -----------------------------------------------------------------------------------
@pytest.mark.parametrize("provider,fault_name,mode", CASES)
def test_fault(make_live_kit, openai_server, anthropic_server, provider, fault_name, mode):
    fault = FAULTS_BY_NAME[fault_name]
    servers = {"openai": openai_server, "anthropic": anthropic_server}
    first, second = provider, OTHER[provider]
    kit = make_live_kit(timeout=TIMEOUT, max_retries=1, **fault.kit_kw)
    calls_before = kit.simulated.calls
    fault.inject(servers[first], first, mode)
    if fault.outcome == "all_fail":
        _status_fault(529, "overloaded").inject(servers[second], second, mode)

    out = _run(kit, mode, **_call_kwargs(fault, provider))

    n_first, n_second = len(servers[first].requests), len(servers[second].requests)
    ledger = kit.usage()  # read once: each read folds the journals into DuckDB (~0.1 s)
    _assert_key_sent(servers[first], first)
    expected = fault.expected_type(provider)
    stream = mode in STREAMS

    if fault.outcome == "fallback":
        assert out.exc is None, f"expected {second} to answer after {first} failed; {_describe(out)}"
        r = out.result
        assert r is not None, "the stream ended without a Completion"
        assert r.provider == second and r.model == MODEL[second], _describe(out)
        assert r.substituted is True and r.requested_provider == first and r.requested_model == MODEL[first]
        assert r.content and r.completion_tokens > 0 and r.prompt_tokens > 0 and r.cost_usd > 0
        assert r.tokens_estimated is False
        if stream:
            assert "".join(out.chunks) == r.content
        assert [(a.provider, a.status) for a in r.attempts] == [(first, "error"), (second, "ok")], r.attempts
        a0 = r.attempts[0]
        assert a0.error_type in expected, f"attempt at {first}: error_type {a0.error_type!r}, expected {expected}"
        _assert_message(a0.error_message, fault, provider, "the failed attempt's error_message")
        if fault.status is not None:
            assert a0.status_code == fault.status
        assert n_second == 1
        rows = ledger[ledger.request_id == r.request_id].sort_values("attempt")
        assert len(rows) == 2 == len(ledger), ledger[["request_id", "attempt", "provider", "status"]]
        assert list(rows.status) == ["error", "ok"] and list(rows.provider) == [first, second]
        assert rows.error_type.iloc[0] in expected and _null(rows.error_type.iloc[1])
        assert [_b(v) for v in rows.substituted] == [False, True]
        assert list(rows.requested_provider) == [first, first]
        err, ok = rows.iloc[0], rows.iloc[1]
        assert _null(err.prompt_tokens) and _null(err.completion_tokens) and _null(err.cost_usd), (
            f"the failed attempt was given tokens or a cost: "
            f"{err.prompt_tokens}, {err.completion_tokens}, {err.cost_usd}")
        assert ok.prompt_tokens > 0 and ok.completion_tokens > 0 and ok.cost_usd > 0
        assert _b(ok.tokens_estimated) is False
        assert _b(err.stream) is stream and _b(ok.stream) is stream
        attempt_of_first, row_of_first = a0, err
    elif fault.outcome == "stop":
        assert isinstance(out.exc, ProviderError) and not isinstance(out.exc, StreamInterruptedError), \
            f"expected a ProviderError that stops the chain; {_describe(out)}"
        e = out.exc
        assert e.error_type in expected and e.provider == first
        assert e.model == (TYPO[first] if fault.typo else MODEL[first])
        assert e.status_code == fault.status, f"status_code {e.status_code!r}, expected {fault.status}"
        if fault.error_type == "invalid_request":
            assert e.retryable is False
        _assert_message(str(e), fault, provider, "the exception's message")
        assert n_second == 0, f"{second} was asked although the chain should have stopped"
        assert out.chunks == []
        rows = ledger
        assert len(rows) == 1 and rows.status.iloc[0] == "error" and rows.error_type.iloc[0] in expected
        assert rows.provider.iloc[0] == first and _b(rows.substituted.iloc[0]) is False
        row_of_first = rows.iloc[0]
        assert _null(row_of_first.prompt_tokens) and _null(row_of_first.completion_tokens) \
            and _null(row_of_first.cost_usd)
        attempts = getattr(e, "attempts", None)
        attempt_of_first = attempts[0] if attempts else None
        if fault.typo:
            assert servers[first].requests[0].body["model"] == TYPO[first]
    elif fault.outcome == "interrupted":
        assert isinstance(out.exc, StreamInterruptedError), f"expected StreamInterruptedError; {_describe(out)}"
        e = out.exc
        got = "".join(out.chunks)
        assert out.chunks and e.partial == got and "".join(TEXT).startswith(got)
        assert e.provider == first and e.error_type in expected and e.retryable is False
        assert re.search(r"broke after \d+ chunk", str(e)), str(e)
        _assert_message(str(e), fault, provider, "the exception's message")
        assert e.completion is not None and e.completion.content == got and e.completion.tokens_estimated is True
        assert n_second == 0, f"{second} was asked after text had arrived: the answer could be billed twice"
        rows = ledger
        assert len(rows) == 1, rows[["attempt", "provider", "status"]]
        row = rows.iloc[0]
        assert row.status == "interrupted" and row.provider == first and row.error_type in expected
        assert _b(row.tokens_estimated) is True and row.completion_tokens > 0 and row.cost_usd > 0
        attempt_of_first, row_of_first = (e.completion.attempts or [None])[0], row
        if fault.stalled:
            gap = (out.ended - out.chunk_times[-1]) * 1000
            assert gap < BOUND_MS, f"the stream stalled after text for {gap:.0f} ms before the kit gave up"
    else:  # all_fail
        assert isinstance(out.exc, AllProvidersFailedError), f"expected AllProvidersFailedError; {_describe(out)}"
        e = out.exc
        assert [(a.provider, a.status, a.error_type) for a in e.attempts] == [
            (first, "error", "server_error"), (second, "error", "overloaded")]
        text = str(e)
        assert f"{first}/{MODEL[first]}" in text and f"{second}/{MODEL[second]}" in text
        assert "HTTP 503" in text and "HTTP 529" in text
        _assert_message(text, fault, provider, "the exception's message")
        assert n_second == 2 and e.attempts[1].http_requests == 2
        rows = ledger[ledger.request_id == e.request_id].sort_values("attempt")
        assert len(rows) == 2 == len(ledger), ledger[["request_id", "attempt", "provider", "status"]]
        assert list(rows.status) == ["error", "error"] and list(rows.provider) == [first, second]
        assert "simulated" not in set(ledger.provider) and kit.simulated.calls == calls_before
        for _, row in rows.iterrows():
            assert _null(row.prompt_tokens) and _null(row.completion_tokens) and _null(row.cost_usd)
        assert list(rows.http_requests) == [n_first, n_second]
        attempt_of_first, row_of_first = e.attempts[0], rows.iloc[0]

    # requests at the faulty server, as the attempt counted them
    if fault.requests is not None:
        assert n_first == fault.requests, f"{first} received {n_first} request(s), expected {fault.requests}"
    else:
        assert n_first in (1, 2)
    assert row_of_first.http_requests == n_first, \
        f"the ledger row counts {row_of_first.http_requests} HTTP request(s); {first} received {n_first}"
    if attempt_of_first is not None:
        assert attempt_of_first.http_requests == n_first, \
            f"the attempt counted {attempt_of_first.http_requests} HTTP request(s); {first} received {n_first}"
        if fault.bounded:
            assert attempt_of_first.http_requests == 1
            assert attempt_of_first.latency_ms < BOUND_MS, \
                f"the attempt took {attempt_of_first.latency_ms:.0f} ms (timeout {TIMEOUT:g} s)"
        if fault.max_latency_ms is not None:
            assert attempt_of_first.latency_ms < fault.max_latency_ms, \
                f"the attempt took {attempt_of_first.latency_ms:.0f} ms: it waited for a retry it should not make"
    if fault.bounded:
        assert out.seconds < 2 * TIMEOUT + 3, f"the call took {out.seconds:.1f} s"

    # auth: one warning per provider per Kit, and status() says so
    auth = fault.expected_type(provider) == ("auth_error",)
    status = kit.status()["providers"]
    if auth:
        ws = _auth_warnings(out)
        assert len(ws) == 1 and first in str(ws[0].message), [str(w.message) for w in ws]
        assert status[first]["auth"] == "failing"
    else:
        assert _auth_warnings(out) == []
        assert status[first]["auth"] == "ok" and status[second]["auth"] == "ok"

    _assert_no_key(kit, out, ledger)

    if auth:  # the same refusal again: no second warning, still failing
        servers[first].reset()
        servers[second].reset()
        fault.inject(servers[first], first, mode)
        again = _run(kit, mode, **_call_kwargs(fault, provider))
        assert again.exc is None and again.result.provider == second, _describe(again)
        assert _auth_warnings(again) == [], "AuthenticationWarning repeated for the same provider and Kit"
        assert kit.status()["providers"][first]["auth"] == "failing"
        _assert_no_key(kit, again, kit.usage())


def test_matrix_size():
    """The issue asks for at least 25 kinds of fault, each over both providers and the modes it applies to."""
    assert len(FAULTS) >= 25
    assert len(CASES) >= 200
