#!/usr/bin/env bash
# Debian's headless Chromium and its driver, for the real-browser test (tests/test_browser.py), and a
# CJK font: without one Chromium draws Chinese as boxes (screenshots, and the scanned eval PDFs of
# bench/eval_sets.py, which OCR must read).
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null && fc-list 2>/dev/null | grep -qi "CJK"; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo -n"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null || echo "install_browser: apt-get update failed; trying the install anyway" >&2
$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-noto-cjk >/dev/null
