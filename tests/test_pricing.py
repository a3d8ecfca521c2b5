"""Cost from genai-prices at the response's usage: cache reads and writes, tiers, and the price
source and version each ledger row carries."""

from __future__ import annotations

import copy
import math
from importlib.metadata import version

import pandas as pd
import pytest
from genai_prices import Usage as GUsage
from genai_prices import calc_price
from loopback import load_fixtures

from cognitionos_kit import CostLimitError

ANTHROPIC = next(e for e in load_fixtures("anthropic", "/v1/messages", stream=False, tools=False, status=200)
                 if e["request"]["model"] == "claude-sonnet-4-5")
OPENAI = next(e for e in load_fixtures("openai", "/v1/chat/completions", stream=False, tools=False, status=200)
              if e["request"]["model"].startswith("gpt-4o"))


def _genai(provider, model, inp, out, read=None, write=None) -> float:
    u = GUsage(input_tokens=inp, output_tokens=out, cache_read_tokens=read, cache_write_tokens=write)
    return float(calc_price(u, model_ref=model, provider_id=provider).total_price)


def test_anthropic_cache_reads_and_writes_are_counted_and_priced(live_kit, anthropic_server):
    entry = copy.deepcopy(ANTHROPIC)
    entry["response"]["json"]["usage"].update(input_tokens=120, cache_creation_input_tokens=3000,
                                              cache_read_input_tokens=800, output_tokens=19)
    anthropic_server.enqueue(entry)
    r = live_kit.complete("summarise the cached document", model="claude-sonnet-4-5", providers=["anthropic"])
    assert (r.prompt_tokens, r.cached_tokens, r.cache_write_tokens, r.completion_tokens) == (3920, 800, 3000, 19)
    expected = _genai("anthropic", "claude-sonnet-4-5", 3920, 19, read=800, write=3000)
    assert r.cost_usd == pytest.approx(expected, rel=1e-9)
    # the write and read prices matter: all 3920 at the plain input price would be another number
    assert not math.isclose(expected, _genai("anthropic", "claude-sonnet-4-5", 3920, 19), rel_tol=1e-3)
    row = live_kit.usage(request_id=r.request_id).iloc[0]
    assert (int(row.prompt_tokens), int(row.cached_tokens), int(row.cache_write_tokens)) == (3920, 800, 3000)
    assert row.cost_usd == pytest.approx(expected, rel=1e-9)


def test_openai_cached_input_is_priced_at_the_cache_price(live_kit, openai_server):
    entry = copy.deepcopy(OPENAI)
    model = entry["request"]["model"]
    entry["response"]["json"]["usage"].update(prompt_tokens=2048, completion_tokens=10,
                                              prompt_tokens_details={"cached_tokens": 1536})
    openai_server.enqueue(entry)
    r = live_kit.complete("again, with the long shared prefix", model=model, providers=["openai"])
    assert (r.prompt_tokens, r.cached_tokens, r.completion_tokens) == (2048, 1536, 10)
    assert r.cost_usd == pytest.approx(_genai("openai", model, 2048, 10, read=1536), rel=1e-9)
    assert r.cost_usd < _genai("openai", model, 2048, 10)


def test_each_row_records_its_price_source_and_version(live_kit):
    live_kit.complete("priced by genai-prices", providers=["openai"], user_id="p")
    live_kit.complete("priced by the simulated table", providers=["simulated"], user_id="p")
    live_kit.set_price("my-finetune", input_per_mtok=1.0, output_per_mtok=2.0, provider="openai")
    live_kit.complete("priced by the user", model="my-finetune", providers=["openai"], user_id="p")
    with pytest.warns(UserWarning, match="no price known for openai/mystery-model"):
        live_kit.complete("priced by nobody", model="mystery-model", providers=["openai"], user_id="p")
    rows = live_kit.usage(user_id="p").sort_values("ts")
    assert list(rows.price_source) == ["genai-prices", "simulated", "custom", "unknown"]
    assert rows.iloc[0].price_version == f"genai-prices {version('genai-prices')} (bundled snapshot)"
    assert rows.iloc[1:].price_version.isna().all()
    assert rows.iloc[2].cost_usd > 0 and rows.iloc[3].cost_usd is pd.NA  # unknown is NULL, never 0


def test_max_cost_uses_the_long_context_tier(live_kit, anthropic_server):
    """claude-haiku-5-5 costs 5x more per input token above its long-context threshold: a
    worst case at the base price would let this request through and then cost more than max_cost."""
    prompt = "lorem " * 150_000
    n = live_kit.count_tokens(prompt, model="claude-haiku-5-5")["anthropic"]["prompt_tokens"]
    assert n > 140_000
    worst = live_kit.prices.worst_case("anthropic", "claude-haiku-5-5", n, 1000)
    assert worst == pytest.approx(_genai("anthropic", "claude-haiku-5-5", n, 1000), rel=1e-9)
    price, _, _ = live_kit.prices.price("anthropic", "claude-haiku-5-5")
    base = (n * price.input_mtok + 1000 * price.output_mtok) / 1e6  # the base tier, for the same usage
    assert worst > 3 * base
    with pytest.raises(CostLimitError, match="no model fits"):
        live_kit.complete(prompt, model="claude-haiku-5-5", providers=["anthropic"], max_tokens=1000,
                          max_cost=2 * base)
    assert len(anthropic_server.requests) == 0 and len(live_kit.usage()) == 0
