"""Retrieval-augmented calls, the call side: ``kit.complete(prompt, memory="ada", k=5)`` retrieves
the top ``k`` memories of user "ada" for the prompt's last user message (through a ``Recall`` the
Kit gives the planner: this layer never imports the memory), appends them to the system prompt as
a block, and records them on the ledger row (``memory_user``; ``memory_ids``, a JSON list, best
first) and on the Completion (``r.memory_ids``). A call without ``memory=`` does none of this.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigurationError, InvalidRequestError

if TYPE_CHECKING:
    from ..core.types import Message

__all__ = ["MEMORY_HEADER", "DEFAULT_K", "Recall", "memory_block", "augment", "recalled_ids"]

MEMORY_HEADER = "Relevant memories about the user:"
DEFAULT_K = 5
# (user_id, query, k) -> the memories to use, best first, as (memory id, content)
Recall = Callable[[str, str, int], Sequence[tuple[str, str]]]


def memory_block(contents: Sequence[str]) -> str:
    """The system prompt block listing ``contents``."""
    return MEMORY_HEADER + "\n" + "\n".join("- " + " ".join(c.split()) for c in contents)


def augment(recall: Recall | None, user_id: str, k: int | None, messages: Sequence[Message],
            system: str | None) -> tuple[str | None, list[str]]:
    """The system prompt with the memories of ``user_id`` for the last user message (unchanged
    when there are none), and their ids."""
    if recall is None:
        raise ConfigurationError("memory= needs a Kit's memory: call kit.complete(..., memory=user_id)")
    query = next((m.content for m in reversed(messages) if m.role == "user" and m.content.strip()), None)
    if query is None:
        raise InvalidRequestError("memory= retrieves by the last user message, and this prompt has none with text")
    found = list(recall(user_id, query, DEFAULT_K if k is None else k))
    if not found:
        return system, []
    block = memory_block([c for _, c in found])
    return (block if not system else system.rstrip() + "\n\n" + block), [i for i, _ in found]


def recalled_ids(meta: Mapping[str, Any]) -> list[str] | None:
    """The ids a call's memories were (from its ledger fields), None for a call without ``memory=``."""
    ids = meta.get("memory_ids")
    return None if ids is None else list(json.loads(ids))
