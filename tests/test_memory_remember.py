"""``kit.memory.remember`` (issue 14 item 5): facts extracted from a conversation by one LLM call
(the simulated provider's rule-based extraction offline; a real provider's structured answer over
the loopback server) and merged into the user's memories as ADD, UPDATE or NONE."""

from __future__ import annotations

import json

import pytest

from cognitionos_kit.calls.facts import FACTS_OUTPUT, facts_prompt, simulated_facts
from cognitionos_kit.core.errors import ConfigurationError, InvalidRequestError
from cognitionos_kit.memory import Memory, MemoryEvent, Remembered

CONVERSATION = [
    {"role": "user", "content": "Hi, I'm Ada. I live in Paris and I work as a data engineer."},
    {"role": "assistant", "content": "Nice to meet you, Ada! I am happy to help. What can I do?"},
    {"role": "user", "content": "Can you suggest a lunch place? I'm vegetarian. My favourite drink is flat white."},
]
FACTS = ["I'm Ada.", "I live in Paris.", "I work as a data engineer.", "I'm vegetarian.",
         "My favourite drink is flat white."]


def _contents(kit, user="ada") -> set[str]:
    return set(kit.memory.frame("ada" if user is None else user)["content"])


def test_remember_extracts_the_users_facts_offline_and_stores_them(kit):
    r = kit.memory.remember(CONVERSATION, "ada")
    assert isinstance(r, Remembered) and all(isinstance(e, MemoryEvent) for e in r)
    assert [e.fact for e in r] == FACTS  # the user's statements, not the question nor the assistant's words
    assert [e.action for e in r] == ["ADD"] * 5
    assert _contents(kit) == set(FACTS) and len(kit.memory) == 5
    slots = {e.fact: e.slot for e in r}
    assert slots["I live in Paris."] == "home" and slots["I'm vegetarian."] is None
    stored = kit.memory.get(r[1].memory_id, user_id="ada")
    assert stored["metadata"] == {"source": "remember", "request_id": r.completion.request_id, "slot": "home"}
    # one costed call in the ledger, tagged as the extraction
    rows = kit.usage()
    assert len(rows) == 1 and rows.iloc[0].task_id == "memory.remember" and rows.iloc[0].user_id == "ada"
    assert rows.iloc[0].request_id == r.completion.request_id and r.cost_usd is not None and r.cost_usd > 0
    assert "5 added" in repr(r) and "I live in Paris." in repr(r)
    assert "I work as a data engineer." in r._repr_html_()
    assert list(r.to_frame().columns) == ["fact", "action", "memory_id", "similarity", "slot", "previous"]


def test_remembering_the_same_facts_again_adds_nothing(kit):
    first = kit.memory.remember(CONVERSATION, "ada")
    again = kit.memory.remember(CONVERSATION, "ada")
    assert [e.action for e in again] == ["NONE"] * 5
    assert [e.memory_id for e in again] == [e.memory_id for e in first]
    assert all(e.similarity is not None and e.similarity >= 0.99 for e in again)
    # a near-duplicate in other words is NONE too (cosine above the documented 0.9)
    near = kit.memory.remember("I currently live in Paris.", "ada")
    assert near[0].action == "NONE" and near[0].memory_id == first[1].memory_id and 0.9 <= near[0].similarity < 0.99
    assert len(kit.memory) == 5 and again.memory_ids == []


def test_a_changed_fact_updates_the_old_memory_and_history_keeps_it(kit):
    first = kit.memory.remember(CONVERSATION, "ada")
    paris = first[1].memory_id
    r = kit.memory.remember([{"role": "user", "content": "Big news: I moved to Berlin last month."}], "ada")
    assert len(r) == 1
    e = r[0]
    assert (e.action, e.memory_id, e.slot, e.previous) == ("UPDATE", paris, "home", "I live in Paris.")
    assert e.similarity is not None and e.similarity < 0.9
    assert len(kit.memory) == 5 and "I live in Paris." not in _contents(kit)
    h = kit.memory.history(paris, user_id="ada")
    assert list(h["op"]) == ["store", "update"]
    assert h.iloc[1]["old_content"] == "I live in Paris." and h.iloc[1]["new_content"] == "I moved to Berlin last month."
    top = kit.memory.retrieve("ada", "Where do I live?", k=1, track=False)[0]
    assert top.id == paris and "Berlin" in top.content


def test_a_new_fact_without_a_slot_is_added_beside_similar_ones(kit):
    kit.memory.remember("I like coffee.", "ada")
    r = kit.memory.remember("I like tea.", "ada")  # cosine 0.75 to "I like coffee.": a different fact, kept
    assert r[0].action == "ADD" and 0.5 < r[0].similarity < 0.9
    assert _contents(kit) == {"I like coffee.", "I like tea."}


def test_remember_only_merges_with_the_users_own_memories(kit):
    kit.memory.remember(CONVERSATION, "ada")
    r = kit.memory.remember("I live in Paris.", "bob")
    assert r[0].action == "ADD" and r[0].similarity is None  # bob had no memories; ada's are not his
    assert _contents(kit, "bob") == {"I live in Paris."} and len(kit.memory) == 6


def test_a_conversation_with_no_facts_changes_nothing(kit):
    r = kit.memory.remember([{"role": "user", "content": "What is the capital of France?"},
                             {"role": "assistant", "content": "I think it is Paris."}], "ada")
    assert len(r) == 0 and len(kit.memory) == 0 and "0 added" in repr(r)
    assert len(kit.usage()) == 1  # the extraction was still one call


@pytest.mark.parametrize(("conversation", "message"), [
    ([], "conversation is empty"),
    ("   ", "conversation is empty"),
    ([{"role": "bot", "content": "I live in Paris."}], "has role 'bot': use one of user, assistant, system"),
    ([{"content": "I live in Paris."}], "must be a dict with 'role' and 'content'"),
    (["I live in Paris."], "must be a dict with 'role' and 'content'"),
    ([{"role": "user", "content": ""}], "conversation[0]['content'] is empty"),
    ([{"role": "user", "content": 3}], "conversation[0]['content'] must be a string"),
    ([{"role": "assistant", "content": "I can help."}], "has no user turn"),
    (42, "conversation must be a string or a list of messages"),
])
def test_bad_conversations_are_refused_before_any_call(kit, conversation, message):
    with pytest.raises(InvalidRequestError) as e:
        kit.memory.remember(conversation, "ada")
    assert message in str(e.value)
    assert kit.simulated.calls == 0 and len(kit.memory) == 0


def test_bad_user_or_threshold_is_refused_before_any_call(kit):
    with pytest.raises(InvalidRequestError, match="user_id is empty"):
        kit.memory.remember(CONVERSATION, " ")
    with pytest.raises(InvalidRequestError, match="duplicate_threshold must be above 0 and at most 1"):
        kit.memory.remember(CONVERSATION, "ada", duplicate_threshold=1.5)
    with pytest.raises(InvalidRequestError, match="duplicate_threshold must be a number"):
        kit.memory.remember(CONVERSATION, "ada", duplicate_threshold="high")
    with pytest.raises(InvalidRequestError, match="unknown simulated model"):
        kit.memory.remember(CONVERSATION, "ada", model="sim-nope")
    assert kit.simulated.calls == 0


def test_a_memory_without_a_kit_says_how_to_remember(tmp_path):
    m = Memory(tmp_path / "home")
    with pytest.raises(ConfigurationError, match=r"kit.memory.remember"):
        m.remember(CONVERSATION, "ada")
    m.close()


def test_the_simulated_extractor_reads_only_user_statements():
    prompt = facts_prompt([{"role": "user", "content": "Oh, and I'd like you to be brief. I have two cats\nI'm 36."},
                           {"role": "assistant", "content": "I live in the cloud."}])
    facts = json.loads(simulated_facts(prompt))["facts"]
    assert facts == [{"fact": "I have two cats.", "slot": None}, {"fact": "I'm 36.", "slot": "age"}]
    assert json.loads(simulated_facts("no conversation here")) == {"facts": []}


def test_remember_with_a_real_provider_uses_its_structured_answer(live_kit, openai_server):
    answer = {"facts": [{"fact": "I live in Lyon.", "slot": "home"}, {"fact": "I play the cello.", "slot": None}]}
    openai_server.enqueue_raw(200, "application/json", json.dumps({
        "id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": json.dumps(answer)}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 200, "completion_tokens": 30, "total_tokens": 230}}).encode())
    r = live_kit.memory.remember([{"role": "user", "content": "I'm in Lyon these days, playing the cello a lot."}],
                                 "ada", model="gpt-4o-mini")
    assert [(e.fact, e.action, e.slot) for e in r] == [("I live in Lyon.", "ADD", "home"),
                                                       ("I play the cello.", "ADD", None)]
    body = openai_server.requests[-1].body
    assert body["model"] == "gpt-4o-mini"
    assert body["response_format"]["json_schema"]["name"] == FACTS_OUTPUT
    sent = json.loads(body["messages"][-1]["content"].split("Conversation (JSON):\n", 1)[1])
    assert sent == [{"role": "user", "content": "I'm in Lyon these days, playing the cello a lot."}]
    row = live_kit.usage().iloc[-1]
    assert row.provider == "openai" and row.task_id == "memory.remember" and row.cost_usd > 0
