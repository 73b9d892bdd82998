"""A collection's history in the catalogue: its last ingest run and its evaluations (`kb eval`), for
`kb status` and the status page."""

from __future__ import annotations

from sqlalchemy import select

from kb.catalogue import Catalogue, Evaluation, IngestRun, iso


def record_evaluation(catalogue: Catalogue, collection: str, metrics: dict, qa_file: str, corpus: str | None) -> None:
    with catalogue.session() as s:
        col = catalogue.collection(s, collection)
        s.add(Evaluation(collection_id=col.id, qa_file=qa_file, corpus=corpus, metrics=metrics))


def history(catalogue: Catalogue, collection: str) -> tuple[dict | None, dict | None]:
    """The collection's last ingest run and last evaluation (None when there is none)."""
    with catalogue.session() as s:
        col = catalogue.collection(s, collection, create=False)
        if col is None:
            return None, None
        run = s.scalar(select(IngestRun).where(IngestRun.collection_id == col.id).order_by(IngestRun.id.desc()).limit(1))
        ev = s.scalar(select(Evaluation).where(Evaluation.collection_id == col.id)
                      .order_by(Evaluation.id.desc()).limit(1))
        last_run = None if run is None else {
            "command": run.command, "started_at": iso(run.started_at), "finished": run.finished_at is not None,
            "seconds": run.seconds, "counts": run.counts}
        last_evaluation = None if ev is None else {
            "finished_at": iso(ev.finished_at), "qa_file": ev.qa_file, "corpus": ev.corpus,
            **{k: v for k, v in ev.metrics.items() if k != "latency"}}
        return last_run, last_evaluation
