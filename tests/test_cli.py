"""``python -m cognitionos_kit run experiment.yaml`` and ``report RUN_ID``, as a user would type them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "experiment.yaml"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    env.update(COGNITIONOS_DOTENV="0")
    return subprocess.run([sys.executable, "-m", "cognitionos_kit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)


def _run_id(stdout: str) -> str:
    return next(line.split(": ", 1)[1] for line in stdout.splitlines() if line.startswith("run: "))


def test_run_then_rerun_then_report(tmp_path):
    first = _cli("run", str(EXAMPLE), "--home", "h", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "64/64 cells, 0 cached" in first.stdout and "report: " in first.stdout
    assert "capitals" in first.stderr and "call" in first.stderr  # the progress bar
    bar = first.stderr.replace("\r", "\n").splitlines()
    done = [ln for ln in bar if "64/64" in ln]
    assert done and re.search(r"\$0\.\d{4} spent, 0 cached", done[-1]), done  # live spend in its postfix
    spent = float(re.search(r"\$(0\.\d{4}) spent", done[-1]).group(1))
    run_id = _run_id(first.stdout)
    report = tmp_path / "h" / "runs" / run_id / "report.html"
    assert report.exists() and (report.parent / "results.parquet").exists()
    manifest = json.loads((report.parent / "manifest.json").read_text())
    assert spent == pytest.approx(manifest["totals"]["spent_usd"], abs=5e-5) and spent > 0  # the bar's figure is the spend

    second = _cli("run", str(EXAMPLE), "--home", "h", "--no-progress", cwd=tmp_path)
    assert second.returncode == 0 and "64 cached, spent $0.000000" in second.stdout

    report.unlink()
    again = _cli("report", run_id, "--home", "h", cwd=tmp_path)
    assert again.returncode == 0 and str(report) in again.stdout and report.exists()


def test_budget_stop_exits_3_and_says_so(tmp_path):
    out = _cli("run", str(EXAMPLE), "--home", "h", "--budget", "0.0003", "--no-progress", cwd=tmp_path)
    assert out.returncode == 3, out.stderr
    assert "stopped: budget exhausted" in out.stdout


@pytest.mark.parametrize(
    "yaml_text,message",
    [
        ("name: x\ndataset: [{a: 1}]\nprompts: 'Say {b}'\nmodels: [sim-small]\n", "'b'"),
        ("name: x\ndataset: [{a: 1}]\nprompts: 'Say {a}'\nmodels: [sim-small]\nscorers: [bleu]\n", "unknown scorer"),
        ("name: x\ndataset: []\nprompts: 'Say {a}'\nmodels: [sim-small]\n", "empty"),
        ("name: x\ndataset: [{a: 1}]\nprompts: 'Say {a}'\nmodels: [sim-small]\nrepeats: 0\n", "repeats"),
        ("name: x\ndataset: [{a: 1}]\nprompts: 'Say {a}'\nmodels: [sim-small]\nrun: {budget_usd: -1}\n", "budget_usd"),
        ("name: x\ndataset: missing.csv\nprompts: 'Say {a}'\nmodels: [sim-small]\n", "does not exist"),
    ],
)
def test_bad_experiment_is_a_clear_error(tmp_path, yaml_text, message):
    (tmp_path / "e.yaml").write_text(yaml_text)
    out = _cli("run", "e.yaml", "--home", "h", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and message in out.stderr
    assert not (tmp_path / "h" / "runs").exists()


def test_report_of_unknown_run(tmp_path):
    out = _cli("report", "nope", "--home", "h", cwd=tmp_path)
    assert out.returncode == 2 and "no run 'nope'" in out.stderr
