"""Per-cell intervals and paired comparisons of runs: coverage of known simulated scorers over
seeded repeats, exact values checked by hand, compare on planted and absent differences."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cognitionos_kit import Experiment, InvalidRequestError
from cognitionos_kit.experiments.report import figure_specs
from cognitionos_kit.experiments.stats import (
    binom_cdf,
    bootstrap_ci,
    cell_stats,
    clopper_pearson,
    mcnemar_exact,
    mean_interval,
    paired_test,
    sign_flip_p,
)

REPS = 200  # seeded datasets per coverage check


# --- the functions, directly ---------------------------------------------------------------------
def test_clopper_pearson_matches_closed_forms_and_its_definition():
    low, high = clopper_pearson(0, 10)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 10), abs=1e-9)  # k = 0: 1 - (alpha/2)^(1/n)
    low, high = clopper_pearson(10, 10)
    assert high == 1.0 and low == pytest.approx(0.025 ** (1 / 10), abs=1e-9)
    low, high = clopper_pearson(5, 10)
    assert low == pytest.approx(1 - high, abs=1e-9) and low == pytest.approx(0.187086, abs=1e-6)
    low, high = clopper_pearson(7, 23, conf=0.9)  # the bounds are where each binomial tail is (1 - conf) / 2
    assert 1 - binom_cdf(6, 23, low) == pytest.approx(0.05, abs=1e-9)
    assert binom_cdf(7, 23, high) == pytest.approx(0.05, abs=1e-9)


def test_mcnemar_exact_by_hand():
    # b discordant one way, c the other; two-sided p = 2 * P(X <= min(b, c)), X ~ Binomial(b + c, 1/2)
    assert mcnemar_exact(1, 6) == pytest.approx(2 * (1 + 7) / 2**7)  # 0.125
    assert mcnemar_exact(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 2**12)  # 0.0386
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 2**6)
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0


def test_binary_paired_interval_is_exact_and_agrees_with_mcnemar():
    four = paired_test([0, 0, 0, 0], [1, 1, 1, 1])  # 4 of 4 samples improve: p = 2 / 16
    assert four["p_value"] == pytest.approx(0.125) and not four["significant"]
    assert four["ci_low"] == pytest.approx(2 * 0.025 ** (1 / 4) - 1) and four["ci_low"] < 0 and four["ci_high"] == 1.0
    rng = np.random.default_rng(8)
    for _ in range(50):
        a, b = rng.random(30) < 0.5, rng.random(30) < rng.uniform(0.3, 0.9)
        t = paired_test(a, b)
        assert t["test"] == "mcnemar" and t["ci_low"] <= t["diff"] <= t["ci_high"]
        assert t["significant"] == (t["ci_low"] > 0 or t["ci_high"] < 0)  # interval and test tell one story


def test_sign_flip_is_exact_for_few_pairs():
    # 4 non-zero differences, 16 sign patterns; |sum| >= 5 for (+,+,+,-) (+,+,+,+) (+,-,+,+) and mirrors
    d = [1.0, 2.0, 3.0, -1.0]
    patterns = [np.array(s) for s in np.ndindex(2, 2, 2, 2)]
    expected = np.mean([abs(np.dot(1 - 2 * s, d)) >= 5 for s in patterns])
    assert sign_flip_p(d) == pytest.approx(expected) == pytest.approx(6 / 16)
    assert sign_flip_p([0.0, 0.0, 0.0]) == 1.0


@pytest.mark.parametrize("p", [0.3, 0.85])
def test_exact_interval_covers_a_bernoulli_scorer_at_the_stated_rate(p):
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(REPS):
        stats = mean_interval(rng.random(40) < p)
        assert stats["method"] == "exact" and stats["n"] == 40
        covered += stats["ci_low"] <= p <= stats["ci_high"]
    assert 0.90 <= covered / REPS <= 0.99


def test_bootstrap_interval_covers_a_numeric_scorer_at_the_stated_rate():
    rng = np.random.default_rng(2)
    true_mean = 2 / (2 + 5)  # Beta(2, 5): skewed scores in [0, 1]
    covered = 0
    for i in range(REPS):
        stats = mean_interval(rng.beta(2, 5, size=40), seed=i)
        assert stats["method"] == "bootstrap"
        covered += stats["ci_low"] <= true_mean <= stats["ci_high"]
    assert 0.90 <= covered / REPS <= 0.99


def test_bootstrap_is_seeded():
    v = np.random.default_rng(3).normal(size=25)
    assert bootstrap_ci(v) == bootstrap_ci(v) and bootstrap_ci(v, seed=1) != bootstrap_ci(v, seed=2)


def test_paired_tests_hold_their_size_and_find_a_shift():
    rng = np.random.default_rng(4)
    false_alarms = 0
    for i in range(REPS):  # A and B from the same distribution: "significant" about 5% of the time
        base = rng.normal(size=30)
        a, b = base + rng.normal(scale=0.5, size=30), base + rng.normal(scale=0.5, size=30)
        false_alarms += paired_test(a, b, seed=i)["significant"]
    assert 0.01 <= false_alarms / REPS <= 0.10
    base = rng.normal(size=30)
    shifted = paired_test(base, base + 0.3 + rng.normal(scale=0.1, size=30))
    assert shifted["test"] == "permutation" and shifted["p_value"] < 0.01 and shifted["ci_low"] > 0


def _results(scores, repeats=1):
    """A results table: one cell, one row per sample and repeat."""
    rows = [{"cell": 0, "row": r, "template": "t", "model": "m", "settings": "default", "repeat": k, "q": f"q{r}",
             "prompt": f"q{r}", "status": "ok", "score_x": s} for r, s in enumerate(scores) for k in range(repeats)]
    return pd.DataFrame(rows)


def test_samples_not_repeats_are_the_unit():
    values = np.random.default_rng(5).random(20)
    once, five = cell_stats(_results(values)), cell_stats(_results(values, repeats=5))
    cols = ["n", "mean", "se", "ci_low", "ci_high"]
    assert once.loc[0, "n"] == 20  # twenty samples, not a hundred answers
    pd.testing.assert_frame_equal(once[cols], five[cols])  # identical repeats add no evidence: same interval


# --- through kit.run ---------------------------------------------------------------------------
ROWS = pd.DataFrame({"q": [f"item {i}" for i in range(40)], "expected": "yes",
                     "u": np.random.default_rng(6).random(40), "x": np.random.default_rng(7).normal(size=40)})
# sim-small misses the hard items; sim-large answers every one
SCRIPT = [{"model": "sim-small", "prompt": r"item \d*[02468]$", "answer": "no"}, {"prompt": "item", "answer": "yes"}]


def _exp(models, dataset=ROWS, **kw):
    scorers = {"contains": "contains", "bernoulli": lambda output, row: float(row["u"] < 0.7),
               "graded": lambda output, row: row["x"] + 0.5 * ("yes" in output)}
    return Experiment(name="stats", dataset=dataset, prompts="{q}", models=models, scorers=kw.pop("scorers", scorers),
                      simulated=SCRIPT, **kw)


def test_run_summary_has_intervals_and_the_report_draws_them(kit):
    run = kit.run(_exp(["sim-small"], repeats=2), progress=False)
    s = run.summary.iloc[0]
    k = int((ROWS.u < 0.7).sum())
    assert s.score_bernoulli == pytest.approx(k / 40) and s.score_bernoulli_n == 40  # samples, not 80 answers
    assert (s.score_bernoulli_ci_low, s.score_bernoulli_ci_high) == pytest.approx(clopper_pearson(k, 40))
    assert s.score_contains == 0.5 and s.score_contains_se == pytest.approx(math.sqrt(0.25 / 39))
    graded = ROWS.x + 0.5 * (np.arange(40) % 2 == 1)
    assert s.score_graded == pytest.approx(graded.mean())
    assert (s.score_graded_ci_low, s.score_graded_ci_high) == pytest.approx(bootstrap_ci(graded.to_numpy()))
    assert s.score_graded_ci_low < s.score_graded < s.score_graded_ci_high
    bars = next(f for f in figure_specs(run) if f["layout"]["title"]["text"].startswith("Mean score"))["data"]
    assert [b["name"] for b in bars] == ["score_contains", "score_bernoulli", "score_graded"]
    contains = bars[0]["error_y"]
    assert contains["array"] == pytest.approx([s.score_contains_ci_high - 0.5])
    assert contains["arrayminus"] == pytest.approx([0.5 - s.score_contains_ci_low])
    assert "score_bernoulli_ci_low" in run.report_path.read_text()


def test_compare_finds_a_planted_difference(kit):
    a, b = kit.run(_exp(["sim-small"]), progress=False), kit.run(_exp(["sim-large"]), progress=False)
    c = kit.compare(a, b.run_id)
    t = c.table.set_index("score")
    assert {"n", "diff", "ci_low", "ci_high", "p_value", "significant"} <= set(c.table.columns)
    assert len(t) == 3 and (t.n == 40).all() and (t.model == "sim-small → sim-large").all()
    contains = t.loc["score_contains"]  # 20 pairs 0 -> 1, none 1 -> 0
    assert contains.test == "mcnemar" and contains.p_value == pytest.approx(mcnemar_exact(20, 0))
    assert contains["diff"] == 0.5 and contains.significant and contains.ci_low > 0
    graded = t.loc["score_graded"]
    assert graded.test == "permutation" and graded.p_value < 0.05 and graded.significant
    assert graded["diff"] == pytest.approx(0.25) and graded.ci_low <= 0.25 <= graded.ci_high
    assert t.loc["score_bernoulli"].p_value == 1.0 and not t.loc["score_bernoulli"].significant  # the same in both
    assert c.verdict.startswith("B differs from A in 2 of 3") and "score_contains +0.500" in c.verdict
    assert c.verdict in repr(c) and c.verdict in c._repr_html_()


def test_compare_does_not_flag_two_identical_runs(kit):
    a = kit.run(_exp(["sim-small", "sim-large"]), progress=False)
    b = kit.run(_exp(["sim-small", "sim-large"]), progress=False, cache=False)  # sent again, not from the cache
    assert b.cache_hits == 0
    c = kit.compare(a.run_id, b)
    t = c.table
    assert len(t) == 6 and (t.n == 40).all() and (t["diff"] == 0).all()
    assert (t.p_value >= 0.05).all() and not t.significant.any()
    assert c.verdict.startswith("No significant difference from A to B in 6 cell·score comparisons")


def test_compare_pairs_samples_by_their_row_not_their_position(kit):
    a = kit.run(_exp(["sim-small"]), progress=False)
    shuffled = ROWS.iloc[::-1].head(30)  # other order, fewer rows
    b = kit.run(_exp(["sim-small"], dataset=shuffled), progress=False)
    t = kit.compare(a, b).table
    assert (t.n == 30).all() and (t["diff"] == 0).all() and not t.significant.any()


def test_compare_refuses_runs_it_cannot_pair(kit):
    a = kit.run(_exp(["sim-small", "sim-large"], settings={"temperature": [0.0, 0.7]}), progress=False)
    b = kit.run(_exp(["sim-small", "sim-large"], settings={"temperature": [0.2, 1.0]}), progress=False)
    with pytest.raises(InvalidRequestError, match="no cell in common"):
        kit.compare(a, b)
    other = kit.run(_exp(["sim-small"], dataset=ROWS.assign(q=ROWS.q + "?")), progress=False)
    with pytest.raises(InvalidRequestError, match="no sample in common"):
        kit.compare(kit.run(_exp(["sim-small"]), progress=False), other)
    plain = kit.run(_exp(["sim-small"], scorers=["valid_json"]), progress=False)
    with pytest.raises(InvalidRequestError, match="no score in common"):
        kit.compare(a, plain)
    with pytest.raises(InvalidRequestError, match="alpha"):
        kit.compare(a, a, alpha=1.5)


def test_compare_pairs_the_model_a_run_swapped(kit):
    a = kit.run(_exp(["sim-small", "sim-nano"]), progress=False)
    b = kit.run(_exp(["sim-small", "sim-large"]), progress=False)
    c = kit.compare(a, b)
    assert c.swapped == {"model": ("sim-nano", "sim-large")} and c.only_a == c.only_b == 0
    assert list(dict.fromkeys(c.table.model)) == ["sim-small", "sim-nano → sim-large"] and (c.table.n == 40).all()
    assert len(c.figure.data) == 3 + 3  # a panel per score (with its interval), then cost, spend, latency
