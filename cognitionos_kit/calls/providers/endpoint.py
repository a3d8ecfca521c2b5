"""A named endpoint (``core.endpoints``) as a provider: the OpenAI or Anthropic provider under
the endpoint's name, base URL and key, so routing, fallback and the ledger treat it like the
built-in ones (its rows say ``provider="local"``). The cloud kinds use the SDKs' own clients:
``openai.AzureOpenAI`` (deployments, ``api-version``, the ``api-key`` header),
``anthropic.AnthropicBedrock`` (invoke paths, SigV4 or a Bedrock API key) and
``anthropic.AnthropicVertex`` (Vertex paths, a Google access token)."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from typing import Any

from ...core.config import ProviderSettings
from ...core.endpoints import Endpoint
from ...core.errors import ConfigurationError
from ...core.types import ProviderRequest, Usage
from .anthropic import AnthropicProvider
from .base import SDKProvider
from .openai import OpenAIProvider

__all__ = ["endpoint_provider", "EndpointMixin"]


class EndpointMixin:
    """What an endpoint adds to its kind's provider: its name, its configuration and a
    ``configured`` that needs a key only when the endpoint named a variable for one."""

    endpoint: Endpoint
    _settings: ProviderSettings
    listable = True  # asks the server's /models (the cloud kinds list only what is configured)

    @property
    def configured(self) -> bool:
        return bool(self._settings.api_key) or self.endpoint.api_key_env is None

    @property
    def where(self) -> str:
        """How a message names it: ``endpoint 'local' (http://127.0.0.1:8080/v1)``."""
        return f"endpoint {self.endpoint.name!r} ({self.endpoint.base_url or self.endpoint.kind})"


# Where OpenAI-compatible servers count tokens with the model's own tokenizer: (path, relative to
# the server root or "/v1"-relative, body) tried in order; the first that answers is kept.
# llama-cpp-python: POST /extras/tokenize/count {"input"} -> {"count"}; llama.cpp's server:
# POST /tokenize {"content"} -> {"tokens"}; vLLM: POST /tokenize {"model", "prompt"} -> {"count"}.
_TOKENIZERS = (("root", "/extras/tokenize/count", "input"), ("root", "/tokenize", "content"),
               ("root", "/tokenize", "prompt"))


class OpenAIEndpoint(EndpointMixin, OpenAIProvider):
    """An OpenAI-compatible server (llama.cpp, vLLM, Ollama, Groq, Together, ...)."""

    _tokenizer: tuple[str, str] | None = None  # (url, body key) once found
    _no_tokenizer = False

    def count_usage(self, req: ProviderRequest, completion_text: str) -> Usage | None:
        """Usage the server did not send (a llama.cpp stream), counted by the server itself when it
        has a tokenizer endpoint: the answer by its tokenizer, the prompt by a one-token request with
        the same messages (the chat template is the server's, which a tokenizer call would leave out;
        llama.cpp reuses the prompt it just evaluated) when the server is on this machine or a private
        network, else by its tokenizer over the texts. None: no tokenizer (the kit uses tiktoken)."""
        counts = self.count_tokens([completion_text], req.model)
        if counts is None:
            return None
        # elsewhere than this machine or a private network the request could be billed, and no row records it
        prompt = self._prompt_by_server(req) if _on_this_network(self.endpoint.base_url) else None
        if prompt is None:
            prompt = sum(self.count_tokens([req.system or "", *(m.content for m in req.messages)], req.model) or [0])
        return Usage(prompt_tokens=prompt, completion_tokens=counts[0], estimated=True,
                     counted_by=f"{self.name} tokenizer")

    def _prompt_by_server(self, req: ProviderRequest) -> int | None:
        """The prompt tokens the server reports for a one-token request with ``req``'s messages."""
        try:
            params = self._params(replace(req, max_tokens=1, stream=False))
            out = self.client.post("/chat/completions", body=params, cast_to=object,
                                   options={"timeout": 10.0, "max_retries": 0})
        except Exception:  # noqa: BLE001 - the count stays an estimate: the texts by the tokenizer
            return None
        usage = out.get("usage") if isinstance(out, dict) else None
        reported = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        return reported if isinstance(reported, int) and reported >= 0 else None

    def count_tokens(self, texts: list[str], model: str) -> list[int] | None:
        """Tokens in each text by the model's own tokenizer, when the server has an endpoint for it;
        None otherwise (found once: a server without one is not asked again)."""
        if self._no_tokenizer or not self.endpoint.base_url:
            return None
        candidates = [self._tokenizer] if self._tokenizer else [self._tokenizer_url(*t) for t in _TOKENIZERS]
        for url, key in candidates:
            try:
                got = [0 if not t else self._count(url, key, t, model) for t in texts]
            except Exception:  # noqa: BLE001 - no such endpoint (404), a refused body: try the next, then tiktoken
                continue
            counts = [c for c in got if c is not None]
            if len(counts) == len(got):  # every answer was a count
                self._tokenizer = (url, key)
                return counts
        self._no_tokenizer = self._tokenizer is None
        return None

    def _tokenizer_url(self, where: str, path: str, key: str) -> tuple[str, str]:
        base = str(self.endpoint.base_url)
        root = base[:-3] if base.endswith("/v1") else base
        return (base if where == "v1" else root) + path, key

    def _count(self, url: str, key: str, text: str, model: str) -> int | None:
        """The server's count of ``text`` at ``url`` (None: its answer is not a count)."""
        body: dict[str, Any] = {key: text} if key == "content" else {key: text, "model": model}
        out = self.client.post(url, body=body, cast_to=object, options={"timeout": 3.0, "max_retries": 0})
        if isinstance(out, dict) and isinstance(out.get("count"), int):
            return int(out["count"])
        if isinstance(out, dict) and isinstance(out.get("tokens"), list):
            return len(out["tokens"])
        return None


class AnthropicEndpoint(EndpointMixin, AnthropicProvider):
    """A server speaking Anthropic's Messages API."""

    def _kwargs(self) -> dict[str, Any]:
        return {**super()._kwargs(), "api_key": self.api_key or "no-key-needed"}


class AzureEndpoint(EndpointMixin, OpenAIProvider):
    """Azure OpenAI through ``openai.AzureOpenAI``: the model name is the deployment's."""

    sync_client_name, async_client_name = "AzureOpenAI", "AsyncAzureOpenAI"
    listable = False

    @property
    def configured(self) -> bool:
        return bool(self._settings.api_key)

    def _kwargs(self) -> dict[str, Any]:
        return dict(api_key=self.api_key, azure_endpoint=self.endpoint.base_url, api_version=self.endpoint.api_version,
                    timeout=self._timeout, max_retries=self._max_retries)


class BedrockEndpoint(EndpointMixin, AnthropicProvider):
    """Claude on AWS Bedrock through ``anthropic.AnthropicBedrock``: a Bedrock API key
    (``AWS_BEARER_TOKEN_BEDROCK``) or SigV4 with AWS credentials (``AWS_ACCESS_KEY_ID`` ...,
    else boto3's own chain: a profile, an instance role)."""

    sync_client_name, async_client_name = "AnthropicBedrock", "AsyncAnthropicBedrock"
    stream_type = "application/vnd.amazon.eventstream"
    listable = False

    @property
    def configured(self) -> bool:
        return True  # credentials may come from boto3's chain, which only a call can tell

    def _kwargs(self) -> dict[str, Any]:
        creds = self._settings.credentials
        kw: dict[str, Any] = dict(aws_region=self.endpoint.region, timeout=self._timeout, max_retries=self._max_retries,
                                  base_url=self.endpoint.base_url)
        if self.api_key:
            kw["api_key"] = self.api_key
        else:
            kw.update(aws_access_key=creds.get("AWS_ACCESS_KEY_ID"), aws_secret_key=creds.get("AWS_SECRET_ACCESS_KEY"),
                      aws_session_token=creds.get("AWS_SESSION_TOKEN"))
        return kw


class VertexEndpoint(EndpointMixin, AnthropicProvider):
    """Claude on Google Vertex AI through ``anthropic.AnthropicVertex``: an access token (the
    endpoint's key), else Google's application default credentials (``google-auth``)."""

    sync_client_name, async_client_name = "AnthropicVertex", "AsyncAnthropicVertex"
    listable = False

    @property
    def configured(self) -> bool:
        return True  # application default credentials: only a call can tell

    def _kwargs(self) -> dict[str, Any]:
        return dict(region=self.endpoint.region, project_id=self.endpoint.project_id, access_token=self.api_key,
                    base_url=self.endpoint.base_url, timeout=self._timeout, max_retries=self._max_retries)


_CLASSES: dict[str, type[SDKProvider]] = {"openai": OpenAIEndpoint, "anthropic": AnthropicEndpoint,
                                          "azure": AzureEndpoint, "bedrock": BedrockEndpoint, "vertex": VertexEndpoint}
# what the cloud clients import to sign or authenticate, and the extra that installs it
_NEEDS = {"bedrock": ("botocore", "anthropic[bedrock]"), "vertex": ("google.auth", "anthropic[vertex]")}


def _on_this_network(url: str | None) -> bool:
    """A loopback or private-network host (``localhost``, 127.0.0.1, 10.x, 192.168.x, ...)."""
    import ipaddress
    from urllib.parse import urlsplit

    host = urlsplit(url or "").hostname or ""
    if host == "localhost" or host.endswith(".localhost") or host.endswith(".local"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local


def endpoint_provider(endpoint: Endpoint, settings: ProviderSettings, **limits: Any) -> SDKProvider:
    """The provider for ``endpoint`` (its key and base URL in ``settings``)."""
    need = _NEEDS.get(endpoint.kind)
    if need and not (endpoint.kind == "vertex" and settings.api_key) and importlib.util.find_spec(
            need[0].split(".")[0]) is None:
        raise ConfigurationError(f"endpoint {endpoint.name!r} ({endpoint.kind}) needs {need[0]}: "
                                 f"pip install '{need[1]}' (or 'cognitionos-kit[cloud]')")
    provider = _CLASSES[endpoint.kind](settings, **limits)
    provider.name = endpoint.name
    provider.endpoint = endpoint  # type: ignore[attr-defined]
    if isinstance(provider, OpenAIProvider):
        provider.url_hint = f"check that {provider.where} is the /v1 root of an OpenAI-compatible server"  # type: ignore[attr-defined]
    return provider
