"""The settings of one ``Memory`` (what ``Kit(memory={...})`` passes on), checked without touching
the data folder: a bad name or value is an InvalidRequestError before anything is created."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import InvalidRequestError
from ..core.validation import check_text
from .inputs import check_choice, check_flag
from .ranking import Ranking, Weights, WeightsLike

__all__ = ["OPTIONS", "INDEX_KINDS", "MemoryOptions", "check_options"]

OPTIONS = ("collection", "embedding_model", "half_life_days", "weights", "boost_cap", "index", "lock_timeout", "fsync")
INDEX_KINDS = ("exact", "approximate")


@dataclass(frozen=True)
class MemoryOptions:
    """Every option of a Memory, checked; ``ranking`` is the default score they make."""

    collection: str = "default"
    embedding_model: str | None = None
    half_life_days: float = 30.0
    weights: WeightsLike = None
    boost_cap: int = 100
    index: str = "exact"
    lock_timeout: float = 30.0
    fsync: bool = False
    ranking: Ranking = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_text(self.collection, "collection")
        if self.embedding_model is not None:
            check_text(self.embedding_model, "embedding_model")
        ranking = Ranking(Weights.coerce(self.weights), self.half_life_days, self.boost_cap)
        check_choice(self.index, INDEX_KINDS, "index")
        lt = self.lock_timeout
        if isinstance(lt, bool) or not isinstance(lt, (int, float)) or not lt > 0:
            raise InvalidRequestError(f"lock_timeout must be a number of seconds > 0, got {lt!r}")
        check_flag(self.fsync, "fsync")
        object.__setattr__(self, "ranking", ranking)


def check_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` (keyword arguments of ``Memory`` but home and kit) checked, as a dict."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InvalidRequestError(f"memory options must be a dict, got {type(options).__name__}")
    unknown = sorted(set(options) - set(OPTIONS), key=str)
    if unknown:
        raise InvalidRequestError(f"unknown memory option(s) {unknown}: use {', '.join(OPTIONS)}")
    MemoryOptions(**options)
    return dict(options)
