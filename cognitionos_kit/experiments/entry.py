"""What an experiment keeps of an answer: the cache entry (also what a Ray task returns). The
same entry as every call's response cache (``calls.caching``)."""

from __future__ import annotations

from ..calls.caching import ENTRY_FIELDS, entry

__all__ = ["ENTRY_FIELDS", "entry"]
