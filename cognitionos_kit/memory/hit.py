"""``MemoryHit``: one retrieved memory with its score breakdown; ``HitList``: what ``retrieve`` returns.

A hit of a tracked retrieve (the default) can be marked used (``hit.used()``): that, and only
that, counts as an access of the memory (see ``memory.py``, "What counts as an access")."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..core.display import hits_table, shorten
from ..core.errors import InvalidRequestError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MemoryHit", "HitList", "HIT_FIELDS", "UseMarker"]

UseMarker = Callable[[str], bool]  # marks one memory id used; False if this retrieval already counted it

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
    marker: UseMarker | None = field(default=None, repr=False, compare=False)  # None: read-only (track=False)

    def __repr__(self) -> str:
        return (f"MemoryHit(#{self.rank} score={self.score:.3f} sim={self.similarity:.3f} decay={self.decay:.3f} "
                f"boost={self.boost:.3f} {self.memory_type}/{self.scope} id={self.id} {shorten(self.content, 60)!r})")

    def used(self) -> bool:
        """Count this hit as one access of its memory (it was put to use: shown, quoted, put in a
        prompt), so its frequency boost grows in later retrievals. Once per hit of a retrieve:
        True if counted now, False if this retrieval's hit was already counted. Hits of a
        read-only ``retrieve(..., track=False)`` refuse with an InvalidRequestError."""
        if self.marker is None:
            raise InvalidRequestError(
                f"hit {self.id} comes from a read-only retrieve (track=False) or was not returned by retrieve, so it "
                f"cannot be marked used; if it really was used: kit.memory.mark_used([{self.id!r}], user_id=...)")
        return self.marker(self.id)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in HIT_FIELDS}

    def __getstate__(self) -> dict[str, Any]:  # a pickled or copied-out hit is read-only: the marker stays behind
        return {**self.__dict__, "marker": None}

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

        return pd.DataFrame.from_records([h.as_dict() for h in self], columns=list(HIT_FIELDS))


HIT_FIELDS = tuple(f.name for f in fields(MemoryHit) if f.name != "marker")  # what a hit shows: as_dict, frames
