"""Users, tags and per-vhost permissions, checked the way RabbitMQ checks them.

Permission and topic-permission patterns are matched through model.patterns: at a bounded cost,
PCRE's syntax, and a pattern that does not compile (or a match out of its budget) denies."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..model.patterns import escape as _escape_pattern
from ..model.patterns import matches as _matches
from .passwords import SHA256, check_password, hash_password

KNOWN_TAGS = ("administrator", "monitoring", "policymaker", "management", "impersonator")


@dataclass
class User:
    name: str
    password_hash: str = ""
    tags: list = field(default_factory=list)
    hashing_algorithm: str = SHA256
    limits: dict = field(default_factory=dict)

    def set_password(self, password: str | None):
        self.password_hash = hash_password(password) if password is not None else ""
        self.hashing_algorithm = SHA256

    def check(self, password: str) -> bool:
        return check_password(password, self.password_hash, self.hashing_algorithm)

    @property
    def is_admin(self) -> bool:
        return "administrator" in self.tags


@dataclass
class Permission:
    user: str
    vhost: str
    configure: str = ".*"
    write: str = ".*"
    read: str = ".*"

    def allows(self, kind: str, name: str) -> bool:
        # an empty pattern matches only the empty name; others search, unanchored. Answers are
        # remembered per (pattern, name), so a changed permission is never answered from before.
        return _matches(getattr(self, kind) or "^$", name)


class UserDB:
    """Users and permissions. Mutations go through here so the store can be told."""

    def __init__(self):
        self.users: dict[str, User] = {}
        self.permissions: dict[tuple, Permission] = {}   # (user, vhost) -> Permission
        self.topic_permissions: dict[tuple, dict] = {}

    def add_user(self, name: str, password: str | None = None, tags=None, password_hash=None,
                 hashing_algorithm: str = SHA256) -> User:
        u = User(name, tags=list(tags or []), hashing_algorithm=hashing_algorithm)
        if password_hash is not None:
            u.password_hash = password_hash
        else:
            u.set_password(password)
        self.users[name] = u
        return u

    def delete_user(self, name: str) -> bool:
        if self.users.pop(name, None) is None:
            return False
        for key in [k for k in self.permissions if k[0] == name]:
            del self.permissions[key]
        return True

    def authenticate(self, name: str, password: str) -> User | None:
        u = self.users.get(name)
        if u is None:
            # spend the same time as a real check, so that names cannot be probed by timing
            check_password(password, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
            return None
        return u if u.check(password) else None

    def set_permission(self, user: str, vhost: str, configure: str, write: str, read: str) -> Permission:
        p = Permission(user, vhost, configure, write, read)
        self.permissions[(user, vhost)] = p
        return p

    def clear_permission(self, user: str, vhost: str) -> bool:
        return self.permissions.pop((user, vhost), None) is not None

    def permission(self, user: str, vhost: str) -> Permission | None:
        return self.permissions.get((user, vhost))

    def topic_allowed(self, user: str, vhost: str, exchange: str, kind: str, routing_key: str) -> bool:
        """Topic authorisation: whether `routing_key` may be published (kind "write") or bound
        ("read") on topic exchange `exchange`. True when the user has no topic permission for it;
        else the pattern, with {username} and {vhost} replaced by the (escaped) names, must match."""
        p = self.topic_permissions.get((user, vhost, exchange))
        if p is None:
            return True
        pattern = p.get(kind) or "^$"
        if "{" in pattern:
            pattern = pattern.replace("{username}", _escape_pattern(user)) \
                .replace("{vhost}", _escape_pattern(vhost))
        return _matches(pattern, routing_key)
