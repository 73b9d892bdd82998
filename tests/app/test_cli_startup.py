"""A `kb` command that needs no torch model does not pay for importing torch or langchain (~2.5 s of
every such command's start on a CPU machine)."""

import os
import subprocess
import sys

from tests.conftest import ROOT

PROBE = """
import sys
from app.cli import main
code = main(["--home", sys.argv[1], "status"])
heavy = sorted(m for m in ("torch", "langchain_text_splitters", "sentence_transformers") if m in sys.modules)
print(code, heavy)
"""


def test_status_with_an_embedder_that_needs_no_torch_imports_none(tmp_path):
    env = {**os.environ, "KB_EMBEDDING__MODEL": "hash-384"}
    r = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "home")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.stdout.split("\n")[-2] == "0 []", r.stdout + r.stderr
