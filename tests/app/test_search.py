"""`kb search` returns ranked contexts with source and page from the real index."""

import json

from app.cli import main as cli
from ingest.extract import extract
from tests.conftest import FAST_MODEL, SAMPLES, pdf_excerpt


def test_search_finds_the_pdf_page(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KB_EMBEDDING__MODEL", FAST_MODEL)
    docs = tmp_path / "docs"
    docs.mkdir()
    pdf_excerpt(SAMPLES / "debian-faq-en-chapters-1-2.pdf", docs / "faq.pdf", range(8, 12))
    (docs / "other.md").write_text("# Cooking\n\nBoil the pasta for ten minutes in salted water.\n")
    home = str(tmp_path / "home")
    assert cli(["--home", home, "reindex", str(docs)]) == 0
    capsys.readouterr()
    assert cli(["--home", home, "search", "How does one pronounce Debian?", "--top-k", "3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert rows[0]["score"] >= rows[1]["score"] >= rows[2]["score"]
    top = rows[0]
    assert top["source"].endswith("faq.pdf") and "pronounce" in top["text"].lower()
    # The cited page really holds the text (checked against the PDF itself, page by page).
    pages: dict[int, str] = {}
    for b in extract(docs / "faq.pdf").blocks:  # one block per section that starts on the page
        pages[b.page] = pages.get(b.page, "") + "\n" + b.text
    assert top["text"] in pages[top["page"]]
    assert sum(top["text"] in t for t in pages.values()) == 1


def test_hash_stand_in_embedder_is_selected_by_name_and_labelled(tmp_path, monkeypatch, capsys):
    """`KB_EMBEDDING__MODEL=hash-384` (benchmarks, tests) works from any command and says it is a stand-in."""
    monkeypatch.setenv("KB_EMBEDDING__MODEL", "hash-384")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pump.md").write_text("# Pumps\n\nError XQZ4471 means the impeller is blocked.\n")
    home = str(tmp_path / "home")
    assert cli(["--home", home, "reindex", str(docs)]) == 0
    capsys.readouterr()
    assert cli(["--home", home, "status", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["embedding_model"] == "hash-384:stand-in-no-semantic-meaning" and st["dimension"] == 384
    assert st["consistent"] and st["chunks"] == st["index_vectors"] == st["keyword_entries"] == 1
    assert cli(["--home", home, "search", "XQZ4471", "--json"]) == 0  # found by its keyword
    assert json.loads(capsys.readouterr().out)[0]["source"].endswith("pump.md")
