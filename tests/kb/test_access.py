"""Identities and permissions with the real argon2 and the real catalogue (SQLite and PostgreSQL):
nothing secret stored in clear, sign-in slowed after repeated failures, grants through groups, and the
KnowledgeBase refusing a caller before anything is read."""

from __future__ import annotations

import hashlib
import time

import pytest
from sqlalchemy import select, update

from kb.access import FREE_ATTEMPTS, AccessControl
from kb.catalogue import ApiToken, Catalogue, User
from kb.errors import AuthError, ConfigError, PermissionDeniedError
from kb.knowledge_base import KnowledgeBase


@pytest.fixture
def access(catalogue_backend, tmp_path) -> AccessControl:
    return AccessControl(Catalogue(catalogue_backend or f"sqlite:///{tmp_path / 'c.sqlite3'}"))


def test_passwords_and_tokens_are_never_stored_in_clear(access):
    access.add_user("alice", "correct horse battery")
    token = access.create_token("alice")
    with access.catalogue.session() as s:
        user = s.scalar(select(User).where(User.name == "alice"))
        stored = s.scalar(select(ApiToken.token_sha256))
    assert user.password_hash.startswith("$argon2id$") and "correct horse" not in user.password_hash
    assert stored == hashlib.sha256(token.encode()).hexdigest() and token not in stored
    assert access.sign_in("alice", "correct horse battery").name == "alice"
    assert access.from_token(token).name == "alice"
    assert access.revoke_token(token[:10]) == 1
    with pytest.raises(AuthError, match="not valid"):
        access.from_token(token)
    with pytest.raises(AuthError, match="sign in first"):
        access.from_token(None)


def test_repeated_wrong_passwords_lock_the_account_for_growing_times(access):
    access.add_user("alice", "correct horse battery")
    for _ in range(FREE_ATTEMPTS):
        with pytest.raises(AuthError, match="wrong user name or password"):
            access.sign_in("alice", "guess")
    with access.catalogue.session() as s:
        locked_until = s.scalar(select(User.locked_until))
    assert locked_until is not None
    with pytest.raises(AuthError, match="wrong user name or password"):
        access.sign_in("alice", "correct horse battery")  # even the right one waits, and is not told why
    with access.catalogue.session() as s:  # the lock runs out
        s.execute(update(User).values(locked_until=None))
    with pytest.raises(AuthError, match="wrong"):
        access.sign_in("alice", "guess again")
    with access.catalogue.session() as s:
        assert s.scalar(select(User.locked_until)) is not None  # each further failure locks again
    with pytest.raises(AuthError, match="wrong user name or password"):
        access.sign_in("nobody", "x")  # an unknown name reads the same


def test_grants_through_groups_take_the_best_level(access):
    for name in ("alice", "bob"):
        access.add_user(name, None)
    access.add_group("finance")
    access.add_member("finance", "alice")
    access.grant("finance", "ledger", "read")
    access.grant("alice", "ledger", "write")
    access.grant("bob", "*", "read")
    alice, bob = access.identity("alice"), access.identity("bob")
    assert alice.may("ledger", "write") and not alice.may("ledger", "admin") and not alice.may("hr", "read")
    assert bob.may("hr", "read") and not bob.may("hr", "write")
    access.add_group("alice")
    with pytest.raises(ConfigError, match="both a user and a group"):
        access.grant("alice", "x", "read")
    access.grant("group:alice", "x", "read")
    access.revoke("finance", "ledger")
    access.revoke("user:alice", "ledger")
    assert not access.identity("alice").may("ledger", "read")


def test_the_knowledge_base_refuses_a_caller_before_reading(settings, tmp_path):
    docs = tmp_path / "hr"
    docs.mkdir()
    (docs / "pay.md").write_text("# Pay\n\nThe bonus pool is 4.2 million this year.\n", encoding="utf-8")
    owner = KnowledgeBase(settings=settings, collection="hr")
    owner.sync([docs])
    owner.access.add_user("eve", None)
    owner.access.grant("eve", "default", "write")
    eve = owner.for_caller(owner.access.identity("eve"))
    for call in (lambda: eve.search("bonus pool"), lambda: eve.ask("bonus pool?"), eve.documents, eve.status,
                 lambda: eve.original(str(docs / "pay.md")), lambda: eve.remove("pay.md"),
                 lambda: eve.submit_reindex()):
        with pytest.raises(PermissionDeniedError, match="eve may not"):
            call()
    assert owner.search("bonus pool")  # the operator (no caller) still reads it
    assert owner.access.audit_log() == []  # refused calls leave no "asked" entry
    eve_default = owner.for_caller(owner.access.identity("eve"), "default")
    eve_default.search("anything at all")
    assert owner.access.audit_log()[0] | {"at": None} == {"at": None, "actor": "eve", "action": "search",
                                                           "collection": "default", "question": "anything at all"}


def _counting_verify(access: AccessControl) -> list[str]:
    """Wrap the real argon2 check to record which hashes it was asked to verify (the dummy or a user's)."""
    from argon2 import PasswordHasher

    seen: list[str] = []

    class Counting(PasswordHasher):
        def verify(self, hash_: str, password: str) -> bool:
            seen.append("dummy" if hash_ == getattr(access, "_dummy_hash", None) else "user")
            return super().verify(hash_, password)

    access.hasher = Counting()
    return seen


def test_parallel_guesses_verify_no_more_than_the_free_attempts(access, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    import kb.access as module

    monkeypatch.setattr(module, "FIRST_LOCK_S", 60)  # the burst ends inside the first lock even on a busy machine
    access.add_user("alice", "correct horse battery")
    seen = _counting_verify(access)
    with ThreadPoolExecutor(40) as pool:  # 40 guesses at once; the old code verified every one of them
        results = list(pool.map(lambda i: _try(access, "alice", f"guess {i}"), range(40)))
    assert results.count("refused") == 40
    assert seen.count("user") <= FREE_ATTEMPTS, seen
    with access.catalogue.session() as s:
        first_lock = s.scalar(select(User.locked_until))
    assert first_lock is not None
    with ThreadPoolExecutor(20) as pool:
        list(pool.map(lambda i: _try(access, "alice", "x"), range(20)))
    with access.catalogue.session() as s:
        assert s.scalar(select(User.locked_until)) >= first_lock  # a lock never gets shorter
    rows = [r for r in access.audit_log() if r["action"] == "sign-in-failed"]
    assert rows and all(r["actor"] == "alice" for r in rows) and any(r["locked"] for r in rows)


def _try(access: AccessControl, name: str, password: str) -> str:
    try:
        access.sign_in(name, password)
        return "signed in"
    except AuthError:
        return "refused"


def test_a_name_that_cannot_sign_in_costs_one_argon2_check_like_any_other(access):
    access.add_user("robot", None)  # a token-only account
    access.add_user("alice", "correct horse battery")
    seen = _counting_verify(access)
    for name in ("robot", "nobody", "alice"):
        with pytest.raises(AuthError, match="wrong user name or password"):
            access.sign_in(name, "some password")
    assert seen == ["dummy", "dummy", "user"]  # the old code checked nothing for the token-only account
    log = access.audit_log()
    assert [r["actor"] for r in log if r["action"] == "sign-in-failed"] == ["alice", "(unknown)", "robot"]


def test_none_is_a_deny_that_wins_over_group_and_wildcard_grants(access):
    for name in ("dave", "alice", "erin"):
        access.add_user(name, None)
    access.add_group("staff")
    for name in ("dave", "alice"):
        access.add_member("staff", name)
    access.grant("staff", "*", "read")
    access.grant("dave", "hr", "none")
    dave = access.identity("dave")
    assert not dave.may("hr", "read") and dave.may("default", "read")  # the old `none` revoked, not denied
    assert access.effective("dave", "hr") == "none"
    access.grant("alice", "ledger", "write")
    access.grant("group:staff", "ledger", "none")  # a group's deny reaches its members, over their own grant
    assert not access.identity("alice").may("ledger", "read") and access.identity("alice").may("hr", "read")
    assert access.effective("staff", "ledger") == "none for group staff; members: alice none, dave none"
    access.grant("erin", "ledger", "read")
    assert access.identity("erin").may("ledger", "read")  # not in the group: not denied
    access.revoke("group:staff", "ledger")
    assert access.identity("alice").may("ledger", "write")
    access.grant("erin", "*", "none")
    assert not access.identity("erin").may("ledger", "read")


def test_failures_are_audited_within_a_budget_and_the_oldest_pruned(access, monkeypatch):
    import kb.access as module

    monkeypatch.setattr(module, "FAILURES_PER_MINUTE", 3)
    monkeypatch.setattr(module, "FAILURES_KEPT", 4)
    fresh = AccessControl(access.catalogue)
    fresh.add_user("alice", None)
    for i in range(10):
        fresh.audit_failure("(no valid token)", "refused", None, status=401, n=i)
    assert [r["n"] for r in fresh.audit_log() if r["action"] == "refused"] == [2, 1, 0]
    fresh._failures.clock = lambda: time.monotonic() + 60  # the next minute
    fresh.audit_failure("(no valid token)", "refused", None, status=401, n=10)
    rows = fresh.audit_log()
    assert rows[1]["action"] == "failures-not-recorded" and rows[1]["count"] == 7
    assert [r.get("n") for r in rows if r["action"] in module.FAILURE_ACTIONS] == [10, None, 2, 1]  # 4 kept


def test_token_creation_and_revocation_are_audited(access):
    access.add_user("alice", None)
    token = access.create_token("alice", actor="admin")
    access.revoke_token(token[:10])
    rows = access.audit_log()
    assert [(r["actor"], r["action"], r["prefix"]) for r in rows] == [("operator", "token-revoke", token[:10]),
                                                                      ("admin", "token-create", token[:10])]
    assert token not in str(rows)


def test_kb_grant_none_denies_and_prints_the_level_it_leaves(settings, capsys):
    from app.cli import commands, main

    kb = KnowledgeBase(settings=settings)
    kb.access.add_user("dave", None)
    kb.access.add_group("staff")
    kb.access.add_member("staff", "dave")
    home = ["--home", str(settings.home)]
    assert main([*home, "grant", "group:staff", "*", "read"]) == 0
    assert main([*home, "grant", "dave", "hr", "none"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "dave on 'hr' now: none"
    assert not kb.access.identity("dave").may("hr", "read") and kb.access.identity("dave").may("wiki", "read")
    assert main([*home, "revoke", "dave", "hr"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "dave on 'hr' now: read"
    assert [r["action"] for r in kb.access.audit_log()][:2] == ["revoke", "grant"]
    host = next(p for p in commands.commands["ui"].params if p.name == "host")
    assert host.default == "127.0.0.1"  # `kb ui` listens on this machine unless told
