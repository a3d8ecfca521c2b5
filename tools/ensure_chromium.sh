#!/bin/sh
# Install Debian's chromium for the browser end-to-end test when it is missing (idempotent, quiet).
# Playwright drives it via executable_path; `playwright install` cannot download browsers here.
set -e
CHROMIUM=/usr/bin/chromium
[ -x "$CHROMIUM" ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
LOG="${TMPDIR:-/tmp}/ensure_chromium.log"
echo "the browser test needs Debian's chromium: installing it with apt-get --no-install-recommends"
echo "(about 100 MB with its libraries, once; log: $LOG)"
if ! { $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium; } >"$LOG" 2>&1; then
    tail -n 20 "$LOG" >&2
    echo "could not install chromium: see $LOG" >&2
    exit 1
fi
[ -x "$CHROMIUM" ] || { echo "apt installed chromium but $CHROMIUM is missing" >&2; exit 1; }
