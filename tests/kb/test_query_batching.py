"""Concurrent questions share model calls (the API's many clients), and each still gets its own vector."""

from __future__ import annotations

import threading

import numpy as np

from kb.embeddings import make_embedder
from kb.settings import EmbeddingSettings
from tests.conftest import FAST_MODEL


def test_concurrent_questions_are_embedded_in_shared_batches():
    embedder = make_embedder(EmbeddingSettings(model=FAST_MODEL))
    questions = [f"How do I configure service number {i} on Debian?" for i in range(24)]
    alone = {q: embedder.embed_query(q) for q in questions}
    calls: list[int] = []
    real = embedder._embed_batch

    def counted(texts, is_query):
        calls.append(len(texts))
        return real(texts, is_query)

    embedder._embed_batch = counted
    try:
        got: dict[str, np.ndarray] = {}
        start = threading.Barrier(len(questions))

        def ask(q: str) -> None:
            start.wait()
            got[q] = embedder.embed_query(q)

        threads = [threading.Thread(target=ask, args=(q,)) for q in questions]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        del embedder._embed_batch
    assert sum(calls) == len(questions) and len(calls) < len(questions) and max(calls) > 1
    for q in questions:
        assert np.allclose(got[q], alone[q], atol=1e-4), q
