"""Experiment runs: grid, cache, budget, manifest, report, compare, Ray, bad input."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import plotly
import pytest
from pandas.testing import assert_frame_equal

from cognitionos_kit import Experiment, InvalidRequestError
from cognitionos_kit.experiments import RUN_ONLY_COLUMNS, ResponseCache

DATA = pd.DataFrame({"country": ["France", "Japan", "Peru"], "expected": ["Paris", "Tokyo", "Lima"], "n": [1, 2, 3]})


def _exp(**kw):
    spec = dict(name="capitals", dataset=DATA, prompts={"q": "What is the capital of {country}?"},
                models=["sim-small", "sim-nano"], settings={"temperature": [0.0, 0.7]}, repeats=2,
                scorers=["contains", "valid_json", {"regex": "capital"}])
    spec.update(kw)
    return Experiment(**spec)


def _stable(df):
    return df.drop(columns=list(RUN_ONLY_COLUMNS))


def test_run_grid_against_simulated(kit):
    run = kit.run(_exp(), progress=False)
    df = run.results
    assert len(df) == 3 * 1 * 2 * 2 * 2 and run.stopped_reason is None
    assert (df.status == "ok").all() and (df.provider == "simulated").all()
    assert set(df.served_model) == {"sim-small", "sim-nano"} and set(df.repeat) == {0, 1}
    assert {"score_contains", "score_valid_json", "score_regex", "output", "prompt_tokens", "cost_usd",
            "latency_ms", "cache_hit"} <= set(df.columns)
    assert (df.score_regex == 1.0).all()  # the simulated answers echo the prompt's key words
    assert df.prompt.iloc[0] == "What is the capital of France?" and df.country.iloc[0] == "France"
    assert len(run.summary) == 4 and (run.summary.cells == 6).all()
    ledger = kit.usage(run_id=run.run_id)
    assert (ledger.experiment_id == "capitals").all()
    # the two repeats of a cell send the same request: the second may be served from the first's cache
    assert len(ledger) == 24 and math.isclose(ledger.cost_usd.sum(), run.cost_usd, rel_tol=1e-9)


def test_rerun_is_all_cache_hits_with_identical_table(kit):
    first = kit.run(_exp(), progress=False)
    second = kit.run(_exp(), progress=False)
    assert second.cache_hits == 24 and second.cost_usd == 0.0 and second.manifest["cache_hit_ratio"] == 1.0
    assert second.results.cache_hit.all() and (second.results.spent_usd == 0).all()
    assert_frame_equal(_stable(first.results), _stable(second.results))
    rows = kit.usage(run_id=second.run_id)
    assert len(rows) == 24 and rows.cache_hit.all() and (rows.cost_usd == 0).all() and (rows.status == "ok").all()
    assert math.isclose(rows.saved_cost_usd.sum(), first.results.cost_usd.sum(), rel_tol=1e-9)
    assert (rows.provider == "simulated").all() and set(rows.model) == {"sim-small", "sim-nano"}


def test_cache_bypass_refresh_and_clear(kit):
    kit.run(_exp(repeats=1), progress=False)
    off = kit.run(_exp(repeats=1), cache=False, progress=False)
    assert off.cache_hits == 0 and off.cost_usd > 0
    assert not kit.usage(run_id=off.run_id).cache_hit.any()  # sent calls are marked False, not NULL
    refresh = kit.run(_exp(repeats=1), cache="refresh", progress=False)
    assert refresh.cache_hits == 0 and refresh.cost_usd > 0
    assert len(ResponseCache(kit.home)) == 12 and kit.clear_cache() == 12 and len(ResponseCache(kit.home)) == 0
    again = kit.run(_exp(repeats=1), progress=False)
    assert again.cache_hits == 0


def test_cache_answers_survive_a_new_process_and_old_file_caches_are_read(tmp_path):
    entries = {f"{i:064x}": {"content": f"answer {i}", "cost_usd": 0.001 * i} for i in range(200)}
    writer = ResponseCache(tmp_path)
    for key, entry in entries.items():
        writer.put(key, entry)
    code = ("import json, sys; from cognitionos_kit.experiments import ResponseCache; c = ResponseCache(sys.argv[1]); "
            "print(json.dumps([len(c), c.get(sys.argv[2])]))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path), f"{7:064x}"], capture_output=True, text=True,
                         timeout=60)
    assert json.loads(out.stdout) == [200, entries[f"{7:064x}"]], out.stderr  # seen while the writer is still open
    # a cache written by an earlier version (one JSON file per answer) is still served, and cleared
    legacy = tmp_path / "cache" / "ab" / ("ab" + "1" * 62 + ".json")
    legacy.parent.mkdir()
    legacy.write_text(json.dumps({"content": "from an old run"}))
    reader = ResponseCache(tmp_path)
    assert reader.get("ab" + "1" * 62) == {"content": "from an old run"} and len(reader) == 201
    assert reader.clear() == 201 and len(reader) == 0 and not legacy.exists()
    assert writer.get(f"{7:064x}") is None  # cleared for every process


def test_processes_creating_the_cache_at_the_same_moment_all_write(tmp_path):
    """A new cache file is switched to WAL under an exclusive lock SQLite's busy timeout does not
    wait for: processes that open it at once must retry, not fail with "database is locked"."""
    import multiprocessing as mp

    from _cache_writer import write

    ctx = mp.get_context("spawn")
    for trial in range(8):  # the race hits in about one trial of three without the retry
        home = tmp_path / f"t{trial}"
        barrier = ctx.Barrier(4)
        procs = [ctx.Process(target=write, args=(str(home), f"p{i}", barrier)) for i in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0]
        assert len(ResponseCache(home)) == 200


def test_unwritable_cache_is_a_clear_storage_error(tmp_path):
    from cognitionos_kit import StorageError

    (tmp_path / "cache").write_text("a file where the cache folder should be")
    with pytest.raises(StorageError, match="cannot open the response cache"):
        ResponseCache(tmp_path).put("k" * 64, {"content": "x"})


def test_errors_are_not_cached(kit):
    exp = _exp(models=["sim-small"], settings=None, repeats=1)
    kit.simulated.fail_next(1, kind="invalid_request")  # not retryable: the first cell fails
    first = kit.run(exp, concurrency=1, progress=False)
    assert list(first.results.status) == ["error", "ok", "ok"]
    assert "invalid request" in first.results.error.iloc[0] and math.isnan(first.results.score_contains.iloc[0])
    second = kit.run(exp, concurrency=1, progress=False)
    assert list(second.results.status) == ["ok"] * 3 and list(second.results.cache_hit) == [False, True, True]


def test_run_against_loopback_openai_and_anthropic(live_kit, openai_server, anthropic_server):
    exp = _exp(models=["gpt-4o-mini", "claude-haiku-4-5"], settings=None, repeats=1)
    run = live_kit.run(exp, concurrency=4, progress=False)
    assert (run.results.status == "ok").all()
    assert dict(run.results.provider.value_counts()) == {"openai": 3, "anthropic": 3}
    assert len(openai_server.requests) == 3 and len(anthropic_server.requests) == 3
    sent = sorted(r.body["messages"][-1]["content"] for r in openai_server.requests)
    assert sent == sorted(f"What is the capital of {c}?" for c in DATA.country)
    assert run.cost_usd > 0
    again = live_kit.run(exp, concurrency=4, progress=False)
    assert len(openai_server.requests) == 3 and len(anthropic_server.requests) == 3  # nothing new sent
    assert again.cache_hits == 6 and again.cost_usd == 0.0
    assert_frame_equal(_stable(run.results), _stable(again.results))


def test_a_substitute_answer_is_never_served_from_cache_as_the_requested_model(make_live_kit, openai_server,
                                                                               anthropic_server):
    """A role's answer that came from the fallback vendor is cached as that vendor's: the rerun
    after the outage asks the requested model again, and the summary says who answered."""
    live_kit = make_live_kit()
    openai_server.enqueue_error(400, times=1)  # openai rejects the request: not retryable, not cached
    exp = _exp(models=["executor"], settings=None, repeats=1, dataset=DATA.head(1))
    first = live_kit.run(exp, progress=False)
    assert first.results.status.iloc[0] == "error"
    openai_server.enqueue_error(500, headers={"retry-after": "0"}, times=2)  # retryable: falls back to anthropic
    second = live_kit.run(exp, progress=False)
    r = second.results.iloc[0]
    assert (r.provider, r.served_model, r.requested_model) == ("anthropic", "claude-haiku-5-5", "gpt-4o-mini")
    assert r.substituted and not r.cache_hit
    s = second.summary.iloc[0]
    assert s.served_by == "anthropic/claude-haiku-5-5" and s.substituted == 1
    n_openai = len(openai_server.requests)
    third = live_kit.run(exp, progress=False)  # the outage is over: OpenAI is asked, not the cache
    r = third.results.iloc[0]
    assert not r.cache_hit and r.provider == "openai" and not r.substituted
    assert len(openai_server.requests) == n_openai + 1
    fourth = live_kit.run(exp, progress=False)  # now the requested model's own answer is cached
    assert fourth.results.cache_hit.iloc[0] and fourth.results.provider.iloc[0] == "openai"
    assert fourth.summary.iloc[0].served_by == "openai/gpt-4o-mini" and fourth.summary.iloc[0].substituted == 0
    # the substitute's answer is there for whoever asks for that model directly
    direct = live_kit.run(_exp(models=["claude-haiku-5-5"], settings=None, repeats=1, dataset=DATA.head(1)),
                          progress=False)
    assert direct.results.cache_hit.iloc[0] and not direct.results.substituted.iloc[0]


def test_budget_stops_a_concurrent_run_and_rerun_resumes(kit):
    exp = _exp(models=["sim-large"], repeats=3, settings={"max_tokens": [200]})
    full_cost = kit.run(exp, cache=False, progress=False).cost_usd  # what the whole grid costs
    budget = full_cost / 2
    run = kit.run(exp, concurrency=8, budget_usd=budget, cache=False, progress=False)
    assert run.stopped_reason and "budget" in run.stopped_reason
    spent = kit.usage(run_id=run.run_id).cost_usd.sum()
    assert 0 < spent <= budget and math.isclose(spent, run.cost_usd, rel_tol=1e-9)
    assert (run.results.status == "skipped").any() and (run.results.status == "ok").any()

    kit2_first = kit.run(exp, concurrency=8, budget_usd=budget, progress=False)  # cache on: fills part of it
    assert kit2_first.stopped_reason and kit.usage(run_id=kit2_first.run_id).cost_usd.sum() <= budget
    done = set(kit2_first.results.cell[kit2_first.results.status == "ok"])
    resumed = kit.run(exp, concurrency=8, budget_usd=1.0, progress=False)
    assert resumed.stopped_reason is None and (resumed.results.status == "ok").all()
    hits = set(resumed.results.cell[resumed.results.cache_hit])
    assert done <= hits  # completed cells came from the cache
    rows = kit.usage(run_id=resumed.run_id)
    sent = rows[~rows.cache_hit.fillna(False).astype(bool)]
    assert len(sent) == len(exp.data) * 3 - len(hits)  # only the rest were sent


def test_manifest_parquet_report_and_listing(kit):
    run = kit.run(_exp(), progress=False)
    m = run.manifest
    for key in ("run_id", "experiment_hash", "dataset_hash", "code_version", "package_versions",
                "price_table_version", "seeds", "started_at", "ended_at", "totals", "cache_hit_ratio"):
        assert key in m, key
    assert {"git_commit", "git_dirty"} <= set(m["code_version"]) and m["package_versions"]["pandas"] == pd.__version__
    assert m["seeds"]["kit_seed"] == 0 and m["totals"]["cells"] == 24
    assert m["experiment_hash"] == _exp().hash and m["experiment_hash"] != _exp(repeats=3).hash
    assert m["dataset_hash"] != _exp(dataset=DATA.head(2)).dataset_hash
    folder = Path(kit.home) / "runs" / run.run_id
    assert json.loads((folder / "manifest.json").read_text())["run_id"] == run.run_id
    assert_frame_equal(pd.read_parquet(folder / "results.parquet"), run.results)
    page = run.report_path.read_text()
    import re

    # nothing fetched from the network: plotly.js comes from the data folder itself
    assert re.findall(r"<script[^>]*\bsrc='([^']*)'", page) == [f"../assets/plotly-{plotly.__version__}.min.js"]
    assert (folder.parent / "assets" / f"plotly-{plotly.__version__}.min.js").exists() and "Plotly.newPlot" in page
    assert len(page) < 500_000  # plotly.js is not copied into every report
    from cognitionos_kit.experiments.report import figure_specs

    specs = figure_specs(run)
    assert page.count("Plotly.newPlot(") == len(specs) == 4 and page.count("plotly.js v") == 0
    cost = next(s for s in specs if s["layout"]["title"]["text"].startswith("Cost of the answers"))
    drawn = {x: y for t in cost["data"] for x, y in zip(t["x"], t["y"])}
    groups = run.summary.model + " · " + run.summary.template + " · " + run.summary.settings
    assert drawn == pytest.approx(dict(zip(groups, run.summary.cost_usd)))
    listed = kit.runs()
    assert list(listed.run_id) == [run.run_id]


def test_compare_shows_changes(kit):
    a = kit.run(_exp(repeats=1), progress=False)
    b = kit.run(_exp(repeats=1, models=["sim-small", "sim-large"]), progress=False)
    c = kit.compare(a, b.run_id)
    t = c.deltas  # per cell, cells in one run only included; c.table holds the paired tests (tests/test_stats.py)
    assert {"score_contains_delta", "cost_usd_delta", "latency_ms_p50_delta"} <= set(t.columns)
    same = t[t.model == "sim-small"]
    assert len(same) == 2 and (same.cost_usd_delta == 0).all()
    assert t[t.model == "sim-large"].cost_usd_a.isna().all() and t[t.model == "sim-nano"].cost_usd_b.isna().all()
    assert len(c.figure.data) > 0 and "sim-small" in c._repr_html_()


def test_scorers_function_numeric_and_judge(kit):
    data = pd.DataFrame({"q": ["2+2"], "expected": [4.0]})

    def length(output, row):
        return len(output) > 5

    exp = Experiment("math", data, "Compute {q}", ["sim-small"],
                     scorers={"len": length, "num": {"numeric": {"tolerance": 0.5}},
                              "judge": {"llm_judge": {"rubric": "is it right?", "field": "expected"}}})
    run = kit.run(exp, progress=False)
    r = run.results.iloc[0]
    assert r.score_len == 1.0 and r.score_num in (0.0, 1.0)
    # the simulated provider does not answer with a number: the score is missing, and the row says why
    assert math.isnan(r.score_judge) and r.status == "ok" and "score_judge missing: judge reply has no score" in r.error
    rows = kit.usage(run_id=run.run_id)
    assert len(rows) == 2 and rows.cost_usd.sum() == pytest.approx(run.cost_usd)  # the judge is costed
    from cognitionos_kit.experiments.scorers import BUILTIN, parse_judge_score

    assert BUILTIN["numeric"]("about 3.9 units", {"expected": 4}, tolerance=0.2) == 1.0
    assert BUILTIN["valid_json"]('```json\n{"a": 1}\n```', {}) == 1.0 and BUILTIN["valid_json"]("{a", {}) == 0.0
    assert parse_judge_score("Score: 0.8") == 0.8 and math.isnan(parse_judge_score("great"))


def test_yaml_definition_matches_python(tmp_path):
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in DATA.to_dict("records")))
    (tmp_path / "e.yaml").write_text(
        "name: capitals\ndataset: d.jsonl\nprompts: {q: 'What is the capital of {country}?'}\n"
        "models: [sim-small, sim-nano]\nsettings: {temperature: [0.0, 0.7]}\nrepeats: 2\n"
        "scorers: [contains, valid_json, {regex: capital}]\nrun: {concurrency: 4}\n")
    assert Experiment.from_yaml(tmp_path / "e.yaml").hash == _exp().hash


@pytest.mark.parametrize(
    "kwargs,run_kw,match",
    [
        ({"prompts": "Capital of {nation}?"}, {}, "nation"),
        ({"scorers": ["bleu"]}, {}, "unknown scorer 'bleu'"),
        ({"dataset": DATA.iloc[0:0]}, {}, "empty"),
        ({"repeats": 0}, {}, "repeats"),
        ({"repeats": -2}, {}, "repeats"),
        ({}, {"budget_usd": 0}, "budget_usd"),
        ({}, {"budget_usd": -1.0}, "budget_usd"),
        ({"settings": {"top_k": [1]}}, {}, "top_k"),
        ({"scorers": [{"exact_match": {"field": "answer"}}]}, {}, "answer"),
        ({"models": ["sim-huge"]}, {}, "sim-huge"),
        ({"settings": {"temperature": [5.0]}}, {}, "temperature"),
        # an LLM judge is checked against the Kit when the run is planned, like the grid's own calls
        ({"scorers": [{"llm_judge": {"model": "sim-huge"}}]}, {}, "scorer 'llm_judge' .*sim-huge"),
        ({"scorers": [{"llm_judge": {"role": "boss"}}]}, {}, "unknown role 'boss'"),
        ({"scorers": [{"llm_judge": {"max_tokens": 0}}]}, {}, "max_tokens"),
        ({"scorers": [{"llm_judge": {"model": ""}}]}, {}, "model must be a non-empty string"),
        # with a budget every judge model needs a known price (else its calls could not be reserved)
        ({"scorers": [{"llm_judge": {"model": "my-local-judge"}}]}, {"budget_usd": 1.0},
         "judges included.*simulated/my-local-judge"),
    ],
)
def test_bad_input_fails_before_any_call(kit, kwargs, run_kw, match):
    with pytest.raises(InvalidRequestError, match=match):
        kit.run(_exp(**kwargs), progress=False, **run_kw)
    assert kit.simulated.calls == 0 and len(kit.usage()) == 0 and kit.runs().empty


def test_two_processes_share_the_cache(kit, tmp_path):
    yaml_path = tmp_path / "e.yaml"
    yaml_path.write_text("name: shared\ndataset: [{x: a}, {x: b}, {x: c}, {x: d}]\nprompts: 'Say {x}'\n"
                         "models: [sim-small]\nrepeats: 5\n")
    cmd = [sys.executable, "-m", "cognitionos_kit", "run", str(yaml_path), "--home", str(kit.home), "--no-progress"]
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))} | {"COGNITIONOS_DOTENV": "0"}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    cache = ResponseCache(kit.home)
    assert len(cache) == 20
    assert all(cache.get(k)["content"] for (k,) in cache._conn().execute("SELECT key FROM answers"))  # every entry whole
    run = kit.run(Experiment.from_yaml(yaml_path), progress=False)
    assert run.cache_hits == 20 and run.cost_usd == 0.0


def test_ray_executor_matches_local(kit, tmp_path):
    from cognitionos_kit import Kit, LatencyModel

    exp = _exp(repeats=1)
    local = kit.run(exp, cache=False, progress=False)
    other = Kit(tmp_path / "ray-home", dotenv=False, simulated_latency=LatencyModel(scale=0))
    try:
        remote = other.run(exp, executor="ray", concurrency=4, progress=False)
        cols = [c for c in local.results.columns if c not in (*RUN_ONLY_COLUMNS, "latency_ms")]
        assert_frame_equal(local.results[cols], remote.results[cols])
        lr, rr = kit.usage(run_id=local.run_id), other.usage(run_id=remote.run_id)
        key = ["provider", "model", "prompt_tokens", "completion_tokens", "cost_usd", "status", "experiment_id"]
        assert_frame_equal(lr[key].sort_values(key, ignore_index=True), rr[key].sort_values(key, ignore_index=True))
        assert remote.manifest["executor"] == "ray" and set(remote.manifest) == set(local.manifest)
        assert remote.manifest["totals"]["spent_usd"] == pytest.approx(local.manifest["totals"]["spent_usd"])
        again = other.run(exp, executor="ray", progress=False)
        assert again.cache_hits == len(exp.data) * 4 and again.cost_usd == 0.0
    finally:
        other.close()
        import ray

        ray.shutdown()


# --- dataset files, settings lists, roles, the system prompt -----------------------------------


def test_csv_dataset_settings_list_and_role(kit, tmp_path):
    DATA.to_csv(tmp_path / "capitals.csv", index=False)
    exp = Experiment("csv", tmp_path / "capitals.csv", "What is the capital of {country}?", ["planner", "sim-nano"],
                     settings=[{"temperature": 0.0}, {"temperature": 0.7, "max_tokens": 5}], scorers=["contains"])
    run = kit.run(exp, progress=False)
    df = run.results
    assert len(df) == 3 * 2 * 2 and (df.status == "ok").all()
    assert list(df.columns[:9]) == ["cell", "row", "template", "model", "settings", "repeat", "country", "expected", "n"]
    assert list(df.country.unique()) == ["France", "Japan", "Peru"] and df.n.dtype.kind == "i"  # read from the CSV
    assert list(df.settings.unique()) == ["temperature=0.0", "temperature=0.7,max_tokens=5"]
    # a role in models is routed like role= in kit.complete: the planner is sim-large on the simulated provider
    assert (df[df.model == "planner"].served_model == "sim-large").all()
    assert (df[df.model == "sim-nano"].served_model == "sim-nano").all()
    short = df[df.settings == "temperature=0.7,max_tokens=5"]
    assert (short.completion_tokens <= 5).all() and (short.finish_reason == "length").all()
    assert (df[df.settings == "temperature=0.0"].completion_tokens > 5).all()
    assert list(run.summary.model) == ["planner", "planner", "sim-nano", "sim-nano"] and (run.summary.cells == 3).all()
    ledger = kit.usage(run_id=run.run_id)
    assert set(ledger[ledger.role == "planner"].model) == {"sim-large"} and ledger[ledger.model == "sim-nano"].role.isna().all()


def test_system_setting_reaches_the_request(live_kit, openai_server):
    system = "Answer with the city name only."
    exp = Experiment("sys", DATA, "What is the capital of {country}?", ["executor"],
                     settings=[{"system": system}, {"temperature": 0.2}])
    run = live_kit.run(exp, concurrency=1, progress=False)
    df = run.results
    assert len(df) == 6 and (df.status == "ok").all()
    assert (df.provider == "openai").all() and (df.served_model == "gpt-4o-mini").all()  # the executor at OpenAI
    assert list(df.settings.unique()) == [f"system={system}", "temperature=0.2"]
    bodies = [r.body for r in openai_server.requests]
    assert len(bodies) == 6
    with_system = [b for b in bodies if b["messages"][0]["role"] == "system"]
    assert len(with_system) == 3 and all(b["messages"][0]["content"] == system for b in with_system)
    asked = sorted(f"What is the capital of {c}?" for c in DATA.country)
    assert sorted(b["messages"][-1]["content"] for b in with_system) == asked
    without = [b for b in bodies if b["messages"][0]["role"] != "system"]
    assert len(without) == 3 and all(b["temperature"] == 0.2 for b in without)
    last = openai_server.requests[-1].body  # cells run in order: the last one is Peru without a system prompt
    assert last["messages"] == [{"role": "user", "content": "What is the capital of Peru?"}]


# --- the LLM judge end to end ------------------------------------------------------------------


def _judge_reply(text: str, prompt_tokens: int = 150, completion_tokens: int = 3) -> dict:
    """A recorded OpenAI chat answer whose message is ``text`` (the judge's reply), with plausible usage."""
    from loopback import load_fixtures

    entry = load_fixtures("openai", "/v1/chat/completions", stream=False, tools=False, status=200)[0]
    body = entry["response"]["json"]
    body["choices"][0]["message"]["content"] = text
    body["usage"].update(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                         total_tokens=prompt_tokens + completion_tokens)
    return entry


def _gpt4o_mini_cost(prompt_tokens: int, completion_tokens: int) -> float:
    from genai_prices import Usage as GUsage
    from genai_prices import calc_price

    p = calc_price(GUsage(input_tokens=prompt_tokens, output_tokens=completion_tokens), model_ref="gpt-4o-mini",
                   provider_id="openai")
    return float(p.total_price)


def _judged(data=DATA, **judge):
    return Experiment("judged", data, "What is the capital of {country}?", ["sim-small"], settings={"max_tokens": [16]},
                      scorers={"judge": {"llm_judge": {"model": "gpt-4o-mini", "rubric": "names the right city",
                                                      "field": "expected", **judge}}})


def test_llm_judge_scores_and_is_costed(make_live_kit, openai_server):
    live_kit = make_live_kit(providers=["openai", "anthropic", "simulated"])  # answers from sim-small, listed
    for text in ("0.9", "Score: 0.25", "1"):
        openai_server.enqueue(_judge_reply(text))
    run = live_kit.run(_judged(), concurrency=1, progress=False)  # in order: France, Japan, Peru
    df = run.results
    assert list(df.score_judge) == [0.9, 0.25, 1.0] and df.error.isna().all() and run.stopped_reason is None
    assert (df.provider == "simulated").all()  # the answers; only the judge went to OpenAI
    bodies = [r.body for r in openai_server.requests]
    assert len(bodies) == 3 and {b["model"] for b in bodies} == {"gpt-4o-mini"} and {b["temperature"] for b in bodies} == {0.0}
    first = bodies[0]["messages"][-1]["content"]
    assert "names the right city" in first and "What is the capital of France?" in first
    assert "Reference answer:\nParis" in first and df.output.iloc[0] in first
    ledger = live_kit.usage(run_id=run.run_id)
    judge_rows = ledger[ledger.provider == "openai"]
    assert len(ledger) == 6 and len(judge_rows) == 3 and set(judge_rows.model) == {"gpt-4o-mini"}
    assert judge_rows.cost_usd.tolist() == pytest.approx([_gpt4o_mini_cost(150, 3)] * 3, rel=1e-9)
    assert run.cost_usd == pytest.approx(ledger.cost_usd.sum(), rel=1e-9)  # the run's spend includes the judge
    answers = ledger[ledger.provider == "simulated"].cost_usd.sum()
    assert run.cost_usd == pytest.approx(answers + 3 * _gpt4o_mini_cost(150, 3), rel=1e-9)
    assert df.spent_usd.sum() == pytest.approx(run.cost_usd, rel=1e-9)
    assert (df.spent_usd > df.cost_usd).all()  # each cell's spend = its answer + its judge call
    assert run.summary.score_judge.iloc[0] == pytest.approx((0.9 + 0.25 + 1.0) / 3)

    again = live_kit.run(_judged(), concurrency=1, progress=False)  # answers and judge replies from the cache
    assert len(openai_server.requests) == 3 and again.cost_usd == 0.0 and list(again.results.score_judge) == [0.9, 0.25, 1.0]


def test_budget_refused_judge_stops_the_run_and_rerun_fills_it(make_live_kit, openai_server):
    live_kit = make_live_kit(providers=["openai", "anthropic", "simulated"])
    exp = _judged(DATA.head(1), max_tokens=2000)
    # the answer's worst case (sim-small, 16 tokens out) is ~$0.00002; the judge's (gpt-4o-mini, up to
    # 2,000 tokens out) is ~$0.0012: $0.0005 lets the answer through and refuses the judge
    run = live_kit.run(exp, concurrency=1, budget_usd=0.0005, progress=False)
    r = run.results.iloc[0]
    assert r.status == "ok" and r.output and math.isnan(r.score_judge)
    assert "score_judge missing: budget exhausted before the judge call" in r.error
    assert run.stopped_reason and "budget exhausted" in run.stopped_reason and "1 judge call(s) not sent" in run.stopped_reason
    assert run.manifest["totals"]["judge_skipped"] == 1 and len(openai_server.requests) == 0
    assert live_kit.usage(run_id=run.run_id).cost_usd.sum() <= 0.0005
    assert (run.path / "manifest.json").exists()

    openai_server.enqueue(_judge_reply("0.7"))
    resumed = live_kit.run(exp, concurrency=1, budget_usd=0.01, progress=False)
    r = resumed.results.iloc[0]
    assert resumed.stopped_reason is None and r.cache_hit and r.score_judge == 0.7 and r.error is None
    assert len(openai_server.requests) == 1 and resumed.cost_usd == pytest.approx(_gpt4o_mini_cost(150, 3), rel=1e-9)


# --- the budget under real overlap -------------------------------------------------------------


def test_budget_holds_with_calls_really_in_flight(tmp_path):
    from cognitionos_kit import Kit, LatencyModel

    countries = ["France", "Japan", "Peru", "Kenya", "Chile", "Norway", "Egypt", "Canada", "India", "Spain",
                 "Ghana", "Nepal"]
    data = pd.DataFrame({"country": countries, "expected": countries})
    exp = Experiment("overlap", data, "What is the capital of {country}?", ["sim-large"],
                     settings={"max_tokens": [120]}, repeats=4)
    # 4-20 ms per simulated call: with 12 workers many calls are in flight at once
    k = Kit(tmp_path / "h", dotenv=False, simulated_latency=LatencyModel(scale=0.2))
    try:
        full = k.run(exp, concurrency=12, cache=False, progress=False).cost_usd
        budget = full / 2
        run = k.run(exp, concurrency=12, budget_usd=budget, cache=False, progress=False)
        ledger = k.usage(run_id=run.run_id)
    finally:
        k.close()
    assert run.stopped_reason and run.stopped_reason.startswith("budget exhausted")
    assert (run.results.status == "skipped").any() and (run.results.status == "ok").sum() > 12
    assert 0 < ledger.cost_usd.sum() <= budget and ledger.cost_usd.sum() == pytest.approx(run.cost_usd, rel=1e-9)
    # the calls really overlapped: sweep the [end - latency, end] intervals of the ledger rows
    ts = pd.to_datetime(ledger.ts)
    end = (ts - ts.min()).dt.total_seconds() * 1000  # ms
    events = sorted([(e - lat, 1) for e, lat in zip(end, ledger.latency_ms)] + [(e, -1) for e in end],
                    key=lambda x: (x[0], x[1]))
    depth = peak = 0
    for _, d in events:
        depth += d
        peak = max(peak, depth)
    assert 4 <= peak <= 12, peak  # never more than the 12 workers


# --- the parameterised notebook under papermill ------------------------------------------------


def test_notebook_runs_under_papermill_from_the_repo_root(tmp_path):
    import papermill

    root = Path(__file__).resolve().parent.parent
    home = tmp_path / "nb-home"
    out = tmp_path / "out.ipynb"
    # as documented: run from the repository root, only the parameters change
    papermill.execute_notebook(str(root / "notebooks" / "05_experiment.ipynb"), str(out), cwd=str(root),
                               parameters={"repeats": 1, "budget_usd": 0.01, "home": str(home)},
                               kernel_name="python3", progress_bar=False, request_save_on_cell_execute=False)
    import nbformat

    nb = nbformat.read(out, as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")
    assert "capitals · 32 calls" in text and "1 repeats" in text
    assert "cells: 32 · stopped: None" in text and "cache hits: 32/32 · new spend: $0.000000" in text
    report = Path(next(line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("self-contained HTML report")))
    assert report.parent.parent == home / "runs" and report.exists()
    manifest = json.loads((report.parent / "manifest.json").read_text())
    assert manifest["run_id"] == report.parent.name and manifest["totals"]["cells"] == 32
    assert manifest["spec"]["repeats"] == 1 and manifest["budget_usd"] == 0.01
    # the run, its cached rerun and the run with sim-large in place of sim-nano it is compared with
    assert len(list((home / "runs").glob("*/manifest.json"))) == 3


def test_a_run_with_unpriced_calls_has_an_unknown_cost_never_zero(make_live_kit, openai_server, tmp_path):
    """A model no price table knows: the run's cost is None and says "unpriced: N calls" (repr,
    manifest, summary, report), the priced cells keep their cost; a rerun from the cache spent $0."""
    kit = make_live_kit(home=tmp_path / "unpriced")
    exp = _exp(models=["mystery-model", "gpt-4o-mini"], settings=None, repeats=1, scorers=["contains"])
    run = kit.run(exp, concurrency=2, progress=False)
    assert (run.results.status == "ok").all() and len(openai_server.requests) == 6
    assert run.cost_usd is None and run.unpriced_calls == 3
    assert "spent unknown (unpriced: 3 calls" in repr(run)
    assert run.manifest["totals"]["unpriced_calls"] == 3 and run.manifest["totals"]["answers_cost_usd"] is None
    by_model = run.summary.set_index("model")
    assert math.isnan(by_model.loc["mystery-model", "cost_usd"]) and by_model.loc["mystery-model", "unpriced_calls"] == 3
    assert by_model.loc["gpt-4o-mini", "cost_usd"] > 0 and by_model.loc["gpt-4o-mini", "unpriced_calls"] == 0
    assert "unpriced: 3 calls" in Path(run.report_path).read_text()
    again = kit.run(exp, concurrency=2, progress=False)
    assert again.cache_hits == 6 and again.cost_usd == 0.0 and again.unpriced_calls == 0  # nothing sent: known $0
