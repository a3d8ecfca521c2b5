"""Azure OpenAI, Anthropic on Bedrock and Anthropic on Vertex as named endpoints, through the
official SDKs' own clients (``AzureOpenAI``, ``AnthropicBedrock``, ``AnthropicVertex``) over real
HTTP against loopback servers speaking their wire formats (tests/cloud_servers.py): configured
from their usual environment variables, priced from genai-prices, keys never shown."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from cloud_servers import AzureServer, BedrockServer, VertexServer

from cognitionos_kit import AllProvidersFailedError, ConfigurationError, Kit

AZURE_KEY = "azure-key-0123456789abcdef0123"
AWS_ID, AWS_SECRET = "AKIATESTEXAMPLE12345", "aws-secret-0123456789abcdefghij"
VERTEX_TOKEN = "ya29.test-token-0123456789abcdef"
BEDROCK_MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
VERTEX_MODEL = "claude-haiku-4-5@20251001"


@pytest.fixture(scope="module")
def clouds():
    servers = AzureServer(), BedrockServer(), VertexServer()
    yield servers
    for s in servers:
        s.stop()


@pytest.fixture
def cloud_env(clouds, monkeypatch, tmp_path):
    az, br, vx = clouds
    for s in clouds:
        s.reset()
    # the SDKs' usual variables; boto3 must not find a profile or an instance role of this machine
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in ("AWS_BEARER_TOKEN_BEDROCK", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    env = {"AZURE_OPENAI_API_KEY": AZURE_KEY, "AZURE_OPENAI_ENDPOINT": az.base_url, "OPENAI_API_VERSION": "2024-10-21",
           "AWS_ACCESS_KEY_ID": AWS_ID, "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "AWS_REGION": "us-east-1",
           "ANTHROPIC_BEDROCK_BASE_URL": br.url, "CLOUD_ML_REGION": "us-east5",
           "ANTHROPIC_VERTEX_PROJECT_ID": "lab-project", "ANTHROPIC_VERTEX_BASE_URL": vx.base_url}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def kit(cloud_env, tmp_path):
    k = Kit(tmp_path / "home", dotenv=False, timeout=5.0, max_retries=0, endpoints={
        "azure": {"kind": "azure", "models": {"prod-mini": "gpt-4o-mini"}},  # deployment -> priced as
        "bedrock": {"kind": "bedrock"},
        "vertex": {"kind": "vertex", "api_key_env": "VERTEX_TOKEN_TEST"},
    })
    yield k
    k.close()


@pytest.fixture(autouse=True)
def _vertex_token(monkeypatch):
    monkeypatch.setenv("VERTEX_TOKEN_TEST", VERTEX_TOKEN)


def _secrets_absent(kit) -> None:
    shown = repr(kit) + json.dumps(kit.status(), default=str) + repr(kit.config) + kit.usage().to_csv() + \
        kit.log().to_csv()
    for secret in (AZURE_KEY, AWS_SECRET, VERTEX_TOKEN):
        assert secret not in shown


def test_azure_sends_the_deployment_path_api_version_and_api_key_header(kit, clouds):
    az = clouds[0]
    assert {n: p["endpoint_kind"] for n, p in kit.status()["providers"].items()} == {
        "openai": None, "anthropic": None, "simulated": None, "azure": "azure", "bedrock": "bedrock", "vertex": "vertex"}
    r = kit.complete("What is the capital of France?", model="azure:prod-mini")
    assert (r.provider, r.model) == ("azure", "prod-mini")
    req = az.requests[-1]
    assert req.original_path == "/openai/deployments/prod-mini/chat/completions"
    assert req.query == "api-version=2024-10-21"
    assert req.headers["api-key"] == AZURE_KEY and "authorization" not in req.headers
    # priced as the model the deployment runs, from genai-prices' Azure table
    assert r.cost_usd is not None and r.cost_usd > 0
    row = kit.usage().iloc[-1]
    assert (row.provider, row.price_source) == ("azure", "genai-prices")
    s = kit.stream("Hi", model="prod-mini")  # a plain deployment name the endpoint lists
    assert "".join(s) and s.completion.provider == "azure"
    assert az.requests[-1].body["stream"] is True
    _secrets_absent(kit)


def test_bedrock_signs_with_sigv4_on_the_invoke_paths_sync_async_and_streaming(kit, clouds):
    br = clouds[1]
    r = kit.complete("hi", model=f"bedrock:{BEDROCK_MODEL}")
    assert (r.provider, r.model) == ("bedrock", BEDROCK_MODEL)
    req = br.requests[-1]
    assert req.original_path == f"/model/{BEDROCK_MODEL}/invoke"
    assert re.fullmatch(rf"AWS4-HMAC-SHA256 Credential={AWS_ID}/\d{{8}}/us-east-1/bedrock/aws4_request, "
                        r"SignedHeaders=[a-z0-9;-]+, Signature=[0-9a-f]{64}", req.headers["authorization"])
    assert re.fullmatch(r"\d{8}T\d{6}Z", req.headers["x-amz-date"])
    sent = json.loads(req.raw)
    assert "model" not in sent and "stream" not in sent  # moved into the path
    assert sent["anthropic_version"]  # set by the SDK
    assert r.cost_usd is not None and r.cost_usd > 0  # genai-prices' AWS table knows Bedrock's model ids

    async def both():
        a = await kit.acomplete("hi", model=f"bedrock:{BEDROCK_MODEL}")
        s = kit.astream("hi", model=f"bedrock:{BEDROCK_MODEL}")
        text = "".join([c async for c in s])
        return a, text, s.completion

    a, text, c = asyncio.run(both())
    assert a.provider == "bedrock" and text and c.provider == "bedrock"
    assert br.requests[-1].original_path == f"/model/{BEDROCK_MODEL}/invoke-with-response-stream"
    assert c.prompt_tokens > 0 and c.completion_tokens > 0 and not c.tokens_estimated  # usage from the events
    assert [row.status for row in kit.usage().itertuples()] == ["ok"] * 3
    _secrets_absent(kit)


def test_bedrock_with_an_api_key_sends_a_bearer_token(cloud_env, clouds, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "bedrock-api-key-" + "8" * 20)
    with Kit(tmp_path / "h", dotenv=False, endpoints={"bedrock": {"kind": "bedrock"}}) as kit:
        kit.complete("hi", model=f"bedrock:{BEDROCK_MODEL}")
        assert clouds[1].requests[-1].headers["authorization"] == "Bearer bedrock-api-key-" + "8" * 20
        assert "bedrock-api-key-" not in json.dumps(kit.status(), default=str)


def test_vertex_sends_the_project_region_model_path_and_a_bearer_token(kit, clouds):
    vx = clouds[2]
    r = kit.complete("hi", model=f"vertex:{VERTEX_MODEL}")
    assert (r.provider, r.model) == ("vertex", VERTEX_MODEL)
    req = vx.requests[-1]
    path = f"/v1/projects/lab-project/locations/us-east5/publishers/anthropic/models/{VERTEX_MODEL}:rawPredict"
    assert req.original_path == path
    assert req.headers["authorization"] == f"Bearer {VERTEX_TOKEN}"
    sent = json.loads(req.raw)
    assert "model" not in sent and sent["anthropic_version"]  # the model is in the path; the SDK sets the version
    assert r.cost_usd is not None and r.cost_usd > 0  # genai-prices' Google table
    s = kit.stream("hi", model=f"vertex:{VERTEX_MODEL}")
    assert "".join(s) and s.completion.provider == "vertex"
    assert vx.requests[-1].original_path.endswith(":streamRawPredict")
    _secrets_absent(kit)


def test_a_cloud_role_uses_the_mapped_model_and_falls_back_across_clouds(cloud_env, clouds, tmp_path):
    az, br, _ = clouds
    kit = Kit(tmp_path / "h", dotenv=False, timeout=5.0, max_retries=0,
              endpoints={"azure": {"kind": "azure", "models": ["prod-mini"]}, "bedrock": {"kind": "bedrock"}},
              role_models={"bedrock": {"executor": BEDROCK_MODEL}})
    assert kit.chain == ["azure", "bedrock"]
    az.enqueue_error(503)
    r = kit.complete("hi")  # azure's only deployment, then bedrock's mapped model
    assert [(a.provider, a.model, a.status) for a in r.attempts] == [
        ("azure", "prod-mini", "error"), ("bedrock", BEDROCK_MODEL, "ok")]
    assert r.substituted is True and r.provider == "bedrock"
    kit.close()


def test_cloud_errors_name_the_endpoint_and_the_url(cloud_env, clouds, monkeypatch, tmp_path):
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "wrong-" + "1" * 20)
    az = clouds[0]
    az.enqueue_error(401)
    with Kit(tmp_path / "h", dotenv=False, max_retries=0, endpoints={"azure": {"kind": "azure"}}) as kit:
        with pytest.warns(Warning, match="AZURE_OPENAI_API_KEY"), pytest.raises(AllProvidersFailedError) as info:
            kit.complete("hi", model="azure:prod-mini")
        msg = str(info.value)
        assert "azure/prod-mini" in msg and f"{az.url}/openai/deployments/prod-mini/chat/completions" in msg
        assert "wrong-" not in msg and "api-version" not in msg  # never the key; never the query
        assert kit.status()["providers"]["azure"]["auth"] == "failing"


@pytest.mark.parametrize("kind, unset, match", [
    ("azure", "OPENAI_API_VERSION", r"needs api_version.*OPENAI_API_VERSION"),
    ("azure", "AZURE_OPENAI_ENDPOINT", r"needs base_url.*AZURE_OPENAI_ENDPOINT"),
    ("bedrock", "AWS_REGION", r"needs region.*AWS_REGION"),
    ("vertex", "ANTHROPIC_VERTEX_PROJECT_ID", r"needs project_id.*ANTHROPIC_VERTEX_PROJECT_ID"),
])
def test_a_cloud_endpoint_missing_a_setting_says_which_and_where(cloud_env, monkeypatch, tmp_path, kind, unset, match):
    monkeypatch.delenv(unset)
    with pytest.raises(ConfigurationError, match=match):
        Kit(tmp_path / "h", dotenv=False, endpoints={"c": {"kind": kind}})


def test_cloud_fields_belong_to_their_kind(tmp_path):
    with pytest.raises(ConfigurationError, match="region is for kind bedrock or vertex"):
        Kit(tmp_path / "h", dotenv=False, endpoints={"local": {"base_url": "http://x/v1", "region": "us-east-1"}})


def test_bedrock_without_credentials_is_an_auth_failure_naming_what_to_set(cloud_env, monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with Kit(tmp_path / "h", dotenv=False, endpoints={"bedrock": {"kind": "bedrock"}}) as kit:
        with pytest.warns(Warning, match="AWS_BEARER_TOKEN_BEDROCK"), pytest.raises(AllProvidersFailedError) as info:
            kit.complete("hi", model=f"bedrock:{BEDROCK_MODEL}")
        attempt = info.value.attempts[0]
        assert (attempt.provider, attempt.error_type) == ("bedrock", "auth_error")
        assert "no credentials" in attempt.error_message
        assert kit.status()["providers"]["bedrock"]["auth"] == "failing"
