"""Home: the process-wide parts of one data home, made once and shared by every collection and caller.

The catalogue's engine and pool, access control, the job queue, the query log's writer thread, the
loaded models and each collection's indexes belong to the home, not to a collection: a process serving
ten collections to a hundred callers holds one of each. `home.collection(name)` is a cheap view (a
KnowledgeBase) over them, and `.for_caller(identity)` a cheaper one.

With kb/knowledge_base.py, the only module of `kb/` that wires `ingest` and `retrieval` in.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ingest.chunking import chunker_identity
from ingest.upkeep import Upkeep
from ingest.extraction_worker import POOL, Extractor
from ingest.writing import Writes
from kb import document_lookup, query_log
from kb.access import AccessControl
from kb.catalogue import Catalogue
from kb.conversations import Conversations
from kb.embeddings import Embedder, english_embedder, make_embedder
from kb.index_store import IndexStore
from kb.jobs import JobQueue
from kb.keyword_index import ENGINE_ID
from kb.locking import writer_died
from kb.private_home import make_private
from kb.settings import Settings
from kb.status import refuse_damaged_catalogue
from retrieval.rerank import make_reranker

if TYPE_CHECKING:
    from kb.knowledge_base import KnowledgeBase


class once:  # noqa: N801 - used as a decorator, like functools.cached_property
    """A part made on first use, exactly once even when many threads ask at the same moment (a second
    engine or model load would be waste, a second query-log thread a leak)."""

    def __init__(self, make):  # noqa: ANN001 - the method that makes the part
        self.make, self.name, self.lock = make, make.__name__, threading.Lock()
        self.__doc__ = make.__doc__

    def __get__(self, home, owner=None):  # noqa: ANN001, ANN204
        if home is None:
            return self
        try:
            return home.__dict__[self.name]
        except KeyError:
            with self.lock:
                if self.name not in home.__dict__:
                    home.__dict__[self.name] = self.make(home)
                return home.__dict__[self.name]


class Home:
    def __init__(self, settings: Settings | None = None, home: str | Path | None = None, extractor: Extractor = POOL):
        settings = settings or Settings()
        if home is not None:
            settings = settings.model_copy(update={"home": Path(home)})
        self.settings, self.extractor = settings, extractor  # extractor: how writers read files
        self.path = Path(settings.home)
        make_private(self.path)
        self.upkeep = Upkeep(lambda: self.writes)  # the repairs and catch-ups readers find are needed
        self.indexes = IndexStore(self.path, settings.index, self.index_identity, self.upkeep,
                                  lambda c: self.catalogue.last_change(c))

    def collection(self, name: str | None = None) -> KnowledgeBase:
        """The facade over one collection (the default one when unnamed), acting for the local operator."""
        from kb.knowledge_base import KnowledgeBase

        return KnowledgeBase(self, collection=name)

    def rebuild_catalogue(self, sources: dict[str, list[str]] | None = None, progress: bool = False,
                          force: bool = False) -> dict:
        """Replace a damaged SQLite catalogue (ingest/recovery.py): {collection: SyncReport}."""
        from ingest.recovery import rebuild_catalogue

        return rebuild_catalogue(self.settings, Home, sources, progress, force)

    def collection_names(self) -> list[str]:
        """Every collection the catalogue holds, and the default one (which always exists)."""
        return sorted(set(document_lookup.collection_names(self.catalogue)) | {self.settings.collection})

    # -- the parts ------------------------------------------------------------------------------
    @once
    def catalogue(self) -> Catalogue:
        s = self.settings
        catalogue = Catalogue(s.catalogue_url, s.database_connect_timeout_s, s.database_statement_timeout_s)
        if writer_died(self.path):  # the last writer was killed mid-way: check before anyone reads
            refuse_damaged_catalogue(catalogue, self.settings)
        return catalogue

    @once
    def access(self) -> AccessControl:
        return AccessControl(self.catalogue)

    @once
    def conversations(self) -> Conversations:
        return Conversations(self.catalogue)

    @once
    def jobs(self) -> JobQueue:
        return JobQueue(self.catalogue)

    @once
    def query_log(self) -> query_log.QueryLogWriter:
        return query_log.QueryLogWriter(self.catalogue)

    @once
    def embedder(self) -> Embedder:
        return make_embedder(self.settings.embedding)

    def english(self) -> Embedder | None:
        """The second, English-only model (None when off or failed to load)."""
        return english_embedder(self.settings.embedding, self.embedder)

    @once
    def reranker(self):  # noqa: ANN201 - a sentence-transformers CrossEncoder, or None
        return make_reranker(self.settings.retrieval.reranker, self.settings.embedding.device)

    @once
    def writes(self) -> Writes:
        return Writes(self.settings, self.catalogue, self.embedder, self.indexes, self.extractor)

    def index_identity(self) -> dict:
        """What an index was built with; a difference from the running settings needs `reindex --full`."""
        return {"embedding_model": self.embedder.name, "dimension": self.embedder.dimension, "normalized": True,
                "chunking": chunker_identity(self.settings.chunking), "keyword_index": ENGINE_ID,
                "index_type": self.settings.index.type}
