"""Who may use a memory. A memory belongs to its ``user_id``, whatever its scope: its owner may
get, update and delete it and read its history; anyone may get a global memory and read its
history. Everything else is the same :class:`MemoryNotFoundError` as an id that never existed,
with the same message, so an error never tells whether an id exists for someone else.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar, cast

from ..core.errors import InvalidRequestError

__all__ = ["MemoryNotFoundError", "OwnerRequiredError", "may_use", "not_found", "owner_keyword"]


class MemoryNotFoundError(InvalidRequestError, KeyError):
    """No memory with this id that this user may use (never stored, deleted, or another user's).

    The message is the same in every case ("no memory 'mem_...' for user 'ana' in collection
    'default'"), so it never tells whether an id exists for someone else."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class OwnerRequiredError(InvalidRequestError, TypeError):
    """``get``/``update``/``delete``/``history`` were called without ``user_id=`` as a keyword
    (also a TypeError, as any call with the wrong arguments)."""


def may_use(owner: str, scope: str, user_id: str, *, change: bool) -> bool:
    """Whether ``user_id`` may read (``change`` False) or change a memory of ``owner`` in ``scope``."""
    return owner == user_id or (not change and scope == "global")


def not_found(memory_id: str, user_id: str, collection: str) -> MemoryNotFoundError:
    """The one error for an unknown id and for a memory ``user_id`` may not use."""
    return MemoryNotFoundError(f"no memory {memory_id!r} for user {user_id!r} in collection {collection!r}")


F = TypeVar("F", bound=Callable[..., Any])


def owner_keyword(example: str) -> Callable[[F], F]:
    """Make a missing or positional ``user_id`` (the signature before owners were checked) an
    OwnerRequiredError that shows the call to write instead of Python's generic TypeError;
    ``example`` is the rest of that call (e.g. ``', content="..."'``)."""

    def wrap(fn: F) -> F:
        name = fn.__name__

        @functools.wraps(fn)
        def call(self: object, *args: Any, **kwargs: Any) -> Any:
            if "user_id" in kwargs and len(args) <= 1:
                return fn(self, *args, **kwargs)
            if len(args) >= 2:
                who = json.dumps(args[1]) if isinstance(args[1], str) else '"ana"'
                raise OwnerRequiredError(
                    f"{name}() takes only the memory id by position; pass the owner by keyword: "
                    f"kit.memory.{name}(memory_id, user_id={who}{example})")
            raise OwnerRequiredError(
                f"{name}() needs the memory's owner as a keyword, e.g. kit.memory.{name}(memory_id, user_id=\"ana\"{example}): "
                "user_id is required, since a memory is only read, changed or deleted for the user it belongs to")

        return cast(F, call)  # fn's own signature, with user_id checked first

    return wrap
