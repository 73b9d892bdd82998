"""bench/gpu_check.py must not rot between GPU runs: its --small mode runs the same code on any device."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_gpu_check_small_runs_every_check(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--small", "--prompt-tokens", "200",
                           "--new-tokens", "16", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["faiss"]["cpu_qps"] > 0 and report["embedder"]["dim"] == 384
    g = report["generator"]
    assert g["new_tokens"] == 16 and g["decode_tokens_per_s"] > 0 and g["kb_stream"]["pieces"] > 0
