"""Ranking a query vector against the replica: which rows a user may see (masks for visibility,
type and time), their scores (``ranking.py``), the best ``k`` of them, and those as hits.

Exact search is one matrix-vector product, masks, vectorised decay and boost and an
argpartition; metadata filters (``filters.py``) are checked in Python on the best few rows only.
The approximate index (``scan.ScanIndex``, or ``approximate.ApproximateIndex``'s IVF lists) only
proposes candidates: they are re-scored exactly, and a search falls back to exact when too few of
them pass the masks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from ..core.validation import check_identifier, check_text
from .approximate import ApproximateParams, Following, build
from .filters import compile_filter
from .hit import MemoryHit, UseMarker
from .index import Table
from .inputs import check_count, check_memory_types, to_epoch
from .ranking import Ranking, WeightsLike

if TYPE_CHECKING:
    import numpy as np

__all__ = ["SearchQuery", "Ranked", "Searcher", "parse_query", "to_hits"]

Match = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True)
class SearchQuery:
    """One retrieval's checked arguments (everything but the query vector)."""

    user_id: str
    k: int
    types: list[int] | None  # memory types as positions in MEMORY_TYPES; None: any
    match: Match | None  # the compiled metadata filter; None: no filter
    agent_id: str | None
    after: float | None  # created_at >= after (epoch seconds)
    before: float | None  # created_at < before
    ranking: Ranking
    now: float  # the time decay is measured from


def parse_query(base: Ranking, user_id: object, k: object, *, memory_type: object = None,
                filters: Mapping[str, Any] | None = None, agent_id: object = None, created_after: object = None,
                created_before: object = None, weights: WeightsLike = None, half_life_days: float | None = None,
                boost_cap: int | None = None, now: object = None) -> SearchQuery:
    """Check ``retrieve``'s arguments, before anything is embedded; ``base`` is the memory's ranking."""
    return SearchQuery(
        user_id=check_text(user_id, "user_id"),
        k=check_count(k, "k"),
        types=check_memory_types(memory_type),
        agent_id=check_identifier(agent_id, "agent_id"),
        match=compile_filter(filters),  # a malformed filter fails here
        after=None if created_after is None else to_epoch(created_after, "created_after"),
        before=None if created_before is None else to_epoch(created_before, "created_before"),
        ranking=base.with_(weights, half_life_days=half_life_days, boost_cap=boost_cap),
        now=time.time() if now is None else to_epoch(now, "now"),
    )


class Ranked(NamedTuple):
    """The best rows of one search, best first, with the parts of their scores (parallel arrays)."""

    rows: np.ndarray  # positions in the table
    similarity: np.ndarray
    decay: np.ndarray
    boost: np.ndarray
    score: np.ndarray


class Searcher:
    """Exact search, or (``kind="approximate"``) an approximate index built on first use and kept in step."""

    def __init__(self, kind: str = "exact") -> None:
        self.kind = kind
        self.params: ApproximateParams = {}
        self.approximate: Following | None = None

    def use(self, kind: str, params: ApproximateParams) -> None:
        """Search with ``kind`` from now on (other ``params`` than the index's, none included, rebuild it)."""
        self.kind = kind
        if kind == "exact" or params != self.params:
            self.reset()
        self.params = params

    def reset(self) -> None:
        """Drop the approximate index (it is rebuilt from the table on the next search)."""
        if self.approximate is not None:
            self.approximate.detach()
            self.approximate = None

    def rank(self, table: Table, q: np.ndarray, query: SearchQuery) -> Ranked:
        """The best ``query.k`` rows of ``table`` for the unit vector ``q`` that ``query`` allows."""
        import numpy as np

        def allowed(rows: np.ndarray | None = None) -> np.ndarray:
            """Visibility, type and time masks: over every row, or only over candidate ``rows``."""
            pick = slice(0, table.n) if rows is None else rows
            mask = table.visible(query.user_id, query.agent_id, rows)
            if query.types is not None:
                mask &= np.isin(table.mtype[pick], query.types)
            if query.after is not None:
                mask &= table.created[pick] >= query.after
            if query.before is not None:
                mask &= table.created[pick] < query.before
            return mask

        found = self._approximate(table, q, allowed, query) if self.kind == "approximate" and table.n else None
        return found if found is not None else self._exact(table, q, allowed(), query)

    @staticmethod
    def _terms(table: Table, rows: np.ndarray, query: SearchQuery) -> tuple[np.ndarray, np.ndarray]:
        r = query.ranking
        return r.decay(query.now - table.updated[rows]), r.boost(table.count[rows])

    def _exact(self, table: Table, q: np.ndarray, mask: np.ndarray, query: SearchQuery) -> Ranked:
        import numpy as np

        n = table.n
        cand = np.flatnonzero(mask)
        if not len(cand):
            empty = np.zeros(0)
            return Ranked(cand, empty, empty, empty, empty)
        # A full product is cheaper than gathering rows unless few are visible.
        sims = table.similarities(q)[cand] if len(cand) > n // 4 else table.vec[cand] @ q
        w = query.ranking.weights
        if w.decay or w.boost:
            dec, bst = self._terms(table, cand, query)
            return self._top(table, cand, sims, query.ranking.score(sims, dec, bst), (dec, bst), query)
        return self._top(table, cand, sims, w.similarity * sims.astype(np.float64), None, query)

    def _top(self, table: Table, cand: np.ndarray, sims: np.ndarray, scores: np.ndarray,
             terms: tuple[np.ndarray, np.ndarray] | None, query: SearchQuery) -> Ranked:
        """Best ``k`` of ``cand`` by ``scores``; with a metadata filter, walk down the order in
        growing slices until ``k`` pass, so only the best few rows are checked in Python."""
        import numpy as np

        k, match = query.k, query.match
        picked: list[int] = []
        done = 0
        m = k if match is None else max(4 * k, 64)
        while done < len(cand) and len(picked) < k:
            m = min(m, len(cand))
            part = np.argpartition(-scores, m - 1)[:m] if m < len(cand) else np.arange(len(cand))
            for j in part[np.argsort(-scores[part], kind="stable")][done:]:
                if match is None or match(table.rows[cand[j]]["metadata"]):
                    picked.append(int(j))
                    if len(picked) == k:
                        break
            done, m = m, m * 4
        take = np.asarray(picked, dtype=np.int64)
        rows = cand[take]
        dec, bst = self._terms(table, rows, query) if terms is None else (terms[0][take], terms[1][take])
        return Ranked(rows, sims[take], dec, bst, scores[take])

    def _approximate(self, table: Table, q: np.ndarray, allowed: Callable[[np.ndarray], np.ndarray],
                     query: SearchQuery) -> Ranked | None:
        """Re-score the approximate neighbours that pass the masks; None (-> exact) if too few pass."""
        import numpy as np

        ann = self.approximate
        if ann is not None and (ann.stale or ann.table is not table):
            self.reset()
            ann = None
        if ann is None:
            ann = self.approximate = build(table, self.params)
        k, match = query.k, query.match
        count = max(5 * k, 50)  # candidates re-scored exactly: enough to undo the codes' errors
        while True:
            rows, sims = ann.search(q, count)
            rows_ok = allowed(rows)
            cand, sims = rows[rows_ok], sims[rows_ok]
            if match is not None:
                keep = np.array([match(table.rows[i]["metadata"]) for i in cand], dtype=np.bool_)
                cand, sims = cand[keep], sims[keep]
            if len(cand) >= k:
                break
            if count >= min(len(ann), 4096):
                return None
            count *= 8
        dec, bst = self._terms(table, cand, query)
        scores = query.ranking.score(sims, dec, bst)
        top = np.argsort(-scores, kind="stable")[:k]
        return Ranked(cand[top], sims[top], dec[top], bst[top], scores[top])


def to_hits(table: Table, ranked: Ranked, marker: UseMarker | None = None) -> list[MemoryHit]:
    """The ranked rows as MemoryHits, ranks from 1; ``marker`` lets them be marked used (None: read-only)."""
    hits = []
    for rank, (i, sim, dec, bst, score) in enumerate(zip(*ranked), start=1):
        rec = table.record(int(i))
        del rec["model"]
        hits.append(MemoryHit(**rec, score=float(score), similarity=float(sim), decay=float(dec), boost=float(bst), rank=rank,
                              marker=marker))
    return hits
