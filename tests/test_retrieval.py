"""The hybrid retriever on a real index: BM25 postings in step with the catalogue, fusion, the
relevance floor, document filters, and `kb search --queries` batch mode."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from app.cli import main as cli
from kb.catalogue import Chunk, Posting
from kb.knowledge_base import KnowledgeBase
from retrieval.keyword import keyword_search
from retrieval.retriever import rrf, weighted_fusion
from tests.conftest import FAST_MODEL

PASTA = "# Kitchen\n\nBoil the pasta for ten minutes in salted water, then drain it.\n"
PUMP = "# Pumps\n\nError XQZ4471 on the zebrafish tank pump means the impeller is blocked; clean the impeller.\n"
BACKUP = ("# Backups\n\nNightly backups of the file server run at 02:00 and are kept for thirty days. "
          "Restores are requested through the service desk.\n")


@pytest.fixture
def corpus(tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "pasta.md").write_text(PASTA)
    (d / "pump.md").write_text(PUMP)
    (d / "backup.md").write_text(BACKUP)
    return d


def postings_in_step(kb: KnowledgeBase) -> bool:
    with kb.catalogue.session() as s:
        with_postings = s.scalar(select(func.count(func.distinct(Posting.chunk_id))))
        orphans = s.scalar(select(func.count()).select_from(Posting).where(Posting.chunk_id.not_in(select(Chunk.id))))
        chunks = s.scalar(select(func.count(Chunk.id)))
    return with_postings == chunks and orphans == 0


def test_bm25_stays_in_step_after_a_reindex_that_removes_a_file(settings, corpus):
    kb = KnowledgeBase(settings=settings)
    kb.sync([corpus])
    hits = keyword_search("XQZ4471 zebrafish", kb.catalogue, kb.collection, 10)
    rows = kb.catalogue.chunks_by_ids(i for i, _ in hits.ranking)
    assert {rows[i].document.path.rsplit("/", 1)[-1] for i, _ in hits.ranking} == {"pump.md"}
    assert hits.coverage == pytest.approx(1.0)
    assert postings_in_step(kb)

    (corpus / "pump.md").unlink()
    report = kb.sync([corpus])
    assert report.removed and report.removed[0].endswith("pump.md")
    assert keyword_search("XQZ4471 zebrafish", kb.catalogue, kb.collection, 10).ranking == []
    assert postings_in_step(kb)
    # and an edited file's postings follow its new text
    (corpus / "pasta.md").write_text(PASTA.replace("pasta", "risotto"))
    kb.sync([corpus])
    assert keyword_search("pasta", kb.catalogue, kb.collection, 10).ranking == []
    assert keyword_search("risotto", kb.catalogue, kb.collection, 10).ranking
    assert postings_in_step(kb)


def test_hybrid_search_ranks_exact_identifiers_and_reports_signals(settings, corpus):
    kb = KnowledgeBase(settings=settings)
    kb.sync([corpus])
    contexts = kb.search("what does XQZ4471 mean?")
    assert contexts[0].source.endswith("pump.md")
    assert {"dense", "bm25", "fused"} <= set(contexts[0].signals)
    assert len(contexts) <= settings.retrieval.top_k == 3


def test_relevance_floor_says_nothing_relevant(settings, corpus):
    kb = KnowledgeBase(settings=settings)
    kb.sync([corpus])
    r = kb.retrieve("Who won the football world cup in 1998?")
    assert not r.relevant and r.contexts == []
    answer = kb.ask("Who won the football world cup in 1998?")
    assert not answer.found and answer.citations == []
    assert "generate" not in answer.timings  # no model was called
    assert kb.retrieve("How long are nightly backups kept?").relevant


def test_document_filter_restricts_both_searches(settings, corpus):
    kb = KnowledgeBase(settings=settings)
    kb.sync([corpus])
    question = "How long are backups kept, and how long does pasta boil?"
    for name in ("backup.md", "pasta.md"):
        contexts = kb.search(question, documents=[name])
        assert contexts and all(c.source.endswith(name) for c in contexts)
    assert kb.search(question, documents=["no-such-file.md"]) == []


def test_search_batch_mode_writes_one_json_row_per_question(tmp_path, corpus, monkeypatch, capsys):
    monkeypatch.setenv("KB_EMBEDDING__MODEL", FAST_MODEL)
    home = str(tmp_path / "home")
    assert cli(["--home", home, "reindex", str(corpus)]) == 0
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"id": "q1", "question": "How long should pasta boil?"}\n\n'
                       '{"id": 7, "question": "When do backups run?"}\n')
    capsys.readouterr()
    assert cli(["--home", home, "search", "--queries", str(queries), "--json", "--top-k", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in rows] == ["q1", 7]
    assert rows[0]["contexts"][0]["source"].endswith("pasta.md")
    assert rows[1]["contexts"][0]["source"].endswith("backup.md")
    assert set(rows[0]["contexts"][0]) == {"source", "page", "text", "score", "chunk_id"}
    assert all(len(r["contexts"]) <= 2 for r in rows)
    queries.write_text('{"question": "no id"}\n')
    assert cli(["--home", home, "search", "--queries", str(queries), "--json"]) == 2
    assert "q.jsonl:1" in capsys.readouterr().err


def test_fusion_functions():
    assert rrf([(1.0, [1, 2]), (1.0, [2, 3])], 60)[2] == pytest.approx(1 / 62 + 1 / 61)
    fused = weighted_fusion([(1, 0.9), (2, 0.8), (3, 0.7)], [(3, 10.0), (4, 5.0)], 0.7, 0.3)
    assert fused[1] == pytest.approx(0.7) and fused[3] == pytest.approx(0.3)
    assert fused[4] == pytest.approx(0.15) and fused[2] == pytest.approx(0.35)
