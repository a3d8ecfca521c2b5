"""The facade users hold: ``Kit``. Prompt -> validation -> router -> fallback -> provider -> ledger."""

from __future__ import annotations

import html
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import TYPE_CHECKING, Any

from .calls import catalogue, fallback, tokens
from .calls.policy import ChainRun, FallbackOn, FallbackPolicy, Step
from .calls.pricing import Price, PriceBook
from .calls.providers.base import Provider
from .calls.providers.simulated import SIMULATED_MODELS, LatencyModel, SimulatedProvider
from .calls.router import Router, provider_for_model
from .calls.streaming import AsyncStream, Stream
from .core.config import DEFAULT_ORDER, load_settings
from .core.display import AttemptList
from .core.errors import AuthenticationWarning, ConfigurationError, InvalidRequestError, KitError, redact, warn_user
from .core.types import ROLES, Attempt, Completion, Message, ProviderRequest, ProviderResponse, Usage
from .core.validation import check_identifier, check_number, check_text, clean_text

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from .memory import Memory
    from .storage.ledger import Ledger

EMBEDDING_MODELS = ("text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002")
_EMBED_BATCH = 256  # inputs per embeddings request (the API accepts up to 2048)


@dataclass
class _Call:
    """A validated request: everything decided before the first byte is sent."""

    request_id: str
    chain: ChainRun
    meta: dict[str, Any]
    requested: tuple[str, str]  # (provider, model) the call asked for
    kit: Kit = field(repr=False)
    t_start: float = field(default_factory=time.perf_counter)

    @property
    def steps(self) -> list[Step]:
        return self.chain.steps

    def estimate_usage(self, step: Step, completion_text: str) -> Usage:
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
            estimated=True,
        )


class Kit:
    """Costed, timed LLM calls with provider fallback, recorded in a DuckDB ledger.

    >>> kit = Kit()                       # keys from the environment or .env; none -> simulated
    >>> r = kit.complete("Name three uses of DuckDB", role="executor")
    >>> r.content, r.cost_usd, r.latency_ms

    ``timeout`` (seconds) bounds a whole attempt at one provider, the SDK's own retries included
    (for a stream: the wait for the first chunk and each gap between chunks). ``max_retries``
    bounds the SDKs' own retry loop (the only one); a provider asking to wait longer than
    ``max_retry_wait`` seconds before a retry is skipped for that call instead.

    Fallback: ``fallback_on`` (a set of error types or a function, see ``cognitionos_kit.calls.policy``)
    says which failures move on. A role falls back across vendors; a named model only to the
    equivalents in ``fallback_models`` (``{"gpt-4o-mini": "claude-haiku-5-5"}``). The simulated
    provider answers only in simulation mode (no provider configured), when listed in
    ``providers``, or with ``simulate_on_failure=True``; its answers, like any substitute's, say so.

    ``memory`` sets ``kit.memory``'s options (any of ``Memory.OPTIONS``), e.g.
    ``Kit(memory={"weights": {"decay": 0.3}, "half_life_days": 7})``.
    """

    def __init__(
        self,
        home: str | os.PathLike | None = None,
        *,
        providers: Sequence[str | Provider] | None = None,
        role_models: Mapping[str, Mapping[str, str]] | None = None,
        fallback_models: Mapping[str, str | Sequence[str]] | None = None,
        fallback_on: FallbackOn = None,
        simulate_on_failure: bool = False,
        seed: int = 0,
        simulated_latency: LatencyModel | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        max_retry_wait: float | None = 20.0,
        default_max_tokens: int = 1024,
        dotenv: bool | str | os.PathLike = True,
        memory: Mapping[str, Any] | None = None,
    ) -> None:
        # every argument is checked here, before anything is read or created
        if home is not None and not isinstance(home, (str, os.PathLike)):
            raise ConfigurationError(f"home must be a folder path, got {type(home).__name__}")
        if timeout is None or not isinstance(timeout, Real) or isinstance(timeout, bool) or not timeout > 0 \
                or math.isnan(timeout) or math.isinf(timeout):
            raise ConfigurationError(
                f"timeout must be a positive number of seconds (it bounds each attempt, retries included), got "
                f"{timeout!r}" + ("; there is no 'wait forever': pass a large number instead" if timeout is None else "")
            )
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise ConfigurationError(f"max_retries must be an int >= 0, got {max_retries!r}")
        if max_retry_wait is not None and (not isinstance(max_retry_wait, Real) or isinstance(max_retry_wait, bool)
                                           or not max_retry_wait >= 0):
            raise ConfigurationError(f"max_retry_wait must be a number of seconds >= 0 or None, got {max_retry_wait!r}")
        if not isinstance(default_max_tokens, int) or isinstance(default_max_tokens, bool) or default_max_tokens <= 0:
            raise ConfigurationError(f"default_max_tokens must be a positive int, got {default_max_tokens!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigurationError(f"seed must be an int, got {seed!r}")
        if not isinstance(simulate_on_failure, bool):
            raise ConfigurationError(f"simulate_on_failure must be True or False, got {simulate_on_failure!r}")
        if simulated_latency is not None and not isinstance(simulated_latency, LatencyModel):
            raise ConfigurationError(f"simulated_latency must be a LatencyModel, got {type(simulated_latency).__name__}")
        if not isinstance(dotenv, (bool, str, os.PathLike)):
            raise ConfigurationError(f"dotenv must be True, False or the path of a .env file, got {dotenv!r}")
        if providers is not None and (isinstance(providers, (str, bytes)) or not isinstance(providers, Sequence)):
            raise ConfigurationError(f"providers must be a list such as ['openai', 'anthropic'], got {providers!r}")
        if role_models is not None and (not isinstance(role_models, Mapping) or not all(
                isinstance(t, Mapping) for t in role_models.values())):
            raise ConfigurationError(
                "role_models maps a provider to {role: model}, e.g. {'openai': {'executor': 'gpt-4.1-mini'}}; "
                f"got {role_models!r}"
            )
        if fallback_models is not None and not isinstance(fallback_models, Mapping):
            raise ConfigurationError(
                f"fallback_models maps a model to its equivalents, e.g. {{'gpt-4o-mini': 'claude-haiku-5-5'}}; got {fallback_models!r}"
            )
        try:
            self.policy = FallbackPolicy.make(fallback_on)
        except InvalidRequestError as exc:
            raise ConfigurationError(str(exc)) from None
        if memory is not None:
            from .memory import Memory

            memory = Memory.check_options(memory)
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.simulate_on_failure = simulate_on_failure
        self.fallback_on = fallback_on
        self.settings = load_settings(home, dotenv=dotenv)
        self.home = self.settings.home
        self.default_max_tokens = default_max_tokens
        self.prices = PriceBook()
        try:
            self.router = Router(self.prices, role_models, fallback_models)
        except InvalidRequestError as exc:
            raise ConfigurationError(str(exc)) from None
        from .calls.providers.anthropic import AnthropicProvider
        from .calls.providers.openai import OpenAIProvider

        self._providers: dict[str, Provider] = {
            "openai": OpenAIProvider(self.settings.openai, timeout=self.timeout, max_retries=max_retries,
                                     max_retry_wait=max_retry_wait),
            "anthropic": AnthropicProvider(self.settings.anthropic, timeout=self.timeout, max_retries=max_retries,
                                           max_retry_wait=max_retry_wait),
            "simulated": SimulatedProvider(seed=seed, latency=simulated_latency),
        }
        order: list[str] = []
        for p in providers if providers is not None else DEFAULT_ORDER:
            if isinstance(p, Provider):
                self._providers[p.name] = p
                self.router.add_provider(p.name, p.price_id or p.name)
                order.append(p.name)
            else:
                try:
                    order.append(self._check_provider_name(p))
                except InvalidRequestError as exc:
                    raise ConfigurationError(str(exc)) from None
        if not order:
            raise ConfigurationError("providers must name at least one provider")
        self.order = order
        self._listed = set(order) if providers is not None else set()  # named by the user: they always join
        self._simulators = frozenset(n for n, p in self._providers.items() if isinstance(p, SimulatedProvider))
        self._limits: dict[tuple[str, str], tuple[int | None, int | None]] = {}  # (provider, model) -> (output, window)
        self._ledger: Ledger | None = None
        self._warned_temperature: set[str] = set()
        self._auth_failed: dict[str, str] = {}  # provider -> the refusal's message, until a call succeeds
        self._auth_warned: set[str] = set()
        self._memory: Memory | None = None
        self._memory_options: dict[str, Any] = dict(memory or {})

    # --- configuration ----------------------------------------------------------------
    def _check_provider_name(self, name: Any) -> str:
        if not isinstance(name, str) or name not in self._providers:
            raise InvalidRequestError(
                f"unknown provider {name!r}: use one of {', '.join(self._providers)} (or pass a Provider instance to Kit)"
            )
        return name

    @property
    def chain(self) -> list[str]:
        """The providers a call tries by default, in order: configured ones only. A simulator
        joins only when nothing else is configured (simulation mode), when listed in
        ``providers``, or with ``simulate_on_failure=True``."""
        real = [p for p in self.order if p not in self._simulators and self._providers[p].configured]
        return [p for p in self.order if p in real or (
            p in self._simulators and (p in self._listed or not real or self.simulate_on_failure))]

    def _is_simulator(self, name: str) -> bool:
        return name in self._simulators

    @property
    def simulated(self) -> SimulatedProvider:
        return self._providers["simulated"]  # type: ignore[return-value]

    def provider(self, name: str) -> Provider:
        return self._providers[self._check_provider_name(name)]

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            from .storage.ledger import Ledger

            self._ledger = Ledger(self.home)
        return self._ledger

    @property
    def memory(self) -> Memory:
        """The semantic memory on this Kit's data folder (created on first use)."""
        if self._memory is None:
            from .memory import Memory

            self._memory = Memory(self.home, kit=self, **self._memory_options)
        return self._memory

    @property
    def charts(self) -> Any:
        """Plotly figures of this Kit's ledger: ``kit.charts.latency()``, ``.spend_over_time()``..."""
        from .charts import Charts

        return Charts(self)

    def playground(self, **kwargs: Any) -> Any:
        """An ipywidgets prompt playground bound to this Kit (streams answers, shows cost)."""
        from .notebook.playground import playground

        return playground(self, **kwargs)

    def dashboard(self, **kwargs: Any) -> Any:
        """Live FigureWidgets and a summary table that update as calls are recorded."""
        from .notebook.dashboard import dashboard

        return dashboard(self, **kwargs)

    def run(self, experiment: Any, **kwargs: Any) -> Any:
        """Run an ``Experiment`` grid (cached, budgeted, with a manifest); see ``experiments``."""
        from .experiments import run_experiment

        return run_experiment(self, experiment, **kwargs)

    def runs(self) -> pd.DataFrame:
        """Past experiment runs under this data folder, newest first."""
        from .experiments import list_runs

        return list_runs(self)

    def clear_cache(self) -> int:
        """Delete every cached experiment answer under this data folder; returns how many there were.

        (``kit.run(exp, cache=False)`` bypasses the cache for one run; ``cache="refresh"`` re-sends and re-stores.)
        """
        from .experiments import ResponseCache

        cache = ResponseCache(self.home)
        try:
            return cache.clear()
        finally:
            cache.close()

    def compare(self, run_a: Any, run_b: Any) -> Any:
        """What changed between two runs in scores, cost and latency (a table and a chart)."""
        from .experiments import compare_runs

        return compare_runs(self, run_a, run_b)

    def status(self) -> dict[str, Any]:
        """What the kit will use right now; never includes a key.

        ``providers[name]["auth"]`` is ``"failing"`` after the provider refused the key (401/403)
        until a later call to it succeeds, ``"ok"`` otherwise."""
        chain = self.chain
        return {
            "simulation_mode": bool(chain) and all(self._is_simulator(p) for p in chain),
            "chain": chain,
            "providers": {
                name: {
                    "configured": p.configured,
                    "base_url": getattr(p, "base_url", None),
                    "key_set": bool(getattr(getattr(p, "_settings", None), "api_key", None)),
                    "sources": dict(getattr(getattr(p, "_settings", None), "sources", None) or {}),
                    "auth": "failing" if name in self._auth_failed else "ok",
                    "auth_error": self._auth_failed.get(name),
                }
                for name, p in self._providers.items()
            },
            "timeout": self.timeout,
            "simulate_on_failure": self.simulate_on_failure,
            "fallback_models": {k: list(v) for k, v in self.router.fallback_models.items()},
            "home": str(self.home),
            "ledger": str(self.home / "cognitionos.duckdb"),
            "dotenv": self.settings.dotenv_path,
            "prices": "genai-prices bundled snapshot (no auto-update)",
        }

    def set_price(
        self,
        model: str,
        *,
        input_per_mtok: float,
        output_per_mtok: float,
        cached_input_per_mtok: float | None = None,
        cache_write_per_mtok: float | None = None,
        provider: str | None = None,
    ) -> None:
        """Add or override a model's price (USD per million tokens)."""
        check_text(model, "model")
        for label, v in (("input_per_mtok", input_per_mtok), ("output_per_mtok", output_per_mtok),
                         ("cached_input_per_mtok", cached_input_per_mtok), ("cache_write_per_mtok", cache_write_per_mtok)):
            if v is None and label.startswith("cache"):
                continue
            check_number(v, f"{label} (USD per million tokens)", minimum=0)
        if provider is not None:
            self._check_provider_name(provider)
        self.prices.set_price(
            model, Price(float(input_per_mtok), float(output_per_mtok), cached_input_per_mtok, cache_write_per_mtok), provider
        )

    def set_role_model(self, role: str, model: str, provider: str | None = None) -> None:
        """Use ``model`` for ``role`` (at the provider that serves it, or the one named)."""
        provider = provider or provider_for_model(model)
        if provider is None:
            raise InvalidRequestError(f"cannot tell which provider serves {model!r}: pass provider=")
        self.router.set_role_model(self._check_provider_name(provider), role, model)

    # --- validation: all of it happens before any network call ------------------------
    def _prepare(
        self,
        prompt: Any,
        *,
        role: str | None = None,
        model: str | None = None,
        system: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        task_id: str | None = None,
        max_cost: float | None = None,
        providers: Sequence[str] | None = None,
        stream: bool = False,
        seed: int | None = None,
        deadline: float | None = None,
        fallback_on: FallbackOn = None,
        experiment_id: str | None = None,
        run_id: str | None = None,
    ) -> _Call:
        messages, system = _normalise_prompt(prompt, system)
        if role is not None and role not in ROLES:
            raise InvalidRequestError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
        if model is not None:
            if not isinstance(model, str) or not model.strip():
                raise InvalidRequestError(f"model must be a non-empty string, got {model!r}")
            check_text(model, "model")
        if max_tokens is None:
            max_tokens = self.default_max_tokens
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens <= 0:
            raise InvalidRequestError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        if max_cost is not None and (
            not isinstance(max_cost, Real) or isinstance(max_cost, bool) or not max_cost > 0 or math.isinf(max_cost)
        ):
            raise InvalidRequestError(f"max_cost must be a positive number of US dollars, got {max_cost!r}")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise InvalidRequestError(f"seed must be an integer, got {seed!r}")
        if deadline is not None:
            check_number(deadline, "deadline (seconds for the whole call, every fallback included)", positive=True)
        if user_id is not None or agent_id is not None or task_id is not None or experiment_id is not None \
                or run_id is not None:
            for label, v in (("user_id", user_id), ("agent_id", agent_id), ("task_id", task_id),
                             ("experiment_id", experiment_id), ("run_id", run_id)):
                check_identifier(v, label)
        try:
            policy = self.policy if fallback_on is None else FallbackPolicy.make(fallback_on)
        except ConfigurationError as exc:
            raise InvalidRequestError(str(exc)) from None

        if providers is not None:
            if isinstance(providers, str) or not isinstance(providers, Sequence) or not providers:
                raise InvalidRequestError(f"providers must be a non-empty list of names, got {providers!r}")
            chain = [self._check_provider_name(p) for p in providers]
            missing = [p for p in chain if not self._providers[p].configured]
            if missing:
                raise ConfigurationError(
                    f"provider(s) {', '.join(missing)} not configured: set "
                    + " / ".join(f"{m.upper()}_API_KEY" for m in missing)
                    + " (environment or .env), or leave them out of providers="
                )
        else:
            chain = self.chain
            if not chain:
                raise ConfigurationError(f"no configured provider in {self.order}; add 'simulated' to run offline")

        if model is not None and model.startswith("sim-") and model not in SIMULATED_MODELS:
            raise InvalidRequestError(f"unknown simulated model {model!r}: use one of {', '.join(SIMULATED_MODELS)}")

        if temperature is not None:
            if not isinstance(temperature, Real) or isinstance(temperature, bool) or math.isnan(temperature):
                raise InvalidRequestError(f"temperature must be a number, got {temperature!r}")
            for p in chain:
                allowed = self._providers[p].temperature_range
                if allowed is None:
                    if p not in self._warned_temperature:
                        self._warned_temperature.add(p)
                        warnings.warn(f"{p} does not accept temperature (deprecated by the provider); "
                                      f"calls to {p} are sent without it", UserWarning, stacklevel=3)
                    continue
                lo, hi = allowed
                if not lo <= temperature <= hi:
                    raise InvalidRequestError(
                        f"temperature={temperature} is outside {p}'s range [{lo}, {hi}]"
                        + (f"; leave {p} out with providers=[...] to use it" if len(chain) > 1 else "")
                    )

        counts: dict[str, int] = {}

        def count_prompt(m: str) -> int:  # counted only when needed (max_cost, or a very long prompt)
            if m not in counts:
                msgs = [{"role": x.role, "content": x.content} for x in messages]
                counts[m] = tokens.count_messages(msgs, m, system=system)
            return counts[m]

        plan = self.router.plan(
            chain, role=role, model=model, max_cost=max_cost, max_tokens=max_tokens,
            count_prompt=count_prompt if max_cost is not None else None, strict=providers is not None,
            simulators=[p for p in chain if p in self._simulators],
        )
        chars = sum(len(m.content) for m in messages) + len(system or "")
        for r in plan.routes:
            limits = self._limits.get((r.provider, r.model))
            if limits is None:
                price_id = self._providers[r.provider].price_id or r.provider
                limits = self._limits[(r.provider, r.model)] = (
                    catalogue.max_output_tokens(price_id, r.model), catalogue.context_window(price_id, r.model))
            if (limits[0] is not None and max_tokens > limits[0]) or (
                    limits[1] is not None and (max_tokens > limits[1] or chars * 4 > limits[1])):
                _check_limits(r.provider, r.model, limits, max_tokens, chars, count_prompt)
        msgs_t = tuple(messages)
        steps = [
            Step(self._providers[r.provider], ProviderRequest(r.model, msgs_t, system, max_tokens, temperature, stream, seed),
                 explicit=r.explicit)
            for r in plan.routes
        ]
        meta = {
            "user_id": user_id, "agent_id": agent_id, "task_id": task_id, "role": role,
            "stream": stream, "experiment_id": experiment_id, "run_id": run_id,
        }
        request_id = "req_" + os.urandom(12).hex()  # as random as uuid4, a tenth of its cost
        run = ChainRun(steps, policy, request_id, self.timeout, deadline, self.max_retry_wait)
        return _Call(request_id=request_id, chain=run, meta=meta,
                     requested=(plan.requested.provider, plan.requested.model), kit=self)

    # --- recording -------------------------------------------------------------------
    def _record(
        self, call: _Call, step: Step, attempt: Attempt, resp: ProviderResponse | None, attempts: list | None = None
    ) -> Completion | None:
        """Write one ledger row for one attempt; for a response, build the Completion.

        A ledger that cannot be written (a full or read-only disk) never costs the answer: the
        ledger keeps the row and warns (``StorageWarning``)."""
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
            "maybe_billed_requests": attempt.maybe_billed_requests or None,
            "status": attempt.status,
            "error_type": attempt.error_type,
            "error_message": clean_text(attempt.error_message) if attempt.error_message else None,
            "cache_hit": False,  # the experiment runner records cache hits itself
            **call.meta,
        }
        if attempt.error_type == "auth_error":
            self._note_auth_failure(attempt)
        elif attempt.status == "ok":
            self._auth_failed.pop(attempt.provider, None)
        completion = None
        if resp is not None:
            usage = call.fill_usage(step, resp.usage, resp.content)
            provider_id = step.provider.price_id or step.provider.name
            est = self.prices.cost(provider_id, step.request.model, usage)
            row.update(
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                total_tokens=usage.total_tokens,
                cached_tokens=usage.cached_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                tokens_estimated=usage.estimated,
                cost_usd=est.cost_usd,
                price_source=est.source,
                price_version=est.version,
                response_model=clean_text(resp.model) if resp.model else None,
            )
            completion = Completion(
                content=clean_text(resp.content),
                provider=attempt.provider,
                model=step.request.model,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cost_usd=est.cost_usd,
                # the call's wall time minus SDK import and client set-up (recorded per attempt)
                latency_ms=(time.perf_counter() - call.t_start) * 1000 - sum(
                    a.setup_ms or 0.0 for a in (attempts or [attempt])),
                request_id=call.request_id,
                attempts=AttemptList(attempts or [attempt]),
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
            )
        self.ledger.record([row])
        return completion

    def _note_auth_failure(self, attempt: Attempt) -> None:
        """Warn once per provider per Kit that a key was refused; ``status()`` shows it until a success."""
        self._auth_failed[attempt.provider] = attempt.error_message or "authentication failed"
        if attempt.provider not in self._auth_warned:
            self._auth_warned.add(attempt.provider)
            warn_user(
                f"{attempt.provider} refused the API key (HTTP {attempt.status_code or '401/403'}): calls fall back "
                f"to the next provider. Check {attempt.provider.upper()}_API_KEY; kit.status() shows it as failing.",
                AuthenticationWarning,
            )

    # --- calls -------------------------------------------------------------------------
    def complete(
        self,
        prompt: str | Sequence[Mapping[str, str]],
        *,
        role: str | None = None,
        model: str | None = None,
        system: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        task_id: str | None = None,
        max_cost: float | None = None,
        providers: Sequence[str] | None = None,
        deadline: float | None = None,
        fallback_on: FallbackOn = None,
        experiment_id: str | None = None,
        run_id: str | None = None,
    ) -> Completion:
        """One costed, timed completion, falling back across providers as the policy allows.

        ``prompt`` is a string or a list of ``{"role", "content"}`` messages. ``role`` picks a model
        per provider (cross-vendor fallback); ``model`` names one (fallback only to its
        ``fallback_models`` equivalents). ``deadline`` bounds the whole call in seconds;
        ``fallback_on`` overrides the Kit's policy for this call. The Completion says what was
        asked and what answered (``requested_model``, ``model``, ``substituted``). Works inside a
        running event loop (a notebook cell).
        """
        call = self._prepare(prompt, role=role, model=model, system=system, max_tokens=max_tokens,
                             temperature=temperature, seed=seed, user_id=user_id, agent_id=agent_id,
                             task_id=task_id, max_cost=max_cost, providers=providers, deadline=deadline,
                             fallback_on=fallback_on, experiment_id=experiment_id, run_id=run_id)
        return self._complete_call(call)

    def _complete_call(self, call: _Call) -> Completion:
        records: dict[int, Completion | None] = {}

        def on_attempt(step: Step, attempt: Attempt, resp: ProviderResponse | None) -> None:
            records[attempt.number] = self._record(call, step, attempt, resp)

        _, _, attempts = fallback.run(call.chain, on_attempt)
        completion = records[attempts[-1].number]
        assert completion is not None
        completion.attempts = AttemptList(attempts)
        return completion

    async def acomplete(
        self,
        prompt: str | Sequence[Mapping[str, str]],
        *,
        role: str | None = None,
        model: str | None = None,
        system: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        task_id: str | None = None,
        max_cost: float | None = None,
        providers: Sequence[str] | None = None,
        deadline: float | None = None,
        fallback_on: FallbackOn = None,
        experiment_id: str | None = None,
        run_id: str | None = None,
    ) -> Completion:
        """Async ``complete``: same arguments, same result, same ledger rows."""
        call = self._prepare(prompt, role=role, model=model, system=system, max_tokens=max_tokens,
                             temperature=temperature, seed=seed, user_id=user_id, agent_id=agent_id,
                             task_id=task_id, max_cost=max_cost, providers=providers, deadline=deadline,
                             fallback_on=fallback_on, experiment_id=experiment_id, run_id=run_id)
        return await self._acomplete_call(call)

    async def _acomplete_call(self, call: _Call) -> Completion:
        records: dict[int, Completion | None] = {}

        def on_attempt(step: Step, attempt: Attempt, resp: ProviderResponse | None) -> None:
            records[attempt.number] = self._record(call, step, attempt, resp)

        _, _, attempts = await fallback.arun(call.chain, on_attempt)
        completion = records[attempts[-1].number]
        assert completion is not None
        completion.attempts = AttemptList(attempts)
        return completion

    def stream(
        self,
        prompt: str | Sequence[Mapping[str, str]],
        *,
        role: str | None = None,
        model: str | None = None,
        system: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        task_id: str | None = None,
        max_cost: float | None = None,
        providers: Sequence[str] | None = None,
        deadline: float | None = None,
        fallback_on: FallbackOn = None,
    ) -> Stream:
        """Iterate the returned Stream for text chunks; ``.completion`` holds usage and cost after.

        Fallback happens only before the first chunk; a stream that breaks (or ends without its
        finish event) after text arrived raises ``StreamInterruptedError`` with the partial text."""
        call = self._prepare(prompt, role=role, model=model, system=system, max_tokens=max_tokens,
                             temperature=temperature, seed=seed, user_id=user_id, agent_id=agent_id,
                             task_id=task_id, max_cost=max_cost, providers=providers, deadline=deadline,
                             fallback_on=fallback_on, stream=True)
        return Stream(call, self._finish_stream)

    def astream(
        self,
        prompt: str | Sequence[Mapping[str, str]],
        *,
        role: str | None = None,
        model: str | None = None,
        system: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        task_id: str | None = None,
        max_cost: float | None = None,
        providers: Sequence[str] | None = None,
        deadline: float | None = None,
        fallback_on: FallbackOn = None,
    ) -> AsyncStream:
        """``async for chunk in kit.astream(...)``: same arguments and behaviour as ``stream``."""
        call = self._prepare(prompt, role=role, model=model, system=system, max_tokens=max_tokens,
                             temperature=temperature, seed=seed, user_id=user_id, agent_id=agent_id,
                             task_id=task_id, max_cost=max_cost, providers=providers, deadline=deadline,
                             fallback_on=fallback_on, stream=True)
        return AsyncStream(call, self._finish_stream)

    def _finish_stream(self, call: _Call, step: Step, attempt: Attempt, resp: ProviderResponse | None,
                       attempts: list) -> Completion | None:
        return self._record(call, step, attempt, resp, attempts)

    def count_tokens(
        self, prompt: Any, *, model: str | None = None, role: str | None = None, system: str | None = None
    ) -> dict[str, Any]:
        """Prompt tokens a call would send, per provider in the chain, before sending anything.

        OpenAI counts are exact (tiktoken); Claude and other models are tiktoken estimates and
        say so with ``estimated: True``.
        """
        messages, system = _normalise_prompt(prompt, system)
        msgs = [{"role": m.role, "content": m.content} for m in messages]
        out = {}
        for r in self.router.routes(self.chain, role=role, model=model, max_tokens=1,
                                    simulators=[p for p in self.chain if self._is_simulator(p)]):
            out[r.provider] = {
                "model": r.model,
                "prompt_tokens": tokens.count_messages(msgs, r.model, system=system),
                "estimated": tokens.is_estimate(r.model),
            }
        return out

    # --- embeddings ------------------------------------------------------------------
    def embed(self, texts: str | Sequence[str], model: str | None = None, *, user_id: str | None = None) -> np.ndarray:
        """Embed texts as a float32 array (n, dim), L2-normalised.

        Default: the local all-MiniLM-L6-v2 (384 dims, offline). ``text-embedding-3-small``,
        ``-3-large`` and ``text-embedding-ada-002`` go to OpenAI (batched, ledgered with cost).
        """
        from .calls.embeddings import get_local_embedder

        items = _check_texts(texts)
        check_identifier(user_id, "user_id")
        if model is not None:
            check_text(model, "model")
        if model is None or model == get_local_embedder().name:
            return get_local_embedder().embed(texts)
        if model not in EMBEDDING_MODELS:
            raise InvalidRequestError(
                f"unknown embedding model {model!r}: use None (local all-MiniLM-L6-v2) or one of {', '.join(EMBEDDING_MODELS)}"
            )
        openai_p = self._providers["openai"]
        if not openai_p.configured:
            raise ConfigurationError(f"{model} needs OpenAI: set OPENAI_API_KEY (or use model=None for local embeddings)")
        import numpy as np

        from .calls.policy import as_provider_error
        from .calls.providers.http import AttemptIO, attempt_scope

        vectors: list[list[float]] = []
        request_id = "req_" + os.urandom(12).hex()  # as random as uuid4, a tenth of its cost
        for start in range(0, len(items), _EMBED_BATCH):
            batch = items[start : start + _EMBED_BATCH]
            setup_ms = openai_p.prepare(False)
            io = AttemptIO(self.timeout, max_retry_wait=self.max_retry_wait)
            t0 = time.perf_counter()
            row = {"request_id": request_id, "attempt": start // _EMBED_BATCH + 1, "kind": "embedding",
                   "provider": "openai", "model": model, "requested_provider": "openai", "requested_model": model,
                   "substituted": False, "user_id": user_id, "stream": False, "setup_ms": setup_ms or None}
            try:
                with attempt_scope(io):
                    vecs, usage, _ = openai_p.embed(batch, model)  # type: ignore[attr-defined]
            except Exception as exc:
                err = as_provider_error(exc, Step(openai_p, ProviderRequest(model, (), None, 1, None)), io)
                row.update(status="error", latency_ms=(time.perf_counter() - t0) * 1000,
                           http_requests=io.requests or None, maybe_billed_requests=io.maybe_billed or None,
                           error_type=getattr(err, "error_type", type(err).__name__),
                           error_message=clean_text(redact(err))[:500])
                self.ledger.record([row])
                if isinstance(err, KitError):
                    raise err from None
                raise
            if usage.estimated:
                usage = Usage(prompt_tokens=sum(tokens.count_text(t, "text-embedding-3-small") for t in batch),
                              estimated=True)
            est = self.prices.cost("openai", model, usage)
            row.update(status="ok", latency_ms=(time.perf_counter() - t0) * 1000, prompt_tokens=usage.prompt_tokens,
                       completion_tokens=0, total_tokens=usage.prompt_tokens, cost_usd=est.cost_usd,
                       tokens_estimated=usage.estimated, http_requests=io.requests or None,
                       maybe_billed_requests=io.maybe_billed or None,
                       price_source=est.source, price_version=est.version)
            self.ledger.record([row])
            vectors.extend(vecs)
        return np.asarray(vectors, dtype=np.float32).reshape(len(items), -1)

    # --- reading the ledger ----------------------------------------------------------
    def usage(self, **filters: Any) -> pd.DataFrame:
        """The ``llm_usage`` ledger as a DataFrame, one row per attempt; equality filters on columns."""
        return self.ledger.usage(**filters)

    def spend(self, by: str | Sequence[str] = "user_id") -> pd.DataFrame:
        """Spend and calls grouped by user_id, model, provider, day (or a list of them)."""
        return self.ledger.spend(by=by)

    def summary(self, **filters: Any) -> Any:
        """Calls, attempts, failures, spend and p50/p95 latency of the (filtered) ledger, as a compact table."""
        from .core.display import UsageSummary

        return UsageSummary(self.usage(**filters))

    def models(self) -> pd.DataFrame:
        """Models the kit can use right now, with role defaults, context window and prices."""
        import pandas as pd

        rows = []
        for p in self.chain:
            seen = list(dict.fromkeys(list(self.router.role_models.get(p, {}).values()) + self.router.ladders.get(p, [])))
            for m in seen:
                price, source, _ = self.prices.price(self._providers[p].price_id or p, m)
                roles = [r for r, mm in self.router.role_models.get(p, {}).items() if mm == m]
                rows.append({
                    "provider": p, "model": m, "roles": ", ".join(roles),
                    "context_window": catalogue.context_window(self._providers[p].price_id or p, m),
                    "input_per_mtok": price.input_mtok if price else None,
                    "output_per_mtok": price.output_mtok if price else None,
                    "price_source": source,
                })
        return pd.DataFrame(rows)

    def close(self) -> None:
        if self._memory is not None:
            self._memory.close()
        if self._ledger is not None:
            self._ledger.close()

    def __enter__(self) -> Kit:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = " simulation mode" if self.status()["simulation_mode"] else ""
        return f"Kit(home={str(self.home)!r}, chain={self.chain}{mode})"

    def _repr_html_(self) -> str:
        st = self.status()
        badge = "<b style='color:#a15c00'>simulation mode</b>" if st["simulation_mode"] else "<b>live</b>"
        return (
            f"<div><code>Kit</code> {badge} · chain: {html.escape(' → '.join(st['chain']))} · "
            f"home: <code>{html.escape(st['home'])}</code></div>"
        )


def _check_limits(provider: str, model: str, limits: tuple[int | None, int | None], max_tokens: int, chars: int,
                  count_prompt: Any) -> None:
    """Refuse, before sending, a prompt beyond the model's context window or a ``max_tokens``
    beyond its longest answer (where the kit knows them)."""
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
    # a token is at least one byte and a character at most four: a short prompt needs no counting
    if chars * 4 <= window:
        return
    n = count_prompt(model)
    if n > window:
        est = " (estimated with tiktoken)" if tokens.is_estimate(model) else ""
        raise InvalidRequestError(
            f"the prompt is {n} tokens{est}, more than {provider}/{model}'s context window of {window} tokens: "
            "shorten it, split it, or pick a model with a longer context"
        )


def _check_texts(texts: Any) -> list[str]:
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


def _normalise_prompt(prompt: Any, system: str | None) -> tuple[list[Message], str | None]:
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
