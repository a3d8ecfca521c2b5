"""Canned answers for the simulated provider (like pydantic-ai's FunctionModel): by prompt pattern,
by model, or a function; used by the YAML example and the demo so offline scores show signal;
kept apart from composed answers in the experiment cache; carried by kit.config (Ray workers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cognitionos_kit import Experiment, InvalidRequestError, Kit, LatencyModel

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "experiment.yaml"


def _kit(path) -> Kit:
    return Kit(path, dotenv=False, simulated_latency=LatencyModel(scale=0))


def test_patterns_models_groups_and_the_default(tmp_path):
    kit = _kit(tmp_path)
    kit.simulated.script({r"capital of (\w+)": {"sim-nano": r"I am not sure about \1.", "*": "Paris"},
                          "weather": "Sunny."})
    assert kit.complete("What is the capital of France?", model="sim-small").content == "Paris"
    assert kit.complete("What is the capital of France?", model="sim-nano").content == "I am not sure about France."
    assert kit.complete("WEATHER today?").content == "Sunny."  # case-insensitive
    r = kit.complete("Something else entirely")
    assert r.content.startswith("(simulated ") and r.provider == "simulated"  # no rule: the composed answer
    assert len(kit.usage()) == 4 and kit.usage().cost_usd.gt(0).all()  # costed and ledgered as any call


def test_rules_and_a_function(tmp_path):
    kit = _kit(tmp_path)
    kit.simulated.script([{"model": "sim-nano", "prompt": "Japan", "answer": "Kyoto"}, {"prompt": "Japan", "answer": "Tokyo"}])
    assert [kit.complete("Capital of Japan?", model=m).content for m in ("sim-small", "sim-nano")] == ["Tokyo", "Kyoto"]

    def answer(messages, model):
        return f"{model} saw {len(messages)} message(s)" if "count" in messages[-1]["content"] else None

    kit.simulated.script(answer)
    assert kit.complete([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                         {"role": "user", "content": "count them"}], model="sim-small").content == "sim-small saw 3 message(s)"
    with kit.simulated.scripted({"count": "scoped"}):
        assert kit.complete("count again").content == "scoped"
    assert kit.complete("count again", model="sim-small").content == "sim-small saw 1 message(s)"  # restored
    kit.simulated.script(None)
    assert kit.complete("count again").content.startswith("(simulated ")


@pytest.mark.parametrize("answers, fragment", [
    ({"(unclosed": "x"}, "not a valid regex"),
    ([{"prompt": "x"}], "needs a 'prompt' pattern and an 'answer'"),
    ([{"prompt": "x", "answer": "y", "when": "z"}], "unknown key"),
    (42, "must be a dict"),
])
def test_bad_scripts_are_clear_errors(tmp_path, answers, fragment):
    kit = _kit(tmp_path)
    with pytest.raises(InvalidRequestError, match=fragment):
        kit.simulated.script(answers)
    with pytest.raises(InvalidRequestError, match=fragment):
        Experiment("x", [{"a": 1}], "{a}", ["sim-small"], simulated=answers)


def test_the_yaml_example_shows_signal_between_models_and_prompts(tmp_path):
    kit = _kit(tmp_path)
    run = kit.run(Experiment.from_yaml(EXAMPLE), progress=False)
    s = run.results.groupby(["template", "model"])[["score_contains", "score_valid_json"]].mean()
    assert s.loc[("terse", "sim-small"), "score_contains"] == 1.0
    assert s.loc[("terse", "sim-nano"), "score_contains"] == 0.5
    assert s.loc[("json", "sim-small"), "score_valid_json"] == 1.0 > s.loc[("json", "sim-nano"), "score_valid_json"]
    assert kit.simulated.canned is None  # the experiment's script applied to its run only


def test_scripted_and_composed_answers_are_cached_apart(tmp_path):
    kit = _kit(tmp_path)
    plain = Experiment("caps", [{"country": "France", "expected": "Paris"}], "Capital of {country}?", ["sim-small"],
                       scorers=["contains"])
    first = kit.run(plain, progress=False)
    assert first.results.score_contains.iloc[0] == 0.0  # the composed answer does not know
    canned = Experiment("caps", plain.data, "Capital of {country}?", ["sim-small"], scorers=["contains"],
                        simulated={"France": "Paris"})
    assert canned.hash != plain.hash
    second = kit.run(canned, progress=False)
    assert not second.results.cache_hit.iloc[0] and second.results.score_contains.iloc[0] == 1.0
    third = kit.run(canned, progress=False)
    assert third.results.cache_hit.iloc[0] and third.results.output.iloc[0] == "Paris"


def test_the_script_travels_with_the_config(tmp_path):
    kit = _kit(tmp_path)
    kit.simulated.script({"ping": "pong"})
    twin = Kit.from_config(kit.config)  # how a Ray worker builds its Kit
    assert twin.complete("ping?").content == "pong"
