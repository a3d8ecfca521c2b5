"""Wall time of `import cognitionos_kit` in a fresh interpreter (target: at most 0.5 s), beside
the SDKs it deliberately imports lazily. Median of several fresh processes each."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 9
ROOT = Path(__file__).resolve().parent.parent


def wall(code: str) -> float:
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    base = wall("pass")
    print(f"python startup alone: {base:.3f} s (subtracted below)")
    for label, code in [
        ("import cognitionos_kit", "import cognitionos_kit"),
        ("from cognitionos_kit import Kit; Kit()",
         "import tempfile; from cognitionos_kit import Kit; Kit(tempfile.mkdtemp(), dotenv=False)"),
        ("import openai", "import openai"),
        ("import anthropic", "import anthropic"),
        ("import pandas", "import pandas"),
    ]:
        t = wall(code) - base
        extra = ""
        if label == "import cognitionos_kit":
            extra = f"  (target <= 0.5 s: {'OK' if t <= 0.5 else 'MISSED'})"
        print(f"{label:45s} {t:.3f} s{extra}")


if __name__ == "__main__":
    main()
