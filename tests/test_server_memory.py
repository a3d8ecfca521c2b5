"""The team server's memory routes over real HTTP: one server process for the module, two users
(bob, dave), every memory stored and read as the token's user."""

from __future__ import annotations

import pytest
from team_server import add_users, provider_env, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory, _openai_server, _anthropic_server):
    root = tmp_path_factory.mktemp("team_memory")
    home = root / "home"
    tokens = add_users(home, ("ana",), ("bob", "dave"))
    with running_server(root, home, provider_env(_openai_server, _anthropic_server), tokens) as s:
        yield s


def test_store_get_update_history_delete_round_trip(server):
    stored = server.as_("bob", "POST", "/memories", json={
        "content": "The lab's GPU quota resets on Mondays", "metadata": {"source": "wiki", "year": 2024},
        "memory_type": "procedural"})
    assert stored.status_code == 201, stored.text
    memory = stored.json()
    mid = memory["id"]
    assert mid.startswith("mem_") and memory["user_id"] == "bob" and memory["scope"] == "user"
    assert memory["memory_type"] == "procedural" and memory["metadata"] == {"source": "wiki", "year": 2024}
    again = server.as_("bob", "POST", "/memories", json={"content": "The lab's GPU quota resets on Mondays"})
    assert again.json()["id"] == mid  # stored once

    got = server.as_("bob", "GET", f"/memories/{mid}")
    assert got.status_code == 200 and got.json()["content"] == "The lab's GPU quota resets on Mondays"
    assert got.json()["created_at"].startswith("20")

    changed = server.as_("bob", "PATCH", f"/memories/{mid}", json={"content": "The GPU quota resets on Fridays"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["content"] == "The GPU quota resets on Fridays"
    assert changed.json()["metadata"] == {"source": "wiki", "year": 2024}
    retagged = server.as_("bob", "PATCH", f"/memories/{mid}", json={"metadata": {"source": "chat"}})
    assert retagged.json()["metadata"] == {"source": "chat"}

    hits = server.as_("bob", "POST", "/retrieve", json={"query": "when does the GPU quota reset?", "k": 3}).json()["hits"]
    assert [h["id"] for h in hits] == [mid]
    assert hits[0]["content"] == "The GPU quota resets on Fridays" and hits[0]["similarity"] > 0.5
    assert {"score", "decay", "boost", "metadata", "rank"} <= set(hits[0])

    changes = server.as_("bob", "GET", f"/memories/{mid}/history").json()["changes"]
    assert [c["op"] for c in changes] == ["store", "update", "update"]
    assert changes[1]["old_content"] == "The lab's GPU quota resets on Mondays"
    assert changes[1]["new_content"] == "The GPU quota resets on Fridays"
    assert changes[2]["old_metadata"] == {"source": "wiki", "year": 2024} and changes[2]["new_metadata"] == {"source": "chat"}

    deleted = server.as_("bob", "DELETE", f"/memories/{mid}")
    assert deleted.status_code == 200 and deleted.json() == {"id": mid, "deleted": True}
    assert server.as_("bob", "GET", f"/memories/{mid}").status_code == 404
    assert server.as_("bob", "DELETE", f"/memories/{mid}").status_code == 404
    assert server.as_("bob", "POST", "/retrieve", json={"query": "GPU quota"}).json()["hits"] == []
    after = server.as_("bob", "GET", f"/memories/{mid}/history").json()["changes"]
    assert [c["op"] for c in after] == ["store", "update", "update", "delete"]


def test_two_users_memories_are_isolated_and_anothers_id_is_a_404_like_an_unknown_one(server):
    bob = server.as_("bob", "POST", "/memories", json={"content": "bob's private note about penguins"}).json()["id"]
    dave = server.as_("dave", "POST", "/memories", json={"content": "dave's private note about penguins"}).json()["id"]
    shared = server.as_("bob", "POST", "/memories",
                        json={"content": "Penguins live in the southern hemisphere", "scope": "global"}).json()["id"]
    for user, mine, theirs in (("bob", bob, dave), ("dave", dave, bob)):
        seen = {h["id"] for h in server.as_(user, "POST", "/retrieve", json={"query": "penguins", "k": 50}).json()["hits"]}
        assert seen == {mine, shared}
        unknown = "mem_" + "0" * 32
        for method, path, body in (("GET", "/memories/{}", None), ("PATCH", "/memories/{}", {"content": "mine now"}),
                                   ("DELETE", "/memories/{}", None), ("GET", "/memories/{}/history", None)):
            other = server.as_(user, method, path.format(theirs), json=body)
            missing = server.as_(user, method, path.format(unknown), json=body)
            assert other.status_code == missing.status_code == 404, (method, path, other.text)
            assert other.json()["detail"] == missing.json()["detail"].replace(unknown, theirs)
    assert server.as_("dave", "GET", f"/memories/{bob}").status_code == 404
    assert server.as_("bob", "GET", f"/memories/{bob}").json()["content"] == "bob's private note about penguins"

    # a global memory: everyone reads it and its history; only its owner changes it
    assert server.as_("dave", "GET", f"/memories/{shared}").json()["user_id"] == "bob"
    assert server.as_("dave", "GET", f"/memories/{shared}/history").status_code == 200
    assert server.as_("dave", "PATCH", f"/memories/{shared}", json={"content": "no"}).status_code == 404
    assert server.as_("dave", "DELETE", f"/memories/{shared}").status_code == 404
    assert server.as_("bob", "PATCH", f"/memories/{shared}", json={"metadata": {"checked": True}}).status_code == 200

    # the same content stored by each user is two memories, each its owner's
    a = server.as_("bob", "POST", "/memories", json={"content": "same words"}).json()
    b = server.as_("dave", "POST", "/memories", json={"content": "same words"}).json()
    assert a["id"] != b["id"] and (a["user_id"], b["user_id"]) == ("bob", "dave")


def test_retrieve_takes_the_memory_apis_filters(server):
    ids = {year: server.as_("dave", "POST", "/memories", json={
        "content": f"Report on sea ice extent, {year}", "metadata": {"year": year, "kind": "report"},
        "memory_type": "episodic"}).json()["id"] for year in (2019, 2021, 2023)}
    agent = server.as_("dave", "POST", "/memories", json={
        "content": "Report on sea ice extent, agent copy", "scope": "agent", "agent_id": "crawler"}).json()["id"]

    def found(**body) -> set[str]:
        r = server.as_("dave", "POST", "/retrieve", json={"query": "sea ice report", "k": 20, **body})
        assert r.status_code == 200, r.text
        return {h["id"] for h in r.json()["hits"]}

    assert found(filters={"year": {"$gte": 2021}}) == {ids[2021], ids[2023]}
    assert found(filters={"kind": "report"}, memory_type="episodic", k=2) <= set(ids.values())
    assert len(found(k=2)) == 2
    assert agent not in found() and agent in found(agent_id="crawler")
    assert found(memory_type=["procedural"]).isdisjoint(ids.values())
    bad = server.as_("dave", "POST", "/retrieve", json={"query": "ice", "filters": {"year": {"$between": [1, 2]}}})
    assert bad.status_code == 422 and "$between" in bad.json()["detail"]


@pytest.mark.parametrize("method, path, body, field", [
    ("POST", "/memories", {"content": "x", "user_id": "dave"}, ["body", "user_id"]),
    ("POST", "/memories", {"content": ""}, ["body", "content"]),
    ("POST", "/memories", {"content": "x", "memory_type": "dream"}, ["body", "memory_type"]),
    ("POST", "/memories", {"content": "x", "scope": "team"}, ["body", "scope"]),
    ("POST", "/memories", {"content": "x", "metadata": ["not", "a", "dict"]}, ["body", "metadata"]),
    ("POST", "/retrieve", {"query": "x", "k": 0}, ["body", "k"]),
    ("POST", "/retrieve", {"query": "x", "user_id": "dave"}, ["body", "user_id"]),
    ("PATCH", "/memories/mem_1", {"content": "x", "user_id": "dave"}, ["body", "user_id"]),
])
def test_a_bad_memory_body_is_a_422_that_names_the_field(server, method, path, body, field):
    r = server.as_("bob", method, path, json=body)
    assert r.status_code == 422, r.text
    assert field in [e["loc"] for e in r.json()["detail"]], r.text


def test_a_memory_body_the_library_refuses_is_a_422_and_nothing_is_stored(server):
    def ids() -> list[str]:
        return [h["id"] for h in server.as_("bob", "POST", "/retrieve", json={"query": "orphan note", "k": 50}).json()["hits"]]

    before = ids()
    r = server.as_("bob", "POST", "/memories", json={"content": "orphan agent note", "agent_id": "crawler"})
    assert r.status_code == 422 and "agent_id is only for scope='agent'" in r.json()["detail"]
    assert server.as_("bob", "POST", "/memories", json={"content": "x", "scope": "agent"}).status_code == 422
    empty = server.as_("bob", "PATCH", "/memories/mem_1", json={})
    assert empty.status_code == 422 and "content and/or metadata" in empty.text
    assert ids() == before


def test_every_memory_route_needs_a_token(server):
    for method, path in (("POST", "/memories"), ("GET", "/memories/mem_1"), ("PATCH", "/memories/mem_1"),
                         ("DELETE", "/memories/mem_1"), ("GET", "/memories/mem_1/history"), ("POST", "/retrieve")):
        assert server.as_(None, method, path, json={}).status_code == 401, (method, path)
        assert server.as_("cok_0123456789ab_" + "x" * 43, method, path, json={}).status_code == 401
    paths = set(server.as_(None, "GET", "/openapi.json").json()["paths"])
    assert {"/memories", "/memories/{memory_id}", "/memories/{memory_id}/history", "/retrieve"} <= paths
