"""Retrieval-augmented calls (issue 14 item 5): ``kit.complete(prompt, memory=user_id, k=...)`` puts
the user's top memories in the system prompt the provider receives and records their ids on the
ledger row and the Completion; a call without ``memory=`` records nothing there."""

from __future__ import annotations

import asyncio
import json

import pytest

from cognitionos_kit.calls.recall import MEMORY_HEADER
from cognitionos_kit.core.errors import InvalidRequestError

NOTES = ["I'm vegetarian.", "I'm allergic to peanuts.", "I live in Berlin.", "My favourite drink is flat white.",
         "I play the cello on Sundays."]


def _store(kit, user="ada") -> dict[str, str]:
    return {kit.memory.store(user, n): n for n in NOTES}


def _system(body: dict) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] in ("system", "developer"))


def test_a_rag_call_sends_the_top_memories_and_records_them(live_kit, openai_server):
    ids = _store(live_kit)
    _store(live_kit, "bob")  # another user's identical notes must not be used
    expected = [h.id for h in live_kit.memory.retrieve("ada", "What should I cook for dinner?", k=3, track=False)]
    before = live_kit.memory.frame("ada").set_index("id").access_count.to_dict()
    r = live_kit.complete("What should I cook for dinner?", model="gpt-4o-mini", memory="ada", k=3)
    assert r.provider == "openai" and r.memory_ids == expected and set(expected) <= set(ids)
    system = _system(openai_server.requests[-1].body)
    assert system == MEMORY_HEADER + "\n" + "\n".join(f"- {ids[i]}" for i in expected)
    assert all(ids[i] in system for i in expected) and sum(n in system for n in NOTES) == 3
    row = live_kit.usage(request_id=r.request_id).iloc[0]
    assert row.memory_user == "ada" and json.loads(row.memory_ids) == expected
    # read-only: being put in the prompt does not count as an access (no drift)
    assert live_kit.memory.frame("ada").set_index("id").access_count.to_dict() == before
    assert live_kit.memory.mark_used(r.memory_ids, user_id="ada") == 3  # the caller counts them when they helped


def test_a_call_without_memory_has_null_memory_columns_and_an_untouched_prompt(live_kit, openai_server):
    _store(live_kit)
    r = live_kit.complete("What should I cook for dinner?", model="gpt-4o-mini", system="Be brief.")
    assert r.memory_ids is None
    assert _system(openai_server.requests[-1].body) == "Be brief."
    assert live_kit.usage(request_id=r.request_id)[["memory_user", "memory_ids"]].isna().all(axis=None)


def test_the_callers_system_prompt_comes_first_and_k_defaults_to_five(live_kit, openai_server):
    _store(live_kit)
    r = live_kit.complete([{"role": "system", "content": "You are a chef."},
                           {"role": "user", "content": "Plan my week of meals."}], model="gpt-4o-mini", memory="ada")
    system = _system(openai_server.requests[-1].body)
    assert system.startswith("You are a chef.\n\n" + MEMORY_HEADER) and len(r.memory_ids) == 5


def test_a_user_without_memories_gets_no_block_and_an_empty_list(live_kit, openai_server):
    _store(live_kit)
    r = live_kit.complete("Hello", model="gpt-4o-mini", memory="zoe")
    assert r.memory_ids == []
    assert not any(m["role"] in ("system", "developer") for m in openai_server.requests[-1].body["messages"])
    row = live_kit.usage(request_id=r.request_id).iloc[0]
    assert row.memory_user == "zoe" and row.memory_ids == "[]"


def test_stream_and_acomplete_record_the_memories_too(live_kit, openai_server):
    _store(live_kit)
    s = live_kit.stream("Suggest a drink.", model="gpt-4o-mini", memory="ada", k=2)
    "".join(s)
    assert len(s.completion.memory_ids) == 2 and MEMORY_HEADER in _system(openai_server.requests[-1].body)
    r = asyncio.run(live_kit.acomplete("Suggest a drink.", model="gpt-4o-mini", memory="ada", k=2))
    assert r.memory_ids == s.completion.memory_ids
    rows = live_kit.usage()
    assert [json.loads(x) for x in rows.memory_ids] == [r.memory_ids, r.memory_ids]


def test_offline_rag_call_and_its_cache_hit_keep_the_memory_ids(kit):
    _store(kit)
    a = kit.complete("What should I drink?", memory="ada", k=2, temperature=0)
    b = kit.complete("What should I drink?", memory="ada", k=2, temperature=0)
    assert b.cache_hit and b.memory_ids == a.memory_ids and len(a.memory_ids) == 2
    assert kit.log(request_id=a.request_id).iloc[0].system.startswith(MEMORY_HEADER)
    assert list(kit.usage().memory_user) == ["ada", "ada"]


@pytest.mark.parametrize(("options", "message"), [
    ({"k": 3}, "k needs memory="),
    ({"memory": 7}, "memory must be the user_id"),
    ({"memory": " "}, "memory (a user_id) is empty"),
    ({"memory": "ada", "k": 0}, "k must be a whole number of memories from 1 to 50"),
    ({"memory": "ada", "k": True}, "k must be a whole number"),
    ({"memory": "ada", "k": 51}, "k must be a whole number"),
    ({"memory": "ada", "k": 2.5}, "k must be a whole number"),
])
def test_bad_memory_options_are_refused_before_anything_is_sent(live_kit, openai_server, options, message):
    with pytest.raises(InvalidRequestError) as e:
        live_kit.complete("Hello", model="gpt-4o-mini", **options)
    assert message in str(e.value)
    assert openai_server.requests == [] and live_kit.usage().empty


def test_every_turn_of_a_tool_loop_uses_the_memories_retrieved_once(kit):
    _store(kit)

    def weather(city: str) -> str:
        """The weather in a city."""
        return f"Sunny in {city}."

    r = kit.complete("What is the weather in my city?", memory="ada", k=2, tools=[weather], run_tools=True)
    rows = kit.usage(trace_id=r.trace_id)
    assert len(rows) == 2 and all(json.loads(x) == r.memory_ids for x in rows.memory_ids)
    systems = kit.log(trace_id=r.trace_id).system.tolist()
    assert systems[0] == systems[1] and systems[0].startswith(MEMORY_HEADER)


def test_a_chat_with_memory_retrieves_for_each_message(kit):
    _store(kit)
    chat = kit.chat(memory="ada", k=1)
    first = chat.send("What drink should I order?")
    second = chat.send("Which city am I in?")
    assert [kit.memory.get(first.memory_ids[0], user_id="ada")["content"],
            kit.memory.get(second.memory_ids[0], user_id="ada")["content"]] == [
        "My favourite drink is flat white.", "I live in Berlin."]
