"""Typed public objects: requests sent to providers, what comes back, and what the user holds."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .media import Image

ROLES = ("planner", "executor", "critic", "summarizer")


@dataclass(frozen=True)
class ToolCall:
    """A tool the model asked for: the call's ``id`` (a result answers it), the tool's ``name`` and
    its ``arguments`` (parsed JSON; ``{}`` when the model wrote something that is not a JSON object,
    ``arguments_json`` keeps what it wrote)."""

    id: str
    name: str
    arguments_json: str = "{}"
    arguments: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, id: str, name: str, arguments: str | dict[str, Any] | None) -> ToolCall:
        """From the wire: arguments as JSON text (OpenAI) or as an object (Anthropic)."""
        import json

        if isinstance(arguments, dict):
            return cls(id, name, json.dumps(arguments, ensure_ascii=False), dict(arguments))
        text = arguments or "{}"
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        return cls(id, name, text, parsed if isinstance(parsed, dict) else {})

    def __repr__(self) -> str:
        return f"ToolCall({self.name}({self.arguments_json[:80]}), id={self.id!r})"


@dataclass(frozen=True)
class ToolResult:
    """What one tool call returned (``output``, as sent back to the model) or the error it raised."""

    call: ToolCall
    output: str
    error: str | None = None
    latency_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def __repr__(self) -> str:
        what = f"error={self.error!r:.80}" if self.error else f"{self.output!r:.80}"
        return f"ToolResult({self.call.name} -> {what}, {self.latency_ms:.1f} ms)"


@dataclass(frozen=True)
class ToolDef:
    """A tool as the model sees it: name, description and a JSON schema of its arguments."""

    name: str
    description: str
    parameters_json: str  # JSON text: hashable, and the same bytes in every request
    strict: bool | None = None

    @property
    def parameters(self) -> dict[str, Any]:
        import json

        return dict(json.loads(self.parameters_json))

    def as_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "description": self.description, "parameters": self.parameters}
        return out if self.strict is None else {**out, "strict": self.strict}


@dataclass(frozen=True)
class Message:
    """One turn. ``tool_calls`` on an assistant turn are the tools it asked for; a ``tool`` turn is
    one tool's result (``tool_call_id`` says which call, ``is_error`` that it failed); ``images``
    go with a user turn's text."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None  # a tool turn: the tool's name
    is_error: bool = False
    images: tuple[Image, ...] = ()

    def __repr__(self) -> str:
        # the fields left at their defaults are left out (the simulated provider's answers are
        # seeded by this text, so a plain turn reads as it always has)
        extra = "".join(f", {k}={v!r}" for k, v in (("tool_calls", self.tool_calls), ("tool_call_id", self.tool_call_id),
                                                    ("name", self.name), ("is_error", self.is_error),
                                                    ("images", self.images)) if v)
        return f"Message(role={self.role!r}, content={self.content!r}{extra})"

    def key(self) -> list[Any]:
        """What decides an answer, JSON-friendly (cache keys): images by their digest."""
        out: list[Any] = [self.role, self.content]
        if self.tool_calls:
            out.append([[c.id, c.name, c.arguments_json] for c in self.tool_calls])
        if self.tool_call_id is not None:
            out += [self.tool_call_id, self.is_error]
        if self.images:
            out.append([i.digest for i in self.images])
        return out

    def as_dict(self) -> dict[str, Any]:
        """OpenAI's chat format (what ``r.messages`` holds, and what a prompt list may hold)."""
        d: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            d["tool_calls"] = [{"id": c.id, "type": "function",
                                "function": {"name": c.name, "arguments": c.arguments_json}} for c in self.tool_calls]
        if self.role == "tool":
            d["tool_call_id"] = self.tool_call_id
            if self.name:
                d["name"] = self.name
        if self.images:
            d["images"] = list(self.images)
        return d


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
    sampling: Sampling | None = None  # the other sampling settings, those this provider accepts


SAMPLING_NAMES = ("stop", "top_p", "frequency_penalty", "presence_penalty", "logprobs", "reasoning_effort",
                  "thinking_budget", "cache_prompt", "output", "tools", "tool_choice", "extra_body")


@dataclass(frozen=True)
class Sampling:
    """Sampling settings beyond temperature and seed; None (or empty) leaves the provider's default.

    ``logprobs``: 0 asks for each answer token's log-probability, n > 0 also for the n most likely
    alternatives. ``reasoning_effort`` is OpenAI's for reasoning models; ``thinking_budget`` is
    Anthropic's extended thinking (tokens). ``extra_body``: keys sent as they are, unchecked."""

    stop: tuple[str, ...] | None = None
    top_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logprobs: int | None = None
    reasoning_effort: str | None = None
    thinking_budget: int | None = None
    cache_prompt: tuple[int | str, ...] | None = None  # "system" and/or message indices to cache up to
    output: Any = None  # a calls.structured.OutputSpec: the JSON the answer must be
    tools: tuple[ToolDef, ...] | None = None  # tools the model may call
    tool_choice: str | None = None  # "auto", "required", "none" or a tool's name
    extra_body: tuple[tuple[str, Any], ...] = ()

    def __repr__(self) -> str:
        # as the dataclass's own, less tools and tool_choice when unset (the simulated provider
        # seeds its answers with this text: calls without tools answer as they did before tools)
        shown = [n for n in SAMPLING_NAMES if n not in ("tools", "tool_choice") or getattr(self, n) is not None]
        return "Sampling(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in shown) + ")"

    def given(self) -> tuple[str, ...]:
        """The settings this holds (in ``SAMPLING_NAMES`` order)."""
        return tuple(n for n in SAMPLING_NAMES if getattr(self, n) not in (None, ()))

    def without(self, names: tuple[str, ...]) -> Sampling | None:
        """The same settings less ``names`` (None when nothing is left)."""
        kept = {n: getattr(self, n) for n in self.given() if n not in names}
        return Sampling(**kept) if kept else None

    def as_dict(self) -> dict[str, Any]:
        """The settings given, JSON-friendly (for cache keys and manifests)."""
        return {n: (dict(v) if n == "extra_body" else list(v) if n in ("stop", "cache_prompt")
                    else v.schema_json if n == "output" else [t.as_dict() for t in v] if n == "tools" else v)
                for n in self.given() for v in [getattr(self, n)]}


@dataclass
class Usage:
    """Token usage as reported by a provider (or counted, for the simulated one)."""

    prompt_tokens: int = 0  # all input tokens, cached ones included
    completion_tokens: int = 0  # reasoning or thinking tokens included (billed as output)
    reasoning_tokens: int = 0  # of which the model spent reasoning (OpenAI) or thinking (Anthropic, counted)
    cached_tokens: int = 0  # input tokens read from the provider's prompt cache
    cache_write_tokens: int = 0  # input tokens written to the prompt cache (Anthropic)
    estimated: bool = False  # True when counted locally rather than reported
    counted_by: str | None = None  # with estimated: what counted them ("cl100k_base estimate", "local tokenizer"...)

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
    logprobs: list[dict[str, Any]] | None = None  # per answer token: token, logprob, top_logprobs
    tool_calls: tuple[ToolCall, ...] = ()  # tools the model asked for


@dataclass
class Attempt:
    """One try at one provider: what the ledger records as one row.

    ``latency_ms`` is the provider's time only (SDK import and client construction are in
    ``setup_ms``); ``http_requests`` counts what was really sent (the SDK's own retries included;
    None for the simulated provider) and ``maybe_billed_requests`` those that failed after
    reaching the server (a read timeout, a dropped connection), which it may have charged for.
    """

    number: int
    provider: str
    model: str
    status: Literal["ok", "error", "interrupted"]
    latency_ms: float
    error_type: str | None = None
    error_message: str | None = None
    status_code: int | None = None
    http_requests: int | None = None
    maybe_billed_requests: int = 0
    setup_ms: float | None = None
    dropped_params: tuple[str, ...] = ()  # sampling settings this provider does not accept, left out on fallback
    key_fingerprint: str | None = None  # which API key was sent ("sha256:" + 8 hex digits; never the key)

    def __repr__(self) -> str:
        tail = f", {self.error_type}" if self.error_type else ""
        sent = f", {self.http_requests} requests" if self.http_requests and self.http_requests > 1 else ""
        return f"Attempt({self.number}, {self.provider}/{self.model}, {self.status}{tail}, {self.latency_ms:.1f} ms{sent})"


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
    requested_provider: str | None = None  # what the call asked for (its first route)...
    requested_model: str | None = None
    substituted: bool = False  # ...and True when another provider, model or the simulator answered
    response_model: str | None = None  # the model the provider says answered (e.g. a dated snapshot)
    tokens_estimated: bool = False  # usage counted locally: the provider sent none (or not all)
    token_counter: str | None = None  # ...and what counted it: "tiktoken o200k_base", "cl100k_base estimate", ...
    reasoning_tokens: int = 0  # part of completion_tokens spent reasoning or thinking
    cache_saving_usd: float | None = None  # what the prompt cache saved (negative: a write cost more)
    output: Any = field(default=None, repr=False)  # the parsed answer, when asked with output=
    logprobs: list[dict[str, Any]] | None = field(default=None, repr=False)  # when asked with logprobs=
    tool_calls: list[ToolCall] = field(default_factory=list)  # tools the model asked for in this turn
    trace_id: str | None = None  # shared by every model turn of one call (tool loop, output retries)
    steps: list[Completion] = field(default_factory=list, repr=False)  # every model turn of the call, this one last
    tool_results: list[ToolResult] = field(default_factory=list, repr=False)  # the tools run (run_tools=True)
    messages: list[dict[str, Any]] = field(default_factory=list, repr=False)  # the whole exchange, tool turns included
    cache_hit: bool = False  # answered from the response cache: $0 now, ``saved_cost_usd`` what it first cost
    saved_cost_usd: float | None = None
    memory_ids: list[str] | None = None  # the memories put in the prompt (memory=), best first

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def total_cost_usd(self) -> float | None:
        """What every model turn of this call cost together (``steps``: the tool loop, output
        retries); None when a turn's price is unknown."""
        costs = [c.cost_usd for c in self.steps] if self.steps else [self.cost_usd]
        return None if any(c is None for c in costs) else sum(c for c in costs if c is not None)

    @property
    def served(self) -> str:
        """"provider/model" that produced this answer."""
        return f"{self.provider}/{self.model}"

    @property
    def requested(self) -> str | None:
        """"provider/model" the call asked for (None when it is not known)."""
        if self.requested_model is None:
            return None
        return f"{self.requested_provider}/{self.requested_model}" if self.requested_provider else self.requested_model

    @property
    def substitute_note(self) -> str | None:
        """A few words saying this answer stands in for what was asked, or None for the real thing."""
        return f"SUBSTITUTE for {self.requested}" if self.substituted else None

    @property
    def fallback_path(self) -> str:
        """"openai -> anthropic -> simulated" when it took more than one attempt."""
        return " -> ".join(f"{a.provider}" for a in self.attempts)

    def __str__(self) -> str:
        return self.content

    @property
    def _counter(self) -> str:
        """`` (cl100k_base estimate)`` after estimated counts: what counted them."""
        return f" ({self.token_counter})" if self.tokens_estimated and self.token_counter else ""

    def footer(self) -> str:
        """One line: who answered, tokens (``~`` when estimated), cost, latency; substitutes flagged."""
        cost = "n/a" if self.cost_usd is None else f"${self.cost_usd:.6f}"
        approx = "~" if self.tokens_estimated else ""
        line = (
            f"{self.provider}/{self.model} · {approx}{self.prompt_tokens}+{approx}{self.completion_tokens} tokens"
            f"{self._counter} · {cost} · {self.latency_ms:.0f} ms"
        )
        if self.cached_tokens or self.cache_write_tokens:
            saved = "" if self.cache_saving_usd is None else f" ({'saved' if self.cache_saving_usd >= 0 else 'cost'} " \
                f"${abs(self.cache_saving_usd):.6f})"
            line += f" · cache {self.cached_tokens} read, {self.cache_write_tokens} written{saved}"
        if self.tool_calls:
            line += " · asks for " + ", ".join(c.name for c in self.tool_calls)
        if self.cache_hit:
            saved = "" if self.saved_cost_usd is None else f", saved ${self.saved_cost_usd:.6f}"
            line += f" · CACHED answer{saved}"
        if len(self.steps) > 1:
            total = "n/a" if self.total_cost_usd is None else f"${self.total_cost_usd:.6f}"
            ran = f", {len(self.tool_results)} tool run(s)" if self.tool_results else ""
            line += f" · {len(self.steps)} turns{ran}, {total} in all"
        note = self.substitute_note
        return f"{line} · {note}" if note else line


    def __repr__(self) -> str:
        text = self.content if len(self.content) <= 80 else self.content[:77] + "..."
        path = f", path={self.fallback_path!r}" if len(self.attempts) > 1 else ""
        return f"Completion({text!r}, {self.footer()}{path})"

    def _repr_html_(self) -> str:
        """A compact card: the answer, then one small line of provider, model, tokens, cost, latency.

        A substitute answer gets an orange border and a first line saying so."""
        muted = "color:var(--jp-content-font-color2,#666);font-size:12px;margin-top:4px"
        path = ""
        if len(self.attempts) > 1:
            steps = " → ".join(f"{a.provider} ({a.error_type or a.status})" for a in self.attempts)
            path = f"<br><span style='color:#a15c00'>fallback: {html.escape(steps)}</span>"
        text = html.escape(self.content) or "<span style='color:#999'>(no text)</span>"
        tools = "".join(
            f"<div class='cok-tool' style='color:var(--jp-content-font-color2,#555);font-size:12px'>🔧 "
            f"{'⚠ ' if r.error else ''}{html.escape(r.call.name)}({html.escape(r.call.arguments_json[:120])}) → "
            f"{html.escape((r.error or r.output)[:160])}</div>" for r in self.tool_results)
        tools += "".join(
            f"<div class='cok-tool' style='color:var(--jp-content-font-color2,#555);font-size:12px'>asks for 🔧 "
            f"{html.escape(c.name)}({html.escape(c.arguments_json[:120])})</div>" for c in self.tool_calls)
        note = self.substitute_note
        border = "#d97706" if note else "var(--jp-border-color1,#ccc)"
        who = "the simulator" if self.provider == "simulated" else self.served
        banner = (f"<div class='cok-substitute' style='color:#b45309;font-weight:600;font-size:12px'>"
                  f"⚠ Substitute answer: asked {html.escape(str(self.requested))}, answered by {html.escape(who)}"
                  "</div>") if note else ""
        from .display import log_ref

        cost = "n/a" if self.cost_usd is None else f"${self.cost_usd:.6f}"
        approx = "~" if self.tokens_estimated else ""
        line = (f"{self.provider}/{self.model} · {approx}{self.prompt_tokens}+{approx}{self.completion_tokens} tokens"
                f"{self._counter} · {cost} · {self.latency_ms:.0f} ms")
        if len(self.steps) > 1:
            total = "n/a" if self.total_cost_usd is None else f"${self.total_cost_usd:.6f}"
            line += f" · {len(self.steps)} turns, {total} in all"
        line = html.escape(line)
        if self.cache_hit:
            saved = "" if self.saved_cost_usd is None else f", saved ${self.saved_cost_usd:.6f}"
            line += f" · <span class='cok-cached' style='color:#1f5fa8;font-weight:600'>CACHED answer{saved}</span>"
        return (
            "<div class='cok-completion' style='font-family:var(--jp-content-font-family,system-ui,sans-serif);"
            f"font-size:13px;line-height:1.45;border-left:3px solid {border};"
            "padding:2px 0 2px 10px;max-width:110ch'>"
            f"{banner}{tools}<div style='white-space:pre-wrap;word-break:break-word'>{text}</div>"
            f"<div style='{muted}'>{line}{log_ref(self.request_id)}{path}</div></div>"
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
            "requested_provider": self.requested_provider,
            "requested_model": self.requested_model,
            "substituted": self.substituted,
            "response_model": self.response_model,
            "tokens_estimated": self.tokens_estimated,
            "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments_json} for c in self.tool_calls],
            "trace_id": self.trace_id,
            "attempts": [dict(a.__dict__) for a in self.attempts],
        }
