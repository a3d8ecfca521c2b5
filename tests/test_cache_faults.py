"""A response cache that never lies: damaged entries and files are misses with a warning, never an
exception, and ``clear()`` (``kit.clear_cache()``) repairs a damaged file. Real SQLite files."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import warnings
from pathlib import Path

import pytest

from cognitionos_kit.core.errors import CacheWarning
from cognitionos_kit.storage.cache import ResponseCache

FIELDS = ("content", "provider", "model")
GOOD = {"content": "Paris", "provider": "simulated", "model": "sim-small", "cost_usd": 0.001}


def key(i: int) -> str:
    return f"{i:064x}"


def write_raw(home: Path, k: str, text: str) -> None:
    """Store ``text`` as the entry of ``k`` as-is, with sqlite3 directly (as a damaged disk might)."""
    cache = ResponseCache(home)
    cache.put(key(0), GOOD)  # the file and its table
    cache.close()
    with sqlite3.connect(home / "cache" / "answers.sqlite") as db:
        db.execute("INSERT OR REPLACE INTO answers (key, entry) VALUES (?, ?)", (k, text))
    db.close()


def filled(home: Path, n: int = 50) -> ResponseCache:
    cache = ResponseCache(home, required=FIELDS)
    for i in range(n):
        cache.put(key(i), {**GOOD, "content": f"answer {i}"})
    cache.close()  # checkpointed into the main file: the -wal is gone
    return cache


@pytest.mark.parametrize(
    "text, why",
    [
        ('{"content": "Par', "is not valid JSON"),
        ("\x00\x01 not json", "is not valid JSON"),
        ('["content", "provider", "model"]', "is a JSON list, not an object"),
        ('"just a string"', "is a JSON str, not an object"),
        ('{"content": "Paris"}', "lacks the field(s) provider, model"),
        ('{"provider": "simulated", "model": "m"}', "lacks the field(s) content"),
    ],
)
def test_corrupt_entry_is_a_miss_with_a_warning(tmp_path, text, why):
    write_raw(tmp_path, key(1), text)
    cache = ResponseCache(tmp_path, required=FIELDS)
    cache.put(key(2), GOOD)
    with pytest.warns(CacheWarning, match=f"cache entry {key(1)} in .*answers.sqlite {re.escape(why)}"):
        assert cache.get(key(1)) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.get(key(2)) == GOOD  # the others are served
        cache.put(key(1), GOOD)  # the re-sent answer replaces the bad entry
        assert cache.get(key(1)) == GOOD


def test_default_requires_only_content(tmp_path):
    write_raw(tmp_path, key(1), '{"provider": "simulated"}')
    write_raw(tmp_path, key(2), '{"content": "old entry without provider"}')
    cache = ResponseCache(tmp_path)
    with pytest.warns(CacheWarning, match="lacks the field"):
        assert cache.get(key(1)) is None
    assert cache.get(key(2)) == {"content": "old entry without provider"}


def test_corrupt_legacy_file_entry_is_a_miss_with_a_warning(tmp_path):
    k = "ab" + "1" * 62
    legacy = tmp_path / "cache" / "ab" / f"{k}.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(b'{"content": "half a fi')
    cache = ResponseCache(tmp_path)
    with pytest.warns(CacheWarning, match=f"cache entry {k} in {legacy} is not valid JSON"):
        assert cache.get(k) is None
    legacy.write_bytes(b"\xff\xfe\xfa not utf-8")
    with pytest.warns(CacheWarning, match="is not valid JSON"):
        assert cache.get(k) is None


@pytest.mark.parametrize("damage", ["garbage", "truncated", "garbage page"])
def test_damaged_file_misses_skips_and_clear_repairs_it(tmp_path, damage):
    filled(tmp_path)
    path = tmp_path / "cache" / "answers.sqlite"
    data = path.read_bytes()
    assert len(data) > 3 * 4096
    path.write_bytes({"garbage": os.urandom(len(data)), "truncated": data[:50],
                      "garbage page": data[:4096] + os.urandom(len(data) - 4096)}[damage])

    cache = ResponseCache(tmp_path, required=FIELDS)
    with pytest.warns(CacheWarning) as caught:
        assert cache.get(key(1)) is None  # a miss, not an exception
        cache.put(key(99), GOOD)  # a no-op, not an exception
        assert cache.get(key(99)) is None
        assert len(cache) == 0
    assert len(caught) == 1  # once per ResponseCache
    msg = str(caught[0].message)
    assert str(path) in msg and "kit.clear_cache() repairs it" in msg
    writer = ResponseCache(tmp_path, required=FIELDS)
    with pytest.warns(CacheWarning, match="damaged"):
        writer.put(key(98), GOOD)  # a put alone warns too

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.clear() == 0  # nothing could be counted
        cache.put(key(1), GOOD)
        assert cache.get(key(1)) == GOOD and len(cache) == 1
    cache.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ResponseCache(tmp_path, required=FIELDS).get(key(1)) == GOOD  # a new process sees the repaired file


def test_clear_of_a_healthy_cache_counts_and_empties(tmp_path):
    filled(tmp_path, 7)
    cache = ResponseCache(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.clear() == 7 and len(cache) == 0 and cache.get(key(1)) is None


def test_kit_clear_cache_repairs_a_garbage_file(kit):
    path = Path(kit.home) / "cache" / "answers.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(20_000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kit.clear_cache() == 0
    cache = ResponseCache(kit.home)
    cache.put(key(3), GOOD)
    assert cache.get(key(3)) == GOOD
    assert path.stat().st_mode & 0o777 == 0o600
    cache.close()


def test_a_run_survives_a_corrupt_entry_and_a_garbage_file(kit):
    from cognitionos_kit import Experiment

    exp = Experiment("faults", [{"x": "a"}, {"x": "b"}], "Say {x}", ["sim-small"])
    first = kit.run(exp, progress=False)
    db = sqlite3.connect(Path(kit.home) / "cache" / "answers.sqlite")
    (k,) = db.execute("SELECT key FROM answers LIMIT 1").fetchone()
    db.execute("UPDATE answers SET entry = '{not json' WHERE key = ?", (k,))
    db.commit()
    db.close()
    with pytest.warns(CacheWarning, match="is not valid JSON"):
        second = kit.run(exp, progress=False)
    assert second.cache_hits == 1 and list(second.results.status) == ["ok", "ok"]
    assert json.loads(json.dumps(first.results.output.tolist())) == second.results.output.tolist()
    path = Path(kit.home) / "cache" / "answers.sqlite"
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(os.urandom(path.stat().st_size))
    with pytest.warns(CacheWarning, match="kit.clear_cache"):
        third = kit.run(exp, progress=False)
    assert third.cache_hits == 0 and list(third.results.status) == ["ok", "ok"]
