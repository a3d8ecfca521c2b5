"""Intervals and paired tests for experiment scores (numpy + pandas only).

What is resampled, and why: the independent unit is the *sample* (a dataset row), not the answer.
The repeats of one row share its prompt and difficulty, so they are averaged into one value per
sample first; intervals and tests then treat the samples of a cell as the draws, and ``n`` counts
samples. Resampling answers instead would count repeats as fresh evidence and make intervals
too narrow.

- Per cell and score: mean, standard error (sample sd / sqrt(n)) and a 95% interval: exact
  (Clopper-Pearson) when every per-sample value is 0 or 1, else a seeded percentile bootstrap
  over the samples (narrow when n is small: read intervals of fewer than ~20 samples loosely).
- Two runs: the same sample in the same cell is paired. Binary scores: McNemar's exact test and
  the exact interval of B - A given the discordant pairs (it excludes 0 exactly when the test
  rejects). Other scores: a paired bootstrap interval of B - A and an exact / seeded sign-flip
  permutation test. Each (cell, score) is its own test; nothing corrects for testing many, so
  expect about one false "significant" in twenty at alpha=0.05.

scipy is not a dependency, so the binomial tail behind Clopper-Pearson and McNemar is computed
here from log-factorials (exact for any n), and its inverse by bisection.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.errors import InvalidRequestError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["GROUP", "SEED", "RESAMPLES", "binom_cdf", "clopper_pearson", "mcnemar_exact", "bootstrap_ci",
           "sign_flip_p", "mean_interval", "paired_test", "score_columns", "per_sample", "cell_stats",
           "compare_results"]

GROUP = ["template", "model", "settings"]
SEED = 0  # bootstrap and permutation draws: the same inputs give the same intervals, run after run
RESAMPLES = 2000
_EXACT_FLIPS = 14  # up to 2**14 sign patterns are enumerated: an exact permutation p-value


# --- the binomial tail ----------------------------------------------------------------------------
def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    i = np.arange(k + 1)
    logfact = np.concatenate(([0.0], np.cumsum(np.log(np.arange(1, n + 1)))))
    logpmf = logfact[n] - logfact[i] - logfact[n - i] + i * math.log(p) + (n - i) * math.log1p(-p)
    return float(min(1.0, np.exp(logpmf).sum()))


def _bisect(f: Any, target: float) -> float:
    """The p in [0, 1] where the decreasing function ``f`` crosses ``target``."""
    lo, hi = 0.0, 1.0
    for _ in range(60):  # 2**-60: far below any interval width worth printing
        mid = (lo + hi) / 2
        if f(mid) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval for a proportion: k successes in n trials."""
    if n <= 0:
        return math.nan, math.nan
    tail = (1 - conf) / 2
    low = 0.0 if k == 0 else _bisect(lambda p: binom_cdf(k - 1, n, p), 1 - tail)  # P(X >= k) = tail
    high = 1.0 if k == n else _bisect(lambda p: binom_cdf(k, n, p), tail)  # P(X <= k) = tail
    return low, high


def mcnemar_exact(b: int, c: int) -> float:
    """McNemar's exact test: two-sided p-value for b pairs 0 -> 1 and c pairs 1 -> 0 (discordant)."""
    m = b + c
    return 1.0 if m == 0 else min(1.0, 2 * binom_cdf(min(b, c), m, 0.5))


# --- resampling ----------------------------------------------------------------------------------
def _boot_means(values: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = len(values)
    step = max(1, 2_000_000 // n)  # resample in chunks: at most ~2M indices in memory at once
    return np.concatenate([values[rng.integers(0, n, size=(min(step, n_resamples - i), n))].mean(axis=1)
                           for i in range(0, n_resamples, step)])


def bootstrap_ci(values: Sequence[float] | np.ndarray, conf: float = 0.95, *, n_resamples: int = RESAMPLES,
                 seed: int = SEED) -> tuple[float, float]:
    """Seeded percentile-bootstrap interval of the mean (NaN below two values)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return math.nan, math.nan
    means = _boot_means(v, n_resamples, seed)
    tail = (1 - conf) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def sign_flip_p(diffs: Sequence[float] | np.ndarray, *, n_resamples: int = RESAMPLES, seed: int = SEED) -> float:
    """Two-sided paired permutation p-value for mean(diffs) = 0: under the null, A and B are
    exchangeable within a pair, so each difference's sign is a coin flip. Exact (every sign
    pattern) up to 14 non-zero differences, else seeded Monte Carlo."""
    d = np.asarray(diffs, dtype=float)
    d = d[d != 0]  # a zero difference is the same under either sign
    m = len(d)
    if m == 0:
        return 1.0
    observed = abs(d.sum()) * (1 - 1e-12)  # float sums of the same terms may differ in the last bit
    if m <= _EXACT_FLIPS:
        signs = 1 - 2 * ((np.arange(2**m)[:, None] >> np.arange(m)) & 1)
        return float(np.mean(np.abs(signs @ d) >= observed))
    rng = np.random.default_rng(seed)
    step = max(1, 2_000_000 // m)  # in chunks, as the bootstrap
    hits = sum(int((np.abs(rng.choice([-1.0, 1.0], size=(min(step, n_resamples - i), m)) @ d) >= observed).sum())
               for i in range(0, n_resamples, step))
    return (1 + hits) / (1 + n_resamples)


def _binary(*arrays: np.ndarray) -> bool:
    return all(len(a) and np.isin(a, (0.0, 1.0)).all() for a in arrays)


def mean_interval(values: Sequence[float] | np.ndarray, conf: float = 0.95, *, n_resamples: int = RESAMPLES,
                  seed: int = SEED) -> dict[str, Any]:
    """n, mean, se and the interval of one cell's per-sample values; ``method`` says which interval."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    n = len(v)
    if n == 0:
        return {"n": 0, "mean": math.nan, "se": math.nan, "ci_low": math.nan, "ci_high": math.nan, "method": None}
    se = float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    if _binary(v):
        low, high = clopper_pearson(int(v.sum()), n, conf)
        method = "exact"
    else:
        low, high = bootstrap_ci(v, conf, n_resamples=n_resamples, seed=seed)
        method = "bootstrap"
    return {"n": n, "mean": float(v.mean()), "se": se, "ci_low": low, "ci_high": high, "method": method}


def paired_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, alpha: float = 0.05, *,
                n_resamples: int = RESAMPLES, seed: int = SEED) -> dict[str, Any]:
    """B - A over paired values: mean difference, its (1 - alpha) interval and a p-value: McNemar
    exact (and the matching exact interval) when both are 0/1, else paired bootstrap and sign-flip
    permutation."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = len(x)
    if n == 0:
        return {"n": 0, "mean_a": math.nan, "mean_b": math.nan, "diff": math.nan, "ci_low": math.nan,
                "ci_high": math.nan, "p_value": math.nan, "significant": False, "test": None}
    d = y - x
    if _binary(x, y):
        up, down = int(((x == 0) & (y == 1)).sum()), int(((x == 1) & (y == 0)).sum())
        p, test = mcnemar_exact(up, down), "mcnemar"
        # diff = (m / n) * (2 * theta - 1), theta = up / m over the m discordant pairs: its exact interval,
        # which excludes 0 exactly when McNemar's exact test rejects (a bootstrap of 4 equal pairs says [1, 1])
        m = up + down
        low, high = (0.0, 0.0) if m == 0 else (m / n * (2 * t - 1) for t in clopper_pearson(up, m, 1 - alpha))
    else:
        low, high = bootstrap_ci(d, 1 - alpha, n_resamples=n_resamples, seed=seed)
        p, test = sign_flip_p(d, n_resamples=n_resamples, seed=seed), "permutation"
    return {"n": n, "mean_a": float(x.mean()), "mean_b": float(y.mean()), "diff": float(d.mean()), "ci_low": low,
            "ci_high": high, "p_value": p, "significant": bool(p < alpha), "test": test}


# --- tables ------------------------------------------------------------------------------------
def score_columns(results: pd.DataFrame) -> list[str]:
    """The ``score_<name>`` columns of a results table."""
    return [c for c in results.columns if str(c).startswith("score_")]


def _sample_ids(results: pd.DataFrame) -> pd.Series:
    """Which dataset row each answer is for, by the row's content (its fields), so two runs pair
    the same question even when their datasets differ in order; repeated identical rows are
    told apart by occurrence."""
    names = list(results.columns)
    fields = names[names.index("repeat") + 1:names.index("prompt")] if {"repeat", "prompt"} <= set(names) else []
    if not fields:
        return results["row"].astype(str)
    rows = results.drop_duplicates("row").sort_values("row")
    seen: dict[str, int] = {}
    ids = {}
    for row, *values in rows[["row", *fields]].itertuples(index=False, name=None):
        content = json.dumps(values, default=str)
        seen[content] = seen.get(content, -1) + 1
        ids[row] = f"{content}#{seen[content]}"
    return results["row"].map(ids)


def per_sample(results: pd.DataFrame, scores: list[str]) -> pd.DataFrame:
    """One row per cell (template, model, settings) and sample: each score averaged over the
    sample's scored answers (its repeats)."""
    ok = results[results.status == "ok"]
    frame = ok[GROUP + scores].assign(sample=_sample_ids(ok).to_numpy())
    return frame.groupby([*GROUP, "sample"], sort=False, dropna=False)[scores].mean().reset_index()


def cell_stats(results: pd.DataFrame, conf: float = 0.95, *, n_resamples: int = RESAMPLES,
               seed: int = SEED) -> pd.DataFrame:
    """One row per cell (template, model, settings) and score: n (samples), mean, se, ci_low,
    ci_high and ``method`` ("exact" or "bootstrap")."""
    import pandas as pd

    scores = score_columns(results)
    cols = [*GROUP, "score", "n", "mean", "se", "ci_low", "ci_high", "method"]
    if not scores or results.empty:
        return pd.DataFrame(columns=cols)
    cells = dict(iter(per_sample(results, scores).groupby(GROUP, sort=False, dropna=False)))
    rows = []
    for key in results[GROUP].drop_duplicates().itertuples(index=False, name=None):
        cell = cells.get(key)  # None: no answer of this cell was scored
        for s in scores:
            values = np.array([]) if cell is None else cell[s].to_numpy()
            rows.append({**dict(zip(GROUP, key)), "score": s,
                         **mean_interval(values, conf, n_resamples=n_resamples, seed=seed)})
    return pd.DataFrame(rows, columns=cols)


def _swaps(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, tuple[Any, Any]]:
    """Per grid dimension, the one value only A has and the one only B has, when there is exactly
    one of each: B swapped it for A's (``sim-nano`` for ``sim-large``), so those cells pair."""
    out = {}
    for d in GROUP:
        va, vb = set(a[d].dropna()), set(b[d].dropna())
        if len(va - vb) == 1 and len(vb - va) == 1:
            out[d] = (next(iter(va - vb)), next(iter(vb - va)))
    return out


def compare_results(a: pd.DataFrame, b: pd.DataFrame, alpha: float = 0.05, *, n_resamples: int = RESAMPLES,
                    seed: int = SEED) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Pair two runs' answers on cell and sample; one row per compared cell and score.

    Cells match on template, model and settings. Where B has swapped one value of a dimension for
    another (A ran sim-small and sim-nano, B sim-small and sim-large; or A all sim-nano, B all
    sim-large), the swapped cells pair too, shown as ``"sim-nano → sim-large"``. Returns the table
    and what was left out (cells in one run only)."""
    import pandas as pd

    if not (0 < alpha < 1):
        raise InvalidRequestError(f"alpha must be between 0 and 1, got {alpha!r}")
    scores = [s for s in score_columns(a) if s in set(score_columns(b))]
    if not scores:
        raise InvalidRequestError(f"the runs have no score in common to compare (A: {score_columns(a) or 'none'}, "
                                  f"B: {score_columns(b) or 'none'})")
    swaps = _swaps(a, b)
    a = a.assign(**{d: a[d].replace({old: new}) for d, (old, new) in swaps.items()})
    cells_a = set(a[GROUP].drop_duplicates().itertuples(index=False, name=None))
    cells_b = set(b[GROUP].drop_duplicates().itertuples(index=False, name=None))
    if not cells_a & cells_b:
        raise InvalidRequestError(
            f"the runs have no cell in common (template, model, settings): A has {sorted(cells_a)[:3]}, "
            f"B has {sorted(cells_b)[:3]}; compare runs of the same grid, or where B swaps one value for another")
    pairs = per_sample(a, scores).merge(per_sample(b, scores), on=[*GROUP, "sample"], suffixes=("_a", "_b"))
    if pairs.empty:
        raise InvalidRequestError("the runs have no sample in common: they were run on different datasets "
                                  "(samples are paired by their dataset row's fields)")
    rows = []
    for cell, g in pairs.groupby(GROUP, sort=False, dropna=False):
        names = {d: f"{swaps[d][0]} → {v}" if d in swaps and v == swaps[d][1] else v for d, v in zip(GROUP, cell)}
        for s in scores:
            rows.append({**names, "score": s, **paired_test(g[f"{s}_a"].to_numpy(), g[f"{s}_b"].to_numpy(), alpha,
                                                           n_resamples=n_resamples, seed=seed)})
    cols = [*GROUP, "score", "n", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "p_value", "significant", "test"]
    info = {"swapped": swaps, "only_a": len(cells_a - cells_b), "only_b": len(cells_b - cells_a), "alpha": alpha}
    return pd.DataFrame(rows, columns=cols), info
