"""The kit's exceptions: one hierarchy users can catch.

    KitError
    ├── InvalidRequestError (also a ValueError)   bad input, raised before any network call
    │   └── CostLimitError                        no model fits max_cost
    ├── ConfigurationError                        a provider or setting that cannot be used
    ├── ProviderError                             one attempt at one provider failed
    │   └── StreamInterruptedError                a stream broke after text had arrived
    ├── AllProvidersFailedError                   every provider in the chain failed
    ├── BatchPendingError                         an experiment's provider batch has not ended yet
    └── StorageError                              the data folder could not be read or written

    KitWarning (a UserWarning)
    ├── StorageWarning          an answer was kept although its ledger row could not be written yet
    ├── CacheWarning            a cache entry or file was unreadable and treated as a miss
    └── AuthenticationWarning   a provider refused the key (401/403); the chain moved on
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .types import Attempt, Completion

__all__ = [
    "KitError",
    "InvalidRequestError",
    "CostLimitError",
    "ConfigurationError",
    "ProviderError",
    "StreamInterruptedError",
    "StructuredOutputError",
    "ToolLoopError",
    "AllProvidersFailedError",
    "BatchPendingError",
    "StorageError",
    "KitWarning",
    "StorageWarning",
    "CacheWarning",
    "BudgetExceededError",
    "RateLimitExceededError",
    "RateLimitWarning",
    "AuthenticationWarning",
    "ServerError",
    "redact",
]


class KitError(Exception):
    """Base class of every error the kit raises on purpose."""


class InvalidRequestError(KitError, ValueError):
    """The request is malformed; nothing was sent and nothing was recorded."""


class CostLimitError(InvalidRequestError):
    """No configured model fits ``max_cost`` for this request."""


class BudgetExceededError(KitError):
    """A call would not fit a budget (``kit.set_budget``); nothing was sent. ``scope`` ("kit",
    "user" or "team"), ``name``, ``period``, ``limit_usd``, ``spent_usd``, ``reserved_usd`` (by
    calls in flight), ``left_usd``, ``needed_usd`` (this call's worst case) and ``resets_at``
    (a UTC datetime; None for a total budget) say which and by how much."""

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.scope = details.get("scope")
        self.name = details.get("name")
        self.period = details.get("period")
        self.limit_usd = details.get("limit_usd")
        self.spent_usd = details.get("spent_usd")
        self.reserved_usd = details.get("reserved_usd")
        self.left_usd = details.get("left_usd")
        self.needed_usd = details.get("needed_usd")
        self.resets_at = details.get("resets_at")


class RateLimitExceededError(KitError):
    """A rate limit (``kit.set_rate_limit(..., policy="raise")``) would be passed; nothing was
    sent. ``wait_s`` says how long until the call would fit."""

    def __init__(self, message: str, wait_s: float = 0.0) -> None:
        super().__init__(message)
        self.wait_s = wait_s


class ConfigurationError(KitError, ValueError):
    """A setting or provider cannot be used as configured."""


class StorageError(KitError):
    """The data folder could not be read or written."""


class ServerError(KitError):
    """The team server (client mode: ``Kit(server=...)``) refused a request or could not be reached.
    ``status`` is the HTTP status (None: no answer), ``error`` the server's error name, ``server``
    its URL; the message is the server's, never the token."""

    def __init__(self, message: str, *, status: int | None = None, error: str | None = None,
                 server: str | None = None, request_id: str | None = None) -> None:
        super().__init__(message)
        self.status, self.error, self.server, self.request_id = status, error, server, request_id


class ProviderError(KitError):
    """One attempt at one provider failed.

    ``moves_on`` says whether this kind of failure lets the fallback chain move on to the next
    provider (rate limits, server errors, timeouts, connection and auth errors) or stops it (a
    request the provider rejected as invalid); the Kit's ``fallback_on`` has the last word.
    ``retryable`` is its old name, kept as an alias.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        model: str | None = None,
        error_type: str = "provider_error",
        status_code: int | None = None,
        moves_on: bool = True,
        retryable: bool | None = None,
        retry_after: float | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(redact(message + (f" (at {url})" if url else "")))
        self.url = url  # where the failed request went: scheme://host:port/path, never a query or key
        self.provider = provider
        self.model = model
        self.error_type = error_type
        self.status_code = status_code
        self.moves_on = moves_on if retryable is None else retryable
        self.retry_after = retry_after  # seconds the provider asked to wait (a 429's Retry-After), if it said

    @property
    def retryable(self) -> bool:
        """The old name of ``moves_on`` (it never meant "the same request is retried")."""
        return self.moves_on


class StreamInterruptedError(ProviderError):
    """A stream failed after some text had been received; ``partial`` holds it."""

    def __init__(self, message: str, *, partial: str = "", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.partial = partial
        self.completion: Completion | None = None  # set by the kit: the recorded partial Completion


class StructuredOutputError(KitError):
    """The answer is not JSON that fits the requested output; ``raw`` holds the text, ``errors``
    what did not fit, ``completion`` the (recorded, paid-for) answer."""

    def __init__(self, message: str, *, raw: str, errors: str, completion: Completion | None = None) -> None:
        super().__init__(message)
        self.raw, self.errors, self.completion = raw, errors, completion


class ToolLoopError(KitError):
    """``run_tools=True`` reached ``max_steps`` model turns and the model still asked for tools;
    ``completion`` is the last (recorded) turn, with every step and tool result."""

    def __init__(self, message: str, *, completion: Completion | None = None) -> None:
        super().__init__(message)
        self.completion = completion


class AllProvidersFailedError(KitError):
    """Every provider in the chain failed; ``attempts`` lists each one."""

    def __init__(self, attempts: Sequence[Attempt], request_id: str | None = None) -> None:
        self.attempts = list(attempts)
        self.request_id = request_id
        lines = [f"all {len(self.attempts)} attempt(s) failed (request {request_id}):"]
        for a in self.attempts:
            code = f" HTTP {a.status_code}" if a.status_code else ""
            lines.append(f"  {a.number}. {a.provider}/{a.model}: {a.error_type}{code}: {a.error_message}")
        super().__init__("\n".join(lines))


class BatchPendingError(KitError):
    """``kit.run(exp, executor=Batch(max_wait_s=...))`` stopped waiting before the provider's batch
    ended; the batch keeps running. Resume with ``kit.run(exp, executor="batch", resume=err.run_id)``."""

    def __init__(self, message: str, run_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id


class KitWarning(UserWarning):
    """Base class of the kit's warnings: something worked, but not exactly as asked."""


class RateLimitWarning(KitWarning):
    """A call is waiting for a rate limit (how long, and which)."""


class AlertWarning(KitWarning):
    """A spend alert's callback raised; the call it followed went on as usual."""


class StorageWarning(KitWarning):
    """The answer was returned but its ledger row is pending (spooled) until the data folder is writable."""


class CacheWarning(KitWarning):
    """A cached entry (or the cache file) could not be read; it was treated as a miss."""


class AuthenticationWarning(KitWarning):
    """A provider refused the API key (401/403); the chain moved on to the next provider."""


def warn_user(message: str, category: type[Warning]) -> None:
    """Warn, attributed to the user's line that called into the kit (not to the kit's own frames,
    however deep the sync, async or streaming driver that noticed it)."""
    import os
    import sys
    import warnings

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the whole cognitionos_kit package
    level, frame = 2, sys._getframe(1)  # stacklevel 2 is our caller
    f: Any = frame
    while f is not None and os.path.abspath(f.f_code.co_filename).startswith(package):
        f, level = f.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


# --- secrets --------------------------------------------------------------------------
# Keys must never reach messages, the ledger or reprs. Known key values are registered by
# the config at load time; patterns catch keys we were never told about.
_KNOWN_SECRETS: set[str] = set()
_KEY_PATTERN = re.compile(r"(sk-(?:ant-)?[A-Za-z0-9_\-]{6,}|Bearer\s+[A-Za-z0-9_\-\.]{8,})")


def register_secret(value: str | None) -> None:
    if value and len(value) >= 6:
        _KNOWN_SECRETS.add(value)


def redact(text: Any) -> str:
    """Return ``text`` with every known API key and key-shaped string masked."""
    s = str(text)
    for secret in _KNOWN_SECRETS:
        if secret in s:
            s = s.replace(secret, "[REDACTED]")
    return _KEY_PATTERN.sub("[REDACTED]", s)
