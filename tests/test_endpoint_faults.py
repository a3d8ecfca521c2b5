"""The fault matrix (tests/test_fault_matrix.py) at a named endpoint: every fault of the OpenAI
wire protocol, in each call mode, injected at the first endpoint of a chain of two
OpenAI-compatible servers ("local", then "backup"), through the official SDK.

Each case asserts the outcome, that an answer from the backup says it is a substitute (on the
Completion and in the ledger), the attempts and their error types, that nothing is sent to a
server after it broke (an interrupted stream is counted locally, never by asking the server that
failed), and that the endpoint's key (echoed by the 401 body) appears nowhere.
"""

from __future__ import annotations

import re

import pytest
from conftest import OPENAI_KEY
from test_fault_matrix import (
    FAULTS,
    STREAMS,
    TYPO,
    _assert_no_key,
    _describe,
    _null,
    _run,
    _status_fault,
)

from cognitionos_kit import AllProvidersFailedError, Kit, ProviderError, StreamInterruptedError

LOCAL, BACKUP = "qwen2.5-7b", "llama-3.2-1b"
CASES = [pytest.param(f, mode, id=f"{f.name}-{mode}") for f in FAULTS if "openai" in f.providers for mode in f.modes]
CHAT = "/v1/chat/completions"


@pytest.fixture
def pair(openai_pair):
    return openai_pair


@pytest.fixture(autouse=True)
def _no_ca_bundle(monkeypatch, tmp_path_factory):  # as the fault matrix: each Kit's clients start fast
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path_factory.mktemp("no-ca")))


@pytest.mark.parametrize("fault,mode", CASES)
def test_endpoint_fault(pair, tmp_path, fault, mode):
    local, backup = pair
    for srv, model in ((local, LOCAL), (backup, BACKUP)):
        srv.reset()
        srv.models, srv.tokenize = [model], True  # a tokenizer: it must not be asked after a failure
    kit = Kit(tmp_path / "home", dotenv=False, timeout=1.0, max_retries=1, **fault.kit_kw, endpoints={
        "local": {"base_url": local.base_url, "api_key": OPENAI_KEY},  # the 401 body echoes it
        "backup": backup.base_url})
    kit.set_price(LOCAL, input_per_mtok=1.0, output_per_mtok=2.0, provider="local")
    kit.set_price(BACKUP, input_per_mtok=1.0, output_per_mtok=2.0, provider="backup")
    fault.inject(local, "openai", mode)
    if fault.outcome == "all_fail":
        _status_fault(529, "overloaded").inject(backup, "openai", mode)

    out = _run(kit, mode, **({"model": f"local:{TYPO['openai']}"} if fault.typo else {"role": "executor"}))

    chats = [r for r in local.requests if r.path == CHAT]
    backup_chats = [r for r in backup.requests if r.path == CHAT]
    assert chats and chats[0].headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert not any(r.path in ("/tokenize", "/extras/tokenize/count") for r in local.requests), \
        "the server that failed was asked to count tokens"
    ledger = kit.usage()
    expected = fault.expected_type("openai")
    pattern = fault.message_re("openai")

    if fault.outcome == "fallback":
        r = out.result
        assert out.exc is None and r is not None, _describe(out)
        assert (r.provider, r.model, r.requested_provider, r.requested_model) == ("backup", BACKUP, "local", LOCAL)
        assert r.substituted is True and "SUBSTITUTE" in repr(r)
        assert [(a.provider, a.status) for a in r.attempts] == [("local", "error"), ("backup", "ok")]
        assert r.attempts[0].error_type in expected
        assert pattern is None or re.search(pattern, r.attempts[0].error_message or "")
        assert r.cost_usd is not None and r.cost_usd > 0 and r.tokens_estimated is False
        if mode in STREAMS:
            assert "".join(out.chunks) == r.content
        rows = ledger.sort_values("attempt")
        assert list(rows.provider) == ["local", "backup"] and list(rows.status) == ["error", "ok"]
        assert [bool(v) for v in rows.substituted] == [False, True]
        assert _null(rows.cost_usd.iloc[0]) and rows.cost_usd.iloc[1] > 0
        assert len(backup_chats) == 1
    elif fault.outcome == "stop":
        e = out.exc
        assert isinstance(e, ProviderError) and not isinstance(e, StreamInterruptedError), _describe(out)
        assert e.provider == "local" and e.error_type in expected
        assert pattern is None or re.search(pattern, str(e))
        assert not backup_chats and list(ledger.provider) == ["local"] and list(ledger.status) == ["error"]
    elif fault.outcome == "interrupted":
        e = out.exc
        assert isinstance(e, StreamInterruptedError), _describe(out)
        assert e.provider == "local" and e.error_type in expected and e.partial == "".join(out.chunks)
        c = e.completion
        assert c.tokens_estimated is True and c.token_counter == "cl100k_base estimate"  # counted here
        assert not backup_chats, "the backup was asked after text had arrived: billed twice"
        assert list(ledger.status) == ["interrupted"] and ledger.token_counter.iloc[0] == "cl100k_base estimate"
    else:  # all_fail
        e = out.exc
        assert isinstance(e, AllProvidersFailedError), _describe(out)
        assert [(a.provider, a.status) for a in e.attempts] == [("local", "error"), ("backup", "error")]
        assert f"local/{LOCAL}" in str(e) and f"backup/{BACKUP}" in str(e)
        assert local.base_url in str(e) or backup.base_url in str(e)  # where the requests went
        assert "simulated" not in set(ledger.provider)
    if fault.requests is not None:
        assert len(chats) == fault.requests, f"local received {len(chats)} chat request(s), expected {fault.requests}"
    _assert_no_key(kit, out, ledger)
    kit.close()
