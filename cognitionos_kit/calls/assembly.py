"""Builds a Kit's call machinery from one ``KitConfig``: settings (keys from the environment or
``.env``), prices, router, providers, planner and recorder."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core.config import KitConfig, Settings, guards_url, load_settings
from ..core.endpoints import Endpoint
from ..core.errors import ConfigurationError, InvalidRequestError
from .catalogue import PROVIDERS
from .discovery import ModelDirectory
from .plan import Planner
from .policy import FallbackPolicy
from .pricing import PriceBook, table_for_url
from .providers.base import Provider
from .providers.registry import ProviderSet
from .providers.simulated import LatencyModel, SimulatedProvider
from .recorder import Recorder
from .router import Router

if TYPE_CHECKING:
    from pathlib import Path

    from ..guards import Guard
    from ..storage.ledger import Ledger
    from ..storage.textlog import TextLog

__all__ = ["CallParts", "assemble", "describe"]


# (settings, policy, prices, router, providers, planner, recorder): a plain tuple, built once per Kit
CallParts = tuple[Settings, FallbackPolicy, PriceBook, Router, ProviderSet, Planner, Recorder]


def assemble(c: KitConfig, ledger: Callable[[], Ledger], text_log: Callable[[], TextLog] | None = None) -> CallParts:
    """Check what ``KitConfig`` cannot check alone, then build every part (nothing is sent)."""
    if c.simulated_latency is not None and not isinstance(c.simulated_latency, LatencyModel):
        raise ConfigurationError(f"simulated_latency must be a LatencyModel, got {type(c.simulated_latency).__name__}")
    settings = load_settings(c.home, dotenv=c.dotenv, api_keys=c.api_keys, endpoints=c.endpoints)
    from .providers.anthropic import AnthropicProvider
    from .providers.endpoint import endpoint_provider
    from .providers.openai import OpenAIProvider

    limits = {"timeout": float(c.timeout), "max_retries": c.max_retries, "max_retry_wait": c.max_retry_wait}
    builtins: dict[str, Provider] = {
        "openai": OpenAIProvider(settings.openai, **limits),  # type: ignore[arg-type]
        "anthropic": AnthropicProvider(settings.anthropic, **limits),  # type: ignore[arg-type]
        "simulated": SimulatedProvider(seed=c.seed, latency=c.simulated_latency).script(c.simulated_answers),
    }
    endpoints = {e.name: endpoint_provider(e, p, **limits) for e, p in settings.endpoints}
    builtins.update(endpoints)
    servers = [(e, endpoints[e.name]) for e, _ in settings.endpoints]
    if (local := local_openai(settings)) is not None:  # OPENAI_BASE_URL without a key: a local server
        servers.append((local, endpoint_provider(local, settings.openai, **limits)))
        builtins["openai"] = servers[-1][1]
    try:
        policy = FallbackPolicy.make(c.fallback_on)
        prices = PriceBook()
        for e, _ in servers:
            prices.tables[e.name] = e.price_table or (table_for_url(e.base_url) if e.base_url else None)
            prices.aliases.update({(e.name, served): model for served, model in e.priced_as})
        for o in c.prices:
            prices.override(o)
        # a cloud lists only the models configured for it
        static = {e.name: e.models if e.models is not None or getattr(p, "listable", True) else () for e, p in servers}
        listers = {e.name: p for e, p in servers}
        directory = ModelDirectory(lambda name, timeout: listers[name].list_models(timeout), static,
                                   {e.name: e.base_url or e.kind for e, _ in servers})
        router = Router(prices, c.role_models, c.fallback_models, directory)
    except InvalidRequestError as exc:
        raise ConfigurationError(str(exc)) from None
    # endpoints join the default chain after the built-in vendors, before the simulator
    order = c.providers if c.providers is not None else (*PROVIDERS[:-1], *endpoints, PROVIDERS[-1])
    providers = ProviderSet(builtins, order, listed=c.providers is not None, simulate_on_failure=c.simulate_on_failure)
    for p in providers.added:
        router.add_provider(p.name, p.price_id or p.name)
    planner = Planner(providers, router, timeout=float(c.timeout), max_retry_wait=c.max_retry_wait,
                      default_max_tokens=c.default_max_tokens, policy=policy)
    recorder = Recorder(ledger, prices, providers, text_log, log_text=c.log_text, log_redact=c.log_redact)
    return settings, policy, prices, router, providers, planner, recorder


def local_openai(settings: Settings) -> Endpoint | None:
    """``OPENAI_BASE_URL`` with no OpenAI key names a local OpenAI-compatible server (Ollama,
    vLLM, llama.cpp: OpenAI itself and its proxies need a key). It keeps the name ``openai`` but is
    treated as a named endpoint: its models come from its ``/models``, a role gets only a model
    mapped for it (or its only model), never ``gpt-4o-mini``, and it is priced only where
    genai-prices knows its URL."""
    s = settings.openai
    if not s.base_url or s.keys or re.match(r"https://api\.openai\.com(/|$)", s.base_url):
        return None
    return Endpoint(name="openai", base_url=s.base_url.rstrip("/"), source=s.base_url_source or "env")


def describe(c: KitConfig, settings: Settings, providers: ProviderSet, router: Router) -> dict[str, Any]:
    """``kit.status()``: what a Kit built from these parts will use right now (never a key)."""
    chain = providers.chain
    return {
        "simulation_mode": bool(chain) and all(providers.is_simulator(p) for p in chain),
        "chain": chain,
        "providers": providers.status(),
        "timeout": float(c.timeout),
        "simulate_on_failure": c.simulate_on_failure,
        "fallback_models": {k: list(v) for k, v in router.fallback_models.items()},
        "home": str(settings.home),
        "project": c.project,
        "views": c.views or ("project" if c.project else "all"),
        "ledger": str(settings.home / "cognitionos.duckdb"),
        "text_log": str(settings.home / "cognitionos_log.duckdb") if c.log_text else None,
        "dotenv": settings.dotenv_path,
        "prices": "genai-prices bundled snapshot (no auto-update)",
        "guards": _shown_guards(c),
    }


def attach_guards(c: KitConfig, home: Path, planner: Planner, recorder: Recorder, prices: PriceBook) -> Guard:
    """Give a Kit's calls the data folder's budgets and response cache; returns the budgets."""
    from ..guards import Guard  # noqa: F811 - at run time, not only for the annotation
    from .caching import Answers

    url = guards_url(c)
    guard = Guard(home, url)
    planner.budgets = (guard, prices)
    recorder.cache, recorder.cache_ttl = Answers(home, url), c.cache_ttl
    planner.cache_mode, planner.cache_lookup = c.cache, recorder.cached
    from ..guards.watch import Watch

    Watch.attach(recorder, home)  # metrics, spans and spend alerts of every ledger row
    return guard


def _shown_guards(c: KitConfig) -> str:
    """Where budgets, limits and the cache live, as ``kit.status()`` shows it (never a password)."""
    from ..storage.redis_cache import safe_url

    url = guards_url(c)
    return safe_url(url) if url else "local (the data folder)"
