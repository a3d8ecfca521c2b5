"""Client mode: ``Kit(server=..., token=...)`` (or ``COGNITIONOS_SERVER``/``COGNITIONOS_TOKEN``)
gives a notebook the Kit API served by a live team server (``python -m cognitionos_kit serve`` in
its own process), whose providers are the official SDKs talking to the loopback provider servers.
Nothing here is mocked: the client is the kit's own, over real HTTP."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from loopback import load_fixtures
from team_server import add_users, guarded_server, running_server

from cognitionos_kit import (
    BudgetExceededError,
    ConfigurationError,
    InvalidRequestError,
    Kit,
    KitWarning,
    RateLimitExceededError,
    ServerError,
    SimulatedProvider,
    StreamInterruptedError,
)
from cognitionos_kit.client import ServedKit
from cognitionos_kit.memory import MemoryNotFoundError


@pytest.fixture(scope="module")
def server(tmp_path_factory, _openai_server, _anthropic_server):
    with guarded_server(tmp_path_factory.mktemp("team"), _openai_server, _anthropic_server) as s:
        yield s


def client(server, user: str, **kw) -> ServedKit:
    kit = Kit(server=server.url, token=server.tokens[user], **kw)
    assert isinstance(kit, ServedKit)
    return kit


def test_a_client_kit_calls_through_the_server_as_the_token_user(server, providers):
    openai, _ = providers
    kit = client(server, "bob", project="study-1", views="session")
    r = kit.complete("Name a colour", role="executor", temperature=0.3)
    assert (r.provider, r.user_id, r.substituted) == ("openai", "bob", False)
    assert r.cost_usd > 0 and r.prompt_tokens > 0 and r.attempts[0].status == "ok"
    assert openai.requests[0].body["messages"][-1]["content"] == "Name a colour"
    # the server's ledger holds the row, labelled with the client's project and session
    rows = server.as_("ana", "GET", "/usage", params={"request_id": r.request_id}).json()["rows"]
    assert [(x["user_id"], x["project"], x["session_id"]) for x in rows] == [("bob", "study-1", kit.session_id)]
    assert kit.usage().request_id.tolist() == [r.request_id]  # views="session": this client's rows only
    # a user_id naming someone else is read as the token's user, and says so
    with pytest.warns(KitWarning, match="token's user 'bob'"):
        other = kit.complete("Hi", user_id="mallory")
    assert other.user_id == "bob"
    assert server.as_("ana", "GET", "/usage", params={"user": "mallory"}).json()["rows"] == []
    kit.close()


def test_stream_async_and_chat_through_the_server(server, providers):
    kit = client(server, "bob", views="session")
    s = kit.stream("Count to three", max_tokens=30)
    text = "".join(s)
    assert text and s.completion is not None and s.completion.content == text
    assert kit.usage(request_id=s.completion.request_id).stream.tolist() == [True]

    async def both():
        done = await kit.acomplete("Async hello", max_tokens=20)
        a = kit.astream("Async stream", max_tokens=20)
        return done, "".join([c async for c in a]), a.completion

    done, streamed, completion = asyncio.run(both())
    assert done.content and streamed == completion.content
    chat = kit.chat(continue_from=done.request_id)  # the history comes from the server's text log
    assert [m["role"] for m in chat.history] == ["user", "assistant"] and chat.history[0]["content"] == "Async hello"
    turn = chat.send("And again?", max_tokens=20)
    sent = providers[0].requests[-1].body["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == ["Async hello", "And again?"] and turn.content
    kit.close()


def test_a_substitute_and_a_broken_stream_say_so_on_the_client(server, providers):
    openai, anthropic = providers
    kit = client(server, "dave")
    openai.enqueue_error(500, times=3)
    r = kit.complete("Who answers?", role="executor", max_tokens=20)
    assert r.provider == "anthropic" and r.substituted and r.requested_provider == "openai"
    assert [a.status for a in r.attempts] == ["error", "ok"] and r.attempts[0].status_code == 500
    assert "SUBSTITUTE for openai/gpt-4o-mini" in r.footer()
    entry = load_fixtures("openai", "/v1/chat/completions", stream=True, tools=False)[0]
    openai.enqueue_broken_stream(entry, after_events=4)
    s = kit.stream("Break please", model="gpt-4o-mini", max_tokens=30)
    with pytest.raises(StreamInterruptedError) as e:
        for _ in s:
            pass
    assert e.value.partial and e.value.partial == s.text
    kit.close()


def test_errors_reach_the_client_as_the_kits_own(server, providers):
    openai, _ = providers
    with pytest.raises(BudgetExceededError) as budget:
        client(server, "carol").complete("Write an essay")
    assert budget.value.scope == "user" and budget.value.limit_usd == pytest.approx(1e-9)
    fay = client(server, "fay")
    fay.complete("One", max_tokens=5)
    with pytest.raises(RateLimitExceededError) as limited:
        fay.complete("Two", max_tokens=5)
    assert limited.value.wait_s >= 1
    bad = Kit(server=server.url, token=server.tokens["bob"][:-2] + "xx")
    with pytest.raises(ServerError) as refused:
        bad.complete("Hi")
    assert refused.value.status == 401 and server.url in str(refused.value)
    assert server.tokens["bob"][:-2] not in str(refused.value)
    bob = client(server, "bob")
    sent = len(openai.requests)
    with pytest.raises(InvalidRequestError, match="tools"):  # refused before anything is sent
        bob.complete("Use a tool", tools=[{"name": "t", "description": "d", "parameters": {"type": "object"}}])
    with pytest.raises(InvalidRequestError, match="top_p"):  # checked here, as a local Kit checks it
        bob.complete("Hot", top_p=2)
    with pytest.raises(InvalidRequestError, match="deadline: .*600"):  # the server's 422 names the field
        bob.complete("Slow", deadline=700)
    assert len(openai.requests) == sent
    with pytest.raises(ConfigurationError, match="needs a local Kit"):
        bob.set_budget(1.0)
    gone = Kit(server="http://127.0.0.1:9", token="tok-123456")
    with pytest.raises(ServerError, match="could not be reached") as down:
        gone.complete("Anyone?")
    assert down.value.status is None and "127.0.0.1:9" in str(down.value)


def test_usage_spend_and_log_are_the_token_users_own(server, providers):
    bob, dave = client(server, "bob", project="iso"), client(server, "dave", project="iso")
    b = bob.complete("Bob's question about ledgers", max_tokens=20)
    d = dave.complete("Dave's question", max_tokens=20)
    assert set(bob.usage().user_id) == {"bob"} and set(dave.usage().user_id) == {"dave"}
    assert d.request_id not in set(bob.usage().request_id)
    with pytest.warns(KitWarning):
        assert set(bob.usage(user_id="dave").user_id) == {"bob"}  # read as bob's own
    assert bob.log("ledgers").request_id.tolist()[0] == b.request_id and bob.log("Dave's").empty
    # filters the server takes and those applied on the client give what a local Kit gives
    since = datetime.now(timezone.utc) - timedelta(minutes=30)
    assert bob.usage(request_id=[b.request_id, d.request_id], since=since).request_id.tolist() == [b.request_id]
    assert set(bob.usage(cache_hit=False).cache_hit) == {False}
    assert bob.usage(since=datetime.now(timezone.utc) + timedelta(hours=1)).empty
    second = bob.complete("Bob's second question", max_tokens=20)
    assert bob.usage(last=1).request_id.tolist() == [second.request_id]  # the newest, chosen by the server
    assert bob.usage(last=5).request_id.tolist() == bob.usage().request_id.tolist()[-5:]
    assert bob.usage(last=1, cache_hit=False).request_id.tolist() == [second.request_id]  # a filter applied here
    with pytest.raises(InvalidRequestError, match="last must be a positive whole number"):
        bob.usage(last=0)
    spend = bob.spend(by=["model", "user_id"])
    assert set(spend.user_id) == {"bob"} and spend.cost_usd.sum() == pytest.approx(bob.usage().cost_usd.sum())
    assert bob.summary().calls == len(bob.usage().query("status == 'ok'"))
    admin = client(server, "ana")
    assert {"bob", "dave"} <= set(admin.usage(project="iso").user_id)  # an admin reads everyone's
    assert set(admin.usage(user_id="dave").user_id) == {"dave"}
    for kit in (bob, dave, admin):
        kit.close()


def test_memory_through_the_server_is_scoped_to_the_token(server):
    bob, dave = client(server, "bob"), client(server, "dave")
    mid = bob.memory.store("bob", "I keep my notebooks in a git repository", metadata={"topic": "tools"})
    hits = bob.memory.retrieve("bob", "where are my notebooks kept?", k=3)
    assert hits[0].id == mid and hits[0].similarity > 0.3 and isinstance(hits[0].created_at, datetime)
    assert dave.memory.retrieve("dave", "where are my notebooks kept?", k=3) == []
    with pytest.raises(MemoryNotFoundError):
        dave.memory.get(mid)
    with pytest.raises(MemoryNotFoundError):
        dave.memory.delete(mid)
    assert bob.memory.update(mid, content="My notebooks live on the lab's GitLab")["content"].endswith("GitLab")
    assert bob.memory.history(mid).op.tolist() == ["store", "update"]
    bob.memory.delete(mid)
    with pytest.raises(MemoryNotFoundError):
        bob.memory.get(mid)
    with pytest.raises(ConfigurationError, match="memory.remember is not served"):
        bob.memory.remember("I moved to Berlin", "bob")
    vectors = bob.embed(["one", "two", "three"])
    assert vectors.shape == (3, 384) and abs(float((vectors[0] ** 2).sum()) - 1) < 1e-4


def test_client_mode_from_the_environment_and_its_guard_rails(server, monkeypatch, tmp_path):
    token = server.tokens["bob"]
    monkeypatch.setenv("COGNITIONOS_SERVER", server.url)
    monkeypatch.setenv("COGNITIONOS_TOKEN", token)
    kit = Kit(project="env")
    assert isinstance(kit, ServedKit) and kit.user == "bob"
    st = kit.status()
    assert st["client"] and st["server"] == server.url and st["user"] == "bob" and "home" not in st
    assert token not in repr(kit) and token not in json.dumps(st) and token not in kit._repr_html_()
    assert type(Kit(tmp_path / "local", server=False)) is Kit
    with pytest.warns(KitWarning, match="provider objects"):
        local = Kit(tmp_path / "local2", providers=[SimulatedProvider(name="mine")])
    assert type(local) is Kit
    with pytest.raises(ConfigurationError, match="providers cannot be set here"):
        Kit(server=server.url, token=token, providers=[SimulatedProvider(name="mine")])
    with pytest.raises(ConfigurationError, match="role_models"):
        Kit(role_models={"openai": {"executor": "gpt-4o"}})
    with pytest.raises(ConfigurationError, match="unexpected keyword argument.*projet"):
        Kit(projet="typo")
    monkeypatch.delenv("COGNITIONOS_TOKEN")
    with pytest.raises(ConfigurationError, match="needs an API token"):
        Kit()
    with pytest.raises(ConfigurationError, match="http"):
        Kit(server="ftp://example.org", token=token)
    monkeypatch.delenv("COGNITIONOS_SERVER")
    (tmp_path / ".env").write_text(f"COGNITIONOS_SERVER={server.url}\nCOGNITIONOS_TOKEN={token}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COGNITIONOS_DOTENV", "1")
    from_dotenv = Kit()
    assert isinstance(from_dotenv, ServedKit) and from_dotenv.status()["server_source"] == "dotenv"
    kit.close()


def test_notebook_01_runs_unchanged_against_a_live_server(tmp_path, monkeypatch):
    """The quickstart, as shipped, with only COGNITIONOS_SERVER and COGNITIONOS_TOKEN set: its Kit
    is a client of a simulated team server; the one Kit it builds from provider objects is local."""
    import nbformat
    import papermill

    root = Path(__file__).resolve().parent.parent
    env = {"COGNITIONOS_DOTENV": "0"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    tokens = add_users(tmp_path / "server-home", (), ("newcomer",))
    import os

    server_env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "ANTHROPIC"))}
    with running_server(tmp_path, tmp_path / "server-home", server_env, tokens) as s:
        monkeypatch.setenv("COGNITIONOS_SERVER", s.url)
        monkeypatch.setenv("COGNITIONOS_TOKEN", tokens["newcomer"])
        monkeypatch.setenv("COGNITIONOS_HOME", str(tmp_path / "local-home"))
        out = tmp_path / "out.ipynb"
        papermill.execute_notebook(str(root / "notebooks" / "01_quickstart.ipynb"), str(out), cwd=str(tmp_path),
                                   kernel_name="python3", progress_bar=False, request_save_on_cell_execute=False)
        rows = s.as_("newcomer", "GET", "/usage", params={"limit": 1000}).json()["rows"]
    nb = nbformat.read(out, as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")
    assert "simulated sim-small" in text and "True True" in text  # the answers, and the cache hit, came back
    assert "this Kit is local" in text  # the Kit built from provider objects said it is not served
    # the notebook's served calls are on the server, labelled with its project; none went to the local folder
    assert len(rows) >= 5 and {r["project"] for r in rows} == {"tutorial-01"} and {r["user_id"] for r in rows} == {"newcomer"}
    local = Kit(tmp_path / "local-home", server=False, dotenv=False)
    assert set(local.usage().provider) == {"flaky", "simulated"} and len(local.usage()) == 2
    local.close()
    assert tokens["newcomer"] not in out.read_text()


def test_dashboard_playground_and_log_browser_on_a_client_kit(server, providers):
    """The notebook views work unchanged on a client Kit: they read the server's ledger, budgets and models."""
    carol = client(server, "carol", views="session")  # carol has a user budget on the server
    d = carol.dashboard(refresh_s=None)
    assert "no calls" in d.summary.value and d.refresh(force=False) is False
    assert list(d.user_gauges) == ["carol (day)"]  # her budget, read from the server
    bob = client(server, "bob", project="views", views="project")  # the session is the test process's: shared
    pg = bob.playground()
    assert [v for _, v in pg.provider.options][1:] == ["openai", "anthropic"]
    assert "gpt-4o-mini" in [v for _, v in pg.model.options]
    pg.prompt.value = "Explain a token ledger"
    pg.role.value = "executor"
    c = pg.run()
    assert c is not None and c.provider == "openai" and c.user_id == "bob" and c.content in pg.output.value
    board = bob.dashboard(refresh_s=None)
    assert board.rows == 1
    bob.complete("One more", max_tokens=10)
    assert board.refresh(force=False) is True and board.rows == 2
    assert board.refresh(force=False) is False  # nothing new on the server: not redrawn
    browser = bob.log_browser(search="token ledger")  # the server's text log, found by text
    assert browser.entries is not None and browser.entries.request_id.tolist() == [c.request_id]
    assert [v for _, v in browser.user.options] == ["", "bob"]
    for kit in (carol, bob):
        kit.close()
