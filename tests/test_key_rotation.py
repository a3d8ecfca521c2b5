"""Several API keys per provider: rotation on 429, a rest after 401, fallback when every key is
limited, fingerprints (never keys) in the ledger, status, reprs and errors; against the loopback
servers through the official SDKs, sync, async and streaming."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import ANTHROPIC_KEY, OPENAI_KEY

from cognitionos_kit import AllProvidersFailedError, AuthenticationWarning, ConfigurationError, Kit, ProviderError
from cognitionos_kit.calls.providers import keys as keyring
from cognitionos_kit.calls.providers.keys import fingerprint
from cognitionos_kit.core.config import load_settings

PROMPT = "What is the capital of France?"
# Not "sk-" shaped on purpose: the kit must redact them because they are keys, not by their shape.
KEYS = ["rot-key-one-AAAA0123456789abcd", "rot-key-two-BBBB0123456789abcd", "rot-key-three-CCCC0123456789ab"]
FP = [fingerprint(k) for k in KEYS]


def _sent_keys(server: Any, provider: str) -> list[str]:
    """Which of KEYS each request the server received carried: its ``x-api-key``, else its
    ``Authorization: Bearer`` (OpenAI, and the anthropic SDK's newer releases)."""
    known = {**{f"Bearer {k}": k for k in KEYS}, **{k: k for k in KEYS}}
    return [known.get(r.headers.get("x-api-key") or r.headers.get("authorization", ""), "other")
            for r in server.requests]


def _call(kit: Kit, mode: str, **kw: Any) -> Any:
    """One call in ``mode``; returns the Completion."""
    if mode == "complete":
        return kit.complete(PROMPT, **kw)
    if mode == "acomplete":
        return asyncio.run(kit.acomplete(PROMPT, **kw))
    if mode == "stream":
        s = kit.stream(PROMPT, **kw)
        assert "".join(s)
        return s.completion

    async def astream() -> Any:
        s = kit.astream(PROMPT, **kw)
        assert "".join([c async for c in s])
        return s.completion

    return asyncio.run(astream())


def _rows(kit: Kit, request_id: str) -> list[dict]:
    df = kit.usage(request_id=request_id).sort_values("attempt")
    return df[["provider", "status", "error_type", "key_fingerprint"]].to_dict("records")


@pytest.fixture
def clock(monkeypatch):
    """The key ring's clock, moved by hand: ``clock.now += 601``."""
    fake = SimpleNamespace(now=datetime.now(timezone.utc).timestamp())
    monkeypatch.setattr(keyring, "time", SimpleNamespace(time=lambda: fake.now))
    return fake


# --- rotation -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["complete", "acomplete", "stream", "astream"])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_429_then_a_401_rotate_to_the_third_key(make_live_kit, openai_server, anthropic_server, provider, mode,
                                                  clock):
    server = openai_server if provider == "openai" else anthropic_server
    kit = make_live_kit(api_keys={provider: KEYS})  # max_retries=1: a 429 would be retried on the same key
    server.enqueue_error(429, headers={"retry-after": "1"})  # short enough for the SDK to retry it on the same key
    server.enqueue_error(401)
    with pytest.warns(AuthenticationWarning, match=FP[1]):
        r = _call(kit, mode, providers=[provider])

    assert _sent_keys(server, provider) == KEYS  # one request per key, in order: no SDK retry of the 429
    assert r.provider == provider and r.content
    assert [(a.error_type, a.key_fingerprint) for a in r.attempts] == [
        ("rate_limit", FP[0]), ("auth_error", FP[1]), (None, FP[2])]
    assert _rows(kit, r.request_id) == [
        {"provider": provider, "status": "error", "error_type": "rate_limit", "key_fingerprint": FP[0]},
        {"provider": provider, "status": "error", "error_type": "auth_error", "key_fingerprint": FP[1]},
        {"provider": provider, "status": "ok", "error_type": None, "key_fingerprint": FP[2]},
    ]
    keys = kit.status()["providers"][provider]["keys"]
    assert [(k["fingerprint"], k["state"]) for k in keys] == [
        (FP[0], "rate_limited"), (FP[1], "unauthorized"), (FP[2], "ready")]
    rate_limited_until = datetime.fromisoformat(keys[0]["until"]).timestamp()
    assert clock.now <= rate_limited_until <= clock.now + 2  # Retry-After: 1
    unauthorized_until = datetime.fromisoformat(keys[1]["until"]).timestamp()
    assert unauthorized_until == pytest.approx(clock.now + keyring.UNAUTHORIZED_COOLDOWN_S, abs=1)
    assert keys[2]["until"] is None
    assert kit.status()["providers"][provider]["auth"] == "ok"  # a key of it answered


def test_an_unauthorized_key_rests_for_its_cool_down_then_is_tried_again(make_live_kit, openai_server, clock):
    kit = make_live_kit(api_keys={"openai": KEYS[:2]})
    openai_server.enqueue_error(401)
    with pytest.warns(AuthenticationWarning):
        first = kit.complete(PROMPT)
    assert first.provider == "openai" and _sent_keys(openai_server, "openai") == KEYS[:2]

    openai_server.reset()
    clock.now += keyring.UNAUTHORIZED_COOLDOWN_S - 5
    second = asyncio.run(kit.acomplete(PROMPT))
    assert _sent_keys(openai_server, "openai") == [KEYS[1]]  # the refused key is skipped, not even sent
    assert [a.key_fingerprint for a in second.attempts] == [FP[1]]
    assert kit.status()["providers"]["openai"]["keys"][0]["state"] == "unauthorized"

    openai_server.reset()
    clock.now += 10  # the cool-down is over: the first key is tried first again
    third = kit.complete(PROMPT)
    assert _sent_keys(openai_server, "openai") == [KEYS[0]] and third.attempts[0].key_fingerprint == FP[0]
    assert [k["state"] for k in kit.status()["providers"]["openai"]["keys"]] == ["ready", "ready"]


def test_a_rate_limited_key_is_skipped_until_its_retry_after(make_live_kit, openai_server, clock):
    kit = make_live_kit(api_keys={"openai": KEYS[:2]})
    openai_server.enqueue_error(429, headers={"retry-after": "1.5"})
    kit.complete(PROMPT)
    openai_server.reset()
    clock.now += 1.4
    kit.complete(PROMPT)
    assert _sent_keys(openai_server, "openai") == [KEYS[1]]
    openai_server.reset()
    clock.now += 0.2
    time.sleep(1.5)  # the key's pause in the guards file (shared with other processes) is in real time
    kit.complete(PROMPT)
    assert _sent_keys(openai_server, "openai") == [KEYS[0]]


@pytest.mark.parametrize("mode", ["complete", "acomplete", "stream", "astream"])
def test_a_429_on_every_key_falls_back_to_anthropic_with_every_attempt_shown(make_live_kit, openai_server,
                                                                             anthropic_server, mode, clock):
    kit = make_live_kit(api_keys={"openai": KEYS})
    openai_server.enqueue_error(429, times=3)
    r = _call(kit, mode, role="executor")

    assert _sent_keys(openai_server, "openai") == KEYS and len(anthropic_server.requests) == 1
    assert r.provider == "anthropic" and r.substituted
    assert [(a.provider, a.error_type, a.key_fingerprint) for a in r.attempts] == [
        ("openai", "rate_limit", FP[0]), ("openai", "rate_limit", FP[1]), ("openai", "rate_limit", FP[2]),
        ("anthropic", None, fingerprint(ANTHROPIC_KEY))]
    assert [row["key_fingerprint"] for row in _rows(kit, r.request_id)] == [*FP, fingerprint(ANTHROPIC_KEY)]
    assert [k["state"] for k in kit.status()["providers"]["openai"]["keys"]] == ["rate_limited"] * 3

    # every key resting: the one ready soonest is still tried (a provider is never skipped for its keys)
    openai_server.reset()
    clock.now += 1
    again = _call(kit, mode, role="executor")
    assert _sent_keys(openai_server, "openai") == [KEYS[0]] and again.provider == "openai"


def test_rotation_is_not_fallback_a_429_moves_to_the_next_key_whatever_fallback_on_says(make_live_kit,
                                                                                       openai_server):
    kit = make_live_kit(api_keys={"openai": KEYS[:2]}, fallback_on={"timeout"})
    openai_server.enqueue_error(429, times=2)
    with pytest.raises(ProviderError) as info:
        kit.complete(PROMPT)
    assert info.value.error_type == "rate_limit"  # the last key's 429 stops: fallback_on has no rate_limit
    assert _sent_keys(openai_server, "openai") == KEYS[:2]
    assert [a.key_fingerprint for a in info.value.attempts] == FP[:2]  # type: ignore[attr-defined]


def test_one_key_behaves_as_before_the_sdk_retries_its_429(make_live_kit, openai_server):
    kit = make_live_kit()  # OPENAI_API_KEY only
    openai_server.enqueue_error(429)
    r = kit.complete(PROMPT)
    assert r.provider == "openai" and len(r.attempts) == 1 and r.attempts[0].http_requests == 2
    assert r.attempts[0].key_fingerprint == fingerprint(OPENAI_KEY)
    keys = kit.status()["providers"]["openai"]["keys"]
    assert keys == [{"fingerprint": fingerprint(OPENAI_KEY), "state": "ready", "until": None}]
    assert kit.status()["providers"]["simulated"]["keys"] == []


# --- keys never show -------------------------------------------------------------------------------
def _texts(value: Any) -> list[str]:
    out = [str(value), repr(value)]
    for name in ("attempts", "args"):
        out += [repr(x) for x in getattr(value, name, None) or ()]
        out += [str(getattr(x, "error_message", "")) for x in getattr(value, name, None) or ()]
    return out


def test_keys_never_show_in_status_reprs_ledger_log_files_or_errors(make_live_kit, openai_server, anthropic_server):
    kit = make_live_kit(api_keys={"openai": KEYS, "anthropic": KEYS[:1]})
    # bodies that echo the key they refused, as some servers do
    openai_server.enqueue_error(429, body=openai_server.error_body(429, f"slow down, {KEYS[0]}"))
    openai_server.enqueue_error(401, body=openai_server.error_body(401, f"Incorrect API key provided: {KEYS[1]}"))
    openai_server.enqueue_error(401, body=openai_server.error_body(401, f"Incorrect API key provided: {KEYS[2]}"))
    anthropic_server.enqueue_error(401, body=anthropic_server.error_body(401, f"invalid x-api-key {KEYS[0]}"))
    with pytest.warns(AuthenticationWarning) as warned, pytest.raises(AllProvidersFailedError) as info:
        kit.complete(PROMPT)
    err = info.value
    assert [a.key_fingerprint for a in err.attempts] == [*FP, FP[0]]

    texts = _texts(err) + [str(w.message) for w in warned]
    texts += [repr(kit), repr(kit.config), repr(kit.settings), str(kit.status()), json.dumps(kit.status())]
    texts += [repr(kit.provider("openai")), repr(kit.provider("openai").key_views())]
    texts += [kit.usage().to_json(date_format="iso"), kit.log().to_json(date_format="iso")]
    blob = "\n".join(texts)
    for k in KEYS:
        assert k not in blob
    assert FP[0] in json.dumps(kit.status())

    kit.ledger.flush()
    files = [p for p in Path(kit.home).rglob("*") if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        for k in KEYS:
            assert k.encode() not in data, f"a key leaked into {path}"


# --- bad arguments -------------------------------------------------------------------------------
@pytest.mark.parametrize(("bad", "says"), [
    ("rot-key-one-AAAA0123456789abcd", "maps a provider to a list of its API keys"),
    (["rot-key-one-AAAA0123456789abcd"], "maps a provider to a list of its API keys"),
    ({"openai": "rot-key-one-AAAA0123456789abcd"}, "must be a list of keys, not one string"),
    ({"openai": []}, "must be a non-empty list of API keys, got an empty list"),
    ({"openai": None}, "must be a non-empty list of API keys, got a NoneType"),
    ({"openai": ["rot-key-one-AAAA0123456789abcd", ""]}, r"api_keys\['openai'\]\[1\] must be a non-empty string"),
    ({"openai": ["   "]}, "got an empty string"),
    ({"anthropic": [42]}, "got a int"),
    ({"openai": ["rot-key-one-AAAA0123456789abcd\n"]}, "contains spaces or line breaks"),
    ({"openai": ["rot-key one-AAAA0123456789abcd"]}, "contains spaces or line breaks"),
    ({"mistral": ["rot-key-one-AAAA0123456789abcd"]}, "unknown provider 'mistral'; keys can be given for openai and"),
    ({"simulated": ["rot-key-one-AAAA0123456789abcd"]}, "unknown provider 'simulated'"),
    ({"rot-key-one-AAAA0123456789abcd": ["x"]}, "unknown provider"),
])
def test_a_bad_api_keys_argument_is_refused_clearly_without_showing_a_key(tmp_path, bad, says):
    with pytest.raises(ConfigurationError, match=says) as info:
        Kit(tmp_path / "home", dotenv=False, api_keys=bad)
    assert "rot-key" not in str(info.value)
    assert not (tmp_path / "home").exists()  # refused before anything was built or written


# --- the environment -------------------------------------------------------------------------------
def test_env_keys_are_split_on_commas_with_spaces_and_empty_items_dropped():
    env = {"OPENAI_API_KEY": KEYS[0], "OPENAI_API_KEYS": f" {KEYS[1]} , ,{KEYS[0]},,  {KEYS[2]} ,",
           "ANTHROPIC_API_KEYS": f"{KEYS[2]}"}
    s = load_settings(dotenv=False, environ=env)
    assert s.openai.keys == tuple(KEYS[:1] + KEYS[1:2] + KEYS[2:])  # OPENAI_API_KEY first, duplicates once
    assert s.openai.api_key == KEYS[0] and s.openai.api_key_source == "env"
    assert s.anthropic.keys == (KEYS[2],) and s.anthropic.api_key == KEYS[2]
    assert s.anthropic.api_keys == ()  # one key: as if it came from ANTHROPIC_API_KEY
    assert all(k not in repr(s) for k in KEYS)

    blank = load_settings(dotenv=False, environ={"OPENAI_API_KEYS": " , ,, "})
    assert blank.openai.keys == () and blank.openai.api_key is None and blank.openai.api_key_source is None


def test_env_keys_from_a_dotenv_file_and_the_mixed_source_check(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"OPENAI_API_KEYS={KEYS[0]},{KEYS[1]}\nOPENAI_BASE_URL=http://127.0.0.1:9/v1\n")
    s = load_settings(dotenv=dotenv, environ={})
    assert s.openai.keys == tuple(KEYS[:2]) and s.openai.sources == {"api_key": "dotenv", "base_url": "dotenv"}

    dotenv.write_text("OPENAI_BASE_URL=http://127.0.0.1:9/v1\n")  # the base URL from a file, the keys from the shell
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEYS from the shell environment") as info:
        load_settings(dotenv=dotenv, environ={"OPENAI_API_KEYS": f"{KEYS[0]},{KEYS[1]}"})
    assert all(k not in str(info.value) for k in KEYS)
    with pytest.raises(ConfigurationError, match=r"OPENAI_BASE_URL comes from .* but the API keys from Kit\(api_keys=...\)"):
        load_settings(dotenv=dotenv, environ={}, api_keys={"openai": tuple(KEYS[:2])})


def test_env_keys_rotate_and_an_argument_replaces_the_environment(make_live_kit, monkeypatch, openai_server):
    monkeypatch.setenv("OPENAI_API_KEYS", f"{KEYS[1]}, {KEYS[2]}")  # beside OPENAI_API_KEY (the fixture's)
    kit = make_live_kit()
    assert [k["fingerprint"] for k in kit.status()["providers"]["openai"]["keys"]] == [
        fingerprint(OPENAI_KEY), FP[1], FP[2]]
    openai_server.enqueue_error(429)
    r = kit.complete(PROMPT)
    assert [a.key_fingerprint for a in r.attempts] == [fingerprint(OPENAI_KEY), FP[1]]

    only = make_live_kit(api_keys={"openai": [KEYS[0]]}, home=kit.home.parent / "other")
    openai_server.reset()
    only.complete(PROMPT)
    assert _sent_keys(openai_server, "openai") == [KEYS[0]]
    assert only.status()["providers"]["openai"]["sources"]["api_key"] == "argument"
    assert only.config.api_keys == {"openai": (KEYS[0],)}
    rebuilt = Kit.from_config(only.config)
    assert rebuilt.settings.openai.keys == (KEYS[0],)
    rebuilt.close()


@pytest.mark.parametrize("mode", ["complete", "acomplete", "stream", "astream"])
def test_a_key_paused_past_max_retry_wait_is_not_sent_to_and_the_substitute_says_so(make_live_kit, openai_server,
                                                                                  anthropic_server, mode):
    kit = make_live_kit(max_retries=0, max_retry_wait=1.0)
    openai_server.enqueue_error(429, headers={"retry-after": "30"})
    first = _call(kit, mode, role="executor")  # openai: 429 asking 30 s, shared by every process; anthropic answers
    assert first.provider == "anthropic" and len(openai_server.requests) == 1
    r = _call(kit, mode, role="executor")
    assert len(openai_server.requests) == 1  # paused: nothing sent to openai, no wait either
    assert r.provider == "anthropic" and r.substituted and r.requested_provider == "openai"
    assert r.attempts[0].error_type == "rate_limit" and "not sent: openai key" in r.attempts[0].error_message
    rows = _rows(kit, r.request_id)
    assert [(x["provider"], x["status"]) for x in rows] == [("openai", "error"), ("anthropic", "ok")]
