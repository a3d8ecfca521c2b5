"""The attempts behind each sample of a run: every ledger row its call wrote (each provider tried,
each retry with another key, a cache hit), read for the whole run in one query by run id and
grouped by ``request_id``, the column that links a sample (``run.results.request_id``) to its rows.

An attempt as the viewers show it: ``n``, ``provider``, ``model``, ``status``, ``error_type``,
``error`` (the kit's redacted message, cut short), ``latency_ms``, ``cost_usd``, ``key`` (the API
key's fingerprint, never the key), ``cache_hit``, ``answer`` (this attempt gave the sample's
answer), ``outcome`` (what happened, in words) and ``line`` (all of it in one line).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..core.display import money
from ..core.errors import redact

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ATTEMPT_COLUMNS", "RunAttempts", "run_attempts", "attempts_by_request", "attempt_line", "attempts_summary"]

ATTEMPT_COLUMNS = ("request_id", "attempt", "provider", "model", "status", "error_type", "error_message",
                   "latency_ms", "cost_usd", "key_fingerprint", "cache_hit")
_ERROR_CHARS = 160


def run_attempts(ledger: Any, run_id: str) -> pd.DataFrame:
    """The ledger rows of run ``run_id``, one per attempt, in one query (empty without a ledger)."""
    if ledger is None:
        import pandas as pd

        return pd.DataFrame(columns=list(ATTEMPT_COLUMNS))
    return ledger.query(f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM llm_usage WHERE run_id = ? "
                        "ORDER BY request_id, attempt, ts", [run_id])


def attempts_by_request(df: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """``run_attempts``' rows as plain attempt dicts (see the module docstring), by request id."""
    if df.empty:
        return {}
    # plain lists, column by column (about 10 ms for a thousand rows), not a DataFrame walk
    return _by_request(zip(*(df[c].tolist() for c in ATTEMPT_COLUMNS)))


def _by_request(rows: Iterable[tuple[Any, ...]]) -> dict[str, list[dict[str, Any]]]:
    """Rows in ``ATTEMPT_COLUMNS`` order -> attempt dicts by request id, each request's by number."""
    out: dict[str, list[dict[str, Any]]] = {}
    for rid, n, provider, model, status, kind, err, latency, cost, key, hit in rows:
        if _str(err):  # said once: the line names the provider and model already
            err = redact(err).removeprefix(f"{provider}/{model}: ")
        out.setdefault(rid, []).append({
            "n": _int(n), "provider": provider, "model": model, "status": status, "error_type": _str(kind),
            "error": err[:_ERROR_CHARS] if _str(err) else None,
            "latency_ms": _float(latency), "cost_usd": _float(cost), "key": _str(key), "cache_hit": hit is True,
            "answer": False,
        })
    for attempts in out.values():
        if len(attempts) > 1:
            attempts.sort(key=lambda a: a["n"] or 0)
        ok = [a for a in attempts if a["status"] == "ok"]
        if ok:
            ok[-1]["answer"] = True
        for a in attempts:
            a["outcome"] = _outcome(a)
            a["line"] = attempt_line(a, numbered=False)
    return out


def _missing(v: Any) -> bool:
    """None, NaN or pandas' NA (the ledger's NULLs, as a DataFrame holds them)."""
    return v is None or (isinstance(v, float) and v != v) or type(v).__name__ == "NAType"


def _float(v: Any) -> float | None:
    return None if _missing(v) else float(v)


def _int(v: Any) -> int | None:
    return None if _missing(v) else int(v)


def _str(v: Any) -> str | None:
    return None if _missing(v) else str(v)


def _outcome(a: dict[str, Any]) -> str:
    if a["status"] == "ok":
        what = "cache hit" if a["cache_hit"] else "ok"
        return what + (" (the answer)" if a["answer"] else "")
    what = a["error_type"] or a["status"]
    return f"{what}: {a['error']}" if a["error"] else str(what)


def attempt_line(a: dict[str, Any], *, numbered: bool = True) -> str:
    """One attempt in a line: ``attempt 1 openai/gpt-4o-mini rate_limit: … 12 ms`` (``numbered=False``:
    without ``attempt 1``)."""
    parts = [f"attempt {a['n']}"] if numbered else []
    parts += [f"{a['provider']}/{a['model']}", a["outcome"]]
    if a["latency_ms"] is not None:
        parts.append(f"{a['latency_ms']:,.0f} ms")
    if a["cost_usd"]:
        parts.append(money(a["cost_usd"]))
    if a["key"]:
        parts.append(f"key {a['key']}")
    return " ".join(parts)


def attempts_summary(attempts: Sequence[dict[str, Any]] | None) -> str:
    """``1 attempt``, ``3 attempts (2 failed)``, ``none sent``, or ``not recorded for this sample`` (a
    run from before samples kept their request id, or a batch request the provider rejected)."""
    if attempts is None:
        return "not recorded for this sample"
    if not attempts:
        return "none sent"
    n, failed = len(attempts), sum(1 for a in attempts if a["status"] != "ok")
    return f"{n} attempt{'s' if n != 1 else ''}" + (f" ({failed} failed)" if failed else "")


class RunAttempts:
    """The attempts of a run's cells kept as they end, as ``run_attempts`` would read them back,
    so the report written when the run ends needs no ledger query (opening DuckDB and ingesting
    the run's rows: about 90 ms a thousand cells). ``complete`` turns False when some cell's
    attempts are not known here (sent by its options, a failure without its attempts, judges):
    the Run then reads the ledger as before."""

    def __init__(self, complete: bool) -> None:
        self.complete = complete
        self.rows: list[tuple[Any, ...]] = []

    def answered(self, c: Any) -> None:
        last = c.attempts[-1].number if c.attempts else None
        for a in c.attempts:
            self._add(c.request_id, a, c.cost_usd if a.number == last else None)

    def failed(self, exc: BaseException) -> None:
        attempts, rid = getattr(exc, "attempts", None), getattr(exc, "request_id", None)
        if not attempts or rid is None:
            self.complete = False
            return
        for a in attempts:
            self._add(rid, a, None)

    def hit(self, row: dict[str, Any]) -> None:
        self.rows.append((row["request_id"], 1, row["provider"], row["model"], "ok", None, None, row["latency_ms"],
                          row["cost_usd"], None, True))

    def _add(self, rid: str, a: Any, cost: float | None) -> None:
        self.rows.append((rid, a.number, a.provider, a.model, a.status, a.error_type, a.error_message, a.latency_ms,
                          cost, a.key_fingerprint, False))

    def by_request(self, ids: Collection[str] | None = None) -> dict[str, list[dict[str, Any]]]:
        """``attempts_by_request`` of these rows (of the requests ``ids`` only), without a DataFrame."""
        return _by_request(self.rows if ids is None else (r for r in self.rows if r[0] in ids))

    def frame(self) -> pd.DataFrame | None:
        """The attempts in ``run_attempts``' columns and order, or None when not all are known."""
        if not self.complete:
            return None
        import pandas as pd

        df = pd.DataFrame(self.rows, columns=list(ATTEMPT_COLUMNS))
        return df.sort_values(["request_id", "attempt"], kind="stable", ignore_index=True)
