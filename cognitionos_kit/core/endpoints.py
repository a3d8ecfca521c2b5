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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import ConfigurationError, register_secret
from .validation import split_keys

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

KINDS = ("openai", "anthropic", "azure", "bedrock", "vertex")
CLOUD_KINDS = ("azure", "bedrock", "vertex")  # through the SDKs' own clients for them
RESERVED_NAMES = ("openai", "anthropic", "simulated")  # the built-in providers
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_FIELDS = ("base_url", "kind", "api_key", "api_key_env", "models", "price_as", "api_version", "region", "project_id")
_EXAMPLE = "e.g. endpoints={'local': 'http://127.0.0.1:8080/v1', 'groq': {'base_url': '...', 'api_key_env': 'GROQ_API_KEY'}}"

# The cloud kinds' settings, read from their SDKs' usual variables when not given:
# field -> variables tried in order
CLOUD_VARIABLES: dict[str, dict[str, tuple[str, ...]]] = {
    "azure": {"base_url": ("AZURE_OPENAI_ENDPOINT",), "api_version": ("OPENAI_API_VERSION",)},
    "bedrock": {"base_url": ("ANTHROPIC_BEDROCK_BASE_URL",), "region": ("AWS_REGION", "AWS_DEFAULT_REGION")},
    "vertex": {"base_url": ("ANTHROPIC_VERTEX_BASE_URL",), "region": ("CLOUD_ML_REGION",),
               "project_id": ("ANTHROPIC_VERTEX_PROJECT_ID",)},
}
_KEY_VARIABLES = {"azure": "AZURE_OPENAI_API_KEY", "bedrock": "AWS_BEARER_TOKEN_BEDROCK"}  # vertex: Google's ADC
_PRICE_TABLES = {"azure": "azure", "bedrock": "aws", "vertex": "google"}  # genai-prices' provider ids
AWS_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@dataclass(frozen=True)
class Endpoint:
    """One named endpoint as configured (checked; the key never shows in a repr)."""

    name: str
    base_url: str | None
    kind: str = "openai"
    api_key: str | None = field(default=None, repr=False)
    api_key_env: str | None = None
    models: tuple[str, ...] | None = None
    price_as: str | None = None
    source: str = "argument"  # where it was defined: "argument" (code, or a file it named), "env", "dotenv"
    api_version: str | None = None  # azure
    region: str | None = None  # bedrock, vertex
    project_id: str | None = None  # vertex
    priced_as: tuple[tuple[str, str], ...] = ()  # models={"my-deployment": "gpt-4o-mini"}: priced as that model

    @property
    def key_variable(self) -> str | None:
        """The variable its key is read from: ``api_key_env``, else its kind's usual one
        (``AZURE_OPENAI_API_KEY``, ``AWS_BEARER_TOKEN_BEDROCK``), else ``<NAME>_API_KEY``
        (None for Vertex: Google's application default credentials)."""
        if self.api_key_env or self.kind not in CLOUD_KINDS:
            return self.api_key_env or key_variable(self.name)
        return _KEY_VARIABLES.get(self.kind)

    @property
    def price_table(self) -> str | None:
        """genai-prices' provider id for it: ``price_as``, else its cloud's, else None (match by URL)."""
        return self.price_as or _PRICE_TABLES.get(self.kind)


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
    kind = fields.get("kind", "openai")
    if kind not in KINDS:
        raise ConfigurationError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    url = fields.get("base_url")
    if (url is not None or kind not in CLOUD_KINDS) and not _is_url(url):
        raise ConfigurationError(f"{where}: base_url must be an http(s) URL such as 'http://127.0.0.1:8080/v1', "
                                 f"got {url!r}")
    extra = {k: fields.get(k) for k in ("api_version", "region", "project_id") if fields.get(k) is not None}
    for k, v in extra.items():
        if k not in CLOUD_VARIABLES.get(kind, {}):
            raise ConfigurationError(f"{where}: {k} is for kind {' or '.join(c for c in CLOUD_KINDS if k in CLOUD_VARIABLES[c])}"
                                     f", not {kind!r}")
        if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z0-9._@:-]{1,100}", v):
            raise ConfigurationError(f"{where}: {k} must be a short name such as 'us-east-1', got {v!r}")
    if key is not None and (not isinstance(key, str) or not key.strip() or any(c.isspace() for c in key.strip())):
        raise ConfigurationError(f"{where}: api_key must be the key as one word (or use api_key_env)")
    env = fields.get("api_key_env")
    if env is not None and (not isinstance(env, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env)):
        raise ConfigurationError(f"{where}: api_key_env must name an environment variable, got {env!r}")
    if key is not None and env is not None:
        raise ConfigurationError(f"{where}: give api_key or api_key_env, not both")
    models = fields.get("models")
    priced: tuple[tuple[str, str], ...] = ()
    if isinstance(models, Mapping):  # {"my-deployment": "gpt-4o-mini"}: served name -> the model it is priced as
        if not all(isinstance(k, str) and k.strip() and isinstance(v, str) and v.strip() for k, v in models.items()):
            raise ConfigurationError(f"{where}: models maps a model (or deployment) name to the model it is priced "
                                     f"as, e.g. {{'prod-mini': 'gpt-4o-mini'}}; got {models!r}")
        priced = tuple((k.strip(), v.strip()) for k, v in models.items())
        models = tuple(k for k, _ in priced)
    elif models is not None:
        if isinstance(models, str) or not isinstance(models, (list, tuple)) or not all(
                isinstance(m, str) and m.strip() for m in models):
            raise ConfigurationError(f"{where}: models must be a list of model names, got {models!r}")
        models = tuple(dict.fromkeys(m.strip() for m in models))
    price_as = fields.get("price_as")
    if price_as is not None and (not isinstance(price_as, str) or not price_as.strip()):
        raise ConfigurationError(f"{where}: price_as names a genai-prices provider such as 'groq', got {price_as!r}")
    return Endpoint(name=name, base_url=url.strip().rstrip("/") if url else None, kind=kind,
                    api_key=key.strip() if key else None, api_key_env=env, models=models, price_as=price_as,
                    source=source, priced_as=priced, **extra)


def _is_url(url: Any) -> bool:
    return isinstance(url, str) and re.fullmatch(r"https?://[^\s/]+(/\S*)?", url.strip()) is not None


Lookup = Callable[[str], "tuple[str | None, str | None]"]


def resolve(e: Endpoint, lookup: Lookup, where: Mapping[str, str], allow_mixed: bool,
            ) -> tuple[Endpoint, tuple[str, ...], str | None, dict[str, str]]:
    """An endpoint with its cloud settings filled from their usual variables, its keys, where the
    keys came from, and (Bedrock) AWS credentials found in the environment or ``.env``.
    ``lookup(name)`` -> (value, source). Refuses a key from another source than the endpoint's
    (a ``.env`` must not redirect a shell key) unless ``allow_mixed``."""
    filled: dict[str, str] = {}
    for fname, variables in CLOUD_VARIABLES.get(e.kind, {}).items():
        if getattr(e, fname) is None:
            for var in variables:
                value, _ = lookup(var)
                if value:
                    filled[fname] = value.strip().rstrip("/") if fname == "base_url" else value.strip()
                    break
    if filled:
        e = replace(e, **filled)  # type: ignore[arg-type]  # only str fields are filled
    missing = [f for f in CLOUD_VARIABLES.get(e.kind, {}) if f != "base_url" and getattr(e, f) is None]
    if e.kind == "azure" and e.base_url is None:
        missing.insert(0, "base_url")
    if missing:
        vars_ = " / ".join(CLOUD_VARIABLES[e.kind][m][0] for m in missing)
        raise ConfigurationError(f"endpoint {e.name!r} ({e.kind}) needs {', '.join(missing)}: give "
                                 f"{' and '.join(missing)} in its fields or set {vars_}")
    if e.base_url is not None and not _is_url(e.base_url):
        raise ConfigurationError(f"endpoint {e.name!r}: base_url must be an http(s) URL, got {e.base_url!r}")
    keys: tuple[str, ...] = ()
    key_src: str | None = None
    if e.api_key:
        keys, key_src = (e.api_key,), e.source
    elif e.key_variable:
        value, key_src = lookup(e.key_variable)
        keys = tuple(dict.fromkeys(split_keys(value)))
    credentials: dict[str, str] = {}
    if e.kind == "bedrock" and not keys:
        for var in AWS_CREDENTIALS:
            value, src = lookup(var)
            if value:
                credentials[var] = value.strip()
                key_src = key_src or src
    for k in (*keys, *(v for n, v in credentials.items() if n != "AWS_ACCESS_KEY_ID")):
        register_secret(k)
    url_src = None if e.source == "argument" else e.source  # a URL written in code is trusted like the shell
    if url_src and key_src and key_src != url_src and not allow_mixed:
        raise ConfigurationError(
            f"endpoint {e.name!r} comes from {where.get(url_src, url_src)} but its key ({e.key_variable}) from "
            f"{where.get(key_src, key_src)}: the kit will not send a key to a server named by a different source. "
            "Put both in the same place, or set COGNITIONOS_ALLOW_MIXED_SOURCES=1 if you trust this combination.")
    return e, keys, (key_src if keys or credentials else None), credentials
