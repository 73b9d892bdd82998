"""The web UI in a real browser: headless Debian Chromium driven by Selenium against `kb ui` on a free
port. Uploads a PDF through the file input, asks about it, waits for the streamed answer, checks the
citation names that PDF and the page the text is on, and saves a screenshot."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ingest.extract import extract
from tests.conftest import FAST_MODEL, ROOT, SAMPLES

pytestmark = pytest.mark.browser
ARTIFACTS = Path(os.environ.get("KB_TEST_ARTIFACTS", ROOT / "test-artifacts"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = free_port()
    env = {**os.environ, "KB_EMBEDDING__MODEL": FAST_MODEL, "KB_CHUNKING__CHUNK_TOKENS": "120",
           "KB_CHUNKING__OVERLAP_TOKENS": "20"}
    log = open(tmp_path / "ui.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "--home", str(tmp_path / "home"), "ui", "--port",
                             str(port), "--host", "127.0.0.1"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            if httpx.get(url + "/_stcore/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError("kb ui did not start: " + (tmp_path / "ui.log").read_text()[-2000:])
        time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


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
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.3).until(condition)


def test_upload_ask_and_open_the_cited_page(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    pdf = SAMPLES / "debian-faq-en-chapters-1-2.pdf"
    browser.get(server)
    tab = wait_for(browser, lambda d: next((t for t in d.find_elements(By.CSS_SELECTOR, "[role=tab]")
                                            if "Documents" in t.text), None))
    tab.click()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "input[type=file]"))[0].send_keys(str(pdf))
    add = wait_for(browser, lambda d: next((b for b in d.find_elements(By.TAG_NAME, "button")
                                            if "Add to the knowledge base" in b.text), None))
    add.click()
    wait_for(browser, lambda d: "1 documents" in d.find_element(By.TAG_NAME, "body").text, timeout=300)

    next(t for t in browser.find_elements(By.CSS_SELECTOR, "[role=tab]") if "Chat" in t.text).click()
    box = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "textarea"))[0]
    box.send_keys("Who created the Debian project, and when?")
    box.send_keys(Keys.ENTER)
    summary = wait_for(browser, lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, "summary")
                                                if "[1] " in e.text), None))
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
