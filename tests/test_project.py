"""The project around the package: setup files agree, import stays light and offline."""

import json
import os
import subprocess
import sys
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _pyproject_requirements() -> set[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = data["project"]
    return set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])


def test_environment_yml_mirrors_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert set(pip_section) == _pyproject_requirements()
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python == "python" + requires


def test_readme_opens_with_the_two_commands():
    lines = [ln.strip() for ln in (ROOT / "README.md").read_text().splitlines() if ln.strip()]
    commands = [ln for ln in lines if ln.startswith("make ")]
    assert commands[:2] == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def _run_python(code: str, **env_extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_API_KEYS", "_BASE_URL"))}
    # any network attempt would go to a dead proxy and fail
    env.update(HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", **env_extra)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_import_is_light_and_lazy():
    code = (
        "import sys, json, cognitionos_kit\n"
        "from cognitionos_kit import Kit\n"
        "heavy = ['openai', 'anthropic', 'pandas', 'duckdb', 'numpy', 'onnxruntime', 'tiktoken', 'genai_prices', 'httpx2']\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    assert json.loads(_run_python(code)) == []


def test_simulation_mode_without_keys(tmp_path):
    code = (
        "import json, cognitionos_kit as ck\n"
        f"kit = ck.Kit(home={str(tmp_path)!r}, dotenv=False, simulated_latency=ck.LatencyModel(scale=0))\n"
        "r = kit.complete('Say hello to the new notebook user')\n"
        "print(json.dumps({'sim': kit.status()['simulation_mode'], 'provider': r.provider, 'rows': len(kit.usage())}))\n"
    )
    assert json.loads(_run_python(code)) == {"sim": True, "provider": "simulated", "rows": 1}


def test_demo_runs_offline_and_writes_reports(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    env.update(HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", COGNITIONOS_DOTENV="0")

    def demo() -> str:
        out = subprocess.run([sys.executable, "-m", "cognitionos_kit", "demo", "--home", str(tmp_path)],
                             capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def experiment_report(text: str) -> Path:
        return Path(next(ln.split(": ", 1)[1] for ln in text.splitlines() if ln.startswith("experiment report: ")))

    text = demo()
    assert "simulation mode: True" in text and "calls made        26" in text
    assert "latency p50 / p95" in text and "memory: best match 'DuckDB runs inside" in text
    assert "experiment demo-capitals: 12 cells, 12 sent for $0.0" in text
    assert "rerun 12 cache hits, $0.000000 new spend" in text
    report = tmp_path / "demo" / "report.html"
    html = report.read_text()
    assert "<script src=" not in html and "plotly" in html.lower()
    # the experiment's report is in the data folder's runs/, where kit.runs() looks
    first = experiment_report(text)
    assert first.parent.parent == tmp_path / "runs" and first.exists() and "Plotly.newPlot" in first.read_text()
    assert not (tmp_path / "demo" / "runs").exists()

    again = demo()  # a second demo: same showcase, and the experiment says where its answers came from
    assert "calls made        26" in again
    assert "experiment demo-capitals: 12 cells, 0 sent for $0.000000 (12 from an earlier demo's cache)" in again
    assert "rerun 12 cache hits, $0.000000 new spend" in again
    assert experiment_report(again).exists() and first.exists()  # the earlier run is kept
    code = (f"import cognitionos_kit as ck; k = ck.Kit({str(tmp_path)!r}, dotenv=False); "
            "print(sorted(k.runs().experiment)); "
            "u = k.usage(project='demo', experiment_id=None); print(u.session_id.nunique(), u.request_id.nunique()); "
            "k.close()")
    runs, sessions = _run_python(code).strip().splitlines()
    assert runs == str(["demo-capitals"] * 4)
    assert sessions == "2 52"  # both demos kept in one ledger (nothing wiped), each shown on its own
