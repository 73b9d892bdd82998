"""kb foundations: settings, errors, catalogue, embeddings, vector index, device detection.

The facade lives in `kb.knowledge_base` (the one module here that imports `ingest` and `retrieval`).
"""

import os

__version__ = "0.1.0"

# Nothing is downloaded at run time: Hugging Face libraries read only their local cache (set before
# they are imported; a user who wants the hub sets HF_HUB_OFFLINE=0).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
