"""The facade users hold: ``Kit``. It builds the parts from one ``KitConfig`` and delegates:
prompt -> ``calls.plan`` (checks, router) -> ``calls.fallback``/``calls.streaming`` (providers)
-> ``calls.recorder`` (ledger row, Completion)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from .calls import fallback
from .calls.assembly import assemble, attach_guards, describe
from .calls.options import CallOptions, Prompt, takes_options
from .calls.plan import CallPlan
from .calls.policy import FallbackOn
from .calls.providers.base import Provider
from .calls.providers.simulated import LatencyModel, SimulatedProvider
from .calls.turns import acall, call, open_astream, open_stream
from .core.client_mode import served_by
from .core.config import KitConfig, PriceOverride, session_id, view_filters
from .core.display import UsageSummary, kit_html, kit_text
from .core.types import Completion
from .guards.facade import GuardMethods
from .guards.watch import WatchMethods

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from typing_extensions import Unpack

    from .calls.chat import Chat
    from .calls.streaming import AsyncStream, AsyncTurnStream, Stream, TurnStream
    from .charts import ChartFilters, Charts
    from .experiments import Batch, Comparison, Experiment, Run
    from .memory import Memory
    from .notebook.dashboard import Dashboard
    from .notebook.log_browser import LogBrowser
    from .notebook.playground import Playground
    from .storage.ledger import Ledger
    from .storage.textlog import TextLog

__all__ = ["Kit", "KitConfig", "CallOptions", "CallPlan"]


class Kit(GuardMethods, WatchMethods):
    """Costed, timed LLM calls with provider fallback, recorded in a DuckDB ledger.

    >>> kit = Kit()                       # keys from the environment or .env; none -> simulated
    >>> r = kit.complete("Name three uses of DuckDB", role="executor")
    >>> r.content, r.cost_usd, r.latency_ms

    ``timeout`` bounds a whole attempt (SDK retries included; for a stream, each wait for a chunk);
    ``max_retries`` the SDK's own retries; a retry asking to wait over ``max_retry_wait`` s is skipped.
    ``fallback_on`` (see ``calls.policy``) says which failures move on: a role falls back across
    vendors, a named model only to its ``fallback_models``. The simulator answers only in
    simulation mode, when listed, or with ``simulate_on_failure=True``, and says so.
    ``api_keys={"openai": [k1, k2]}`` rotates a provider's keys (``calls.providers.keys``);
    ``guards="redis://..."`` keeps budgets, rate limits and the response cache in a team's Redis.
    ``endpoints={"local": "http://127.0.0.1:8080/v1"}`` adds named servers (``core.endpoints``).
    """

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
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
        dotenv: bool | str | os.PathLike[str] = True,
        memory: Mapping[str, Any] | None = None,
        log_text: bool = True,
        log_redact: Callable[[str], str] | None = None,
        project: str | None = None,
        views: Literal["all", "project", "session"] | None = None,
        cache: bool | Literal["deterministic", "refresh"] = "deterministic",
        cache_ttl: float | None = None,
        guards: str | None = None,
        api_keys: Mapping[str, Sequence[str]] | None = None,
        endpoints: Mapping[str, str | Mapping[str, Any]] | str | os.PathLike[str] | None = None,
        server: str | Literal[False] | None = None, token: str | None = None,  # client mode: client/served.py
    ) -> None:
        self._build(KitConfig(
            home=home, providers=providers, role_models=role_models, fallback_models=fallback_models,  # type: ignore[arg-type]
            fallback_on=fallback_on, simulate_on_failure=simulate_on_failure, seed=seed, simulated_latency=simulated_latency,
            timeout=timeout, max_retries=max_retries, max_retry_wait=max_retry_wait, default_max_tokens=default_max_tokens,
            dotenv=dotenv, memory=memory, log_text=log_text, log_redact=log_redact, project=project,  # type: ignore[arg-type]
            views=views, cache=cache, cache_ttl=cache_ttl, guards=guards, api_keys=api_keys,  # type: ignore[arg-type]
            endpoints=endpoints,  # type: ignore[arg-type]
        ))

    def __new__(cls, *args: Any, **kwargs: Any) -> Kit:
        return super().__new__(_kit_class(cls, kwargs))

    @classmethod
    def from_config(cls, config: KitConfig) -> Kit:
        """A Kit built from ``config`` (``kit.config`` of another Kit gives an identical one)."""
        kit = object.__new__(cls)
        kit._build(config)
        return kit

    def _build(self, config: KitConfig) -> None:
        memory_options: dict[str, Any] = {}
        if config.memory is not None:
            from .memory import Memory

            memory_options = dict(Memory.check_options(config.memory))
        parts = assemble(config, lambda: self.ledger, lambda: self.text_log)
        self.settings, self.policy, self.prices, self.router, self.providers, self.planner, self.recorder = parts
        self.home = self.settings.home
        self._config = config
        self.project = config.project
        self.session_id = session_id()  # this process's rows (a kernel's, a script's), for views="session"
        self.planner.tags = {"project": config.project, "session_id": self.session_id}
        self.planner.recall = lambda user_id, query, k: self.memory.recall(user_id, query, k)  # memory=
        self.guard = attach_guards(config, self.home, self.planner, self.recorder, self.prices)
        self._views = view_filters(config, self.session_id)
        self._ledger: Ledger | None = None
        self._text_log: TextLog | None = None
        self._memory: Memory | None = None
        self._memory_options = memory_options

    # --- settings ----------------------------------------------------------------------
    @property
    def config(self) -> KitConfig:
        """What this Kit is built from, as it is now (prices set and role models changed included)."""
        return replace(
            self._config,
            home=str(self.home),
            role_models={p: dict(t) for p, t in self.router.user_role_models.items()} or None,
            fallback_models={k: tuple(v) for k, v in self.router.fallback_models.items()} or None,
            prices=self.prices.overrides(),
            simulated_answers=self.simulated.canned,
        )

    timeout = property(lambda self: float(self._config.timeout), doc="Seconds one attempt may take, retries included.")
    max_retries = property(lambda self: self._config.max_retries, doc="The SDKs' own retries per attempt.")
    max_retry_wait = property(lambda self: self._config.max_retry_wait, doc="The longest wait a retry may ask for.")
    default_max_tokens = property(lambda self: self._config.default_max_tokens, doc="max_tokens when a call sets none.")
    simulate_on_failure = property(lambda self: self._config.simulate_on_failure,
                                   doc="Whether the simulator answers when every real provider failed.")
    fallback_on = property(lambda self: self._config.fallback_on, doc="The failures that move on (None: the default).")

    order = property(lambda self: self.providers.order, doc="The providers in the user's order (configured or not).")
    chain = property(lambda self: self.providers.chain, doc="The providers a call tries by default, in order.")

    @property
    def simulated(self) -> SimulatedProvider:
        """The built-in simulated provider (its seed, latency model and injected failures)."""
        sim = self.providers.get("simulated")
        assert isinstance(sim, SimulatedProvider)
        return sim

    def provider(self, name: str) -> Provider:
        return self.providers.get(name)

    def set_price(self, model: str, *, input_per_mtok: float, output_per_mtok: float,
                  cached_input_per_mtok: float | None = None, cache_write_per_mtok: float | None = None,
                  provider: str | None = None) -> None:
        """Add or override a model's price (USD per million tokens)."""
        if provider is not None:
            self.providers.check_name(provider)
        self.prices.override(PriceOverride(provider, model, input_per_mtok, output_per_mtok, cached_input_per_mtok,
                                           cache_write_per_mtok))

    def set_role_model(self, role: str, model: str, provider: str | None = None) -> None:
        """Use ``model`` for ``role`` at the provider serving it (``local:qwen``: that endpoint) or the one named."""
        self.router.assign(role, model, provider, self.chain, self.providers.check_name)

    # --- calls -------------------------------------------------------------------------
    @takes_options
    def plan(self, prompt: Prompt, options: CallOptions) -> CallPlan:
        """Check a call and decide its steps without sending anything (what ``complete`` would try)."""
        return self.planner.plan(prompt, options)

    @takes_options
    def complete(self, prompt: Prompt, options: CallOptions) -> Completion:
        """One costed, timed completion, falling back across providers as the policy allows.

        ``prompt`` is a string or a list of ``{"role", "content"}`` messages. The Completion says
        what was asked and what answered (``requested_model``, ``model``, ``substituted``). Works
        inside a running event loop (a notebook cell). ``r.output`` holds the parsed ``output=``,
        ``r.tool_calls`` the tools asked for (``run_tools=True`` runs them until the model answers)."""
        return call(self.planner, self.send, prompt, options)

    @takes_options
    async def acomplete(self, prompt: Prompt, options: CallOptions) -> Completion:
        """Async ``complete``: same arguments, same result, same ledger rows."""
        return await acall(self.planner, self.asend, prompt, options)

    @takes_options
    def stream(self, prompt: Prompt, options: CallOptions) -> Stream | TurnStream:
        """Iterate the returned Stream for text chunks; ``.completion`` holds usage and cost after.

        Fallback happens only before the first chunk; a stream that breaks (or ends without its
        finish event) after text arrived raises ``StreamInterruptedError`` with the partial text."""
        return open_stream(self.planner, self.recorder.record, prompt, options)

    @takes_options
    def astream(self, prompt: Prompt, options: CallOptions) -> AsyncStream | AsyncTurnStream:
        """``async for chunk in kit.astream(...)``: same arguments and behaviour as ``stream``."""
        return open_astream(self.planner, self.recorder.record, prompt, options)

    def send(self, plan: CallPlan) -> Completion:
        """Send a checked ``CallPlan`` (from ``kit.plan``): try its steps, record every attempt
        (or answer from the response cache, when the plan may be)."""
        if (hit := plan.cached()) is not None:
            return hit
        records = self.recorder.collect(plan)
        return records.answer(fallback.run(plan.chain, records.on_attempt))

    async def asend(self, plan: CallPlan) -> Completion:
        """Async ``send``."""
        if (hit := plan.cached()) is not None:
            return hit
        records = self.recorder.collect(plan)
        return records.answer(await fallback.arun(plan.chain, records.on_attempt))

    def chat(self, *, system: str | None = None, role: str | None = None, model: str | None = None,
             user_id: str | None = None, max_tokens: int | None = None, continue_from: str | None = None,
             **options: Any) -> Chat:
        """A conversation: ``chat.send(text)`` keeps the history, each turn a costed call; the
        options here (and any other call option) apply to every turn. ``continue_from`` a logged
        request id starts from that request's messages and answer (and its system prompt)."""
        from .calls.chat import Chat

        given = {"role": role, "model": model, "user_id": user_id, "max_tokens": max_tokens, **options}
        return Chat(self, system=system, continue_from=continue_from, **{k: v for k, v in given.items() if v is not None})

    def count_tokens(self, prompt: Prompt, *, model: str | None = None, role: str | None = None,
                     system: str | None = None) -> dict[str, Any]:
        """Prompt tokens a call would send, per provider in the chain, before sending anything.

        OpenAI counts are exact (tiktoken); Claude and other models are tiktoken estimates and
        say so with ``estimated: True``."""
        return self.planner.count_tokens(prompt, model=model, role=role, system=system)

    def embed(self, texts: str | Sequence[str], model: str | None = None, *, user_id: str | None = None) -> np.ndarray:
        """Embed texts as a float32 array (n, dim), L2-normalised.

        Default: the local all-MiniLM-L6-v2 (384 dims, offline). ``text-embedding-3-small``,
        ``-3-large`` and ``text-embedding-ada-002`` go to OpenAI (batched, ledgered with cost)."""
        from .calls.embed import embed

        return embed(texts, model, user_id=user_id, provider=self.providers.get("openai"), timeout=self.timeout,
                     max_retry_wait=self.max_retry_wait, prices=self.prices, recorder=self.recorder)

    # --- the parts on this Kit's data folder ---------------------------------------------
    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            from .storage.ledger import Ledger

            self._ledger = Ledger(self.home)
        return self._ledger

    @property
    def text_log(self) -> TextLog:
        """Prompts and answers (``<home>/cognitionos_log.duckdb``), beside the ledger; see ``log``."""
        if self._text_log is None:
            from .storage.textlog import TextLog

            self._text_log = TextLog(self.home)
        return self._text_log

    def log(self, search: str | None = None, *, since: Any = None, until: Any = None, limit: int | None = None,
            **filters: Any) -> pd.DataFrame:
        """What each request asked and what came back, newest first (one row per request): prompt,
        answer, messages and parameters (JSON), errors, cost and latency. ``search`` finds text;
        filters as ``usage`` (user_id, model, trace_id, request_id, ...)."""
        return self.text_log.entries(search, since=since, until=until, limit=limit, **{**self._views, **filters})

    @property
    def memory(self) -> Memory:
        """The semantic memory on this Kit's data folder (created on first use)."""
        if self._memory is None:
            from .memory import Memory

            self._memory = Memory(self.home, kit=self, **self._memory_options)
        return self._memory

    def usage(self, **filters: Any) -> pd.DataFrame:
        """The ``llm_usage`` ledger as a DataFrame, one row per attempt; column filters, ``since``/``until``,
        ``last=N`` (the newest N). A Kit with ``views="project"``/``"session"`` shows its project's/own rows."""
        return self.ledger.usage(**{**self._views, **filters})

    def spend(self, by: str | Sequence[str] = "user_id", **filters: Any) -> pd.DataFrame:
        """Spend and calls grouped by user_id, model, provider, day, project (or a list of them)."""
        return self.ledger.spend(by=by, **{**self._views, **filters})

    def summary(self, **filters: Any) -> UsageSummary:
        """Calls, attempts, failures, spend and p50/p95 latency of the (filtered) ledger, as a compact table."""
        return self.ledger.summary(**{**self._views, **filters})

    def models(self) -> pd.DataFrame:
        """Models the kit can use right now, with role defaults, context window and prices."""
        import pandas as pd

        price_ids = {name: p.price_id or name for name, p in self.providers.items()}
        return pd.DataFrame(self.router.model_rows(self.chain, price_ids))

    def status(self) -> dict[str, Any]:
        """What the kit will use right now; never includes a key.

        ``providers[name]["auth"]`` is ``"failing"`` after the provider refused the key (401/403)
        until a later call to it succeeds, ``"ok"`` otherwise."""
        return {**describe(self._config, self.settings, self.providers, self.router), "session_id": self.session_id}

    # --- shortcuts to experiments and views ----------------------------------------------
    @property
    def charts(self) -> Charts:
        """Plotly figures of this Kit's ledger: ``kit.charts.latency()``, ``.spend_over_time()``..."""
        from .charts import Charts

        return Charts(self)

    def playground(self, *, compare: bool = False, chat: bool = False, prompt: str = "") -> Playground:
        """An ipywidgets playground bound to this Kit: streams answers and shows cost (``compare=True``:
        several models side by side; ``chat=True``: a conversation)."""
        from .notebook.playground import playground

        return playground(self, compare=compare, chat=chat, prompt=prompt)

    def log_browser(self, *, search: str = "") -> LogBrowser:
        """A widget to find logged requests by text and read prompt and answer side by side."""
        from .notebook.log_browser import log_browser

        return log_browser(self, search=search)

    def dashboard(self, *, refresh_s: float | None = 1.0, budget_usd: float | None = None,
                  **filters: Unpack[ChartFilters]) -> Dashboard:
        """Live FigureWidgets and a summary table that update as calls are recorded (filters as ``kit.charts``)."""
        from .notebook.dashboard import dashboard

        return dashboard(self, refresh_s=refresh_s, budget_usd=budget_usd, **filters)

    def run(self, experiment: Experiment, *, concurrency: int = 8, budget_usd: float | None = None,
            executor: str | Batch = "local", cache: bool | str = True, progress: bool = True,
            resume: str | None = None) -> Run:
        """Run an ``Experiment`` grid: cached, budgeted, with a manifest (see ``experiments.run_experiment``)."""
        from .experiments import run_experiment

        return run_experiment(self, experiment, concurrency=concurrency, budget_usd=budget_usd, executor=executor,
                              cache=cache, progress=progress, resume=resume)

    def runs(self) -> pd.DataFrame:
        """Past experiment runs under this data folder, newest first."""
        from .experiments import list_runs

        return list_runs(self)

    def compare(self, run_a: Run | str, run_b: Run | str, *, alpha: float = 0.05) -> Comparison:
        """Run B against run A, samples paired: per cell and score the difference, its interval, a p-value."""
        from .experiments import compare_runs

        return compare_runs(self, run_a, run_b, alpha=alpha)

    def clear_cache(self) -> int:
        """Delete every cached answer (the data folder's, or the team's Redis); returns how many there were.

        (``kit.run(exp, cache=False)`` bypasses the cache for one run; ``cache="refresh"`` re-sends and re-stores.)"""
        from .storage.cache import clear_cache

        return clear_cache(self.home, self.guard.url)

    def close(self) -> None:
        if self._memory is not None:
            self._memory.close()
        if self._ledger is not None:
            self._ledger.close()
        if self._text_log is not None:
            self._text_log.close()
        self.guard.close()
        if self.recorder.cache is not None:
            self.recorder.cache.close()

    def __enter__(self) -> Kit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return kit_text(self.status())

    def _repr_html_(self) -> str:
        return kit_html(self.status())



def _kit_class(cls: type[Kit], kwargs: dict[str, Any]) -> type[Kit]:
    """``Kit(server=...)``, or a plain ``Kit()`` with ``COGNITIONOS_SERVER`` set, is a client of
    the team server (``core.client_mode``): a ``ServedKit``, the same API served over HTTP."""
    if cls is not Kit or not served_by(kwargs):
        return cls
    from .client.served import ServedKit

    return ServedKit


# --- the module-level shortcuts: cognitionos_kit.complete(...) and friends ------------------------
_default: Kit | None = None


def default_kit() -> Kit:
    """The Kit behind the module-level shortcuts (created on first use)."""
    global _default
    if _default is None:
        _default = Kit()
    return _default


class _DefaultKitCalls:
    """``cognitionos_kit.complete`` etc.: the default Kit's calls, with their full signatures."""

    @takes_options
    def complete(self, prompt: Prompt, options: CallOptions) -> Completion:
        """``default_kit().complete(...)``."""
        return call(default_kit().planner, default_kit().send, prompt, options)

    @takes_options
    async def acomplete(self, prompt: Prompt, options: CallOptions) -> Completion:
        """``await default_kit().acomplete(...)``."""
        return await acall(default_kit().planner, default_kit().asend, prompt, options)

    @takes_options
    def stream(self, prompt: Prompt, options: CallOptions) -> Stream | TurnStream:
        """``default_kit().stream(...)``."""
        return open_stream(default_kit().planner, default_kit().recorder.record, prompt, options)


_calls = _DefaultKitCalls()
complete, acomplete, stream = _calls.complete, _calls.acomplete, _calls.stream
