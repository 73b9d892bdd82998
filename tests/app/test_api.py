"""`kb serve` as a real process on a free port, driven over HTTP (httpx) and with the real `openai`
client: search, cited answers (JSON and streamed), the OpenAI-compatible chat endpoint, uploads that
become jobs and then searchable documents, errors as JSON with the right status, Prometheus metrics."""

from __future__ import annotations

import json
import select
import shutil
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest

from kb.knowledge_base import KnowledgeBase
from kb.settings import ChunkingSettings, EmbeddingSettings, Settings
from tests.conftest import FAST_MODEL, ROOT, SAMPLES, consistent
from tests.processes import free_port, running

pytestmark = pytest.mark.slow
ENV = {"KB_EMBEDDING__MODEL": FAST_MODEL, "KB_CHUNKING__CHUNK_TOKENS": "120", "KB_CHUNKING__OVERLAP_TOKENS": "20",
       "KB_INGEST__MAX_FILE_MB": "1", "KB_INGEST__MAX_UPLOAD_MB": "5", "KB_INGEST__LOCK_TIMEOUT_S": "1",
       "KB_GENERATOR__BASE_URL": "http://127.0.0.1:9/v1", "KB_GENERATOR__RETRIES": "0"}  # nothing listens on 9
PDF = "debian-faq-en-chapters-1-2.pdf"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """A home with two sample documents, served by `kb serve` (with its in-process job worker)."""
    root = tmp_path_factory.mktemp("api")
    docs = root / "docs"
    docs.mkdir()
    for name in (PDF, "debian-faq-getting-debian.en.md"):
        shutil.copy(SAMPLES / name, docs / name)
    home = root / "home"
    settings = Settings(home=home, embedding=EmbeddingSettings(model=FAST_MODEL),
                        chunking=ChunkingSettings(chunk_tokens=120, overlap_tokens=20))
    KnowledgeBase(settings=settings).sync([docs])
    hr = root / "hr"
    hr.mkdir()
    (hr / "salaries.md").write_text(f"# Salaries\n\n{SECRET}\n", encoding="utf-8")
    owner = KnowledgeBase(settings=settings, collection="hr")
    owner.sync([hr])
    access = owner.access
    access.add_user("tester", "tester-password", admin=True)
    access.add_user("bob", "bob-password")
    access.add_group("eng")
    access.add_member("eng", "bob")
    access.grant("eng", "default", "read")
    tokens = {"tester": access.create_token("tester"), "bob": access.create_token("bob")}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    (root / "tmp").mkdir()  # the server's temp folder: an upload must never be spooled there
    with running([sys.executable, "-m", "app.cli", "--home", str(home), "serve", "--port", str(port)],
                 url + "/healthz", root / "serve.log", {**ENV, "TMPDIR": str(root / "tmp")}, cwd=ROOT):
        yield url, settings, root, tokens


SECRET = "The CFO's salary is 912,345 zorkmids, paid through the Quetzal Bank."


def client(api, user: str = "tester") -> httpx.Client:
    return httpx.Client(base_url=api[0], timeout=60, headers={"Authorization": f"Bearer {api[3][user]}"})


def test_search_returns_ranked_contexts_with_document_and_page(api):
    with client(api) as c:
        r = c.post("/v1/search", json={"question": "Where does the name Debian come from?", "top_k": 3})
    assert r.status_code == 200
    body = r.json()
    assert body["relevant"] and 1 <= len(body["contexts"]) <= 3
    top = body["contexts"][0]
    assert top["document"] == PDF and isinstance(top["page"], int) and "Ian" in top["text"]
    assert [c["n"] for c in body["contexts"]] == list(range(1, len(body["contexts"]) + 1))
    assert {"embed", "dense", "keyword"} <= set(body["timings_ms"])


def test_ask_cites_pages_and_streams_the_same_answer(api):
    question = "Where does the name Debian come from?"
    with client(api) as c:
        whole = c.post("/v1/ask", json={"question": question}).json()
        with c.stream("POST", "/v1/ask", json={"question": question, "stream": True}) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            events = [(e.split("\n")[0].removeprefix("event: "), json.loads(e.split("\n")[1].removeprefix("data: ")))
                      for e in r.read().decode().strip().split("\n\n")]
    assert whole["found"] and whole["citations"]
    cited = whole["citations"][0]
    assert cited["document"] == PDF and isinstance(cited["page"], int) and f"[{cited['n']}]" in whole["answer"]
    kinds = [k for k, _ in events]
    assert kinds[-1] == "answer" and set(kinds[:-1]) == {"token"} and len(kinds) > 2
    streamed = "".join(d["text"] for k, d in events if k == "token")
    final = events[-1][1]
    assert final["answer"] == whole["answer"] and streamed.strip() and final["citations"] == whole["citations"]


def test_openai_client_gets_cited_answers_streamed_and_not(api):
    from openai import NotFoundError as OpenAINotFound
    from openai import OpenAI

    oa = OpenAI(base_url=api[0] + "/v1", api_key=api[3]["tester"], max_retries=0)
    assert "default" in [m.id for m in oa.models.list()]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How do I get Debian?"}]
    done = oa.chat.completions.create(model="default", messages=messages)
    text = done.choices[0].message.content
    citations = done.model_extra["citations"]
    assert citations and all(f"[{c['n']}]" in text for c in citations)
    assert {c["document"] for c in citations} <= {PDF, "debian-faq-getting-debian.en.md"}
    pieces, last = [], None
    for chunk in oa.chat.completions.create(model="default", messages=messages, stream=True):
        pieces.append(chunk.choices[0].delta.content or "")
        last = chunk
    assert last.choices[0].finish_reason == "stop" and last.model_extra["citations"] == citations
    assert "".join(pieces).strip()
    with pytest.raises(OpenAINotFound, match="no collection 'legal'"):
        oa.chat.completions.create(model="legal", messages=messages)


def test_errors_are_json_with_the_right_status(api):
    with client(api) as c:
        assert c.post("/v1/search", json={"question": ""}).status_code == 400
        bad = c.post("/v1/search", json={"question": "x", "top_k": 0})
        assert bad.status_code == 400 and "top_k" in bad.json()["error"]["message"]
        missing = c.post("/v1/search", json={"question": "x", "collection": "nope"})
        assert c.post("/v1/search", json={"question": "x"}, headers={"Authorization": ""}).status_code == 401
        assert missing.status_code == 404 and missing.json()["error"]["message"] == "no collection 'nope'"
        assert c.get("/v1/jobs/999999").status_code == 404
        assert c.delete("/v1/documents/no-such-file.pdf").status_code == 404
        assert c.post("/v1/reindex", json={"paths": ["/no/such/folder"]}).status_code == 400
        escape = c.post("/v1/reindex", json={"collection": "../../outside"})
        assert escape.status_code == 400 and "invalid collection name" in escape.json()["error"]["message"]
        assert c.post("/v1/ask", json={"question": "x", "backend": "nope"}).status_code == 400
        assert c.get("/openapi.json").json()["paths"].keys() >= {"/v1/search", "/v1/ask", "/v1/chat/completions"}


def test_too_large_locked_and_model_down_have_their_own_status(api):
    from filelock import FileLock

    home = api[1].home
    with client(api) as c:
        big = c.post("/v1/documents", files=[("files", ("big.txt", b"word " * 300_000, "text/plain"))])
        assert big.status_code == 413 and "too large" in big.json()["error"]["message"]
        scratch = c.post("/v1/documents", files=[("files", ("scratch.md", b"# Scratch\n\nA note to delete.\n",
                                                            "text/markdown"))])
        assert wait_job(c, scratch.json()["job"]["id"])["status"] == "done"
        with FileLock(str(home / "writer.lock")):  # a long re-index elsewhere holds the writer lock
            t0 = time.monotonic()
            locked = c.delete("/v1/documents/scratch.md")
            waited = time.monotonic() - t0
        # queued behind it as a job (issue 30): the request neither waits for the lock nor fails with 409
        assert locked.status_code == 202 and waited < 10 and locked.json()["queued"][0].endswith("scratch.md")
        assert wait_job(c, locked.json()["job"]["id"])["status"] == "done"
        assert "scratch.md" not in [d["name"] for d in c.get("/v1/documents").json()]
        down = c.post("/v1/ask", json={"question": "Where does the name Debian come from?", "backend": "openai"})
        assert down.status_code == 503 and "127.0.0.1:9" in down.json()["error"]["message"]
        assert PDF in [d["name"] for d in c.get("/v1/documents").json()]  # nothing was lost on the way


def wait_job(c: httpx.Client, job_id: int, timeout_s: float = 120) -> dict:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        job = c.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {job['status']}")


def test_upload_becomes_a_job_then_a_searchable_document_then_is_deleted(api, tmp_path):
    note = tmp_path / "vacation-policy.md"
    note.write_text("# Vacation policy\n\nEmployees of Example Corp receive thirty-one days of paid vacation "
                    "per year, booked through the zebrafish portal.\n", encoding="utf-8")
    question = {"question": "How many vacation days through the zebrafish portal?"}
    with client(api) as c:
        r = c.post("/v1/documents", files=[("files", (note.name, note.read_bytes(), "text/markdown")),
                                           ("files", ("empty.txt", b"", "text/plain"))])
        assert r.status_code == 202
        job = wait_job(c, r.json()["job"]["id"])
        assert job["status"] == "done" and job["kind"] == "upload"
        results = {Path(f["path"]).name: f for f in job["result"]["files"]}
        assert results["vacation-policy.md"]["result"] == "added"
        assert results["empty.txt"]["result"] == "failed" and "empty" in results["empty.txt"]["reason"]
        hit = c.post("/v1/search", json=question).json()["contexts"][0]
        assert hit["document"] == "vacation-policy.md" and "thirty-one days" in hit["text"]
        names = [d["name"] for d in c.get("/v1/documents").json()]
        assert "vacation-policy.md" in names and PDF in names
        assert c.delete("/v1/documents/vacation-policy.md").json()["removed"][0].endswith("vacation-policy.md")
        after = c.post("/v1/search", json=question).json()["contexts"]
        assert all(x["document"] != "vacation-policy.md" for x in after)
        status = c.get("/v1/status").json()
    assert status["consistent"] and status["documents"] == 3  # the two samples and the failed empty file
    assert consistent(KnowledgeBase(settings=api[1]))


def test_reindex_job_and_metrics(api):
    with client(api) as c:
        job = wait_job(c, c.post("/v1/reindex", json={}).json()["job"]["id"])
        assert job["status"] == "done" and job["result"]["unchanged"] >= 2 and job["progress"]["total"] >= 2
        assert c.post("/v1/search", json={"question": "How do I get Debian?"}).status_code == 200  # whatever ran before
        text = c.get("/metrics").text
    assert 'kb_requests_total{method="POST",route="/v1/search",status="200"}' in text
    assert 'kb_stage_seconds_count{stage="embed"}' in text and 'kb_chunks{collection="default"}' in text
    assert 'kb_jobs{status="done"}' in text


def test_a_user_never_sees_a_collection_not_granted_to_their_group(api):
    """bob (group eng: read on default) against hr, whatever he asks and however he asks it."""
    from openai import NotFoundError as OpenAINotFound
    from openai import OpenAI

    secret_question = "What is the CFO's salary in zorkmids at the Quetzal Bank?"
    with client(api, "tester") as admin:  # the admin sees it: the document is really there
        assert admin.post("/v1/search", json={"question": secret_question, "collection": "hr"}
                          ).json()["contexts"][0]["document"] == "salaries.md"
    with client(api, "bob") as bob:
        everything = bob.post("/v1/search", json={"question": secret_question, "top_k": 10}).json()
        assert all(c["document"] != "salaries.md" for c in everything["contexts"])
        assert "912,345" not in json.dumps(everything)
        mine = bob.post("/v1/search", json={"question": "How do I get Debian?"}).json()["contexts"]
        assert mine and {c["document"] for c in mine} <= {PDF, "debian-faq-getting-debian.en.md"}
        for r in (bob.post("/v1/search", json={"question": secret_question, "collection": "hr"}),
                  bob.post("/v1/ask", json={"question": secret_question, "collection": "hr"}),
                  bob.get("/v1/documents", params={"collection": "hr"}),
                  bob.get("/v1/status", params={"collection": "hr"}),
                  bob.delete("/v1/documents/salaries.md", params={"collection": "hr"})):
            assert r.status_code == 404 and "912,345" not in r.text and "salaries" not in r.text, r.text
        answer = bob.post("/v1/ask", json={"question": secret_question}).json()
        assert "912,345" not in json.dumps(answer)
        assert "hr" not in bob.get("/v1/status").json()["collections"]
        assert bob.post("/v1/documents", files=[("files", ("x.md", b"# x\n\nhello there\n", "text/markdown"))]
                        ).status_code == 403  # read, not write
        assert bob.get("/v1/audit").status_code == 403
        assert bob.get("/metrics").status_code == 403  # collection names and counts: administrators only
        probe = bob.post("/v1/reindex", json={"paths": ["/etc"]})  # server folders: administrators only
        assert probe.status_code == 403 and "/etc" not in probe.text
    oa = OpenAI(base_url=api[0] + "/v1", api_key=api[3]["bob"], max_retries=0)
    assert sorted(m.id for m in oa.models.list()) == ["default", "kb:all"]
    with pytest.raises(OpenAINotFound):
        oa.chat.completions.create(model="hr", messages=[{"role": "user", "content": secret_question}])
    chat = oa.chat.completions.create(model="kb:all", messages=[{"role": "user", "content": secret_question}])
    assert "912,345" not in chat.choices[0].message.content
    assert all(c["document"] != "salaries.md" for c in chat.model_extra["citations"])
    bad = httpx.post(api[0] + "/v1/search", json={"question": secret_question},
                     headers={"Authorization": "Bearer kb_not-a-real-token"})
    assert bad.status_code == 401 and bad.json()["error"]["message"] == "this token is not valid (unknown or revoked)"
    assert bad.headers["www-authenticate"] == "Bearer"
    assert httpx.get(api[0] + "/healthz").status_code == 200  # stays open
    with client(api, "tester") as admin:
        rows = [json.loads(line) for line in admin.get("/v1/audit", params={"format": "jsonl"}).text.splitlines()]
    assert any(r["actor"] == "bob" and r["action"] == "search" and r.get("question") == secret_question for r in rows)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def raw_chunked_upload(api, token: str | None, file_name: str, total_mb: int, watch: list[Path]) -> tuple[int, int, int]:
    """POST /v1/documents with `Transfer-Encoding: chunked` (no Content-Length) over a plain socket, 1 MB a
    chunk, until the server answers. Returns (status, MB sent, the most bytes seen in the watched folders)."""
    host, port = api[0].removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    sock.sendall((f"POST /v1/documents HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n{auth}"
                  "Content-Type: multipart/form-data; boundary=BB\r\n\r\n").encode())
    head = f'--BB\r\nContent-Disposition: form-data; name="files"; filename="{file_name}"\r\n\r\n'.encode()
    most, sent = 0, 0
    for i in range(total_mb):
        if select.select([sock], [], [], 0.05)[0]:  # the server answered: stop sending
            break
        piece = (head if i == 0 else b"") + b"word " * 200_000
        try:
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        except OSError:  # the server closed the connection
            break
        sent += 1
        most = max(most, sum(folder_bytes(f) for f in watch))
    select.select([sock], [], [], 10)
    status = int(sock.recv(65536).split(b" ", 2)[1])
    sock.close()
    return status, sent, max(most, sum(folder_bytes(f) for f in watch))


def test_an_upload_is_refused_before_its_body_is_stored(api):
    """No token: 401 before a byte of the body is read (the old server spooled 100 MB to its temp folder
    first); a writer's file past the limit (1 MB here): 413 as soon as it passes, nothing kept."""
    root, uploads = api[2], api[1].home / "uploads"
    status, sent, most = raw_chunked_upload(api, None, "big.txt", 100, [root / "tmp", uploads])
    assert status == 401 and sent < 20 and most < 3_000_000, (status, sent, most)
    status, sent, most = raw_chunked_upload(api, api[3]["tester"], "big.txt", 100, [root / "tmp", uploads])
    assert status == 413 and sent < 20 and most < 3_000_000, (status, sent, most)
    # a refused type is not written, but its bytes count: the body is cut off past max_upload_mb (5 MB here)
    status, sent, most = raw_chunked_upload(api, api[3]["tester"], "setup.exe", 100, [root / "tmp", uploads])
    assert status == 413 and sent < 20 and most < 3_000_000, (status, sent, most)
    assert folder_bytes(root / "tmp") == 0 and not [p for p in uploads.rglob("*") if p.is_file() and "big" in p.name]
    with client(api) as c:  # a type kb cannot read is refused by its name and never written
        r = c.post("/v1/documents", files=[("files", ("setup.exe", b"MZ" * 1000, "application/octet-stream"))])
        assert r.status_code == 400 and "unsupported file type '.exe'" in r.json()["error"]["message"]
    assert not list(uploads.rglob("*.exe"))


def test_a_reader_keeps_the_operators_backend(api):
    question = {"question": "Where does the name Debian come from?"}
    with client(api, "bob") as bob:
        refused = bob.post("/v1/ask", json={**question, "backend": "transformers"})
        assert refused.status_code == 403 and "administrators only" in refused.json()["error"]["message"]
        assert bob.post("/v1/ask", json={**question, "backend": "extractive"}).status_code == 200  # the configured one
        assert bob.post("/v1/ask", json={**question, "backend": "openai", "collection": "default"}).status_code == 403


def test_refused_requests_are_audited(api):
    with client(api, "bob") as bob:
        assert bob.get("/v1/audit").status_code == 403
        assert bob.post("/v1/search", json={"question": "pay", "collection": "hr"}).status_code == 404
    assert httpx.get(api[0] + "/v1/jobs", headers={"Authorization": "Bearer kb_wrong"}).status_code == 401
    with client(api) as admin:
        rows = [r for r in admin.get("/v1/audit").json() if r["action"] == "refused"]
    seen = {(r["actor"], r["status"], r["route"]) for r in rows}
    assert {("bob", 403, "GET /v1/audit"), ("bob", 404, "POST /v1/search"),
            ("(no valid token)", 401, "GET /v1/jobs")} <= seen


def test_readers_see_paths_relative_to_their_folders_and_no_server_settings(api):
    question = {"question": "Where does the name Debian come from?"}
    with client(api, "bob") as bob:
        contexts = bob.post("/v1/search", json=question).json()["contexts"]
        status = bob.get("/v1/status").json()
        docs = bob.get("/v1/documents").json()
        answer = bob.post("/v1/ask", json=question).json()
    assert contexts and all(c["path"] == f"docs/{c['document']}" for c in contexts)
    assert {d["path"] for d in docs} >= {f"docs/{PDF}"} and all(not d["path"].startswith("/") for d in docs)
    assert all(c["path"].startswith("docs/") for c in answer["citations"])
    assert "home" not in status and "catalogue_url" not in status and str(api[2]) not in json.dumps(status)
    with client(api) as admin:  # administrators see the server's paths
        full = admin.post("/v1/search", json=question).json()["contexts"][0]["path"]
        assert full.startswith(str(api[2])) and "catalogue_url" in admin.get("/v1/status").json()


def test_odd_input_answers_json_400_never_a_plain_500(api):
    with client(api) as c:
        huge = c.get("/v1/jobs/" + "9" * 40)
        assert huge.status_code == 400 and "job_id" in huge.json()["error"]["message"]
        odd = c.post("/v1/chat/completions", json={"model": "default", "messages": [
            {"role": "user", "content": [{"type": "text", "text": 5}]}]})
        assert odd.status_code == 400 and "text part" in odd.json()["error"]["message"]
        assert c.post("/v1/chat/completions", json={"model": "default", "messages": ["hi"]}).status_code == 400
