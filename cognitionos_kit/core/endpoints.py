"""Named endpoints: OpenAI- (or Anthropic-) compatible servers beside the built-in providers.

``Kit(endpoints={"local": "http://127.0.0.1:8080/v1", "groq": {...}})``, a TOML or JSON file
(``Kit(endpoints="endpoints.toml")``), or ``COGNITIONOS_ENDPOINTS`` in the environment or ``.env``
(``local=http://127.0.0.1:8080/v1,groq=https://api.groq.com/openai/v1``, or the path of such a
file). Each endpoint becomes a provider of that name: ``model="local:qwen2.5-7b"`` selects it, and
its rows in the ledger say ``provider="local"``.

An endpoint's fields (a bare string is its ``base_url``):

* ``base_url``: the server's API root (``http://host:port/v1`` for OpenAI-compatible servers);
* ``kind``: ``"openai"`` (default: chat completions) or ``"anthropic"`` (the Messages API);
* ``api_key``: the key itself (never shown), or ``api_key_env``: the variable holding it. With
  neither, ``<NAME>_API_KEY`` is used when set (``GROQ_API_KEY`` for ``groq``), else no key is sent
  (local servers need none). A named ``api_key_env`` that is not set leaves the endpoint unconfigured;
* ``models``: the models it serves, when the server cannot list them (else its ``/models`` is asked,
  lazily, see ``calls.discovery``);
* ``price_as``: whose genai-prices table prices its models (``"groq"``, ``"together"``...). Default:
  the provider genai-prices matches to ``base_url``; none (a local server) leaves its calls unpriced
  (cost NULL) until ``kit.set_price(..., provider=NAME)``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigurationError, register_secret

__all__ = ["Endpoint", "check_endpoints", "endpoints_from_text", "KINDS", "RESERVED_NAMES", "key_variable", "RECIPES"]

# Well-known OpenAI-compatible servers: ``Kit(endpoints={"groq": RECIPES["groq"]})``. Local servers
# need no key; hosted ones read theirs from the variable named (the vendors' documented names).
# genai-prices matches the hosted ones' base URLs to their price tables (tests/test_endpoints.py).
RECIPES: dict[str, dict[str, str]] = {
    "ollama": {"base_url": "http://localhost:11434/v1"},
    "vllm": {"base_url": "http://localhost:8000/v1"},
    "llamacpp": {"base_url": "http://127.0.0.1:8080/v1"},
    "groq": {"base_url": "https://api.groq.com/openai/v1", "api_key_env": "GROQ_API_KEY"},
    "together": {"base_url": "https://api.together.xyz/v1", "api_key_env": "TOGETHER_API_KEY"},
    "deepseek": {"base_url": "https://api.deepseek.com/v1", "api_key_env": "DEEPSEEK_API_KEY"},
    "mistral": {"base_url": "https://api.mistral.ai/v1", "api_key_env": "MISTRAL_API_KEY"},
    "gemini": {"base_url": "https://generativelanguage.googleapis.com/v1beta/openai", "api_key_env": "GEMINI_API_KEY"},
}

KINDS = ("openai", "anthropic")
RESERVED_NAMES = ("openai", "anthropic", "simulated")  # the built-in providers
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_FIELDS = ("base_url", "kind", "api_key", "api_key_env", "models", "price_as")
_EXAMPLE = "e.g. endpoints={'local': 'http://127.0.0.1:8080/v1', 'groq': {'base_url': '...', 'api_key_env': 'GROQ_API_KEY'}}"


@dataclass(frozen=True)
class Endpoint:
    """One named endpoint as configured (checked; the key never shows in a repr)."""

    name: str
    base_url: str
    kind: str = "openai"
    api_key: str | None = field(default=None, repr=False)
    api_key_env: str | None = None
    models: tuple[str, ...] | None = None
    price_as: str | None = None
    source: str = "argument"  # where it was defined: "argument" (code, or a file it named), "env", "dotenv"

    @property
    def key_variable(self) -> str:
        """The variable its key is read from (``api_key_env``, else ``<NAME>_API_KEY``)."""
        return self.api_key_env or key_variable(self.name)


def key_variable(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper()) + "_API_KEY"


def check_endpoints(value: Any, *, source: str = "argument") -> tuple[Endpoint, ...]:
    """``Kit(endpoints=...)`` as checked ``Endpoint`` objects: a mapping name -> base URL or fields,
    a sequence of ``Endpoint``, or the path of a TOML/JSON file holding the mapping."""
    if isinstance(value, (str, os.PathLike)):
        return _from_file(Path(value).expanduser(), source)
    if isinstance(value, (list, tuple)) and all(isinstance(e, Endpoint) for e in value):
        out = tuple(value)
    elif isinstance(value, Mapping):
        out = tuple(_one(name, spec, source) for name, spec in value.items())
    else:
        raise ConfigurationError(f"endpoints maps a name to a base URL or to its fields, {_EXAMPLE}; "
                                 f"got a {type(value).__name__}")
    names = [e.name for e in out]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"endpoints: a name is used twice ({names})")
    return out


def endpoints_from_text(text: str, source: str) -> tuple[Endpoint, ...]:
    """``COGNITIONOS_ENDPOINTS``: ``name=url`` pairs (comma- or semicolon-separated), or a file path."""
    text = text.strip()
    if not text:
        return ()
    if "=" not in text:
        return _from_file(Path(text).expanduser(), source)
    pairs: dict[str, str] = {}
    for part in re.split(r"[,;]\s*", text):
        if not part.strip():
            continue
        name, sep, url = part.partition("=")
        if not sep:
            raise ConfigurationError(f"COGNITIONOS_ENDPOINTS: {part.strip()!r} is not name=url "
                                     "(e.g. local=http://127.0.0.1:8080/v1,groq=https://api.groq.com/openai/v1)")
        pairs[name.strip()] = url.strip()
    return check_endpoints(pairs, source=source)


def _from_file(path: Path, source: str) -> tuple[Endpoint, ...]:
    if not path.is_file():
        raise ConfigurationError(f"endpoints file {path} does not exist: pass a TOML or JSON file mapping names to "
                                 "base URLs or fields, or the mapping itself")
    try:
        raw = path.read_bytes()
        if path.suffix.lower() == ".json":
            data = json.loads(raw)
        else:
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - Python 3.10
                import tomli as tomllib  # type: ignore[import-not-found]
            data = tomllib.loads(raw.decode("utf-8"))
    except (OSError, ValueError) as exc:  # tomllib.TOMLDecodeError and json's errors are ValueErrors
        raise ConfigurationError(f"cannot read the endpoints file {path}: {type(exc).__name__}: {exc}") from None
    if isinstance(data, Mapping) and isinstance(data.get("endpoints"), Mapping):
        data = data["endpoints"]  # [endpoints.local] tables, or a top-level mapping
    return check_endpoints(data, source=source)


def _one(name: Any, spec: Any, source: str) -> Endpoint:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(f"endpoint name {name!r}: use a short lower-case name such as 'local' or 'groq' "
                                 "(letters, digits, '-' and '_'; it prefixes model names: 'local:qwen2.5-7b')")
    if name in RESERVED_NAMES:
        raise ConfigurationError(f"endpoint name {name!r} is a built-in provider: choose another name (set "
                                 f"{name.upper()}_BASE_URL to move the built-in one)")
    where = f"endpoints[{name!r}]"
    fields = {"base_url": spec} if isinstance(spec, str) else spec
    if not isinstance(fields, Mapping):
        raise ConfigurationError(f"{where} must be a base URL or a mapping of its fields ({', '.join(_FIELDS)}), "
                                 f"got a {type(spec).__name__}")
    key = fields.get("api_key")
    if isinstance(key, str):
        register_secret(key.strip())  # first: no message below shows it
    unknown = [k for k in fields if k not in _FIELDS]
    if unknown:
        raise ConfigurationError(f"{where}: unknown field(s) {', '.join(map(str, unknown))}; an endpoint takes "
                                 f"{', '.join(_FIELDS)}")
    url = fields.get("base_url")
    if not isinstance(url, str) or not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url.strip()):
        raise ConfigurationError(f"{where}: base_url must be an http(s) URL such as 'http://127.0.0.1:8080/v1', "
                                 f"got {url!r}")
    kind = fields.get("kind", "openai")
    if kind not in KINDS:
        raise ConfigurationError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if key is not None and (not isinstance(key, str) or not key.strip() or any(c.isspace() for c in key.strip())):
        raise ConfigurationError(f"{where}: api_key must be the key as one word (or use api_key_env)")
    env = fields.get("api_key_env")
    if env is not None and (not isinstance(env, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env)):
        raise ConfigurationError(f"{where}: api_key_env must name an environment variable, got {env!r}")
    if key is not None and env is not None:
        raise ConfigurationError(f"{where}: give api_key or api_key_env, not both")
    models = fields.get("models")
    if models is not None:
        if isinstance(models, str) or not isinstance(models, (list, tuple)) or not all(
                isinstance(m, str) and m.strip() for m in models):
            raise ConfigurationError(f"{where}: models must be a list of model names, got {models!r}")
        models = tuple(dict.fromkeys(m.strip() for m in models))
    price_as = fields.get("price_as")
    if price_as is not None and (not isinstance(price_as, str) or not price_as.strip()):
        raise ConfigurationError(f"{where}: price_as names a genai-prices provider such as 'groq', got {price_as!r}")
    return Endpoint(name=name, base_url=url.strip().rstrip("/"), kind=kind, api_key=key.strip() if key else None,
                    api_key_env=env, models=models, price_as=price_as, source=source)
