"""Mistakes in a call fit on a screen: raised from the public method with at most two of the kit's
own frames, and a wrong keyword names the closest valid one."""

from __future__ import annotations

import asyncio
import traceback
from pathlib import Path

import pytest

from cognitionos_kit import ConfigurationError, CostLimitError, InvalidRequestError, Kit, LatencyModel

PACKAGE = str(Path(__import__("cognitionos_kit").__file__).parent)


def _kit_frames(exc: BaseException) -> list[str]:
    return [f"{Path(f.filename).name}:{f.name}" for f in traceback.extract_tb(exc.__traceback__)
            if f.filename.startswith(PACKAGE)]


@pytest.mark.parametrize("call, error, fragment", [
    (lambda k: k.complete(""), InvalidRequestError, "prompt is empty"),
    (lambda k: k.complete("hi", user="ada"), InvalidRequestError, r"unknown option user \(did you mean user_id\?\)"),
    (lambda k: k.complete("hi", temprature=0.2), InvalidRequestError, r"did you mean temperature\?"),
    (lambda k: k.complete("hi", model="sim-small", max_cost=1e-9), CostLimitError, "no model fits max_cost"),
    (lambda k: k.complete("hi", providers=["openai"]), ConfigurationError, "not configured"),
    (lambda k: k.stream("hi", max_tokens=-1), InvalidRequestError, "max_tokens must be a positive integer"),
    (lambda k: asyncio.run(k.acomplete([{"role": "user", "content": ""}])), InvalidRequestError, "needs a non-empty"),
])
def test_a_mistake_shows_at_most_two_kit_frames(tmp_path, call, error, fragment):
    kit = Kit(tmp_path, dotenv=False, simulated_latency=LatencyModel(scale=0))
    with pytest.raises(error, match=fragment) as info:
        call(kit)
    frames = _kit_frames(info.value)
    assert 1 <= len(frames) <= 2, frames
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert len(kit.usage()) == 0


def test_warnings_point_at_the_users_line_not_the_kit(live_kit, anthropic_server, openai_server):
    with pytest.warns(UserWarning, match="does not accept temperature") as record:
        live_kit.complete("hi", temperature=0.5, role="executor")
    assert record[0].filename == __file__
    live_kit.set_price("gpt-4o-mini", input_per_mtok=0.15, output_per_mtok=0.6)
    with pytest.warns(UserWarning, match="no price known") as record:
        live_kit.complete("hi", model="gpt-4o-mini-2099", providers=["openai"])
    assert record[0].filename == __file__
