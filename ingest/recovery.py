"""`kb rebuild-catalogue`: a damaged SQLite catalogue replaced by re-indexing every collection's
recorded folders (the indexes' ids belong to the old catalogue, so they are dropped too). Reached
through the facade (`Home.rebuild_catalogue`)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ingest.pipeline import SyncReport
from kb.catalogue import Catalogue
from kb.errors import CatalogueError, ConfigError
from kb.locking import writer_lock
from kb.document_lookup import REBUILD_PREFIX
from kb.settings import Settings

if TYPE_CHECKING:
    from kb.home import Home


def rebuild_catalogue(settings: Settings, make_home: Callable[[Settings], Home],
                      sources: dict[str, list[str]] | None = None, progress: bool = False,
                      force: bool = False) -> dict[str, SyncReport]:
    """Replace a damaged SQLite catalogue: the file is kept aside, every collection's index is dropped
    (its ids belong to the old catalogue) and each collection is re-indexed from its recorded folders
    (`sources.json` beside its index, plus its uploads) or from `sources` {collection: [paths]}."""
    home = Path(settings.home)
    db = home / "catalogue.sqlite3"
    if settings.database_url:
        raise ConfigError("kb rebuild-catalogue rebuilds the embedded SQLite catalogue only; restore your "
                          "database server's catalogue from its backup")
    if not force and db.exists():
        try:
            existing = Catalogue(settings.catalogue_url)
            problems = existing.check()
            existing.engine.dispose()
        except CatalogueError as exc:
            problems = [str(exc)]
        if not problems:
            raise ConfigError(f"the catalogue {db} passes its integrity check; rebuilding it would drop the query "
                              "log, evaluations and embedding cache. Add --force to rebuild it anyway.")
    reports: dict[str, SyncReport] = {}
    with writer_lock(home, settings.ingest.lock_timeout_s):
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            f = Path(str(db) + suffix)
            if f.exists():
                f.replace(Path(f"{db}.damaged-{stamp}{suffix}"))
        wanted = dict(sources or {})
        for d in sorted((home / "collections").glob("*")):
            if d.name.startswith(REBUILD_PREFIX):
                shutil.rmtree(d, ignore_errors=True)
                continue
            for name in ("index.faiss", "manifest.json", "keywords.pending.json"):
                (d / name).unlink(missing_ok=True)
            shutil.rmtree(d / "keywords", ignore_errors=True)
            if d.name not in wanted and (d / "sources.json").exists():
                wanted[d.name] = json.loads((d / "sources.json").read_text())["roots"]
        for d in sorted((home / "uploads").glob("*")):
            wanted.setdefault(d.name, []).append(str(d.resolve()))
    fresh = make_home(settings)  # the new catalogue, shared by every collection's re-index
    for name, roots in wanted.items():
        roots = [r for r in dict.fromkeys(roots) if Path(r).exists()]
        if roots:
            reports[name] = fresh.collection(name).sync(roots, progress=progress)
    return reports
