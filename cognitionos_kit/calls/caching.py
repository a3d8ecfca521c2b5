"""The response cache on every call: what is stored of an answer, and a hit as a Completion.

A call whose plan has a ``cache_key`` (``Planner._cache_key``: the Kit's or the call's ``cache=``)
is answered from ``<home>/cache/answers.sqlite`` when that exact request to that provider and model
was answered before, by any process; the experiments share the same file. A hit costs nothing,
is one ledger row (``cache_hit``, ``saved_cost_usd``) and says so on the Completion. Only answers
of the model asked for are stored under its key: a substitute's answer (a fallback vendor, a
cheaper model, the simulator) goes under the key of what produced it, and errors are never stored.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..core.types import Attempt, Completion
from .recall import recalled_ids

if TYPE_CHECKING:
    from pathlib import Path

    from ..storage.cache import ResponseCache
    from .plan import CallPlan
    from .policy import Step

__all__ = ["ENTRY_FIELDS", "entry", "served_key", "hit_completion", "hit_row", "Answers"]

ENTRY_FIELDS = ("content", "provider", "model", "prompt_tokens", "completion_tokens", "cost_usd", "latency_ms",
                "finish_reason", "request_id", "requested_provider", "requested_model", "substituted",
                "tokens_estimated", "token_counter")


def entry(c: Completion) -> dict[str, Any]:
    """The cache entry of a Completion (also what a Ray task returns)."""
    return {k: getattr(c, k) for k in ENTRY_FIELDS}


def served_key(call: CallPlan, step: Step) -> str | None:
    """The key an answer from ``step`` is stored under: the call's own when it is what was asked,
    else that of the provider and model that produced it."""
    from ..storage.cache import cache_key
    from .plan import cache_name

    if call.cache_key is None:
        return None
    if (step.provider.name, step.request.model) == call.requested:
        return call.cache_key
    first = call.steps[0].request
    return cache_key(cache_name(step.provider), replace(first, model=step.request.model), 0)


def hit_row(call: CallPlan, e: dict[str, Any], lookup_ms: float) -> dict[str, Any]:
    """The ledger row of a cache hit: $0, what it saved, the tokens the answer took."""
    return {
        "ts": time.time(), "request_id": call.request_id, "attempt": 1, "kind": "chat",
        "provider": e["provider"], "model": e["model"], "requested_provider": call.requested[0],
        "requested_model": call.requested[1], "substituted": False, "latency_ms": lookup_ms, "status": "ok",
        "prompt_tokens": e.get("prompt_tokens"), "completion_tokens": e.get("completion_tokens"),
        "total_tokens": (e.get("prompt_tokens") or 0) + (e.get("completion_tokens") or 0),
        "tokens_estimated": bool(e.get("tokens_estimated")), "token_counter": e.get("token_counter"),
        "cost_usd": 0.0, "saved_cost_usd": e.get("cost_usd"),
        "cache_hit": True, "price_source": "cache", **call.meta,
    }


def hit_completion(call: CallPlan, e: dict[str, Any], lookup_ms: float) -> Completion:
    attempt = Attempt(1, e["provider"], e["model"], "ok", lookup_ms)
    return Completion(
        content=e["content"], provider=e["provider"], model=e["model"], prompt_tokens=e.get("prompt_tokens") or 0,
        completion_tokens=e.get("completion_tokens") or 0, cost_usd=0.0, latency_ms=lookup_ms,
        request_id=call.request_id, attempts=[attempt], finish_reason=e.get("finish_reason"),
        role=call.meta.get("role"), user_id=call.meta.get("user_id"), price_source="cache",
        requested_provider=call.requested[0], requested_model=call.requested[1], substituted=False,
        tokens_estimated=bool(e.get("tokens_estimated")), token_counter=e.get("token_counter"),
        trace_id=call.meta.get("trace_id"),
        cache_hit=True, saved_cost_usd=e.get("cost_usd"), memory_ids=recalled_ids(call.meta),
    )


class Answers:
    """The response cache (the data folder's, or a team's Redis), opened on first use (``answers()``)."""

    def __init__(self, home: str | Path, url: str | None = None) -> None:
        self.home, self.url = home, url  # url: a team's Redis, else the data folder's file
        self.cache: ResponseCache | None = None

    def __call__(self) -> ResponseCache:
        if self.cache is None:
            from ..storage.cache import open_cache

            self.cache = open_cache(self.home, self.url)
        return self.cache

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
            self.cache = None
