"""Streams: text as it arrives, fallback only before the first chunk, one ledger row per attempt.

A provider that fails before any text falls back to the next one (as the policy says). Once text
has reached the user, the stream is committed: a later failure, or an end without the provider's
finish event, raises ``StreamInterruptedError`` and records what was received (tokens counted
locally, flagged as estimates) with status ``interrupted``; nothing is retried, so the same answer
is never billed twice. A consumer that stops early is recorded as ``interrupted`` too.

``timeout`` bounds the wait for the first chunk and every gap between chunks (time the consumer
spends between chunks does not count); ``deadline`` bounds the whole call.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..core.errors import ProviderError, StreamInterruptedError
from ..core.types import Attempt, Completion, ProviderResponse
from .policy import Step, as_provider_error
from .providers.base import incomplete_stream
from .providers.http import AttemptIO, attempt_scope

if TYPE_CHECKING:
    from ..kit import _Call

Finish = Callable[["_Call", Step, Attempt, "ProviderResponse | None", list], "Completion | None"]


class _StreamState:
    """Everything both loops share: the chain, text so far, and what each outcome records."""

    def __init__(self, call: _Call, finish: Finish) -> None:
        self.call = call
        self.chain = call.chain
        self.finish = finish
        self.parts: list[str] = []
        self.completion: Completion | None = None

    @property
    def attempts(self) -> list[Attempt]:
        return self.chain.attempts

    def start(self) -> None:
        self.call.t_start = time.perf_counter()  # latency counts from the first read, not creation

    def failed(self, number: int, step: Step, exc: BaseException, t0: float, io: AttemptIO,
               setup_ms: float, started: bool) -> BaseException | None:
        """An attempt failed: before text it is an ordinary failure (None: try the next step);
        after text the stream is committed and the partial answer is recorded."""
        ms = (time.perf_counter() - t0) * 1000
        if not started:
            attempt, stop = self.chain.failed(number, step, exc, ms, io, setup_ms)
            self.finish(self.call, step, attempt, None, self.attempts)
            return stop
        err = as_provider_error(exc, step, io)
        attempt, _ = self.chain.failed(number, step, err, ms, io, setup_ms, status="interrupted")
        completion = self._record_partial(step, attempt)
        if not isinstance(err, ProviderError):  # a cancellation: re-raise it as it is
            return err
        out = StreamInterruptedError(
            f"stream from {step.provider.name}/{step.request.model} broke after {len(self.parts)} chunk(s): {err}",
            partial="".join(self.parts), provider=step.provider.name, model=step.request.model,
            error_type=getattr(err, "error_type", type(err).__name__), retryable=False,
        )
        out.completion = completion
        return out

    def closed_early(self, number: int, step: Step, t0: float, io: AttemptIO, setup_ms: float) -> None:
        """The consumer stopped reading: record what it got as ``interrupted``."""
        attempt = self.chain._attempt(number, step, "interrupted", (time.perf_counter() - t0) * 1000, io, setup_ms)
        attempt.error_type, attempt.error_message = "cancelled", "consumer stopped reading"
        self._record_partial(step, attempt)

    def _record_partial(self, step: Step, attempt: Attempt) -> Completion | None:
        text = "".join(self.parts)
        partial = ProviderResponse(text, step.request.model, self.call.estimate_usage(step, text))
        self.completion = self.finish(self.call, step, attempt, partial, self.attempts)
        return self.completion

    def done(self, number: int, step: Step, resp: ProviderResponse, t0: float, io: AttemptIO,
             setup_ms: float) -> None:
        attempt = self.chain.succeeded(number, step, (time.perf_counter() - t0) * 1000, io, setup_ms)
        self.completion = self.finish(self.call, step, attempt, resp, self.attempts)


class _Base:
    def __init__(self, call: _Call, finish: Finish) -> None:
        self._state = _StreamState(call, finish)

    @property
    def completion(self) -> Completion | None:
        """The recorded Completion once the stream has ended (usage, cost, latency, attempts)."""
        return self._state.completion

    @property
    def text(self) -> str:
        return "".join(self._state.parts)

    @property
    def attempts(self) -> list[Attempt]:
        return self._state.attempts

    def __repr__(self) -> str:
        if self.completion is not None:
            return f"{type(self).__name__}(done: {self.completion!r})"
        return f"{type(self).__name__}({len(self._state.parts)} chunk(s) so far)"


_END: Any = object()


class Stream(_Base):
    """Iterate for text chunks; afterwards ``.completion`` holds usage, cost and latency."""

    def __init__(self, call: _Call, finish: Finish) -> None:
        super().__init__(call, finish)
        self._iter: Iterator[str] | None = None

    def __iter__(self) -> Iterator[str]:
        if self._iter is None:
            self._iter = self._run()
        return self._iter

    def __next__(self) -> str:
        return next(iter(self))

    def close(self) -> None:
        if self._iter is not None:
            self._iter.close()  # type: ignore[attr-defined]

    def _run(self) -> Iterator[str]:
        st = self._state
        st.start()
        for number, step in st.chain:
            setup_ms = step.provider.prepare(False)
            io = st.chain.attempt_io(stream=True)
            t0 = time.perf_counter()
            gen = step.provider.stream(step.request)
            started = False
            try:
                while True:
                    if started:
                        io.touch()
                    with attempt_scope(io):
                        item = next(gen, _END)
                    if item is _END:
                        raise incomplete_stream(step.provider.name, step.request.model, "the provider's stream stopped")
                    if isinstance(item, str):
                        started = True
                        st.parts.append(item)
                        yield item
                    else:
                        st.done(number, step, item, t0, io, setup_ms)
                        return
            except GeneratorExit:
                gen.close()
                st.closed_early(number, step, t0, io, setup_ms)
                raise
            except BaseException as exc:
                gen.close()
                stop = st.failed(number, step, exc, t0, io, setup_ms, started)
                if stop is not None:
                    raise stop from None
        raise st.chain.exhausted()


class AsyncStream(_Base):
    """``async for chunk in kit.astream(...)``; ``.completion`` afterwards."""

    def __init__(self, call: _Call, finish: Finish) -> None:
        super().__init__(call, finish)
        self._aiter: AsyncIterator[str] | None = None

    def __iter__(self) -> Any:
        raise TypeError("use 'async for' with kit.astream(...), or kit.stream(...) for a plain loop")

    def __aiter__(self) -> AsyncIterator[str]:
        if self._aiter is None:
            self._aiter = self._arun()
        return self._aiter

    async def __anext__(self) -> str:
        return await self.__aiter__().__anext__()

    async def aclose(self) -> None:
        if self._aiter is not None:
            await self._aiter.aclose()  # type: ignore[attr-defined]

    async def _arun(self) -> AsyncIterator[str]:
        st = self._state
        st.start()
        for number, step in st.chain:
            setup_ms = await step.provider.aprepare()
            io = st.chain.attempt_io(stream=True)
            t0 = time.perf_counter()
            gen = step.provider.astream(step.request)
            started = False
            try:
                while True:
                    if started:
                        io.touch()
                    with attempt_scope(io):  # the HTTP client bounds each read (a backstop per chunk would cost)
                        item = await gen.__anext__()
                    if isinstance(item, str):
                        started = True
                        st.parts.append(item)
                        yield item
                    else:
                        st.done(number, step, item, t0, io, setup_ms)
                        return
            except GeneratorExit:
                await gen.aclose()
                st.closed_early(number, step, t0, io, setup_ms)
                raise
            except StopAsyncIteration:
                await gen.aclose()
                exc = incomplete_stream(step.provider.name, step.request.model, "the provider's stream stopped")
                stop = st.failed(number, step, exc, t0, io, setup_ms, started)
                if stop is not None:
                    raise stop from None
            except BaseException as exc:
                await gen.aclose()
                stop = st.failed(number, step, exc, t0, io, setup_ms, started)
                if stop is not None:
                    raise stop from None
        raise st.chain.exhausted()
