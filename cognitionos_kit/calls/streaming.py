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
from .providers.base import StreamItem, incomplete_stream
from .providers.http import attempt_scope
from .structured import check_output

if TYPE_CHECKING:
    from .plan import CallPlan

__all__ = ["Stream", "AsyncStream", "TurnStream", "AsyncTurnStream", "Finish"]

# Records one attempt of a stream (a ledger row) -> the Completion, for a response.
Finish = Callable[["CallPlan", Step, Attempt, "ProviderResponse | None", list[Attempt]], "Completion | None"]
_END: Any = object()  # what a read returns when the provider's iterator is exhausted


class _StreamState:
    """Everything both drivers share: the chain, the text so far, what each outcome records."""

    def __init__(self, call: CallPlan, finish: Finish) -> None:
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

    def from_cache(self) -> bool:
        """Answered from the response cache: the whole answer is one chunk, recorded as a hit."""
        hit = self.call.cached()
        if hit is None:
            return False
        self.completion, self.parts = hit, [hit.content] if hit.content else []
        return True

    def check_output(self) -> None:
        """With ``output=``, the finished answer is parsed (``StructuredOutputError`` if it does not fit)."""
        steps = self.chain.steps
        spec = steps[0].request.sampling.output if steps and steps[0].request.sampling is not None else None
        if spec is not None and self.completion is not None:
            check_output(self.completion, spec)

    def record_partial(self, step: Step, attempt: Attempt) -> Completion | None:
        text = "".join(self.parts)
        partial = ProviderResponse(text, step.request.model, self.call.estimate_usage(step, text))
        self.completion = self.finish(self.call, step, attempt, partial, self.attempts)
        return self.completion


class _StreamAttempt:
    """One attempt of a stream, I/O-free: the drivers read items and hand every outcome here."""

    __slots__ = ("st", "number", "step", "setup_ms", "io", "t0", "started")

    def __init__(self, st: _StreamState, number: int, step: Step, setup_ms: float) -> None:
        self.st, self.number, self.step, self.setup_ms = st, number, step, setup_ms
        self.io = st.chain.attempt_io(stream=True)
        self.t0 = time.perf_counter()
        self.started = False

    def reading(self) -> attempt_scope:
        """The scope of one read: the HTTP client bounds it (the first chunk, or the next gap)."""
        if self.started:
            self.io.touch()
        return attempt_scope(self.io)

    def take(self, item: StreamItem | Any) -> str | None:
        """A chunk to pass on, or None once the provider's final response is recorded."""
        if isinstance(item, str):
            self.started = True
            self.st.parts.append(item)
            return item
        if item is _END:
            raise incomplete_stream(self.step.provider.name, self.step.request.model, "the provider's stream stopped")
        attempt = self.st.chain.succeeded(self.number, self.step, self._ms(), self.io, self.setup_ms)
        self.st.completion = self.st.finish(self.st.call, self.step, attempt, item, self.st.attempts)
        return None

    def _ms(self) -> float:
        return (time.perf_counter() - self.t0) * 1000

    def fail(self, exc: BaseException) -> None:
        """Record a failed read; raise what ends the stream, or return to let the next provider try."""
        stop = self.failed(exc)
        if stop is not None:
            raise stop from None

    def failed(self, exc: BaseException) -> BaseException | None:
        """Before text, an ordinary failure (None: try the next step); after text the stream is
        committed: the partial answer is recorded and ``StreamInterruptedError`` returned."""
        st, step = self.st, self.step
        if isinstance(exc, GeneratorExit):  # the consumer stopped reading: record what it got
            attempt = st.chain.record_attempt(self.number, step, "interrupted", self._ms(), self.io, self.setup_ms)
            attempt.error_type, attempt.error_message = "cancelled", "consumer stopped reading"
            st.record_partial(step, attempt)
            return exc
        if not self.started:
            attempt, stop = st.chain.failed(self.number, step, exc, self._ms(), self.io, self.setup_ms)
            st.finish(st.call, step, attempt, None, st.attempts)
            return stop
        err = as_provider_error(exc, step, self.io)
        attempt, _ = st.chain.failed(self.number, step, err, self._ms(), self.io, self.setup_ms, status="interrupted")
        completion = st.record_partial(step, attempt)
        if not isinstance(err, ProviderError):  # a cancellation: re-raise it as it is
            return err
        out = StreamInterruptedError(
            f"stream from {step.provider.name}/{step.request.model} broke after {len(st.parts)} chunk(s): {err}",
            partial="".join(st.parts), provider=step.provider.name, model=step.request.model,
            error_type=getattr(err, "error_type", type(err).__name__), moves_on=False,
        )
        out.completion = completion
        return out


class _Base:
    def __init__(self, call: CallPlan, finish: Finish) -> None:
        self._state = _StreamState(call, finish)
        self._it: Any = None  # the driver, started on first use

    @property
    def completion(self) -> Completion | None:
        """The recorded Completion once the stream has ended (usage, cost, latency, attempts)."""
        return self._state.completion

    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self._state.parts)

    @property
    def attempts(self) -> list[Attempt]:
        return self._state.attempts

    def __repr__(self) -> str:
        if self.completion is not None:
            return f"{type(self).__name__}(done: {self.completion!r})"
        return f"{type(self).__name__}({len(self._state.parts)} chunk(s) so far)"


class _Iterates:
    """``for chunk in stream``: the driver (``_run``) starts on first use."""

    _it: Any
    _run: Callable[[], Iterator[str]]  # each stream's driver

    def __iter__(self) -> Iterator[str]:
        self._it = self._it or self._run()
        return self._it

    def __next__(self) -> str:
        return next(iter(self))


class Stream(_Base, _Iterates):
    """Iterate for text chunks; afterwards ``.completion`` holds usage, cost and latency."""

    def close(self) -> None:
        """Stop reading: what arrived so far is recorded as ``interrupted``."""
        if self._it is not None:
            self._it.close()

    def _run(self) -> Iterator[str]:
        st = self._state
        st.start()
        if st.from_cache():
            yield from st.parts
            return st.check_output()
        for number, step in st.chain:
            setup_ms = step.provider.prepare(False)
            st.chain.pause()
            a = _StreamAttempt(st, number, step, setup_ms)
            items = step.provider.stream(step.request)
            try:
                while (chunk := _read(a, items)) is not None:
                    yield chunk
            except BaseException as exc:
                items.close()  # type: ignore[attr-defined]
                a.fail(exc)
            else:
                return st.check_output()  # the answer is complete (and parsed, with output=)
        raise st.chain.exhausted()


def _read(a: _StreamAttempt, items: Iterator[StreamItem]) -> str | None:
    with a.reading():
        return a.take(next(items, _END))


async def _aread(a: _StreamAttempt, items: AsyncIterator[StreamItem]) -> str | None:
    with a.reading():  # the HTTP client bounds each read (a backstop per chunk would cost)
        return a.take(await anext(items, _END))


class AsyncStream(_Base):
    """``async for chunk in kit.astream(...)``; ``.completion`` afterwards."""

    def __aiter__(self) -> AsyncIterator[str]:
        if self._it is None:
            self._it = self._arun()
        return self._it

    async def __anext__(self) -> str:
        return await anext(self.__aiter__())

    async def aclose(self) -> None:
        """``close`` for ``async for``."""
        if self._it is not None:
            await self._it.aclose()

    async def _arun(self) -> AsyncIterator[str]:
        st = self._state
        st.start()
        if st.from_cache():
            for part in st.parts:
                yield part
            st.check_output()
            return
        for number, step in st.chain:
            setup_ms = await step.provider.aprepare()
            await st.chain.apause()
            a = _StreamAttempt(st, number, step, setup_ms)
            items = step.provider.astream(step.request)
            try:
                while (chunk := await _aread(a, items)) is not None:
                    yield chunk
            except BaseException as exc:
                await items.aclose()  # type: ignore[attr-defined]
                a.fail(exc)
            else:
                st.check_output()
                return
        raise st.chain.exhausted()


class _TurnState:
    """What both turn streams share: the turns generator (``calls.turns``), the text so far, the
    stream of the current model turn and the final Completion."""

    def __init__(self, gen: Any, finish: Finish) -> None:
        self.gen, self.finish = gen, finish
        self.parts: list[str] = []
        self.current: Any = None
        self.completion: Completion | None = None

    def advance(self, value: Completion | None) -> Any:
        """The next item of the turns (a CallPlan or a ToolBatch), or None when the call is done."""
        try:
            return self.gen.send(value) if value is not None or self.current is not None else next(self.gen)
        except StopIteration as done:
            self.completion = done.value
            return None


class _TurnBase:
    def __init__(self, gen: Any, finish: Finish) -> None:
        self._st = _TurnState(gen, finish)
        self._it: Any = None

    completion = property(lambda self: self._st.completion, doc="The final Completion once the call has ended.")
    text = property(lambda self: "".join(self._st.parts), doc="The text received so far (every turn).")

    def __repr__(self) -> str:
        done = f"done: {self.completion!r}" if self.completion is not None else f"{len(self._st.parts)} chunk(s) so far"
        return f"{type(self).__name__}({done})"


class TurnStream(_TurnBase, _Iterates):
    """``kit.stream(..., run_tools=True)``: each model turn's text as it arrives, the tools run
    between turns; ``.completion`` is the last turn (with ``steps`` and ``tool_results``)."""

    def close(self) -> None:
        if self._st.current is not None:
            self._st.current.close()

    def _run(self) -> Iterator[str]:
        from .turns import ToolBatch

        st = self._st
        item = st.advance(None)
        while item is not None:
            value = None
            if isinstance(item, ToolBatch):
                item.run()
            else:
                st.current = Stream(item, st.finish)
                for chunk in st.current:
                    st.parts.append(chunk)
                    yield chunk
                value = st.current.completion
            item = st.advance(value)


class AsyncTurnStream(_TurnBase):
    """``kit.astream(..., run_tools=True)``: as ``TurnStream``, with ``async for``."""

    def __aiter__(self) -> AsyncIterator[str]:
        self._it = self._it or self._arun()
        return self._it

    async def __anext__(self) -> str:
        return await anext(self.__aiter__())

    async def aclose(self) -> None:
        if self._st.current is not None:
            await self._st.current.aclose()

    async def _arun(self) -> AsyncIterator[str]:
        from .turns import ToolBatch

        st = self._st
        item = st.advance(None)
        while item is not None:
            value = None
            if isinstance(item, ToolBatch):
                await item.arun()
            else:
                st.current = AsyncStream(item, st.finish)
                async for chunk in st.current:
                    st.parts.append(chunk)
                    yield chunk
                value = st.current.completion
            item = st.advance(value)
