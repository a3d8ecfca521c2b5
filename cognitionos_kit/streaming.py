"""Streams: text as it arrives, fallback only before the first chunk, one ledger row at the end.

A provider that fails before any text falls back to the next one. Once text has reached the
user, the stream is committed: a later failure raises ``StreamInterruptedError`` and records what
was received (tokens counted locally, flagged as estimates), and nothing is retried, so the same
answer is never billed twice. A consumer that stops early is recorded as ``interrupted`` too.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, AsyncIterator, Callable, Iterator

from .errors import AllProvidersFailedError, StreamInterruptedError
from .fallback import Step, _should_stop, failed_attempt
from .types import Attempt, Completion, ProviderResponse

if TYPE_CHECKING:
    from .kit import _Call

Finish = Callable[["_Call", Step, Attempt, "ProviderResponse | None", list], "Completion | None"]


class _StreamState:
    def __init__(self, call: "_Call", finish: Finish) -> None:
        self.call = call
        self.finish = finish
        self.attempts: list[Attempt] = []
        self.parts: list[str] = []
        self.completion: Completion | None = None

    def failed(self, number: int, step: Step, exc: BaseException, t0: float) -> None:
        attempt = failed_attempt(number, step, exc, (time.perf_counter() - t0) * 1000)
        self.attempts.append(attempt)
        self.finish(self.call, step, attempt, None, self.attempts)

    def interrupted(self, number: int, step: Step, exc: BaseException | None, t0: float) -> Completion | None:
        """Record the partial answer; returns its Completion."""
        attempt = failed_attempt(number, step, exc, (time.perf_counter() - t0) * 1000) if exc else Attempt(
            number, step.provider.name, step.request.model, "interrupted",
            (time.perf_counter() - t0) * 1000, error_type="cancelled", error_message="consumer stopped reading",
        )
        attempt.status = "interrupted"
        self.attempts.append(attempt)
        partial = ProviderResponse("".join(self.parts), step.request.model, self.call.estimate_usage(step, "".join(self.parts)))
        self.completion = self.finish(self.call, step, attempt, partial, self.attempts)
        return self.completion

    def done(self, number: int, step: Step, resp: ProviderResponse, t0: float) -> None:
        attempt = Attempt(number, step.provider.name, step.request.model, "ok", (time.perf_counter() - t0) * 1000)
        self.attempts.append(attempt)
        self.completion = self.finish(self.call, step, attempt, resp, self.attempts)


class Stream:
    """Iterate for text chunks; afterwards ``.completion`` holds usage, cost and latency."""

    def __init__(self, call: "_Call", finish: Finish) -> None:
        self._state = _StreamState(call, finish)
        self._iter: Iterator[str] | None = None

    @property
    def completion(self) -> Completion | None:
        return self._state.completion

    @property
    def text(self) -> str:
        return "".join(self._state.parts)

    @property
    def attempts(self) -> list[Attempt]:
        return self._state.attempts

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
        st.call.t_start = time.perf_counter()  # latency counts from the first read, not creation
        for number, step in enumerate(st.call.steps, 1):
            t0 = time.perf_counter()
            gen = step.provider.stream(step.request)
            started = False
            try:
                for item in gen:
                    if isinstance(item, str):
                        started = True
                        st.parts.append(item)
                        yield item
                    else:
                        st.done(number, step, item, t0)
                        return
                raise RuntimeError(f"{step.provider.name} stream ended without a final response")
            except GeneratorExit:
                gen.close()
                st.interrupted(number, step, None, t0)
                raise
            except BaseException as exc:
                if started:
                    completion = st.interrupted(number, step, exc, t0)
                    err = StreamInterruptedError(
                        f"stream from {step.provider.name}/{step.request.model} broke after "
                        f"{len(st.parts)} chunk(s): {exc}",
                        partial=self.text, provider=step.provider.name, model=step.request.model,
                        error_type=getattr(exc, "error_type", type(exc).__name__), retryable=False,
                    )
                    err.completion = completion
                    raise err from exc
                st.failed(number, step, exc, t0)
                if _should_stop(exc):
                    raise
        raise AllProvidersFailedError(st.attempts, st.call.request_id)

    def __repr__(self) -> str:
        if self.completion is not None:
            return f"Stream(done: {self.completion!r})"
        return f"Stream({len(self._state.parts)} chunk(s) so far)"


class AsyncStream(Stream):
    """``async for chunk in kit.astream(...)``; ``.completion`` afterwards."""

    def __init__(self, call: "_Call", finish: Finish) -> None:
        super().__init__(call, finish)
        self._aiter: AsyncIterator[str] | None = None

    def __iter__(self):  # type: ignore[override]
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
        st.call.t_start = time.perf_counter()
        for number, step in enumerate(st.call.steps, 1):
            t0 = time.perf_counter()
            gen = step.provider.astream(step.request)
            started = False
            try:
                async for item in gen:
                    if isinstance(item, str):
                        started = True
                        st.parts.append(item)
                        yield item
                    else:
                        st.done(number, step, item, t0)
                        return
                raise RuntimeError(f"{step.provider.name} stream ended without a final response")
            except GeneratorExit:
                await gen.aclose()
                st.interrupted(number, step, None, t0)
                raise
            except BaseException as exc:
                if started:
                    completion = st.interrupted(number, step, exc, t0)
                    err = StreamInterruptedError(
                        f"stream from {step.provider.name}/{step.request.model} broke after "
                        f"{len(st.parts)} chunk(s): {exc}",
                        partial=self.text, provider=step.provider.name, model=step.request.model,
                        error_type=getattr(exc, "error_type", type(exc).__name__), retryable=False,
                    )
                    err.completion = completion
                    raise err from exc
                st.failed(number, step, exc, t0)
                if _should_stop(exc):
                    raise
        raise AllProvidersFailedError(st.attempts, st.call.request_id)
