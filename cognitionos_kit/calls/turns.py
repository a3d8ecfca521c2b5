"""The turns of one call that may take several (I/O-free): the tool loop (``run_tools=True``:
the model asks for tools, they run, their results go back, until it answers or ``max_steps``) and
structured-output retries (``output_retries``: a misfit is asked again with the validation error).

``turns`` is a generator: it yields a ``CallPlan`` (send it, send back its Completion) or a
``ToolBatch`` (run its calls, send back None) and returns the final Completion. Every model turn
is its own call (its own ledger row) and carries the same ``trace_id``. The sync, async and
streaming drivers only send plans and run tools.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Union

from ..core.errors import StructuredOutputError, ToolLoopError
from ..core.types import Completion, Message, ToolCall, ToolResult
from .plan import Turns, normalise_prompt

if TYPE_CHECKING:
    from .options import CallOptions, Prompt
    from .plan import CallPlan, Planner
    from .streaming import AsyncStream, AsyncTurnStream, Finish, Stream, TurnStream
    from .tools import Tool

__all__ = ["ToolBatch", "turns", "drive", "adrive", "TurnItem", "needs_turns", "call", "acall", "open_stream", "open_astream"]


class ToolBatch:
    """The tool calls of one model turn, to be run; ``results`` in the calls' order."""

    __slots__ = ("calls", "tools", "results")

    def __init__(self, calls: list[ToolCall], tools: dict[str, Tool]) -> None:
        self.calls, self.tools = calls, tools
        self.results: list[ToolResult] = []

    def _unknown(self, call: ToolCall) -> ToolResult:
        error = f"there is no tool named {call.name!r}; the tools are: {', '.join(self.tools)}"
        return ToolResult(call, f"Error: {error}", error)

    def run(self) -> None:
        self.results = [self.tools[c.name].run(c) if c.name in self.tools else self._unknown(c) for c in self.calls]

    async def arun(self) -> None:
        """The calls of one turn run concurrently (async tools, and plain ones in worker threads)."""
        async def one(c: ToolCall) -> ToolResult:
            return await self.tools[c.name].arun(c) if c.name in self.tools else self._unknown(c)

        self.results = list(await asyncio.gather(*(one(c) for c in self.calls)))


TurnItem = Union["CallPlan", ToolBatch]  # noqa: UP007 - a runtime alias on 3.10


def turns(planner: Planner, prompt: Prompt, options: CallOptions, *,
          stream: bool = False) -> Generator[TurnItem, Completion | None, Completion]:
    """The turns of one call (see the module's docstring)."""
    messages, system = normalise_prompt(prompt, options.system, options.image_set)
    spec = options.output_spec
    tools = {t.name: t for t in options.tool_set or ()}
    trace_id = "trace_" + os.urandom(8).hex()
    steps: list[Completion] = []
    results: list[ToolResult] = []
    retries = 0
    while True:
        c = yield planner.plan(Turns(messages, system), options, stream=stream, trace_id=trace_id)
        assert c is not None
        steps.append(c)
        if c.tool_calls and options.run_tools:
            if len(steps) >= options.max_steps:
                _finish(c, steps, results, messages, trace_id)
                raise ToolLoopError(
                    f"the model still asked for tools ({', '.join(t.name for t in c.tool_calls)}) after "
                    f"max_steps={options.max_steps} model turns: raise max_steps, or check what the tools return "
                    "(e.completion.tool_results)", completion=c)
            batch = ToolBatch(c.tool_calls, tools)
            yield batch
            results += batch.results
            messages += [Message("assistant", c.content, tool_calls=tuple(c.tool_calls))]
            messages += [Message("tool", r.output, tool_call_id=r.call.id, name=r.call.name, is_error=r.error is not None)
                         for r in batch.results]
            continue
        if spec is not None and not c.tool_calls:
            value, errors = spec.parse(c.content)
            if errors is not None:
                if retries == options.output_retries:
                    _finish(c, steps, results, messages, trace_id)
                    raise StructuredOutputError(
                        f"the answer from {c.provider}/{c.model} does not fit {spec.name} after {retries + 1} ask(s): "
                        f"{errors[:300]}", raw=c.content, errors=errors, completion=c)
                retries += 1
                messages += [Message("assistant", c.content),
                             Message("user", f"That answer does not fit the required {spec.name} schema: {errors[:1000]}\n"
                                             "Answer again with JSON that fits it, and nothing else.")]
                continue
            c.output = value
        return _finish(c, steps, results, messages, trace_id)


def _finish(c: Completion, steps: list[Completion], results: list[ToolResult], messages: list[Message],
            trace_id: str) -> Completion:
    c.steps, c.tool_results, c.trace_id = list(steps), list(results), trace_id
    c.messages = [m.as_dict() for m in messages] + [Message("assistant", c.content, tool_calls=tuple(c.tool_calls)).as_dict()]
    return c


def drive(gen: Generator[TurnItem, Completion | None, Completion], send: Callable[[CallPlan], Completion]) -> Completion:
    """Run ``turns`` with a sync ``send`` (tools run one after another)."""
    item = next(gen)
    while True:
        value: Completion | None = None
        if isinstance(item, ToolBatch):
            item.run()
        else:
            value = send(item)
        try:
            item = gen.send(value)
        except StopIteration as done:
            return done.value


async def adrive(gen: Generator[TurnItem, Completion | None, Completion],
                 asend: Callable[[CallPlan], Awaitable[Completion]]) -> Completion:
    """Run ``turns`` with an async ``send`` (the tools of one turn run concurrently)."""
    item = next(gen)
    while True:
        value: Completion | None = None
        if isinstance(item, ToolBatch):
            await item.arun()
        else:
            value = await asend(item)
        try:
            item = gen.send(value)
        except StopIteration as done:
            return done.value


def needs_turns(options: CallOptions) -> bool:
    """Whether a call may take more than one model turn (or must be checked after its answer)."""
    return options.output_spec is not None or options.tool_set is not None



def call(planner: Planner, send: Callable[[CallPlan], Completion], prompt: Prompt, options: CallOptions) -> Completion:
    """One call: a single plan sent, or its turns driven (tools, output checks)."""
    if not needs_turns(options):
        return send(planner.plan(prompt, options))
    return drive(turns(planner, prompt, options), send)


async def acall(planner: Planner, asend: Callable[[CallPlan], Awaitable[Completion]], prompt: Prompt,
                options: CallOptions) -> Completion:
    """Async ``call``."""
    if not needs_turns(options):
        return await asend(planner.plan(prompt, options))
    return await adrive(turns(planner, prompt, options), asend)


def open_stream(planner: Planner, finish: Finish, prompt: Prompt, options: CallOptions) -> Stream | TurnStream:
    """The stream of one call: one model turn, or (``run_tools``) every turn, tools between."""
    from .streaming import Stream, TurnStream

    if options.run_tools:
        return TurnStream(turns(planner, prompt, options, stream=True), finish)
    return Stream(planner.plan(prompt, options, stream=True), finish)


def open_astream(planner: Planner, finish: Finish, prompt: Prompt, options: CallOptions) -> AsyncStream | AsyncTurnStream:
    """``open_stream`` for ``async for``."""
    from .streaming import AsyncStream, AsyncTurnStream

    if options.run_tools:
        return AsyncTurnStream(turns(planner, prompt, options, stream=True), finish)
    return AsyncStream(planner.plan(prompt, options, stream=True), finish)
