"""Shared fixtures: no keys from the developer's shell, a Kit on a temporary data folder, and
loopback servers that speak the OpenAI and Anthropic wire protocols."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loopback import AnthropicServer, OpenAIServer  # noqa: E402

from cognitionos_kit import Kit, LatencyModel  # noqa: E402

_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "COGNITIONOS_HOME",
        "COGNITIONOS_DOTENV", "COGNITIONOS_ALLOW_MIXED_SOURCES", "COGNITIONOS_ASYNC_HTTP", "COGNITIONOS_GUARDS",
        "OPENAI_API_KEYS", "ANTHROPIC_API_KEYS", "COGNITIONOS_SERVER", "COGNITIONOS_TOKEN", "COGNITIONOS_ENDPOINTS",
        "LOCAL_API_KEY", "VLLM_API_KEY", "GROQ_API_KEY")
OPENAI_KEY = "sk-test-openai-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-test-0123456789abcdef"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env, ./data lands in the test's folder


@pytest.fixture(scope="session")
def redis_server():
    """Debian's redis-server on a free loopback port, for the whole session."""
    from redis_server import RedisServer

    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(params=["local", "redis"])
def guards_backend(request, monkeypatch):
    """Run a test on both guard backends: the data folder's file, and a real Redis (emptied first),
    chosen through COGNITIONOS_GUARDS so subprocesses the test starts use the same one."""
    if request.param == "local":
        yield "local"
        return
    server = request.getfixturevalue("redis_server")
    server.flush()
    monkeypatch.setenv("COGNITIONOS_GUARDS", server.url)
    yield server.url


@pytest.fixture
def kit(tmp_path):
    """An offline Kit: simulated provider only, instant latency."""
    k = Kit(tmp_path / "home", dotenv=False, simulated_latency=LatencyModel(scale=0))
    yield k
    k.close()


@pytest.fixture(scope="module")
def openai_pair():
    """Two loopback OpenAI servers for one test module: a named endpoint and its backup."""
    a, b = OpenAIServer(), OpenAIServer()
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture(scope="session")
def _openai_server():
    with OpenAIServer() as s:
        yield s


@pytest.fixture(scope="session")
def _anthropic_server():
    with AnthropicServer() as s:
        yield s


@pytest.fixture
def openai_server(_openai_server):
    _openai_server.reset()
    yield _openai_server
    _openai_server.reset()


@pytest.fixture
def anthropic_server(_anthropic_server):
    _anthropic_server.reset()
    yield _anthropic_server
    _anthropic_server.reset()


@pytest.fixture
def make_live_kit(tmp_path, monkeypatch, openai_server, anthropic_server):
    """Build Kits whose OpenAI and Anthropic providers are the official SDKs talking to loopback
    servers (keyword arguments go to Kit)."""
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic_server.base_url)
    kits = []

    def make(**kw):
        kw = {"simulated_latency": LatencyModel(scale=0), "max_retries": 1, "timeout": 2.0, **kw}
        k = Kit(kw.pop("home", tmp_path / "home"), dotenv=False, **kw)
        kits.append(k)
        return k

    yield make
    for k in kits:
        k.close()


@pytest.fixture
def live_kit(make_live_kit):
    """A Kit whose OpenAI and Anthropic providers are the official SDKs talking to loopback servers."""
    return make_live_kit()


@pytest.fixture
def providers(_openai_server, _anthropic_server):
    """The loopback provider servers (``_openai_server``, ``_anthropic_server``), reset before and
    after a test: what they were asked, errors queued."""
    for p in (_openai_server, _anthropic_server):
        p.reset()
    yield _openai_server, _anthropic_server
    for p in (_openai_server, _anthropic_server):
        p.reset()
