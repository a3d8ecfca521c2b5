"""Where a call is decided before anything is sent: ``Planner.plan(prompt, options)`` checks the
prompt against the providers, picks each provider's model (router), refuses what cannot fit
(context window, longest answer, ``max_cost``) and returns a ``CallPlan``: the steps to try, in
order, and what was asked. ``Kit``, the experiment runner and the Ray executor all use it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigurationError, InvalidRequestError, KitWarning, warn_user
from ..core.types import Completion, Message, ProviderRequest, Sampling, ToolCall, Usage
from ..core.validation import check_text
from . import catalogue, tokens
from .budgeting import BudgetHook, step_worst_case
from .catalogue import DEFAULT_ROLE, SIMULATED_MODELS
from .options import CallOptions, Prompt
from .policy import ChainRun, FallbackPolicy, Step

if TYPE_CHECKING:
    from ..core.media import Image
    from ..guards import Guard
    from .pricing import PriceBook
    from .providers.registry import ProviderSet
    from .recall import Recall
    from .router import Route, Router

__all__ = ["CallPlan", "Planner", "Turns", "normalise_prompt", "request_tokens", "check_texts", "row_tags"]

# The project and session of the calls planned in this context, over the Kit's own: the team
# server labels each client's rows with the client's (so a client Kit's views="session" works).
row_tags: ContextVar[Mapping[str, Any] | None] = ContextVar("row_tags", default=None)



class CallPlan:
    """A checked call, ready to send: its steps (provider + request, in fallback order), who it
    is for (``meta``, the ledger's columns) and what was asked (``requested``: provider, model)."""

    __slots__ = ("request_id", "chain", "meta", "requested", "t_start", "log_text", "cache_key", "cache_read", "lookup")

    def __init__(self, request_id: str, chain: ChainRun, meta: dict[str, Any], requested: tuple[str, str],
                 log_text: bool | None = None) -> None:
        self.request_id, self.chain, self.meta, self.requested = request_id, chain, meta, requested
        self.t_start = time.perf_counter()
        self.log_text = log_text  # None: the Kit's setting
        self.cache_key: str | None = None  # set when the answer may come from (and goes to) the response cache
        self.cache_read = False  # False with cache="refresh": sent again, then stored
        self.lookup: Callable[[CallPlan], Completion | None] | None = None

    def cached(self) -> Completion | None:
        """The answer from the response cache (recorded as a cache hit), or None: send the call."""
        if self.cache_key is None or not self.cache_read or self.lookup is None:
            return None
        return self.lookup(self)

    def __repr__(self) -> str:
        steps = ", ".join(f"{s.provider.name}/{s.request.model}" for s in self.steps)
        return f"CallPlan({self.request_id}, asked {self.requested[0]}/{self.requested[1]}, steps: {steps})"

    @property
    def steps(self) -> list[Step]:
        return self.chain.steps

    def estimate_usage(self, step: Step, completion_text: str, *, ask_server: bool = False) -> Usage:
        """Tokens counted locally (tiktoken), flagged as estimated. ``ask_server``: a finished answer
        from a named endpoint with a tokenizer is counted by its server instead
        (``providers.endpoint.OpenAIEndpoint.count_usage``); never after a failure (an interrupted
        stream): a server that just broke is not asked again."""
        req = step.request
        own = getattr(step.provider, "count_usage", None) if ask_server else None
        if own is not None and (counted := own(req, completion_text)) is not None:
            return counted
        return Usage(
            prompt_tokens=request_tokens(req, req.model),
            completion_tokens=tokens.count_text(completion_text, req.model) if completion_text else 0,
            estimated=True, counted_by=tokens.counter_label(req.model),
        )

    def fill_usage(self, step: Step, usage: Usage, text: str) -> Usage:
        """Usage the provider did not report (all or part) counted locally, flagged as estimated
        (usage the kit already counted, e.g. an interrupted stream's, is kept as it is)."""
        if not usage.estimated or usage.counted_by is not None:
            return usage
        counted = self.estimate_usage(step, text, ask_server=True)
        return Usage(
            prompt_tokens=usage.prompt_tokens or counted.prompt_tokens,
            completion_tokens=usage.completion_tokens or counted.completion_tokens,
            cached_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            estimated=True, counted_by=counted.counted_by,
        )

    def worst_case_usd(self, prices: PriceBook, counts: dict[Any, int] | None = None) -> float | None:
        """The most any step could cost (prompt counted with a margin, the full ``max_tokens``
        answer); None when a step's model has no known price. ``counts`` caches token counts."""
        counts = {} if counts is None else counts
        worst = 0.0
        req0 = self.steps[0].request
        for step in self.steps:
            req = step.request
            key = (req.model, req0.messages, req0.system)
            if key not in counts:
                counts[key] = request_tokens(req0, req.model)
            wc = step_worst_case(prices, step, counts[key])
            if wc is None:
                return None
            worst = max(worst, wc)
        return worst


class Planner:
    """Turns a prompt and ``CallOptions`` into a ``CallPlan`` (no I/O)."""

    def __init__(self, providers: ProviderSet, router: Router, *, timeout: float, max_retry_wait: float | None,
                 default_max_tokens: int, policy: FallbackPolicy) -> None:
        self.providers, self.router = providers, router
        self.timeout, self.max_retry_wait = timeout, max_retry_wait
        self.default_max_tokens, self.policy = default_max_tokens, policy
        self._limits: dict[tuple[str, str], tuple[int | None, int | None]] = {}  # (provider, model) -> (output, window)
        self._warned_temperature: set[str] = set()
        self._warned_dropped: set[tuple[str, tuple[str, ...]]] = set()
        self.tags: dict[str, Any] = {}  # the Kit's project and session, on every ledger row
        self.budgets: tuple[Guard, PriceBook] | None = None  # the data folder's budgets (set by the Kit)
        self.cache_mode: bool | str = False  # the Kit's cache= (calls override it with theirs)
        self.cache_lookup: Callable[[CallPlan], Completion | None] | None = None  # set by the Kit
        self.recall: Recall | None = None  # the memories of memory= (set by the Kit; calls.recall)

    def plan(self, prompt: Prompt | Turns, options: CallOptions, *, stream: bool = False,
             trace_id: str | None = None, routes: dict[int, Any] | None = None) -> CallPlan:
        """The checked call. ``routes``: the caller's routes by options (an experiment's cells share options)."""
        o = options
        messages, system = normalise_prompt(prompt, o.system, o.image_set)
        if o.memory is not None:
            if o.recalled is None:
                from .recall import augment

                o.recalled = augment(self.recall, o.memory, o.k, messages, system)
            system = o.recalled[0]
        max_tokens = self.default_max_tokens if o.max_tokens is None else o.max_tokens
        policy = self.policy if o.fallback_on is None else o.policy(self.policy)
        chain = self._chain(o.providers)
        if o.model is not None and o.model.startswith("sim-") and o.model not in SIMULATED_MODELS:
            raise InvalidRequestError(f"unknown simulated model {o.model!r}: use one of {', '.join(SIMULATED_MODELS)}")
        if o.temperature is not None:
            self._check_temperature(o.temperature, chain)
        counts: dict[str, int] = {}

        def count_prompt(m: str) -> int:  # counted only when needed (max_cost, or a very long prompt)
            if m not in counts:
                counts[m] = tokens.count_request(messages, m, system=system,
                                                 tools=[t.spec for t in o.tool_set] if o.tool_set else None)
            return counts[m]

        routes = routes if o.max_cost is None and o.memory is None else None  # else the route may depend on the prompt
        if routes is not None and (known := routes.get(id(o))) is not None and known[0] is o:
            plan = known[1]
        else:
            plan = self.router.plan(
                chain, role=o.role, model=o.model, max_cost=o.max_cost, max_tokens=max_tokens,
                count_prompt=count_prompt if o.max_cost is not None else None, strict=o.providers is not None,
                simulators=[p for p in chain if self.providers.is_simulator(p)],
            )
            if routes is not None:
                routes[id(o)] = (o, plan)  # the options kept with it: their id is not reused meanwhile
        chars = sum(len(m.content) + 6000 * len(m.images) for m in messages) + len(system or "")
        for r in plan.routes:
            limits = self._limits.get((r.provider, r.model)) or self._limits_of(r.provider, r.model)
            if (limits[0] is not None and max_tokens > limits[0]) or (
                    limits[1] is not None and (max_tokens > limits[1] or chars * 4 > limits[1])):
                _check_limits(r.provider, r.model, limits, max_tokens, count_prompt)
        msgs_t = tuple(messages)
        sampling = o.sampling()
        if sampling is None:
            steps = [Step(self.providers.get(r.provider),
                          ProviderRequest(r.model, msgs_t, system, max_tokens, o.temperature, stream, o.seed),
                          explicit=r.explicit) for r in plan.routes]
        else:
            steps = self._sampled_steps(plan.routes, sampling, msgs_t, system, max_tokens, o, stream)
        meta = {
            # the role the call was routed by: the default one when neither a role nor a model was named
            "user_id": o.user_id, "agent_id": o.agent_id, "task_id": o.task_id,
            "role": o.role or (DEFAULT_ROLE if o.model is None else None),
            "stream": stream, "experiment_id": o.experiment_id, "run_id": o.run_id, "trace_id": trace_id,
            **self.tags,
        }
        if (tags := row_tags.get()) is not None:
            meta.update(tags)
        if o.recalled is not None:
            import json

            meta["memory_user"], meta["memory_ids"] = o.memory, json.dumps(o.recalled[1])
        # as random as uuid4 (96 random bits from the OS), without building a UUID object
        # (measured by benchmarks/bench_choices.py; figures in the README)
        request_id = "req_" + os.urandom(12).hex()
        run = ChainRun(steps, policy, request_id, self.timeout, o.deadline, self.max_retry_wait)
        if self.budgets is not None:
            run.budget = BudgetHook(*self.budgets, o.user_id, self.max_retry_wait)
        call = CallPlan(request_id=request_id, chain=run, meta=meta, requested=(plan.requested.provider, plan.requested.model),
                        log_text=o.log_text)
        self._cache_key(call, o.cache if o.cache is not None else self.cache_mode)
        return call

    def _cache_key(self, call: CallPlan, mode: bool | str) -> None:
        """Give ``call`` its response-cache key when ``mode`` lets it be cached: "deterministic"
        needs temperature 0 or a seed. Tool turns are not cached (their answer runs code)."""
        if mode is False or self.cache_lookup is None or not call.steps:
            return
        step = call.steps[0]
        req = step.request
        if req.sampling is not None and (req.sampling.tools or req.sampling.tool_choice):
            return
        if mode == "deterministic" and not (req.temperature == 0 or req.seed is not None):
            return
        from ..storage.cache import cache_key

        call.cache_key = cache_key(cache_name(step.provider), req, 0)
        call.cache_read = mode != "refresh"
        call.lookup = self.cache_lookup

    def count_tokens(self, prompt: Prompt, *, model: str | None = None, role: str | None = None,
                     system: str | None = None) -> dict[str, Any]:
        """Prompt tokens per provider of the chain, with the model each would get (nothing sent)."""
        messages, system = normalise_prompt(prompt, system)
        chain = self.providers.chain
        routes = self.router.routes(chain, role=role, model=model, max_tokens=1,
                                    simulators=[p for p in chain if self.providers.is_simulator(p)])
        return {r.provider: {"model": r.model, "prompt_tokens": tokens.count_request(messages, r.model, system=system),
                             "estimated": tokens.is_estimate(r.model)} for r in routes}

    def _sampled_steps(self, routes: Sequence[Route], sampling: Sampling, messages: tuple[Message, ...],
                       system: str | None, max_tokens: int, o: CallOptions, stream: bool) -> list[Step]:
        """Steps carrying the sampling settings: one the first provider does not accept is an
        error; a fallback provider without one is sent the call without it (warned once)."""
        if sampling.thinking_budget is not None and sampling.thinking_budget >= max_tokens:
            raise InvalidRequestError(f"thinking_budget={sampling.thinking_budget} must be below max_tokens={max_tokens} "
                                      "(the answer comes after the thinking): raise max_tokens")
        marks = [m for m in sampling.cache_prompt or () if isinstance(m, int)]
        if any(not -len(messages) <= m < len(messages) for m in marks) or len(sampling.cache_prompt or ()) > 4:
            raise InvalidRequestError(
                f"cache_prompt={list(sampling.cache_prompt or ())}: message indices must be within the "
                f"{len(messages)} message(s) of the prompt, and at most 4 places can be cached")
        steps = []
        for i, r in enumerate(routes):
            provider = self.providers.get(r.provider)
            dropped = provider.unsupported(sampling, r.model)
            if dropped and i == 0:
                raise InvalidRequestError(
                    f"{r.provider}/{r.model} does not accept {', '.join(dropped)}: leave "
                    f"{'it' if len(dropped) == 1 else 'them'} out, or ask a provider that does (providers=[...])")
            if dropped and (r.provider, dropped) not in self._warned_dropped:
                self._warned_dropped.add((r.provider, dropped))
                warn_user(f"{r.provider} does not accept {', '.join(dropped)}: if the call falls back to "
                          f"{r.provider}/{r.model}, it is sent without {'it' if len(dropped) == 1 else 'them'} "
                          "(the attempt's dropped_params says so)", KitWarning)
            request = ProviderRequest(r.model, messages, system, max_tokens, o.temperature, stream, o.seed,
                                      sampling.without(dropped) if dropped else sampling)
            steps.append(Step(provider, request, r.explicit, dropped))
        return steps

    def _chain(self, providers: Sequence[str] | None) -> list[str]:
        if providers is None:
            chain = self.providers.chain
            if not chain:
                raise ConfigurationError(f"no configured provider in {self.providers.order}; add 'simulated' to run offline")
            return chain
        chain = [self.providers.check_name(p) for p in providers]
        missing = [p for p in chain if not self.providers.get(p).configured]
        if missing:
            raise ConfigurationError(
                f"provider(s) {', '.join(missing)} not configured: set "
                + " / ".join(self.providers.key_variable(m) for m in missing)
                + " (environment or .env), or leave them out of providers="
            )
        return chain

    def _check_temperature(self, temperature: float, chain: list[str]) -> None:
        for p in chain:
            allowed = self.providers.get(p).temperature_range
            if allowed is None:
                if p not in self._warned_temperature:
                    self._warned_temperature.add(p)
                    warn_user(f"{p} does not accept temperature (deprecated by the provider); "
                                  f"calls to {p} are sent without it", UserWarning)
                continue
            lo, hi = allowed
            if not lo <= temperature <= hi:
                raise InvalidRequestError(
                    f"temperature={temperature} is outside {p}'s range [{lo}, {hi}]"
                    + (f"; leave {p} out with providers=[...] to use it" if len(chain) > 1 else "")
                )

    def _limits_of(self, provider: str, model: str) -> tuple[int | None, int | None]:
        """(longest answer, context window) of a model, where the catalogue knows them (cached)."""
        price_id = self.providers.get(provider).price_id or provider
        limits = self._limits[(provider, model)] = (
            catalogue.max_output_tokens(price_id, model), catalogue.context_window(price_id, model))
        return limits


def _check_limits(provider: str, model: str, limits: tuple[int | None, int | None], max_tokens: int,
                  count_prompt: Callable[[str], int]) -> None:
    """Refuse, before sending, a prompt beyond the model's context window or a ``max_tokens``
    beyond its longest answer. Called only when a limit may be passed: the caller checked that
    ``max_tokens`` or four bytes per character of the prompt reach one."""
    limit, window = limits
    if limit is not None and max_tokens > limit:
        raise InvalidRequestError(
            f"max_tokens={max_tokens} is more than {provider}/{model} can answer ({limit} tokens at most): "
            f"lower max_tokens" + ("" if provider == "simulated" else ", or pick a model with longer answers")
        )
    if window is None:
        return
    if max_tokens > window:
        raise InvalidRequestError(
            f"max_tokens={max_tokens} is more than {provider}/{model}'s whole context window ({window} tokens)"
        )
    n = count_prompt(model)  # a token is at least one byte, a character at most four: counted only here
    if n > window:
        est = " (estimated with tiktoken)" if tokens.is_estimate(model) else ""
        raise InvalidRequestError(
            f"the prompt is {n} tokens{est}, more than {provider}/{model}'s context window of {window} tokens: "
            "shorten it, split it, or pick a model with a longer context"
        )


def check_texts(texts: Any) -> list[str]:
    """Texts to embed: one string or a non-empty list of non-blank strings."""
    items = [texts] if isinstance(texts, str) else texts
    if not isinstance(items, Sequence):
        raise InvalidRequestError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
    if not items:
        raise InvalidRequestError("texts is empty: pass at least one string")
    for i, t in enumerate(items):
        if not isinstance(t, str) or not t.strip():
            raise InvalidRequestError(f"texts[{i}] must be a non-empty string, got {t!r:.60}")
        check_text(t, f"texts[{i}]")
    return list(items)


class Turns(list[Message]):
    """Messages already checked (``core.types.Message``) with their system prompt: what the tool
    loop and retries (``calls.turns``) hand back to ``Planner.plan`` turn after turn."""

    def __init__(self, messages: list[Message], system: str | None) -> None:
        super().__init__(messages)
        self.system = system


def cache_name(provider: Any) -> str:
    """A provider's name in cache keys (a scripted simulator's includes its script)."""
    return str(getattr(provider, "cache_name", provider.name))


def request_tokens(req: ProviderRequest, model: str) -> int:
    """The prompt tokens of ``req`` (text, tool turns, images, tool definitions) for ``model``."""
    tools = req.sampling.tools if req.sampling is not None else None
    return tokens.count_request(req.messages, model, system=req.system, tools=tools)


def normalise_prompt(prompt: Any, system: str | None, images: tuple[Image, ...] = ()) -> tuple[list[Message], str | None]:
    """A string or a chat message list -> user/assistant/tool turns plus one system prompt;
    ``images`` join the last user turn. Messages are dicts in OpenAI's chat format (a content
    that is a list of parts may hold text, images, paths and PIL images) or ``Message`` objects."""
    if isinstance(prompt, Turns):
        return list(prompt), prompt.system
    if system is not None:
        check_text(system, "system", allow_empty=True)
    systems = [system] if system and system.strip() else []
    if isinstance(prompt, str):
        if not prompt.strip():
            raise InvalidRequestError("prompt is empty: pass some text, or a list of chat messages")
        check_text(prompt, "prompt")
        return [Message("user", prompt, images=images)], system if systems else None
    if not isinstance(prompt, (list, tuple)):
        raise InvalidRequestError(
            f"prompt must be a string or a list of messages like {{'role': 'user', 'content': '...'}}, "
            f"got {type(prompt).__name__}"
        )
    if not prompt:
        raise InvalidRequestError("prompt is an empty message list: add at least one user message")
    turns: list[Message] = []
    for i, m in enumerate(prompt):
        if isinstance(m, Message):
            if m.role == "system":
                systems.append(m.content)
            else:
                turns.append(m)
            continue
        role = m.get("role") if isinstance(m, Mapping) else getattr(m, "role", None)
        content = m.get("content") if isinstance(m, Mapping) else getattr(m, "content", None)
        if role not in ("system", "user", "assistant", "tool"):
            raise InvalidRequestError(
                f"messages[{i}] has role {role!r}: each message needs 'role' in system/user/assistant/tool and a 'content' "
                "string"
            )
        extra = _message_extras(m, role, i) if isinstance(m, Mapping) else {}
        if isinstance(content, list) and role == "user":
            content, parts = _parts(content, i)
            extra["images"] = extra.get("images", ()) + parts
        if content is None and extra.get("tool_calls"):
            content = ""
        if not isinstance(content, str) or (not content.strip() and not extra.get("tool_calls") and role != "tool"
                                             and not extra.get("images")):
            raise InvalidRequestError(f"messages[{i}] ({role}) needs a non-empty 'content' string, got {content!r:.60}")
        check_text(content, f"messages[{i}].content", allow_empty=True)
        if role == "system":
            systems.append(content)
        else:
            turns.append(Message(role, content, **extra))
    if not turns or turns[-1].role not in ("user", "tool"):
        raise InvalidRequestError("the message list must end with a user message (or tool results), after any system "
                                  "messages")
    if images:
        last = max(i for i, t in enumerate(turns) if t.role == "user") if any(t.role == "user" for t in turns) else None
        if last is None:
            raise InvalidRequestError("images= needs a user message to go with")
        turns[last] = replace(turns[last], images=turns[last].images + images)
    _check_tool_turns(turns)
    return turns, "\n\n".join(systems) if systems else None


def _message_extras(m: Mapping[str, Any], role: str, i: int) -> dict[str, Any]:
    """Tool calls on an assistant message, the call id on a tool message (OpenAI's format)."""
    extra: dict[str, Any] = {}
    calls = m.get("tool_calls")
    if calls:
        if role != "assistant" or not isinstance(calls, (list, tuple)):
            raise InvalidRequestError(f"messages[{i}]: only an assistant message holds tool_calls (a list)")
        try:
            extra["tool_calls"] = tuple(
                c if isinstance(c, ToolCall) else ToolCall.of(str(c["id"]), str(c["function"]["name"]),
                                                            c["function"].get("arguments"))
                for c in calls)
        except (KeyError, TypeError):
            raise InvalidRequestError(
                f"messages[{i}].tool_calls: each needs an id and a function with a name and arguments "
                "({'id': ..., 'type': 'function', 'function': {'name': ..., 'arguments': '{...}'}})") from None
    if m.get("images"):
        if role != "user" or not isinstance(m["images"], (list, tuple)):
            raise InvalidRequestError(f"messages[{i}]: images go with a user message, as a list")
        from ..core.media import Image

        extra["images"] = tuple(Image.of(x) for x in m["images"])
    if role == "tool":
        call_id = m.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise InvalidRequestError(f"messages[{i}] (tool) needs the 'tool_call_id' of the call it answers")
        extra["tool_call_id"] = call_id
        if isinstance(m.get("name"), str):
            extra["name"] = m["name"]
        extra["is_error"] = bool(m.get("is_error", False))
    return extra


def _parts(parts: list[Any], i: int) -> tuple[str, tuple[Image, ...]]:
    """A user message's content parts: text (str or {"type": "text"}) and images (an Image, a path,
    a PIL image, bytes or {"type": "image_url", "image_url": {"url": ..., "detail": ...}})."""
    from ..core.media import Image

    texts: list[str] = []
    images: list[Image] = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(part, Mapping) and part.get("type") == "image_url":
            spec = part.get("image_url")
            url = spec.get("url") if isinstance(spec, Mapping) else spec
            detail = spec.get("detail", "auto") if isinstance(spec, Mapping) else "auto"
            images.append(Image.of(url, detail=detail))
        elif isinstance(part, Mapping):
            raise InvalidRequestError(f"messages[{i}]: unknown content part {dict(part)!r:.80}; use text or image_url parts")
        else:
            images.append(Image.of(part))
    return "\n".join(texts), tuple(images)


def _check_tool_turns(turns: list[Message]) -> None:
    """Every tool result answers a call the assistant made just before it (providers refuse
    otherwise); a result without the tool's name gets it from the call."""
    open_calls: dict[str, str] = {}
    for i, t in enumerate(turns):
        if t.role == "assistant":
            open_calls = {c.id: c.name for c in t.tool_calls}
        elif t.role == "tool":
            if t.tool_call_id not in open_calls:
                raise InvalidRequestError(
                    f"the tool result at turn {i} answers {t.tool_call_id!r}, which the assistant turn before it did not "
                    "ask for: keep each assistant turn's tool_calls and its tool results together")
            if t.name is None:
                turns[i] = replace(t, name=open_calls[t.tool_call_id])
        else:
            open_calls = {}
