"""What is particular to the Redis backend (the shared behaviour runs on both backends in
test_budgets, test_rate_limits and test_response_cache): where things land, prefixes, a server
that cannot be reached, and passwords that never show."""

from __future__ import annotations

import pytest

from cognitionos_kit import ConfigurationError, Kit, KitError, LatencyModel, StorageError

FAST = LatencyModel(scale=0)


def test_budgets_limits_and_answers_live_in_redis_not_in_the_folder(tmp_path, redis_server):
    redis_server.flush()
    kit = Kit(tmp_path, dotenv=False, simulated_latency=FAST, guards=redis_server.url)
    kit.set_budget(1.0, user_id="ann")
    kit.set_rate_limit(user_id="ann", rpm=6000)
    first = kit.complete("cached in redis", user_id="ann", temperature=0)
    again = kit.complete("cached in redis", user_id="ann", temperature=0)
    assert not first.cache_hit and again.cache_hit and again.content == first.content
    keys = {k.decode() for k in redis_server.client.keys("*")}
    assert any(k.startswith("cognitionos:answer:") for k in keys)
    assert {"cognitionos:budgets", "cognitionos:limits"} <= keys
    assert not (tmp_path / "guards").exists() and not (tmp_path / "cache" / "answers.sqlite").exists()
    # another data folder on the same Redis: same team, same budget, same answers
    other = Kit(tmp_path / "elsewhere", dotenv=False, simulated_latency=FAST, guards=redis_server.url)
    assert other.complete("cached in redis", user_id="ann", temperature=0).cache_hit
    assert other.budgets().iloc[0].spent_usd == pytest.approx(first.cost_usd)
    assert kit.clear_cache() == 1 and not redis_server.client.keys("cognitionos:answer:*")


def test_a_prefix_keeps_two_teams_apart_on_one_database(tmp_path, redis_server):
    redis_server.flush()
    a = Kit(tmp_path / "a", dotenv=False, simulated_latency=FAST, guards=redis_server.url + "?prefix=team-a")
    b = Kit(tmp_path / "b", dotenv=False, simulated_latency=FAST, guards=redis_server.url + "?prefix=team-b")
    a.set_budget(0.0, user_id="ann")
    assert len(a.budgets()) == 1 and b.budgets().empty
    b.complete("team b is not limited", user_id="ann")
    assert all(k.decode().startswith(("team-a:", "team-b:")) for k in redis_server.client.keys("*"))


def test_redis_out_of_reach_is_a_clear_error_and_nothing_is_sent(tmp_path, redis_server):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens there
    kit = Kit(tmp_path, dotenv=False, simulated_latency=FAST, guards=f"redis://127.0.0.1:{port}/0")
    with pytest.raises(StorageError, match=f"in Redis at redis://127.0.0.1:{port}/0: ConnectionError") as info:
        kit.complete("not sent", user_id="ann")
    assert isinstance(info.value, KitError)
    assert kit.usage().empty  # no row: the call never started


def test_a_password_in_the_url_never_shows(tmp_path, redis_server, monkeypatch):
    url = redis_server.url.replace("redis://", "redis://alice:s3cret-pass@")
    kit = Kit(tmp_path, dotenv=False, simulated_latency=FAST, guards=url)
    shown = [repr(kit.config), str(kit.status()), repr(kit)]
    assert kit.status()["guards"] == redis_server.url.replace("redis://", "redis://alice:***@")
    with pytest.raises(StorageError) as info:  # this server has no user alice: AUTH fails
        kit.set_budget(1.0)
    shown.append(str(info.value))
    monkeypatch.setenv("COGNITIONOS_GUARDS", "memcached://:s3cret-pass@host")
    with pytest.raises(ConfigurationError, match="COGNITIONOS_GUARDS must be 'local'") as bad:
        Kit(tmp_path, dotenv=False)
    shown.append(str(bad.value))
    assert not any("s3cret" in text for text in shown), shown


def test_the_environment_chooses_the_backend_and_local_overrides_it(tmp_path, redis_server, monkeypatch):
    redis_server.flush()
    monkeypatch.setenv("COGNITIONOS_GUARDS", redis_server.url)
    Kit(tmp_path, dotenv=False).set_budget(2.0)
    assert redis_server.client.hlen("cognitionos:budgets") == 1
    local = Kit(tmp_path, dotenv=False, guards="local")
    assert local.budgets().empty and local.status()["guards"].startswith("local")
    with pytest.raises(ConfigurationError, match="guards must be 'local' .* or a Redis URL"):
        Kit(tmp_path, dotenv=False, guards="postgres://db")
