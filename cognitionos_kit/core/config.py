"""Configuration from the environment and an optional ``.env`` file.

Where a ``.env`` comes from: ``dotenv=True`` reads ``./.env`` in the current working folder only
(never a parent folder's), ``dotenv="path/to/.env"`` reads that file, ``dotenv=False`` (or
``COGNITIONOS_DOTENV=0`` in the environment) reads none. The file is read, never loaded into
``os.environ``; real environment variables win over its values.

A provider's base URL and API key must come from the same place: a key exported in the shell is
not sent to a server named by a ``.env`` file (or the other way round) unless
``COGNITIONOS_ALLOW_MIXED_SOURCES=1`` is set in the real environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigurationError, register_secret

DEFAULT_ORDER = ("openai", "anthropic", "simulated")

# Where a value came from, as recorded in the settings (never the value itself for keys).
ENV = "env"  # the process environment (the shell, the notebook server, monkeypatch...)
DOTENV = "dotenv"  # the .env file named by Settings.dotenv_path

_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ProviderSettings:
    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None
    api_key_source: str | None = None  # "env" | "dotenv" | None (not set)
    base_url_source: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.api_key)

    @property
    def sources(self) -> dict[str, str | None]:
        """Where the key and the base URL came from: ``"env"``, ``"dotenv"`` or None (never the key)."""
        return {"api_key": self.api_key_source, "base_url": self.base_url_source}


@dataclass(frozen=True)
class Settings:
    home: Path
    openai: ProviderSettings
    anthropic: ProviderSettings
    dotenv_path: str | None = None  # the .env file that was read (absolute), if any
    home_source: str = "default"  # "argument" | "env" | "dotenv" | "default" (./data)
    # Every variable the .env file set (values included: keep out of reprs and comparisons).
    dotenv_values: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    environ: Mapping[str, str] | None = field(default=None, repr=False, compare=False)  # None: os.environ

    def get(self, name: str, default: str | None = None) -> str | None:
        """A variable as the kit sees it: the real environment first, then the ``.env`` file."""
        env = os.environ if self.environ is None else self.environ
        if name in env:
            return env[name]
        return self.dotenv_values.get(name, default)

    def sources(self) -> dict[str, Any]:
        """Where each setting came from, for ``kit.status()``; never includes a key."""
        return {
            "dotenv": self.dotenv_path,
            "home": self.home_source,
            "openai": self.openai.sources,
            "anthropic": self.anthropic.sources,
        }


def _dotenv_file(dotenv: Any, environ: Mapping[str, str]) -> Path | None:
    """Which ``.env`` file to read, or None."""
    if environ.get("COGNITIONOS_DOTENV", "1").strip().lower() in ("0", "false", "no", "off"):
        return None  # e.g. test runs that must stay offline
    if dotenv is None or dotenv is False:
        return None
    if dotenv is True:
        try:
            path = Path.cwd() / ".env"  # the working folder only: a parent folder's .env is never read
        except OSError:  # the working folder was deleted
            return None
        return path.resolve() if path.is_file() else None
    if isinstance(dotenv, (str, os.PathLike)):
        path = Path(dotenv).expanduser()
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "does not exist"
            raise ConfigurationError(
                f"dotenv={os.fspath(dotenv)!r}: {path.resolve()} {what}. Pass the path of an existing .env file, "
                "dotenv=True to read ./.env if there is one, or dotenv=False to read none."
            )
        return path.resolve()
    raise ConfigurationError(f"dotenv must be True, False or the path of a .env file, got {dotenv!r}")


def _read_dotenv(path: Path) -> dict[str, str]:
    from dotenv import dotenv_values

    try:
        values = dotenv_values(path)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigurationError(f"cannot read the .env file {path}: {type(e).__name__}: {e}") from None
    return {k: v for k, v in values.items() if v is not None}  # a bare "NAME" line sets nothing


def load_settings(
    home: str | os.PathLike | None = None,
    *,
    dotenv: bool | str | os.PathLike | None = True,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read keys, base URLs and the data folder, and record where each came from.

    Data folder: explicit ``home``, then ``COGNITIONOS_HOME`` (environment, then ``.env``), then
    ``./data``. ``dotenv``: True reads ``./.env`` in the working folder if there is one (parent
    folders are never searched); a path reads that file (it must exist); False reads none, as does
    ``COGNITIONOS_DOTENV=0``. Environment variables win over ``.env`` values; ``os.environ`` is
    never modified. ``environ`` replaces ``os.environ`` as the environment (for tests and tools).

    Raises ConfigurationError when a provider's base URL and API key come from different sources
    (one from the ``.env`` file, the other from the environment), unless the real environment sets
    ``COGNITIONOS_ALLOW_MIXED_SOURCES=1``.
    """
    env = os.environ if environ is None else environ
    path = _dotenv_file(dotenv, env)
    file_values = _read_dotenv(path) if path else {}
    where = {ENV: "the shell environment", DOTENV: str(path)}

    def lookup(name: str) -> tuple[str | None, str | None]:
        """(value, source): a variable set in the environment wins, even set to "" (as load_dotenv did)."""
        if name in env:
            return (env[name] or None), (ENV if env[name] else None)
        if name in file_values:
            return (file_values[name] or None), (DOTENV if file_values[name] else None)
        return None, None

    # Read from the real environment only: a .env file must not be able to switch the check off.
    allow_mixed = env.get("COGNITIONOS_ALLOW_MIXED_SOURCES", "").strip().lower() in _TRUE

    def provider(prefix: str) -> ProviderSettings:
        key, key_src = lookup(f"{prefix}_API_KEY")
        url, url_src = lookup(f"{prefix}_BASE_URL")
        register_secret(key)  # before any check: redacted everywhere, whatever happens next
        if key_src and url_src and key_src != url_src and not allow_mixed:
            raise ConfigurationError(
                f"{prefix}_BASE_URL comes from {where[url_src]} but {prefix}_API_KEY from {where[key_src]}: "
                "the kit will not send a key to a server named by a different source. Put both in the same "
                "place (both in .env, or both exported), or pass Kit(dotenv=False) to ignore the .env, or set "
                "COGNITIONOS_ALLOW_MIXED_SOURCES=1 if you trust this combination."
            )
        return ProviderSettings(api_key=key, base_url=url, api_key_source=key_src, base_url_source=url_src)

    openai, anthropic = provider("OPENAI"), provider("ANTHROPIC")
    if home:
        root, home_src = home, "argument"
    else:
        root, home_src = lookup("COGNITIONOS_HOME")
        if not root:
            root, home_src = "data", "default"
    return Settings(
        home=Path(root).expanduser().resolve(),
        openai=openai,
        anthropic=anthropic,
        dotenv_path=str(path) if path else None,
        home_source=home_src or "default",
        dotenv_values=file_values,
        environ=environ,
    )
