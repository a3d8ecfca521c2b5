"""What a call costs: genai-prices' bundled snapshot, plus prices users add or override.

genai-prices is used offline: its bundled data snapshot, never its auto-update.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..core.config import PriceOverride
from ..core.errors import warn_user
from ..core.types import Usage
from ..core.validation import check_number, check_text

__all__ = ["Price", "PriceBook", "CostEstimate", "UnknownPriceWarning"]


class UnknownPriceWarning(UserWarning):
    """A model has no known price: its cost is recorded as NULL, not 0."""


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input_mtok: float
    output_mtok: float
    cache_read_mtok: float | None = None  # defaults to the input price
    cache_write_mtok: float | None = None  # defaults to the input price
    tiered: bool = False  # long-context tiers: genai-prices computes the exact cost

    def cost(self, usage: Usage) -> float:
        cached, written = usage.cached_tokens, usage.cache_write_tokens
        fresh = max(usage.prompt_tokens - cached - written, 0)
        read_p = self.input_mtok if self.cache_read_mtok is None else self.cache_read_mtok
        write_p = self.input_mtok if self.cache_write_mtok is None else self.cache_write_mtok
        return (
            fresh * self.input_mtok
            + cached * read_p
            + written * write_p
            + usage.completion_tokens * self.output_mtok
        ) / 1_000_000


@dataclass(frozen=True)
class CostEstimate:
    cost_usd: float | None
    source: str  # "genai-prices", "custom", "simulated" or "unknown"
    version: str | None


# The simulated provider's models carry nominal prices mirroring the real models they stand in
# for, so budgets, max_cost and spend charts behave offline as they will online. Rows stay
# labelled provider="simulated" and price_source="simulated".
# Cache writes at 1.25x input, as Anthropic charges, so the simulated prompt cache shows both signs.
SIMULATED_PRICES = {
    "sim-large": Price(2.0, 8.0, 0.5, 2.5),  # like gpt-4.1
    "sim-small": Price(0.15, 0.60, 0.075, 0.1875),  # like gpt-4o-mini
    "sim-nano": Price(0.10, 0.40, 0.025, 0.125),  # like gpt-4.1-nano
}


@lru_cache(maxsize=1)
def genai_prices_version() -> str:
    from importlib.metadata import version

    return f"genai-prices {version('genai-prices')} (bundled snapshot)"


class PriceBook:
    """Looks up prices: custom overrides first, then genai-prices, else unknown (NULL cost)."""

    def __init__(self) -> None:
        self._custom: dict[tuple[str | None, str], Price] = {}
        self._warned: set[tuple[str, str]] = set()
        # a named endpoint -> whose genai-prices table prices it (None: none, its calls are unpriced)
        self.tables: dict[str, str | None] = {}
        # (endpoint, served name) -> the model it is priced as (an Azure deployment -> "gpt-4o-mini")
        self.aliases: dict[tuple[str, str], str] = {}

    def _table(self, provider: str) -> str | None:
        return self.tables[provider] if provider in self.tables else provider

    def _genai_ref(self, provider: str, model: str) -> tuple[str, str]:
        """(genai-prices provider id, model) to ask about: an endpoint's table, a deployment's model."""
        return self._table(provider) or provider, self.aliases.get((provider, model), model)

    def override(self, o: PriceOverride) -> None:
        """Set a price from ``kit.set_price`` (checked: a model name, non-negative USD per million)."""
        check_text(o.model, "model")
        for label in ("input_per_mtok", "output_per_mtok", "cached_input_per_mtok", "cache_write_per_mtok"):
            v = getattr(o, label)
            if v is not None or not label.startswith("cache"):
                check_number(v, f"{label} (USD per million tokens)", minimum=0)
        self.set_price(o.model, Price(float(o.input_per_mtok), float(o.output_per_mtok), o.cached_input_per_mtok,
                                      o.cache_write_per_mtok), o.provider)

    def overrides(self) -> tuple[PriceOverride, ...]:
        """The prices set with ``override``/``set_price``, as a ``KitConfig`` holds them."""
        return tuple(PriceOverride(p, m, v.input_mtok, v.output_mtok, v.cache_read_mtok, v.cache_write_mtok)
                     for (p, m), v in self._custom.items())

    def set_price(self, model: str, price: Price, provider: str | None = None) -> None:
        self._custom[(provider, model)] = price

    def _custom_price(self, provider: str, model: str) -> Price | None:
        return self._custom.get((provider, model)) or self._custom.get((None, model))

    def price(self, provider: str, model: str) -> tuple[Price | None, str, str | None]:
        """The per-million price of a model, with its source and version."""
        custom = self._custom_price(provider, model)
        if custom:
            return custom, "custom", None
        if provider == "simulated":
            p = SIMULATED_PRICES.get(model)
            return p, ("simulated" if p else "unknown"), None
        mp = _genai_model_price(*self._genai_ref(provider, model)) if self._table(provider) else None
        if mp is None:
            return None, "unknown", None
        return mp, "genai-prices", genai_prices_version()

    def cost(self, provider: str, model: str, usage: Usage) -> CostEstimate:
        """Cost of ``usage``; NULL and a warning (once per model) when the price is unknown."""
        price, source, version = self.price(provider, model)
        if price is not None and price.tiered and source == "genai-prices":
            # genai-prices' own calculation is exact but much slower than Price.cost (it matches the
            # model against its data and builds a result object each time): only for tiered prices
            # (measured by benchmarks/bench_choices.py; figures in the README)
            exact = _genai_cost(*self._genai_ref(provider, model), usage)
            if exact is not None:
                return CostEstimate(exact, source, version)
        if price is None:
            if (provider, model) not in self._warned:
                self._warned.add((provider, model))
                warn_user(
                    f"no price known for {provider}/{model}: its cost is recorded as NULL. "
                    f"Add one with kit.set_price({model!r}, input_per_mtok=..., output_per_mtok=..."
                    + (f", provider={provider!r}" if provider in self.tables else "") + ").",
                    UnknownPriceWarning)
            return CostEstimate(None, "unknown", None)
        return CostEstimate(price.cost(usage), source, version)

    def batch_cost(self, provider: str, model: str, usage: Usage) -> CostEstimate:
        """Cost of ``usage`` sent through a provider's batch API: genai-prices' own batch price when
        its data has one (``price_source`` "genai-prices batch"); otherwise the standard price halved
        by hand, as both OpenAI and Anthropic bill batches at 50% ("... batch 50%")."""
        price, source, version = self.price(provider, model)
        if source == "genai-prices":
            exact = _genai_batch_cost(*self._genai_ref(provider, model), usage)
            if exact is not None:
                return CostEstimate(exact, "genai-prices batch", version)
        std = self.cost(provider, model, usage)
        if std.cost_usd is None:
            return std
        return CostEstimate(std.cost_usd * 0.5, f"{std.source} batch 50%", std.version)  # hand-applied discount

    def worst_case(self, provider: str, model: str, prompt_tokens: int, max_tokens: int) -> float | None:
        """Upper bound before the call: every prompt token at the input price, max_tokens out
        (at the long-context tier's price when the prompt reaches it)."""
        price, source, _ = self.price(provider, model)
        if price is None:
            return None
        if price.tiered and source == "genai-prices":
            exact = _genai_cost(*self._genai_ref(provider, model),
                                Usage(prompt_tokens=prompt_tokens, completion_tokens=max_tokens))
            if exact is not None:
                return exact
        return (prompt_tokens * price.input_mtok + max_tokens * price.output_mtok) / 1_000_000


def table_for_url(base_url: str) -> str | None:
    """The genai-prices provider whose API lives at ``base_url`` (its ``api_pattern``), or None
    (a local server, or one genai-prices does not know)."""
    from genai_prices import data_snapshot

    try:
        return str(data_snapshot.get_snapshot().find_provider(None, None, base_url).id)
    except LookupError:
        return None


def genai_lookup(provider: str, model: str) -> Any:
    """genai-prices' price calculation for one million tokens in and out (None: unknown model)."""
    from genai_prices import Usage as GUsage
    from genai_prices import calc_price

    try:
        return calc_price(GUsage(input_tokens=1_000_000, output_tokens=1_000_000), model_ref=model, provider_id=provider)
    except LookupError:
        return None


@lru_cache(maxsize=512)
def _genai_model_price(provider: str, model: str) -> Price | None:
    calc = genai_lookup(provider, model)
    if calc is None:
        return None
    mp = calc.model_price

    tiered = False

    def num(v: Any) -> float | None:
        nonlocal tiered
        if v is None:
            return None
        if hasattr(v, "base"):  # tiered prices (e.g. long-context Claude) expose a base price
            tiered = True
            return float(v.base)
        return float(v)

    return Price(
        input_mtok=num(mp.input_mtok) or 0.0,
        output_mtok=num(mp.output_mtok) or 0.0,
        cache_read_mtok=num(mp.cache_read_mtok),
        cache_write_mtok=num(mp.cache_write_mtok),
        tiered=tiered,
    )


def _genai_cost(provider: str, model: str, usage: Usage) -> float | None:
    """Exact cost by genai-prices itself (tiers included); None when it does not know the model."""
    from genai_prices import Usage as GUsage
    from genai_prices import calc_price

    try:
        calc = calc_price(
            GUsage(
                input_tokens=usage.prompt_tokens,
                output_tokens=usage.completion_tokens,
                cache_read_tokens=usage.cached_tokens or None,
                cache_write_tokens=usage.cache_write_tokens or None,
            ),
            model_ref=model,
            provider_id=provider,
        )
    except LookupError:
        return None
    return float(calc.total_price)


def _genai_batch_cost(provider: str, model: str, usage: Usage) -> float | None:
    """genai-prices' batch price (its ``processing: batch`` price variant), or None when its data
    has no batch variant for the model now."""
    from datetime import datetime, timezone

    from genai_prices import Usage as GUsage
    from genai_prices import calc_price

    context = {"processing": "batch"}
    try:
        calc = calc_price(
            GUsage(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens,
                   cache_read_tokens=usage.cached_tokens or None, cache_write_tokens=usage.cache_write_tokens or None),
            model_ref=model, provider_id=provider, price_context=context)
    except LookupError:
        return None
    now = datetime.now(timezone.utc)
    known = any(v.when == context and (v.constraint is None or v.constraint.active(now))
                for v in calc.model.price_variants or ())
    return float(calc.total_price) if known else None
