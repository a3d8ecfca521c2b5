"""Checks of the values callers pass to memory methods. Each bad value is an InvalidRequestError
naming the argument, raised before anything is embedded or written."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any, TypeAlias

from ..core.errors import InvalidRequestError
from ..core.validation import check_text, check_time
from .index import MEMORY_TYPES

__all__ = ["TimeLike", "check_choice", "check_flag", "check_count", "check_agent", "check_contents", "check_metadata",
           "check_memory_types", "metadata_per_content", "to_epoch", "content_hash"]

# A time as callers pass it: a datetime (naive means UTC), a date, an ISO string or epoch seconds.
TimeLike: TypeAlias = "date | str | float"


def check_choice(value: object, options: Sequence[str], what: str) -> str:
    """``value`` if it is one of ``options``."""
    if not isinstance(value, str) or value not in options:
        raise InvalidRequestError(f"unknown {what} {value!r}: use one of {', '.join(options)}")
    return value


def check_flag(value: object, what: str) -> bool:
    """``value`` if it is True or False (not 1, not "yes")."""
    if not isinstance(value, bool):
        raise InvalidRequestError(f"{what} must be True or False, got {value!r}")
    return value


def check_count(value: object, what: str) -> int:
    """An int >= 1 (how many hits, lists, ...)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidRequestError(f"{what} must be an int >= 1, got {value!r}")
    return value


def to_epoch(value: object, what: str) -> float:
    """A time (datetime, date, ISO string or epoch seconds) as epoch seconds."""
    return check_time(value, what).timestamp()


def check_agent(scope: str, agent_id: object) -> str | None:
    """The agent id: required for ``scope='agent'``, refused for the other scopes."""
    if scope == "agent":
        return check_text(agent_id, "agent_id (needed for scope='agent')")
    if agent_id is not None:
        raise InvalidRequestError(f"agent_id is only for scope='agent' (got scope={scope!r})")
    return None


def check_contents(contents: object) -> list[str]:
    """A list of texts to store, each non-blank valid UTF-8."""
    if isinstance(contents, (str, bytes)) or not isinstance(contents, Sequence):
        raise InvalidRequestError(f"contents must be a list of str, got {type(contents).__name__}")
    return [check_text(c, f"contents[{i}]") for i, c in enumerate(contents)]


def check_memory_types(memory_type: object) -> list[int] | None:
    """One memory type or several, as their positions in MEMORY_TYPES (None: any type)."""
    if memory_type is None:
        return None
    types = [memory_type] if isinstance(memory_type, str) else list(memory_type) \
        if isinstance(memory_type, (list, tuple, set)) else [memory_type]
    if not types:
        raise InvalidRequestError("memory_type must name at least one type")
    return [MEMORY_TYPES.index(check_choice(m, MEMORY_TYPES, "memory_type")) for m in types]


def check_metadata(value: object, what: str = "metadata") -> dict[str, Any]:
    """A JSON-serialisable dict with str keys (None: empty), as a fresh copy."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidRequestError(f"{what} must be a dict with str keys, got {type(value).__name__}")
    _check_strings(value, what)
    try:
        copy: dict[str, Any] = json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as e:
        raise InvalidRequestError(f"{what} must be JSON-serialisable: {e}") from None
    return copy


def metadata_per_content(metadata: object, n: int) -> list[dict[str, Any]]:
    """``metadata`` as one dict per content: one dict for all, or a list of ``n`` dicts."""
    if metadata is None or isinstance(metadata, Mapping):
        return [check_metadata(metadata)] * n
    if isinstance(metadata, Sequence) and not isinstance(metadata, (str, bytes)) and len(metadata) == n:
        return [check_metadata(m, f"metadata[{i}]") for i, m in enumerate(metadata)]
    raise InvalidRequestError("metadata must be a dict, or a list of dicts as long as contents")


def content_hash(content: str) -> str:
    """What deduplication compares: the sha256 of the content."""
    return hashlib.sha256(content.encode()).hexdigest()


def _check_strings(value: object, where: str) -> None:
    """Every key of every nested dict a str (JSON would turn 1 into "1" silently), and every key
    and string valid UTF-8; other types are left to the JSON round trip."""
    if isinstance(value, str):
        check_text(value, where, allow_empty=True)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidRequestError(f"{where} keys must be str (metadata is JSON), got {k!r}")
            check_text(k, f"{where} key", allow_empty=True)
            _check_strings(v, f"{where}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_strings(v, f"{where}[{i}]")
