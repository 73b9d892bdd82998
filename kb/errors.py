"""The KBError hierarchy: one root, one subclass per subsystem; only `app/` turns them into messages."""


class KBError(Exception):
    """Root of every error kb raises on purpose."""


class ConfigError(KBError):
    """Settings are invalid or disagree with what is on disk."""


class IndexMismatchError(ConfigError):
    """The index on disk was built with other settings (model, chunker, index type)."""


class MissingDependencyError(ConfigError):
    """An optional package is not installed; the message names the extra to install."""


class ExtractionError(KBError):
    """A file could not be turned into text (corrupt, encrypted, empty, unsupported). `reason` is the
    failure's code (kept in the catalogue); `limit` the setting it hit and that setting's value then
    (e.g. ("file_timeout_s", 120.0)): raising the setting past it makes the file worth reading again."""

    def __init__(self, reason: str, detail: str = "", limit: tuple[str, float] | None = None):
        self.reason = reason
        self.detail = detail
        self.limit = limit
        super().__init__(f"{reason}: {detail}" if detail else reason)


class EmbeddingError(KBError):
    """The embedding model could not be loaded or failed on input."""


class VectorIndexError(KBError):
    """The vector index is unreadable or inconsistent beyond repair."""


class IndexCorruptError(VectorIndexError):
    """The index file or its manifest is damaged (bad checksum, truncated, unreadable): rebuilt from the catalogue."""


class CatalogueError(KBError):
    """The SQL catalogue is damaged or unreadable; the message says how to restore or rebuild it."""


class Unavailable(KBError):
    """Something kb needs is out of reach for now (the database, disk space): nothing was lost, and the
    same request succeeds once it is back. The CLI exits 3; the API answers 503 with Retry-After."""


class CatalogueUnavailable(Unavailable):
    """The catalogue's database cannot be reached or did not answer in time."""


class DiskFull(Unavailable):
    """No space left for the catalogue or an index; nothing half-written was kept."""


class LockedError(KBError):
    """Another writer holds the knowledge base lock."""


class NotFoundError(KBError):
    """A document or collection does not exist."""


class GeneratorError(KBError):
    """The language model could not be loaded, reached, or answered something unusable."""


class AuthError(KBError):
    """No valid credentials (missing or bad token, wrong password, too many attempts)."""


class PermissionDeniedError(KBError):
    """The caller is known but may not do this to this collection."""
