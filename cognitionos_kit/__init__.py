"""cognitionos_kit: costed, timed LLM calls with provider fallback, a DuckDB ledger and memory.

``import cognitionos_kit`` is cheap and offline: provider SDKs, pandas, DuckDB and the embedding
model load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .core.errors import (
    AlertWarning,
    AllProvidersFailedError,
    AuthenticationWarning,
    BatchPendingError,
    BudgetExceededError,
    CacheWarning,
    ConfigurationError,
    CostLimitError,
    InvalidRequestError,
    KitError,
    KitWarning,
    ProviderError,
    RateLimitExceededError,
    RateLimitWarning,
    ServerError,
    StorageError,
    StorageWarning,
    StreamInterruptedError,
    StructuredOutputError,
    ToolLoopError,
)
from .core.media import Image
from .core.types import Attempt, Completion, ToolCall, ToolResult, Usage

__version__ = "0.1.0"

__all__ = [
    "Kit",
    "Experiment",
    "Completion",
    "Attempt",
    "Usage",
    "Image",
    "ToolCall",
    "ToolResult",
    "tool",
    "KitError",
    "InvalidRequestError",
    "BudgetExceededError",
    "RateLimitExceededError",
    "CostLimitError",
    "ConfigurationError",
    "ProviderError",
    "StreamInterruptedError",
    "StructuredOutputError",
    "ToolLoopError",
    "AllProvidersFailedError",
    "BatchPendingError",
    "ServerError",
    "StorageError",
    "KitWarning",
    "StorageWarning",
    "CacheWarning",
    "AuthenticationWarning",
    "RateLimitWarning",
    "AlertWarning",
    "SimulatedProvider",
    "LatencyModel",
    "Endpoint",
    "ENDPOINT_RECIPES",
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
    import numpy as np
    import pandas as pd

    from .calls.providers.simulated import LatencyModel, SimulatedProvider
    from .calls.tools import tool
    from .experiments import Experiment
    from .kit import Kit, acomplete, complete, default_kit, stream

# Loaded on first use, so that ``import cognitionos_kit`` stays cheap.
_LAZY = {
    "Kit": ("kit", "Kit"),
    "default_kit": ("kit", "default_kit"),
    "complete": ("kit", "complete"),
    "acomplete": ("kit", "acomplete"),
    "stream": ("kit", "stream"),
    "Experiment": ("experiments", "Experiment"),
    "SimulatedProvider": ("calls.providers.simulated", "SimulatedProvider"),
    "LatencyModel": ("calls.providers.simulated", "LatencyModel"),
    "tool": ("calls.tools", "tool"),
    "Endpoint": ("core.endpoints", "Endpoint"),
    "ENDPOINT_RECIPES": ("core.endpoints", "RECIPES"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        module, attr = _LAZY[name]
        value = getattr(import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cognitionos_kit' has no attribute {name!r}")


def _kit() -> Kit:
    from .kit import default_kit

    return default_kit()


def embed(texts: str | list[str], model: str | None = None) -> np.ndarray:
    """``default_kit().embed(...)``."""
    return _kit().embed(texts, model)


def usage(**filters: Any) -> pd.DataFrame:
    """``default_kit().usage(...)``: the ledger as a DataFrame (equality filters on columns)."""
    return _kit().usage(**filters)


def spend(by: str | list[str] = "user_id") -> pd.DataFrame:
    """``default_kit().spend(...)``."""
    return _kit().spend(by)


def status() -> dict[str, Any]:
    """``default_kit().status()``."""
    return _kit().status()


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext cognitionos_kit`` registers the ``%%llm`` cell magic."""
    from .notebook.magics import load_ipython_extension as load

    load(ipython)
