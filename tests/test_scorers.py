"""Scorers: regex, numeric tolerance, JSON Schema, embedding similarity and the rubric judge.

Direct unit tests of each scorer function, the checks an Experiment makes when it is built, and
one ``kit.run`` per scorer (simulated provider; the rubric judge also against the loopback OpenAI
server through the official SDK).
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from cognitionos_kit import Experiment, InvalidRequestError
from cognitionos_kit.experiments.judges import judge_request, read_judge_reply, rubric_criteria
from cognitionos_kit.experiments.scorers import BUILTIN, build_scorers, first_number

CAPITALS = pd.DataFrame({"country": ["France", "Japan"], "expected": ["Paris", "Tokyo"]})
ASK = "What is the capital of {country}?"


def _run(kit, data, scorers, simulated=None, prompt=ASK):
    return kit.run(Experiment("scored", data, prompt, ["sim-small"], scorers=scorers, simulated=simulated),
                   progress=False)


# --- regex -------------------------------------------------------------------------------------


def test_regex_modes_flags_and_a_capture_compared_to_a_reference():
    rx = BUILTIN["regex"]
    assert rx("The capital is Paris.", {}, pattern="paris") == 0.0
    assert rx("The capital is Paris.", {}, pattern="paris", flags="i") == 1.0
    assert rx("The capital is Paris.", {}, pattern="Paris", mode="match") == 0.0
    assert rx("Paris", {}, pattern="Par", mode="fullmatch") == 0.0 and rx("Paris", {}, pattern="Par.s", mode="fullmatch") == 1.0
    assert rx("one\ntwo", {}, pattern="^two$") == 0.0 and rx("one\ntwo", {}, pattern="^two$", flags="m") == 1.0
    row = {"expected": "Paris"}
    assert rx("Answer: Paris", row, pattern=r"Answer:\s*(\w+)", field="expected") == 1.0
    assert rx("Answer: Lyon", row, pattern=r"Answer:\s*(\w+)", field="expected") == 0.0
    assert rx("answer: PARIS", row, pattern=r"answer:\s*(?P<city>\w+)", field="expected", group="city", flags="i") == 1.0
    # no capture group: the whole match is compared
    assert rx("x Paris y", row, pattern="Paris", field="expected") == 1.0


# --- numeric -----------------------------------------------------------------------------------


@pytest.mark.parametrize("text,number", [
    ("The answer is 42.", 42.0), ("about 1,234.5 units", 1234.5), ("-3 degrees", -3.0), ("it is .5", 0.5),
    ("1e-3", 0.001), ("50% of it", 50.0), ("x2 then 7", 7.0), ("v1.2 is 8", 8.0), ("first 3, then 4", 3.0),
    ("no number here", None),
])
def test_first_number_reads_numbers_as_people_write_them(text, number):
    assert first_number(text) == number


def test_numeric_absolute_and_relative_tolerance():
    num = BUILTIN["numeric"]
    assert num("about 3.9 units", {"expected": 4}, tolerance=0.2) == 1.0
    assert num("about 3.7 units", {"expected": 4}, tolerance=0.2) == 0.0
    assert num("1,050", {"expected": 1000}, rel_tolerance=0.05) == 1.0
    assert num("1,060", {"expected": 1000}, rel_tolerance=0.05) == 0.0
    # the looser of the two bounds holds
    assert num("1,060", {"expected": 1000}, tolerance=100, rel_tolerance=0.01) == 1.0
    assert num("110", {"expected": 100}, tolerance=0.1, relative=True) == 1.0  # the older spelling
    assert num("I cannot say", {"expected": 4}) == 0.0  # no number: a wrong answer, not a missing one
    assert math.isnan(num("4", {"expected": None}))  # no reference: nothing to score against


# --- JSON Schema -------------------------------------------------------------------------------

CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def test_valid_json_against_a_schema():
    vj = BUILTIN["valid_json"]
    assert vj('{"city": "Paris"}', {}, schema=CITY) == 1.0
    assert vj('```json\n{"city": "Paris"}\n```', {}, schema=CITY) == 1.0
    assert vj('{"town": "Paris"}', {}, schema=CITY) == 0.0 and vj('{"town": "Paris"}', {}) == 1.0
    assert vj('{"city": 3}', {}, schema=CITY) == 0.0 and vj("city: Paris", {}, schema=CITY) == 0.0


# --- embedding similarity ----------------------------------------------------------------------


def test_embedding_similarity_is_a_cosine_from_the_local_model():
    sim = BUILTIN["embedding_similarity"]
    row = {"expected": "Paris is the capital of France."}
    close = sim("The capital of France is Paris.", row)
    far = sim("My cat sleeps on the warm windowsill.", row)
    assert -1.0 <= far < 0.3 < 0.8 < close <= 1.0
    assert sim("Paris is the capital of France.", row) == pytest.approx(1.0, abs=1e-5)
    assert sim("The capital of France is Paris.", row, threshold=0.8) == 1.0
    assert sim("My cat sleeps on the warm windowsill.", row, threshold=0.8) == 0.0
    assert sim("   ", row) == 0.0 and math.isnan(sim("Paris", {"expected": None}))


# --- rubric judge: prompt and reply ------------------------------------------------------------


def test_rubric_forms_request_and_weighted_reply():
    assert rubric_criteria("right city") == [("c1", "right city", 1.0)]
    assert rubric_criteria({"right city": 2, "short": 1}) == [("c1", "right city", 2.0), ("c2", "short", 1.0)]
    rubric = ["names the right city", {"criterion": "one sentence", "weight": 3}]
    assert rubric_criteria(rubric) == [("c1", "names the right city", 1.0), ("c2", "one sentence", 3.0)]
    options = {"rubric": rubric, "field": "expected", "model": "gpt-4o-mini"}
    prompt, kwargs = judge_request(options, "Capital of France?", {"expected": "Paris"}, "Paris.", "rubric_judge")
    assert "- c1 (weight 1): names the right city" in prompt and "- c2 (weight 3): one sentence" in prompt
    assert "Reference answer:\nParis" in prompt and "Answer to grade:\nParis." in prompt
    assert kwargs["model"] == "gpt-4o-mini" and kwargs["temperature"] == 0.0
    assert kwargs["output"]["properties"]["scores"]["required"] == ["c1", "c2"]
    score, why, note = read_judge_reply("rubric_judge", options, '{"rationale": "ok", "scores": {"c1": 1, "c2": 0.5}}')
    assert score == pytest.approx((1 * 1 + 0.5 * 3) / 4) and why == "ok" and note is None
    fenced = '```json\n{"rationale": "r", "scores": {"c1": 2, "c2": -1}}\n```'
    score, why, note = read_judge_reply("rubric_judge", options, fenced)
    assert score == pytest.approx(0.25) and why == "r"  # each criterion clamped to [0, 1]
    for bad in ("0.8", '{"scores": {"c1": 1}}', '{"scores": {"c1": "high", "c2": 1}}', "{oops"):
        score, why, note = read_judge_reply("rubric_judge", options, bad)
        assert math.isnan(score) and why is None and "not the rubric's JSON" in note


# --- checked when the experiment is built ------------------------------------------------------

NUMS = pd.DataFrame({"q": ["2+2", "3*3"], "expected": [4, 9], "label": ["four", "nine"]})


@pytest.mark.parametrize("scorers,match", [
    ([{"regex": "(unclosed"}], "bad pattern"),
    ([{"regex": {"pattern": ""}}], "needs a pattern"),
    ([{"regex": {"pattern": "a", "flags": "iq"}}], "flags are letters of 'imsx'"),
    ([{"regex": {"pattern": "a", "mode": "find"}}], "mode must be one of search, match, fullmatch"),
    ([{"regex": {"pattern": "(a)", "group": 1}}], "give field too"),
    ([{"regex": {"pattern": "(a)", "field": "label", "group": 2}}], "has no group 2"),
    ([{"regex": {"pattern": "(a)", "field": "label", "group": "city"}}], "has no group 'city'"),
    ([{"regex": {"pattern": "(a)", "field": "answer"}}], "reads field 'answer'"),
    ([{"regex": {"pattern": "a", "case": True}}], r"unknown option\(s\) \['case'\]"),
    ([{"numeric": {"tolerance": -0.1}}], "tolerance must be a number >= 0"),
    ([{"numeric": {"rel_tolerance": float("nan")}}], "rel_tolerance must be a number >= 0"),
    ([{"numeric": {"tolerance": "1"}}], "tolerance must be a number >= 0"),
    ([{"numeric": {"tolerance": 0.1, "relative": True, "rel_tolerance": 0.1}}], "not both"),
    ([{"numeric": {"field": "label"}}], "row 0 value 'four' is not a number"),
    ([{"numeric": {"field": "answer"}}], "reads field 'answer'"),
    ([{"valid_json": {"schema": {"type": "thing"}}}], "invalid JSON Schema"),
    ([{"valid_json": {"schema": "object"}}], "schema must be a JSON Schema dict"),
    ([{"embedding_similarity": {"field": "answer"}}], "reads field 'answer'"),
    ([{"embedding_similarity": {"field": "label", "threshold": 1.5}}], r"threshold must be a number in \[-1, 1\]"),
    ([{"rubric_judge": {}}], "needs a rubric"),
    ([{"rubric_judge": {"rubric": []}}], "no criteria"),
    ([{"rubric_judge": {"rubric": ["right", ""]}}], "criterion 2 must be a non-empty text"),
    ([{"rubric_judge": {"rubric": {"right": 0}}}], "criterion 1's weight must be a positive number"),
    ([{"rubric_judge": {"rubric": [{"criterion": "right", "weight": -2}]}}], "weight must be a positive number"),
    ([{"rubric_judge": {"rubric": [{"text": "right"}]}}], "a criterion is a text or"),
    ([{"rubric_judge": {"rubric": ["right", "right"]}}], "twice"),
    ([{"rubric_judge": {"rubric": "right", "field": "answer"}}], "reads field 'answer'"),
    ([{"rubric_judge": {"rubric": "right", "temperature": 1}}], r"unknown option\(s\) \['temperature'\]"),
    ([{"rubric_judge": {"rubric": "right", "model": ""}}], "model must be a non-empty string"),
    ([{"numeric": 0.5}], "options must be a dict"),
])
def test_bad_scorer_options_fail_when_the_experiment_is_built(scorers, match):
    with pytest.raises(InvalidRequestError, match=match):
        Experiment("bad", NUMS, "Compute {q}", ["sim-small"], scorers=scorers)


def test_bad_rubric_judge_model_fails_before_any_call(kit):
    exp = Experiment("bad", CAPITALS, ASK, ["sim-small"], scorers=[{"rubric_judge": {"rubric": "x", "model": "sim-huge"}}])
    with pytest.raises(InvalidRequestError, match="scorer 'rubric_judge' .*sim-huge"):
        kit.run(exp, progress=False)
    assert kit.simulated.calls == 0 and len(kit.usage()) == 0


def test_numeric_reference_column_may_hold_numbers_as_text_or_gaps():
    data = pd.DataFrame({"q": ["a", "b", "c"], "expected": ["4", None, 2.5]})
    assert [s.kind for s in build_scorers(["numeric"], set(data.columns), data)] == ["numeric"]


# --- end to end: kit.run with the simulated provider -------------------------------------------

SCRIPT = {r"capital of France": "The capital is Paris.", r"capital of Japan": "The capital is Kyoto."}


def test_regex_run(kit):
    run = _run(kit, CAPITALS, {"says": {"regex": {"pattern": r"capital is (\w+)", "field": "expected"}},
                               "any": {"regex": {"pattern": "CAPITAL", "flags": "i"}}}, SCRIPT)
    df = run.results
    assert list(df.score_says) == [1.0, 0.0] and list(df.score_any) == [1.0, 1.0]
    assert run.summary.score_says.iloc[0] == 0.5


def test_numeric_run(kit):
    script = {r"2\+2": "That makes 4.0 exactly.", r"3\*3": "Roughly 10.", r"7-7": "I would rather not say."}
    data = pd.DataFrame({"q": ["2+2", "3*3", "7-7"], "expected": [4, 9, 0]})
    run = _run(kit, data, {"exact": "numeric", "loose": {"numeric": {"rel_tolerance": 0.15}}}, script,
               prompt="Compute {q}")
    assert list(run.results.score_exact) == [1.0, 0.0, 0.0] and list(run.results.score_loose) == [1.0, 1.0, 0.0]


def test_valid_json_schema_run(kit):
    script = {r"France": '{"city": "Paris"}', r"Japan": '```json\n{"town": "Tokyo"}\n```'}
    run = _run(kit, CAPITALS, {"fits": {"valid_json": {"schema": CITY}}, "json": "valid_json"}, script)
    assert list(run.results.score_fits) == [1.0, 0.0] and list(run.results.score_json) == [1.0, 1.0]


def test_embedding_similarity_run(kit):
    data = pd.DataFrame({"country": ["France", "Japan"],
                         "expected": ["Paris is the capital of France.", "Tokyo is the capital of Japan."]})
    script = {r"France": "The capital of France is Paris.", r"Japan": "Bananas are rich in potassium."}
    run = _run(kit, data, {"sim": "embedding_similarity", "close": {"embedding_similarity": {"threshold": 0.7}}},
               script)
    df = run.results
    assert df.score_sim.iloc[0] > 0.8 > 0.3 > df.score_sim.iloc[1] and list(df.score_close) == [1.0, 0.0]
    assert len(kit.usage(run_id=run.run_id)) == 2  # the local model is free and not a call


RUBRIC = {"rubric_judge": {"rubric": ["names the right city", {"criterion": "answers in one sentence", "weight": 3}],
                           "field": "expected"}}


def test_rubric_judge_offline_the_simulated_provider_judges(kit):
    run = _run(kit, CAPITALS, {"rubric": RUBRIC})
    df = run.results
    assert {"score_rubric", "rationale_rubric"} <= set(df.columns) and df.error.isna().all()
    assert df.score_rubric.between(0, 1).all() and df.rationale_rubric.map(lambda s: isinstance(s, str) and s != "").all()
    ledger = kit.usage(run_id=run.run_id)
    assert len(ledger) == 4 and run.cost_usd == pytest.approx(ledger.cost_usd.sum())  # 2 answers + 2 judge calls
    again = _run(kit, CAPITALS, {"rubric": RUBRIC})  # the judge's replies come from the cache, rationale too
    assert again.cost_usd == 0.0 and list(again.results.rationale_rubric) == list(df.rationale_rubric)
    assert list(again.results.score_rubric) == list(df.score_rubric)
    saved = pd.read_parquet(run.path / "results.parquet")
    assert list(saved.rationale_rubric) == list(df.rationale_rubric)


def test_rubric_judge_scripted_scores_rationale_and_a_bad_reply(kit):
    script = [
        {"prompt": r"Answer to grade:.*Paris", "answer": json.dumps({"rationale": "Names Paris in one sentence.",
                                                                     "scores": {"c1": 1, "c2": 1}})},
        {"prompt": r"Answer to grade:.*Kyoto", "answer": "Kyoto is wrong, 0 points."},  # not the rubric's JSON
        *({"prompt": p, "answer": a} for p, a in SCRIPT.items()),
    ]
    run = _run(kit, CAPITALS, {"rubric": RUBRIC}, script)
    first, second = run.results.iloc[0], run.results.iloc[1]
    assert first.score_rubric == 1.0 and first.rationale_rubric == "Names Paris in one sentence." and pd.isna(first.error)
    assert math.isnan(second.score_rubric) and pd.isna(second.rationale_rubric) and second.status == "ok"
    assert "score_rubric missing: judge call failed" in second.error
    report = run.report_path.read_text(encoding="utf-8")
    assert "Names Paris in one sentence." in report  # shown with the sample's scores


# --- the rubric judge through the official SDK against the loopback OpenAI server -------------


def _openai_reply(text: str) -> dict:
    from loopback import load_fixtures

    entry = load_fixtures("openai", "/v1/chat/completions", stream=False, tools=False, status=200)[0]
    entry["response"]["json"]["choices"][0]["message"]["content"] = text
    return entry


def test_rubric_judge_against_loopback_openai(make_live_kit, openai_server):
    live_kit = make_live_kit(providers=["openai", "anthropic", "simulated"])
    judge = {"rubric_judge": {**RUBRIC["rubric_judge"], "model": "gpt-4o-mini"}}
    openai_server.enqueue(_openai_reply('{"rationale": "Right city, but two sentences.", "scores": {"c1": 1, "c2": 0}}'))
    openai_server.enqueue(_openai_reply('{"rationale": "Kyoto is not the capital.", "scores": {"c1": 0, "c2": 1}}'))
    exp = Experiment("judged", CAPITALS, ASK, ["sim-small"], scorers={"rubric": judge}, simulated=SCRIPT)
    run = live_kit.run(exp, concurrency=1, progress=False)
    df = run.results
    assert list(df.score_rubric) == [0.25, 0.75] and df.error.isna().all()
    assert list(df.rationale_rubric) == ["Right city, but two sentences.", "Kyoto is not the capital."]
    bodies = [r.body for r in openai_server.requests]
    assert len(bodies) == 2 and {b["model"] for b in bodies} == {"gpt-4o-mini"}
    fmt = bodies[0]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"]["properties"]["scores"]["required"] == ["c1", "c2"]
    text = bodies[0]["messages"][-1]["content"]
    assert "- c2 (weight 3): answers in one sentence" in text and "Reference answer:\nParis" in text
    assert "Answer to grade:\nThe capital is Paris." in text
    judge_rows = live_kit.usage(run_id=run.run_id)
    assert (judge_rows.provider == "openai").sum() == 2 and run.cost_usd == pytest.approx(judge_rows.cost_usd.sum())
    again = live_kit.run(exp, concurrency=1, progress=False)
    assert len(openai_server.requests) == 2 and again.cost_usd == 0.0
    assert list(again.results.rationale_rubric) == list(df.rationale_rubric)


def test_yaml_spells_the_new_scorers_like_python(tmp_path):
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in CAPITALS.to_dict("records")))
    (tmp_path / "e.yaml").write_text(
        "name: scored\ndataset: d.jsonl\nprompts: 'What is the capital of {country}?'\nmodels: [sim-small]\n"
        "scorers:\n"
        "  says: {regex: {pattern: 'capital is (\\w+)', field: expected, flags: i}}\n"
        "  fits: {valid_json: {schema: {type: object, properties: {city: {type: string}}, required: [city]}}}\n"
        "  rubric: {rubric_judge: {rubric: [names the right city, {criterion: answers in one sentence, weight: 3}],"
        " field: expected}}\n")
    python = Experiment("scored", CAPITALS, ASK, ["sim-small"], scorers={
        "says": {"regex": {"pattern": r"capital is (\w+)", "field": "expected", "flags": "i"}},
        "fits": {"valid_json": {"schema": CITY}}, "rubric": RUBRIC})
    assert Experiment.from_yaml(tmp_path / "e.yaml").hash == python.hash
