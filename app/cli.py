"""The `kb` command (click): one function per subcommand, each one KnowledgeBase call and its rendering.
Exit 0 ok, 1 files failed, 2 usage/config, 3 the catalogue's database or disk space out of reach for now.

The global options (--home, --collection, -v) are accepted before or after the subcommand
(`kb --home H eval …` and `kb eval … --home H`)."""

from __future__ import annotations

import errno
import functools
import json
import logging
import logging.handlers
import os
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import click

from kb.access import GRANT_LEVELS
from kb.errors import CatalogueError, ConfigError, KBError, LockedError, NotFoundError, Unavailable
from kb.private_home import make_private
from kb.settings import Settings
from retrieval.generators import GENERATORS

BACKENDS = click.Choice(sorted(GENERATORS))


@dataclass(frozen=True)
class Run:
    """What every command gets: the global options and the settings they apply to."""

    settings: Settings
    home: str | None = None
    collection: str | None = None
    verbose: bool = False

    @property
    def home_path(self) -> Path:
        return Path(self.home or self.settings.home)

    def kb(self, several: bool = False):  # noqa: ANN201 - a KnowledgeBase
        """The facade on --collection; `several`: search and ask also read A,B or all as one ranking."""
        from kb.knowledge_base import KnowledgeBase

        names = (self.collection or "").split(",")
        every = several and names == ["all"]  # elsewhere `all` is a collection's name
        if len(names) > 1 and not several:
            raise ConfigError(f"--collection {self.collection}: only search and ask read several collections")
        kb = KnowledgeBase(home=self.home, settings=self.settings, collection=None if every else names[0])
        if every or len(names) > 1:
            kb = kb.reading(kb.house.collection_names() if every else names)
        return kb


def _say(message: str) -> None:
    print(f"kb: {message}", file=sys.stderr)


def _global_options(f):  # noqa: ANN001, ANN202
    f = click.option("--home", default=None, help="data home (env KB_HOME, default indexes/)")(f)
    f = click.option("--collection", default=None,
                     help="collection name (default: 'default'); search and ask also take A,B or all")(f)
    return click.option("-v", "--verbose", is_flag=True, default=None,
                        help="also print kb's info messages and the libraries' warnings (always in HOME/kb.log)")(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"]},
             help="Enterprise knowledge base: index folders, ask questions.")
@_global_options
@click.pass_context
def commands(ctx: click.Context, home: str | None, collection: str | None, verbose: bool | None) -> None:
    try:
        settings = Settings()
    except Exception as exc:  # noqa: BLE001 - invalid env/toml values
        _say(f"configuration error: {exc}")
        raise click.exceptions.Exit(2) from None
    ctx.obj = Run(settings, home, collection, bool(verbose))


def command(*args, service: bool = False, **kwargs):  # noqa: ANN002, ANN003, ANN201
    """A subcommand taking the global options too; it is called with the Run they make, and what it
    returns is the exit status. `service`: a server meeting a damaged catalogue or bad settings at start
    says so in one line and exits 2."""
    def wrap(f):  # noqa: ANN001, ANN202
        @functools.wraps(f)  # carries click's parameters of `f`
        def run(home: str | None, collection: str | None, verbose: bool | None, **params) -> int:  # noqa: ANN003
            given = {k: v for k, v in (("home", home), ("collection", collection), ("verbose", verbose)) if v is not None}
            r = replace(click.get_current_context().obj, **given)
            _configure_logging(r.home_path, r.verbose)
            try:
                return f(r, **params)
            except Unavailable:
                raise
            except KBError as exc:
                if not service:
                    raise
                _say(str(exc))
                return 2
            except BrokenPipeError:  # `kb search --json | head`: the reader has what it wanted (before
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # click makes it exit 1)
                return 0
            finally:
                from ingest.upkeep import Upkeep

                Upkeep.finish_all()  # a command ends with the repairs its reads asked for

        return commands.command(*args, **kwargs)(_global_options(run))
    return wrap


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
    rows = [{"rank": r, "source": c.source, **c.to_dict()} for r, c in enumerate(contexts, 1)]
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



# -- writes ------------------------------------------------------------------------------------------
def _paths_exist(paths: tuple[str, ...]) -> bool:
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        _say(f"no such file or folder: {', '.join(missing)}")
    return not missing


def _wait(message: str) -> None:
    _say(message)


@command("reindex", help="make the index match folders: add new, update changed, remove deleted")
@click.argument("paths", nargs=-1)
@click.option("--full", is_flag=True, help="rebuild everything (after changing model or chunking)")
@click.option("--retry-failed", is_flag=True, help="read again files that failed before and did not change (normally skipped)")
@click.option("--json", "as_json", is_flag=True)
def reindex(run: Run, paths: tuple[str, ...], full: bool, retry_failed: bool, as_json: bool) -> int:
    """PATHS: files or folders (default: those of the previous reindex)."""
    if not _paths_exist(paths):
        return 2
    report = run.kb().sync(list(paths), full=full, progress=sys.stderr.isatty(), on_wait=_wait, retry_failed=retry_failed)
    _print_report(report, as_json)
    return 1 if report.failed or report.still_failed else 0


@command("ingest", help="add or update files/folders without removing others")
@click.argument("paths", nargs=-1, required=True)
@click.option("--retry-failed", is_flag=True, help="read again files that failed before, unchanged")
@click.option("--json", "as_json", is_flag=True)
def ingest(run: Run, paths: tuple[str, ...], retry_failed: bool, as_json: bool) -> int:
    if not _paths_exist(paths):
        return 2
    report = run.kb().ingest(list(paths), progress=sys.stderr.isatty(), on_wait=_wait, retry_failed=retry_failed)
    _print_report(report, as_json)
    return 1 if report.failed or report.still_failed else 0


@command("remove", help="remove a document (id, path or file name)")
@click.argument("doc")
def remove(run: Run, doc: str) -> int:
    print(f"removed {run.kb().remove(doc, on_wait=_wait)[0]}")
    return 0


@command("rebuild-catalogue", help="replace a damaged catalogue: re-index every collection from its recorded "
         "folders (the damaged file is kept aside)")
@click.argument("paths", nargs=-1)
@click.option("--force", is_flag=True, help="rebuild even a catalogue that passes its integrity check")
@click.option("--json", "as_json", is_flag=True)
def rebuild_catalogue(run: Run, paths: tuple[str, ...], force: bool, as_json: bool) -> int:
    """PATHS: folders of --collection (default: the folders it was synced from)."""
    from kb.home import Home
    from kb.settings import check_collection_name

    collection = check_collection_name(run.collection or run.settings.collection)  # before anything is moved
    sources = {collection: [str(Path(p).resolve()) for p in paths]} if paths else None
    reports = Home(run.settings, home=run.home).rebuild_catalogue(sources, sys.stderr.isatty(), force)
    if not reports:
        _say("no folders recorded for any collection; name them: kb rebuild-catalogue PATH...")
        return 2
    for name, report in reports.items():
        print(f"collection {name}:")
        _print_report(report, as_json)
    return 1 if any(r.failed for r in reports.values()) else 0


# -- reads -------------------------------------------------------------------------------------------
def _search_batch(kb, queries: Path, top_k: int | None, documents: list[str] | None) -> int:  # noqa: ANN001
    """One JSON row per question, the models loaded once; a bad line is reported with its number. A row
    may carry `history` (earlier turns, {"question", "answer"}): a follow-up is resolved with it, and the
    row written says what was searched (`standalone`)."""
    from kb.conversations import Turn

    for n, line in enumerate(queries.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            q = json.loads(line)
            qid, question = q["id"], q["question"]
            history = [Turn.of(t) for t in q.get("history") or []]
        except (json.JSONDecodeError, KeyError, TypeError, ConfigError) as exc:
            _say(f"{queries}:{n}: expected {{\"id\", \"question\", \"history\"?: [{{\"question\", \"answer\"}}]}} ({exc})")
            return 2
        r = kb.retrieve(question, top_k, documents, record=True, history=history)
        print(json.dumps({"id": qid, **({"standalone": r.standalone} if r.standalone else {}),
                          "contexts": [{"source": c.source, **c.to_dict()} for c in (r.contexts if r.relevant else [])]},
                         ensure_ascii=False), flush=True)
    return 0


@command("search", help="ranked contexts for a question: rank, source, page, score, chunk id, text")
@click.argument("question", required=False)
@click.option("--queries", type=click.Path(path_type=Path),
              help='batch: a JSONL file of {"id", "question"}; writes one JSONL row each')
@click.option("--top-k", type=int, help="contexts returned (default: settings, 3)")
@click.option("--document", multiple=True, help="only these documents (id, path or file name); repeatable")
@click.option("--json", "as_json", is_flag=True)
def search(run: Run, question: str | None, queries: Path | None, top_k: int | None, document: tuple[str, ...],
           as_json: bool) -> int:
    kb, documents = run.kb(several=True), list(document) or None
    if queries:
        return _search_batch(kb, queries, top_k, documents)
    if not question:
        _say("give a question or --queries FILE.jsonl")
        return 2
    r = kb.retrieve(question, top_k, documents, record=True)
    for note in r.notes:  # what limited this search (a damaged part being rebuilt)
        _say(f"note: {note}")
    _print_contexts(r.contexts if r.relevant else [], as_json)
    return 0


@command("ask", help="answer a question from the documents, with cited sources and pages")
@click.argument("question")
@click.option("--backend", type=BACKENDS,
              help="answer generator (default: transformers on a GPU with a local model, else extractive)")
@click.option("--top-k", type=int, help="contexts given to the generator (default 3)")
@click.option("--document", multiple=True, help="only these documents (id, path or file name); repeatable")
@click.option("--show-reasoning", is_flag=True, help="also print the model's <think> reasoning")
@click.option("--json", "as_json", is_flag=True)
def ask(run: Run, question: str, backend: str | None, top_k: int | None, document: tuple[str, ...],
        show_reasoning: bool, as_json: bool) -> int:
    from retrieval.answer import cite_label

    stream = run.kb(several=True).ask_stream(question, backend, top_k, list(document) or None)
    if as_json:
        print(json.dumps(stream.result().to_dict(), ensure_ascii=False, indent=2))
        return 0
    if stream.retrieval.relevant:
        print(f"({stream.label})")
    for piece in stream:
        print(piece, end="", flush=True)
    print()
    answer = stream.answer
    if show_reasoning and answer.reasoning:
        print("\nreasoning:\n  " + answer.reasoning.replace("\n", "\n  "))
    if answer.citations:
        print("\nsources:")
        for c in answer.citations:
            print(f"  [{c.n}] {cite_label(c)}  (chunk {c.chunk_id}{', read by OCR' if c.ocr else ''})")
    for sent in answer.unsupported:
        print(f"  ! not supported by its cited source: {sent}")
    print("time: " + " · ".join(f"{k} {v * 1000:.0f} ms" for k, v in answer.timings.items()))
    return 0


@command("eval", help="measure retrieval (recall@k, MRR, nDCG) and answers on a QA set")
@click.argument("qa", type=click.Path(path_type=Path))
@click.option("--corpus", type=click.Path(path_type=Path), help="documents to index first (into a temporary home unless --home)")
@click.option("--backend", type=BACKENDS, help="also answer each question and score the answers")
@click.option("--answers", type=int, help="answer only the first N questions")
@click.option("--results", type=click.Path(path_type=Path), help="write the retrieved contexts as score.py results JSONL")
@click.option("--json", "as_json", is_flag=True)
def evaluate(run: Run, qa: Path, corpus: Path | None, backend: str | None, answers: int | None, results: Path | None,
             as_json: bool) -> int:
    """QA: JSONL of {"id", "question", "answer", "source"}. Indexes the corpus (a temporary home unless
    --home), evaluates, and stores the result where `kb ui` shows it."""
    import tempfile

    from kb.knowledge_base import KnowledgeBase

    if not qa.is_file() or (corpus and not corpus.exists()):
        _say(f"no such file or folder: {qa if not qa.is_file() else corpus}")
        return 2
    progress = sys.stderr.isatty()
    try:
        target = KnowledgeBase(home=run.home, settings=run.settings, collection=run.collection)
        with tempfile.TemporaryDirectory(prefix="kb-eval-") as tmp:
            kb = target if run.home or not corpus else KnowledgeBase(home=tmp, settings=run.settings,
                                                                     collection=run.collection)
            if corpus:
                report = kb.sync([corpus], progress=progress)
                if not as_json:
                    print(f"indexed {corpus}: {report.counts()['added']} added, {report.counts()['unchanged']} "
                          f"unchanged, {kb.catalogue.counts(kb.collection)['chunks']} chunks, {report.seconds:.1f}s",
                          file=sys.stderr)
            report = kb.evaluate(qa, backend, answers, results, progress)
        target.record_evaluation(report, str(qa.resolve()), str(corpus.resolve()) if corpus else None)
    except Unavailable:
        raise
    except (ValueError, KBError) as exc:
        _say(str(exc))
        return 2
    if as_json:
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


@command("status", help="documents, chunks, failures, model, index")
@click.option("--check", is_flag=True, help="also check the catalogue's and the index's integrity (exit 1 when damaged)")
@click.option("--json", "as_json", is_flag=True)
def status(run: Run, check: bool, as_json: bool) -> int:
    kb = run.kb()
    if not check:
        _print_status(kb.status(), as_json)
        return 0
    problems = kb.check()  # before status, which would otherwise stop at the first damage it meets
    damaged = any(problems.get(part) for part in ("catalogue", "index"))
    if not damaged:
        st = kb.status()
        st.check = problems
        _print_status(st, as_json)
    elif as_json:
        print(json.dumps({"home": str(kb.home), "check": problems}, ensure_ascii=False, indent=2))
    else:
        print("\n".join(f"{k}: DAMAGED: {'; '.join(v)}" for k, v in problems.items() if v and k != "behind"))
    return 1 if damaged else 0


# -- services ----------------------------------------------------------------------------------------
def _first_admin(run: Run, home: Path, shown: str) -> None:
    from kb.knowledge_base import KnowledgeBase

    if (password := KnowledgeBase(home=home, settings=run.settings).access.ensure_first_admin()) is not None:
        print(f"kb: {shown} 'admin' with password {password} (shown once; change it with `kb user passwd admin`, "
              "or set KB_ADMIN_PASSWORD before the first start)", flush=True)


@command("ui", service=True, help="start the web UI (Streamlit) on http://localhost:8501")
@click.option("--port", type=int, default=8501, show_default=True)
@click.option("--host", default="127.0.0.1",
              help="address to listen on (default: this machine only; 0.0.0.0 opens it to the network)")
def ui(run: Run, port: int, host: str) -> int:
    """Run Streamlit on the app with this home and collection; the address is printed first."""
    import math
    import subprocess

    app = Path(__file__).with_name("streamlit_app.py")
    home = run.home_path.resolve()
    _first_admin(run, home, "sign in as")
    env = {**os.environ, "KB_HOME": str(home), "KB_COLLECTION": run.collection or run.settings.collection,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(app.parents[1]), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(port),
           "--server.address", host, "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal",
           "--server.maxUploadSize", str(max(1, math.ceil(run.settings.ingest.max_file_mb)))]
    print(f"kb: web UI for {home} at http://localhost:{port}", flush=True)
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 0


@command("serve", service=True, help="start the HTTP API (REST + OpenAI-compatible) with a job worker")
@click.option("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--workers", type=int, default=1, show_default=True, help="server processes (each also runs queued jobs)")
@click.option("--no-jobs", is_flag=True, help="run no jobs here (a separate `kb worker` does)")
def serve(run: Run, host: str, port: int, workers: int, no_jobs: bool) -> int:
    """uvicorn with the API; settings reach every server process through the environment."""
    import uvicorn

    home = run.home_path.resolve()
    _first_admin(run, home, "created the first admin user")
    os.environ["KB_HOME"] = str(home)
    os.environ["KB_COLLECTION"] = run.collection or run.settings.collection
    os.environ["KB_SERVE_JOBS"] = "0" if no_jobs else "1"
    if workers > 1:  # every server process's metrics in files, added up by whichever answers /metrics
        metrics = home / "run" / "metrics"
        shutil.rmtree(metrics, ignore_errors=True)  # a previous run's processes are gone
        metrics.mkdir(parents=True, mode=0o700)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    print(f"kb: API for {home} at http://{host}:{port} (docs at /docs)", flush=True)
    uvicorn.run("app.api:app_from_environment", factory=True, host=host, port=port, workers=workers,
                log_level="warning")
    return 0


@command("worker", service=True, help="run queued upload/re-index jobs (for deployments)")
@click.option("--once", is_flag=True, help="run the jobs waiting now, then exit")
def worker(run: Run, once: bool) -> int:
    from app.worker import Worker

    settings = run.settings.model_copy(update={"home": Path(run.home)}) if run.home else run.settings
    w = Worker(settings)
    if once:
        while (job := w.run_once()) is not None:
            print(f"job {job.id} ({job.kind}, {job.collection}): {job.status}" + (f": {job.error}" if job.error else ""))
        return 0
    print(f"kb: worker {w.name} waiting for jobs in {settings.catalogue_url.split('@')[-1]}", flush=True)
    try:
        w.run_forever()
    except KeyboardInterrupt:
        pass
    return 0


# -- access ------------------------------------------------------------------------------------------
def _password(given: str | None, name: str) -> str | None:
    import getpass

    password = given or getpass.getpass(f"password for {name}: ")
    if len(password) < 8:
        _say("a password needs 8 characters or more")
        return None
    return password


@command("user", help="users who may sign in to the web page and the API")
@click.argument("action", type=click.Choice(["add", "list", "remove", "passwd"]))
@click.argument("name", required=False)
@click.option("--password", help="(add, passwd) prompted when omitted")
@click.option("--admin", is_flag=True, help="(add) may manage users, grants and every collection")
def user(run: Run, action: str, name: str | None, password: str | None, admin: bool) -> int:
    access = run.kb().access
    if action == "list":
        for u in access.users():
            print(f"{u['name']}{' (admin)' if u['admin'] else ''}  groups: {', '.join(u['groups']) or '-'}")
        return 0
    if not name:
        _say("give a name")
        return 2
    if action == "remove":
        access.remove_user(name)
        return 0
    if (password := _password(password, name)) is None:
        return 2
    if action == "add":
        access.add_user(name, password, admin)
    else:
        access.set_password(name, password)
    return 0


@command("group", help="groups of users: add, remove, list, member, unmember")
@click.argument("action", type=click.Choice(["add", "remove", "list", "member", "unmember"]))
@click.argument("name", required=False)
@click.argument("member", metavar="USER", required=False)
def group(run: Run, action: str, name: str | None, member: str | None) -> int:
    """USER: (member, unmember) the user."""
    access = run.kb().access
    if action == "list":
        for g in access.groups():
            print(g)
        return 0
    if not name or (action in ("member", "unmember") and not member):
        _say("give the group and the user" if action in ("member", "unmember") else "give a name")
        return 2
    if action in ("member", "unmember"):
        (access.add_member if action == "member" else access.remove_member)(name, member)
    else:
        (access.add_group if action == "add" else access.remove_group)(name)
    return 0


@command("grant", help="give a user or group read/write/admin on a collection, or deny it (none); prints the "
         "level it leaves")
@click.argument("principal")
@click.argument("target", metavar="COLLECTION")
@click.argument("level", type=click.Choice(list(GRANT_LEVELS)))
def grant(run: Run, principal: str, target: str, level: str) -> int:
    """PRINCIPAL: a user or group name (user:NAME / group:NAME when both exist). COLLECTION: a name, or *
    for every collection. LEVEL none: a deny that wins over every other grant reaching the same users."""
    access = run.kb().access
    access.grant(principal, target, level)
    access.audit("operator", "grant", target, principal=principal, level=level)
    print(f"{principal} on {target!r} now: {access.effective(principal, target)}")
    return 0


@command("revoke", help="remove a grant (or a deny) of a user or group on a collection")
@click.argument("principal")
@click.argument("target", metavar="COLLECTION")
def revoke(run: Run, principal: str, target: str) -> int:
    access = run.kb().access
    access.revoke(principal, target)
    access.audit("operator", "revoke", target, principal=principal)
    print(f"{principal} on {target!r} now: {access.effective(principal, target)}")
    return 0


@command("token", help="API tokens: create USER (printed once) | revoke TOKEN")
@click.argument("action", type=click.Choice(["create", "revoke"]))
@click.argument("value")
def token(run: Run, action: str, value: str) -> int:
    """VALUE: the user (create) or the token or its first 10 characters (revoke)."""
    access = run.kb().access
    if action == "create":
        made = access.create_token(value)
        print(f"API token for {value} (shown once; send it as `Authorization: Bearer …`):")
        print(made)
        return 0
    n = access.revoke_token(value)
    print(f"revoked {n} token(s)")
    return 0 if n else 1


@command("feedback", help="rated answers: list (the 👎 ones by default) | export FILE (the 👍 ones as a `kb eval` "
                        "file: their cited passages are the expected hits)")
@click.argument("action", type=click.Choice(["list", "export"]))
@click.argument("file", required=False, type=click.Path(path_type=Path))
@click.option("--rating", type=click.Choice(["up", "down", "all"]), help="list: which (default down); export: up")
def feedback(run: Run, action: str, file: Path | None, rating: str | None) -> int:
    convs = run.kb().house.conversations
    if action == "list":
        for row in convs.rated({"up": 1, "down": -1, "all": None}[rating or "down"]):
            print(json.dumps(row, ensure_ascii=False))
        return 0
    if file is None:
        _say("give the file to write: kb feedback export FILE.jsonl")
        return 2
    from kb.files import atomic_write

    rows, left_out = feedback_eval_rows(convs.rated(1, limit=None)), convs.count_rated(-1)
    atomic_write(file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
    _say(f"wrote {len(rows)} question(s) answered well to {file} (check them with `kb eval {file}`); "
         f"{left_out} answer(s) marked 👎 are in `kb feedback list`")
    return 0


def feedback_eval_rows(rated: list[dict]) -> list[dict]:
    """`kb eval` rows from 👍 answers: the question (with its earlier turns), and the first passage its
    answer cited as the expected hit (its text and document)."""
    rows = []
    for t in rated:
        if not t["citations"]:
            continue
        c = t["citations"][0]
        rows.append({"id": f"feedback-{t['id']}", "question": t["question"], "answer": c["text"],
                     "source": c["document"], "history": t.get("history") or [], "collection": t["collection"]})
    return rows


@command("audit", help="who asked, uploaded, deleted or re-indexed what (JSONL)")
@click.option("--limit", type=int, default=1000, show_default=True)
@click.option("--user", "only", help="only this user's entries")
def audit(run: Run, limit: int, only: str | None) -> int:
    for row in run.kb().access.audit_log(limit, only):
        print(json.dumps(row, ensure_ascii=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit 0 ok, 1 some files failed, 2 usage or configuration, 3 something needed is out of reach for
    now (the catalogue's database, disk space): the same command works once it is back."""
    try:
        return commands.main(args=argv, prog_name="kb", standalone_mode=False) or 0
    except click.exceptions.Exit as exc:  # --help, or a configuration error already said
        return exc.exit_code
    except click.UsageError as exc:
        exc.show()
        return 2
    except click.Abort:  # Ctrl-C or end of input at a prompt
        return 130
    except Unavailable as exc:
        _say(str(exc))
        return 3
    except (NotFoundError, ConfigError, LockedError, CatalogueError) as exc:  # bad settings, a damaged catalogue
        _say(str(exc))
        return 2
    except KBError as exc:
        _say(f"error: {exc}")
        return 1
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        _say(f"the disk is full ({exc.filename or 'writing'}); nothing half-written was kept. "
             "Free some space and run the command again")
        return 3


if __name__ == "__main__":
    sys.exit(main())
