"""The %%llm magic: line parsing, {variable} interpolation, and a real IPython shell end to end."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

import cognitionos_kit
from cognitionos_kit import Kit, LatencyModel
from cognitionos_kit.core.errors import InvalidRequestError, KitError
from cognitionos_kit.notebook.magics import FLAGS, LlmMagics, MagicUsageError, interpolate, parse_line, resolve_target


# --- parsing -----------------------------------------------------------------------------
def test_defaults():
    a = parse_line("")
    assert (a.target, a.user, a.max_cost, a.format, a.var, a.kit) == (None, None, None, "markdown", "_llm", None)


def test_every_flag_with_space_or_equals():
    a = parse_line("planner --user ann --max-cost 0.01 --format=code --as result "
                   "--system 'Be brief.' --max-tokens 64 --temperature=0.3 --kit mykit")
    assert a.target == "planner" and a.user == "ann" and a.max_cost == 0.01 and a.format == "code"
    assert a.var == "result" and a.system == "Be brief." and a.max_tokens == 64
    assert a.temperature == 0.3 and a.kit == "mykit"


def test_negative_temperature_value_is_a_value_not_a_flag():
    assert parse_line("--temperature -0.5").temperature == -0.5


def test_quoted_values_with_spaces_either_way():
    assert parse_line("--system 'Be brief, be kind.' sim-nano").system == "Be brief, be kind."
    a = parse_line('sim-nano --system="Answer in French." --user=\'ann lee\'')
    assert (a.target, a.system, a.user) == ("sim-nano", "Answer in French.", "ann lee")


def test_the_options_are_magic_arguments_so_help_lists_them():
    """``%%llm?`` shows the magic's docstring, which magic_arguments fills with the options."""
    doc = LlmMagics.llm.__doc__
    assert "%%llm" in doc and "model_or_role" in doc
    for flag in FLAGS:
        assert flag in doc
    assert set(FLAGS) == {f for f in doc.split() if f.startswith("--") and f[2:].replace("-", "").isalpha()}


def test_a_prefix_of_an_option_is_not_guessed():
    with pytest.raises(MagicUsageError, match="unknown option '--max'"):
        parse_line("--max 3")


@pytest.mark.parametrize(
    "line, words",
    [
        ("--bogus 1", ["unknown option '--bogus'", "--user", "--max-cost", "--format", "--as"]),
        ("--format html", ["markdown, code, text"]),
        ("--max-cost abc", ["--max-cost needs a positive number"]),
        ("--max-cost -1", ["--max-cost needs a positive number"]),
        ("--max-tokens 1.5", ["--max-tokens needs a positive integer"]),
        ("--as 1abc", ["--as needs a Python variable name"]),
        ("--as class", ["--as needs a Python variable name"]),
        ("--user", ["--user needs a value"]),
        ("gpt-4o planner", ["unexpected 'planner'"]),
        ("--system 'unclosed", ["cannot parse"]),
    ],
)
def test_bad_lines_are_one_line_usage_errors(line, words):
    with pytest.raises(UsageError) as e:
        parse_line(line)
    assert isinstance(e.value, InvalidRequestError) and isinstance(e.value, KitError)  # the kit's error, and IPython's
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_target_resolution(kit):
    assert resolve_target(None, kit) == {}
    assert resolve_target("critic", kit) == {"role": "critic"}
    assert resolve_target("sim-large", kit) == {"model": "sim-large"}
    assert resolve_target("gpt-4o-mini", kit) == {"model": "gpt-4o-mini"}  # known prefix, routed by the kit
    assert resolve_target("openai:llama3", kit) == {"model": "openai:llama3"}
    with pytest.raises(MagicUsageError) as e:
        resolve_target("gtp4", kit)
    msg = str(e.value)
    assert "\n" not in msg and "'gtp4'" in msg
    for accepted in ("planner", "executor", "critic", "summarizer", "sim-small", "claude-*", "gpt-*"):
        assert accepted in msg


# --- interpolation -----------------------------------------------------------------------
def test_interpolation_from_namespace():
    ns = {"topic": "DuckDB", "n": 3, "price": 0.12345, "doc": {"title": "Ledger"}, "items": ["a", "b"]}
    out = interpolate("List {n} facts on {topic} ({doc[title]}, {items[1]}) at ${price:.2f}", ns)
    assert out == "List 3 facts on DuckDB (Ledger, b) at $0.12"


def test_escaped_braces_stay_literal():
    assert interpolate('Return JSON like {{"name": "{who}"}}', {"who": "ann"}) == 'Return JSON like {"name": "ann"}'


def test_missing_name_is_named():
    with pytest.raises(MagicUsageError) as e:
        interpolate("Tell me about {topic} and {missing}", {"topic": "x"})
    assert "{missing} is not defined" in str(e.value) and "{{" in str(e.value)


@pytest.mark.parametrize("template", ["an empty {} field", "a stray } brace", "an unclosed { brace"])
def test_malformed_fields_are_usage_errors(template):
    with pytest.raises(MagicUsageError) as e:
        interpolate(template, {})
    assert "\n" not in str(e.value)


# --- end to end in a real IPython shell ----------------------------------------------------
@pytest.fixture
def shell(kit, tmp_path, monkeypatch):
    """A real IPython shell (no history file, its own IPYTHONDIR), cleared afterwards."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    cfg = Config()
    cfg.HistoryManager.enabled = False
    sh = InteractiveShell.instance(config=cfg)
    sh.run_line_magic("load_ext", "cognitionos_kit")
    sh.user_ns["kit"] = kit
    yield sh
    InteractiveShell.clear_instance()  # later tests must not see a global shell


def test_magic_streams_and_stores_the_completion(shell, kit, capsys):
    shell.user_ns["topic"] = "vector indexes"
    result = shell.run_cell("%%llm planner --kit kit --as answer --user ann\nExplain {topic} in two sentences")
    assert result.success, result.error_in_exec
    c = shell.user_ns["answer"]
    assert c.provider == "simulated" and c.model == "sim-large" and c.user_id == "ann"
    assert c.content.startswith("(simulated sim-large)") and "vector" in c.content
    # the interpolated prompt is what was sent: same answer as calling the kit directly
    direct = kit.complete("Explain vector indexes in two sentences", role="planner")
    assert direct.content == c.content
    out = capsys.readouterr().out
    assert c.content in out and f"${c.cost_usd:.6f}" in out and " ms" in out  # answer, then the footer
    usage = kit.usage()
    assert (usage["user_id"] == "ann").sum() == 1


def test_magic_default_variable_and_model(shell):
    assert shell.run_cell("%%llm sim-nano --kit kit --format text\nhello").success
    assert shell.user_ns["_llm"].model == "sim-nano"


def test_magic_errors_are_one_liners_not_tracebacks(shell, capsys):
    """Each is a KitError (MagicError) that IPython renders as one "UsageError: ..." line."""
    for cell in ("%%llm gtp4 --kit kit\nhi", "%%llm --kit kit --nope\nhi", "%%llm --kit kit\nhi {undefined_name}",
                 "%%llm --kit kit\n   ", "%%llm --kit nokit\nhi", "%%llm sim-huge --kit kit\nhi",
                 "%%llm --kit kit --max-cost 0.0000001\nhi"):
        result = shell.run_cell(cell)
        shown = capsys.readouterr()
        shown = shown.out + shown.err
        assert isinstance(result.error_in_exec, KitError) and isinstance(result.error_in_exec, UsageError), cell
        assert shown.startswith("UsageError: ") and shown.count("\n") == 1 and "Traceback" not in shown, (cell, shown)
    assert "_llm" not in shell.user_ns


def test_kit_errors_keep_their_cause(shell):
    result = shell.run_cell("%%llm --kit kit --max-cost 0.0000001\nhi")
    err = result.error_in_exec
    assert isinstance(err, InvalidRequestError) and str(err).startswith("CostLimitError: ")
    assert type(err.__cause__).__name__ == "CostLimitError"



def test_extension_is_not_imported_with_the_package():
    import subprocess
    import sys

    code = "import cognitionos_kit, sys; print('IPython' in sys.modules, 'ipywidgets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    assert callable(cognitionos_kit.load_ipython_extension)


def test_magic_stream_broken_midway_keeps_the_partial_answer(shell, kit, capsys):
    kit.simulated.fail_next(1, "server_error", mid_stream=True)
    result = shell.run_cell("%%llm --kit kit --as part\nExplain how a token ledger works")
    assert isinstance(result.error_in_exec, KitError)
    shown = capsys.readouterr()
    assert "Traceback" not in shown.out + shown.err
    errors = [ln for ln in (shown.out + shown.err).splitlines() if ln.startswith("UsageError: ")]  # after the partial answer
    assert len(errors) == 1 and errors[0].startswith("UsageError: the stream broke (partial answer kept in part)")
    part = shell.user_ns["part"]
    assert part.content.startswith("(simulated") and part.attempts[-1].status == "interrupted"


# --- what the magic displays -------------------------------------------------------------
def _displayed(shell, cell):
    """Run ``cell`` and return what it published: [(data, display_id, is_update)], in order."""
    from IPython.utils.capture import capture_output

    with capture_output() as cap:
        result = shell.run_cell(cell)
    assert result.success, result.error_in_exec
    return [(o.data, o.transient.get("display_id"), o.update) for o in cap.outputs]


def _answer_and_footer(outputs):
    """The answer's last state (the final update of its display) and the footer shown under it."""
    (first, answer_id, _), *rest = outputs
    assert answer_id is not None  # displayed with an id, so it can be updated in place
    updates = [data for data, did, upd in rest if did == answer_id and upd]
    footers = [data for data, did, upd in rest if not upd]
    assert updates and len(footers) == 1, outputs
    return first, updates, footers[0]


CODE_PROMPT = "Write a python function that parses log lines"


def test_format_code_shows_only_the_code_block(shell):
    outputs = _displayed(shell, f"%%llm sim-large --kit kit --format code --as c\n{CODE_PROMPT}")
    c = shell.user_ns["c"]
    assert "```python\n" in c.content and c.content.startswith("(simulated sim-large)")  # prose, then a fence
    code = c.content.split("```python\n", 1)[1].split("```", 1)[0].rstrip("\n")
    _, updates, footer = _answer_and_footer(outputs)
    assert updates[-1] == {"text/markdown": f"```python\n{code}\n```", "text/plain": code}
    assert code.startswith("def ") and "(simulated" not in updates[-1]["text/markdown"]  # the prose is dropped
    assert f"${c.cost_usd:.6f}" in footer["text/plain"] and f"${c.cost_usd:.6f}" in footer["text/html"]


def test_format_code_without_a_fence_shows_the_whole_answer_as_code(shell):
    outputs = _displayed(shell, "%%llm --kit kit --format code --as c\nExplain a token ledger")
    c = shell.user_ns["c"]
    assert "```" not in c.content
    _, updates, _ = _answer_and_footer(outputs)
    assert updates[-1] == {"text/markdown": f"```\n{c.content}\n```", "text/plain": c.content}


def test_format_markdown_is_the_default_and_renders_the_answer_as_markdown(shell):
    outputs = _displayed(shell, f"%%llm sim-large --kit kit --as c\n{CODE_PROMPT}")
    c = shell.user_ns["c"]
    first, updates, footer = _answer_and_footer(outputs)
    assert first == {"text/markdown": "…", "text/plain": ""}  # a placeholder until the first tokens
    assert updates[-1] == {"text/markdown": c.content, "text/plain": c.content}  # fence and prose kept
    assert footer["text/plain"].startswith("simulated/sim-large · ") and footer["text/plain"].endswith(" ms")


def test_format_text_is_plain_text_only(shell):
    outputs = _displayed(shell, f"%%llm sim-large --kit kit --format text --as c\n{CODE_PROMPT}")
    _, updates, _ = _answer_and_footer(outputs)
    assert updates[-1] == {"text/plain": shell.user_ns["c"].content}


def test_magic_output_streams_before_the_footer(shell, tmp_path):
    """With real (simulated) latency the answer's display is updated several times with growing text."""
    slow = LatencyModel(base_ms=800, per_input_token_ms=0, per_output_token_ms=0, jitter=0)
    with Kit(tmp_path / "slow", dotenv=False, simulated_latency=slow) as k:
        shell.user_ns["slow"] = k
        outputs = _displayed(shell, "%%llm --kit slow --format text --as c\nExplain how a token ledger records cost")
    c = shell.user_ns["c"]
    _, updates, footer = _answer_and_footer(outputs)
    assert outputs[-1][0] == footer  # the footer comes last, after every update of the answer
    texts = [u["text/plain"] for u in updates]
    assert texts[-1] == c.content
    partial = list(dict.fromkeys(texts))  # the last repaint may repeat the final text
    assert len(partial) >= 4, f"only {len(partial)} distinct repaints"
    assert len(partial[0]) < len(c.content) / 2
    for before, after in zip(partial, partial[1:]):
        assert after.startswith(before) and len(after) > len(before)


def test_magic_footer_says_when_a_substitute_answered(shell, kit, capsys):
    """Offline, a named real model is answered by the simulator: the footer says so in words."""
    assert shell.run_cell("%%llm gpt-4o-mini --kit kit --as sub\nName one vector index").success
    c = shell.user_ns["sub"]
    assert c.substituted and c.requested == "openai/gpt-4o-mini"
    out = capsys.readouterr().out
    assert "SUBSTITUTE for openai/gpt-4o-mini" in out
    assert shell.run_cell("%%llm planner --kit kit --as real\nName one vector index").success
    assert "SUBSTITUTE" not in capsys.readouterr().out
