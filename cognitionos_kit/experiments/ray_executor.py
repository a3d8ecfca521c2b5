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
import json
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigurationError
from .entry import entry

if TYPE_CHECKING:
    from ..kit import Kit

__all__ = ["ray_send", "kit_spec", "RaySend"]

_SECRET_VARS = ("OPENAI_API_KEY", "OPENAI_API_KEYS", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_API_KEYS",
                "ANTHROPIC_BASE_URL")
_KITS: dict[str, Any] = {}  # per worker process: one Kit per spec
_BUILD_LOCK = threading.Lock()  # a worker sets os.environ then builds a Kit: one at a time
_SALT = os.urandom(16)  # per driver process: a spec names its keys by a salted digest, never the keys


def kit_spec(kit: Kit) -> dict[str, Any]:
    """What a worker needs to rebuild an identical Kit: its class and its ``KitConfig`` (timeouts,
    retries, fallback policy, custom prices and role models included; never a key, see ``ray_send``)."""
    config = kit.config
    custom = [p.name for p in kit.providers.added]
    custom += [e.name for e, _ in kit.settings.endpoints]  # a named endpoint's key is not passed to workers
    if custom:
        raise ConfigurationError(f"executor='ray' runs the built-in providers only; this Kit also uses {custom}: "
                                 "run this experiment with executor='local'")
    # a worker reads keys from the file ray_send writes, never from a .env of its own
    return {"kit_class": type(kit), "config": replace(config, dotenv=False, api_keys=None)}


def _secrets(kit: Kit) -> dict[str, str | None]:
    s = kit.settings
    return {"OPENAI_API_KEY": s.openai.api_key, "OPENAI_API_KEYS": ",".join(s.openai.api_keys) or None,
            "OPENAI_BASE_URL": s.openai.base_url, "ANTHROPIC_API_KEY": s.anthropic.api_key,
            "ANTHROPIC_API_KEYS": ",".join(s.anthropic.api_keys) or None, "ANTHROPIC_BASE_URL": s.anthropic.base_url}


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
    key = repr({k: v for k, v in spec.items() if k != "secrets_file"})
    if key not in _KITS:
        with _BUILD_LOCK:
            if key not in _KITS:
                _apply_secrets(spec)
                _KITS[key] = spec["kit_class"].from_config(spec["config"])
    return _KITS[key]


def _complete(spec: Mapping[str, Any], prompt: str, kwargs: Mapping[str, Any]) -> dict:
    """The Ray task: one costed call (ledgered by the worker's Kit) -> the cache entry dict."""
    kit = _worker_kit(spec)
    result = entry(kit.complete(prompt, **kwargs))
    kit.ledger.flush()  # cheap; makes the rows visible even if the worker is killed later
    return result


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
