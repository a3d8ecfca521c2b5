"""The kit's leaner request path inside the SDKs (calls/providers/http.py ``_LeanRequests``): a
request built from the template of the first one is the request the SDK itself would build."""

from __future__ import annotations

import anthropic
import openai
import pytest

from cognitionos_kit.calls.providers.http import sdk_client_class

CASES = [(openai, "OpenAI", {"security": {"bearer_auth": True}}), (openai, "AsyncOpenAI", {}),
         (anthropic, "Anthropic", {}), (anthropic, "AsyncAnthropic", {})]


def _options(sdk, body, retries=0, **extra):
    from importlib import import_module

    models = import_module(f"{sdk.__name__}._models")
    return models.FinalRequestOptions.construct(method="post", url="/chat/completions", json_data=body, **extra)


def _same(a, b) -> None:
    assert (a.method, str(a.url), a.content, a.extensions) == (b.method, str(b.url), b.content, b.extensions)
    assert sorted(a.headers.multi_items()) == sorted(b.headers.multi_items())  # content-length included


@pytest.mark.parametrize("sdk,name,extra", CASES, ids=[c[1] for c in CASES])
def test_templated_requests_equal_what_the_sdk_builds(sdk, name, extra):
    kw = {"api_key": "sk-test-key", "base_url": "http://127.0.0.1:9/v1", "max_retries": 0}
    lean, plain = sdk_client_class(sdk, name)(**kw), getattr(sdk, name)(**kw)
    bodies = [{"model": "m", "messages": [{"role": "user", "content": "hello"}]},
              {"model": "m", "max_tokens": 7, "messages": [{"role": "user", "content": "ünïcode ✓ longer text"}]}]
    for retries in (0, 1):
        for body in bodies:  # the first builds the template, the next reuse it
            _same(lean._build_request(_options(sdk, body, **extra), retries_taken=retries),
                  plain._build_request(_options(sdk, body, **extra), retries_taken=retries))
    assert len(lean._kit_requests) == 2  # one template per retry count


def test_a_changed_key_or_base_url_gets_a_new_template():
    kw = {"base_url": "http://127.0.0.1:9/v1", "max_retries": 0}
    lean = sdk_client_class(openai, "OpenAI")(api_key="sk-one", **kw)
    body = {"model": "m", "messages": []}
    lean._build_request(_options(openai, body))
    lean.api_key = "sk-two"
    lean.base_url = "http://127.0.0.1:10/v2"
    req = lean._build_request(_options(openai, body))
    assert req.headers["authorization"] == "Bearer sk-two" and str(req.url) == "http://127.0.0.1:10/v2/chat/completions"


def test_a_request_with_a_query_is_always_built_by_the_sdk():
    kw = {"api_key": "sk-x", "base_url": "http://127.0.0.1:9/v1", "max_retries": 0, "default_query": {"api-version": "1"}}
    lean = sdk_client_class(openai, "OpenAI")(**kw)
    for text in ("a", "b"):
        req = lean._build_request(_options(openai, {"model": "m", "messages": [{"role": "user", "content": text}]}))
        assert req.url.params["api-version"] == "1" and text.encode() in req.content
    assert list(lean._kit_requests.values()) == [None]


def test_a_request_s_timeout_is_its_own():
    lean = sdk_client_class(openai, "OpenAI")(api_key="sk-x", base_url="http://127.0.0.1:9/v1", max_retries=0)
    first = lean._build_request(_options(openai, {"model": "m"}))
    second = lean._build_request(_options(openai, {"model": "m"}))
    second.extensions["timeout"]["read"] = 0.001  # what the kit's deadline does to a request in flight
    third = lean._build_request(_options(openai, {"model": "m"}))
    assert third.extensions["timeout"] == first.extensions["timeout"] != second.extensions["timeout"]
