"""``executor="batch"``: an experiment's uncached cells through the providers' batch APIs (OpenAI's
Batch API, Anthropic's Message Batches) at half price.

The cells the cache cannot answer are grouped by provider and sent as one batch per provider.
The batch ids go to ``<home>/runs/<run_id>/batches.json`` as soon as each batch is created, so a
run outlives its kernel: ``kit.run(exp, executor="batch", resume=run_id)`` (same experiment) picks
the batches up again and never sends them twice. Waiting polls every ``poll_interval`` seconds
with a progress bar; ``Batch(max_wait_s=...)`` stops waiting after that long and raises
``BatchPendingError`` (its ``run_id`` says what to resume); the batch keeps running.

Answers land where a local run puts them: the results table, the response cache (a rerun sends
nothing) and the ledger, one row per request at the batch price (``PriceBook.batch_cost``), with
its ``batch_id``. A request the batch failed is an error cell. There is no fallback inside a
batch, and the simulated provider has no batch API: a run whose cells would go to it (offline,
simulation mode) is refused before anything is sent.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..calls.batches import BatchAPI, BatchStatus, batch_api
from ..core.errors import BatchPendingError, InvalidRequestError, KitError
from ..core.types import Attempt, ProviderResponse
from ..storage.faults import storage_error
from ..storage.files import private_dir, private_file
from .entry import entry as entry_of

if TYPE_CHECKING:
    from ..kit import Kit

__all__ = ["Batch", "as_batch", "run_batch", "STATE_FILE"]

STATE_FILE = "batches.json"


@dataclass(frozen=True)
class Batch:
    """Options of ``executor="batch"``: ``kit.run(exp, executor=Batch(poll_interval=60))``.

    ``poll_interval``: seconds between status checks. ``max_wait_s``: stop waiting after this many
    seconds (None: until the batches end) with ``BatchPendingError``; resume by run id later."""

    poll_interval: float = 30.0
    max_wait_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("poll_interval", "max_wait_s"):
            v = getattr(self, name)
            if v is None and name == "max_wait_s":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or math.isinf(v):
                raise InvalidRequestError(f"Batch({name}=...) must be a non-negative number of seconds, got {v!r}")


def as_batch(executor: Any) -> Batch | None:
    """The batch options an ``executor=`` value asks for (None: not the batch executor)."""
    if isinstance(executor, Batch):
        return executor
    return Batch() if executor == "batch" else None


def _state_path(kit: Kit, run_id: str) -> Path:
    return Path(kit.home) / "runs" / run_id / STATE_FILE


def load_state(kit: Kit, run_id: Any, exp: Any) -> dict[str, Any]:
    """The saved batches of run ``run_id`` (checked: a batch run of this same experiment)."""
    if not isinstance(run_id, str) or not run_id or "/" in run_id or "\\" in run_id or run_id.startswith("."):
        raise InvalidRequestError(f"resume must be the run_id of a batch run (a string), got {run_id!r}")
    path = _state_path(kit, run_id)
    if not path.exists():
        raise InvalidRequestError(f"no batch run {run_id!r} to resume under {path.parent.parent}: resume takes the "
                                  "run_id that kit.run(exp, executor='batch') reported")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise storage_error(f"cannot read the batches of run {run_id}", exc, path) from None
    if state.get("experiment_hash") != exp.hash:
        raise InvalidRequestError(f"run {run_id!r} was a batch run of another experiment (or of this one before it "
                                  "changed); resume it with the same Experiment")
    return state


def save_state(kit: Kit, state: dict[str, Any]) -> None:
    path = _state_path(kit, state["run_id"])
    try:
        private_dir(path.parent)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
        private_file(tmp)
        tmp.replace(path)
    except OSError as exc:
        raise storage_error(f"cannot record the batches of run {state['run_id']}", exc, path, writing=True) from None


def check_batchable(kit: Kit, plans: list) -> None:
    """Every cell's provider must have a batch API; nothing is sent otherwise."""
    for name in dict.fromkeys(p.provider for p in plans):
        if name == "simulated":
            raise InvalidRequestError(
                "executor='batch' needs OpenAI or Anthropic: this run's cells go to the simulated provider (offline, "
                "simulation mode), which has no batch API. Set OPENAI_API_KEY or ANTHROPIC_API_KEY, or run with "
                "executor='local'")
        batch_api(kit.provider(name))


def run_batch(engine: Any, plans: list, options: Batch, state: dict[str, Any] | None, progress: bool) -> list[dict]:
    """One outcome dict per cell (as the local executor's): cache hits, then the batches' answers.

    ``state``: the saved batches of the run being resumed (None: a new run)."""
    kit, exp, run_id = engine.kit, engine.exp, engine.run_id
    check_batchable(kit, plans)
    state = state or {"run_id": run_id, "experiment_hash": exp.hash, "cells": len(plans), "batches": []}
    # cells of a batch already collected (a run that stopped while finishing) come from the cache
    pending = {int(i) for b in state["batches"] if not b.get("collected") for i in b["cells"].values()}
    outcomes: list[dict | None] = [None for _ in plans]
    calls: dict[int, Any] = {}
    committed = sum(plans[i].worst or 0.0 for i in pending)
    refused = []
    for i, p in enumerate(plans):
        if i in pending:
            continue
        hit = engine.lookup(p.key, p.cell.kwargs, (p.provider, p.request, p.cell.repeat))
        if hit is not None:
            outcomes[i] = _outcome("ok", hit, cache_hit=True)
        elif engine.budget.limit is not None and committed + (p.worst or 0.0) > engine.budget.limit:
            refused.append(p.worst or 0.0)  # a whole batch is sent at once: worst cases must fit up front
            outcomes[i] = _outcome("skipped", None, error="budget exhausted")
        else:
            committed += p.worst or 0.0
            calls[i] = _call(kit, exp, run_id, p)
    if refused:
        engine.budget.exhausted, engine.budget.refused = True, refused[0]
    for i in pending:  # a resumed run's cells: planned again, exactly as they were sent
        calls[i] = _call(kit, exp, run_id, plans[i])
    holds = _hold(kit, plans, calls)  # the folder's budgets (kit.set_budget): BudgetExceededError before submitting
    try:
        _submit(kit, state, plans, {i: c for i, c in calls.items() if i not in pending})
        statuses = _wait(kit, state, options, progress, f"{exp.name} (batch run {run_id})")
        for b in state["batches"]:
            if not b.get("collected"):
                _collect(engine, b, statuses.get(b["batch_id"]), plans, calls, outcomes)
                b["collected"] = True
                save_state(kit, state)
    finally:  # what the answers cost is settled; the rest of each hold is released (also on an error)
        spent: dict[Any, float] = {}
        for i, o in enumerate(outcomes):
            if i in calls and o is not None:
                user = calls[i].meta.get("user_id")
                spent[user] = spent.get(user, 0.0) + (o["spent"] or 0.0)
        for user, hold in holds.items():
            kit.guard.settle(hold, spent.get(user, 0.0))
    state["finished"] = True
    save_state(kit, state)
    return [o if o is not None else _outcome("error", None, error="no answer from the batch") for o in outcomes]


def _hold(kit: Kit, plans: list, calls: dict[int, Any]) -> dict[Any, Any]:
    """Hold the worst case of every request about to be batched in the folder's budgets, per user
    (a batch is paid for all at once); nothing is held, and the error raised, if one does not fit."""
    worst: dict[Any, float] = {}
    for i, call in calls.items():
        user = call.meta.get("user_id")
        worst[user] = worst.get(user, 0.0) + (plans[i].worst if plans[i].worst is not None
                                              else call.worst_case_usd(kit.prices) or 0.0)
    holds: dict[Any, Any] = {}
    try:
        for user, usd in worst.items():
            n = sum(1 for c in calls.values() if c.meta.get("user_id") == user)
            hold = kit.guard.reserve(user, usd, f"a batch of {n} request(s)")
            if hold is not None:
                holds[user] = hold
    except BaseException:
        for hold in holds.values():
            kit.guard.settle(hold, 0.0)
        raise
    return holds


def _outcome(status: str, entry: dict | None, *, error: str | None = None, spent: float = 0.0,
             cache_hit: bool = False) -> dict[str, Any]:
    return {"status": status, "entry": entry, "error": error, "spent": spent, "judged": {}, "judge_notes": {},
            "rationales": {}, "cache_hit": cache_hit}


def _call(kit: Kit, exp: Any, run_id: str, p: Any) -> Any:
    return kit.plan(p.cell.prompt, **p.cell.kwargs, experiment_id=exp.name, run_id=run_id, cache=False)


def _submit(kit: Kit, state: dict[str, Any], plans: list, calls: dict[int, Any]) -> None:
    """One batch per provider for the cells not yet in a batch; each id saved as soon as it exists."""
    groups: dict[str, list[int]] = {}
    for i in sorted(calls):
        groups.setdefault(plans[i].provider, []).append(i)
    for name, cells in groups.items():
        api = batch_api(calls[cells[0]].steps[0].provider)
        items = [(f"cell-{i}", calls[i].steps[0].request) for i in cells]
        batch_id = api.submit(items)
        state["batches"].append({"provider": name, "batch_id": batch_id, "submitted_at": time.time(),
                                 "cells": {cid: i for (cid, _), i in zip(items, cells)}, "collected": False})
        save_state(kit, state)


def _wait(kit: Kit, state: dict[str, Any], options: Batch, progress: bool, name: str) -> dict[str, BatchStatus]:
    """Poll every open batch until all have ended (or ``max_wait_s`` passed: BatchPendingError)."""
    from tqdm.auto import tqdm

    open_ = [b for b in state["batches"] if not b.get("collected")]
    statuses: dict[str, BatchStatus] = {}
    total = sum(len(b["cells"]) for b in open_)
    bar = tqdm(total=total, desc=name, unit="request", disable=not progress or not open_,
               dynamic_ncols=True)
    t0 = time.monotonic()
    try:
        while open_:
            for b in open_:
                if b["batch_id"] not in statuses or not statuses[b["batch_id"]].ended:
                    statuses[b["batch_id"]] = _api(kit, b).status(b["batch_id"])
            bar.n = min(total, sum(s.done for s in statuses.values()))
            bar.set_postfix_str(", ".join(f"{b['provider']}: {statuses[b['batch_id']].state}" for b in open_),
                                refresh=False)
            bar.refresh()
            if all(s.ended for s in statuses.values()):
                return statuses
            if options.max_wait_s is not None and time.monotonic() - t0 >= options.max_wait_s:
                raise BatchPendingError(
                    f"batch run {state['run_id']!r} is still running at the provider after {options.max_wait_s:g}s "
                    f"({bar.n}/{total} requests done); resume with kit.run(exp, executor='batch', "
                    f"resume={state['run_id']!r})", state["run_id"])
            time.sleep(options.poll_interval)
    finally:
        bar.close()
    return statuses


def _api(kit: Kit, b: dict[str, Any]) -> BatchAPI:
    return batch_api(kit.provider(b["provider"]))


def _collect(engine: Any, b: dict[str, Any], status: BatchStatus | None, plans: list, calls: dict[int, Any],
             outcomes: list) -> None:
    """A finished batch's answers -> ledger rows (batch price, ``batch_id``), cache and outcomes."""
    kit = engine.kit
    cells = {cid: int(i) for cid, i in b["cells"].items()}
    requests = {cid: calls[i].steps[0].request for cid, i in cells.items()}
    answers: dict[str, ProviderResponse | str] = {}
    if status is None or status.error is None or status.done:
        try:
            answers = _api(kit, b).results(b["batch_id"], requests)
        except KitError as exc:
            if status is None or status.error is None:
                raise
            answers = {cid: f"{status.error} ({exc})" for cid in cells}
    latency = max(0.0, (time.time() - float(b["submitted_at"])) * 1000)
    for cid, i in cells.items():
        p, call = plans[i], calls[i]
        step = call.steps[0]
        got = answers.get(cid)
        if got is None:
            got = (status.error if status is not None and status.error else None) or "the batch returned no result"
        engine.calls += 1
        if isinstance(got, str):
            attempt = Attempt(1, step.provider.name, step.request.model, "error", latency, error_type="batch_error",
                              error_message=got)
            kit.recorder.record(call, step, attempt, None, batch_id=b["batch_id"])
            outcomes[i] = _outcome("error", None, error=f"BatchRequestError: {got}"[:500])
            continue
        attempt = Attempt(1, step.provider.name, step.request.model, "ok", latency)
        completion = kit.recorder.record(call, step, attempt, got, batch_id=b["batch_id"])
        e = {**entry_of(completion), "latency_ms": latency}
        engine.store(p.key, e, (p.provider, p.request, p.cell.repeat))
        spent = completion.cost_usd or 0.0
        engine.budget.spent += spent
        outcomes[i] = _outcome("ok", e, spent=spent)
