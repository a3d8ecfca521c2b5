"""The kit against a real local model: llama-cpp-python's server with SmolLM2-135M-Instruct on
this CPU (tools/local_model.sh builds it; `make test-local-model` tests it). Prints, in one run:

* per-call time of ``kit.complete`` against the raw ``openai`` SDK on the same server, calls
  strictly alternating (temperature 0, a few tokens: the model's time dominates either way);
* how close the kit's counts are when the server sends no usage (its streams): the server's
  own counting (``token_counter == "local tokenizer"``: the answer by its tokenizer, the prompt by a
  one-token request) and tiktoken's cl100k estimate, each against the server's own usage for the
  same prompt and answer (a request sent without streaming).

Usage: python benchmarks/bench_local_model.py [--calls 20]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALIAS = "smollm2-135m"
PROMPTS = ["What is the capital of France?", "Name three colours.", "Explain what a token is in one sentence.",
           "Write a haiku about rain.", "What is 12 times 12?"]


def start_server() -> tuple[subprocess.Popen, str]:
    out = subprocess.run(["sh", "tools/local_model.sh"], cwd=ROOT, check=True, capture_output=True, text=True)
    python, gguf = out.stdout.strip().splitlines()[-1].split()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(os.path.join(tempfile.gettempdir(), "bench-local-model.log"), "wb")  # noqa: SIM115
    proc = subprocess.Popen([str(ROOT / python), "-m", "llama_cpp.server", "--model", str(ROOT / gguf), "--model_alias",
                             ALIAS, "--port", str(port), "--n_ctx", "2048", "--n_threads", "2", "--verbose", "False"],
                            stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(240):
        try:
            with urllib.request.urlopen(url + "/models", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the local server did not start")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=20)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    from openai import OpenAI

    from cognitionos_kit import Kit
    from cognitionos_kit.calls import tokens
    from cognitionos_kit.core.types import Message, ProviderRequest

    proc, url = start_server()
    try:
        with tempfile.TemporaryDirectory() as home, Kit(home, dotenv=False, endpoints={"local": url}, cache=False,
                                                         log_text=False) as kit:
            raw = OpenAI(base_url=url, api_key="none")
            kit.complete("warm up", max_tokens=2)
            raw.chat.completions.create(model=ALIAS, messages=[{"role": "user", "content": "warm up"}], max_tokens=2)
            k_ms, r_ms = [], []
            for i in range(args.calls):
                prompt = PROMPTS[i % len(PROMPTS)]
                # the server keeps the last prompt's state: whichever goes second reuses it, so the order
                # alternates too, and each prompt is sent once by each
                for who in (("raw", "kit") if i % 2 == 0 else ("kit", "raw")):
                    t = time.perf_counter()
                    if who == "raw":
                        raw.chat.completions.create(model=ALIAS, messages=[{"role": "user", "content": prompt}],
                                                    max_tokens=8, temperature=0)
                        r_ms.append((time.perf_counter() - t) * 1000)
                    else:
                        kit.complete(prompt, max_tokens=8, temperature=0)
                        k_ms.append((time.perf_counter() - t) * 1000)
            rk, rr = statistics.median(k_ms), statistics.median(r_ms)
            print(f"per call ({args.calls} alternating, 8 tokens): kit {rk:.1f} ms, raw SDK {rr:.1f} ms, "
                  f"ratio {rk / rr:.3f}, difference {rk - rr:+.1f} ms")
            local = kit.provider("local")
            rows = []
            for prompt in PROMPTS:
                truth = kit.complete(prompt, max_tokens=48, temperature=0)  # the server's own usage
                # the same prompt and answer counted as the kit does when a stream brings no usage
                req = ProviderRequest(ALIAS, (Message("user", prompt),), None, 48, 0.0)
                own = local.count_usage(req, truth.content)  # type: ignore[attr-defined]
                cl_prompt = tokens.count_request([{"role": "user", "content": prompt}], "smollm2")
                rows.append((truth.prompt_tokens, truth.completion_tokens, own.prompt_tokens, own.completion_tokens,
                             cl_prompt, tokens.count_text(truth.content, "smollm2")))
            tp, tc = sum(r[0] for r in rows), sum(r[1] for r in rows)
            print(f"counts when the server sends no usage, against its own usage for the same prompt and answer "
                  f"({len(rows)} prompts, {tp} prompt and {tc} completion tokens):")
            print(f"  local tokenizer: prompt {sum(r[2] for r in rows) / tp - 1:+.0%}, "
                  f"completion {sum(r[3] for r in rows) / tc - 1:+.0%}")
            print(f"  cl100k_base estimate: prompt {sum(r[4] for r in rows) / tp - 1:+.0%}, "
                  f"completion {sum(r[5] for r in rows) / tc - 1:+.0%}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
