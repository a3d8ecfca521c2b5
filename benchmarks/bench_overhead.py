"""Per-call overhead of kit.complete against the raw openai SDK, same loopback server, same run.

Target (issue 2): median at most 1.25x the raw SDK's time and at most +0.3 ms.
Calls strictly alternate between the two so drift hits both alike; the paired difference
(kit call minus the raw call just before it) is reported beside the medians.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from loopback import OpenAIServer  # noqa: E402

N = int(os.environ.get("BENCH_CALLS", "2000"))
BLOCK = 1  # strict alternation: machine noise hits both sides alike
PROMPT = "Say hello"


def main() -> None:
    import openai

    from cognitionos_kit import Kit

    with OpenAIServer() as server, tempfile.TemporaryDirectory() as home:
        for k in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
            os.environ.pop(k, None)
        os.environ["OPENAI_API_KEY"] = "sk-bench-000000"
        os.environ["OPENAI_BASE_URL"] = server.base_url
        raw = openai.OpenAI(api_key="sk-bench-000000", base_url=server.base_url, max_retries=2, timeout=60)
        kit = Kit(home, dotenv=False)

        def raw_call():
            raw.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}], max_tokens=1024)

        def kit_call():
            kit.complete(PROMPT, providers=["openai"])

        for _ in range(50):  # warm up both (connections, tokenizer, prices, ledger)
            raw_call(), kit_call()
        t_raw, t_kit = [], []
        for _ in range(N // BLOCK):
            for fn, acc in ((raw_call, t_raw), (kit_call, t_kit)):
                for _ in range(BLOCK):
                    t0 = time.perf_counter()
                    fn()
                    acc.append((time.perf_counter() - t0) * 1000)
        report("sync", t_raw, t_kit)

        araw = openai.AsyncOpenAI(api_key="sk-bench-000000", base_url=server.base_url, max_retries=2, timeout=60)

        async def run_async():
            async def a_raw():
                await araw.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}], max_tokens=1024)

            async def a_kit():
                await kit.acomplete(PROMPT, providers=["openai"])

            for _ in range(50):
                await a_raw(), await a_kit()
            a_t_raw, a_t_kit = [], []
            for _ in range(N // BLOCK):
                for fn, acc in ((a_raw, a_t_raw), (a_kit, a_t_kit)):
                    for _ in range(BLOCK):
                        t0 = time.perf_counter()
                        await fn()
                        acc.append((time.perf_counter() - t0) * 1000)
            return a_t_raw, a_t_kit

        report("async", *asyncio.run(run_async()))
        rows = len(kit.usage())
        print(f"ledger rows recorded by the kit during the run: {rows}")
        kit.close()


def report(label: str, t_raw: list[float], t_kit: list[float]) -> None:
    m_raw, m_kit = statistics.median(t_raw), statistics.median(t_kit)
    ratio, delta = m_kit / m_raw, m_kit - m_raw
    paired = statistics.median(k - r for r, k in zip(t_raw, t_kit))
    print(f"[{label}] median of paired differences (kit - raw): {paired * 1000:+.0f} us")
    verdict = "OK" if ratio <= 1.25 and delta <= 0.3 else "MISSED"
    print(f"[{label}] {len(t_raw)} calls each: raw openai SDK median {m_raw:.3f} ms, "
          f"kit.complete median {m_kit:.3f} ms -> ratio {ratio:.3f}x, overhead {delta * 1000:+.0f} us "
          f"(target <= 1.25x and <= +300 us: {verdict})")


if __name__ == "__main__":
    main()
