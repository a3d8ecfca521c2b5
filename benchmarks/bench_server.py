"""Team server under load: 50 concurrent clients (one user and token each) x 40 requests, mostly
``POST /complete`` against a loopback OpenAI server answering in 50 ms (its own process, from
bench_experiment.py), with some ``POST /memories`` and ``POST /retrieve``. Reports requests/s,
errors, p50/p99 per route and the time the server adds to a completion: its /complete latency
minus ``kit.acomplete`` in-process (another Kit, same provider server, same concurrency, same run).
Then checks that every answered /complete is a ledger row, and that a SIGKILL mid-load loses no
acknowledged row and that a restart serves again.

Usage: ``python benchmarks/bench_server.py`` (``BENCH_CLIENTS``, ``BENCH_REQUESTS``, ``BENCH_DELAY``,
``BENCH_MEMORY=0`` for /complete only).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_experiment import _serve  # noqa: E402

CLIENTS = int(os.environ.get("BENCH_CLIENTS", "50"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "40"))
DELAY_S = float(os.environ.get("BENCH_DELAY", "0.05"))
MEMORY = os.environ.get("BENCH_MEMORY", "1") != "0"  # 0: /complete only, to see what the memory routes cost the rest
MODEL = "gpt-4o-mini"
KIT_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "COGNITIONOS_HOME",
           "COGNITIONOS_DOTENV", "COGNITIONOS_ALLOW_MIXED_SOURCES", "COGNITIONOS_ASYNC_HTTP", "COGNITIONOS_GUARDS",
           "OPENAI_API_KEYS", "ANTHROPIC_API_KEYS")


def _route(i: int) -> str:
    """Eight in ten requests complete, one stores a memory, one retrieves."""
    if not MEMORY:
        return "/complete"
    return {8: "/memories", 9: "/retrieve"}.get(i % 10, "/complete")


def _body(route: str, user: str, i: int, tag: str) -> dict:
    if route == "/complete":
        return {"prompt": f"{tag} {user} request {i}: say hello", "model": MODEL, "max_tokens": 32}
    if route == "/memories":
        return {"content": f"{user} noted fact number {i} about {tag} load testing", "metadata": {"i": i}}
    return {"query": f"fact number {i} about load testing", "k": 5}


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))] if xs else float("nan")


class ServerProc:
    def __init__(self, home: Path, env: dict[str, str], log: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.log = log.open("a")
        self.proc = subprocess.Popen([sys.executable, "-m", "cognitionos_kit", "serve", "--home", str(home),
                                      "--port", str(port)], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise SystemExit(f"the server did not start; see {log}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


async def _load(url: str, tokens: dict[str, str], tag: str, stop_after: int | None = None,
                killer: subprocess.Popen | None = None) -> dict:
    """Every user's client sends its requests one after another, all users at once. With ``killer``,
    that process is SIGKILLed once ``stop_after`` completions have been acknowledged."""
    lat: dict[str, list[float]] = {}
    errors: list[str] = []
    acked: list[str] = []
    killed = asyncio.Event()

    async def client(user: str, token: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as http:
            for i in range(REQUESTS):
                route = _route(i)
                t0 = time.perf_counter()
                try:
                    r = await http.post(route, json=_body(route, user, i, tag))
                except httpx.TransportError as e:
                    if killed.is_set():
                        return  # the server is gone: this client stops
                    errors.append(f"{route}: {type(e).__name__}")
                    continue
                took = time.perf_counter() - t0
                if r.status_code >= 400:
                    errors.append(f"{route}: {r.status_code} {r.text[:200]}")
                    continue
                lat.setdefault(route, []).append(took)
                if route == "/complete":
                    acked.append(r.json()["request_id"])
                    if killer is not None and stop_after is not None and len(acked) >= stop_after and not killed.is_set():
                        killed.set()
                        killer.send_signal(signal.SIGKILL)

    t0 = time.perf_counter()
    await asyncio.gather(*(client(u, t) for u, t in tokens.items()))
    return {"wall": time.perf_counter() - t0, "lat": lat, "errors": errors, "acked": acked}


async def _in_process(home: Path, n_each: int) -> list[float]:
    """``kit.acomplete`` at the same concurrency as the server's completions, same provider server."""
    from cognitionos_kit import Kit

    kit = Kit(home, providers=["openai"], dotenv=False, max_retries=0)
    lat: list[float] = []

    async def worker(w: int) -> None:
        for i in range(n_each):
            t0 = time.perf_counter()
            await kit.acomplete(f"inproc {w} request {i}: say hello", model=MODEL, max_tokens=32)
            lat.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker(w) for w in range(CLIENTS)))  # warm: imports, connections
    lat.clear()
    await asyncio.gather(*(worker(w) for w in range(CLIENTS)))
    kit.close()
    return lat


async def _first_use(url: str, tokens: dict[str, str]) -> list[float]:
    """One ``GET /models`` per token, all at once: a token's first request costs the server one scrypt."""
    async def one(token: str) -> float:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            t0 = time.perf_counter()
            (await http.get("/models", headers={"Authorization": f"Bearer {token}"})).raise_for_status()
            return time.perf_counter() - t0

    return list(await asyncio.gather(*(one(t) for t in tokens.values())))


def _ledger_ids(home: Path) -> tuple[set[str], int]:
    """The request ids in the folder's ledger, and its number of rows."""
    from cognitionos_kit import Kit

    kit = Kit(home, providers=["openai"], dotenv=False)
    try:
        usage = kit.usage()
        return set(usage["request_id"].dropna().astype(str)), len(usage)
    finally:
        kit.close()


def main() -> None:
    q: mp.Queue = mp.Queue()
    provider = mp.Process(target=_serve, args=(q, DELAY_S), daemon=True)
    provider.start()
    base = f"http://127.0.0.1:{q.get(timeout=30)}/v1"
    env = {k: v for k, v in os.environ.items() if k not in KIT_ENV}
    env.update(OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=base, COGNITIONOS_DOTENV="0")
    os.environ.update(OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=base, COGNITIONOS_DOTENV="0")

    from cognitionos_kit.server import Accounts

    root = Path(tempfile.mkdtemp(prefix="bench-server-"))
    home = root / "lab"
    accounts = Accounts(home)
    users = [f"user{n:02d}" for n in range(CLIENTS)]
    for name in users:
        accounts.add_user(name)
    tokens = {name: accounts.create_token(name).token for name in users}
    accounts.close()
    log = root / "server.log"
    completes = sum(_route(i) == "/complete" for i in range(REQUESTS)) * CLIENTS
    print(f"{CLIENTS} clients x {REQUESTS} requests ({completes} /complete); provider answers in "
          f"{DELAY_S * 1000:.0f} ms; data in {root}")

    # 1. load
    server = ServerProc(home, env, log)
    warm = asyncio.run(_load(server.url, dict(list(tokens.items())[:2]), "warm"))  # embedding model, connections
    if warm["errors"]:
        raise SystemExit(f"warm-up failed: {warm['errors'][:3]}")
    first = asyncio.run(_first_use(server.url, tokens))
    print(f"first request of each token, {CLIENTS} at once (one scrypt each, then cached by the server): "
          f"p50 {_pct(first, 50) * 1000:.0f} ms, max {max(first) * 1000:.0f} ms")
    res = asyncio.run(_load(server.url, tokens, "load"))
    server.stop()
    total = sum(len(v) for v in res["lat"].values()) + len(res["errors"])
    print(f"\n== load: {total} requests in {res['wall']:.2f} s = {total / res['wall']:.0f} requests/s; "
          f"errors: {len(res['errors'])}")
    for e in res["errors"][:5]:
        print("  ", e)
    for route, xs in sorted(res["lat"].items()):
        print(f"{route:>10}: {len(xs)} ok, p50 {_pct(xs, 50) * 1000:.0f} ms, p99 {_pct(xs, 99) * 1000:.0f} ms")

    # 2. the same completions in-process
    per_client = completes // CLIENTS
    inproc = asyncio.run(_in_process(root / "inproc", per_client))
    srv = res["lat"].get("/complete", [])
    print(f"\n== in-process kit.acomplete, {CLIENTS} at once x {per_client}: p50 {_pct(inproc, 50) * 1000:.0f} ms, "
          f"p99 {_pct(inproc, 99) * 1000:.0f} ms")
    print(f"time added by the server to /complete: p50 {(_pct(srv, 50) - _pct(inproc, 50)) * 1000:.0f} ms, "
          f"p99 {(_pct(srv, 99) - _pct(inproc, 99)) * 1000:.0f} ms (mean {statistics.mean(srv) * 1000:.0f} vs "
          f"{statistics.mean(inproc) * 1000:.0f} ms)")

    # 3. ledger rows
    ids, rows = _ledger_ids(home)
    acked = set(res["acked"]) | set(warm["acked"])
    lost = acked - ids
    failed = bool(res["errors"]) or bool(lost)
    print(f"\n== ledger: {len(acked)} answered /complete (warm-up included), {rows} ledger rows, "
          f"{len(ids)} request ids; answered but not in the ledger: {len(lost)}")

    # 4. SIGKILL mid-load, restart
    server = ServerProc(home, env, log)
    kill_at = completes // 3
    crash = asyncio.run(_load(server.url, tokens, "crash", stop_after=kill_at, killer=server.proc))
    server.proc.wait()
    server.log.close()
    print(f"\n== SIGKILL after {kill_at} acknowledged completions (exit {server.proc.returncode}): "
          f"{len(crash['acked'])} acknowledged in all, errors before the kill: {len(crash['errors'])}")
    server = ServerProc(home, env, log)
    health = httpx.get(server.url + "/health", timeout=10).status_code
    one = httpx.post(server.url + "/complete", headers={"Authorization": f"Bearer {tokens[users[0]]}"},
                     json=_body("/complete", users[0], 0, "after-restart"), timeout=60)
    server.stop()
    ids, rows = _ledger_ids(home)
    lost = set(crash["acked"]) - ids
    print(f"restart: /health {health}, /complete {one.status_code}; acknowledged before the kill missing from "
          f"the ledger: {len(lost)}; the call after the restart in the ledger: "
          f"{one.status_code == 200 and one.json()['request_id'] in ids}")
    provider.terminate()
    if failed or lost or health != 200 or one.status_code != 200:
        raise SystemExit("FAILED: errors, lost ledger rows or no answer after the restart (above)")


if __name__ == "__main__":
    main()
