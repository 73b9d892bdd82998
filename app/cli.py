"""The `kb` command: parse arguments, call one KnowledgeBase method, render. Exit 0 ok, 1 files failed,
2 usage/config, 3 the catalogue's database or disk space out of reach for now."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import logging.handlers
import os
import shutil
import sys
from pathlib import Path

from kb.access import GRANT_LEVELS
from kb.errors import CatalogueError, ConfigError, KBError, LockedError, NotFoundError, Unavailable
from kb.private_home import make_private
from kb.settings import Settings
from retrieval.generators import GENERATORS


def _parser() -> argparse.ArgumentParser:
    # The global options are accepted before or after the subcommand (`kb --home H eval …` and
    # `kb eval … --home H`); after it, SUPPRESS keeps an absent option from overwriting one given before.
    p = argparse.ArgumentParser(prog="kb", description="Enterprise knowledge base: index folders, ask questions.")
    common = argparse.ArgumentParser(add_help=False)
    for parser, default in ((p, None), (common, argparse.SUPPRESS)):
        parser.add_argument("--home", default=default, help="data home (env KB_HOME, default indexes/)")
        parser.add_argument("--collection", default=default,
                            help="collection name (default: 'default'); search and ask also take A,B or all")
        parser.add_argument("-v", "--verbose", action="store_true", default=default or False,
                            help="also print kb's info messages and the libraries' warnings (always in HOME/kb.log)")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("reindex", parents=[common], help="make the index match folders: add new, update changed, remove deleted")
    r.add_argument("paths", nargs="*", help="files or folders (default: those of the previous reindex)")
    r.add_argument("--full", action="store_true", help="rebuild everything (after changing model or chunking)")
    r.add_argument("--retry-failed", action="store_true",
                   help="read again files that failed before and did not change (normally skipped)")
    r.add_argument("--json", action="store_true")

    i = sub.add_parser("ingest", parents=[common], help="add or update files/folders without removing others")
    i.add_argument("paths", nargs="+")
    i.add_argument("--retry-failed", action="store_true", help="read again files that failed before, unchanged")
    i.add_argument("--json", action="store_true")

    rm = sub.add_parser("remove", parents=[common], help="remove a document (id, path or file name)")
    rm.add_argument("doc")

    se = sub.add_parser("search", parents=[common], help="ranked contexts for a question: rank, source, page, score, chunk id, text")
    se.add_argument("question", nargs="?")
    se.add_argument("--queries", type=Path, help='batch: a JSONL file of {"id", "question"}; writes one JSONL row each')
    se.add_argument("--top-k", type=int, help="contexts returned (default: settings, 3)")
    se.add_argument("--document", action="append", help="only these documents (id, path or file name); repeatable")
    se.add_argument("--json", action="store_true")

    a = sub.add_parser("ask", parents=[common], help="answer a question from the documents, with cited sources and pages")
    a.add_argument("question")
    a.add_argument("--backend", choices=sorted(GENERATORS),
                   help="answer generator (default: transformers on a GPU with a local model, else extractive)")
    a.add_argument("--top-k", type=int, help="contexts given to the generator (default 3)")
    a.add_argument("--document", action="append", help="only these documents (id, path or file name); repeatable")
    a.add_argument("--show-reasoning", action="store_true", help="also print the model's <think> reasoning")
    a.add_argument("--json", action="store_true")

    ev = sub.add_parser("eval", parents=[common], help="measure retrieval (recall@k, MRR, nDCG) and answers on a QA set")
    ev.add_argument("qa", type=Path, help='JSONL of {"id", "question", "answer", "source"}')
    ev.add_argument("--corpus", type=Path, help="documents to index first (into a temporary home unless --home)")
    ev.add_argument("--backend", choices=sorted(GENERATORS),
                    help="also answer each question and score the answers")
    ev.add_argument("--answers", type=int, help="answer only the first N questions")
    ev.add_argument("--results", type=Path, help="write the retrieved contexts as score.py results JSONL")
    ev.add_argument("--json", action="store_true")

    u = sub.add_parser("ui", parents=[common], help="start the web UI (Streamlit) on http://localhost:8501")
    u.add_argument("--port", type=int, default=8501)
    u.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: this machine only; 0.0.0.0 opens it to the network)")

    sv = sub.add_parser("serve", parents=[common], help="start the HTTP API (REST + OpenAI-compatible) with a job worker")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--workers", type=int, default=1, help="server processes (each also runs queued jobs)")
    sv.add_argument("--no-jobs", action="store_true", help="run no jobs here (a separate `kb worker` does)")

    w = sub.add_parser("worker", parents=[common], help="run queued upload/re-index jobs (for deployments)")
    w.add_argument("--once", action="store_true", help="run the jobs waiting now, then exit")

    us = sub.add_parser("user", parents=[common], help="users who may sign in to the web page and the API")
    us.add_argument("action", choices=["add", "list", "remove", "passwd"])
    us.add_argument("name", nargs="?")
    us.add_argument("--password", help="(add, passwd) prompted when omitted")
    us.add_argument("--admin", action="store_true", help="(add) may manage users, grants and every collection")
    gr = sub.add_parser("group", parents=[common], help="groups of users: add, remove, list, member, unmember")
    gr.add_argument("action", choices=["add", "remove", "list", "member", "unmember"])
    gr.add_argument("name", nargs="?")
    gr.add_argument("user", nargs="?", help="(member, unmember) the user")
    gt = sub.add_parser("grant", parents=[common], help="give a user or group read/write/admin on a collection, or "
                        "deny it (none); prints the level it leaves")
    gt.add_argument("principal", help="user or group name (user:NAME / group:NAME when both exist)")
    gt.add_argument("target", metavar="COLLECTION", help="collection name, or * for every collection")
    gt.add_argument("level", choices=list(GRANT_LEVELS),
                    help="none: a deny that wins over every other grant reaching the same users (groups and *)")
    rv = sub.add_parser("revoke", parents=[common], help="remove a grant (or a deny) of a user or group on a collection")
    rv.add_argument("principal", help="user or group name (user:NAME / group:NAME when both exist)")
    rv.add_argument("target", metavar="COLLECTION", help="collection name, or *")
    tk = sub.add_parser("token", parents=[common], help="API tokens: create USER (printed once) | revoke TOKEN")
    tk.add_argument("action", choices=["create", "revoke"])
    tk.add_argument("value", help="the user (create) or the token or its first 10 characters (revoke)")
    au = sub.add_parser("audit", parents=[common], help="who asked, uploaded, deleted or re-indexed what (JSONL)")
    au.add_argument("--limit", type=int, default=1000)
    au.add_argument("--user", help="only this user's entries")

    st = sub.add_parser("status", parents=[common], help="documents, chunks, failures, model, index")
    st.add_argument("--check", action="store_true",
                    help="also check the catalogue's and the index's integrity (exit 1 when damaged)")
    st.add_argument("--json", action="store_true")

    rc = sub.add_parser("rebuild-catalogue", parents=[common], help="replace a damaged catalogue: re-index every collection "
                                                  "from its recorded folders (the damaged file is kept aside)")
    rc.add_argument("paths", nargs="*", help="folders of --collection (default: the folders it was synced from)")
    rc.add_argument("--force", action="store_true", help="rebuild even a catalogue that passes its integrity check")
    rc.add_argument("--json", action="store_true")
    return p


def _shown(path: str) -> str:
    """A path on one line: names holding a newline or other control characters are quoted."""
    return path if path.isprintable() else json.dumps(path, ensure_ascii=False)


def _configure_logging(home: Path, verbose: bool) -> None:
    """kb's own warnings go to stderr; libraries' warnings (pypdf writes thousands of lines on broken
    PDFs) only to HOME/kb.log, unless --verbose."""
    logging.captureWarnings(True)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    err = logging.StreamHandler()
    err.setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:
        err.addFilter(lambda r: r.name.split(".")[0] in ("kb", "ingest", "retrieval", "app"))
    err.setFormatter(logging.Formatter("%(name)s: %(message)s" if verbose else "kb: %(message)s"))
    root.addHandler(err)
    try:
        make_private(home)  # before the log file is made: it is private too
        file = logging.handlers.RotatingFileHandler(home / "kb.log", maxBytes=5_000_000, backupCount=2,
                                                    encoding="utf-8")
        file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(file)
    except OSError:
        pass  # a read-only home still answers questions


def _print_report(report, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
        return
    c = report.counts()
    print(
        f"added {c['added']} · updated {c['updated']} · removed {c['removed']} · unchanged {c['unchanged']} · "
        f"failed {c['failed'] + c['still_failed']}  |  chunks +{c['chunks_added']} -{c['chunks_removed']} · "
        f"embedded {c['embedded']} · reused {c['reused_embeddings']} · {report.seconds:.1f}s"
    )
    for label, paths in (("added", report.added), ("updated", report.updated), ("removed", report.removed)):
        for p in paths:
            print(f"  {label:8} {_shown(p)}")
    for p, reason in report.failed:
        print(f"  FAILED   {_shown(p)}: {reason}")
    for p, reason in report.still_failed:
        print(f"  FAILED   {_shown(p)}: {reason} (unchanged since; not read again, --retry-failed forces it)")
    for p, reason in report.skipped:
        print(f"  skipped  {_shown(p)}: {reason}")
    if any(report.repaired.values()):
        print(f"  repaired after an interrupted run or a damaged index: {report.repaired}")


def _print_contexts(contexts, as_json: bool) -> None:
    rows = [{"rank": r, "source": c.source, "page": c.page, "heading": c.heading, "score": round(c.score, 4),
             "chunk_id": c.chunk_id, "text": c.text, "ocr": c.ocr} for r, c in enumerate(contexts, 1)]
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not rows:
        print("nothing relevant found (is the collection indexed? see `kb status`)")
    for r in rows:
        where = f"{Path(r['source']).name}" + (f", page {r['page']}" if r["page"] else "") + (" (read by OCR)" if r["ocr"] else "")
        print(f"[{r['rank']}] {where}  score {r['score']:.3f}  chunk {r['chunk_id']}")
        if r["heading"]:
            print(f"    § {r['heading']}")
        print("    " + r["text"][:400].replace("\n", "\n    "))


def _context_json(c) -> dict:  # noqa: ANN001 - retrieval.retriever.Context
    return {"source": c.source, "page": c.page, "text": c.text, "score": round(c.score, 5), "chunk_id": c.chunk_id}


def _search_batch(kb, queries: Path, top_k: int | None, documents: list[str] | None) -> int:  # noqa: ANN001
    """One JSON row per question, the models loaded once; a bad line is reported with its number."""
    for n, line in enumerate(queries.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            q = json.loads(line)
            qid, question = q["id"], q["question"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            print(f"kb: {queries}:{n}: expected {{\"id\", \"question\"}} ({exc})", file=sys.stderr)
            return 2
        contexts = kb.search(question, top_k, documents)
        print(json.dumps({"id": qid, "contexts": [_context_json(c) for c in contexts]}, ensure_ascii=False), flush=True)
    return 0


def _ask(kb, args) -> int:  # noqa: ANN001
    from retrieval.answer import cite_label

    stream = kb.ask_stream(args.question, args.backend, args.top_k, args.document)
    if args.json:
        answer = stream.result()
        print(json.dumps(answer.to_dict(), ensure_ascii=False, indent=2))
        return 0
    if stream.retrieval.relevant:
        print(f"({stream.label})")
    for piece in stream:
        print(piece, end="", flush=True)
    print()
    answer = stream.answer
    if args.show_reasoning and answer.reasoning:
        print("\nreasoning:\n  " + answer.reasoning.replace("\n", "\n  "))
    if answer.citations:
        print("\nsources:")
        for c in answer.citations:
            print(f"  [{c.n}] {cite_label(c)}  (chunk {c.chunk_id}{', read by OCR' if c.ocr else ''})")
    for sent in answer.unsupported:
        print(f"  ! not supported by its cited source: {sent}")
    print("time: " + " · ".join(f"{k} {v * 1000:.0f} ms" for k, v in answer.timings.items()))
    return 0


def _eval(settings: Settings, args, progress: bool) -> int:  # noqa: ANN001
    """Index the corpus (temporary home unless --home), evaluate, store the result where `kb ui` shows it."""
    import tempfile

    from kb.knowledge_base import KnowledgeBase

    if not args.qa.is_file() or (args.corpus and not args.corpus.exists()):
        print(f"kb: no such file or folder: {args.qa if not args.qa.is_file() else args.corpus}", file=sys.stderr)
        return 2
    target = KnowledgeBase(home=args.home, settings=settings, collection=args.collection)
    with tempfile.TemporaryDirectory(prefix="kb-eval-") as tmp:
        kb = target if args.home or not args.corpus else KnowledgeBase(home=tmp, settings=settings,
                                                                       collection=args.collection)
        if args.corpus:
            report = kb.sync([args.corpus], progress=progress)
            if not args.json:
                print(f"indexed {args.corpus}: {report.counts()['added']} added, {report.counts()['unchanged']} "
                      f"unchanged, {kb.catalogue.counts(kb.collection)['chunks']} chunks, {report.seconds:.1f}s",
                      file=sys.stderr)
        report = kb.evaluate(args.qa, args.backend, args.answers, args.results, progress)
    target.record_evaluation(report, str(args.qa.resolve()), str(args.corpus.resolve()) if args.corpus else None)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
        return 0
    print(f"{report.questions} questions · {report.chunks} chunks of {report.chunk_tokens} tokens · "
          f"contexts cut at {report.context_chars} chars")
    print("  " + "  ".join(f"{k} {v:.3f}" for k, v in report.retrieval.items()))
    print(f"  {report.queries_per_s} queries/s; latency p50/p95 ms: " + ", ".join(
        f"{k} {v['p50_ms']:.1f}/{v['p95_ms']:.1f}" for k, v in report.latency.items()))
    if report.answers:
        a = report.answers
        print(f"  answers ({a['backend']}, {a['questions']} questions): citation precision "
              f"{a['citation_precision']:.3f}, answer support {a['answer_support']:.3f}, ROUGE-L {a['rouge_l']:.3f}")
    return 0


def _print_status(st, as_json: bool) -> None:  # noqa: ANN001 - kb.status.Status
    if as_json:
        print(json.dumps(st.to_dict(), ensure_ascii=False, indent=2))
        return
    print(f"home        {st.home}  (collection {st.collection!r}; all: {', '.join(st.collections) or '-'})")
    print(f"documents   {st.documents} ({st.indexed} indexed, {st.failed} failed)   chunks {st.chunks}")
    print(f"index       {st.index_type}, {st.index_vectors} vectors, {st.index_bytes / 1e6:.1f} MB; "
          f"keywords {st.keyword_entries}; "
          f"{'consistent' if st.consistent else 'INCONSISTENT (next reindex repairs it)'}")
    print(f"embedding   {st.embedding_model} (dim {st.dimension}) on {st.device['torch']}; "
          f"chunks of {st.chunking['chunk_tokens']} tokens")
    for f in st.failures:
        print(f"  FAILED {_shown(f['path'])}: {f['error']}")
    for part, problems in st.check.items():
        if part == "behind":
            print("check       index: behind the catalogue: " + "; ".join(problems))
        else:
            print(f"check       {part}: " + ("ok" if not problems else "DAMAGED: " + "; ".join(problems)))


def _ui(settings: Settings, args) -> int:  # noqa: ANN001
    """Run Streamlit on the app with this home and collection; the address is printed first."""
    import math
    import subprocess

    from kb.knowledge_base import KnowledgeBase

    app = Path(__file__).with_name("streamlit_app.py")
    home = Path(args.home or settings.home).resolve()
    if (password := KnowledgeBase(home=home, settings=settings).access.ensure_first_admin()) is not None:
        print(f"kb: sign in as 'admin' with password {password} (shown once; change it with "
              "`kb user passwd admin`, or set KB_ADMIN_PASSWORD before the first start)", flush=True)
    env = {**os.environ, "KB_HOME": str(home), "KB_COLLECTION": args.collection or settings.collection,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(app.parents[1]), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(args.port),
           "--server.address", args.host, "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal", "--server.maxUploadSize", str(max(1, math.ceil(settings.ingest.max_file_mb)))]
    print(f"kb: web UI for {home} at http://localhost:{args.port}", flush=True)
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 0


def _serve(settings: Settings, args) -> int:  # noqa: ANN001
    """uvicorn with the API; settings reach every server process through the environment."""

    import uvicorn

    from kb.knowledge_base import KnowledgeBase

    home = Path(args.home or settings.home).resolve()
    if (password := KnowledgeBase(home=home, settings=settings).access.ensure_first_admin()) is not None:
        print(f"kb: created the first admin user 'admin' with password {password} (shown once; change it "
              "with `kb user passwd admin`, or set KB_ADMIN_PASSWORD before the first start)", flush=True)
    os.environ["KB_HOME"] = str(home)
    os.environ["KB_COLLECTION"] = args.collection or settings.collection
    os.environ["KB_SERVE_JOBS"] = "0" if args.no_jobs else "1"
    if args.workers > 1:  # every server process's metrics in files, added up by whichever answers /metrics
        metrics = home / "run" / "metrics"
        shutil.rmtree(metrics, ignore_errors=True)  # a previous run's processes are gone
        metrics.mkdir(parents=True, mode=0o700)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    print(f"kb: API for {os.environ['KB_HOME']} at http://{args.host}:{args.port} (docs at /docs)", flush=True)
    uvicorn.run("app.api:app_from_environment", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level="warning")
    return 0


def _worker(settings: Settings, args) -> int:  # noqa: ANN001
    from app.worker import Worker

    if args.home:
        settings = settings.model_copy(update={"home": Path(args.home)})
    worker = Worker(settings)
    if args.once:
        while (job := worker.run_once()) is not None:
            print(f"job {job.id} ({job.kind}, {job.collection}): {job.status}" + (f": {job.error}" if job.error else ""))
        return 0
    print(f"kb: worker {worker.name} waiting for jobs in {settings.catalogue_url.split('@')[-1]}", flush=True)
    try:
        worker.run_forever()
    except KeyboardInterrupt:
        pass
    return 0


def _access(kb, args) -> int:  # noqa: ANN001, C901 - one branch per subcommand
    """kb user / group / grant / revoke / token / audit."""
    import getpass

    access = kb.access
    need = lambda: args.name or sys.exit("kb: give a name")  # noqa: E731
    if args.command == "user":
        if args.action == "list":
            for u in access.users():
                print(f"{u['name']}{' (admin)' if u['admin'] else ''}  groups: {', '.join(u['groups']) or '-'}")
        elif args.action == "remove":
            access.remove_user(need())
        else:
            password = args.password or getpass.getpass(f"password for {need()}: ")
            if len(password) < 8:
                print("kb: a password needs 8 characters or more", file=sys.stderr)
                return 2
            if args.action == "add":
                access.add_user(args.name, password, args.admin)
            else:
                access.set_password(args.name, password)
    elif args.command == "group":
        if args.action == "list":
            for g in access.groups():
                print(g)
        elif args.action in ("member", "unmember"):
            if not args.user:
                print("kb: give the group and the user", file=sys.stderr)
                return 2
            (access.add_member if args.action == "member" else access.remove_member)(need(), args.user)
        else:
            (access.add_group if args.action == "add" else access.remove_group)(need())
    elif args.command in ("grant", "revoke"):
        if args.command == "revoke":
            access.revoke(args.principal, args.target)
        else:
            access.grant(args.principal, args.target, args.level)
        access.audit("operator", args.command, args.target, principal=args.principal,
                     **({"level": args.level} if args.command == "grant" else {}))
        print(f"{args.principal} on {args.target!r} now: {access.effective(args.principal, args.target)}")
    elif args.command == "token":
        if args.action == "create":
            token = access.create_token(args.value)
            print(f"API token for {args.value} (shown once; send it as `Authorization: Bearer …`):")
            print(token)
        else:
            n = access.revoke_token(args.value)
            print(f"revoked {n} token(s)")
            return 0 if n else 1
    elif args.command == "audit":
        for row in access.audit_log(args.limit, args.user):
            print(json.dumps(row, ensure_ascii=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit 0 ok, 1 some files failed, 2 usage or configuration, 3 something needed is out of reach for
    now (the catalogue's database, disk space): the same command works once it is back."""
    try:
        return _main(argv)
    except Unavailable as exc:
        print(f"kb: {exc}", file=sys.stderr)
        return 3
    except KBError as exc:  # `kb ui/serve/worker` meeting a damaged catalogue or bad settings at start
        print(f"kb: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `kb search --json | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        print(f"kb: the disk is full ({exc.filename or 'writing'}); nothing half-written was kept. "
              "Free some space and run the command again", file=sys.stderr)
        return 3


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
    except Exception as exc:  # noqa: BLE001 - invalid env/toml values
        print(f"kb: configuration error: {exc}", file=sys.stderr)
        return 2
    from kb.home import Home
    from kb.knowledge_base import KnowledgeBase

    _configure_logging(Path(args.home or settings.home), args.verbose)
    if args.command == "ui":
        return _ui(settings, args)
    if args.command == "serve":
        return _serve(settings, args)
    if args.command == "worker":
        return _worker(settings, args)
    if args.command == "eval":
        try:
            return _eval(settings, args, sys.stderr.isatty())
        except Unavailable:
            raise
        except (ValueError, KBError) as exc:
            print(f"kb: {exc}", file=sys.stderr)
            return 2
    names = (args.collection or "").split(",")
    try:
        every = names == ["all"] and args.command in ("search", "ask")  # elsewhere `all` is a collection's name
        if len(names) > 1 and args.command not in ("search", "ask"):
            raise ConfigError(f"--collection {args.collection}: only search and ask read several collections")
        kb = KnowledgeBase(home=args.home, settings=settings, collection=None if every else names[0])
        if every or len(names) > 1:  # searched as one ranking
            kb = kb.reading(kb.house.collection_names() if every else names)
    except Unavailable:
        raise
    except KBError as exc:
        print(f"kb: {exc}", file=sys.stderr)
        return 2
    wait = lambda msg: print(f"kb: {msg}", file=sys.stderr)  # noqa: E731
    progress = sys.stderr.isatty()
    try:
        if args.command in ("reindex", "ingest"):
            paths = args.paths
            missing = [p for p in paths if not Path(p).exists()]
            if missing:
                print(f"kb: no such file or folder: {', '.join(missing)}", file=sys.stderr)
                return 2
            if args.command == "reindex":
                report = kb.sync(paths, full=args.full, progress=progress, on_wait=wait, retry_failed=args.retry_failed)
            else:
                report = kb.ingest(paths, progress=progress, on_wait=wait, retry_failed=args.retry_failed)
            _print_report(report, args.json)
            return 1 if report.failed or report.still_failed else 0
        if args.command == "remove":
            removed = kb.remove(args.doc, on_wait=wait)
            print(f"removed {removed[0]}")
            return 0
        if args.command == "search":
            if args.queries:
                return _search_batch(kb, args.queries, args.top_k, args.document)
            if not args.question:
                print("kb: give a question or --queries FILE.jsonl", file=sys.stderr)
                return 2
            r = kb.retrieve(args.question, args.top_k, args.document, record=True)
            for note in r.notes:  # what limited this search (a damaged part being rebuilt)
                print(f"kb: note: {note}", file=sys.stderr)
            _print_contexts(r.contexts if r.relevant else [], args.json)
            return 0
        if args.command == "ask":
            return _ask(kb, args)
        if args.command == "status":
            if args.check:  # before status, which would otherwise stop at the first damage it meets
                problems = kb.check()
                damaged = any(problems.get(part) for part in ("catalogue", "index"))
                if not damaged:
                    st = kb.status()
                    st.check = problems
                    _print_status(st, args.json)
                elif args.json:
                    print(json.dumps({"home": str(kb.home), "check": problems}, ensure_ascii=False, indent=2))
                else:
                    print("\n".join(f"{k}: DAMAGED: {'; '.join(v)}" for k, v in problems.items()
                                    if v and k != "behind"))
                return 1 if damaged else 0
            _print_status(kb.status(), args.json)
            return 0
        if args.command in ("user", "group", "grant", "revoke", "token", "audit"):
            return _access(kb, args)
        if args.command == "rebuild-catalogue":
            sources = {kb.collection: [str(Path(p).resolve()) for p in args.paths]} if args.paths else None
            reports = Home(settings, home=args.home).rebuild_catalogue(sources, progress, args.force)
            if not reports:
                print("kb: no folders recorded for any collection; name them: kb rebuild-catalogue PATH...",
                      file=sys.stderr)
                return 2
            for name, report in reports.items():
                print(f"collection {name}:")
                _print_report(report, args.json)
            return 1 if any(r.failed for r in reports.values()) else 0
    except Unavailable:
        raise
    except (NotFoundError, ConfigError, LockedError, CatalogueError) as exc:
        print(f"kb: {exc}", file=sys.stderr)
        return 2
    except KBError as exc:
        print(f"kb: error: {exc}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
