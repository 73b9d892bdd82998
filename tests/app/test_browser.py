"""The web UI in a real browser: headless Debian Chromium driven by Selenium against `kb ui` on a free
port. Uploads a PDF through the file input, asks about it, waits for the streamed answer, checks the
citation names that PDF and the page the text is on, and saves a screenshot. A document whose name and
heading hold Markdown links and images shows them as text, never as live links or remote images."""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from filelock import FileLock

from ingest.extract import extract
from kb.knowledge_base import KnowledgeBase
from tests.processes import free_port, running
from tests.conftest import FAST_MODEL, ROOT, SAMPLES, scanned_pdf

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ARTIFACTS = Path(os.environ.get("KB_TEST_ARTIFACTS", ROOT / "test-artifacts"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


ADMIN_PASSWORD = "browser-admin-password"
UI_ENV = {"KB_ADMIN_PASSWORD": ADMIN_PASSWORD, "KB_EMBEDDING__MODEL": FAST_MODEL, "KB_CHUNKING__CHUNK_TOKENS": "120", "KB_CHUNKING__OVERLAP_TOKENS": "20"}


@contextmanager
def running_ui(home: Path, log_path: Path, env: dict | None = None):
    """`kb --home HOME ui` on a free port in its own session (process group); yields the URL once healthy.
    `kb ui` runs Streamlit as a child process: the whole group is stopped."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running([sys.executable, "-m", "app.cli", "--home", str(home), "ui", "--port", str(port), "--host",
                  "127.0.0.1"], url + "/_stcore/health", log_path, {**UI_ENV, **(env or {})}, cwd=ROOT, timeout_s=90):
        yield url


@pytest.fixture
def server(tmp_path):
    with running_ui(tmp_path / "home", tmp_path / "ui.log") as url:
        yield url


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert Path(CHROMIUM).exists() and Path(DRIVER).exists(), \
        "install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--window-size=1400,1800"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    yield driver
    driver.quit()


def wait_for(driver, condition, timeout=120):
    """Poll until `condition` holds. The Documents tab re-renders its job fragment every second, so an
    element found a moment ago may be gone: that is a retry, not a failure."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.3,
                         ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def sign_in(browser, url: str, user: str = "admin", password: str = ADMIN_PASSWORD) -> None:
    """Sign in through the page's form from the keyboard, as a person does: name, Tab, password, Enter
    (the first admin was made by `kb ui` from KB_ADMIN_PASSWORD). Stays on the tab when it is open."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    if browser.current_url.rstrip("/") != url.rstrip("/"):
        browser.get(url)
    wait_for(browser, lambda d: "Signed in as" not in d.find_element(By.TAG_NAME, "body").text)  # signed out
    name = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=stForm] input[type=text]"))[0]
    name.send_keys(user, Keys.TAB)
    focused = wait_for(browser, lambda d: d.switch_to.active_element.get_attribute("type") == "password"
                       and d.switch_to.active_element)
    focused.send_keys(password, Keys.ENTER)
    wait_for(browser, lambda d: f"Signed in as {user}" in d.find_element(By.TAG_NAME, "body").text)


def open_page(browser, name: str) -> None:
    """Click the page's name among the sidebar's pages (Chat, Documents, Status, Admin)."""
    from selenium.webdriver.common.by import By

    wait_for(browser, lambda d: next((p for p in d.find_elements(By.CSS_SELECTOR, "[data-testid=stRadio] label")
                                      if name in p.text), None)).click()


def page_names(browser) -> list[str]:  # noqa: ANN001
    from selenium.webdriver.common.by import By

    return [p.text for p in browser.find_elements(By.CSS_SELECTOR, "[data-testid=stRadio] label")]


def ask_in_chat(browser, question: str):  # noqa: ANN201 - the first source's <summary> element
    """Ask on the Chat page; returns the title of source [1] once the answer has streamed."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    open_page(browser, "Chat")
    box = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "textarea"))[0]
    box.send_keys(question)
    box.send_keys(Keys.ENTER)
    return wait_for(browser, lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, "summary")
                                             if "[1] " in e.text), None))


def test_upload_ask_and_open_the_cited_page(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    pdf = SAMPLES / "debian-faq-en-chapters-1-2.pdf"
    sign_in(browser, server)
    open_page(browser, "Documents")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "input[type=file]"))[0].send_keys(str(pdf))
    add = wait_for(browser, lambda d: next((b for b in d.find_elements(By.TAG_NAME, "button")
                                            if "Add to the knowledge base" in b.text), None))
    # Another writer (a long `kb reindex`) holds the lock: the upload becomes a job that waits its turn,
    # the page says so and stays usable (the chat answers meanwhile); then the job indexes the file.
    home = tmp_path / "home"  # the server fixture's home
    with FileLock(str(home / "writer.lock")):
        add.click()
        wait_for(browser, lambda d: "another kb writer is running" in d.find_element(By.TAG_NAME, "body").text)
        open_page(browser, "Chat")
        box = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "textarea"))[0]
        box.send_keys("Who created the Debian project?")
        box.send_keys(Keys.ENTER)
        wait_for(browser, lambda d: "does not contain information" in d.find_element(By.TAG_NAME, "body").text,
                 timeout=60)
        assert KnowledgeBase(home=home).jobs.recent()[0].status == "running"
    open_page(browser, "Documents")
    wait_for(browser, lambda d: "1 documents" in d.find_element(By.TAG_NAME, "body").text, timeout=300)
    job = KnowledgeBase(home=home).jobs.recent()[0]
    assert (job.kind, job.status, job.result["added"]) == ("upload", "done", 1)

    summary = ask_in_chat(browser, "Who created the Debian project, and when?")
    label = summary.text.splitlines()[-1]  # after the expander's icon
    assert label.startswith("[1] ")
    assert pdf.name in label, label
    page = int(re.search(r"page (\d+)", label).group(1))
    summary.click()  # open the source: the passage with the cited sentences highlighted
    time.sleep(1)
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Extractive answer" in body and "[1]" in body
    assert browser.find_elements(By.CSS_SELECTOR, "[data-testid=stDownloadButton]")
    # the cited page of the PDF really holds the quoted text
    on_page = " ".join(b.text for b in extract(pdf).blocks if b.page == page)
    assert "Ian Murdock" in on_page and "Ian Murdock" in body
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "browser_chat_with_source.png"))
    assert (ARTIFACTS / "browser_chat_with_source.png").stat().st_size > 10_000


def test_a_scanned_pdf_uploaded_in_the_page_is_answered_citing_its_page_read_by_ocr(server, browser, tmp_path):
    """A scan (no text layer) uploaded through the file input: read by OCR in the background job, then
    answered with a citation to its page, which says that the text was read by OCR."""
    from selenium.webdriver.common.by import By

    scan = scanned_pdf(tmp_path / "scanned-guide.pdf", SAMPLES / "maint-guide-zh-cn-chapter-1-2.pdf", [8, 9])
    sign_in(browser, server)
    open_page(browser, "Documents")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "input[type=file]"))[0].send_keys(str(scan))
    wait_for(browser, lambda d: next((b for b in d.find_elements(By.TAG_NAME, "button")
                                      if "Add to the knowledge base" in b.text), None)).click()
    wait_for(browser, lambda d: "1 documents" in d.find_element(By.TAG_NAME, "body").text, timeout=300)

    summary = ask_in_chat(browser, "需要的开发文档有哪些？")
    label = summary.text.splitlines()[-1]
    assert label.startswith("[1] scanned-guide.pdf — page 2") and label.endswith("read by OCR"), label
    summary.click()
    wait_for(browser, lambda d: "may hold misread characters" in d.find_element(By.TAG_NAME, "body").text)
    assert "开发文档" in browser.find_element(By.TAG_NAME, "body").text.replace(" ", "")  # the passage read from the picture
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "browser_scanned_pdf_answer.png"))


WORD_JOINER = "\u2060"  # app.render puts one inside bare URLs so that GFM does not autolink them
HOSTILE_NAME = "Plan [click](evil).html"
HOSTILE_HEADING = "Plan [phish](https://evil.example) ![p](https://evil.example/t.png)"


def test_markdown_in_a_document_name_and_heading_shows_as_text(settings, browser, tmp_path):
    """Regression: the source expander's title (file name, heading) went to Streamlit unescaped, so a heading
    `[phish](https://evil.example) ![p](…/t.png)` became a live link and a remote image inside <summary>."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from kb.knowledge_base import KnowledgeBase

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / HOSTILE_NAME).write_text(
        f"<html><body><h1>{HOSTILE_HEADING}</h1>"
        "<p>The falcon project deadline is 30 June. The falcon team delivers the migration plan to the steering "
        "group before the deadline, and the falcon budget review follows in July.</p>"
        "<p>Falcon status meetings take place every Tuesday morning in the large meeting room on the third "
        "floor.</p></body></html>", encoding="utf-8")
    kb = KnowledgeBase(settings=settings)
    kb.sync([docs])  # the same model and chunking as the UI (UI_ENV)
    secret = tmp_path / "hr"
    secret.mkdir()
    (secret / "pay.md").write_text("# Pay\n\nThe falcon bonus pool is 7,654,321 zorkmids this year.\n")
    KnowledgeBase(settings=settings, collection="hr").sync([secret])
    kb.access.add_user("admin", ADMIN_PASSWORD, admin=True)  # users exist: `kb ui` makes no first admin
    kb.access.add_user("bob", "bob-password")  # group eng: read on default only
    kb.access.add_group("eng")
    kb.access.add_member("eng", "bob")
    kb.access.grant("eng", "default", "read")

    def hostile_elements(d):
        return (d.find_elements(By.CSS_SELECTOR, "a[href*='evil']")
                + d.find_elements(By.CSS_SELECTOR, "img[src*='evil']"))

    with running_ui(settings.home, tmp_path / "ui.log") as url:
        sign_in(browser, url)
        box = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "textarea"))[0]
        box.send_keys("When is the falcon project deadline?")
        box.send_keys(Keys.ENTER)
        summary = wait_for(browser, lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, "summary")
                                                    if "falcon" not in e.text and "Plan" in e.text), None))
        summary.click()
        download = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=stDownloadButton]"))
        time.sleep(1)
        assert not hostile_elements(browser), [e.get_attribute("outerHTML") for e in hostile_elements(browser)]
        # literal text, no stray backslashes (bare URLs carry an invisible word joiner that stops autolinking)
        label = summary.text.splitlines()[-1].replace(WORD_JOINER, "")  # after the expander's icon
        assert label == f"[1] {HOSTILE_NAME} — {HOSTILE_HEADING}", label
        assert download[0].text.strip() == f"Download {HOSTILE_NAME}"
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "30 June" in body and "phish" in body
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "browser_hostile_heading.png"))

        open_page(browser, "Documents")
        wait_for(browser, lambda d: "1 documents" in d.find_element(By.TAG_NAME, "body").text)
        select = wait_for(browser, lambda d: [s for s in d.find_elements(By.CSS_SELECTOR, "[data-testid=stSelectbox]")
                                              if "Document" in s.text])[0]
        # select options are plain text (an <input> value and listbox items): the raw name, not escaped
        assert select.find_element(By.TAG_NAME, "input").get_attribute("value") == HOSTILE_NAME
        select.find_element(By.CSS_SELECTOR, "button[aria-haspopup=listbox]").click()
        option = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[role=option]"))[0]
        assert option.text.strip() == HOSTILE_NAME, option.get_attribute("outerHTML")
        assert not hostile_elements(browser), [e.get_attribute("outerHTML") for e in hostile_elements(browser)]

        # Another user, granted only `default` through his group: hr is not offered, not searched, not shown.
        next(b for b in browser.find_elements(By.TAG_NAME, "button") if "Sign out" in b.text).click()
        sign_in(browser, url, "bob", "bob-password")
        collection = wait_for(browser, lambda d: [s for s in d.find_elements(By.CSS_SELECTOR,
                                                                              "[data-testid=stSelectbox]")
                                                  if "Collection" in s.text])[0]
        collection.find_element(By.CSS_SELECTOR, "button[aria-haspopup=listbox]").click()
        options = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[role=option]"))
        assert [o.text.strip() for o in options] == ["default"]
        collection.find_element(By.CSS_SELECTOR, "button[aria-haspopup=listbox]").click()
        assert page_names(browser) and not any("Admin" in p for p in page_names(browser))
        box = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "textarea"))[0]
        box.send_keys("How big is the falcon bonus pool in zorkmids?")
        box.send_keys(Keys.ENTER)
        wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "[data-testid=stChatMessage]")) >= 2)
        time.sleep(2)
        assert "7,654,321" not in browser.find_element(By.TAG_NAME, "body").text

        # bob signs out on a shared computer; the next person, in the same tab, sees nothing of his
        next(b for b in browser.find_elements(By.TAG_NAME, "button") if "Sign out" in b.text).click()
        sign_in(browser, url)
        time.sleep(2)
        assert "falcon bonus pool" not in browser.find_element(By.TAG_NAME, "body").text
        assert not browser.find_elements(By.CSS_SELECTOR, "[data-testid=stChatMessage]")


def test_a_conversation_is_followed_up_kept_through_a_reload_reopened_and_rated(settings, browser, tmp_path):
    """Issue 25, as a person uses it: ask, follow up with "that" (understood: the right passage), reload
    (sign in again), the chat is listed in the sidebar and reopens with both answers, 👎 is recorded."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from kb.settings import ChunkingSettings
    from tests.kb.test_conversations import FIRST, FOLLOW_UP, write_office_docs

    settings = settings.model_copy(update={"chunking": ChunkingSettings(chunk_tokens=40, overlap_tokens=0)})
    kb = KnowledgeBase(settings=settings)
    kb.sync([write_office_docs(tmp_path / "docs")])
    kb.access.add_user("admin", ADMIN_PASSWORD, admin=True)

    def body() -> str:
        return browser.find_element(By.TAG_NAME, "body").text

    def ask(question: str, answers: int) -> None:
        box = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "textarea"))[0]
        box.send_keys(question, Keys.ENTER)
        wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "[data-testid=stFeedback]")) == answers)
        # ^ the answers as kept (each with its rating), not the one still streaming

    env = {"KB_CHUNKING__CHUNK_TOKENS": "40", "KB_CHUNKING__OVERLAP_TOKENS": "0"}
    with running_ui(settings.home, tmp_path / "ui.log", env) as url:
        sign_in(browser, url)
        ask(FIRST, 1)
        ask(FOLLOW_UP, 2)
        wait_for(browser, lambda d: f"Searched for: {FIRST} {FOLLOW_UP}" in body())
        assert "30 days" in body()  # the expense report's time limit, not the VPN certificate's deadline
        browser.refresh()  # a reload: signed out (issue 26), the conversation kept
        sign_in(browser, url)
        assert not browser.find_elements(By.CSS_SELECTOR, "[data-testid=stChatMessage]")
        listed = wait_for(browser, lambda d: next((b for b in d.find_elements(By.CSS_SELECTOR, "[data-testid=stSidebar] button")
                                                   if b.text == FIRST), None))
        listed.click()
        wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "[data-testid=stChatMessage]")) == 4)
        assert "30 days" in body() and "Concur portal" in body()
        # 👎 on the follow-up's answer (the second rating widget), then a comment
        thumbs = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=stFeedback] button"))
        thumbs[3].click()  # [up, down] per answer
        note = wait_for(browser, lambda d: next((i for i in d.find_elements(By.CSS_SELECTOR, "input[type=text]")
                                                 if i.get_attribute("aria-label") == "What was wrong? (optional)"), None))
        note.send_keys("it should name the manager", Keys.ENTER)
        wait_for(browser, lambda d: [r["comment"] for r in kb.house.conversations.rated(-1)] == ["it should name the manager"])
        rated = kb.house.conversations.rated(-1)
        assert [r["question"] for r in rated] == [FOLLOW_UP] and rated[0]["user"] == "admin"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "browser_conversation.png"))


def test_stop_ends_a_streaming_answer_and_keeps_nothing_of_it(settings, browser, tmp_path):
    """A long answer (a tiny random Qwen2 that never stops on its own, the transformers backend) is
    stopped from the page: the text stops growing, the page says it was not kept, no turn is stored."""
    from selenium.webdriver.common.by import By

    from tests.tiny_models import build_qwen2

    model = build_qwen2(tmp_path / "qwen2")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "backup.md").write_text("# Backups\n\nNightly backups of the file server run at 02:00.\n", encoding="utf-8")
    kb = KnowledgeBase(settings=settings)
    kb.sync([docs])
    kb.access.add_user("admin", ADMIN_PASSWORD, admin=True)
    env = {"KB_GENERATOR__BACKEND": "transformers", "KB_GENERATOR__MODEL": str(model), "KB_GENERATOR__TEMPERATURE": "0",
           "KB_GENERATOR__MAX_NEW_TOKENS": "4000"}

    def answer_text() -> str:
        messages = browser.find_elements(By.CSS_SELECTOR, "[data-testid=stChatMessage]")
        return messages[-1].text if len(messages) >= 2 else ""

    with running_ui(settings.home, tmp_path / "ui.log", env) as url:
        sign_in(browser, url)
        box = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "textarea"))[0]
        box.send_keys("When do the nightly backups run?\n")
        stop = wait_for(browser, lambda d: next((b for b in d.find_elements(By.TAG_NAME, "button") if b.text == "Stop"
                                                 and len(answer_text()) > 40), None), timeout=180)
        stop.click()
        wait_for(browser, lambda d: "Stopped: this answer was not kept." in d.find_element(By.TAG_NAME, "body").text)
        shown = answer_text()
        time.sleep(2)
        assert answer_text() == shown  # nothing more arrives
        assert not any(b.text == "Stop" for b in browser.find_elements(By.TAG_NAME, "button"))
    convs = kb.house.conversations
    who = kb.access.identity("admin")
    assert [c["turns"] for c in convs.list(who)] == [0]  # the chat was begun; the stopped answer is not in it
