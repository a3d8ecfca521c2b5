"""Configuration: ``KitConfig`` (everything a Kit is built from), and the environment and an
optional ``.env`` file (``load_settings``: keys and base URLs).

Where a ``.env`` comes from: ``dotenv=True`` reads ``./.env`` in the current working folder only
(never a parent folder's), ``dotenv="path/to/.env"`` reads that file, ``dotenv=False`` (or
``COGNITIONOS_DOTENV=0`` in the environment) reads none. The file is read, never loaded into
``os.environ``; real environment variables win over its values.

A provider's base URL and API key must come from the same place: a key exported in the shell is
not sent to a server named by a ``.env`` file (or the other way round) unless
``COGNITIONOS_ALLOW_MIXED_SOURCES=1`` is set in the real environment.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .endpoints import Endpoint, check_endpoints, endpoints_from_text, resolve
from .errors import ConfigurationError, redact, register_secret
from .validation import split_keys

if TYPE_CHECKING:
    from ..calls.policy import FallbackOn
    from ..calls.providers.base import Provider
    from ..calls.providers.simulated import LatencyModel

__all__ = ["KitConfig", "PriceOverride", "Settings", "ProviderSettings", "load_settings"]

# Where a value came from, as recorded in the settings (never the value itself for keys).
ENV = "env"  # the process environment (the shell, the notebook server, monkeypatch...)
DOTENV = "dotenv"  # the .env file named by Settings.dotenv_path
ARGUMENT = "argument"  # Kit(api_keys=...): the user's own code, trusted like the environment
KEY_PROVIDERS = {"openai": "OPENAI", "anthropic": "ANTHROPIC"}  # providers that take keys -> variable prefix

_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ProviderSettings:
    api_key: str | None = field(default=None, repr=False)  # the first of ``keys``
    base_url: str | None = None
    api_key_source: str | None = None  # "env" | "dotenv" | "argument" | None (not set)
    base_url_source: str | None = None
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # every key, in the order tried (empty: api_key only)
    credentials: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)  # a Bedrock endpoint's AWS keys

    @property
    def keys(self) -> tuple[str, ...]:
        """Every key, in the order a call tries them (none: empty)."""
        return self.api_keys or ((self.api_key,) if self.api_key else ())

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
    home_source: str = "default"  # "argument" | "env" | "dotenv" | "project" (<root>/data) | "default" (./data)
    # Every variable the .env file set (values included: keep out of reprs and comparisons).
    dotenv_values: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    environ: Mapping[str, str] | None = field(default=None, repr=False, compare=False)  # None: os.environ
    # the named endpoints (core.endpoints), each with its key and where the key came from
    endpoints: tuple[tuple[Endpoint, ProviderSettings], ...] = ()

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
            **{e.name: {"endpoint": e.source, **p.sources} for e, p in self.endpoints},
        }


def dotenv_file(dotenv: Any, environ: Mapping[str, str]) -> Path | None:
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


def read_dotenv(path: Path) -> dict[str, str]:
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
    api_keys: Mapping[str, Sequence[str]] | None = None,
    endpoints: Sequence[Endpoint] = (),
) -> Settings:
    """Read keys, base URLs and the data folder, and record where each came from.

    Data folder: explicit ``home``, then ``COGNITIONOS_HOME`` (environment, then ``.env``), then
    ``data/`` in the project folder (the nearest folder at or above the working one holding
    ``pyproject.toml`` or ``.git``, so a notebook in ``notebooks/``, the demo and a script at the
    root share one), else ``./data``. ``dotenv``: True reads ``./.env`` in the working folder if there is one (parent
    folders are never searched); a path reads that file (it must exist); False reads none, as does
    ``COGNITIONOS_DOTENV=0``. Environment variables win over ``.env`` values; ``os.environ`` is
    never modified. ``environ`` replaces ``os.environ`` as the environment (for tests and tools).

    Keys: ``<P>_API_KEY`` then the comma-separated ``<P>_API_KEYS`` (duplicates dropped), or, for a
    provider named in ``api_keys`` (``KitConfig.api_keys``, already checked), those keys only.

    Endpoints: ``endpoints`` (``KitConfig.endpoints``), then those of ``COGNITIONOS_ENDPOINTS`` with
    other names; each endpoint's key from its ``api_key``, else its key variable (see ``core.endpoints``).

    Raises ConfigurationError when a provider's base URL and API key come from different sources
    (one from the ``.env`` file, the other from the environment), unless the real environment sets
    ``COGNITIONOS_ALLOW_MIXED_SOURCES=1``.
    """
    env = os.environ if environ is None else environ
    path = dotenv_file(dotenv, env)
    file_values = read_dotenv(path) if path else {}
    where = {ENV: "the shell environment", DOTENV: str(path), ARGUMENT: "Kit(api_keys=...)"}

    def lookup(name: str) -> tuple[str | None, str | None]:
        """(value, source): a variable set in the environment wins, even set to "" (as load_dotenv did)."""
        if name in env:
            return (env[name] or None), (ENV if env[name] else None)
        if name in file_values:
            return (file_values[name] or None), (DOTENV if file_values[name] else None)
        return None, None

    # Read from the real environment only: a .env file must not be able to switch the check off.
    allow_mixed = env.get("COGNITIONOS_ALLOW_MIXED_SOURCES", "").strip().lower() in _TRUE

    def provider(prefix: str, given: Sequence[str] | None) -> ProviderSettings:
        found: list[tuple[str, str | None]]
        if given:
            keys, found = tuple(given), [("the API keys", ARGUMENT)]
        else:
            key, key_src = lookup(f"{prefix}_API_KEY")
            listed, list_src = lookup(f"{prefix}_API_KEYS")
            more = split_keys(listed)
            keys = tuple(dict.fromkeys(([key] if key else []) + more))
            found = [(f"{prefix}_API_KEY", key_src), (f"{prefix}_API_KEYS", list_src if more else None)]
        url, url_src = lookup(f"{prefix}_BASE_URL")
        for k in keys:
            register_secret(k)  # before any check: redacted everywhere, whatever happens next
        found = [(name, src) for name, src in found if src]
        trust = {ARGUMENT: ENV}  # the user's own code is as trusted as the shell
        for name, src in found:
            if url_src and src and trust.get(src, src) != url_src and not allow_mixed:
                raise ConfigurationError(
                    f"{prefix}_BASE_URL comes from {where[url_src]} but {name} from {where[src]}: "
                    "the kit will not send a key to a server named by a different source. Put both in the same "
                    "place (both in .env, or both exported), or pass Kit(dotenv=False) to ignore the .env, or set "
                    "COGNITIONOS_ALLOW_MIXED_SOURCES=1 if you trust this combination."
                )
        return ProviderSettings(api_key=keys[0] if keys else None, base_url=url,
                                api_key_source=found[0][1] if found else None, base_url_source=url_src,
                                api_keys=keys if len(keys) > 1 else ())

    given = api_keys or {}
    openai, anthropic = provider("OPENAI", given.get("openai")), provider("ANTHROPIC", given.get("anthropic"))
    listed, listed_src = lookup("COGNITIONOS_ENDPOINTS")
    extra = endpoints_from_text(listed, listed_src or ENV) if listed else ()
    named = {e.name for e in endpoints}
    resolved = []
    for e in (*endpoints, *(e for e in extra if e.name not in named)):
        e, keys, key_src, credentials = resolve(e, lookup, where, allow_mixed)
        resolved.append((e, ProviderSettings(api_key=keys[0] if keys else None, base_url=e.base_url,
                                             api_key_source=key_src, base_url_source=e.source,
                                             api_keys=keys if len(keys) > 1 else (), credentials=credentials)))
    if home:
        root, home_src = os.fspath(home), "argument"
    else:
        found, source = lookup("COGNITIONOS_HOME")
        if found:
            root, home_src = found, source or "env"
        else:
            project = project_folder(Path.cwd())
            root, home_src = (str(project / "data"), "project") if project else ("data", "default")
    return Settings(
        home=Path(root).expanduser().resolve(),
        openai=openai,
        anthropic=anthropic,
        dotenv_path=str(path) if path else None,
        home_source=home_src or "default",
        dotenv_values=file_values,
        environ=environ,
        endpoints=tuple(resolved),
    )


PROJECT_MARKERS = ("pyproject.toml", ".git")


def project_folder(start: Path) -> Path | None:
    """The nearest folder at or above ``start`` holding a project marker (None if there is none)."""
    for folder in (start, *start.parents):
        if any((folder / m).exists() for m in PROJECT_MARKERS):
            return folder
    return None


_SESSION = ["ses_" + os.urandom(6).hex()]


def session_id() -> str:
    """This process's session: every Kit in one kernel or script writes it on its rows."""
    return _SESSION[0]


def _new_session_in_child() -> None:
    _SESSION[0] = "ses_" + os.urandom(6).hex()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_session_in_child)


def view_filters(config: KitConfig, session_id: str) -> dict[str, str]:
    """The filters a Kit's views (usage, spend, log, charts, dashboard) apply by default."""
    views = config.views or ("project" if config.project else "all")
    if views == "session":
        return {"session_id": session_id}
    return {"project": config.project} if views == "project" and config.project else {}


class PriceOverride(NamedTuple):
    """A price set with ``kit.set_price`` (USD per million tokens); ``provider`` None: any."""

    provider: str | None
    model: str
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None
    cache_write_per_mtok: float | None = None


@dataclass(frozen=True)
class KitConfig:
    """Everything a ``Kit`` is built from, checked when made (a ``ConfigurationError`` says what
    is wrong). ``kit.config`` returns the live one (prices set and role models changed since
    included); ``Kit.from_config(config)`` builds an identical Kit, e.g. in a Ray worker.
    Keys come from the environment or ``.env`` (``load_settings``), or from ``api_keys`` (never shown
    in its repr)."""

    home: str | None = None
    providers: tuple[str | Provider, ...] | None = None
    role_models: Mapping[str, Mapping[str, str]] | None = None
    fallback_models: Mapping[str, tuple[str, ...]] | None = None
    fallback_on: FallbackOn = None
    simulate_on_failure: bool = False
    seed: int = 0
    simulated_latency: LatencyModel | None = None
    timeout: float = 60.0
    max_retries: int = 2
    max_retry_wait: float | None = 20.0
    default_max_tokens: int = 1024
    dotenv: bool | str = True
    memory: Mapping[str, Any] | None = None
    prices: tuple[PriceOverride, ...] = ()
    log_text: bool = True
    log_redact: Callable[[str], str] | None = None
    simulated_answers: Any = None  # the simulated provider's canned answers (kit.simulated.script)
    project: str | None = None
    views: str | None = None  # None: "project" with a project, else "all"
    cache: bool | str = "deterministic"  # the response cache for every call (see CallOptions.cache)
    cache_ttl: float | None = None  # seconds a cached answer may be served (None: always)
    # where budgets, rate limits and the response cache live: None (COGNITIONOS_GUARDS, else the
    # data folder), "local", or a team's "redis://..." (it may hold a password: never shown)
    guards: str | None = field(default=None, repr=False)
    # provider -> its keys, tried in order (see calls.providers.keys); replaces <P>_API_KEY(S) for that provider
    api_keys: Mapping[str, tuple[str, ...]] | None = field(default=None, repr=False)
    # named OpenAI-/Anthropic-compatible servers (core.endpoints): a mapping, a file path, or checked Endpoints
    endpoints: tuple[Endpoint, ...] = ()

    def __post_init__(self) -> None:
        # plain, hashable values: paths as str, lists as tuples, a model's one equivalent as a 1-tuple
        if isinstance(self.home, os.PathLike):
            object.__setattr__(self, "home", os.fspath(self.home))
        if isinstance(self.dotenv, os.PathLike):
            object.__setattr__(self, "dotenv", os.fspath(self.dotenv))
        if isinstance(self.providers, list):
            object.__setattr__(self, "providers", tuple(self.providers))
        if isinstance(self.fallback_models, Mapping):
            object.__setattr__(self, "fallback_models", {
                k: (v,) if isinstance(v, str) else tuple(v) if isinstance(v, (list, tuple)) else v
                for k, v in self.fallback_models.items()})
        if self.home is not None and not isinstance(self.home, str):
            raise ConfigurationError(f"home must be a folder path, got {type(self.home).__name__}")
        if self.timeout is None or not isinstance(self.timeout, Real) or isinstance(self.timeout, bool) \
                or not self.timeout > 0 or math.isnan(self.timeout) or math.isinf(self.timeout):
            raise ConfigurationError(
                "timeout must be a positive number of seconds (it bounds each attempt, retries included), got "
                f"{self.timeout!r}"
                + ("; there is no 'wait forever': pass a large number instead" if self.timeout is None else "")
            )
        if not isinstance(self.max_retries, int) or isinstance(self.max_retries, bool) or self.max_retries < 0:
            raise ConfigurationError(f"max_retries must be an int >= 0, got {self.max_retries!r}")
        if self.max_retry_wait is not None and (not isinstance(self.max_retry_wait, Real)
                                                or isinstance(self.max_retry_wait, bool) or not self.max_retry_wait >= 0):
            raise ConfigurationError(f"max_retry_wait must be a number of seconds >= 0 or None, got {self.max_retry_wait!r}")
        if not isinstance(self.default_max_tokens, int) or isinstance(self.default_max_tokens, bool) \
                or self.default_max_tokens <= 0:
            raise ConfigurationError(f"default_max_tokens must be a positive int, got {self.default_max_tokens!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigurationError(f"seed must be an int, got {self.seed!r}")
        if not isinstance(self.simulate_on_failure, bool):
            raise ConfigurationError(f"simulate_on_failure must be True or False, got {self.simulate_on_failure!r}")
        if self.project is not None and (not isinstance(self.project, str) or not self.project.strip()
                                         or len(self.project) > 200):
            raise ConfigurationError(f"project must be a short name such as 'tutorial-01', got {self.project!r}")
        if self.views not in (None, "all", "project", "session"):
            raise ConfigurationError(
                f"views must be 'all', 'project' or 'session' (what kit.usage(), kit.log() and the charts show), "
                f"got {self.views!r}")
        if self.views == "project" and self.project is None:
            raise ConfigurationError("views='project' needs a project: Kit(project='my-study', views='project')")
        if self.cache not in ("deterministic", "refresh") and self.cache is not True and self.cache is not False:
            raise ConfigurationError(f"cache must be 'deterministic', True, False or 'refresh', got {self.cache!r}")
        if self.cache_ttl is not None and (isinstance(self.cache_ttl, bool) or not isinstance(self.cache_ttl, Real)
                                           or not self.cache_ttl > 0):
            raise ConfigurationError(f"cache_ttl must be a positive number of seconds or None, got {self.cache_ttl!r}")
        if self.guards is not None:
            check_guards(self.guards, "guards")
        if self.api_keys is not None:
            object.__setattr__(self, "api_keys", check_api_keys(self.api_keys))
        if self.endpoints is None:
            object.__setattr__(self, "endpoints", ())
        elif not (isinstance(self.endpoints, tuple) and all(isinstance(e, Endpoint) for e in self.endpoints)):
            object.__setattr__(self, "endpoints", check_endpoints(self.endpoints))
        if not isinstance(self.log_text, bool):
            raise ConfigurationError(f"log_text must be True or False, got {self.log_text!r}")
        if self.log_redact is not None and not callable(self.log_redact):
            raise ConfigurationError(f"log_redact must be a function (text) -> text, got {self.log_redact!r}")
        if not isinstance(self.dotenv, (bool, str, os.PathLike)):
            raise ConfigurationError(f"dotenv must be True, False or the path of a .env file, got {self.dotenv!r}")
        if self.providers is not None and (isinstance(self.providers, (str, bytes))
                                           or not isinstance(self.providers, (list, tuple))):
            raise ConfigurationError(f"providers must be a list such as ['openai', 'anthropic'], got {self.providers!r}")
        if self.role_models is not None and (not isinstance(self.role_models, Mapping) or not all(
                isinstance(t, Mapping) for t in self.role_models.values())):
            raise ConfigurationError(
                "role_models maps a provider to {role: model}, e.g. {'openai': {'executor': 'gpt-4.1-mini'}}; "
                f"got {self.role_models!r}"
            )
        if self.fallback_models is not None and not isinstance(self.fallback_models, Mapping):
            raise ConfigurationError(
                "fallback_models maps a model to its equivalents, e.g. {'gpt-4o-mini': 'claude-haiku-5-5'}; "
                f"got {self.fallback_models!r}"
            )


_GUARD_SCHEMES = ("redis://", "rediss://", "unix://")


def check_guards(value: Any, where: str) -> None:
    if not isinstance(value, str) or not (value == "local" or value.startswith(_GUARD_SCHEMES)):
        shown = value if not isinstance(value, str) else value.split("@")[-1]  # never a password
        raise ConfigurationError(
            f"{where} must be 'local' (the data folder) or a Redis URL such as 'redis://host:6379/0', got {shown!r}")


def guards_url(c: KitConfig) -> str | None:
    """The Redis URL budgets, rate limits and the response cache use (None: the data folder):
    ``Kit(guards=...)``, else ``COGNITIONOS_GUARDS``."""
    value = c.guards
    if value is None:
        value = os.environ.get("COGNITIONOS_GUARDS", "").strip() or None
        if value is not None:
            check_guards(value, "COGNITIONOS_GUARDS")
    return None if value in (None, "local") else value


def check_api_keys(value: Any) -> Mapping[str, tuple[str, ...]]:
    """``Kit(api_keys=...)`` as {provider: (key, ...)}; a ConfigurationError that never shows a key."""
    example = "e.g. api_keys={'openai': ['sk-...', 'sk-...']}"
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"api_keys maps a provider to a list of its API keys, {example}; "
                                 f"got a {type(value).__name__}")
    out: dict[str, tuple[str, ...]] = {}
    for name, keys in value.items():
        for k in keys if isinstance(keys, (list, tuple)) else (keys,):
            if isinstance(k, str):
                register_secret(k.strip())  # first: whatever is wrong below, no message shows it
        if name not in KEY_PROVIDERS:
            named = isinstance(name, str) and re.fullmatch(r"[A-Za-z][\w.-]{0,19}", name)
            shown = repr(name) if named else f"(a {type(name).__name__}, not shown: it may be a key)"
            raise ConfigurationError(f"api_keys: unknown provider {redact(shown)}; keys can be given for "
                                     f"{' and '.join(KEY_PROVIDERS)}, {example}")
        where = f"api_keys[{name!r}]"
        if isinstance(keys, str):
            raise ConfigurationError(f"{where} must be a list of keys, not one string: {{{name!r}: ['sk-...']}}")
        if not isinstance(keys, (list, tuple)) or not keys:
            got = "an empty list" if isinstance(keys, (list, tuple)) else f"a {type(keys).__name__}"
            raise ConfigurationError(f"{where} must be a non-empty list of API keys, got {got}; leave {name!r} "
                                     f"out to read {KEY_PROVIDERS[name]}_API_KEY(S) instead")
        for i, k in enumerate(keys):
            if not isinstance(k, str) or not k.strip():
                got = "an empty string" if isinstance(k, str) else f"a {type(k).__name__}"
                raise ConfigurationError(f"{where}[{i}] must be a non-empty string (an API key), got {got}")
            if k.strip() != k or any(c.isspace() for c in k):
                raise ConfigurationError(f"{where}[{i}] contains spaces or line breaks: an API key has none")
        out[name] = tuple(dict.fromkeys(keys))  # the same key twice is tried once
    return out
