"""``Memory.evaluate``: how well retrieval finds known answers -- recall@k and mean reciprocal
rank (MRR) over queries with the ids of the memories they should find. Evaluation retrieves
read-only (``track=False``): it never changes access counts, so running it twice gives the same
numbers and it does not change what later retrievals return.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.errors import InvalidRequestError
from ..core.validation import check_text

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Evaluation", "check_cases", "score_cases"]


@dataclass(frozen=True)
class Evaluation:
    """Retrieval quality over ``n`` queries: ``recall_at_k`` (the share of expected memories found
    in the top ``k``, averaged over queries), ``mrr`` (mean of 1/rank of the first expected memory
    found, 0 when none is in the top ``k``), ``hit_rate_at_1`` (the share of queries whose first hit
    is expected) and ``ranks``: one row per query (query, expected, rank or <NA>, top_id, top_score)."""

    k: int
    n: int
    recall_at_k: float
    mrr: float
    hit_rate_at_1: float
    ranks: pd.DataFrame

    def __repr__(self) -> str:
        return (f"Evaluation(n={self.n}, recall@{self.k}={self.recall_at_k:.3f}, mrr={self.mrr:.3f}, "
                f"hit_rate@1={self.hit_rate_at_1:.3f})")

    def _repr_html_(self) -> str:
        import html

        return f"<div><b>{html.escape(repr(self))}</b></div>" + self.ranks.to_html(index=False, na_rep="-")


def check_cases(queries: object, expected_ids: object) -> tuple[list[str], list[tuple[str, ...]]]:
    """The queries and, for each, the ids of the memories it should find (one id or several)."""
    if isinstance(queries, str) or not isinstance(queries, Sequence):
        raise InvalidRequestError(f"queries must be a list of texts, got {type(queries).__name__}")
    if isinstance(expected_ids, str) or not isinstance(expected_ids, Sequence):
        raise InvalidRequestError("expected_ids must be a list with one memory id (or a list of ids) per query, "
                                  f"got {type(expected_ids).__name__}")
    if not queries:
        raise InvalidRequestError("queries is empty: evaluate needs at least one query")
    if len(queries) != len(expected_ids):
        raise InvalidRequestError(f"{len(queries)} queries but {len(expected_ids)} expected_ids: give one per query")
    texts = [check_text(q, f"queries[{i}]") for i, q in enumerate(queries)]
    expected = []
    for i, e in enumerate(expected_ids):
        ids = (e,) if isinstance(e, str) else tuple(e) if isinstance(e, Sequence) else None
        if not ids:
            raise InvalidRequestError(f"expected_ids[{i}] must be a memory id or a non-empty list of ids, got {e!r}")
        expected.append(tuple(check_text(x, f"expected_ids[{i}]") for x in ids))
    return texts, expected


def score_cases(queries: list[str], expected: list[tuple[str, ...]], found: list[list[tuple[str, float]]],
                k: int) -> Evaluation:
    """The Evaluation of ``found``: per query, the (id, score) of its top ``k`` hits, best first."""
    import pandas as pd

    rows, recalls, reciprocal = [], [], []
    for query, want, hits in zip(queries, expected, found):
        ids = [h for h, _ in hits]
        rank = next((r for r, h in enumerate(ids, start=1) if h in want), None)
        recalls.append(len(set(want) & set(ids)) / len(set(want)))
        reciprocal.append(1 / rank if rank else 0.0)
        rows.append({"query": query, "expected": want[0] if len(want) == 1 else list(want), "rank": rank,
                     "top_id": ids[0] if ids else None, "top_score": hits[0][1] if hits else None})
    ranks = pd.DataFrame(rows, columns=["query", "expected", "rank", "top_id", "top_score"])
    ranks["rank"] = ranks["rank"].astype("Int64")
    n = len(queries)
    return Evaluation(k=k, n=n, recall_at_k=sum(recalls) / n, mrr=sum(reciprocal) / n,
                      hit_rate_at_1=sum(r == 1.0 for r in reciprocal) / n, ranks=ranks)
