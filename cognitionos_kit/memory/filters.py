"""A small filter language on memory metadata, checked in Python (never pasted into SQL).

    {"source": "docs"}                      equality (same as {"source": {"$eq": "docs"}})
    {"year": {"$gte": 2020, "$lt": 2024}}   several operators on one field: all must hold
    {"tag": {"$in": ["a", "b"]}}            $in / $nin take a list
    {"draft": {"$exists": False}}           $exists takes a bool
    {"meta": {"lang": "en"}}                equality to a whole dict (metadata values can be dicts)
Operators: $eq $ne $gt $gte $lt $lte $in $nin $exists. Fields are ANDed; there is no top-level
$and / $or / $not (for "either of" on one field use $in). A field's value is matched as a whole:
nested fields cannot be queried, so an operator may only appear as a key of a field's condition,
never inside a value. A comparison between values of different kinds (a number and a string) is
simply false.

A filter that could only ever match nothing by mistake is refused with InvalidRequestError when it
is compiled (before anything is embedded or searched): a filter that is not a dict, a field name
that is empty, not a string or starts with "$", an unknown operator, an operator inside a value
({"a": {"$in": [{"$gt": 1}]}}), operators mixed with plain keys ({"a": {"$gt": 1, "b": 2}}), a
value that is not JSON (a set, a datetime, an object, a function, NaN, a lone surrogate), $in /
$nin without a list, $gt / $gte / $lt / $lte without a number or string, $exists without a bool.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Mapping
from numbers import Real
from typing import Any

from ..core.errors import InvalidRequestError
from ..core.validation import check_text

__all__ = ["compile_filter", "OPERATORS"]

_MISSING = object()
_ORDER = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}
OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists")
EXAMPLE = '{"source": "docs", "year": {"$gte": 2020}, "tag": {"$in": ["a", "b"]}}'


def _q(field: str) -> str:
    """A field name as it appears in a JSON-style example."""
    return json.dumps(field)


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


def _json_value(value: Any, where: str) -> None:
    """Refuse ``value`` unless it is JSON-like (what metadata can hold) with no operator inside."""
    if value is None or isinstance(value, (bool, str)):
        if isinstance(value, str):
            check_text(value, where, allow_empty=True)
        return
    if isinstance(value, Real):
        if not math.isfinite(value):
            raise InvalidRequestError(f"{where}: {value!r} is not a JSON number, so no metadata can equal it")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _json_value(item, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidRequestError(
                    f"{where}: dict keys must be strings (metadata is JSON), got {key!r}; e.g. {EXAMPLE}")
            check_text(key, f"{where}: key", allow_empty=True)
            if key.startswith("$"):
                raise InvalidRequestError(
                    f"{where}: operator {key!r} inside a value; operators only go right under a field name, "
                    f"e.g. {{\"year\": {{\"$gt\": 2020}}}} or {{\"tag\": {{\"$in\": [\"a\", \"b\"]}}}} "
                    "(nested fields cannot be queried: compare the whole value, or store the field at the top level)")
            _json_value(item, f"{where}[{key!r}]")
        return
    hint = "pass a list instead, e.g. sorted(values)" if isinstance(value, (set, frozenset)) else f"e.g. {EXAMPLE}"
    raise InvalidRequestError(
        f"{where}: a {type(value).__name__} is not a JSON value (str, number, bool, None, list or dict), so "
        f"no metadata can equal it; {hint}")


def _predicate(field: str, op: str, want: Any, *, plain: bool = False) -> Callable[[Any], bool]:
    where = f"filter {field!r}" if plain else f"filter {field!r}: {op}"
    if op == "$eq":
        _json_value(want, where)
        return lambda v: v is not _MISSING and _eq(v, want)
    if op == "$ne":
        _json_value(want, where)
        return lambda v: v is _MISSING or not _eq(v, want)
    if op in _ORDER:
        if isinstance(want, bool) or not isinstance(want, (Real, str)):
            raise InvalidRequestError(
                f"{where} needs a number or a string, got {want!r}; e.g. {{{_q(field)}: {{\"{op}\": 2020}}}}")
        _json_value(want, where)
        return _ordered(_ORDER[op], want)
    if op in ("$in", "$nin"):
        if not isinstance(want, (list, tuple)):
            hint = " (a set has no JSON form: pass sorted(values))" if isinstance(want, (set, frozenset)) else ""
            raise InvalidRequestError(
                f"{where} needs a list, got {type(want).__name__}{hint}; e.g. {{{_q(field)}: {{\"{op}\": [\"a\", \"b\"]}}}}")
        items = list(want)
        for i, item in enumerate(items):
            _json_value(item, f"{where}[{i}]")
        hit = lambda v: v is not _MISSING and any(_eq(v, w) for w in items)  # noqa: E731
        return hit if op == "$in" else (lambda v: not hit(v))
    if op == "$exists":
        if not isinstance(want, bool):
            raise InvalidRequestError(f"{where} needs True or False, got {want!r}; e.g. {{{_q(field)}: {{\"$exists\": True}}}}")
        return lambda v: (v is not _MISSING) == want
    raise InvalidRequestError(f"filter {field!r}: unknown operator {op!r}; use one of {', '.join(OPERATORS)}")


def compile_filter(filters: Mapping[str, Any] | None) -> Callable[[Mapping[str, Any]], bool] | None:
    """A function metadata -> bool for ``filters`` (None when there is nothing to check); a
    malformed filter raises InvalidRequestError saying what was wrong."""
    if filters is None:
        return None
    if not isinstance(filters, Mapping):
        raise InvalidRequestError(f"filters must be a dict of field -> value or {{operator: value}}, got "
                                  f"{type(filters).__name__}; e.g. filters={EXAMPLE}")
    checks: list[tuple[str, Callable[[Any], bool]]] = []
    for field, cond in filters.items():
        if not isinstance(field, str) or not field:
            raise InvalidRequestError(f"filter field names must be non-empty strings, got {field!r}; e.g. {EXAMPLE}")
        check_text(field, "filter field name", allow_empty=True)
        if field.startswith("$"):
            raise InvalidRequestError(
                f"filter field {field!r}: top-level operators ($and, $or, ...) are not supported; fields are "
                f"ANDed, and for either-of on one field use $in, e.g. {{\"tag\": {{\"$in\": [\"a\", \"b\"]}}}}")
        if isinstance(cond, Mapping) and any(isinstance(k, str) and k.startswith("$") for k in cond):
            others = [k for k in cond if not (isinstance(k, str) and k.startswith("$"))]
            if others:
                raise InvalidRequestError(
                    f"filter {field!r}: operators mixed with plain keys {others!r} in {cond!r}; use only operators, "
                    f"e.g. {{{_q(field)}: {{\"$gt\": 1, \"$lt\": 5}}}}, or only a plain value to compare with")
            for op, want in cond.items():
                checks.append((field, _predicate(field, op, want)))
        else:
            checks.append((field, _predicate(field, "$eq", cond, plain=True)))
    if not checks:
        return None

    def matches(metadata: Mapping[str, Any]) -> bool:
        return all(check(metadata.get(field, _MISSING)) for field, check in checks)

    return matches
