"""Experiment throughput: 1,000 calls at concurrency 64 against a loopback OpenAI server that
answers every request after 50 ms. Reports wall time against the ideal (1000 / 64 x 50 ms),
target within 1.3x, and the driver's peak memory (RSS high-water mark).

The server runs in its own process (an asyncio HTTP/1.1 server, keep-alive) so it does not
compete with the kit for the GIL. Its answer is a recorded OpenAI chat response from
tests/fixtures/recorded-api-traffic.json. Usage: ``python benchmarks/bench_experiment.py``.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

CALLS = int(os.environ.get("BENCH_CALLS", "1000"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "64"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
DELAY_S = 0.050
FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "recorded-api-traffic.json"


def _body() -> bytes:
    for e in json.loads(FIXTURES.read_text(encoding="utf-8")):
        if e["provider"] == "openai" and e["endpoint"].endswith("/chat/completions") and not e["stream"] \
                and not e["tools"] and e["response"]["status"] == 200:
            return json.dumps(e["response"]["json"]).encode()
    raise SystemExit("no recorded OpenAI chat response in the fixtures")


def _serve(port_q: mp.Queue) -> None:
    body = _body()
    head = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: keep-alive\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                headers = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in headers.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                await asyncio.sleep(DELAY_S)
                writer.write(head + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        port_q.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


async def _raw_sdk(n: int, concurrency: int, lean: bool = False) -> float:
    """The bare AsyncOpenAI client, same server, same concurrency. ``lean``: the floor of the
    official SDK here, with everything the kit does to go faster (aiohttp transport, ``post``
    with ``cast_to=object``) and nothing else (no ledger, cache, scoring or report)."""
    import openai

    client = openai.AsyncOpenAI(max_retries=0, http_client=openai.DefaultAioHttpClient() if lean else None)
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        body = {"model": "gpt-4o-mini", "max_tokens": 32, "messages": [{"role": "user", "content": f"Item {i}: say hello"}]}
        async with sem:
            if lean:
                await client.post("/chat/completions", body=body, cast_to=object)
            else:
                await client.chat.completions.create(**body)

    await asyncio.gather(*(one(i) for i in range(concurrency)))  # warm the pool
    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    took = time.perf_counter() - t0
    await client.close()
    return took


def main() -> None:
    q: mp.Queue = mp.Queue()
    server = mp.Process(target=_serve, args=(q,), daemon=True)
    server.start()
    port = q.get(timeout=30)
    os.environ.update(OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1")
    import pandas as pd

    from cognitionos_kit import Experiment, Kit

    home = Path(tempfile.mkdtemp(prefix="bench-exp-"))
    kit = Kit(home, providers=["openai"], dotenv=False, max_retries=0)
    rows = pd.DataFrame({"i": range(CALLS)})
    warm = Experiment("warm", rows.head(CONCURRENCY), "Warm {i}", ["gpt-4o-mini"])
    kit.run(warm, concurrency=CONCURRENCY, cache=False, progress=False)  # imports, connections, tokenizer

    # Rounds alternate the kit and the SDK floor so drift of a shared machine hits both alike;
    # each round's prompts are new, so the kit's run sends every call (nothing cached yet).
    walls, floors, raws = [], [], []
    for r in range(ROUNDS):
        exp = Experiment("bench", rows, f"Round {r} item {{i}}: say hello", ["gpt-4o-mini"], settings={"max_tokens": [32]})
        t0 = time.perf_counter()
        run = kit.run(exp, concurrency=CONCURRENCY, cache=True, progress=False)
        walls.append(time.perf_counter() - t0)
        floors.append(asyncio.run(_raw_sdk(CALLS, CONCURRENCY, lean=True)))
    t1 = time.perf_counter()
    rerun = kit.run(exp, concurrency=CONCURRENCY, progress=False)
    cached_wall = time.perf_counter() - t1
    raws.append(asyncio.run(_raw_sdk(CALLS, CONCURRENCY)))
    wall, floor, raw = statistics.median(walls), statistics.median(floors), statistics.median(raws)
    ideal = CALLS / CONCURRENCY * DELAY_S
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024 ** 2)
    ok = int((run.results.status == "ok").sum())
    print(f"calls: {CALLS} at concurrency {CONCURRENCY}, server delay {DELAY_S * 1000:.0f} ms, {ok} ok; "
          f"medians of {ROUNDS} alternating rounds")
    print(f"ideal wall time:  {ideal:.3f} s")
    print(f"kit run (incl. planning, cache, ledger, scoring, parquet + HTML report): {wall:.3f} s = {wall / ideal:.2f}x "
          f"ideal (rounds: {', '.join(f'{w / ideal:.2f}x' for w in walls)}; target <= 1.3x: "
          f"{'met' if wall / ideal <= 1.3 else 'NOT met'})")
    print(f"floor: bare AsyncOpenAI on aiohttp with post(cast_to=object), nothing else: {floor:.3f} s = "
          f"{floor / ideal:.2f}x ideal (rounds: {', '.join(f'{f / ideal:.2f}x' for f in floors)}); "
          f"kit run / floor = {wall / floor:.2f}x")
    print(f"bare AsyncOpenAI client (default transport, chat.completions.create), same calls: {raw:.3f} s = "
          f"{raw / ideal:.2f}x ideal; kit run / bare = {wall / raw:.2f}x")
    print(f"rerun, all {rerun.cache_hits} from cache: {cached_wall:.3f} s, new spend ${rerun.cost_usd:.6f}")
    print(f"peak RSS of the driver: {peak_mb:.0f} MB")
    kit.close()
    server.terminate()


if __name__ == "__main__":
    main()
