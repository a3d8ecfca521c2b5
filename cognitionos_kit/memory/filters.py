"""A small filter language on memory metadata, checked in Python (never pasted into SQL).

    {"source": "docs"}                      equality (same as {"source": {"$eq": "docs"}})
    {"year": {"$gte": 2020, "$lt": 2024}}   several operators on one field: all must hold
    {"tag": {"$in": ["a", "b"]}}            $in / $nin take a list
    {"draft": {"$exists": False}}           $exists takes a bool
Operators: $eq $ne $gt $gte $lt $lte $in $nin $exists. Fields are ANDed. A comparison between
values of different kinds (a number and a string) is simply false. Unknown operators, or a
malformed value for one, raise InvalidRequestError when the filter is compiled.
"""

from __future__ import annotations

import operator
from typing import Any, Callable, Mapping

from ..errors import InvalidRequestError

__all__ = ["compile_filter", "OPERATORS"]

_MISSING = object()
_ORDER = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}
OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists")


def _eq(a: Any, b: Any) -> bool:
    # True == 1 in Python; metadata from JSON should not confuse them.
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def _ordered(op: Callable[[Any, Any], bool], want: Any) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        if v is _MISSING or isinstance(v, bool) != isinstance(want, bool):
            return False
        try:
            return bool(op(v, want))
        except TypeError:
            return False

    return check


def _predicate(field: str, op: str, want: Any) -> Callable[[Any], bool]:
    if op == "$eq":
        return lambda v: v is not _MISSING and _eq(v, want)
    if op == "$ne":
        return lambda v: v is _MISSING or not _eq(v, want)
    if op in _ORDER:
        if not isinstance(want, (int, float, str)) or want is None:
            raise InvalidRequestError(f"filter {field}: {op} needs a number or a string, got {want!r}")
        return _ordered(_ORDER[op], want)
    if op in ("$in", "$nin"):
        if not isinstance(want, (list, tuple, set, frozenset)):
            raise InvalidRequestError(f"filter {field}: {op} needs a list, got {type(want).__name__}")
        items = list(want)
        hit = lambda v: v is not _MISSING and any(_eq(v, w) for w in items)  # noqa: E731
        return hit if op == "$in" else (lambda v: not hit(v))
    if op == "$exists":
        if not isinstance(want, bool):
            raise InvalidRequestError(f"filter {field}: $exists needs True or False, got {want!r}")
        return lambda v: (v is not _MISSING) == want
    raise InvalidRequestError(f"filter {field}: unknown operator {op!r}; use one of {', '.join(OPERATORS)}")


def compile_filter(filters: Mapping[str, Any] | None) -> Callable[[Mapping[str, Any]], bool] | None:
    """A function metadata -> bool for ``filters`` (None when there is nothing to check)."""
    if filters is None:
        return None
    if not isinstance(filters, Mapping):
        raise InvalidRequestError(f"filters must be a dict, got {type(filters).__name__}")
    checks: list[tuple[str, Callable[[Any], bool]]] = []
    for field, cond in filters.items():
        if not isinstance(field, str) or not field:
            raise InvalidRequestError(f"filter field names must be non-empty strings, got {field!r}")
        if field.startswith("$"):
            raise InvalidRequestError(f"unknown top-level filter operator {field!r}; filters are {{field: value or {{op: value}}}}")
        if isinstance(cond, Mapping) and any(isinstance(k, str) and k.startswith("$") for k in cond):
            for op, want in cond.items():
                if not isinstance(op, str) or not op.startswith("$"):
                    raise InvalidRequestError(f"filter {field}: mix of operators and plain keys in {cond!r}")
                checks.append((field, _predicate(field, op, want)))
        else:
            checks.append((field, _predicate(field, "$eq", cond)))
    if not checks:
        return None

    def matches(metadata: Mapping[str, Any]) -> bool:
        return all(check(metadata.get(field, _MISSING)) for field, check in checks)

    return matches
