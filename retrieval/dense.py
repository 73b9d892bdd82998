"""Dense retrieval: the question's embedding against a collection's FAISS index."""

from __future__ import annotations

import numpy as np

from kb.vector_index import FaissIndex


def dense_search(query_vector: np.ndarray, index: FaissIndex, k: int,
                 restrict_to: list[int] | None = None) -> list[tuple[int, float]]:
    """(chunk id, cosine) best first. With `restrict_to` (a document filter) score exactly those chunks."""
    if restrict_to is not None:
        restrict_to = index.holding(restrict_to)
        if not restrict_to:
            return []
        vectors = index.reconstruct(restrict_to)
        sims = vectors @ query_vector.reshape(-1)
        order = np.argsort(-sims, kind="stable")[:k]
        return [(int(restrict_to[i]), float(sims[i])) for i in order]
    scores, ids = index.search(query_vector.reshape(1, -1), k)
    return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
