"""Checks every piece of user input passes before anything is sent or written.

One place for them, so the messages read alike: what was wrong, and how to fix it.
"""

from __future__ import annotations

import math
import re
from numbers import Real
from typing import TYPE_CHECKING, Any

from .errors import InvalidRequestError

if TYPE_CHECKING:
    from datetime import datetime

__all__ = ["check_text", "check_identifier", "check_number", "check_time", "clean_text", "split_keys"]

# A lone surrogate (U+D800-U+DFFF) is valid in a Python str but not in UTF-8: it cannot be sent to
# a provider, written to the journal or loaded by DuckDB. Strings decoded with errors="surrogateescape"
# (file names, some terminals) carry them.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _surrogate_at(value: str) -> int:
    m = _SURROGATE.search(value)
    return -1 if m is None else m.start()


def check_text(value: Any, what: str, *, allow_empty: bool = False) -> str:
    """``value`` if it is a string that can be encoded as UTF-8 (and non-blank unless allowed)."""
    if not isinstance(value, str):
        raise InvalidRequestError(f"{what} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise InvalidRequestError(f"{what} is empty: pass some text")
    if value.isascii():
        return value
    pos = _surrogate_at(value)
    if pos >= 0:
        raise InvalidRequestError(
            f"{what} holds a lone surrogate {value[pos]!r} at position {pos}, which is not valid text "
            "(often from bytes decoded with errors='surrogateescape'); decode the source as UTF-8 or "
            "clean it with s.encode('utf-8', 'replace').decode()"
        )
    return value


def check_identifier(value: Any, what: str) -> str | None:
    """An optional identifier (user_id, agent_id, ...): None, or a non-blank UTF-8 string."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequestError(f"{what} must be a string, got {type(value).__name__}")
    return check_text(value, what)


def check_number(value: Any, what: str, *, minimum: float | None = None, positive: bool = False,
                 allow_inf: bool = False) -> float:
    """A real number (not bool, not NaN), optionally > 0 or >= ``minimum``."""
    if not isinstance(value, Real) or isinstance(value, bool) or math.isnan(float(value)):
        raise InvalidRequestError(f"{what} must be a number, got {value!r}")
    if not allow_inf and math.isinf(value):
        raise InvalidRequestError(f"{what} must be finite, got {value!r}")
    if positive and not float(value) > 0:
        raise InvalidRequestError(f"{what} must be > 0, got {value!r}")
    if minimum is not None and float(value) < minimum:
        raise InvalidRequestError(f"{what} must be >= {minimum:g}, got {value!r}")
    return float(value)


def clean_text(value: str) -> str:
    """Text from outside (a server's answer or error) made safe to store: lone surrogates -> U+FFFD."""
    if value.isascii() or _surrogate_at(value) < 0:
        return value
    return _SURROGATE.sub("\ufffd", value)


def check_time(value: Any, what: str) -> datetime:
    """An aware UTC datetime from a datetime (naive means UTC), date, ISO string or epoch seconds."""
    from datetime import date, datetime, timezone  # here: datetime costs an import the kit rarely needs
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise InvalidRequestError(f"{what}: {value!r} is not an ISO date/time (e.g. '2026-12-01T09:30')") from None
    elif isinstance(value, Real) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise InvalidRequestError(f"{what}: {value!r} is not a time")
        value = datetime.fromtimestamp(float(value), timezone.utc)
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if not isinstance(value, datetime):
        raise InvalidRequestError(
            f"{what} must be a datetime, date, ISO string or epoch seconds, got {type(value).__name__}"
        )
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def split_keys(value: str | None) -> list[str]:
    """The keys in ``OPENAI_API_KEYS``-style text: comma- (or space-) separated, blanks dropped."""
    return [k for k in re.split(r"[,\s]+", value or "") if k]
