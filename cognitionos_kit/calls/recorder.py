"""Where a ledger row is written: every attempt of every call becomes one row (a failure too, as
soon as it ends), and an answer becomes a ``Completion`` with its cost and latency.

A ledger that cannot be written (a full or read-only disk) never costs the answer: the ledger
keeps the row pending and warns (``StorageWarning``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core.display import AttemptList
from ..core.types import Attempt, Completion, ProviderResponse, Usage
from ..core.validation import clean_text
from .caching import entry, hit_completion, hit_row, served_key
from .logtext import log_row
from .recall import recalled_ids

if TYPE_CHECKING:
    from ..storage.ledger import Ledger
    from ..storage.textlog import TextLog
    from .caching import Answers
    from .plan import CallPlan
    from .policy import Step
    from .pricing import PriceBook
    from .providers.registry import ProviderSet

__all__ = ["Recorder", "Collected"]


class Recorder:
    """Turns attempts into ledger rows and answers into ``Completion``s."""

    def __init__(self, ledger: Callable[[], Ledger], prices: PriceBook, providers: ProviderSet,
                 text_log: Callable[[], TextLog] | None = None, *, log_text: bool = True,
                 log_redact: Callable[[str], str] | None = None) -> None:
        self._ledger = ledger  # opened on the first row, not when the Kit is built
        self._text_log = text_log
        self.cache: Answers | None = None  # the response cache, opened on first use (set by the Kit)
        self.cache_ttl: float | None = None  # seconds an answer may be served from it (None: always)
        self.prices = prices
        self.providers = providers
        self.log_text = log_text  # the Kit's default; a call's log_text= overrides it
        self.log_redact = log_redact
        self.observers: list[Callable[[dict[str, Any]], None]] = []  # given each row once written (metrics, alerts)

    def record(self, call: CallPlan, step: Step, attempt: Attempt, resp: ProviderResponse | None,
               attempts: list[Attempt] | None = None, batch_id: str | None = None) -> Completion | None:
        """Write one ledger row for one attempt; for a response, return the Completion. ``batch_id``:
        the answer came from a provider's batch API, priced as such (``PriceBook.batch_cost``)."""
        served = (attempt.provider, attempt.model)
        substituted = served != call.requested
        row: dict[str, Any] = {
            "ts": time.time(),  # epoch seconds: the ledger stores them as UTC
            "request_id": call.request_id,
            "attempt": attempt.number,
            "kind": "chat",
            "provider": attempt.provider,
            "model": attempt.model,
            "requested_provider": call.requested[0],
            "requested_model": call.requested[1],
            "substituted": substituted,
            "latency_ms": attempt.latency_ms,
            "setup_ms": attempt.setup_ms,
            "http_requests": attempt.http_requests,
            "dropped_params": ", ".join(attempt.dropped_params) or None,
            "maybe_billed_requests": attempt.maybe_billed_requests or None,
            "key_fingerprint": attempt.key_fingerprint,
            "status": attempt.status,
            "error_type": attempt.error_type,
            "error_message": clean_text(attempt.error_message) if attempt.error_message else None,
            "cache_hit": False,  # the experiment runner records cache hits itself
            "batch_id": batch_id,
            **call.meta,
        }
        self.providers.note(attempt)
        completion = None
        if resp is not None:
            usage = call.fill_usage(step, resp.usage, resp.content + "".join(
                c.name + c.arguments_json for c in resp.tool_calls) if resp.tool_calls else resp.content)
            price_id = step.provider.price_id or step.provider.name
            if batch_id is None:
                est = self.prices.cost(price_id, step.request.model, usage)
                saving = self._cache_saving(price_id, step.request.model, usage, est.cost_usd)
            else:
                est, saving = self.prices.batch_cost(price_id, step.request.model, usage), None
            row.update(
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                total_tokens=usage.total_tokens,
                cached_tokens=usage.cached_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                reasoning_tokens=usage.reasoning_tokens or None,
                cache_saving_usd=saving,
                tokens_estimated=usage.estimated,
                token_counter=usage.counted_by if usage.estimated else None,
                cost_usd=est.cost_usd,
                price_source=est.source,
                price_version=est.version,
                response_model=clean_text(resp.model) if resp.model else None,
                tool_calls=len(resp.tool_calls) or None,
            )
            all_attempts = attempts or [attempt]
            completion = Completion(
                content=clean_text(resp.content),
                provider=attempt.provider,
                model=step.request.model,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cost_usd=est.cost_usd,
                # the call's wall time minus SDK import and client set-up (recorded per attempt)
                latency_ms=(time.perf_counter() - call.t_start) * 1000 - sum(a.setup_ms or 0.0 for a in all_attempts),
                request_id=call.request_id,
                attempts=AttemptList(all_attempts),
                cached_tokens=usage.cached_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                finish_reason=resp.finish_reason,
                role=call.meta["role"],
                user_id=call.meta["user_id"],
                price_source=est.source,
                requested_provider=call.requested[0],
                requested_model=call.requested[1],
                substituted=substituted,
                response_model=resp.model or None,
                tokens_estimated=usage.estimated,
                token_counter=usage.counted_by if usage.estimated else None,
                reasoning_tokens=usage.reasoning_tokens,
                cache_saving_usd=saving,
                logprobs=resp.logprobs,
                tool_calls=list(resp.tool_calls),
                trace_id=call.meta.get("trace_id"),
                memory_ids=None if "memory_ids" not in call.meta else recalled_ids(call.meta),
            )
        self._ledger().record([row])
        if completion is not None and resp is not None and attempt.status == "ok" and not resp.tool_calls \
                and self.cache is not None:
            key = served_key(call, step)
            if key is not None:
                self.cache().put(key, {**entry(completion), "stored_at": time.time()})
        if call.chain.budget is not None:
            call.chain.budget.settle(row.get("cost_usd"))  # after the row: the ledger never lags a budget
        if self._text_log is not None and (self.log_text if call.log_text is None else call.log_text):
            self._text_log().record([log_row(call, step, attempt, resp, row, self.log_redact)])
        self._observe(row)
        return completion

    def cached(self, call: CallPlan) -> Completion | None:
        """The answer to ``call`` from the response cache, recorded as a hit (None: a miss)."""
        if self.cache is None or call.cache_key is None:
            return None
        t0 = time.perf_counter()
        e = self.cache().get(call.cache_key)
        if e is None or (e.get("provider"), e.get("model")) != call.requested:
            return None  # not there, or (an older version's) answer of another model under this key
        if self.cache_ttl is not None and time.time() - float(e.get("stored_at") or 0.0) > self.cache_ttl:
            return None
        ms = (time.perf_counter() - t0) * 1000
        row = hit_row(call, e, ms)
        self._ledger().record([row])
        completion = hit_completion(call, e, ms)
        if self._text_log is not None and (self.log_text if call.log_text is None else call.log_text):
            step = call.steps[0]
            attempt = completion.attempts[0]
            self._text_log().record([log_row(call, step, attempt, None, row, self.log_redact, answer=e["content"])])
        self._observe(row)
        return completion

    def _cache_saving(self, price_id: str, model: str, usage: Usage, cost: float | None) -> float | None:
        """Full-price input minus what the prompt cache made it cost (None when nothing was cached)."""
        if cost is None or not (usage.cached_tokens or usage.cache_write_tokens):
            return None
        plain = Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)
        full = self.prices.cost(price_id, model, plain).cost_usd
        return None if full is None else full - cost

    def collect(self, call: CallPlan) -> Collected:
        """An ``on_attempt`` for the fallback drivers that records each attempt of ``call``."""
        return Collected(self, call)

    def write(self, row: dict[str, Any]) -> None:
        """Write a row built elsewhere (an embedding request, an experiment's cache hit)."""
        self._ledger().record([row])
        self._observe(row)

    def _observe(self, row: dict[str, Any]) -> None:
        for observe in self.observers:
            observe(row)


class Collected:
    """The records of one call's attempts; ``answer`` is the Completion of the one that answered."""

    __slots__ = ("recorder", "call", "records")

    def __init__(self, recorder: Recorder, call: CallPlan) -> None:
        self.recorder, self.call = recorder, call
        self.records: dict[int, Completion | None] = {}

    def on_attempt(self, step: Step, attempt: Attempt, resp: ProviderResponse | None) -> None:
        self.records[attempt.number] = self.recorder.record(self.call, step, attempt, resp)

    def answer(self, outcome: tuple[Step, ProviderResponse, list[Attempt]]) -> Completion:
        attempts = outcome[2]
        completion = self.records[attempts[-1].number]
        assert completion is not None
        completion.attempts = AttemptList(attempts)
        return completion
