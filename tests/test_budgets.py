"""Budgets per user, team and data folder: held before each attempt, settled after, kept by every
process on the folder (real SQLite file, real processes, the simulated provider's real prices)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone

import pandas as pd
import pytest

from cognitionos_kit import BudgetExceededError, InvalidRequestError, Kit, LatencyModel

FAST = LatencyModel(scale=0)


def _kit(home, **kw) -> Kit:
    return Kit(home, dotenv=False, simulated_latency=FAST, **kw)


def test_a_user_budget_stops_calls_before_sending_and_says_what_is_left(guards_backend, tmp_path):
    kit = _kit(tmp_path)
    kit.set_budget(0.0005, user_id="ann")
    made = 0
    with pytest.raises(BudgetExceededError) as info:
        for i in range(100):
            kit.complete(f"question {i}", user_id="ann", max_tokens=200)
            made += 1
    err = info.value
    spent = float(kit.usage(user_id="ann").cost_usd.sum())
    assert made > 0 and spent <= 0.0005  # never passed
    assert len(kit.usage(user_id="ann")) == made  # the refused call sent nothing and left no row
    assert (err.scope, err.name, err.period, err.limit_usd) == ("user", "ann", "day", 0.0005)
    assert err.left_usd == pytest.approx(0.0005 - spent) and err.needed_usd > err.left_usd
    assert err.resets_at == datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) + pd.Timedelta(days=1)
    assert "user 'ann'" in str(err) and "left of $0.000500 today (UTC)" in str(err) and "Nothing was sent" in str(err)
    kit.complete("someone else is not limited", user_id="bob", max_tokens=200)


def test_kit_wide_and_team_budgets_apply_to_their_users(guards_backend, tmp_path):
    kit = _kit(tmp_path)
    kit.set_team("lab", ["ann", "bob"])
    kit.set_budget(0.0003, team="lab", period="month")
    kit.set_budget(1.0, period="total")
    for user in ("ann", "bob", "ann"):
        try:
            kit.complete("a lab question", user_id=user, max_tokens=100)
        except BudgetExceededError as e:
            assert e.scope == "team" and e.name == "lab"
    with pytest.raises(BudgetExceededError):
        for _ in range(20):
            kit.complete("more", user_id="bob", max_tokens=100)
    kit.complete("carol is not in the lab", user_id="carol", max_tokens=100)
    b = kit.budgets().set_index("scope")
    lab_spent = float(kit.usage(user_id=["ann", "bob"]).cost_usd.sum())
    assert b.loc["team", "spent_usd"] == pytest.approx(lab_spent) and lab_spent <= 0.0003
    assert b.loc["team", "members"] == "ann, bob" and b.loc["team", "window"] == datetime.now(timezone.utc).strftime("%Y-%m")
    assert b.loc["kit", "spent_usd"] == pytest.approx(float(kit.usage().cost_usd.sum()))  # everyone counts for the kit
    assert b.loc["kit", "resets_at"] is pd.NaT and b.loc["kit", "reserved_usd"] == 0
    assert (b.left_usd == b.limit_usd - b.spent_usd).all()


def test_a_budget_set_mid_day_counts_what_was_already_spent(guards_backend, tmp_path):
    kit = _kit(tmp_path)
    for i in range(3):
        kit.complete(f"before the budget {i}", user_id="ann")
    already = float(kit.usage(user_id="ann").cost_usd.sum())
    kit.set_budget(already + 1e-6, user_id="ann")
    row = kit.budgets().iloc[0]
    assert row.spent_usd == pytest.approx(already)
    with pytest.raises(BudgetExceededError):
        kit.complete("one more", user_id="ann")
    kit.set_budget(None, user_id="ann")  # removed: calls go through again
    kit.complete("one more", user_id="ann")
    assert kit.budgets().empty


_WORKER = """
import asyncio, json, sys
from cognitionos_kit import BudgetExceededError, Kit, LatencyModel
kit = Kit(sys.argv[1], dotenv=False, simulated_latency=LatencyModel(scale=0.02))

async def one(i):
    try:
        await kit.acomplete(f"worker {sys.argv[2]} call {i}", user_id="ann", max_tokens=150)
        return "ok"
    except BudgetExceededError:
        return "refused"

async def main():
    return await asyncio.gather(*(one(i) for i in range(64)))

print(json.dumps(asyncio.run(main())))
"""


def test_two_processes_of_64_concurrent_calls_never_pass_the_budget(guards_backend, tmp_path):
    kit = _kit(tmp_path)
    budget = 0.002
    kit.set_budget(budget, user_id="ann")
    env = {**os.environ, "COGNITIONOS_DOTENV": "0"}
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path), str(n)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for n in range(2)]
    outcomes = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        outcomes += json.loads(out)
    usage = kit.usage(user_id="ann")
    assert outcomes.count("ok") == len(usage) > 0 and outcomes.count("refused") > 0  # the budget did bind
    assert float(usage.cost_usd.sum()) <= budget
    row = kit.budgets().iloc[0]
    assert row.spent_usd == pytest.approx(float(usage.cost_usd.sum())) and row.reserved_usd == 0


_DIES_HOLDING = """
import os, sys
from cognitionos_kit import Kit
kit = Kit(sys.argv[1], dotenv=False)
kit.guard.settle(kit.guard.reserve("ann", 0.0002, "a call"), 0.0002)
kit.guard.reserve("ann", 0.0008, "a call")  # held; the process dies before settling
os._exit(0)
"""


def test_holds_of_a_killed_process_are_released(guards_backend, tmp_path):
    kit = _kit(tmp_path)
    kit.set_budget(0.001, user_id="ann")
    # a process that spent $0.0002, then died in the middle of a call holding $0.001 (the whole budget)
    subprocess.run([sys.executable, "-c", _DIES_HOLDING, str(tmp_path)], check=True, env=os.environ)
    assert kit.budgets().iloc[0].reserved_usd == pytest.approx(0.0008)
    kit.complete("fits once the dead hold is gone", user_id="ann", max_tokens=50)
    row = kit.budgets().iloc[0]
    assert row.reserved_usd == 0  # released...
    assert row.spent_usd == pytest.approx(0.0002 + float(kit.usage(user_id="ann").cost_usd.sum()))  # ...what it spent stays


def test_streams_and_async_calls_hold_and_settle_too(guards_backend, tmp_path):
    kit = _kit(tmp_path)
    kit.set_budget(0.01, user_id="ann")
    s = kit.stream("stream this", user_id="ann", max_tokens=60)
    first = next(iter(s))
    assert first and kit.budgets().iloc[0].reserved_usd > 0  # held while the stream runs
    "".join(s)
    asyncio.run(kit.acomplete("and async", user_id="ann"))
    row = kit.budgets().iloc[0]
    assert row.reserved_usd == 0 and row.spent_usd == pytest.approx(float(kit.usage(user_id="ann").cost_usd.sum()))


def test_an_unpriced_model_under_a_budget_is_a_clear_error(make_live_kit, openai_server, tmp_path):
    kit = make_live_kit(home=tmp_path / "h")
    kit.set_budget(1.0)
    with pytest.raises(InvalidRequestError, match="openai/mystery-model has no known price"):
        kit.complete("priced by nobody", model="mystery-model", providers=["openai"])
    assert openai_server.requests == [] and kit.usage().empty  # refused before sending
    kit.set_price("mystery-model", input_per_mtok=1, output_per_mtok=2)
    kit.complete("priced now", model="mystery-model", providers=["openai"])
    assert len(openai_server.requests) == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"usd": -1}, "number of US dollars >= 0"),
    ({"usd": "5"}, "number of US dollars >= 0"),
    ({"usd": 1, "period": "week"}, "period must be one of day, month, total"),
    ({"usd": 1, "user_id": "a", "team": "t"}, "not both"),
    ({"usd": 1, "user_id": ""}, "user_id must be a non-empty string"),
])
def test_bad_budgets_are_clear_errors(tmp_path, kwargs, message):
    kit = _kit(tmp_path)
    usd = kwargs.pop("usd")
    with pytest.raises(InvalidRequestError, match=message):
        kit.set_budget(usd, **kwargs)
    assert kit.budgets().empty


def test_a_budget_set_after_calls_in_the_same_kit_applies_at_once(guards_backend, tmp_path):
    kit = _kit(tmp_path)
    kit.set_budget(1.0, user_id="someone")  # the budgets file exists...
    kit.set_budget(None, user_id="someone")
    kit.complete("a call with no budget", user_id="ann")  # ...and this call found none in it
    kit.set_budget(0.0, user_id="ann")  # this kit's own write: seen by its next call
    with pytest.raises(BudgetExceededError):
        kit.complete("refused", user_id="ann")
    other = _kit(tmp_path)  # and by another kit on the folder
    with pytest.raises(BudgetExceededError):
        other.complete("refused too", user_id="ann")


def test_no_budget_no_file(tmp_path):
    kit = _kit(tmp_path)
    kit.complete("no budget anywhere")
    assert not (tmp_path / "guards").exists() and kit.budgets().empty


def test_an_experiment_budget_is_held_in_the_same_store(guards_backend, tmp_path):
    from cognitionos_kit import Experiment
    from cognitionos_kit.guards.local import BudgetKey

    kit = _kit(tmp_path)
    exp = Experiment(name="budgeted", prompts={"p": "Answer: {q}"}, dataset=[{"q": f"question {i}"} for i in range(6)],
                     models=["sim-large"], settings={"max_tokens": [200]})
    budget = kit.run(exp, cache=False, progress=False).cost_usd * 0.8  # less than the grid costs
    run = kit.run(exp, concurrency=4, budget_usd=budget, cache=False, progress=False)
    assert run.stopped_reason and "budget" in run.stopped_reason
    spent, held = kit.guard.store.tally(BudgetKey("run", run.run_id, "total"), "total")
    assert spent == pytest.approx(float(kit.usage(run_id=run.run_id).cost_usd.sum())) and 0 < spent <= budget
    assert held == 0  # every call settled


def test_a_process_lease_covers_its_calls_and_comes_back_when_it_goes_idle(guards_backend, tmp_path):
    from cognitionos_kit.guards.leases import FLUSH_S

    a, b = _kit(tmp_path), _kit(tmp_path)  # two guards on one folder, as two processes have
    a.set_budget(0.01, user_id="ann")
    for i in range(6):
        a.complete(f"a call {i}", user_id="ann", max_tokens=50)
    spent_by_a = float(a.usage(user_id="ann").cost_usd.sum())
    row = b.budgets().iloc[0]
    assert row.reserved_usd > 0  # a holds a little more than its calls need: its lease...
    assert row.spent_usd + row.reserved_usd >= spent_by_a  # ...and what it holds covers what it spent
    time.sleep(FLUSH_S * 2.5)  # a is idle: its lease comes back and its spending is written
    row = b.budgets().iloc[0]
    assert row.reserved_usd == 0 and row.spent_usd == pytest.approx(spent_by_a)
    with pytest.raises(BudgetExceededError):  # b can use all that is left, and no more
        for i in range(500):
            b.complete(f"b call {i}", user_id="ann", max_tokens=50)
    total = float(b.usage(user_id="ann").cost_usd.sum())
    assert total <= 0.01 and 0.01 - total < 0.0002  # what is left is less than a call's worst case
    b.close()
    assert a.budgets().iloc[0].spent_usd == pytest.approx(total)
