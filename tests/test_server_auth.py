"""The team server's self-service flow over real HTTP (``serve --allow-register`` with a 3 s access
token): register -> login -> authorized call -> expiry -> refresh -> logout, and the login throttle.
One server process for the module."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from team_server import add_users, provider_env, running_server

from cognitionos_kit.core.errors import InvalidRequestError
from cognitionos_kit.server.session_routes import SelfService
from cognitionos_kit.server.throttle import FailureThrottle

ACCESS_TTL = 3.0  # long enough for a loaded 2-core CI machine to make the calls before it expires


@pytest.fixture(scope="module")
def server(tmp_path_factory, _openai_server, _anthropic_server):
    root = tmp_path_factory.mktemp("team_auth")
    home = root / "home"
    tokens = add_users(home, ("ana",), ())
    with running_server(root, home, provider_env(_openai_server, _anthropic_server), tokens,
                        "--allow-register", "--access-ttl", str(ACCESS_TTL)) as s:
        # the first memory call loads the embedding model: not inside an access token's short life
        assert s.as_("ana", "POST", "/retrieve", json={"query": "warm up"}).status_code == 200
        yield s


def _register(server, name: str, password: str) -> None:
    r = server.http.post("/auth/register", json={"name": name, "password": password})
    assert r.status_code == 201, r.text
    assert r.json() == {"user": name, "admin": False}
    server.tokens[f"{name} password"] = password  # the fixture checks that nothing in tokens is in the log


def _login(server, name: str, password: str, **kw):
    r = server.http.post("/auth/login", json={"name": name, "password": password}, **kw)
    if r.status_code == 200:
        body = r.json()
        server.tokens[f"{name} access {len(server.tokens)}"] = body["access_token"]
        server.tokens[f"{name} refresh {len(server.tokens)}"] = body["refresh_token"]
    return r


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_register_login_call_expire_refresh_logout(server):
    _register(server, "nina", "correct horse battery")
    login = _login(server, "nina", "correct horse battery")
    assert login.status_code == 200, login.text
    tokens = login.json()
    issued = time.time()
    assert tokens["user"] == "nina" and tokens["token_type"] == "bearer" and tokens["expires_in"] == ACCESS_TTL
    assert tokens["access_token"].startswith("cok_") and tokens["refresh_token"].startswith("cor_")
    access = _bearer(tokens["access_token"])

    stored = server.http.post("/memories", headers=access, json={"content": "nina's first memory"})
    assert stored.status_code == 201 and stored.json()["user_id"] == "nina"
    assert server.http.get("/spend", headers=access).status_code == 200
    assert server.http.get("/usage", headers=access, params={"user": "ana"}).status_code == 403  # not an admin
    assert server.http.get("/models", headers=_bearer(tokens["refresh_token"])).status_code == 401  # not a bearer token

    time.sleep(max(0.0, issued + ACCESS_TTL + 0.1 - time.time()))
    expired = server.http.get("/spend", headers=access)
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]

    refreshed = server.http.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    fresh = refreshed.json()
    server.tokens.update({"nina access 2": fresh["access_token"], "nina refresh 2": fresh["refresh_token"]})
    assert fresh["access_token"] != tokens["access_token"] and fresh["refresh_token"] != tokens["refresh_token"]
    again = server.http.get(f"/memories/{stored.json()['id']}", headers=_bearer(fresh["access_token"]))
    assert again.status_code == 200 and again.json()["content"] == "nina's first memory"
    used = server.http.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert used.status_code == 401  # a refresh token works once

    out = server.http.post("/auth/logout", headers=_bearer(fresh["access_token"]))
    assert out.status_code == 200 and out.json() == {"user": "nina", "revoked": True}
    assert server.http.get("/spend", headers=_bearer(fresh["access_token"])).status_code == 401
    assert server.http.post("/auth/refresh", json={"refresh_token": fresh["refresh_token"]}).status_code == 401
    assert server.http.post("/auth/logout", headers=_bearer(fresh["access_token"])).status_code == 401
    assert _login(server, "nina", "correct horse battery").status_code == 200  # logging in again works

    on_disk = b"".join(p.read_bytes() for p in server.home.glob("server_accounts.sqlite*"))  # -wal too
    assert b"correct horse battery" not in on_disk  # only hashes
    for token in (tokens["refresh_token"], fresh["refresh_token"], fresh["access_token"]):
        prefix, secret = token[4:16], token[17:]  # cok_ or cor_, 12 characters, _, the secret
        assert secret.encode() not in on_disk and prefix.encode() in on_disk  # the prefix names the row


def test_a_wrong_password_is_the_same_401_as_an_unknown_name(server):
    _register(server, "omar", "a long passphrase")
    wrong = _login(server, "omar", "not the passphrase")
    unknown = _login(server, "nobody-at-all", "not the passphrase")
    cli_user = _login(server, "ana", "not the passphrase")  # added by the admin, has no password
    assert wrong.status_code == unknown.status_code == cli_user.status_code == 401
    assert wrong.json() == unknown.json() == cli_user.json() == {"detail": "wrong name or password"}
    assert "omar" not in wrong.text
    assert _login(server, "omar", "a long passphrase").status_code == 200


def test_register_refuses_a_taken_name_and_a_bad_body(server):
    _register(server, "pia", "first password")
    for name in ("pia", "ana"):  # registered, or added by the admin
        taken = server.http.post("/auth/register", json={"name": name, "password": "another password"})
        assert taken.status_code == 409 and "taken" in taken.json()["detail"]
    assert _login(server, "pia", "another password").status_code == 401  # the first password still holds
    for body, field in (({"name": "has space", "password": "long enough"}, ["body", "name"]),
                        ({"name": "quinn", "password": "short"}, ["body", "password"]),
                        ({"name": "quinn", "password": "long enough", "admin": True}, ["body", "admin"])):
        r = server.http.post("/auth/register", json=body)
        assert r.status_code == 422 and field in [e["loc"] for e in r.json()["detail"]], r.text
    assert _login(server, "quinn", "long enough").status_code == 401  # nothing was created


def test_failed_logins_are_throttled_per_name_and_per_address(server):
    _register(server, "rita", "rita's passphrase")
    _register(server, "sam", "sam's passphrase")
    for _ in range(5):
        assert _login(server, "rita", "guess").status_code == 401
    locked = _login(server, "rita", "rita's passphrase")  # even the right password: it is not checked
    assert locked.status_code == 429
    assert 1 <= int(locked.headers["retry-after"]) <= 60
    assert _login(server, "sam", "sam's passphrase").status_code == 200  # another name, same address

    # one address guessing many names (uvicorn takes X-Forwarded-For from a proxy on 127.0.0.1)
    attacker = {"headers": {"X-Forwarded-For": "203.0.113.7"}}
    for i in range(20):
        assert _login(server, f"guess{i}", "guess", **attacker).status_code == 401
    blocked = _login(server, "sam", "sam's passphrase", **attacker)
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
    assert _login(server, "sam", "sam's passphrase").status_code == 200  # from elsewhere


def test_two_refreshes_with_one_token_give_one_session(server):
    _register(server, "tess", "tess's passphrase")
    refresh = _login(server, "tess", "tess's passphrase").json()["refresh_token"]
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: server.http.post("/auth/refresh", json={"refresh_token": refresh}), range(2)))
    assert sorted(r.status_code for r in answers) == [200, 401]
    for r in answers:
        if r.status_code == 200:
            server.tokens["tess access 2"] = r.json()["access_token"]
            assert server.http.get("/spend", headers=_bearer(r.json()["access_token"])).status_code == 200


def test_self_service_is_off_unless_asked(kit, tmp_path):
    from fastapi.testclient import TestClient

    from cognitionos_kit.server import Accounts
    from cognitionos_kit.server.app import create_app

    accounts = Accounts(tmp_path / "accounts")
    try:
        client = TestClient(create_app(kit, accounts))
        for path in ("/auth/register", "/auth/login", "/auth/refresh", "/auth/logout"):
            assert client.post(path, json={"name": "x", "password": "long enough"}).status_code == 404
        assert not [p for p in client.get("/openapi.json").json()["paths"] if p.startswith("/auth")]
        assert accounts.users() == []
    finally:
        accounts.close()


def test_a_throttle_forgets_failures_once_they_leave_its_window():
    throttle = FailureThrottle(2, 0.3)
    throttle.fail("k")
    assert throttle.retry_after("k") == 0
    throttle.fail("k")
    assert throttle.retry_after("k") == 1 and throttle.retry_after("other") == 0
    time.sleep(0.35)
    assert throttle.retry_after("k") == 0
    with pytest.raises(InvalidRequestError):
        FailureThrottle(0, 60)


@pytest.mark.parametrize("field", ["access_ttl_s", "refresh_ttl_s", "failures_per_name", "window_s"])
def test_self_service_settings_must_be_positive(field):
    with pytest.raises(InvalidRequestError, match=field):
        SelfService(**{field: 0})


def test_registrations_are_limited_per_client_address(kit, tmp_path):
    from fastapi.testclient import TestClient

    from cognitionos_kit.server import Accounts
    from cognitionos_kit.server.app import create_app
    from cognitionos_kit.server.session_routes import SelfService

    accounts = Accounts(tmp_path / "accounts")
    try:
        client = TestClient(create_app(kit, accounts, self_service=SelfService(registrations_per_address=2)))
        assert client.post("/auth/register", json={"name": "u1", "password": "long enough"}).status_code == 201
        assert client.post("/auth/register", json={"name": "u1", "password": "long enough"}).status_code == 409
        refused = client.post("/auth/register", json={"name": "u2", "password": "long enough"})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 3000
        assert [u.name for u in accounts.users()] == ["u1"]  # the refused one was not created
        bad = client.post("/auth/register", json={"name": "", "password": "x"})
        assert bad.status_code == 422  # a bad body is refused before the limit is consulted
    finally:
        accounts.close()
