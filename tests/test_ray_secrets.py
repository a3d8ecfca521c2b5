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


def test_kit_config_rebuilds_an_identical_kit(tmp_path):
    """kit.config holds every setting (those changed after construction too); a worker builds from it."""
    kit = Kit(tmp_path, dotenv=False, timeout=3.5, max_retries=0, max_retry_wait=1.5, seed=7,
              fallback_models={"gpt-4o-mini": "claude-haiku-4-5"}, fallback_on={"timeout", "rate_limit"},
              simulate_on_failure=True, default_max_tokens=300)
    kit.set_price("sim-small", input_per_mtok=1.0, output_per_mtok=2.0)
    kit.set_role_model("executor", "sim-nano")
    worker = ray_executor._worker_kit({**kit_spec(kit), "secrets_file": None})  # what a Ray worker builds
    try:
        assert worker.config == kit.config
        assert (worker.timeout, worker.max_retries, worker.max_retry_wait) == (3.5, 0, 1.5)
        assert worker.provider("openai").settings is not None and worker.simulate_on_failure is True
        assert worker.router.fallback_models == {"gpt-4o-mini": ["claude-haiku-4-5"]}
        assert set(worker.fallback_on) == {"timeout", "rate_limit"}
        assert worker.plan("hi", role="executor").steps[0].request.model == "sim-nano"
        assert worker.prices.price("simulated", "sim-small")[:2] == kit.prices.price("simulated", "sim-small")[:2]
        assert worker.prices.price("simulated", "sim-small")[1] == "custom"
        assert worker.complete("hi", role="executor").content == kit.complete("hi", role="executor").content  # same seed
    finally:
        ray_executor._KITS.clear()
        worker.close()
        kit.close()


def test_kit_spec_refuses_a_provider_a_worker_cannot_rebuild(tmp_path):
    from cognitionos_kit import ConfigurationError, SimulatedProvider

    class Mine(SimulatedProvider):
        name = "mine"

    kit = Kit(tmp_path, dotenv=False, providers=[Mine(), "simulated"])
    with pytest.raises(ConfigurationError, match="built-in providers only.*mine"):
        kit_spec(kit)
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

        # ... and its retries, retry-wait cap, custom prices and role models
        openai_server.reset()
        openai_server.enqueue_error(500, headers={"retry-after": "0"}, times=1)  # retried once (max_retries=1)
        openai_server.enqueue_error(500, headers={"retry-after": "0"}, times=1)
        openai_server.enqueue_error(500, headers={"retry-after": "30"}, times=1)  # over max_retry_wait: not retried
        d = Kit(tmp_path / "d", dotenv=False, providers=["openai"], max_retries=1, max_retry_wait=2, timeout=10,
                simulated_latency=LatencyModel(scale=0))
        d.set_role_model("executor", "gpt-4.1-nano")
        d.set_price("gpt-4.1-nano", input_per_mtok=1000.0, output_per_mtok=2000.0)
        exp = Experiment(name="ray-config", dataset=DATA.head(3), prompts={"q": "What is the capital of {country}?"},
                         models=["executor"])
        try:
            run = d.run(exp, executor="ray", concurrency=1, cache=False, progress=False)
            rows = d.usage(run_id=run.run_id)
        finally:
            d.close()
        assert sorted(run.results.status) == ["error", "error", "ok"], run.results.to_dict("records")
        assert sorted(rows.http_requests.dropna().astype(int)) == [1, 1, 2], rows.to_dict("records")
        assert {r.body["model"] for r in openai_server.requests} == {"gpt-4.1-nano"}
        ok = rows[rows.status == "ok"].iloc[0]
        assert ok.price_source == "custom"
        assert ok.cost_usd == pytest.approx((ok.prompt_tokens * 1000.0 + ok.completion_tokens * 2000.0) / 1e6)
    finally:
        if not was_running:
            ray.shutdown()

    # the key files: private while they existed, gone once each run's sender was dropped
    gc.collect()
    assert len(written) == 4
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


def test_kit_spec_refuses_a_named_endpoint(tmp_path):
    from cognitionos_kit import ConfigurationError

    kit = Kit(tmp_path, dotenv=False, endpoints={"local": {"base_url": "http://127.0.0.1:1/v1",
                                                           "api_key": "sk-endpoint-" + "4" * 20}})
    with pytest.raises(ConfigurationError, match="built-in providers only.*local.*executor='local'") as info:
        kit_spec(kit)
    assert "sk-endpoint-" not in str(info.value)
    kit.close()
