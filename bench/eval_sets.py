"""Two more evaluation sets beside ../shared/eval (issue 13), built from the same Debian FAQ, never
committed (the PDF comes from Debian's archive):

- `debian_faq_en_pdf`: the English FAQ **as the PDF Debian ships** (`debian-faq=11.1`,
  /usr/share/doc/debian/FAQ/debian-faq.en.pdf.gz), with debian_faq_en's 120 questions and gold answers;
  every answer's source is that one PDF. It measures PDF extraction against the HTML variant.
- `debian_faq_en_bodies`: one Markdown file per gold answer, no question title (like
  debian_faq_zh_bodies): retrieval cannot match the question text verbatim.
- `debian_faq_zh_pdf`: the 17 Chinese FAQ pages printed to PDF by headless Chromium (a text layer;
  `debian-faq-zh-cn` ships no real PDF), with debian_faq_zh's 120 questions.
- `debian_faq_zh_scan`: the same PDFs with every page rasterised at 150 dpi into an image-only PDF
  (no text layer): only OCR can read them. It measures OCR against the text version.

    python bench/eval_sets.py            # builds all four into .cache/eval/ (with score.py), prints the path
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


def _print_to_pdf(html: Path, pdf: Path) -> None:
    """Headless Chromium (the browser tests' own) prints a page as a user's "Save as PDF" would."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is needed to print the Chinese FAQ to PDF (scripts/install_browser.sh)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}",
                        "--no-pdf-header-footer", f"--print-to-pdf={pdf}", html.as_uri()],
                       check=True, capture_output=True, timeout=120)


def _rasterise(pdf: Path, out: Path, dpi: int = 150) -> int:
    """Every page as one image, nothing else: a scanned copy with no text layer. Returns the pages."""
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(pdf))
    try:
        images = [page.render(scale=dpi / 72).to_pil().convert("L") for page in doc]
    finally:
        doc.close()
    images[0].save(out, "PDF", resolution=dpi, save_all=True, append_images=images[1:])
    return len(images)


def build_zh_pdf_sets() -> tuple[Path, Path]:
    import pypdf

    rows = _rows(SHARED / "debian_faq_zh" / "qa.jsonl")
    pdf_rows = [{**r, "source": r["source"].replace(".html", ".pdf")} for r in rows]
    text = _write_set("debian_faq_zh_pdf", pdf_rows,
                      "# debian_faq_zh_pdf\n\ndebian_faq_zh's questions over its 17 HTML pages printed to PDF by "
                      "headless Chromium. Built by bench/eval_sets.py.\n")
    scan = _write_set("debian_faq_zh_scan", pdf_rows,
                      "# debian_faq_zh_scan\n\ndebian_faq_zh_pdf with every page rasterised at 150 dpi (grey) into "
                      "an image-only PDF: no text layer, only OCR reads it. Built by bench/eval_sets.py.\n")
    pages = 0
    for html in sorted((SHARED / "debian_faq_zh" / "corpus").glob("*.html")):
        pdf = text / "corpus" / html.with_suffix(".pdf").name
        if not pdf.exists():  # written aside, then renamed: an interrupted run leaves no half file behind
            _print_to_pdf(html, pdf.with_suffix(".part"))
            pdf.with_suffix(".part").replace(pdf)
        scanned = scan / "corpus" / pdf.name
        if not scanned.exists():
            _rasterise(pdf, scanned.with_suffix(".part"))
            scanned.with_suffix(".part").replace(scanned)
        pages += len(pypdf.PdfReader(scanned).pages)
    print(f"{scan}: {pages} scanned pages")
    return text, scan


def main() -> None:
    rows = _rows(SHARED / "debian_faq_en" / "qa.jsonl")
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.copy(SHARED / "score.py", OUT / "score.py")
    for folder in (build_pdf_set(rows), build_bodies_set(rows), *build_zh_pdf_sets()):
        print(f"{folder}: {len(list((folder / 'corpus').iterdir()))} corpus files")


if __name__ == "__main__":
    sys.exit(main())
