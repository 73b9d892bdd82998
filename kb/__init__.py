"""kb foundations: settings, errors, catalogue, embeddings, vector index, device detection.

The facade lives in `kb.knowledge_base` (the one module here that imports `ingest` and `retrieval`).
"""

__version__ = "0.1.0"
