"""Rate limits per user, provider and model, kept across processes: requests timed where they
arrive (the loopback server), through the official SDK, with a real guards file."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import warnings

import pandas as pd
import pytest
from conftest import OPENAI_KEY

from cognitionos_kit import InvalidRequestError, Kit, LatencyModel, RateLimitExceededError
from cognitionos_kit.guards import RateLimitWarning

_WORKER = """
import sys
from cognitionos_kit import Kit
kit = Kit(sys.argv[1], dotenv=False, providers=["openai"])
kit.complete("warm up", model="gpt-4.1-mini")  # SDK set-up and first-use imports: not under the limit
for i in range(int(sys.argv[3])):
    kit.complete(f"worker {sys.argv[2]} call {i}", model="gpt-4o-mini")
"""


def test_a_provider_limit_holds_across_two_processes(guards_backend, tmp_path, openai_server):
    kit = Kit(tmp_path, dotenv=False)
    rpm = 300  # one request every 0.2 s
    kit.set_rate_limit(provider="openai", model="gpt-4o-mini", rpm=rpm)
    env = {**os.environ, "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": openai_server.base_url,
           "COGNITIONOS_DOTENV": "0"}
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path), str(n), "4"], env=env,
                              stderr=subprocess.PIPE, text=True) for n in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    times = sorted(r.received_at for r in openai_server.requests if r.body["model"] == "gpt-4o-mini")
    assert len(times) == 8
    gaps = [b - a for a, b in zip(times, times[1:])]
    # evenly spaced (unlimited, the two processes send side by side, milliseconds apart); half a
    # slot of slack for a loaded machine's delay between a slot and the request's arrival
    assert min(gaps) >= 60 / rpm / 2, gaps
    assert times[-1] - times[0] >= 7 * 60 / rpm - 0.1  # so no minute holds more than the limit


def test_a_user_limit_waits_in_async_calls_without_blocking_the_loop(guards_backend, tmp_path):
    kit = Kit(tmp_path, dotenv=False, simulated_latency=LatencyModel(scale=0))
    kit.set_rate_limit(user_id="ann", rpm=600)  # every 0.1 s

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.create_task(ticker())
        t0 = time.perf_counter()
        await asyncio.gather(*(kit.acomplete(f"q{i}", user_id="ann") for i in range(6)))
        took = time.perf_counter() - t0
        t.cancel()
        return took, ticks

    took, ticks = asyncio.run(main())
    assert took >= 0.45  # six calls, 0.1 s apart
    assert ticks >= 20  # the event loop ran while the calls waited
    t0 = time.perf_counter()
    kit.complete("bob is not limited", user_id="bob")
    kit.complete("bob is not limited", user_id="bob")
    assert time.perf_counter() - t0 < 0.5


def test_raise_refuses_before_sending_and_says_how_long(guards_backend, tmp_path, openai_server, make_live_kit):
    kit = make_live_kit(home=tmp_path / "h")
    kit.set_rate_limit(model="gpt-4o-mini", rpm=6, policy="raise")
    kit.complete("first", model="gpt-4o-mini")
    with pytest.raises(RateLimitExceededError) as info:
        kit.complete("second", model="gpt-4o-mini")
    assert 0 < info.value.wait_s <= 10 and "6 requests per minute for model 'gpt-4o-mini'" in str(info.value)
    assert len(openai_server.requests) == 1 and len(kit.usage()) == 1  # nothing sent, nothing recorded


def test_a_tokens_per_minute_limit_counts_prompt_and_max_tokens(guards_backend, tmp_path):
    kit = Kit(tmp_path, dotenv=False, simulated_latency=LatencyModel(scale=0))
    kit.set_rate_limit(tpm=60_000, policy="raise")  # a token a millisecond
    kit.complete("short", max_tokens=1000)  # books about one second
    with pytest.raises(RateLimitExceededError) as info:
        kit.complete("short", max_tokens=1000)
    assert 0.8 < info.value.wait_s < 1.2


def test_long_waits_are_announced_and_limits_are_listed(guards_backend, tmp_path):
    kit = Kit(tmp_path, dotenv=False, simulated_latency=LatencyModel(scale=0))
    kit.set_rate_limit(user_id="ann", provider="simulated", rpm=50)  # 1.2 s apart
    kit.complete("one", user_id="ann")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kit.complete("two", user_id="ann")
    notes = [str(w.message) for w in caught if issubclass(w.category, RateLimitWarning)]
    assert len(notes) == 1 and "50 requests per minute for user 'ann', provider 'simulated'" in notes[0]
    row = kit.limits().iloc[0]
    assert (row.user_id, row.provider, row.rpm, row.policy) == ("ann", "simulated", 50.0, "wait")
    assert row.model is pd.NA and row.tpm is pd.NA
    kit.set_rate_limit(user_id="ann", provider="simulated", rpm=None)
    assert kit.limits().empty


@pytest.mark.parametrize("kwargs, message", [
    ({"rpm": 0}, "rpm must be a positive number"),
    ({"tpm": "100"}, "tpm must be a positive number"),
    ({"rpm": 10, "policy": "block"}, "policy must be 'wait' or 'raise'"),
    ({"rpm": 10, "user_id": ""}, "user_id must be a non-empty string"),
])
def test_bad_limits_are_clear_errors(tmp_path, kwargs, message):
    kit = Kit(tmp_path, dotenv=False)
    with pytest.raises(InvalidRequestError, match=message):
        kit.set_rate_limit(**kwargs)


def test_a_429_with_retry_after_pauses_that_provider_for_every_process(guards_backend, tmp_path, openai_server,
                                                                          make_live_kit):
    first = make_live_kit(home=tmp_path / "h", max_retries=0, providers=["openai"])
    other = make_live_kit(home=tmp_path / "h", providers=["openai"])  # its own guard, as another process has
    openai_server.enqueue_error(429, headers={"retry-after": "2.5"})
    with pytest.raises(Exception, match="rate"):
        first.complete("told to slow down", model="gpt-4o-mini")
    with pytest.warns(RateLimitWarning, match=r"openai key sha256:[0-9a-f]{8}, which answered 429"):
        answer = other.complete("waits for the pause to end", model="gpt-4o-mini")
    assert answer.content
    told, sent = (r.received_at for r in openai_server.requests)
    assert sent - told >= 2.5 - 0.1  # the other kit's request arrived only once the pause was over
    assert first.limits().empty  # a pause is not a limit: nothing to remove afterwards
