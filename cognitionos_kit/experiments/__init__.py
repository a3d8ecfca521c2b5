"""Reproducible experiment runs: a grid of calls, a response cache, budgets, manifests, reports.

>>> exp = Experiment("capitals", df, "Capital of {country}?", ["sim-small"], scorers=["contains"])
>>> run = kit.run(exp, concurrency=8, budget_usd=0.10)
>>> run.results, run.summary, run.manifest, run.report_path
"""

from __future__ import annotations

from ..storage.cache import ResponseCache
from .batch_executor import Batch
from .experiment import Experiment
from .run import Run
from .runner import RUN_ONLY_COLUMNS, run_experiment
from .runs import Comparison, compare_runs, list_runs, load_run

__all__ = ["Experiment", "Run", "Batch", "run_experiment", "list_runs", "load_run", "compare_runs", "Comparison",
           "ResponseCache", "RUN_ONLY_COLUMNS"]
