"""``executor="ray"``: each call runs as a Ray task in a worker process holding its own Kit on the
same data folder (ledger rows land in that worker's journal; the driver reads them all).

The driver keeps the cache, the budget and the bounded concurrency, so results, ledger rows and
manifest match the local executor. Needs ``pip install cognitionos_kit[ray]``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..kit import Kit

__all__ = ["ray_send", "kit_spec"]

_BUILTIN = ("openai", "anthropic", "simulated")
_KITS: dict[str, Any] = {}  # per worker process: one Kit per spec


def kit_spec(kit: "Kit") -> dict[str, Any]:
    """What a worker needs to rebuild an equivalent Kit (no keys: those travel in the worker env)."""
    custom = [p for p in kit.order if p not in _BUILTIN]
    if custom:
        raise ConfigurationError(f"executor='ray' runs the built-in providers only; this Kit also uses {custom}")
    lat = kit.simulated.latency
    return {
        "home": str(kit.home), "order": list(kit.order), "seed": kit.simulated.seed,
        "latency": lat.__dict__, "role_models": kit.router.role_models,
        "prices": [[p, m, v.__dict__] for (p, m), v in kit.prices._custom.items()],
        "default_max_tokens": kit.default_max_tokens,
    }


def _worker_kit(spec: Mapping[str, Any]) -> "Kit":
    key = json.dumps(spec, sort_keys=True)
    if key not in _KITS:
        from ..kit import Kit
        from ..pricing import Price
        from ..providers.simulated import LatencyModel

        k = Kit(spec["home"], providers=spec["order"], seed=spec["seed"], simulated_latency=LatencyModel(**spec["latency"]),
                role_models=spec["role_models"], default_max_tokens=spec["default_max_tokens"], dotenv=False)
        for provider, model, price in spec["prices"]:
            k.prices.set_price(model, Price(**price), provider)
        _KITS[key] = k
    return _KITS[key]


def _complete(spec: Mapping[str, Any], prompt: str, kwargs: Mapping[str, Any]) -> dict:
    """The Ray task: one costed call (ledgered by the worker's Kit) -> the cache entry dict."""
    from .runner import _entry

    kit = _worker_kit(spec)
    entry = _entry(kit.complete(prompt, **kwargs))
    kit.ledger.flush()  # cheap; makes the rows visible even if the worker is killed later
    return entry


def ray_send(kit: "Kit") -> Any:
    """An async ``send(prompt, kwargs)`` that runs the call as a Ray task."""
    try:
        import ray
    except ImportError:
        raise ConfigurationError("executor='ray' needs Ray: pip install 'cognitionos_kit[ray]'") from None
    spec = kit_spec(kit)
    if not ray.is_initialized():
        env = {name: val for name, val in (
            ("OPENAI_API_KEY", kit.settings.openai.api_key), ("OPENAI_BASE_URL", kit.settings.openai.base_url),
            ("ANTHROPIC_API_KEY", kit.settings.anthropic.api_key),
            ("ANTHROPIC_BASE_URL", kit.settings.anthropic.base_url)) if val}
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": env} if env else None)
    task = ray.remote(num_cpus=0)(_complete)

    async def send(prompt: str, kwargs: Mapping[str, Any]) -> dict:
        return await task.remote(spec, prompt, dict(kwargs))

    return send
