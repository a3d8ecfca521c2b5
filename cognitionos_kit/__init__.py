"""cognitionos_kit: costed, timed LLM calls with provider fallback, a DuckDB ledger and memory.

``import cognitionos_kit`` is cheap and offline: provider SDKs, pandas, DuckDB and the embedding
model load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .core.errors import (
    AllProvidersFailedError,
    AuthenticationWarning,
    CacheWarning,
    ConfigurationError,
    CostLimitError,
    InvalidRequestError,
    KitError,
    KitWarning,
    ProviderError,
    StorageError,
    StorageWarning,
    StreamInterruptedError,
)
from .core.types import Attempt, Completion, Usage

__version__ = "0.1.0"

__all__ = [
    "Kit",
    "Experiment",
    "Completion",
    "Attempt",
    "Usage",
    "KitError",
    "InvalidRequestError",
    "CostLimitError",
    "ConfigurationError",
    "ProviderError",
    "StreamInterruptedError",
    "AllProvidersFailedError",
    "StorageError",
    "KitWarning",
    "StorageWarning",
    "CacheWarning",
    "AuthenticationWarning",
    "SimulatedProvider",
    "LatencyModel",
    "default_kit",
    "complete",
    "acomplete",
    "stream",
    "embed",
    "usage",
    "spend",
    "status",
]

if TYPE_CHECKING:
    from .calls.providers.simulated import LatencyModel, SimulatedProvider
    from .experiments import Experiment
    from .kit import Kit

_LAZY = {
    "Kit": ("kit", "Kit"),
    "Experiment": ("experiments", "Experiment"),
    "SimulatedProvider": ("calls.providers.simulated", "SimulatedProvider"),
    "LatencyModel": ("calls.providers.simulated", "LatencyModel"),
}
_default: Kit | None = None


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        module, attr = _LAZY[name]
        value = getattr(import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cognitionos_kit' has no attribute {name!r}")


def default_kit() -> Kit:
    """The Kit behind the module-level shortcuts (created on first use)."""
    global _default
    if _default is None:
        from .kit import Kit

        _default = Kit()
    return _default


def complete(prompt: Any, **kwargs: Any) -> Completion:
    """``default_kit().complete(...)``."""
    return default_kit().complete(prompt, **kwargs)


async def acomplete(prompt: Any, **kwargs: Any) -> Completion:
    """``await default_kit().acomplete(...)``."""
    return await default_kit().acomplete(prompt, **kwargs)


def stream(prompt: Any, **kwargs: Any) -> Any:
    """``default_kit().stream(...)``."""
    return default_kit().stream(prompt, **kwargs)


def embed(texts: Any, model: str | None = None) -> Any:
    """``default_kit().embed(...)``."""
    return default_kit().embed(texts, model)


def usage(**filters: Any) -> Any:
    """``default_kit().usage(...)``."""
    return default_kit().usage(**filters)


def spend(by: Any = "user_id") -> Any:
    """``default_kit().spend(...)``."""
    return default_kit().spend(by)


def status() -> dict:
    """``default_kit().status()``."""
    return default_kit().status()


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext cognitionos_kit`` registers the ``%%llm`` cell magic."""
    from .notebook.magics import load_ipython_extension as load

    load(ipython)
