"""The retrieval score: similarity, time decay and a frequency boost, added with weights.

    score      = w_similarity * similarity + w_decay * decay + w_boost * boost
    similarity = cosine(query, memory)                                    in [-1, 1]
    decay      = 0.5 ** (age_days / half_life_days)                       in (0, 1]
                 age = now - updated_at  (created_at until the content is updated;
                 being used does not refresh it: that is what the boost counts)
    boost      = min(1, log1p(access_count) / log1p(boost_cap))           in [0, 1]
                 access_count = times the memory was marked used (``hit.used()``,
                 ``Memory.mark_used``); retrieving alone never counts (see ``memory.py``)

With the defaults (1.0, 0.15, 0.1; half-life 30 days; cap 100 accesses) similarity leads:
a memory untouched for a month loses 0.075 against a fresh one, and a memory used 100
times or more gains 0.1 over one never used. Set a weight to 0 to switch a term off.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from ..core.errors import InvalidRequestError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Weights", "WeightsLike", "Ranking", "decay", "boost"]

DAY = 86400.0


@dataclass(frozen=True)
class Weights:
    """How much each term counts in the score."""

    similarity: float = 1.0
    decay: float = 0.15
    boost: float = 0.1

    @classmethod
    def coerce(cls, value: object, base: Weights | None = None) -> Weights:
        """Weights from a Weights, a mapping of some of the three names (the rest from ``base``) or a 3-tuple."""
        base = base or cls()
        if value is None:
            return base
        if isinstance(value, Weights):
            w = value
        elif isinstance(value, Mapping):
            unknown = set(value) - {"similarity", "decay", "boost"}
            if unknown:
                raise InvalidRequestError(f"unknown weight(s) {sorted(unknown)}: use similarity, decay, boost")
            w = cls(**{**base.__dict__, **value})
        elif isinstance(value, (tuple, list)) and len(value) == 3:
            w = cls(*value)
        else:
            raise InvalidRequestError(f"weights must be a Weights, a dict or a 3-tuple, got {value!r}")
        for name, v in w.__dict__.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise InvalidRequestError(f"weight {name} must be a finite number >= 0, got {v!r}")
        if not (w.similarity or w.decay or w.boost):
            raise InvalidRequestError("weights are all 0: every memory would score 0 and the order would be arbitrary; "
                                      "keep one > 0, e.g. weights={'similarity': 1.0, 'decay': 0, 'boost': 0}")
        return w


# What ``weights=`` accepts: a Weights, a mapping of some of the three names, or a 3-tuple.
WeightsLike: TypeAlias = "Weights | Mapping[str, float] | Sequence[float] | None"


@dataclass(frozen=True)
class Ranking:
    """Everything the score depends on besides the vectors."""

    weights: Weights = Weights()
    half_life_days: float = 30.0
    boost_cap: int = 100

    def __post_init__(self) -> None:
        h = self.half_life_days
        if isinstance(h, bool) or not isinstance(h, (int, float)) or not (h > 0) or not math.isfinite(h):
            raise InvalidRequestError(f"half_life_days must be a positive number, got {h!r}")
        c = self.boost_cap
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise InvalidRequestError(f"boost_cap must be an int >= 1, got {c!r}")

    def with_(self, weights: WeightsLike = None, half_life_days: float | None = None, boost_cap: int | None = None) -> Ranking:
        """This ranking with some settings changed (None keeps one), checked again."""
        return Ranking(
            Weights.coerce(weights, self.weights),
            self.half_life_days if half_life_days is None else half_life_days,
            self.boost_cap if boost_cap is None else boost_cap,
        )

    def decay(self, age_seconds: np.ndarray) -> np.ndarray:
        """The decay term of memories ``age_seconds`` old."""
        return decay(age_seconds, self.half_life_days)

    def boost(self, access_count: np.ndarray) -> np.ndarray:
        """The boost term of memories used ``access_count`` times."""
        return boost(access_count, self.boost_cap)

    def score(self, similarity: np.ndarray, decay_: np.ndarray, boost_: np.ndarray) -> np.ndarray:
        """The weighted sum of the three terms."""
        w = self.weights
        return w.similarity * similarity + w.decay * decay_ + w.boost * boost_


def decay(age_seconds: np.ndarray, half_life_days: float) -> np.ndarray:
    """0.5 ** (age / half-life); ages below zero (clock skew) count as zero."""
    import numpy as np

    age = np.maximum(np.asarray(age_seconds, dtype=np.float64), 0.0)
    return np.exp2(-age / (half_life_days * DAY))


def boost(access_count: np.ndarray, cap: int) -> np.ndarray:
    """log1p(count) / log1p(cap), capped at 1: the first uses count most."""
    import numpy as np

    return np.minimum(np.log1p(np.asarray(access_count, dtype=np.float64)) / math.log1p(cap), 1.0)
