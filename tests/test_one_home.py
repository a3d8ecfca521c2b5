"""One data folder for the demo, the notebooks and a plain Kit(): projects and sessions keep
their views apart without deleting anything; frames read one missing-value style; notebooks are
stored clean."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from cognitionos_kit import ConfigurationError, InvalidRequestError, Kit, SimulatedProvider
from cognitionos_kit.core.config import load_settings

ROOT = Path(__file__).resolve().parent.parent


# --- the default data folder -----------------------------------------------------------------
def test_a_plain_kit_uses_the_project_folders_data_wherever_it_starts(tmp_path, monkeypatch):
    project = tmp_path / "study"
    (project / "notebooks" / "deep").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'study'\n")
    for start in (project, project / "notebooks", project / "notebooks" / "deep"):
        monkeypatch.chdir(start)
        s = load_settings(dotenv=False, environ={})
        assert (s.home, s.home_source) == ((project / "data").resolve(), "project")
    monkeypatch.chdir(project / "notebooks")
    s = load_settings(dotenv=False, environ={"COGNITIONOS_HOME": str(tmp_path / "elsewhere")})
    assert (s.home, s.home_source) == ((tmp_path / "elsewhere").resolve(), "env")  # the variable still wins


def test_outside_any_project_the_data_folder_is_dot_data(tmp_path, monkeypatch):
    if any((p / m).exists() for p in (tmp_path, *tmp_path.parents) for m in ("pyproject.toml", ".git")):
        pytest.fail(f"{tmp_path} lies inside a project folder: this test needs a bare temporary folder")
    monkeypatch.chdir(tmp_path)
    s = load_settings(dotenv=False, environ={})
    assert (s.home, s.home_source) == ((tmp_path / "data").resolve(), "default")


def test_the_repository_notebooks_and_root_share_one_home(monkeypatch):
    homes = set()
    for start in (ROOT, ROOT / "notebooks"):
        monkeypatch.chdir(start)
        homes.add(load_settings(dotenv=False, environ={}).home)
    assert homes == {(ROOT / "data").resolve()}


# --- projects and sessions ------------------------------------------------------------------------
_SESSION = """
import json, sys
from cognitionos_kit import Kit
kit = Kit(sys.argv[1], dotenv=False, project="study", views="session")
kit.complete(sys.argv[2]); kit.complete(sys.argv[2] + " again")
print(json.dumps({"session": kit.session_id, "usage": len(kit.usage()), "log": len(kit.log()),
                  "spend": int(kit.spend(by="project").calls.sum())}))
"""


def _session(home: Path, prompt: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _SESSION, str(home), prompt], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "COGNITIONOS_DOTENV": "0"})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_each_session_sees_its_own_calls_and_the_project_sees_all(tmp_path):
    other = Kit(tmp_path, dotenv=False)  # a call outside the project, in the same folder
    other.complete("not part of the study")
    first, second = _session(tmp_path, "first"), _session(tmp_path, "second")
    assert first["session"] != second["session"]
    # a session's views hold its own two calls, whatever else the folder holds
    assert first == {**first, "usage": 2, "log": 2, "spend": 2} and second == {**second, "usage": 2, "log": 2, "spend": 2}
    study = Kit(tmp_path, dotenv=False, project="study")  # views="project" by default with a project
    assert len(study.usage()) == 4 and set(study.usage().session_id) == {first["session"], second["session"]}
    assert len(study.log("again")) == 2
    everything = Kit(tmp_path, dotenv=False)
    assert len(everything.usage()) == 5  # nothing was deleted
    by_project = everything.spend(by="project")
    assert sorted(zip(by_project.project.fillna("(none)"), by_project.calls)) == [("(none)", 1), ("study", 4)]
    assert everything.usage(project="study", session_id=first["session"]).shape[0] == 2  # explicit filters work too


def test_a_session_spans_every_kit_of_the_process(tmp_path):
    a = Kit(tmp_path, dotenv=False, project="p", views="session")
    b = Kit(tmp_path, dotenv=False, project="p", views="session", providers=["simulated"])
    a.complete("one")
    b.complete("two")
    assert a.session_id == b.session_id
    assert list(a.usage().project) == ["p", "p"] and len(b.log()) == 2
    st = a.status()
    assert (st["project"], st["views"], st["session_id"]) == ("p", "session", a.session_id)
    assert "project='p'" in repr(a)


def test_experiment_rows_carry_the_project(tmp_path):
    from cognitionos_kit import Experiment

    kit = Kit(tmp_path, dotenv=False, project="exp-study")
    exp = Experiment("tiny", [{"q": "2+2"}], "What is {q}?", ["sim-small"])
    kit.run(exp, progress=False)
    kit.run(exp, progress=False)  # all cache hits: rows the runner writes itself
    rows = Kit(tmp_path, dotenv=False).usage(experiment_id="tiny")
    assert len(rows) == 2 and set(rows.project) == {"exp-study"} and rows.cache_hit.tolist() == [False, True]


@pytest.mark.parametrize("kwargs, message", [
    ({"views": "mine"}, "views must be 'all', 'project' or 'session'"),
    ({"views": "project"}, "views='project' needs a project"),
    ({"project": ""}, "project must be a short name"),
    ({"project": 3}, "project must be a short name"),
])
def test_bad_project_or_views_is_a_clear_error(tmp_path, kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        Kit(tmp_path, dotenv=False, **kwargs)


def test_a_chat_continues_from_another_sessions_request(tmp_path):
    first = Kit(tmp_path, dotenv=False, project="a", views="session").complete("Name a prime")
    later = Kit(tmp_path, dotenv=False, project="b", views="project")
    assert later.log().empty  # not in this project's views...
    chat = later.chat(continue_from=first.request_id)  # ...but its id still names it
    assert [m["role"] for m in chat.history] == ["user", "assistant"]


# --- a memory collection of one's own ----------------------------------------------------------
def test_clearing_a_collection_leaves_the_others(tmp_path):
    mine = Kit(tmp_path, dotenv=False, memory={"collection": "tutorial"}).memory
    theirs = Kit(tmp_path, dotenv=False).memory
    theirs.store("bob", "Bob's note stays")
    mine.store("alice", "one")
    mine.store("alice", "two")
    mine.store("carol", "three")
    assert mine.clear(user_id="alice") == 2 and [r for r in mine.frame().content] == ["three"]
    assert mine.clear() == 1 and len(mine) == 0
    assert list(theirs.frame().content) == ["Bob's note stays"]
    mine.store("alice", "one")  # the emptied collection takes new memories
    assert [h.content for h in mine.retrieve("alice", "one")] == ["one"]
    with pytest.raises(InvalidRequestError):
        mine.clear(purge="yes")


# --- one missing-value style ----------------------------------------------------------------------
def test_every_missing_value_in_the_kits_frames_reads_na(tmp_path):
    flaky = SimulatedProvider(name="flaky")
    kit = Kit(tmp_path, dotenv=False, providers=[flaky, "simulated"])
    flaky.fail_next(1, "rate_limit")
    kit.complete("hello")  # a failed attempt (no tokens, no cost), then an answer
    kit.complete("hello again", user_id="ada")
    frames = {"usage": kit.usage(), "log": kit.log(), "spend": kit.spend(by=["user_id", "model"])}
    for name, df in frames.items():
        for col in df.columns:
            if str(df[col].dtype).startswith("datetime64"):
                continue  # times: NaT is pandas' one missing time
            missing = [v for v in df[col] if v is None or (isinstance(v, float) and v != v) or v is pd.NA]
            assert all(v is pd.NA for v in missing), (name, col, df[col].dtype, missing[:3])
    usage = frames["usage"]
    assert usage.user_id.isna().sum() == 2 and usage.error_type.notna().sum() == 1 and usage.cost_usd.isna().sum() == 1
    assert "<NA>" in frames["usage"][["user_id", "error_type", "saved_cost_usd"]].to_string()
    assert "NaN" not in frames["usage"].to_string() and "None" not in frames["usage"].to_string()


# --- notebooks stored clean --------------------------------------------------------------------------
def test_stored_notebooks_are_clean():
    notebooks = sorted(str(p) for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert len(notebooks) >= 6
    out = subprocess.run([sys.executable, "tools/clean_notebook.py", "--check", *notebooks],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_cleaning_an_executed_notebook_gives_back_the_stored_one():
    stored = (ROOT / "notebooks" / "01_quickstart.ipynb").read_text()
    nb = nbformat.reads(stored, as_version=4)
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):  # what a run in JupyterLab adds
        cell.execution_count = i + 1
        cell.metadata["execution"] = {"iopub.execute_input": "2026-12-03T09:00:00Z"}
        if cell.source.startswith("# NBVAL_IGNORE_OUTPUT"):
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="412 ms, req_abc\n")]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    ran = nbformat.writes(nb) + "\n"
    assert ran != stored
    out = subprocess.run([sys.executable, "tools/clean_notebook.py"], input=ran, capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == stored
    attrs = (ROOT / ".gitattributes").read_text()
    assert "notebooks/*.ipynb filter=notebook-clean" in attrs
    assert "filter.notebook-clean.clean" in (ROOT / "Makefile").read_text()
