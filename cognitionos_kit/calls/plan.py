"""Where a call is decided before anything is sent: ``Planner.plan(prompt, options)`` checks the
prompt against the providers, picks each provider's model (router), refuses what cannot fit
(context window, longest answer, ``max_cost``) and returns a ``CallPlan``: the steps to try, in
order, and what was asked. ``Kit``, the experiment runner and the Ray executor all use it."""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigurationError, InvalidRequestError, KitWarning, warn_user
from ..core.types import Message, ProviderRequest, Sampling, Usage
from ..core.validation import check_text
from . import catalogue, tokens
from .catalogue import SIMULATED_MODELS
from .options import CallOptions, Prompt
from .policy import ChainRun, FallbackPolicy, Step

if TYPE_CHECKING:
    from .pricing import PriceBook
    from .providers.registry import ProviderSet
    from .router import Route, Router

__all__ = ["CallPlan", "Planner", "normalise_prompt", "check_texts"]

_SAFETY = (1.15, 32)  # worst-case prompt tokens = count x 1.15 + 32: tokenizers of other vendors differ


class CallPlan:
    """A checked call, ready to send: its steps (provider + request, in fallback order), who it
    is for (``meta``, the ledger's columns) and what was asked (``requested``: provider, model)."""

    __slots__ = ("request_id", "chain", "meta", "requested", "t_start")

    def __init__(self, request_id: str, chain: ChainRun, meta: dict[str, Any], requested: tuple[str, str]) -> None:
        self.request_id, self.chain, self.meta, self.requested = request_id, chain, meta, requested
        self.t_start = time.perf_counter()

    def __repr__(self) -> str:
        steps = ", ".join(f"{s.provider.name}/{s.request.model}" for s in self.steps)
        return f"CallPlan({self.request_id}, asked {self.requested[0]}/{self.requested[1]}, steps: {steps})"

    @property
    def steps(self) -> list[Step]:
        return self.chain.steps

    def estimate_usage(self, step: Step, completion_text: str) -> Usage:
        """Tokens counted locally (tiktoken), flagged as estimated."""
        req = step.request
        msgs = [{"role": m.role, "content": m.content} for m in req.messages]
        return Usage(
            prompt_tokens=tokens.count_messages(msgs, req.model, system=req.system),
            completion_tokens=tokens.count_text(completion_text, req.model) if completion_text else 0,
            estimated=True,
        )

    def fill_usage(self, step: Step, usage: Usage, text: str) -> Usage:
        """Usage the provider did not report (all or part) counted locally, flagged as estimated."""
        if not usage.estimated:
            return usage
        counted = self.estimate_usage(step, text)
        return Usage(
            prompt_tokens=usage.prompt_tokens or counted.prompt_tokens,
            completion_tokens=usage.completion_tokens or counted.completion_tokens,
            cached_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            estimated=True,
        )

    def worst_case_usd(self, prices: PriceBook, counts: dict[Any, int] | None = None) -> float | None:
        """The most any step could cost (prompt counted with a margin, the full ``max_tokens``
        answer); None when a step's model has no known price. ``counts`` caches token counts."""
        counts = {} if counts is None else counts
        worst = 0.0
        req0 = self.steps[0].request
        msgs = [{"role": m.role, "content": m.content} for m in req0.messages]
        for step in self.steps:
            req = step.request
            key = (req.model, req0.messages, req0.system)
            if key not in counts:
                counts[key] = tokens.count_messages(msgs, req.model, system=req0.system)
            n = math.ceil(counts[key] * _SAFETY[0]) + _SAFETY[1]
            wc = prices.worst_case(step.provider.price_id or step.provider.name, req.model, n, req.max_tokens)
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

    def plan(self, prompt: Prompt, options: CallOptions, *, stream: bool = False) -> CallPlan:
        o = options
        messages, system = normalise_prompt(prompt, o.system)
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
                msgs = [{"role": x.role, "content": x.content} for x in messages]
                counts[m] = tokens.count_messages(msgs, m, system=system)
            return counts[m]

        plan = self.router.plan(
            chain, role=o.role, model=o.model, max_cost=o.max_cost, max_tokens=max_tokens,
            count_prompt=count_prompt if o.max_cost is not None else None, strict=o.providers is not None,
            simulators=[p for p in chain if self.providers.is_simulator(p)],
        )
        chars = sum(len(m.content) for m in messages) + len(system or "")
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
            "user_id": o.user_id, "agent_id": o.agent_id, "task_id": o.task_id, "role": o.role,
            "stream": stream, "experiment_id": o.experiment_id, "run_id": o.run_id,
        }
        # as random as uuid4 (96 random bits from the OS), without building a UUID object
        # (measured by benchmarks/bench_choices.py; figures in the README)
        request_id = "req_" + os.urandom(12).hex()
        run = ChainRun(steps, policy, request_id, self.timeout, o.deadline, self.max_retry_wait)
        return CallPlan(request_id=request_id, chain=run, meta=meta, requested=(plan.requested.provider, plan.requested.model))

    def count_tokens(self, prompt: Prompt, *, model: str | None = None, role: str | None = None,
                     system: str | None = None) -> dict[str, Any]:
        """Prompt tokens per provider of the chain, with the model each would get (nothing sent)."""
        messages, system = normalise_prompt(prompt, system)
        msgs = [{"role": m.role, "content": m.content} for m in messages]
        chain = self.providers.chain
        routes = self.router.routes(chain, role=role, model=model, max_tokens=1,
                                    simulators=[p for p in chain if self.providers.is_simulator(p)])
        return {r.provider: {"model": r.model, "prompt_tokens": tokens.count_messages(msgs, r.model, system=system),
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
                + " / ".join(f"{m.upper()}_API_KEY" for m in missing)
                + " (environment or .env), or leave them out of providers="
            )
        return chain

    def _check_temperature(self, temperature: float, chain: list[str]) -> None:
        for p in chain:
            allowed = self.providers.get(p).temperature_range
            if allowed is None:
                if p not in self._warned_temperature:
                    self._warned_temperature.add(p)
                    warnings.warn(f"{p} does not accept temperature (deprecated by the provider); "
                                  f"calls to {p} are sent without it", UserWarning, stacklevel=5)
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


def normalise_prompt(prompt: Any, system: str | None) -> tuple[list[Message], str | None]:
    """A string or a chat message list -> user/assistant turns plus one system prompt."""
    if system is not None:
        check_text(system, "system", allow_empty=True)
    systems = [system] if system and system.strip() else []
    if isinstance(prompt, str):
        if not prompt.strip():
            raise InvalidRequestError("prompt is empty: pass some text, or a list of chat messages")
        check_text(prompt, "prompt")
        return [Message("user", prompt)], system if systems else None
    if not isinstance(prompt, (list, tuple)):
        raise InvalidRequestError(
            f"prompt must be a string or a list of messages like {{'role': 'user', 'content': '...'}}, "
            f"got {type(prompt).__name__}"
        )
    if not prompt:
        raise InvalidRequestError("prompt is an empty message list: add at least one user message")
    turns: list[Message] = []
    for i, m in enumerate(prompt):
        role = m.get("role") if isinstance(m, Mapping) else getattr(m, "role", None)
        content = m.get("content") if isinstance(m, Mapping) else getattr(m, "content", None)
        if role not in ("system", "user", "assistant"):
            raise InvalidRequestError(
                f"messages[{i}] has role {role!r}: each message needs 'role' in system/user/assistant and a 'content' string"
            )
        if not isinstance(content, str) or not content.strip():
            raise InvalidRequestError(f"messages[{i}] ({role}) needs a non-empty 'content' string, got {content!r:.60}")
        check_text(content, f"messages[{i}].content")
        if role == "system":
            systems.append(content)
        else:
            turns.append(Message(role, content))
    if not turns or turns[-1].role != "user":
        raise InvalidRequestError("the message list must end with a user message (after any system messages)")
    return turns, "\n\n".join(systems) if systems else None
