"""The CI sample of real odd and broken documents (pypdf's and python-docx's own test files, fetched
from PyPI by tests/real_world_files.py): one batch accounts for every file — indexed, or failed with a
reason a person can act on, or skipped as not a document — with no traceback, and leaves the index and
the catalogue consistent. bench/hostile.py runs the whole corpus."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kb.knowledge_base import KnowledgeBase
from tests.conftest import consistent
from tests.real_world_files import fetch

REASONS = ("encrypted", "corrupt", "empty file", "no extractable text", "too large", "timed out", "reader stopped")


@pytest.mark.slow  # 116 real files through the worker, chunked and embedded
def test_every_real_world_file_is_accounted_for(settings, tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    sample = [f for f in fetch() if f.stat().st_size <= 400_000]  # the small ones: seconds, not minutes, to embed
    for f in sample:
        shutil.copy(f, folder / f"{f.parent.name}__{f.name}")
    assert len(sample) >= 80 and {f.suffix for f in sample} == {".pdf", ".docx"}

    report = KnowledgeBase(settings=settings).sync([folder])

    indexed = {Path(p).name for p in report.added}
    failed = {Path(p).name: r for p, r in report.failed}
    assert indexed.isdisjoint(failed) and len(indexed) + len(failed) == len(sample), report.skipped
    assert all(r.startswith(REASONS) and "Traceback" not in r for r in failed.values()), failed
    assert not any(r.startswith("reader stopped") for r in failed.values()), failed  # no worker crashed
    assert any(r.startswith("encrypted") for r in failed.values())  # pypdf's encryption samples
    assert len(indexed) > len(sample) / 2
    documents, chunks = consistent(KnowledgeBase(settings=settings))
    assert documents == len(sample) and chunks == report.chunks_added > 0
