"""The response cache in a team's Redis (``Kit(guards="redis://...")``): the same entries as
``cache.ResponseCache`` under ``<prefix>answer:<key>``, so every machine of the team shares answers.

An entry that cannot be used is a miss with a ``CacheWarning``, as in the file; Redis that cannot
be reached is a ``StorageError`` (a cache that silently stopped caching would cost money unseen).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..core.errors import ConfigurationError, StorageError
from .cache import entry_text, parse_entry

__all__ = ["RedisResponseCache", "connect", "safe_url", "command"]


def command(client: Any, url: str, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
    """``fn(*args, **kw)`` against ``client``; a Redis error becomes a ``StorageError`` that says
    what could not be done, where (``url``, password masked) and why, with the password never in it."""
    import redis

    try:
        return fn(*args, **kw)
    except redis.RedisError as exc:
        secret = client.connection_pool.connection_kwargs.get("password") or "\0"
        raise StorageError(f"cannot {what} in Redis at {url}: {type(exc).__name__}: {exc}".replace(secret, "***")) \
            from None


def safe_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for status, reprs and messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{parts.netloc.rsplit('@', 1)[1]}"))


def connect(url: str, **options: Any) -> tuple[Any, str, str]:
    """A ``redis.Redis`` for ``url`` -> (client, the URL without its password, key prefix).

    ``?prefix=team-a`` in the URL puts every key under ``team-a:`` (default ``cognitionos:``), so
    several teams or projects can share one database. Nothing is sent until the first command."""
    try:
        import redis
    except ImportError:
        raise ConfigurationError("guards='redis://...' needs the redis package: pip install 'cognitionos_kit[redis]'") \
            from None
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    prefix = next((v for k, v in query if k == "prefix"), "cognitionos").rstrip(":") + ":"
    plain = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k != "prefix"])))
    try:
        client = redis.Redis.from_url(plain, socket_timeout=10, socket_connect_timeout=5, **options)
    except ValueError as exc:
        raise ConfigurationError(f"the guards URL {safe_url(url)} cannot be used: {exc}") from None
    return client, safe_url(url), prefix


class RedisResponseCache:
    """Get/put cached answers by key in Redis; ``clear()`` deletes them. Safe from threads and processes."""

    def __init__(self, url: str, *, required: Sequence[str] = ("content",)) -> None:
        self.client, self.url, prefix = connect(url)
        self.prefix = prefix + "answer:"
        self.required = tuple(required)

    def _do(self, what: str, fn: Any, *args: Any) -> Any:
        return command(self.client, self.url, f"{what} the response cache", fn, *args)

    def get(self, key: str) -> dict[str, Any] | None:
        raw = self._do("read", self.client.get, self.prefix + key)
        return None if raw is None else parse_entry(raw, key, f"Redis at {self.url}", self.required)

    def put(self, key: str, entry: dict[str, Any]) -> None:
        self._do("write to", self.client.set, self.prefix + key, entry_text(entry).encode())

    def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The entries of those ``keys`` that are cached, by key (one round trip per 1,000 keys)."""
        unique, out = list(dict.fromkeys(keys)), {}
        for i in range(0, len(unique), 1000):
            chunk = unique[i:i + 1000]
            for key, raw in zip(chunk, self._do("read", self.client.mget, [self.prefix + k for k in chunk])):
                if raw is not None and (e := parse_entry(raw, key, f"Redis at {self.url}", self.required)) is not None:
                    out[key] = e
        return out

    def put_many(self, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """``put`` each ``(key, entry)`` in one round trip."""
        if items:
            self._do("write to", self.client.mset,
                     {self.prefix + key: entry_text(entry).encode() for key, entry in items})

    def __len__(self) -> int:
        return sum(1 for _ in self._do("count", lambda: list(self.client.scan_iter(self.prefix + "*", count=1000))))

    def clear(self) -> int:
        keys = self._do("list", lambda: list(self.client.scan_iter(self.prefix + "*", count=1000)))
        for i in range(0, len(keys), 1000):
            self._do("clear", self.client.delete, *keys[i:i + 1000])
        return len(keys)

    def close(self) -> None:
        self.client.close()

    def __repr__(self) -> str:
        return f"RedisResponseCache({self.url!r})"
