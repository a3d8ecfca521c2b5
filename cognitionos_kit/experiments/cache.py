"""The response cache: a content-addressed file store at ``<home>/cache/<key[:2]>/<key>.json``.

Why files and not the DuckDB ``Store``: a lookup must be fast in the middle of a run and must
see answers another process wrote a second ago. One small JSON file per answer gives both: a
lookup is one ``open`` (tens of microseconds, no lock, no ingest step), and a write goes to a
temporary file then ``os.replace`` - atomic on POSIX and Windows - so a reader sees either no
entry or a whole one, and two processes writing the same key write the same answer (last one
wins, nothing torn). Only successful answers are written; errors never are.

The key is a SHA-256 of the intended provider, model, full request (messages, system,
max_tokens, temperature) and the repeat index, so repeats are distinct, separately cached samples.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from ..types import ProviderRequest

__all__ = ["ResponseCache", "cache_key"]


def cache_key(provider: str, request: ProviderRequest, repeat: int) -> str:
    """Stable hash of what decides an answer (the stream flag excluded: same answer either way)."""
    blob = json.dumps(
        {
            "provider": provider,
            "model": request.model,
            "messages": [[m.role, m.content] for m in request.messages],
            "system": request.system,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "seed": request.seed,
            "repeat": repeat,
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """Get/put cached answers by key; ``clear()`` empties it."""

    def __init__(self, home: str | Path) -> None:
        self.root = Path(home) / "cache"
        self._dirs: set[Path] = set()  # folders known to exist: saves a mkdir per write

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            with open(self._path(key), encoding="utf-8") as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):  # absent, or corrupted by hand: a miss
            return None

    def put(self, key: str, entry: dict[str, Any], *, _again: bool = True) -> None:
        path = self._path(key)
        if path.parent not in self._dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(path.parent)
        # a name no other writer uses (pid + thread; put never yields to another coroutine),
        # cheaper than mkstemp's random names and O_EXCL retries
        tmp = path.parent / f".tmp-{key}-{os.getpid()}-{threading.get_ident()}"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(entry, f, ensure_ascii=False)
            os.replace(tmp, path)
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            if not _again:
                raise
            self._dirs.clear()  # the cache was cleared meanwhile (here or in another process)
            self.put(key, entry, _again=False)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*/*.json")) if self.root.exists() else 0

    def clear(self) -> int:
        """Delete every cached answer; returns how many there were."""
        n = len(self)
        shutil.rmtree(self.root, ignore_errors=True)
        self._dirs.clear()
        return n
