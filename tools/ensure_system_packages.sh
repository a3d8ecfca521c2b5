#!/bin/sh
# Install the Debian packages tests need when they are missing (idempotent, quiet, one apt-get run):
#   chromium      the browser end-to-end test (Playwright drives it via executable_path;
#                 `playwright install` cannot download browsers here)
#   redis-server  the Redis guards backend's tests (a real server, started by the test fixture)
set -e
MISSING=""
[ -x /usr/bin/chromium ] || MISSING="$MISSING chromium"
command -v redis-server >/dev/null 2>&1 || MISSING="$MISSING redis-server"
[ -z "$MISSING" ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
LOG="${TMPDIR:-/tmp}/ensure_system_packages.log"
echo "the tests need Debian's$MISSING: installing with apt-get --no-install-recommends (once; log: $LOG)"
if ! { $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $MISSING; } >"$LOG" 2>&1; then
    tail -n 20 "$LOG" >&2
    echo "could not install$MISSING: see $LOG" >&2
    exit 1
fi
[ -x /usr/bin/chromium ] || { echo "apt installed chromium but /usr/bin/chromium is missing" >&2; exit 1; }
command -v redis-server >/dev/null 2>&1 || { echo "apt installed redis-server but it is not on PATH" >&2; exit 1; }
