"""``MemoryHit``: one retrieved memory with its score breakdown; ``HitList``: what ``retrieve`` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..core.display import hits_table, shorten

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MemoryHit", "HitList"]

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
        return (f"MemoryHit(#{self.rank} score={self.score:.3f} sim={self.similarity:.3f} decay={self.decay:.3f} "
                f"boost={self.boost:.3f} {self.memory_type}/{self.scope} id={self.id} {shorten(self.content, 60)!r})")

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def _repr_html_(self) -> str:
        return hits_table([self])


class HitList(list):
    """The hits of one ``retrieve``, best first: a plain list that shows as one compact table."""

    def __repr__(self) -> str:
        if not self:
            return "no memories match"
        return f"{len(self)} hit(s)\n" + hits_table(self, text=True)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # IPython's plain-text repr
        p.text("[...]" if cycle else repr(self))

    def _repr_html_(self) -> str:
        if not self:
            return "<div>no memories match</div>"
        return hits_table(self)

    def to_frame(self) -> pd.DataFrame:
        """The hits as a DataFrame, one row each with every field (as ``retrieve_frame``)."""
        import pandas as pd

        return pd.DataFrame.from_records([h.as_dict() for h in self], columns=list(MemoryHit.__dataclass_fields__))
