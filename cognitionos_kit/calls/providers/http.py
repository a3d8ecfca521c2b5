"""The HTTP clients handed to the official SDKs: a wall-clock deadline per attempt, a count of
the requests each attempt really sent, and a cap on how long the SDK may wait to retry.

The SDKs keep their own retry loop (Retry-After, backoff, idempotency keys): the only one. What
they cannot do is bound a whole attempt: their ``timeout`` applies to each request and each read,
so a hanging server costs ``timeout x (max_retries + 1)`` plus backoff, and a body that drips one
byte a second never times out. Both SDKs send every request through their httpx client's public
``send``; the clients here override it:

* each request gets at most the attempt's remaining time as its connect/read/write/pool timeouts;
* a body is read chunk by chunk against the deadline (a slow drip ends at the deadline);
* when the deadline has passed, or the SDK would wait past it (or past ``max_retry_wait``) before a
  retry, the response says so with the SDKs' own ``x-should-retry: false`` header, so the SDK
  raises at once instead of sleeping;
* every request is counted, and requests that failed after being sent (a read timeout, a dropped
  connection) are counted as possibly billed.

The attempt being made is found through a context variable that the fallback drivers set around
each provider call (``attempt_scope``); outside one, the clients behave exactly like the SDKs'.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["AttemptIO", "attempt_scope", "current_attempt", "retry_after_seconds", "sync_http_client",
           "async_http_client", "DEADLINE_HEADER"]

DEADLINE_HEADER = "x-cognitionos-deadline"
# Statuses the SDKs retry (408/409/429/5xx) and the wait they would choose (their documented
# defaults: Retry-After up to 60 s honoured, else 0.5 s x 2^n backoff capped at 8 s).
_RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
_SDK_MAX_RETRY_AFTER = 60.0
_SDK_BACKOFF = (0.5, 8.0)


class AttemptIO:
    """What one attempt may spend and what it sent: shared by the driver and the HTTP client.

    ``deadline`` is a ``time.monotonic()`` instant; for a stream it is pushed forward by
    ``timeout`` each time text arrives (``touch``), bounded by the call's own deadline.
    """

    __slots__ = ("timeout", "deadline", "hard_deadline", "max_retry_wait", "requests", "maybe_billed", "timed_out",
                 "stream", "on_retry_after", "paused")

    def __init__(self, timeout: float, *, call_deadline: float | None = None, max_retry_wait: float | None = None,
                 stream: bool = False) -> None:
        now = time.monotonic()
        self.timeout = timeout
        self.hard_deadline = call_deadline if call_deadline is not None else float("inf")
        self.deadline = min(now + timeout, self.hard_deadline)
        self.max_retry_wait = max_retry_wait
        self.requests = 0
        self.maybe_billed = 0
        self.timed_out = False
        self.stream = stream
        self.on_retry_after: Callable[[float], None] | None = None  # told a 429's Retry-After at once
        self.paused: tuple[float, str] | None = None  # (seconds left, whose) of a 429's pause: answer 429 locally

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def touch(self) -> None:
        """Text arrived on a stream: the next chunk has ``timeout`` seconds again."""
        self.deadline = min(time.monotonic() + self.timeout, self.hard_deadline)

    def expired(self) -> bool:
        if time.monotonic() >= self.deadline:
            self.timed_out = True
            return True
        return False


_CURRENT: contextvars.ContextVar[AttemptIO | None] = contextvars.ContextVar("cognitionos_attempt", default=None)


def current_attempt() -> AttemptIO | None:
    """The attempt in progress in this context (None outside the kit's drivers)."""
    return _CURRENT.get()


class attempt_scope:
    """``with attempt_scope(io):`` the HTTP clients see ``io`` as the attempt in progress.
    (A class, not ``@contextmanager``: it runs on every call and chunk, where that costs.)"""

    __slots__ = ("io", "token")

    def __init__(self, io: AttemptIO) -> None:
        self.io = io

    def __enter__(self) -> AttemptIO:
        self.token = _CURRENT.set(self.io)
        return self.io

    def __exit__(self, *exc: Any) -> None:
        _CURRENT.reset(self.token)


def retry_after_seconds(headers: Any) -> float | None:
    """The server-requested wait (``retry-after-ms``, ``retry-after`` seconds or HTTP date).

    Written here because the SDKs' own parser (``_parse_retry_after_header``) is private; this
    reads the same headers the same way."""
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value) / divisor
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        import email.utils  # only for the rare HTTP-date form

        parsed = email.utils.parsedate_tz(value)
        if parsed is not None:
            return email.utils.mktime_tz(parsed) - time.time()
    return None


def _sdk_wait(response: Any) -> tuple[float, float | None]:
    """(the longest the SDK may sleep before retrying this response, the server's Retry-After)."""
    ra = retry_after_seconds(response.headers)
    if ra is not None and 0 < ra <= _SDK_MAX_RETRY_AFTER:
        return ra, ra
    try:
        n = int(response.request.headers.get("x-stainless-retry-count", "0"))
    except ValueError:
        n = 0
    return min(_SDK_BACKOFF[0] * 2.0 ** min(n, 30), _SDK_BACKOFF[1]), ra


def _stop_retry_if_needed(response: Any, io: AttemptIO | None, max_retry_wait: float | None,
                          no_retry: frozenset[int] = frozenset()) -> None:
    if response.status_code not in _RETRY_STATUSES or "x-should-retry" in response.headers:
        return
    if response.status_code in no_retry:
        response.headers["x-should-retry"] = "false"
        return
    wait, ra = _sdk_wait(response)
    too_long = max_retry_wait is not None and ra is not None and ra > max_retry_wait
    if too_long or (io is not None and wait >= io.remaining()):
        response.headers["x-should-retry"] = "false"


def _limit_timeouts(request: Any, remaining: float) -> None:
    current = request.extensions.get("timeout") or {}
    request.extensions["timeout"] = {
        k: (remaining if current.get(k) is None else min(current[k], remaining))
        for k in ("connect", "read", "write", "pool")
    }


def _sent(exc: BaseException) -> bool:
    """Did the request reach the server before this transport error (so it may have been billed)?"""
    names = {c.__name__ for c in type(exc).__mro__}
    if names & {"ConnectError", "ConnectTimeout", "PoolTimeout", "WriteError", "WriteTimeout"}:
        # aiohttp reports a dropped connection as a "connect timeout": look at the cause
        cause = exc.__cause__
        return cause is not None and type(cause).__name__ in {"ServerDisconnectedError", "ClientPayloadError"}
    return bool(names & {"ReadTimeout", "ReadError", "RemoteProtocolError"})


def _deadline_response(httpx: Any, request: Any, io: AttemptIO) -> Any:
    """A local 408 that the SDK raises at once (``x-should-retry: false``): the attempt is out of time."""
    io.timed_out = True
    body = {"error": {"message": f"no complete answer within the attempt's timeout of {io.timeout:g} s",
                      "type": "timeout"}}
    return httpx.Response(
        408, headers={"content-type": "application/json", "x-should-retry": "false", DEADLINE_HEADER: "1"},
        content=json.dumps(body).encode(), request=request,
    )


def _paused_response(httpx: Any, request: Any, seconds: float, who: str) -> Any:
    """A local 429, not sent: ``who`` answered 429 asking every process to wait, ``seconds`` more
    than the Kit's ``max_retry_wait``; the SDK raises it at once and the call moves on."""
    shown = who.replace("#", " key ")
    body = {"error": {"message": f"not sent: {shown} answered 429 asking to wait (Retry-After), {seconds:.1f} s more, "
                                 "longer than max_retry_wait", "type": "rate_limit_error"}}
    return httpx.Response(
        429, headers={"content-type": "application/json", "x-should-retry": "false", "retry-after": f"{seconds:.3f}"},
        content=json.dumps(body).encode(), request=request,
    )


def _mixins(httpx: Any) -> tuple[type, type]:
    def out_of_time(headers: Any) -> Exception:
        # SDKs that read the body themselves after ``send`` (anthropic >= 2.17) decide whether to
        # retry a transport error from the response's headers: the deadline has passed, so no retry
        # (and no backoff sleep before it).
        headers["x-should-retry"] = "false"
        return httpx.ReadTimeout("the attempt's deadline passed while the body was arriving")

    class _DeadlineStream(httpx.SyncByteStream):
        def __init__(self, inner: Any, io: AttemptIO, headers: Any) -> None:
            self.inner, self.io, self.headers = inner, io, headers

        def __iter__(self) -> Iterator[bytes]:
            try:
                for chunk in self.inner:
                    if self.io.expired():
                        raise out_of_time(self.headers)
                    yield chunk
            except httpx.TimeoutException:  # the read timeout is the time left: at the deadline, no retry
                if self.io.expired():
                    self.headers["x-should-retry"] = "false"
                raise

        def close(self) -> None:
            self.inner.close()

    class _AsyncDeadlineStream(httpx.AsyncByteStream):
        # An iterator object, not an async generator: nothing is left suspended for the garbage
        # collector to close later (which raced with the response's own close).
        def __init__(self, inner: Any, io: AttemptIO, headers: Any) -> None:
            self.inner, self.io, self.headers = inner, io, headers
            self.it: Any = None

        def __aiter__(self) -> Any:
            self.it = self.inner.__aiter__()
            return self

        async def __anext__(self) -> bytes:
            try:
                chunk = await self.it.__anext__()
            except httpx.TimeoutException:
                if self.io.expired():
                    self.headers["x-should-retry"] = "false"
                raise
            if self.io.expired():
                raise out_of_time(self.headers)
            return chunk

        async def aclose(self) -> None:
            it, self.it = self.it, None
            if it is not None and hasattr(it, "aclose"):
                try:
                    await it.aclose()
                except (RuntimeError, ValueError):  # already closing with the response
                    pass
            await self.inner.aclose()

    def begin(request: Any, io: AttemptIO) -> Any:
        """Before a request: a local 408 if the attempt is out of time; else count it and give it
        at most the time left."""
        remaining = io.remaining()
        if remaining <= 0:
            return _deadline_response(httpx, request, io)
        if io.paused is not None:
            return _paused_response(httpx, request, *io.paused)
        io.requests += 1
        _limit_timeouts(request, remaining)
        return None

    def failed(exc: BaseException, request: Any, io: AttemptIO, body_started: bool) -> Any:
        """A transport error: counted if the server may have billed; a timeout becomes the local
        408 (no SDK retry past the deadline); anything else is re-raised for the SDK to retry."""
        io.maybe_billed += 1 if body_started else _sent(exc)
        if isinstance(exc, httpx.TimeoutException) and not _dropped(exc):
            return _deadline_response(httpx, request, io)
        raise exc

    def start(request: Any) -> tuple[AttemptIO | None, Any]:
        """The attempt in progress (None outside one) and, when it is already over, its answer."""
        io = _CURRENT.get()
        return io, (None if io is None else begin(request, io))

    def send_failed(exc: BaseException, request: Any, io: AttemptIO | None) -> Any:
        if io is None:
            raise exc
        return failed(exc, request, io, False)

    def received(response: Any, io: AttemptIO | None, client: Any, wrap: Any) -> Any:
        _stop_retry_if_needed(response, io, client._kit_max_retry_wait, client._kit_no_retry)
        if io is not None and response.status_code == 429 and io.on_retry_after is not None:
            ra = retry_after_seconds(response.headers)
            if ra is not None and ra > 0:
                io.on_retry_after(ra)
        if io is not None:
            response.stream = wrap(response.stream, io, response.headers)  # every later read is bounded by the deadline
        return response

    def read_body(response: Any, request: Any, io: AttemptIO) -> Any:
        try:
            response.read()
        except httpx.TransportError as exc:
            response.close()
            return failed(exc, request, io, True)
        return response

    async def aread_body(response: Any, request: Any, io: AttemptIO) -> Any:
        try:
            await response.aread()
        except httpx.TransportError as exc:
            await response.aclose()
            return failed(exc, request, io, True)
        return response

    class SyncMixin:
        _kit_max_retry_wait: float | None = None
        _kit_no_retry: frozenset[int] = frozenset()  # statuses the SDK must not retry (a 429 with several keys)

        def send(self, request: Any, *, stream: bool = False, **kw: Any) -> Any:
            io, early = start(request)
            if early is not None:
                return early
            try:  # in an attempt, always streamed: the body is read below, under the deadline
                response = super().send(request, stream=stream or io is not None, **kw)  # type: ignore[misc]
            except httpx.TransportError as exc:
                return send_failed(exc, request, io)
            response = received(response, io, self, _DeadlineStream)
            return response if io is None or stream else read_body(response, request, io)

    class AsyncMixin:
        _kit_max_retry_wait: float | None = None
        _kit_no_retry: frozenset[int] = frozenset()  # statuses the SDK must not retry (a 429 with several keys)

        async def send(self, request: Any, *, stream: bool = False, **kw: Any) -> Any:
            io, early = start(request)
            if early is not None:
                return early
            try:
                response = await super().send(request, stream=stream or io is not None, **kw)  # type: ignore[misc]
            except httpx.TransportError as exc:
                return send_failed(exc, request, io)
            response = received(response, io, self, _AsyncDeadlineStream)
            return response if io is None or stream else await aread_body(response, request, io)

    return SyncMixin, AsyncMixin


def _dropped(exc: BaseException) -> bool:
    """aiohttp reports a connection the server dropped as a (connect) timeout: it is not one."""
    seen: set[int] = set()
    cause = exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if {c.__name__ for c in type(cause).__mro__} & {"ServerDisconnectedError", "ClientOSError",
                                                        "ClientConnectorError", "ConnectionResetError"}:
            return True
        cause = cause.__cause__ or cause.__context__
    return False


_CLASSES: dict[tuple[str, str], type] = {}


def _client_class(sdk: Any, base_name: str, is_async: bool) -> type:
    key = (sdk.__name__, base_name)
    cls = _CLASSES.get(key)
    if cls is None:
        import httpx2

        sync_mixin, async_mixin = _mixins(httpx2)
        base = getattr(sdk, base_name)
        cls = _CLASSES[key] = type(f"Kit{base_name}", (async_mixin if is_async else sync_mixin, base), {})
    return cls


class _LeanRequests:
    """Mixed into the SDK's client class: a leaner request path inside the SDK.

    For every request the SDK merges its headers into an ``httpx.Headers``, parses the base URL and
    the path, prints the URL and has httpx parse it again, and merges the HTTP client's headers: a
    third of the SDK's CPU per call at experiment concurrency (measured by
    benchmarks/bench_experiment.py; figures in the README). For a plain JSON POST (what every
    kit call is) those parts depend only on the path, the retry count, the timeout, the security
    options and the key, so the first such request is built by the SDK itself and the next ones
    reuse its URL, headers (less Content-Length) and extensions with a new body. Anything else
    (files, query parameters, extra JSON, an idempotency header, a key that is not a plain
    string, a provider runtime) is built by the SDK as usual. httpx URLs are immutable, so one is
    safely shared."""

    _kit_dumps: Callable[[Any], bytes]  # the SDK's own JSON encoder (set by sdk_client_class)

    def _prepare_url(self, url: str) -> Any:
        known: dict[tuple[str, Any], Any] = self.__dict__.setdefault("_kit_urls", {})
        key = (url, self._base_url)  # type: ignore[attr-defined]
        found = known.get(key)
        if found is None:
            found = known[key] = super()._prepare_url(url)  # type: ignore[misc]
        return found

    def _build_request(self, options: Any, *, retries_taken: int = 0) -> Any:
        build = super()._build_request  # type: ignore[misc]
        if (options.method != "post" or options.files or options.content is not None or options.extra_json is not None
                or options.params or not isinstance(options.json_data, dict) or self._idempotency_header  # type: ignore[attr-defined]
                or not isinstance(getattr(self, "api_key", None), (str, type(None)))
                or not isinstance(getattr(self, "auth_token", None), (str, type(None)))
                # a provider runtime or a key provider (Azure, workload identity) may change any request
                or getattr(self, "_provider_runtime", None) is not None
                or getattr(self, "_api_key_provider", None) is not None):
            return build(options, retries_taken=retries_taken)
        key = (options.url, retries_taken, repr(options.timeout), repr(getattr(options, "security", None)), repr(options.headers),
               self._base_url, getattr(self, "api_key", None), getattr(self, "auth_token", None))  # type: ignore[attr-defined]
        made: dict[tuple[Any, ...], Any] = self.__dict__.setdefault("_kit_requests", {})
        if key not in made:
            request = build(options, retries_taken=retries_taken)
            headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"content-length"]
            # a query (default or auth parameters, e.g. Azure's api-version): always built by the SDK
            made[key] = None if request.url.query else (type(request), request.url, headers, dict(request.extensions))
            return request
        template = made[key]
        if template is None:
            return build(options, retries_taken=retries_taken)
        cls, url, headers, extensions = template
        extensions = {k: dict(v) if isinstance(v, dict) else v for k, v in extensions.items()}  # a request's own
        # the body as the SDK encodes it (its own openapi_dumps: the bytes it would send)
        return cls("POST", url, headers=headers, content=self._kit_dumps(options.json_data), extensions=extensions)


_SDK_CLASSES: dict[tuple[str, str], type] = {}


@functools.cache
def sdk_platform(sdk: Any) -> Any:
    """The SDK's platform description (its user-agent details), found once per process. An async
    client looks it up on its first request in a worker thread, and every request that starts
    before the first has it does so too: 64 thread hops at the start of each experiment run."""
    return sdk._base_client.get_platform()


def sdk_client_class(sdk: Any, name: str) -> type:
    """The SDK's client class ``name`` with the kit's leaner request path (``_LeanRequests``)."""
    key = (sdk.__name__, name)
    cls = _SDK_CLASSES.get(key)
    if cls is None:
        base = getattr(sdk, name)
        dumps = importlib.import_module(f"{sdk.__name__}._utils._json").openapi_dumps
        cls = _SDK_CLASSES[key] = type(name, (_LeanRequests, base),
                                       {"__module__": __name__, "_kit_dumps": staticmethod(dumps)})
    return cls


@functools.lru_cache(maxsize=1)
def _tls() -> Any:
    """One TLS context for every client of this process (the SDK's default, built as it would):
    building one loads the CA bundle, tens of ms of CPU, which each run's new async client paid."""
    import httpx2

    return httpx2.create_ssl_context()


def sync_http_client(sdk: Any, max_retry_wait: float | None, no_retry: frozenset[int] = frozenset()) -> Any:
    """The SDK's default sync httpx client with the attempt deadline, request count and retry cap
    (``no_retry``: statuses the SDK gives up on at once)."""
    client = _client_class(sdk, "DefaultHttpxClient", False)(verify=_tls())
    client._kit_max_retry_wait, client._kit_no_retry = max_retry_wait, no_retry
    return client


def async_http_client(sdk: Any, max_retry_wait: float | None = None, no_retry: frozenset[int] = frozenset()) -> Any:
    """The HTTP client for an async SDK client: the SDK's own aiohttp transport when aiohttp
    is installed (``COGNITIONOS_ASYNC_HTTP=httpx`` opts out), else the SDK's default; both with
    the attempt deadline, request count and retry cap.

    Why aiohttp: at experiment concurrency (64 requests in flight) the default pool spends
    much CPU per request choosing a connection; aiohttp's pool does not. That needs a server to
    measure: benchmarks/bench_experiment.py runs against a loopback one (figures in the README).
    """
    name = "DefaultAsyncHttpxClient"
    if os.environ.get("COGNITIONOS_ASYNC_HTTP", "aiohttp").lower() != "httpx":
        try:
            import aiohttp  # noqa: F401

            name = "DefaultAioHttpClient" if hasattr(sdk, "DefaultAioHttpClient") else name
        except ImportError:
            pass
    try:
        client = _client_class(sdk, name, True)(verify=_tls())
    except RuntimeError:  # the SDK was installed without its aiohttp extra
        client = _client_class(sdk, "DefaultAsyncHttpxClient", True)(verify=_tls())
    client._kit_max_retry_wait, client._kit_no_retry = max_retry_wait, no_retry
    return client
