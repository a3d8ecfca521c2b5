"""The run folder ``<home>/runs/<run_id>/``: results.parquet, manifest.json, report.html; listing,
loading and comparing runs."""

from __future__ import annotations

import functools
import json
import math
import platform
import subprocess
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..calls.pricing import genai_prices_version
from ..core.errors import InvalidRequestError
from ..storage.faults import storage_error
from ..storage.files import private_dir, private_file
from .report import comparison_figure, write_report
from .run import Run
from .stats import GROUP, cell_stats, compare_results, score_columns

if TYPE_CHECKING:
    import pandas as pd

    from ..kit import Kit
    from .experiment import Experiment

__all__ = ["finish_run", "load_run", "list_runs", "compare_runs", "Comparison", "GROUP"]

_PACKAGES = ("cognitionos_kit", "openai", "anthropic", "duckdb", "pandas", "pyarrow", "plotly", "tiktoken",
             "genai-prices", "tqdm", "pyyaml", "ray")


def _git(cwd: Path) -> dict[str, Any]:
    """Commit and dirty flag of the git repository around ``cwd`` (None when not in one)."""
    def run(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = run("rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit, "git_dirty": bool(run("status", "--porcelain", "--untracked-files=no"))}


def git_probe(cwd: Path) -> Callable[[], dict[str, Any]]:
    """``_git`` started now in a thread, its answer taken when the manifest is written: its two git
    processes (5-10 ms, more on a busy machine) run while the calls are in flight."""
    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: out.update(_git(cwd)), name="kit-git-probe", daemon=True)
    thread.start()

    def result() -> dict[str, Any]:
        thread.join()
        return out or {"git_commit": None, "git_dirty": None}

    return result


@functools.lru_cache(maxsize=1)  # installed packages do not change under a running process
def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _results(exp: Experiment, plans: list, outcomes: list[dict], failed_ids: dict[str, str]) -> pd.DataFrame:
    """The run's table, one row per cell, built column by column (row by row it took 10 ms a
    thousand cells, at the end of every run)."""
    import pandas as pd

    records = exp.data.to_dict("records")
    reserved = {"cell", "row", "template", "model", "settings", "repeat", "prompt", "output", "status", "error",
                "provider", "served_model", "requested_model", "substituted", "prompt_tokens", "completion_tokens",
                "cost_usd", "latency_ms", "finish_reason", "cache_hit", "spent_usd", "request_id"}
    cells = [p.cell for p in plans]
    entries = [out.get("entry") or {} for out in outcomes]
    cols: dict[str, list[Any]] = {name: [getattr(c, attr) for c in cells] for name, attr in (
        ("cell", "index"), ("row", "row"), ("template", "template"), ("model", "model"), ("settings", "settings"),
        ("repeat", "repeat"))}
    for k in exp.data.columns:
        name = str(k)
        name = f"data_{name}" if name in reserved or name.startswith(("score_", "rationale_")) else name
        cols[name] = [records[c.row][k] for c in cells]
    cols["prompt"] = [c.prompt for c in cells]
    cols["output"] = [e.get("content") for e in entries]
    cols["status"] = [out["status"] for out in outcomes]
    cols["error"] = [_error(out) for out in outcomes]
    cols["provider"] = [e.get("provider") for e in entries]
    cols["served_model"] = [e.get("model") for e in entries]
    cols["requested_model"] = [e.get("requested_model") or (e.get("model") if e else None) for e in entries]
    cols["substituted"] = [bool(e.get("substituted")) if e else None for e in entries]
    for name in ("prompt_tokens", "completion_tokens", "cost_usd", "latency_ms", "finish_reason"):
        cols[name] = [e.get(name) for e in entries]
    for s in exp.scorer_list:
        if s.judge:
            cols[f"score_{s.name}"] = [out["judged"].get(s.name, math.nan) for out in outcomes]
        else:
            cols[f"score_{s.name}"] = [s.score(e["content"], records[c.row]) if e else math.nan
                                       for c, e in zip(cells, entries)]
        if s.rationale:  # the judge's reasoning, next to its score
            cols[f"rationale_{s.name}"] = [(out.get("rationales") or {}).get(s.name) for out in outcomes]
    cols["cache_hit"] = [bool(out.get("cache_hit")) for out in outcomes]
    cols["spent_usd"] = [float(out.get("spent", 0.0)) for out in outcomes]
    # the call (or cache hit) whose ledger rows are this sample's attempts (experiments.attempts)
    cols["request_id"] = [e.get("request_id") if e else failed_ids.get(p.key) for p, e in zip(plans, entries)]
    df = pd.DataFrame(cols)
    for col in ("prompt_tokens", "completion_tokens"):
        df[col] = df[col].astype("Int64")
    for col in ("cost_usd", "latency_ms"):
        df[col] = df[col].astype("float64")
    return df


def _error(out: dict[str, Any]) -> Any:
    """The cell's error; when the answer is there (status ok) but a judge score is missing, why."""
    notes = out.get("judge_notes") or {}
    if not notes:
        return out.get("error")
    return "; ".join(
        f"score_{name} missing: " + ("budget exhausted before the judge call (run again with a larger "
                                     "budget to fill it)" if why == "budget" else why)
        for name, why in notes.items())


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """One row per template x model x settings: cells, ok, scores, cost, latency, cache hits.

    Each ``score_<name>`` is the mean over the cell's samples (repeats averaged first), followed by
    ``score_<name>_n`` (samples), ``_se`` and its 95% interval ``_ci_low`` / ``_ci_high`` (see
    ``experiments.stats``)."""
    import pandas as pd

    scores = score_columns(results)
    stats = cell_stats(results).set_index([*GROUP, "score"])
    rows = []
    for key, g in results.groupby(GROUP, sort=False, dropna=False):
        ok = g[g.status == "ok"]
        r = dict(zip(GROUP, key))
        served = [f"{p}/{m}" for p, m in ok[["provider", "served_model"]].drop_duplicates().itertuples(index=False)]
        r.update({"cells": len(g), "ok": len(ok), "errors": int((g.status == "error").sum()),
                  "skipped": int((g.status == "skipped").sum()),
                  # who really answered: a cell served by a substitute is counted, never hidden
                  "served_by": ", ".join(served), "substituted": int(ok.substituted.eq(True).sum())})
        for c in scores:
            st = stats.loc[tuple(key) + (c,)]
            r.update({c: st["mean"], f"{c}_n": int(st["n"]), f"{c}_se": st["se"], f"{c}_ci_low": st["ci_low"],
                      f"{c}_ci_high": st["ci_high"]})
        unpriced = int(ok.cost_usd.isna().sum())
        r.update({"cost_usd": float("nan") if unpriced else ok.cost_usd.sum(min_count=1), "unpriced_calls": unpriced,
                  "spent_usd": g.spent_usd.sum(),
                  "latency_ms_p50": ok.latency_ms.median(), "completion_tokens_mean": ok.completion_tokens.astype(float).mean(),
                  "cache_hits": int(g.cache_hit.sum())})
        rows.append(r)
    return pd.DataFrame(rows)


def finish_run(kit: Kit, exp: Experiment, engine: Any, plans: list, outcomes: list[dict], *, run_id: str,
               started: datetime, wall_s: float, options: dict[str, Any],
               git: Callable[[], dict[str, Any]] | None = None) -> Run:
    """Build the table, summary and manifest; write the run folder; return the ``Run``. ``git``: the
    code version (``git_probe``), else found now."""

    results = _results(exp, plans, outcomes, getattr(engine, "failed_ids", {}))
    summary = summarize(results)
    n, ok = len(results), results[results.status == "ok"]
    skipped = int((results.status == "skipped").sum())
    judge_skipped = sum(1 for o in outcomes for why in (o.get("judge_notes") or {}).values() if why == "budget")
    judge_errors = sum(1 for o in outcomes for why in (o.get("judge_notes") or {}).values() if why != "budget")
    stopped = None
    if skipped or judge_skipped:
        b = engine.budget
        parts = [f"{skipped} of {n} cells not sent"] if skipped else []
        if judge_skipped:
            parts.append(f"{judge_skipped} judge call(s) not sent (those scores are missing)")
        stopped = (f"budget exhausted: ${b.spent:.6f} of ${b.limit:g} spent and the next call's worst case "
                   f"(${b.refused or 0:.6f}) would not fit; {' and '.join(parts)}. "
                   "Run again (with a larger budget) to resume: completed cells and judge scores come from the cache.")
    totals = {
        "cells": n, "completed": len(ok), "errors": int((results.status == "error").sum()), "skipped": skipped,
        "judge_skipped": judge_skipped, "judge_errors": judge_errors,
        "cache_hits": int(results.cache_hit.sum()), "calls_sent": engine.calls,
        "spent_usd": float(engine.budget.spent),
        # an answer without a known price makes the total unknown: None, never a sum that leaves it out
        "answers_cost_usd": None if ok.cost_usd.isna().any() else float(ok.cost_usd.sum()),
        "unpriced_calls": int(((results.status == "ok") & ~results.cache_hit.astype(bool) & results.cost_usd.isna()).sum()),
        "saved_usd": float(engine.saved), "prompt_tokens": int(ok.prompt_tokens.sum()),
        "completion_tokens": int(ok.completion_tokens.sum()),
    }
    manifest: dict[str, Any] = {
        "run_id": run_id, "experiment": exp.name, "experiment_hash": exp.hash, "dataset_hash": exp.dataset_hash,
        "spec": exp.spec(),
        "code_version": {**(git() if git is not None else _git(Path.cwd())), "package_version": _versions()["cognitionos_kit"]},
        "package_versions": _versions(), "price_table_version": genai_prices_version(),
        "seeds": {"kit_seed": getattr(kit.simulated, "seed", None), "repeat_indices": list(range(exp.repeats))},
        "started_at": started.isoformat(), "ended_at": datetime.now(timezone.utc).isoformat(),
        "wall_s": wall_s, **options, "chain": list(kit.chain), "totals": totals,
        "cache_hit_ratio": totals["cache_hits"] / n if n else 0.0, "stopped_reason": stopped,
        "files": {"results": "results.parquet", "manifest": "manifest.json", "report": "report.html"},
    }
    path = Path(kit.home) / "runs" / run_id
    try:  # a run's folder and files are the user's only (0700/0600)
        private_dir(path)
        results.to_parquet(path / "results.parquet", index=False)
        private_file(path / "results.parquet")
        (path / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
        private_file(path / "manifest.json")
    except OSError as exc:
        raise storage_error(f"cannot write the run folder of {run_id} (its answers are in the cache and ledger)",
                            exc, path, writing=True) from None
    run = Run(run_id, results, summary, manifest, path, ledger=kit.ledger)
    if hasattr(engine, "attempts") and engine.attempts.complete:
        run._known = engine.attempts  # what the ledger holds for this run, known without reading it back
    write_report(run)
    return run


def _runs_dir(kit: Kit) -> Path:
    return Path(kit.home) / "runs"


def load_run(kit: Kit, run: Any) -> Run:
    """A past run by id (or a ``Run``, returned as is)."""
    import pandas as pd

    if isinstance(run, Run):
        return run
    path = _runs_dir(kit) / str(run)
    if not isinstance(run, str) or not (path / "manifest.json").exists():
        raise InvalidRequestError(f"no run {run!r} under {_runs_dir(kit)}; kit.runs() lists them")
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    results = pd.read_parquet(path / "results.parquet")
    return Run(manifest["run_id"], results, summarize(results), manifest, path, ledger=kit.ledger)


def list_runs(kit: Kit) -> pd.DataFrame:
    """Every run under the data folder, newest first."""
    import pandas as pd

    rows = []
    for mf in _runs_dir(kit).glob("*/manifest.json"):
        m = json.loads(mf.read_text(encoding="utf-8"))
        t = m["totals"]
        rows.append({"run_id": m["run_id"], "experiment": m["experiment"], "started_at": m["started_at"],
                     "cells": t["cells"], "completed": t["completed"], "cache_hits": t["cache_hits"],
                     "cache_hit_ratio": m["cache_hit_ratio"], "spent_usd": t["spent_usd"],
                     "executor": m.get("executor"), "stopped_reason": m.get("stopped_reason"),
                     "experiment_hash": m["experiment_hash"][:12], "report": str(mf.parent / "report.html")})
    cols = ["run_id", "experiment", "started_at", "cells", "completed", "cache_hits", "cache_hit_ratio", "spent_usd",
            "executor", "stopped_reason", "experiment_hash", "report"]
    df = pd.DataFrame(rows, columns=cols)
    return df.sort_values("started_at", ascending=False, ignore_index=True)


class Comparison:
    """Run A against run B, the same samples paired.

    ``.table``: one row per compared cell (template, model, settings) and score: ``n`` pairs,
    ``mean_a``, ``mean_b``, ``diff`` (B - A), its interval ``ci_low`` / ``ci_high``, ``p_value``,
    ``significant`` (p < ``alpha``) and ``test`` ("mcnemar" for 0/1 scores, else "permutation").
    ``.verdict``: that in one line. ``.deltas``: per cell, mean scores, cost, spend and p50 latency
    in A and B and B - A (cells in one run only included). ``.figure``: the differences, charted."""

    def __init__(self, a: Run, b: Run, table: pd.DataFrame, deltas: pd.DataFrame, info: dict[str, Any]) -> None:
        self.a, self.b, self.table, self.deltas = a, b, table, deltas
        self.alpha: float = info["alpha"]
        self.swapped: dict[str, tuple[Any, Any]] = info["swapped"]  # dimension -> (A's value, B's in its place)
        self.only_a: int = info["only_a"]
        self.only_b: int = info["only_b"]

    @property
    def verdict(self) -> str:
        """One line: how many (cell, score) differences are significant, and the largest of them."""
        t = self.table
        tested = t[t.n > 0]
        what = f"{len(tested)} cell·score comparison{'s' if len(tested) != 1 else ''}"
        n = f"{int(tested.n.min())}-{int(tested.n.max())}" if len(tested) and tested.n.min() != tested.n.max() \
            else str(int(tested.n.max()) if len(tested) else 0)
        left = f"; {self.only_a + self.only_b} cell(s) in one run only, not compared" if self.only_a + self.only_b else ""
        sig = tested[tested.significant]
        if sig.empty:
            return f"No significant difference from A to B in {what} (alpha={self.alpha:g}, {n} paired samples each){left}."
        top = sig.loc[sig["diff"].abs().idxmax()]
        cell = " · ".join(str(top[c]) for c in ("model", "template", "settings"))
        return (f"B differs from A in {len(sig)} of {what} (alpha={self.alpha:g}); largest: {top.score} "
                f"{top['diff']:+.3f} [{top.ci_low:+.3f}, {top.ci_high:+.3f}], p={top.p_value:.3g}, n={int(top.n)}, "
                f"{cell}{left}.")

    @property
    def figure(self) -> Any:

        return comparison_figure(self)

    def _repr_html_(self) -> str:
        import html

        return (f"<p><b>{html.escape(self.verdict)}</b></p>" + self.table.to_html(index=False)
                + self.figure.to_html(full_html=False, include_plotlyjs=False))

    def __repr__(self) -> str:
        return (f"Comparison({self.a.run_id!r} -> {self.b.run_id!r}): {self.verdict}\n"
                f"{self.table.to_string(index=False)}")


def _deltas(a: Run, b: Run) -> pd.DataFrame:
    metrics = [*dict.fromkeys([*score_columns(a.results), *score_columns(b.results)]),
               *(c for c in ("cost_usd", "spent_usd", "latency_ms_p50", "ok") if c in a.summary or c in b.summary)]
    sa = a.summary.reindex(columns=GROUP + metrics)
    sb = b.summary.reindex(columns=GROUP + metrics)
    t = sa.merge(sb, on=GROUP, how="outer", suffixes=("_a", "_b"))
    for m in metrics:
        t[f"{m}_delta"] = t[f"{m}_b"] - t[f"{m}_a"]
    return t[GROUP + [f"{m}_{s}" for m in metrics for s in ("a", "b", "delta")]]


def compare_runs(kit: Kit, run_a: Any, run_b: Any, *, alpha: float = 0.05) -> Comparison:
    """Pair the two runs' samples per cell and score and test B - A (see ``Comparison`` and
    ``experiments.stats``); raises ``InvalidRequestError`` when they share no cell or sample."""
    a, b = load_run(kit, run_a), load_run(kit, run_b)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise InvalidRequestError(f"alpha must be a number between 0 and 1, got {alpha!r}")
    table, info = compare_results(a.results, b.results, float(alpha))
    return Comparison(a, b, table, _deltas(a, b), info)
