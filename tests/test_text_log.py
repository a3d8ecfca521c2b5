"""The text log: every request's messages, parameters and answer (and each attempt's error) kept
beside the ledger by request id; searchable; opt-out per Kit and per call; a redaction hook;
several processes; a chat continued from a logged request; the log browser finding a call."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import duckdb
import pytest

from cognitionos_kit import InvalidRequestError, Kit, LatencyModel


def _kit(path, **kw) -> Kit:
    return Kit(path, dotenv=False, simulated_latency=LatencyModel(scale=0), **kw)


def _get_weather(city: str) -> str:
    """Get the weather for a city."""
    return f"sunny in {city}"


def test_each_request_is_kept_with_its_text_and_numbers(tmp_path):
    kit = _kit(tmp_path)
    r = kit.complete("What is the capital of France?", system="Answer in one line.", user_id="ada", temperature=0.3,
                     stop=["\n\n"], max_tokens=200)
    entry = kit.log().iloc[0]
    assert (entry.request_id, entry.prompt, entry.answer, entry.system) == (
        r.request_id, "What is the capital of France?", r.content, "Answer in one line.")
    assert json.loads(entry.messages) == [{"role": "user", "content": "What is the capital of France?"}]
    assert json.loads(entry.params) == {"model": r.model, "max_tokens": 200, "temperature": 0.3, "stop": ["\n\n"]}
    row = kit.usage().iloc[0]
    assert entry.cost_usd == pytest.approx(row.cost_usd) and entry.latency_ms == pytest.approx(row.latency_ms)
    assert (entry.user_id, entry.status, entry.attempts) == ("ada", "ok", 1)


def test_the_ledger_stays_numbers_only_in_its_own_file(tmp_path):
    kit = _kit(tmp_path)
    kit.complete("What is the capital of France?")
    assert "prompt" not in kit.usage().columns and "answer" not in kit.usage().columns
    kit.close()
    with duckdb.connect(str(tmp_path / "cognitionos.duckdb"), read_only=True) as con:
        tables = {t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert "llm_usage" in tables and "llm_log" not in tables
    assert (tmp_path / "cognitionos_log.duckdb").exists()


def test_failed_attempts_keep_their_error_text(live_kit, openai_server, anthropic_server):
    openai_server.enqueue_error(500, times=2)
    r = live_kit.complete("Say hi", role="executor")
    entry = live_kit.log(request_id=r.request_id).iloc[0]
    assert entry.attempts == 2 and entry.provider == "anthropic" and entry.status == "ok"
    assert "openai/" in entry.errors and entry.answer == r.content
    assert entry.cost_usd == pytest.approx(live_kit.usage(request_id=r.request_id).cost_usd.sum())


def test_search_and_filters(tmp_path):
    kit = _kit(tmp_path)
    kit.complete("Tell me about Paris in spring", user_id="ada")
    kit.complete("Explain DuckDB joins", user_id="bo")
    s = kit.stream("Paris or Rome for a conference?", user_id="bo")
    "".join(s)
    assert set(kit.log("paris").prompt) == {"Tell me about Paris in spring", "Paris or Rome for a conference?"}
    assert list(kit.log("paris", user_id="bo").prompt) == ["Paris or Rome for a conference?"]
    assert list(kit.log(user_id="ada").prompt) == ["Tell me about Paris in spring"]
    assert len(kit.log("100%_sure")) == 0  # LIKE wildcards in the text are literal
    assert list(kit.log(limit=1).prompt) == ["Paris or Rome for a conference?"]  # newest first
    with pytest.raises(InvalidRequestError, match="cannot filter on"):
        kit.log(prompt="x")


def test_opting_out_per_kit_and_per_call(tmp_path):
    quiet = _kit(tmp_path / "quiet", log_text=False)
    quiet.complete("a private question")
    assert len(quiet.usage()) == 1 and not (tmp_path / "quiet" / "cognitionos_log.duckdb").exists()
    assert quiet.status()["text_log"] is None
    kit = _kit(tmp_path / "loud")
    kit.complete("kept")
    kit.complete("not kept", log_text=False)
    kit.complete("kept too", log_text=True)
    assert set(kit.log().prompt) == {"kept", "kept too"} and len(kit.usage()) == 3
    with pytest.raises(InvalidRequestError, match="log_text must be"):
        kit.complete("x", log_text="no")


def test_the_redaction_hook_and_key_redaction_apply_to_every_text(tmp_path):
    def hide_emails(text: str) -> str:
        return text.replace("ada@example.com", "[email]")

    kit = _kit(tmp_path, log_redact=hide_emails)
    kit.complete("Write to ada@example.com with key sk-ant-api03-abcdefghijklmnop", system="Mail ada@example.com")
    entry = kit.log().iloc[0]
    for text in (entry.prompt, entry.system, entry.messages):
        assert "ada@example.com" not in text and "[email]" in text
        assert "sk-ant-api03-abcdefghijklmnop" not in text
    raw = "".join(p.read_text(errors="replace") for p in (tmp_path / "log_journal").rglob("*") if p.is_file())
    assert "ada@example.com" not in raw  # never written, not only hidden when read


def test_tool_turns_and_their_trace_are_logged(tmp_path):
    kit = _kit(tmp_path)
    r = kit.complete("What's the weather in Lisbon?", tools=[_get_weather], run_tools=True)
    turns = kit.log(trace_id=r.trace_id).sort_values("ts")
    assert len(turns) == 2
    assert json.loads(turns.tool_calls.iloc[0])[0]["name"] == "_get_weather"
    assert json.loads(turns.messages.iloc[1])[-1]["content"] == "sunny in Lisbon"


def test_images_are_described_not_stored(tmp_path):
    import io

    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.new("RGB", (40, 30), "blue").save(buf, format="PNG")
    kit = _kit(tmp_path)
    kit.complete("What colour is this?", images=[buf.getvalue()])
    (message,) = json.loads(kit.log().messages.iloc[0])
    assert message["images"][0].startswith("image/png 40x30 sha256:")


def test_a_chat_continues_from_a_logged_request(live_kit, openai_server):
    first = live_kit.complete("Name a prime", model="gpt-4o-mini", providers=["openai"], system="Be terse.")
    chat = live_kit.chat(continue_from=first.request_id, model="gpt-4o-mini", providers=["openai"])
    chat.send("And the next one?")
    sent = openai_server.requests[-1].body["messages"]
    assert sent == [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Name a prime"},
                    {"role": "assistant", "content": first.content}, {"role": "user", "content": "And the next one?"}]
    with pytest.raises(InvalidRequestError, match="not in the text log"):
        live_kit.chat(continue_from="req_nope")


def test_two_processes_share_one_text_log(tmp_path):
    script = textwrap.dedent(f"""
        from cognitionos_kit import Kit, LatencyModel
        kit = Kit({str(tmp_path)!r}, dotenv=False, simulated_latency=LatencyModel(scale=0))
        for i in range(5):
            kit.complete(f"child question {{i}} about Lisbon")
        kit.close()
    """)
    child = subprocess.Popen([sys.executable, "-c", script])
    kit = _kit(tmp_path)
    for i in range(5):
        kit.complete(f"parent question {i} about Oslo")
    assert child.wait(timeout=120) == 0
    log = kit.log()
    assert len(log) == 10 and len(kit.log("lisbon")) == 5 and len(kit.log("oslo")) == 5
    assert set(log.request_id) == set(kit.usage().request_id)


def test_the_log_browser_finds_a_call_by_text(tmp_path):
    from cognitionos_kit.notebook.log_browser import LogBrowser

    kit = _kit(tmp_path)
    kit.complete("Tell me about Paris in spring", user_id="ada")
    target = kit.complete("Explain DuckDB window functions", user_id="bo")
    browser = kit.log_browser()
    assert isinstance(browser, LogBrowser) and len(browser.requests.options) == 2
    browser.search.value = "window functions"
    assert [v for _, v in browser.requests.options] == [target.request_id]
    html = browser.detail.value
    assert "Explain DuckDB window functions" in html and target.content[:40] in html
    assert target.request_id in html and "continue_from" in html and "$0.0000" in html
    browser.search.value = "nothing like this"
    assert browser.requests.options == () and "Nothing logged matches" in browser.detail.value
    browser.search.value = ""
    browser.user.value = "ada"
    assert len(browser.requests.options) == 1
