"""Where fallback decides, with no I/O: which failures move on to the next provider, how long an
attempt may take, and what to raise when the chain ends. The sync, async and streaming drivers
(``fallback.py``, ``streaming.py``) all walk a ``ChainRun`` and do nothing but call providers.

Error types (``ProviderError.error_type``, the ledger's ``error_type``):

=================== ===============================================================  ==========
type                what happened                                                    moves on
=================== ===============================================================  ==========
rate_limit          HTTP 429                                                         yes
overloaded          HTTP 529                                                         yes
server_error        HTTP 5xx                                                         yes
timeout             no complete answer within ``timeout`` (or a 408)                 yes
connection_error    the connection failed or dropped                                 yes
auth_error          HTTP 401/403: key refused (warned once per provider per Kit)     yes
not_found           HTTP 404: the provider does not know the model                   roles only
bad_response        a 200 the kit cannot read: invalid JSON, missing fields, wrong   yes
                    content type, garbage or non-SSE stream, empty choices
incomplete_stream   a stream ended without its finish event                          yes
http_error          any other HTTP status (402, 409, ...)                            yes
invalid_request     HTTP 400/413/422: the request itself is wrong                    no
deadline            the call's ``deadline`` passed before this provider was tried    no
unexpected          an exception the kit does not know (reported as a KitError)      no
=================== ===============================================================  ==========

``Kit(fallback_on=...)`` or ``complete(..., fallback_on=...)`` replaces the "moves on" column: a
set of error types, or a function ``(ProviderError) -> bool``. Whatever it says, a model the
user named explicitly that the provider does not know (``not_found``) never moves on to another
vendor: a typo must not be answered by someone else.

A provider with several API keys is one step tried once per key (``Provider.key_views``): a
``rate_limit`` or ``auth_error`` moves to its next key whatever ``fallback_on`` says (same provider,
same model: nothing is substituted); after its last key, the policy decides as above.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Union

from ..core.errors import AllProvidersFailedError, ConfigurationError, KitError, ProviderError, redact
from ..core.types import Attempt, ProviderRequest, ProviderResponse
from .providers.failures import classify_error, request_url
from .providers.http import AttemptIO, attempt_scope
from .providers.keys import ROTATES_ON

if TYPE_CHECKING:
    from .budgeting import BudgetHook
    from .providers.base import Provider

__all__ = ["ERROR_TYPES", "DEFAULT_FALLBACK_ON", "FallbackPolicy", "FallbackOn", "Step", "ChainRun", "AttemptRun",
           "OnAttempt"]

ERROR_TYPES = (
    "rate_limit", "overloaded", "server_error", "timeout", "connection_error", "auth_error", "not_found",
    "bad_response", "incomplete_stream", "http_error", "invalid_request", "deadline", "unexpected",
)
DEFAULT_FALLBACK_ON = frozenset({
    "rate_limit", "overloaded", "server_error", "timeout", "connection_error", "auth_error", "not_found",
    "bad_response", "incomplete_stream", "http_error",
})
FallbackOn = Union[None, Iterable[str], Callable[[ProviderError], bool]]  # noqa: UP007 - a runtime alias on 3.10


class Step(NamedTuple):
    """One route of a call: a provider and the request it gets.

    ``explicit``: the user named this model (or mapped it as an equivalent of the one named)."""

    provider: Provider
    request: ProviderRequest
    explicit: bool = False
    dropped: tuple[str, ...] = ()  # sampling settings this provider does not accept, left out


@dataclass(frozen=True)
class FallbackPolicy:
    """Decides whether a failed attempt moves on (see the module's table)."""

    moves_on_types: frozenset[str] = DEFAULT_FALLBACK_ON
    predicate: Callable[[ProviderError], bool] | None = None

    @classmethod
    def make(cls, fallback_on: FallbackOn | FallbackPolicy) -> FallbackPolicy:
        if fallback_on is None:
            return DEFAULT_POLICY
        if isinstance(fallback_on, FallbackPolicy):
            return fallback_on
        if callable(fallback_on):
            return cls(frozenset(), fallback_on)
        if isinstance(fallback_on, (str, bytes)) or not isinstance(fallback_on, Iterable):
            raise ConfigurationError(
                f"fallback_on must be a set of error types (e.g. {{'rate_limit', 'timeout'}}) or a function "
                f"(ProviderError) -> bool, got {fallback_on!r}"
            )
        types = frozenset(fallback_on)
        bad = sorted(str(t) for t in types if t not in ERROR_TYPES)
        if bad:
            raise ConfigurationError(f"unknown error type(s) in fallback_on: {bad}; use any of {', '.join(ERROR_TYPES)}")
        return cls(types)

    def moves_on(self, error: ProviderError, step: Step) -> bool:
        if error.error_type in ("deadline", "unexpected"):
            return False
        if error.error_type == "not_found" and step.explicit:
            return False  # the user named this model: another vendor's answer would be a silent substitute
        if self.predicate is not None:
            return bool(self.predicate(error))
        return error.error_type in self.moves_on_types


DEFAULT_POLICY = FallbackPolicy()


def as_provider_error(exc: BaseException, step: Step, io: AttemptIO | None) -> BaseException:
    """The ProviderError an attempt's exception stands for (cancellations are returned as they are)."""
    name, model = step.provider.name, step.request.model
    cancelled = (KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError)
    if io is not None and io.timed_out and not isinstance(exc, cancelled):
        return ProviderError(
            f"{name}/{model}: no complete answer within timeout={io.timeout:g} s "
            f"({io.requests} HTTP request(s) sent)",
            provider=name, model=model, error_type="timeout", moves_on=True,
            url=getattr(exc, "url", None) or request_url(exc),
        )
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, cancelled):
        return exc
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return ProviderError(f"{name}/{model}: timed out", provider=name, model=model, error_type="timeout")
    if isinstance(exc, KitError):
        return exc
    err = classify_error(exc, name, model)
    if err is not None:
        return err
    return ProviderError(
        f"{name}/{model}: unexpected {type(exc).__name__}: {redact(exc)[:300]} "
        "(not a known provider failure; please report it with the request that caused it)",
        provider=name, model=model, error_type="unexpected", moves_on=False,
    )


OnAttempt = Callable[[Step, Attempt, "ProviderResponse | None"], None]


@dataclass
class ChainRun:
    """One call's walk down its steps: the next step, each attempt's deadline, what to raise."""

    steps: list[Step]
    policy: FallbackPolicy
    request_id: str
    timeout: float
    deadline_s: float | None = None
    max_retry_wait: float | None = None
    attempts: list[Attempt] = field(default_factory=list)
    call_deadline: float | None = None
    not_tried: list[Step] = field(default_factory=list)
    budget: BudgetHook | None = None  # holds each attempt's worst case in the folder's budgets
    more_keys: bool = False  # the step being tried has another key to rotate to

    def __iter__(self) -> Iterator[tuple[int, Step]]:
        if self.deadline_s is not None:
            self.call_deadline = time.monotonic() + self.deadline_s
        number = 0
        try:
            for index, route in enumerate(self.steps):
                views = route.provider.key_views()
                for k, provider in enumerate(views):
                    number += 1
                    if self.call_deadline is not None and time.monotonic() >= self.call_deadline and number > 1:
                        self.not_tried = self.steps[index:]
                        return
                    step = route if provider is route.provider else route._replace(provider=provider)
                    self.more_keys = k + 1 < len(views)
                    if self.budget is not None:
                        self.budget.before(step)  # BudgetExceededError here: nothing sent
                    yield number, step
                    if not self._rotates():
                        break
        finally:
            if self.budget is not None:
                self.budget.release()  # an attempt that ended without a recorded cost

    def _rotates(self) -> bool:
        """Whether the attempt just made failed in a way that moves to the same provider's next key."""
        last = self.attempts[-1] if self.attempts else None
        return last is not None and last.status == "error" and last.error_type in ROTATES_ON

    def _wait(self) -> float:
        return 0.0 if self.budget is None or not self.budget.send_at else self.budget.send_at - time.time()

    def pause(self) -> None:
        """Wait for the slot a rate limit booked for this attempt, right before sending (sync drivers)."""
        if (wait := self._wait()) > 0:
            time.sleep(wait)

    async def apause(self) -> None:
        """``pause`` for async drivers: the event loop keeps running."""
        if (wait := self._wait()) > 0:
            await asyncio.sleep(wait)

    def attempt_io(self, stream: bool = False) -> AttemptIO:
        io = AttemptIO(self.timeout, call_deadline=self.call_deadline, max_retry_wait=self.max_retry_wait,
                       stream=stream)
        if self.budget is not None:
            io.on_retry_after = self.budget.retry_after
            io.paused = self.budget.paused  # a provider's pause longer than max_retry_wait: a local 429, nothing sent
        return io

    def record_attempt(self, number: int, step: Step, status: str, latency_ms: float, io: AttemptIO | None,
                 setup_ms: float | None) -> Attempt:
        a = Attempt(number, step.provider.name, step.request.model, status, latency_ms,  # type: ignore[arg-type]
                    http_requests=io.requests if io is not None and io.requests else None,
                    maybe_billed_requests=io.maybe_billed if io is not None else 0,
                    setup_ms=setup_ms or None, dropped_params=step.dropped,
                    key_fingerprint=step.provider.key_fingerprint)
        self.attempts.append(a)
        return a

    def succeeded(self, number: int, step: Step, latency_ms: float, io: AttemptIO | None,
                  setup_ms: float | None = None) -> Attempt:
        step.provider.key_result(None)
        return self.record_attempt(number, step, "ok", latency_ms, io, setup_ms)

    def failed(self, number: int, step: Step, exc: BaseException, latency_ms: float, io: AttemptIO | None,
               setup_ms: float | None = None, *, status: str = "error") -> tuple[Attempt, BaseException | None]:
        """Record a failed attempt. Returns it and the exception to raise now (None: move on)."""
        err = as_provider_error(exc, step, io)
        a = self.record_attempt(number, step, status, latency_ms, io, setup_ms)
        if isinstance(err, ProviderError):
            a.error_type, a.status_code = err.error_type, err.status_code
            a.error_message = redact(err)[:500]
            step.provider.key_result(err)
        else:
            a.error_type = "cancelled" if not isinstance(err, KitError) else type(err).__name__
            a.error_message = redact(err)[:500] or type(err).__name__
            return a, err
        if (self.more_keys and err.error_type in ROTATES_ON) or self.policy.moves_on(err, step):
            return a, None
        err.attempts = list(self.attempts)  # type: ignore[attr-defined]
        err.request_id = self.request_id  # type: ignore[attr-defined]  # its ledger rows, as AllProvidersFailedError
        return a, err

    def attempt(self, number: int, step: Step, setup_ms: float, on_attempt: OnAttempt) -> AttemptRun:
        """``with chain.attempt(...) as a: a.response = <call the provider>``: times the attempt,
        bounds its HTTP I/O and, on failure, records it and re-raises only what must stop the call."""
        return AttemptRun(self, number, step, setup_ms, on_attempt)

    def exhausted(self) -> AllProvidersFailedError:
        """The error for a chain with no answer: every attempt, and the steps the deadline skipped."""
        err = AllProvidersFailedError(self.attempts, self.request_id)
        if self.not_tried:
            skipped = ", ".join(f"{s.provider.name}/{s.request.model}" for s in self.not_tried)
            err.args = (f"{err.args[0]}\n  deadline of {self.deadline_s:g} s reached before trying: {skipped}",)
        return err


class AttemptRun:
    """One attempt of a non-streaming call, shared by the sync and async drivers (``fallback.py``).

    Entering starts the clock and scopes the HTTP client to the attempt (deadline, request count).
    A failure inside the block is recorded and reported at once; the block then swallows it when
    the chain moves on, or raises what stops the call. ``finish()`` records a response."""

    __slots__ = ("chain", "number", "step", "setup_ms", "on_attempt", "io", "scope", "t0", "latency_ms", "response")

    def __init__(self, chain: ChainRun, number: int, step: Step, setup_ms: float, on_attempt: OnAttempt) -> None:
        self.chain, self.number, self.step, self.setup_ms, self.on_attempt = chain, number, step, setup_ms, on_attempt
        self.io = chain.attempt_io()
        self.scope = attempt_scope(self.io)
        self.response: ProviderResponse | None = None
        self.t0 = self.latency_ms = 0.0

    def __enter__(self) -> AttemptRun:
        self.scope.__enter__()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        self.latency_ms = (time.perf_counter() - self.t0) * 1000
        self.scope.__exit__(typ, exc, tb)
        if exc is None:
            return False
        attempt, stop = self.chain.failed(self.number, self.step, exc, self.latency_ms, self.io, self.setup_ms)
        self.on_attempt(self.step, attempt, None)
        if stop is not None:
            raise stop from None
        return True  # the policy moves on: the driver tries the next step

    def finish(self) -> tuple[Step, ProviderResponse, list[Attempt]]:
        assert self.response is not None
        attempt = self.chain.succeeded(self.number, self.step, self.latency_ms, self.io, self.setup_ms)
        self.on_attempt(self.step, attempt, self.response)
        return self.step, self.response, self.chain.attempts
