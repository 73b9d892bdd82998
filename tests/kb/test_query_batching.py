"""Concurrent questions share model calls (the API's many clients), and each still gets its own vector."""

from __future__ import annotations

import threading

import numpy as np

from kb.embeddings import HashStandInEmbedder, make_embedder
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


class GatedEmbedder(HashStandInEmbedder):
    """A FAKE model (the stand-in's vectors) whose passage calls can be held open, to see who goes next."""

    def __init__(self):
        super().__init__(dim=8, batch_size=32)
        self.passage_step = 4  # as a real model on a CPU
        self.calls: list[tuple[str, int]] = []
        self.first_step = threading.Event()
        self.release = threading.Event()

    def _embed_batch(self, texts, is_query):
        self.calls.append(("question" if is_query else "passages", len(texts)))
        if not is_query and not self.first_step.is_set():
            self.first_step.set()
            assert self.release.wait(10)
        return super()._embed_batch(texts, is_query)


def _wait_until(predicate) -> None:
    for _ in range(500):
        if predicate():
            return
        threading.Event().wait(0.01)
    raise AssertionError("timed out")


def test_a_question_waits_for_one_small_step_of_an_upload_not_its_whole_batch():
    model = GatedEmbedder()
    upload = threading.Thread(target=model.embed_passages, args=([f"passage {i}" for i in range(32)],))
    upload.start()
    assert model.first_step.wait(10)  # the upload holds the model for its first step
    asked = threading.Thread(target=model.embed_query, args=("a question",))
    asked.start()
    _wait_until(lambda: model._lock._questions == 1)  # the question is waiting for the model
    model.release.set()
    asked.join(10)
    upload.join(10)
    assert model.calls[:2] == [("passages", 4), ("question", 1)]  # served right after the running step
    assert sum(n for kind, n in model.calls if kind == "passages") == 32


def test_two_models_never_wait_for_each_other():
    busy, other = GatedEmbedder(), GatedEmbedder()
    upload = threading.Thread(target=busy.embed_passages, args=(["x"] * 8,))
    upload.start()
    assert busy.first_step.wait(10)
    asked = threading.Thread(target=other.embed_query, args=("answered while the other model is busy",))
    asked.start()
    asked.join(5)  # with one lock for every model, it waits for the busy one (held here until released)
    answered = not asked.is_alive()
    busy.release.set()
    asked.join(10)
    assert answered and other.calls == [("question", 1)]
    upload.join(10)
