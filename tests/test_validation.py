"""Bad input: a clear error before any network call, and nothing in the ledger."""

from __future__ import annotations

import asyncio

import pytest

from cognitionos_kit import ConfigurationError, CostLimitError, InvalidRequestError, KitError

BAD = [
    ({"prompt": ""}, "prompt is empty"),
    ({"prompt": "   "}, "prompt is empty"),
    ({"prompt": 42}, "must be a string or a list of messages"),
    ({"prompt": None}, "must be a string or a list of messages"),
    ({"prompt": []}, "empty message list"),
    ({"prompt": [{"role": "user"}]}, "needs a non-empty 'content'"),
    ({"prompt": [{"role": "robot", "content": "hi"}]}, "has role 'robot'"),
    ({"prompt": ["hi"]}, "has role None"),
    ({"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, "must end with a user message"),
    ({"prompt": "hi", "role": "boss"}, "unknown role 'boss'"),
    ({"prompt": "hi", "providers": ["gemini"]}, "unknown provider 'gemini'"),
    ({"prompt": "hi", "providers": []}, "non-empty list"),
    ({"prompt": "hi", "max_tokens": 0}, "max_tokens must be a positive integer"),
    ({"prompt": "hi", "max_tokens": -5}, "max_tokens must be a positive integer"),
    ({"prompt": "hi", "max_tokens": 1.5}, "max_tokens must be a positive integer"),
    ({"prompt": "hi", "temperature": 2.5}, "outside simulated's range"),
    ({"prompt": "hi", "temperature": -0.1}, "outside simulated's range"),
    ({"prompt": "hi", "temperature": "hot"}, "temperature must be a number"),
    ({"prompt": "hi", "max_cost": 0}, "max_cost must be a positive number"),
    ({"prompt": "hi", "max_cost": -1}, "max_cost must be a positive number"),
    ({"prompt": "hi", "user_id": 7}, "user_id must be a string"),
    ({"prompt": "hi", "model": ""}, "model must be a non-empty string"),
    ({"prompt": "hi", "model": "sim-huge"}, "unknown simulated model"),
    ({"prompt": "hi", "system": 3}, "system must be a string"),
]


@pytest.mark.parametrize("kwargs,message", BAD, ids=[m for _, m in BAD])
def test_bad_input_is_rejected_before_any_call(kit, kwargs, message):
    kwargs = dict(kwargs)
    prompt = kwargs.pop("prompt")
    for call in (lambda: kit.complete(prompt, **kwargs), lambda: kit.stream(prompt, **kwargs),
                 lambda: asyncio.run(kit.acomplete(prompt, **kwargs))):
        with pytest.raises(InvalidRequestError, match=message) as info:
            call()
        assert isinstance(info.value, ValueError) and isinstance(info.value, KitError)
    assert kit.simulated.calls == 0
    assert len(kit.usage()) == 0


LIVE_BAD = [b for b in BAD if "simulated" not in b[1]] + [
    ({"prompt": "hi", "temperature": 2.5, "providers": ["openai"]}, "outside openai's range"),
]


@pytest.mark.parametrize("kwargs,message", LIVE_BAD, ids=[m for _, m in LIVE_BAD])
def test_bad_input_sends_nothing_to_real_providers(live_kit, openai_server, anthropic_server, kwargs, message):
    """With the official SDKs configured, bad input still fails before a single request."""
    kwargs = dict(kwargs)
    prompt = kwargs.pop("prompt")
    if kwargs.get("model") == "sim-huge":
        kwargs["providers"] = ["simulated"]
    for call in (lambda: live_kit.complete(prompt, **kwargs), lambda: live_kit.stream(prompt, **kwargs),
                 lambda: asyncio.run(live_kit.acomplete(prompt, **kwargs))):
        with pytest.raises(InvalidRequestError, match=message):
            call()
    assert len(openai_server.requests) == 0 and len(anthropic_server.requests) == 0
    assert len(live_kit.usage()) == 0


def test_temperature_range_and_anthropic_without_temperature(live_kit, openai_server, anthropic_server):
    with pytest.raises(InvalidRequestError, match=r"outside openai's range \[0.0, 2.0\]"):
        live_kit.complete("hi", temperature=2.5)
    assert len(openai_server.requests) == 0
    # Anthropic deprecated temperature: the kit warns once and does not send it
    with pytest.warns(UserWarning, match="anthropic does not accept temperature"):
        live_kit.complete("hi", temperature=0.7, providers=["anthropic"])
    assert "temperature" not in anthropic_server.requests[-1].body
    live_kit.complete("hi", temperature=0.7, providers=["openai"])
    assert openai_server.requests[-1].body["temperature"] == 0.7


def test_unconfigured_provider_named_explicitly(kit):
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        kit.complete("hi", providers=["openai"])
    assert len(kit.usage()) == 0


def test_model_of_a_provider_left_out(live_kit):
    with pytest.raises(InvalidRequestError, match="served by 'openai'"):
        live_kit.complete("hi", model="gpt-4o", providers=["anthropic"])


def test_max_cost_downgrades_then_refuses(kit):
    long_prompt = "Compare these evaluation designs carefully. " * 60
    r = kit.complete(long_prompt, role="planner", max_cost=0.002, max_tokens=500)
    assert r.model == "sim-small"  # sim-large's worst case does not fit
    r = kit.complete(long_prompt, role="planner", max_cost=1.0, max_tokens=500)
    assert r.model == "sim-large"
    before = len(kit.usage())
    with pytest.raises(CostLimitError, match="no model fits max_cost"):
        kit.complete(long_prompt, role="planner", max_cost=1e-7, max_tokens=500)
    assert len(kit.usage()) == before


def test_max_cost_worst_case_is_exact(kit):
    from cognitionos_kit.calls import tokens

    prompt = "Summarize the history of tokenizers in two lines."
    n = tokens.count_messages([{"role": "user", "content": prompt}], "sim-large")
    worst_large = (n * 2.0 + 100 * 8.0) / 1e6
    assert kit.complete(prompt, role="planner", max_cost=worst_large, max_tokens=100).model == "sim-large"
    assert kit.complete(prompt, role="planner", max_cost=worst_large * 0.999, max_tokens=100).model == "sim-small"
