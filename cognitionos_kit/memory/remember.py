"""``Memory.remember``: facts about a user taken from a conversation and merged into their memories,
the way Mem0's ``add`` does it: one LLM call extracts atomic facts (``calls.facts``: a JSON schema
asked with ``output=``; offline the simulated provider extracts them by rule), then each fact is
compared with the user's own memories and one of these happens:

- NONE: a memory already says it (cosine similarity >= ``duplicate_threshold``, default 0.9);
- UPDATE: the fact fills a single-valued slot (home, employer, job, name, age, "favourite X") the
  user already has a memory in: that memory's content is replaced (``update``, so ``history``
  keeps the old version), e.g. "I moved to Berlin." replaces "I live in Paris.";
- ADD: anything else is stored as a new memory (metadata: source "remember", its slot, the
  extraction's request id).

Why slots and not a second, lower similarity threshold for UPDATE: with the local MiniLM, "I live
in Paris." is closer to "I work in Paris." (0.86) than to "I moved to Berlin." (0.46), and "I like
coffee." is 0.75 from "I like tea.": no threshold separates a changed fact from a different one.
Nothing is deleted by ``remember``; ``kit.memory.delete`` does that.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..calls.facts import FACTS_SCHEMA, FACTS_SYSTEM, facts_prompt
from ..core.errors import InvalidRequestError
from ..core.validation import check_number, check_text

if TYPE_CHECKING:
    import pandas as pd

    from ..core.types import Completion
    from .memory import Memory

__all__ = ["MemoryEvent", "Remembered", "check_conversation", "remember", "TASK_ID"]

TASK_ID = "memory.remember"  # the ledger's task_id of the extraction call
ROLES = ("user", "assistant", "system")
_SIMILARITY_ONLY = {"similarity": 1.0, "decay": 0.0, "boost": 0.0}
_EXAMPLE = '[{"role": "user", "content": "I live in Paris."}, {"role": "assistant", "content": "Noted."}]'

Action = Literal["ADD", "UPDATE", "NONE"]


@dataclass(frozen=True)
class MemoryEvent:
    """What ``remember`` did with one extracted fact: ``action`` ADD (a new memory ``memory_id``),
    UPDATE (``memory_id``'s content was ``previous`` and is now the fact) or NONE (``memory_id``
    already says it); ``similarity``: cosine to the closest memory of the user compared (None when
    the user had none); ``slot``: the single-valued attribute the fact fills, if any."""

    fact: str
    action: Action
    memory_id: str
    similarity: float | None = None
    slot: str | None = None
    previous: str | None = None

    def __repr__(self) -> str:
        sim = "" if self.similarity is None else f", similarity={self.similarity:.2f}"
        was = "" if self.previous is None else f", previous={self.previous!r}"
        return f"MemoryEvent({self.action} {self.memory_id}: {self.fact!r}{sim}{was})"


@dataclass(frozen=True)
class Remembered:
    """The result of ``kit.memory.remember``: one :class:`MemoryEvent` per fact extracted, in order
    (iterate it, or ``to_frame()``), and the extraction call (``completion``: its cost and model)."""

    user_id: str
    events: tuple[MemoryEvent, ...]
    completion: Completion = field(repr=False)

    def __iter__(self) -> Iterator[MemoryEvent]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, i: int) -> MemoryEvent:
        return self.events[i]

    def of(self, action: Action) -> list[MemoryEvent]:
        """The events of one action ("ADD", "UPDATE" or "NONE")."""
        return [e for e in self.events if e.action == action]

    @property
    def memory_ids(self) -> list[str]:
        """The memories added or updated, in order."""
        return [e.memory_id for e in self.events if e.action != "NONE"]

    @property
    def cost_usd(self) -> float | None:
        """What the extraction call cost."""
        return self.completion.cost_usd

    def _counts(self) -> str:
        return (f"{len(self.of('ADD'))} added, {len(self.of('UPDATE'))} updated, "
                f"{len(self.of('NONE'))} already known")

    def __repr__(self) -> str:
        head = (f"Remembered(user_id={self.user_id!r}, facts={len(self.events)}: {self._counts()}; "
                f"model={self.completion.served!r}, cost_usd={_usd(self.cost_usd)})")
        lines = [f"  {e.action:<6} {e.memory_id}  {e.fact}" + (f"  (was: {e.previous})" if e.previous else "")
                 for e in self.events]
        return "\n".join([head, *lines])

    def to_frame(self) -> pd.DataFrame:
        """One row per fact: fact, action, memory_id, similarity, slot, previous."""
        import pandas as pd

        cols = ["fact", "action", "memory_id", "similarity", "slot", "previous"]
        return pd.DataFrame([{c: getattr(e, c) for c in cols} for e in self.events], columns=cols)

    def _repr_html_(self) -> str:
        head = html.escape(f"remembered for {self.user_id}: {len(self.events)} facts, {self._counts()} "
                           f"({self.completion.served}, cost {_usd(self.cost_usd)})")
        return f"<div><b>{head}</b></div>" + self.to_frame().to_html(index=False, na_rep="-", float_format="{:.3f}".format)


def _usd(cost: float | None) -> str:
    return "unknown" if cost is None else f"${cost:.6f}"


def check_conversation(conversation: object) -> list[dict[str, str]]:
    """The conversation as messages: a string is one user turn; a list must hold ``{"role",
    "content"}`` dicts (roles user, assistant, system) with at least one user turn."""
    if isinstance(conversation, str):
        return [{"role": "user", "content": check_text(conversation, "conversation")}]
    if not isinstance(conversation, Sequence) or isinstance(conversation, bytes):
        raise InvalidRequestError(f"conversation must be a string or a list of messages like {_EXAMPLE}, "
                                  f"got {type(conversation).__name__}")
    if not conversation:
        raise InvalidRequestError(f"conversation is empty: pass the messages to remember, e.g. {_EXAMPLE}")
    out = []
    for i, m in enumerate(conversation):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise InvalidRequestError(f"conversation[{i}] must be a dict with 'role' and 'content', e.g. "
                                      f'{{"role": "user", "content": "I live in Paris."}}, got {m!r:.80}')
        if m["role"] not in ROLES:
            raise InvalidRequestError(f"conversation[{i}] has role {m['role']!r}: use one of {', '.join(ROLES)}")
        out.append({"role": m["role"], "content": check_text(m["content"], f"conversation[{i}]['content']")})
    if not any(m["role"] == "user" for m in out):
        raise InvalidRequestError("conversation has no user turn: facts about the user come from what the user "
                                  'says ({"role": "user", ...})')
    return out


def check_threshold(value: object, what: str) -> float:
    """A cosine similarity threshold in (0, 1]."""
    v = check_number(value, what)
    if not 0.0 < v <= 1.0:
        raise InvalidRequestError(f"{what} must be above 0 and at most 1 (a cosine similarity), got {value!r}")
    return v


def remember(memory: Memory, complete: Callable[..., Completion], conversation: object, user_id: str, *,
             model: str | None, duplicate_threshold: float) -> Remembered:
    """See ``Memory.remember``."""
    messages = check_conversation(conversation)
    user_id = check_text(user_id, "user_id")
    threshold = check_threshold(duplicate_threshold, "duplicate_threshold")
    options: dict[str, Any] = {"model": model} if model is not None else {"role": "summarizer"}
    r = complete(facts_prompt(messages), system=FACTS_SYSTEM, output=FACTS_SCHEMA, output_retries=1,
                 user_id=user_id, task_id=TASK_ID, **options)
    facts = list(dict.fromkeys((f["fact"].strip(), f.get("slot") or None) for f in r.output["facts"]
                               if f["fact"].strip()))
    events = [_merge(memory, user_id, fact, (slot or "").strip().lower() or None, threshold, r.request_id)
              for fact, slot in facts]
    return Remembered(user_id, tuple(events), r)


def _own(memory: Memory, user_id: str, query: str, filters: Mapping[str, Any] | None = None) -> list[Any]:
    """The user's own memories (scope "user") closest to ``query`` by cosine alone, read-only."""
    hits = memory.retrieve(user_id, query, 5, filters=filters, weights=_SIMILARITY_ONLY, track=False)
    return [h for h in hits if h.user_id == user_id and h.scope == "user"]


def _merge(memory: Memory, user_id: str, fact: str, slot: str | None, threshold: float, request_id: str) -> MemoryEvent:
    close = _own(memory, user_id, fact)
    best = close[0] if close else None
    if best is not None and best.similarity >= threshold:
        return MemoryEvent(fact, "NONE", best.id, best.similarity, slot)
    if slot is not None:
        same = _own(memory, user_id, fact, {"slot": slot})
        if same:
            old = same[0]
            memory.update(old.id, user_id=user_id, content=fact, metadata={**old.metadata, "request_id": request_id})
            return MemoryEvent(fact, "UPDATE", old.id, old.similarity, slot, previous=old.content)
    meta = {"source": "remember", "request_id": request_id, **({"slot": slot} if slot else {})}
    mid = memory.store(user_id, fact, metadata=meta)
    return MemoryEvent(fact, "ADD", mid, None if best is None else best.similarity, slot)
