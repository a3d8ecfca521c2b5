"""Which models each named endpoint serves: its configured ``models``, else what its ``/models``
answers, asked lazily (the first time a name or a role needs it, or ``kit.models()``), with a
short timeout, never at import, and kept for a while (a server that did not answer is asked
again sooner)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..core.errors import KitWarning, redact, warn_user

__all__ = ["Listing", "ModelDirectory", "DISCOVERY_TIMEOUT", "LISTING_TTL", "FAILED_TTL"]

DISCOVERY_TIMEOUT = 3.0  # seconds for one /models request (no retries)
LISTING_TTL = 600.0  # how long a listing is trusted
FAILED_TTL = 30.0  # how long "did not answer" is trusted before asking again


class DiscoveryWarning(KitWarning):
    """An endpoint could not list its models (its calls still work with models named in full)."""


@dataclass(frozen=True)
class Listing:
    """An endpoint's models: ``models`` (ids), ``details`` (per id: what the server said, e.g. its
    context window), ``source`` ("config" | "server" | "unreachable") and ``error`` (why not)."""

    models: tuple[str, ...]
    source: str
    details: Mapping[str, Mapping[str, Any]]
    error: str | None = None
    at: float = 0.0


class ModelDirectory:
    """Listings per endpoint name. ``lister(name, timeout)`` asks the server (the provider's SDK);
    ``static`` holds the models configured by hand (never asked)."""

    def __init__(self, lister: Callable[[str, float], list[dict[str, Any]]], static: Mapping[str, tuple[str, ...] | None],
                 urls: Mapping[str, str]) -> None:
        self._lister = lister
        self._static = dict(static)
        self._urls = dict(urls)
        self._cache: dict[str, Listing] = {}
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._static)

    def cached(self, name: str) -> Listing | None:
        """The listing known now, without asking anything."""
        if self._static.get(name) is not None:
            return self.listing(name)
        return self._cache.get(name)

    def listing(self, name: str, *, refresh: bool = False) -> Listing:
        """``name``'s models, asking its server when the kept listing is missing or old."""
        configured = self._static.get(name)
        if configured is not None:
            return Listing(configured, "config", {})
        with self._lock:
            kept = self._cache.get(name)
            now = time.monotonic()
            if kept is not None and not refresh and now - kept.at < (LISTING_TTL if kept.source == "server" else FAILED_TTL):
                return kept
            try:
                rows = self._lister(name, DISCOVERY_TIMEOUT)
                ids = tuple(dict.fromkeys(str(r["id"]) for r in rows if isinstance(r, dict) and r.get("id")))
                listing = Listing(ids, "server", {str(r["id"]): r for r in rows if isinstance(r, dict) and r.get("id")},
                                  at=now)
            except Exception as exc:  # noqa: BLE001 - any failure: the endpoint is shown as unreachable
                listing = Listing((), "unreachable", {}, redact(f"{type(exc).__name__}: {exc}")[:300], at=now)
            self._cache[name] = listing
        if listing.error and name not in self._warned:
            self._warned.add(name)
            warn_user(f"could not list the models of endpoint {name!r} (at {self._urls.get(name)}/models): "
                      f"{listing.error}. Name its models in full ('{name}:MODEL'), or list them with "
                      f"endpoints={{{name!r}: {{'base_url': ..., 'models': [...]}}}}", DiscoveryWarning)
        return listing

    def models(self, name: str) -> tuple[str, ...]:
        return self.listing(name).models

    def owners(self, model: str, among: tuple[str, ...] | list[str]) -> list[str]:
        """The endpoints among ``among`` that list ``model`` (asking those not asked yet)."""
        return [n for n in among if n in self._static and model in self.models(n)]

    def context_window(self, name: str, model: str) -> int | None:
        """The context window the server reported for ``model`` (llama.cpp's ``meta.n_ctx_train``,
        vLLM's ``max_model_len``, ...), when it did."""
        listing = self.cached(name)
        row = listing.details.get(model) if listing else None
        if not row:
            return None
        meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
        for value in (row.get("max_model_len"), row.get("context_length"), row.get("context_window"),
                      meta.get("n_ctx_train") if meta else None):
            if isinstance(value, int) and value > 0:
                return value
        return None
