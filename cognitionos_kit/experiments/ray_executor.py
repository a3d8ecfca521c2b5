"""``executor="ray"``: each call runs as a Ray task in a worker process holding its own Kit on the
same data folder (ledger rows land in that worker's journal; the driver reads them all).

The driver keeps the cache, the budget and the bounded concurrency, so results, ledger rows and
manifest match the local executor. Needs ``pip install cognitionos_kit[ray]``.

Keys never pass through ``ray.init``, a runtime env or a task argument: Ray writes those in plain
text under its session folder (``/tmp/ray/session_*``). The driver writes the keys and base URLs
to a file only its user can read (mode 0600, in a private 0700 temporary folder) and sends the
path; each worker reads it once and builds its Kit from those values. The file is deleted when the
run's sender is closed (``send.close()``), garbage-collected, or at interpreter exit.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigurationError

if TYPE_CHECKING:
    from ..kit import Kit

__all__ = ["ray_send", "kit_spec", "RaySend"]

_BUILTIN = ("openai", "anthropic", "simulated")
_SECRET_VARS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")
# Kit options carried only when the Kit has them and they differ from Kit's default.
_OPTIONAL = ("fallback_models", "simulate_on_failure", "fallback_on")
_SALT = os.urandom(16)  # per driver process: a spec names its keys by a salted digest, never the keys
_KITS: dict[str, Any] = {}  # per worker process: one Kit per spec
_BUILD_LOCK = threading.Lock()  # a worker sets os.environ then builds a Kit: one at a time


def _kit_options(kit: Kit) -> dict[str, Any]:
    """The Kit's call options a worker Kit must share (timeouts, retries, fallback policy)."""
    from ..kit import Kit

    opts: dict[str, Any] = {}
    openai = getattr(kit, "_providers", {}).get("openai")
    for name in ("timeout", "max_retries", "max_retry_wait"):
        if hasattr(kit, name):
            opts[name] = getattr(kit, name)
        elif hasattr(openai, f"_{name}"):  # before Kit had public attributes for them
            opts[name] = getattr(openai, f"_{name}")
    params = inspect.signature(Kit.__init__).parameters
    for name in _OPTIONAL:
        # the router holds the live equivalents (set_fallback_models after construction included)
        holder = kit.router if name == "fallback_models" and hasattr(kit.router, name) else kit
        if name not in params or not hasattr(holder, name):
            continue
        value, default = getattr(holder, name), params[name].default
        if value is None or value == default or (not value and not isinstance(value, bool) and not default):
            continue  # the default (or an empty stand-in for it): let the worker Kit use its own
        if isinstance(value, (set, frozenset)):
            value = sorted(value)  # e.g. fallback_on={"timeout", ...}: a stable, JSON-friendly spec
        elif isinstance(value, Mapping):
            value = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in value.items()}
        opts[name] = value
    return opts


def kit_spec(kit: Kit) -> dict[str, Any]:
    """What a worker needs to rebuild an equivalent Kit (no keys: see ``ray_send``)."""
    custom = [p for p in kit.order if p not in _BUILTIN]
    if custom:
        raise ConfigurationError(f"executor='ray' runs the built-in providers only; this Kit also uses {custom}")
    lat = kit.simulated.latency
    return {
        "home": str(kit.home), "order": list(kit.order), "seed": kit.simulated.seed,
        "latency": lat.__dict__, "role_models": kit.router.role_models,
        "prices": [[p, m, v.__dict__] for (p, m), v in kit.prices._custom.items()],
        "default_max_tokens": kit.default_max_tokens,
        "kit_options": _kit_options(kit),
    }


def _secrets(kit: Kit) -> dict[str, str | None]:
    s = kit.settings
    return {"OPENAI_API_KEY": s.openai.api_key, "OPENAI_BASE_URL": s.openai.base_url,
            "ANTHROPIC_API_KEY": s.anthropic.api_key, "ANTHROPIC_BASE_URL": s.anthropic.base_url}


def _write_secrets(values: Mapping[str, str | None]) -> tuple[str, str]:
    """A private folder (0700) holding ``keys.json`` (0600) -> (folder, file)."""
    folder = tempfile.mkdtemp(prefix="cognitionos-ray-")  # created 0700
    os.chmod(folder, 0o700)
    path = os.path.join(folder, "keys.json")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(dict(values), f)
    return folder, path


def _apply_secrets(spec: Mapping[str, Any]) -> None:
    """Worker side: put the driver's keys and base URLs in this process's environment (and remove
    the ones the driver does not use), so the worker Kit reads exactly what the driver's Kit has."""
    path = spec.get("secrets_file")
    if not path:
        return
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except FileNotFoundError:
        import ray

        if ray.get_runtime_context().get_node_id() != spec.get("driver_node"):
            return  # another machine of a cluster you started: it uses its own environment, as it always did
        raise ConfigurationError(
            f"executor='ray': the driver's key file {path} is gone (it is deleted when the run ends); "
            "start the run again"
        ) from None
    for name in _SECRET_VARS:
        if values.get(name):
            os.environ[name] = values[name]
        else:
            os.environ.pop(name, None)


def _worker_kit(spec: Mapping[str, Any]) -> Kit:
    # The file's path changes every run; the salted digest of its content does not.
    key = json.dumps({k: v for k, v in spec.items() if k != "secrets_file"}, sort_keys=True, default=repr)
    if key not in _KITS:
        with _BUILD_LOCK:
            if key not in _KITS:
                from ..calls.pricing import Price
                from ..calls.providers.simulated import LatencyModel
                from ..kit import Kit

                _apply_secrets(spec)
                k = Kit(spec["home"], providers=spec["order"], seed=spec["seed"],
                        simulated_latency=LatencyModel(**spec["latency"]), role_models=spec["role_models"],
                        default_max_tokens=spec["default_max_tokens"], dotenv=False, **spec.get("kit_options", {}))
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


class RaySend:
    """The async ``send(prompt, kwargs)`` of one run; ``close()`` deletes the run's key file (also
    done when this object is garbage-collected, and at interpreter exit)."""

    def __init__(self, task: Any, spec: dict[str, Any], folder: str) -> None:
        self._task = task
        self.spec = spec
        self.secrets_file: str = spec["secrets_file"]
        self._cleanup = weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True)

    async def __call__(self, prompt: str, kwargs: Mapping[str, Any]) -> dict:
        return await self._task.remote(self.spec, prompt, dict(kwargs))

    def close(self) -> None:
        self._cleanup()

    def __enter__(self) -> RaySend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def ray_send(kit: Kit) -> RaySend:
    """An async ``send(prompt, kwargs)`` that runs the call as a Ray task; call ``.close()`` when
    the run ends."""
    try:
        import ray
    except ImportError:
        raise ConfigurationError("executor='ray' needs Ray: pip install 'cognitionos_kit[ray]'") from None
    spec = kit_spec(kit)
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    values = _secrets(kit)
    folder, path = _write_secrets(values)
    try:
        digest = hashlib.sha256(_SALT + json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
        spec.update(secrets_id=digest, secrets_file=path, driver_node=ray.get_runtime_context().get_node_id())
        task = ray.remote(num_cpus=0)(_complete)
        return RaySend(task, spec, folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
