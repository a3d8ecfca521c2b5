"""``kit.memory`` of a client Kit: the team server's memory routes behind ``Memory``'s own
method names. Whose memories they are comes from the token: a ``user_id`` argument naming
someone else is read as the token's user, with a warning (see ``ServedKit``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigurationError, ServerError
from ..core.validation import check_text
from ..memory import HitList, MemoryHit, MemoryNotFoundError

if TYPE_CHECKING:
    import pandas as pd

    from .connection import Connection

__all__ = ["ServedMemory"]

_TIMES = ("created_at", "updated_at", "last_accessed_at")


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


class ServedMemory:
    """The team server's semantic memory, scoped to the token's user. Retrieval is read-only
    there (``track=False``): a served hit cannot be marked used."""

    def __init__(self, connection: Connection, owner: Callable[[str | None, str], str]) -> None:
        self._http = connection
        self._owner = owner  # (user_id given, what for) -> the token's user (warns when they differ)

    def __repr__(self) -> str:
        return f"ServedMemory({self._http.url!r})"

    def _call(self, method: str, path: str, memory_id: str | None = None, **kw: Any) -> Any:
        try:
            return self._http.call(method, path, **kw)
        except ServerError as exc:
            if exc.status == 404 and memory_id is not None:
                raise MemoryNotFoundError(f"no memory {memory_id!r} for this user on {self._http.url}") from None
            raise

    def store(self, user_id: str, content: str, memory_type: str = "semantic", scope: str = "user",
              metadata: Mapping[str, Any] | None = None, *, agent_id: str | None = None) -> str:
        """Embed and store one memory on the server; return its id (the same content again: the same id)."""
        check_text(content, "content")
        self._owner(user_id, "memory.store")
        body = {"content": content, "memory_type": memory_type, "scope": scope, "metadata": metadata,
                "agent_id": agent_id}
        return str(self._call("POST", "/memories", json={k: v for k, v in body.items() if v is not None})["id"])

    def retrieve(self, user_id: str, query: str, k: int = 5, *, memory_type: str | Sequence[str] | None = None,
                 filters: Mapping[str, Any] | None = None, agent_id: str | None = None,
                 created_after: datetime | str | None = None, created_before: datetime | str | None = None,
                 half_life_days: float | None = None, as_frame: bool = False, track: bool = True) -> HitList | pd.DataFrame:
        """The ``k`` best memories the token's user may see, best first, scored by the server."""
        check_text(query, "query")
        self._owner(user_id, "memory.retrieve")
        body = {"query": query, "k": k, "memory_type": memory_type, "filters": filters, "agent_id": agent_id,
                "created_after": created_after.isoformat() if isinstance(created_after, datetime) else created_after,
                "created_before": created_before.isoformat() if isinstance(created_before, datetime) else created_before,
                "half_life_days": half_life_days}
        found = self._call("POST", "/retrieve", json={k: v for k, v in body.items() if v is not None})["hits"]
        hits = HitList(MemoryHit(**{**h, **{t: _time(h.get(t)) for t in _TIMES}}) for h in found)
        return hits.to_frame() if as_frame else hits

    def get(self, memory_id: str, *, user_id: str | None = None) -> dict[str, Any]:
        """The memory as a dict, if the token's user owns it or it is global (else MemoryNotFoundError)."""
        self._owner(user_id, "memory.get")
        return dict(self._call("GET", f"/memories/{memory_id}", memory_id))

    def update(self, memory_id: str, *, user_id: str | None = None, content: str | None = None,
               metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Change a memory's content (re-embedded) and/or metadata (replaced); returns it as ``get``."""
        self._owner(user_id, "memory.update")
        body = {k: v for k, v in (("content", content), ("metadata", metadata)) if v is not None}
        return dict(self._call("PATCH", f"/memories/{memory_id}", memory_id, json=body))

    def delete(self, memory_id: str, *, user_id: str | None = None, purge: bool = False) -> None:
        """Delete a memory of the token's user (``purge``: also blank its past versions)."""
        self._owner(user_id, "memory.delete")
        self._call("DELETE", f"/memories/{memory_id}", memory_id, params={"purge": purge})

    def history(self, memory_id: str, *, user_id: str | None = None) -> pd.DataFrame:
        """Every change of a memory, oldest first (also after it was deleted)."""
        import pandas as pd

        self._owner(user_id, "memory.history")
        changes = self._call("GET", f"/memories/{memory_id}/history", memory_id)["changes"]
        frame = pd.DataFrame.from_records(changes)
        if "changed_at" in frame:
            frame["changed_at"] = pd.to_datetime(frame["changed_at"])
        return frame

    def close(self) -> None:
        """Nothing to close: the Kit's connection is shared."""

    def __getattr__(self, name: str) -> Any:
        from ..memory import Memory

        if not name.startswith("_") and hasattr(Memory, name):  # remember, evaluate, frame, explorer, ...
            raise ConfigurationError(f"memory.{name} is not served by the team server yet ({self._http.url}); the "
                                     "served memory has store, retrieve, get, update, delete and history")
        raise AttributeError(name)
