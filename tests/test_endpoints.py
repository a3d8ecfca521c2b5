"""Named endpoints: several OpenAI-compatible servers at once, each a provider of its own name.

Two loopback servers speak the OpenAI wire protocol through the official SDK: "local" serves one
model, "vllm" two and, like llama.cpp's server, never sends usage in a stream. Models are found
through their ``/v1/models``; a role is never sent to an endpoint as another vendor's model name.
"""

from __future__ import annotations

import json
import warnings

import pytest
from conftest import OPENAI_KEY
from loopback import OpenAIServer, load_fixtures

from cognitionos_kit import AllProvidersFailedError, ConfigurationError, InvalidRequestError, Kit, KitWarning

pytestmark = pytest.mark.filterwarnings("ignore:no price known")


@pytest.fixture
def servers(openai_pair):
    return openai_pair


@pytest.fixture
def local(servers):
    srv = servers[0]
    srv.reset()
    srv.models, srv.stream_usage, srv.model_extra = ["qwen2.5-7b"], True, {}
    return srv


@pytest.fixture
def vllm(servers):
    srv = servers[1]
    srv.reset()
    srv.models, srv.stream_usage = ["smollm2-135m", "llama-3.2-1b"], False
    srv.model_extra = {"smollm2-135m": {"meta": {"n_ctx_train": 8192, "n_params": 134515008}}}
    return srv


@pytest.fixture
def make_kit(tmp_path, local, vllm):
    kits = []

    def make(**kw):
        kw.setdefault("endpoints", {"local": local.base_url, "vllm": vllm.base_url})
        k = Kit(tmp_path / "home", dotenv=False, timeout=3.0, max_retries=0, **kw)
        kits.append(k)
        return k

    yield make
    for k in kits:
        k.close()


def _chats(server):
    return [r for r in server.requests if r.path == "/v1/chat/completions"]


def test_each_endpoint_is_a_provider_in_the_chain_and_in_the_ledger(make_kit, local, vllm):
    kit = make_kit()
    assert kit.chain == ["local", "vllm"]  # no keys: the endpoints, not the simulator
    assert kit.status()["simulation_mode"] is False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = kit.complete("What is the capital of France?")
    # local lists exactly one model: every role gets it; vllm lists two and has none mapped
    assert (r.provider, r.model) == ("local", "qwen2.5-7b")
    assert _chats(local)[-1].body["model"] == "qwen2.5-7b"
    assert not _chats(vllm)
    assert any("role 'executor' has no model at vllm" in str(w.message) for w in caught)
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        kit.complete("And of Italy?")
    assert not any("has no model" in str(w.message) for w in again)  # said once per Kit, not on every call
    row = kit.usage().iloc[-1]
    assert (row.provider, row.model, row.status) == ("local", "qwen2.5-7b", "ok")
    assert kit.status()["providers"]["vllm"]["base_url"] == vllm.base_url


def test_a_plain_name_goes_to_the_one_endpoint_that_lists_it(make_kit, local, vllm):
    kit = make_kit()
    r = kit.complete("hi", model="smollm2-135m")
    assert (r.provider, r.model, r.substituted) == ("vllm", "smollm2-135m", False)
    assert _chats(vllm)[-1].body["model"] == "smollm2-135m" and not _chats(local)
    r = kit.complete("hi", model="vllm:llama-3.2-1b")  # prefixed: that endpoint
    assert (r.provider, r.model) == ("vllm", "llama-3.2-1b")
    r = kit.complete("hi", model="local:not-listed-but-named")  # a prefix is trusted without a listing
    assert (r.provider, r.model) == ("local", "not-listed-but-named")
    assert _chats(local)[-1].body["model"] == "not-listed-but-named"
    # Ollama-style names keep their colon: only a known endpoint name is a prefix
    r = kit.complete("hi", model="local:qwen2.5:7b")
    assert _chats(local)[-1].body["model"] == "qwen2.5:7b"


def test_a_name_two_endpoints_list_must_say_which(make_kit, local, vllm):
    local.models = ["qwen2.5-7b", "shared-model"]
    vllm.models = ["shared-model"]
    kit = make_kit()
    n = len(local.requests) + len(vllm.requests)
    with pytest.raises(InvalidRequestError, match=r"listed by local and vllm.*local:shared-model"):
        kit.complete("hi", model="shared-model")
    assert not _chats(local) and not _chats(vllm)
    assert len(local.requests) + len(vllm.requests) == n + 2  # the two /models listings, nothing else
    assert kit.complete("hi", model="vllm:shared-model").provider == "vllm"


def test_models_lists_what_each_endpoint_serves_with_its_context_window(make_kit, vllm):
    kit = make_kit(role_models={"vllm": {"planner": "llama-3.2-1b"}})
    df = kit.models()
    rows = {(r.provider, r.model): r for r in df.itertuples()}
    assert set(rows) == {("local", "qwen2.5-7b"), ("vllm", "smollm2-135m"), ("vllm", "llama-3.2-1b")}
    assert rows[("vllm", "smollm2-135m")].context_window == 8192  # from the server's own listing
    assert rows[("vllm", "llama-3.2-1b")].roles == "planner"
    assert rows[("local", "qwen2.5-7b")].roles == "planner, executor, critic, summarizer"
    assert {r.listed_by for r in rows.values()} == {"server"}
    assert {r.price_source for r in rows.values()} == {"unknown"}  # local models: no price, never OpenAI's
    listings = [r for r in vllm.requests if r.path == "/v1/models"]
    kit.models()
    assert len([r for r in vllm.requests if r.path == "/v1/models"]) == len(listings) == 1  # kept, not re-asked


def test_a_role_is_never_sent_to_an_endpoint_as_another_vendors_model(make_kit, local, vllm, openai_server,
                                                                       monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    kit = make_kit(endpoints={"vllm": vllm.base_url})
    assert kit.chain == ["openai", "vllm"]
    openai_server.enqueue_error(500)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KitWarning)
        with pytest.raises(AllProvidersFailedError):
            kit.complete("hi", role="executor")
    assert not _chats(vllm)  # never sent gpt-4o-mini
    # mapped for the endpoint, the role falls back to it with the endpoint's own model
    kit.set_role_model("executor", "llama-3.2-1b", provider="vllm")
    openai_server.enqueue_error(500)
    r = kit.complete("hi", role="executor")
    assert (r.provider, r.model, r.substituted) == ("vllm", "llama-3.2-1b", True)
    assert [a.provider for a in r.attempts] == ["openai", "vllm"]


def test_an_endpoint_with_no_model_for_the_role_says_how_to_map_one(make_kit, vllm):
    kit = make_kit(endpoints={"vllm": vllm.base_url})
    with pytest.raises(ConfigurationError, match=r"no model for role 'critic' at vllm.*smollm2-135m.*role_models"):
        kit.complete("hi", role="critic")
    assert not _chats(vllm)


def test_a_stream_without_usage_is_counted_and_says_estimated(make_kit, vllm):
    kit = make_kit()
    s = kit.stream("What is the capital of France?", model="smollm2-135m")
    text = "".join(s)
    c = s.completion
    assert text and c.provider == "vllm" and c.tokens_estimated is True
    assert c.prompt_tokens > 0 and c.completion_tokens > 0
    assert "~" in repr(c)
    assert bool(kit.usage().iloc[-1].tokens_estimated) is True


def test_unpriced_endpoint_models_cost_null_until_priced_for_that_endpoint(make_kit):
    kit = make_kit()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = kit.complete("hi", model="smollm2-135m")
    assert r.cost_usd is None
    assert any("provider='vllm'" in str(w.message) for w in caught)  # the fix names the endpoint
    kit.set_price("smollm2-135m", input_per_mtok=1.0, output_per_mtok=2.0, provider="vllm")
    r = kit.complete("hi", model="smollm2-135m")
    assert r.cost_usd == pytest.approx((r.prompt_tokens * 1.0 + r.completion_tokens * 2.0) / 1e6)
    assert kit.usage().iloc[-1].price_source == "custom"


def test_an_endpoint_priced_from_genai_prices_by_name(make_kit, local):
    local.models = ["llama-3.1-8b-instant"]
    kit = make_kit(endpoints={"groq": {"base_url": local.base_url, "price_as": "groq"}})
    r = kit.complete("hi")
    assert (r.provider, r.model) == ("groq", "llama-3.1-8b-instant")
    assert r.cost_usd is not None and r.cost_usd > 0
    assert kit.usage().iloc[-1].price_source == "genai-prices"


def test_connection_errors_name_the_endpoint_and_its_url(make_kit, local):
    dead = OpenAIServer()
    url = dead.base_url
    dead.stop()
    kit = make_kit(endpoints={"local": {"base_url": url, "models": ["qwen2.5-7b"]}})
    with pytest.raises(AllProvidersFailedError) as info:
        kit.complete("hi")
    msg = str(info.value)
    assert "local/qwen2.5-7b" in msg and f"{url}/chat/completions" in msg


def test_an_unreachable_endpoint_is_shown_as_such_and_named_models_still_work(make_kit, local):
    dead = OpenAIServer()
    url = dead.base_url
    dead.stop()
    kit = make_kit(endpoints={"down": url, "local": local.base_url})
    with pytest.warns(KitWarning, match=r"could not list the models of endpoint 'down'"):
        df = kit.models()
    assert df[df.provider == "down"].listed_by.tolist() == ["unreachable"]
    assert kit.complete("hi", model="qwen2.5-7b").provider == "local"


def test_endpoint_keys_are_sent_and_never_shown(make_kit, local, monkeypatch):
    secret = "gsk-test-" + "9" * 24
    monkeypatch.setenv("LOCAL_API_KEY", secret)  # <NAME>_API_KEY by default
    kit = make_kit(endpoints={"local": local.base_url})
    kit.complete("hi")
    assert _chats(local)[-1].headers["authorization"] == f"Bearer {secret}"
    shown = repr(kit) + json.dumps(kit.status(), default=str) + repr(kit.config) + kit.usage().to_csv()
    assert secret not in shown
    assert kit.status()["providers"]["local"]["key_set"] is True
    # a named variable that is not set leaves the endpoint unconfigured (no key is sent anywhere)
    kit2 = make_kit(endpoints={"local": {"base_url": local.base_url, "api_key_env": "MISSING_TEST_KEY"}})
    assert kit2.status()["providers"]["local"]["configured"] is False
    assert kit2.chain == ["simulated"]
    with pytest.raises(ConfigurationError, match="endpoint 'local' is not configured"):
        kit2.complete("hi", model="local:qwen2.5-7b")  # never the simulator in its place
    inline = make_kit(endpoints={"local": {"base_url": local.base_url, "api_key": "sk-inline-" + "7" * 20}})
    inline.complete("hi")
    assert _chats(local)[-1].headers["authorization"] == "Bearer sk-inline-" + "7" * 20
    assert "sk-inline-" not in repr(inline.config) + repr(inline)


def test_endpoints_from_the_environment_and_from_a_file(tmp_path, local, vllm, monkeypatch):
    monkeypatch.setenv("COGNITIONOS_ENDPOINTS", f"local={local.base_url}, vllm={vllm.base_url}")
    with Kit(tmp_path / "a", dotenv=False) as kit:
        assert kit.chain == ["local", "vllm"]
        assert kit.complete("hi", model="smollm2-135m").provider == "vllm"
    monkeypatch.delenv("COGNITIONOS_ENDPOINTS")
    f = tmp_path / "endpoints.toml"
    f.write_text(f'[endpoints.local]\nbase_url = "{local.base_url}"\nmodels = ["qwen2.5-7b"]\n'
                 f'[endpoints.vllm]\nbase_url = "{vllm.base_url}"\n')
    with Kit(tmp_path / "b", dotenv=False, endpoints=str(f)) as kit:
        assert kit.chain == ["local", "vllm"]
        assert kit.models().query("provider == 'local'").listed_by.tolist() == ["config"]
    # .env names the endpoint, the key is in the shell: refused (a .env must not redirect a shell key)
    (tmp_path / ".env").write_text(f"COGNITIONOS_ENDPOINTS=local={local.base_url}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOCAL_API_KEY", "sk-shell-" + "5" * 20)
    with pytest.raises(ConfigurationError, match="will not send a key"):
        Kit(tmp_path / "c")


@pytest.mark.parametrize("spec, match", [
    ({"openai": "http://127.0.0.1:1/v1"}, "built-in provider"),
    ({"Local": "http://127.0.0.1:1/v1"}, "lower-case name"),
    ({"local": "127.0.0.1:8080"}, "http"),
    ({"local": {"base_url": "http://x/v1", "kind": "gemini"}}, "kind must be one of"),
    ({"local": {"base_url": "http://x/v1", "modles": ["a"]}}, "unknown field"),
    ({"local": {"base_url": "http://x/v1", "api_key": "sk-secret-1234567890", "api_key_env": "X"}}, "not both"),
    ({"local": {"base_url": "http://x/v1", "models": "qwen"}}, "list of model names"),
    (["http://x/v1"], "maps a name"),
])
def test_bad_endpoint_configuration_is_refused_clearly(tmp_path, spec, match):
    with pytest.raises(ConfigurationError, match=match) as info:
        Kit(tmp_path / "h", dotenv=False, endpoints=spec)
    assert "sk-secret-1234567890" not in str(info.value)


def test_a_model_of_an_endpoint_left_out_of_providers_is_refused_before_sending(make_kit, local, vllm):
    kit = make_kit()
    with pytest.raises(InvalidRequestError, match="not in providers"):
        kit.complete("hi", model="vllm:smollm2-135m", providers=["local"])
    assert not _chats(vllm) and not _chats(local)


def test_async_and_experiments_route_endpoint_models(make_kit, local, vllm, capsys):
    import asyncio

    from cognitionos_kit import Experiment

    kit = make_kit()
    r = asyncio.run(kit.acomplete("hi", model="smollm2-135m"))
    assert r.provider == "vllm"
    exp = Experiment("endpoints", dataset=[{"q": "2+2?"}, {"q": "3+3?"}], prompts="Answer: {q}",
                     models=["smollm2-135m", "local:qwen2.5-7b"])
    run = kit.run(exp, concurrency=1)
    assert sorted(set(run.results.provider)) == ["local", "vllm"]
    assert run.cost_usd is None and run.unpriced_calls == 4  # unpriced: unknown, never $0
    assert "$0.0000 spent + 4 unpriced" in capsys.readouterr().err  # the progress bar says so too
    assert "unpriced: 4 calls" in repr(run)


def test_the_llm_magic_and_the_playground_take_a_plain_local_name(make_kit, local, vllm, tmp_path, monkeypatch,
                                                                  capsys):
    from shell import ipython_shell

    from cognitionos_kit.notebook.magics import MagicUsageError, resolve_target
    from cognitionos_kit.notebook.playground import model_choices

    kit = make_kit()
    assert resolve_target("smollm2-135m", kit) == {"model": "smollm2-135m"}
    with pytest.raises(MagicUsageError, match=r"a model the kit has \(qwen2.5-7b, smollm2-135m, llama-3.2-1b\)"):
        resolve_target("smollm2-1.7b", kit)  # a typo: not listed anywhere, refused with what is
    with ipython_shell(kit, tmp_path, monkeypatch) as sh:
        result = sh.run_cell("%%llm smollm2-135m --kit kit --as answer\nWhat is the capital of France?")
        assert result.success, result.error_in_exec
        assert (sh.user_ns["answer"].provider, sh.user_ns["answer"].model) == ("vllm", "smollm2-135m")
        assert _chats(vllm)[-1].body["model"] == "smollm2-135m"
        assert "~" in capsys.readouterr().out  # the footer marks the estimated counts of a usage-less stream
    assert ("vllm", "llama-3.2-1b") in model_choices(kit) and ("local", "qwen2.5-7b") in model_choices(kit)


@pytest.mark.parametrize("name, table, model", [
    ("groq", "groq", "llama-3.1-8b-instant"), ("together", "together", "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
    ("deepseek", "deepseek", "deepseek-chat"), ("mistral", "mistral", "mistral-small-latest"),
    ("gemini", "google", "gemini-2.5-flash"), ("ollama", None, "qwen2.5:7b"),
])
def test_the_documented_recipes_are_priced_from_their_base_url(tmp_path, monkeypatch, name, table, model):
    from cognitionos_kit import ENDPOINT_RECIPES

    recipe = ENDPOINT_RECIPES[name]
    if "api_key_env" in recipe:
        monkeypatch.setenv(recipe["api_key_env"], "test-key-" + "3" * 20)
    with Kit(tmp_path / "h", dotenv=False, endpoints={name: recipe}) as kit:  # nothing is sent
        assert kit.chain == [name] and kit.status()["providers"][name]["configured"] is True
        assert kit.prices.tables[name] == table
        price, source, _ = kit.prices.price(name, model)
        assert (price is not None, source) == ((True, "genai-prices") if table else (False, "unknown"))
        assert kit.router.directory.cached(name) is None  # its server was never asked: nothing is fetched


def test_set_role_model_maps_an_endpoint_model_by_prefix_or_by_its_listing(make_kit, vllm):
    kit = make_kit(endpoints={"vllm": vllm.base_url})
    kit.set_role_model("critic", "vllm:llama-3.2-1b")
    kit.set_role_model("executor", "smollm2-135m")  # listed by vllm only
    assert kit.router.role_models["vllm"] == {"critic": "llama-3.2-1b", "executor": "smollm2-135m"}
    assert kit.complete("hi", role="critic").model == "llama-3.2-1b"
    assert kit.complete("hi", role="planner").model == "smollm2-135m"  # an unmapped role: the executor's model
    assert kit.config.role_models == {"vllm": {"critic": "llama-3.2-1b", "executor": "smollm2-135m"}}
    with pytest.raises(InvalidRequestError, match="pass provider="):
        kit.set_role_model("critic", "nobody-lists-this")


def test_counts_missing_from_a_stream_come_from_the_servers_tokenizer_or_say_cl100k(make_kit, vllm):
    kit = make_kit()
    s = kit.stream("What is the capital of France?", model="smollm2-135m")
    text = "".join(s)
    c = s.completion
    assert c.tokens_estimated and c.token_counter == "cl100k_base estimate"  # no tokenizer here: labelled
    assert "(cl100k_base estimate)" in c.footer()
    vllm.tokenize = True
    try:
        kit2 = make_kit()
        s = kit2.stream("What is the capital of France?", model="smollm2-135m")
        text = "".join(s)
        c = s.completion
        # the server's own tokenizer (here: one token per word), not tiktoken's
        assert c.token_counter == "vllm tokenizer" and c.completion_tokens == len(text.split())
        # the prompt by the server itself, chat template included: a one-token request with the same messages
        replay = [r.body for r in _chats(vllm)][-1]
        assert replay["max_tokens"] == 1 and not replay.get("stream")
        assert replay["messages"] == [{"role": "user", "content": "What is the capital of France?"}]
        reported = load_fixtures("openai", "/v1/chat/completions", stream=False, tools=False, status=200)[0]
        assert c.prompt_tokens == reported["response"]["json"]["usage"]["prompt_tokens"]
        assert kit2.usage().iloc[-1].token_counter == "vllm tokenizer"
        assert [r.body for r in vllm.requests if r.path == "/tokenize"][0]["content"] == text
        n = len([r for r in vllm.requests if r.path == "/tokenize"])
        r = kit2.complete("hi", model="smollm2-135m")  # the server reported usage: nothing is counted
        assert r.token_counter is None and not r.tokens_estimated
        assert len([r for r in vllm.requests if r.path == "/tokenize"]) == n
    finally:
        vllm.tokenize = False


def test_a_named_model_falls_back_to_an_endpoint_model_only_when_mapped(make_kit, local, openai_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    kit = make_kit(endpoints={"local": local.base_url}, fallback_models={"gpt-4o-mini": "local:qwen2.5-7b"})
    openai_server.enqueue_error(503)
    r = kit.complete("hi", model="gpt-4o-mini")
    assert [(a.provider, a.model) for a in r.attempts] == [("openai", "gpt-4o-mini"), ("local", "qwen2.5-7b")]
    assert (r.requested_model, r.model, r.substituted) == ("gpt-4o-mini", "qwen2.5-7b", True)
    plain = make_kit(endpoints={"local": local.base_url})
    openai_server.enqueue_error(503)
    with pytest.raises(AllProvidersFailedError):
        plain.complete("hi", model="gpt-4o-mini")  # unmapped: never another server's model
    assert [r.body["model"] for r in _chats(local)] == ["qwen2.5-7b"]


def test_openai_base_url_without_a_key_is_a_local_server_never_sent_openai_names(tmp_path, vllm, monkeypatch):
    # the first symptom: llama.cpp behind OPENAI_BASE_URL was sent gpt-4o-mini and priced as it
    monkeypatch.setenv("OPENAI_BASE_URL", vllm.base_url)
    vllm.models = ["smollm2-135m"]
    with Kit(tmp_path / "h", dotenv=False, max_retries=0) as kit:
        assert kit.chain == ["openai"]
        r = kit.complete("hi")  # a role: the server's one model
        assert (r.provider, r.model) == ("openai", "smollm2-135m") and _chats(vllm)[-1].body["model"] == "smollm2-135m"
        assert r.cost_usd is None  # a local server: unpriced, never GPT-4o-mini's price
        assert kit.models().model.tolist() == ["smollm2-135m"]
        s = kit.stream("hi", model="smollm2-135m")
        "".join(s)
        assert s.completion.token_counter == "cl100k_base estimate"
    # with a key it is OpenAI (or a proxy for it): OpenAI's names and prices, as before
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    with Kit(tmp_path / "h2", dotenv=False, max_retries=0) as kit:
        r = kit.complete("hi")
        assert r.model == "gpt-4o-mini" and r.cost_usd is not None and r.cost_usd > 0


@pytest.mark.parametrize("url, local", [("http://127.0.0.1:8080/v1", True), ("http://localhost:11434/v1", True),
                                        ("http://10.1.2.3:8000/v1", True), ("http://192.168.0.9/v1", True),
                                        ("https://api.groq.com/openai/v1", False), ("https://8.8.8.8/v1", False)])
def test_the_one_token_prompt_count_is_asked_only_of_servers_on_this_network(url, local):
    # elsewhere the extra request could be billed, and no ledger row would record it
    from cognitionos_kit.calls.providers.endpoint import _on_this_network

    assert _on_this_network(url) is local
