"""The one small interface every provider implements, and how SDK errors are classified."""

from __future__ import annotations

import asyncio
import copy
import importlib
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, ClassVar, Union

from ...core.errors import ProviderError
from ...core.types import ProviderRequest, ProviderResponse, Sampling
from .failures import bad_response, classify_error
from .http import async_http_client, sdk_client_class, sdk_platform, sync_http_client
from .keys import KeyRing

# A stream yields text chunks as they arrive, then exactly one ProviderResponse (usage included).
StreamItem = Union[str, ProviderResponse]  # noqa: UP007 - a runtime alias on 3.10

# HTTP statuses that mean "this request is wrong", so another provider would not help.


class Provider(ABC):
    """One LLM provider: sync and async, plain and streaming."""

    # a plain attribute, not a ClassVar: a named endpoint is an instance with its own name
    name: str = "provider"
    # True when the provider itself ends an attempt at its deadline (``providers.http``); for any
    # other, the async driver adds a cancelling backstop
    bounds_deadline: ClassVar[bool] = False
    price_id: str | None = None  # whose price table to use; defaults to ``name``
    # None: the provider takes no temperature; the kit warns and does not send it
    temperature_range: ClassVar[tuple[float, float] | None] = (0.0, 2.0)
    # the sampling settings (core.types.SAMPLING_NAMES) it accepts beyond temperature and seed
    accepts: ClassVar[frozenset[str]] = frozenset()

    def unsupported(self, sampling: Sampling, model: str) -> tuple[str, ...]:
        """The settings in ``sampling`` this provider (or this model of it) does not accept."""
        return tuple(n for n in sampling.given() if n not in self.accepts)

    @property
    def configured(self) -> bool:
        """True when the provider can be called (a key is set, or none is needed)."""
        return True

    @property
    def base_url(self) -> str | None:
        return None

    @property
    def key_set(self) -> bool:
        """Whether an API key is set (never the key)."""
        return False

    @property
    def sources(self) -> dict[str, str | None]:
        """Where the key and base URL came from ("env", "dotenv" or None), never the values."""
        return {}

    def key_views(self) -> list[Provider]:
        """This provider once per API key a call should try now, in order (one key or none: itself)."""
        return [self]

    @property
    def key_fingerprint(self) -> str | None:
        """The fingerprint of the key this provider sends (``sha256:...``; never the key), if any."""
        return None

    def key_result(self, error: ProviderError | None) -> None:
        """How an attempt with this provider's key ended (None: it answered)."""
        return None

    def key_status(self) -> list[dict[str, Any]]:
        """Each key's fingerprint, state and rest (``keys.KeyRing.status``)."""
        return []

    def prepare(self, is_async: bool = False) -> float:
        """Import the SDK and build its client now, outside any attempt's timing; returns the
        milliseconds that took (0.0 when there was nothing to do)."""
        return 0.0

    async def aprepare(self) -> float:
        """``prepare`` for the running event loop."""
        return self.prepare(True)

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


class SDKProvider(Provider):
    """A provider behind an official SDK: settings, lazily built sync and per-loop async clients
    (with the kit's HTTP clients: attempt deadlines, request counts, retry cap), set-up kept out
    of attempt timing. Subclasses name the SDK module and its two client classes."""

    bounds_deadline = True  # the kit's HTTP clients end every request at the attempt's deadline
    sdk_module: ClassVar[str] = ""
    sync_client_name: ClassVar[str] = ""
    async_client_name: ClassVar[str] = ""
    models_path: ClassVar[str] = "/models"  # where the server lists its models (a named endpoint's discovery)

    def __init__(self, settings: Any, *, timeout: float = 60.0, max_retries: int = 2,
                 max_retry_wait: float | None = 20.0) -> None:
        self._settings = settings
        self._timeout = timeout
        self._max_retries = max_retries
        self._max_retry_wait = max_retry_wait
        keys = getattr(settings, "keys", None) or ((settings.api_key,) if settings.api_key else ())
        self._ring = KeyRing(keys)
        self._key = 0  # which key of the ring this object sends (a key view shares everything else)
        self._clients: dict[int, Any] = {}  # one SDK client per key
        self._aclient_sets = {i: LoopLocal() for i in range(max(1, len(keys)))}
        self._views: dict[int, SDKProvider] = {}
        self._httpx: Any = None

    @property
    def base_url(self) -> str | None:
        return self._settings.base_url

    @property
    def key_set(self) -> bool:
        return bool(self._settings.api_key)

    @property
    def api_key(self) -> str | None:
        """The key this object sends (a key view's own; else the first)."""
        return self._ring.key(self._key) if len(self._ring) else None

    @property
    def key_fingerprint(self) -> str | None:
        return self._ring.fingerprints[self._key] if len(self._ring) else None

    def key_views(self) -> list[Provider]:
        if len(self._ring) < 2:
            return [self]
        return [self._view(i) for i in self._ring.order()]

    def _view(self, i: int) -> SDKProvider:
        view = self._views.get(i)
        if view is None:
            view = copy.copy(self)  # shares the ring, the clients and the settings
            view._key = i
            self._views[i] = view
        return view

    def key_result(self, error: ProviderError | None) -> None:
        if not len(self._ring):
            return
        if error is None:
            self._ring.succeeded(self._key)
        else:
            self._ring.failed(self._key, error.error_type, error.status_code, getattr(error, "retry_after", None))

    def key_status(self) -> list[dict[str, Any]]:
        return self._ring.status()

    def __repr__(self) -> str:
        shown = f" key {self.key_fingerprint}" if len(self._ring) > 1 else ""
        return f"<{type(self).__name__} {self.name!r}{shown}>"

    @property
    def sources(self) -> dict[str, str | None]:
        return dict(self._settings.sources)

    @property
    def settings(self) -> Any:
        """The provider's settings (key, base URL and their sources); the key never shows in a repr."""
        return self._settings

    @abstractmethod
    def _kwargs(self) -> dict[str, Any]:
        """The SDK client's constructor arguments (key, base URL, timeout, retries)."""

    def _make(self, is_async: bool) -> Any:
        import importlib

        sdk = importlib.import_module(self.sdk_module)
        # with several keys a 429 moves to the next key at once: the SDK must not retry it on this one
        no_retry = frozenset({429}) if len(self._ring) > 1 else frozenset()
        http = (async_http_client if is_async else sync_http_client)(sdk, self._max_retry_wait, no_retry)
        cls = sdk_client_class(sdk, self.async_client_name if is_async else self.sync_client_name)
        client = cls(http_client=http, **self._kwargs())
        if getattr(client, "_platform", 0) is None:
            client._platform = sdk_platform(sdk)
        return client

    @property
    def client(self) -> Any:
        client = self._clients.get(self._key)
        if client is None:
            client = self._clients[self._key] = self._make(False)
        return client

    @property
    def _aclients(self) -> LoopLocal:
        return self._aclient_sets[self._key]

    @property
    def aclient(self) -> Any:
        return self._aclients.get(lambda: self._make(True))

    def sse(self, acc: Any, path: str, params: dict[str, Any], **options: Any) -> Iterator[StreamItem]:
        """POST ``params`` as a stream and feed each server-sent event to ``acc`` (the provider's
        accumulator: ``check_content_type``, ``feed`` -> text or None, ``result``)."""
        sdk = importlib.import_module(self.sdk_module)
        with translate_errors(self.name, acc.requested):
            events = self.client.post(path, body=params, cast_to=object, stream=True, stream_cls=sdk.Stream[object],
                                      **options)
            try:
                acc.check_content_type(events.response)
                for event in events:
                    text = acc.feed(event)
                    if text:
                        yield text
            finally:
                events.close()
        yield acc.result()

    async def asse(self, acc: Any, path: str, params: dict[str, Any], **options: Any) -> AsyncIterator[StreamItem]:
        """``sse`` on the async client."""
        sdk = importlib.import_module(self.sdk_module)
        with translate_errors(self.name, acc.requested):
            stream_cls = sdk.AsyncStream[object]
            events = await self.aclient.post(path, body=params, cast_to=object, stream=True, stream_cls=stream_cls,
                                             **options)
            try:
                acc.check_content_type(events.response)
                async for event in events:
                    if text := acc.feed(event):
                        yield text
            finally:
                await events.close()
        yield acc.result()

    def list_models(self, timeout: float) -> list[dict[str, Any]]:
        """The server's model list (``GET <base>/models``: one request, ``timeout`` s, no retries),
        each entry as the server sent it (``id`` and whatever else, e.g. a context length)."""
        with translate_errors(self.name, "(models)"):
            body = self.client.get(self.models_path, cast_to=object, options={"timeout": timeout, "max_retries": 0})
        data = body.get("data") if isinstance(body, dict) else body
        if not isinstance(data, list):
            raise bad_response(self.name, "(models)", f"{self.models_path} did not answer a list of models "
                                                      f"({str(body)[:80]!r})")
        return [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]

    def prepare(self, is_async: bool = False) -> float:
        if is_async:
            return 0.0 if self._aclients.has() else timed(lambda: self.aclient)
        return 0.0 if self._key in self._clients else timed(lambda: self.client)

    async def aprepare(self) -> float:
        return await aprepare_sdk(self.sdk_module, self._aclients.has(), lambda: self.aclient)

    def _response_class(self) -> Any:
        """``httpx2.Response``: passed as ``cast_to``, the SDK hands back the raw response to read."""
        if self._httpx is None:
            import httpx2

            self._httpx = httpx2.Response
        return self._httpx


class LoopLocal:
    """One async SDK client per event loop: a connection pool cannot cross loops
    (e.g. successive ``asyncio.run`` calls in a script or test).

    Each client is closed when its loop shuts down: a started async generator is registered
    with the loop (asyncio's ``shutdown_asyncgens``, which ``asyncio.run`` calls, finalises it),
    so an aiohttp session never outlives its loop and never warns "Unclosed client session".
    """

    def __init__(self) -> None:
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._closers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def has(self) -> bool:
        """True when the running loop already has its client."""
        try:
            return asyncio.get_running_loop() in self._clients
        except RuntimeError:
            return False

    def get(self, factory: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = factory()
            closer = _close_at_shutdown(client)
            try:  # run it to its first yield: the loop's firstiter hook now tracks it
                closer.asend(None).send(None)  # type: ignore[attr-defined]
            except StopIteration:
                self._closers[loop] = closer  # kept alive until the loop finalises it
        return client


async def _close_at_shutdown(client: Any) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await client.close()


class translate_errors:
    """``with translate_errors(provider, model):`` an SDK, transport or decoding exception leaves
    the block as a ``ProviderError``. Its cause is not chained: an SDK error can echo request
    headers or a body holding the API key, and a printed traceback would show it."""

    __slots__ = ("provider", "model")

    def __init__(self, provider: str, model: str) -> None:
        self.provider, self.model = provider, model

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, ProviderError):
            return
        err = classify_error(exc, self.provider, self.model)
        if err is not None:
            raise err from None


class SSEAccumulator:
    """What every provider's stream reader shares: the requested model, text parts, the response
    id, an event count, the content-type check and the "is it a JSON object" check."""

    def __init__(self, provider: str, model: str) -> None:
        self.provider = provider
        self.requested = model
        self.model = model
        self.parts: list[str] = []
        self.response_id: str | None = None
        self.events = 0

    stream_type = "text/event-stream"  # Bedrock's: AWS's binary event stream, decoded by the SDK

    def check_content_type(self, response: Any) -> None:
        ctype = response.headers.get("content-type", "")
        if self.stream_type not in ctype.lower():
            raise bad_response(self.provider, self.requested,
                               f"a stream was requested but the server answered with content type {ctype or 'none'!r}")

    def event(self, obj: Any) -> dict[str, Any]:
        """Count an event; it must be a JSON object."""
        self.events += 1
        if not isinstance(obj, dict):
            raise bad_response(self.provider, self.requested, f"a stream event is not a JSON object ({str(obj)[:80]!r})")
        return obj


def incomplete_stream(provider: str, model: str, what: str) -> ProviderError:
    """A stream that ended without the provider's finish event: never an "ok" answer."""
    return ProviderError(f"{provider}/{model}: the stream ended without its final event ({what})",
                         provider=provider, model=model, error_type="incomplete_stream")


async def aprepare_sdk(module: str, has_client: bool, make: Callable[[], Any]) -> float:
    """Build an async client for the running loop. The SDK is imported in a worker thread: its
    import takes seconds, and on the loop's thread it would stall every other call in flight
    (their deadlines running) while it happened."""
    if has_client:
        return 0.0
    import importlib
    import sys

    t0 = time.perf_counter()
    if module not in sys.modules:
        await asyncio.to_thread(importlib.import_module, module)
    make()
    return (time.perf_counter() - t0) * 1000


def timed(fn: Any) -> float:
    """Run ``fn()``; return how long it took in milliseconds."""
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000
