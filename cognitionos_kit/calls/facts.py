"""The fact-extraction request behind ``kit.memory.remember``: its system prompt, its output schema
(``FACTS_SCHEMA``, asked with ``output=``, so real providers return checked JSON) and the prompt
holding the conversation; and ``simulated_facts``, the simulated provider's answer to it: a
deterministic, rule-based extraction of first-person statements from the user's turns, so
``remember`` extracts real facts offline (and tests of it mean something).

A fact may name a ``slot``: a single-valued attribute of the user (``home``, ``employer``, ``job``,
``name``, ``age``, ``favourite <thing>``). A new fact in a slot the user already has replaces the
old one (``remember``'s UPDATE); a fact without a slot (a preference, a plan) is added beside the
others.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["FACTS_OUTPUT", "FACTS_SCHEMA", "FACTS_SYSTEM", "facts_prompt", "simulated_facts"]

FACTS_OUTPUT = "user_facts"  # the schema's title: the simulated provider recognises the request by it
FACTS_SCHEMA: dict[str, Any] = {
    "title": FACTS_OUTPUT,
    "type": "object",
    "properties": {"facts": {"type": "array", "items": {
        "type": "object",
        "properties": {"fact": {"type": "string", "minLength": 1}, "slot": {"type": ["string", "null"]}},
        "required": ["fact", "slot"],
        "additionalProperties": False,
    }}},
    "required": ["facts"],
    "additionalProperties": False,
}
FACTS_SYSTEM = (
    "You extract facts about the user from a conversation, for the user's long-term memory. Return "
    'JSON {"facts": [{"fact": ..., "slot": ...}]}. Each fact is one short, self-contained sentence in '
    "the first person, as the user would say it (\"I live in Berlin.\"). Keep only what the user says "
    "about themselves: biography, work, preferences, plans, relations, constraints. Leave out questions, "
    "requests to the assistant, small talk and everything the assistant says. slot names the attribute "
    "when it can have only one value at a time (home, employer, job, name, age, or \"favourite <thing>\"), "
    'else null. Return {"facts": []} when there is nothing to keep.'
)
_MARKER = "Conversation (JSON):\n"


def facts_prompt(messages: Sequence[Mapping[str, str]]) -> str:
    """The user prompt of the extraction: the conversation as JSON (roles and contents kept exact)."""
    turns = [{"role": m["role"], "content": m["content"]} for m in messages]
    return "Extract the facts about the user from this conversation.\n\n" + _MARKER + json.dumps(turns, ensure_ascii=False)


# --- the simulated provider's extraction ----------------------------------------------------------
_FILLER = re.compile(r"^(?:(?:hi|hello|hey|oh|ok|okay|so|well|also|and|but|actually|btw|by the way|fyi)\b[,!.]?\s*)+",
                     re.IGNORECASE)
_STATEMENT = re.compile(r"^(?:I|I'm|I am|I've|I have|I'd|I'll|My|Me)\b")
_NOT_A_FACT = re.compile(r"^(?:I (?:want|need|would like) you\b|I'd like you\b|I wonder\b|I think you\b|"
                         r"I'm (?:wondering|asking|looking for (?:a|an|some) (?:answer|help))\b)", re.IGNORECASE)
_SLOTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^(?:I (?:now )?live|I'm living|I am living|I (?:have |'ve |just )?moved|I relocated|"
                r"I'm based|I am based)\b"), "home"),
    (re.compile(r"^(?:I (?:now )?work (?:at|for)|I'm working (?:at|for)|I am working (?:at|for)|I (?:just )?joined)\b"),
     "employer"),
    (re.compile(r"^(?:I (?:now )?work as|I'm working as|I am working as|My (?:job|role|title) is)\b"), "job"),
    (re.compile(r"^(?:My name is|I'm called|I am called)\b|^(?:I'm|I am) [A-Z][a-z]+\.?$"), "name"),
    (re.compile(r"^(?:I'm|I am) \d{1,3}(?: years old)?\.?$"), "age"),
)
_FAVOURITE = re.compile(r"^My (?:favou?rite|preferred) ([a-z]+(?: [a-z]+)?) (?:is|are)\b", re.IGNORECASE)


def _slot(sentence: str) -> str | None:
    m = _FAVOURITE.match(sentence)
    if m:
        return "favourite " + m.group(1).lower()
    return next((slot for pattern, slot in _SLOTS if pattern.search(sentence)), None)


def _facts_in(text: str) -> list[dict[str, Any]]:
    out = []
    for raw in re.split(r"(?<=[.!?;:])\s+|\n+|,? (?:and|but) (?=(?:I|I'm|My)\b)", text):
        s = _FILLER.sub("", raw.strip()).strip(" ,;")
        if not s or s.endswith("?") or not _STATEMENT.match(s) or _NOT_A_FACT.match(s):
            continue
        s = s.rstrip(".!;") + "."
        out.append({"fact": s, "slot": _slot(s)})
    return out


def simulated_facts(prompt: str) -> str:
    """The simulated provider's answer to ``facts_prompt``: the first-person statements of the
    user's turns (not questions, not requests to the assistant), each with its slot, as
    ``FACTS_SCHEMA`` JSON; ``{"facts": []}`` when the prompt holds no conversation."""
    _, found, rest = prompt.partition(_MARKER)
    try:
        turns = json.loads(rest) if found else []
    except ValueError:
        turns = []
    facts: list[dict[str, Any]] = []
    for t in turns if isinstance(turns, list) else []:
        if isinstance(t, dict) and t.get("role") == "user" and isinstance(t.get("content"), str):
            facts += [f for f in _facts_in(t["content"]) if f not in facts]
    return json.dumps({"facts": facts}, ensure_ascii=False)
