"""A catalogue written by an older kb opens in a newer one: columns added since are created with their
defaults, on SQLite and PostgreSQL, and what it already holds stays searchable."""

from __future__ import annotations

from sqlalchemy import inspect, text

from kb.catalogue import ADDED_COLUMNS, Catalogue, add_column
from kb.knowledge_base import KnowledgeBase


def test_a_catalogue_from_before_the_ocr_column_gains_it_and_keeps_its_chunks(settings, catalogue_backend, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "leave.md").write_text("# Leave\n\nEmployees get twenty-five days of annual leave each year.\n")
    kb = KnowledgeBase(settings=settings)
    kb.sync([docs])
    before = [c.chunk_id for c in kb.search("How many days of annual leave?", log=False)]
    assert before
    with kb.catalogue.engine.begin() as conn:  # as an older kb left it
        for table, column in ADDED_COLUMNS:
            conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
    kb.catalogue.engine.dispose()

    reopened = KnowledgeBase(settings=settings)
    columns = {c["name"] for c in inspect(reopened.catalogue.engine).get_columns("chunks")}
    assert "ocr" in columns
    found = reopened.search("How many days of annual leave?", log=False)
    assert [c.chunk_id for c in found] == before and not any(c.ocr for c in found)  # old rows read as "not OCR"
    (docs / "travel.md").write_text("# Travel\n\nTrain tickets are booked through the travel desk.\n")
    assert len(reopened.sync([docs]).added) == 1  # new rows insert with the column in place
    again = Catalogue(settings.catalogue_url)  # opening it again alters nothing (the column is there)
    # a second process that saw the column missing a moment before adds it too: no error, nothing changes
    with again.engine.begin() as conn:
        add_column(conn, "chunks", "ocr")
    assert {c["name"] for c in inspect(again.engine).get_columns("chunks")} == columns
    again.engine.dispose()
