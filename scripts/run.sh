#!/usr/bin/env bash
# First command: create .venv, install kb, index sample_docs/ and serve the web UI on
# http://localhost:8501 (Ctrl-C stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
.venv/bin/kb reindex sample_docs
.venv/bin/kb status
echo "Open http://localhost:8501 in your browser and sign in as admin (the password is printed below on the first start, or set KB_ADMIN_PASSWORD)."
echo "It listens on this machine only; to open it to your network: KB_UI_HOST=0.0.0.0 bash scripts/run.sh"
exec .venv/bin/kb ui --port "${KB_UI_PORT:-8501}" --host "${KB_UI_HOST:-127.0.0.1}"
