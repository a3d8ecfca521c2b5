"""Offline token counting: known ids, model table, chat overhead, real API usage, no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import types
from pathlib import Path

import pytest

from cognitionos_kit.calls import tokens
from cognitionos_kit.core.errors import ConfigurationError, InvalidRequestError
from cognitionos_kit.core.types import Message

ROOT = Path(__file__).resolve().parents[1]
TRAFFIC = Path("/work/shared/fixtures/recorded-api-traffic.json")


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=120)


def test_known_token_ids() -> None:
    assert tokens.get_encoding("cl100k_base").encode("hello world") == [15339, 1917]
    assert tokens.get_encoding("o200k_base").encode("hello world") == [24912, 2375]
    assert tokens.encoding_for_model("gpt-4").encode("hello world") == [15339, 1917]
    assert tokens.encoding_for_model("gpt-4o").encode("hello world") == [24912, 2375]
    assert tokens.get_encoding("cl100k_base").decode([15339, 1917]) == "hello world"


def test_encoding_is_cached() -> None:
    assert tokens.encoding_for_model("gpt-4o") is tokens.encoding_for_model("gpt-5-mini")
    assert tokens.encoding_for_model("gpt-4") is tokens.encoding_for_model("claude-sonnet-4-5")


@pytest.mark.parametrize(
    "model, encoding, estimate",
    [
        ("gpt-4o", "o200k_base", False),
        ("gpt-4o-mini", "o200k_base", False),
        ("gpt-4o-2024-08-06", "o200k_base", False),
        ("chatgpt-4o-latest", "o200k_base", False),
        ("gpt-4.1", "o200k_base", False),
        ("gpt-4.1-nano", "o200k_base", False),
        ("gpt-4.5-preview", "o200k_base", False),
        ("gpt-5", "o200k_base", False),
        ("gpt-5-mini", "o200k_base", False),
        ("o1", "o200k_base", False),
        ("o1-mini", "o200k_base", False),
        ("o3-mini", "o200k_base", False),
        ("o4-mini", "o200k_base", False),
        ("o4", "o200k_base", False),  # not in tiktoken's table: fallback rule
        ("GPT-4o", "o200k_base", False),
        ("openai/gpt-4o", "o200k_base", False),
        ("gpt-4", "cl100k_base", False),
        ("gpt-4-turbo", "cl100k_base", False),
        ("gpt-3.5-turbo", "cl100k_base", False),
        ("gpt-3.5-turbo-0125", "cl100k_base", False),
        ("text-embedding-3-small", "cl100k_base", False),
        ("text-embedding-ada-002", "cl100k_base", False),
        ("claude-sonnet-4-5", "cl100k_base", True),
        ("claude-3-5-haiku-latest", "cl100k_base", True),
        ("sim-fast", "cl100k_base", True),
        ("llama3.1:8b", "cl100k_base", True),
        ("o3de-local", "cl100k_base", True),
        ("davinci", "cl100k_base", True),  # r50k_base in tiktoken: not shipped, approximated
        ("gpt-oss-20b", "o200k_base", True),  # o200k_harmony: same ranks, other chat format
    ],
)
def test_encoding_for_model(model: str, encoding: str, estimate: bool) -> None:
    assert tokens.encoding_for_model(model).name == encoding
    assert tokens.is_estimate(model) is estimate


def test_constants_match_tiktoken() -> None:
    """Our copies of pat_str / special tokens / sha256 equal tiktoken's, read without downloading."""
    from tiktoken_ext import openai_public

    def fake_loader(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        return {"url": url, "hash": expected_hash}  # type: ignore[dict-item]

    for name in ("cl100k_base", "o200k_base"):
        fn = getattr(openai_public, name)
        offline = types.FunctionType(fn.__code__, {**fn.__globals__, "load_tiktoken_bpe": fake_loader})
        spec = offline()
        assert spec["pat_str"] == tokens._PAT_STR[name]
        assert spec["special_tokens"] == tokens._special_tokens(name)
        assert spec["mergeable_ranks"]["hash"] == tokens._SHA256[name]
        assert spec["mergeable_ranks"]["url"].endswith(f"/{name}.tiktoken")
        assert tokens.get_encoding(name).special_tokens_set == set(spec["special_tokens"])


def test_count_text() -> None:
    assert tokens.count_text("hello world", "gpt-4o") == 2
    assert tokens.count_text("", "gpt-4o") == 0
    assert tokens.count_text("hello world", "claude-sonnet-4-5") == 2
    # special-token text is counted as ordinary text, never raises
    assert tokens.count_text("<|endoftext|>", "gpt-4") > 1
    with pytest.raises(InvalidRequestError):
        tokens.count_text(None, "gpt-4o")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError):
        tokens.count_text("x", "")
    with pytest.raises(InvalidRequestError):
        tokens.count_text("x", ["gpt-4o"])  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError):
        tokens.get_encoding("r50k_base")


def _cookbook(messages: list[dict[str, str]], model: str) -> int:
    """OpenAI cookbook num_tokens_from_messages, written out independently."""
    enc = tokens.encoding_for_model(model)
    n = 0
    for m in messages:
        n += 3
        for key, value in m.items():
            n += len(enc.encode(value))
            if key == "name":
                n += 1
    return n + 3


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4", "gpt-3.5-turbo", "claude-sonnet-4-5"])
def test_count_messages_matches_cookbook(model: str) -> None:
    msgs = [
        {"role": "system", "content": "You are a careful assistant. Answer in one sentence."},
        {"role": "user", "content": "What's the boiling point of water at sea level, in °F?"},
        {"role": "assistant", "content": "It boils at 212 °F (100 °C) at standard pressure."},
    ]
    assert tokens.count_messages(msgs, model) == _cookbook(msgs, model)
    # the system prompt passed separately counts as a leading system message
    assert tokens.count_messages(msgs[1:], model, system=msgs[0]["content"]) == _cookbook(msgs, model)
    # objects with .role / .content count the same as dicts
    objs = [Message(role=m["role"], content=m["content"]) for m in msgs]  # type: ignore[arg-type]
    assert tokens.count_messages(objs, model) == _cookbook(msgs, model)
    named = [{**msgs[1], "name": "alice"}]
    assert tokens.count_messages(named, model) == _cookbook(named, model)


def test_count_messages_edge_cases() -> None:
    assert tokens.count_messages([], "gpt-4o") == 3
    parts = [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
    assert tokens.count_messages(parts, "gpt-4o") == tokens.count_messages([{"role": "user", "content": "hello"}], "gpt-4o")
    with pytest.raises(InvalidRequestError, match=r"messages\[0\]"):
        tokens.count_messages([{"content": "no role"}], "gpt-4o")
    with pytest.raises(InvalidRequestError, match=r"messages\[1\]"):
        tokens.count_messages([{"role": "user", "content": "ok"}, {"role": "user", "content": 3}], "gpt-4o")
    with pytest.raises(InvalidRequestError):
        tokens.count_messages([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "gpt-4o")
    with pytest.raises(InvalidRequestError):
        tokens.count_messages("hello", "gpt-4o")  # type: ignore[arg-type]


def _recorded_text_chats() -> list[tuple[str, list[dict[str, str]], int]]:
    entries = json.loads(TRAFFIC.read_text())
    out = []
    for e in entries:
        req, resp = e["request"], e["response"]
        if e["provider"] != "openai" or e["endpoint"] != "/v1/chat/completions" or e["tools"]:
            continue
        if resp.get("status") != 200 or "json" not in resp or any(k in req for k in ("tools", "functions", "response_format")):
            continue
        if not all(isinstance(m.get("content"), str) and set(m) <= {"role", "content"} for m in req["messages"]):
            continue
        out.append((req["model"], req["messages"], resp["json"]["usage"]["prompt_tokens"]))
    return out


@pytest.mark.skipif(not TRAFFIC.exists(), reason="recorded API traffic fixture not available")
def test_count_messages_against_recorded_openai_usage() -> None:
    """Measured: exact for gpt-4o/4o-mini/4.1-mini/4.5 (6 requests); +1 for gpt-5 and o3-mini (5)."""
    chats = _recorded_text_chats()
    assert len(chats) >= 8
    diffs = [(model, tokens.count_messages(msgs, model) - recorded) for model, msgs, recorded in chats]
    assert all(abs(d) <= 3 for _, d in diffs), diffs
    exact = [d for model, d in diffs if model.startswith(("gpt-4o", "gpt-4.1", "gpt-4.5"))]
    assert exact and all(d == 0 for d in exact), diffs


def test_sha256_mismatch_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_encodings", {})
    monkeypatch.setitem(tokens._SHA256, "cl100k_base", "0" * 64)
    with pytest.raises(ConfigurationError, match="sha256"):
        tokens.get_encoding("cl100k_base")


def test_first_use_from_many_threads_builds_one_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_encodings", {})
    results: list[tuple[int, int]] = []
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        enc = tokens.encoding_for_model("gpt-4")
        results.append((id(enc), tokens.count_text("hello world " * 50, "gpt-4")))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and len(set(results)) == 1


def test_import_is_lazy() -> None:
    r = _run("import sys, cognitionos_kit.calls.tokens; print('tiktoken' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_no_network(tmp_path: Path) -> None:
    """Any download attempt would hit a dead proxy or an empty cache: counting still works."""
    r = _run(
        "from cognitionos_kit.calls.tokens import count_text; "
        "print(count_text('hello world', 'gpt-4'), count_text('hello world', 'gpt-4o'))",
        TIKTOKEN_CACHE_DIR=str(tmp_path),
        HTTPS_PROXY="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
        https_proxy="http://127.0.0.1:9",
        http_proxy="http://127.0.0.1:9",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["2", "2"]
    assert list(tmp_path.iterdir()) == []
