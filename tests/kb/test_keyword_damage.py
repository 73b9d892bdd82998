"""Garbled tantivy segments whose footers are intact (issue 30, item 2): found by `kb status --check`
(segment checksums, then a full read), never a PanicException escaping; the question is answered from
the dense side with a note meanwhile, and the home's upkeep (never the reader) rebuilds the index from
the catalogue."""

from __future__ import annotations

import json

import pytest

from app.cli import main as cli
from kb.home import Home
from kb.settings import EmbeddingSettings, RetrievalSettings, Settings
from tests.conftest import copy_of_indexed


@pytest.fixture
def home(tmp_path, monkeypatch, home_cache):  # noqa: ANN001, ANN201
    """40 short documents indexed once per session; each test damages its own copy."""
    monkeypatch.setenv("KB_EMBEDDING__MODEL", "hash-384")

    def build(home):  # noqa: ANN001, ANN202
        docs = home.parent / "docs"
        docs.mkdir()
        for i in range(40):
            (docs / f"unit-{i}.md").write_text(f"# Unit U{i}\n\nError E{i}77 on unit U{i} means its filter F{i} is "
                                               f"full; replace it every {i + 3} weeks.\n")
        house = Home(Settings(home=home, embedding=EmbeddingSettings(model="hash-384")))
        house.collection().sync([docs])
        house.catalogue.engine.dispose()
        return {}

    copy, _ = copy_of_indexed(home_cache, "forty-units", build, tmp_path / "home")
    return Settings(home=copy, embedding=EmbeddingSettings(model="hash-384"))


def _garble(settings: Settings, suffix: str, at: int | None = None) -> int:
    """8 bytes of each segment file of that kind, far from its footer (a third in, or at `at`)."""
    folder = settings.home / "collections" / "default" / "keywords"
    files = sorted(folder.glob(f"*{suffix}"))
    for f in files:
        data = bytearray(f.read_bytes())
        middle = len(data) // 3 if at is None else at
        data[middle : middle + 8] = b"\xa5\x5a\xff\x00\x13\x37\xde\xad"
        f.write_bytes(bytes(data))
    return len(files)


@pytest.mark.parametrize("suffix", [".fast", ".idx", ".term"])
def test_a_garbled_segment_is_found_answered_around_and_rebuilt(home, suffix, capsys):
    assert _garble(home, suffix)
    assert cli(["--home", str(home.home), "status", "--check"]) == 1
    out = capsys.readouterr()
    assert "keyword index" in out.out and "Traceback" not in out.err + out.out
    assert (home.home / "collections" / "default" / "keywords.damaged").exists()

    keywords_only = Home(home.model_copy(update={"retrieval": RetrievalSettings(mode="keyword")}))
    r = keywords_only.collection().retrieve("Error E1277 on unit U12", top_k=3)  # at once, saying why
    assert "being rebuilt" in r.notes[0] and not r.contexts
    assert keywords_only.upkeep.wait(60)
    r = keywords_only.collection().retrieve("Error E1277 on unit U12", top_k=3)
    assert not r.notes and r.contexts[0].source.endswith("unit-12.md")  # rebuilt from the catalogue
    assert cli(["--home", str(home.home), "status", "--check", "--json"]) == 0
    assert not any(json.loads(capsys.readouterr().out)["check"].values())


def test_damage_met_by_a_search_is_answered_from_the_dense_side_with_a_note(home):
    _garble(home, ".fast", at=8)  # tantivy panics reading the column ("mid > len"), a BaseException
    house = Home(home)
    view = house.collection()
    r = view.retrieve("Error E1277 on unit U12", top_k=3)
    assert r.notes and "dense search alone" in r.notes[0]
    assert all("bm25" not in c.signals for c in r.contexts)
    assert house.upkeep.wait(60)  # the rebuild the search asked for
    again = view.retrieve("Error E1277 on unit U12", top_k=10)
    assert not again.notes and any("bm25" in c.signals for c in again.contexts)


def test_while_a_writer_works_a_damaged_keyword_index_does_not_hold_questions(home):
    """The rebuild needs the writer lock: while an upload holds it, questions are answered from the dense
    side at once (they used to wait for the lock, up to lock_timeout_s, then fail)."""
    import time

    from filelock import FileLock

    _garble(home, ".fast", at=8)
    with FileLock(str(home.home / "writer.lock")):  # a long upload elsewhere
        assert Home(home).collection().retrieve("E1277").notes  # found, and marked for a rebuild
        t0 = time.monotonic()
        r = Home(home).collection().retrieve("Error E1277 on unit U12")
        assert time.monotonic() - t0 < 5 and r.contexts and "dense search alone" in r.notes[0]
    after = Home(home)
    after.collection().retrieve("Error E1277 on unit U12")  # asks the upkeep for the rebuild
    assert after.upkeep.wait(60)
    assert not after.collection().retrieve("Error E1277 on unit U12").notes  # then rebuilt
