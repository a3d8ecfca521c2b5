"""The Kit facade: status, determinism, sync/async parity, notebooks' running loop, secrets,
durability across SIGKILL, and two processes sharing one data folder."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import ANTHROPIC_KEY, OPENAI_KEY
from loopback import load_fixtures

from cognitionos_kit import AllProvidersFailedError, AuthenticationWarning, Kit, LatencyModel

ROOT = Path(__file__).resolve().parent.parent


def test_status_without_keys(kit):
    st = kit.status()
    assert st["simulation_mode"] is True and st["chain"] == ["simulated"]
    assert st["providers"]["openai"]["configured"] is False
    assert Path(st["ledger"]).parent == Path(st["home"])


def test_status_with_keys_never_shows_them(live_kit):
    st = live_kit.status()
    assert st["simulation_mode"] is False and st["chain"] == ["openai", "anthropic"]
    blob = json.dumps(st) + repr(live_kit) + live_kit._repr_html_()
    assert OPENAI_KEY not in blob and ANTHROPIC_KEY not in blob


def test_dotenv_file_is_read(tmp_path, monkeypatch, openai_server):
    (tmp_path / ".env").write_text(f"OPENAI_API_KEY={OPENAI_KEY}\nOPENAI_BASE_URL={openai_server.base_url}\n")
    monkeypatch.chdir(tmp_path)
    try:
        kit = Kit(tmp_path / "home")
        assert kit.status()["providers"]["openai"]["configured"] and kit.chain[0] == "openai"
        assert kit.complete("hi").provider == "openai"
        assert openai_server.requests[-1].headers["authorization"] == f"Bearer {OPENAI_KEY}"
    finally:  # load_dotenv wrote to os.environ directly
        for k in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
            os.environ.pop(k, None)


def test_simulated_is_deterministic_per_seed(tmp_path):
    a = Kit(tmp_path / "a", dotenv=False, seed=1, simulated_latency=LatencyModel(scale=0))
    b = Kit(tmp_path / "b", dotenv=False, seed=1, simulated_latency=LatencyModel(scale=0))
    c = Kit(tmp_path / "c", dotenv=False, seed=2, simulated_latency=LatencyModel(scale=0))
    prompts = ["Explain attention in transformers", "List 4 risks of prompt injection", "Is RAG better than fine-tuning?"]
    ra = [a.complete(p) for p in prompts]
    rb = [b.complete(p) for p in prompts]
    rc = [c.complete(p) for p in prompts]
    assert [r.content for r in ra] == [r.content for r in rb]
    assert [r.content for r in ra] != [r.content for r in rc]
    assert all(r.content.startswith("(simulated sim-small)") for r in ra)
    assert "transformers" in ra[0].content.lower() and "4 items" in ra[1].content


def test_simulated_usage_uses_the_real_tokenizer(kit):
    from cognitionos_kit.calls import tokens

    r = kit.complete("Count my tokens please", system="You are exact.")
    msgs = [{"role": "user", "content": "Count my tokens please"}]
    assert r.prompt_tokens == tokens.count_messages(msgs, "sim-small", system="You are exact.")
    assert r.completion_tokens == tokens.count_text(r.content, "sim-small")
    capped = kit.complete("Explain everything about databases", max_tokens=5)
    assert capped.completion_tokens == 5 and capped.finish_reason == "length"


def test_simulated_latency_model(tmp_path):
    kit = Kit(tmp_path, dotenv=False, simulated_latency=LatencyModel(base_ms=40, per_output_token_ms=0, jitter=0))
    r = kit.complete("hello")
    assert 38 <= r.latency_ms < 400
    row = kit.usage().iloc[0]
    assert 38 <= row.latency_ms < 400


def test_sync_and_async_are_in_parity(tmp_path):
    a = Kit(tmp_path / "a", dotenv=False, simulated_latency=LatencyModel(scale=0))
    b = Kit(tmp_path / "b", dotenv=False, simulated_latency=LatencyModel(scale=0))
    kw = dict(role="planner", user_id="p", system="Be brief.", max_tokens=60, temperature=0.3)
    r1 = a.complete("Why do experiments need seeds?", **kw)
    r2 = asyncio.run(b.acomplete("Why do experiments need seeds?", **kw))
    assert (r1.content, r1.model, r1.prompt_tokens, r1.completion_tokens, r1.cost_usd) == (
        r2.content, r2.model, r2.prompt_tokens, r2.completion_tokens, r2.cost_usd)
    cols = ["provider", "model", "user_id", "role", "prompt_tokens", "completion_tokens", "cost_usd", "status"]
    assert a.usage()[cols].to_dict("records") == b.usage()[cols].to_dict("records")
    public = {n for n in dir(Kit) if not n.startswith("_")}
    assert {"complete", "acomplete", "stream", "astream"} <= public


def test_sync_api_inside_a_running_event_loop(live_kit, openai_server):
    """A notebook cell runs inside an event loop: the sync API must still work there."""

    async def cell():
        r = live_kit.complete("from inside a running loop")
        s = "".join(live_kit.stream("and streaming", providers=["simulated"]))
        return r.provider, bool(s)

    assert asyncio.run(cell()) == ("openai", True)


def test_concurrent_async_calls(live_kit, openai_server, anthropic_server):
    async def many():
        return await asyncio.gather(*[live_kit.acomplete(f"question {i}", user_id=f"u{i % 3}") for i in range(20)])

    results = asyncio.run(many())
    assert {r.provider for r in results} == {"openai"} and len({r.request_id for r in results}) == 20
    assert len(live_kit.usage()) == 20 and set(live_kit.spend("user_id").user_id) == {"u0", "u1", "u2"}


def test_secrets_never_leak(tmp_path, monkeypatch, openai_server, anthropic_server):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    kit = Kit(tmp_path, dotenv=False, max_retries=0, simulated_latency=LatencyModel(scale=0))
    # a 401 whose message echoes the key, as real APIs partly do
    openai_server.enqueue_error(401, body={"error": {"message": f"Incorrect API key provided: {OPENAI_KEY}",
                                                     "type": "invalid_request_error", "code": "invalid_api_key"}})
    # with a real provider configured the simulator never stands in: the failure is raised
    with pytest.warns(AuthenticationWarning) as warned, pytest.raises(AllProvidersFailedError) as info:
        kit.complete("hi")
    assert info.value.attempts[0].error_type == "auth_error" and kit.status()["providers"]["openai"]["auth"] == "failing"
    texts = [str(info.value), repr(info.value), repr(info.value.attempts), kit.usage().to_json(date_format="iso"),
             json.dumps(kit.status()), *(str(w.message) for w in warned)]
    assert all(OPENAI_KEY not in t for t in texts)
    assert "[REDACTED]" in kit.usage().iloc[0].error_message
    ledger_bytes = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert OPENAI_KEY.encode() not in ledger_bytes


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_secrets_never_reach_a_printed_traceback(live_kit, openai_server, anthropic_server, provider):
    """A 400 whose body echoes the key: the raised error, its message and the whole printed
    traceback (causes and contexts included) are key-free."""
    import traceback

    from cognitionos_kit import ProviderError

    key = OPENAI_KEY if provider == "openai" else ANTHROPIC_KEY
    server = openai_server if provider == "openai" else anthropic_server
    server.enqueue_error(400, body=server.error_body(400, f"bad header: Authorization: Bearer {key} (x-api-key {key})"))
    with pytest.raises(ProviderError) as info:
        live_kit.complete("hi", providers=[provider])
    printed = "".join(traceback.format_exception(info.value))
    assert "[REDACTED]" in str(info.value) and "bad header" in str(info.value)
    assert key not in printed and key not in repr(info.value)
    assert key not in live_kit.usage().to_json(date_format="iso")


def test_models_lists_what_is_usable(live_kit):
    df = live_kit.models()
    assert set(df.provider) == {"openai", "anthropic"}  # the simulator is not in a live chain
    mini = df[(df.provider == "openai") & (df.model == "gpt-4o-mini")].iloc[0]
    assert mini.input_per_mtok == 0.15 and mini.output_per_mtok == 0.6 and "executor" in mini.roles
    assert mini.context_window == 128000


def test_role_models_can_be_overridden(tmp_path):
    kit = Kit(tmp_path, dotenv=False, simulated_latency=LatencyModel(scale=0),
              role_models={"simulated": {"executor": "sim-nano"}})
    assert kit.complete("hi").model == "sim-nano"
    kit.set_role_model("executor", "sim-large")
    assert kit.complete("hi").model == "sim-large"


def test_spend_and_usage_frames(kit):
    for user, n in (("alice", 3), ("bob", 1)):
        for i in range(n):
            kit.complete(f"question {i} from {user}", user_id=user)
    spend = kit.spend("user_id").set_index("user_id")
    usage = kit.usage()
    assert spend.loc["alice", "calls"] == 3 and spend.loc["bob", "calls"] == 1
    assert spend.loc["alice", "cost_usd"] == pytest.approx(usage[usage.user_id == "alice"].cost_usd.sum())
    assert len(kit.usage(user_id="bob")) == 1
    assert list(kit.spend("model").model) == ["sim-small"]


def test_local_embeddings(kit):
    v = kit.embed(["a cost ledger for LLM calls", "tracking token spend", "a recipe for bread"])
    assert v.dtype == np.float32 and v.shape == (3, 384)
    assert v[0] @ v[1] > v[0] @ v[2]


def test_openai_embeddings_are_batched_and_ledgered(live_kit, openai_server):
    texts = [f"sentence number {i}" for i in range(300)]  # two requests of 256 + 44
    v = live_kit.embed(texts, model="text-embedding-3-small", user_id="emb")
    hits = [r for r in openai_server.requests if r.path.endswith("/embeddings")]
    assert [len(r.body["input"]) for r in hits] == [256, 44]
    assert v.shape[0] == 300 and v.dtype == np.float32
    rows = live_kit.usage(kind="embedding")
    assert len(rows) == 2 and (rows.user_id == "emb").all() and (rows.cost_usd > 0).all()


def test_recorded_embedding_exchange_read_exactly(live_kit, openai_server):
    """The recorded text-embedding-3-small answer (base64 floats, as the SDK asks for them) comes
    back as the same vector, with the recorded token count priced by genai-prices."""
    import base64

    from genai_prices import Usage as GUsage
    from genai_prices import calc_price

    entry = next(e for e in load_fixtures("openai", "/v1/embeddings", status=200) if "dimensions" not in e["request"])
    openai_server.enqueue(entry)
    v = live_kit.embed(entry["request"]["input"], model="text-embedding-3-small", user_id="emb")
    recorded = np.frombuffer(base64.b64decode(entry["response"]["json"]["data"][0]["embedding"]), dtype="<f4")
    assert v.shape == (1, recorded.size) and np.array_equal(v[0], recorded)
    tokens = entry["response"]["json"]["usage"]["prompt_tokens"]
    row = live_kit.usage(kind="embedding").iloc[0]
    assert int(row.prompt_tokens) == tokens and row.status == "ok" and row.price_source == "genai-prices"
    expected = calc_price(GUsage(input_tokens=tokens), model_ref="text-embedding-3-small", provider_id="openai")
    assert row.cost_usd == pytest.approx(float(expected.total_price), rel=1e-9)


def test_call_metadata_reaches_every_row(live_kit, openai_server):
    openai_server.enqueue_error(503, times=2)  # one failed attempt, then Anthropic
    r = live_kit.complete("plan the ablation", role="planner", user_id="ana", agent_id="agent-7", task_id="t-42")
    rows = live_kit.usage(request_id=r.request_id).sort_values("attempt")
    assert list(rows.provider) == ["openai", "anthropic"]
    for col, want in (("user_id", "ana"), ("agent_id", "agent-7"), ("task_id", "t-42"), ("role", "planner")):
        assert list(rows[col]) == [want, want], col
    assert list(rows.model) == ["gpt-4.1", "claude-sonnet-5-5"]  # the planner's models


def test_remote_embeddings_need_a_key(kit):
    from cognitionos_kit import ConfigurationError, InvalidRequestError

    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        kit.embed(["x"], model="text-embedding-3-small")
    with pytest.raises(InvalidRequestError, match="unknown embedding model"):
        kit.embed(["x"], model="word2vec")


# --- processes ------------------------------------------------------------------------
_WORKER = textwrap.dedent(
    """
    import sys, time
    from cognitionos_kit import Kit, LatencyModel
    home, n, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    kit = Kit(home, dotenv=False, simulated_latency=LatencyModel(scale=0))
    for i in range(n):
        r = kit.complete(f"{tag} question {i}", user_id=tag)
        print(r.request_id, flush=True)
        if i % 10 == 0:
            kit.usage(user_id=tag)  # read while the other process writes
    print("done", flush=True)
    if len(sys.argv) > 4:
        time.sleep(60)
    """
)


def _worker(tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    return subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path / "home"), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def test_two_processes_record_and_read_at_once(tmp_path):
    procs = [_worker(tmp_path, 60, tag) for tag in ("kernel-a", "kernel-b")]
    ids = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        lines = out.split()
        assert lines[-1] == "done"
        ids += lines[:-1]
    kit = Kit(tmp_path / "home", dotenv=False)
    usage = kit.usage()
    assert len(usage) == 120 and set(usage.request_id) == set(ids)
    assert kit.spend("user_id").set_index("user_id").loc["kernel-a", "calls"] == 60


def test_sigkill_right_after_calls_loses_nothing(tmp_path):
    p = _worker(tmp_path, 25, "doomed", "then-sleep")
    ids = []
    for line in p.stdout:
        if line.strip() == "done":
            break
        ids.append(line.strip())
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL
    usage = Kit(tmp_path / "home", dotenv=False).usage()
    assert len(ids) == 25 and set(usage.request_id) == set(ids)


def test_count_tokens_labels_estimates(live_kit):
    counts = live_kit.count_tokens("hello world", role="planner")
    assert counts["openai"] == {"model": "gpt-4.1", "prompt_tokens": 9, "estimated": False}  # 2 + 3 + 1 role + 3 priming
    assert counts["anthropic"]["estimated"] is True and counts["anthropic"]["model"] == "claude-sonnet-5-5"


def test_seed_gives_distinct_reproducible_samples(kit, live_kit, openai_server):
    prompt = "Suggest a name for a notebook toolkit"
    a, b, a2 = (kit.complete(prompt, seed=s, temperature=0.8).content for s in (1, 2, 1))
    assert a == a2 and a != b
    live_kit.complete(prompt, seed=7, providers=["openai"])
    assert openai_server.requests[-1].body["seed"] == 7
    with pytest.raises(ValueError, match="seed must be an integer"):
        kit.complete(prompt, seed="7")
