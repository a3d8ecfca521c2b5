"""One client Kit's connection to the team server: JSON requests, tables as Arrow, streamed
answers as server-sent events (``httpx-sse``), and the server's errors raised as the kit's own
(``BudgetExceededError``, ``RateLimitExceededError``, ``InvalidRequestError``,
``AllProvidersFailedError``...; anything else a ``ServerError``). The token is sent only in the
``Authorization`` header and never appears in a repr or a message."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from ..core.errors import (
    AllProvidersFailedError,
    BudgetExceededError,
    ConfigurationError,
    CostLimitError,
    InvalidRequestError,
    KitError,
    ProviderError,
    RateLimitExceededError,
    ServerError,
    redact,
)
from ..core.types import Attempt

if TYPE_CHECKING:
    import pandas as pd

    from ..core.client_mode import ServerChoice

__all__ = ["Connection", "ARROW", "attempts_from", "server_error"]

ARROW = "application/vnd.apache.arrow.stream"
_INVALID = {"InvalidRequestError": InvalidRequestError, "CostLimitError": CostLimitError,
            "ConfigurationError": ConfigurationError}


def _detail(body: Any, fallback: str) -> str:
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # FastAPI's 422: one entry per bad field, each naming it
        return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}" for e in detail)
    return str(detail) if detail else fallback


def attempts_from(body: Mapping[str, Any]) -> list[Attempt]:
    """The attempts of a server answer (a Completion's or an AllProvidersFailedError's)."""
    return [Attempt(**{**a, "dropped_params": tuple(a.get("dropped_params") or ())}) for a in body.get("attempts") or ()]


def server_error(url: str, status: int, body: Any, retry_after: str | None = None) -> KitError:
    """The kit's error for the server's answer ``status`` with JSON ``body``."""
    detail = redact(_detail(body, f"HTTP {status}"))
    body = body if isinstance(body, dict) else {}
    name = body.get("error")
    if status == 402 and name == "BudgetExceededError":
        return BudgetExceededError(detail, **(body.get("budget") or {}))
    if status == 429 and name == "RateLimitExceededError":
        return RateLimitExceededError(detail, wait_s=float(retry_after or 0))
    if status == 422:
        return _INVALID.get(name or "", InvalidRequestError)(f"the team server refused the request: {detail}")
    if name == "AllProvidersFailedError":
        return AllProvidersFailedError(attempts_from(body), body.get("request_id"))
    if name is not None and body.get("provider"):
        return ProviderError(detail, provider=body["provider"], model=body.get("model"),
                             error_type=body.get("error_type") or "provider_error", status_code=body.get("status_code"))
    if status == 401:
        detail = f"the team server at {url} refused the token ({detail}): ask its admin for a new one"
    elif status in (403, 404):
        detail = f"the team server at {url} answered {status}: {detail}"
    return ServerError(detail, status=status, error=name, server=url, request_id=body.get("request_id"))


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"detail": response.text[:500] or response.reason_phrase}


class Connection:
    """HTTP to one team server, sync and async (an async client per event loop)."""

    def __init__(self, choice: ServerChoice, timeout: float) -> None:
        self.url = choice.url
        self._headers = {"Authorization": f"Bearer {choice.token}", "User-Agent": "cognitionos-kit client"}
        self._timeout = httpx.Timeout(timeout, connect=min(10.0, timeout))
        self._client: httpx.Client | None = None
        self._async: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient] | None = None

    def __repr__(self) -> str:
        return f"Connection({self.url!r})"

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(base_url=self.url, headers=self._headers, timeout=self._timeout)
        return self._client

    def _aclient(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:  # a client belongs to the loop it was made on
            self._async = (loop, httpx.AsyncClient(base_url=self.url, headers=self._headers, timeout=self._timeout))
        return self._async[1]

    def _unreachable(self, exc: httpx.HTTPError) -> ServerError:
        what = "timed out" if isinstance(exc, httpx.TimeoutException) else "could not be reached"
        return ServerError(f"the team server at {self.url} {what}: {type(exc).__name__}: {redact(exc)}",
                           server=self.url)

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            raise server_error(self.url, response.status_code, _json(response), response.headers.get("retry-after"))
        return response

    def request(self, method: str, path: str, *, json: Any = None, params: Any = None,
                headers: Mapping[str, str] | None = None) -> httpx.Response:
        try:
            response = self.client.request(method, path, json=json, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        return self._check(response)

    async def arequest(self, method: str, path: str, *, json: Any = None, params: Any = None) -> httpx.Response:
        try:
            response = await self._aclient().request(method, path, json=json, params=params)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        return self._check(response)

    def call(self, method: str, path: str, **kw: Any) -> Any:
        """The JSON answer of one request."""
        return self.request(method, path, **kw).json()

    def table(self, path: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """A table route's rows as a DataFrame with the server's dtypes (sent as Arrow IPC)."""
        import pyarrow as pa

        response = self.request("GET", path, params=params, headers={"Accept": ARROW})
        return pa.ipc.open_stream(response.content).read_all().to_pandas()

    def events(self, path: str, body: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
        """The server-sent events of a streamed POST: (event, data) pairs."""
        from httpx_sse import connect_sse

        try:
            with connect_sse(self.client, "POST", path, json=body) as source:
                if source.response.status_code >= 400:
                    source.response.read()
                    self._check(source.response)
                for event in source.iter_sse():
                    yield event.event, event.json()
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None

    async def aevents(self, path: str, body: Mapping[str, Any]) -> AsyncIterator[tuple[str, Any]]:
        from httpx_sse import aconnect_sse

        try:
            async with aconnect_sse(self._aclient(), "POST", path, json=body) as source:
                if source.response.status_code >= 400:
                    await source.response.aread()
                    self._check(source.response)
                async for event in source.aiter_sse():
                    yield event.event, event.json()
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self._async = None  # its loop may be gone; the transport closes with it
