"""Real odd and broken documents from other projects' test suites, fetched from PyPI (their source
distributions ship them), never committed: PDFs from pypdf and pikepdf (encrypted, damaged, fuzzed,
PDF/A, forms), DOCX and PPTX from python-docx and python-pptx.

    python -m tests.real_world_files          # the CI sample (pypdf + python-docx), into .cache/
    python -m tests.real_world_files --all    # every package: the bench's corpus (bench/hostile.py)

The test install step runs the first; a test that needs the files and finds none fetches them itself.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "real-world-files"
SUFFIXES = (".pdf", ".docx", ".pptx", ".xlsx")
PACKAGES = {  # pinned: the sample must not change under the tests
    "pypdf==7.1.1": "ci",
    "python-docx==1.2.0": "ci",
    "pikepdf==10.18.0": "bench",
    "python-pptx==1.0.2": "bench",
}


def fetch(everything: bool = False, cache: Path = CACHE) -> list[Path]:
    """Download the source distributions (once) and unpack their documents into cache/<package>/;
    returns every document's path. Members are copied by content under flattened names: an archive
    path never decides where a file is written."""
    out: list[Path] = []
    for spec, use in PACKAGES.items():
        if use != "ci" and not everything:
            continue
        name = spec.split("==")[0]
        folder = cache / name
        done = folder / ".complete"
        if not done.exists():
            sdists = cache / ".sdists"
            sdists.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                            "-d", str(sdists), spec], check=True)
            version = spec.split("==")[1]
            archive = next(p for p in sdists.glob("*.tar.gz")
                           if p.name.lower().replace("_", "-").startswith(f"{name}-{version}".lower()))
            folder.mkdir(parents=True, exist_ok=True)
            with tarfile.open(archive) as tar:
                for member in tar:
                    if member.isfile() and member.name.lower().endswith(SUFFIXES):
                        flat = "__".join(Path(member.name).parts[1:])  # drop the "pkg-1.0/" top folder
                        (folder / flat).write_bytes(tar.extractfile(member).read())
            done.touch()
        out += sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--all", action="store_true", help="every package (the bench corpus), not only the CI sample")
    files = fetch(parser.parse_args().all)
    print(f"{len(files)} real-world documents under {CACHE}")
