"""The facade users hold: ``Kit``. Prompt -> validation -> router -> fallback -> provider -> ledger."""

from __future__ import annotations

import html
import math
import os
import time
import uuid
import warnings
from dataclasses import dataclass, field
from numbers import Real
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from . import fallback, tokens
from .config import DEFAULT_ORDER, load_settings
from .errors import ConfigurationError, InvalidRequestError, redact
from .fallback import Step
from .notebook.reprs import AttemptList
from .pricing import Price, PriceBook
from .providers.base import Provider
from .providers.simulated import SIMULATED_MODELS, LatencyModel, SimulatedProvider
from .router import Router, provider_for_model
from .streaming import AsyncStream, Stream
from .types import ROLES, Attempt, Completion, Message, ProviderRequest, ProviderResponse, Usage

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from .ledger import Ledger
    from .memory import Memory

_REAL_PROVIDERS = ("openai", "anthropic")
EMBEDDING_MODELS = ("text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002")
_EMBED_BATCH = 256  # inputs per embeddings request (the API accepts up to 2048)


@dataclass
class _Call:
    """A validated request: everything decided before the first byte is sent."""

    request_id: str
    steps: list[Step]
    meta: dict[str, Any]
    kit: "Kit" = field(repr=False)
    t_start: float = field(default_factory=time.perf_counter)

    def estimate_usage(self, step: Step, completion_text: str) -> Usage:
        req = step.request
        msgs = [{"role": m.role, "content": m.content} for m in req.messages]
        return Usage(
            prompt_tokens=tokens.count_messages(msgs, req.model, system=req.system),
            completion_tokens=tokens.count_text(completion_text, req.model) if completion_text else 0,
            estimated=True,
        )


class Kit:
    """Costed, timed LLM calls with provider fallback, recorded in a DuckDB ledger.

    >>> kit = Kit()                       # keys from the environment or .env; none -> simulated
    >>> r = kit.complete("Name three uses of DuckDB", role="executor")
    >>> r.content, r.cost_usd, r.latency_ms

    ``max_retries`` bounds the SDKs' own retry loop (the only one); a provider asking to wait
    longer than ``max_retry_wait`` seconds before a retry is skipped for that call instead.

    ``memory`` sets ``kit.memory``'s options (any of ``Memory.OPTIONS``), e.g.
    ``Kit(memory={"weights": {"decay": 0.3}, "half_life_days": 7})``.
    """

    def __init__(
        self,
        home: str | os.PathLike | None = None,
        *,
        providers: Sequence[str | Provider] | None = None,
        role_models: Mapping[str, Mapping[str, str]] | None = None,
        seed: int = 0,
        simulated_latency: LatencyModel | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        max_retry_wait: float | None = 20.0,
        default_max_tokens: int = 1024,
        dotenv: bool | str = True,
        memory: Mapping[str, Any] | None = None,
    ) -> None:
        if memory is not None:
            from .memory import Memory

            memory = Memory.check_options(memory)
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(f"max_retries must be an int >= 0, got {max_retries!r}")
        if max_retry_wait is not None and (not isinstance(max_retry_wait, Real) or not max_retry_wait >= 0):
            raise ConfigurationError(f"max_retry_wait must be a number of seconds >= 0 or None, got {max_retry_wait!r}")
        if not isinstance(default_max_tokens, int) or default_max_tokens <= 0:
            raise ConfigurationError(f"default_max_tokens must be a positive int, got {default_max_tokens!r}")
        self.settings = load_settings(home, dotenv=dotenv)
        self.home = self.settings.home
        self.default_max_tokens = default_max_tokens
        self.prices = PriceBook()
        self.router = Router(self.prices, role_models)
        from .providers.anthropic import AnthropicProvider
        from .providers.openai import OpenAIProvider

        self._providers: dict[str, Provider] = {
            "openai": OpenAIProvider(self.settings.openai, timeout=timeout, max_retries=max_retries,
                                     max_retry_wait=max_retry_wait),
            "anthropic": AnthropicProvider(self.settings.anthropic, timeout=timeout, max_retries=max_retries,
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
                order.append(self._check_provider_name(p))
        if not order:
            raise ConfigurationError("providers must name at least one provider")
        self.order = order
        self._ledger: Ledger | None = None
        self._warned_temperature: set[str] = set()
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
        """The providers a call tries by default, in order: configured ones only."""
        return [p for p in self.order if self._providers[p].configured]

    @property
    def simulated(self) -> SimulatedProvider:
        return self._providers["simulated"]  # type: ignore[return-value]

    def provider(self, name: str) -> Provider:
        return self._providers[self._check_provider_name(name)]

    @property
    def ledger(self) -> "Ledger":
        if self._ledger is None:
            from .ledger import Ledger

            self._ledger = Ledger(self.home)
        return self._ledger

    @property
    def memory(self) -> "Memory":
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

    def runs(self) -> "pd.DataFrame":
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
        """What the kit will use right now; never includes a key."""
        chain = self.chain
        return {
            "simulation_mode": not any(p in _REAL_PROVIDERS for p in chain),
            "chain": chain,
            "providers": {
                name: {
                    "configured": p.configured,
                    "base_url": getattr(p, "base_url", None),
                    "key_set": bool(getattr(getattr(p, "_settings", None), "api_key", None)),
                }
                for name, p in self._providers.items()
            },
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
        for label, v in (("input_per_mtok", input_per_mtok), ("output_per_mtok", output_per_mtok)):
            if not isinstance(v, Real) or isinstance(v, bool) or v < 0 or math.isnan(v):
                raise InvalidRequestError(f"{label} must be a number >= 0, got {v!r}")
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
        experiment_id: str | None = None,
        run_id: str | None = None,
    ) -> _Call:
        messages, system = _normalise_prompt(prompt, system)
        if role is not None and role not in ROLES:
            raise InvalidRequestError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
        if model is not None and (not isinstance(model, str) or not model.strip()):
            raise InvalidRequestError(f"model must be a non-empty string, got {model!r}")
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
        for label, v in (("user_id", user_id), ("agent_id", agent_id), ("task_id", task_id)):
            if v is not None and not isinstance(v, str):
                raise InvalidRequestError(f"{label} must be a string, got {type(v).__name__}")

        if providers is not None:
            if isinstance(providers, str) or not providers:
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

        count_prompt = None
        if max_cost is not None:
            msgs = [{"role": m.role, "content": m.content} for m in messages]
            count_prompt = lambda m: tokens.count_messages(msgs, m, system=system)  # noqa: E731
        routes = self.router.routes(
            chain, role=role, model=model, max_cost=max_cost, max_tokens=max_tokens,
            count_prompt=count_prompt, strict=providers is not None,
        )
        msgs_t = tuple(messages)
        steps = [
            Step(self._providers[r.provider], ProviderRequest(r.model, msgs_t, system, max_tokens, temperature, stream, seed))
            for r in routes
        ]
        meta = {
            "user_id": user_id, "agent_id": agent_id, "task_id": task_id, "role": role,
            "stream": stream, "experiment_id": experiment_id, "run_id": run_id,
        }
        return _Call(request_id="req_" + uuid.uuid4().hex[:24], steps=steps, meta=meta, kit=self)

    # --- recording -------------------------------------------------------------------
    def _record(
        self, call: _Call, step: Step, attempt: Attempt, resp: ProviderResponse | None, attempts: list | None = None
    ) -> Completion | None:
        """Write one ledger row for one attempt; for a response, build the Completion."""
        row: dict[str, Any] = {
            "ts": time.time(),  # epoch seconds: the ledger stores them as UTC
            "request_id": call.request_id,
            "attempt": attempt.number,
            "kind": "chat",
            "provider": attempt.provider,
            "model": attempt.model,
            "latency_ms": attempt.latency_ms,
            "status": attempt.status,
            "error_type": attempt.error_type,
            "error_message": attempt.error_message,
            "cache_hit": False,  # the experiment runner records cache hits itself
            **call.meta,
        }
        completion = None
        if resp is not None:
            usage = resp.usage
            if usage.estimated and not usage.prompt_tokens and not usage.completion_tokens:
                usage = call.estimate_usage(step, resp.content)  # server sent no usage (e.g. llama.cpp)
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
            )
            completion = Completion(
                content=resp.content,
                provider=attempt.provider,
                model=step.request.model,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cost_usd=est.cost_usd,
                latency_ms=(time.perf_counter() - call.t_start) * 1000,
                request_id=call.request_id,
                attempts=AttemptList(attempts or [attempt]),
                cached_tokens=usage.cached_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                finish_reason=resp.finish_reason,
                role=call.meta["role"],
                user_id=call.meta["user_id"],
                price_source=est.source,
            )
        self.ledger.record([row])
        return completion

    # --- calls -----------------------------------------------------------------------
    def complete(self, prompt: Any, **kwargs: Any) -> Completion:
        """One costed, timed completion, falling back across providers.

        ``prompt`` is a string or a list of ``{"role", "content"}`` messages. Keyword arguments:
        role, model, system, max_tokens, temperature, seed, user_id, agent_id, task_id, max_cost,
        providers. Works inside a running event loop (a notebook cell).
        """
        call = self._prepare(prompt, **kwargs)
        records: dict[int, Completion | None] = {}

        def on_attempt(step: Step, attempt: Attempt, resp: ProviderResponse | None) -> None:
            records[attempt.number] = self._record(call, step, attempt, resp)

        _, _, attempts = fallback.run(call.steps, on_attempt, call.request_id)
        completion = records[attempts[-1].number]
        assert completion is not None
        completion.attempts = AttemptList(attempts)
        return completion

    async def acomplete(self, prompt: Any, **kwargs: Any) -> Completion:
        """Async ``complete``: same arguments, same result, same ledger rows."""
        call = self._prepare(prompt, **kwargs)
        records: dict[int, Completion | None] = {}

        def on_attempt(step: Step, attempt: Attempt, resp: ProviderResponse | None) -> None:
            records[attempt.number] = self._record(call, step, attempt, resp)

        _, _, attempts = await fallback.arun(call.steps, on_attempt, call.request_id)
        completion = records[attempts[-1].number]
        assert completion is not None
        completion.attempts = AttemptList(attempts)
        return completion

    def stream(self, prompt: Any, **kwargs: Any) -> Stream:
        """Iterate the returned Stream for text chunks; ``.completion`` holds usage and cost after."""
        call = self._prepare(prompt, stream=True, **kwargs)
        return Stream(call, self._finish_stream)

    def astream(self, prompt: Any, **kwargs: Any) -> AsyncStream:
        """``async for chunk in kit.astream(...)``."""
        call = self._prepare(prompt, stream=True, **kwargs)
        return AsyncStream(call, self._finish_stream)

    def _finish_stream(self, call: _Call, step: Step, attempt: Attempt, resp, attempts: list) -> Completion | None:
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
        for r in self.router.routes(self.chain, role=role, model=model, max_tokens=1):
            out[r.provider] = {
                "model": r.model,
                "prompt_tokens": tokens.count_messages(msgs, r.model, system=system),
                "estimated": tokens.is_estimate(r.model),
            }
        return out

    # --- embeddings ------------------------------------------------------------------
    def embed(self, texts: str | Sequence[str], model: str | None = None, *, user_id: str | None = None) -> "np.ndarray":
        """Embed texts as a float32 array (n, dim), L2-normalised.

        Default: the local all-MiniLM-L6-v2 (384 dims, offline). ``text-embedding-3-small``,
        ``-3-large`` and ``text-embedding-ada-002`` go to OpenAI (batched, ledgered with cost).
        """
        from .embeddings import get_local_embedder

        if model is None or model == get_local_embedder().name:
            return get_local_embedder().embed(texts)
        if model not in EMBEDDING_MODELS:
            raise InvalidRequestError(
                f"unknown embedding model {model!r}: use None (local all-MiniLM-L6-v2) or one of {', '.join(EMBEDDING_MODELS)}"
            )
        items = _check_texts(texts)
        openai_p = self._providers["openai"]
        if not openai_p.configured:
            raise ConfigurationError(f"{model} needs OpenAI: set OPENAI_API_KEY (or use model=None for local embeddings)")
        import numpy as np

        vectors: list[list[float]] = []
        request_id = "req_" + uuid.uuid4().hex[:24]
        for start in range(0, len(items), _EMBED_BATCH):
            batch = items[start : start + _EMBED_BATCH]
            t0 = time.perf_counter()
            row = {"request_id": request_id, "attempt": start // _EMBED_BATCH + 1, "kind": "embedding",
                   "provider": "openai", "model": model, "user_id": user_id, "stream": False}
            try:
                vecs, usage, _ = openai_p.embed(batch, model)  # type: ignore[attr-defined]
            except Exception as exc:
                row.update(status="error", latency_ms=(time.perf_counter() - t0) * 1000,
                           error_type=getattr(exc, "error_type", type(exc).__name__), error_message=redact(exc)[:500])
                self.ledger.record([row])
                raise
            est = self.prices.cost("openai", model, usage)
            row.update(status="ok", latency_ms=(time.perf_counter() - t0) * 1000, prompt_tokens=usage.prompt_tokens,
                       completion_tokens=0, total_tokens=usage.prompt_tokens, cost_usd=est.cost_usd,
                       price_source=est.source, price_version=est.version)
            self.ledger.record([row])
            vectors.extend(vecs)
        return np.asarray(vectors, dtype=np.float32).reshape(len(items), -1)

    # --- reading the ledger ----------------------------------------------------------
    def usage(self, **filters: Any) -> "pd.DataFrame":
        """The ``llm_usage`` ledger as a DataFrame, one row per attempt; equality filters on columns."""
        return self.ledger.usage(**filters)

    def spend(self, by: str | Sequence[str] = "user_id") -> "pd.DataFrame":
        """Spend and calls grouped by user_id, model, provider, day (or a list of them)."""
        return self.ledger.spend(by=by)

    def summary(self, **filters: Any) -> Any:
        """Calls, attempts, failures, spend and p50/p95 latency of the (filtered) ledger, as a compact table."""
        from .notebook.reprs import UsageSummary

        return UsageSummary(self.usage(**filters))

    def models(self) -> "pd.DataFrame":
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
                    "context_window": _context_window(p, m),
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

    def __enter__(self) -> "Kit":
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


def _context_window(provider: str, model: str) -> int | None:
    if provider not in _REAL_PROVIDERS:
        return 128_000 if provider == "simulated" else None
    from .pricing import _genai_lookup

    calc = _genai_lookup(provider, model)
    return getattr(calc.model, "context_window", None) if calc else None


def _check_texts(texts: Any) -> list[str]:
    items = [texts] if isinstance(texts, str) else texts
    if not isinstance(items, Sequence):
        raise InvalidRequestError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
    for i, t in enumerate(items):
        if not isinstance(t, str) or not t.strip():
            raise InvalidRequestError(f"texts[{i}] must be a non-empty string, got {t!r:.60}")
    return list(items)


def _normalise_prompt(prompt: Any, system: str | None) -> tuple[list[Message], str | None]:
    """A string or a chat message list -> user/assistant turns plus one system prompt."""
    if system is not None and (not isinstance(system, str)):
        raise InvalidRequestError(f"system must be a string, got {type(system).__name__}")
    systems = [system] if system and system.strip() else []
    if isinstance(prompt, str):
        if not prompt.strip():
            raise InvalidRequestError("prompt is empty: pass some text, or a list of chat messages")
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
        if role == "system":
            systems.append(content)
        else:
            turns.append(Message(role, content))
    if not turns or turns[-1].role != "user":
        raise InvalidRequestError("the message list must end with a user message (after any system messages)")
    return turns, "\n\n".join(systems) if systems else None
