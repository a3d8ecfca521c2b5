"""A real local model, end to end (``make test-local-model``; not part of ``make test``): the kit
against llama-cpp-python's OpenAI-compatible server running SmolLM2-135M-Instruct on this CPU
(tools/local_model.sh builds it). Nothing here is a loopback stand-in: the server, its tokenizer,
its chat template and its answers are llama.cpp's own."""

from __future__ import annotations

import html
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the shared test helpers (tests/shell.py)
ALIAS = "smollm2-135m"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    out = subprocess.run(["sh", "tools/local_model.sh"], cwd=ROOT, check=True, capture_output=True, text=True)
    python, gguf = out.stdout.strip().splitlines()[-1].split()
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama") / "server.log"  # a file: an unread pipe would fill and stall it
    log = open(log_path, "wb")  # noqa: SIM115 - open for the server's whole life
    proc = subprocess.Popen([str(ROOT / python), "-m", "llama_cpp.server", "--model", str(ROOT / gguf),
                             "--model_alias", ALIAS, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
                             "--n_threads", "2", "--verbose", "False"], cwd=ROOT, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url + "/models", timeout=2) as r:
                if ALIAS in r.read().decode():
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"llama_cpp.server did not start: {log_path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture
def kit(server, tmp_path):
    from cognitionos_kit import Kit

    k = Kit(tmp_path / "home", dotenv=False, timeout=120, endpoints={"local": server})
    yield k
    k.close()


def _raw_chat(url: str, prompt: str, max_tokens: int) -> dict:
    body = json.dumps({"model": ALIAS, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                       "temperature": 0, "seed": 1}).encode()
    req = urllib.request.Request(url + "/chat/completions", body, {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


@pytest.mark.filterwarnings("ignore:no price known")
def test_complete_routes_roles_and_plain_names_to_the_local_model(kit, server):
    assert kit.chain == ["local"] and kit.status()["simulation_mode"] is False
    models = kit.models()
    assert models.model.tolist() == [ALIAS] and models.listed_by.tolist() == ["server"]  # from its /v1/models
    r = kit.complete("What is the capital of France? Answer in one word.", max_tokens=16, temperature=0, seed=1)
    assert (r.provider, r.model, r.substituted) == ("local", ALIAS, False)  # a role: the server's one model
    assert r.content.strip()
    raw = _raw_chat(server, "What is the capital of France? Answer in one word.", 16)
    assert (r.prompt_tokens, r.completion_tokens) == (raw["usage"]["prompt_tokens"], raw["usage"]["completion_tokens"])
    assert r.tokens_estimated is False and r.cost_usd is None  # the server's own counts; no price: unknown
    row = kit.usage().iloc[-1]
    assert (row.provider, row.model, row.price_source) == ("local", ALIAS, "unknown")
    r2 = kit.complete("Say hi.", model=ALIAS, max_tokens=8)  # the plain name the server lists
    assert r2.provider == "local"


@pytest.mark.filterwarnings("ignore:no price known")
def test_stream_and_async(kit, server):
    import asyncio

    s = kit.stream("Count from one to five.", model=f"local:{ALIAS}", max_tokens=24, temperature=0)
    chunks = list(s)
    c = s.completion
    assert len(chunks) > 1 and "".join(chunks) == c.content and c.provider == "local"
    # llama-cpp-python sends no usage in a stream: the kit counts with the server's own tokenizer
    assert c.tokens_estimated and c.token_counter == "local tokenizer"
    assert "~" in c.footer() and "(local tokenizer)" in c.footer()
    assert abs(c.completion_tokens - len([x for x in chunks if x])) <= 2  # about one token per chunk
    # the prompt as the server counts it, chat template included (what a one-token request reports)
    assert c.prompt_tokens == _raw_chat(server, "Count from one to five.", 1)["usage"]["prompt_tokens"]
    assert kit.usage().iloc[-1].token_counter == "local tokenizer"
    a = asyncio.run(kit.acomplete("Say yes.", max_tokens=4))
    assert a.provider == "local" and a.content is not None


@pytest.mark.filterwarnings("ignore:no price known")
def test_an_experiment_reruns_from_the_cache_with_the_same_table(kit):
    from cognitionos_kit import Experiment

    exp = Experiment("local-smoke", dataset=[{"q": "2+2"}, {"q": "3+3"}], prompts="What is {q}? Answer with a number.",
                     models=[ALIAS], settings={"temperature": [0], "max_tokens": [12]})
    first = kit.run(exp, progress=False)
    assert (first.results.status == "ok").all() and set(first.results.provider) == {"local"}
    assert first.cost_usd is None and first.unpriced_calls == 2
    second = kit.run(exp, progress=False)
    assert second.cache_hits == 2
    assert second.results.output.tolist() == first.results.output.tolist()


@pytest.mark.filterwarnings("ignore:no price known")
def test_the_playground_and_the_magic(kit, tmp_path, monkeypatch):
    pg = kit.playground()
    assert ("local", "local") in pg.provider.options
    pg.prompt.value = "Name a colour."
    pg.model.value = ALIAS
    pg.max_tokens.value = 8
    c = pg.run()
    assert c is not None and c.provider == "local" and html.escape(c.content) in pg.output.value
    assert "local/" + ALIAS in pg.footer.value

    from shell import ipython_shell

    with ipython_shell(kit, tmp_path, monkeypatch) as sh:
        result = sh.run_cell(f"%%llm {ALIAS} --kit kit --max-tokens 8\nSay hello.")
        assert result.success, result.error_in_exec
        assert sh.user_ns["_llm"].provider == "local"


@pytest.mark.filterwarnings("ignore:no price known")
def test_openai_base_url_alone_is_the_local_server_with_its_own_model(server, tmp_path, monkeypatch):
    from cognitionos_kit import Kit

    monkeypatch.setenv("OPENAI_BASE_URL", server)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with Kit(tmp_path / "h", dotenv=False, timeout=120) as kit:
        r = kit.complete("Say hi.", role="executor", max_tokens=8)
        assert (r.provider, r.model) == ("openai", ALIAS)  # never gpt-4o-mini, never its price
        assert r.cost_usd is None
