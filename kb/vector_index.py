"""The FAISS index of one collection: ids and vectors only, saved atomically beside a manifest.

The manifest records what the vectors mean (embedding model, dimension, normalisation, chunker
settings, index type); opening with other settings is an IndexMismatchError, never silent garbage.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from kb.device import faiss_gpu_count
from kb.errors import IndexMismatchError, VectorIndexError

FORMAT_VERSION = 1
# Keys whose change makes every stored vector meaningless.
IDENTITY_KEYS = ("embedding_model", "dimension", "normalized", "chunking", "index_type")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class FaissIndex:
    """An `IndexIDMap2` over a flat inner-product index (exact) or HNSW (approximate)."""

    def __init__(self, directory: Path, identity: dict[str, Any], hnsw_m: int = 32, ef_search: int = 128):
        self.directory = Path(directory)
        self.identity = identity
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.index_path = self.directory / "index.faiss"
        self.manifest_path = self.directory / "manifest.json"
        self._gpu_index = None
        self.index = self._load_or_create()

    # -- lifecycle -------------------------------------------------------------------------
    def _new(self) -> faiss.Index:
        dim = int(self.identity["dimension"])
        if self.identity["index_type"] == "hnsw":
            inner = faiss.IndexHNSWFlat(dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = 80
        else:
            inner = faiss.IndexFlatIP(dim)
        return faiss.IndexIDMap2(inner)

    def read_manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.exists():
            return None
        return json.loads(self.manifest_path.read_text())

    def _load_or_create(self) -> faiss.Index:
        manifest = self.read_manifest()
        if manifest is not None:
            diffs = {
                k: (manifest.get(k), self.identity.get(k))
                for k in IDENTITY_KEYS
                if manifest.get(k) != self.identity.get(k)
            }
            if diffs:
                lines = "; ".join(f"{k}: index has {a!r}, settings say {b!r}" for k, (a, b) in diffs.items())
                raise IndexMismatchError(
                    f"the index in {self.directory} was built with other settings ({lines}). "
                    "Run `kb reindex --full` to rebuild it with the current settings."
                )
        if not self.index_path.exists():
            return self._new()
        try:
            index = faiss.read_index(str(self.index_path))
        except RuntimeError as exc:
            raise VectorIndexError(f"cannot read {self.index_path}: {exc}; run `kb reindex --full`") from exc
        if index.d != int(self.identity["dimension"]):
            raise IndexMismatchError(
                f"the index has dimension {index.d}, the model {self.identity['dimension']}; run `kb reindex --full`"
            )
        return index

    def save(self) -> None:
        """Write the index to a temp file, fsync, rename; then the manifest the same way."""
        self.directory.mkdir(parents=True, exist_ok=True)
        data = faiss.serialize_index(self.index).tobytes()
        _atomic_write(self.index_path, data)
        manifest = dict(self.identity)
        manifest.update(
            format_version=FORMAT_VERSION,
            count=int(self.index.ntotal),
            index_bytes=len(data),
            checksum=hashlib.sha256(data).hexdigest(),
        )
        _atomic_write(self.manifest_path, json.dumps(manifest, indent=2, sort_keys=True).encode())

    def drop(self) -> None:
        """Forget everything (for a full rebuild); files are replaced at the next save."""
        for p in (self.index_path, self.manifest_path):
            p.unlink(missing_ok=True)
        self.index = self._new()
        self._gpu_index = None

    # -- content ---------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))
        self._gpu_index = None

    def remove(self, ids: list[int] | np.ndarray) -> None:
        ids = np.asarray(list(ids), dtype=np.int64)
        if len(ids) == 0:
            return
        if self.identity["index_type"] == "hnsw":
            self._rebuild_without(set(ids.tolist()))  # HNSW graphs cannot delete in place
        else:
            self.index.remove_ids(faiss.IDSelectorBatch(ids))
        self._gpu_index = None

    def _rebuild_without(self, drop: set[int]) -> None:
        keep = [i for i in self.ids().tolist() if i not in drop]
        vectors = self.reconstruct(keep)
        self.index = self._new()
        self.add(np.asarray(keep, dtype=np.int64), vectors)

    def reconstruct(self, ids: list[int]) -> np.ndarray:
        dim = int(self.identity["dimension"])
        if not ids:
            return np.zeros((0, dim), dtype=np.float32)
        return np.vstack([self.index.reconstruct(int(i)) for i in ids]).astype(np.float32)

    # -- search ----------------------------------------------------------------------------
    def _searchable(self) -> faiss.Index:
        if self.identity["index_type"] == "hnsw":
            faiss.downcast_index(self.index.index).hnsw.efSearch = self.ef_search
        # Only move to GPU when FAISS sees one: on a CPU machine faiss-gpu silently returns an empty index.
        if self.identity["index_type"] == "flat" and self.count and faiss_gpu_count() > 0:
            if self._gpu_index is None:
                self._gpu_index = faiss.index_cpu_to_all_gpus(self.index)
            return self._gpu_index
        return self.index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and ids, best first; missing slots have id -1."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if self.count == 0:
            return np.zeros((len(q), 0), dtype=np.float32), np.zeros((len(q), 0), dtype=np.int64)
        return self._searchable().search(q, min(k, self.count))
