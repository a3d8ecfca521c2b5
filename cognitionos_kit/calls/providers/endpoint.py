"""A named endpoint (``core.endpoints``) as a provider: the OpenAI or Anthropic provider under
the endpoint's name, base URL and key, so routing, fallback and the ledger treat it like the
built-in ones (its rows say ``provider="local"``)."""

from __future__ import annotations

from typing import Any

from ...core.config import ProviderSettings
from ...core.endpoints import Endpoint
from .anthropic import AnthropicProvider
from .base import SDKProvider
from .openai import OpenAIProvider

__all__ = ["endpoint_provider", "EndpointMixin"]


class EndpointMixin:
    """What an endpoint adds to its kind's provider: its name, its configuration and a
    ``configured`` that needs a key only when the endpoint named a variable for one."""

    endpoint: Endpoint
    _settings: ProviderSettings

    @property
    def configured(self) -> bool:
        return bool(self._settings.api_key) or self.endpoint.api_key_env is None

    @property
    def where(self) -> str:
        """How a message names it: ``endpoint 'local' (http://127.0.0.1:8080/v1)``."""
        return f"endpoint {self.endpoint.name!r} ({self.endpoint.base_url})"


class OpenAIEndpoint(EndpointMixin, OpenAIProvider):
    """An OpenAI-compatible server (llama.cpp, vLLM, Ollama, Groq, Together, ...)."""


class AnthropicEndpoint(EndpointMixin, AnthropicProvider):
    """A server speaking Anthropic's Messages API."""

    def _kwargs(self) -> dict[str, Any]:
        return {**super()._kwargs(), "api_key": self.api_key or "no-key-needed"}


def endpoint_provider(endpoint: Endpoint, settings: ProviderSettings, **limits: Any) -> SDKProvider:
    """The provider for ``endpoint`` (its key and base URL in ``settings``)."""
    cls: type[SDKProvider] = OpenAIEndpoint if endpoint.kind == "openai" else AnthropicEndpoint
    provider = cls(settings, **limits)
    provider.name = endpoint.name
    provider.endpoint = endpoint  # type: ignore[attr-defined]
    if isinstance(provider, OpenAIEndpoint):
        provider.url_hint = f"check that {provider.where} is the /v1 root of an OpenAI-compatible server"
    return provider
