"""``kit.run(experiment)``: plan every call (validating all of them first), serve what the cache
holds, send the rest with bounded concurrency under a budget, score, and write the run folder.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..calls.options import CallOptions, make_options
from ..calls.plan import cache_name as plan_cache_name
from ..calls.turns import needs_turns
from ..core.errors import ConfigurationError, InvalidRequestError, KitError
from ..storage.cache import ResponseCache, cache_key, open_cache
from .attempts import RunAttempts
from .batch_executor import STATE_FILE, Batch, as_batch, load_state, run_batch
from .budget import Budget
from .entry import ENTRY_FIELDS, entry
from .entry import entry as to_entry
from .experiment import Cell, Experiment
from .heap import quiet_heap
from .ray_executor import ray_send
from .run import Run
from .runs import finish_run, git_probe, load_run
from .runstore import RunStore
from .scorers import Scorer

if TYPE_CHECKING:
    from ..calls.plan import CallPlan
    from ..kit import Kit

__all__ = ["Run", "run_experiment", "entry", "ENTRY_FIELDS", "RUN_ONLY_COLUMNS"]

# the only columns that differ when a rerun is served from cache (request_id: the call, or cache hit, of this run)
RUN_ONLY_COLUMNS = ("cache_hit", "spent_usd", "request_id")
Send = Callable[[str, Mapping[str, Any]], Awaitable[dict]]


@dataclass
class _Plan:
    cell: Cell
    key: str  # the cache key of the request as asked (its first route)
    worst: float | None
    request: Any = None  # that ProviderRequest: a substitute's answer is stored under its own model
    provider: str = ""
    call: CallPlan | None = None  # the checked call, sent as it is (None: sent by its options, e.g. tool turns)


def _run_id(name: str) -> str:
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in name.lower()).strip("-")[:40] or "run"
    return f"{slug}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def _plan(kit: Kit, exp: Experiment, run_id: str, budget: bool) -> list[_Plan]:
    """Validate every call and compute its cache key (and worst case, with a budget): no call is sent.

    LLM judges are validated here too: one judge request per judge scorer is prepared (its model or
    role must exist and, with a budget, have a known price), so a bad judge fails before the grid runs.
    """
    plans: list[_Plan] = []
    counts: dict[Any, int] = {}
    # cells differ by prompt: options (and their routes) are made once per model x settings x repeat
    made: dict[str, CallOptions] = {}
    routes: dict[int, Any] = {}
    for cell in exp.cells():
        # planned once: what is checked here is what is sent (cache=False: the run keeps its own entries)
        options = made.get(asked := repr(cell.kwargs))
        if options is None:
            options = made[asked] = make_options({**cell.kwargs, "experiment_id": exp.name, "run_id": run_id,
                                                  "cache": False})
        try:
            call = kit.planner.plan(cell.prompt, options, routes=routes)
        except (InvalidRequestError, ConfigurationError) as exc:
            raise exc.with_traceback(None) from None
        step = call.steps[0]
        worst = call.worst_case_usd(kit.prices, counts) if budget else None
        if budget and worst is None:
            raise InvalidRequestError(
                f"budget_usd needs a known price for every model; {step.provider.name}/{step.request.model} "
                f"(or a fallback) has none: add one with kit.set_price(...)"
            )
        plans.append(_Plan(cell, cache_key(cache_name(kit, step.provider.name), step.request, cell.repeat), worst,
                           step.request, step.provider.name, None if needs_turns(options) else call))
    if plans:
        _check_judges(kit, exp, plans[0].cell, budget)
    return plans


def _check_judges(kit: Kit, exp: Experiment, cell: Cell, budget: bool) -> None:
    row = exp.data.iloc[cell.row].to_dict()
    for s in exp.scorer_list:
        if not s.judge:
            continue
        prompt, kwargs = s.judge_call(cell.prompt, row, "")
        try:
            call = kit.plan(prompt, **kwargs)
        except (InvalidRequestError, ConfigurationError) as exc:  # both take just a message
            raise type(exc)(f"scorer {s.name!r} ({s.kind}): {exc}") from None
        if budget and call.worst_case_usd(kit.prices) is None:
            step = call.steps[0]
            raise InvalidRequestError(
                f"budget_usd needs a known price for every model, judges included; scorer {s.name!r} ({s.kind}) "
                f"uses {step.provider.name}/{step.request.model} (or a fallback), which has none: add one with "
                "kit.set_price(...)"
            )


class _Engine:
    """The async part: fetch (cache -> budget -> send -> cache) with counters for the progress bar."""

    def __init__(self, kit: Kit, exp: Experiment, run_id: str, send: Send, budget: Budget,
                 cache: ResponseCache | None, read_cache: bool, direct: bool = False) -> None:
        self.kit, self.exp, self.run_id, self.send = kit, exp, run_id, send
        self.budget, self.cache, self.read_cache = budget, cache, read_cache
        self.direct = direct  # send a cell's planned call itself (this process), not its prompt and options
        # answers on their way into the cache (one background writer); lookups see them at once
        self.answers = RunStore(cache) if cache is not None else None
        self.prefetched: dict[str, dict] = {}  # what the cache held for the looked-up keys before the run
        self.looked: set[str] = set()
        self.hits = 0
        self.calls = 0
        self.unpriced = 0  # calls sent whose price is unknown (their cost is NULL, not 0)
        self.saved = 0.0
        # every cell's attempts as they end, for the report at the run's end (judges' are only in the ledger)
        self.attempts = RunAttempts(direct and not any(s.judge for s in exp.scorer_list))
        self.failed_ids: dict[str, str] = {}  # cache key -> request id of a failed call (its attempts are in the ledger)

    def _hit_row(self, entry: dict, lookup_ms: float, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "request_id": "req_" + uuid.uuid4().hex[:24], "attempt": 1, "kind": "chat", "provider": entry["provider"],
            "model": entry["model"], "requested_provider": entry["provider"], "requested_model": entry["model"],
            "substituted": False, "latency_ms": lookup_ms, "status": "ok", "cost_usd": 0.0,
            "saved_cost_usd": entry["cost_usd"], "cache_hit": True, "stream": False, "role": kwargs.get("role"),
            "experiment_id": self.exp.name, "run_id": self.run_id, "price_source": "cache",
            **self.kit.planner.tags,
        }

    def lookup(self, key: str, kwargs: Mapping[str, Any], asked: tuple[str, Any, int]) -> dict | None:
        """The cached answer for exactly what was asked (recorded as a hit in the ledger), or None."""
        if self.cache is None or not self.read_cache:
            return None
        t0 = time.perf_counter()
        entry = self.answers.get(key) if self.answers is not None else None
        if entry is None:
            entry = self.prefetched.get(key) if key in self.looked else self.cache.get(key)
        if entry is None or (entry.get("provider"), entry.get("model")) != (asked[0], asked[1].model):
            return None  # a miss, or written by an older version under the requested key: not the requested model's
        # served for exactly what was asked: whatever request first produced it, not a substitute now
        entry = {**entry, "requested_provider": asked[0], "requested_model": asked[1].model, "substituted": False}
        row = self._hit_row(entry, (time.perf_counter() - t0) * 1000, kwargs)
        self.kit.recorder.write(row)  # metrics see it
        entry["request_id"] = row["request_id"]  # the hit's own ledger row, not the call that filled the cache
        self.attempts.hit(row)
        self.hits += 1
        self.saved += entry["cost_usd"] or 0.0
        return entry

    def store(self, key: str, entry: dict, asked: tuple[str, Any, int]) -> None:
        """Keep an answer in the run's cache: under ``key`` when it is what was asked, else under
        the key of the provider and model that produced it."""
        if self.answers is None:
            return
        served = (entry["provider"], entry["model"])
        if served != (asked[0], asked[1].model):
            key = cache_key(cache_name(self.kit, served[0]), replace(asked[1], model=served[1]), asked[2])
        self.answers.put(key, entry)

    def prefetch(self, keys: list[str]) -> None:
        """Read the cached answers of ``keys`` in a few queries (``lookup`` then serves from them)."""
        if self.cache is not None and self.read_cache:
            self.prefetched, self.looked = self.cache.get_many(keys), set(keys)

    async def fetch(self, prompt: str, kwargs: Mapping[str, Any], key: str, worst: float | None,
                    asked: tuple[str, Any, int], call: CallPlan | None = None) -> tuple[str, Any, float, bool]:
        """-> (status "ok"/"error"/"skipped", entry or error text, new spend, cache hit); hits go to the ledger.

        ``asked`` = (provider, request, repeat) of the call as asked. The cache never lies: an answer
        is served only for the provider and model that produced it, and a substitute's answer (a
        fallback vendor, a cheaper model, the simulator) is stored under its own key, so a rerun
        asks the requested model again. ``call``: the cell's planned call, sent as it is."""
        hit = self.lookup(key, kwargs, asked)
        if hit is not None:
            return "ok", hit, 0.0, True
        w = worst or 0.0
        hold = await self.budget.acquire(w)
        if hold is None:
            return "skipped", "budget exhausted", 0.0, False
        real = 0.0
        try:
            if call is not None and self.direct:
                call.t_start = time.perf_counter()  # planned before the run: its latency starts now
                completion = await self.kit.asend(call)
                self.attempts.answered(completion)
                entry = to_entry(completion)
            else:  # cache=False: the run keeps its own entries (by repeat), in the same file
                self.attempts.complete = False
                entry = await self.send(prompt, {**kwargs, "experiment_id": self.exp.name, "run_id": self.run_id,
                                                 "cache": False})
            real = entry["cost_usd"] or 0.0
            self.unpriced += entry["cost_usd"] is None
        except Exception as exc:  # noqa: BLE001 - one failed cell must not end the run; errors are not cached
            if rid := getattr(exc, "request_id", None):
                self.failed_ids[key] = rid
            self.attempts.failed(exc)
            return "error", f"{type(exc).__name__}: {exc}"[:500], 0.0, False
        finally:
            self.calls += 1
            await self.budget.settle(hold, real)
        self.store(key, entry, asked)
        return "ok", entry, real, False

    async def judge(self, scorer: Scorer, cell: Cell, row: Mapping[str, Any],
                    output: str) -> tuple[float, float, str | None, str | None]:
        """A judge's score through the kit (cached and budgeted like any call) -> (score, spend, note,
        rationale); ``rationale`` is the judge's reasoning (``rubric_judge``), else None.

        ``note`` explains a missing score: ``"budget"`` (the budget refused the call), or why it failed."""
        prompt, kwargs = scorer.judge_call(cell.prompt, row, output)
        call = self.kit.plan(prompt, **kwargs)
        step = call.steps[0]
        worst = call.worst_case_usd(self.kit.prices) if self.budget.limit is not None else None
        status, entry, spent, _ = await self.fetch(prompt, kwargs, cache_key(cache_name(self.kit, step.provider.name),
                                                                             step.request, 0), worst,
                                                   (step.provider.name, step.request, 0))
        if status == "skipped":
            return math.nan, spent, "budget", None
        if status == "error":
            return math.nan, spent, f"judge call failed: {entry}", None
        score, rationale, note = scorer.judge_reply(entry["content"] or "")
        return score, spent, note, rationale


def _run_coro(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to completion, also from inside a running loop (a notebook cell)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _local_send(kit: Kit) -> Send:
    async def send(prompt: str, kwargs: Mapping[str, Any]) -> dict:
        return entry(await kit.acomplete(prompt, **kwargs))

    return send


def _check_args(concurrency: Any, budget_usd: Any, executor: Any, cache: Any, resume: Any = None) -> None:
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise InvalidRequestError(f"concurrency must be a positive integer, got {concurrency!r}")
    if budget_usd is not None and (isinstance(budget_usd, bool) or not isinstance(budget_usd, (int, float))
                                   or not budget_usd > 0 or math.isinf(budget_usd)):
        raise InvalidRequestError(f"budget_usd must be a positive number of US dollars, got {budget_usd!r}")
    if not isinstance(executor, Batch) and executor not in ("local", "ray", "batch"):
        raise InvalidRequestError(f"executor must be 'local', 'ray', 'batch' or a Batch(...), got {executor!r}")
    if resume is not None and as_batch(executor) is None:
        raise InvalidRequestError("resume= picks up a batch run: use it with executor='batch'")
    if cache not in (True, False, "refresh"):
        raise InvalidRequestError(f"cache must be True, False or 'refresh' (send again, then store), got {cache!r}")


def run_experiment(
    kit: Kit,
    experiment: Experiment,
    *,
    concurrency: int = 8,
    budget_usd: float | None = None,
    executor: str | Batch = "local",
    cache: bool | str = True,
    progress: bool = True,
    resume: str | None = None,
) -> Run:
    """Run every cell of ``experiment``; see ``Run``. ``cache=False`` bypasses the cache (no reads, no
    writes); ``cache="refresh"`` sends every call again and stores the new answers. ``executor="batch"``
    (or ``Batch(...)``) sends through the providers' batch APIs; ``resume=run_id`` picks such a run up
    again after a restart (``experiments.batch_executor``)."""

    if not isinstance(experiment, Experiment):
        raise InvalidRequestError(f"kit.run expects an Experiment, got {type(experiment).__name__}")
    _check_args(concurrency, budget_usd, executor, cache, resume)
    with quiet_heap():  # no walk of the whole heap while calls are in flight (experiments.heap)
        if experiment.script is not None:  # the experiment's canned offline answers, for this run only
            with kit.simulated.scripted(experiment.script):
                return _run(kit, experiment, concurrency, budget_usd, executor, cache, progress, resume)
        return _run(kit, experiment, concurrency, budget_usd, executor, cache, progress, resume)


def cache_name(kit: Kit, provider: str) -> str:
    """The provider's name in cache keys (``calls.plan.cache_name``), by name."""
    try:
        return plan_cache_name(kit.providers.get(provider))
    except KitError:
        return provider


def _run(kit: Kit, experiment: Experiment, concurrency: int, budget_usd: float | None, executor: Any,
         cache: bool | str, progress: bool, resume: str | None = None) -> Run:
    batch = as_batch(executor)
    state = load_state(kit, resume, experiment) if resume is not None else None
    if state is not None and state.get("finished") and (Path(kit.home) / "runs" / str(resume) / "manifest.json").exists():
        return load_run(kit, resume)  # resuming a run that already ended: it is what it was
    run_id = resume or _run_id(experiment.name)
    plans = _plan(kit, experiment, run_id, budget_usd is not None)  # every call validated before any is sent
    git = git_probe(Path.cwd())  # the code version, found while the calls are in flight
    send: Send = ray_send(kit) if executor == "ray" else _local_send(kit)  # the batch executor's judges: local
    # an entry without these is unreadable for a run: a miss with a warning, never a crash
    store = open_cache(kit.home, kit.guard.url, required=("content", "provider", "model", "cost_usd")) \
        if cache is not False else None
    engine = _Engine(kit, experiment, run_id, send, Budget(budget_usd, kit.guard, run_id), store,
                     read_cache=cache is True, direct=executor == "local" and batch is None)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    sent = False
    try:
        if batch is not None:
            outcomes = run_batch(engine, plans, batch, state, progress)
            _run_coro(_judge_all(engine, plans, outcomes, concurrency))
        else:
            outcomes = _run_coro(_drive(engine, plans, concurrency, progress))
        sent = True
    finally:
        if engine.answers is not None:  # the last answers written and the file closed while the table is built
            engine.answers.close()
            if not sent:
                engine.answers.wait()
        if hasattr(send, "close"):
            send.close()  # the Ray executor's private key file goes with the run
    wall = time.perf_counter() - t0
    try:
        return finish_run(kit, experiment, engine, plans, outcomes, run_id=run_id, started=started, wall_s=wall,
                          git=git, options={"concurrency": concurrency, "budget_usd": budget_usd,
                                            "executor": "batch" if batch is not None else executor, "cache": cache,
                                            **({"batch": {**asdict(batch), "state": STATE_FILE,
                                                          "resumed": resume is not None}} if batch is not None else {})})
    finally:
        if engine.answers is not None:
            engine.answers.wait()  # a failed write fails the run


async def _judge_all(engine: _Engine, plans: list[_Plan], outcomes: list[dict], concurrency: int) -> None:
    """LLM-judge scores of the batch executor's answers, sent live (judges are not batched)."""
    judges = [s for s in engine.exp.scorer_list if s.judge]
    rows = engine.exp.data.to_dict("records")
    todo = [(i, s) for i, o in enumerate(outcomes) if o["status"] == "ok" for s in judges]
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int, s: Scorer) -> None:
        async with gate:
            p, out = plans[i], outcomes[i]
            score, spent, note, why = await engine.judge(s, p.cell, rows[p.cell.row], out["entry"]["content"])
        out["judged"][s.name] = score
        out["rationales"][s.name] = why
        out["spent"] += spent
        if note:
            out["judge_notes"][s.name] = note

    await asyncio.gather(*(one(i, s) for i, s in todo))


async def _drive(engine: _Engine, plans: list[_Plan], concurrency: int, progress: bool) -> list[dict]:
    """N workers drain the plan in order; returns one outcome dict per cell."""
    from tqdm.auto import tqdm

    exp = engine.exp
    rows = exp.data.to_dict("records")
    judges = [s for s in exp.scorer_list if s.judge]
    outcomes: list[dict] = [{} for _ in plans]
    # Import each provider's SDK and build its client before any call starts: an import takes
    # seconds of CPU, and during it every call in flight would see its deadline running.
    for name in dict.fromkeys(engine.kit.chain):
        await engine.kit.provider(name).aprepare()
    engine.prefetch([p.key for p in plans])
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(plans)):
        queue.put_nowait(i)
    bar = tqdm(total=len(plans), desc=exp.name, unit="call", disable=not progress, dynamic_ncols=True)

    async def worker() -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            p = plans[i]
            call, p.call = p.call, None  # sent once; not kept for the rest of the run
            status, entry, spent, hit = await engine.fetch(p.cell.prompt, p.cell.kwargs, p.key, p.worst,
                                                           (p.provider, p.request, p.cell.repeat), call)
            out: dict[str, Any] = {"status": status, "entry": entry if status == "ok" else None,
                                   "error": None if status == "ok" else entry, "spent": spent, "judged": {},
                                   "judge_notes": {}, "rationales": {}, "cache_hit": hit}
            if status == "ok":
                for s in judges:
                    score, j_spent, note, why = await engine.judge(s, p.cell, rows[p.cell.row], entry["content"])
                    out["judged"][s.name] = score
                    out["rationales"][s.name] = why
                    out["spent"] += j_spent
                    if note:
                        out["judge_notes"][s.name] = note
            outcomes[i] = out
            bar.update(1)
            unpriced = f" + {engine.unpriced} unpriced" if engine.unpriced else ""  # never shown as $0
            bar.set_postfix_str(f"${engine.budget.spent:.4f} spent{unpriced}, {engine.hits} cached", refresh=False)

    try:
        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(plans)))))
    finally:
        bar.close()
    return outcomes
