"""The team server as a lab would run it: ``python -m cognitionos_kit serve`` in its own process on a
free loopback port, its Kit's providers the official SDKs talking to the loopback provider servers,
driven over real HTTP with httpx. One server process for the whole module (CI time)."""

from __future__ import annotations

import json
import re
import time

import pytest
from conftest import ANTHROPIC_KEY, OPENAI_KEY
from team_server import cli as _cli
from team_server import guarded_server

from cognitionos_kit.server import Accounts


@pytest.fixture(scope="module")
def server(tmp_path_factory, _openai_server, _anthropic_server):
    with guarded_server(tmp_path_factory.mktemp("team"), _openai_server, _anthropic_server) as s:
        yield s


def test_every_route_but_health_needs_a_valid_token(server):
    assert server.as_(None, "GET", "/health").json() == {"status": "ok"}
    bob = server.tokens["bob"]
    altered = bob[:-1] + ("A" if bob[-1] != "A" else "B")
    for token in (None, "nope", "cok_0123456789ab_" + "x" * 43, altered, bob[:20]):
        r = server.as_(token, "GET", "/models")
        assert r.status_code == 401, (token, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
    for method, path in (("POST", "/complete"), ("POST", "/embed"), ("GET", "/usage"), ("GET", "/spend")):
        assert server.as_(None, method, path, json={}).status_code == 401
    models = server.as_("bob", "GET", "/models")
    assert models.status_code == 200
    assert {"openai", "anthropic"} <= {m["provider"] for m in models.json()["models"]}
    assert OPENAI_KEY not in models.text and ANTHROPIC_KEY not in models.text
    schema = server.as_(None, "GET", "/openapi.json").json()
    assert {"/health", "/models", "/complete", "/embed", "/usage", "/spend"} <= set(schema["paths"])
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    assert "swagger" in server.as_(None, "GET", "/docs").text.lower()


def test_a_token_from_the_cli_works_until_revoked_and_one_that_expires_stops(server, providers):
    added = _cli("users", "add", "erin", "--home", str(server.home), env=server.env, cwd=server.cwd)
    assert added.returncode == 0, added.stderr
    created = _cli("tokens", "create", "erin", "--home", str(server.home), env=server.env, cwd=server.cwd)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("cok_") and len(token) > 40
    r = server.complete(token, prompt="Say hello")
    assert r.status_code == 200, r.text
    rows = server.as_(token, "GET", "/usage", params={"request_id": r.json()["request_id"]}).json()["rows"]
    assert [row["user_id"] for row in rows] == ["erin"]

    revoked = _cli("tokens", "revoke", token[:16], "--home", str(server.home), env=server.env, cwd=server.cwd)
    assert revoked.returncode == 0 and "erin" in revoked.stdout, revoked.stderr
    assert token not in revoked.stdout
    assert server.complete(token, prompt="Say hello").status_code == 401
    listed = _cli("tokens", "list", "--user", "erin", "--home", str(server.home), env=server.env, cwd=server.cwd)
    assert "revoked" in listed.stdout and token not in listed.stdout

    accounts = Accounts(server.home)
    new = accounts.create_token("erin", expires_in_s=1.5)
    stored = b"".join(p.read_bytes() for p in accounts.path.parent.glob(accounts.path.name + "*"))  # -wal too
    accounts.close()
    assert new.token.encode() not in stored and new.token.split("_")[-1].encode() not in stored  # only a hash
    assert new.info.prefix.encode() in stored
    assert server.as_(new.token, "GET", "/spend").status_code == 200
    time.sleep(max(0.0, new.info.expires_at - time.time() + 0.05))
    assert server.as_(new.token, "GET", "/spend").status_code == 401


def test_complete_is_made_for_the_token_user_never_the_body(server, providers):
    openai, _ = providers
    r = server.complete("bob", prompt="Name a colour", temperature=0)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["provider"] == "openai" and answer["content"] and answer["substituted"] is False
    assert answer["cost_usd"] > 0 and answer["latency_ms"] > 0 and answer["request_id"].startswith("req_")
    assert len(openai.requests) == 1 and openai.requests[0].body["messages"][-1]["content"] == "Name a colour"

    refused = server.complete("bob", prompt="Name a colour", user_id="dave")
    assert refused.status_code == 422
    assert [e["loc"] for e in refused.json()["detail"]] == [["body", "user_id"]]
    assert len(openai.requests) == 1  # nothing sent

    rows = server.as_("ana", "GET", "/usage", params={"request_id": answer["request_id"]}).json()["rows"]
    assert [(row["user_id"], row["provider"], row["status"]) for row in rows] == [("bob", "openai", "ok")]


def test_each_user_sees_only_their_own_usage_and_spend_and_an_admin_sees_all(server, providers):
    bob = server.complete("bob", messages=[{"role": "user", "content": "Hi from bob"}]).json()["request_id"]
    dave = server.complete("dave", prompt="Hi from dave").json()["request_id"]
    for user, mine, theirs in (("bob", bob, dave), ("dave", dave, bob)):
        rows = server.as_(user, "GET", "/usage").json()["rows"]
        assert {row["user_id"] for row in rows} == {user}
        assert mine in {row["request_id"] for row in rows} and theirs not in {row["request_id"] for row in rows}
        spend = server.as_(user, "GET", "/spend").json()["rows"]
        assert [row["user_id"] for row in spend] == [user] and spend[0]["cost_usd"] > 0
        other = "dave" if user == "bob" else "bob"
        assert server.as_(user, "GET", "/usage", params={"user": other}).status_code == 403
        assert server.as_(user, "GET", "/spend", params={"user": other}).status_code == 403
    everyone = {row["user_id"] for row in server.as_("ana", "GET", "/spend").json()["rows"]}
    assert {"bob", "dave"} <= everyone
    only_dave = server.as_("ana", "GET", "/usage", params={"user": "dave"}).json()["rows"]
    assert only_dave and {row["user_id"] for row in only_dave} == {"dave"}
    by_model = server.as_("bob", "GET", "/spend", params={"by": "model"}).json()
    assert by_model["by"] == "model" and all("model" in row for row in by_model["rows"])


def test_concurrent_calls_of_two_users_each_get_one_row_of_their_own(server, providers):
    from concurrent.futures import ThreadPoolExecutor

    calls = [("bob" if i % 2 else "dave", f"Question {i}") for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda c: server.complete(c[0], prompt=c[1]), calls))
    assert [r.status_code for r in answers] == [200] * 16
    ids = {r.json()["request_id"]: user for r, (user, _) in zip(answers, calls)}
    assert len(ids) == 16 and len(providers[0].requests) == 16
    rows = server.as_("ana", "GET", "/usage").json()["rows"]
    recorded = {row["request_id"]: row["user_id"] for row in rows if row["request_id"] in ids}
    assert recorded == ids


@pytest.mark.parametrize("body, field", [
    ({"prompt": "hi", "temperature": 5}, ["body", "temperature"]),
    ({"prompt": "hi", "max_tokens": 0}, ["body", "max_tokens"]),
    ({"messages": [{"role": "robot", "content": "hi"}]}, ["body", "messages", 0, "role"]),
    ({"prompt": "hi", "role": "boss"}, ["body", "role"]),
])
def test_a_bad_body_is_a_422_that_names_the_field(server, providers, body, field):
    r = server.as_("bob", "POST", "/complete", json=body)
    assert r.status_code == 422
    assert field in [e["loc"] for e in r.json()["detail"]], r.text
    assert providers[0].requests == []


def test_a_prompt_and_messages_together_or_neither_is_a_422(server, providers):
    for body in ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, {"max_tokens": 5}):
        r = server.as_("bob", "POST", "/complete", json=body)
        assert r.status_code == 422 and "exactly one of prompt and messages" in r.text


def test_an_oversize_body_is_refused_with_413_and_the_server_goes_on(server, providers):
    r = server.complete("bob", prompt="x" * 1_100_000)
    assert r.status_code == 413
    assert providers[0].requests == []
    assert server.as_("bob", "GET", "/spend").status_code == 200


def test_a_streamed_completion_arrives_as_server_sent_events(server, providers):
    openai, _ = providers
    events = []
    headers = {"Authorization": f"Bearer {server.tokens['bob']}"}
    with server.http.stream("POST", "/complete", headers=headers,
                            json={"prompt": "Count to three", "stream": True, "max_tokens": 30}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    kinds = [k for k, _ in events]
    assert kinds[-1] == "completion" and kinds.count("chunk") >= 2 and set(kinds) == {"chunk", "completion"}
    done = events[-1][1]
    assert "".join(d["text"] for k, d in events if k == "chunk") == done["content"]
    assert done["provider"] == "openai" and done["completion_tokens"] > 0
    assert openai.requests[0].body["stream"] is True
    rows = server.as_("bob", "GET", "/usage", params={"request_id": done["request_id"]}).json()["rows"]
    assert [(row["user_id"], row["stream"]) for row in rows] == [("bob", True)]


def test_a_users_budget_is_enforced_through_the_server(server, providers):
    openai, _ = providers
    r = server.complete("carol", prompt="Write an essay")
    assert r.status_code == 402, r.text
    body = r.json()
    assert body["error"] == "BudgetExceededError" and body["budget"]["name"] == "carol"
    assert body["budget"]["scope"] == "user" and "budget" in body["detail"]
    streamed = server.complete("carol", prompt="Write an essay", stream=True)
    assert streamed.status_code == 402 and streamed.json()["error"] == "BudgetExceededError"
    assert openai.requests == []  # refused before sending
    assert server.complete("bob", prompt="Write an essay").status_code == 200  # bob has no budget


def test_a_users_rate_limit_is_enforced_through_the_server(server, providers):
    assert server.complete("fay", prompt="One").status_code == 200
    r = server.complete("fay", prompt="Two")
    assert r.status_code == 429 and r.json()["error"] == "RateLimitExceededError"
    assert int(r.headers["retry-after"]) >= 1
    assert len(providers[0].requests) == 1  # the second call was not sent
    assert server.complete("bob", prompt="Two").status_code == 200  # bob has no limit


def test_provider_failures_are_a_502_that_never_shows_a_key(server, providers):
    openai, anthropic = providers
    openai.enqueue_error(401, openai.error_body(401, f"Incorrect API key provided: {OPENAI_KEY}"))
    anthropic.enqueue_error(401, anthropic.error_body(401, f"invalid x-api-key {ANTHROPIC_KEY}"))
    r = server.complete("bob", prompt="Hello", role="executor")
    assert r.status_code == 502, r.text
    assert r.json()["error"] == "AllProvidersFailedError"
    assert OPENAI_KEY not in r.text and ANTHROPIC_KEY not in r.text
    assert "REDACTED" in r.text


def test_embed_returns_the_local_models_vectors(server):
    r = server.as_("bob", "POST", "/embed", json={"input": ["a cat", "a dog"]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["dim"] == 384 and len(out["embeddings"]) == 2 and len(out["embeddings"][0]) == 384
    assert server.as_("bob", "POST", "/embed", json={"input": []}).status_code == 422
    too_many = server.as_("bob", "POST", "/embed", json={"input": ["a"] * 257})
    assert too_many.status_code == 422 and "at most 256" in too_many.text


def test_the_admin_commands_explain_their_errors(tmp_path, capsys):
    from cognitionos_kit.cli import main

    home = str(tmp_path / "h")
    assert main(["users", "add", "ana", "--admin", "--home", home]) == 0
    assert main(["users", "add", "ana", "--home", home]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["users", "add", "no spaces", "--home", home]) == 2
    assert main(["tokens", "create", "nobody", "--home", home]) == 2
    assert "no user 'nobody'" in capsys.readouterr().err
    assert main(["tokens", "create", "ana", "--home", home]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["users", "list", "--home", home]) == 0
    assert re.search(r"^ana\s+yes\s+1\s", capsys.readouterr().out, re.M)
    assert main(["tokens", "revoke", "cok_ffffffffffff", "--home", home]) == 2
    assert main(["tokens", "revoke", token, "--home", home]) == 0
    assert main(["tokens", "revoke", token, "--home", home]) == 0  # again: still revoked, no error
    accounts = Accounts(home)
    assert accounts.authenticate(token) is None and [t.active for t in accounts.tokens("ana")] == [False]
    accounts.close()


def test_docs_can_be_turned_off(kit, tmp_path):
    from fastapi.testclient import TestClient

    from cognitionos_kit.server.app import create_app

    accounts = Accounts(tmp_path / "accounts")
    try:
        with_docs = TestClient(create_app(kit, accounts))
        without = TestClient(create_app(kit, accounts, docs=False))
        assert with_docs.get("/openapi.json").status_code == 200 and with_docs.get("/docs").status_code == 200
        assert without.get("/openapi.json").status_code == 404 and without.get("/docs").status_code == 404
        assert without.get("/health").status_code == 200
    finally:
        accounts.close()
