"""Every change of one memory, read from the event table (also after the memory was deleted)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ..core.validation import check_text
from .owners import may_use, not_found
from .store import EventLog

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["history"]

HISTORY_SQL = """
    SELECT to_timestamp(ts) AS changed_at, op,
           lag(content) OVER w AS old_content, CASE WHEN op = 'delete' THEN NULL ELSE content END AS new_content,
           lag(metadata) OVER w AS old_metadata, CASE WHEN op = 'delete' THEN NULL ELSE metadata END AS new_metadata,
           model, user_id AS _owner, scope AS _scope
    FROM memory_events WHERE collection = ? AND memory_id = ? WINDOW w AS (ORDER BY ts, seq) ORDER BY ts, seq"""


def history(log: EventLog, collection: str, memory_id: object, user_id: object) -> pd.DataFrame:
    """changed_at, op, old/new content and old/new metadata of each change, oldest first, if
    ``user_id`` may read the memory; otherwise MemoryNotFoundError, as for an unknown id."""
    memory_id = check_text(memory_id, "memory_id")
    user_id = check_text(user_id, "user_id")
    df = log.query(HISTORY_SQL, [collection, memory_id])
    stored = df[df.op != "delete"]  # delete events carry no owner; a memory's owner and scope never change
    if stored.empty or not may_use(stored["_owner"].iloc[0], stored["_scope"].iloc[0], user_id, change=False):
        raise not_found(memory_id, user_id, collection)
    df = df.drop(columns=["_owner", "_scope"])
    for col in ("old_metadata", "new_metadata"):
        df[col] = [json.loads(v) if isinstance(v, str) else None for v in df[col]]
    return df
