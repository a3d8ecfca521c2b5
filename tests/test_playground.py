"""The playground widget, driven headless: controls, streamed answer, footer, errors, compare mode."""

from __future__ import annotations

import html

import ipywidgets as widgets
import pandas as pd
import pytest

from cognitionos_kit import InvalidRequestError, Kit, LatencyModel, SimulatedProvider
from cognitionos_kit.notebook.playground import AUTO, Playground


def test_controls_are_filled_from_the_kit(kit):
    pg = kit.playground()
    assert isinstance(pg, Playground) and isinstance(pg, widgets.VBox)
    assert pg.provider.options == ((AUTO, ""), ("simulated", "simulated")) and pg.provider.index == 0
    assert [v for _, v in pg.model.options] == ["", "sim-large", "sim-small", "sim-nano"]
    assert [v for _, v in pg.role.options] == ["", "planner", "executor", "critic", "summarizer"]
    assert pg.model.index == 0 and pg.role.index == 0  # a visible default is selected, never a blank
    assert pg.max_tokens.value == kit.default_max_tokens
    assert pg.run_button.description == "Run"
    for control in (pg.prompt, pg.system, pg.temperature, pg.user_id, pg.output, pg.footer, pg.error):
        assert isinstance(control, widgets.Widget)


def test_run_streams_the_answer_and_the_cost_line(kit):
    pg = kit.playground()
    pg.prompt.value = "Explain a token ledger"
    pg.role.value = "planner"
    pg.user_id.value = "ann"
    c = pg.run()
    assert c is not None and c.model == "sim-large" and c.user_id == "ann"
    assert html.escape(c.content) in pg.output.value
    for part in ("simulated/sim-large", f"{c.prompt_tokens}+{c.completion_tokens} tokens",
                 f"${c.cost_usd:.6f}", f"{c.latency_ms:.0f} ms"):
        assert part in pg.footer.value
    assert pg.footer_text == c.footer() == (f"simulated/sim-large · {c.prompt_tokens}+{c.completion_tokens} tokens · "
                                            f"${c.cost_usd:.6f} · {c.latency_ms:.0f} ms")  # the one footer, as %%llm shows it
    assert pg.error.value == "" and not pg.run_button.disabled
    assert kit.usage()["stream"].tolist() == [True]


def test_button_click_runs(kit):
    pg = kit.playground(prompt="Why track latency?")
    pg.run_button.click()
    assert pg.completion is not None and "(simulated" in pg.output.value


def test_explicit_provider_and_model(kit):
    pg = kit.playground(prompt="hello")
    pg.provider.value = "simulated"
    assert [v for _, v in pg.model.options] == ["", "sim-large", "sim-small", "sim-nano"]
    pg.model.value = "sim-nano"
    pg.system.value = "Be terse."
    pg.temperature.value = 0.2
    pg.max_tokens.value = 20
    c = pg.run()
    assert c.model == "sim-nano" and c.completion_tokens <= 20
    assert c.content == kit.complete("hello", model="sim-nano", system="Be terse.", temperature=0.2, max_tokens=20).content


def test_empty_prompt_is_a_readable_error_not_an_exception(kit):
    pg = kit.playground()
    assert pg.run() is None
    assert "prompt is empty" in pg.error.value and "Traceback" not in pg.error.value
    assert pg.footer.value == "" and not pg.run_button.disabled


def test_a_fallback_shows_its_path(tmp_path):
    flaky = SimulatedProvider(name="flaky", latency=LatencyModel(scale=0))
    with Kit(tmp_path / "h", providers=[flaky, "simulated"], dotenv=False, simulated_latency=LatencyModel(scale=0)) as k:
        flaky.fail_next(1, "rate_limit")
        pg = k.playground(prompt="What is a fallback chain?")
        c = pg.run()
        assert c.provider == "simulated" and c.substituted
        assert "fallback: flaky (rate_limit) → simulated (ok)" in pg.footer.value
        lines = pg.footer_text.splitlines()  # the footer, its substitute note in orange, then the path
        assert lines[0] == c.footer().replace("SUBSTITUTE", "⚠ SUBSTITUTE")
        assert lines[0].endswith("⚠ SUBSTITUTE for flaky/sim-small")
        assert "<span class='cok-substitute' style='color:#b45309;font-weight:600" in pg.footer.value
        assert lines[1] == "fallback: flaky (rate_limit) → simulated (ok)"


def test_all_providers_failing_is_one_readable_error(tmp_path):
    with Kit(tmp_path / "h", dotenv=False, simulated_latency=LatencyModel(scale=0)) as k:
        k.simulated.fail_next(1, "server_error")
        pg = k.playground(prompt="hi")
        assert pg.run() is None
        assert "AllProvidersFailedError" in pg.error.value and "server_error" in pg.error.value
        assert "<br" not in pg.error.value  # one line


def test_compare_mode_one_card_per_model(kit):
    pg = kit.playground(compare=True)
    from cognitionos_kit.notebook.playground import ModelChecklist

    assert isinstance(pg.model, ModelChecklist)  # a checkbox per model: ticked reads as chosen
    assert [b.value for b in pg.model.children] == [True, True, True] and pg.role.disabled
    pg.model.value = (("simulated", "sim-large"), ("simulated", "sim-nano"))
    assert [b.value for b in pg.model.children] == [True, False, True]
    pg.prompt.value = "Compare cost and quality"
    results = pg.run()
    assert [c.model for c in results] == ["sim-large", "sim-nano"]
    assert list(pg.results.children) == pg.cards and len(pg.cards) == 2
    for card, c in zip(pg.cards, results):
        assert html.escape(c.content) in card.output.value
        assert f"simulated / {c.model}" in card.title.value  # named in the title, so not repeated below
        assert card.footer_text == f"{c.prompt_tokens}+{c.completion_tokens} tokens · ${c.cost_usd:.6f} · {c.latency_ms:.0f} ms"
    assert "repeat(2" in pg.results.layout.grid_template_columns


def test_compare_mode_with_nothing_selected(kit):
    pg = kit.playground(compare=True, prompt="hi")
    pg.model.value = ()
    assert pg.run() == [] and "pick at least one model" in pg.error.value


def test_a_stream_broken_midway_keeps_the_partial_answer(kit):
    kit.simulated.fail_next(1, "server_error", mid_stream=True)
    pg = kit.playground(prompt="Explain how a token ledger works")
    c = pg.run()
    assert c is not None and c.attempts[-1].status == "interrupted"
    assert html.escape(c.content) in pg.output.value and "StreamInterruptedError" in pg.error.value


def test_the_answer_streams_in_before_the_footer(tmp_path):
    """With real (simulated) latency the answer box is repainted several times with growing text,
    and the cost line appears only once the stream is complete."""
    slow = LatencyModel(base_ms=600, per_input_token_ms=0, per_output_token_ms=0, jitter=0)
    with Kit(tmp_path / "h", dotenv=False, simulated_latency=slow) as k:
        pg = k.playground(prompt="Explain how a token ledger records cost and latency")
        events: list[tuple[str, str]] = []
        pg.output.observe(lambda ch: events.append(("output", ch["new"])), names="value")
        pg.footer.observe(lambda ch: events.append(("footer", ch["new"])), names="value")
        c = pg.run()
    assert c is not None
    footer_at = next(i for i, (name, value) in enumerate(events) if name == "footer" and value)
    partials = [v for name, v in events[:footer_at] if name == "output" and "cok-answer'" in v]
    assert len(partials) >= 4, f"only {len(partials)} repaints before the footer"
    texts = [html.unescape(v.split(">", 1)[1].rsplit("</div>", 1)[0]) for v in partials]
    assert texts[-1] == c.content
    assert len(texts[0]) < len(c.content) / 2  # the first paint is early, not the whole answer
    for before, after in zip(texts, texts[1:]):
        assert after.startswith(before) and len(after) > len(before)  # each repaint adds text
    assert events[footer_at + 1:] == []  # the footer is the last thing drawn


# --- a Completion as a cell's last expression ----------------------------------------------
def test_completion_renders_as_a_compact_card_and_a_one_line_repr(tmp_path):
    flaky = SimulatedProvider(name="flaky", latency=LatencyModel(scale=0))
    with Kit(tmp_path / "h", providers=[flaky, "simulated"], dotenv=False, simulated_latency=LatencyModel(scale=0)) as k:
        flaky.fail_next(1, "rate_limit")
        c = k.complete("Summarize: use <b> & <i> for emphasis, never <script>alert(1)</script>.")
        plain = k.complete("Why track latency?")
    card = c._repr_html_()
    assert "<script>" in c.content and "<script>" not in card  # the answer is escaped, not rendered
    assert html.escape(c.content) in card
    footer = f"simulated/{c.model} · {c.prompt_tokens}+{c.completion_tokens} tokens · ${c.cost_usd:.6f} · {c.latency_ms:.0f} ms"
    assert footer in card
    assert "fallback: flaky (rate_limit) → simulated (ok)" in card
    assert card.count("<br>") == 1 and "<table" not in card  # answer, then two short lines
    # flaky failed, so simulated answered in its place: the card and the repr say so
    assert c.substituted and "Substitute answer: asked flaky/sim-small, answered by the simulator" in card
    assert not plain.substituted and "Substitute" not in plain._repr_html_()
    assert "fallback" not in plain._repr_html_() and html.escape(plain.footer()) in plain._repr_html_()

    text = repr(c)  # what a terminal shows: one line, the answer cut short, the same footer
    assert "\n" not in text and len(text) < 240
    assert text == (f"Completion({c.content[:77] + '...'!r}, {footer} · SUBSTITUTE for flaky/sim-small, "
                    "path='flaky -> simulated')")
    assert "path=" not in repr(plain) and str(plain) == plain.content


def test_chat_mode_keeps_the_turns_above_and_costs_each(kit):
    pg = kit.playground(chat=True)
    assert pg.run_button.description == "Send" and "No turns yet" in pg.transcript_text
    pg.system.value = "Be brief."
    pg.prompt.value = "What is a p-value?"
    first = pg.run()
    assert first is not None and pg.prompt.value == "" and pg.system.disabled
    pg.prompt.value = "And a confidence interval?"
    pg.run_button.click()
    assert len(pg.chat.turns) == 2 and pg.completion is pg.chat.turns[-1]
    text = pg.transcript_text
    assert "What is a p-value?" in text and "And a confidence interval?" in text and "2 turn(s)" in text
    assert text.count("sim-small") >= 2 and "$" in text  # each turn's cost line
    rows = kit.usage()
    assert len(rows) == 2 and rows.prompt_tokens.iloc[1] > rows.prompt_tokens.iloc[0]  # turn 2 carries turn 1
    pg.new_chat()
    assert pg.chat is None and not pg.system.disabled and "No turns yet" in pg.transcript_text


def test_chat_mode_errors_are_one_line_and_lose_no_turn(kit):
    pg = kit.playground(chat=True)
    pg.prompt.value = "   "
    assert pg.run() is None and "type something" in pg.error.value
    pg.prompt.value = "Hello"
    pg.run()
    kit.simulated.fail_next(1, "invalid_request")
    pg.prompt.value = "This one fails"
    assert pg.run() is None and "invalid" in pg.error.value.lower()
    assert len(pg.chat.turns) == 1 and pg.prompt.value == "This one fails"  # kept to send again
    with pytest.raises(InvalidRequestError, match="compares models or holds a chat"):
        kit.playground(chat=True, compare=True)


def test_compare_runs_the_models_at_the_same_time(tmp_path):
    import pandas as pd

    from cognitionos_kit import Kit, LatencyModel

    kit = Kit(tmp_path, dotenv=False, simulated_latency=LatencyModel(base_ms=150, per_output_token_ms=0, jitter=0))
    pg = kit.playground(compare=True, prompt="Compare cost and quality")
    results = pg.run()
    assert len(results) == 3 and all(c is not None for c in results)
    rows = kit.usage()
    ends = list(rows.ts)
    starts = [e - pd.Timedelta(milliseconds=ms) for e, ms in zip(rows.ts, rows.latency_ms)]
    assert max(starts) < min(ends)  # every call began before the first one ended: they overlapped


def test_the_role_picker_is_disabled_while_a_model_is_chosen(kit):
    pg = kit.playground(prompt="hi")
    assert not pg.role.disabled
    pg.role.value = "planner"
    pg.model.value = "sim-nano"
    assert pg.role.disabled
    c = pg.run()
    assert c.model == "sim-nano" and kit.usage().role.iloc[-1] is pd.NA  # a named model: no role applied
    pg.model.value = ""
    assert not pg.role.disabled
    pg.role.value = ""
    pg.run()
    assert kit.usage().role.iloc[-1] == "executor"  # the default role is recorded, not NULL


def test_the_prompt_and_models_become_an_experiment(kit):
    pg = kit.playground(compare=True, prompt="Name a {colour} fruit")
    pg.model.value = (("simulated", "sim-small"), ("simulated", "sim-nano"))
    exp = pg.to_experiment()
    assert exp.model_list == ["sim-small", "sim-nano"] and exp.templates == {"prompt": "Name a {{colour}} fruit"}
    code = pg.show_experiment()
    assert pg.experiment_code.layout.display == "" and "Experiment(" in code
    namespace = {"kit": kit}
    exec(code.replace("run = kit.run(exp)\nrun.summary", "run = kit.run(exp, progress=False)"), namespace)
    run = namespace["run"]
    assert len(run.results) == 2 * 3 and set(run.results.model) == {"sim-small", "sim-nano"}
    assert run.results.prompt.iloc[0] == "Name a {colour} fruit"  # braces kept as typed
