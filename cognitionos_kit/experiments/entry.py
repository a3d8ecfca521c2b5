"""What an experiment keeps of an answer: the cache entry (also what a Ray task returns)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..core.types import Completion

__all__ = ["ENTRY_FIELDS", "entry"]

ENTRY_FIELDS = ("content", "provider", "model", "prompt_tokens", "completion_tokens", "cost_usd", "latency_ms",
                "finish_reason", "request_id", "requested_provider", "requested_model", "substituted",
                "tokens_estimated")


def entry(c: Completion) -> dict[str, Any]:
    """The cache entry of a Completion."""
    return {k: getattr(c, k) for k in ENTRY_FIELDS}
