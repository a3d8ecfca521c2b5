"""Memory calls you can trust under faults: get/update/delete/history only for the memory's owner
(another user's memory looks exactly like a missing one), junk filters refused before anything is
embedded or searched, and bad text (lone surrogates, wrong types) refused before anything is
written. Real DuckDB files under tmp_path and the real local embedder throughout."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from cognitionos_kit.calls.embeddings import get_local_embedder
from cognitionos_kit.core.errors import InvalidRequestError, KitError
from cognitionos_kit.memory import Memory, MemoryNotFoundError, OwnerRequiredError

BAD = "\udc80"  # a lone surrogate, as bytes decoded with errors="surrogateescape" carry


def _journal_bytes(home: Path) -> int:
    d = Path(home) / "memory-journal"
    return sum(f.stat().st_size for f in d.iterdir()) if d.exists() else 0


@pytest.fixture
def embeds(monkeypatch) -> list[int]:
    """How many texts the real local embedder was asked to embed, call by call."""
    emb = get_local_embedder()
    real = emb.embed
    calls: list[int] = []

    def counting(texts):
        calls.append(len(texts) if not isinstance(texts, str) else 1)
        return real(texts)

    monkeypatch.setattr(emb, "embed", counting)
    return calls


@pytest.fixture
def owned(kit):
    """ana's private, agent-scoped and global memories, and one of bob's."""
    m = kit.memory
    ids = {
        "private": m.store("ana", "Ana's locker code is 4921.", metadata={"kind": "secret"}),
        "agent": m.store("ana", "Ana asked the travel agent for a window seat.", scope="agent", agent_id="travel"),
        "global": m.store("ana", "The lab closes at 6 pm on Fridays.", scope="global", metadata={"kind": "notice"}),
        "bobs": m.store("bob", "Bob's bike is the red one."),
    }
    return m, ids


def _state(m: Memory, mid: str, owner: str) -> tuple:
    """Everything a refused call must leave alone: the memory as its owner sees it, its history,
    the whole collection."""
    got = m.get(mid, user_id=owner)
    hist = m.history(mid, user_id=owner)
    frame = m.frame()
    return got, hist.astype(str).to_dict("list"), frame.astype(str).to_dict("list")  # str: NaN != NaN


CALLS = {
    "get": lambda m, mid, who: m.get(mid, user_id=who),
    "update": lambda m, mid, who: m.update(mid, user_id=who, content="Overwritten by someone else."),
    "update_metadata": lambda m, mid, who: m.update(mid, user_id=who, metadata={"kind": "pwned"}),
    "delete": lambda m, mid, who: m.delete(mid, user_id=who),
    "purge": lambda m, mid, who: m.delete(mid, user_id=who, purge=True),
    "history": lambda m, mid, who: m.history(mid, user_id=who),
}


# --- owners -------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", sorted(CALLS))
@pytest.mark.parametrize("which", ["private", "agent"])
def test_another_users_memory_is_refused_exactly_like_a_missing_id(owned, kit, embeds, op, which):
    m, ids = owned
    mid = ids[which]
    before, journal, n = _state(m, mid, "ana"), _journal_bytes(kit.home), len(m)
    embeds.clear()
    with pytest.raises(MemoryNotFoundError) as other:
        CALLS[op](m, mid, "bob")
    missing = "mem_" + "0" * 32
    with pytest.raises(MemoryNotFoundError) as unknown:
        CALLS[op](m, missing, "bob")
    assert type(other.value) is type(unknown.value)
    assert str(other.value).replace(mid, "ID") == str(unknown.value).replace(missing, "ID")
    assert str(other.value) == f"no memory {mid!r} for user 'bob' in collection 'default'"
    assert isinstance(other.value, KitError) and isinstance(other.value, KeyError)  # old `except KeyError` still works
    assert "ana" not in str(other.value) and "locker" not in str(other.value)
    # nothing embedded, written or changed
    assert embeds == [] and _journal_bytes(kit.home) == journal and len(m) == n
    assert _state(m, mid, "ana") == before


@pytest.mark.parametrize("op", ["get", "history", "update", "delete"])
def test_a_deleted_memory_looks_like_one_never_stored(owned, op):
    m, ids = owned
    m.delete(ids["private"], user_id="ana")
    if op == "history":  # history outlives the memory for its owner, not for anyone else
        assert list(m.history(ids["private"], user_id="ana").op) == ["store", "delete"]
        who = "bob"
    else:
        who = "ana"
    with pytest.raises(MemoryNotFoundError) as gone:
        CALLS[op](m, ids["private"], who)
    with pytest.raises(MemoryNotFoundError) as never:
        CALLS[op](m, "mem_never", who)
    assert str(gone.value).replace(ids["private"], "ID") == str(never.value).replace("mem_never", "ID")


def test_the_owner_can_get_update_read_history_and_delete(owned, kit):
    m, ids = owned
    for which in ("private", "agent", "global"):
        mid = ids[which]
        got = m.get(mid, user_id="ana")
        assert got["id"] == mid and got["user_id"] == "ana" and got["scope"] == {"private": "user"}.get(which, which)
        new = f"Updated {which} memory about the lab, the seat and the locker."
        assert m.update(mid, user_id="ana", content=new, metadata={"v": 2})["content"] == new
        assert m.get(mid, user_id="ana")["metadata"] == {"v": 2}
        h = m.history(mid, user_id="ana")
        assert list(h.op) == ["store", "update"] and h.new_content.iloc[-1] == new
        m.delete(mid, user_id="ana", purge=which == "global")
        assert list(m.history(mid, user_id="ana").op) == ["store", "update", "delete"]
        with pytest.raises(MemoryNotFoundError):
            m.get(mid, user_id="ana")
    assert set(m.frame().id) == {ids["bobs"]}
    assert m.get(ids["bobs"], user_id="bob")["content"] == "Bob's bike is the red one."


def test_a_global_memory_is_readable_by_anyone_but_changed_only_by_who_stored_it(owned, kit):
    m, ids = owned
    g = ids["global"]
    for who in ("bob", "carol"):
        assert m.get(g, user_id=who)["content"] == "The lab closes at 6 pm on Fridays."
        assert list(m.history(g, user_id=who).op) == ["store"]
    before, journal = _state(m, g, "ana"), _journal_bytes(kit.home)
    for op in ("update", "update_metadata", "delete", "purge"):
        with pytest.raises(MemoryNotFoundError) as e:
            CALLS[op](m, g, "bob")
        assert str(e.value) == f"no memory {g!r} for user 'bob' in collection 'default'"
    assert _state(m, g, "ana") == before and _journal_bytes(kit.home) == journal
    assert g in {h.id for h in m.retrieve("bob", "when does the lab close?", k=5)}
    # the history of a global memory stays readable by others after its owner deletes it
    m.delete(g, user_id="ana")
    assert list(m.history(g, user_id="bob").op) == ["store", "delete"]
    with pytest.raises(MemoryNotFoundError):
        m.get(g, user_id="bob")


def test_a_fresh_process_enforces_the_same_owners(owned, kit):
    m, ids = owned
    fresh = Memory(kit.home)  # loads from DuckDB and the journals, not from m's table
    assert fresh.get(ids["agent"], user_id="ana")["scope"] == "agent"
    with pytest.raises(MemoryNotFoundError):
        fresh.get(ids["agent"], user_id="bob")
    with pytest.raises(MemoryNotFoundError):
        fresh.delete(ids["global"], user_id="bob")
    assert len(fresh) == 4


# --- the new signature ----------------------------------------------------------------------------
@pytest.mark.parametrize("name, call, shown", [
    ("get", lambda m, mid: m.get(mid), 'kit.memory.get(memory_id, user_id="ana")'),
    ("update", lambda m, mid: m.update(mid, content="x"), 'kit.memory.update(memory_id, user_id="ana", content="...")'),
    ("delete", lambda m, mid: m.delete(mid), 'kit.memory.delete(memory_id, user_id="ana")'),
    ("delete", lambda m, mid: m.delete(mid, purge=True), 'kit.memory.delete(memory_id, user_id="ana")'),
    ("history", lambda m, mid: m.history(mid), 'kit.memory.history(memory_id, user_id="ana")'),
    ("get", lambda m, mid: m.get(mid, "ana"), 'kit.memory.get(memory_id, user_id="ana")'),
    ("update", lambda m, mid: m.update(mid, "ana", content="x"), 'kit.memory.update(memory_id, user_id="ana", content="...")'),
    ("delete", lambda m, mid: m.delete(mid, "ana"), 'kit.memory.delete(memory_id, user_id="ana")'),
    ("delete", lambda m, mid: m.delete(mid, "ana", True), 'kit.memory.delete(memory_id, user_id="ana")'),
    ("history", lambda m, mid: m.history(mid, "ana"), 'kit.memory.history(memory_id, user_id="ana")'),
    ("get", lambda m, mid: m.get(mid, user="ana"), 'kit.memory.get(memory_id, user_id="ana")'),
])
def test_user_id_is_required_and_keyword_only_with_a_message_showing_the_call(owned, kit, name, call, shown):
    m, ids = owned
    mid = ids["private"]
    before, journal = _state(m, mid, "ana"), _journal_bytes(kit.home)
    with pytest.raises(OwnerRequiredError) as e:
        call(m, mid)
    assert isinstance(e.value, TypeError) and isinstance(e.value, InvalidRequestError)
    msg = str(e.value)
    assert msg.startswith(f"{name}()") and shown in msg and "keyword" in msg
    assert _state(m, mid, "ana") == before and _journal_bytes(kit.home) == journal


def test_signatures_show_user_id_as_required_keyword():
    for name in ("get", "update", "delete", "history"):
        p = inspect.signature(getattr(Memory, name)).parameters
        assert list(p)[:3] == ["self", "memory_id", "user_id"], name
        assert p["user_id"].kind is inspect.Parameter.KEYWORD_ONLY and p["user_id"].default is inspect.Parameter.empty


@pytest.mark.parametrize("user_id", ["", "   ", None, 7, ["ana"], BAD, "ana" + BAD])
def test_a_bad_user_id_is_an_invalid_request_not_a_lookup(owned, user_id):
    m, ids = owned
    for op in ("get", "update", "delete", "history"):
        with pytest.raises(InvalidRequestError, match="user_id") as e:
            CALLS[op](m, ids["private"], user_id)
        assert not isinstance(e.value, MemoryNotFoundError)
    assert len(m) == 4


# --- junk filters -------------------------------------------------------------------------------
JUNK = [
    ({"kind": {"$in": [{"$gt": 1}]}}, r"operator '\$gt' inside a value"),
    ({"kind": {"$eq": {"$gt": 1}}}, r"operator '\$gt' inside a value"),
    ({"kind": {"$ne": {"a": {"$exists": True}}}}, r"operator '\$exists' inside a value"),
    ({"kind": {"sub": {"$gt": 1}}}, r"operator '\$gt' inside a value.*nested fields cannot be queried"),
    ({"kind": [{"$in": ["a"]}]}, r"operator '\$in' inside a value"),
    ({"kind": {"$gt": 1, "b": 2}}, r"operators mixed with plain keys \['b'\]"),
    ({"kind": {"$in": ["a"], 3: "x"}}, r"operators mixed with plain keys \[3\]"),
    ({"": "x"}, r"field names must be non-empty strings"),
    ({3: "x"}, r"field names must be non-empty strings"),
    ({None: "x"}, r"field names must be non-empty strings"),
    ({"$or": [{"kind": "secret"}, {"kind": "notice"}]}, r"top-level operators.*not supported.*\$in"),
    ({"$and": [{"kind": "secret"}]}, r"top-level operators"),
    ({"kind": {"$like": "sec%"}}, r"unknown operator '\$like'"),
    ({"kind": {"secret", "notice"}}, r"a set is not a JSON value.*sorted"),
    ({"kind": object()}, r"a object is not a JSON value"),
    ({"kind": print}, r"is not a JSON value"),
    ({"kind": lambda v: True}, r"a function is not a JSON value"),
    ({"kind": b"secret"}, r"a bytes is not a JSON value"),
    ({"kind": float("nan")}, r"not a JSON number"),
    ({"kind": {"$in": [float("inf")]}}, r"not a JSON number"),
    ({"kind": {"$in": "secret"}}, r"\$in needs a list, got str"),
    ({"kind": {"$nin": {"secret"}}}, r"\$nin needs a list, got set"),
    ({"kind": {"$in": {"a": 1}}}, r"\$in needs a list, got dict"),
    ({"kind": {"$in": None}}, r"\$in needs a list"),
    ({"kind": {"$exists": "yes"}}, r"\$exists needs True or False"),
    ({"kind": {"$exists": 1}}, r"\$exists needs True or False"),
    ({"kind": {"$gt": [1]}}, r"\$gt needs a number or a string"),
    ({"kind": {"$lte": None}}, r"\$lte needs a number or a string"),
    ({"kind": {"$gte": True}}, r"\$gte needs a number or a string"),
    ({"kind": {"$lt": float("nan")}}, r"not a JSON number"),
    ({"kind": {1: "x"}}, r"dict keys must be strings"),
    ({"kind": "secret" + BAD}, r"lone surrogate"),
    ({"ki" + BAD: "secret"}, r"filter field name holds a lone surrogate"),
    ({"kind": {"$in": ["a", BAD]}}, r"lone surrogate"),
    ("kind = 'secret'", r"filters must be a dict.*e\.g\. filters=\{"),
    ([("kind", "secret")], r"filters must be a dict"),
]


@pytest.mark.parametrize("filters, message", JUNK, ids=[repr(f)[:40] for f, _ in JUNK])
def test_junk_filters_are_refused_before_anything_is_embedded_or_searched(owned, kit, embeds, filters, message):
    m, ids = owned
    counts = m.frame().set_index("id").access_count.to_dict()
    journal = _journal_bytes(kit.home)
    embeds.clear()
    with pytest.raises(InvalidRequestError, match=message) as e:
        m.retrieve("ana", "what is the locker code?", k=3, filters=filters)
    assert "e.g." in str(e.value) or "lone surrogate" in str(e.value) or "JSON number" in str(e.value) \
        or "unknown operator" in str(e.value)  # says how to write it
    with pytest.raises(InvalidRequestError, match=message):
        m.retrieve_by_vector("ana", get_local_embedder().embed(["locker"])[0], k=3, filters=filters)
    assert embeds == [1]  # only the vector this test made: retrieve embedded nothing
    assert m.frame().set_index("id").access_count.to_dict() == counts  # nothing was searched or counted
    assert _journal_bytes(kit.home) == journal


def test_good_filters_keep_working_including_equality_to_a_whole_dict(kit):
    m = kit.memory
    a = m.store("u", "Invoice from the Lisbon office.", metadata={"office": {"city": "Lisbon", "floor": 2},
                                                                  "tags": ["a", "b"], "n": 1, "flag": True})
    b = m.store("u", "Invoice from the Porto office.", metadata={"office": {"city": "Porto", "floor": 1}, "n": 2})

    def got(f):
        return {h.id for h in m.retrieve("u", "invoice", k=10, filters=f)}

    assert got({"office": {"city": "Lisbon", "floor": 2}}) == {a}  # a plain dict: equality to the whole value
    assert got({"office": {"$eq": {"city": "Porto", "floor": 1}}}) == {b}
    assert got({"office": {"$ne": {"city": "Porto", "floor": 1}}}) == {a}
    assert got({"office": {"$in": [{"city": "Porto", "floor": 1}, {"city": "Rome"}]}}) == {b}
    assert got({"office": {}}) == set()  # equality to an empty dict: nothing has one
    assert got({"tags": ["a", "b"]}) == {a}
    assert got({"n": {"$in": (1, 3)}}) == {a}  # a tuple is a list
    assert got({"n": {"$in": []}}) == set()  # an empty list is valid: it matches nothing
    assert got({"n": {"$gte": 1, "$lt": 2.5}}) == {a, b}
    assert got({"flag": {"$exists": False}}) == {b}
    assert got({"flag": True}) == {a} and got({"n": True}) == set()  # True is not 1 in metadata
    assert got({}) == {a, b} and got(None) == {a, b}
    assert got({"missing": None}) == set() and got({"office": {"$ne": None}}) == {a, b}


# --- text and types -------------------------------------------------------------------------------
BAD_INPUT = [
    (lambda m, i: m.store("ana", "locker " + BAD), "content"),
    (lambda m, i: m.store("ana" + BAD, "a fine text"), "user_id"),
    (lambda m, i: m.store(BAD, "a fine text"), "user_id"),
    (lambda m, i: m.store("ana", "a fine text", scope="agent", agent_id="tr" + BAD), "agent_id"),
    (lambda m, i: m.store("ana", "a fine text", scope="agent", agent_id=5), "agent_id"),
    (lambda m, i: m.store("ana", "a fine text", metadata={"k" + BAD: 1}), "metadata key"),
    (lambda m, i: m.store("ana", "a fine text", metadata={"k": "v" + BAD}), r"metadata\['k'\]"),
    (lambda m, i: m.store("ana", "a fine text", metadata={"k": [{"deep": BAD}]}), r"metadata\['k'\]\[0\]\['deep'\]"),
    (lambda m, i: m.store("ana", "a fine text", metadata={"k": {1: "int key"}}), "keys must be str"),
    (lambda m, i: m.store("ana", "a fine text", metadata={2: "int key"}), "keys must be str"),
    (lambda m, i: m.store("ana", "a fine text", metadata={"k": {"a", "b"}}), "JSON"),
    (lambda m, i: m.store("ana", "a fine text", metadata={"k": float("nan")}), "JSON"),
    (lambda m, i: m.store_many("ana", ["fine", "bad " + BAD]), r"contents\[1\]"),
    (lambda m, i: m.store_many("ana", ["fine", "also fine"], metadata=[{}, {"x": BAD}]), r"metadata\[1\]"),
    (lambda m, i: m.store_many("ana", ["fine", None]), r"contents\[1\]"),
    (lambda m, i: m.retrieve("ana", "locker" + BAD), "query"),
    (lambda m, i: m.retrieve("ana" + BAD, "locker"), "user_id"),
    (lambda m, i: m.retrieve("ana", "locker", agent_id="travel" + BAD), "agent_id"),
    (lambda m, i: m.retrieve("ana", "locker", agent_id=""), "agent_id"),
    (lambda m, i: m.retrieve("ana", b"locker"), "query"),
    (lambda m, i: m.update(i["private"], user_id="ana", content="new " + BAD), "content"),
    (lambda m, i: m.update(i["private"], user_id="ana", metadata={"k": BAD}), "metadata"),
    (lambda m, i: m.update(i["private"], user_id="ana", metadata={"k": {3: 4}}), "keys must be str"),
    (lambda m, i: m.get(i["private"] + BAD, user_id="ana"), "memory_id"),
    (lambda m, i: m.delete(i["private"] + BAD, user_id="ana"), "memory_id"),
    (lambda m, i: m.history(BAD, user_id="ana"), "memory_id"),
    (lambda m, i: m.frame(BAD), "user_id"),
]


@pytest.mark.parametrize("call, message", BAD_INPUT, ids=[f"{i}-{m}"[:30] for i, (_, m) in enumerate(BAD_INPUT)])
def test_bad_text_and_types_are_refused_with_nothing_embedded_or_written(owned, kit, embeds, call, message):
    m, ids = owned
    before, n, journal = _state(m, ids["private"], "ana"), len(m), _journal_bytes(kit.home)
    embeds.clear()
    with pytest.raises(InvalidRequestError, match=message) as e:
        call(m, ids)
    assert not isinstance(e.value, MemoryNotFoundError)
    assert embeds == [] and len(m) == n and _journal_bytes(kit.home) == journal
    assert _state(m, ids["private"], "ana") == before
    assert len(Memory(kit.home)) == n  # nor in DuckDB, as a new process sees it


def test_store_many_of_nothing_returns_nothing_and_writes_nothing(kit, embeds):
    m = kit.memory
    journal = _journal_bytes(kit.home)
    assert m.store_many("ana", []) == [] and m.store_many("ana", ()) == []
    assert embeds == [] and len(m) == 0 and _journal_bytes(kit.home) == journal
    with pytest.raises(InvalidRequestError, match="user_id"):  # still validated
        m.store_many(BAD, [])


def test_embedding_an_empty_list_is_a_clear_error(kit):
    for empty in ([], ()):
        with pytest.raises(InvalidRequestError, match="texts is empty: pass at least one string"):
            get_local_embedder().embed(empty)
        with pytest.raises(InvalidRequestError, match="texts is empty: pass at least one string"):
            kit.embed(empty)
    with pytest.raises(InvalidRequestError, match=r"texts\[1\] holds a lone surrogate"):
        get_local_embedder().embed(["fine", "bad " + BAD])
    assert get_local_embedder().embed(["fine"]).shape == (1, 384)


@pytest.mark.parametrize("kw, message", [
    ({"k": 0}, "k must be"), ({"k": -1}, "k must be"), ({"k": 2.0}, "k must be"), ({"k": "3"}, "k must be"),
    ({"k": True}, "k must be"), ({"k": None}, "k must be"),
    ({"weights": {"similarity": 0, "decay": 0, "boost": 0}}, "all 0"), ({"weights": (0, 0, 0)}, "all 0"),
    ({"weights": {"decay": float("nan")}}, "decay"), ({"weights": {"boost": float("inf")}}, "boost"),
    ({"weights": {"similarity": -1}}, "similarity"), ({"weights": {"decay": "0.1"}}, "decay"),
    ({"weights": {"decay": True}}, "decay"), ({"weights": [1, 2]}, "3-tuple"), ({"weights": "heavy"}, "weights"),
    ({"half_life_days": 0}, "half_life_days"), ({"half_life_days": -3}, "half_life_days"),
    ({"half_life_days": float("nan")}, "half_life_days"), ({"half_life_days": float("inf")}, "half_life_days"),
    ({"half_life_days": "30"}, "half_life_days"), ({"half_life_days": True}, "half_life_days"),
    ({"boost_cap": 0}, "boost_cap"), ({"boost_cap": 2.5}, "boost_cap"),
    ({"now": float("nan")}, "now"), ({"created_after": "last week"}, "created_after"),
])
def test_ranking_settings_must_be_sane_numbers(owned, kit, embeds, kw, message):
    m, ids = owned
    counts, journal = m.frame().set_index("id").access_count.to_dict(), _journal_bytes(kit.home)
    embeds.clear()
    with pytest.raises(InvalidRequestError, match=message):
        m.retrieve("ana", "locker code", **kw)
    assert embeds == [] and _journal_bytes(kit.home) == journal
    assert m.frame().set_index("id").access_count.to_dict() == counts


@pytest.mark.parametrize("kind, kw", [("hnsw", {}), ("approximate", {"nprobe": 0}), ("approximate", {"nlist": "64"}),
                                      ("approximate", {"retrain_growth": 0.5}), ("approximate", {"nprobe": True})])
def test_bad_index_settings_are_refused_and_change_nothing(kit, kind, kw):
    m = kit.memory
    with pytest.raises(InvalidRequestError):
        m.use_index(kind, **kw)
    assert m.index == "exact"


def test_bad_memory_settings_are_refused(tmp_path):
    for kw in ({"weights": (0, 0, 0)}, {"half_life_days": float("nan")}, {"collection": "c" + BAD}):
        with pytest.raises(InvalidRequestError):
            Memory(tmp_path / "home", **kw)
    assert not (tmp_path / "home").exists()
