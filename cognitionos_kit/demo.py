"""The offline showcase behind ``make demo``: calls, fallback, streaming, a cost limit, spend."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from .calls.providers.base import Provider

__all__ = ["PROMPTS", "run_demo", "write_report"]

PROMPTS = [
    ("alice", "planner", "Plan a three-step evaluation of a retrieval pipeline for legal documents"),
    ("alice", "executor", "List 3 ways to cut token usage in a chat application"),
    ("alice", "critic", "Is a 2% accuracy gain worth doubling inference cost?"),
    ("bob", "executor", "Write a python function that deduplicates near-identical prompts"),
    ("bob", "summarizer", "Summarize: DuckDB is an in-process analytical database. It runs inside the host process."),
    ("bob", "executor", "Explain prompt caching and when it lowers the bill"),
    ("carol", "planner", "Design an A/B test comparing two system prompts for customer support"),
    ("carol", "executor", "What is the difference between temperature and top_p sampling?"),
]


def run_demo(home: str | os.PathLike[str] | None = None, live: bool = False) -> dict[str, Any]:
    """Run the showcase and print what it shows; returns the summary it prints.

    ``home``: the data folder (default: the one a plain ``Kit()`` uses, shared with the notebooks).
    The demo's calls are its project ``demo``; what it shows is this run's own calls (a session), so
    earlier runs stay in the ledger without changing its numbers. ``live=True`` uses real providers
    when keys are set."""
    from .calls.providers.simulated import SimulatedProvider
    from .core.display import UsageSummary
    from .kit import Kit

    # A flaky stand-in in front of the simulated provider shows fallback offline: a third of its
    # calls fail with a rate limit and move on down the chain, as OpenAI -> Anthropic would.
    flaky = SimulatedProvider(name="flaky-sim", seed=7, failure_rate=0.35, failure_kind="rate_limit")
    providers: list[str | Provider] = ["openai", "anthropic", "simulated"] if live else [flaky, "simulated"]
    kit = Kit(home, providers=providers, dotenv=live, project="demo", views="session", server=False)
    data_home = kit.home
    print(f"cognitionos_kit demo · data folder {data_home} (project demo, session {kit.session_id}) · "
          f"chain {' -> '.join(kit.chain)}")
    print(f"simulation mode: {kit.status()['simulation_mode']} (no keys needed)\n")

    t0 = time.perf_counter()
    for rnd in range(3):
        for user, role, prompt in PROMPTS:
            r = kit.complete(prompt, role=role, user_id=user, max_tokens=120, task_id=f"round-{rnd}")
            if rnd == 0 and user == "alice" and role == "planner":
                print(f"> {prompt}\n{r.content}\n  [{r.footer()}; path: {r.fallback_path}]\n")

    print("> streaming: ", end="", flush=True)
    s = kit.stream("Describe in two sentences what a cost ledger is for", user_id="carol", max_tokens=80)
    for chunk in s:
        print(chunk, end="", flush=True)
    print(f"\n  [{s.completion.footer() if s.completion else 'no completion'}]\n")

    capped = kit.complete(
        "Draft a detailed research plan on evaluation leakage " * 20, role="planner", max_cost=0.002, max_tokens=400,
        user_id="alice",
    )
    print(f"max_cost=$0.002 with role=planner picked {capped.model} (worst case fits; cost ${capped.cost_usd:.6f})\n")

    vectors = kit.embed(["cost ledger", "token accounting", "a cat on a mat"])
    print(f"local embeddings: {vectors.shape[0]} x {vectors.shape[1]} float32, "
          f"sim(ledger, accounting) = {float(vectors[0] @ vectors[1]):.2f} "
          f"vs sim(ledger, cat) = {float(vectors[0] @ vectors[2]):.2f}\n")

    facts = [
        "DuckDB runs inside the host process and opens one database file at a time.",
        "Prompt caching bills repeated input tokens at a lower price.",
        "A fallback chain moves to the next provider on rate limits and server errors.",
        "Half-life decay lowers the weight of memories nobody has used in a while.",
    ]
    kit.memory.store_many("alice", facts, metadata={"source": "demo"})
    hit = kit.memory.retrieve("alice", "which database lives inside my program?", k=1)[0]
    print(f"memory: best match {hit.content!r}\n  score {hit.score:.3f} = similarity {hit.similarity:.3f} "
          f"+ decay {hit.decay:.2f} and boost {hit.boost:.2f} (weighted)\n")

    df = kit.usage()
    usage = UsageSummary(df)
    ok = df[df["status"] == "ok"]
    summary: dict[str, Any] = {
        "calls": usage.calls,
        "attempts": usage.attempts,
        "failed_attempts": usage.failures,
        "providers": ok["provider"].value_counts().to_dict(),
        "spend_usd": usage.spend_usd,
        "p50_ms": usage.p50_ms,
        "p95_ms": usage.p95_ms,
        "wall_s": time.perf_counter() - t0,
    }
    print("summary")
    print(f"  calls made        {usage.calls} ({usage.attempts} attempts, {usage.failures} fell back)")
    print("  providers used    " + ", ".join(f"{k}: {v}" for k, v in summary["providers"].items()))
    print(f"  spend             ${usage.spend_usd:.5f} (simulated models carry nominal prices)")
    print(f"  latency p50 / p95 {usage.p50_ms or 0:.0f} ms / {usage.p95_ms or 0:.0f} ms")
    print("\nspend by user:")
    print(kit.spend(by="user_id")[["user_id", "calls", "cost_usd", "total_tokens"]].to_string(index=False))

    report = write_report(df, data_home / "demo" / "report.html")
    summary["report"] = str(report)
    print(f"\nreport: {report}")

    # A small offline experiment, run twice: the rerun is all cache hits. It runs in the data folder
    # itself, so its report lands in <data>/runs/<run_id>/report.html where kit.runs() finds it; the
    # response cache there persists, so a later demo serves the first run from it too (and says so).
    from .experiments import Experiment

    capitals = (("France", "Paris"), ("Japan", "Tokyo"), ("Peru", "Lima"))
    # canned offline answers, so the scores show signal: sim-nano gets Japan wrong
    canned = [{"model": "sim-nano", "prompt": "Japan", "answer": "I believe it is Kyoto."}]
    canned += [{"prompt": c, "answer": f"The capital of {c} is {e}."} for c, e in capitals]
    exp = Experiment("demo-capitals", [{"country": c, "expected": e} for c, e in capitals],
                     "What is the capital of {country}?", ["sim-small", "sim-nano"],
                     settings={"temperature": [0.0, 0.7]}, scorers=["contains", {"regex": "capital"}], simulated=canned)
    sim_kit = Kit(data_home, providers=["simulated"], dotenv=False, project="demo", server=False)
    first = sim_kit.run(exp, budget_usd=0.05, progress=False)
    again = sim_kit.run(exp, budget_usd=0.05, progress=False)
    sent = first.manifest["totals"]["calls_sent"]
    earlier = f" ({first.cache_hits} from an earlier demo's cache)" if first.cache_hits else ""
    print(f"\nexperiment {exp.name}: {len(first.results)} cells, {sent} sent for ${first.cost_usd:.6f}{earlier}; "
          f"rerun {again.cache_hits} cache hits, ${again.cost_usd:.6f} new spend")
    by_model = first.results.groupby("model", sort=False)["score_contains"].mean()
    print("  contains the expected capital: " + " · ".join(f"{m} {v:.0%}" for m, v in by_model.items()))
    summary["experiment_run"] = first.run_id
    summary["experiment_report"] = str(first.report_path)
    print(f"experiment report: {first.report_path}")
    sim_kit.close()
    kit.close()
    return summary


def write_report(df: pd.DataFrame, path: Path) -> Path:
    """The demo's ledger charts as one self-contained HTML page (plotly.js embedded: opens offline),
    drawn by the same chart builders as ``kit.charts``."""
    from . import charts

    figs = [charts.latency_distribution(df), charts.latency_over_time(df), charts.cumulative_spend(df),
            charts.spend_by(df, "user_id"), charts.spend_by(df, "model"), charts.tokens_vs_latency(df)]
    parts = [figs[0].to_html(full_html=False, include_plotlyjs=True)]
    parts += [f.to_html(full_html=False, include_plotlyjs=False) for f in figs[1:]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>cognitionos_kit demo report</title></head>"
        "<body style='font-family:sans-serif;max-width:1000px;margin:auto'><h1>cognitionos_kit demo report</h1>"
        f"<p>{len(df)} ledger rows.</p>" + "".join(parts) + "</body></html>",
        encoding="utf-8",
    )
    return path
