"""The one small interface every provider implements, and how SDK errors are classified."""

from __future__ import annotations

import asyncio
import os
import weakref
from abc import ABC, abstractmethod
from typing import Any, AsyncIterator, Callable, ClassVar, Iterator, Union

from ..errors import ProviderError
from ..types import ProviderRequest, ProviderResponse

# A stream yields text chunks as they arrive, then exactly one ProviderResponse (usage included).
StreamItem = Union[str, ProviderResponse]

# HTTP statuses that mean "this request is wrong", so another provider would not help.
_INVALID_REQUEST_STATUSES = {400, 413, 422}


class Provider(ABC):
    """One LLM provider: sync and async, plain and streaming."""

    name: ClassVar[str] = "provider"
    price_id: ClassVar[str | None] = None  # whose price table to use; defaults to ``name``
    # None: the provider takes no temperature; the kit warns and does not send it
    temperature_range: ClassVar[tuple[float, float] | None] = (0.0, 2.0)

    @property
    def configured(self) -> bool:
        """True when the provider can be called (a key is set, or none is needed)."""
        return True

    @abstractmethod
    def complete(self, req: ProviderRequest) -> ProviderResponse: ...

    @abstractmethod
    async def acomplete(self, req: ProviderRequest) -> ProviderResponse: ...

    @abstractmethod
    def stream(self, req: ProviderRequest) -> Iterator[StreamItem]: ...

    @abstractmethod
    def astream(self, req: ProviderRequest) -> AsyncIterator[StreamItem]: ...

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class LoopLocal:
    """One async SDK client per event loop: a connection pool cannot cross loops
    (e.g. successive ``asyncio.run`` calls in a script or test).

    Each client is closed when its loop shuts down: a started async generator is registered
    with the loop (asyncio's ``shutdown_asyncgens``, which ``asyncio.run`` calls, finalises it),
    so an aiohttp session never outlives its loop and never warns "Unclosed client session".
    """

    def __init__(self) -> None:
        self._clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any]" = weakref.WeakKeyDictionary()
        self._closers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any]" = weakref.WeakKeyDictionary()

    def get(self, factory: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = factory()
            closer = _close_at_shutdown(client)
            try:  # run it to its first yield: the loop's firstiter hook now tracks it
                closer.asend(None).send(None)
            except StopIteration:
                self._closers[loop] = closer  # kept alive until the loop finalises it
        return client


async def _close_at_shutdown(client: Any) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await client.close()


# --- the SDK's one retry loop, bounded ---------------------------------------------------
# Both SDKs sleep for whatever Retry-After says, up to 120 s per retry, before the fallback chain
# gets a chance. A response hook marks a longer requested wait with the SDKs' own
# ``x-should-retry: false`` header, so the SDK raises at once and the chain moves on.
_RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


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
        import email.utils
        import time

        parsed = email.utils.parsedate_tz(value)
        if parsed is not None:
            return email.utils.mktime_tz(parsed) - time.time()
    return None


def _cap_retry(response: Any, max_wait: float) -> None:
    if response.status_code in _RETRY_STATUSES and "x-should-retry" not in response.headers:
        wait = retry_after_seconds(response.headers)
        if wait is not None and wait > max_wait:
            response.headers["x-should-retry"] = "false"


def retry_cap_hooks(max_wait: float | None, *, is_async: bool) -> dict[str, list] | None:
    """httpx event hooks that stop the SDK waiting longer than ``max_wait`` seconds to retry."""
    if max_wait is None:
        return None
    if is_async:
        async def hook(response: Any) -> None:
            _cap_retry(response, max_wait)
    else:
        def hook(response: Any) -> None:  # type: ignore[misc]
            _cap_retry(response, max_wait)
    return {"response": [hook]}


def sync_http_client(sdk: Any, max_retry_wait: float | None) -> Any:
    """The SDK's default sync httpx client, with the retry cap hook."""
    hooks = retry_cap_hooks(max_retry_wait, is_async=False)
    return sdk.DefaultHttpxClient(event_hooks=hooks) if hooks else None


def async_http_client(sdk: Any, max_retry_wait: float | None = None) -> Any:
    """The HTTP client for an async SDK client: the SDK's own aiohttp transport when aiohttp
    is installed (``COGNITIONOS_ASYNC_HTTP=httpx`` opts out), else the SDK's default; both
    with the retry cap hook.

    Why aiohttp: at experiment concurrency (64 requests in flight) the default pool spends
    about 1.2 ms of CPU per request choosing a connection; aiohttp's pool does not
    (benchmarks/bench_experiment.py measures both).
    """
    hooks = retry_cap_hooks(max_retry_wait, is_async=True)
    kw = {"event_hooks": hooks} if hooks else {}

    def default() -> Any:
        return sdk.DefaultAsyncHttpxClient(**kw) if hooks else None

    if os.environ.get("COGNITIONOS_ASYNC_HTTP", "aiohttp").lower() == "httpx":
        return default()
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return default()
    factory = getattr(sdk, "DefaultAioHttpClient", None)
    if factory is None:
        return default()
    try:
        return factory(**kw)
    except RuntimeError:  # the SDK was installed without its aiohttp extra
        return default()


class translate_errors:
    """``with translate_errors(provider, model):`` an SDK or transport exception leaves the block
    as a ``ProviderError``. Its cause is not chained: an SDK error can echo request headers or
    a body holding the API key, and a printed traceback would show it."""

    __slots__ = ("provider", "model")

    def __init__(self, provider: str, model: str) -> None:
        self.provider, self.model = provider, model

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, ProviderError):
            return False
        err = classify_sdk_error(exc, self.provider, self.model)
        if err is None:
            return False
        raise err from None


def classify_sdk_error(exc: BaseException, provider: str, model: str) -> ProviderError | None:
    """Turn an openai/anthropic SDK exception into a ProviderError; None if it is not one.

    Both SDKs share their error class names (generated by the same tool), so one function
    serves both without importing either.
    """
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "APIError" not in names:
        return _transport_error(exc, names, provider, model)
    status = getattr(exc, "status_code", None)
    message = _sdk_message(exc)
    if "APITimeoutError" in names and not _dropped_connection(exc):
        kind, retryable = "timeout", True
    elif "APIConnectionError" in names:
        kind, retryable = "connection_error", True
    elif status == 429:
        kind, retryable = "rate_limit", True
    elif status == 529:
        kind, retryable = "overloaded", True
    elif status is not None and status >= 500:
        kind, retryable = "server_error", True
    elif status in (401, 403):
        kind, retryable = "auth_error", True
    elif status == 404:
        kind, retryable = "not_found", True  # the model does not exist at this provider
    elif status in _INVALID_REQUEST_STATUSES:
        kind, retryable = "invalid_request", False
    elif status is not None:
        kind, retryable = f"http_{status}", True
    else:
        kind, retryable = "api_error", True
    return ProviderError(
        f"{provider}/{model}: {message}",
        provider=provider,
        model=model,
        error_type=kind,
        status_code=status,
        retryable=retryable,
    )


# The SDKs wrap transport errors raised while sending a request, but not those raised while
# reading a stream's body: these arrive as the HTTP library's own exceptions.
_TRANSPORT_MODULES = ("httpx", "httpcore", "httpx2", "httpcore2", "aiohttp", "h11")


def _transport_error(exc: BaseException, names: set[str], provider: str, model: str) -> ProviderError | None:
    module = type(exc).__module__.split(".", 1)[0]
    if module not in _TRANSPORT_MODULES and not isinstance(exc, (OSError, asyncio.TimeoutError)):
        return None
    timed_out = isinstance(exc, asyncio.TimeoutError) or any("Timeout" in n for n in names)
    kind = "timeout" if timed_out else "connection_error"
    return ProviderError(
        f"{provider}/{model}: {type(exc).__name__}: {exc or 'connection lost'}",
        provider=provider, model=model, error_type=kind, retryable=True,
    )


# aiohttp errors the SDKs' aiohttp transport reports as a connect *timeout* although nothing timed out
_DROPPED = {"ServerDisconnectedError", "ClientOSError", "ClientConnectorError", "ConnectionResetError"}


def _dropped_connection(exc: BaseException) -> bool:
    seen: set[int] = set()
    cause = exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if {cls.__name__ for cls in type(cause).__mro__} & _DROPPED:
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _sdk_message(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return str(exc) or type(exc).__name__
