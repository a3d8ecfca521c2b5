"""Which model each provider gets: roles, an explicit model, and ``max_cost`` downgrades."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from ..core.errors import ConfigurationError, CostLimitError, InvalidRequestError
from ..core.types import ROLES
from .catalogue import DEFAULT_LADDERS, DEFAULT_ROLE, DEFAULT_ROLE_MODELS, context_window, provider_for_model
from .pricing import PriceBook

if TYPE_CHECKING:
    from .discovery import ModelDirectory

__all__ = ["Route", "Plan", "Router", "split_model", "provider_for_model", "DEFAULT_ROLE"]

class Route(NamedTuple):  # a NamedTuple: built on every call, and cheaper to build than a frozen dataclass
    # (measured by benchmarks/bench_choices.py; figures in the README)
    provider: str
    model: str
    explicit: bool = False  # the user named this model (or mapped it as an equivalent)


class Plan(NamedTuple):
    """What a call asked for (``requested``) and the routes it will try, in order."""

    requested: Route
    routes: list[Route]


def split_model(model: str) -> tuple[str | None, str]:
    """``"anthropic:claude-x"`` -> ("anthropic", "claude-x"); a plain name -> (its provider or None, name)."""
    provider = provider_for_model(model)
    if provider and model.startswith(provider + ":"):
        return provider, model.split(":", 1)[1]
    return provider, model


class Router:
    """Builds the ordered list of (provider, model) a request will try."""

    def __init__(self, prices: PriceBook, role_models: Mapping[str, Mapping[str, str]] | None = None,
                 fallback_models: Mapping[str, str | Sequence[str]] | None = None,
                 directory: ModelDirectory | None = None) -> None:
        self.prices = prices
        # the named endpoints' models (calls.discovery): their names prefix models ("local:qwen")
        self.directory = directory
        self.endpoints: tuple[str, ...] = directory.names if directory is not None else ()
        self._warned_roles: set[tuple[str, tuple[str, ...]]] = set()
        # an endpoint (even one called "openai": a keyless OPENAI_BASE_URL) has no default models
        self.role_models = {p: dict(m) for p, m in DEFAULT_ROLE_MODELS.items() if p not in self.endpoints}
        self.ladders = {p: list(m) for p, m in DEFAULT_LADDERS.items() if p not in self.endpoints}
        self.price_ids: dict[str, str] = {}  # provider name -> whose models and prices it uses
        self.fallback_models: dict[str, list[str]] = {}
        self.user_role_models: dict[str, dict[str, str]] = {}  # set by the user, in order (KitConfig keeps them)
        for provider, table in (role_models or {}).items():
            for role, model in table.items():
                self.set_role_model(provider, role, model)
        for model, equivalents in (fallback_models or {}).items():
            self.set_fallback_models(model, equivalents)

    def add_provider(self, name: str, like: str) -> None:
        """Register a provider instance that serves the same models as ``like`` (e.g. a second simulated one)."""
        self.price_ids[name] = like
        if like in self.role_models:
            self.role_models.setdefault(name, dict(self.role_models[like]))
            self.ladders.setdefault(name, list(self.ladders.get(like, [])))

    def set_role_model(self, provider: str, role: str, model: str) -> None:
        if role not in ROLES:
            raise InvalidRequestError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
        if not isinstance(model, str) or not model.strip():
            raise InvalidRequestError(f"role_models[{provider!r}][{role!r}] must be a model name, got {model!r}")
        self.role_models.setdefault(provider, {})[role] = model
        self.user_role_models.setdefault(provider, {})[role] = model
        ladder = self.ladders.setdefault(provider, [])
        if model not in ladder:
            ladder.insert(0, model)  # a user's model ranks first: they chose it for this role

    def assign(self, role: str, model: str, provider: str | None, chain: Sequence[str],
               check_name: Callable[[str], str]) -> None:
        """``kit.set_role_model``: the provider is the one named, the model's prefix, else the
        one serving it (its vendor, or the one endpoint listing it)."""
        prefix, bare = self.split(model)
        provider = provider or (prefix if prefix in self.endpoints else self.owner(model, chain))
        if provider is None:
            raise InvalidRequestError(f"cannot tell which provider serves {model!r}: pass provider=")
        self.set_role_model(check_name(provider), role, bare if prefix == provider else model)

    def set_fallback_models(self, model: str, equivalents: str | Sequence[str]) -> None:
        """Let ``model`` fall back to these models (at whichever providers serve them)."""
        items = [equivalents] if isinstance(equivalents, str) else list(equivalents) if isinstance(
            equivalents, (list, tuple)) else None
        if not isinstance(model, str) or not model.strip() or items is None or not items or not all(
                isinstance(m, str) and m.strip() for m in items):
            raise InvalidRequestError(
                f"fallback_models maps a model name to an equivalent model name or a list of them, e.g. "
                f"{{'gpt-4o-mini': 'claude-haiku-5-5'}}; got {model!r}: {equivalents!r}"
            )
        for m in items:
            if self.split(m)[0] is None and not self.listed_by(m):
                raise InvalidRequestError(
                    f"fallback_models[{model!r}]: cannot tell which provider serves {m!r}; write it as 'provider:model'"
                )
        self.fallback_models[model] = items

    def split(self, model: str) -> tuple[str | None, str]:
        """``split_model``, knowing the named endpoints too: ``"local:qwen2.5:7b"`` -> ("local", "qwen2.5:7b")."""
        if self.endpoints and ":" in model:
            prefix, rest = model.split(":", 1)
            if prefix in self.endpoints:
                return prefix, rest
        return split_model(model)

    def listed_by(self, model: str, among: Sequence[str] | None = None) -> list[str]:
        """The endpoints (among ``among``) whose model list has ``model`` (asking them if needed)."""
        if self.directory is None:
            return []
        names = [p for p in (self.endpoints if among is None else among) if p in self.endpoints]
        return self.directory.owners(model, names) if names else []

    def owner(self, model: str, among: Sequence[str]) -> str | None:
        """Who serves ``model`` for a caller whose providers are ``among``: its prefix, else the one
        endpoint listing it; None when nothing can tell (see ``_explicit`` for ambiguity)."""
        provider, bare = self.split(model)
        if provider is not None and (provider in self.endpoints or any(self.serves(p, provider) for p in among)):
            return provider
        listed = self.listed_by(bare, among)
        return listed[0] if len(listed) == 1 else provider

    def serves(self, provider: str, model_provider: str) -> bool:
        """Does ``provider`` serve ``model_provider``'s models (itself, or an instance registered like it)?"""
        return provider == model_provider or self.price_ids.get(provider) == model_provider

    def model_for(self, provider: str, role: str | None) -> str | None:
        """The model ``provider`` gets for ``role``. A named endpoint gets only what was mapped for
        it (its executor model for any role not mapped), or its one model when it lists exactly
        one; else None: it has no model for the role (never another vendor's model name)."""
        if provider in self.endpoints:
            table = self.role_models.get(provider) or {}
            chosen = table.get(role or DEFAULT_ROLE) or table.get(DEFAULT_ROLE)
            if chosen is None and self.directory is not None:
                models = self.directory.models(provider)
                chosen = models[0] if len(models) == 1 else None
            return chosen
        table = self.role_models.get(provider) or self.role_models["simulated"]
        return table.get(role or DEFAULT_ROLE) or table[DEFAULT_ROLE]

    def plan(
        self,
        providers: Sequence[str],
        *,
        role: str | None,
        model: str | None,
        max_cost: float | None = None,
        max_tokens: int,
        count_prompt: Callable[[str], int] | None = None,
        strict: bool = False,
        simulators: Sequence[str] = ("simulated",),
    ) -> Plan:
        """What the call asks for and the routes to try.

        A role (or nothing) gives one route per provider, each with its model for the role:
        cross-vendor fallback. A named ``model`` gives the providers that serve it, then its
        equivalents from ``fallback_models``, then a simulator only when one is in ``providers``
        (simulation mode, listed, or ``simulate_on_failure``): never another vendor's model
        unasked. ``strict`` (the caller named the providers): a model whose provider is not among
        them is an error. With ``max_cost`` each route walks down its provider's ladder to the
        most capable model that fits.
        """
        if model:
            requested, wanted = self._explicit(providers, model, role, strict, simulators)
        else:
            wanted = self._by_role(providers, role)
            requested = wanted[0]
        if max_cost is None:
            return Plan(requested, wanted)
        routes = []
        for r in wanted:
            fitted = self._fit(r.provider, r.model, max_cost, max_tokens, count_prompt)
            if fitted:
                routes.append(Route(fitted.provider, fitted.model, r.explicit))
        if not routes:
            cheapest = []
            for r in wanted:
                ladder = self.ladders.get(r.provider) or [r.model]
                m = ladder[-1] if r.model in ladder else r.model
                wc = self.prices.worst_case(self.price_ids.get(r.provider, r.provider), m,
                                            count_prompt(m) if count_prompt else 0, max_tokens)
                if wc is not None:
                    cheapest.append(f"{r.provider}/{m} ${wc:.6f}")
            raise CostLimitError(
                f"no model fits max_cost=${max_cost:g} for this request (worst case = prompt tokens x input price "
                f"+ max_tokens={max_tokens} x output price). Cheapest options: {', '.join(cheapest) or 'none priced'}. "
                "Raise max_cost, lower max_tokens or shorten the prompt."
            )
        return Plan(requested, routes)

    def _by_role(self, providers: Sequence[str], role: str | None) -> list[Route]:
        """One route per provider with a model for ``role``; an endpoint without one is left out
        (warned once), and a chain where none has one is an error saying how to map one."""
        routes, missing = [], []
        for p in providers:
            m = self.model_for(p, role)
            if m is None:
                missing.append(p)
            else:
                routes.append(Route(p, m))
        if missing:
            from ..core.errors import KitWarning, warn_user

            what = role or DEFAULT_ROLE
            fix = "; ".join(self._listed_text(p) for p in missing)
            example = f"Kit(role_models={{{missing[0]!r}: {{{what!r}: 'MODEL'}}}})"
            if not routes:
                raise ConfigurationError(
                    f"no model for role {what!r} at {', '.join(missing)}: an endpoint is sent only models mapped for it "
                    f"({fix}). Map one with {example} or kit.set_role_model({what!r}, 'MODEL', provider={missing[0]!r}), "
                    f"or name the model: model='{missing[0]}:MODEL'")
            if (key := (what, tuple(missing))) not in self._warned_roles:
                self._warned_roles.add(key)
                warn_user(f"role {what!r} has no model at {', '.join(missing)} ({fix}): left out of role calls' "
                          f"fallback chain; map one with {example}", KitWarning)
        return routes

    def _listed_text(self, endpoint: str) -> str:
        listing = self.directory.listing(endpoint) if self.directory is not None else None
        if listing is None or listing.error:
            return f"{endpoint}'s model list could not be read ({listing.error if listing else 'no directory'})"
        shown = ", ".join(listing.models[:6]) + (", ..." if len(listing.models) > 6 else "")
        return f"{endpoint} lists {shown or 'no models'}"

    def _explicit(self, providers: Sequence[str], model: str, role: str | None, strict: bool,
                  simulators: Sequence[str]) -> tuple[Route, list[Route]]:
        model_provider, bare = self.split(model)
        if model_provider is None or (model_provider not in self.endpoints
                                      and not any(self.serves(p, model_provider) for p in providers)):
            listed = self.listed_by(bare, providers)  # a plain name the chain's endpoints list
            if len(listed) > 1:
                raise InvalidRequestError(
                    f"model {bare!r} is listed by {' and '.join(listed)}: say which, e.g. model='{listed[0]}:{bare}'")
            if listed:
                model_provider = listed[0]
        if model_provider in self.endpoints and model_provider not in providers:
            if strict:
                raise InvalidRequestError(f"model {model!r} is served by endpoint {model_provider!r}, which is not in "
                                          f"providers={list(providers)}: add it, or leave providers= out")
            raise ConfigurationError(f"endpoint {model_provider!r} is not configured (its key variable is not set): "
                                     f"see kit.status()['providers'][{model_provider!r}]")
        if strict and model_provider and not any(self.serves(p, model_provider) for p in providers):
            raise InvalidRequestError(
                f"model {model!r} is served by {model_provider!r}, which is not in providers={list(providers)}; "
                f"add {model_provider!r} to providers or choose one of their models"
            )
        if model_provider is None:  # a custom name, e.g. a local model behind OPENAI_BASE_URL
            model_provider = next((p for p in providers if p not in simulators and p not in self.endpoints),
                                  next((p for p in providers if p not in simulators), providers[0]))
        requested = Route(model_provider, bare, explicit=True)
        routes = [Route(p, bare, explicit=True) for p in providers if self.serves(p, model_provider)]
        for eq in self.fallback_models.get(model) or self.fallback_models.get(bare) or ():
            eq_provider, eq_bare = self.split(eq)
            if eq_provider is None and (owners := self.listed_by(eq_bare, providers)):
                eq_provider = owners[0]
            for p in providers:
                if eq_provider and self.serves(p, eq_provider) and all(
                        (r.provider, r.model) != (p, eq_bare) for r in routes):
                    routes.append(Route(p, eq_bare, explicit=True))
        if model_provider not in simulators:
            routes += [Route(p, m) for p in providers
                       if p in simulators and all(r.provider != p for r in routes) and (m := self.model_for(p, role))]
        if not routes:
            raise ConfigurationError(
                f"model {model!r} is served by {model_provider}, which is not configured here "
                f"(the chain is {list(providers)}): set {model_provider.upper()}_API_KEY, map it to a model you can "
                f"use with Kit(fallback_models={{{bare!r}: '...'}}), or pass role=... to let the kit choose a model"
            )
        return requested, routes

    def models(self, provider: str) -> dict[str, list[str]]:
        """The models ``provider`` is routed to (role models, then its ``max_cost`` ladder; an
        endpoint's listed models), each with the roles it serves."""
        table = dict(self.role_models.get(provider, {}))
        listed: tuple[str, ...] = ()
        if provider in self.endpoints and self.directory is not None:
            listed = self.directory.models(provider)
            table = {r: m for r in ROLES if (m := self.model_for(provider, r))}
        seen = dict.fromkeys(list(table.values()) + self.ladders.get(provider, []) + list(listed))
        return {m: [r for r, mm in table.items() if mm == m] for m in seen}

    def model_rows(self, providers: Sequence[str], price_ids: Mapping[str, str]) -> list[dict[str, object]]:
        """One row per model the providers are routed to: roles, context window and price."""
        rows: list[dict[str, object]] = []
        for p in providers:
            pid = price_ids.get(p, p)
            models = self.models(p)
            listing = self.directory.cached(p) if self.directory is not None and p in self.endpoints else None
            if listing is not None and not models:
                rows.append({"provider": p, "model": None, "roles": "", "context_window": None, "input_per_mtok": None,
                             "output_per_mtok": None, "price_source": None, "listed_by": listing.source})
            for m, roles in models.items():
                price, source, _ = self.prices.price(pid, m)
                window = context_window(pid, m) or (self.directory.context_window(p, m) if listing and self.directory else None)
                rows.append({"provider": p, "model": m, "roles": ", ".join(roles), "context_window": window,
                             "input_per_mtok": price.input_mtok if price else None,
                             "output_per_mtok": price.output_mtok if price else None, "price_source": source,
                             "listed_by": (listing.source if listing and m in listing.models else
                                           "role_models" if listing else "catalogue")})
        return rows

    def routes(self, providers: Sequence[str], **kw: object) -> list[Route]:
        """The routes alone (see :meth:`plan`)."""
        return self.plan(providers, **kw).routes  # type: ignore[arg-type]

    def _fit(self, provider: str, wanted: str, max_cost: float, max_tokens: int,
             count_prompt: Callable[[str], int] | None) -> Route | None:
        ladder = self.ladders.get(provider, [])
        candidates = ladder[ladder.index(wanted):] if wanted in ladder else [wanted]
        for m in candidates:
            prompt = count_prompt(m) if count_prompt else 0
            wc = self.prices.worst_case(self.price_ids.get(provider, provider), m, prompt, max_tokens)
            if wc is not None and wc <= max_cost:
                return Route(provider, m)
        return None
