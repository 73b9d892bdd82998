"""Chunk text garbled inside a catalogue page whose structure is intact (SQLite's integrity check
passes): never served, and found by `kb status --check` (issue 30, item 6)."""

from __future__ import annotations

from app.cli import main as cli
from kb.home import Home
from kb.settings import EmbeddingSettings, RetrievalSettings, Settings


def test_garbled_chunk_text_is_left_out_of_answers_and_reported(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KB_EMBEDDING__MODEL", "hash-384")
    monkeypatch.setenv("KB_RETRIEVAL__MODE", "keyword")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "pump.md").write_text("# Pumps\n\nError XQZ4471 means the impeller of the pump is blocked.\n")
    (docs / "fan.md").write_text("# Fans\n\nError XQZ4471 on a fan means the fan filter is full.\n")
    settings = Settings(home=tmp_path / "home", embedding=EmbeddingSettings(model="hash-384"),
                        retrieval=RetrievalSettings(mode="keyword"))
    home = Home(settings)
    home.collection().sync([docs])
    assert len(home.collection().search("XQZ4471", log=False)) == 2
    home.catalogue.engine.dispose()  # the WAL checkpointed into the file
    db = settings.home / "catalogue.sqlite3"
    data = db.read_bytes()
    assert data.count(b"impeller") == 1  # the chunk's text, in one leaf page of `chunks`
    db.write_bytes(data.replace(b"impeller", b"imp\x01ll\x02r"))  # 8 bytes, same length: the record still parses

    assert cli(["--home", str(settings.home), "status", "--check"]) == 1
    out = capsys.readouterr().out
    assert "no longer matches what was embedded" in out and "pump.md" in out
    r = Home(settings).collection().retrieve("XQZ4471")
    assert [c.source.rsplit("/", 1)[-1] for c in r.contexts] == ["fan.md"]  # the garbled one left out
    assert r.notes and "damaged passage" in r.notes[0]
