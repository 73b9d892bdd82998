"""unstructured partitions every format with the network cut off (no spaCy or nltk download)."""

import json
import subprocess
import sys
import textwrap


def test_extraction_works_without_network(docs, tmp_path):
    # sitecustomize runs before anything else in the child: any non-loopback connection fails loudly.
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(textwrap.dedent("""
        import socket
        _connect = socket.socket.connect
        def _no_network(self, address):
            host = address[0] if isinstance(address, tuple) else address
            if host not in ("127.0.0.1", "::1", "localhost"):
                raise OSError("network disabled by test: " + str(address))
            return _connect(self, address)
        socket.socket.connect = _no_network
        socket.create_connection = lambda *a, **k: (_ for _ in ()).throw(OSError("network disabled by test"))
    """))
    paths = [str(docs[k]) for k in ("html", "md", "docx", "pptx", "xlsx", "txt")]
    code = textwrap.dedent(f"""
        import json, urllib.request
        try:
            urllib.request.urlopen("https://github.com", timeout=5); print("NETWORK REACHABLE")
        except Exception:
            pass
        from ingest.extract import extract
        print(json.dumps({{p: len(extract(p).blocks) for p in {paths!r}}}))
    """)
    env = {"PYTHONPATH": f"{guard}:{__import__('os').getcwd()}", "PATH": "/usr/bin:/bin",
           "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "NETWORK REACHABLE" not in out.stdout
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(n > 0 for n in counts.values()), counts
