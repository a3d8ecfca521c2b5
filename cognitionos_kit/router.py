"""Which model each provider gets: roles, an explicit model, and ``max_cost`` downgrades."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from .errors import CostLimitError, InvalidRequestError
from .pricing import PriceBook
from .types import ROLES

# Role -> model, per provider. Planner and critic get a larger model, executor and summarizer a
# fast, cheap one. Users override any entry with Kit(role_models={...}) or kit.set_role_model().
DEFAULT_ROLE_MODELS: dict[str, dict[str, str]] = {
    "openai": {"planner": "gpt-4.1", "executor": "gpt-4o-mini", "critic": "gpt-4.1", "summarizer": "gpt-4o-mini"},
    "anthropic": {
        "planner": "claude-sonnet-5-5",
        "executor": "claude-haiku-5-5",
        "critic": "claude-sonnet-5-5",
        "summarizer": "claude-haiku-5-5",
    },
    "simulated": {"planner": "sim-large", "executor": "sim-small", "critic": "sim-large", "summarizer": "sim-small"},
}

# Most capable first: max_cost walks down from the requested model until one fits.
DEFAULT_LADDERS: dict[str, list[str]] = {
    "openai": ["gpt-4.1", "gpt-4o", "gpt-4.1-mini", "gpt-4o-mini", "gpt-4.1-nano"],
    "anthropic": ["claude-opus-5", "claude-sonnet-5-5", "claude-haiku-5-5"],
    "simulated": ["sim-large", "sim-small", "sim-nano"],
}

DEFAULT_ROLE = "executor"


def provider_for_model(model: str) -> str | None:
    """The provider that serves a model name, from its prefix (None when it cannot tell)."""
    if ":" in model:
        prefix = model.split(":", 1)[0]
        if prefix in DEFAULT_ROLE_MODELS:
            return prefix
    m = model.lower()
    if m.startswith(("gpt-", "chatgpt-", "text-embedding-", "davinci", "babbage")) or (
        len(m) > 1 and m[0] == "o" and m[1].isdigit()
    ):
        return "openai"
    if m.startswith("claude-"):
        return "anthropic"
    if m.startswith("sim-"):
        return "simulated"
    return None


@dataclass(frozen=True)
class Route:
    provider: str
    model: str
    worst_case_usd: float | None = None


class Router:
    """Builds the ordered list of (provider, model) a request will try."""

    def __init__(self, prices: PriceBook, role_models: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.prices = prices
        self.role_models = {p: dict(m) for p, m in DEFAULT_ROLE_MODELS.items()}
        self.ladders = {p: list(m) for p, m in DEFAULT_LADDERS.items()}
        self.price_ids: dict[str, str] = {}  # provider name -> whose prices it uses
        for provider, table in (role_models or {}).items():
            for role, model in table.items():
                self.set_role_model(provider, role, model)

    def add_provider(self, name: str, like: str) -> None:
        """Register a provider instance that serves the same models as ``like`` (e.g. a second simulated one)."""
        self.price_ids[name] = like
        if like in self.role_models:
            self.role_models.setdefault(name, dict(self.role_models[like]))
            self.ladders.setdefault(name, list(self.ladders.get(like, [])))

    def set_role_model(self, provider: str, role: str, model: str) -> None:
        if role not in ROLES:
            raise InvalidRequestError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
        self.role_models.setdefault(provider, {})[role] = model
        ladder = self.ladders.setdefault(provider, [])
        if model not in ladder:
            ladder.insert(0, model)  # a user's model ranks first: they chose it for this role

    def model_for(self, provider: str, role: str | None) -> str:
        table = self.role_models.get(provider) or self.role_models["simulated"]
        return table.get(role or DEFAULT_ROLE) or table[DEFAULT_ROLE]

    def routes(
        self,
        providers: Sequence[str],
        *,
        role: str | None,
        model: str | None,
        max_cost: float | None = None,
        max_tokens: int,
        count_prompt: Callable[[str], int] | None = None,
        strict: bool = False,
    ) -> list[Route]:
        """The plan: one route per provider; with ``max_cost`` the best model that fits each.

        ``strict`` (the caller named the providers): a model whose provider is not among them is
        an error. Otherwise the other providers fall back to their model for the role.
        """
        model_provider = None
        bare_model = model
        if model:
            model_provider = provider_for_model(model)
            if model_provider and model.startswith(model_provider + ":"):
                bare_model = model.split(":", 1)[1]
            if strict and model_provider and model_provider not in providers:
                raise InvalidRequestError(
                    f"model {model!r} is served by {model_provider!r}, which is not in providers={list(providers)}; "
                    f"add {model_provider!r} to providers or choose one of their models"
                )
            if model_provider is None:
                model_provider = providers[0]  # a custom name, e.g. a local model behind OPENAI_BASE_URL
            if model_provider in providers:  # the model's own provider goes first, the chain follows
                providers = [model_provider] + [p for p in providers if p != model_provider]

        routes: list[Route] = []
        for p in providers:
            wanted = bare_model if (bare_model and p == model_provider) else self.model_for(p, role)
            if max_cost is None:
                routes.append(Route(p, wanted))
                continue
            fitted = self._fit(p, wanted, max_cost, max_tokens, count_prompt)
            if fitted:
                routes.append(fitted)
        if max_cost is not None and not routes:
            cheapest = []
            for p in providers:
                ladder = self.ladders.get(p) or [self.model_for(p, role)]
                m = ladder[-1]
                wc = self.prices.worst_case(self.price_ids.get(p, p), m, count_prompt(m) if count_prompt else 0, max_tokens)
                if wc is not None:
                    cheapest.append(f"{p}/{m} ${wc:.6f}")
            raise CostLimitError(
                f"no model fits max_cost=${max_cost:g} for this request (worst case = prompt tokens x input price "
                f"+ max_tokens={max_tokens} x output price). Cheapest options: {', '.join(cheapest) or 'none priced'}. "
                "Raise max_cost, lower max_tokens or shorten the prompt."
            )
        return routes

    def _fit(self, provider, wanted, max_cost, max_tokens, count_prompt) -> Route | None:
        ladder = self.ladders.get(provider, [])
        candidates = ladder[ladder.index(wanted):] if wanted in ladder else [wanted]
        for m in candidates:
            wc = self.prices.worst_case(self.price_ids.get(provider, provider), m, count_prompt(m) if count_prompt else 0, max_tokens)
            if wc is not None and wc <= max_cost:
                return Route(provider, m, wc)
        return None
