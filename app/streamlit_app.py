"""The web UI (widgets only): chat with streamed, cited answers; upload, list, delete and re-index
documents; status and monitoring. Every action is one KnowledgeBase call; all text is escaped."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import streamlit as st

from app.page_image import cited_page_png
from app.render import highlight, label_escape, linked_markers, md_escape
from app.worker import Worker
from ingest.extract import MIME
from kb.access import Identity
from kb.errors import KBError, NotFoundError
from kb.home import Home
from kb.knowledge_base import KnowledgeBase
from kb.document_lookup import collection_names
from kb.settings import Settings


@st.cache_resource(show_spinner="Loading the knowledge base…")
def data_home(home: str) -> Home:
    """One Home per data home, shared by every browser session and collection (models load once)."""
    return Home(Settings(), home)


def wait_notice(msg: str) -> None:
    st.info(f"Waiting for another indexing job to finish ({label_escape(msg)})…")


@st.cache_data(show_spinner=False, max_entries=64)
def page_picture(path: str, mtime: float, page: int, sentences: tuple[str, ...]) -> tuple[bytes, int] | None:
    return cited_page_png(Path(path), page, list(sentences))  # mtime: a changed file is drawn again


def render_sources(kb: KnowledgeBase, citations: list[dict], key: str) -> None:
    """Each cited passage (citation_json's shape), its sentences highlighted; a PDF's cited page can be
    shown as it is printed, the sentences marked on it; the original can be downloaded."""
    for c in citations:
        name, n = c["document"], c["n"]
        title = f"[{n}] {name}" + (f" — page {c['page']}" if c["page"] else "") + (f" — {c['heading']}" if c["heading"] else "")
        st.markdown(f'<span id="{key}-{int(n)}"></span>', unsafe_allow_html=True)  # where the answer's [n] links to
        with st.expander(label_escape(title + (" — read by OCR" if c.get("ocr") else ""))):  # titles render Markdown
            if c.get("ocr"):
                st.caption("This page is a scan: its text was read by OCR and may hold misread characters. "
                           "Check the original.")
            st.markdown(highlight(c["text"], c["sentences"]))
            if not kb.downloadable(c["path"]):  # read only when clicked (files may be 200 MB; every rerun would read them)
                continue
            if c["page"] and c["path"].lower().endswith(".pdf") and \
                    st.toggle(label_escape(f"Show page {c['page']}"), key=f"page-{key}-{n}"):
                try:
                    mtime = Path(c["path"]).stat().st_mtime
                except OSError:  # removed since the answer
                    mtime = None
                picture = page_picture(c["path"], mtime, c["page"], tuple(c["sentences"])) if mtime else None
                if picture:
                    st.image(picture[0], caption=label_escape(f"{name}, page {c['page']}"
                                                              + ("" if picture[1] else " (the cited sentences were not found on its text layer)")))
            st.download_button(label_escape(f"Download {name}"), data=lambda src=c["path"]: kb.original(src) or b"",
                               file_name=name, mime=MIME.get(Path(c["path"]).suffix.lower(), "application/octet-stream"),
                               key=f"dl-{key}-{n}")


def rate(turn_id: int, key: str) -> None:
    """The 👍/👎 widget (and the comment after 👎) of an answer changed: stored with its turn."""
    who, value = st.session_state.get("who"), st.session_state.get(f"fb-{key}")
    if who is None or value is None:
        return
    try:
        conversations().rate(who, turn_id, "up" if value == 1 else "down", st.session_state.get(f"note-{key}"))
    except KBError as exc:  # a callback: nothing above it would catch this (the chat deleted in another tab)
        st.toast(label_escape(f"The rating was not saved: {exc}"))
        return
    st.toast("Thanks: your rating was saved")


def conversations():  # noqa: ANN201 - kb.conversations.Conversations
    return data_home(str(Path(Settings().home).resolve())).conversations


def render_turn(kb: KnowledgeBase, turn: dict, last: bool) -> None:
    """One kept question and its answer: what was searched, the answer with linked [n], its sources,
    and 👍/👎, copy, and (the last one) regenerate."""
    key = f"t{turn['id']}"
    with st.chat_message("user"):
        st.markdown(md_escape(turn["question"]))
    with st.chat_message("assistant"):
        if turn["standalone"]:
            st.caption(label_escape(f"Searched for: {turn['standalone']}"))
        if not turn["found"]:
            st.info(md_escape(turn["answer"]))
        else:
            st.markdown(linked_markers(md_escape(turn["answer"]), f"src-{key}"))
            render_sources(kb, turn["citations"], f"src-{key}")
        cols = st.columns([2, 1, 1, 6])
        with cols[0]:
            st.feedback("thumbs", key=f"fb-{key}", default={"up": 1, "down": 0}.get(turn["rating"]),
                        on_change=rate, args=(turn["id"], key))
        with cols[1], st.popover("Copy", help="the answer as text, with a copy button"):
            st.code(turn["answer"], language=None, wrap_lines=True)
        if last:
            with cols[2]:
                if st.button("Regenerate", key=f"again-{key}", help="answer this question again, in its place"):
                    st.session_state["ask"] = (turn["question"], turn["id"])
                    st.rerun()
        if st.session_state.get(f"fb-{key}") == 0 or turn["rating"] == "down":
            st.text_input("What was wrong? (optional)", key=f"note-{key}", value=turn["comment"] or "",
                          on_change=rate, args=(turn["id"], key))


def first_visit_hint(kb: KnowledgeBase) -> None:
    docs = kb.documents()
    if not docs:
        st.info("This collection holds no documents yet: add some on the Documents page.")
        return
    names = ", ".join(Path(d.path).name for d in docs[:5]) + (" …" if len(docs) > 5 else "")
    st.caption(label_escape(f"Ask anything about the {len(docs)} documents of {kb.collection} ({names}). "
                            "Follow-up questions are understood; every answer cites its sources."))


def chat(kb: KnowledgeBase) -> None:
    """The open conversation (kept in the catalogue: it survives a reload and another browser), and
    the question box, pinned at the bottom of the page."""
    cid = st.session_state.get("conversation")
    turns = []
    if cid is not None:
        try:
            conversation = conversations().get(kb.caller, cid)
            if conversation["collection"] != kb.collection:
                raise NotFoundError("another collection was chosen: a new chat begins")
            turns = conversation["turns"]
        except NotFoundError:  # deleted meanwhile (another tab), or the collection box changed
            st.session_state.pop("conversation", None)
            cid = None
    if not turns:
        first_visit_hint(kb)
    for i, turn in enumerate(turns):
        render_turn(kb, turn, i == len(turns) - 1)
    if stopped := st.session_state.pop("stopped", None):
        with st.chat_message("user"):
            st.markdown(md_escape(stopped[0]))
        with st.chat_message("assistant"):
            st.markdown(md_escape(stopped[1]) if stopped[1] else "")
            st.caption("Stopped: this answer was not kept.")
    question, regenerate = st.chat_input("Ask a question about your documents"), None
    if not question and "ask" in st.session_state:
        question, regenerate = st.session_state.pop("ask")
    if question:
        answer_now(kb, question, cid, regenerate)


def answer_now(kb: KnowledgeBase, question: str, cid: int | None, regenerate: int | None = None) -> None:
    """Stream the answer (a spinner until its first words; Stop ends it), keep it in the conversation,
    then show the page again from what was kept."""
    with st.chat_message("user"):
        st.markdown(md_escape(question))
    with st.chat_message("assistant"):
        st.button("Stop", key="stop", help="stop this answer")  # a click reruns the page, which ends the stream
        try:
            with st.spinner("Searching the documents…"):
                stream = kb.converse(question, cid, regenerate=regenerate)
                # kept before the next Streamlit call: a question sent meanwhile interrupts this run there
                st.session_state["conversation"] = stream.conversation_id
        except KBError as exc:
            st.error(f"Could not answer: {md_escape(str(exc))}")
            return
        if stream.retrieval.standalone:
            st.caption(label_escape(f"Searched for: {stream.retrieval.standalone}"))
        if stream.retrieval.relevant:
            st.caption(md_escape(stream.label))
        # What has arrived is kept in the session before each Streamlit call: Stop (or a new question)
        # interrupts this run at such a call, and the next run shows it as stopped.
        st.session_state["stopped"] = (question, "")
        shown, text = st.empty(), ""
        pieces = iter(stream)
        try:
            with st.spinner("Writing the answer…"):
                first = next(pieces, "")
            for piece in itertools.chain([first], pieces):
                text += piece
                st.session_state["stopped"] = (question, text)
                # The whole text so far is escaped at each piece: a URL split across pieces is still defused.
                shown.markdown(md_escape(text))
        except KBError as exc:
            st.session_state.pop("stopped", None)
            st.error(f"Could not answer: {md_escape(str(exc))}")
            return
        finally:
            if stream.answer is None:  # interrupted: the generator is told to stop; nothing is kept
                stream.close()
        st.session_state.pop("stopped", None)
    st.rerun()


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
    st.query_params.clear()  # the page in the address too: the next person starts on the chat


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
    st.subheader("Answers marked 👎")
    convs = conversations()
    down = convs.rated(-1, limit=200)
    if not down:
        st.caption("No answer has been marked 👎 yet.")
    for t in down:
        with st.expander(label_escape(f"{t['question']} — {t['user']}, {t['rated_at']}")):
            if t["comment"]:
                st.markdown("**Comment:** " + md_escape(t["comment"]))
            if t["history"]:
                st.caption(label_escape("Asked after: " + " / ".join(h["question"] for h in t["history"])))
            if t["standalone"]:
                st.caption(label_escape(f"Searched for: {t['standalone']}"))
            st.markdown(md_escape(t["answer"]))
            st.dataframe([{"chunk": r["chunk_id"], "score": r["score"]} for r in t["retrieved"]], hide_index=True)
    st.caption(label_escape("Conversations per user (no text): " + ", ".join(
        f"{c['user']} {c['conversations']} ({c['turns']} answers)" for c in convs.counts()) or "none yet"))
    st.subheader("Audit log")
    rows = access.audit_log(200)
    st.dataframe(rows, hide_index=True, width="stretch")
    st.download_button("Export the audit log (JSONL)", "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                               for r in access.audit_log(100_000)),
                       file_name="kb-audit.jsonl", mime="application/jsonl")


PAGES = {"chat": "💬 Chat", "documents": "📄 Documents", "status": "📈 Status", "admin": "🔑 Admin"}


def conversation_list(who: Identity) -> None:
    """The sidebar's chats: new, the caller's conversations (latest first), rename or delete the open one."""
    convs = conversations()
    if st.button("New chat", icon="➕", width="stretch"):
        st.session_state.pop("conversation", None)
        st.rerun()
    listed = convs.list(who)
    current = st.session_state.get("conversation")
    for c in listed[:100]:
        if st.button(label_escape(c["title"]), key=f"conv-{c['id']}", width="stretch",
                     type="primary" if c["id"] == current else "tertiary"):
            st.session_state["conversation"] = c["id"]
            if c["collection"]:  # applied before the collection box is drawn again
                st.session_state["open_collection"] = c["collection"]
            st.rerun()
    mine = next((c for c in listed if c["id"] == current), None)
    if mine is None:
        return
    with st.popover("Rename or delete this chat", width="stretch"):
        with st.form("rename", border=False):
            title = st.text_input("Title", value=mine["title"], max_chars=200)
            if st.form_submit_button("Rename") and title.strip():
                convs.rename(who, mine["id"], title)
                st.rerun()
        sure = st.checkbox("Yes, delete this chat and its answers", key=f"sure-{mine['id']}")
        if st.button("Delete chat", type="primary", disabled=not sure):
            convs.delete(who, mine["id"])
            st.session_state.pop("conversation", None)
            st.rerun()


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
    pages = [p for p in PAGES if p != "admin" or who.admin]
    if st.session_state.get("page") not in pages:  # a new session: the page in the address (a reload stays there)
        st.session_state["page"] = st.query_params.get("page") if st.query_params.get("page") in pages else "chat"
    with st.sidebar:
        st.title("Knowledge base")
        st.caption(label_escape(f"Signed in as {who.name}" + (" (admin)" if who.admin else "")))
        if st.button("Sign out"):
            end_session()
            st.rerun()
        if not collections:
            st.info("No collection is shared with you yet; ask an administrator.")
            return
        page = st.radio("Page", pages, format_func=PAGES.get, label_visibility="collapsed", key="page")
        st.query_params["page"] = page
        if (wanted := st.session_state.pop("open_collection", None)) in collections:
            st.session_state["collection"] = wanted
        if st.session_state.get("collection") not in collections:
            st.session_state["collection"] = settings.collection if settings.collection in collections else collections[0]
        collection = st.selectbox("Collection", collections, key="collection")
    kb = data_home(home).collection(collection).for_caller(who)
    with st.sidebar:
        st.caption(md_escape(f"Answers by {kb.generator().label}"))
        if page == "chat":
            st.divider()
            guarded(lambda _: conversation_list(who), kb)
    guarded({"chat": chat, "documents": documents, "status": status, "admin": admin}[page], kb)


main()
