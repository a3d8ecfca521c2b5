"""What a run does besides its calls, made cheaper for throughput (issue 14 item 6), still doing it:
the code version found while calls are in flight, the heap kept out of the collector's way during
the run and given back after, answers written to the cache by a background writer (and a failed
write still failing the run), a grid's cells planned with shared options and routes."""

from __future__ import annotations

import gc
import sqlite3
import subprocess
import weakref

import pandas as pd
import pytest

from cognitionos_kit import Experiment
from cognitionos_kit.core.errors import StorageError
from cognitionos_kit.experiments.runstore import FLUSH_EVERY, RunStore
from cognitionos_kit.storage.cache import ResponseCache

DATA = pd.DataFrame({"country": ["France", "Japan", "Peru"], "expected": ["Paris", "Tokyo", "Lima"]})


def _exp(name="bookkeeping", data=DATA, **kw):
    spec = dict(name=name, dataset=data, prompts={"q": "What is the capital of {country}?"}, models=["sim-small"],
                scorers=["contains"])
    spec.update(kw)
    return Experiment(**spec)


def _git(cwd, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


def test_the_manifest_names_the_commit_and_dirty_state_of_the_working_folder(kit, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "analysis.py").write_text("x = 1\n")
    _git(repo, "add", "analysis.py")
    _git(repo, "commit", "-q", "-m", "first")
    monkeypatch.chdir(repo)
    clean = kit.run(_exp(), progress=False).manifest["code_version"]
    assert clean["git_commit"] == _git(repo, "rev-parse", "HEAD") and clean["git_dirty"] is False
    (repo / "analysis.py").write_text("x = 2\n")
    dirty = kit.run(_exp(), progress=False).manifest["code_version"]
    assert dirty["git_commit"] == clean["git_commit"] and dirty["git_dirty"] is True
    elsewhere = tmp_path / "not-a-repo"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    outside = kit.run(_exp(), progress=False).manifest["code_version"]
    assert outside["git_commit"] is None and outside["git_dirty"] is None


def test_the_heap_is_frozen_during_a_run_and_given_back_after(kit):
    seen = []

    def frozen_now(output, row):  # a scorer runs inside the run
        seen.append(gc.get_freeze_count())
        return 1.0

    class Cycle:
        pass

    old = Cycle()
    old.me = old  # garbage only the collector can free
    gone = weakref.ref(old)
    del old
    assert gc.get_freeze_count() == 0
    kit.run(_exp(scorers={"frozen": frozen_now}), progress=False)
    assert seen and min(seen) > 0  # during the run, the objects from before it were not walked
    assert gc.get_freeze_count() == 0  # after it, they are the collector's again
    gc.collect()
    assert gone() is None  # nothing from before the run was kept alive by it


def test_a_process_that_froze_its_heap_itself_keeps_it_frozen(kit):
    gc.freeze()
    try:
        before = gc.get_freeze_count()
        run = kit.run(_exp(), progress=False)
        assert run.results.status.eq("ok").all()
        # not unfrozen behind its back (frozen objects freed by reference counting leave the count)
        assert gc.get_freeze_count() > before * 0.9
    finally:
        gc.unfreeze()


def test_every_answer_of_a_long_run_is_in_the_cache_when_the_run_returns(kit):
    data = pd.DataFrame({"country": [f"Country {i}" for i in range(FLUSH_EVERY * 2 + 7)], "expected": "x"})
    run = kit.run(_exp(data=data), concurrency=16, progress=False)
    assert run.manifest["totals"]["calls_sent"] == len(data)
    with sqlite3.connect(ResponseCache(kit.home).path) as db:  # the file itself, read by another connection
        stored = db.execute("SELECT count(*) FROM answers").fetchone()[0]
    assert stored == len(data)
    again = kit.run(_exp(data=data), concurrency=16, progress=False)
    assert again.cache_hits == len(data) and again.manifest["totals"]["calls_sent"] == 0


def test_the_run_store_serves_what_it_has_not_written_yet_and_writes_in_order(tmp_path):
    cache = ResponseCache(tmp_path)
    store = RunStore(cache)
    store.put("a", {"content": "first"})
    assert store.get("a") == {"content": "first"} and cache.get("a") is None  # pending: served from here only
    for i in range(FLUSH_EVERY):
        store.put(f"k{i}", {"content": str(i)})
    store.put("a", {"content": "second"})  # a later answer under the same key replaces the earlier one
    store.close()
    store.wait()
    reread = ResponseCache(tmp_path)
    assert reread.get("a") == {"content": "second"} and reread.get(f"k{FLUSH_EVERY - 1}") == {"content": str(FLUSH_EVERY - 1)}
    assert len(reread) == FLUSH_EVERY + 1


class _FullDisk(ResponseCache):
    """A cache file that can no longer be written (the error the SQLite cache raises then)."""

    def put_many(self, items):
        raise StorageError(f"cannot write to the response cache {self.path}: database or disk is full")


def test_a_failed_background_write_fails_the_run_with_its_error(tmp_path):
    store = RunStore(_FullDisk(tmp_path))
    for i in range(FLUSH_EVERY):
        store.put(f"k{i}", {"content": str(i)})  # handed to the writer: fails there
    store.close()
    with pytest.raises(StorageError, match="disk is full"):
        store.wait()


def test_cells_sharing_options_still_get_their_own_model_settings_and_prompt(kit):
    exp = _exp(models=["sim-small", "sim-nano"], settings={"temperature": [0.0, 0.7], "max_tokens": [16, 40]},
               repeats=2)
    run = kit.run(exp, progress=False)
    df = run.results
    assert len(df) == 3 * 2 * 4 * 2 and df.status.eq("ok").all()
    assert (df.served_model == df.model).all()
    assert all(c in p for c, p in zip(df.country, df.prompt))
    sent = kit.usage(run_id=run.run_id)
    assert len(set(sent.request_id)) == len(df)  # one request (and id) per cell, none shared
    assert set(zip(df.model, df.settings)) == {(m, s) for m in ("sim-small", "sim-nano")
                                               for s in ("temperature=0.0,max_tokens=16", "temperature=0.0,max_tokens=40",
                                                         "temperature=0.7,max_tokens=16", "temperature=0.7,max_tokens=40")}
