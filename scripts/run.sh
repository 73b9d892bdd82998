#!/usr/bin/env bash
# First command: create .venv, install kb, index sample_docs/ and print the status.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
.venv/bin/kb reindex sample_docs
.venv/bin/kb status
