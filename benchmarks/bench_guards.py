"""Per-call overhead of budgets (issue 13): kit.complete with guards on against the same kit
with none, one loopback OpenAI server, same run, calls strictly rotating between three kits:
no guards, guards in the data folder (local), guards in a real Redis (Debian's redis-server on
loopback, started here as the tests do).

"Guards on" is a budget for the whole data folder and one for the calling user (both large
enough never to bind), so each call holds its worst case in two budgets before sending and
settles after, plus a token count. Targets: at most +0.1 ms per call (local) and +0.5 ms
(Redis). Prints the medians and the median paired differences.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from loopback import OpenAIServer  # noqa: E402
from redis_server import RedisServer  # noqa: E402

N = int(os.environ.get("BENCH_CALLS", "1000"))


def serve(urls: mp.Queue, stop: mp.Event) -> None:
    """The loopback server in a process of its own: its threads must not compete for our GIL
    (the kit's SQLite calls release it, and a busy server thread then delays their return)."""
    with OpenAIServer() as server:
        urls.put(server.base_url)
        stop.wait()


def main() -> None:
    from cognitionos_kit import Kit

    urls: mp.Queue = mp.Queue()
    stop = mp.Event()
    server = mp.Process(target=serve, args=(urls, stop), daemon=True)
    server.start()
    base_url = urls.get(timeout=60)
    redis = RedisServer()
    with tempfile.TemporaryDirectory() as off_home, tempfile.TemporaryDirectory() as on_home, \
            tempfile.TemporaryDirectory() as redis_home:
        for k in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
            os.environ.pop(k, None)
        os.environ.update(OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=base_url, COGNITIONOS_DOTENV="0")
        off = Kit(off_home, dotenv=False, providers=["openai"], log_text=False)
        on = Kit(on_home, dotenv=False, providers=["openai"], log_text=False)
        red = Kit(redis_home, dotenv=False, providers=["openai"], log_text=False, guards=redis.url)
        for kit in (on, red):
            kit.set_budget(1_000_000.0)
            kit.set_budget(1_000_000.0, user_id="bench")
        kits = {"off": off, "local": on, "redis": red}
        for kit in kits.values():  # warm: SDK import, connections, token counter, files
            for _ in range(20):
                kit.complete("Say hello", model="gpt-4o-mini", user_id="bench")
        times: dict[str, list[float]] = {name: [] for name in kits}
        order = list(kits)
        for i in range(N):
            for name in order[i % 3:] + order[:i % 3]:  # each kit first, second and third in turn
                t0 = time.perf_counter()
                kits[name].complete("Say hello", model="gpt-4o-mini", user_id="bench")
                times[name].append((time.perf_counter() - t0) * 1000)
        med_off = statistics.median(times["off"])
        print(f"calls per side: {N}")
        print(f"guards off    median {med_off:.3f} ms")
        for name, target in (("local", 100), ("redis", 500)):
            diffs = [a - b for a, b in zip(times[name], times["off"])]
            med = statistics.median(times[name])
            print(f"guards {name:<6} median {med:.3f} ms  (x{med / med_off:.3f}); paired difference median "
                  f"{statistics.median(diffs) * 1000:+.0f} us per call (target <= +{target} us)")
            row = kits[name].budgets().iloc[0]
            print(f"  budget check: {len(kits[name].usage())} calls, spent ${row.spent_usd:.6f}, "
                  f"reserved ${row.reserved_usd:.6f}")
    stop.set()
    server.join(10)
    redis.stop()


if __name__ == "__main__":
    main()
