"""Client mode: whether a new ``Kit`` is a client of a team server (``cognitionos-kit serve``), and
of which one.

``Kit(server="http://...", token="...")`` is a client; so is a plain ``Kit()`` when
``COGNITIONOS_SERVER`` is set (in the environment, or in the ``.env`` the Kit would read), with
its token from ``COGNITIONOS_TOKEN``. ``Kit(server=False)`` is always local. A Kit given provider
objects (``providers=[SimulatedProvider(...)]``) runs them in this process: with
``COGNITIONOS_SERVER`` set it is local and warns; with ``server=`` it is an error (a client Kit
takes no provider settings).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from .config import dotenv_file, read_dotenv
from .errors import ConfigurationError, KitWarning, register_secret, warn_user

__all__ = ["SERVER_ENV", "TOKEN_ENV", "ServerChoice", "served_by", "resolve_server"]

SERVER_ENV, TOKEN_ENV = "COGNITIONOS_SERVER", "COGNITIONOS_TOKEN"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ServerChoice(NamedTuple):
    """The team server a client Kit uses (``repr`` never shows the token)."""

    url: str
    token: str
    source: str  # where the server came from: "argument", "env" or "dotenv"

    def __repr__(self) -> str:
        return f"ServerChoice(url={self.url!r}, source={self.source!r})"


def _settings(dotenv: Any) -> dict[str, str]:
    """The two settings from the environment, else from the ``.env`` the Kit would read."""
    found = {k: os.environ[k] for k in (SERVER_ENV, TOKEN_ENV) if os.environ.get(k, "").strip()}
    if len(found) < 2:
        path = dotenv_file(dotenv, os.environ)
        if path is not None:
            values = read_dotenv(path)
            found = {**{k: values[k] for k in (SERVER_ENV, TOKEN_ENV) if values.get(k, "").strip()}, **found}
    return found


def _has_objects(providers: Any) -> bool:
    return providers is not None and not isinstance(providers, str) and any(not isinstance(p, str) for p in providers)


def served_by(kwargs: Mapping[str, Any]) -> bool:
    """Whether ``Kit(**kwargs)`` is a client of a team server (no network: only the settings)."""
    server = kwargs.get("server")
    if server is False:
        return False
    if server is not None:
        return True
    if kwargs.get("token") is not None:
        raise ConfigurationError("token= is for a team server: pass server='http://host:port' too "
                                 f"(or set {SERVER_ENV})")
    if not _settings(kwargs.get("dotenv", True)).get(SERVER_ENV):
        return False
    if _has_objects(kwargs.get("providers")):
        warn_user(f"{SERVER_ENV} is set, but this Kit was given provider objects: they run in this process, so this "
                  "Kit is local (its calls go to its own data folder, not to the team server)", KitWarning)
        return False
    return True


def resolve_server(server: Any, token: Any, dotenv: Any) -> ServerChoice:
    """The checked URL and token of a client Kit; a ConfigurationError says what is missing."""
    settings = _settings(dotenv)
    source = "argument"
    if server is None:
        server, source = settings.get(SERVER_ENV), "env" if os.environ.get(SERVER_ENV, "").strip() else "dotenv"
    if not isinstance(server, str) or not server.strip():
        raise ConfigurationError(f"server must be the team server's URL, like 'http://127.0.0.1:8765', got {server!r}")
    parts = urlsplit(server.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"server must be an http:// or https:// URL with a host, got {server!r}")
    if token is None:
        token = settings.get(TOKEN_ENV)
    if not isinstance(token, str) or not token.strip():
        raise ConfigurationError(
            f"a client Kit needs an API token: Kit(server=..., token=...) or {TOKEN_ENV}; an admin of the server "
            "makes one with: cognitionos-kit tokens create NAME --home DIR")
    token = token.strip()
    register_secret(token)  # masked wherever the kit redacts (errors, logs)
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        warn_user(f"the team server {parts.hostname} is reached over plain http: the token travels unencrypted; "
                  "put TLS in front of it (see the README) and use https://", KitWarning)
    return ServerChoice(server.strip().rstrip("/"), token, source)
