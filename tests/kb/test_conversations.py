"""Conversations (issue 25): kept per user in the catalogue (SQLite and PostgreSQL), follow-ups resolved
before retrieval for each backend (the extractive one, the tiny real transformers model), ratings that
`kb feedback export` turns into a `kb eval` file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import main
from kb.conversations import Turn
from kb.errors import ConfigError, NotFoundError, PermissionDeniedError
from kb.knowledge_base import KnowledgeBase
from kb.settings import ChunkingSettings, GeneratorSettings
from retrieval.followup import condensed, stands_alone
from tests.tiny_models import build_qwen2

EXPENSES = """# Expense reports

## Submitting a report

Employees submit an expense report in the Concur portal, attaching a photo of every receipt. The line manager approves it in the portal.

## What can be claimed

Train tickets, hotel nights and meals on business trips can be claimed; private costs cannot.

## Company credit cards

Spending on a company credit card is imported into the portal and only needs a receipt.

## Time limits

Reports must be filed within 30 days of the trip. Late reports need a written reason from the line manager.

## Paper receipts

Original paper receipts go to the finance office in the envelope provided.
"""
VPN = """# VPN certificates

The VPN client is installed from the IT self-service portal.
The deadline for renewing your VPN certificate is the end of each calendar year; IT sends a reminder in November.
"""
CANTEEN = "# Canteen\n\nThe canteen on the ground floor serves lunch from 11:30 to 14:00 on working days.\n"
FIRST, FOLLOW_UP = "How do I submit an expense report?", "What is the deadline for that?"


def write_office_docs(folder: Path) -> Path:
    """Three documents: the follow-up's word "deadline" is only in the VPN one, its answer in the
    expense one."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("expenses.md", EXPENSES), ("vpn.md", VPN), ("canteen.md", CANTEEN)):
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def office(settings, tmp_path):
    settings = settings.model_copy(update={"chunking": ChunkingSettings(chunk_tokens=40, overlap_tokens=0)})
    kb = KnowledgeBase(settings=settings)
    kb.sync([write_office_docs(tmp_path / "docs")])
    kb.access.add_user("ann", "ann-password")
    kb.access.add_user("bob", "bob-password")
    kb.access.grant("ann", "default", "read")
    kb.access.grant("bob", "default", "read")
    return kb


@pytest.fixture
def cli(office, monkeypatch):
    """`kb` commands run in this process read the office's home with its settings."""
    for name, value in (("EMBEDDING__MODEL", office.settings.embedding.model), ("CHUNKING__CHUNK_TOKENS", "40"),
                        ("CHUNKING__OVERLAP_TOKENS", "0")):
        monkeypatch.setenv(f"KB_{name}", value)


def top_heading(r) -> str:  # noqa: ANN001
    return f"{Path(r.contexts[0].source).name}: {r.contexts[0].heading}"


def test_a_follow_up_is_searched_with_the_previous_question_by_the_extractive_backend(office):
    alone = office.retrieve(FOLLOW_UP, backend="extractive")
    assert top_heading(alone) == "vpn.md: VPN certificates"  # alone, "deadline" finds the wrong document
    first = office.ask(FIRST, backend="extractive")
    kept = [Turn(first.question, first.text, None, tuple(c.chunk_id for c in first.contexts))]
    for history in (kept, [Turn(FIRST, "whatever was answered")]):  # with chunk ids, or the text alone (OpenAI)
        r = office.retrieve(FOLLOW_UP, history=history, backend="extractive")
        assert top_heading(r) == "expenses.md: Expense reports > Time limits"
        assert r.standalone == f"{FIRST} {FOLLOW_UP}"
    same = office.retrieve("When does the canteen on the ground floor serve lunch?", history=kept, backend="extractive")
    assert same.standalone is None and top_heading(same) == "canteen.md: Canteen"  # it stands alone


def test_which_questions_stand_alone():
    for q in ("How do I submit an expense report?", "Debian 的软件包是如何维护的？", "如何报告 Debian 中的缺陷？"):
        assert stands_alone(q), q
    for q in ("What is the deadline for that?", "And modules?", "它们存放在哪里？", "那 conffile 呢？", "过去还用过哪些？"):
        assert not stands_alone(q), q


def test_conversations_belong_to_their_owner(office, catalogue_backend):
    # a view per caller, as the API and the page make them
    ann = office.for_caller(office.access.sign_in("ann", "ann-password"))
    bob = office.for_caller(office.access.sign_in("bob", "bob-password"))
    convs = office.house.conversations
    s1 = ann.converse(FIRST, backend="extractive")
    s1.result()
    cid = s1.conversation_id
    s2 = ann.converse(FOLLOW_UP, cid, backend="extractive")
    a2 = s2.result()
    assert s2.conversation_id == cid and s2.turn_id and a2.standalone == f"{FIRST} {FOLLOW_UP}"
    assert "Time limits" in a2.contexts[0].heading
    other = ann.converse("When is lunch served?", backend="extractive")
    other.result()
    listed = convs.list(ann.caller)
    assert [c["id"] for c in listed] == [other.conversation_id, cid]  # the latest active first
    assert listed[1]["title"] == FIRST and listed[1]["turns"] == 2 and listed[1]["collection"] == "default"
    shown = convs.get(ann.caller, cid)
    assert [t["question"] for t in shown["turns"]] == [FIRST, FOLLOW_UP]
    assert shown["turns"][1]["standalone"] == a2.standalone and shown["turns"][1]["retrieved"]
    assert shown["turns"][1]["citations"][0]["document"] == "expenses.md"
    for act in (lambda: convs.get(bob.caller, cid), lambda: convs.rename(bob.caller, cid, "mine"),
                lambda: convs.delete(bob.caller, cid), lambda: convs.rate(bob.caller, s2.turn_id, "down"),
                lambda: bob.converse("and then?", cid)):
        with pytest.raises(NotFoundError):
            act()
    assert convs.list(bob.caller) == []
    assert convs.rename(ann.caller, cid, "  Expense   questions ")["title"] == "Expense questions"
    with pytest.raises(ConfigError):
        convs.rate(ann.caller, s2.turn_id, "meh")
    convs.rate(ann.caller, s2.turn_id, "down", "it should say 30 days")
    assert convs.counts() == [{"user": "ann", "conversations": 2, "turns": 3}]  # admins: counts, no text
    down = convs.rated(-1)
    assert [(d["question"], d["comment"], d["user"]) for d in down] == [(FOLLOW_UP, "it should say 30 days", "ann")]
    assert down[0]["history"][0]["question"] == FIRST
    convs.delete(ann.caller, cid)
    assert [c["id"] for c in convs.list(ann.caller)] == [other.conversation_id] and convs.rated() == []
    with pytest.raises(NotFoundError):
        convs.get(ann.caller, cid)
    office.access.remove_user("ann")  # a removed user's conversations go with them
    assert convs.counts() == []


def test_feedback_becomes_an_eval_file_that_kb_eval_checks(office, cli, capsys, tmp_path):
    ann = office.for_caller(office.access.sign_in("ann", "ann-password"))
    convs = office.house.conversations
    s1 = ann.converse(FIRST, backend="extractive")
    s1.result()
    s2 = ann.converse(FOLLOW_UP, s1.conversation_id, backend="extractive")
    s2.result()
    convs.rate(ann.caller, s1.turn_id, "up")
    convs.rate(ann.caller, s2.turn_id, "up", "right")
    lunch = ann.converse("When does the canteen serve lunch?", backend="extractive")
    lunch.result()
    convs.rate(ann.caller, lunch.turn_id, "down")
    home = str(office.settings.home)
    out = tmp_path / "rated.jsonl"
    capsys.readouterr()
    assert main(["--home", home, "feedback", "list"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["question"] for r in listed] == ["When does the canteen serve lunch?"]
    assert main(["--home", home, "feedback", "export", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["question"] for r in rows} == {FIRST, FOLLOW_UP}
    follow = next(r for r in rows if r["question"] == FOLLOW_UP)
    assert follow["history"][0]["question"] == FIRST and follow["source"] == "expenses.md"
    capsys.readouterr()
    assert main(["--home", home, "eval", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["questions"] == 2 and report["recall@3"] == 1.0  # the follow-up is found with its history
    # a change that loses the follow-up's history shows up in the same check
    bare = tmp_path / "bare.jsonl"
    bare.write_text("".join(json.dumps({**r, "history": []}) + "\n" for r in rows))
    assert main(["--home", home, "eval", str(bare), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["recall@1"] == 0.5


def test_an_llm_backend_condenses_the_follow_up_first(office, tmp_path_factory):
    model = build_qwen2(tmp_path_factory.mktemp("qwen2") / "model")
    settings = office.settings.model_copy(update={"generator": GeneratorSettings(
        backend="transformers", model=str(model), temperature=0, max_new_tokens=8)})
    kb = KnowledgeBase(settings=settings)
    history = [Turn(FIRST, "Employees submit an expense report in the Concur portal.[1]")]
    r = kb.retrieve(FOLLOW_UP, history=history)
    assert "condense" in r.timings and r.timings["condense"] > 0  # its own stage
    assert r.standalone  # the tiny model's rewrite (random words), or the question when it gave none
    a = kb.ask(FOLLOW_UP, history=history)
    assert a.backend == "transformers" and "condense" in a.timings and a.standalone == r.standalone
    alone = kb.retrieve("How do I submit an expense report to the line manager?", history=history)
    assert "condense" not in alone.timings and alone.standalone is None  # stands alone: no model call


def test_a_condensed_reply_is_cleaned_or_refused():
    assert condensed('"What is the deadline for filing an expense report?"\nBecause…', "x?") == \
        "What is the deadline for filing an expense report?"
    assert condensed("改写后的问题：报销单的截止日期是什么？", "那截止日期呢？") == "报销单的截止日期是什么？"
    assert condensed("", "What about that?") == "What about that?"
    assert condensed("word " * 400, "Why?") == "Why?"  # an answer, not a question


def test_regenerate_replaces_the_answer_and_refusals_leave_no_conversation(office):
    ann = office.for_caller(office.access.sign_in("ann", "ann-password"))
    convs = office.house.conversations
    with pytest.raises(PermissionDeniedError):  # a backend a reader may not choose: refused before any row
        ann.converse(FIRST, backend="transformers")
    assert convs.list(ann.caller) == []
    s1 = ann.converse(FIRST, backend="extractive")
    s1.result()
    cid = s1.conversation_id
    s2 = ann.converse(FOLLOW_UP, cid, backend="extractive")
    s2.result()
    convs.rate(ann.caller, s2.turn_id, "down")
    again = ann.converse(FOLLOW_UP, cid, backend="extractive", regenerate=s2.turn_id)
    assert again.retrieval.standalone == f"{FIRST} {FOLLOW_UP}"  # from the turns before it, not after itself
    again.result()
    turns = convs.get(ann.caller, cid)["turns"]
    assert [t["id"] for t in turns] == [s1.turn_id, again.turn_id] and turns[1]["rating"] is None
    with pytest.raises(ConfigError, match="about 'default'"):  # a conversation stays on its collection
        ann.reading(["default"]).converse("And then?", cid)
    s3 = ann.converse("And who approves it?", cid, backend="extractive")
    s3.result()
    convs.rate(ann.caller, s3.turn_id, "up")
    rated = convs.rated(1)[0]
    assert rated["history"] == [{"question": FIRST}, {"question": FOLLOW_UP}]  # no unrated answer's text


def test_a_long_chain_of_follow_ups_does_not_snowball():
    from retrieval.followup import JOINED_CHARS, joined

    turn = Turn("and " * 200 + "then?", standalone="x " * 400)
    assert len(joined("What about it?", turn)) <= JOINED_CHARS + len("What about it?") + 1


def test_kb_search_queries_take_earlier_turns(office, cli, capsys, tmp_path):
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"id": "alone", "question": FOLLOW_UP}) + "\n"
                       + json.dumps({"id": "follow", "question": FOLLOW_UP, "history": [{"question": FIRST}]}) + "\n")
    capsys.readouterr()
    assert main(["--home", str(office.settings.home), "search", "--queries", str(queries)]) == 0
    rows = {r["id"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["alone"]["contexts"][0]["document"] == "vpn.md" and "standalone" not in rows["alone"]
    assert rows["follow"]["contexts"][0]["document"] == "expenses.md"
    assert rows["follow"]["standalone"] == f"{FIRST} {FOLLOW_UP}"
    queries.write_text(json.dumps({"id": "bad", "question": "x", "history": [{"answer": "no question"}]}) + "\n")
    assert main(["--home", str(office.settings.home), "search", "--queries", str(queries)]) == 2
