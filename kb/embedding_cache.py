"""Vectors by text hash: every chunk text a model embedded, kept in the catalogue (`embeddings`), so a
re-index, a repair, a catch-up or a `--full` rebuild with the same model embeds nothing twice."""

from __future__ import annotations

import numpy as np
from sqlalchemy.orm import Session

from kb.catalogue import CachedEmbedding, Catalogue
from kb.embeddings import Embedder


class EmbeddingCache:
    def __init__(self, catalogue: Catalogue, embedder: Embedder):
        self.catalogue, self.embedder = catalogue, embedder
        self.reused = 0  # texts found in the cache
        self.embedded = 0  # texts sent to a model

    def vectors(self, s: Session, items: list[tuple[str, str]], count: bool = True) -> np.ndarray:
        """The main model's vectors of (hash, text) pairs, in their order: cached, else embedded and cached.
        `count`: add to `reused`/`embedded` (a sync reports them; a repair's restored vectors are not news)."""
        cached = self.fill(s, self.embedder, items, count)
        if not items:
            return np.zeros((0, self.embedder.dimension), dtype=np.float32)
        return np.vstack([np.frombuffer(cached[h], dtype=np.float32) for h, _ in items])

    def fill(self, s: Session, embedder: Embedder, items: list[tuple[str, str]], count: bool = True) -> dict[str, bytes]:
        """Hash -> vector bytes for every pair, embedding (with `embedder`) only the texts not cached yet."""
        cached = self.catalogue.cached_vectors(s, embedder.name, [h for h, _ in items])
        todo = {h: t for h, t in items if h not in cached}
        if count:
            self.reused += len(items) - len(todo)
            self.embedded += len(todo)
        if todo:
            hashes = list(todo)
            vecs = embedder.embed_passages([todo[h] for h in hashes], progress=False)
            # Cache rows commit in their own transaction: embedding work survives a crash.
            with self.catalogue.session() as cs:
                for h, v in zip(hashes, vecs, strict=True):
                    cs.merge(CachedEmbedding(model=embedder.name, text_sha256=h, vector=v.astype(np.float32).tobytes()))
            cached.update({h: v.astype(np.float32).tobytes() for h, v in zip(hashes, vecs, strict=True)})
        return cached
