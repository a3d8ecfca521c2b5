"""The team server's admin metrics, CORS and offline /docs: one ``serve --cors-origin`` process on a
free loopback port, driven over real HTTP with httpx; the default (no CORS) on the app in-process."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families
from team_server import add_users, provider_env, running_server

from cognitionos_kit.core.errors import ConfigurationError
from cognitionos_kit.server import Accounts

LAB = "https://lab.example.org"


@pytest.fixture(scope="module")
def server(tmp_path_factory, _openai_server, _anthropic_server):
    root = tmp_path_factory.mktemp("web")
    home = root / "home"
    tokens = add_users(home, ("ana",), ("bob", "dave"))
    env = provider_env(_openai_server, _anthropic_server)
    with running_server(root, home, env, tokens, "--cors-origin", LAB, "--cors-origin", "http://127.0.0.1:3000") as s:
        yield s


def _calls(server, by_user: bool) -> Counter:
    """Completions counted in ``/metrics`` (as the admin), by user (or all under None)."""
    r = server.as_("ana", "GET", "/metrics", params={"by_user": "true"} if by_user else {})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    counts: Counter = Counter()
    for family in text_string_to_metric_families(r.text):
        if family.name == "cognitionos_llm_calls":
            for sample in family.samples:
                if sample.name == "cognitionos_llm_calls_total":
                    counts[sample.labels.get("user_id")] += sample.value
    return counts


def test_metrics_count_each_users_calls_for_an_admin_only(server, providers):
    before, before_all = _calls(server, by_user=True), _calls(server, by_user=False)
    for user, n in (("bob", 2), ("dave", 1)):
        for i in range(n):
            r = server.complete(user, prompt=f"Count me {user} {i}")
            assert r.status_code == 200, r.text
    after, after_all = _calls(server, by_user=True), _calls(server, by_user=False)
    assert after["bob"] - before["bob"] == 2 and after["dave"] - before["dave"] == 1
    assert after_all[None] - before_all[None] == 3  # no user label unless asked for
    plain = server.as_("ana", "GET", "/metrics").text
    assert "cognitionos_llm_latency_seconds_bucket" in plain and "user_id=" not in plain

    assert server.as_("bob", "GET", "/metrics").status_code == 403
    assert server.as_("bob", "GET", "/metrics", params={"by_user": "true"}).status_code == 403
    assert server.as_(None, "GET", "/metrics").status_code == 401
    assert server.as_("nope", "GET", "/metrics").status_code == 401


def _preflight(http, origin: str):
    return http.options("/complete", headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                              "Access-Control-Request-Headers": "authorization, content-type"})


def test_cors_answers_only_the_listed_origins(server):
    for origin in (LAB, "http://127.0.0.1:3000"):
        r = _preflight(server.http, origin)
        assert r.status_code == 200, r.text
        assert r.headers["access-control-allow-origin"] == origin
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        assert "POST" in r.headers["access-control-allow-methods"]
    other = _preflight(server.http, "https://evil.example.com")
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    bearer = {"Authorization": f"Bearer {server.tokens['bob']}"}
    real = server.http.get("/spend", headers={**bearer, "Origin": LAB})
    assert real.status_code == 200 and real.headers["access-control-allow-origin"] == LAB
    denied = server.http.get("/spend", headers={**bearer, "Origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in denied.headers


def test_cors_is_off_by_default_and_a_bad_origin_is_refused(kit, tmp_path):
    from fastapi.testclient import TestClient

    from cognitionos_kit.server.app import create_app

    accounts = Accounts(tmp_path / "accounts")
    try:
        client = TestClient(create_app(kit, accounts))
        r = _preflight(client, LAB)
        assert "access-control-allow-origin" not in r.headers and r.status_code == 405
        assert "access-control-allow-origin" not in client.get("/health", headers={"Origin": LAB}).headers
        for bad in ("*", "lab.example.org", "https://lab.example.org/app", "ftp://lab.example.org"):
            with pytest.raises(ConfigurationError, match="CORS origin"):
                create_app(kit, accounts, cors_origins=[bad])
    finally:
        accounts.close()


def test_docs_load_swagger_ui_from_the_server_not_a_cdn(server):
    page = server.as_(None, "GET", "/docs")
    assert page.status_code == 200 and "swagger" in page.text.lower()
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page.text)
    assert urls and not [u for u in re.findall(r"https?://[^\s'\"<>)]+", page.text) if not u.startswith(server.url)]
    assets = {u for u in urls if u.startswith("/docs-assets/")}
    assert {"/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css", "/docs-assets/favicon.png"} == assets
    assert "/openapi.json" in urls
    js = server.http.get("/docs-assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"] and "SwaggerUIBundle" in js.text
    css = server.http.get("/docs-assets/swagger-ui.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css") and ".swagger-ui" in css.text
    icon = server.http.get("/docs-assets/favicon.png")
    assert icon.status_code == 200 and icon.content.startswith(b"\x89PNG")


def test_serve_refuses_a_bad_cors_origin_before_opening_the_data_folder(tmp_path, capsys):
    from cognitionos_kit.cli import main

    home = tmp_path / "home"
    assert main(["serve", "--home", str(home), "--port", "0", "--cors-origin", LAB, "--cors-origin", "*"]) == 2
    assert "CORS origin" in capsys.readouterr().err and not home.exists()
