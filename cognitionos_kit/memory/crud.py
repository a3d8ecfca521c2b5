"""Storing, reading, changing and deleting the memories of one collection, through its replica:
every argument is checked (and every text embedded) before anything is written, and ``get``,
``update`` and ``delete`` go through the ownership rule of ``owners.py``."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..core.errors import InvalidRequestError
from ..core.validation import check_text
from .embedding import LOCAL_MODEL, Embedders, embed_texts, unit_rows, width
from .index import MEMORY_TYPES, SCOPES, Table
from .inputs import (
    TimeLike,
    check_agent,
    check_choice,
    check_contents,
    check_flag,
    check_metadata,
    content_hash,
    metadata_per_content,
    to_epoch,
)
from .owners import may_use, not_found
from .replica import Replica

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["Records", "FRAME_COLUMNS"]

FRAME_COLUMNS = ["id", "user_id", "scope", "agent_id", "memory_type", "content", "metadata", "model",
                 "created_at", "updated_at", "last_accessed_at", "access_count"]


class Records:
    """The memories of one collection, one at a time or many at once."""

    def __init__(self, replica: Replica, embedders: Embedders) -> None:
        self.replica = replica
        self.embedders = embedders

    def store_many(self, user_id: str, contents: Sequence[str], *, embeddings: np.ndarray | None,
                   metadata: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None, memory_type: str,
                   scope: str, agent_id: str | None, created_at: TimeLike | None, embedding_model: str | None) -> list[str]:
        """Store ``contents`` (embedded, or ``embeddings``); return their ids, existing ones for repeats."""
        user_id = check_text(user_id, "user_id")
        texts = check_contents(contents)
        check_choice(memory_type, MEMORY_TYPES, "memory_type")
        check_choice(scope, SCOPES, "scope")
        agent_id = check_agent(scope, agent_id)
        metas = metadata_per_content(metadata, len(texts))
        created = time.time() if created_at is None else to_epoch(created_at, "created_at")
        if embedding_model is not None:
            check_text(embedding_model, "embedding_model")
        if not texts:
            return []
        replica = self.replica
        with replica.lock:
            t = replica.sync()
            model = replica.model
            if embedding_model is not None and embedding_model != model:
                raise InvalidRequestError(f"embeddings from {embedding_model} cannot join collection "
                                          f"{replica.collection!r}, which holds {model} vectors")
            hashes = [content_hash(c) for c in texts]
            known = {h: t.dedupe[key] for h in hashes if (key := (user_id, scope, agent_id, h)) in t.dedupe}
            first: dict[str, int] = {}  # content hash -> index of its first occurrence among new ones
            for i, h in enumerate(hashes):
                if h not in known and h not in first:
                    first[h] = i
            todo = list(first.values())
            if todo:
                if embeddings is not None:
                    vecs = unit_rows(embeddings, len(texts), t.dim or None, model)[todo]
                else:
                    vecs = embed_texts(self.embedders.get(model), [texts[i] for i in todo])
                t = replica.fit(t, int(vecs.shape[1]))
                now = time.time()
                rows = []
                for i in todo:
                    mid = known[hashes[i]] = "mem_" + uuid.uuid4().hex
                    rows.append({"row_id": uuid.uuid4().hex, "ts": now, "op": "store", "collection": replica.collection,
                                 "memory_id": mid, "user_id": user_id, "scope": scope, "agent_id": agent_id,
                                 "memory_type": memory_type, "content": texts[i], "content_hash": hashes[i],
                                 "metadata": metas[i], "model": model, "dim": t.dim,
                                 "created_at": created, "updated_at": created})
                replica.write(rows, vecs)
                t.add(rows, vecs)
        return [known[h] for h in hashes]

    def find(self, memory_id: object, user_id: object, *, change: bool) -> tuple[Table, int]:
        """The table and row of a memory ``user_id`` may read (or, with ``change``, change)."""
        memory_id = check_text(memory_id, "memory_id")
        user_id = check_text(user_id, "user_id")
        t = self.replica.sync()
        i = t.pos.get(memory_id)
        if i is None or not may_use(t.rows[i]["user_id"], t.rows[i]["scope"], user_id, change=change):
            raise not_found(memory_id, user_id, self.replica.collection)
        return t, i

    def get(self, memory_id: str, user_id: str) -> dict[str, Any]:
        """A memory ``user_id`` may read, as a dict."""
        with self.replica.lock:
            t, i = self.find(memory_id, user_id, change=False)
            return t.record(i)

    def update(self, memory_id: str, user_id: str, content: str | None, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
        """Change the content (re-embedded) and/or metadata of a memory of ``user_id``; return it."""
        if content is None and metadata is None:
            raise InvalidRequestError("update needs content= and/or metadata=, e.g. "
                                      "kit.memory.update(memory_id, user_id=\"ana\", content=\"...\")")
        if content is not None:
            check_text(content, "content")
        meta = None if metadata is None else check_metadata(metadata)
        with self.replica.lock:
            t, i = self.find(memory_id, user_id, change=True)
            old = t.rows[i]
            new_content = content is not None and content != old["content"]
            if new_content or (meta is not None and meta != old["metadata"]):
                vec = embed_texts(self.embedders.get(self.replica.model), [content])[0] if content is not None and new_content \
                    else t.vec[i].copy()
                now = time.time()
                row = {**old, "row_id": uuid.uuid4().hex, "ts": max(now, t.version[i]), "op": "update", "updated_at": now}
                if content is not None:
                    row.update(content=content, content_hash=content_hash(content))
                if meta is not None:
                    row["metadata"] = meta
                self.replica.write([row], vec[None])
                t.replace(i, row, vec)
            return t.record(i)

    def delete(self, memory_id: str, user_id: str, purge: bool) -> None:
        """Delete a memory of ``user_id`` (``purge``: blank its past versions too)."""
        check_flag(purge, "purge")
        with self.replica.lock:
            t, _ = self.find(memory_id, user_id, change=True)
            self.replica.delete(t, memory_id, purge=purge)

    def clear(self, user_id: str | None, purge: bool) -> int:
        """Delete every memory of the collection (of ``user_id`` only, if given); how many there were."""
        import numpy as np

        check_flag(purge, "purge")
        owner = None if user_id is None else check_text(user_id, "user_id")
        with self.replica.lock:
            t = self.replica.sync()
            records = [t.record(int(i)) for i in np.flatnonzero(t.alive[: t.n])]
            ids = [r["id"] for r in records if owner is None or r["user_id"] == owner]
            for memory_id in ids:
                self.replica.delete(t, memory_id, purge=purge)
        return len(ids)

    def frame(self, user_id: str | None) -> pd.DataFrame:
        """Every memory (or those ``user_id`` may see) as a DataFrame, newest first."""
        import numpy as np
        import pandas as pd

        with self.replica.lock:
            t = self.replica.sync()
            rows = np.flatnonzero(t.visible(check_text(user_id, "user_id"), None) if user_id is not None else t.alive[: t.n])
            records = [t.record(int(i)) for i in rows[::-1]]
        return pd.DataFrame.from_records(records, columns=FRAME_COLUMNS)

    def reembed(self, model: str | None) -> int:
        """Re-embed every memory with ``model`` (None: the local MiniLM) and make it the collection's."""
        import numpy as np

        target = LOCAL_MODEL if model is None else check_text(model, "model")
        embedder = self.embedders.get(target)
        with self.replica.lock:
            t = self.replica.sync()
            alive = np.flatnonzero(t.alive[: t.n])
            texts = [t.rows[i]["content"] for i in alive]
            # embedding first: if it fails, nothing is written (an empty collection only changes its config)
            vecs = embed_texts(embedder, texts) if texts else np.zeros((0, width(embedder)), dtype=np.float32)
            now = time.time()
            rows = [{**t.rows[i], "row_id": uuid.uuid4().hex, "ts": max(now, t.version[i]), "op": "reembed",
                     "model": target, "dim": int(vecs.shape[1])} for i in alive]
            self.replica.migrate(target, rows, vecs)
        return len(rows)
