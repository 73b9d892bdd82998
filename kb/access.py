"""Who may see what: users and groups, passwords (argon2id) and API tokens (only their sha256 is kept),
per-collection grants (read < write < admin), and the audit log. The KnowledgeBase enforces an
`Identity` on every call made for a caller (`KnowledgeBase.for_caller`); None is the local operator
(the CLI, which reads the data home directly anyway).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import DatabaseError

from kb.catalogue import ApiToken, AuditEntry, Catalogue, Grant, Group, GroupMember, User, utcnow
from kb.errors import AuthError, ConfigError, NotFoundError, PermissionDeniedError

LEVELS = {"read": 1, "write": 2, "admin": 3}
EVERY_COLLECTION = "*"
FREE_ATTEMPTS = 5  # wrong passwords in a row before each further one locks the account for a while
MAX_LOCK_S = 900


@dataclass(frozen=True)
class Identity:
    name: str
    admin: bool  # manages users and grants; every level on every collection
    grants: dict[str, str]  # collection (or "*") -> the best level from the user's own and its groups' grants

    def level(self, collection: str) -> int:
        if self.admin:
            return LEVELS["admin"]
        return max(LEVELS.get(self.grants.get(collection, ""), 0), LEVELS.get(self.grants.get(EVERY_COLLECTION, ""), 0))

    def may(self, collection: str, level: str) -> bool:
        return self.level(collection) >= LEVELS[level]

    def require(self, collection: str, level: str) -> None:
        if not self.may(collection, level):
            raise PermissionDeniedError(f"{self.name} may not {_VERB[level]} collection {collection!r}")

    def readable(self, collections: list[str]) -> list[str]:
        return [c for c in collections if self.may(c, "read")]


_VERB = {"read": "read", "write": "change", "admin": "administer"}


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AccessControl:
    def __init__(self, catalogue: Catalogue):
        from argon2 import PasswordHasher

        self.catalogue = catalogue
        self.hasher = PasswordHasher()  # argon2id, salted, memory-hard (~50 ms per check here)

    # -- users and groups ----------------------------------------------------------------------
    def add_user(self, name: str, password: str | None, admin: bool = False) -> None:
        with self.catalogue.session() as s:
            if s.scalar(select(User.id).where(User.name == name)) is not None:
                raise ConfigError(f"user {name!r} exists already")
            s.add(User(name=name, admin=admin, password_hash=self.hasher.hash(password) if password else None))

    def set_password(self, name: str, password: str) -> None:
        with self.catalogue.session() as s:
            user = self._user(s, name)
            user.password_hash, user.failed_sign_ins, user.locked_until = self.hasher.hash(password), 0, None

    def remove_user(self, name: str) -> None:
        with self.catalogue.session() as s:
            s.delete(self._user(s, name))

    def users(self) -> list[dict]:
        with self.catalogue.session() as s:
            groups = {}
            for user_id, group in s.execute(select(GroupMember.user_id, Group.name).join(Group)):
                groups.setdefault(user_id, []).append(group)
            return [{"name": u.name, "admin": u.admin, "groups": sorted(groups.get(u.id, [])),
                     "password": u.password_hash is not None}
                    for u in s.scalars(select(User).order_by(User.name))]

    def add_group(self, name: str) -> None:
        with self.catalogue.session() as s:
            if s.scalar(select(Group.id).where(Group.name == name)) is None:
                s.add(Group(name=name))

    def add_member(self, group: str, user: str) -> None:
        with self.catalogue.session() as s:
            g, u = self._group(s, group), self._user(s, user)
            if s.get(GroupMember, (g.id, u.id)) is None:
                s.add(GroupMember(group_id=g.id, user_id=u.id))

    def remove_member(self, group: str, user: str) -> None:
        with self.catalogue.session() as s:
            s.execute(delete(GroupMember).where(GroupMember.group_id == self._group(s, group).id,
                                                GroupMember.user_id == self._user(s, user).id))

    def remove_group(self, name: str) -> None:
        with self.catalogue.session() as s:
            s.delete(self._group(s, name))

    def groups(self) -> list[str]:
        with self.catalogue.session() as s:
            return list(s.scalars(select(Group.name).order_by(Group.name)))

    # -- grants -------------------------------------------------------------------------------------
    def grant(self, principal: str, collection: str, level: str) -> None:
        """`principal`: a user or group name; `user:NAME` / `group:NAME` when one name is both."""
        if level not in LEVELS:
            raise ConfigError(f"level must be one of {', '.join(LEVELS)}")
        with self.catalogue.session() as s:
            who = self._principal(s, principal)
            row = s.scalar(select(Grant).where(Grant.collection == collection, *who))
            if row is None:
                s.add(Grant(collection=collection, level=level, **{c.left.key: c.right.value for c in who}))
            else:
                row.level = level

    def revoke(self, principal: str, collection: str) -> None:
        with self.catalogue.session() as s:
            s.execute(delete(Grant).where(Grant.collection == collection, *self._principal(s, principal)))

    def grants(self) -> list[dict]:
        with self.catalogue.session() as s:
            users = dict(s.execute(select(User.id, User.name)).all())
            groups = dict(s.execute(select(Group.id, Group.name)).all())
            return [{"principal": users[g.user_id] if g.user_id else "group:" + groups[g.group_id],
                     "collection": g.collection, "level": g.level}
                    for g in s.scalars(select(Grant).order_by(Grant.collection, Grant.id))]

    # -- tokens -------------------------------------------------------------------------------------
    def create_token(self, user: str) -> str:
        """A new API token for the user: returned once, stored only as its sha256."""
        token = "kb_" + secrets.token_urlsafe(32)
        with self.catalogue.session() as s:
            s.add(ApiToken(user_id=self._user(s, user).id, token_sha256=_token_hash(token), prefix=token[:10]))
        return token

    def revoke_token(self, token_or_prefix: str) -> int:
        """Revoke a token given whole, or every token starting with this prefix; returns how many."""
        with self.catalogue.session() as s:
            rows = list(s.scalars(select(ApiToken).where(ApiToken.revoked_at.is_(None), or_(
                ApiToken.token_sha256 == _token_hash(token_or_prefix), ApiToken.prefix == token_or_prefix[:10]))))
            if len(token_or_prefix) < 10:
                rows = []
            for r in rows:
                r.revoked_at = utcnow()
            return len(rows)

    # -- authentication ----------------------------------------------------------------------------
    def from_token(self, token: str | None) -> Identity:
        if not token:
            raise AuthError("sign in first: send `Authorization: Bearer <token>` (create one with `kb token create USER`)")
        with self.catalogue.session() as s:
            user_id = s.scalar(select(ApiToken.user_id).where(ApiToken.token_sha256 == _token_hash(token),
                                                               ApiToken.revoked_at.is_(None)))
            if user_id is None:
                raise AuthError("this token is not valid (unknown or revoked)")
            return self._identity(s, s.get(User, user_id))

    def sign_in(self, name: str, password: str) -> Identity:
        """Check a password. After FREE_ATTEMPTS wrong ones in a row, each further one locks the account
        for twice as long as the last (2 s, 4 s, … up to 15 min): guessing is slowed, the owner is not
        shut out for good. Each attempt is counted before the password is checked, in one UPDATE, so
        parallel guesses are all counted. One message for an unknown name, a wrong password and a
        locked account: nothing tells which names exist."""
        from argon2.exceptions import InvalidHashError, VerificationError

        refused = AuthError("wrong user name or password (after repeated failures: wait a while, then try again)")
        now = utcnow()
        with self.catalogue.session() as s:  # claim the attempt: only when the account is not locked
            claimed = s.execute(update(User).where(User.name == name, or_(User.locked_until.is_(None),
                                                                           User.locked_until <= now))
                                .values(failed_sign_ins=User.failed_sign_ins + 1)
                                .returning(User.id, User.password_hash, User.failed_sign_ins)).first()
        if claimed is None:  # unknown or locked: the same cost as a real check, the same answer
            self.hasher.hash(password)
            raise refused
        try:
            if claimed.password_hash is None:
                raise VerificationError
            self.hasher.verify(claimed.password_hash, password)
        except (VerificationError, InvalidHashError):
            over = claimed.failed_sign_ins - FREE_ATTEMPTS
            if over >= 0:
                with self.catalogue.session() as s:
                    s.execute(update(User).where(User.id == claimed.id).values(
                        locked_until=utcnow() + dt.timedelta(seconds=min(MAX_LOCK_S, 2 ** (over + 1)))))
            raise refused from None
        with self.catalogue.session() as s:
            user = s.get(User, claimed.id)
            user.failed_sign_ins, user.locked_until = 0, None
            return self._identity(s, user)

    def identity(self, name: str) -> Identity:
        with self.catalogue.session() as s:
            return self._identity(s, self._user(s, name))

    def ensure_first_admin(self) -> str | None:
        """With no user at all, create `admin`: password from KB_ADMIN_PASSWORD, else generated and returned
        (to be printed once). None when users exist already or the password came from the environment."""
        with self.catalogue.session() as s:
            if s.scalar(select(User.id).limit(1)) is not None:
                return None
        given = os.environ.get("KB_ADMIN_PASSWORD")
        password = given or secrets.token_urlsafe(12)
        try:
            self.add_user("admin", password, admin=True)
        except (ConfigError, DatabaseError):  # another process made it first
            return None
        return None if given else password

    # -- audit -------------------------------------------------------------------------------------
    def audit(self, actor: str, action: str, collection: str | None = None, **detail) -> None:  # noqa: ANN003
        with self.catalogue.session() as s:
            s.add(AuditEntry(actor=actor, action=action, collection=collection, detail=detail))

    def audit_log(self, limit: int = 1000, actor: str | None = None) -> list[dict]:
        with self.catalogue.session() as s:
            q = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
            if actor:
                q = q.where(AuditEntry.actor == actor)
            return [{"at": e.at.isoformat(timespec="seconds") + "Z", "actor": e.actor, "action": e.action,
                     "collection": e.collection, **e.detail} for e in s.scalars(q)]

    # -- helpers -----------------------------------------------------------------------------------
    def _identity(self, s, user: User) -> Identity:  # noqa: ANN001 - a Session
        group_ids = list(s.scalars(select(GroupMember.group_id).where(GroupMember.user_id == user.id)))
        best: dict[str, str] = {}
        for g in s.scalars(select(Grant).where(or_(Grant.user_id == user.id, Grant.group_id.in_(group_ids)))):
            if LEVELS[g.level] > LEVELS.get(best.get(g.collection, ""), 0):
                best[g.collection] = g.level
        return Identity(user.name, user.admin, best)

    @staticmethod
    def _user(s, name: str) -> User:  # noqa: ANN001
        return _named(s, User, name)

    @staticmethod
    def _group(s, name: str) -> Group:  # noqa: ANN001
        return _named(s, Group, name)

    def _principal(self, s, principal: str) -> list:  # noqa: ANN001
        kind, _, name = principal.partition(":") if principal.startswith(("user:", "group:")) else ("", "", principal)
        user = s.scalar(select(User.id).where(User.name == name)) if kind in ("", "user") else None
        group = s.scalar(select(Group.id).where(Group.name == name)) if kind in ("", "group") else None
        if user is not None and group is not None:
            raise ConfigError(f"{name!r} is both a user and a group: write user:{name} or group:{name}")
        if user is None and group is None:
            raise NotFoundError(f"no user or group {name!r}")
        return [Grant.user_id == user] if user is not None else [Grant.group_id == group]


def _named(s, table: type[User] | type[Group], name: str) -> User | Group:  # noqa: ANN001 - a Session
    row = s.scalar(select(table).where(table.name == name))
    if row is None:
        raise NotFoundError(f"no {table.__tablename__.rstrip('s')} {name!r}")
    return row
