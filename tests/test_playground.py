"""The playground widget, driven headless: controls, streamed answer, footer, errors, compare mode."""

from __future__ import annotations

import html

import ipywidgets as widgets

from cognitionos_kit import Kit, LatencyModel, SimulatedProvider
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
    for part in ("simulated", "sim-large", f"{c.prompt_tokens}+{c.completion_tokens} tokens",
                 f"${c.cost_usd:.6f}", f"{c.latency_ms:.0f} ms"):
        assert part in pg.footer.value
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
        assert c.provider == "simulated"
        assert "fallback: flaky (rate_limit) → simulated (ok)" in pg.footer.value


def test_all_providers_failing_is_one_readable_error(tmp_path):
    with Kit(tmp_path / "h", dotenv=False, simulated_latency=LatencyModel(scale=0)) as k:
        k.simulated.fail_next(1, "server_error")
        pg = k.playground(prompt="hi")
        assert pg.run() is None
        assert "AllProvidersFailedError" in pg.error.value and "server_error" in pg.error.value
        assert "<br" not in pg.error.value  # one line


def test_compare_mode_one_card_per_model(kit):
    pg = kit.playground(compare=True)
    assert isinstance(pg.model, widgets.SelectMultiple)
    pg.model.value = (("simulated", "sim-large"), ("simulated", "sim-nano"))
    pg.prompt.value = "Compare cost and quality"
    results = pg.run()
    assert [c.model for c in results] == ["sim-large", "sim-nano"]
    assert list(pg.results.children) == pg.cards and len(pg.cards) == 2
    for card, c in zip(pg.cards, results):
        assert html.escape(c.content) in card.output.value
        assert c.model in card.footer.value and f"${c.cost_usd:.6f}" in card.footer.value
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
