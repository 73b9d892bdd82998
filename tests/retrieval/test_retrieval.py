"""The hybrid retriever on a real index: BM25 postings in step with the catalogue, fusion, the
relevance floor, document filters, and `kb search --queries` batch mode."""

from __future__ import annotations

import json

import pytest
from app.cli import main as cli
from app.worker import Worker
from kb.knowledge_base import KnowledgeBase
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


def keywords_in_step(kb: KnowledgeBase) -> bool:
    return kb.indexes.reader_keywords(kb.collection).ids() == kb.catalogue.chunk_ids(kb.collection)


def keyword_search(kb: KnowledgeBase, question: str, k: int = 10, documents: set[int] | None = None):
    return kb.indexes.reader_keywords(kb.collection).search(question, k, documents)


def test_bm25_stays_in_step_after_a_reindex_that_removes_a_file(settings, corpus):
    kb = KnowledgeBase(settings=settings)
    kb.sync([corpus])
    hits = keyword_search(kb, "XQZ4471 zebrafish")
    rows = kb.catalogue.chunks_by_ids(i for i, _ in hits.ranking)
    assert {rows[i].document.path.rsplit("/", 1)[-1] for i, _ in hits.ranking} == {"pump.md"}
    assert hits.coverage == pytest.approx(1.0)
    assert keywords_in_step(kb)

    (corpus / "pump.md").unlink()
    report = kb.sync([corpus])
    assert report.removed and report.removed[0].endswith("pump.md")
    assert keyword_search(kb, "XQZ4471 zebrafish").ranking == []
    assert keywords_in_step(kb)
    # and an edited file's keyword entries follow its new text
    (corpus / "pasta.md").write_text(PASTA.replace("pasta", "risotto"))
    kb.sync([corpus])
    assert keyword_search(kb, "pasta").ranking == []
    assert keyword_search(kb, "risotto").ranking
    assert keywords_in_step(kb)


def test_keyword_filters_apply_inside_the_engine(settings, corpus):
    kb = KnowledgeBase(settings=settings)
    kb.sync([corpus])
    ids = {d.path.rsplit("/", 1)[-1]: d.id for d in kb.documents()}
    everywhere = keyword_search(kb, "impeller pasta backups", 10)
    assert len({kb.catalogue.chunks_by_ids([i])[i].document_id for i, _ in everywhere.ranking}) == 3
    only = keyword_search(kb, "impeller pasta backups", 10, {ids["pasta.md"]})
    assert only.ranking and {kb.catalogue.chunks_by_ids([i])[i].document_id for i, _ in only.ranking} == {ids["pasta.md"]}
    assert keyword_search(kb, "impeller", 10, {ids["pasta.md"]}).ranking == []  # the filter is not a re-ranking
    assert keyword_search(kb, "impeller", 10, set()).ranking == []


def test_bm25_ranking_matches_the_textbook_formula(settings, corpus):
    """tantivy's BM25 over kb's terms: the same scores as BM25 (k1 1.2, b 0.75) computed by hand."""
    import math
    from collections import Counter

    from kb.keyword_index import terms
    from kb.vector_index import embedded_text

    kb = KnowledgeBase(settings=settings)
    kb.sync([corpus])
    chunks = kb.catalogue.chunks_by_ids(kb.catalogue.chunk_ids(kb.collection))
    docs = {i: Counter(terms(embedded_text(c.heading, c.text))) for i, c in chunks.items()}
    n, avgdl = len(docs), sum(sum(c.values()) for c in docs.values()) / len(docs)
    question = "clean the impeller of the pump; boil pasta"
    q = Counter(terms(question))

    def bm25(d: Counter) -> float:
        dl = sum(d.values())
        out = 0.0
        for t, c in q.items():
            df = sum(1 for x in docs.values() if t in x)
            if t in d:
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                out += c * idf * d[t] * 2.2 / (d[t] + 1.2 * (0.25 + 0.75 * dl / avgdl))
        return out

    expected = sorted(((i, bm25(d)) for i, d in docs.items() if bm25(d) > 0), key=lambda kv: -kv[1])
    got = keyword_search(kb, question).ranking
    assert [i for i, _ in got] == [i for i, _ in expected]
    # tantivy stores document lengths in one byte (a lossy norm), so scores agree closely, not exactly
    assert [s for _, s in got] == pytest.approx([s for _, s in expected], rel=0.05)


def test_hybrid_search_ranks_exact_identifiers_and_reports_signals(settings, corpus):
    kb = KnowledgeBase(settings=settings)
    kb.sync([corpus])
    contexts = kb.search("what does XQZ4471 mean?")
    assert contexts[0].source.endswith("pump.md")
    assert {"dense", "bm25", "fused"} <= set(contexts[0].signals)
    assert len(contexts) == settings.retrieval.top_k == 3  # three documents, all retrieved, each once
    assert len({c.chunk_id for c in contexts}) == 3 and [c.score for c in contexts] == sorted(
        (c.score for c in contexts), reverse=True)


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
    assert set(rows[0]["contexts"][0]) == {"source", "document", "path", "page", "heading", "score", "chunk_id",
                                           "text", "ocr"}  # the one JSON shape of a context (Context.to_dict)
    assert all(len(r["contexts"]) <= 2 for r in rows)
    queries.write_text('{"question": "no id"}\n')
    assert cli(["--home", home, "search", "--queries", str(queries), "--json"]) == 2
    assert "q.jsonl:1" in capsys.readouterr().err


def test_fusion_functions():
    assert rrf([(1.0, [1, 2]), (1.0, [2, 3])], 60)[2] == pytest.approx(1 / 62 + 1 / 61)
    fused = weighted_fusion([(1, 0.9), (2, 0.8), (3, 0.7)], [(3, 10.0), (4, 5.0)], 0.7, 0.3)
    assert fused[1] == pytest.approx(0.7) and fused[3] == pytest.approx(0.3)
    assert fused[4] == pytest.approx(0.15) and fused[2] == pytest.approx(0.35)


def test_keyword_index_is_repaired_from_the_catalogue(settings, corpus):
    """A crash after the keyword commit (journal left) or a lost keyword folder (count differs): the next
    write deletes entries the catalogue lacks and re-adds missing ones from the stored text."""
    from kb.keyword_index import KeywordIndex

    kb = KnowledgeBase(settings=settings)
    kb.sync([corpus])
    real = sorted(kb.catalogue.chunk_ids(kb.collection))
    kw = KeywordIndex(kb.indexes.keyword_dir(kb.collection))
    kw.stage([real[0]], [(999_999, 1, "phantom zebrafish entry never committed to the catalogue")])
    kw.commit([real[0]], [999_999])  # journal written, catalogue never told: as if killed right here
    kw.close()
    assert not keywords_in_step(kb)
    r = kb.sync([corpus])
    assert r.repaired["keyword_entries_repaired"] == 2 and r.embedded == 0
    assert keywords_in_step(kb)
    assert not (kb.indexes.index_dir(kb.collection) / "keywords.pending.json").exists()

    import shutil

    shutil.rmtree(kb.indexes.keyword_dir(kb.collection))  # lost entirely: rebuilt from the catalogue, nothing re-embedded
    r = kb.sync([corpus])
    assert r.repaired["keyword_entries_repaired"] == len(real) and r.embedded == 0
    assert keywords_in_step(kb)
    assert keyword_search(kb, "XQZ4471").ranking


def test_readers_see_a_writers_new_index(settings, corpus):
    """A reader (a web session) keeps its loaded indexes and picks up what a writer saves afterwards."""
    writer = KnowledgeBase(settings=settings)
    writer.sync([corpus])
    reader = KnowledgeBase(settings=settings)
    reader.search("When does the cafeteria serve lasagne?", log=False)  # loads both indexes
    before = reader.indexes.reader_index("default"), reader.indexes.reader_keywords("default")
    (corpus / "menu.md").write_text("# Cafeteria\n\nThe cafeteria serves lasagne every Thursday at noon.\n")
    writer.sync([corpus])
    assert (reader.indexes.reader_index("default"), reader.indexes.reader_keywords("default")) != before  # reopened, not the stale copies
    hits = keyword_search(reader, "lasagne cafeteria")
    assert hits.ranking and reader.catalogue.chunks_by_ids([hits.ranking[0][0]])[hits.ranking[0][0]].document.path.endswith("menu.md")
    assert reader.indexes.reader_index("default").count == writer.catalogue.counts(writer.collection)["chunks"]


def test_reindex_all_resyncs_folders_and_uploads(settings, corpus):
    kb = KnowledgeBase(settings=settings)
    kb.sync([corpus])
    kb.submit_uploads([("policy.md", 40, lambda: b"# Policy\n\nLeave is twenty-five days a year.\n")])
    assert Worker(settings).run_once().result["added"] == 1
    (corpus / "pasta.md").unlink()
    uploaded = kb.uploads_dir() / "policy.md"
    uploaded.write_text("# Policy\n\nLeave is thirty days a year.\n")
    r = kb.reindex_all()
    assert r.removed == [str(corpus / "pasta.md")] and r.updated == [str(uploaded)]
    assert keywords_in_step(kb) and keyword_search(kb, "thirty").ranking


def test_a_cross_encoder_reranks_the_fused_candidates(settings, corpus, tmp_path):
    """A real (tiny, random) sentence-transformers CrossEncoder built here: its scores decide the order."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from kb.embeddings import _bundled_minilm

    path = tmp_path / "tiny-cross-encoder"
    tok = AutoTokenizer.from_pretrained(_bundled_minilm())
    tok.save_pretrained(path)
    BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64,
                                             num_labels=1)).save_pretrained(path)
    ranked = settings.model_copy(update={"retrieval": settings.retrieval.model_copy(
        update={"reranker": str(path), "min_dense_score": 0.0})})
    kb = KnowledgeBase(settings=ranked)
    kb.sync([corpus])
    contexts = kb.search("what does XQZ4471 mean?", top_k=3, log=False)
    scores = [c.signals["rerank"] for c in contexts]
    assert contexts and scores == sorted(scores, reverse=True) and [c.score for c in contexts] == scores

    from kb.errors import ConfigError
    from retrieval.rerank import make_reranker

    with pytest.raises(ConfigError, match="cannot load the reranker"):
        make_reranker(str(tmp_path / "no-such-model"))
