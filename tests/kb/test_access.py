"""Identities and permissions with the real argon2 and the real catalogue (SQLite and PostgreSQL):
nothing secret stored in clear, sign-in slowed after repeated failures, grants through groups, and the
KnowledgeBase refusing a caller before anything is read."""

from __future__ import annotations

import hashlib

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
