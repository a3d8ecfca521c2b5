"""Answers served by the team server: a ``Completion`` rebuilt from its JSON, and streams read
from its server-sent events (``chunk`` events, then one ``completion``, or an ``error`` when the
stream broke after text was sent: a ``StreamInterruptedError`` with the partial text)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import fields
from typing import Any

from ..core.errors import KitError, StreamInterruptedError
from ..core.types import Attempt, Completion
from .connection import attempts_from, server_error

__all__ = ["completion_from", "ServedStream", "AsyncServedStream"]

_FIELDS = frozenset(f.name for f in fields(Completion))


def completion_from(body: Mapping[str, Any]) -> Completion:
    """The ``Completion`` the server sent (``server.schemas.completion_json``)."""
    return Completion(**{k: v for k, v in body.items() if k in _FIELDS and k != "attempts"}, attempts=attempts_from(body))


def _failure(url: str, data: Mapping[str, Any], partial: str) -> KitError:
    if data.get("error") == "StreamInterruptedError":
        return StreamInterruptedError(str(data.get("detail")), partial=partial,
                                      provider=data.get("provider") or "server", model=data.get("model"),
                                      error_type=data.get("error_type") or "stream_interrupted")
    return server_error(url, int(data.get("status") or 500), data)


class _Served:
    def __init__(self, url: str) -> None:
        self._url = url
        self._parts: list[str] = []
        self._completion: Completion | None = None

    completion = property(lambda self: self._completion,
                          doc="The server's recorded Completion once the stream has ended (usage, cost, attempts).")
    text = property(lambda self: "".join(self._parts), doc="The text received so far.")

    @property
    def attempts(self) -> list[Attempt]:
        return [] if self._completion is None else self._completion.attempts

    def _take(self, event: str, data: Any) -> str | None:
        if event == "chunk":
            self._parts.append(data["text"])
            return data["text"]
        if event == "completion":
            self._completion = completion_from(data)
        elif event == "error":
            raise _failure(self._url, data, self.text)
        return None

    def __repr__(self) -> str:
        if self._completion is not None:
            return f"{type(self).__name__}(done: {self._completion!r})"
        return f"{type(self).__name__}({len(self._parts)} chunk(s) so far)"


class ServedStream(_Served):
    """``for chunk in stream``: text as the server sends it; ``.completion`` afterwards."""

    def __init__(self, url: str, events: Callable[[], Iterator[tuple[str, Any]]]) -> None:
        super().__init__(url)
        self._events = events
        self._it: Iterator[str] | None = None

    def __iter__(self) -> Iterator[str]:
        self._it = self._it or self._run()
        return self._it

    def __next__(self) -> str:
        return next(iter(self))

    def _run(self) -> Iterator[str]:
        for event, data in self._events():
            if (chunk := self._take(event, data)) is not None:
                yield chunk

    def close(self) -> None:
        """Stop reading (the server records what was sent as interrupted)."""
        if self._it is not None:
            self._it.close()  # type: ignore[attr-defined]


class AsyncServedStream(_Served):
    """``async for chunk in stream``; ``.completion`` afterwards."""

    def __init__(self, url: str, events: Callable[[], AsyncIterator[tuple[str, Any]]]) -> None:
        super().__init__(url)
        self._events = events
        self._it: AsyncIterator[str] | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        self._it = self._it or self._run()
        return self._it

    async def __anext__(self) -> str:
        return await anext(self.__aiter__())

    async def _run(self) -> AsyncIterator[str]:
        async for event, data in self._events():
            if (chunk := self._take(event, data)) is not None:
                yield chunk

    async def aclose(self) -> None:
        if self._it is not None:
            await self._it.aclose()  # type: ignore[attr-defined]
