"""Starting the team server for a test module: ``python -m cognitionos_kit serve`` in its own process
on a free loopback port, its Kit's providers the official SDKs talking to the loopback provider
servers, and an httpx client to drive it (shared by the tests/test_server*.py modules)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from conftest import _ENV, ANTHROPIC_KEY, OPENAI_KEY

from cognitionos_kit.server import Accounts


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cognitionos_kit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """The running server: its URL, data folder, environment and one token per user."""

    def __init__(self, url: str, home: Path, env: dict[str, str], cwd: Path, tokens: dict[str, str]) -> None:
        self.url, self.home, self.env, self.cwd, self.tokens = url, home, env, cwd, tokens
        self.http = httpx.Client(base_url=url, timeout=30)

    def as_(self, user: str | None, method: str, path: str, **kw) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens.get(user, user)}"} if user else {}
        return self.http.request(method, path, headers=headers, **kw)

    def complete(self, user: str, **body) -> httpx.Response:
        return self.as_(user, "POST", "/complete", json={"max_tokens": 30, **body})


def add_users(home: Path, admins: tuple[str, ...], users: tuple[str, ...]) -> dict[str, str]:
    """Add the users to the data folder ``home``; one new token for each."""
    accounts = Accounts(home)
    try:
        for name in admins + users:
            accounts.add_user(name, admin=name in admins)
        return {name: accounts.create_token(name).token for name in admins + users}
    finally:
        accounts.close()


def provider_env(openai_server, anthropic_server) -> dict[str, str]:
    """The test process's environment without the kit's settings, with the loopback providers' keys and URLs."""
    env = {k: v for k, v in os.environ.items() if k not in _ENV}
    env.update(OPENAI_API_KEY=OPENAI_KEY, ANTHROPIC_API_KEY=ANTHROPIC_KEY, COGNITIONOS_DOTENV="0",
               OPENAI_BASE_URL=openai_server.base_url, ANTHROPIC_BASE_URL=anthropic_server.base_url)
    return env


@contextmanager
def running_server(root: Path, home: Path, env: dict[str, str], tokens: dict[str, str], *args: str) -> Iterator[Server]:
    """``serve --home home`` (and ``args``) until the block ends; then no key and no token may be in its log."""
    port = free_port()
    log_path = root / "server.log"
    log = log_path.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "cognitionos_kit", "serve", "--home", str(home), "--port", str(port),
                             *args], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.close()
            pytest.fail("the server did not start:\n" + log_path.read_text())
        time.sleep(0.1)
    s = Server(url, home, env, root, tokens)
    try:
        yield s
    finally:
        s.http.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    logged = log_path.read_text()
    assert OPENAI_KEY not in logged and ANTHROPIC_KEY not in logged
    assert not [name for name, token in s.tokens.items() if token in logged]



@contextmanager
def guarded_server(root: Path, openai_server, anthropic_server) -> Iterator[Server]:
    """A server whose users are ana (an admin), bob, dave, carol (a user budget of $1e-9: every
    call refused) and fay (1 request a minute, refused past it), set as an admin would from a
    notebook on the same data folder."""
    from cognitionos_kit import Kit

    home = root / "home"
    tokens = add_users(home, ("ana",), ("bob", "dave", "carol", "fay"))
    kit = Kit(home, dotenv=False)
    kit.set_budget(1e-9, user_id="carol")
    kit.set_rate_limit(user_id="fay", rpm=1, policy="raise")
    kit.close()
    with running_server(root, home, provider_env(openai_server, anthropic_server), tokens) as s:
        yield s
