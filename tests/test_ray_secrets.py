"""executor="ray": workers get the driver's keys without the keys reaching Ray's session folder,
and the worker Kit keeps the driver Kit's timeout and retry settings."""

from __future__ import annotations

import gc
import os
import secrets
import stat
from pathlib import Path

import pandas as pd
import pytest

from cognitionos_kit import Experiment, Kit, LatencyModel
from cognitionos_kit.experiments import ray_executor
from cognitionos_kit.experiments.ray_executor import kit_spec

DATA = pd.DataFrame({"country": ["France", "Japan", "Peru"]})


def _exp(data=DATA):
    return Experiment(name="ray-secrets", dataset=data, prompts={"q": "What is the capital of {country}?"},
                      models=["gpt-4o-mini"])


def test_kit_spec_carries_timeouts_and_retries(tmp_path):
    kit = Kit(tmp_path, dotenv=False, timeout=3.5, max_retries=0, max_retry_wait=1.5)
    opts = kit_spec(kit)["kit_options"]
    assert (opts["timeout"], opts["max_retries"], opts["max_retry_wait"]) == (3.5, 0, 1.5)
    spec = {**kit_spec(kit), "secrets_file": None}
    worker = ray_executor._worker_kit(spec)  # what a worker builds (no Ray needed)
    try:
        p = worker._providers["openai"]
        assert (getattr(worker, "timeout", p._timeout), getattr(worker, "max_retries", p._max_retries),
                getattr(worker, "max_retry_wait", p._max_retry_wait)) == (3.5, 0, 1.5)
    finally:
        ray_executor._KITS.clear()
        worker.close()


def test_kit_spec_carries_the_fallback_policy(tmp_path):
    import inspect

    params = inspect.signature(Kit.__init__).parameters
    if not {"fallback_models", "fallback_on", "simulate_on_failure"} <= set(params):
        pytest.skip("this Kit has no fallback_models / fallback_on / simulate_on_failure yet")
    plain = Kit(tmp_path / "plain", dotenv=False)
    assert not {"fallback_models", "fallback_on", "simulate_on_failure"} & set(kit_spec(plain)["kit_options"])
    kit = Kit(tmp_path / "k", dotenv=False, fallback_models={"gpt-4o-mini": "claude-haiku-4-5"},
              fallback_on={"timeout", "rate_limit"}, simulate_on_failure=True)
    opts = kit_spec(kit)["kit_options"]
    assert opts["fallback_models"] == {"gpt-4o-mini": ["claude-haiku-4-5"]}
    assert opts["fallback_on"] == ["rate_limit", "timeout"] and opts["simulate_on_failure"] is True
    worker = ray_executor._worker_kit({**kit_spec(kit), "secrets_file": None})
    try:
        assert worker.simulate_on_failure is True and worker.router.fallback_models == {"gpt-4o-mini": ["claude-haiku-4-5"]}
        assert set(worker.fallback_on) == {"timeout", "rate_limit"}
    finally:
        ray_executor._KITS.clear()
        worker.close()
        plain.close()
        kit.close()


def test_kit_spec_never_holds_a_key(tmp_path, monkeypatch):
    key = "sk-test-spec-" + secrets.token_hex(8)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    kit = Kit(tmp_path, dotenv=False)
    assert key not in repr(kit_spec(kit))


def _session_files(session: Path):
    for root, _dirs, files in os.walk(session):
        for name in files:
            p = Path(root) / name
            try:
                if p.is_file() and not p.is_symlink():
                    yield p
            except OSError:
                continue


@pytest.mark.slow
def test_ray_workers_get_keys_that_never_reach_ray_logs(tmp_path, monkeypatch, openai_server):
    import ray

    written: list[str] = []
    real_write = ray_executor._write_secrets

    def recording_write(values):
        folder, path = real_write(values)
        written.append(path)
        return folder, path

    monkeypatch.setattr(ray_executor, "_write_secrets", recording_write)
    key_file = "sk-test-raysecret-" + secrets.token_hex(12)  # only in a .env: not in any process environment
    key_env = "sk-test-raysecret-" + secrets.token_hex(12)  # exported after Ray started: workers cannot inherit it
    dotenv = tmp_path / "conf" / "keys.env"
    dotenv.parent.mkdir()
    dotenv.write_text(f"OPENAI_API_KEY={key_file}\nOPENAI_BASE_URL={openai_server.base_url}\n")
    was_running = ray.is_initialized()
    session = None
    try:
        a = Kit(tmp_path / "a", dotenv=str(dotenv), providers=["openai"], max_retries=0, timeout=10,
                simulated_latency=LatencyModel(scale=0))
        try:
            run = a.run(_exp(), executor="ray", concurrency=3, cache=False, progress=False)
        finally:
            a.close()
        assert (run.results.status == "ok").all(), run.results.error.tolist()
        assert (run.results.provider == "openai").all()
        assert [r.headers["authorization"] for r in openai_server.requests] == [f"Bearer {key_file}"] * 3
        assert "OPENAI_API_KEY" not in os.environ

        session = Path(ray._private.worker._global_node.get_session_dir_path())
        openai_server.reset()
        monkeypatch.setenv("OPENAI_API_KEY", key_env)
        monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
        b = Kit(tmp_path / "b", dotenv=False, providers=["openai"], max_retries=0, timeout=10,
                simulated_latency=LatencyModel(scale=0))
        try:
            run = b.run(_exp(), executor="ray", concurrency=3, cache=False, progress=False)
        finally:
            b.close()
        assert (run.results.status == "ok").all(), run.results.error.tolist()
        assert [r.headers["authorization"] for r in openai_server.requests] == [f"Bearer {key_env}"] * 3

        # the worker Kit honours the driver Kit's timeout: a 3 s answer fails a 0.5 s timeout
        openai_server.reset()
        openai_server.enqueue_delay(3.0)
        c = Kit(tmp_path / "c", dotenv=False, providers=["openai"], max_retries=0, timeout=0.5,
                simulated_latency=LatencyModel(scale=0))
        try:
            run = c.run(_exp(DATA.head(1)), executor="ray", cache=False, progress=False)
        finally:
            c.close()
        assert list(run.results.status) == ["error"], run.results.to_dict("records")
        assert len(openai_server.requests) == 1  # max_retries=0 carried too
    finally:
        if not was_running:
            ray.shutdown()

    # the key files: private while they existed, gone once each run's sender was dropped
    gc.collect()
    assert len(written) == 3
    assert not any(Path(p).exists() or Path(p).parent.exists() for p in written)

    hits = []
    for p in _session_files(session):
        try:
            data = p.read_bytes()
        except OSError:
            continue
        hits += [f"{p}: {name}" for name, k in (("file key", key_file), ("env key", key_env)) if k.encode() in data]
    assert not hits, hits


def test_key_file_is_private_and_deleted_on_close():
    folder, path = ray_executor._write_secrets({"OPENAI_API_KEY": "sk-test-x-0123456789", "OPENAI_BASE_URL": None})
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    send = ray_executor.RaySend(task=None, spec={"secrets_file": path}, folder=folder)
    assert send.secrets_file == path and Path(path).exists()
    send.close()
    assert not Path(folder).exists()
    send.close()  # twice is fine
