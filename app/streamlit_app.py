"""The web UI (widgets only): chat with streamed, cited answers; upload, list, delete and re-index
documents; status and monitoring. Every action is one KnowledgeBase call; all text is escaped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import streamlit as st

from app.render import highlight, label_escape, md_escape
from app.worker import Worker
from ingest.extract import MIME
from kb.access import Identity
from kb.errors import KBError, NotFoundError
from kb.home import Home
from kb.knowledge_base import KnowledgeBase
from kb.document_lookup import collection_names
from kb.settings import Settings
from retrieval.answer import Answer


@st.cache_resource(show_spinner="Loading the knowledge base…")
def data_home(home: str) -> Home:
    """One Home per data home, shared by every browser session and collection (models load once)."""
    return Home(Settings(), home)


def wait_notice(msg: str) -> None:
    st.info(f"Waiting for another indexing job to finish ({label_escape(msg)})…")


def render_sources(kb: KnowledgeBase, answer: Answer, key: str) -> None:
    for c in answer.citations:
        name = Path(c.source).name
        title = f"[{c.n}] {name}" + (f" — page {c.page}" if c.page else "") + (f" — {c.heading}" if c.heading else "")
        with st.expander(label_escape(title + (" — read by OCR" if c.ocr else ""))):  # titles render Markdown
            if c.ocr:
                st.caption("This page is a scan: its text was read by OCR and may hold misread characters. "
                           "Check the original.")
            st.markdown(highlight(c.text, c.sentences))
            if kb.downloadable(c.source):  # read only when clicked (files may be 200 MB; every rerun would read them)
                st.download_button(label_escape(f"Open {name}"), data=lambda src=c.source: kb.original(src) or b"",
                                   file_name=name,
                                   mime=MIME.get(Path(c.source).suffix.lower(), "application/octet-stream"),
                                   key=f"dl-{key}-{c.n}")
    for sent in answer.unsupported:
        st.warning("Not supported by its cited source: " + md_escape(sent))


def render_answer(kb: KnowledgeBase, answer: Answer, key: str) -> None:
    if not answer.found:
        st.info(md_escape(answer.text))
        return
    st.caption(md_escape(answer.label))
    st.markdown(md_escape(answer.text))
    render_sources(kb, answer, key)


def chat(kb: KnowledgeBase) -> None:
    history = st.session_state.setdefault(("history", kb.collection), [])
    for i, (question, answer) in enumerate(history):
        with st.chat_message("user"):
            st.markdown(md_escape(question))
        with st.chat_message("assistant"):
            render_answer(kb, answer, f"h{i}")
    question = st.chat_input("Ask a question about your documents")
    if not question:
        return
    with st.chat_message("user"):
        st.markdown(md_escape(question))
    with st.chat_message("assistant"):
        try:
            stream = kb.ask_stream(question)
            if stream.retrieval.relevant:
                st.caption(md_escape(stream.label))
                # The whole text so far is escaped at each piece: a URL split across pieces is still defused.
                shown, text = st.empty(), ""
                for piece in stream:
                    text += piece
                    shown.markdown(md_escape(text))
                answer = stream.answer
                render_sources(kb, answer, f"h{len(history)}")
            else:
                answer = stream.result()
                st.info(md_escape(answer.text))
        except KBError as exc:
            st.error(f"Could not answer: {md_escape(str(exc))}")
            return
    history.append((question, answer))


@st.cache_resource(show_spinner=False)
def job_worker(home: str) -> Worker:
    """The embedded default runs queued uploads and re-indexing in a thread of this server (deployments
    run `kb worker` instead and set KB_UI_JOBS=0); the page only submits and watches."""
    return Worker(data_home(home)).start()


def job_line(job) -> str:  # noqa: ANN001 - kb.jobs.Job
    p = job.progress
    if job.status == "queued":
        return f"Job {job.id} ({job.kind}): queued"
    if job.status == "running":
        where = p.get("waiting") or (Path(p["current"]).name if p.get("current") else "starting")
        of = f"/{p['total']}" if p.get("total") is not None else ""
        return f"Job {job.id} ({job.kind}): {p.get('done', 0)}{of} files — {where}"
    return f"Job {job.id} ({job.kind}): {job.status}" + (f" — {job.error}" if job.error else "")


@st.fragment(run_every=1.0)
def job_progress(kb: KnowledgeBase) -> None:
    """Re-runs on its own every second while the rest of the page stays usable; when a job this page
    follows finishes, its per-file results are shown and the document list refreshed."""
    followed = st.session_state.setdefault(("jobs", kb.collection), [])
    for job in [j for j in kb.jobs.recent(kb.collection, 10) if not j.finished]:
        st.progress(min(1.0, job.progress.get("done", 0) / max(1, job.progress.get("total") or 1)),
                    text=label_escape(job_line(job)))
    for job_id in list(followed):
        job = kb.jobs.get(job_id)
        if job.finished:
            followed.remove(job_id)
            st.session_state["upload_results"] = [
                {"file": Path(f["path"]).name, "result": f["result"] + (f": {f['reason']}" if f.get("reason") else "")}
                for f in (job.result or {}).get("files", [])] or [{"file": "-", "result": job_line(job)}]
            st.rerun(scope="app")


def documents(kb: KnowledgeBase) -> None:
    if os.environ.get("KB_UI_JOBS", "1") == "1":
        job_worker(str(kb.home.resolve()))
    limit = kb.settings.ingest.max_file_mb
    round_key = st.session_state.setdefault("upload_round", 0)
    writable = kb.caller is None or kb.caller.may(kb.collection, "write")
    if not writable:
        st.caption("You may read this collection; adding or deleting documents needs write access.")
    files = None if not writable else st.file_uploader(f"Add documents (up to {limit:g} MB each)", accept_multiple_files=True,
                             type=sorted(ext.lstrip(".") for ext in MIME), key=f"upload-{round_key}")
    followed = st.session_state.setdefault(("jobs", kb.collection), [])
    if files and st.button("Add to the knowledge base", type="primary"):
        job, refused = kb.submit_uploads([(f.name, f.size, f.getvalue) for f in files])
        if job is not None:
            followed.append(job.id)
            if os.environ.get("KB_UI_JOBS", "1") == "1":
                job_worker(str(kb.home.resolve())).wake.set()
        st.session_state["upload_results"] = [{"file": Path(p).name, "result": f"refused: {r}"} for p, r in refused]
        st.session_state["upload_round"] = round_key + 1  # clears the uploader
        st.rerun()
    job_progress(kb)
    if st.session_state.get("upload_results"):
        st.dataframe(st.session_state["upload_results"], hide_index=True, width="stretch")

    docs = kb.documents()
    st.subheader(f"{len(docs)} documents")
    if docs:
        st.dataframe([{"name": Path(d.path).name, "type": d.type, "pages": d.pages, "chunks": d.chunks,
                       "status": d.status, "indexed": d.indexed_at, "error": d.error or ""} for d in docs],
                     hide_index=True, width="stretch")
        left, right = st.columns(2)
        with left:
            choice = st.selectbox("Document", [d.id for d in docs],
                                  format_func=lambda i: next(Path(d.path).name for d in docs if d.id == i))
            if writable and st.button("Delete document"):
                removed = kb.remove(str(choice), on_wait=wait_notice)
                st.success(label_escape(f"Removed {Path(removed[0]).name}"))
                st.rerun()
        with right:
            if writable and st.button("Re-index collection"):
                followed.append(kb.submit_reindex().id)
                st.rerun()


def status(kb: KnowledgeBase) -> None:
    st_ = kb.status()
    gen = kb.generator()
    cols = st.columns(4)
    cols[0].metric("Documents", st_.documents, help=f"{st_.failed} failed")
    cols[1].metric("Chunks", st_.chunks)
    cols[2].metric("Index vectors", st_.index_vectors, help="consistent" if st_.consistent else "inconsistent")
    cols[3].metric("Device", st_.device["torch"].upper())
    st.markdown(md_escape(f"Answers: {gen.label}. Embeddings: {st_.embedding_model} (dim {st_.dimension}). "
                          f"Index: {st_.index_type}, {st_.index_bytes / 1e6:.1f} MB. "
                          f"FAISS GPUs: {st_.device['faiss_gpus']}."))
    m = kb.metrics()
    st.subheader("Queries")
    c = st.columns(3)
    c[0].metric("Logged", m.queries)
    c[1].metric("Per minute (last hour)", m.queries_per_minute)
    c[2].metric("Not found", m.not_found)
    if m.latency:
        st.dataframe([{"stage": k, "p50 ms": v["p50_ms"], "p95 ms": v["p95_ms"]} for k, v in m.latency.items()],
                     hide_index=True)
    if evaluation := st_.last_evaluation:
        st.subheader("Latest evaluation")
        st.json(evaluation)


def guarded(action, kb: KnowledgeBase) -> None:  # noqa: ANN001 - a tab's function
    """A tab whose work fails (index built with other settings, damaged catalogue, writer lock held)
    shows the message, never a traceback; the other tabs keep working."""
    try:
        action(kb)
    except KBError as exc:
        st.error(label_escape(str(exc)))


def end_session() -> None:
    """Forget everything of the signed-in user in this browser session (conversation, sources, uploads
    list, selections): the next person at this computer starts empty."""
    st.session_state.clear()


def signed_in(kb: KnowledgeBase) -> Identity | None:
    """The signed-in caller of this browser session, or the sign-in form (None until it succeeds).
    The session ends when the account is removed or its password changed. Wrong passwords lock the
    account for growing times (kb/access.py), and are audited there."""
    if (who := st.session_state.get("who")) is not None:
        try:  # grants are read again on every run: a revoked user loses access at once
            fresh = kb.access.identity(who.name)
            if fresh.stamp == who.stamp:
                st.session_state["who"] = fresh
                return fresh
        except NotFoundError:  # removed meanwhile
            pass
        end_session()
    st.title("Knowledge base")
    with st.form("sign-in"):  # a form: the fields keep their values on Tab, Enter signs in
        name = st.text_input("User name")
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted and name:
        try:
            who = kb.access.sign_in(name, password)
        except KBError as exc:
            st.error(label_escape(str(exc)))
            return None
        end_session()  # nothing of an earlier session survives into this one
        st.session_state["who"] = who
        kb.access.audit(name, "sign-in")
        st.rerun()
    return None


def admin(kb: KnowledgeBase) -> None:
    """Users, groups, grants and the audit log (admins only)."""
    access = kb.access
    st.subheader("Users")
    st.dataframe(access.users(), hide_index=True, width="stretch")
    with st.form("add-user", clear_on_submit=True):
        c = st.columns([2, 2, 1])
        name = c[0].text_input("New user")
        password = c[1].text_input("Initial password (8+ characters)", type="password")
        is_admin = c[2].checkbox("Admin")
        if st.form_submit_button("Add user") and name:
            if len(password) < 8:
                st.error("A password needs 8 characters or more")
            else:
                access.add_user(name, password, is_admin)
                access.audit(kb.caller.name, "add-user", None, user=name, admin=is_admin)
                st.success(label_escape(f"Added {name}"))
    st.subheader("Grants")
    st.dataframe(access.grants(), hide_index=True, width="stretch")
    with st.form("grant", clear_on_submit=True):
        c = st.columns(3)
        principal = c[0].text_input("User or group (group:NAME)")
        collection = c[1].text_input("Collection (* = all)")
        level = c[2].selectbox("Level", ["read", "write", "admin", "none", "remove"],
                               format_func=lambda lv: {"none": "none (deny)", "remove": "remove the grant"}.get(lv, lv))
        if st.form_submit_button("Grant") and principal and collection:
            if level == "remove":
                access.revoke(principal, collection)
                access.audit(kb.caller.name, "revoke", collection, principal=principal)
            else:
                access.grant(principal, collection, level)
                access.audit(kb.caller.name, "grant", collection, principal=principal, level=level)
            st.success(label_escape(f"{principal} on {collection} now: {access.effective(principal, collection)}"))
    st.subheader("Audit log")
    rows = access.audit_log(200)
    st.dataframe(rows, hide_index=True, width="stretch")
    st.download_button("Export the audit log (JSONL)", "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                               for r in access.audit_log(100_000)),
                       file_name="kb-audit.jsonl", mime="application/jsonl")


def main() -> None:
    st.set_page_config(page_title="Knowledge base", page_icon="📚", layout="wide")
    settings = Settings()
    home = str(Path(settings.home).resolve())
    base = data_home(home).collection()
    try:
        who = signed_in(base)
        if who is None:
            return
        known = collection_names(base.catalogue)
    except KBError as exc:
        st.error(label_escape(str(exc)))
        return
    collections = who.readable(sorted(set(known) | {settings.collection}))
    with st.sidebar:
        st.title("Knowledge base")
        st.caption(label_escape(f"Signed in as {who.name}" + (" (admin)" if who.admin else "")))
        if st.button("Sign out"):
            end_session()
            st.rerun()
        if not collections:
            st.info("No collection is shared with you yet; ask an administrator.")
            return
        default = collections.index(settings.collection) if settings.collection in collections else 0
        collection = st.selectbox("Collection", collections, index=default)
    kb = data_home(home).collection(collection).for_caller(who)
    with st.sidebar:
        st.caption(md_escape(f"Answers by {kb.generator().label}"))
    names = ["Chat", "Documents", "Status"] + (["Admin"] if who.admin else [])
    tabs = dict(zip(names, st.tabs(names), strict=True))
    with tabs["Chat"]:
        guarded(chat, kb)
    with tabs["Documents"]:
        guarded(documents, kb)
    with tabs["Status"]:
        guarded(status, kb)
    if who.admin:
        with tabs["Admin"]:
            guarded(admin, kb)


main()
