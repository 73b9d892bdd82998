"""The Streamlit page logic with streamlit.testing.v1.AppTest on a real index (no browser)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from app.render import WORD_JOINER, highlight, label_escape, md_escape
from app.worker import Worker
from ingest.uploads import safe_upload_name
from kb.knowledge_base import KnowledgeBase
from tests.conftest import FAST_MODEL, ROOT

APP = str(ROOT / "app" / "streamlit_app.py")


def signed_in(user: str = "tester", password: str = "tester-password") -> AppTest:
    """The page, past its sign-in form."""
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.text_input[0].input(user)
    at.text_input[1].input(password)
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at


def add_tester(kb: KnowledgeBase) -> None:
    kb.access.add_user("tester", "tester-password", admin=True)


@pytest.fixture
def indexed(tmp_path, monkeypatch, settings):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "backup.txt").write_text("Backups\n\nNightly backups of the file server run at 02:00 and are kept for "
                                    "thirty days. <script>alert('x')</script> ![tracker](http://example.com/t.png)\n")
    kb = KnowledgeBase(settings=settings)
    kb.sync([docs])
    add_tester(kb)
    monkeypatch.setenv("KB_HOME", str(settings.home))
    monkeypatch.setenv("KB_EMBEDDING__MODEL", FAST_MODEL)
    monkeypatch.setenv("KB_CHUNKING__CHUNK_TOKENS", "120")
    monkeypatch.setenv("KB_CHUNKING__OVERLAP_TOKENS", "20")
    return kb


def test_chat_streams_a_cited_answer_and_keeps_history(indexed):
    at = signed_in()
    at.chat_input[0].set_value("When do nightly backups run?").run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "02\\:00" in text and "\\[1\\]" in text  # the answer, escaped, with its marker
    assert any("Extractive answer" in c.value for c in at.caption)
    assert at.expander and at.expander[0].label.startswith(r"\[1\] backup\.txt")  # labels are Markdown: escaped
    # document text is never rendered as HTML: the script tag arrives escaped
    passage = at.expander[0].markdown[0].value
    assert "\\<script\\>" in passage and "<script>" not in passage
    at.chat_input[0].set_value("Who won the football world cup in 1998?").run()
    assert any("does not contain" in i.value for i in at.info)  # shown as "not found", not as an error
    assert not at.error
    assert len(at.chat_message) == 4  # two questions, two answers kept in the session


def test_a_heading_and_file_name_holding_markdown_are_escaped_in_the_source_expander(settings, tmp_path, monkeypatch):
    name, heading = "Plan [click](evil).html", "Plan [phish](https://evil.example) ![p](https://evil.example/t.png)"
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / name).write_text(f"<html><body><h1>{heading}</h1><p>The falcon project deadline is 30 June. The "
                             "falcon team delivers the migration plan before the deadline.</p></body></html>")
    kb = KnowledgeBase(settings=settings)
    kb.sync([docs])
    add_tester(kb)
    for key, value in {"KB_HOME": str(settings.home), "KB_EMBEDDING__MODEL": FAST_MODEL,
                       "KB_CHUNKING__CHUNK_TOKENS": "120", "KB_CHUNKING__OVERLAP_TOKENS": "20"}.items():
        monkeypatch.setenv(key, value)
    at = signed_in()
    at.chat_input[0].set_value("When is the falcon project deadline?").run()
    assert not at.exception
    label = at.expander[0].label
    assert label == label_escape(f"[1] {name} — {heading}")
    assert "](" not in label and "\\[phish\\]" in label and "\\!\\[p\\]" in label and "\\[click\\]" in label
    button = at.get("download_button")[0]
    assert button.proto.label == label_escape(f"Download {name}")


def test_a_cited_original_is_read_only_when_its_download_is_clicked(indexed, monkeypatch):
    """Every rerun of the page used to read every cited original whole (up to max_file_mb each) to offer
    its download; now the button holds a callable, run when clicked (issue 24)."""
    import kb.document_lookup

    reads, real = [], kb.document_lookup.original
    monkeypatch.setattr(kb.document_lookup, "original", lambda *a: reads.append(a) or real(*a))  # a spy: real reads
    at = signed_in()
    at.chat_input[0].set_value("How long are the nightly backups kept?").run()
    assert not at.exception and at.get("download_button")
    at.run()  # another rerun, as any click on the page makes
    assert reads == []


def test_documents_and_status_pages_show_the_collection(indexed):
    at = signed_in()
    at.chat_input[0].set_value("When do nightly backups run?").run()
    at.sidebar.radio[0].set_value("documents").run()
    assert at.query_params["page"] == ["documents"] or at.query_params["page"] == "documents"  # kept in the address
    assert at.subheader[0].value == "1 documents" and not at.chat_input
    names = at.dataframe[0].value["name"].tolist()
    assert names == ["backup.txt"]
    at.sidebar.radio[0].set_value("status").run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Documents"] == "1" and metrics["Logged"] == "1"
    assert at.sidebar.selectbox[0].value == "default"


def test_markdown_escaping_and_highlighting():
    wj = WORD_JOINER  # breaks GFM autolink literals, which are found after backslash escapes are resolved
    assert md_escape("<b>x</b> :red[y] [z](http://a)") == f"\\<b\\>x\\</b\\> \\:red\\[y\\] \\[z\\]\\(http{wj}\\://a\\)"
    assert md_escape("HTTPS://a.b www.a.b me@a.b") == f"HTTPS{wj}\\://a\\.b www{wj}\\.a\\.b me{wj}@a\\.b"
    # one-line labels: whitespace and line breaks collapsed, control and bidi-override characters dropped
    assert label_escape(" [1] a\n\n# b\t![i](x)\u202egpj.exe\x00 ") == "\\[1\\] a \\# b \\!\\[i\\]\\(x\\) gpj\\.exe"
    marked = highlight("One. Two <i>three</i>. Four.", ["Two <i>three</i>."])
    assert marked == "One\\. :orange-background[Two \\<i\\>three\\</i\\>\\.] Four\\."


def test_uploads_are_sanitised_size_checked_and_indexed(settings, tmp_path):
    kb = KnowledgeBase(settings=settings.model_copy(update={"ingest": settings.ingest.model_copy(
        update={"max_file_mb": 0.001})}))
    read_calls = []

    def reader(data: bytes):
        def read() -> bytes:
            read_calls.append(len(data))
            return data
        return read

    small = b"# Leave\n\nEmployees get twenty-five days of annual leave.\n"
    big = b"x" * 5000
    job, refused = kb.submit_uploads([("../../etc/leave policy.md", len(small), reader(small)),
                                      ("huge.md", len(big), reader(big))])
    stored = kb.uploads_dir() / "leave policy.md"
    assert stored.read_bytes() == small and job.params == {"paths": [str(stored)]} and job.status == "queued"
    assert read_calls == [len(small)]  # the oversized file was refused before it was read
    assert len(refused) == 1 and refused[0][0].endswith("huge.md") and "too large" in refused[0][1]
    worker = Worker(kb.settings)
    done = worker.run_once()
    assert (done.id, done.status, done.result["added"]) == (job.id, "done", 1)
    assert not (tmp_path / "etc").exists()
    assert safe_upload_name("..\\..\\a<b>.pdf") == "a_b_.pdf"
    # a second upload with the same name is a new version of that document, not a second copy
    v2 = small.replace(b"twenty-five", b"thirty")
    job, _ = kb.submit_uploads([("leave policy.md", len(v2), reader(v2))])
    assert worker.run_once().result["files"] == [{"path": str(stored), "result": "updated"}]
    assert len(kb.documents()) == 1 and worker.run_once() is None
    assert kb.remove("leave policy.md") and not stored.exists()


def test_an_upload_job_during_a_reindex_waits_for_the_writer_lock_and_says_so(settings):
    import subprocess
    import sys
    import threading
    import time

    kb = KnowledgeBase(settings=settings)  # lock timeout 2 s: the worker waits longer than that for its turn
    settings.home.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from filelock import FileLock; "
        f"l = FileLock({str(settings.home / 'writer.lock')!r}); l.acquire(); print('held', flush=True); time.sleep(3)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"  # another writer (e.g. `kb reindex`) holds the lock
    t0 = time.perf_counter()
    data = b"# Leave\n\nEmployees get twenty-five days of annual leave.\n"
    job, _ = kb.submit_uploads([("leave.md", len(data), lambda: data)])
    waited: list[str] = []
    worker = Worker(settings, heartbeat_s=0.3)
    watcher = threading.Thread(target=lambda: [waited.append(kb.jobs.get(job.id).progress.get("waiting", ""))
                                               or time.sleep(0.2) for _ in range(10)])
    watcher.start()
    done = worker.run_once()
    watcher.join()
    assert any("another kb writer is running" in w for w in waited)  # the page shows why it waits
    assert time.perf_counter() - t0 >= 2.5 and done.status == "done" and done.result["added"] == 1
    holder.wait(timeout=10)


def test_sign_in_is_required_and_a_user_sees_only_granted_collections(indexed, tmp_path):
    hr = tmp_path / "hr"
    hr.mkdir()
    (hr / "pay.md").write_text("# Pay\n\nThe bonus pool is 4.2 million this year.\n", encoding="utf-8")
    KnowledgeBase(settings=indexed.settings, collection="hr").sync([hr])
    access = indexed.access
    access.add_user("bob", "bob-password")
    access.add_group("eng")
    access.add_member("eng", "bob")
    access.grant("eng", "default", "read")
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.chat_input and not at.radio  # nothing but the sign-in form
    at.text_input[0].input("bob")
    at.text_input[1].input("wrong password")
    at.button[0].click().run()
    assert at.error[0].value.startswith("wrong user name or password") and not at.radio
    bob = signed_in("bob", "bob-password")
    assert bob.sidebar.selectbox[0].options == ["default"]  # hr exists, but is not his
    assert bob.sidebar.radio[0].options == ["💬 Chat", "📄 Documents", "📈 Status"]  # no Admin page
    bob.sidebar.radio[0].set_value("documents").run()
    assert not bob.get("file_uploader")  # read access: no upload
    bob.sidebar.radio[0].set_value("chat").run()
    bob.chat_input[0].set_value("How big is the bonus pool?").run()
    assert "4.2" not in " ".join(m.value for m in bob.markdown)
    admin = signed_in()
    assert sorted(admin.sidebar.selectbox[0].options) == ["default", "hr"]
    assert admin.sidebar.radio[0].options[-1] == "🔑 Admin"
    assert any(r["actor"] == "bob" and r["action"] == "ask" for r in access.audit_log())


def test_signing_out_or_a_changed_password_ends_the_session_and_clears_the_page(indexed):
    indexed.access.add_user("bob", "bob-password")
    indexed.access.grant("bob", "default", "read")
    bob = signed_in("bob", "bob-password")
    bob.chat_input[0].set_value("When do the nightly backups run?").run()
    assert bob.chat_message and "When do the nightly backups run?" in [b.label for b in bob.sidebar.button]
    indexed.access.set_password("bob", "a new password")  # an administrator resets it
    bob.run()
    assert not bob.chat_message and not bob.radio and "nightly backups" not in repr(bob.session_state)
    again = signed_in("bob", "a new password")
    assert not again.chat_message  # his chat is kept (listed in the sidebar), not left open on the screen
    listed = next(b for b in again.sidebar.button if b.label == "When do the nightly backups run?")
    other = signed_in()  # another user (an admin) in another browser: bob's chat is not listed for them
    assert "When do the nightly backups run?" not in [b.label for b in other.sidebar.button]
    listed.click().run()
    assert len(again.chat_message) == 2 and "02\\:00" in " ".join(m.value for m in again.markdown)
    cid = again.session_state["conversation"]
    turn = indexed.house.conversations.get(indexed.access.identity("bob"), cid)["turns"][0]
    indexed.house.conversations.rate(indexed.access.identity("bob"), turn["id"], "down", "too vague")
    other.sidebar.radio[0].set_value("admin").run()  # the admin sees the 👎 answer and its comment
    titles = [e.label for e in other.expander]
    assert any(t.startswith(label_escape("When do the nightly backups run? — bob")) for t in titles), titles
    assert any("too vague" in m.value for m in other.markdown)
    next(b for b in again.sidebar.button if b.label == "Sign out").click().run()
    assert not again.chat_message and "who" not in again.session_state
    assert "nightly backups" not in repr(again.session_state) and "bob" not in repr(again.session_state)


def test_a_cited_pdf_page_is_drawn_with_its_sentences_marked():
    from app.page_image import cited_page_png

    pdf = ROOT / "sample_docs" / "debian-faq-en-chapters-1-2.pdf"
    cited = "The Debian Project was created by Ian Murdock in 1993, initially under the sponsorship of the Free " \
            "Software Foundation’s GNU project."
    png, found = cited_page_png(pdf, 10, [cited + "[1]"])
    assert png.startswith(b"\x89PNG") and found == 3  # three pieces of the sentence found and marked
    assert cited_page_png(pdf, 10, ["words that are on no page of it"])[1] == 0
    assert cited_page_png(pdf, 999, [cited]) is None and cited_page_png(ROOT / "README.md", 1, [cited]) is None
