"""The row filters ``/usage``, ``/spend`` and ``/log`` share: text columns (a parameter repeated
means any of its values: ``?model=a&model=b``) and a time window (``since`` inclusive, ``until``
exclusive, ISO 8601). Who the rows belong to is not a filter here: it comes from the token."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query

__all__ = ["RowFilters", "row_filters", "LOG_COLUMNS"]

Values = Annotated[list[str] | None, Query(max_length=100)]
LOG_COLUMNS = frozenset({"request_id", "trace_id", "role", "provider", "model", "status", "experiment_id", "run_id",
                         "kind", "project", "session_id"})  # what the text log can filter on (storage.textlog)

RowFilters = dict[str, Any]


def row_filters(model: Values = None, provider: Values = None, request_id: Values = None, trace_id: Values = None,
                status: Values = None, project: Values = None, session_id: Values = None, role: Values = None,
                experiment_id: Values = None, run_id: Values = None, kind: Values = None, agent_id: Values = None,
                task_id: Values = None, error_type: Values = None,
                since: Annotated[str | None, Query(description="ISO 8601, inclusive")] = None,
                until: Annotated[str | None, Query(description="ISO 8601, exclusive")] = None) -> RowFilters:
    """The filters given, as ``kit.usage`` keywords (one value: itself; several: a list)."""
    given = {"model": model, "provider": provider, "request_id": request_id, "trace_id": trace_id, "status": status,
             "project": project, "session_id": session_id, "role": role, "experiment_id": experiment_id,
             "run_id": run_id, "kind": kind, "agent_id": agent_id, "task_id": task_id, "error_type": error_type}
    filters: RowFilters = {k: v[0] if len(v) == 1 else v for k, v in given.items() if v}
    return {**filters, **({"since": since} if since else {}), **({"until": until} if until else {})}
