"""The FAISS index: an 'auto' index turns from exact into IVF past its threshold and keeps every
operation the writer needs (ids, add, remove, reconstruct, save/load with checksum), with high recall."""

from __future__ import annotations

import numpy as np

from kb.settings import IndexSettings
from kb.vector_index import FaissIndex

DIM = 64


def clustered(n: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.standard_normal((40, DIM)).astype(np.float32)
    x = centres[rng.integers(0, 40, n)] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_auto_index_becomes_ivf_and_keeps_every_operation(tmp_path):
    rng = np.random.default_rng(0)
    v = clustered(12_000, rng)
    ids = np.arange(1_000, 13_000, dtype=np.int64)
    identity = {"embedding_model": "test", "dimension": DIM, "normalized": True, "index_type": "auto"}
    cfg = IndexSettings(auto_ivf_above=5_000, ivf_nprobe=16)
    index = FaissIndex(tmp_path, identity, cfg)
    index.add(ids[:5_000], v[:5_000])
    assert index.kind == "flat"  # exact while small
    index.add(ids[5_000:], v[5_000:])
    assert index.kind == "ivf" and index.count == 12_000
    assert set(index.ids().tolist()) == set(ids.tolist())

    index.remove([1_000, 1_001, 12_999])
    assert index.count == 11_997 and not {1_000, 1_001, 12_999} & set(index.ids().tolist())
    assert np.allclose(index.reconstruct([1_002, 12_000]), v[[2, 11_000]])
    index.save()
    loaded = FaissIndex(tmp_path, identity, cfg)  # checksum verified, direct map rebuilt
    assert loaded.kind == "ivf" and loaded.count == 11_997
    assert np.allclose(loaded.reconstruct([1_002]), v[[2]])

    keep = np.array([i for i in range(12_000) if ids[i] not in (1_000, 1_001, 12_999)])
    queries = v[rng.choice(keep, 100, replace=False)] + 0.05 * rng.standard_normal((100, DIM)).astype(np.float32)
    _, got = loaded.search(queries, 10)
    exact = ids[keep][np.argsort(-(queries @ v[keep].T), axis=1)[:, :10]]
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(got, exact, strict=True)])
    assert recall >= 0.9


def test_flat_index_stays_exact(tmp_path):
    rng = np.random.default_rng(1)
    v = clustered(3_000, rng)
    identity = {"embedding_model": "test", "dimension": DIM, "normalized": True, "index_type": "flat"}
    index = FaissIndex(tmp_path, identity, IndexSettings(type="flat", auto_ivf_above=100))
    index.add(np.arange(3_000, dtype=np.int64), v)
    assert index.kind == "flat"
    assert np.allclose(index.reconstruct([5, 2_999, 7]), v[[5, 2_999, 7]])  # the vectorised copy keeps order
    _, got = index.search(v[:20], 1)
    assert got[:, 0].tolist() == list(range(20))


def test_hnsw_removal_rebuilds_the_graph_without_the_removed_ids(tmp_path):
    rng = np.random.default_rng(2)
    v = clustered(2_000, rng)
    identity = {"embedding_model": "test", "dimension": DIM, "normalized": True, "index_type": "hnsw"}
    index = FaissIndex(tmp_path, identity, IndexSettings(type="hnsw"))
    index.add(np.arange(2_000, dtype=np.int64), v)
    index.remove([0, 1, 2])
    assert index.kind == "hnsw" and index.count == 1_997 and not {0, 1, 2} & set(index.ids().tolist())
    _, got = index.search(v[:3], 5)
    assert not {0, 1, 2} & set(got.ravel().tolist())  # removed vectors are never returned
    _, got = index.search(v[10:13], 1)
    assert got[:, 0].tolist() == [10, 11, 12]  # the rest are still found


def test_a_missing_optional_package_names_its_extra(monkeypatch):
    import sys

    import pytest

    from kb.errors import MissingDependencyError
    from kb.optional import require

    with monkeypatch.context() as m:
        m.setitem(sys.modules, "peft", None)  # Python's own way to make an import fail
        with pytest.raises(MissingDependencyError, match=r"pip install 'kb\[lora\]'"):
            require("peft", "lora")
    assert require("json", "none").dumps([1]) == "[1]"
