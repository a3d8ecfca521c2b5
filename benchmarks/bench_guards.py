"""Per-call overhead of budgets (issue 13): kit.complete with guards on against the same kit
with none, one loopback OpenAI server, same run, calls strictly alternating.

"Guards on" is a budget for the whole data folder and one for the calling user (both large
enough never to bind), so each call holds its worst case in two budgets before sending and
settles after: two short SQLite transactions and a token count. Target: at most +0.1 ms per
call (local backend). Prints the medians and the median paired difference.
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
    with tempfile.TemporaryDirectory() as off_home, tempfile.TemporaryDirectory() as on_home:
        for k in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
            os.environ.pop(k, None)
        os.environ.update(OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=base_url, COGNITIONOS_DOTENV="0")
        off = Kit(off_home, dotenv=False, providers=["openai"], log_text=False)
        on = Kit(on_home, dotenv=False, providers=["openai"], log_text=False)
        on.set_budget(1_000_000.0)
        on.set_budget(1_000_000.0, user_id="bench")
        for kit in (off, on):  # warm: SDK import, connections, token counter, files
            for _ in range(20):
                kit.complete("Say hello", model="gpt-4o-mini", user_id="bench")
        times: dict[str, list[float]] = {"off": [], "on": []}
        for i in range(N):
            for name, kit in (("off", off), ("on", on)) if i % 2 == 0 else (("on", on), ("off", off)):
                t0 = time.perf_counter()
                kit.complete("Say hello", model="gpt-4o-mini", user_id="bench")
                times[name].append((time.perf_counter() - t0) * 1000)
        diffs = [a - b for a, b in zip(times["on"], times["off"])]
        med_off, med_on = statistics.median(times["off"]), statistics.median(times["on"])
        print(f"calls per side: {N}")
        print(f"guards off  median {med_off:.3f} ms")
        print(f"guards on   median {med_on:.3f} ms  (x{med_on / med_off:.3f})")
        print(f"paired difference median {statistics.median(diffs) * 1000:+.0f} us per call (target <= +100 us)")
        row = on.budgets().iloc[0]
        print(f"budget check: {len(on.usage())} calls, spent ${row.spent_usd:.6f}, reserved ${row.reserved_usd:.6f}")
    stop.set()
    server.join(10)


if __name__ == "__main__":
    main()
