"""Two more evaluation sets beside ../shared/eval (issue 13), built from the same Debian FAQ, never
committed (the PDF comes from Debian's archive):

- `debian_faq_en_pdf`: the English FAQ **as the PDF Debian ships** (`debian-faq=11.1`,
  /usr/share/doc/debian/FAQ/debian-faq.en.pdf.gz), with debian_faq_en's 120 questions and gold answers;
  every answer's source is that one PDF. It measures PDF extraction against the HTML variant.
- `debian_faq_en_bodies`: one Markdown file per gold answer, no question title (like
  debian_faq_zh_bodies): retrieval cannot match the question text verbatim.

    python bench/eval_sets.py            # builds both into .cache/eval/ (with score.py), prints the path
    python bench/retrieval.py --eval-dir .cache/eval --sets debian_faq_en_pdf debian_faq_en_bodies
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "eval"
OUT = ROOT / ".cache" / "eval"
PACKAGE = "debian-faq=11.1"
PDF_IN_PACKAGE = "usr/share/doc/debian/FAQ/debian-faq.en.pdf.gz"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write_set(name: str, rows: list[dict], readme: str) -> Path:
    folder = OUT / name
    (folder / "corpus").mkdir(parents=True, exist_ok=True)
    (folder / "qa.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (folder / "README.md").write_text(readme, encoding="utf-8")
    return folder


def build_pdf_set(source_rows: list[dict]) -> Path:
    folder = _write_set("debian_faq_en_pdf", [{**r, "source": "debian-faq.en.pdf"} for r in source_rows],
                        f"# debian_faq_en_pdf\n\ndebian_faq_en's questions over the PDF Debian ships: `apt-get download "
                        f"{PACKAGE}`, `{PDF_IN_PACKAGE}` gunzipped. Built by bench/eval_sets.py.\n")
    pdf = folder / "corpus" / "debian-faq.en.pdf"
    if not pdf.exists():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["apt-get", "download", PACKAGE], cwd=tmp, check=True, capture_output=True)
            deb = next(Path(tmp).glob("debian-faq_*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), str(Path(tmp) / "x")], check=True)
            pdf.write_bytes(gzip.decompress((Path(tmp) / "x" / PDF_IN_PACKAGE).read_bytes()))
    return folder


def build_bodies_set(source_rows: list[dict]) -> Path:
    rows = [{**r, "source": f"{r['id']}.md"} for r in source_rows]
    folder = _write_set("debian_faq_en_bodies", rows,
                        "# debian_faq_en_bodies\n\ndebian_faq_en's 120 questions; the corpus is one Markdown file per "
                        "gold answer holding only the answer text (no question title). Built by bench/eval_sets.py.\n")
    for r in rows:
        (folder / "corpus" / r["source"]).write_text(r["answer"] + "\n", encoding="utf-8")
    return folder


def main() -> None:
    rows = _rows(SHARED / "debian_faq_en" / "qa.jsonl")
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.copy(SHARED / "score.py", OUT / "score.py")
    for folder in (build_pdf_set(rows), build_bodies_set(rows)):
        print(f"{folder}: {len(list((folder / 'corpus').iterdir()))} corpus files")


if __name__ == "__main__":
    sys.exit(main())
