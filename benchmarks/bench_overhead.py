"""Per-call overhead of kit.complete against the raw openai SDK, same loopback server, same run.

Target (issue 2): median at most 1.25x the raw SDK's time and at most +0.3 ms.
Calls strictly alternate between the two so drift hits both alike; the paired difference
(kit call minus the raw call just before it) is reported beside the medians.

``BENCH_BASELINE=<git ref>`` (e.g. the last release) also loads that version of the package from
git, under another name in the same process, and alternates its calls with the other two: the
"no slower than before, same run" check for a change to the call path.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import os
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from loopback import OpenAIServer  # noqa: E402

N = int(os.environ.get("BENCH_CALLS", "2000"))
BLOCK = 1  # strict alternation: machine noise hits both sides alike
PROMPT = "Say hello"


def load_baseline(ref: str, folder: str):
    """The package as it was at git ``ref``, imported as ``cognitionos_kit_baseline`` (its
    imports are all relative, so the two versions do not mix)."""
    root = Path(__file__).resolve().parent.parent
    blob = subprocess.run(["git", "archive", "--format=tar", ref, "cognitionos_kit"], cwd=root,
                          capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(folder)
    pkg = Path(folder) / "cognitionos_kit"
    spec = importlib.util.spec_from_file_location("cognitionos_kit_baseline", pkg / "__init__.py",
                                                  submodule_search_locations=[str(pkg)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["cognitionos_kit_baseline"] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    import openai

    from cognitionos_kit import Kit

    ref = os.environ.get("BENCH_BASELINE")
    with OpenAIServer() as server, tempfile.TemporaryDirectory() as home, tempfile.TemporaryDirectory() as old:
        for k in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
            os.environ.pop(k, None)
        os.environ["OPENAI_API_KEY"] = "sk-bench-000000"
        os.environ["OPENAI_BASE_URL"] = server.base_url
        raw = openai.OpenAI(api_key="sk-bench-000000", base_url=server.base_url, max_retries=2, timeout=60)
        kit = Kit(home, dotenv=False)
        base = load_baseline(ref, old).Kit(Path(old) / "home", dotenv=False) if ref else None

        def raw_call():
            raw.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}], max_tokens=1024)

        def kit_call():
            kit.complete(PROMPT, providers=["openai"])

        def base_call():
            base.complete(PROMPT, providers=["openai"])

        sides = [(raw_call, []), (kit_call, [])] + ([(base_call, [])] if base else [])
        for _ in range(50):  # warm up (connections, tokenizer, prices, ledger)
            for fn, _acc in sides:
                fn()
        order = random.Random(0)  # with a baseline, the order of the three sides is shuffled each round
        for _ in range(N // BLOCK):
            for fn, acc in (order.sample(sides, len(sides)) if base else sides):
                for _ in range(BLOCK):
                    t0 = time.perf_counter()
                    fn()
                    acc.append((time.perf_counter() - t0) * 1000)
        report("sync", sides[0][1], sides[1][1])
        if base:
            report_baseline("sync", ref, sides[0][1], sides[1][1], sides[2][1])

        araw = openai.AsyncOpenAI(api_key="sk-bench-000000", base_url=server.base_url, max_retries=2, timeout=60)

        async def run_async():
            async def a_raw():
                await araw.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}], max_tokens=1024)

            async def a_kit():
                await kit.acomplete(PROMPT, providers=["openai"])

            async def a_base():
                await base.acomplete(PROMPT, providers=["openai"])

            a_sides = [(a_raw, []), (a_kit, [])] + ([(a_base, [])] if base else [])
            for _ in range(50):
                for fn, _acc in a_sides:
                    await fn()
            for _ in range(N // BLOCK):
                for fn, acc in (order.sample(a_sides, len(a_sides)) if base else a_sides):
                    for _ in range(BLOCK):
                        t0 = time.perf_counter()
                        await fn()
                        acc.append((time.perf_counter() - t0) * 1000)
            return [acc for _fn, acc in a_sides]

        a_times = asyncio.run(run_async())
        report("async", a_times[0], a_times[1])
        if base:
            report_baseline("async", ref, *a_times)
        rows = len(kit.usage())
        print(f"ledger rows recorded by the kit during the run: {rows}")
        kit.close()


def report_baseline(label: str, ref: str, t_raw: list[float], t_kit: list[float], t_base: list[float]) -> None:
    m_raw, m_kit, m_base = (statistics.median(t) for t in (t_raw, t_kit, t_base))
    paired = statistics.median(k - b for k, b in zip(t_kit, t_base))
    print(f"[{label}] baseline {ref}: median {m_base:.3f} ms ({m_base / m_raw:.3f}x raw); this tree {m_kit:.3f} ms "
          f"({m_kit / m_raw:.3f}x raw); this tree vs baseline {m_kit / m_base:.3f}x, paired median {paired * 1000:+.0f} us")


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
