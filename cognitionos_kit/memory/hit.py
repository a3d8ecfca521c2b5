"""``MemoryHit``: one retrieved memory with its score breakdown."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["MemoryHit"]


@dataclass(frozen=True)
class MemoryHit:
    """A memory returned by ``retrieve``; ``score`` = weighted similarity + decay + boost."""

    id: str
    content: str
    score: float
    similarity: float
    decay: float
    boost: float
    memory_type: str
    scope: str
    metadata: dict[str, Any] = field(default_factory=dict)
    user_id: str = ""
    agent_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    last_accessed_at: datetime | None = None
    access_count: int = 0
    rank: int = 0

    def __repr__(self) -> str:
        text = self.content if len(self.content) <= 60 else self.content[:57] + "..."
        return (f"MemoryHit(#{self.rank} score={self.score:.3f} sim={self.similarity:.3f} decay={self.decay:.3f} "
                f"boost={self.boost:.3f} {self.memory_type}/{self.scope} id={self.id} {text!r})")

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def _repr_html_(self) -> str:
        cells = "".join(
            f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>{html.escape(str(v))}</td></tr>"
            for k, v in self.as_dict().items()
        )
        return f"<table>{cells}</table>"
