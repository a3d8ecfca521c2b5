"""Wall time of `import cognitionos_kit` in a fresh interpreter (target: at most 0.5 s), beside
the SDKs it deliberately imports lazily. Median of several fresh processes each.

``BENCH_BASELINE=<git ref>`` also measures that version of the package (from ``git archive``), the
two alternating process by process, and prints the ratio."""

from __future__ import annotations

import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

RUNS = 9
ROOT = Path(__file__).resolve().parent.parent
KIT_CODES = [
    ("import cognitionos_kit", "import cognitionos_kit"),
    ("from cognitionos_kit import Kit; Kit()",
     "import tempfile; from cognitionos_kit import Kit; Kit(tempfile.mkdtemp(), dotenv=False)"),
]


# Bytecode is cached, as on a user's machine (some shells set PYTHONDONTWRITEBYTECODE, which
# would time compiling the source instead); each measurement is warmed once first.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def once(code: str, cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=cwd, env=ENV)  # "-c" puts cwd first on sys.path
    return time.perf_counter() - t0


def wall(code: str, cwd: Path = ROOT) -> float:
    once(code, cwd)
    return statistics.median(once(code, cwd) for _ in range(RUNS))


def baseline_tree(ref: str, folder: str) -> Path:
    blob = subprocess.run(["git", "archive", "--format=tar", ref, "cognitionos_kit"], cwd=ROOT,
                          capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(folder)
    return Path(folder)


def main() -> None:
    base = wall("pass")
    print(f"python startup alone: {base:.3f} s (subtracted below)")
    for label, code in KIT_CODES + [("import openai", "import openai"), ("import anthropic", "import anthropic"),
                                     ("import pandas", "import pandas")]:
        t = wall(code) - base
        extra = ""
        if label == "import cognitionos_kit":
            extra = f"  (target <= 0.5 s: {'OK' if t <= 0.5 else 'MISSED'})"
        print(f"{label:45s} {t:.3f} s{extra}")
    ref = os.environ.get("BENCH_BASELINE")
    if not ref:
        return
    with tempfile.TemporaryDirectory() as folder:
        old = baseline_tree(ref, folder)
        for label, code in KIT_CODES:
            mine, theirs = [], []
            once(code, old)
            for _ in range(RUNS):  # alternating, so a busy moment hits both
                mine.append(once(code, ROOT) - base)
                theirs.append(once(code, old) - base)
            a, b = statistics.median(mine), statistics.median(theirs)
            print(f"{label:45s} this tree {a:.3f} s, baseline {ref} {b:.3f} s: {a / b:.2f}x")


if __name__ == "__main__":
    main()
