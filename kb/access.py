"""Who may see what: users and groups, passwords (argon2id) and API tokens (only their sha256 is kept),
per-collection grants (read < write < admin, and `none`: a deny), and the audit log. The KnowledgeBase
enforces an `Identity` on every call made for a caller (`KnowledgeBase.for_caller`); None is the local
operator (the CLI, which reads the data home directly anyway).

Precedence of grants, for a user who is not an administrator (administrators may do everything):
1. a `none` grant that reaches the user (their own, or one of a group they belong to), on the collection or
   on `*`, denies the collection, whatever else is granted;
2. otherwise the best level among their own and their groups' grants on the collection and on `*`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy import case, delete, or_, select, update
from sqlalchemy.exc import DatabaseError

from kb.catalogue import ApiToken, AuditEntry, Catalogue, Grant, Group, GroupMember, User, utcnow
from kb.errors import AuthError, ConfigError, NotFoundError, PermissionDeniedError

LEVELS = {"read": 1, "write": 2, "admin": 3}
DENY = "none"  # a grant of this level denies the collection (precedence: the module docstring)
GRANT_LEVELS = (DENY, *LEVELS)
EVERY_COLLECTION = "*"
FREE_ATTEMPTS = 5  # wrong passwords in a row before each further one locks the account for a while
FIRST_LOCK_S = 2  # the lock after the last free attempt; it doubles with each further failure
MAX_LOCK_S = 900
# Failures (wrong passwords, refused requests) are audited at most this many a minute per process, the
# rest counted in one entry; the oldest beyond FAILURES_KEPT are deleted: a flood cannot grow the log.
FAILURES_PER_MINUTE = 120
FAILURES_KEPT = 100_000
FAILURE_ACTIONS = ("sign-in-failed", "refused", "failures-not-recorded")


@dataclass(frozen=True)
class Identity:
    name: str
    admin: bool  # manages users and grants; every level on every collection
    grants: dict[str, str]  # collection (or "*") -> the best level from the user's own and its groups' grants
    denied: frozenset[str] = frozenset()  # collections (or "*") a `none` grant denies to this user
    stamp: str = field(default="", compare=False)  # changes with the account's password (or its re-creation)

    def level(self, collection: str) -> int:
        if self.admin:
            return LEVELS["admin"]
        if collection in self.denied or EVERY_COLLECTION in self.denied:
            return 0
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
        """`principal`: a user or group name; `user:NAME` / `group:NAME` when one name is both. Level `none`
        is a deny (it wins over every other grant that reaches the same users); `revoke` removes a grant."""
        if level not in GRANT_LEVELS:
            raise ConfigError(f"level must be one of {', '.join(GRANT_LEVELS)}")
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

    def effective(self, principal: str, collection: str) -> str:
        """What a grant leaves: a user's effective level on the collection, or a group's own and its
        members' (for `kb grant` to print)."""
        with self.catalogue.session() as s:
            who = self._principal(s, principal)
            kind, pid = ("user", who[0].right.value) if who[0].left.key == "user_id" else ("group", who[0].right.value)
            if kind == "user":
                return _level_name(self._identity(s, s.get(User, pid)), collection)
            group = s.get(Group, pid)
            own = [g.level for g in s.scalars(select(Grant).where(Grant.group_id == pid,
                                                                  Grant.collection.in_([collection, EVERY_COLLECTION])))]
            level = DENY if DENY in own else max(own, key=LEVELS.__getitem__, default=DENY)
            members = list(s.scalars(select(User).join(GroupMember, GroupMember.user_id == User.id)
                                     .where(GroupMember.group_id == pid).order_by(User.name)))
            shown = ", ".join(f"{u.name} {_level_name(self._identity(s, u), collection)}" for u in members[:20])
            return f"{level} for group {group.name}" + (f"; members: {shown}" if shown else "; no members") + \
                (f" and {len(members) - 20} more" if len(members) > 20 else "")

    def grants(self) -> list[dict]:
        with self.catalogue.session() as s:
            users = dict(s.execute(select(User.id, User.name)).all())
            groups = dict(s.execute(select(Group.id, Group.name)).all())
            return [{"principal": users[g.user_id] if g.user_id else "group:" + groups[g.group_id],
                     "collection": g.collection, "level": g.level}
                    for g in s.scalars(select(Grant).order_by(Grant.collection, Grant.id))]

    # -- tokens -------------------------------------------------------------------------------------
    def create_token(self, user: str, actor: str = "operator") -> str:
        """A new API token for the user: returned once, stored only as its sha256 (audited by its prefix)."""
        token = "kb_" + secrets.token_urlsafe(32)
        with self.catalogue.session() as s:
            s.add(ApiToken(user_id=self._user(s, user).id, token_sha256=_token_hash(token), prefix=token[:10]))
        self.audit(actor, "token-create", None, user=user, prefix=token[:10])
        return token

    def revoke_token(self, token_or_prefix: str, actor: str = "operator") -> int:
        """Revoke a token given whole, or every token starting with this prefix; returns how many (audited)."""
        n = self._revoke_token(token_or_prefix)
        self.audit(actor, "token-revoke", None, prefix=token_or_prefix[:10], revoked=n)
        return n

    def _revoke_token(self, token_or_prefix: str) -> int:
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
        shut out for good. Counting the attempt and setting its lock are one UPDATE, made before the
        password is checked, so however many guesses arrive at once no more than the free attempts are
        verified, and a lock never gets shorter. One message and one cost (an argon2 check) for an unknown
        name, a token-only account, a wrong password and a locked account: nothing tells which names exist."""
        from argon2.exceptions import InvalidHashError, VerificationError

        refused = AuthError("wrong user name or password (after repeated failures: wait a while, then try again)")
        now = utcnow()
        attempt = User.failed_sign_ins + 1
        lock_at = [(attempt == FREE_ATTEMPTS + k, now + dt.timedelta(seconds=FIRST_LOCK_S * 2 ** k))
                   for k in range(16) if FIRST_LOCK_S * 2 ** k < MAX_LOCK_S]  # 2 s, 4 s … 512 s, then MAX_LOCK_S
        with self.catalogue.session() as s:  # claim the attempt: only when the account is not locked
            claimed = s.execute(update(User).where(User.name == name, or_(User.locked_until.is_(None),
                                                                           User.locked_until <= now))
                                .values(failed_sign_ins=attempt,
                                        locked_until=case((attempt < FREE_ATTEMPTS, User.locked_until), *lock_at,
                                                          else_=now + dt.timedelta(seconds=MAX_LOCK_S)))
                                .returning(User.id, User.password_hash, User.failed_sign_ins)).first()
            exists = claimed is not None or s.scalar(select(User.id).where(User.name == name)) is not None
        try:
            self.hasher.verify(claimed.password_hash if claimed and claimed.password_hash else self._dummy_hash,
                               password)
            if claimed is None or claimed.password_hash is None:
                raise VerificationError
        except (VerificationError, InvalidHashError):
            locked = claimed is None and exists or claimed is not None and claimed.failed_sign_ins >= FREE_ATTEMPTS
            self.audit_failure(name if exists else "(unknown)", "sign-in-failed", None, locked=locked,
                               **({} if exists else {"name": name[:200]}))
            raise refused from None
        with self.catalogue.session() as s:
            user = s.get(User, claimed.id)
            user.failed_sign_ins, user.locked_until = 0, None
            return self._identity(s, user)

    @cached_property
    def _dummy_hash(self) -> str:
        """Checked in place of a real hash, so a name that cannot sign in costs as much as one that can."""
        return self.hasher.hash(secrets.token_urlsafe(16))

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

    def audit_failure(self, actor: str, action: str, collection: str | None = None, **detail) -> None:  # noqa: ANN003
        """A failed sign-in or a refused request, within this process's budget (FAILURES_PER_MINUTE); what
        is over it is counted and written as one entry with the next failure recorded."""
        record, dropped = self._failures.take()
        if dropped:
            self.audit("kb", "failures-not-recorded", None, count=dropped, per_minute=FAILURES_PER_MINUTE)
        if record:
            self.audit(actor, action, collection, **detail)
        if self._failures.new_window():
            with self.catalogue.session() as s:  # keep the newest FAILURES_KEPT failures
                oldest_kept = s.scalar(select(AuditEntry.id).where(AuditEntry.action.in_(FAILURE_ACTIONS))
                                       .order_by(AuditEntry.id.desc()).offset(FAILURES_KEPT - 1).limit(1))
                if oldest_kept is not None:
                    s.execute(delete(AuditEntry).where(AuditEntry.action.in_(FAILURE_ACTIONS),
                                                       AuditEntry.id < oldest_kept))

    @cached_property
    def _failures(self) -> _FailureBudget:
        return _FailureBudget(FAILURES_PER_MINUTE)

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
        denied: set[str] = set()
        for g in s.scalars(select(Grant).where(or_(Grant.user_id == user.id, Grant.group_id.in_(group_ids)))):
            if g.level == DENY:
                denied.add(g.collection)
            elif LEVELS[g.level] > LEVELS.get(best.get(g.collection, ""), 0):
                best[g.collection] = g.level
        stamp = hashlib.sha256(f"{user.id}:{user.password_hash}".encode()).hexdigest()[:16]
        return Identity(user.name, user.admin, best, frozenset(denied), stamp)

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


def _level_name(who: Identity, collection: str) -> str:
    level = who.level(collection)
    return next((name for name, n in LEVELS.items() if n == level), DENY) + (" (administrator)" if who.admin else "")


class _FailureBudget:
    """How many failures this process may still audit in the current minute."""

    def __init__(self, per_minute: int, clock=time.monotonic):  # noqa: ANN001 - seconds, like time.monotonic
        self.per_minute, self.window, self.used, self.dropped, self.pruned = per_minute, -1, 0, 0, -1
        self.clock = clock
        self.lock = threading.Lock()

    def take(self) -> tuple[bool, int]:
        """(audit this failure?, failures not audited in earlier minutes, to be reported now)."""
        with self.lock:
            window, reported = int(self.clock() // 60), 0
            if window != self.window:
                self.window, self.used, reported, self.dropped = window, 0, self.dropped, 0
            if self.used < self.per_minute:
                self.used += 1
                return True, reported
            self.dropped += 1
            return False, reported

    def new_window(self) -> bool:
        """True once a minute: time to prune old failures."""
        with self.lock:
            if self.pruned == self.window:
                return False
            self.pruned = self.window
            return True


def _named(s, table: type[User] | type[Group], name: str) -> User | Group:  # noqa: ANN001 - a Session
    row = s.scalar(select(table).where(table.name == name))
    if row is None:
        raise NotFoundError(f"no {table.__tablename__.rstrip('s')} {name!r}")
    return row
