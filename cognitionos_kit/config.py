"""Configuration from the environment and an optional ``.env`` file."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import register_secret

DEFAULT_ORDER = ("openai", "anthropic", "simulated")


@dataclass(frozen=True)
class ProviderSettings:
    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.api_key)


@dataclass(frozen=True)
class Settings:
    home: Path
    openai: ProviderSettings
    anthropic: ProviderSettings
    dotenv_path: str | None = None


def load_settings(home: str | os.PathLike | None = None, *, dotenv: bool | str = True) -> Settings:
    """Read keys, base URLs and the data folder.

    Order: explicit ``home``, then ``$COGNITIONOS_HOME``, then ``./data``. A ``.env`` file (found
    from the working directory upwards) fills variables that are not already set; real environment
    variables win. ``COGNITIONOS_DOTENV=0`` turns the ``.env`` lookup off.
    """
    dotenv_path = None
    if os.environ.get("COGNITIONOS_DOTENV", "1") == "0":  # e.g. test runs that must stay offline
        dotenv = False
    if dotenv:
        from dotenv import find_dotenv, load_dotenv

        dotenv_path = dotenv if isinstance(dotenv, str) else find_dotenv(usecwd=True) or None
        if dotenv_path:
            load_dotenv(dotenv_path, override=False)

    def provider(prefix: str) -> ProviderSettings:
        key = os.environ.get(f"{prefix}_API_KEY") or None
        register_secret(key)
        return ProviderSettings(api_key=key, base_url=os.environ.get(f"{prefix}_BASE_URL") or None)

    root = Path(home or os.environ.get("COGNITIONOS_HOME") or "data").expanduser().resolve()
    return Settings(
        home=root, openai=provider("OPENAI"), anthropic=provider("ANTHROPIC"), dotenv_path=dotenv_path
    )
