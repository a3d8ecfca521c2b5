"""Secrets and input: which .env is read, and a key is never sent to a server named by another source."""

from __future__ import annotations

import os

import pytest
from conftest import OPENAI_KEY

from cognitionos_kit import Kit
from cognitionos_kit.core.config import load_settings
from cognitionos_kit.core.errors import ConfigurationError, redact

EVIL = "http://127.0.0.1:9/v1"  # a server named by a .env the user did not write
KEY = "sk-test-shellkey-0123456789abcdef"


@pytest.fixture(autouse=True)
def _no_override(monkeypatch):
    monkeypatch.delenv("COGNITIONOS_ALLOW_MIXED_SOURCES", raising=False)


def _write(path, **values):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


def test_parent_folder_dotenv_is_ignored(tmp_path, monkeypatch):
    _write(tmp_path / ".env", OPENAI_BASE_URL=EVIL, COGNITIONOS_HOME=str(tmp_path / "parent-home"))
    child = tmp_path / "project"
    child.mkdir()
    monkeypatch.chdir(child)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    s = load_settings()  # the parent's base URL would have received the shell key
    assert s.dotenv_path is None and s.openai.base_url is None and s.openai.api_key == KEY
    assert s.home == (child / "data").resolve() and s.home_source == "default"
    kit = Kit(dotenv=True)
    assert kit.settings.openai.base_url is None


def test_working_folder_dotenv_is_read(tmp_path, monkeypatch):
    env = _write(tmp_path / ".env", OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL="http://127.0.0.1:1/v1",
                 COGNITIONOS_HOME=str(tmp_path / "from-dotenv"))
    s = load_settings()
    assert s.dotenv_path == str(env.resolve())
    assert s.openai.api_key == OPENAI_KEY and s.openai.base_url == "http://127.0.0.1:1/v1"
    assert s.openai.sources == {"api_key": "dotenv", "base_url": "dotenv"}
    assert s.anthropic.sources == {"api_key": None, "base_url": None}
    assert s.home == (tmp_path / "from-dotenv").resolve() and s.home_source == "dotenv"  # COGNITIONOS_HOME from .env
    assert s.sources()["openai"]["api_key"] == "dotenv" and OPENAI_KEY not in repr(s) + str(s.sources())
    kit = Kit()
    assert kit.home == (tmp_path / "from-dotenv").resolve() and kit.chain[0] == "openai"
    assert redact(f"key {OPENAI_KEY}") == "key [REDACTED]"


def test_dotenv_does_not_touch_os_environ(tmp_path):
    _write(tmp_path / ".env", OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL="http://127.0.0.1:1/v1",
           SOMETHING_ELSE="x", COGNITIONOS_HOME=str(tmp_path / "h"))
    before = dict(os.environ)
    s = load_settings()
    Kit()
    assert dict(os.environ) == before
    assert s.get("SOMETHING_ELSE") == "x" and s.get("NOT_SET") is None


def test_environment_wins_over_dotenv(tmp_path, monkeypatch):
    _write(tmp_path / ".env", OPENAI_API_KEY="sk-test-fromfile-0123456789", OPENAI_BASE_URL=EVIL,
           COGNITIONOS_HOME=str(tmp_path / "file-home"))
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:2/v1")
    monkeypatch.setenv("COGNITIONOS_HOME", str(tmp_path / "env-home"))
    s = load_settings()
    assert s.openai.api_key == KEY and s.openai.base_url == "http://127.0.0.1:2/v1"
    assert s.openai.sources == {"api_key": "env", "base_url": "env"}
    assert s.home == (tmp_path / "env-home").resolve() and s.home_source == "env"
    assert load_settings(tmp_path / "arg").home_source == "argument"


def test_given_dotenv_path_is_read(tmp_path, monkeypatch):
    _write(tmp_path / ".env", OPENAI_BASE_URL=EVIL)  # the working folder's: not read when a path is given
    given = _write(tmp_path / "conf" / "keys.env", OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL="http://127.0.0.1:3/v1")
    for arg in (str(given), given, os.path.relpath(given)):
        s = load_settings(dotenv=arg)
        assert s.dotenv_path == str(given.resolve()) and s.openai.base_url == "http://127.0.0.1:3/v1"
    kit = Kit(tmp_path / "home", dotenv=str(given))
    assert kit.settings.openai.api_key == OPENAI_KEY and kit.chain[0] == "openai"


def test_missing_given_dotenv_raises_and_names_it(tmp_path):
    missing = tmp_path / "nowhere" / "prod.env"
    with pytest.raises(ConfigurationError, match="prod.env") as e:
        load_settings(dotenv=str(missing))
    assert str(missing) in str(e.value)
    with pytest.raises(ConfigurationError, match="folder"):
        Kit(tmp_path / "home", dotenv=str(tmp_path))
    with pytest.raises(ConfigurationError, match="dotenv must be"):
        load_settings(dotenv=3)


def test_dotenv_off(tmp_path, monkeypatch):
    _write(tmp_path / ".env", OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL=EVIL)
    assert load_settings(dotenv=False).openai.api_key is None
    assert Kit(tmp_path / "h", dotenv=False).chain == ["simulated"]
    monkeypatch.setenv("COGNITIONOS_DOTENV", "0")
    assert load_settings().dotenv_path is None
    assert load_settings(dotenv=str(tmp_path / ".env")).openai.api_key is None  # the switch wins over a path too


@pytest.mark.parametrize("direction", ["url_in_dotenv", "key_in_dotenv"])
@pytest.mark.parametrize("prefix", ["OPENAI", "ANTHROPIC"])
def test_mixed_sources_are_refused(tmp_path, monkeypatch, direction, prefix):
    if direction == "url_in_dotenv":
        env = _write(tmp_path / ".env", **{f"{prefix}_BASE_URL": EVIL})
        monkeypatch.setenv(f"{prefix}_API_KEY", KEY)
        first, second = f"{prefix}_BASE_URL comes from {env.resolve()}", f"{prefix}_API_KEY from the shell environment"
    else:
        env = _write(tmp_path / ".env", **{f"{prefix}_API_KEY": KEY})
        monkeypatch.setenv(f"{prefix}_BASE_URL", EVIL)
        first, second = f"{prefix}_BASE_URL comes from the shell environment", f"{prefix}_API_KEY from {env.resolve()}"
    for build in (load_settings, lambda: Kit(tmp_path / "home")):
        with pytest.raises(ConfigurationError) as e:
            build()
        msg = str(e.value)
        assert first in msg and second in msg, msg
        assert "COGNITIONOS_ALLOW_MIXED_SOURCES=1" in msg and "dotenv=False" in msg
        assert KEY not in msg and KEY not in repr(e.value)
    # ways out the message names
    assert set(getattr(load_settings(dotenv=False), prefix.lower()).sources.values()) == {"env", None}
    monkeypatch.setenv("COGNITIONOS_ALLOW_MIXED_SOURCES", "1")
    s = getattr(load_settings(), prefix.lower())
    assert s.api_key == KEY and s.base_url == EVIL
    assert set(s.sources.values()) == {"env", "dotenv"}


def test_allow_mixed_sources_cannot_come_from_dotenv(tmp_path, monkeypatch):
    _write(tmp_path / ".env", OPENAI_BASE_URL=EVIL, COGNITIONOS_ALLOW_MIXED_SOURCES="1")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with pytest.raises(ConfigurationError, match="different source"):
        load_settings()


def test_same_source_and_single_values_are_fine(tmp_path, monkeypatch):
    # both exported
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:4/v1")
    assert load_settings(dotenv=False).openai.sources == {"api_key": "env", "base_url": "env"}
    # both in .env, while the other provider's key is exported: no mix within a provider
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-shell-0123456789")
    _write(tmp_path / ".env", OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL="http://127.0.0.1:4/v1")
    s = load_settings()
    assert s.openai.sources == {"api_key": "dotenv", "base_url": "dotenv"}
    assert s.anthropic.sources == {"api_key": "env", "base_url": None}
    # a base URL alone (a local server, no key) and a key alone
    _write(tmp_path / ".env", OPENAI_BASE_URL="http://127.0.0.1:4/v1")
    s = load_settings()
    assert s.openai.api_key is None and s.openai.sources == {"api_key": None, "base_url": "dotenv"}
    assert Kit(tmp_path / "h").chain[0] == "openai"
    _write(tmp_path / ".env", OPENAI_API_KEY=OPENAI_KEY)
    assert load_settings().openai.sources == {"api_key": "dotenv", "base_url": None}


def test_empty_exported_variable_blocks_dotenv_value(tmp_path, monkeypatch):
    # as load_dotenv(override=False) did: a variable set in the environment, even to "", wins
    _write(tmp_path / ".env", OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL=EVIL)
    monkeypatch.setenv("OPENAI_API_KEY", "")
    s = load_settings()
    assert s.openai.api_key is None and s.openai.sources == {"api_key": None, "base_url": "dotenv"}


def test_dotenv_served_calls_use_its_key(tmp_path, openai_server):
    _write(tmp_path / ".env", OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL=openai_server.base_url)
    kit = Kit(tmp_path / "home", max_retries=0)
    try:
        assert kit.complete("hi").provider == "openai"
        assert openai_server.requests[-1].headers["authorization"] == f"Bearer {OPENAI_KEY}"
        assert "OPENAI_API_KEY" not in os.environ
    finally:
        kit.close()
