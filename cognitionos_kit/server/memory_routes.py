"""The team server's memory routes, on the server Kit's ``memory``: ``POST /memories``,
``GET/PATCH/DELETE /memories/{id}``, ``GET /memories/{id}/history`` and ``POST /retrieve``.

Every memory is stored and read as the token's user. The library's ownership rule holds
(``memory/owners.py``): a global memory is readable by all, changeable only by its owner, and
another user's memory is the same 404 as an unknown id, with the same message.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..core.errors import InvalidRequestError
from ..memory.owners import MemoryNotFoundError
from .auth import Caller

if TYPE_CHECKING:
    from ..memory import Memory

__all__ = ["router", "StoreRequest", "UpdateRequest", "RetrieveRequest"]

router = APIRouter(tags=["memory"])
_first_use = threading.Lock()  # kit.memory is created on first use; two requests must not both create it

MemoryType = Literal["working", "episodic", "semantic", "procedural"]
MemoryId = Annotated[str, Path(min_length=1, max_length=200)]


class StoreRequest(BaseModel):
    """``POST /memories``: one memory of the caller (``agent_id`` only, and always, with ``scope="agent"``)."""

    model_config = ConfigDict(extra="forbid")

    content: str = Field(min_length=1, max_length=100_000)
    metadata: dict[str, Any] | None = None
    memory_type: MemoryType = "semantic"
    scope: Literal["user", "agent", "global"] = "user"
    agent_id: str | None = Field(default=None, min_length=1, max_length=200)


class UpdateRequest(BaseModel):
    """``PATCH /memories/{id}``: new content (re-embedded) and/or metadata (replaced)."""

    model_config = ConfigDict(extra="forbid")

    content: str | None = Field(default=None, min_length=1, max_length=100_000)
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _something(self) -> UpdateRequest:
        if self.content is None and self.metadata is None:
            raise InvalidRequestError("give content and/or metadata")
        return self


class RetrieveRequest(BaseModel):
    """``POST /retrieve``: the ``k`` best memories the caller may see for ``query``; ``filters``
    in the metadata filter language of ``kit.memory.retrieve`` (e.g. ``{"year": {"$gte": 2020}}``)."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=100_000)
    k: int = Field(default=5, ge=1, le=1000)
    memory_type: MemoryType | list[MemoryType] | None = None
    filters: dict[str, Any] | None = None
    agent_id: str | None = Field(default=None, min_length=1, max_length=200)
    created_after: datetime | None = None
    created_before: datetime | None = None
    half_life_days: float | None = Field(default=None, gt=0)


def _memory(request: Request) -> Memory:
    with _first_use:
        return request.app.state.kit.memory


@contextmanager
def _found() -> Iterator[None]:
    """The library's MemoryNotFoundError (unknown, deleted or someone else's) as one 404."""
    try:
        yield
    except MemoryNotFoundError as exc:
        raise HTTPException(404, str(exc)) from None


@router.post("/memories", status_code=201)
def store(request: Request, body: StoreRequest, user: Caller) -> dict[str, Any]:
    """Store a memory for the caller; the same content again (same scope) answers the existing id."""
    memory = _memory(request)
    memory_id = memory.store(user.name, body.content, body.memory_type, body.scope, body.metadata,
                             agent_id=body.agent_id)
    return jsonable_encoder(memory.get(memory_id, user_id=user.name))


@router.get("/memories/{memory_id}")
def get(request: Request, memory_id: MemoryId, user: Caller) -> dict[str, Any]:
    """One memory of the caller, or a global one."""
    with _found():
        return jsonable_encoder(_memory(request).get(memory_id, user_id=user.name))


@router.patch("/memories/{memory_id}")
def update(request: Request, memory_id: MemoryId, body: UpdateRequest, user: Caller) -> dict[str, Any]:
    """Change one of the caller's memories (global ones too, if the caller stored them)."""
    with _found():
        return jsonable_encoder(_memory(request).update(memory_id, user_id=user.name, content=body.content,
                                                        metadata=body.metadata))


@router.delete("/memories/{memory_id}")
def delete(request: Request, memory_id: MemoryId, user: Caller,
           purge: bool = Query(False, description="also blank its past versions in the history")) -> dict[str, Any]:
    """Delete one of the caller's memories."""
    with _found():
        _memory(request).delete(memory_id, user_id=user.name, purge=purge)
    return {"id": memory_id, "deleted": True}


@router.get("/memories/{memory_id}/history")
def history(request: Request, memory_id: MemoryId, user: Caller) -> dict[str, Any]:
    """Every change of a memory, oldest first (also after it was deleted)."""
    with _found():
        frame = _memory(request).history(memory_id, user_id=user.name)
    rows = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    return {"id": memory_id, "changes": jsonable_encoder(rows)}


@router.post("/retrieve")
def retrieve(request: Request, body: RetrieveRequest, user: Caller) -> dict[str, Any]:
    """The best memories the caller may see (their own, their agent's with ``agent_id``, global
    ones), best first, each with its score breakdown. Read-only: no access is counted."""
    options = body.model_dump(exclude={"query", "k"}, exclude_none=True)
    hits = _memory(request).retrieve(user.name, body.query, body.k, track=False, **options)
    return {"hits": jsonable_encoder([h.as_dict() for h in hits])}
