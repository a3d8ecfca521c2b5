"""The providers a Kit holds: their names, the default chain, which are simulators, and whether
each one's key is currently refused (warned once, shown by ``kit.status()``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...core.errors import AuthenticationWarning, ConfigurationError, InvalidRequestError, warn_user
from ...core.types import Attempt
from .base import Provider
from .simulated import SimulatedProvider

__all__ = ["ProviderSet"]


class ProviderSet:
    """Providers by name, in the user's order. ``chain`` is what a call tries by default."""

    def __init__(self, builtins: dict[str, Provider], order: Sequence[str | Provider], *, listed: bool,
                 simulate_on_failure: bool) -> None:
        self._by_name: dict[str, Provider] = dict(builtins)
        self.added: list[Provider] = []  # Provider instances the user passed (not rebuilt from a config)
        names: list[str] = []
        for p in order:
            if isinstance(p, Provider):
                self._by_name[p.name] = p
                self.added.append(p)
                names.append(p.name)
            else:
                try:
                    names.append(self.check_name(p))
                except InvalidRequestError as exc:
                    raise ConfigurationError(str(exc)) from None
        if not names:
            raise ConfigurationError("providers must name at least one provider")
        self.order = names
        self.listed = set(names) if listed else set()  # named by the user: they always join the chain
        self.simulate_on_failure = simulate_on_failure
        self.simulators = frozenset(n for n, p in self._by_name.items() if isinstance(p, SimulatedProvider))
        self.auth_failed: dict[str, str] = {}  # provider -> the refusal's message, until a call succeeds
        self._auth_warned: set[str] = set()

    def check_name(self, name: Any) -> str:
        if not isinstance(name, str) or name not in self._by_name:
            raise InvalidRequestError(
                f"unknown provider {name!r}: use one of {', '.join(self._by_name)} (or pass a Provider instance to Kit)"
            )
        return name

    def get(self, name: str) -> Provider:
        return self._by_name[self.check_name(name)]

    def items(self) -> list[tuple[str, Provider]]:
        return list(self._by_name.items())

    def key_variable(self, name: str) -> str:
        """The variable a provider's key is read from (a named endpoint's own, e.g. ``GROQ_API_KEY``)."""
        endpoint = getattr(self._by_name.get(name), "endpoint", None)
        return endpoint.key_variable if endpoint is not None else f"{name.upper()}_API_KEY"

    def is_simulator(self, name: str) -> bool:
        return name in self.simulators

    @property
    def chain(self) -> list[str]:
        """Configured providers only. A simulator joins only when nothing else is configured
        (simulation mode), when listed in ``providers``, or with ``simulate_on_failure=True``."""
        real = [p for p in self.order if p not in self.simulators and self._by_name[p].configured]
        return [p for p in self.order if p in real or (
            p in self.simulators and (p in self.listed or not real or self.simulate_on_failure))]

    def note(self, attempt: Attempt) -> None:
        """Track refused keys: warn once per provider; ``status()`` shows it until a success."""
        if attempt.error_type == "auth_error":
            self.auth_failed[attempt.provider] = attempt.error_message or "authentication failed"
            if attempt.provider not in self._auth_warned:
                self._auth_warned.add(attempt.provider)
                key = f" {attempt.key_fingerprint}" if attempt.key_fingerprint else ""
                what = (f"refused the API key{key} (HTTP {attempt.status_code})" if attempt.status_code else
                        "found no credentials to sign with")
                warn_user(
                    f"{attempt.provider} {what}: calls fall "
                    f"back to its next key or the next provider. Check {self.key_variable(attempt.provider)}; kit.status() "
                    "shows it as failing.",
                    AuthenticationWarning,
                )
        elif attempt.status == "ok":
            self.auth_failed.pop(attempt.provider, None)

    def status(self) -> dict[str, dict[str, Any]]:
        """Per provider: configured, base URL, whether a key is set and where from, each key's state
        (by fingerprint; never a key)."""
        return {
            name: {
                "configured": p.configured,
                "base_url": getattr(p, "base_url", None),
                "key_set": p.key_set,
                "sources": p.sources,
                "auth": "failing" if name in self.auth_failed else "ok",
                "auth_error": self.auth_failed.get(name),
                "keys": p.key_status(),  # fingerprint, state ("ready" | "rate_limited" | "unauthorized"), until
                # a named endpoint's kind ("openai", "anthropic", "azure", "bedrock", "vertex"); None: built in
                "endpoint_kind": getattr(getattr(p, "endpoint", None), "kind", None),
            }
            for name, p in self._by_name.items()
        }
