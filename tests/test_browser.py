"""End to end in a real browser: JupyterLab on a loopback port, Debian's chromium driven by Playwright.

Opens ``04_playground``, runs every cell, types a prompt in the playground, clicks Run and waits for
the streamed answer and its cost line, then finds that prompt in the log browser; then opens the
charts notebook and checks plotly drew traces.
Screenshots land in the test's temporary folder (printed at the end). Any page error fails the test.
Needs /usr/bin/chromium: ``tools/ensure_system_packages.sh`` installs it (``make test`` runs it).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.slow

PLAYGROUND_NOTEBOOK = "04_playground.ipynb"
CHARTS_NOTEBOOK = "03_costs_and_latency.ipynb"
CHROMIUM = "/usr/bin/chromium"
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SERVER_START_S = 60
RUN_ALL_MS = 120_000  # all cells of one notebook, kernel start included
STEP_MS = 30_000  # one UI step: a click's answer, a chart drawn
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
_STRIP_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "COGNITIONOS_HOME")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _copy_notebooks(root: Path) -> None:
    """Copy the notebooks without outputs or widget state, so nothing stale can satisfy a wait."""
    (root / "notebooks").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "pyproject.toml").write_text("")  # a project folder, as the repository: Kit() keeps data/ here
    for name in {PLAYGROUND_NOTEBOOK, CHARTS_NOTEBOOK}:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        nb.metadata.pop("widgets", None)
        nbformat.write(nb, root / "notebooks" / name)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a free loopback port, offline, with fresh Jupyter folders."""
    root = tmp_path_factory.mktemp("lab")
    _copy_notebooks(root)
    jupyter = root / ".jupyter"
    settings = jupyter / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))  # no news toast, no network
    env = {k: v for k, v in os.environ.items() if k not in _STRIP_ENV}
    env.update(
        COGNITIONOS_DOTENV="0", JUPYTER_CONFIG_DIR=str(jupyter / "config"), JUPYTER_DATA_DIR=str(jupyter / "data"),
        JUPYTER_RUNTIME_DIR=str(jupyter / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(jupyter / "lab-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(jupyter / "workspaces"), IPYTHONDIR=str(jupyter / "ipython"),
    )
    port, token = _free_port(), secrets.token_hex(16)
    log = open(root / "jupyterlab.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", "--ServerApp.allow_root=True", f"--IdentityProvider.token={token}",
         "--LabApp.expose_app_in_browser=True", f"--ServerApp.root_dir={root}"],
        env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{(root / 'jupyterlab.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer within {SERVER_START_S}s:\n"
                                f"{(root / 'jupyterlab.log').read_text()[-3000:]}")
                time.sleep(0.25)
        yield {"base": base, "token": token, "root": root}
    finally:
        try:
            req = urllib.request.Request(f"{base}/api/shutdown", method="POST",
                                         headers={"Authorization": f"token {token}"})
            urllib.request.urlopen(req, timeout=5).read()
            proc.wait(timeout=10)
        except Exception:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # kernels and anything else the server started
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def browser(lab):
    """A fresh chromium profile; yields (context, problems): page errors and requests leaving loopback."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: run tools/ensure_system_packages.sh (make test does) to install Debian's chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser test needs playwright and jupyterlab: pip install -e '.[dev]'")

    errors: list[str] = []
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(lab["root"] / ".chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1800},
        )
        context.set_default_timeout(STEP_MS)
        context.on("page", lambda page: page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}")))
        context.on("request", lambda r: None if r.url.startswith(("http://127.0.0.1:", "data:", "blob:"))
                   else errors.append(f"request off loopback (a CDN?): {r.url}"))
        try:
            yield context, errors
        finally:
            context.close()


@contextlib.contextmanager
def _screenshot_on_failure(page, path: Path):
    """Keep what the page looked like when a step failed (next to the other screenshots)."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            page.screenshot(path=str(path))
        raise


def _open_and_run_all(context, lab, name: str):
    """Open a notebook, run all cells, wait until every code cell has run and the kernel is idle."""
    page = context.new_page()
    with _screenshot_on_failure(page, _shots(lab) / f"failed_run_{name}.png"):
        return _run_all(page, lab, name)


def _run_all(page, lab, name: str):
    page.goto(f"{lab['base']}/lab/tree/notebooks/{name}?token={lab['token']}")
    page.wait_for_function(
        """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                   const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
                   return !!k && k.status === 'idle' && w.content && w.content.widgets.length > 0; }""",
        timeout=RUN_ALL_MS,
    )
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    state = page.wait_for_function(
        """() => { const w = window.jupyterapp.shell.currentWidget;
                   const cells = w.content.widgets.filter(c => c.model.type === 'code');
                   for (const c of cells) {
                     for (let i = 0; i < c.model.outputs.length; i++) {
                       const o = c.model.outputs.get(i);
                       if (o.type === 'error') return {error: o.toJSON().ename + ': ' + o.toJSON().evalue};
                     }
                   }
                   const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(p => p.textContent.trim());
                   const ran = cells.every(c => Number.isInteger(c.model.executionCount))
                               && prompts.length === cells.length && prompts.every(p => /^\\[\\d+\\]:?$/.test(p));
                   return ran && w.sessionContext.session.kernel.status === 'idle' ? {ok: cells.length} : false; }""",
        timeout=RUN_ALL_MS,
    ).json_value()
    assert "ok" in state, f"{name}: a cell failed: {state['error']}"
    return page


def _kernel_execute(page, code: str) -> None:
    """Run ``code`` silently in the open notebook's kernel (a setting a step needs, not a cell)."""
    page.evaluate(
        """(code) => { const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
                       return k.requestExecute({code, silent: true, store_history: false}).done
                              .then(r => { if (r.content.status !== 'ok') throw new Error(r.content.evalue); }); }""",
        code,
    )


def _kernel_eval(page, expression: str):
    """The value of a Python expression (that returns JSON text) in the open notebook's kernel."""
    return page.evaluate(
        """(expr) => { const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
                       return k.requestExecute({code: '', silent: true, store_history: false,
                                                user_expressions: {v: expr}}).done
                              .then(r => { const v = r.content.user_expressions.v;
                                           if (v.status !== 'ok') throw new Error(v.evalue);
                                           return JSON.parse(v.data['text/plain'].replace(/^'|'$/g, '')); }); }""",
        expression,
    )


def _shots(lab) -> Path:
    folder = lab["root"] / "screenshots"
    folder.mkdir(exist_ok=True)
    return folder


def test_playground_runs_in_jupyterlab(lab, browser):
    context, errors = browser
    page = _open_and_run_all(context, lab, PLAYGROUND_NOTEBOOK)
    shots = _shots(lab)
    with _screenshot_on_failure(page, shots / "failed_playground.png"):
        _check_playground(page, shots)
    assert not errors, f"page errors: {errors}"
    print(f"\nscreenshots: {shots}")


def _check_playground(page, shots: Path) -> None:
    # the magic's answer and footer were drawn
    magic_cell = page.locator(".jp-CodeCell").filter(has_text="%%llm executor")
    magic_out = magic_cell.locator(".jp-OutputArea").inner_text()
    assert "(simulated sim-small)" in magic_out and "$" in magic_out and " ms" in magic_out
    magic_cell.screenshot(path=str(shots / "magic.png"))

    pg = page.locator(".cok-playground").first
    pg.scroll_into_view_if_needed()
    answer, footer = pg.locator(".cok-answer"), pg.locator(".cok-footer")
    # the notebook's `pg.run()` cell drove this widget from code: its answer and cost line are drawn
    answer.filter(has_text="(simulated sim-small)").filter(has_text="tracking").wait_for()
    footer.filter(has_text="$").wait_for()
    assert "databases" not in answer.inner_text()
    pg.screenshot(path=str(shots / "playground_from_code.png"))

    pg.get_by_role("textbox", name="Prompt").fill("Explain vector databases in two sentences")
    pg.get_by_role("button", name="Run", exact=True).click()
    # the click cleared the footer before the first chunk of the new answer (widget messages keep
    # their order), so the cost line waited for below is the new one
    answer.filter(has_text="databases").wait_for()
    footer.filter(has_text="$").wait_for()  # the cost line comes once the stream is complete
    assert "databases" in answer.inner_text()  # the typed prompt reached the kernel
    assert "simulated" in footer.inner_text() and "tokens" in footer.inner_text() and " ms" in footer.inner_text()
    pg.screenshot(path=str(shots / "playground.png"))

    cmp_pg = page.locator(".cok-playground").nth(1)
    cmp_pg.scroll_into_view_if_needed()
    # every simulated answer now takes 300 ms: one after another, three would need 900 ms
    _kernel_execute(page, "from cognitionos_kit import LatencyModel\n"
                          "kit.simulated.latency = LatencyModel(base_ms=300, per_input_token_ms=0, per_output_token_ms=0, "
                          "jitter=0)")
    assert cmp_pg.locator(".cok-model-checklist input[type=checkbox]:checked").count() == 3  # ticked, not greyed
    assert cmp_pg.get_by_role("combobox", name="Role").is_disabled()  # the models are named: no role applies
    t0 = time.monotonic()
    cmp_pg.get_by_role("button", name="Compare", exact=True).click()
    cmp_pg.locator(".cok-footer").nth(2).filter(has_text="$").wait_for()
    for i in range(3):
        cmp_pg.locator(".cok-footer").nth(i).filter(has_text="$").wait_for()
    took = time.monotonic() - t0
    # the three calls as the ledger saw them: from the first start to the last end, and whether they overlapped
    span, overlap = _kernel_eval(page, (
        "(lambda u, pd: __import__('json').dumps([(u.ts.max() - (u.ts - pd.to_timedelta(u.latency_ms, unit='ms')).min())"
        ".total_seconds(), bool((u.ts - pd.to_timedelta(u.latency_ms, unit='ms')).max() < u.ts.min())]))"
        "(kit.usage().tail(3), __import__('pandas'))"))
    print(f"\ncompare of three 300 ms models: {span:.2f} s from the first start to the last answer "
          f"({took:.2f} s from the click to the third cost line drawn)")
    assert overlap and span < 0.9, f"three 300 ms answers took {span:.2f} s: not concurrent"
    assert cmp_pg.locator(".cok-answer").count() == 3
    tops = [cmp_pg.locator(".cok-footer").nth(i).bounding_box()["y"] for i in range(3)]
    assert max(tops) - min(tops) < 2, f"the cards' cost lines are not aligned: {tops}"
    _kernel_execute(page, "kit.simulated.latency = LatencyModel(scale=0)")
    cmp_pg.screenshot(path=str(shots / "playground_compare.png"))

    chat_pg = page.locator(".cok-playground").nth(2)
    chat_pg.scroll_into_view_if_needed()
    for n, question in enumerate(("What is a p-value?", "And a confidence interval?"), 1):
        chat_pg.get_by_role("textbox", name="You").fill(question)
        chat_pg.get_by_role("button", name="Send", exact=True).click()
        chat_pg.get_by_text(f"{n} turn(s)").wait_for()  # drawn once the turn's stream is complete
    transcript = chat_pg.inner_text()
    assert "What is a p-value?" in transcript and "And a confidence interval?" in transcript
    assert transcript.count("sim-small") >= 2 and "$" in transcript  # each turn's cost line
    chat_pg.screenshot(path=str(shots / "playground_chat.png"))

    # the log browser finds the prompt typed into the playground above, by a few of its words
    logs = page.locator(".cok-log-browser").first
    logs.scroll_into_view_if_needed()
    search = logs.get_by_role("textbox", name="Search")
    search.fill("vector databases")
    search.press("Enter")
    logs.locator(".cok-log-prompt").filter(has_text="Explain vector databases in two sentences").wait_for()
    entry = logs.locator(".cok-log-entry").inner_text()
    assert "(simulated sim-small)" in entry and "$" in entry and "continue_from" in entry
    assert "1 request(s)" in logs.inner_text()
    logs.screenshot(path=str(shots / "log_browser.png"))
    page.screenshot(path=str(shots / "playground_page.png"))


def test_charts_are_drawn(lab, browser):
    context, errors = browser
    page = _open_and_run_all(context, lab, CHARTS_NOTEBOOK)
    shots = _shots(lab)
    with _screenshot_on_failure(page, shots / "failed_charts.png"):
        _check_charts(page, shots)
    assert not errors, f"page errors: {errors}"
    print(f"\nscreenshots: {shots}")


def _check_charts(page, shots: Path) -> None:
    plots = page.locator(".js-plotly-plot")
    plots.last.scroll_into_view_if_needed()
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .trace, .js-plotly-plot .point').length > 0",
                           timeout=STEP_MS)
    expected = page.evaluate(
        """() => window.jupyterapp.shell.currentWidget.content.widgets
                 .filter(c => c.model.type === 'code')
                 .reduce((n, c) => { for (let i = 0; i < c.model.outputs.length; i++)
                     if ('application/vnd.plotly.v1+json' in c.model.outputs.get(i).data) n++; return n; }, 0)""")
    assert expected >= 1, f"{CHARTS_NOTEBOOK} produced no plotly chart output"
    # FigureWidgets (e.g. a dashboard) draw more plots than there are plotly outputs, never fewer
    assert plots.count() >= expected, f"{expected} plotly outputs but {plots.count()} drawn"
    for i in range(plots.count()):
        plot = plots.nth(i)
        plot.scroll_into_view_if_needed()
        assert plot.locator(".trace, .point").count() > 0, f"chart {i + 1} of {CHARTS_NOTEBOOK} has no traces"
        plot.screenshot(path=str(shots / f"chart_{i + 1}.png"))

    # the live dashboard's charts fill its width (plotly's FigureWidget alone stays at 700 px)
    dash = page.locator(".cok-dashboard")
    dash.scroll_into_view_if_needed()
    page.wait_for_function(
        """() => { const d = document.querySelector('.cok-dashboard');
                   const wide = [...d.querySelectorAll('.js-plotly-plot svg.main-svg:first-of-type')]
                       .filter(s => s.getBoundingClientRect().width >= 0.95 * d.getBoundingClientRect().width);
                   return d.getBoundingClientRect().width > 800 && wide.length >= 2; }""",
        timeout=STEP_MS,
    )
    dash.screenshot(path=str(shots / "dashboard.png"))
    _check_no_overlap(page, CHARTS_NOTEBOOK)

    # a browser reload with the dashboard open: the widgets come back from the kernel with their data
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if m.type in ("error", "warning") else None)
    page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")  # as autosave would have
    page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=STEP_MS)
    page.reload()
    page.wait_for_function(
        """() => { const d = document.querySelector('.cok-dashboard');
                   return !!d && d.querySelectorAll('.js-plotly-plot .trace').length >= 2; }""",
        timeout=RUN_ALL_MS,
    )
    dash = page.locator(".cok-dashboard")
    dash.scroll_into_view_if_needed()
    assert dash.locator(".js-plotly-plot").count() >= 2 and "ledger rows" in (dash.text_content() or "")
    assert not [m for m in console if "Failed to initialize model" in m], console
    dash.screenshot(path=str(shots / "dashboard_after_reload.png"))


def _check_no_overlap(page, name: str) -> None:
    """In every drawn chart: traces hold data, the legend stays off the plot area and the axis
    titles, and the title does not run into the plot."""
    report = page.evaluate(
        """() => [...document.querySelectorAll('.js-plotly-plot')].map((plot, i) => {
              const box = el => el ? el.getBoundingClientRect() : null;
              const hit = (a, b) => !!a && !!b && a.width > 0 && b.width > 0 && a.left < b.right - 1 && b.left < a.right - 1
                                    && a.top < b.bottom - 1 && b.top < a.bottom - 1;
              const area = box(plot.querySelector('.nsewdrag'));
              const legend = box(plot.querySelector('.legend'));
              const title = box(plot.querySelector('.g-gtitle text'));
              const axisTitles = [...plot.querySelectorAll('.g-xtitle text, .g-x2title text')].map(box);
              const problems = [];
              if (hit(legend, area)) problems.push('legend over the plot area');
              if (axisTitles.some(t => hit(legend, t))) problems.push('legend over an axis title');
              if (hit(title, area)) problems.push('title over the plot area');
              const points = plot.querySelectorAll('.trace .point, .trace path, .trace text').length;
              if (!points) problems.push('no drawn data');
              return {i, problems};
           }).filter(r => r.problems.length)""")
    assert not report, f"{name}: chart problems {report}"


def test_experiment_report_charts_are_drawn_without_overlap(lab, browser):
    """The report of the YAML example's run, served by the same JupyterLab: every chart drawn, no
    overlap, plotly.js loaded from the data folder (no CDN), the per-sample table there."""
    from cognitionos_kit import Experiment, Kit, LatencyModel

    home = lab["root"] / "report-home"
    kit = Kit(home, dotenv=False, simulated_latency=LatencyModel(scale=0))
    run = kit.run(Experiment.from_yaml(Path(__file__).resolve().parent.parent / "examples" / "experiment.yaml"),
                  progress=False)
    kit.close()
    import functools
    import http.server
    import threading

    # a plain loopback file server, as opening the file from disk would (Jupyter's /files adds auth)
    handler = functools.partial(_QuietFiles, directory=str(home))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rel = run.report_path.relative_to(home)
    context, errors = browser
    page = context.new_page()
    shots = _shots(lab)
    with server, _screenshot_on_failure(page, shots / "failed_report.png"):
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/{rel}")
        page.wait_for_function("() => window.Plotly && document.querySelectorAll('.js-plotly-plot .trace').length >= 4",
                               timeout=STEP_MS)
        assert page.locator(".js-plotly-plot").count() == 4 and page.locator("#nojs").count() == 0
        assert page.locator("h2", has_text="Samples").count() == 1 and page.locator("td.out").count() == len(run.results)
        _check_no_overlap(page, "the experiment report")
        page.screenshot(path=str(shots / "report.png"), full_page=True)
        # the per-sample viewer: filters hide rows, a click shows a sample in full
        r, total = run.results, len(run.results)
        visible = page.locator("#kit-samples tbody tr:not([hidden])")
        model = str(r.model.iloc[-1])
        page.select_option("#kit-f-model", model)
        n = int((r.model == model).sum())
        assert visible.count() == n < total and page.locator("#kit-f-count").inner_text() == f"{n} of {total} samples"
        page.select_option("#kit-f-status", "ok")
        assert visible.count() == int(((r.model == model) & (r.status == "ok")).sum())
        page.select_option("#kit-f-model", "")
        page.select_option("#kit-f-status", "")
        word = str(r.prompt.iloc[0]).split()[-1].strip("?.!,").lower()
        page.fill("#kit-f-text", word)
        from cognitionos_kit.experiments.samples import filter_records, sample_records

        expected = len(filter_records(sample_records(r), text=word))  # the page filters as the notebook viewer does
        assert 0 < visible.count() == expected
        page.fill("#kit-f-text", "")
        assert visible.count() == total
        visible.first.click()
        detail = page.locator("#kit-sample-detail").inner_text()
        assert "Prompt" in detail and str(r.prompt.iloc[0]).splitlines()[0] in detail and "answered by" in detail
        assert "1 attempt: simulated/" in detail and "ok (the answer)" in detail  # its one attempt, from the ledger
        page.screenshot(path=str(shots / "report_sample.png"), full_page=True)
        server.shutdown()
    assert not errors, f"page errors: {errors}"


class _QuietFiles(__import__("http.server").server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass
