#!/bin/sh
# Every test, in two pytest processes side by side (this machine has 2 cores): the browser,
# notebook, Ray and whole-project tests spend most of their time waiting on JupyterLab, kernels,
# Ray and subprocesses (the CLI and team-server tests too), the rest is CPU. Either failing (or collecting no test) fails the run.
# Usage: tools/run_tests.sh PYTHON [extra pytest args]
set -u
PY="$1"; shift
SLOW="tests/test_browser.py tests/test_ray_secrets.py tests/test_one_home.py tests/test_project.py notebooks
      tests/test_cli.py tests/test_server.py tests/test_server_memory.py tests/test_server_auth.py
      tests/test_server_openai.py tests/test_server_web.py tests/test_client_mode.py tests/test_aggregates.py
      tests/test_experiments.py::test_ray_executor_matches_local
      tests/test_experiments.py::test_notebook_runs_under_papermill_from_the_repo_root"
LOG="${TMPDIR:-/tmp}/cognitionos-tests-waiting.log"
# shellcheck disable=SC2086
"$PY" -m pytest --basetemp="${TMPDIR:-/tmp}/cognitionos-tests-waiting" -p no:cacheprovider --durations=5 "$@" $SLOW \
    >"$LOG" 2>&1 &
WAITING=$!
"$PY" -m pytest --basetemp="${TMPDIR:-/tmp}/cognitionos-tests-main" --durations=10 "$@" \
    --ignore=tests/test_browser.py --ignore=tests/test_ray_secrets.py --ignore=tests/test_one_home.py \
    --ignore=tests/test_project.py --ignore=notebooks --ignore=tests/test_cli.py --ignore=tests/test_server.py \
    --ignore=tests/test_server_memory.py --ignore=tests/test_server_auth.py --ignore=tests/test_server_openai.py \
    --ignore=tests/test_server_web.py --ignore=tests/test_client_mode.py --ignore=tests/test_aggregates.py \
    --deselect tests/test_experiments.py::test_ray_executor_matches_local \
    --deselect tests/test_experiments.py::test_notebook_runs_under_papermill_from_the_repo_root \
    tests
MAIN=$?
wait "$WAITING"
SIDE=$?
echo "===== browser, notebook, Ray and whole-project tests (run alongside) ====="
cat "$LOG"
echo "main tests: exit $MAIN; browser/notebook/Ray/project tests: exit $SIDE"
[ "$MAIN" -eq 0 ] && [ "$SIDE" -eq 0 ]
