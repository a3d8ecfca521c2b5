"""Typed public objects: requests sent to providers, what comes back, and what the user holds."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Literal

ProviderName = Literal["openai", "anthropic", "simulated"]
ROLES = ("planner", "executor", "critic", "summarizer")


@dataclass(frozen=True)
class Message:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class ProviderRequest:
    """One validated request, ready for one provider and one model."""

    model: str
    messages: tuple[Message, ...]  # user/assistant turns only; the system prompt is separate
    system: str | None
    max_tokens: int
    temperature: float | None
    stream: bool = False
    seed: int | None = None  # OpenAI's best-effort sampling seed; the simulated provider's too


@dataclass
class Usage:
    """Token usage as reported by a provider (or counted, for the simulated one)."""

    prompt_tokens: int = 0  # all input tokens, cached ones included
    completion_tokens: int = 0
    cached_tokens: int = 0  # input tokens read from the provider's prompt cache
    cache_write_tokens: int = 0  # input tokens written to the prompt cache (Anthropic)
    estimated: bool = False  # True when counted locally rather than reported

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class ProviderResponse:
    content: str
    model: str  # the model the provider says answered
    usage: Usage
    finish_reason: str | None = None
    response_id: str | None = None


@dataclass
class Attempt:
    """One try at one provider: what the ledger records as one row."""

    number: int
    provider: str
    model: str
    status: Literal["ok", "error", "interrupted"]
    latency_ms: float
    error_type: str | None = None
    error_message: str | None = None
    status_code: int | None = None

    def __repr__(self) -> str:
        tail = f", {self.error_type}" if self.error_type else ""
        return f"Attempt({self.number}, {self.provider}/{self.model}, {self.status}{tail}, {self.latency_ms:.1f} ms)"


@dataclass
class Completion:
    """The answer to one ``kit.complete`` call, with its cost and timing."""

    content: str
    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    latency_ms: float
    request_id: str
    attempts: list[Attempt] = field(default_factory=list)
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    finish_reason: str | None = None
    role: str | None = None
    user_id: str | None = None
    price_source: str | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def fallback_path(self) -> str:
        """"openai -> anthropic -> simulated" when it took more than one attempt."""
        return " -> ".join(f"{a.provider}" for a in self.attempts)

    def __str__(self) -> str:
        return self.content

    def _footer(self) -> str:
        cost = "n/a" if self.cost_usd is None else f"${self.cost_usd:.6f}"
        return (
            f"{self.provider}/{self.model} · {self.prompt_tokens}+{self.completion_tokens} tokens · "
            f"{cost} · {self.latency_ms:.0f} ms"
        )

    def __repr__(self) -> str:
        text = self.content if len(self.content) <= 80 else self.content[:77] + "..."
        path = f", path={self.fallback_path!r}" if len(self.attempts) > 1 else ""
        return f"Completion({text!r}, {self._footer()}{path})"

    def _repr_html_(self) -> str:
        """A compact card: the answer, then one small line of provider, model, tokens, cost, latency."""
        muted = "color:var(--jp-content-font-color2,#666);font-size:12px;margin-top:4px"
        path = ""
        if len(self.attempts) > 1:
            steps = " → ".join(f"{a.provider} ({a.error_type or a.status})" for a in self.attempts)
            path = f"<br><span style='color:#a15c00'>fallback: {html.escape(steps)}</span>"
        text = html.escape(self.content) or "<span style='color:#999'>(no text)</span>"
        return (
            "<div class='cok-completion' style='font-family:var(--jp-content-font-family,system-ui,sans-serif);"
            "font-size:13px;line-height:1.45;border-left:3px solid var(--jp-border-color1,#ccc);"
            "padding:2px 0 2px 10px;max-width:110ch'>"
            f"<div style='white-space:pre-wrap;word-break:break-word'>{text}</div>"
            f"<div style='{muted}'>{html.escape(self._footer())}{path}</div></div>"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "content": self.content,
            "provider": self.provider,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cached_tokens": self.cached_tokens,
            "cost_usd": self.cost_usd,
            "latency_ms": self.latency_ms,
            "request_id": self.request_id,
            "attempts": [a.__dict__ for a in self.attempts],
        }
