"""Sync and async parity: both drivers (complete/acomplete, stream/astream) walk the same script of
faults through the official SDKs and loopback servers, and must end the same way: the same answer
or error, the same ledger rows, the same requests at each server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from cognitionos_kit import KitError

PROMPT = "Give one tip for reproducible experiments"
FAST = {"retry-after-ms": "5"}


def _ok(o, a):
    pass


SCRIPTS: dict[str, Callable[[Any, Any], None]] = {
    "answer": _ok,
    "server_error_then_fallback": lambda o, a: o.enqueue_error(500, headers=FAST, times=2),
    "rate_limit_both": lambda o, a: (o.enqueue_error(429, headers=FAST, times=2), a.enqueue_error(529, headers=FAST, times=2)),
    "invalid_request_stops": lambda o, a: o.enqueue_error(400),
    "auth_error_moves_on": lambda o, a: o.enqueue_error(401),
    "garbage_200_moves_on": lambda o, a: o.enqueue_raw(200, "application/json", b"{not json"),
    "hang_times_out": lambda o, a: o.enqueue_hang(5.0, times=2),
    "reset_then_fallback": lambda o, a: o.enqueue_reset(times=2),
}


def _row(r: dict) -> tuple:
    return (r["attempt"], r["provider"], r["model"], r["status"], r["error_type"], r["http_requests"],
            bool(r["tokens_estimated"]) if r["tokens_estimated"] == r["tokens_estimated"] else None,
            r["prompt_tokens"] if r["status"] == "ok" else None, r["substituted"])


def _drive(kit, mode: str) -> tuple:
    try:
        if mode == "sync":
            c = kit.complete(PROMPT, role="executor")
        elif mode == "async":
            c = asyncio.run(kit.acomplete(PROMPT, role="executor"))
        elif mode == "stream":
            s = kit.stream(PROMPT, role="executor")
            text = "".join(s)
            c = s.completion
            assert text == c.content
        else:
            async def consume():
                s = kit.astream(PROMPT, role="executor")
                text = "".join([chunk async for chunk in s])
                assert text == s.completion.content
                return s.completion
            c = asyncio.run(consume())
        result: tuple = ("answer", c.content, c.provider, c.model, c.substituted, len(c.attempts))
    except KitError as exc:
        result = ("error", type(exc).__name__, getattr(exc, "error_type", None), len(getattr(exc, "attempts", [])))
    rows = kit.usage().sort_values("attempt").to_dict("records")
    return result, [_row(r) for r in rows]


PAIRS = [("sync", "async"), ("stream", "astream")]


@pytest.mark.filterwarnings("ignore::cognitionos_kit.AuthenticationWarning")
@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: "/".join(p))
@pytest.mark.parametrize("script", list(SCRIPTS))
def test_sync_and_async_drivers_end_alike(make_live_kit, openai_server, anthropic_server, tmp_path, script, pair):
    outcomes = {}
    for mode in pair:
        openai_server.reset()
        anthropic_server.reset()
        SCRIPTS[script](openai_server, anthropic_server)
        kit = make_live_kit(home=tmp_path / mode, timeout=1.0)
        result, rows = _drive(kit, mode)
        outcomes[mode] = (result, rows, len(openai_server.requests), len(anthropic_server.requests))
    a, b = (outcomes[m] for m in pair)
    assert a == b, f"{pair[0]}: {a}\n{pair[1]}: {b}"
    result, rows, _, _ = a
    assert rows and len(rows) == (result[-1] if result[0] == "answer" else max(result[-1], 1))  # one row per attempt
    if script != "answer":
        assert rows[0][3] != "ok"  # the script's fault really hit the first attempt


SIMULATED = {
    "answer": [],
    "rate_limit_then_flaky_answers": [("flaky", 1, "rate_limit", False)],
    "server_errors_everywhere": [("flaky", 1, "server_error", False), ("simulated", 1, "overloaded", False)],
    "invalid_request_stops": [("flaky", 1, "invalid_request", False)],
    "timeout_moves_on": [("flaky", 1, "timeout", False)],
    "breaks_mid_stream": [("flaky", 1, "connection_error", True)],
}


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: "/".join(p))
@pytest.mark.parametrize("script", list(SIMULATED))
def test_simulated_provider_plays_the_same_script_in_both_drivers(tmp_path, script, pair):
    from cognitionos_kit import Kit, LatencyModel, SimulatedProvider

    outcomes = {}
    for mode in pair:
        flaky = SimulatedProvider(name="flaky", seed=3, latency=LatencyModel(scale=0))
        kit = Kit(tmp_path / mode, dotenv=False, providers=[flaky, "simulated"], seed=3,
                  simulated_latency=LatencyModel(scale=0))
        for name, n, kind, mid in SIMULATED[script]:
            kit.provider(name).fail_next(n, kind, mid_stream=mid)  # type: ignore[attr-defined]
        try:
            outcomes[mode] = _drive(kit, mode)
        except KitError as exc:  # a stream broken after text: StreamInterruptedError
            outcomes[mode] = (type(exc).__name__, [_row(r) for r in kit.usage().to_dict("records")])
        kit.close()
    assert outcomes[pair[0]] == outcomes[pair[1]]
