"""The bundled MiniLM run with torch alone (kb/minilm.py) against sentence-transformers on the same weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kb.embeddings import BundledMiniLMEmbedder, SentenceTransformerEmbedder, _bundled_minilm, make_embedder
from kb.settings import EmbeddingSettings


def test_the_bundled_minilm_gives_sentence_transformers_vectors_and_token_counts():
    """The reference: the same weights through sentence-transformers (a local folder goes that way)."""
    reference = make_embedder(EmbeddingSettings(model=_bundled_minilm(), device="cpu"))
    assert isinstance(reference, SentenceTransformerEmbedder)
    mine = make_embedder(EmbeddingSettings(model="all-MiniLM-L6-v2"))
    assert isinstance(mine, BundledMiniLMEmbedder) and mine.name == "st:all-MiniLM-L6-v2"
    long_text = "Debian's package manager resolves dependencies before it installs anything. " * 60
    texts = ["How do I install a package?", "apt-get install foo", "中文也能编码", long_text, "x"]
    ours = mine.embed_passages(texts)
    theirs = reference.embed_passages(texts)
    assert ours.shape == theirs.shape == (5, 384)
    assert float((ours * theirs).sum(1).min()) > 0.9999  # the long text is cut at 256 tokens by both
    assert np.allclose(mine.embed_query(texts[0]), reference.embed_query(texts[0]), atol=1e-4)
    assert mine.max_tokens == reference.max_tokens == 254
    assert [mine.count_tokens(t) for t in texts] == [reference.count_tokens(t) for t in texts]


def test_a_named_sentence_transformers_copy_keeps_its_own_name():
    """Index manifests and the embedding cache record the name as configured."""
    e = make_embedder(EmbeddingSettings(model="sentence-transformers/all-MiniLM-L6-v2"))
    assert e.name == "st:sentence-transformers/all-MiniLM-L6-v2" and Path(e.folder).is_dir()
