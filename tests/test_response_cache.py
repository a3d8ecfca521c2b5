"""The response cache on every call: the official SDKs against loopback servers, a real SQLite file
shared by processes, hits that cost nothing and say so, and nothing served that was not asked for."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest
from conftest import OPENAI_KEY

from cognitionos_kit import ConfigurationError, Experiment, InvalidRequestError, KitError

PROMPT = "Name one use of DuckDB"


def test_the_same_deterministic_call_twice_reaches_the_server_once(guards_backend, live_kit, openai_server):
    first = live_kit.complete(PROMPT, model="gpt-4o-mini", temperature=0, user_id="ann")
    again = live_kit.complete(PROMPT, model="gpt-4o-mini", temperature=0, user_id="ann")
    assert len(openai_server.requests) == 1  # the second call sent nothing
    assert not first.cache_hit and again.cache_hit and again.content == first.content
    assert again.cost_usd == 0.0 and again.saved_cost_usd == pytest.approx(first.cost_usd) and first.cost_usd > 0
    assert (again.provider, again.model, again.substituted) == ("openai", "gpt-4o-mini", False)
    assert "CACHED answer, saved $" in again.footer() and "CACHED answer" in repr(again)
    assert "cok-cached" in again._repr_html_()
    rows = live_kit.usage().sort_values("ts")
    assert rows.cache_hit.tolist() == [False, True] and rows.price_source.tolist()[1] == "cache"
    assert rows.iloc[1].cost_usd == 0 and rows.iloc[1].saved_cost_usd == pytest.approx(first.cost_usd)
    assert rows.iloc[1].user_id == "ann" and rows.iloc[1].request_id == again.request_id
    logged = live_kit.log(request_id=again.request_id).iloc[0]
    assert logged.answer == first.content and logged.prompt == PROMPT  # the hit is in the text log too


def test_streams_and_async_calls_are_served_too(guards_backend, live_kit, openai_server):
    first = live_kit.complete(PROMPT, model="gpt-4o-mini", seed=7)
    s = live_kit.stream(PROMPT, model="gpt-4o-mini", seed=7)
    assert "".join(s) == first.content and s.completion.cache_hit

    async def both():
        a = await live_kit.acomplete(PROMPT, model="gpt-4o-mini", seed=7)
        st = live_kit.astream(PROMPT, model="gpt-4o-mini", seed=7)
        chunks = [c async for c in st]
        return a, chunks, st.completion

    a, chunks, done = asyncio.run(both())
    assert a.cache_hit and "".join(chunks) == first.content and done.cache_hit
    assert len(openai_server.requests) == 1


def test_what_is_cached_by_default_and_how_to_choose(guards_backend, make_live_kit, openai_server, tmp_path):
    kit = make_live_kit(home=tmp_path / "a")
    kit.complete(PROMPT, model="gpt-4o-mini")
    kit.complete(PROMPT, model="gpt-4o-mini")  # no temperature 0, no seed: sampled, so asked again
    assert len(openai_server.requests) == 2
    kit.complete(PROMPT, model="gpt-4o-mini", cache=True)  # asked to: stored...
    assert kit.complete(PROMPT, model="gpt-4o-mini", cache=True).cache_hit  # ...and served
    assert len(openai_server.requests) == 3
    kit.complete(PROMPT, model="gpt-4o-mini", temperature=0, cache=False)  # asked not to: sent
    kit.complete(PROMPT, model="gpt-4o-mini", temperature=0, cache=False)
    assert len(openai_server.requests) == 5
    off = make_live_kit(home=tmp_path / "b", cache=False)
    off.complete(PROMPT, model="gpt-4o-mini", temperature=0)
    off.complete(PROMPT, model="gpt-4o-mini", temperature=0)
    assert len(openai_server.requests) == 7
    fresh = kit.complete(PROMPT, model="gpt-4o-mini", temperature=0, cache="refresh")  # sent, then stored
    assert not fresh.cache_hit and len(openai_server.requests) == 8
    assert kit.complete(PROMPT, model="gpt-4o-mini", temperature=0).cache_hit


def test_a_substitute_or_an_error_is_never_served_as_the_model_asked(guards_backend, live_kit, openai_server, anthropic_server):
    openai_server.enqueue_error(500, times=2)
    sub = live_kit.complete(PROMPT, temperature=0)  # openai fails: anthropic answers, as a substitute
    assert sub.substituted and sub.provider == "anthropic"
    again = live_kit.complete(PROMPT, temperature=0)  # openai is back: it is asked, not the cache
    assert not again.cache_hit and again.provider == "openai" and len(openai_server.requests) == 3
    openai_server.enqueue_error(400)
    with pytest.raises(KitError):
        live_kit.complete("a bad request", model="gpt-4o-mini", temperature=0)
    live_kit.complete("a bad request", model="gpt-4o-mini", temperature=0)  # the error was not stored
    assert len(openai_server.requests) == 5


def test_the_cache_is_shared_with_other_processes_and_with_experiments(guards_backend, make_live_kit, openai_server, tmp_path):
    home = tmp_path / "shared"
    kit = make_live_kit(home=home)
    first = kit.complete(PROMPT, model="gpt-4o-mini", temperature=0)
    code = (
        "import json, sys; from cognitionos_kit import Kit\n"
        "k = Kit(sys.argv[1], dotenv=False, providers=['openai'])\n"
        "r = k.complete(sys.argv[2], model='gpt-4o-mini', temperature=0)\n"
        "print(json.dumps([r.cache_hit, r.content]))\n"
    )
    env = {**os.environ, "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": openai_server.base_url,
           "COGNITIONOS_DOTENV": "0"}
    out = subprocess.run([sys.executable, "-c", code, str(home), PROMPT], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [True, first.content] and len(openai_server.requests) == 1
    exp = Experiment("shared-cache", [{"q": "What is DuckDB?"}], "{q}", ["gpt-4o-mini"],
                     settings={"temperature": [0.0]})
    kit.run(exp, progress=False)  # the run stores its answer (repeat 0)...
    sent = len(openai_server.requests)
    # ...which the same request then reads (a run's repeat k is sent with seed=k)
    hit = kit.complete("What is DuckDB?", model="gpt-4o-mini", temperature=0, seed=0)
    assert hit.cache_hit and len(openai_server.requests) == sent


def test_cache_ttl_lets_old_answers_expire(guards_backend, make_live_kit, openai_server):
    kit = make_live_kit(cache_ttl=0.3)
    kit.complete(PROMPT, model="gpt-4o-mini", temperature=0)
    assert kit.complete(PROMPT, model="gpt-4o-mini", temperature=0).cache_hit
    time.sleep(0.4)
    assert not kit.complete(PROMPT, model="gpt-4o-mini", temperature=0).cache_hit
    assert len(openai_server.requests) == 2


@pytest.mark.parametrize("value", ["always", 1, "yes"])
def test_bad_cache_settings_are_clear_errors(make_live_kit, value):
    with pytest.raises(ConfigurationError, match="cache must be"):
        make_live_kit(cache=value)
    kit = make_live_kit()
    with pytest.raises(InvalidRequestError, match="cache must be"):
        kit.complete(PROMPT, cache=value)
    with pytest.raises(ConfigurationError, match="cache_ttl"):
        make_live_kit(cache_ttl=-1)
