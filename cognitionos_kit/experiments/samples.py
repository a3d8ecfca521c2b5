"""Every sample of a run as a record a reader can browse: what was asked, what came back, how it
scored and why, what it cost, who answered and every attempt of its call (``attempts.py``); filters
over them; and the same sample in another run.

The per-sample viewer (``run.viewer()``, a widget) and the report's Samples section both read
these records, so the notebook and the offline HTML page show the same thing and filter alike.

A sample is one dataset row under one cell of the grid and one repeat: its key is
``row / template / model / settings / repeat``. Paired with another run, a sample meets the one
with the same key there, else the same row and repeat under the same model, else the same row
and repeat (two runs of different models side by side).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..core.errors import InvalidRequestError
from .attempts import attempts_by_request, attempts_summary

if TYPE_CHECKING:
    import pandas as pd

    from .run import Run

__all__ = ["sample_records", "filter_records", "pair_records", "record_text", "attempt_rows", "GRID"]

GRID = ("row", "template", "model", "settings", "repeat")
# what every record names explicitly; every other column of the table is a dataset field or extra
_KNOWN = {*GRID, "cell", "prompt", "output", "parsed", "status", "error", "provider", "served_model",
          "requested_model", "substituted", "prompt_tokens", "completion_tokens", "cost_usd", "latency_ms",
          "finish_reason", "cache_hit", "spent_usd", "attempts", "request_id"}


def _plain(v: Any) -> Any:
    """A JSON-ready value: NaN becomes None, numpy scalars plain Python (NA and NaT are gone already)."""
    if isinstance(v, float) and v != v:
        return None
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        return v.item()
    return v


def _plain_column(col: pd.Series) -> list[Any]:
    """A column's values JSON-ready (``_plain``), column by column: a thousand-row run's records are
    made at its end, and value by value this took most of the report's time."""
    values = col.tolist()  # numpy scalars become Python ones; NA, NaN and NaT stay
    missing = col.isna()
    if missing.any():
        values = [None if m else v for v, m in zip(values, missing.tolist())]
    if col.dtype == object:  # values of any type, numpy scalars among them
        values = [_plain(v) for v in values]
    return values


def sample_records(results: pd.DataFrame,
                   attempts: dict[str, list[dict[str, Any]]] | None = None) -> list[dict[str, Any]]:
    """One record per row of a run's results table (``run.results``); ``attempts`` (the run's, by
    request id: ``attempts.attempts_by_request``) gives each its own, else ``attempts`` is None."""
    cols = list(results.columns)
    scores = [c for c in cols if c.startswith("score_")]
    notes = [c for c in cols if c.startswith(("rationale_", "note_"))]
    fields = [c for c in cols if c not in _KNOWN and c not in scores and c not in notes]
    out = []
    for values in zip(*(_plain_column(results[c]) for c in cols)):
        r = dict(zip(cols, values))
        served = r.get("served_model") or r.get("model")
        out.append({
            "key": "/".join(str(r.get(k)) for k in GRID),
            **{k: r.get(k) for k in GRID},
            "fields": {k: r[k] for k in fields if r.get(k) is not None},
            "prompt": r.get("prompt"), "output": r.get("output"), "parsed": r.get("parsed"),
            "status": r.get("status"), "error": r.get("error"),
            "provider": r.get("provider"), "served_model": served,
            "substituted": bool(r.get("substituted")), "cache_hit": bool(r.get("cache_hit")),
            "request_id": r.get("request_id"), **_attempts(r, attempts),
            "cost_usd": r.get("cost_usd"), "latency_ms": r.get("latency_ms"),
            "prompt_tokens": r.get("prompt_tokens"), "completion_tokens": r.get("completion_tokens"),
            "scores": {c[len("score_"):]: r.get(c) for c in scores},
            "notes": {c.split("_", 1)[1]: r.get(c) for c in notes if r.get(c)},
        })
    return out


def _attempts(r: dict[str, Any], by_request: dict[str, list[dict[str, Any]]] | None) -> dict[str, Any]:
    if by_request is None:
        return {"attempts": None, "attempts_text": None}
    rid = r.get("request_id")
    found = by_request.get(rid) if rid else ([] if r.get("status") == "skipped" else None)  # skipped: never sent
    return {"attempts": found, "attempts_text": attempts_summary(found)}


def attempt_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """The detail pane's attempt lines: one (``attempts``, ``1 attempt: …``) for a call answered at
    once; else the count, then one line per attempt; no line when the run's attempts were not read
    (a Run without a ledger)."""
    attempts, text = r.get("attempts"), r.get("attempts_text")
    if text is None:
        return []
    if attempts is not None and len(attempts) == 1:
        return [("attempts", f"{text}: {attempts[0]['line']}")]
    return [("attempts", text), *((f"attempt {a['n']}", a["line"]) for a in attempts or [])]


def record_text(r: dict[str, Any]) -> str:
    """What a text filter searches: prompt, output, error, dataset fields and judge notes (lower case)."""
    parts = [r.get("prompt"), r.get("output"), r.get("error"), *r["fields"].values(), *r["notes"].values()]
    return "\n".join(str(p) for p in parts if p is not None).lower()


def filter_records(records: Iterable[dict[str, Any]], *, model: str | None = None, status: str | None = None,
                   score: str | None = None, min_score: float | None = None, max_score: float | None = None,
                   text: str | None = None) -> list[dict[str, Any]]:
    """The records that match every filter given: the model asked for, the status (``ok``, ``error``,
    ``skipped``), a score between ``min_score`` and ``max_score`` (inclusive; a sample without that
    score never matches a bound), and ``text`` anywhere in prompt, output, error, fields or notes."""
    if (min_score is not None or max_score is not None) and score is None:
        raise InvalidRequestError("min_score/max_score need score= naming which score, e.g. score='contains'")
    needle = text.strip().lower() if text else ""
    out = []
    for r in records:
        if model is not None and r["model"] != model or status is not None and r["status"] != status:
            continue
        if score is not None:
            if score not in r["scores"]:
                raise InvalidRequestError(f"no score {score!r} in this run; its scores: {', '.join(r['scores']) or 'none'}")
            v = r["scores"][score]
            missing = v is None or (isinstance(v, float) and math.isnan(v))
            if (min_score is not None or max_score is not None) and missing:
                continue
            if min_score is not None and v < min_score or max_score is not None and v > max_score:
                continue
        if needle and needle not in record_text(r):
            continue
        out.append(r)
    return out


def pair_records(records: Sequence[dict[str, Any]], others: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """For each record's key, the same sample in the other run (see the module docstring), if any."""
    exact = {o["key"]: o for o in others}
    by_model: dict[tuple, dict[str, Any]] = {}
    by_row: dict[tuple, dict[str, Any]] = {}
    for o in others:
        by_model.setdefault((o["row"], o["model"], o["repeat"]), o)
        by_row.setdefault((o["row"], o["repeat"]), o)
    pairs = {}
    for r in records:
        match = exact.get(r["key"]) or by_model.get((r["row"], r["model"], r["repeat"])) \
            or by_row.get((r["row"], r["repeat"]))
        if match is not None:
            pairs[r["key"]] = match
    return pairs


def run_records(run: Run, other: Run | None = None, *, limit: int | None = None) -> dict[str, Any]:
    """What a viewer needs: the records (the first ``limit`` samples), the choices its filters
    offer, and the other run's pairs."""
    results = run.results if limit is None else run.results.head(limit)
    records = sample_records(results, _run_attempts(run, None if limit is None else results))
    data: dict[str, Any] = {
        "run_id": run.run_id, "records": records,
        "models": sorted({str(r["model"]) for r in records}),
        "statuses": sorted({str(r["status"]) for r in records}),
        "scores": sorted({k for r in records for k in r["scores"]}),
    }
    if other is not None:
        others = sample_records(other.results, _run_attempts(other))
        data["other_run_id"] = other.run_id
        data["pairs"] = pair_records(records, others)
    return data


def _run_attempts(run: Run, shown: pd.DataFrame | None = None) -> dict[str, list[dict[str, Any]]] | None:
    """The run's attempts by request id (one ledger query per run), None without a ledger; with
    ``shown`` (some of its samples), only theirs."""
    if getattr(run, "ledger", None) is None:
        return None
    known = getattr(run, "_known", None)
    if known is not None and run._attempts is None:  # kept by the run as it went: no frame needed
        return known.by_request(None if shown is None else set(shown.request_id.dropna()))
    frame = run.attempts
    if shown is not None and len(shown) < len(run.results) and "request_id" in shown and not frame.empty:
        frame = frame[frame.request_id.isin(set(shown.request_id.dropna()))]
    return attempts_by_request(frame)
